//! Server-Sent Events (`GET /events`) against a real hub: decisions made and expired as
//! events with their ids, in order; resume with `Last-Event-ID` (none missed, none twice),
//! dashboard events by `?events=`, the same token and session rules as `/ws`, a heartbeat
//! while idle, a stream whose reader stopped reading ended, and a clean end at shutdown.

mod common;

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use common::{DEADLINE, RedisServer, TestHub, WsClient, without_rate_limits};

/// One event of the stream.
#[derive(Debug, Clone, PartialEq)]
struct Event {
    id: Option<String>,
    name: String,
    data: Value,
}

/// A client of `GET /events`, reading the chunked body as SSE.
struct Stream {
    reader: BufReader<TcpStream>,
    /// Body bytes read and not yet made into events.
    pending: String,
    /// Comment lines seen (heartbeats), and the `retry:` field.
    retry: Option<u64>,
}

impl Stream {
    /// Opens `/events` with the query and headers given; returns the HTTP status and, for
    /// 200, the stream.
    async fn open(hub: &TestHub, query: &str, headers: &[(&str, &str)]) -> (u16, Option<Stream>) {
        let tcp = TcpStream::connect(hub.addr).await.unwrap();
        Self::open_over(tcp, hub, query, headers).await
    }

    /// [`Stream::open`] over a connection made already.
    async fn open_over(
        tcp: TcpStream,
        hub: &TestHub,
        query: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Option<Stream>) {
        let mut reader = BufReader::new(tcp);
        let mut request = format!("GET /events{query} HTTP/1.1\r\nHost: {}\r\n", hub.addr);
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        reader
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .unwrap();
        let mut status_line = String::new();
        reader.read_line(&mut status_line).await.unwrap();
        let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut content_type = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-type:") {
                content_type = value.trim().to_owned();
            }
        }
        if status != 200 {
            return (status, None);
        }
        assert_eq!(content_type, "text/event-stream");
        (
            status,
            Some(Stream {
                reader,
                pending: String::new(),
                retry: None,
            }),
        )
    }

    /// The next chunk of the body; `None` at its end.
    async fn chunk(&mut self) -> Option<String> {
        let mut size = String::new();
        if self.reader.read_line(&mut size).await.ok()? == 0 {
            return None;
        }
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return None;
        }
        let mut data = vec![0; size + 2];
        self.reader.read_exact(&mut data).await.ok()?;
        data.truncate(size);
        Some(String::from_utf8(data).unwrap())
    }

    /// Waits up to `within` for a heartbeat comment; returns what came before it.
    async fn heartbeat(&mut self, within: Duration) -> String {
        tokio::time::timeout(within, async {
            loop {
                if let Some(at) = self.pending.find(": heartbeat\n\n") {
                    let before: String = self.pending.drain(..at).collect();
                    self.pending.drain(..": heartbeat\n\n".len());
                    return before;
                }
                let chunk = self.chunk().await.expect("the stream ended");
                self.pending.push_str(&chunk);
            }
        })
        .await
        .expect("a heartbeat in time")
    }

    /// The next event (heartbeats and the `retry:` field are taken in passing); `None`
    /// when the stream ends.
    async fn next(&mut self) -> Option<Event> {
        tokio::time::timeout(DEADLINE, async {
            loop {
                if let Some(end) = self.pending.find("\n\n") {
                    let block: String = self.pending.drain(..end + 2).collect();
                    let (mut id, mut name, mut data) = (None, None, None);
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("id: ") {
                            id = Some(v.to_owned());
                        } else if let Some(v) = line.strip_prefix("event: ") {
                            name = Some(v.to_owned());
                        } else if let Some(v) = line.strip_prefix("data: ") {
                            data = Some(serde_json::from_str(v).unwrap());
                        } else if let Some(v) = line.strip_prefix("retry: ") {
                            self.retry = v.parse().ok();
                        }
                    }
                    if let (Some(name), Some(data)) = (name, data) {
                        return Some(Event { id, name, data });
                    }
                    continue;
                }
                let chunk = self.chunk().await?;
                self.pending.push_str(&chunk);
            }
        })
        .await
        .expect("an event in time")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_arrive_as_events_and_a_resume_misses_none_and_repeats_none() {
    let redis = RedisServer::start();
    let hub = TestHub::start_with(without_rate_limits(&redis)).await;
    let (status, stream) = Stream::open(&hub, "", &[]).await;
    assert_eq!(status, 200);
    let mut stream = stream.unwrap();
    let mut voter = hub.client_as("voter").await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(voter.decide("voter", &format!("d{n}")).await);
    }
    // One vote of three with a short deadline: the decision expires.
    voter
        .result(
            "system.quorum.vote",
            serde_json::json!({"instanceId": "voter", "decision": "lapsed", "value": "a",
                               "totalInstances": 3, "closeAfterMs": 200}),
        )
        .await;
    let expired = voter.next_notification().await;
    assert_eq!(expired["method"], "quorum.decision.expired", "{expired}");
    for (n, id) in ids.iter().enumerate() {
        let event = stream.next().await.unwrap();
        assert_eq!(event.name, "quorum.decision.made");
        assert_eq!(event.id.as_deref(), Some(id.as_str()));
        assert_eq!(event.data["decision"], format!("d{n}"));
        assert_eq!(event.data["eventId"], id.as_str());
    }
    let event = stream.next().await.unwrap();
    assert_eq!(event.name, "quorum.decision.expired", "{event:?}");
    assert_eq!(event.data, expired["params"]);
    assert_eq!(
        event.id.as_ref(),
        expired["params"]["eventId"]
            .as_str()
            .map(str::to_owned)
            .as_ref()
    );
    assert_eq!(
        stream.retry,
        Some(2000),
        "the stream says when to reconnect"
    );

    // What EventSource sends by itself on reconnect.
    let (_, resumed) = Stream::open(&hub, "", &[("Last-Event-ID", &ids[0])]).await;
    let mut resumed = resumed.unwrap();
    let later = voter.decide("voter", "d3").await;
    let lapsed = expired["params"]["eventId"].as_str().unwrap().to_owned();
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(resumed.next().await.unwrap().id.unwrap());
    }
    assert_eq!(
        seen,
        [
            ids[1].clone(),
            ids[2].clone(),
            lapsed.clone(),
            later.clone()
        ]
    );
    // The first connection resumes with the query instead.
    let (_, by_query) = Stream::open(&hub, &format!("?lastEventId={}", ids[1]), &[]).await;
    let mut by_query = by_query.unwrap();
    assert_eq!(by_query.next().await.unwrap().id.unwrap(), ids[2]);
    assert_eq!(by_query.next().await.unwrap().id.unwrap(), lapsed);
    assert_eq!(by_query.next().await.unwrap().id.unwrap(), later);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_the_log_cannot_place_gets_the_same_notice_as_on_a_websocket() {
    let redis = RedisServer::start();
    let hub = TestHub::start_with(without_rate_limits(&redis)).await;
    let (_, stream) = Stream::open(&hub, "?lastEventId=not-an-id", &[]).await;
    let mut stream = stream.unwrap();
    let notice = stream.next().await.unwrap();
    assert_eq!(notice.name, "system.events.incomplete", "{notice:?}");
    assert_eq!(notice.data["reason"], "malformed", "{notice:?}");
    assert_eq!(notice.id, None, "a notice moves no cursor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_events_come_with_events_and_bad_patterns_are_refused() {
    let redis = RedisServer::start();
    let hub = TestHub::start_with(without_rate_limits(&redis)).await;
    let (status, _) = Stream::open(&hub, "?events=quorum.nothing", &[]).await;
    assert_eq!(status, 400);
    let (_, stream) = Stream::open(&hub, "?events=quorum.vote.recorded", &[]).await;
    let mut stream = stream.unwrap();
    let mut voter = hub.client_as("voter").await;
    // The stream started once dashboard events flow to this hub.
    voter.vote("voter", "open", "a", 3).await;
    let recorded = stream.next().await.unwrap();
    assert_eq!(recorded.name, "quorum.vote.recorded", "{recorded:?}");
    assert_eq!(recorded.data["instanceId"], "voter", "{recorded:?}");
    assert_eq!(recorded.id, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_takes_the_same_token_and_place_as_a_websocket() {
    let redis = RedisServer::start();
    let secret = "a-secret-of-enough-length";
    let mut config = without_rate_limits(&redis);
    config.auth_secret = Some(secret.into());
    config.max_sessions = 1;
    let hub = TestHub::start_with(config).await;
    let authority = quorum_hub::auth::Authority::new(secret).unwrap();
    let observer = authority
        .mint(None, true, Duration::from_secs(600))
        .unwrap();
    assert_eq!(Stream::open(&hub, "", &[]).await.0, 401);
    let (status, stream) = Stream::open(&hub, &format!("?token={observer}"), &[]).await;
    assert_eq!(status, 200);
    // It holds the hub's one session place.
    let refused = WsClient::connect_with(
        &hub.ws_url(),
        &[("authorization", &format!("Bearer {observer}"))],
    )
    .await;
    assert_eq!(refused.err(), Some(503));
    // Given back when the client goes away.
    drop(stream);
    common::eventually("the place to be given back", async || {
        WsClient::connect_with(
            &hub.ws_url(),
            &[("authorization", &format!("Bearer {observer}"))],
        )
        .await
        .ok()
    })
    .await;
    let (status, _) = Stream::open(&hub, "", &[("Origin", "https://evil.example")]).await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_ends_cleanly_when_the_hub_stops() {
    let redis = RedisServer::start();
    let hub = TestHub::start_with(without_rate_limits(&redis)).await;
    let (_, stream) = Stream::open(&hub, "", &[]).await;
    let mut stream = stream.unwrap();
    let mut voter = hub.client_as("voter").await;
    let id = voter.decide("voter", "d1").await;
    assert_eq!(stream.next().await.unwrap().id.unwrap(), id);
    drop(voter);
    hub.stop().await;
    assert_eq!(stream.next().await, None, "the body ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_carries_a_heartbeat_comment_every_15_seconds() {
    let redis = RedisServer::start();
    let hub = TestHub::start_with(without_rate_limits(&redis)).await;
    let (_, stream) = Stream::open(&hub, "", &[]).await;
    let mut stream = stream.unwrap();
    let opened = tokio::time::Instant::now();
    let before = stream.heartbeat(Duration::from_secs(25)).await;
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_secs(14),
        "a heartbeat after {waited:?}, not after 15 s of quiet"
    );
    assert_eq!(
        before.trim(),
        "retry: 2000",
        "only the opening came before it"
    );
    // The stream still carries events after it.
    let mut voter = hub.client_as("voter").await;
    let id = voter.decide("voter", "after-heartbeat").await;
    assert_eq!(stream.next().await.unwrap().id.unwrap(), id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_reader_stopped_reading_is_ended_and_gives_its_place_back() {
    let redis = RedisServer::start();
    let mut config = without_rate_limits(&redis);
    // A connection whose reader keeps its window closed for two ping intervals is dropped.
    config.ping_interval = Duration::from_millis(500);
    config.max_sessions = 2;
    let hub = TestHub::start_with(config).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(hub.addr).await.unwrap();
    let (status, stuck) = Stream::open_over(tcp, &hub, "", &[]).await;
    assert_eq!(status, 200);
    // The stream is never read again; the voter takes the hub's other place.
    let mut voter = hub.client_as("voter").await;
    for n in 0..200 {
        voter.decide("voter", &format!("flood-{n}")).await;
    }
    common::eventually("the stuck stream to be ended", async || {
        let state = voter
            .result("system.get_state", serde_json::json!({"limit": 1}))
            .await;
        (state["hub"]["sessions"] == 1).then_some(())
    })
    .await;
    let (status, _) = Stream::open(&hub, "", &[]).await;
    assert_eq!(status, 200, "its place is free again");
    drop(stuck);
}
