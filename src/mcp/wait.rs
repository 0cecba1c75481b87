//! `quorum_wait`: a decision's status once it is decided or expired, or when the wait's
//! time is up. It looks at the decision, then again whenever the hub session passes on
//! that decision's event, or says events may have gone unseen, or reconnects; so a hub
//! restarted under the wait still ends it with the decision. A host that asked for
//! progress is told the votes so far whenever a look finds the decision still open.

use std::time::Duration;

use rmcp::model::{CallToolResult, ProgressNotificationParam, ProgressToken};
use rmcp::service::RequestContext;
use rmcp::{Peer, RoleServer};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::QuorumServer;
use super::closings::Change;
use super::reply::{answer, failure};
use crate::client::ClientError;
use crate::decision::MAX_DECISION_LEN;
use crate::protocol::{DecisionState, DecisionStatus, pattern};

/// Longest one `quorum_wait` waits (10 minutes); a larger `timeoutMs` is cut to it. A
/// host's own request timeout may be shorter: the call then ends there.
pub(super) const MAX_WAIT_MS: u64 = 600_000;
/// How long the last look at the decision may take when a wait's time is up.
const LAST_LOOK: Duration = Duration::from_secs(5);

/// The hub's codes for answers after which a wait goes on: the decision has no votes yet
/// (-32004), a rate limit (-32000), Redis not being called or unreachable (-32001,
/// -32005). The connection dropping meanwhile is waited out too.
const WAIT_ON_CODES: [i64; 4] = [-32004, -32000, -32001, -32005];

/// Arguments of `quorum_wait`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct WaitArgs {
    /// The decision's name. It may have no votes yet: the wait covers its opening too.
    #[schemars(length(min = 1, max = MAX_DECISION_LEN), regex(pattern = pattern::NAME))]
    pub(super) decision: String,
    /// Longest to wait, in milliseconds; past it the current status is returned with
    /// timedOut true. Larger values are cut to the maximum.
    #[schemars(range(min = 0, max = MAX_WAIT_MS))]
    pub(super) timeout_ms: u64,
}

/// Waits as [`WaitArgs`] asks; the result is `{timedOut, status}`, or the tool error of
/// the last look when the decision could not be read at the end.
pub(super) async fn until_closed(
    server: &QuorumServer,
    args: &WaitArgs,
    context: &RequestContext<RoleServer>,
) -> CallToolResult {
    let cancelled = &context.ct;
    let mut progress = Progress::new(context);
    let deadline = Instant::now() + Duration::from_millis(args.timeout_ms.min(MAX_WAIT_MS));
    // Taken before the first look, so that a decision closing after it is not missed.
    let mut changes = server.closings.watch();
    loop {
        let look = tokio::select! {
            look = server.client.status(&args.decision) => Some(look),
            () = tokio::time::sleep_until(deadline) => None,
            () = cancelled.cancelled() => return withdrawn(),
        };
        match look {
            Some(Ok(status)) if status.state != DecisionState::Open => {
                return waited(false, status);
            }
            Some(Ok(status)) => progress.report(&status).await,
            Some(Err(err)) if !worth_waiting(&err) => return failure(&err),
            Some(Err(_)) => {}
            None => break,
        }
        // Until something may have changed about this decision.
        let woken = loop {
            let change = tokio::select! {
                change = changes.recv() => change,
                () = tokio::time::sleep_until(deadline) => break false,
                () = cancelled.cancelled() => return withdrawn(),
            };
            match change {
                Ok(Change::Closed(decision)) if decision == args.decision => break true,
                Ok(Change::Closed(_)) => {}
                Ok(Change::LookAgain) | Err(RecvError::Lagged(_)) => break true,
                Err(RecvError::Closed) => break false,
            }
        };
        if !woken {
            break;
        }
    }
    // Time is up: the status as it stands now.
    match tokio::time::timeout(LAST_LOOK, server.client.status(&args.decision)).await {
        Ok(Ok(status)) => {
            let still_open = status.state == DecisionState::Open;
            waited(still_open, status)
        }
        Ok(Err(err)) => failure(&err),
        Err(_) => answer::<()>(Err(ClientError::Unreachable(format!(
            "the hub did not answer within {} s",
            LAST_LOOK.as_secs()
        )))),
    }
}

/// The answer to a wait the host cancelled (which it no longer reads).
fn withdrawn() -> CallToolResult {
    CallToolResult::structured_error(json!({"message": "the host cancelled the wait"}))
}

/// A wait's result: whether its time ran out, and the status it ends with.
fn waited(timed_out: bool, status: DecisionStatus) -> CallToolResult {
    answer(Ok(json!({"timedOut": timed_out, "status": status})))
}

/// Whether a look that failed leaves the wait going.
fn worth_waiting(err: &ClientError) -> bool {
    match err {
        ClientError::Rpc(err) => WAIT_ON_CODES.contains(&err.code),
        ClientError::Disconnected | ClientError::Unreachable(_) => true,
        _ => false,
    }
}

/// Progress notifications for a host that sent a `progressToken`: the votes an open
/// decision has (`progress`) of those it needs (`total`), each time that count grew.
struct Progress {
    host: Option<(Peer<RoleServer>, ProgressToken)>,
    reported: Option<u64>,
}

impl Progress {
    fn new(context: &RequestContext<RoleServer>) -> Self {
        let token = context.meta.get_progress_token();
        Self {
            host: token.map(|token| (context.peer.clone(), token)),
            reported: None,
        }
    }

    async fn report(&mut self, status: &DecisionStatus) {
        let Some((host, token)) = &self.host else {
            return;
        };
        if self
            .reported
            .is_some_and(|votes| votes >= status.vote_count)
        {
            return;
        }
        self.reported = Some(status.vote_count);
        let mut param = ProgressNotificationParam::new(token.clone(), status.vote_count as f64);
        param.total = Some(status.quorum as f64);
        param.message = Some(format!(
            "{} of {} votes needed; waiting for the decision",
            status.vote_count, status.quorum
        ));
        if let Err(err) = host.notify_progress(param).await {
            tracing::debug!(%err, "the host was not told of a wait's progress");
        }
    }
}
