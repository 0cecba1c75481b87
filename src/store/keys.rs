//! Redis key and pub/sub channel names: the one place in the hub that spells them.
//!
//! Two layouts share these names. On one Redis ([`Layout::Single`]) a decision's keys carry
//! the decision as a hash tag (`{name}`) and the index, stream and instance indexes are
//! plain keys. On Redis Cluster ([`Layout::Partitioned`]) a decision's keys, its partition's
//! decisions index and its partition's "decided, not yet logged" set share the partition's
//! tag, the event log and its marks share `{events}`, and the instance indexes share
//! `{instances}`: every script and transaction touches keys of one slot. Instance keys
//! carry the instance id as their tag in both.

use std::sync::Arc;

use super::slots;
use super::target::RedisTarget;

/// Stream: every decision event, capped (see `DECISION_STREAM_CAP`).
const DECISION_EVENTS_STREAM: &str = "cb:stream:quorum.decision.made";
/// Channel each decision event is published on as it is logged.
const DECISION_EVENTS_CHANNEL: &str = "cb:events:quorum.decision.made";
/// The event log, its marks and its shard channel on a cluster: one slot.
const CLUSTER_EVENTS_STREAM: &str = "cb:{events}:stream";
const CLUSTER_EVENTS_CHANNEL: &str = "cb:{events}:quorum.decision.made";
const CLUSTER_LAYOUT_MARK: &str = "cb:{events}:layout";
/// String: the id of the last decision event published once its write reached replicas
/// (`--wait-replicas`).
const PUBLISHED_MARK: &str = "cb:events:published";
const CLUSTER_PUBLISHED_MARK: &str = "cb:{events}:published";
/// String: written just before a hub waits for replicas to confirm the event log (its
/// write stands for every event before it).
const ACK_MARK: &str = "cb:events:acked";
const CLUSTER_ACK_MARK: &str = "cb:{events}:acked";
/// String: the event log's epoch, an id created with the log.
const EPOCH: &str = "cb:events:epoch";
const CLUSTER_EPOCH: &str = "cb:{events}:epoch";
pub(crate) const VOTE_RECORDED_CHANNEL: &str = "cb:events:quorum.vote.recorded";
pub(crate) const INSTANCE_REGISTERED_CHANNEL: &str = "cb:events:instance.registered";
pub(crate) const INSTANCE_UNREGISTERED_CHANNEL: &str = "cb:events:instance.unregistered";
/// Prefix of every event channel; the rest of the name is the event's method name.
pub(crate) const EVENT_CHANNEL_PREFIX: &str = "cb:events:";
/// Sorted set: webhook endpoint id -> when it was added (ms). Each endpoint's own keys
/// (see [`WebhookPart`]) are named after it. On a cluster all of them share the event
/// log's slot, so that one script reads the log and moves an endpoint's deliveries.
const WEBHOOKS_INDEX: &str = "cb:webhooks";
const CLUSTER_WEBHOOKS_INDEX: &str = "cb:{events}:webhooks";
/// Sorted set: Web Push subscription id -> when it was added (ms). A subscription is an
/// endpoint like a webhook's (its keys are named as a webhook endpoint's, its id starts
/// `push_`), listed apart and bounded apart.
const PUSH_INDEX: &str = "cb:push:subscriptions";
const CLUSTER_PUSH_INDEX: &str = "cb:{events}:push:subscriptions";
/// String: the keyspace's VAPID private key, made by the first hub that needs it.
const VAPID_KEY: &str = "cb:push:vapid";
/// Sorted set: decision name -> time its first vote was recorded (ms).
const DECISIONS_INDEX: &str = "cb:decisions";
/// The decisions index `redis-benchmark` writes when `bench suite` measures the vote
/// script: the same work as the hub's, kept out of `system.get_state`.
pub(crate) const BENCH_DECISIONS_INDEX: &str = "cb:bench:decisions";
/// The deadlines index `redis-benchmark` writes, kept away from the hubs' for the same reason.
pub(crate) const BENCH_DEADLINES_INDEX: &str = "cb:bench:deadlines";
/// Sorted set: instance id -> last time it was registered or refreshed (ms).
const INSTANCES_INDEX: &str = "cb:instances";
/// Sorted set, every score 0: the same instance ids in byte order, so that
/// `system.get_state` pages through them in an order that heartbeats do not change.
const INSTANCES_BY_ID: &str = "cb:instances:by-id";
/// The same two indexes on a cluster, under one tag.
const CLUSTER_INSTANCES_INDEX: &str = "cb:{instances}:seen";
const CLUSTER_INSTANCES_BY_ID: &str = "cb:{instances}:by-id";

/// The kinds of per-partition keys on a cluster (`cb:<kind>:{<partition tag>}`).
const DECISIONS_KIND: &str = "decisions";
const UNLOGGED_KIND: &str = "unlogged";
const DASHBOARDS_KIND: &str = "dashboards";
const ACKED_KIND: &str = "acked";
const DEADLINES_KIND: &str = "deadlines";
/// Sorted set: decision name -> closesAt (ms), for the decisions still open.
const DEADLINES_INDEX: &str = "cb:deadlines";
/// String: present while some hub has a dashboard listening (one Redis).
const DASHBOARDS_FLAG: &str = "cb:dashboards";

/// The keys of one webhook endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WebhookPart {
    /// Hash: the endpoint (url, patterns, state, secrets, its cursor in the event log).
    Endpoint,
    /// Sorted set: delivery (event id, or a gap notice) -> when it is due (ms).
    Due,
    /// Hash: delivery -> attempts made.
    Tries,
    /// Stream: the attempt log, capped.
    Attempts,
}

impl WebhookPart {
    fn suffix(self) -> &'static str {
        match self {
            WebhookPart::Endpoint => "",
            WebhookPart::Due => ":due",
            WebhookPart::Tries => ":tries",
            WebhookPart::Attempts => ":attempts",
        }
    }
}

/// `{tag}`: a partition's hash tag as it appears in key names.
fn partition_tag(tag: &str) -> String {
    format!("{{{tag}}}")
}

/// The key of a per-partition `kind` under a (braced) partition tag.
fn partition_key(kind: &str, braced_tag: &str) -> String {
    format!("cb:{kind}:{braced_tag}")
}

/// Partitions a cluster keyspace spreads decisions over. Fixed for the life of a keyspace
/// (a decision's partition is part of its key names), and recorded in it: a hub built
/// with another count refuses to serve it.
pub(crate) const PARTITIONS: usize = 64;

/// Where the keys of a keyspace live.
#[derive(Debug, Clone)]
pub(crate) enum Layout {
    /// One Redis.
    Single,
    /// Redis Cluster: decisions spread over [`PARTITIONS`] hash tags, chosen so that
    /// their slots are evenly spaced (and so evenly spread over the primaries).
    Partitioned { tags: Arc<[String]> },
}

impl Layout {
    pub(crate) fn partitioned() -> Self {
        Layout::Partitioned {
            tags: slots::partition_tags(PARTITIONS).into(),
        }
    }

    /// The layout of the keyspace on `target`: partitioned on a cluster.
    pub(crate) fn of(target: &RedisTarget) -> Self {
        match target {
            RedisTarget::Cluster { .. } => Self::partitioned(),
            RedisTarget::Single(_) | RedisTarget::Sentinel { .. } => Layout::Single,
        }
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Layout::Partitioned { .. })
    }

    /// How many partitions decisions spread over: one on one Redis.
    pub(crate) fn partitions(&self) -> usize {
        match self {
            Layout::Single => 1,
            Layout::Partitioned { tags } => tags.len(),
        }
    }

    /// The partition (`0..partitions()`) decision `name` belongs to: every key a vote on
    /// it touches shares that partition's slot on a cluster.
    pub(crate) fn partition(&self, name: &str) -> usize {
        match self {
            Layout::Single => 0,
            Layout::Partitioned { tags } => slots::partition_of(name, tags.len()),
        }
    }

    /// The hash tag of a decision's partition (cluster only), braces included.
    fn tag(tags: &[String], name: &str) -> String {
        partition_tag(&tags[slots::partition_of(name, tags.len())])
    }

    /// The key of one per-partition `kind` in `name`'s partition (cluster only).
    fn in_partition(&self, kind: &str, name: &str) -> Option<String> {
        match self {
            Layout::Single => None,
            Layout::Partitioned { tags } => Some(partition_key(kind, &Self::tag(tags, name))),
        }
    }

    /// The key of one per-partition `kind` in every partition (none on one Redis).
    fn every_partition(&self, kind: &str) -> Vec<String> {
        match self {
            Layout::Single => Vec::new(),
            Layout::Partitioned { tags } => tags
                .iter()
                .map(|tag| partition_key(kind, &partition_tag(tag)))
                .collect(),
        }
    }

    /// One part (`votes`, `tally`, `result`, `metadata`, `ballots`; on a cluster also `places`)
    /// of a decision.
    pub(crate) fn decision(&self, name: &str, part: &str) -> String {
        match self {
            Layout::Single => format!("cb:quorum:{{{name}}}:{part}"),
            Layout::Partitioned { tags } => {
                format!("cb:quorum:{}:{name}:{part}", Self::tag(tags, name))
            }
        }
    }

    /// Sorted set: decision name -> openedAt, for the decisions that share `name`'s index.
    pub(crate) fn decisions_index(&self, name: &str) -> String {
        self.in_partition(DECISIONS_KIND, name)
            .unwrap_or_else(|| DECISIONS_INDEX.to_owned())
    }

    /// Sorted set: decision name -> closesAt (ms), for the open decisions that share
    /// `name`'s deadlines index.
    pub(crate) fn deadlines(&self, name: &str) -> String {
        self.in_partition(DEADLINES_KIND, name)
            .unwrap_or_else(|| DEADLINES_INDEX.to_owned())
    }

    /// Every deadlines index: one, or one per partition.
    pub(crate) fn deadlines_indexes(&self) -> Vec<String> {
        match self {
            Layout::Single => vec![DEADLINES_INDEX.to_owned()],
            Layout::Partitioned { .. } => self.every_partition(DEADLINES_KIND),
        }
    }

    /// Every decisions index: one, or one per partition.
    pub(crate) fn decisions_indexes(&self) -> Vec<String> {
        match self {
            Layout::Single => vec![DECISIONS_INDEX.to_owned()],
            Layout::Partitioned { .. } => self.every_partition(DECISIONS_KIND),
        }
    }

    /// Sorted set (cluster only): decision -> decidedAt, for decisions of `name`'s
    /// partition that are decided but whose event is not yet in the log.
    pub(crate) fn unlogged(&self, name: &str) -> Option<String> {
        self.in_partition(UNLOGGED_KIND, name)
    }

    /// Every "decided, not yet logged" set (none on one Redis, where a decision and its
    /// event are written by one script).
    pub(crate) fn unlogged_sets(&self) -> Vec<String> {
        self.every_partition(UNLOGGED_KIND)
    }

    /// String (cluster only): written in `name`'s partition just before a hub waits for
    /// replicas to confirm that partition's earlier writes (`--wait-replicas`).
    pub(crate) fn partition_ack_mark(&self, name: &str) -> Option<String> {
        self.in_partition(ACKED_KIND, name)
    }

    /// Every partition's ack mark, in the order of [`Layout::unlogged_sets`].
    pub(crate) fn partition_ack_marks(&self) -> Vec<String> {
        self.every_partition(ACKED_KIND)
    }

    /// String: present while some hub has a dashboard listening, for `name`'s partition
    /// on a cluster; votes there are published only then.
    pub(crate) fn dashboards_flag(&self, name: &str) -> String {
        self.in_partition(DASHBOARDS_KIND, name)
            .unwrap_or_else(|| DASHBOARDS_FLAG.to_owned())
    }

    /// Every dashboards flag: one, or one per partition.
    pub(crate) fn dashboards_flags(&self) -> Vec<String> {
        match self {
            Layout::Single => vec![DASHBOARDS_FLAG.to_owned()],
            Layout::Partitioned { .. } => self.every_partition(DASHBOARDS_KIND),
        }
    }

    /// String (cluster only): the event id a decision was logged with, so that logging it
    /// again returns that id instead of a second event.
    pub(crate) fn logged(&self, name: &str) -> String {
        format!("cb:{{events}}:logged:{name}")
    }

    /// String (cluster only): the layout the keyspace was written with.
    pub(crate) fn layout_mark(&self) -> &'static str {
        CLUSTER_LAYOUT_MARK
    }

    /// What the layout mark holds for this layout.
    pub(crate) fn description(&self) -> String {
        match self {
            Layout::Single => "single".to_owned(),
            Layout::Partitioned { tags } => format!("partitions={}", tags.len()),
        }
    }

    /// Stream: every decision event, in the order they were logged.
    pub(crate) fn stream(&self) -> &'static str {
        match self {
            Layout::Single => DECISION_EVENTS_STREAM,
            Layout::Partitioned { .. } => CLUSTER_EVENTS_STREAM,
        }
    }

    /// The index of webhook endpoints (in the stream's slot).
    pub(crate) fn webhooks(&self) -> &'static str {
        match self {
            Layout::Single => WEBHOOKS_INDEX,
            Layout::Partitioned { .. } => CLUSTER_WEBHOOKS_INDEX,
        }
    }

    /// The index of Web Push subscriptions (in the stream's slot).
    pub(crate) fn push_subscriptions(&self) -> &'static str {
        match self {
            Layout::Single => PUSH_INDEX,
            Layout::Partitioned { .. } => CLUSTER_PUSH_INDEX,
        }
    }

    /// The keyspace's VAPID key (a key of its own; any slot).
    pub(crate) fn vapid_key(&self) -> &'static str {
        VAPID_KEY
    }

    /// One key of the webhook endpoint `id` (in the stream's slot).
    pub(crate) fn webhook(&self, id: &str, part: WebhookPart) -> String {
        let prefix = match self {
            Layout::Single => "cb:webhook",
            Layout::Partitioned { .. } => "cb:{events}:webhook",
        };
        format!("{prefix}:{id}{}", part.suffix())
    }

    /// String: the id of the last decision event published once its write reached
    /// replicas (in the stream's slot).
    pub(crate) fn published(&self) -> &'static str {
        match self {
            Layout::Single => PUBLISHED_MARK,
            Layout::Partitioned { .. } => CLUSTER_PUBLISHED_MARK,
        }
    }

    /// The command that publishes on [`Layout::decision_channel`].
    pub(crate) fn publish_command(&self) -> &'static str {
        match self {
            Layout::Single => "PUBLISH",
            Layout::Partitioned { .. } => "SPUBLISH",
        }
    }

    /// String: a write in the stream's slot that the hub waits on for replicas.
    pub(crate) fn ack_mark(&self) -> &'static str {
        match self {
            Layout::Single => ACK_MARK,
            Layout::Partitioned { .. } => CLUSTER_ACK_MARK,
        }
    }

    /// String: the event log's epoch (in the stream's slot).
    pub(crate) fn epoch(&self) -> &'static str {
        match self {
            Layout::Single => EPOCH,
            Layout::Partitioned { .. } => CLUSTER_EPOCH,
        }
    }

    /// Channel each decision event is published on (a shard channel on a cluster, in the
    /// stream's slot).
    pub(crate) fn decision_channel(&self) -> &'static str {
        match self {
            Layout::Single => DECISION_EVENTS_CHANNEL,
            Layout::Partitioned { .. } => CLUSTER_EVENTS_CHANNEL,
        }
    }

    pub(crate) fn instances_index(&self) -> &'static str {
        match self {
            Layout::Single => INSTANCES_INDEX,
            Layout::Partitioned { .. } => CLUSTER_INSTANCES_INDEX,
        }
    }

    /// Sorted set: instance id -> registration time, for the instances registered with
    /// `role` (entries outlive a registration; readers check the registration itself).
    pub(crate) fn role_index(&self, role: &str) -> String {
        match self {
            Layout::Single => format!("{INSTANCES_INDEX}:role:{role}"),
            Layout::Partitioned { .. } => format!("{CLUSTER_INSTANCES_INDEX}:role:{role}"),
        }
    }

    pub(crate) fn instances_by_id(&self) -> &'static str {
        match self {
            Layout::Single => INSTANCES_BY_ID,
            Layout::Partitioned { .. } => CLUSTER_INSTANCES_BY_ID,
        }
    }
}

/// Channels of the events sessions may subscribe to (dashboards). A hub listens on them
/// only while one of its sessions has subscribed.
pub(crate) const DASHBOARD_CHANNELS: [&str; 3] = [
    VOTE_RECORDED_CHANNEL,
    INSTANCE_REGISTERED_CHANNEL,
    INSTANCE_UNREGISTERED_CHANNEL,
];

/// Hash: policy pattern -> policy (JSON), shared by every hub (one slot on a cluster).
pub(crate) const POLICIES: &str = "cb:{policies}:all";
/// String: a counter raised with every change of [`POLICIES`], which hubs poll to reload.
pub(crate) const POLICIES_VERSION: &str = "cb:{policies}:version";

/// List: an instance's most recent recorded vote times (ms), for the rate limit.
pub(crate) fn vote_rate(id: &str) -> String {
    format!("cb:ratelimit:{{{id}}}:votes")
}

/// Hash: an instance's registration; expires after the instance TTL.
pub(crate) fn instance(id: &str) -> String {
    format!("cb:instance:{{{id}}}")
}

/// String: the owner tag of the session holding an instance; expires after the instance TTL.
pub(crate) fn owner(id: &str) -> String {
    format!("cb:instance:{{{id}}}:owner")
}

/// The stream of decision events on the Redis that `redis_url` names.
pub fn event_log_key(redis_url: &str) -> &'static str {
    layout_for(redis_url).stream()
}

/// The string holding the event log's epoch on the Redis that `redis_url` names.
pub fn event_log_epoch_key(redis_url: &str) -> &'static str {
    layout_for(redis_url).epoch()
}

/// The sorted set that lists registered instances in id order on the Redis that
/// `redis_url` names.
pub fn instances_by_id_key(redis_url: &str) -> &'static str {
    layout_for(redis_url).instances_by_id()
}

/// The layout of the keyspace on the Redis that `redis_url` names, told by its scheme.
fn layout_for(redis_url: &str) -> Layout {
    if RedisTarget::names_a_cluster(redis_url) {
        Layout::partitioned()
    } else {
        Layout::Single
    }
}

/// The key of one part (`votes`, `tally`, `result`, `metadata`, `ballots`) of a decision
/// on the Redis that `redis_url` names, for tools and tests that read it directly.
pub fn decision_key(redis_url: &str, decision: &str, part: &str) -> String {
    layout_for(redis_url).decision(decision, part)
}
