//! The instance methods: register, heartbeat and unregister, each holding the session's
//! binding still while it changes it in Redis.

use super::Caller;
use crate::error::Error;
use crate::hub::Hub;
use crate::instance::{InstanceId, Registration};
use crate::protocol::{Alive, Registered, Unregistered};
use crate::session::BindingChange;
use crate::store::Claim;

fn bound_elsewhere(instance: &InstanceId, ttl: std::time::Duration) -> Error {
    Error::Unauthorized(format!(
        "instance {instance} is bound to another open session; close that session first \
         (a binding whose session vanished expires within {}s)",
        ttl.as_secs()
    ))
}

pub(super) async fn register(
    hub: &Hub,
    caller: Caller<'_>,
    registration: Registration,
) -> Result<Registered, Error> {
    let instance = registration.instance.clone();
    caller.grant().may_act_as(&instance)?;
    caller.grant().may_claim_roles(&registration.roles)?;
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

pub(super) async fn heartbeat(
    hub: &Hub,
    caller: Caller<'_>,
    instance: InstanceId,
) -> Result<Alive, Error> {
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

pub(super) async fn unregister(
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
