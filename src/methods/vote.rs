//! `quorum.vote`: who may vote as an instance, the vote script run within its bounds, and
//! the reply shaped from its outcome.

use super::Caller;
use crate::decision::{Ballot, VoteOutcome};
use crate::error::Error;
use crate::hub::Hub;
use crate::instance::InstanceId;
use crate::protocol::VoteReply;
use crate::store::Standing;

pub(super) async fn vote(
    hub: &Hub,
    caller: Caller<'_>,
    ballot: Ballot,
) -> Result<VoteReply, Error> {
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
        super::terms::vote_under_policy(hub, ballot).await
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
        VoteOutcome::NotInElectorate => return Err(super::terms::not_in_electorate(ballot)),
        VoteOutcome::ValueRefused => {
            return Err(Error::invalid(
                "value",
                format!(
                    "the policy decision {} opened under does not allow value {:?};                      system.quorum.status lists the values it takes",
                    ballot.decision.as_str(),
                    ballot.value.as_str()
                ),
            ));
        }
        VoteOutcome::NeedsOpening => {
            return Err(Error::Internal("a vote was left without terms".into()));
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
