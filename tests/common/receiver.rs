//! A webhook receiver under test: an HTTP/1.1 server on 127.0.0.1 that records every
//! request and answers each one as the test says (a status, no answer at all, or a closed
//! connection), and the check of a delivery's Standard Webhooks signature.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::eventually;

/// One request as the receiver read it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// The `webhook-id` header.
    pub fn id(&self) -> &str {
        self.header("webhook-id")
    }
}

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// This status, with these extra headers.
    Status(u16, Vec<(&'static str, String)>),
    /// No answer: the connection is held open until the receiver is dropped.
    Hang,
    /// This status, after holding the request this long (a slow receiver).
    Slow(std::time::Duration, u16),
}

type Answering = Box<dyn FnMut(usize, &Received) -> Answer + Send>;

/// A receiver and what it has received so far.
pub struct Receiver {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// A receiver that answers 200 to everything.
    pub async fn ok() -> Self {
        Self::start(|_, _| Answer::Status(200, Vec::new())).await
    }

    /// A receiver that answers request `n` (from 0) with `answer(n, request)`.
    pub async fn start(answer: impl FnMut(usize, &Received) -> Answer + Send + 'static) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), answer).await
    }

    /// [`Receiver::start`] on a given address (to bring a receiver up where one was down).
    pub async fn start_on(
        addr: SocketAddr,
        answer: impl FnMut(usize, &Received) -> Answer + Send + 'static,
    ) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let answer: Arc<Mutex<Answering>> = Arc::new(Mutex::new(Box::new(answer)));
        let task = tokio::spawn({
            let received = received.clone();
            async move {
                let mut held = Vec::new();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let (received, answer) = (received.clone(), answer.clone());
                    held.push(tokio::spawn(serve(stream, received, answer)));
                }
            }
        });
        Self {
            addr,
            received,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests have arrived, and returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        eventually(
            &format!("{n} webhook requests at {}", self.addr),
            async || {
                let received = self.received();
                (received.len() >= n).then_some(received)
            },
        )
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: TcpStream,
    received: Arc<Mutex<Vec<Received>>>,
    answer: Arc<Mutex<Answering>>,
) {
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    let answered = {
        let mut received = received.lock().unwrap();
        let n = received.len();
        let answered = (answer.lock().unwrap())(n, &request);
        received.push(request);
        answered
    };
    match answered {
        Answer::Status(status, headers) => {
            let mut head =
                format!("HTTP/1.1 {status} Answer\r\ncontent-length: 0\r\nconnection: close\r\n");
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
        Answer::Hang => std::future::pending::<()>().await,
        Answer::Slow(hold, status) => {
            tokio::time::sleep(hold).await;
            let head = format!(
                "HTTP/1.1 {status} Answer\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    }
}

async fn read_request(stream: &mut TcpStream) -> Option<Received> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let (method, path) = (
        request_line.next()?.to_owned(),
        request_line.next()?.to_owned(),
    );
    let headers: HashMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&buf[..n]);
    }
    Some(Received {
        method,
        path,
        headers,
        body,
    })
}

/// Whether one of the `v1,` signatures of `request` is the HMAC-SHA256 of its id,
/// timestamp and body under `secret` (`whsec_...`), as the Standard Webhooks spec defines.
pub fn signed_with(request: &Received, secret: &str) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
        .expect("base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(
        format!(
            "{}.{}.",
            request.header("webhook-id"),
            request.header("webhook-timestamp")
        )
        .as_bytes(),
    );
    mac.update(&request.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    request
        .header("webhook-signature")
        .split(' ')
        .any(|signature| signature == expected)
}
