//! The webhook receiver of `bench webhooks`: a minimal HTTP/1.1 server on 127.0.0.1 that
//! reads each request (its head and its `content-length` body), answers `204` and closes
//! the connection, and hands on when the request arrived, its path, its `webhook-id` and
//! the decision its body names.

use std::net::SocketAddr;
use std::time::Instant;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use quorum_hub::protocol::webhook::ID_HEADER;

/// Longest request head the receiver reads; a longer one is dropped unanswered.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Longest request body the receiver reads; a longer one is dropped unanswered.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The answer to every request: delivered, nothing to read, and no second request.
const ANSWER: &[u8] = b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n";

/// One request the receiver read in full.
#[derive(Debug)]
pub struct Delivery {
    /// When its body had arrived.
    pub received: Instant,
    /// The request's path: which endpoint it was sent to.
    pub path: String,
    /// Its `webhook-id` header (empty when absent).
    pub id: String,
    /// `data.decision` of its body (`None` for a notice of missing events, or a body that
    /// is not a decision event).
    pub decision: Option<String>,
}

/// A running receiver; it stops when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Listens on 127.0.0.1 (a port of the system's choosing) and sends every request it
    /// reads to `deliveries`.
    pub async fn start(deliveries: mpsc::UnboundedSender<Delivery>) -> std::io::Result<Self> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(serve(stream, deliveries.clone()));
                // Reaps the connections already answered, so the set holds only open ones.
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Self { addr, task })
    }

    /// The URL of endpoint `n` at this receiver.
    pub fn url(&self, n: usize) -> String {
        format!("http://{}/hook/{n}", self.addr)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The endpoint number in a path [`Receiver::url`] made.
pub fn endpoint_of(path: &str) -> Option<usize> {
    path.strip_prefix("/hook/")?.parse().ok()
}

/// Reads one request from `stream`, answers it and passes it on.
async fn serve(mut stream: TcpStream, deliveries: mpsc::UnboundedSender<Delivery>) {
    let Some(delivery) = read_request(&mut stream).await else {
        return;
    };
    let _ = stream.write_all(ANSWER).await;
    let _ = stream.shutdown().await;
    let _ = deliveries.send(delivery);
}

/// One request's head and body, or `None` if the connection closed first or the request
/// is larger than the receiver reads.
async fn read_request(stream: &mut TcpStream) -> Option<Delivery> {
    let mut data = Vec::with_capacity(4096);
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if data.len() > MAX_HEAD_BYTES {
            return None;
        }
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = std::str::from_utf8(&data[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_owned();
    let (mut id, mut length) = (String::new(), 0usize);
    for (name, value) in lines.filter_map(|line| line.split_once(':')) {
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case(ID_HEADER) {
            id = value.to_owned();
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().ok()?;
        }
    }
    if length > MAX_BODY_BYTES {
        return None;
    }
    let mut body = data.split_off(head_end + 4);
    while body.len() < length {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&buf[..n]);
    }
    let received = Instant::now();
    Some(Delivery {
        received,
        path,
        id,
        decision: decision_of(&body[..length.min(body.len())]),
    })
}

/// `data.decision` of a delivery's body.
fn decision_of(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Body {
        data: Data,
    }
    #[derive(Deserialize)]
    struct Data {
        decision: Option<String>,
    }
    serde_json::from_slice::<Body>(body).ok()?.data.decision
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_decisions_are_read_from_what_the_hub_sends() {
        assert_eq!(endpoint_of("/hook/3"), Some(3));
        assert_eq!(endpoint_of("/other/3"), None);
        let body = br#"{"type":"quorum.decision.made","timestamp":"2026-12-06T12:00:00.123Z","data":{"decision":"wh1-7","eventId":"1-0"}}"#;
        assert_eq!(decision_of(body).as_deref(), Some("wh1-7"));
        let gap = br#"{"type":"system.events.incomplete","timestamp":"x","data":{"since":"1-0"}}"#;
        assert_eq!(decision_of(gap), None);
    }
}
