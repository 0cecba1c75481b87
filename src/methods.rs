//! The hub's JSON-RPC methods: check who may act, call the store, and shape each result.
//! Parameters arrive already validated as a [`Request`].

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::auth::Grant;
use crate::budget::{CallAdmission, CallBudget};
use crate::clock::now_ms;
use crate::decision::DecisionName;
use crate::error::Error;
use crate::hub::Hub;
use crate::instance::InstanceId;
use crate::protocol::frame::{self, Call, Entry, Frame};
use crate::protocol::openrpc;
use crate::protocol::request::StatePage;
use crate::protocol::{
    EventId, HubInfo, Refreshed, Request, SessionInfo, State, Subscribed, method,
};
use crate::session::{self, SessionHandle};

/// Most calls one batch may hold.
pub const MAX_BATCH_LEN: usize = 100;
/// Once a batch's replies reach this many bytes, its remaining calls are not run (each is
/// answered -32003), so one frame cannot make the hub build an outsized reply.
pub const MAX_BATCH_REPLY_BYTES: usize = 1024 * 1024;
/// Longest `system.subscribe` waits for the hub to start receiving dashboard events.
pub const SUBSCRIBE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Who is calling: a WebSocket session (which can hold an instance) or a one-shot HTTP
/// call, each with what its token allows.
#[derive(Clone, Copy)]
pub enum Caller<'a> {
    Session(&'a SessionHandle),
    /// A `POST /rpc` call, with its client's call budget.
    Http(&'a Grant, &'a CallBudget),
}

impl Caller<'_> {
    fn grant(&self) -> &Grant {
        match self {
            Caller::Session(session) => &session.grant,
            Caller::Http(grant, _) => grant,
        }
    }
}

/// Handles one frame (or HTTP body) and returns the text to send back, if any.
pub async fn handle_frame(hub: &Hub, caller: Caller<'_>, text: &str) -> Option<String> {
    match frame::parse_frame(text) {
        Frame::Single(entry) => handle_entry(hub, caller, entry, None).await,
        Frame::Batch(entries) if entries.len() > MAX_BATCH_LEN => {
            if let Err(refused) = admit(caller) {
                return Some(frame::failure(&Value::Null, &refused).to_string());
            }
            let error = Error::InvalidRequest(
                format!(
                    "a batch may hold at most {MAX_BATCH_LEN} calls (got {})",
                    entries.len()
                )
                .into(),
            );
            Some(frame::failure(&Value::Null, &error).to_string())
        }
        Frame::Batch(entries) => {
            let mut replies = Vec::with_capacity(entries.len());
            let mut reply_bytes = 0;
            for entry in entries {
                // Past the bound, calls are counted like any other but not run.
                let full = (reply_bytes >= MAX_BATCH_REPLY_BYTES).then(|| Error::BatchReplyFull {
                    limit_bytes: MAX_BATCH_REPLY_BYTES,
                });
                if let Some(reply) = handle_entry(hub, caller, entry, full).await {
                    reply_bytes += reply.len();
                    replies.push(reply);
                }
            }
            frame::encode_batch(replies)
        }
    }
}

/// Answers one entry of a frame: runs its call, unless `not_run` says why it is not run.
/// Every entry counts against the caller's budget, valid, run or not.
async fn handle_entry(
    hub: &Hub,
    caller: Caller<'_>,
    entry: Entry,
    not_run: Option<Error>,
) -> Option<String> {
    let (id, outcome) = match (admit(caller), entry) {
        (Err(refused), Entry::Invalid { id, .. }) => (Some(id), Err(refused)),
        (Err(refused), Entry::Call(call)) => (call.id, Err(refused)),
        (Ok(()), Entry::Invalid { id, error }) => (Some(id), Err(error)),
        (Ok(()), Entry::Call(call)) => match not_run {
            Some(error) => (call.id, Err(error)),
            None => {
                let id = call.id.clone();
                (id, call_once(hub, caller, call).await)
            }
        },
    };
    let id = id?; // notifications get no reply, even on error
    Some(match outcome {
        Ok(result) => frame::success(&id, &result),
        Err(error) => frame::failure(&id, &error).to_string(),
    })
}

/// Counts one frame entry against the caller's call budget.
pub(crate) fn admit(caller: Caller<'_>) -> Result<(), Error> {
    let (admission, limit, who) = match caller {
        Caller::Session(session) => (session.admit_call(), session.call_limit(), "session"),
        Caller::Http(_, budget) => (budget.admit(), budget.limit(), "client"),
    };
    match admission {
        CallAdmission::Allowed => Ok(()),
        CallAdmission::Refused { retry_after_ms } | CallAdmission::Flooding { retry_after_ms } => {
            Err(Error::RateLimited {
                retry_after_ms,
                message: format!(
                    "this {who} sends too fast: at most {} calls per {:?}; retry in {retry_after_ms} ms",
                    limit.max, limit.window
                ),
            })
        }
    }
}

/// A method's result, serialized for the reply (as text: a large result is never also
/// held as a tree of values).
fn reply(result: impl Serialize) -> Result<Box<RawValue>, Error> {
    serde_json::value::to_raw_value(&result).map_err(|e| Error::Internal(e.to_string()))
}

async fn call_once(hub: &Hub, caller: Caller<'_>, call: Call) -> Result<Box<RawValue>, Error> {
    let Call { method, params, .. } = call;
    match Request::parse(&method, params)? {
        Request::Register(registration) => reply(register(hub, caller, registration).await?),
        Request::Heartbeat(instance) => reply(heartbeat(hub, caller, instance).await?),
        Request::Unregister(instance) => reply(unregister(hub, caller, instance).await?),
        Request::Vote(ballot) => reply(vote(hub, caller, ballot).await?),
        Request::Status(decision) => status(hub, decision).await,
        Request::State(page) => state(hub, caller, page).await,
        Request::Subscribe { events, since } => reply(subscribe(hub, caller, events, since).await?),
        Request::Unsubscribe { events } => reply(unsubscribe(hub, caller, &events)?),
        Request::AuthRefresh { token } => reply(refresh(hub, caller, &token)?),
        Request::Webhook(call) => reply(webhooks::call(hub, caller, call).await?),
        Request::Push(call) => push::call(hub, caller, call).await,
        Request::Policy(call) => reply(policies::call(hub, caller, call).await?),
        Request::Discover => Ok(openrpc::document_text().to_owned()),
    }
}

mod instances;
mod policies;
mod push;
mod terms;
mod vote;
mod webhooks;

use instances::{heartbeat, register, unregister};
use vote::vote;

async fn status(hub: &Hub, decision: DecisionName) -> Result<Box<RawValue>, Error> {
    match hub.store.status(&decision).await? {
        Some(status) => reply(status),
        None => Err(Error::NotFound(format!(
            "decision {} has no votes",
            decision.as_str()
        ))),
    }
}

async fn state(hub: &Hub, caller: Caller<'_>, page: StatePage) -> Result<Box<RawValue>, Error> {
    let _turn = hub
        .state_calls
        .acquire()
        .await
        .map_err(|_| Error::Internal("the hub is stopping".into()))?;
    reply(state_page(hub, caller, page).await?)
}

async fn state_page(hub: &Hub, caller: Caller<'_>, page: StatePage) -> Result<State, Error> {
    // An index entry outlives its registration by at most two TTLs before it is pruned.
    let ttl_ms = hub.config.instance_ttl.as_millis() as u64;
    let stale_before = now_ms().saturating_sub(2 * ttl_ms);
    let instances_after = page.instances_after.as_ref().map(InstanceId::as_str);
    let instances = hub
        .store
        .instances(page.limit, instances_after, stale_before)
        .await?;
    let decisions = hub
        .store
        .recent_decisions(page.limit, page.decisions_after.as_ref())
        .await?;
    let session = match caller {
        Caller::Session(session) => Some(SessionInfo {
            instance_id: session.binding.instance().map(|id| id.to_string()),
        }),
        Caller::Http(..) => None,
    };
    Ok(State {
        instances: instances.instances,
        next_instances: instances.next,
        decisions: decisions.decisions,
        next_decisions: decisions.next,
        hub: HubInfo {
            hub_id: hub.id.clone(),
            sessions: hub.session_count(),
            uptime_seconds: hub.uptime_seconds(),
            breaker: hub.store.breaker().state(),
            last_event_id: hub.delivered(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        },
        session,
    })
}

fn session_only<'a>(caller: Caller<'a>, method: &str) -> Result<&'a SessionHandle, Error> {
    match caller {
        Caller::Session(session) => Ok(session),
        Caller::Http(..) => Err(Error::InvalidRequest(
            format!(
                "{method} needs a WebSocket session (GET /ws); it has no meaning over POST /rpc"
            )
            .into(),
        )),
    }
}

async fn subscribe(
    hub: &Hub,
    caller: Caller<'_>,
    events: Vec<String>,
    since: Option<EventId>,
) -> Result<Subscribed, Error> {
    let session = session_only(caller, method::SUBSCRIBE)?;
    let wants_dashboard_events = !events.is_empty();
    let subscribed = hub.subscribe(session, events);
    if wants_dashboard_events {
        // Once this returns, the events flow (unless Redis is down).
        hub.dashboards_flowing(SUBSCRIBE_WAIT).await;
    }
    let replayed = match since {
        Some(since) => Some(session::replay(&hub.store, session, since).await?),
        None => None,
    };
    Ok(Subscribed {
        subscribed,
        replayed,
    })
}

fn unsubscribe(hub: &Hub, caller: Caller<'_>, events: &[String]) -> Result<Subscribed, Error> {
    let session = session_only(caller, method::UNSUBSCRIBE)?;
    Ok(Subscribed {
        subscribed: hub.unsubscribe(session, Some(events)),
        replayed: None,
    })
}

/// Extends a session with a newer token for the same instance and role. The session then
/// ends when the later of its tokens expires; a token for anyone else changes nothing.
fn refresh(hub: &Hub, caller: Caller<'_>, token: &str) -> Result<Refreshed, Error> {
    let session = session_only(caller, method::AUTH_REFRESH)?;
    let Some(authority) = &hub.authority else {
        return Err(Error::InvalidRequest(
            "this hub runs without --auth-secret: sessions do not expire and there is no token \
             to refresh"
                .into(),
        ));
    };
    let kept = "the session keeps its current token until that expires";
    let verified = authority
        .check(Some(token))
        .map_err(|err| Error::Unauthorized(format!("{err}; {kept}")))?;
    if verified.grant != session.grant {
        return Err(Error::Unauthorized(format!(
            "this token is for {}, the session's for {}: a refresh must keep the instance and \
             role; {kept}",
            verified.grant.describe(),
            session.grant.describe()
        )));
    }
    Ok(Refreshed {
        expires_at: session.extend_expiry(verified.expires_at_ms),
    })
}
