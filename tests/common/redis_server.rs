//! `RedisServer`: the Redis a test runs against, started for that test: one private
//! redis-server on a unix socket, or (with `QUORUM_TEST_REDIS=cluster`) a private Redis
//! Cluster of 3 primaries and 3 replicas, so that the same tests check both modes.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::redis_cluster::RedisCluster;
use super::{DEADLINE, eventually_blocking};

/// Whether the tests that run in both modes run against a cluster this time.
pub fn cluster_wanted() -> bool {
    std::env::var("QUORUM_TEST_REDIS").is_ok_and(|v| v == "cluster")
}

/// A private Redis for one test.
pub struct RedisServer {
    backend: Backend,
}

enum Backend {
    Single {
        child: Child,
        dir: tempfile::TempDir,
    },
    Cluster(RedisCluster),
}

impl RedisServer {
    /// The Redis the contract tests run against: one server, or a cluster when
    /// [`cluster_wanted`].
    pub fn start() -> Self {
        if cluster_wanted() {
            Self::start_cluster()
        } else {
            Self::start_single()
        }
    }

    /// One redis-server, whatever the mode (for tests of what one server does: being
    /// killed and restarted on the same socket, paused, ...).
    pub fn start_single() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("qh-redis")
            .tempdir()
            .expect("tempdir");
        let child = spawn(dir.path());
        Self {
            backend: Backend::Single { child, dir },
        }
    }

    /// A 3+3 Redis Cluster.
    pub fn start_cluster() -> Self {
        Self {
            backend: Backend::Cluster(RedisCluster::start()),
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.backend, Backend::Cluster(_))
    }

    /// The cluster (panics for one server).
    pub fn cluster(&mut self) -> &mut RedisCluster {
        match &mut self.backend {
            Backend::Cluster(cluster) => cluster,
            Backend::Single { .. } => panic!("this test needs a cluster"),
        }
    }

    /// Kills the server (its data is gone: tests run it without persistence).
    pub fn kill(&mut self) {
        match &mut self.backend {
            Backend::Single { child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Backend::Cluster(_) => panic!("kill() is for one server; a cluster kills nodes"),
        }
    }

    /// Starts a fresh server on the same socket.
    pub fn restart(&mut self) {
        self.kill();
        if let Backend::Single { child, dir } = &mut self.backend {
            *child = spawn(dir.path());
        }
    }

    pub fn url(&self) -> String {
        match &self.backend {
            Backend::Single { dir, .. } => {
                format!("unix://{}", dir.path().join("r.sock").display())
            }
            Backend::Cluster(cluster) => cluster.url(),
        }
    }

    /// A `redis://` URL per live node of the cluster (panics for one server).
    pub fn cluster_seeds(&self) -> Vec<String> {
        match &self.backend {
            Backend::Cluster(cluster) => cluster.seeds(),
            Backend::Single { .. } => panic!("this test needs a cluster"),
        }
    }

    /// The key of one part of a decision, in this Redis's layout.
    pub fn decision_key(&self, decision: &str, part: &str) -> String {
        quorum_hub::decision_key(&self.url(), decision, part)
    }

    /// Runs one command on a fresh connection, e.g. `query(&["HGET", key, "status"])`. On
    /// a cluster the command goes where its key lives.
    pub async fn query<T: redis::FromRedisValue>(&self, command: &[&str]) -> T {
        let (name, args) = command.split_first().expect("a command");
        let cmd = redis::cmd(name).arg(args).to_owned();
        let reply = async {
            match &self.backend {
                Backend::Single { .. } => cmd.query_async(&mut self.connection().await).await,
                Backend::Cluster(cluster) => {
                    let client = redis::cluster::ClusterClient::new(cluster.seeds()).unwrap();
                    let mut conn = client
                        .get_async_connection()
                        .await
                        .expect("connect to the test cluster");
                    cmd.query_async(&mut conn).await
                }
            }
        };
        within_deadline(command, reply).await
    }

    /// Runs one command without a key (`INFO`, `CLIENT KILL`, ...) on every live node
    /// (the one server, or each node of the cluster) and returns the replies.
    pub async fn query_each_node<T: redis::FromRedisValue>(&self, command: &[&str]) -> Vec<T> {
        let urls = match &self.backend {
            Backend::Single { .. } => vec![self.url()],
            Backend::Cluster(cluster) => cluster.seeds(),
        };
        let (name, args) = command.split_first().expect("a command");
        let mut replies = Vec::new();
        for url in urls {
            let reply = async {
                let mut conn = redis::Client::open(url)
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                    .expect("connect to a test redis node");
                redis::cmd(name).arg(args).query_async(&mut conn).await
            };
            replies.push(within_deadline(command, reply).await);
        }
        replies
    }

    /// A connection to the one server.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        assert!(!self.is_cluster(), "connection() is for one server");
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("connect to test redis")
    }
}

/// The reply of `command`, failing the test if it fails or takes longer than [`DEADLINE`].
async fn within_deadline<T>(
    command: &[&str],
    reply: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> T {
    tokio::time::timeout(DEADLINE, reply)
        .await
        .unwrap_or_else(|_| panic!("{command:?} did not finish within {DEADLINE:?}"))
        .unwrap_or_else(|e| panic!("{command:?} failed: {e}"))
}

fn spawn(dir: &Path) -> Child {
    let socket = dir.join("r.sock");
    let _ = std::fs::remove_file(&socket);
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ])
        .arg("--unixsocket")
        .arg(&socket)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (make test installs it)");
    eventually_blocking("redis-server to start", || {
        std::os::unix::net::UnixStream::connect(&socket).ok()
    });
    child
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Backend::Single { child, .. } = &mut self.backend {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
