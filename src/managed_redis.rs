//! The managed Redis: a private `redis-server` child on a unix socket inside the data
//! directory, with append-only persistence, stopped when the hub stops.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// Longest the hub waits for its redis-server to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest the hub waits for its redis-server to exit after SHUTDOWN.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest unix socket path the kernel accepts (`sun_path` minus its NUL).
const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum ManagedRedisError {
    #[error(
        "redis-server was not found on PATH: install it (Debian/Ubuntu: `sudo apt-get install redis-server`, \
         or run `make run`), or point the hub at a running Redis with --redis-url"
    )]
    NotInstalled,
    #[error("data dir {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    #[error("socket path {0} is longer than {MAX_SOCKET_PATH} bytes; choose a shorter --data-dir")]
    SocketPathTooLong(PathBuf),
    #[error("a redis-server already answers on {0}; another hub may be using this --data-dir")]
    InUse(PathBuf),
    #[error("could not start redis-server: {0}")]
    Spawn(std::io::Error),
    #[error("redis-server did not become ready: {0} (see {1})")]
    NotReady(String, PathBuf),
}

/// A running redis-server owned by this hub.
pub struct ManagedRedis {
    child: Child,
    socket: PathBuf,
}

impl ManagedRedis {
    /// Starts redis-server with its socket and data in `data_dir`, and waits until it answers.
    pub async fn start(data_dir: &Path) -> Result<Self, ManagedRedisError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| ManagedRedisError::DataDir(data_dir.into(), e))?;
        let dir = data_dir
            .canonicalize()
            .map_err(|e| ManagedRedisError::DataDir(data_dir.into(), e))?;
        let socket = dir.join("redis.sock");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(ManagedRedisError::SocketPathTooLong(socket));
        }
        if socket.exists() {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                return Err(ManagedRedisError::InUse(socket));
            }
            // Left behind by a redis-server that did not exit cleanly.
            let _ = std::fs::remove_file(&socket);
        }
        let log = dir.join("redis.log");
        let mut command = Command::new("redis-server");
        command
            .args([
                "--port",
                "0",
                "--unixsocketperm",
                "700",
                "--daemonize",
                "no",
            ])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let child = command.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ManagedRedisError::NotInstalled,
            _ => ManagedRedisError::Spawn(e),
        })?;
        let mut redis = Self { child, socket };
        redis.wait_ready(&log).await?;
        tracing::info!(socket = %redis.socket.display(), "managed redis-server started");
        Ok(redis)
    }

    /// The URL clients use to reach it.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    async fn wait_ready(&mut self, log: &Path) -> Result<(), ManagedRedisError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let client = redis::Client::open(self.url())
            .map_err(|e| ManagedRedisError::NotReady(e.to_string(), log.into()))?;
        let mut last_error = String::from("no answer");
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(ManagedRedisError::NotReady(
                    format!("redis-server exited with {status}"),
                    log.into(),
                ));
            }
            if self.socket.exists() {
                match client.get_multiplexed_async_connection().await {
                    Ok(mut conn) => match redis::cmd("PING").query_async::<String>(&mut conn).await
                    {
                        Ok(_) => return Ok(()),
                        // Still loading its append-only file.
                        Err(e) => last_error = e.to_string(),
                    },
                    Err(e) => last_error = e.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(ManagedRedisError::NotReady(last_error, log.into()))
    }

    /// Asks redis-server to shut down (flushing its append-only file) and waits for it;
    /// kills it if it does not exit in time.
    pub async fn stop(mut self) {
        if let Ok(client) = redis::Client::open(self.url())
            && let Ok(mut conn) = client.get_multiplexed_async_connection().await
        {
            // The server closes the connection instead of replying.
            let _ = redis::cmd("SHUTDOWN").query_async::<()>(&mut conn).await;
        }
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(_) => tracing::info!("managed redis-server stopped"),
            Err(_) => {
                tracing::warn!("managed redis-server did not stop in {STOP_TIMEOUT:?}; killing it");
                let _ = self.child.kill().await;
            }
        }
    }
}
