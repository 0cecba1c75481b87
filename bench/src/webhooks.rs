//! Webhook delivery: a receiver in this process behind E endpoints, one voter making
//! decisions, and how fast and how soon every endpoint has each decision, beside the time
//! the same decisions take to reach a session over the WebSocket.
//!
//! The decisions are made one after another, each as soon as the vote before it is
//! answered, so the deliveries queue at the hub's dispatcher: deliveries per second is its
//! rate, and a delivery's latency includes its wait behind the earlier ones (`--pause`
//! spaces the decisions out to see latency without that wait).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::{
    BenchError, DEFAULT_URL, Percentiles, Progress, Table, call, connect, decide_alone, register,
};
use quorum_hub::config::parse_duration;
use quorum_hub::protocol::peer::{Incoming, PeerSocket};
use quorum_hub::protocol::webhook::{
    WebhookAddParams, WebhookChanged, WebhookIdParams, WebhookSecret,
};
use quorum_hub::protocol::{Notification, event, method};

mod receiver;
use receiver::{Delivery, Receiver, endpoint_of};

/// What the bench's endpoints say they are for, in `system.webhooks.list`.
const ENDPOINT_DESCRIPTION: &str = "quorum-hub-bench webhooks";

#[derive(Debug, Clone, Args)]
pub struct WebhooksOptions {
    /// The hub's WebSocket endpoint (the hub runs with --webhook-allow-private, and the
    /// bench connects from loopback or the hub has no --auth-secret: it adds endpoints).
    #[arg(long, default_value = DEFAULT_URL)]
    pub url: String,
    /// Webhook endpoints, all at the bench's receiver; each gets every decision.
    #[arg(long, default_value_t = 4)]
    pub endpoints: usize,
    #[arg(long, default_value_t = 200)]
    pub decisions: usize,
    /// Longest wait, after the last decision, for every delivery.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub wait: Duration,
    /// Pause between decisions (default: none, the next as soon as a vote is answered).
    #[arg(long, value_parser = parse_duration)]
    pub pause: Option<Duration>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WebhooksReport {
    pub endpoints: usize,
    pub decisions: usize,
    /// Deliveries that arrived, each endpoint's copy of each decision counted once.
    pub delivered: u64,
    /// From the first deciding vote being sent to the last delivery arriving.
    pub seconds: f64,
    /// `delivered` over `seconds`.
    pub deliveries_per_second: f64,
    /// Every delivery: from its decision's deciding vote being sent to the receiver having
    /// the request.
    pub receiver_us: Percentiles,
    /// Every decision: from its deciding vote being sent to a listening session receiving
    /// `quorum.decision.made` (which often comes before the vote's answer does).
    pub websocket_us: Percentiles,
    /// The deciding votes' round trips.
    pub vote_us: Percentiles,
    /// Endpoint copies of a decision that never arrived.
    pub missed: u64,
    /// Endpoint copies of a decision that arrived more than once.
    pub duplicated: u64,
    /// Decisions the listening session never received.
    pub websocket_missed: u64,
    /// Deliveries whose `webhook-id` is not the event id the session received for the
    /// same decision.
    pub mismatched_ids: u64,
}

impl WebhooksReport {
    /// The deliveries the decisions were due to make: each to every endpoint.
    pub fn deliveries(&self) -> usize {
        self.endpoints * self.decisions
    }
}

pub async fn run(options: &WebhooksOptions) -> Result<WebhooksReport, BenchError> {
    let tag = super::run_tag();
    let (delivered, deliveries) = mpsc::unbounded_channel();
    let receiver = Receiver::start(delivered)
        .await
        .map_err(|e| BenchError::Other(format!("starting the webhook receiver: {e}")))?;
    // Registered before any decision: the registration's reply proves the hub has it.
    let mut listener = connect(&options.url).await?;
    register(&mut listener, &format!("wl{tag}")).await?;
    let (heard, websocket) = mpsc::unbounded_channel();
    let listening = tokio::spawn(listen(listener, heard));
    let mut voter = connect(&options.url).await?;
    let instance = format!("wv{tag}");
    register(&mut voter, &instance).await?;
    let mut ids = Vec::with_capacity(options.endpoints);
    let mut added = Ok(());
    for n in 0..options.endpoints {
        match add_endpoint(&mut voter, &receiver.url(n)).await {
            Ok(id) => ids.push(id),
            Err(err) => {
                added = Err(err);
                break;
            }
        }
    }
    let mut deciding = Deciding {
        voter,
        instance,
        prefix: format!("wh{tag}-"),
        deliveries,
        websocket,
    };
    let measured = match added {
        Ok(()) => deciding.measure(options).await,
        Err(err) => Err(err),
    };
    // The endpoints go whatever happened, so the keyspace is left as it was found.
    let removed = remove_endpoints(&mut deciding.voter, &ids).await;
    listening.abort();
    let report = measured?;
    removed?;
    Ok(report)
}

/// Adds an endpoint for `url`, getting decisions made only; returns its id.
async fn add_endpoint(voter: &mut PeerSocket, url: &str) -> Result<String, BenchError> {
    let events = [event::DECISION_MADE.to_owned()];
    let params = WebhookAddParams {
        url,
        events: &events,
        description: Some(ENDPOINT_DESCRIPTION),
    };
    let added: WebhookSecret = call(voter, 0, method::WEBHOOKS_ADD, &params)
        .await
        .map_err(|err| {
            BenchError::Other(format!(
                "adding the webhook endpoint {url}: {}",
                BenchError::from(err)
            ))
        })?;
    Ok(added.id)
}

/// Removes the endpoints `ids`, every one even when one fails; the first failure is
/// returned.
async fn remove_endpoints(voter: &mut PeerSocket, ids: &[String]) -> Result<(), BenchError> {
    let mut outcome = Ok(());
    for id in ids {
        let params = WebhookIdParams { id };
        if let Err(err) = call::<WebhookChanged>(voter, 0, method::WEBHOOKS_REMOVE, &params).await
            && outcome.is_ok()
        {
            outcome = Err(BenchError::Other(format!(
                "removing the webhook endpoint {id}: {}",
                BenchError::from(err)
            )));
        }
    }
    outcome
}

/// Passes on each `quorum.decision.made` a session receives: its decision, and when.
async fn listen(mut socket: PeerSocket, heard: mpsc::UnboundedSender<Heard>) {
    while let Some(Ok(frame)) = socket.next().await {
        let received = Instant::now();
        if let Message::Text(text) = frame
            && let Some(Incoming::Notification(Notification::DecisionMade(made))) =
                Incoming::parse(&text)
            && heard
                .send(Heard {
                    decision: made.decision,
                    event_id: made.event_id.to_string(),
                    received,
                })
                .is_err()
        {
            break;
        }
    }
}

/// The voter, and where the deliveries and the listening session's events arrive.
struct Deciding {
    voter: PeerSocket,
    instance: String,
    /// Decision `n` is `{prefix}{n}`.
    prefix: String,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    websocket: mpsc::UnboundedReceiver<Heard>,
}

/// A decision event the listening session received.
struct Heard {
    decision: String,
    event_id: String,
    received: Instant,
}

/// One decision: when its deciding vote was sent, and when it was answered.
#[derive(Clone, Copy)]
struct Made {
    sent: Instant,
    replied: Instant,
}

/// What arrived for one endpoint's copy of one decision.
struct Arrived {
    /// The first copy's arrival.
    first: Instant,
    copies: u64,
    /// The first copy's `webhook-id`.
    id: String,
}

impl Deciding {
    /// Makes the decisions, then waits until every endpoint has each one (or `wait`).
    async fn measure(&mut self, options: &WebhooksOptions) -> Result<WebhooksReport, BenchError> {
        let mut made = Vec::with_capacity(options.decisions);
        let mut progress = Progress::new("deciding", options.decisions as u64);
        let mut arrived = HashMap::new();
        let mut heard = HashMap::new();
        for n in 0..options.decisions {
            if let Some(pause) = options.pause.filter(|_| n > 0) {
                tokio::time::sleep(pause).await;
            }
            made.push(self.decide(n).await?);
            progress.set(n as u64 + 1);
            self.take_arrivals(&mut arrived, &mut heard);
        }
        progress.finish();
        let expected = options.endpoints * options.decisions;
        let wait_until = tokio::time::Instant::now() + options.wait;
        while arrived.len() < expected || heard.len() < options.decisions {
            tokio::select! {
                Some(delivery) = self.deliveries.recv() => self.record(&mut arrived, delivery),
                Some(event) = self.websocket.recv() => self.hear(&mut heard, event),
                _ = tokio::time::sleep_until(wait_until) => break,
                else => break,
            }
        }
        // Copies already in hand when the last one came count too.
        self.take_arrivals(&mut arrived, &mut heard);
        Ok(report(options, &made, &arrived, &heard))
    }

    /// Makes decision `n` alone (`totalInstances` 1).
    async fn decide(&mut self, n: usize) -> Result<Made, BenchError> {
        let decision = format!("{}{n}", self.prefix);
        let (sent, replied) =
            decide_alone(&mut self.voter, n as u64 + 1, &self.instance, &decision).await?;
        Ok(Made { sent, replied })
    }

    /// Takes in what has arrived so far, without waiting.
    fn take_arrivals(
        &mut self,
        arrived: &mut HashMap<(usize, usize), Arrived>,
        heard: &mut HashMap<usize, Heard>,
    ) {
        while let Ok(delivery) = self.deliveries.try_recv() {
            self.record(arrived, delivery);
        }
        while let Ok(event) = self.websocket.try_recv() {
            self.hear(heard, event);
        }
    }

    /// Counts one request the receiver read, if it is a copy of one of this run's
    /// decisions.
    fn record(&self, arrived: &mut HashMap<(usize, usize), Arrived>, delivery: Delivery) {
        let copy = endpoint_of(&delivery.path).zip(self.number(delivery.decision.as_deref()));
        if let Some(key) = copy {
            arrived
                .entry(key)
                .and_modify(|a| a.copies += 1)
                .or_insert(Arrived {
                    first: delivery.received,
                    copies: 1,
                    id: delivery.id,
                });
        }
    }

    /// Notes when the listening session first had one of this run's decisions.
    fn hear(&self, heard: &mut HashMap<usize, Heard>, event: Heard) {
        if let Some(n) = self.number(Some(&event.decision)) {
            heard.entry(n).or_insert(event);
        }
    }

    /// The number of one of this run's decisions.
    fn number(&self, decision: Option<&str>) -> Option<usize> {
        decision?.strip_prefix(&self.prefix)?.parse().ok()
    }
}

/// The figures of one run: the decisions `made`, each endpoint's copies that `arrived`,
/// and when the listening session `heard` each decision.
fn report(
    options: &WebhooksOptions,
    made: &[Made],
    arrived: &HashMap<(usize, usize), Arrived>,
    heard: &HashMap<usize, Heard>,
) -> WebhooksReport {
    let since_vote = |n: usize, at: Instant| {
        made.get(n)
            .map(|m| at.saturating_duration_since(m.sent).as_micros() as u64)
    };
    let in_run = |&(endpoint, n): &(usize, usize)| endpoint < options.endpoints && n < made.len();
    let copies: Vec<_> = arrived.iter().filter(|(key, _)| in_run(key)).collect();
    let receiver: Vec<u64> = copies
        .iter()
        .filter_map(|((_, n), a)| since_vote(*n, a.first))
        .collect();
    let websocket: Vec<u64> = heard
        .iter()
        .filter_map(|(&n, event)| since_vote(n, event.received))
        .collect();
    let mismatched_ids = copies
        .iter()
        .filter(|((_, n), a)| heard.get(n).is_some_and(|event| event.event_id != a.id))
        .count() as u64;
    let vote: Vec<u64> = made
        .iter()
        .map(|m| m.replied.saturating_duration_since(m.sent).as_micros() as u64)
        .collect();
    let last = copies.iter().map(|(_, a)| a.first).max();
    let seconds = made.first().zip(last).map_or(0.0, |(first, last)| {
        last.saturating_duration_since(first.sent).as_secs_f64()
    });
    let delivered = copies.len() as u64;
    WebhooksReport {
        endpoints: options.endpoints,
        decisions: made.len(),
        delivered,
        seconds,
        deliveries_per_second: if seconds > 0.0 {
            delivered as f64 / seconds
        } else {
            0.0
        },
        receiver_us: Percentiles::of_samples(&receiver),
        websocket_us: Percentiles::of_samples(&websocket),
        vote_us: Percentiles::of_samples(&vote),
        missed: (options.endpoints * made.len()) as u64 - delivered,
        duplicated: copies.iter().map(|(_, a)| a.copies - 1).sum(),
        mismatched_ids,
        websocket_missed: (made.len() - websocket.len()) as u64,
    }
}

/// The report's rows, for its own table and the suite's.
pub(super) fn rows(t: &mut Table, report: &WebhooksReport) {
    t.row(
        format!(
            "webhooks: {} endpoints, {} decisions: deliveries/s",
            report.endpoints, report.decisions
        ),
        format!("{:.0}", report.deliveries_per_second),
    );
    t.row(
        "webhooks: decision to receiver (ms) p50/p99/max",
        report.receiver_us.short_ms(),
    );
    t.row(
        "webhooks: the same decisions over the WebSocket (ms) p50/p99",
        format!(
            "{}/{}",
            super::ms(report.websocket_us.p50),
            super::ms(report.websocket_us.p99)
        ),
    );
    t.row(
        "webhooks: the deciding vote's round trip, within those (ms) p50/p99",
        format!(
            "{}/{}",
            super::ms(report.vote_us.p50),
            super::ms(report.vote_us.p99)
        ),
    );
    t.row(
        "webhook deliveries missed / duplicated",
        format!(
            "{} / {} of {}",
            report.missed,
            report.duplicated,
            report.deliveries()
        ),
    );
    if report.mismatched_ids > 0 {
        t.row(
            "webhook deliveries whose webhook-id is not the decision's event id",
            format!("{} of {}", report.mismatched_ids, report.delivered),
        );
    }
    if report.websocket_missed > 0 {
        t.row(
            "webhooks: decisions the WebSocket session missed",
            format!("{} of {}", report.websocket_missed, report.decisions),
        );
    }
}
