//! The policy a vote's decision falls under: the hub's copy resolves it, and only for a
//! decision not open yet are its terms (the electorate snapshot, the opener's roles) read
//! and handed to the vote script, which stores them with the decision if it is still the
//! first to open it.

use crate::decision::{Ballot, VoteOutcome};
use crate::error::Error;
use crate::hub::Hub;
use crate::policy::{Opening, Policy, Terms};
use crate::store::RoleMembers;

/// Runs the vote script for `ballot` under the policy its decision matches, if any.
pub(super) async fn vote_under_policy(hub: &Hub, ballot: &Ballot) -> Result<VoteOutcome, Error> {
    let limit = hub.config.vote_rate_limit;
    let policies = hub.policies.current();
    let decision = ballot.decision.as_str();
    let Some((pattern, policy)) = policies.resolve(decision) else {
        if hub.config.require_policy {
            return Err(Error::Refused {
                reason: "no_policy",
                message: format!(
                    "no policy matches decision {decision}, and this hub takes votes only on \
                     decisions a policy covers (--require-policy)"
                ),
            });
        }
        return hub.store.vote(ballot, limit, Opening::Plain).await;
    };
    if let (Some(most), Some(stated)) = (policy.close_after_ms, ballot.close_after_ms)
        && stated > most
    {
        return Err(Error::invalid(
            "closeAfterMs",
            format!(
                "the policy {pattern} lets decisions stay open at most {most} ms (got {stated})"
            ),
        ));
    }
    if !policy.reads_at_opening() {
        let terms = terms(ballot, pattern, policy, None)?;
        return hub.store.vote(ballot, limit, Opening::Under(&terms)).await;
    }
    // Only a decision not open yet pays for reading its terms.
    match hub.store.vote(ballot, limit, Opening::Ask).await? {
        VoteOutcome::NeedsOpening => {}
        outcome => return Ok(outcome),
    }
    let terms = opening_terms(hub, ballot, pattern, policy).await?;
    match hub
        .store
        .vote(ballot, limit, Opening::Under(&terms))
        .await?
    {
        VoteOutcome::NeedsOpening => Err(Error::Internal(
            "the vote script asked for terms it was given".into(),
        )),
        outcome => Ok(outcome),
    }
}

/// Reads who may open and who votes, and fixes the terms the decision opens with.
async fn opening_terms(
    hub: &Hub,
    ballot: &Ballot,
    pattern: &str,
    policy: &Policy,
) -> Result<Terms, Error> {
    let instance = ballot.instance.as_str();
    let decision = ballot.decision.as_str();
    if let Some(openers) = &policy.openers
        && !hub.store.roles_of(instance).await?.contains(openers)
    {
        return Err(Error::Refused {
            reason: "not_an_opener",
            message: format!(
                "decision {decision} is not open yet, and under policy {pattern} only instances \
                 registered with role {openers} open it; instance {instance} is not one"
            ),
        });
    }
    let Some(electorate) = &policy.electorate else {
        return terms(ballot, pattern, policy, None);
    };
    let members = match hub.store.role_members(&electorate.role).await? {
        RoleMembers::Members(members) => members,
        RoleMembers::TooMany => {
            return Err(Error::Refused {
                reason: "electorate_too_large",
                message: format!(
                    "role {} has more than {} registered instances, the most one decision's \
                     electorate holds",
                    electorate.role,
                    crate::policy::MAX_ELECTORATE
                ),
            });
        }
    };
    if !members.iter().any(|m| m == instance) {
        return Err(not_in_electorate(ballot));
    }
    terms(ballot, pattern, policy, Some(members))
}

/// The terms a decision opens with under `policy`, among `electorate` when it names one.
fn terms(
    ballot: &Ballot,
    pattern: &str,
    policy: &Policy,
    electorate: Option<Vec<String>>,
) -> Result<Terms, Error> {
    let (total, quorum) = policy.sizes(ballot.total_instances, electorate.as_ref().map(Vec::len));
    if let (Some(_), Some(stated)) = (&electorate, ballot.total_instances)
        && stated != total
    {
        return Err(Error::invalid(
            "totalInstances",
            format!(
                "decision {} opens with its electorate's {total} instances (policy {pattern}); \
                 omit totalInstances or send {total} (got {stated})",
                ballot.decision.as_str()
            ),
        ));
    }
    if quorum > total {
        return Err(Error::Refused {
            reason: "threshold_unreachable",
            message: format!(
                "policy {pattern} needs {quorum} votes, but decision {} would open with only \
                 {total} instances",
                ballot.decision.as_str()
            ),
        });
    }
    Ok(Terms {
        pattern: pattern.to_owned(),
        policy: policy.clone(),
        electorate,
        total,
        quorum,
        close_after_ms: ballot.close_after_ms.or(policy.close_after_ms),
    })
}

/// The refusal of a vote from outside its decision's electorate.
pub(super) fn not_in_electorate(ballot: &Ballot) -> Error {
    Error::Refused {
        reason: "not_in_electorate",
        message: format!(
            "instance {} is not in the electorate of decision {} (fixed when it opened)",
            ballot.instance,
            ballot.decision.as_str()
        ),
    }
}
