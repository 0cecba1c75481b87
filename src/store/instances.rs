//! Instances: registration, heartbeats, session bindings, and the instances index.

use std::collections::HashMap;
use std::time::Duration;

use super::calls::evalsha;
use super::{MAX_PAGE_BYTES, Store, field_u64, internal, keys};
use crate::clock::now_ms;
use crate::error::Error;
use crate::instance::{InstanceId, Registration};
use crate::protocol::InstanceInfo;

/// Result of claiming or touching an instance that may be bound to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Done (registered, refreshed or removed).
    Done,
    /// The instance has no registration.
    Missing,
    /// The instance is bound to another open session; nothing was changed.
    BoundElsewhere,
}

impl Claim {
    fn from_script(code: i64) -> Self {
        match code {
            1 => Claim::Done,
            0 => Claim::Missing,
            _ => Claim::BoundElsewhere,
        }
    }
}

/// Whether an instance may vote through a caller without a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    NotRegistered,
    /// Registered and bound to an open WebSocket session: only that session votes as it.
    BoundToSession,
    Registered,
}

/// Most stale index entries one `system.get_state` call removes.
const PRUNE_BATCH: usize = 1000;
/// Registrations read per round trip while listing (at most about 100 KiB).
const READ_CHUNK: usize = 10;

impl Store {
    /// Registers (or refreshes) an instance; with `owner`, also binds it to that session.
    /// With `--wait-replicas`, also says whether replicas confirmed it: a registration
    /// they did not confirm is made all the same (in the primary), and the session must
    /// hold its binding so that closing releases it.
    pub(crate) async fn register(
        &self,
        registration: &Registration,
        owner: Option<&str>,
        ttl: Duration,
    ) -> Result<(Claim, Result<(), Error>), Error> {
        let id = registration.instance.as_str();
        let now = now_ms().to_string();
        let roles = serde_json::to_string(&registration.roles).map_err(internal)?;
        let metadata = serde_json::to_string(&registration.metadata).map_err(internal)?;
        let ttl_ms = ttl.as_millis().to_string();
        let register = evalsha(
            &self.scripts.register,
            &[&keys::instance(id), &keys::owner(id)],
            &[
                owner.unwrap_or(""),
                &ttl_ms,
                &now,
                &roles,
                &metadata,
                id,
                keys::INSTANCE_REGISTERED_CHANNEL,
            ],
        );
        let mut confirmed = Ok(());
        let code: i64 = if self.waits_for_replicas() {
            let code;
            (code, confirmed) = self.write_and_wait(register).await?;
            let mut notes = self.note_seen(&now, &[id]).to_vec();
            notes.extend(self.note_roles(&now, id, &registration.roles));
            self.query_each(notes).await?;
            code
        } else {
            let mut cmds = vec![register];
            cmds.extend(self.note_seen(&now, &[id]));
            cmds.extend(self.note_roles(&now, id, &registration.roles));
            let replies = self.query_each(cmds).await?;
            replies
                .first()
                .map(redis::FromRedisValue::from_redis_value_ref)
                .transpose()
                .map_err(internal)?
                .unwrap_or_default()
        };
        let claim = if code == 1 {
            Claim::Done
        } else {
            Claim::BoundElsewhere
        };
        Ok((claim, confirmed))
    }

    /// Refreshes the TTL of each `(instance, owner)` pair in one round trip.
    pub(crate) async fn heartbeat_many(
        &self,
        pairs: &[(&InstanceId, Option<&str>)],
        ttl: Duration,
    ) -> Result<Vec<Claim>, Error> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms().to_string();
        let ttl_ms = ttl.as_millis().to_string();
        let mut cmds: Vec<redis::Cmd> = pairs
            .iter()
            .map(|(instance, owner)| {
                let id = instance.as_str();
                evalsha(
                    &self.scripts.heartbeat,
                    &[&keys::instance(id), &keys::owner(id)],
                    &[owner.unwrap_or(""), &ttl_ms, &now],
                )
            })
            .collect();
        let ids: Vec<&str> = pairs
            .iter()
            .map(|(instance, _)| instance.as_str())
            .collect();
        cmds.extend(self.note_seen(&now, &ids));
        let replies = self.query_each(cmds).await?;
        replies
            .iter()
            .take(pairs.len())
            .map(|reply| {
                redis::FromRedisValue::from_redis_value_ref(reply)
                    .map(Claim::from_script)
                    .map_err(internal)
            })
            .collect()
    }

    /// Refreshes one instance's TTL.
    pub(crate) async fn heartbeat(
        &self,
        instance: &InstanceId,
        owner: Option<&str>,
        ttl: Duration,
    ) -> Result<Claim, Error> {
        let claims = self.heartbeat_many(&[(instance, owner)], ttl).await?;
        claims
            .into_iter()
            .next()
            .ok_or_else(|| Error::Internal("empty heartbeat reply".into()))
    }

    /// Removes an instance's registration (refused if another session holds it).
    pub(crate) async fn unregister(
        &self,
        instance: &InstanceId,
        owner: Option<&str>,
    ) -> Result<Claim, Error> {
        let id = instance.as_str();
        let code: i64 = self
            .eval_acknowledged(
                &self.scripts.unregister,
                &[&keys::instance(id), &keys::owner(id)],
                &[owner.unwrap_or(""), id, keys::INSTANCE_UNREGISTERED_CHANNEL],
            )
            .await?;
        let claim = Claim::from_script(code);
        if claim != Claim::BoundElsewhere {
            self.query_pipe::<()>(&self.forget(&[id])).await?;
        }
        Ok(claim)
    }

    /// Frees a closed session's binding; the registration lives on until its TTL.
    pub(crate) async fn release(&self, instance: &InstanceId, owner: &str) -> Result<(), Error> {
        let id = instance.as_str();
        let now = now_ms().to_string();
        self.eval_acknowledged::<i64>(
            &self.scripts.release,
            &[&keys::instance(id), &keys::owner(id)],
            &[owner, &now, id, keys::INSTANCE_UNREGISTERED_CHANNEL],
        )
        .await?;
        Ok(())
    }

    /// Whether an instance is registered, and whether a session holds it.
    pub(crate) async fn standing(&self, instance: &InstanceId) -> Result<Standing, Error> {
        let id = instance.as_str();
        let mut pipe = redis::pipe();
        pipe.cmd("EXISTS")
            .arg(keys::instance(id))
            .cmd("EXISTS")
            .arg(keys::owner(id));
        let (registered, bound): (bool, bool) = self.query_pipe(&pipe).await?;
        Ok(match (registered, bound) {
            (false, _) => Standing::NotRegistered,
            (true, true) => Standing::BoundToSession,
            (true, false) => Standing::Registered,
        })
    }

    /// A page of registered instances in id order, after `after` (from the first with
    /// `None`). Entries not refreshed since `stale_before_ms` leave the indexes first, a
    /// bounded batch per call.
    pub(crate) async fn instances(
        &self,
        limit: usize,
        after: Option<&str>,
        stale_before_ms: u64,
    ) -> Result<InstancePage, Error> {
        let stale: Vec<String> = self
            .query(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(self.layout.instances_index())
                    .arg("-inf")
                    .arg(format!("({stale_before_ms}"))
                    .arg("LIMIT")
                    .arg(0)
                    .arg(PRUNE_BATCH),
            )
            .await?;
        if !stale.is_empty() {
            // Only entries still stale leave (a heartbeat may have refreshed one since),
            // and only those leave the id order too.
            let mut pipe = redis::pipe();
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(self.layout.instances_index())
                .arg("-inf")
                .arg(format!("({stale_before_ms}"))
                .ignore()
                .cmd("ZMSCORE")
                .arg(self.layout.instances_index())
                .arg(&stale);
            let (scores,): (Vec<Option<f64>>,) = self.query_pipe(&pipe).await?;
            let left: Vec<&String> = stale
                .iter()
                .zip(scores)
                .filter_map(|(id, score)| score.is_none().then_some(id))
                .collect();
            if !left.is_empty() {
                self.query::<()>(
                    redis::cmd("ZREM")
                        .arg(self.layout.instances_by_id())
                        .arg(&left),
                )
                .await?;
            }
        }
        let start = after.map_or_else(|| "-".to_owned(), |id| format!("({id}"));
        let mut ids: Vec<String> = self
            .query(
                redis::cmd("ZRANGEBYLEX")
                    .arg(self.layout.instances_by_id())
                    .arg(start)
                    .arg("+")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit + 1),
            )
            .await?;
        let more = ids.len() > limit;
        ids.truncate(limit);
        // Read in chunks, and stop at the page's byte bound: the next page starts after
        // the last instance listed.
        let mut instances = Vec::new();
        let mut gone = Vec::new();
        let mut bytes = 0;
        let mut last_read = None;
        for chunk in ids.chunks(READ_CHUNK) {
            if bytes >= MAX_PAGE_BYTES {
                break;
            }
            let cmds = chunk
                .iter()
                .map(|id| redis::cmd("HGETALL").arg(keys::instance(id)).to_owned())
                .collect();
            let hashes = self
                .query_each(cmds)
                .await?
                .into_iter()
                .map(redis::FromRedisValue::from_redis_value)
                .collect::<Result<Vec<HashMap<String, String>>, _>>()
                .map_err(internal)?;
            for (id, fields) in chunk.iter().zip(hashes) {
                if bytes >= MAX_PAGE_BYTES {
                    break;
                }
                last_read = Some(id.clone());
                if fields.is_empty() {
                    gone.push(id.clone());
                    continue;
                }
                bytes += id.len() + fields.values().map(String::len).sum::<usize>();
                let json = |name: &str, empty: serde_json::Value| {
                    fields
                        .get(name)
                        .and_then(|s| serde_json::from_str(s).ok())
                        .unwrap_or(empty)
                };
                instances.push(InstanceInfo {
                    roles: json("roles", serde_json::Value::Array(Vec::new())),
                    metadata: json("metadata", serde_json::Value::Object(Default::default())),
                    status: fields.get("status").cloned().unwrap_or_default(),
                    last_seen: field_u64(&fields, "lastSeen"),
                    instance_id: id.clone(),
                });
            }
        }
        let cut_short = last_read.as_ref() != ids.last();
        let next = if more || cut_short { last_read } else { None };
        if !gone.is_empty() {
            self.query_pipe::<()>(&self.forget(&gone)).await?;
        }
        Ok(InstancePage { instances, next })
    }
}

/// A page of registered instances, and where the next one starts (`None`: this is the last).
#[derive(Debug)]
pub(crate) struct InstancePage {
    pub instances: Vec<InstanceInfo>,
    pub next: Option<String>,
}

impl Store {
    /// A pipeline that removes `ids` from both instance indexes (one slot on a cluster).
    fn forget<S: AsRef<str>>(&self, ids: &[S]) -> redis::Pipeline {
        let ids: Vec<&str> = ids.iter().map(AsRef::as_ref).collect();
        let mut pipe = redis::pipe();
        pipe.cmd("ZREM")
            .arg(self.layout.instances_index())
            .arg(&ids)
            .ignore()
            .cmd("ZREM")
            .arg(self.layout.instances_by_id())
            .arg(&ids)
            .ignore();
        pipe
    }

    /// The instances index entries that `system.get_state` lists `ids` by, as two commands.
    fn note_seen(&self, now: &str, ids: &[&str]) -> [redis::Cmd; 2] {
        let mut seen = redis::cmd("ZADD");
        let mut by_id = redis::cmd("ZADD");
        seen.arg(self.layout.instances_index());
        by_id.arg(self.layout.instances_by_id());
        for id in ids {
            seen.arg(now).arg(id);
            by_id.arg(0).arg(id);
        }
        [seen, by_id]
    }
}
