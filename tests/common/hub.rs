//! Hubs under test: `TestHub` runs one in this process, `HubProcess` runs the built
//! binary; `wait_ready` is the one readiness poll for both.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio_util::sync::CancellationToken;

use quorum_hub::config::Config;

use super::{DEADLINE, RedisServer, WsClient, eventually, eventually_blocking, http};

/// Polls `/readyz` until the hub at `addr` answers 200.
pub async fn wait_ready(addr: SocketAddr) {
    eventually("the hub to be ready", async || {
        let (status, _) = http(addr, "GET", "/readyz", "").await.ok()?;
        (status == 200).then_some(())
    })
    .await;
}

/// A hub running in this process on 127.0.0.1:0, stopped when dropped.
pub struct TestHub {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// A configuration for `redis` with the vote and call rate limits off, for tests that
/// make many decisions quickly.
pub fn without_rate_limits(redis: &RedisServer) -> Config {
    without_rate_limits_at(&redis.url())
}

/// [`without_rate_limits`] for the Redis that `url` names.
pub fn without_rate_limits_at(url: &str) -> Config {
    let mut config = Config::with_redis(url);
    config.vote_rate_limit = quorum_hub::config::RateLimit::OFF;
    config.session_rate_limit = quorum_hub::config::RateLimit::OFF;
    config
}

impl TestHub {
    pub async fn start(redis: &RedisServer) -> Self {
        Self::start_with(Config::with_redis(redis.url())).await
    }

    pub async fn start_with(config: Config) -> Self {
        Self::start_on(config, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts a hub on a given address (to restart one where it was).
    pub async fn start_on(config: Config, addr: SocketAddr) -> Self {
        let hub = Self::serve(config, addr).await;
        wait_ready(hub.addr).await;
        hub
    }

    /// Starts a hub without waiting for it to be ready (one whose Redis is down never is).
    pub async fn start_unready(config: Config) -> Self {
        Self::serve(config, "127.0.0.1:0".parse().unwrap()).await
    }

    async fn serve(config: Config, addr: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            quorum_hub::server::run(listener, config, token)
                .await
                .expect("hub failed");
        });
        Self {
            addr,
            shutdown,
            task: Some(task),
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub async fn client(&self) -> WsClient {
        WsClient::connect(&self.ws_url()).await
    }

    /// A session registered as `instance`.
    pub async fn client_as(&self, instance: &str) -> WsClient {
        let mut client = self.client().await;
        client.register(instance).await;
        client
    }

    /// Asserts that a fresh session is served normally.
    pub async fn assert_serving(&self) {
        let state = self
            .client()
            .await
            .result("system.get_state", json!({}))
            .await;
        assert!(state["hub"].is_object(), "{state}");
    }

    /// Stops the hub and waits until it has finished shutting down.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(DEADLINE, task)
                .await
                .expect("hub stops")
                .expect("hub task");
        }
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn bin_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_quorum-hub"))
}

/// A `quorum-hub` process started from the built binary, with the address it logged and
/// every line it logged.
pub struct HubProcess {
    pub child: Child,
    pub addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl HubProcess {
    /// A hub process on `redis` that delivers webhooks and Web Push to loopback, each
    /// attempt bounded to 1 s, with votes unlimited; ready when it returns.
    pub async fn delivering_to_loopback(redis: &RedisServer) -> Self {
        let process = Self::spawn(
            Command::new(bin_path())
                .args(["--listen", "127.0.0.1:0", "--webhook-allow-private"])
                .args(["--webhook-timeout", "1s", "--vote-rate-limit", "off"])
                .arg("--redis-url")
                .arg(redis.url()),
        );
        wait_ready(process.addr).await;
        process
    }

    pub fn spawn(command: &mut Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn quorum-hub");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let stderr: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        // Keep draining both streams so the hub never blocks on a full pipe.
        for stream in [stdout, stderr] {
            let (tx, lines) = (tx.clone(), lines.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some((_, addr)) = line.split_once("listening on ") {
                        let _ = tx.send(addr.trim().to_owned());
                    }
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let addr = rx
            .recv_timeout(DEADLINE)
            .ok()
            .and_then(|a| a.parse::<SocketAddr>().ok());
        let Some(addr) = addr else {
            // Do not leave the process behind when the test fails here.
            let _ = child.kill();
            let _ = child.wait();
            panic!("the hub did not log `listening on ADDR`");
        };
        Self { child, addr, lines }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Waits until a log line contains `text`, and returns it.
    /// Log lines so far that contain `text`.
    pub fn logged(&self, text: &str) -> Vec<String> {
        let lines = self.lines.lock().unwrap();
        lines.iter().filter(|l| l.contains(text)).cloned().collect()
    }

    pub fn wait_for_log(&self, text: &str) -> String {
        eventually_blocking(&format!("the hub to log {text:?}"), || {
            let lines = self.lines.lock().unwrap();
            lines.iter().find(|l| l.contains(text)).cloned()
        })
    }

    /// Log lines that reported a panic so far.
    pub fn panics(&self) -> Vec<String> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter(|l| l.contains("panicked"))
            .cloned()
            .collect()
    }

    /// Resident memory of the hub process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.memory_kib("VmRSS")
    }

    /// The most resident memory the hub process has had so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.memory_kib("VmHWM")
    }

    /// One `/proc/<pid>/status` memory field of the hub process, in KiB.
    fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/<pid>/status"))
    }

    /// Sends SIGTERM and returns whether the process exited with status 0.
    pub fn terminate(mut self) -> bool {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = eventually_blocking("the hub to exit after SIGTERM", || {
            self.child.try_wait().unwrap()
        });
        exit.success()
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
