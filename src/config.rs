//! Command-line and environment configuration of a hub.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// How a hub listens, where its Redis is, and how long registrations live.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to serve HTTP and WebSocket on (port 0 picks a free port).
    #[arg(long, env = "QUORUM_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Redis to use, e.g. redis://127.0.0.1:6379 or unix:///run/redis.sock. Without it the
    /// hub starts its own redis-server (append-only persistence) inside --data-dir.
    #[arg(long, env = "QUORUM_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Directory for the managed redis-server's socket and data (unused with --redis-url).
    #[arg(long, env = "QUORUM_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Directory served at / (the dashboard).
    #[arg(long, env = "QUORUM_WEB_DIR", default_value = "./web-demo")]
    pub web_dir: PathBuf,

    /// Seconds a registration lives without a heartbeat; an open session keeps its own
    /// instance alive by itself.
    #[arg(long, env = "QUORUM_INSTANCE_TTL", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub instance_ttl: u64,
}

impl Config {
    /// A configuration for `redis_url` with every other setting at its default;
    /// handy for embedding and tests.
    pub fn with_redis(redis_url: impl Into<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            redis_url: Some(redis_url.into()),
            data_dir: PathBuf::from("./data"),
            web_dir: PathBuf::from("./web-demo"),
            instance_ttl: 30,
        }
    }

    pub fn instance_ttl(&self) -> Duration {
        Duration::from_secs(self.instance_ttl)
    }
}
