//! With `--wait-replicas`: decision events are published only once their write is on
//! enough replicas, in log order, by whichever hub learns first that they are.

use std::time::Duration;

use super::{Error, Store, internal};
use crate::protocol::EventId;

/// What tells the logging scripts to leave a new event for `publish_pending.lua`.
pub(crate) const PUBLISH_LATER: &str = "later";

/// How long the publisher's acknowledgement mark lives (it only has to outlive one `WAIT`).
const ACK_MARK_TTL: Duration = Duration::from_secs(60);

/// Stream entries as XRANGE returns them: (id, fields).
type StreamEntries = Vec<(String, Vec<(String, String)>)>;

/// The publishing script's source (the shared event definition first).
pub(crate) const PUBLISH_SCRIPT: &str = concat!(
    include_str!("../../lua/decision_event.lua"),
    include_str!("../../lua/publish_pending.lua")
);

impl Store {
    /// Whether writes wait for replicas (`--wait-replicas`), and so decision events are
    /// published only once they are on them.
    pub(crate) fn waits_for_replicas(&self) -> bool {
        self.acked.replicas > 0
    }

    /// What the logging scripts are told about publishing a new event: `later` (once its
    /// write is confirmed) with `--wait-replicas`, else '' (at once).
    pub(crate) fn publish_mode(&self) -> &'static str {
        if self.waits_for_replicas() {
            PUBLISH_LATER
        } else {
            ""
        }
    }

    /// Publishes the waiting events up to `event_id`, which the caller knows is on enough
    /// replicas. A failure is logged: the events stay in the log, and
    /// [`Store::publish_acknowledged`] publishes them later.
    pub(crate) async fn publish_acknowledged_upto(&self, event_id: &str) {
        if !self.waits_for_replicas() {
            return;
        }
        if let Err(err) = self.publish_pending(event_id).await {
            tracing::warn!(%err, event_id, "could not publish an acknowledged decision event yet; the hub's publisher will");
        }
    }

    /// Publishes every event the log holds that waits for replicas, once they confirm
    /// them: for events whose own hub could not (it stopped, or too few replicas answered
    /// in time). Returns how many it published; none when nothing waits.
    pub(crate) async fn publish_acknowledged(&self) -> Result<u64, Error> {
        if !self.waits_for_replicas() {
            return Ok(0);
        }
        let mut look = redis::pipe();
        look.cmd("GET")
            .arg(self.layout.published())
            .cmd("XREVRANGE")
            .arg(self.layout.stream())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1);
        let (published, newest): (Option<String>, StreamEntries) = self.query_pipe(&look).await?;
        let (Some(published), Some((newest, _))) = (published, newest.into_iter().next()) else {
            return Ok(0);
        };
        let published: EventId = published.parse().map_err(internal)?;
        if published >= newest.parse::<EventId>().map_err(internal)? {
            return Ok(0);
        }
        // A write after `newest` in the replication stream: once replicas have it, they
        // have every event up to `newest`.
        let () = self
            .write_acknowledged_for_publisher(
                redis::cmd("SET")
                    .arg(self.layout.ack_mark())
                    .arg(&newest)
                    .arg("PX")
                    .arg(ACK_MARK_TTL.as_millis() as u64)
                    .to_owned(),
            )
            .await?;
        self.publish_pending(&newest).await
    }

    /// With `--wait-replicas`, on a cluster: waits until replicas confirm every write made
    /// so far in the partition whose ack mark is `mark` (a write of the mark stands for
    /// them). A decision is logged, and so published, only once its own write is
    /// confirmed: a failover of its shard cannot then lose a decision sessions heard of.
    pub(crate) async fn confirm_partition(&self, mark: &str) -> Result<(), Error> {
        if !self.waits_for_replicas() {
            return Ok(());
        }
        self.write_acknowledged(
            redis::cmd("SET")
                .arg(mark)
                .arg(1)
                .arg("PX")
                .arg(ACK_MARK_TTL.as_millis() as u64)
                .to_owned(),
        )
        .await
    }

    /// Runs the publishing script up to `event_id`.
    async fn publish_pending(&self, event_id: &str) -> Result<u64, Error> {
        self.eval(
            &self.scripts.publish_pending,
            &[self.layout.stream(), self.layout.published()],
            &[
                event_id,
                self.layout.decision_channel(),
                self.layout.publish_command(),
            ],
        )
        .await
    }
}
