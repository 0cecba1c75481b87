//! The `system.webhooks.*` methods: adding, listing and changing webhook endpoints, and
//! reading their attempt logs. Only an admin token, or without a secret a caller on
//! loopback, may call them; secrets are shown once, by `add` and `rotate`.

use super::Caller;
use crate::clock::now_ms;
use crate::error::Error;
use crate::hub::Hub;
use crate::outbound::url::EndpointUrl;
use crate::protocol::request::WebhookCall;
use crate::protocol::webhook::{
    WebhookAttempt, WebhookChanged, WebhookDeliveries, WebhookInfo, WebhookList, WebhookSecret,
};
use crate::store::{Added, EndpointKind, LoggedAttempt, MAX_WEBHOOKS, NewEndpoint, StoredEndpoint};
use crate::webhooks::dispatch::DEFAULT_EVENTS;
use crate::webhooks::sign::Secret;
use crate::webhooks::{ROTATION_OVERLAP, new_endpoint_id};

/// Runs one `system.webhooks.*` call.
pub(super) async fn call(
    hub: &Hub,
    caller: Caller<'_>,
    call: WebhookCall,
) -> Result<serde_json::Value, Error> {
    caller.grant().may_administer()?;
    let value = match call {
        WebhookCall::Add {
            url,
            events,
            description,
        } => to_value(add(hub, &url, events, description.as_deref()).await?),
        WebhookCall::List => to_value(list(hub).await?),
        WebhookCall::Remove(id) => {
            found(
                hub.store
                    .endpoint_remove(EndpointKind::Webhook, &id)
                    .await?,
                &id,
            )?;
            to_value(WebhookChanged {
                id,
                done: "removed".into(),
            })
        }
        WebhookCall::Enable(id) => {
            found(hub.store.webhook_enable(&id).await?, &id)?;
            to_value(WebhookChanged {
                id,
                done: "enabled".into(),
            })
        }
        WebhookCall::Rotate(id) => {
            let secret = new_secret()?;
            let until = now_ms() + ROTATION_OVERLAP.as_millis() as u64;
            found(
                hub.store
                    .webhook_rotate(&id, &secret.to_whsec(), until)
                    .await?,
                &id,
            )?;
            to_value(WebhookSecret {
                id,
                secret: secret.to_whsec(),
            })
        }
        WebhookCall::Deliveries { id, limit, after } => {
            let after = after.map(|after| after.to_string());
            let attempts = hub
                .store
                .webhook_attempts(&id, limit, after.as_deref())
                .await?;
            let attempts = found_some(attempts, &id)?;
            let next = (attempts.len() == limit)
                .then(|| attempts.last().map(|a| a.id.clone()))
                .flatten();
            to_value(WebhookDeliveries {
                attempts: attempts.into_iter().map(attempt).collect(),
                next,
            })
        }
    };
    Ok(value)
}

async fn add(
    hub: &Hub,
    url: &str,
    events: Vec<String>,
    description: Option<&str>,
) -> Result<WebhookSecret, Error> {
    let url = EndpointUrl::parse(url, hub.config.webhooks.allow_private)
        .map_err(|err| Error::invalid("url", format!("url: {err}")))?;
    let events = if events.is_empty() {
        DEFAULT_EVENTS.map(str::to_owned).to_vec()
    } else {
        events
    };
    let secret = new_secret()?;
    let id = new_endpoint_id().map_err(Error::Internal)?;
    let added = hub
        .store
        .webhook_add(
            &NewEndpoint {
                kind: EndpointKind::Webhook,
                id: &id,
                url: url.as_str(),
                events: &events,
                description: description.unwrap_or_default(),
                secret: &secret.to_whsec(),
                push_keys: None,
            },
            now_ms(),
        )
        .await?;
    match added {
        Added::New => Ok(WebhookSecret {
            id,
            secret: secret.to_whsec(),
        }),
        Added::Full => Err(Error::invalid(
            "url",
            format!(
                "this keyspace holds its maximum of {MAX_WEBHOOKS} webhook endpoints; remove one \
                 first (system.webhooks.remove)"
            ),
        )),
        Added::Exists => Err(Error::Internal(format!(
            "a new webhook id {id} was taken; try again"
        ))),
    }
}

async fn list(hub: &Hub) -> Result<WebhookList, Error> {
    let endpoints = hub.store.endpoints(EndpointKind::Webhook).await?;
    Ok(WebhookList {
        webhooks: endpoints.into_iter().map(info).collect(),
    })
}

/// An endpoint as `list` shows it: everything but its secrets.
fn info(endpoint: StoredEndpoint) -> WebhookInfo {
    let (state, disabled_reason, disabled_at) = match endpoint.disabled {
        Some((reason, at)) => ("disabled", Some(reason), Some(at)),
        None => ("enabled", None, None),
    };
    WebhookInfo {
        id: endpoint.id,
        url: endpoint.url,
        events: endpoint.events,
        description: Some(endpoint.description).filter(|d| !d.is_empty()),
        state: state.into(),
        disabled_reason,
        disabled_at,
        added_at: endpoint.added_at,
        last_attempt: endpoint.last.map(|last| WebhookAttempt {
            event_id: last.event,
            attempt: None,
            status: last.status,
            error: last.error,
            duration_ms: None,
            at: last.at,
            outcome: last.outcome,
        }),
        pending: endpoint.waiting,
    }
}

fn attempt(logged: LoggedAttempt) -> WebhookAttempt {
    WebhookAttempt {
        event_id: logged.event,
        attempt: Some(logged.attempt),
        status: logged.status,
        error: logged.error,
        duration_ms: Some(logged.duration_ms),
        at: logged.at,
        outcome: logged.outcome,
    }
}

fn new_secret() -> Result<Secret, Error> {
    Secret::generate().map_err(|err| Error::Internal(err.to_string()))
}

fn found(exists: bool, id: &str) -> Result<(), Error> {
    exists
        .then_some(())
        .ok_or_else(|| Error::NotFound(format!("no webhook endpoint {id}")))
}

fn found_some<T>(value: Option<T>, id: &str) -> Result<T, Error> {
    value.ok_or_else(|| Error::NotFound(format!("no webhook endpoint {id}")))
}

fn to_value(result: impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(result).unwrap_or_default()
}
