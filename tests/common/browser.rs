//! A headless Chromium driven over the DevTools protocol (a WebSocket), enough to load
//! pages, run JavaScript in them, wait for conditions and take screenshots.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use futures::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::eventually;
use super::ws::{Socket, next_text};
use super::{RedisServer, TestHub};
use quorum_hub::config::Config;

/// Flags a closed network and a root account need.
const FLAGS: [&str; 10] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    "--remote-debugging-port=0",
    "--window-size=1280,900",
];

pub struct Browser {
    child: Child,
    socket: Socket,
    next_id: u64,
    /// DevTools events that arrived while waiting for replies, oldest first.
    events: Vec<Value>,
    _profile: tempfile::TempDir,
}

/// One tab, attached to the browser's connection.
#[derive(Clone)]
pub struct Page {
    session: String,
}

impl Page {
    /// The DevTools session the tab is attached as, for commands to it.
    pub fn session(&self) -> &str {
        &self.session
    }
}

fn chromium() -> String {
    for candidate in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {candidate}"))
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return candidate.to_owned();
        }
    }
    panic!("Chromium is not installed; `make test` installs it (make browser-deps)");
}

impl Browser {
    pub async fn launch() -> Self {
        let profile = tempfile::Builder::new()
            .prefix("qh-chromium")
            .tempdir()
            .unwrap();
        let child = Command::new(chromium())
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        // Chromium writes its port and browser endpoint here once it listens.
        let port_file = profile.path().join("DevToolsActivePort");
        let endpoint = eventually("chromium to start its DevTools endpoint", async || {
            let text = std::fs::read_to_string(&port_file).ok()?;
            let mut lines = text.lines();
            let (port, path) = (lines.next()?, lines.next()?);
            Some(format!("ws://127.0.0.1:{port}{path}"))
        })
        .await;
        let (socket, _) = tokio_tungstenite::connect_async(endpoint)
            .await
            .expect("connect to DevTools");
        Self {
            child,
            socket,
            next_id: 1,
            events: Vec::new(),
            _profile: profile,
        }
    }

    /// Sends one DevTools command (to a page's session, if given) and returns its result.
    pub async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut command = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::text(command.to_string()))
            .await
            .expect("send to DevTools");
        loop {
            let reply: Value = serde_json::from_str(&next_text(&mut self.socket).await).unwrap();
            if reply["id"] == json!(id) {
                assert!(reply.get("error").is_none(), "{method} failed: {reply}");
                return reply["result"].clone();
            }
            if reply.get("method").is_some() {
                self.events.push(reply);
            }
        }
    }

    /// Waits for a DevTools event named `method` whose params pass `wanted` (events that
    /// arrived earlier count), and returns its params.
    pub async fn event(&mut self, method: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(n) = self
                .events
                .iter()
                .position(|e| e["method"] == method && wanted(&e["params"]))
            {
                return self.events.remove(n)["params"].clone();
            }
            let text = tokio::time::timeout_at(deadline, next_text(&mut self.socket))
                .await
                .unwrap_or_else(|_| panic!("no DevTools event {method} within 10 s"));
            let event: Value = serde_json::from_str(&text).unwrap();
            if event.get("method").is_some() {
                self.events.push(event);
            }
        }
    }

    /// Opens a new tab at `url`.
    pub async fn open(&mut self, url: &str) -> Page {
        let target = self
            .call(None, "Target.createTarget", json!({"url": url}))
            .await;
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        Page {
            session: attached["sessionId"].as_str().unwrap().to_owned(),
        }
    }

    /// Evaluates `expression` in the page and returns its value (promises are awaited).
    pub async fn eval(&mut self, page: &Page, expression: &str) -> Value {
        let params = json!({"expression": expression, "returnByValue": true, "awaitPromise": true});
        let result = self
            .call(Some(&page.session), "Runtime.evaluate", params)
            .await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression} threw: {result}"
        );
        result["result"]["value"].clone()
    }

    /// Polls `expression` until it is truthy; fails the test after the deadline.
    pub async fn wait_for(&mut self, page: &Page, what: &str, expression: &str) -> Value {
        eventually(&format!("{what} ({expression})"), async || {
            let value = self.eval(page, expression).await;
            let falsy =
                value.is_null() || value == json!(false) || value == json!("") || value == json!(0);
            (!falsy).then_some(value)
        })
        .await
    }

    /// Saves a PNG of the page's viewport.
    pub async fn screenshot(&mut self, page: &Page, path: &Path) {
        let shot = self
            .call(
                Some(&page.session),
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        let png = decode_base64(shot["data"].as_str().unwrap());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = text
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= u32::from(value(*c)) << (18 - 6 * i);
        }
        let n = chunk.len() * 6 / 8;
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + n]);
    }
    out
}

/// A hub configuration that serves the dashboard.
pub fn dashboard_config(redis: &RedisServer) -> Config {
    let mut config = Config::with_redis(redis.url());
    config.web_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web-demo");
    config
}

/// A hub serving the dashboard from `web-demo/`.
pub async fn dashboard_hub(redis: &RedisServer) -> TestHub {
    TestHub::start_with(dashboard_config(redis)).await
}

/// Opens the dashboard and waits for its socket.
pub async fn open_dashboard(browser: &mut Browser, hub: &TestHub) -> Page {
    open_dashboard_at(browser, hub, "/").await
}

/// Opens the dashboard at `path` (with a `?token=`, say) and waits for its socket.
pub async fn open_dashboard_at(browser: &mut Browser, hub: &TestHub, path: &str) -> Page {
    let page = browser.open(&format!("http://{}{path}", hub.addr)).await;
    browser
        .wait_for(
            &page,
            "the page's socket to connect",
            "document.getElementById('conn-state')?.dataset.state === 'connected'",
        )
        .await;
    page
}
