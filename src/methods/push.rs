//! The `system.push.*` methods: a browser subscribes to decision events by Web Push, or
//! stops. Any caller that may receive events may subscribe; knowing a subscription's
//! endpoint (the browser's secret) is what lets one remove it; an admin lists them.

use serde_json::value::RawValue;

use super::{Caller, reply};
use crate::clock::now_ms;
use crate::error::Error;
use crate::hub::Hub;
use crate::outbound::url::EndpointUrl;
use crate::protocol::push::{PushCall, PushInfo, PushList, PushSubscribed};
use crate::push::subscription::{self, SubscriptionKeys};
use crate::push::subscription_id;
use crate::store::{Added, EndpointKind, MAX_PUSH_SUBSCRIPTIONS, NewEndpoint, StoredEndpoint};
use crate::webhooks::dispatch::DEFAULT_EVENTS;

/// Runs one `system.push.*` call.
pub(super) async fn call(
    hub: &Hub,
    caller: Caller<'_>,
    call: PushCall,
) -> Result<Box<RawValue>, Error> {
    let Some(push) = &hub.push else {
        return Err(Error::MethodNotFound(
            "Web Push is off on this hub: a hub with --auth-secret sends it only when started \
             with --vapid-subject"
                .into(),
        ));
    };
    let result = match call {
        PushCall::Subscribe {
            endpoint,
            p256dh,
            auth,
            events,
        } => {
            let allow_private = hub.config.webhooks.allow_private;
            let url = subscription::endpoint(&endpoint, allow_private)
                .map_err(|err| Error::invalid("subscription", err.to_string()))?;
            SubscriptionKeys::parse(&p256dh, &auth)
                .map_err(|err| Error::invalid("subscription.keys", err.to_string()))?;
            // The key is made now if the keyspace has none, so messages can be signed.
            push.key(&hub.store).await?;
            subscribe(hub, &url, &p256dh, &auth, events).await?
        }
        PushCall::Unsubscribe { endpoint } => {
            let id = subscription_id(&normalised(&endpoint));
            let removed = hub.store.endpoint_remove(EndpointKind::Push, &id).await?;
            PushSubscribed {
                id,
                done: if removed { "removed" } else { "absent" }.into(),
            }
        }
        PushCall::List => {
            caller.grant().may_administer()?;
            let subscriptions = hub.store.endpoints(EndpointKind::Push).await?;
            return reply(PushList {
                subscriptions: subscriptions.into_iter().map(info).collect(),
            });
        }
    };
    reply(result)
}

async fn subscribe(
    hub: &Hub,
    url: &EndpointUrl,
    p256dh: &str,
    auth: &str,
    events: Vec<String>,
) -> Result<PushSubscribed, Error> {
    let events = if events.is_empty() {
        DEFAULT_EVENTS.map(str::to_owned).to_vec()
    } else {
        events
    };
    let id = subscription_id(url.as_str());
    let added = hub
        .store
        .webhook_add(
            &NewEndpoint {
                kind: EndpointKind::Push,
                id: &id,
                url: url.as_str(),
                events: &events,
                description: "",
                secret: "",
                push_keys: Some((p256dh, auth)),
            },
            now_ms(),
        )
        .await?;
    let done = match added {
        Added::New => "subscribed",
        Added::Exists => "renewed",
        Added::Full => {
            return Err(Error::invalid(
                "subscription",
                format!(
                    "this keyspace holds its maximum of {MAX_PUSH_SUBSCRIPTIONS} push \
                     subscriptions; an admin can list them (system.push.list)"
                ),
            ));
        }
    };
    Ok(PushSubscribed {
        id,
        done: done.into(),
    })
}

/// The endpoint as stored (normalised), so that unsubscribing finds it as it was written.
fn normalised(endpoint: &str) -> String {
    EndpointUrl::parse(endpoint, true)
        .map_or_else(|_| endpoint.to_owned(), |url| url.as_str().to_owned())
}

/// A subscription as `list` shows it: its push service, not the browser's endpoint.
fn info(subscription: StoredEndpoint) -> PushInfo {
    let push_service = EndpointUrl::parse(&subscription.url, true)
        .map_or_else(|_| String::new(), |url| url.origin());
    PushInfo {
        id: subscription.id,
        push_service,
        events: subscription.events,
        added_at: subscription.added_at,
        last_outcome: subscription.last.map(|last| last.outcome),
        pending: subscription.waiting,
    }
}
