//! Tests of one webhook POST over plain HTTP against real receivers on 127.0.0.1, and of how
//! a response head becomes an outcome.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;

mod tls;

/// Longest request a test receiver reads.
const MAX_TEST_REQUEST_BYTES: usize = 64 * 1024;

/// A request as a test receiver read it off the socket.
#[derive(Debug)]
struct Received {
    request_line: String,
    /// Header names lower-cased, in the order they arrived.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A real HTTP receiver on 127.0.0.1: counts the connections it accepts, hands each
/// request it reads to the test, and answers every one with the same canned response.
struct Receiver {
    address: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: mpsc::UnboundedReceiver<Received>,
}

impl Receiver {
    async fn answering(response: String) -> Receiver {
        Receiver::start(Some(response)).await
    }

    /// Accepts connections and never answers.
    async fn silent() -> Receiver {
        Receiver::start(None).await
    }

    async fn start(response: Option<String>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let (requests_in, requests) = mpsc::unbounded_channel();
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let response = response.clone();
                let requests_in = requests_in.clone();
                tokio::spawn(async move {
                    let Some(response) = response else {
                        // Hold the connection open, reading, until the client goes.
                        let mut sink = [0u8; 1024];
                        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                        return;
                    };
                    if let Some(received) = read_request(&mut stream).await {
                        let _ = requests_in.send(received);
                        let _ = stream.write_all(response.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    }
                });
            }
        });
        Receiver {
            address,
            connections,
            requests,
        }
    }

    fn url(&self, path: &str) -> EndpointUrl {
        EndpointUrl::parse(&format!("http://{}{path}", self.address), true).unwrap()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The next request already read; the receiver reads a request before it answers,
    /// so once a post has its answer its request is here.
    fn take(&mut self) -> Received {
        self.requests
            .try_recv()
            .expect("the receiver read a request")
    }
}

async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Received> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buffer.len() > MAX_TEST_REQUEST_BYTES {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buffer[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Received {
        request_line,
        headers,
        body,
    })
}

fn response(status_line: &str, extra_headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status_line}\r\n{extra_headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn poster(allow_private: bool, timeout: Duration) -> Poster {
    Poster::new(PosterSettings {
        timeout,
        allow_private,
        user_agent: "quorum-hub-test/1".to_owned(),
    })
}

/// A generous bound: only a broken attempt comes near it.
const TEST_TIMEOUT: Duration = Duration::from_secs(10);

fn local_poster() -> Poster {
    poster(true, TEST_TIMEOUT)
}

const BODY: &[u8] = br#"{"type":"quorum.decision.made","data":{"decision":"deploy"}}"#;

fn webhook_headers() -> Vec<(&'static str, String)> {
    vec![
        ("webhook-id", "msg_1".to_owned()),
        ("webhook-timestamp", "1614265330".to_owned()),
        ("webhook-signature", "v1,abc= v1,def=".to_owned()),
    ]
}

async fn post(poster: &Poster, url: &EndpointUrl) -> Outcome {
    poster
        .post(url, &webhook_headers(), Bytes::from_static(BODY))
        .await
        .outcome
}

#[tokio::test]
async fn a_200_is_delivered_with_the_request_the_receiver_expects() {
    let mut receiver = Receiver::answering(response("200 OK", "", "ok")).await;
    let url = receiver.url("/hooks/quorum?tenant=a%20b");
    let attempt = local_poster()
        .post(&url, &webhook_headers(), Bytes::from_static(BODY))
        .await;
    assert_eq!(attempt.outcome, Outcome::Delivered { status: 200 });
    assert_eq!(attempt.outcome.label(), "delivered");
    assert_eq!(attempt.outcome.to_string(), "200");

    let received = receiver.take();
    assert_eq!(
        received.request_line,
        "POST /hooks/quorum?tenant=a%20b HTTP/1.1"
    );
    let host = receiver.address.to_string();
    let expected = [
        ("host", host.as_str()),
        ("content-type", "application/json"),
        ("user-agent", "quorum-hub-test/1"),
        ("content-length", &BODY.len().to_string()),
        ("connection", "close"),
        ("webhook-id", "msg_1"),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", "v1,abc= v1,def="),
    ];
    for (name, value) in expected {
        assert_eq!(received.header(name), vec![value], "header {name}");
    }
    assert_eq!(
        received.headers.len(),
        expected.len(),
        "no other headers: {:?}",
        received.headers
    );
    assert_eq!(received.body, BODY);
    assert_eq!(receiver.connections(), 1);
}

#[tokio::test]
async fn a_204_is_delivered() {
    let receiver =
        Receiver::answering("HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n".to_owned())
            .await;
    let outcome = post(&local_poster(), &receiver.url("/")).await;
    assert_eq!(outcome, Outcome::Delivered { status: 204 });
}

#[tokio::test]
async fn a_410_is_gone() {
    let receiver = Receiver::answering(response("410 Gone", "", "bye")).await;
    let outcome = post(&local_poster(), &receiver.url("/")).await;
    assert_eq!(outcome, Outcome::Gone);
    assert_eq!(outcome.label(), "gone");
    assert_eq!(outcome.to_string(), "410 gone");
}

#[tokio::test]
async fn a_redirect_fails_and_is_not_followed() {
    // Every answer redirects to another path of the same receiver.
    let mut receiver = Receiver::answering(response(
        "301 Moved Permanently",
        "location: /elsewhere\r\nretry-after: 5\r\n",
        "",
    ))
    .await;
    let poster = local_poster();
    let outcome = post(&poster, &receiver.url("/hook")).await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            status: 301,
            retry_after: None
        }
    );
    assert_eq!(outcome.label(), "failed");
    // A second post, then the receiver's log: had the first followed the redirect, its
    // request to /elsewhere would stand between the two.
    post(&poster, &receiver.url("/probe")).await;
    assert_eq!(receiver.take().request_line, "POST /hook HTTP/1.1");
    assert_eq!(receiver.take().request_line, "POST /probe HTTP/1.1");
    assert_eq!(receiver.connections(), 2);
}

#[tokio::test]
async fn a_503_with_retry_after_seconds_fails_with_that_wait() {
    let receiver = Receiver::answering(response(
        "503 Service Unavailable",
        "retry-after: 7\r\n",
        "",
    ))
    .await;
    let outcome = post(&local_poster(), &receiver.url("/")).await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            status: 503,
            retry_after: Some(Duration::from_secs(7))
        }
    );
    assert_eq!(outcome.to_string(), "503, retry after 7s");
}

#[tokio::test]
async fn a_429_with_an_http_date_fails_with_the_wait_until_then() {
    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
    let receiver = Receiver::answering(response(
        "429 Too Many Requests",
        &format!("retry-after: {at}\r\n"),
        "",
    ))
    .await;
    let outcome = post(&local_poster(), &receiver.url("/")).await;
    let Outcome::Failed {
        status: 429,
        retry_after: Some(wait),
    } = outcome
    else {
        panic!("expected a 429 with a wait, got {outcome:?}");
    };
    // The date has whole seconds and the clock moves on while the test runs.
    assert!(
        wait <= Duration::from_secs(120) && wait >= Duration::from_secs(60),
        "{wait:?}"
    );
}

#[tokio::test]
async fn a_400_fails_without_a_wait_even_with_retry_after() {
    let receiver =
        Receiver::answering(response("400 Bad Request", "retry-after: 7\r\n", "no")).await;
    let outcome = post(&local_poster(), &receiver.url("/")).await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            status: 400,
            retry_after: None
        }
    );
}

#[tokio::test]
async fn a_stalled_response_body_keeps_the_outcome_of_the_head() {
    // The receiver answers 200 with the start of a long body, then holds the connection
    // open: the head decided the outcome, and waiting for the body must not undo it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_request(&mut stream).await.unwrap();
        let head = "HTTP/1.1 200 OK\r\ncontent-length: 100000000\r\n\r\nstart of a body";
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut sink = [0u8; 1024];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    // Longer than the body wait, so the attempt's own deadline falls while the body stalls.
    let timeout = RESPONSE_BODY_WAIT * 3;
    let url = EndpointUrl::parse(&format!("http://{address}/"), true).unwrap();
    let outcome = post(&poster(true, timeout), &url).await;
    assert_eq!(outcome, Outcome::Delivered { status: 200 });
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out() {
    let receiver = Receiver::silent().await;
    let poster = poster(true, Duration::from_millis(300));
    let outcome = post(&poster, &receiver.url("/")).await;
    assert_eq!(
        outcome,
        Outcome::Error {
            reason: "timed out after 300ms".to_owned()
        }
    );
    assert_eq!(outcome.label(), "error");
    assert_eq!(receiver.connections(), 1);
}

#[tokio::test]
async fn a_closed_port_is_connection_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let url = EndpointUrl::parse(&format!("http://{address}/"), true).unwrap();
    let outcome = post(&local_poster(), &url).await;
    assert_eq!(
        outcome,
        Outcome::Error {
            reason: format!("connection refused by {address}")
        }
    );
}

#[tokio::test]
async fn a_response_that_is_not_http_is_an_error() {
    let receiver = Receiver::answering("SSH-2.0-OpenSSH_9.6\r\n\r\n".to_owned()).await;
    let outcome = post(&local_poster(), &receiver.url("/")).await;
    let Outcome::Error { reason } = &outcome else {
        panic!("expected an error, got {outcome:?}");
    };
    assert!(reason.starts_with("malformed response"), "{reason}");
}

/// Posts through an allowing poster to `/probe` and checks it is the receiver's first and
/// only connection and request: the refused attempt before it never connected.
async fn assert_never_reached(mut receiver: Receiver) {
    post(&local_poster(), &receiver.url("/probe")).await;
    assert_eq!(receiver.take().request_line, "POST /probe HTTP/1.1");
    assert_eq!(receiver.connections(), 1);
}

#[tokio::test]
async fn a_private_address_is_refused_without_connecting() {
    let receiver = Receiver::answering(response("200 OK", "", "")).await;
    let url = receiver.url("/hook");
    let outcome = post(&poster(false, TEST_TIMEOUT), &url).await;
    assert_eq!(
        outcome,
        Outcome::Error {
            reason: "address 127.0.0.1 is private (loopback); the hub refuses it unless \
                     started with --webhook-allow-private"
                .to_owned()
        }
    );
    assert_never_reached(receiver).await;
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_without_connecting() {
    let receiver = Receiver::answering(response("200 OK", "", "")).await;
    let url = EndpointUrl::parse(
        &format!("http://localhost:{}/hook", receiver.address.port()),
        false,
    )
    .unwrap();
    let outcome = post(&poster(false, TEST_TIMEOUT), &url).await;
    let Outcome::Error { reason } = &outcome else {
        panic!("expected an error, got {outcome:?}");
    };
    assert!(reason.starts_with("localhost resolves to "), "{reason}");
    assert!(
        reason.contains(", which is private (loopback); the hub refuses it unless started with --webhook-allow-private"),
        "{reason}"
    );
    assert_never_reached(receiver).await;
}

#[tokio::test]
async fn a_request_header_that_cannot_be_sent_is_an_error() {
    let receiver = Receiver::answering(response("200 OK", "", "")).await;
    let attempt = local_poster()
        .post(
            &receiver.url("/"),
            &[("webhook-id", "line\r\nbreak".to_owned())],
            Bytes::from_static(BODY),
        )
        .await;
    let Outcome::Error { reason } = &attempt.outcome else {
        panic!("expected an error, got {:?}", attempt.outcome);
    };
    assert!(reason.starts_with("cannot build the request"), "{reason}");
    assert_never_reached(receiver).await;
}

#[test]
fn retry_after_reads_seconds_and_dates_and_caps_both() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_eq!(retry_after("7", now), Some(Duration::from_secs(7)));
    assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
    assert_eq!(retry_after("86401", now), Some(MAX_RETRY_AFTER));
    assert_eq!(
        retry_after("99999999999999999999999", now),
        Some(MAX_RETRY_AFTER)
    );
    let in_a_minute = httpdate::fmt_http_date(now + Duration::from_secs(60));
    assert_eq!(
        retry_after(&in_a_minute, now),
        Some(Duration::from_secs(60))
    );
    let next_week = httpdate::fmt_http_date(now + Duration::from_secs(7 * 86400));
    assert_eq!(retry_after(&next_week, now), Some(MAX_RETRY_AFTER));
    let past = httpdate::fmt_http_date(now - Duration::from_secs(60));
    assert_eq!(retry_after(&past, now), Some(Duration::ZERO));
    for nonsense in ["", "-1", "1.5", "soon", "Wed, 99 Foo 2020"] {
        assert_eq!(retry_after(nonsense, now), None, "{nonsense:?}");
    }
}

#[test]
fn outcomes_print_for_the_attempt_log() {
    let failed = Outcome::Failed {
        status: 500,
        retry_after: None,
    };
    assert_eq!(failed.to_string(), "500");
    let waiting = Outcome::Failed {
        status: 429,
        retry_after: Some(Duration::from_millis(1500)),
    };
    assert_eq!(waiting.to_string(), "429, retry after 1500ms");
    let error = Outcome::Error {
        reason: "connection refused by 127.0.0.1:9".to_owned(),
    };
    assert_eq!(error.to_string(), "connection refused by 127.0.0.1:9");
    assert_eq!(Outcome::Delivered { status: 202 }.to_string(), "202");
}
