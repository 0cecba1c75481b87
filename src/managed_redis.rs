//! The managed Redis: a private `redis-server` child on a unix socket inside the data
//! directory, with append-only persistence, stopped when the hub stops.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

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

/// Longest pause between restarts of a redis-server that keeps dying.
pub const RESTART_MAX_DELAY: Duration = Duration::from_secs(5);

/// How to start the redis-server: its socket, data directory and log.
#[derive(Debug, Clone)]
struct Launch {
    socket: PathBuf,
    dir: PathBuf,
    log: PathBuf,
}

impl Launch {
    fn spawn(&self) -> Result<Child, ManagedRedisError> {
        if self.socket.exists() {
            // Left behind by a redis-server that did not exit cleanly.
            let _ = std::fs::remove_file(&self.socket);
        }
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
            .arg(&self.socket)
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&self.log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        command.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ManagedRedisError::NotInstalled,
            _ => ManagedRedisError::Spawn(e),
        })
    }

    fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Waits until the child answers PING (it may first replay its append-only file).
    async fn wait_ready(&self, child: &mut Child) -> Result<(), ManagedRedisError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let not_ready = |reason: String| ManagedRedisError::NotReady(reason, self.log.clone());
        let client = redis::Client::open(self.url()).map_err(|e| not_ready(e.to_string()))?;
        let mut last_error = String::from("no answer");
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(not_ready(format!("redis-server exited with {status}")));
            }
            if self.socket.exists() {
                match client.get_multiplexed_async_connection().await {
                    Ok(mut conn) => match redis::cmd("PING").query_async::<String>(&mut conn).await
                    {
                        Ok(_) => return Ok(()),
                        Err(e) => last_error = e.to_string(),
                    },
                    Err(e) => last_error = e.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(not_ready(last_error))
    }
}

/// A running redis-server owned by this hub, restarted on the same data directory
/// whenever it dies until the hub stops it.
pub struct ManagedRedis {
    launch: Launch,
    stop: CancellationToken,
    supervisor: tokio::task::JoinHandle<()>,
}

impl ManagedRedis {
    /// Starts redis-server with its socket and data in `data_dir`, waits until it answers,
    /// and supervises it from then on.
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
        if socket.exists() && std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            return Err(ManagedRedisError::InUse(socket));
        }
        let launch = Launch {
            log: dir.join("redis.log"),
            socket,
            dir,
        };
        let mut child = launch.spawn()?;
        launch.wait_ready(&mut child).await?;
        tracing::info!(socket = %launch.socket.display(), "managed redis-server started");
        let stop = CancellationToken::new();
        let supervisor = tokio::spawn(supervise(launch.clone(), child, stop.clone()));
        Ok(Self {
            launch,
            stop,
            supervisor,
        })
    }

    /// The URL clients use to reach it.
    pub fn url(&self) -> String {
        self.launch.url()
    }

    /// Asks redis-server to shut down (flushing its append-only file) and waits for it;
    /// kills it if it does not exit in time.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.supervisor.await;
    }
}

/// Restarts the child whenever it exits, until `stop`; then shuts it down.
async fn supervise(launch: Launch, mut child: Child, stop: CancellationToken) {
    let mut delay = Duration::from_millis(100);
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                tracing::error!(%status, log = %launch.log.display(), "managed redis-server exited; restarting it on the same data dir");
            }
            _ = stop.cancelled() => break,
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.cancelled() => return,
            }
            match launch.spawn() {
                Ok(mut restarted) => match launch.wait_ready(&mut restarted).await {
                    Ok(()) => {
                        tracing::info!("managed redis-server restarted");
                        child = restarted;
                        delay = Duration::from_millis(100);
                        break;
                    }
                    Err(err) => {
                        tracing::error!(%err, "managed redis-server did not come back; trying again")
                    }
                },
                Err(err) => {
                    tracing::error!(%err, "could not restart managed redis-server; trying again")
                }
            }
            delay = (delay * 2).min(RESTART_MAX_DELAY);
        }
    }
    if let Ok(client) = redis::Client::open(launch.url())
        && let Ok(mut conn) = client.get_multiplexed_async_connection().await
    {
        // The server closes the connection instead of replying.
        let _ = redis::cmd("SHUTDOWN").query_async::<()>(&mut conn).await;
    }
    match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
        Ok(_) => tracing::info!("managed redis-server stopped"),
        Err(_) => {
            tracing::warn!("managed redis-server did not stop in {STOP_TIMEOUT:?}; killing it");
            let _ = child.kill().await;
        }
    }
}
