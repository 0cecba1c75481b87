//! The few pieces of the hub's machinery the load generator (the `quorum-hub-bench` crate
//! in bench/) uses beyond the library's face, and nothing else.
//!
//! - The session write path ([`Wire`], [`SessionIo`], [`send`], [`text_frame`]): the
//!   fan-out floor (`quorum-hub-bench floor`) broadcasts through the same socket code as a
//!   hub's sessions, so that the two are compared on the fan-out alone.
//! - The vote script ([`VOTE_SCRIPT`], [`vote_benchmark_command`]): `bench suite` has
//!   `redis-benchmark` run the very script a hub calls, with the same keys and arguments.
//! - [`redis_nodes`]: the data nodes a hub's Redis URL names, whose CPU time the suite reads.

use redis::ConnectionInfo;

use crate::config::RateLimit;
use crate::store::{self, RedisTarget};

pub use crate::session::wire::{SessionIo, Wire, send, text_frame};

/// The Lua script that records, tallies and decides one vote, as a hub loads it.
pub const VOTE_SCRIPT: &str = store::VOTE_SCRIPT;

/// Arguments for `redis-benchmark` that run the vote script on random decisions and
/// instances (`__rand_int__` is replaced by the benchmark), the way a hub on one Redis
/// calls it: `sha` is the loaded script's, `total_instances` each decision's group size.
pub fn vote_benchmark_command(sha: &str, total_instances: u64, limit: RateLimit) -> Vec<String> {
    store::vote_benchmark_command(sha, total_instances, limit)
}

/// Each data node a hub's Redis URL names (every seed of a cluster, with its credentials),
/// or why there are none to name: a Sentinel URL names the sentinels, and a URL that does
/// not parse names nothing.
pub fn redis_nodes(url: &str) -> Result<Vec<ConnectionInfo>, String> {
    match RedisTarget::parse(url) {
        Ok(RedisTarget::Single(node)) => Ok(vec![node]),
        Ok(RedisTarget::Cluster { seeds }) => Ok(seeds),
        Ok(RedisTarget::Sentinel { .. }) => {
            Err(format!("{url:?} names sentinels, not the data nodes"))
        }
        Err(err) => Err(format!("cannot read {url:?} ({err})")),
    }
}
