//! What Redis spends per vote: its CPU time (`INFO cpu`) and each command's calls and time
//! (`INFO commandstats`), read from every node before and after a run, divided by the
//! run's votes.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Table;

/// Commands the bench itself sends to read the figures; left out of the breakdown.
const OWN_COMMANDS: [&str; 2] = ["info", "config|resetstat"];
/// Script commands: their time includes the commands the script runs.
const SCRIPT_COMMANDS: [&str; 3] = ["evalsha", "eval", "fcall"];

/// The counters of every node at one moment.
#[derive(Debug, Clone, Default)]
pub struct RedisSnapshot {
    /// User + system CPU seconds.
    cpu_seconds: f64,
    /// Command -> (calls, microseconds).
    commands: BTreeMap<String, (u64, u64)>,
}

impl RedisSnapshot {
    /// Reads every node's counters; `None` if one cannot be read.
    pub async fn take(nodes: &[redis::ConnectionInfo]) -> Option<RedisSnapshot> {
        if nodes.is_empty() {
            return None;
        }
        let mut snapshot = RedisSnapshot::default();
        for node in nodes {
            let client = redis::Client::open(node.clone()).ok()?;
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            let info: String = redis::cmd("INFO")
                .arg("cpu")
                .arg("commandstats")
                .query_async(&mut conn)
                .await
                .ok()?;
            snapshot.add(&info);
        }
        Some(snapshot)
    }

    /// Adds one node's `INFO cpu commandstats`.
    fn add(&mut self, info: &str) {
        for (name, value) in info.lines().filter_map(|line| line.split_once(':')) {
            match name {
                "used_cpu_sys" | "used_cpu_user" => {
                    self.cpu_seconds += value.trim().parse::<f64>().unwrap_or(0.0);
                }
                _ => {
                    if let Some(command) = name.strip_prefix("cmdstat_") {
                        let (calls, usec) = command_counters(value);
                        let entry = self.commands.entry(command.to_owned()).or_default();
                        entry.0 += calls;
                        entry.1 += usec;
                    }
                }
            }
        }
    }
}

/// `calls=N,usec=M,...` as (N, M).
fn command_counters(value: &str) -> (u64, u64) {
    let field = |name: &str| {
        value
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("calls"), field("usec"))
}

/// One command's share of a vote.
#[derive(Debug, Clone, Serialize)]
pub struct CommandCost {
    pub command: String,
    pub calls_per_vote: f64,
    pub us_per_vote: f64,
}

/// What Redis spent per vote over a run.
#[derive(Debug, Clone, Serialize)]
pub struct RedisCost {
    /// CPU time of every node, per vote (µs): the commands, and around them the network,
    /// the append-only file and its fsyncs, and pub/sub.
    pub cpu_us_per_vote: f64,
    /// Time inside scripts beyond the commands they ran, per vote (µs): argument
    /// handling, Lua itself, and each `redis.call`'s own overhead.
    pub script_own_us_per_vote: f64,
    /// Time of the commands themselves (inside scripts or not), per vote (µs).
    pub commands_us_per_vote: f64,
    /// Each command, the most time first (scripts as a whole included).
    pub commands: Vec<CommandCost>,
}

impl RedisCost {
    /// The cost per vote between two snapshots of the same nodes.
    pub fn between(before: &RedisSnapshot, after: &RedisSnapshot, votes: u64) -> Option<Self> {
        if votes == 0 {
            return None;
        }
        let per_vote = votes as f64;
        let mut commands = Vec::new();
        let (mut scripts_us, mut inner_us) = (0.0, 0.0);
        for (command, (calls, usec)) in &after.commands {
            if OWN_COMMANDS.contains(&command.as_str()) {
                continue;
            }
            let (calls_before, usec_before) =
                before.commands.get(command).copied().unwrap_or_default();
            let calls = calls.saturating_sub(calls_before) as f64;
            let us = usec.saturating_sub(usec_before) as f64;
            if calls == 0.0 {
                continue;
            }
            if SCRIPT_COMMANDS.contains(&command.as_str()) {
                scripts_us += us;
            } else {
                inner_us += us;
            }
            commands.push(CommandCost {
                command: command.to_uppercase(),
                calls_per_vote: calls / per_vote,
                us_per_vote: us / per_vote,
            });
        }
        commands.sort_by(|a, b| b.us_per_vote.total_cmp(&a.us_per_vote));
        Some(RedisCost {
            cpu_us_per_vote: (after.cpu_seconds - before.cpu_seconds) * 1e6 / per_vote,
            script_own_us_per_vote: (scripts_us - inner_us).max(0.0) / per_vote,
            commands_us_per_vote: inner_us / per_vote,
            commands,
        })
    }
}

/// Most commands a breakdown row names; the rest are summed.
const NAMED_COMMANDS: usize = 12;

/// The rows of one run's cost per vote, named `what`.
pub(crate) fn rows(t: &mut Table, what: &str, cost: &RedisCost) {
    t.row(
        format!("Redis CPU per vote, {what} (us)"),
        format!("{:.1}", cost.cpu_us_per_vote),
    );
    let outside = cost.cpu_us_per_vote - cost.script_own_us_per_vote - cost.commands_us_per_vote;
    t.row(
        format!("  {what}: the script's own / the commands' / around them (network, AOF, fsync, pub/sub) (us)"),
        format!(
            "{:.1} / {:.1} / {:.1}",
            cost.script_own_us_per_vote,
            cost.commands_us_per_vote,
            outside.max(0.0)
        ),
    );
    let mut named: Vec<String> = cost
        .commands
        .iter()
        .take(NAMED_COMMANDS)
        .map(|c| {
            format!(
                "{} {:.2}x {:.2}",
                c.command, c.calls_per_vote, c.us_per_vote
            )
        })
        .collect();
    let rest: f64 = cost
        .commands
        .iter()
        .skip(NAMED_COMMANDS)
        .map(|c| c.us_per_vote)
        .sum();
    if cost.commands.len() > NAMED_COMMANDS {
        named.push(format!("others {rest:.2}"));
    }
    t.row(
        format!("  {what}: per command, calls per vote and us per vote"),
        named.join(", "),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "used_cpu_sys:1.5\r\nused_cpu_user:2.5\r\n\
        cmdstat_evalsha:calls=10,usec=100,usec_per_call=10.00\r\n\
        cmdstat_hset:calls=10,usec=10,usec_per_call=1.00\r\n";
    const AFTER: &str = "used_cpu_sys:2.0\r\nused_cpu_user:3.0\r\n\
        cmdstat_evalsha:calls=20,usec=300,usec_per_call=15.00\r\n\
        cmdstat_hset:calls=40,usec=50,usec_per_call=1.25\r\n\
        cmdstat_info:calls=3,usec=90,usec_per_call=30.00\r\n";

    fn snapshot(info: &str) -> RedisSnapshot {
        let mut s = RedisSnapshot::default();
        s.add(info);
        s
    }

    #[test]
    fn the_cost_per_vote_splits_the_script_from_its_commands() {
        let cost = RedisCost::between(&snapshot(BEFORE), &snapshot(AFTER), 10).unwrap();
        assert!((cost.cpu_us_per_vote - 100_000.0).abs() < 1e-6);
        assert!((cost.commands_us_per_vote - 4.0).abs() < 1e-9);
        assert!((cost.script_own_us_per_vote - 16.0).abs() < 1e-9);
        let names: Vec<&str> = cost.commands.iter().map(|c| c.command.as_str()).collect();
        assert_eq!(names, ["EVALSHA", "HSET"], "the bench's own INFO left out");
        assert!((cost.commands[1].calls_per_vote - 3.0).abs() < 1e-9);
    }

    #[test]
    fn two_nodes_add_up() {
        let mut s = snapshot(BEFORE);
        s.add(BEFORE);
        assert_eq!(s.commands["hset"], (20, 20));
        assert!((s.cpu_seconds - 8.0).abs() < 1e-9);
    }
}
