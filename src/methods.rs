//! The hub's JSON-RPC methods: check who may act, call the store, and shape each result.
//! Parameters arrive already validated as a [`Request`].

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::auth::Grant;
use crate::budget::{CallAdmission, CallBudget};
use crate::clock::now_ms;
use crate::decision::{Ballot, DecisionName, VoteOutcome};
use crate::error::Error;
use crate::hub::Hub;
use crate::instance::{InstanceId, Registration};
use crate::protocol::frame::{self, Call, Entry, Frame};
use crate::protocol::openrpc;
use crate::protocol::request::StatePage;
use crate::protocol::{
    Alive, EventId, HubInfo, Refreshed, Registered, Request, SessionInfo, State, Subscribed,
    Unregistered, VoteReply, method,
};
use crate::session::{self, BindingChange, SessionHandle};
use crate::store::{Claim, Standing};

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
        Request::Discover => Ok(openrpc::document_text().to_owned()),
    }
}

fn bound_elsewhere(instance: &InstanceId, ttl: std::time::Duration) -> Error {
    Error::Unauthorized(format!(
        "instance {instance} is bound to another open session; close that session first \
         (a binding whose session vanished expires within {}s)",
        ttl.as_secs()
    ))
}

async fn register(
    hub: &Hub,
    caller: Caller<'_>,
    registration: Registration,
) -> Result<Registered, Error> {
    let instance = registration.instance.clone();
    caller.grant().may_act_as(&instance)?;
    let ttl = hub.config.instance_ttl;
    let _binding = binding_change(caller).await;
    let owner = match caller {
        Caller::Session(session) => {
            if let Some(bound) = session
                .binding
                .instance()
                .filter(|bound| *bound != instance)
            {
                return Err(Error::Unauthorized(format!(
                    "this session is registered as {bound}; a session holds one instance \
                     (unregister {bound} first, or open another session)"
                )));
            }
            Some(session.owner_tag.as_str())
        }
        Caller::Http(..) => None,
    };
    let (claim, confirmed) = hub.store.register(&registration, owner, ttl).await?;
    match claim {
        Claim::BoundElsewhere | Claim::Missing => return Err(bound_elsewhere(&instance, ttl)),
        Claim::Done => {}
    }
    // Bound even when replicas did not confirm the registration: it is in Redis, and the
    // session's close must release it.
    if let Caller::Session(session) = caller {
        session.binding.set(registration);
    }
    confirmed?;
    hub.metrics.registrations.inc();
    Ok(Registered {
        registered: true,
        instance_id: instance.to_string(),
        ttl_seconds: ttl.as_secs(),
    })
}

/// Holds a session's binding still while a call changes it and writes it to Redis (see
/// [`BindingChange`]); HTTP callers hold no binding.
async fn binding_change<'a>(caller: Caller<'a>) -> Option<BindingChange<'a>> {
    match caller {
        Caller::Session(session) => Some(session.binding.change().await),
        Caller::Http(..) => None,
    }
}

/// The owner tag a caller presents for `instance`: its session's, if that holds it.
fn owner_tag<'a>(caller: Caller<'a>, instance: &InstanceId) -> Option<&'a str> {
    match caller {
        Caller::Session(session) => session.owner_tag_for(instance),
        Caller::Http(..) => None,
    }
}

async fn heartbeat(hub: &Hub, caller: Caller<'_>, instance: InstanceId) -> Result<Alive, Error> {
    caller.grant().may_act_as(&instance)?;
    let _binding = binding_change(caller).await;
    let owner = owner_tag(caller, &instance);
    match hub
        .store
        .heartbeat(&instance, owner, hub.config.instance_ttl)
        .await?
    {
        Claim::Done => Ok(Alive { alive: true }),
        Claim::Missing => Ok(Alive { alive: false }),
        Claim::BoundElsewhere => Err(bound_elsewhere(&instance, hub.config.instance_ttl)),
    }
}

async fn unregister(
    hub: &Hub,
    caller: Caller<'_>,
    instance: InstanceId,
) -> Result<Unregistered, Error> {
    caller.grant().may_act_as(&instance)?;
    let _binding = binding_change(caller).await;
    let owner = owner_tag(caller, &instance);
    let claim = hub.store.unregister(&instance, owner).await?;
    if claim == Claim::BoundElsewhere {
        return Err(bound_elsewhere(&instance, hub.config.instance_ttl));
    }
    if let Caller::Session(session) = caller
        && owner.is_some()
    {
        session.binding.take();
    }
    Ok(Unregistered {
        unregistered: claim == Claim::Done,
    })
}

async fn vote(hub: &Hub, caller: Caller<'_>, ballot: Ballot) -> Result<VoteReply, Error> {
    let max_open = hub.config.max_open.as_millis() as u64;
    if let Some(close_after) = ballot.close_after_ms.filter(|ms| *ms > max_open) {
        return Err(Error::invalid(
            "closeAfterMs",
            format!(
                "closeAfterMs may be at most {max_open} on this hub (--max-open; got {close_after})"
            ),
        ));
    }
    let started = std::time::Instant::now();
    let outcome = vote_once(hub, caller, &ballot).await;
    hub.metrics
        .vote_latency
        .observe(started.elapsed().as_secs_f64());
    if let Ok(Some(VoteOutcome::DecidedNow { .. })) = &outcome {
        hub.metrics.decisions_made.inc();
    }
    hub.metrics.vote(match &outcome {
        // The seed's fallback while the breaker is open.
        Ok(None) => "circuit_open",
        Ok(Some(outcome)) => outcome.label(),
        Err(_) => "error",
    });
    match outcome? {
        None => Ok(VoteReply::circuit_open()),
        Some(outcome) => vote_reply(hub, &ballot, outcome),
    }
}

/// Checks the caller and runs the vote script, bounded by the vote timeout. `None` when the
/// circuit breaker is open: then Redis was not touched.
async fn vote_once(
    hub: &Hub,
    caller: Caller<'_>,
    ballot: &Ballot,
) -> Result<Option<VoteOutcome>, Error> {
    caller.grant().may_act_as(&ballot.instance)?;
    let work = async {
        may_vote_as(hub, caller, &ballot.instance).await?;
        hub.store.vote(ballot, hub.config.vote_rate_limit).await
    };
    match tokio::time::timeout(hub.config.vote_timeout, work).await {
        Err(_) => Err(Error::Timeout(hub.config.vote_timeout)),
        Ok(Err(Error::CircuitOpen { .. })) => Ok(None),
        Ok(outcome) => outcome.map(Some),
    }
}

/// The reply to a vote the script answered.
fn vote_reply(hub: &Hub, ballot: &Ballot, outcome: VoteOutcome) -> Result<VoteReply, Error> {
    let limit = hub.config.vote_rate_limit;
    Ok(match outcome {
        VoteOutcome::Recorded { vote_count } => VoteReply::recorded(vote_count),
        VoteOutcome::DecidedNow {
            vote_count,
            final_decision,
        } => VoteReply::decided_now(vote_count, final_decision),
        VoteOutcome::AlreadyVoted {
            vote_count,
            recorded_value,
            final_decision,
        } => VoteReply::already_voted(vote_count, recorded_value, final_decision),
        VoteOutcome::Decided {
            vote_count,
            final_decision,
        } => VoteReply::decided(vote_count, final_decision),
        VoteOutcome::RateLimited { retry_after_ms } => {
            return Err(Error::RateLimited {
                retry_after_ms,
                message: format!(
                    "instance {} may record at most {} votes per {:?}; retry in {retry_after_ms} ms",
                    ballot.instance, limit.max, limit.window
                ),
            });
        }
        VoteOutcome::Expired { .. } => VoteReply::expired(),
        VoteOutcome::CloseMismatch { opened_with } => {
            return Err(opened_with_another(ballot, "closeAfterMs", opened_with));
        }
        VoteOutcome::TotalMismatch { opened_with } => {
            return Err(opened_with_another(ballot, "totalInstances", opened_with));
        }
    })
}

/// A vote that states another `field` than the one its decision was opened with.
fn opened_with_another(ballot: &Ballot, field: &'static str, opened_with: u64) -> Error {
    Error::invalid(
        field,
        format!(
            "decision {} was opened with {field}={opened_with}; omit {field} or send {opened_with}",
            ballot.decision.as_str()
        ),
    )
}

/// Rule 2: only a registered instance votes, and on a WebSocket only as the session's own.
async fn may_vote_as(hub: &Hub, caller: Caller<'_>, instance: &InstanceId) -> Result<(), Error> {
    match caller {
        // The common case is checked without copying the binding.
        Caller::Session(session) if session.binding.holds(instance) => Ok(()),
        Caller::Session(session) => match session.binding.instance() {
            None => Err(Error::Unauthorized(format!(
                "this session has not registered; call system.register with instanceId {instance} first"
            ))),
            Some(bound) => Err(Error::Unauthorized(format!(
                "this session is registered as {bound}; it cannot vote as {instance}"
            ))),
        },
        Caller::Http(..) => match hub.store.standing(instance).await? {
            Standing::Registered => Ok(()),
            Standing::NotRegistered => Err(Error::Unauthorized(format!(
                "instance {instance} is not registered; call system.register first"
            ))),
            Standing::BoundToSession => Err(Error::Unauthorized(format!(
                "instance {instance} is bound to an open WebSocket session; only that session votes as it"
            ))),
        },
    }
}

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
