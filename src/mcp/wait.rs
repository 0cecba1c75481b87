//! `quorum_wait`: a decision's status once it is decided or expired, or when the wait's
//! time is up. It looks at the decision, then again whenever the hub session passes on
//! that decision's event, or says events may have gone unseen, or reconnects; so a hub
//! restarted under the wait still ends it with the decision.

use std::time::Duration;

use rmcp::model::CallToolResult;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::QuorumServer;
use super::closings::Change;
use super::tools::{WaitArgs, answer, failure};
use crate::client::ClientError;
use crate::protocol::{DecisionState, DecisionStatus};

/// Longest one `quorum_wait` waits (10 minutes); a larger `timeoutMs` is cut to it. A
/// host's own request timeout may be shorter: the call then ends there.
pub(super) const MAX_WAIT_MS: u64 = 600_000;
/// How long the last look at the decision may take when a wait's time is up.
const LAST_LOOK: Duration = Duration::from_secs(5);

/// The hub's codes for answers after which a wait goes on: the decision has no votes yet
/// (-32004), a rate limit (-32000), Redis not being called or unreachable (-32001,
/// -32005). The connection dropping meanwhile is waited out too.
const WAIT_ON_CODES: [i64; 4] = [-32004, -32000, -32001, -32005];

/// Waits as [`WaitArgs`] asks; the result is `{timedOut, status}`, or the tool error of
/// the last look when the decision could not be read at the end.
pub(super) async fn until_closed(
    server: &QuorumServer,
    args: &WaitArgs,
    cancelled: &CancellationToken,
) -> CallToolResult {
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
            Some(Err(err)) if !worth_waiting(&err) => return failure(&err),
            Some(_) => {}
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
