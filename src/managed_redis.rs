//! The managed Redis: a private `redis-server` child on a unix socket inside the data
//! directory, with append-only persistence, stopped when the hub stops. The directory is
//! the hub's alone: locked against a second hub, and readable by no other user.

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use redis::{ErrorKind, ServerErrorKind};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// Default for how long the hub waits for its redis-server to answer, not counting the
/// time it reports loading its data (`--redis-start-timeout`).
pub const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest the hub waits for its redis-server to exit after SHUTDOWN.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest unix socket path the kernel accepts (`sun_path` minus its NUL).
const MAX_SOCKET_PATH: usize = 107;
/// Mode of the data directory: the votes in it are the hub's alone.
const DATA_DIR_MODE: u32 = 0o700;
/// The file a hub holds locked while it uses a data directory.
const LOCK_FILE: &str = "hub.lock";

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
    #[error(
        "another hub is using --data-dir {0} (it holds {LOCK_FILE}); stop it or choose another directory"
    )]
    Locked(PathBuf),
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
    /// Longest a start may go without an answer (loading the data does not count).
    start_timeout: Duration,
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
        let server = find_on_path("redis-server").ok_or(ManagedRedisError::NotInstalled)?;
        // Through a shell only to set umask 077, so every file redis-server creates (the
        // append-only files, its log, the socket) is readable by this user alone.
        let mut command = Command::new("/bin/sh");
        command
            .args(["-c", "umask 077 && exec \"$0\" \"$@\""])
            .arg(server)
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
        command.spawn().map_err(ManagedRedisError::Spawn)
    }

    fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Waits until the child answers PING. While it reports loading its append-only file
    /// (a large one takes long), the wait goes on: restarting it would only start over.
    async fn wait_ready(&self, child: &mut Child) -> Result<(), ManagedRedisError> {
        let mut deadline = Instant::now() + self.start_timeout;
        let mut loading_reported = false;
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
                        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::BusyLoading) => {
                            if !loading_reported {
                                tracing::info!("managed redis-server is loading its data; waiting");
                                loading_reported = true;
                            }
                            deadline = Instant::now() + self.start_timeout;
                            last_error = e.to_string();
                        }
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
    /// Held locked while the hub runs: a second hub on the same directory is refused.
    _lock: File,
    stop: CancellationToken,
    supervisor: tokio::task::JoinHandle<()>,
}

impl ManagedRedis {
    /// Starts redis-server with its socket and data in `data_dir`, waits until it answers,
    /// and supervises it from then on.
    pub async fn start(
        data_dir: &Path,
        start_timeout: Duration,
    ) -> Result<Self, ManagedRedisError> {
        let data_dir_error = |e| ManagedRedisError::DataDir(data_dir.into(), e);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DATA_DIR_MODE)
            .create(data_dir)
            .map_err(data_dir_error)?;
        // An existing directory (from an older version, or made by hand) is tightened too.
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(DATA_DIR_MODE))
            .map_err(data_dir_error)?;
        let dir = data_dir.canonicalize().map_err(data_dir_error)?;
        let lock = lock_data_dir(&dir)?;
        let socket = dir.join("redis.sock");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(ManagedRedisError::SocketPathTooLong(socket));
        }
        if socket.exists() && std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            return Err(ManagedRedisError::InUse(socket));
        }
        let launch = Launch {
            start_timeout,
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
            _lock: lock,
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

/// Takes the data directory's lock file (created 0600), or says that another hub has it.
fn lock_data_dir(dir: &Path) -> Result<File, ManagedRedisError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| ManagedRedisError::DataDir(path.clone(), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(ManagedRedisError::Locked(dir.into())),
        Err(std::fs::TryLockError::Error(e)) => Err(ManagedRedisError::DataDir(path, e)),
    }
}

/// The first executable called `name` in the directories of `PATH`.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
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
