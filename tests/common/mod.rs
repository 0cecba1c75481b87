//! Test helpers, one file per concern, and the one way a test waits for something.
// Each test binary uses a different part of these helpers and re-exports.
#![allow(dead_code, unused_imports)]

pub mod browser;
pub mod dashboards;
pub mod failover;
pub mod http;
pub mod hub;
pub mod jsonrpc;
pub mod oracle;
pub mod ports;
pub mod receiver;
pub mod redis_cli;
pub mod redis_cluster;
pub mod redis_sentinel;
pub mod redis_server;
pub mod ws;

use std::time::{Duration, Instant};

pub use self::http::{http, http_with, metric, metrics_show, rpc, rpc_call};
pub use self::hub::{
    HubProcess, TestHub, bin_path, wait_ready, without_rate_limits, without_rate_limits_at,
};
pub use self::jsonrpc::{assert_error, request, vote_params};
pub use self::oracle::{expected_winner, tallied};
pub use self::redis_server::RedisServer;
pub use self::ws::WsClient;

/// How long any wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// How often [`eventually`] and [`eventually_blocking`] check again.
const POLL: Duration = Duration::from_millis(10);

/// Polls `check` until it returns `Some`, failing the test after [`DEADLINE`].
pub async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for code outside the async runtime (process and file checks).
pub fn eventually_blocking<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}

/// A deterministic pseudo-random sequence for tests that want varied but repeatable input.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A scratch directory with a short path, so unix sockets inside it fit `sun_path`.
pub fn short_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("qh")
        .tempdir_in("/tmp")
        .expect("tempdir")
}
