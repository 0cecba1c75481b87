//! Loopback ports for the redis-servers a test starts (cluster nodes, sentinels and their
//! data nodes): each handed out once per test process, so that tests running at once
//! never start two servers on one port, and a server counts as started only once its own
//! process answers there.

use std::collections::HashSet;
use std::net::TcpListener;
use std::process::Child;
use std::sync::Mutex;

use super::Rng;
use super::eventually_blocking;
use super::redis_cli::cli;

/// Ports are drawn from here. A cluster node's bus listens 10,000 above its port, and
/// both stay below the kernel's ephemeral ports (32768 and up), which outgoing
/// connections take.
const PORTS: std::ops::Range<u16> = 10_000..22_000;
/// Where a cluster node's bus listens, above its port.
pub const BUS_OFFSET: u16 = 10_000;

/// The ports handed out so far in this process (each with its bus port), and the draw.
static TAKEN: Mutex<Option<(HashSet<u16>, Rng)>> = Mutex::new(None);

/// A port that no server of this process was given before and that nothing listens on,
/// nor on the port [`BUS_OFFSET`] above it. It stays this caller's (to restart a server
/// on) for the rest of the process.
pub fn reserve() -> u16 {
    let mut taken = TAKEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let (taken, rng) = taken.get_or_insert_with(|| {
        let seed = u64::from(std::process::id()) ^ nanos();
        (HashSet::new(), Rng::new(seed))
    });
    let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
    loop {
        let port = PORTS.start + rng.below(u64::from(PORTS.end - PORTS.start)) as u16;
        let bus = port + BUS_OFFSET;
        if taken.contains(&port) || taken.contains(&bus) || !free(port) || !free(bus) {
            continue;
        }
        taken.extend([port, bus]);
        return port;
    }
}

/// Waits until `child`, a redis-server just started on `port`, answers there: `true`,
/// or `false` if it exited first (something else holds the port). A reply from any
/// other process on that port does not count.
pub fn started(child: &mut Child, port: u16) -> bool {
    let pid = format!("process_id:{}\r", child.id());
    eventually_blocking("a redis-server to start or fail", || {
        if let Ok(Some(_)) = child.try_wait() {
            return Some(false);
        }
        cli(port, &["INFO", "server"])
            .contains(&pid)
            .then_some(true)
    })
}

/// The current time's nanoseconds: with the process id, a seed that differs between test
/// processes and runs.
fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos().into())
        .unwrap_or_default()
}
