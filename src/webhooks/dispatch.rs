//! This hub's share of webhook deliveries. Every hub runs one dispatcher; they share the
//! work through Redis: each claims an endpoint's due deliveries for a lease
//! (`Store::webhook_next`), attempts them over HTTP, signed, and records the outcome
//! (`Store::webhook_settle`), which also says when the next attempt is due. A hub that
//! dies mid-attempt leaves its claims to run out, and another hub makes the attempt.
//!
//! Web Push subscriptions are endpoints too: their deliveries are encrypted for the
//! browser and signed with the hub's VAPID key (`crate::push`) instead, and a push service
//! that answers 404 or 410 has the subscription removed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::sign::{Secret, signature_header};
use crate::clock::now_ms;
use crate::config::WebhookConfig;
use crate::metrics::{Metrics, Outcome as OutcomeLabel};
use crate::outbound::http::{Outcome, Poster, PosterSettings};
use crate::outbound::url::EndpointUrl;
use crate::protocol::event;
use crate::protocol::webhook::{
    ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookMessage, event_message, event_name,
    gap_message,
};
use crate::push::{Push, event_payload};
use crate::store::{
    Added, AttemptReport, Claimed, Delivery, EndpointKind, NewEndpoint, Settled, Store,
    StoredEndpoint,
};
use crate::sync::lock;

/// How often a dispatcher looks for due deliveries when no new event wakes it.
pub const DISPATCH_TICK: Duration = Duration::from_secs(1);
/// Most deliveries one hub attempts at once, over every endpoint.
pub const MAX_IN_FLIGHT: usize = 64;
/// Most deliveries one hub attempts at once to one endpoint: one slow event does not hold
/// back the others (receivers order by event id).
pub const MAX_IN_FLIGHT_PER_ENDPOINT: usize = 8;
/// Shortest lease a claimed delivery is held for, however short the attempt timeout.
const MIN_LEASE: Duration = Duration::from_secs(1);
/// Least time between two rounds that an event or a finished attempt started: a busy hub
/// delivers thousands of events a second, and each round reads every endpoint.
pub const MIN_ROUND_GAP: Duration = Duration::from_millis(20);
/// How long attempts in flight get to finish when the hub stops; the rest are left to
/// their claims, which another hub takes over.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// The event patterns an endpoint gets when it names none: both decision events.
pub const DEFAULT_EVENTS: [&str; 2] = [event::DECISION_MADE, event::DECISION_EXPIRED];

/// How long a claimed delivery is this hub's: twice the attempt timeout, so that an
/// attempt in flight is never made twice, and a hub that dies leaves it within that.
pub fn lease(timeout: Duration) -> Duration {
    (timeout * 2).max(MIN_LEASE)
}

/// An endpoint given at start (`--webhook`), added once on the keyspace.
#[derive(Debug, Clone)]
pub struct Configured {
    pub id: String,
    pub url: String,
    /// The `whsec_` secret from `--webhook-secret-file`.
    pub secret: String,
}

/// The endpoints given at start, checked: each URL, and the secret they are signed with.
pub fn configured(config: &WebhookConfig) -> Result<Vec<Configured>, String> {
    if config.urls.is_empty() {
        return Ok(Vec::new());
    }
    let Some(path) = &config.secret_file else {
        return Err(
            "--webhook needs --webhook-secret-file (a file holding a whsec_ secret)".into(),
        );
    };
    let text = std::fs::read_to_string(path).map_err(|err| {
        format!(
            "cannot read --webhook-secret-file {}: {err}",
            path.display()
        )
    })?;
    let secret = Secret::parse(&text)
        .map_err(|err| format!("--webhook-secret-file {}: {err}", path.display()))?
        .to_whsec();
    config
        .urls
        .iter()
        .map(|url| {
            let parsed = EndpointUrl::parse(url, config.allow_private)
                .map_err(|err| format!("--webhook {url}: {err}"))?;
            Ok(Configured {
                id: super::configured_endpoint_id(parsed.as_str()),
                url: parsed.as_str().to_owned(),
                secret: secret.clone(),
            })
        })
        .collect()
}

/// One hub's dispatcher.
pub struct Dispatcher {
    store: Store,
    poster: Poster,
    config: WebhookConfig,
    /// Endpoints given at start, until they are in the keyspace.
    configured: std::sync::Mutex<Vec<Configured>>,
    metrics: Metrics,
    /// Raised when this hub delivers a decision event: there may be a delivery to make.
    wake: Arc<Notify>,
    /// Web Push, unless it is off on this hub.
    push: Option<Arc<Push>>,
}

/// What one attempt came to, for the dispatcher's loop.
struct Done {
    endpoint: String,
}

impl Dispatcher {
    pub fn new(
        store: Store,
        config: WebhookConfig,
        configured: Vec<Configured>,
        metrics: Metrics,
        wake: Arc<Notify>,
        push: Option<Arc<Push>>,
    ) -> Self {
        let poster = Poster::new(PosterSettings {
            timeout: config.timeout,
            allow_private: config.allow_private,
            user_agent: format!("quorum-hub/{}", env!("CARGO_PKG_VERSION")),
        });
        Self {
            store,
            poster,
            config,
            configured: std::sync::Mutex::new(configured),
            metrics,
            wake,
            push,
        }
    }

    /// Runs until `shutdown`; attempts in flight then finish (bounded by their timeout)
    /// or, if the hub stops first, are left to their lease.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut attempts: JoinSet<Done> = JoinSet::new();
        let mut in_flight: HashMap<String, usize> = HashMap::new();
        let mut tick = tokio::time::interval(DISPATCH_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_round = tokio::time::Instant::now();
        loop {
            let woken = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => false,
                () = self.wake.notified() => true,
                Some(done) = attempts.join_next() => {
                    if let Ok(done) = done {
                        release(&mut in_flight, &done.endpoint);
                    }
                    // Others that finished meanwhile free their places too.
                    while let Some(done) = attempts.try_join_next() {
                        if let Ok(done) = done {
                            release(&mut in_flight, &done.endpoint);
                        }
                    }
                    true
                }
            };
            if woken {
                let next = last_round + MIN_ROUND_GAP;
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    () = tokio::time::sleep_until(next) => {}
                }
            }
            last_round = tokio::time::Instant::now();
            if let Err(err) = self.round(&mut attempts, &mut in_flight).await {
                tracing::debug!(%err, "webhook round failed; trying again");
            }
        }
        // Attempts in flight may finish, and their outcomes are recorded.
        let _ = tokio::time::timeout(SHUTDOWN_WAIT, async {
            while attempts.join_next().await.is_some() {}
        })
        .await;
    }

    /// Claims what is due on every enabled endpoint, as far as this hub has room, and
    /// starts the attempts.
    async fn round(
        self: &Arc<Self>,
        attempts: &mut JoinSet<Done>,
        in_flight: &mut HashMap<String, usize>,
    ) -> Result<(), crate::error::Error> {
        self.add_configured().await?;
        let mut endpoints = self.store.endpoints(EndpointKind::Webhook).await?;
        if self.push.is_some() {
            endpoints.extend(self.store.endpoints(EndpointKind::Push).await?);
        }
        let lease_ms = lease(self.config.timeout).as_millis() as u64;
        let mut pending = 0;
        for endpoint in endpoints {
            if endpoint.disabled.is_some() {
                pending += endpoint.waiting;
                continue;
            }
            let busy = in_flight.get(&endpoint.id).copied().unwrap_or_default();
            let room = MAX_IN_FLIGHT_PER_ENDPOINT
                .saturating_sub(busy)
                .min(MAX_IN_FLIGHT.saturating_sub(attempts.len()));
            let Some((waiting, claimed)) = self
                .store
                .webhook_next(&endpoint.id, room, now_ms(), lease_ms)
                .await?
            else {
                continue;
            };
            pending += waiting;
            if claimed.is_empty() {
                continue;
            }
            *in_flight.entry(endpoint.id.clone()).or_default() += claimed.len();
            let endpoint = Arc::new(endpoint);
            for claim in claimed {
                let this = self.clone();
                let endpoint = endpoint.clone();
                attempts.spawn(async move {
                    this.attempt(&endpoint, claim).await;
                    Done {
                        endpoint: endpoint.id.clone(),
                    }
                });
            }
        }
        self.metrics.webhook_pending.set(pending as i64);
        Ok(())
    }

    /// Adds the endpoints given at start that the keyspace lacks (once Redis answers).
    async fn add_configured(&self) -> Result<(), crate::error::Error> {
        let pending = std::mem::take(&mut *lock(&self.configured));
        let events: Vec<String> = DEFAULT_EVENTS.map(str::to_owned).to_vec();
        for (n, endpoint) in pending.iter().enumerate() {
            let new = NewEndpoint {
                kind: EndpointKind::Webhook,
                id: &endpoint.id,
                url: &endpoint.url,
                events: &events,
                description: "given at start (--webhook)",
                secret: &endpoint.secret,
                push_keys: None,
            };
            match self.store.webhook_add(&new, now_ms()).await {
                Ok(Added::Full) => tracing::warn!(
                    url = %endpoint.url,
                    "cannot add the --webhook endpoint: the keyspace holds its maximum of endpoints"
                ),
                Ok(Added::New | Added::Exists) => {}
                Err(err) => {
                    // Kept for the next round.
                    lock(&self.configured).extend(pending[n..].iter().cloned());
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    /// Makes one attempt at a claimed delivery and records what it came to.
    async fn attempt(&self, endpoint: &StoredEndpoint, claim: Claimed) {
        let now = now_ms();
        let message = match &claim.delivery {
            Delivery::Event(logged) => {
                let name = event_name(logged);
                if !wants(endpoint, name) {
                    self.settle(endpoint, &claim, Settled::Skipped, None, None, 0)
                        .await;
                    return;
                }
                if endpoint.push_keys.is_some() {
                    event_payload(logged)
                } else {
                    event_message(logged)
                }
            }
            Delivery::Gap(after) => gap_message(*after, now),
            Delivery::Unreadable(_) => {
                let error = "the event log's entry does not read as an event";
                self.settle(endpoint, &claim, Settled::GivenUp, None, Some(error), 0)
                    .await;
                return;
            }
        };
        let (settled, status, error, duration) = match self.post(endpoint, &message).await {
            Ok(attempt) => {
                let label = attempt.outcome.label();
                self.metrics
                    .webhook_attempts
                    .get_or_create(&OutcomeLabel { outcome: label })
                    .inc();
                if endpoint.push_keys.is_some() && attempt.outcome.ends_subscription() {
                    self.unsubscribe(endpoint, &attempt.outcome).await;
                    return;
                }
                let (settled, status, error) = self.follow(&claim, &attempt.outcome);
                (settled, status, error, attempt.duration)
            }
            Err(error) => {
                self.metrics
                    .webhook_attempts
                    .get_or_create(&OutcomeLabel { outcome: "error" })
                    .inc();
                let settled = self.retry_or_give_up(claim.attempt, None);
                (settled, None, Some(error), Duration::ZERO)
            }
        };
        if settled == Settled::Delivered
            && let Delivery::Event(logged) = &claim.delivery
        {
            let at = match logged {
                crate::protocol::LoggedEvent::Made(made) => made.timestamp,
                crate::protocol::LoggedEvent::Expired(expired) => expired.timestamp,
            };
            let seconds = now_ms().saturating_sub(at) as f64 / 1000.0;
            self.metrics.webhook_delivery.observe(seconds);
        }
        self.settle(
            endpoint,
            &claim,
            settled,
            status,
            error.as_deref(),
            duration.as_millis() as u64,
        )
        .await;
    }

    /// Signs and sends one message to the endpoint.
    async fn post(
        &self,
        endpoint: &StoredEndpoint,
        message: &WebhookMessage,
    ) -> Result<crate::outbound::http::Attempt, String> {
        if endpoint.push_keys.is_some() {
            let push = self.push.as_ref().ok_or("Web Push is off on this hub")?;
            let (url, request) = push.request(&self.store, endpoint, message).await?;
            return Ok(self
                .poster
                .post(&url, &request.headers, request.body.into())
                .await);
        }
        let url = EndpointUrl::parse(&endpoint.url, true).map_err(|err| err.to_string())?;
        let secret = Secret::parse(&endpoint.secret).map_err(|err| err.to_string())?;
        let now = now_ms();
        let previous = endpoint
            .previous_secret
            .as_ref()
            .filter(|(_, until)| *until > now)
            .and_then(|(secret, _)| Secret::parse(secret).ok());
        let mut secrets = vec![&secret];
        secrets.extend(previous.as_ref());
        let timestamp = (now / 1000) as i64;
        let signature = signature_header(&secrets, &message.id, timestamp, &message.body);
        let headers = [
            (ID_HEADER, message.id.clone()),
            (TIMESTAMP_HEADER, timestamp.to_string()),
            (SIGNATURE_HEADER, signature),
        ];
        Ok(self
            .poster
            .post(&url, &headers, message.body.clone().into())
            .await)
    }

    /// What follows from an attempt's outcome: delivered, gone, or another attempt (as
    /// the receiver asked with `Retry-After`, else on the schedule) unless that was the
    /// last.
    fn follow(&self, claim: &Claimed, outcome: &Outcome) -> (Settled, Option<u16>, Option<String>) {
        match outcome {
            Outcome::Delivered { status } => (Settled::Delivered, Some(*status), None),
            Outcome::Gone => (Settled::Gone, Some(410), None),
            Outcome::Failed {
                status,
                retry_after,
            } => (
                self.retry_or_give_up(claim.attempt, *retry_after),
                Some(*status),
                None,
            ),
            Outcome::Error { reason } => (
                self.retry_or_give_up(claim.attempt, None),
                None,
                Some(reason.clone()),
            ),
        }
    }

    /// Removes a subscription its push service no longer knows (404 or 410).
    async fn unsubscribe(&self, endpoint: &StoredEndpoint, outcome: &Outcome) {
        match self
            .store
            .endpoint_remove(EndpointKind::Push, &endpoint.id)
            .await
        {
            Ok(_) => tracing::info!(
                subscription = %endpoint.id,
                "push subscription removed: its push service answered {outcome}"
            ),
            // The claim runs out and the next attempt meets the same answer.
            Err(err) => {
                tracing::warn!(%err, subscription = %endpoint.id, "could not remove a push subscription")
            }
        }
    }

    fn retry_or_give_up(&self, attempt: u32, retry_after: Option<Duration>) -> Settled {
        match self.config.retry_schedule.after(attempt) {
            Some(wait) => {
                let wait = retry_after.unwrap_or(wait);
                Settled::Retry(now_ms() + wait.as_millis() as u64)
            }
            None => Settled::GivenUp,
        }
    }

    async fn settle(
        &self,
        endpoint: &StoredEndpoint,
        claim: &Claimed,
        settled: Settled,
        status: Option<u16>,
        error: Option<&str>,
        duration_ms: u64,
    ) {
        let report = AttemptReport {
            endpoint: &endpoint.id,
            delivery: &claim.delivery,
            attempt: claim.attempt,
            settled,
            status,
            error,
            duration_ms,
            now_ms: now_ms(),
            disable_after_ms: self.config.disable_after.as_millis() as u64,
        };
        match self.store.webhook_settle(&report).await {
            Ok(true) => tracing::warn!(
                endpoint = %endpoint.id,
                url = %endpoint.url,
                "webhook endpoint disabled ({})",
                match settled {
                    Settled::Gone => "it answered 410 Gone",
                    _ => "every attempt failed for too long",
                }
            ),
            Ok(false) => {}
            // The claim runs out, and the delivery is attempted again (at least once).
            Err(err) => {
                tracing::warn!(%err, endpoint = %endpoint.id, "could not record a webhook attempt")
            }
        }
    }
}

/// Whether an endpoint asked for events named `name`.
fn wants(endpoint: &StoredEndpoint, name: &str) -> bool {
    endpoint
        .events
        .iter()
        .any(|pattern| event::pattern_matches(pattern, name))
}

fn release(in_flight: &mut HashMap<String, usize>, endpoint: &str) {
    if let Some(busy) = in_flight.get_mut(endpoint) {
        *busy = busy.saturating_sub(1);
        if *busy == 0 {
            in_flight.remove(endpoint);
        }
    }
}
