//! Test helpers: real redis-server processes, in-process hubs on port 0, and small
//! WebSocket and HTTP clients.
#![allow(dead_code)]

pub mod browser;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use quorum_hub::config::Config;

/// How long any wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// Polls `check` until it returns `Some`, failing the test after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

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
        let deadline = Instant::now() + DEADLINE;
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A hub running in this process on 127.0.0.1:0, stopped when dropped.
pub struct TestHub {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
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
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            quorum_hub::server::run(listener, config, token)
                .await
                .expect("hub failed");
        });
        let hub = Self {
            addr,
            shutdown,
            task: Some(task),
        };
        eventually("hub ready", || async {
            let (status, _) = http(hub.addr, "GET", "/readyz", "").await.ok()?;
            (status == 200).then_some(())
        })
        .await;
        hub
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub async fn client(&self) -> WsClient {
        WsClient::connect(&self.ws_url()).await
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

/// A JSON-RPC client over one WebSocket. Replies are matched by id; pushed
/// notifications are kept in arrival order.
pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    pub notifications: Vec<Value>,
}

impl WsClient {
    pub async fn connect(url: &str) -> Self {
        Self::connect_with(url, &[])
            .await
            .unwrap_or_else(|status| panic!("upgrade refused with {status}"))
    }

    /// Connects with extra request headers; a refused upgrade returns its HTTP status.
    pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> Result<Self, u16> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().expect("request");
        for (name, value) in headers {
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                    .unwrap(),
                value.parse().unwrap(),
            );
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => Ok(Self {
                socket,
                next_id: 1,
                notifications: Vec::new(),
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(e) => panic!("websocket connect failed: {e}"),
        }
    }

    /// Connects over a socket with a tiny receive buffer, for a client that stops reading.
    pub async fn connect_small_buffer(addr: SocketAddr) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let url = format!("ws://{addr}/ws");
        let (socket, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .expect("websocket connect");
        Self {
            socket,
            next_id: 1,
            notifications: Vec::new(),
        }
    }

    /// Next frame of any kind, or `None` once the connection has ended (closed or reset).
    pub async fn next_frame(&mut self) -> Option<Message> {
        match tokio::time::timeout(DEADLINE, self.socket.next())
            .await
            .expect("timed out waiting for a frame")
        {
            Some(Ok(message)) => Some(message),
            _ => None,
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.socket.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_message(&mut self, message: Message) {
        self.socket.send(message).await.expect("send");
    }

    /// Next text frame that is not a notification, parsed.
    pub async fn recv_reply(&mut self) -> Value {
        loop {
            let value = self.recv_value().await;
            if is_notification(&value) {
                self.notifications.push(value);
            } else {
                return value;
            }
        }
    }

    /// Next text frame of any kind, parsed (pings and pongs are skipped).
    pub async fn recv_value(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(DEADLINE, self.socket.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("socket ended")
                .expect("socket error");
            match frame {
                Message::Text(text) => return serde_json::from_str(&text).expect("reply is JSON"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Sends a request and returns the whole response object.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        self.send_text(&request.to_string()).await;
        let reply = self.recv_reply().await;
        assert_eq!(reply["id"], json!(id), "reply id: {reply}");
        reply
    }

    /// Sends a request and returns its `result`, failing on an error reply.
    pub async fn result(&mut self, method: &str, params: Value) -> Value {
        let reply = self.call(method, params).await;
        assert!(reply.get("error").is_none(), "{method} failed: {reply}");
        reply["result"].clone()
    }

    /// Sends a request and returns its `error`, failing on a success reply.
    pub async fn error(&mut self, method: &str, params: Value) -> Value {
        let reply = self.call(method, params).await;
        assert!(
            reply.get("result").is_none(),
            "{method} should fail: {reply}"
        );
        reply["error"].clone()
    }

    pub async fn register(&mut self, instance: &str) -> Value {
        self.result("system.register", json!({ "instanceId": instance }))
            .await
    }

    pub async fn vote(&mut self, instance: &str, decision: &str, value: &str, total: u64) -> Value {
        let params = json!({
            "instanceId": instance, "decision": decision, "value": value, "totalInstances": total
        });
        self.result("system.quorum.vote", params).await
    }

    /// Waits for the next pushed notification.
    pub async fn next_notification(&mut self) -> Value {
        if !self.notifications.is_empty() {
            return self.notifications.remove(0);
        }
        let value = self.recv_value().await;
        assert!(
            is_notification(&value),
            "unexpected reply while waiting for a notification: {value}"
        );
        value
    }

    /// Asserts that no notification arrives for a while: a round trip through the hub and
    /// Redis after the fact (a status call) shows that anything published earlier was seen.
    pub async fn assert_no_more_notifications(&mut self, decision: &str) {
        self.call("system.quorum.status", json!({ "decision": decision }))
            .await;
        assert!(
            self.notifications.is_empty(),
            "unexpected notifications: {:?}",
            self.notifications
        );
    }

    /// Waits for the server to close the socket and returns the close code.
    pub async fn expect_close(&mut self) -> u16 {
        loop {
            let frame = tokio::time::timeout(DEADLINE, self.socket.next())
                .await
                .expect("timed out waiting for close");
            match frame {
                Some(Ok(Message::Close(Some(frame)))) => return frame.code.into(),
                Some(Ok(Message::Close(None))) => return 1005,
                Some(Ok(Message::Text(text))) => self
                    .notifications
                    .push(serde_json::from_str(&text).unwrap_or(Value::Null)),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("socket error before close frame: {e}"),
                None => panic!("socket ended without a close frame"),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(DEADLINE, self.socket.next()).await {}
    }
}

fn is_notification(value: &Value) -> bool {
    value.get("method").is_some() && value.get("id").is_none()
}

/// One HTTP/1.1 request with `Connection: close`; returns the status and body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {response}")))?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// POSTs a JSON-RPC body to `/rpc` and returns the status and parsed body (`Null` if empty).
pub async fn rpc(addr: SocketAddr, body: &Value) -> (u16, Value) {
    let (status, text) = http(addr, "POST", "/rpc", &body.to_string())
        .await
        .expect("http");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).expect("JSON body")
    };
    (status, value)
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

/// A scratch directory for a managed hub's data, with a short path (unix sockets).
pub fn short_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("qh")
        .tempdir_in("/tmp")
        .expect("tempdir")
}

pub fn bin_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_quorum-hub"))
}

/// A `quorum-hub` process started from the built binary, with the address it logged and
/// every log line that reports a panic.
pub struct HubProcess {
    pub child: Child,
    pub addr: SocketAddr,
    panics: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl HubProcess {
    pub fn spawn(command: &mut Command) -> Self {
        use std::io::{BufRead, BufReader};
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn quorum-hub");
        let panics = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let stderr: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        // Keep draining both streams so the hub never blocks on a full pipe.
        for stream in [stdout, stderr] {
            let (tx, panics, all) = (tx.clone(), panics.clone(), lines.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    all.lock().unwrap().push(line.clone());
                    if line.contains("panicked") {
                        panics.lock().unwrap().push(line.clone());
                    }
                    if let Some((_, addr)) = line.split_once("listening on ") {
                        let _ = tx.send(addr.trim().to_owned());
                    }
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
        Self {
            child,
            addr,
            panics,
            lines,
        }
    }

    /// Waits until a log line contains `text`, and returns it.
    pub fn wait_for_log(&self, text: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(line) = self.lines.lock().unwrap().iter().find(|l| l.contains(text)) {
                return line.clone();
            }
            assert!(Instant::now() < deadline, "the hub never logged {text:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Log lines that reported a panic so far.
    pub fn panics(&self) -> Vec<String> {
        self.panics.lock().unwrap().clone()
    }

    /// Resident memory of the hub process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Sends SIGTERM and returns whether the process exited with status 0.
    pub fn terminate(mut self) -> bool {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(Instant::now() < deadline, "hub did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
