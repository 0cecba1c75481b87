//! The command-line tools built on the client: `vote`, `watch` and `webhooks`.

use crate::client::{Client, ClientConfig, ClientError};
use crate::protocol::webhook::WebhookDeliveriesParams;
use crate::protocol::{Notification, VoteParams, VoteReply};

/// What `quorum-hub webhooks` does.
#[derive(Debug, Clone)]
pub enum WebhookCommand {
    Add {
        url: String,
        events: Vec<String>,
        description: Option<String>,
    },
    List,
    Remove {
        id: String,
    },
    Deliveries {
        id: String,
        limit: Option<u64>,
        after: Option<String>,
    },
}

/// Runs one webhook command as an admin; returns the hub's result as JSON text, or the
/// JSON-RPC error object as JSON text.
pub async fn webhooks(config: ClientConfig, command: WebhookCommand) -> Result<String, String> {
    let (client, _events) = Client::connect(config).await.map_err(|e| e.to_string())?;
    match command {
        WebhookCommand::Add {
            url,
            events,
            description,
        } => json(
            client
                .add_webhook(&url, &events, description.as_deref())
                .await,
        ),
        WebhookCommand::List => json(client.webhooks().await),
        WebhookCommand::Remove { id } => json(client.remove_webhook(&id).await),
        WebhookCommand::Deliveries { id, limit, after } => json(
            client
                .webhook_deliveries(&WebhookDeliveriesParams {
                    id: &id,
                    limit,
                    after: after.as_deref(),
                })
                .await,
        ),
    }
}

fn json<T: serde::Serialize>(reply: Result<T, ClientError>) -> Result<String, String> {
    match reply {
        Ok(result) => serde_json::to_string(&result).map_err(|e| e.to_string()),
        Err(ClientError::Rpc(error)) => Err(serde_json::to_string(&error).unwrap_or_default()),
        Err(other) => Err(other.to_string()),
    }
}

/// Registers (through the client) and casts one vote; returns the hub's result, or the
/// JSON-RPC error object as JSON text.
pub async fn vote(config: ClientConfig, params: &VoteParams<'_>) -> Result<VoteReply, String> {
    let (client, _events) = Client::connect(config).await.map_err(|e| e.to_string())?;
    match client.vote_with(params).await {
        Ok(reply) => Ok(reply),
        Err(ClientError::Rpc(error)) => Err(serde_json::to_string(&error).unwrap_or_default()),
        Err(other) => Err(other.to_string()),
    }
}

/// Prints each decision event as one JSON line (its notification's params) until
/// interrupted: a decision made (with `value`) or a decision that expired without quorum
/// (with `tally`, no `value`). A notice that some events are no longer kept, or could not
/// be read just now (the client then resumes again from the same event), goes to `notices`
/// (stderr), so `out` stays one event per line.
pub async fn watch(
    config: ClientConfig,
    mut out: impl std::io::Write,
    mut notices: impl std::io::Write,
) -> Result<(), String> {
    let (_client, mut events) = Client::connect(config).await.map_err(|e| e.to_string())?;
    loop {
        tokio::select! {
            notification = events.recv() => {
                let line = match notification {
                    None => return Ok(()),
                    Some(Notification::DecisionMade(event)) => serde_json::to_string(&event),
                    Some(Notification::DecisionExpired(event)) => serde_json::to_string(&event),
                    Some(Notification::EventsIncomplete(notice)) => {
                        let _ = writeln!(notices, "events incomplete: {}", notice.message);
                        continue;
                    }
                    Some(_) => continue,
                };
                let line = line.map_err(|e| e.to_string())?;
                if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                    return Ok(()); // the reader went away (a closed pipe)
                }
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
