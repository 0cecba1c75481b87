//! `RedisServer`: a private redis-server process on a unix socket, for one test.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::eventually_blocking;

/// A private redis-server on a unix socket in its own temporary directory.
pub struct RedisServer {
    child: Child,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("qh-redis")
            .tempdir()
            .expect("tempdir");
        let child = Self::spawn(dir.path());
        Self { child, dir }
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

    /// Kills the server (its data is gone: tests run it without persistence).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a fresh server on the same socket.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(self.dir.path());
    }

    pub fn url(&self) -> String {
        format!("unix://{}", self.dir.path().join("r.sock").display())
    }

    /// Runs one command on a fresh connection, e.g. `query(&["HGET", key, "status"])`.
    pub async fn query<T: redis::FromRedisValue>(&self, command: &[&str]) -> T {
        let (name, args) = command.split_first().expect("a command");
        redis::cmd(name)
            .arg(args)
            .query_async(&mut self.connection().await)
            .await
            .unwrap_or_else(|e| panic!("{command:?} failed: {e}"))
    }

    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("connect to test redis")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
