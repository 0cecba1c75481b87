//! The bench's own hub: a `quorum-hub` child process, watched through its log and
//! stopped with SIGTERM, so that it can be restarted under its clients.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use super::StormOptions;
use crate::BenchError;

/// Longest the bench's hub may take to listen and subscribe to decisions.
const HUB_START_WAIT: Duration = Duration::from_secs(30);
/// Longest the bench's hub may take to exit after SIGTERM (it closes and releases every
/// session, within its own `server::SHUTDOWN_GRACE`) before it is killed.
const HUB_STOP_WAIT: Duration = Duration::from_secs(30);
/// Log lines of the bench's hub kept to explain a failure.
const LOG_TAIL: usize = 20;

/// What the bench's hub has logged so far.
#[derive(Debug, Default)]
struct HubLog {
    /// The address it listens on, and when the bench read that line.
    listening: Option<(SocketAddr, Instant)>,
    /// Whether its decision listener subscribed (it delivers decisions from then on).
    ready: bool,
    tail: VecDeque<String>,
}

/// The hub binary's name, looked for beside this executable unless `--hub-bin` names one.
const HUB_BIN: &str = "quorum-hub";

/// The bench's own hub: a `quorum-hub` child process, its log drained by tasks.
pub(super) struct OwnHub {
    child: Child,
    pub(super) spawned: Instant,
    log: watch::Receiver<HubLog>,
}

impl OwnHub {
    pub(super) async fn spawn(
        options: &StormOptions,
        listen: SocketAddr,
    ) -> Result<Self, BenchError> {
        let exe = match &options.hub_bin {
            Some(exe) => exe.clone(),
            None => std::env::current_exe()
                .map_err(|e| BenchError::Other(format!("cannot find this executable: {e}")))?
                .with_file_name(HUB_BIN),
        };
        let mut command = Command::new(&exe);
        // Only the flags below configure it, not the bench's QUORUM_* environment.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("QUORUM_") {
                command.env_remove(name);
            }
        }
        let max_sessions = (options.clients * 2).max(1000).to_string();
        command
            .args(["--listen", &listen.to_string()])
            .args(["--redis-url", &options.redis_url])
            .args(["--max-sessions", &max_sessions])
            // As bench/run.sh runs the main hub: checked on every call, never binding.
            .args(["--vote-rate-limit", "1000000/60s"])
            .args(["--session-rate-limit", "100000/1s"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let spawned = Instant::now();
        let mut child = command.spawn().map_err(|e| {
            BenchError::Other(format!(
                "cannot start the bench's hub {}: {e}",
                exe.display()
            ))
        })?;
        let (tx, log) = watch::channel(HubLog::default());
        let tx = Arc::new(tx);
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(drain(stdout, tx.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(drain(stderr, tx));
        }
        Ok(Self {
            child,
            spawned,
            log,
        })
    }

    /// Waits until the hub logs that it listens.
    pub(super) async fn listening(&mut self) -> Result<(SocketAddr, Instant), BenchError> {
        self.wait_for("listen", |log| log.listening).await
    }

    /// Waits until the hub's decision listener has subscribed.
    pub(super) async fn ready(&mut self) -> Result<(), BenchError> {
        self.wait_for("subscribe to decisions", |log| log.ready.then_some(()))
            .await
    }

    async fn wait_for<T>(
        &mut self,
        what: &str,
        check: impl Fn(&HubLog) -> Option<T>,
    ) -> Result<T, BenchError> {
        let deadline = tokio::time::Instant::now() + HUB_START_WAIT;
        loop {
            if let Some(found) = check(&self.log.borrow_and_update()) {
                return Ok(found);
            }
            let exited = matches!(self.child.try_wait(), Ok(Some(_)));
            let changed = tokio::time::timeout_at(deadline, self.log.changed()).await;
            if exited || !matches!(changed, Ok(Ok(()))) {
                let tail = self.log.borrow().tail.iter().cloned().collect::<Vec<_>>();
                return Err(BenchError::Other(format!(
                    "the bench's hub did not {what}; its last lines:\n{}",
                    tail.join("\n")
                )));
            }
        }
    }

    /// Sends SIGTERM and waits for the hub to exit; returns how long that took.
    pub(super) async fn stop(&mut self) -> Result<Duration, BenchError> {
        let asked = Instant::now();
        terminate(&self.child);
        match tokio::time::timeout(HUB_STOP_WAIT, self.child.wait()).await {
            Ok(_) => Ok(asked.elapsed()),
            Err(_) => {
                let _ = self.child.kill().await;
                Err(BenchError::Other(format!(
                    "the bench's hub did not exit within {HUB_STOP_WAIT:?} of SIGTERM"
                )))
            }
        }
    }
}

/// Asks a child process to shut down gracefully (SIGTERM; elsewhere, it is killed).
fn terminate(child: &Child) {
    #[cfg(unix)]
    {
        use rustix::process::{Pid, Signal, kill_process};
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(Pid::from_raw);
        if let Some(pid) = pid
            && let Err(err) = kill_process(pid, Signal::TERM)
        {
            eprintln!("could not send SIGTERM to the bench's hub: {err}");
        }
    }
    #[cfg(not(unix))]
    let _ = child.start_kill();
}

/// Reads one of the hub's output streams line by line, noting what the bench waits for.
async fn drain(stream: impl AsyncRead + Unpin, log: Arc<watch::Sender<HubLog>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        log.send_modify(|log| {
            if let Some((_, rest)) = line.split_once("listening on ")
                && let Some(addr) = rest.split_whitespace().next()
                && let Ok(addr) = addr.parse()
            {
                log.listening = Some((addr, Instant::now()));
            }
            log.ready |= line.contains("decision listener subscribed");
            if log.tail.len() == LOG_TAIL {
                log.tail.pop_front();
            }
            log.tail.push_back(line);
        });
    }
}
