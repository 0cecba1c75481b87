//! One webhook POST to a receiver: the receiver's URL checked at the edge, the addresses a
//! hub may connect to, and a single bounded HTTP/1.1 attempt (plain or TLS) whose answer
//! becomes an [`Outcome`] the delivery engine acts on.
//!
//! The address rule is applied to every address the host resolves to, at connect time, so a
//! name that resolves (or later re-resolves) to a loopback or private address never reaches
//! inside the hub's network. Redirects are never followed: a 3xx is a failed attempt.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::header::{self, HeaderMap};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;

/// Longest webhook URL accepted, in bytes, as given and as normalised.
pub const MAX_URL_BYTES: usize = 2048;
/// Most response-body bytes read (and discarded) after a response head, so a receiver that
/// answers with a large or endless body costs the hub nothing more.
pub const MAX_DRAINED_BODY_BYTES: usize = 4 * 1024;
/// Longest wait for that much of the response body once the head has arrived; the outcome is
/// already known, so this only lets a receiver finish writing before the connection closes.
pub const RESPONSE_BODY_WAIT: Duration = Duration::from_secs(1);
/// Longest `Retry-After` honoured: a receiver asking for more is retried after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);
/// The command-line flag that lets webhooks reach non-public addresses, named in refusals.
pub const ALLOW_PRIVATE_FLAG: &str = "--webhook-allow-private";

/// Why a webhook URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("webhook URL is {bytes} bytes; at most {MAX_URL_BYTES} are accepted")]
    TooLong { bytes: usize },
    #[error("webhook URL must start with http:// or https://")]
    Scheme,
    #[error("webhook URL is not a valid URL: {0}")]
    Malformed(String),
    #[error("webhook URL has no host; give one, as in https://example.com/hooks")]
    NoHost,
    #[error("webhook URL has port 0; give the port the receiver listens on, or none")]
    PortZero,
    #[error(
        "webhook URL must not carry a user name or password (user:pass@); receivers authenticate the hub by the webhook signature"
    )]
    UserInfo,
    #[error(
        "address {ip} is private ({kind}); the hub refuses it unless started with {ALLOW_PRIVATE_FLAG}"
    )]
    Private { ip: IpAddr, kind: &'static str },
}

/// A receiver's URL, checked: `http` or `https`, a host, no user info, a bounded length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    url: url::Url,
    https: bool,
    /// The host to resolve and to name in TLS: a domain, or an IP address without brackets.
    host: String,
    port: u16,
    /// The `Host` header: the host as written in a URL, with the port unless it is the default.
    authority: String,
    /// The request target: path and query.
    target: Uri,
}

impl WebhookUrl {
    /// Checks a receiver's URL. An IP-literal host in a refused range is refused here unless
    /// `allow_private`; a name is judged by what it resolves to, at each attempt.
    pub fn parse(text: &str, allow_private: bool) -> Result<WebhookUrl, UrlError> {
        let text = text.trim();
        if text.len() > MAX_URL_BYTES {
            return Err(UrlError::TooLong { bytes: text.len() });
        }
        let https = starts_with_ignoring_case(text, "https://");
        if !https && !starts_with_ignoring_case(text, "http://") {
            return Err(UrlError::Scheme);
        }
        let url = url::Url::parse(text).map_err(|err| match err {
            url::ParseError::EmptyHost => UrlError::NoHost,
            other => UrlError::Malformed(other.to_string()),
        })?;
        if url.as_str().len() > MAX_URL_BYTES {
            return Err(UrlError::TooLong {
                bytes: url.as_str().len(),
            });
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::UserInfo);
        }
        let (host, ip) = match url.host() {
            None | Some(url::Host::Domain("")) => return Err(UrlError::NoHost),
            Some(url::Host::Domain(domain)) => (domain.to_owned(), None),
            Some(url::Host::Ipv4(ip)) => (ip.to_string(), Some(IpAddr::V4(ip))),
            Some(url::Host::Ipv6(ip)) => (ip.to_string(), Some(IpAddr::V6(ip))),
        };
        if let Some(ip) = ip
            && !allow_private
            && let Some(kind) = refused_kind(ip)
        {
            return Err(UrlError::Private { ip, kind });
        }
        let port = url
            .port_or_known_default()
            .unwrap_or(if https { 443 } else { 80 });
        if port == 0 {
            return Err(UrlError::PortZero);
        }
        let written_host = url.host_str().unwrap_or(&host);
        let authority = match url.port() {
            Some(port) => format!("{written_host}:{port}"),
            None => written_host.to_owned(),
        };
        let target = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        let target = target.parse::<Uri>().map_err(|err| {
            UrlError::Malformed(format!("its path or query cannot be sent: {err}"))
        })?;
        Ok(WebhookUrl {
            url,
            https,
            host,
            port,
            authority,
            target,
        })
    }

    /// The URL as normalised (what an operator sees in a listing).
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// The host to resolve: a domain, or an IP address without brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port connected to (the scheme's default when the URL names none).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// True for `https`.
    pub fn is_https(&self) -> bool {
        self.https
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn starts_with_ignoring_case(text: &str, prefix: &str) -> bool {
    text.len() >= prefix.len()
        && text.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// True when a webhook may connect to `ip`: false for loopback, private (RFC 1918, IPv6
/// unique local), link-local, unspecified and "this network", broadcast, multicast, shared
/// address space (100.64.0.0/10) and reserved (240.0.0.0/4) addresses. An IPv4 address
/// inside IPv6 (IPv4-mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`) is judged as itself.
/// Documentation ranges are allowed: nothing answers there.
pub fn address_allowed(ip: IpAddr) -> bool {
    refused_kind(ip).is_none()
}

/// Which refused range `ip` lies in, named for a person, or `None` when it is allowed.
fn refused_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => refused_kind_v4(ip),
        IpAddr::V6(ip) => {
            if let Some(v4) = ip.to_ipv4_mapped() {
                return refused_kind_v4(v4);
            }
            let segments = ip.segments();
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let embedded = (u32::from(segments[6]) << 16) | u32::from(segments[7]);
                return refused_kind_v4(Ipv4Addr::from(embedded));
            }
            if ip.is_loopback() {
                Some("loopback")
            } else if ip.is_unspecified() {
                Some("unspecified")
            } else if ip.is_multicast() {
                Some("multicast")
            } else if segments[0] & 0xfe00 == 0xfc00 {
                Some("unique local")
            } else if segments[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if segments[0] & 0xffc0 == 0xfec0 {
                Some("site-local")
            } else {
                None
            }
        }
    }
}

fn refused_kind_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [first, second, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("RFC 1918")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if first == 0 {
        Some("this network")
    } else if ip.is_broadcast() {
        Some("broadcast")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if first == 100 && second & 0xc0 == 64 {
        Some("shared address space")
    } else if first >= 240 {
        Some("reserved")
    } else {
        None
    }
}

/// How a [`Poster`] behaves.
#[derive(Debug, Clone)]
pub struct PosterSettings {
    /// Bounds a whole attempt: resolving, connecting, TLS, the request and the response head.
    pub timeout: Duration,
    /// Lets attempts connect to addresses [`address_allowed`] refuses (`--webhook-allow-private`).
    pub allow_private: bool,
    /// The `user-agent` header of every request.
    pub user_agent: String,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered 2xx.
    Delivered { status: u16 },
    /// The receiver answered 410: it asks for its endpoint to be disabled.
    Gone,
    /// The receiver answered 3xx (never followed), 4xx or 5xx. `retry_after` is its
    /// `Retry-After` on a 429 or 5xx, capped at [`MAX_RETRY_AFTER`].
    Failed {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// No answer: a refused address, a failed lookup, connect or TLS handshake, a timeout, or a
    /// response that is not HTTP.
    Error { reason: String },
}

impl Outcome {
    /// The outcome's name for a metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered { .. } => "delivered",
            Outcome::Gone => "gone",
            Outcome::Failed { .. } => "failed",
            Outcome::Error { .. } => "error",
        }
    }
}

/// A short line for the attempt log: `204`, `410 gone`, `503, retry after 7s`, or the reason.
impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Delivered { status } => write!(f, "{status}"),
            Outcome::Gone => f.write_str("410 gone"),
            Outcome::Failed {
                status,
                retry_after: None,
            } => write!(f, "{status}"),
            Outcome::Failed {
                status,
                retry_after: Some(after),
            } => write!(f, "{status}, retry after {}", Span(*after)),
            Outcome::Error { reason } => f.write_str(reason),
        }
    }
}

/// One attempt: what came of it and how long it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub outcome: Outcome,
    pub duration: Duration,
}

/// Sends webhook requests, one connection per attempt.
pub struct Poster {
    settings: PosterSettings,
    tls: TlsConnector,
}

impl Poster {
    /// A poster trusting the web's public certificate authorities (webpki-roots).
    pub fn new(settings: PosterSettings) -> Poster {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        Poster::trusting(settings, roots)
    }

    /// A poster trusting exactly `roots` for https.
    fn trusting(settings: PosterSettings, roots: rustls::RootCertStore) -> Poster {
        let mut config = rustls::ClientConfig::builder_with_provider(tls_provider())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports TLS 1.2 and 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Poster {
            settings,
            tls: TlsConnector::from(Arc::new(config)),
        }
    }

    /// POSTs `body` as JSON to `url` with `headers` added (the webhook's id, timestamp and
    /// signature), once, within the settings' timeout.
    pub async fn post(&self, url: &WebhookUrl, headers: &[(&str, String)], body: Bytes) -> Attempt {
        let started = Instant::now();
        let outcome = self
            .attempt(url, headers, body, started + self.settings.timeout)
            .await;
        Attempt {
            outcome,
            duration: started.elapsed(),
        }
    }

    async fn attempt(
        &self,
        url: &WebhookUrl,
        headers: &[(&str, String)],
        body: Bytes,
        deadline: Instant,
    ) -> Outcome {
        let request = match self.request(url, headers, body) {
            Ok(request) => request,
            Err(reason) => return Outcome::Error { reason },
        };
        let stream = match timeout_at(deadline, self.connect(url)).await {
            Err(_) => return self.timed_out(),
            Ok(Err(reason)) => return Outcome::Error { reason },
            Ok(Ok(stream)) => stream,
        };
        if !url.https {
            return self.exchange(stream, request, deadline).await;
        }
        let Ok(name) = ServerName::try_from(url.host.clone()) else {
            return Outcome::Error {
                reason: format!("{} is not a name TLS can verify", url.host),
            };
        };
        match timeout_at(deadline, self.tls.connect(name, stream)).await {
            Err(_) => self.timed_out(),
            Ok(Err(err)) => Outcome::Error {
                reason: format!("TLS handshake with {} failed: {err}", url.host),
            },
            Ok(Ok(stream)) => self.exchange(stream, request, deadline).await,
        }
    }

    fn request(
        &self,
        url: &WebhookUrl,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, String> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(url.target.clone())
            .header(header::HOST, url.authority.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, self.settings.user_agent.as_str())
            .header(header::CONTENT_LENGTH, body.len())
            .header(header::CONNECTION, "close");
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        request
            .body(Full::new(body))
            .map_err(|err| format!("cannot build the request: {err}"))
    }

    /// Resolves the host and connects to the first address that is allowed and answers.
    async fn connect(&self, url: &WebhookUrl) -> Result<TcpStream, String> {
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((url.host.as_str(), url.port))
            .await
            .map_err(|err| format!("cannot resolve {}: {err}", url.host))?
            .collect();
        let mut refused = None;
        let mut failed = None;
        for address in addresses {
            if !self.settings.allow_private
                && let Some(kind) = refused_kind(address.ip())
            {
                refused.get_or_insert((address.ip(), kind));
                continue;
            }
            match TcpStream::connect(address).await {
                Ok(stream) => {
                    // One small request, then the answer: don't hold the body back.
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
                    failed = Some(format!("connection refused by {address}"));
                }
                Err(err) => failed = Some(format!("cannot connect to {address}: {err}")),
            }
        }
        Err(match (failed, refused) {
            (Some(failed), _) => failed,
            (None, Some((ip, kind))) if url.host == ip.to_string() => {
                UrlError::Private { ip, kind }.to_string()
            }
            (None, Some((ip, kind))) => format!(
                "{} resolves to {ip}, which is private ({kind}); the hub refuses it unless \
                 started with {ALLOW_PRIVATE_FLAG}",
                url.host
            ),
            (None, None) => format!("{} resolves to no address", url.host),
        })
    }

    /// Sends the request over a connected stream and reads the response head, then up to
    /// [`MAX_DRAINED_BODY_BYTES`] of the body.
    async fn exchange<S>(
        &self,
        stream: S,
        request: Request<Full<Bytes>>,
        deadline: Instant,
    ) -> Outcome
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) = match http1::handshake(TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(err) => {
                return Outcome::Error {
                    reason: format!("cannot start HTTP: {err}"),
                };
            }
        };
        // The connection is driven here, not in a task of its own, so that nothing of the
        // attempt outlives it.
        let connection = futures::FutureExt::fuse(connection);
        let mut connection = std::pin::pin!(connection);
        let head = async {
            let sent = sender.send_request(request);
            let mut sent = std::pin::pin!(sent);
            tokio::select! {
                biased;
                response = &mut sent => response,
                _ = &mut connection => sent.await,
            }
        };
        let response = match timeout_at(deadline, head).await {
            Err(_) => return self.timed_out(),
            Ok(Err(err)) => {
                return Outcome::Error {
                    reason: describe_http_error(&err),
                };
            }
            Ok(Ok(response)) => response,
        };
        let outcome = classify(response.status(), response.headers(), SystemTime::now());
        let drained = drain(response.into_body());
        let mut drained = std::pin::pin!(drained);
        let body_deadline = deadline.min(Instant::now() + RESPONSE_BODY_WAIT);
        let _ = timeout_at(body_deadline, async {
            tokio::select! {
                _ = &mut drained => {}
                _ = &mut connection => drained.await,
            }
        })
        .await;
        outcome
    }

    fn timed_out(&self) -> Outcome {
        Outcome::Error {
            reason: format!("timed out after {}", Span(self.settings.timeout)),
        }
    }
}

/// The TLS primitives: ring's. ring builds with a C compiler alone (aws-lc-rs needs cmake);
/// rustls marks its provider deprecated because it offers no post-quantum key exchange, which
/// a webhook (a signed notification, public once received) does not need.
fn tls_provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and discards up to [`MAX_DRAINED_BODY_BYTES`] of a response body.
async fn drain(mut body: Incoming) {
    let mut taken = 0;
    while taken < MAX_DRAINED_BODY_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => taken += frame.data_ref().map_or(0, Bytes::len),
            Some(Err(_)) | None => break,
        }
    }
}

fn describe_http_error(err: &hyper::Error) -> String {
    if err.is_incomplete_message() {
        "connection closed before a complete response".to_owned()
    } else if err.is_parse() || err.is_parse_status() {
        format!("malformed response: {err}")
    } else {
        format!("HTTP error: {err}")
    }
}

/// The outcome a response head means.
fn classify(status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Outcome {
    if status.is_success() {
        return Outcome::Delivered {
            status: status.as_u16(),
        };
    }
    if status == StatusCode::GONE {
        return Outcome::Gone;
    }
    let retry_after = if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        headers
            .get(header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| retry_after(value, now))
    } else {
        None
    };
    Outcome::Failed {
        status: status.as_u16(),
        retry_after,
    }
}

/// A `Retry-After` value (delta-seconds or an HTTP-date) as a wait from `now`, capped at
/// [`MAX_RETRY_AFTER`]; a date already past is no wait. `None` when it is neither form.
fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Digits too many for a u64 are a wait longer than the cap.
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// A duration as a person reads it in a log: `15s`, `300ms`.
struct Span(Duration);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.subsec_millis() == 0 && self.0.as_secs() > 0 {
            write!(f, "{}s", self.0.as_secs())
        } else {
            write!(f, "{}ms", self.0.as_millis())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    use super::*;

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

        fn url(&self, path: &str) -> WebhookUrl {
            WebhookUrl::parse(&format!("http://{}{path}", self.address), true).unwrap()
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

    async fn post(poster: &Poster, url: &WebhookUrl) -> Outcome {
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
        let url = WebhookUrl::parse(&format!("http://{address}/"), true).unwrap();
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
        let url = WebhookUrl::parse(&format!("http://{address}/"), true).unwrap();
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

    #[tokio::test]
    async fn https_to_a_plain_http_receiver_is_a_tls_error() {
        // The receiver reads the ClientHello as far as it can and answers in plain HTTP.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut hello = [0u8; 512];
            let _ = stream.read(&mut hello).await;
            let _ = stream
                .write_all(response("400 Bad Request", "", "plain http").as_bytes())
                .await;
            let _ = stream.shutdown().await;
        });
        let url = WebhookUrl::parse(&format!("https://{address}/"), true).unwrap();
        assert!(url.is_https());
        let outcome = post(&local_poster(), &url).await;
        let Outcome::Error { reason } = &outcome else {
            panic!("expected an error, got {outcome:?}");
        };
        assert!(
            reason.starts_with("TLS handshake with 127.0.0.1 failed"),
            "{reason}"
        );
    }

    /// A certificate authority made for these tests, and a certificate it issued for
    /// 127.0.0.1 with that certificate's key, valid from 2020 to 2120. They protect nothing.
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBfTCCASOgAwIBAgIBATAKBggqhkjOPQQDAjAlMSMwIQYDVQQDDBpxdW9ydW0t
aHViIHdlYmhvb2sgdGVzdCBDQTAgFw0yMDAxMDEwMDAwMDBaGA8yMTIwMDEwMTAw
MDAwMFowJTEjMCEGA1UEAwwacXVvcnVtLWh1YiB3ZWJob29rIHRlc3QgQ0EwWTAT
BgcqhkjOPQIBBggqhkjOPQMBBwNCAASqjhHYBp95UPGnVbj0/K1WBKb+YztDIV5z
eTa/V5n8oIR3JNthLSzbPbxIzUs4N/4QRNk1iQ8sXNtzdi4zri/Vo0IwQDAPBgNV
HRMBAf8EBTADAQH/MA4GA1UdDwEB/wQEAwICBDAdBgNVHQ4EFgQU/D0iQSQxA5mR
Yby5vXEyDq0xJP8wCgYIKoZIzj0EAwIDSAAwRQIhAMOKgqTyFOsX4kwOkAeHPuP6
ygH/IhY0RO24GPrxBv2UAiAmHPjRrWVvwzT8swoAaYwsAJwoOKj+XRjlyVRk3TjO
Rw==
-----END CERTIFICATE-----
";
    const TEST_LEAF: &str = "-----BEGIN CERTIFICATE-----
MIIBrjCCAVWgAwIBAgIBAjAKBggqhkjOPQQDAjAlMSMwIQYDVQQDDBpxdW9ydW0t
aHViIHdlYmhvb2sgdGVzdCBDQTAgFw0yMDAxMDEwMDAwMDBaGA8yMTIwMDEwMTAw
MDAwMFowFDESMBAGA1UEAwwJMTI3LjAuMC4xMFkwEwYHKoZIzj0CAQYIKoZIzj0D
AQcDQgAEf58r/N+Futh6kvknscyC/3y5QScekHLR0ZU5lSC3j7Yz2iV/teGnrjdK
wvWljPYqf9eLWEnpbjvcWX8AS3pOkKOBhDCBgTAJBgNVHRMEAjAAMA8GA1UdEQQI
MAaHBH8AAAEwEwYDVR0lBAwwCgYIKwYBBQUHAwEwDgYDVR0PAQH/BAQDAgeAMB8G
A1UdIwQYMBaAFPw9IkEkMQOZkWG8ub1xMg6tMST/MB0GA1UdDgQWBBTd241ShDrX
ojDjKxQDTmqCL7LHVzAKBggqhkjOPQQDAgNHADBEAiAc+juAH3InB+gUobvpdksX
uMxrtRJgPwB0UgUF3RfPJAIgBqkXQbzElnkmA7A1JuE/ungmi3mHe1eR0xHwgaDL
/+Q=
-----END CERTIFICATE-----
";
    const TEST_LEAF_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgeOc87ynYufK9Pt/R
dfwWMkHL4EcBBACwEiTDpdCrJqGhRANCAAR/nyv834W62HqS+SexzIL/fLlBJx6Q
ctHRlTmVILePtjPaJX+14aeuN0rC9aWM9ip/14tYSeluO9xZfwBLek6Q
-----END PRIVATE KEY-----
";

    /// An https receiver on 127.0.0.1 presenting [`TEST_LEAF`]: it hands each request it
    /// reads to the test and answers 200.
    async fn tls_receiver() -> (SocketAddr, mpsc::UnboundedReceiver<Received>) {
        use tokio_rustls::rustls::pki_types::pem::PemObject as _;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certificate = CertificateDer::from_pem_slice(TEST_LEAF.as_bytes()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(TEST_LEAF_KEY.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(tls_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![certificate], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (requests_in, requests) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let requests_in = requests_in.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate ends the handshake here.
                    let Ok(mut stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    if let Some(received) = read_request(&mut stream).await {
                        let _ = requests_in.send(received);
                        let answer = response("200 OK", "", "ok");
                        let _ = stream.write_all(answer.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    }
                });
            }
        });
        (address, requests)
    }

    #[tokio::test]
    async fn https_is_delivered_to_a_receiver_whose_certificate_is_trusted() {
        use tokio_rustls::rustls::pki_types::CertificateDer;
        use tokio_rustls::rustls::pki_types::pem::PemObject as _;
        let (address, mut requests) = tls_receiver().await;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(TEST_CA.as_bytes()).unwrap())
            .unwrap();
        let poster = Poster::trusting(
            PosterSettings {
                timeout: TEST_TIMEOUT,
                allow_private: true,
                user_agent: "quorum-hub-test/1".to_owned(),
            },
            roots,
        );
        let url = WebhookUrl::parse(&format!("https://{address}/hooks"), true).unwrap();
        let outcome = post(&poster, &url).await;
        assert_eq!(outcome, Outcome::Delivered { status: 200 });
        let received = requests.try_recv().expect("the receiver read a request");
        assert_eq!(received.request_line, "POST /hooks HTTP/1.1");
        assert_eq!(received.header("host"), vec![address.to_string()]);
        assert_eq!(received.header("webhook-id"), vec!["msg_1"]);
        assert_eq!(received.body, BODY);
    }

    #[tokio::test]
    async fn https_refuses_a_certificate_no_public_authority_issued() {
        let (address, mut requests) = tls_receiver().await;
        let url = WebhookUrl::parse(&format!("https://{address}/hooks"), true).unwrap();
        let outcome = post(&local_poster(), &url).await;
        let Outcome::Error { reason } = &outcome else {
            panic!("expected an error, got {outcome:?}");
        };
        assert!(
            reason.starts_with("TLS handshake with 127.0.0.1 failed: invalid peer certificate"),
            "{reason}"
        );
        assert!(requests.try_recv().is_err(), "no request was sent");
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
        let url = WebhookUrl::parse(
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
    fn parse_keeps_what_the_request_needs() {
        let url = WebhookUrl::parse("https://Example.COM/a/b?c=1&d=%2F#frag", false).unwrap();
        assert!(url.is_https());
        assert_eq!(url.host(), "example.com");
        assert_eq!(url.port(), 443);
        assert_eq!(url.authority, "example.com");
        assert_eq!(url.target, "/a/b?c=1&d=%2F");
        assert_eq!(url.as_str(), "https://example.com/a/b?c=1&d=%2F#frag");

        let url = WebhookUrl::parse("HTTP://hooks.example.com:8080", false).unwrap();
        assert!(!url.is_https());
        assert_eq!(url.port(), 8080);
        assert_eq!(url.authority, "hooks.example.com:8080");
        assert_eq!(url.target, "/");

        let url = WebhookUrl::parse("http://example.com:80/x", false).unwrap();
        assert_eq!((url.port(), url.authority.as_str()), (80, "example.com"));

        let url = WebhookUrl::parse("http://[::1]:9000/x", true).unwrap();
        assert_eq!(url.host(), "::1");
        assert_eq!(url.authority, "[::1]:9000");

        let url = WebhookUrl::parse("https://8.8.8.8/x", false).unwrap();
        assert_eq!((url.host(), url.port()), ("8.8.8.8", 443));
    }

    #[test]
    fn parse_refuses_with_a_reason_a_person_can_act_on() {
        let cases: &[(&str, UrlError, &str)] = &[
            (
                "ftp://example.com/",
                UrlError::Scheme,
                "webhook URL must start with http:// or https://",
            ),
            (
                "example.com/hook",
                UrlError::Scheme,
                "webhook URL must start with http:// or https://",
            ),
            (
                "",
                UrlError::Scheme,
                "webhook URL must start with http:// or https://",
            ),
            (
                "http://:8080/hook",
                UrlError::NoHost,
                "webhook URL has no host; give one, as in https://example.com/hooks",
            ),
            (
                "https://user:pass@example.com/",
                UrlError::UserInfo,
                "webhook URL must not carry a user name or password (user:pass@); receivers authenticate the hub by the webhook signature",
            ),
            (
                "https://user@example.com/",
                UrlError::UserInfo,
                "webhook URL must not carry a user name or password (user:pass@); receivers authenticate the hub by the webhook signature",
            ),
            (
                "http://example.com:0/",
                UrlError::PortZero,
                "webhook URL has port 0; give the port the receiver listens on, or none",
            ),
            (
                "http://10.0.0.1/hook",
                UrlError::Private {
                    ip: "10.0.0.1".parse().unwrap(),
                    kind: "RFC 1918",
                },
                "address 10.0.0.1 is private (RFC 1918); the hub refuses it unless started with --webhook-allow-private",
            ),
            (
                "http://[::ffff:127.0.0.1]/",
                UrlError::Private {
                    ip: "::ffff:127.0.0.1".parse().unwrap(),
                    kind: "loopback",
                },
                "address ::ffff:127.0.0.1 is private (loopback); the hub refuses it unless started with --webhook-allow-private",
            ),
            (
                // The URL parser reads this as 127.0.0.1.
                "http://0x7f.1/",
                UrlError::Private {
                    ip: "127.0.0.1".parse().unwrap(),
                    kind: "loopback",
                },
                "address 127.0.0.1 is private (loopback); the hub refuses it unless started with --webhook-allow-private",
            ),
        ];
        for (text, error, message) in cases {
            let refused = WebhookUrl::parse(text, false).unwrap_err();
            assert_eq!(&refused, error, "{text}");
            assert_eq!(refused.to_string(), *message, "{text}");
        }
        assert!(matches!(
            WebhookUrl::parse("http://exa mple.com/", false),
            Err(UrlError::Malformed(_))
        ));
        assert!(WebhookUrl::parse("http://10.0.0.1/hook", true).is_ok());
    }

    #[test]
    fn parse_bounds_the_length() {
        let at_limit = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES - 20));
        assert_eq!(at_limit.len(), MAX_URL_BYTES);
        assert!(WebhookUrl::parse(&at_limit, false).is_ok());
        let over = format!("{at_limit}a");
        assert_eq!(
            WebhookUrl::parse(&over, false),
            Err(UrlError::TooLong {
                bytes: MAX_URL_BYTES + 1
            })
        );
        assert_eq!(
            UrlError::TooLong { bytes: 3000 }.to_string(),
            "webhook URL is 3000 bytes; at most 2048 are accepted"
        );
        // Within the limit as given, over it once the parser has percent-encoded it.
        let expands = format!("https://example.com/{}", " ".repeat(1000));
        assert!(matches!(
            WebhookUrl::parse(&format!("{expands}x"), false),
            Err(UrlError::TooLong { .. })
        ));
    }

    fn kind(ip: &str) -> Option<&'static str> {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(address_allowed(ip), refused_kind(ip).is_none());
        refused_kind(ip)
    }

    #[test]
    fn ipv4_ranges() {
        let cases = [
            ("127.0.0.1", Some("loopback")),
            ("127.255.255.254", Some("loopback")),
            ("10.0.0.1", Some("RFC 1918")),
            ("10.255.255.255", Some("RFC 1918")),
            ("172.16.0.1", Some("RFC 1918")),
            ("172.31.255.255", Some("RFC 1918")),
            ("172.15.255.255", None),
            ("172.32.0.0", None),
            ("192.168.1.1", Some("RFC 1918")),
            ("192.169.0.1", None),
            ("169.254.169.254", Some("link-local")),
            ("0.0.0.0", Some("this network")),
            ("0.1.2.3", Some("this network")),
            ("255.255.255.255", Some("broadcast")),
            ("224.0.0.1", Some("multicast")),
            ("239.255.255.250", Some("multicast")),
            ("100.64.0.1", Some("shared address space")),
            ("100.127.255.255", Some("shared address space")),
            ("100.63.255.255", None),
            ("100.128.0.0", None),
            ("240.0.0.1", Some("reserved")),
            ("192.0.2.1", None),
            ("198.51.100.7", None),
            ("203.0.113.9", None),
            ("8.8.8.8", None),
            ("1.1.1.1", None),
        ];
        for (ip, expected) in cases {
            assert_eq!(kind(ip), expected, "{ip}");
        }
    }

    #[test]
    fn ipv6_ranges() {
        let cases = [
            ("::1", Some("loopback")),
            ("::", Some("unspecified")),
            ("fc00::1", Some("unique local")),
            ("fd12:3456:789a::1", Some("unique local")),
            ("fe80::1", Some("link-local")),
            ("febf::1", Some("link-local")),
            ("fec0::1", Some("site-local")),
            ("ff02::1", Some("multicast")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:10.1.2.3", Some("RFC 1918")),
            ("::ffff:169.254.169.254", Some("link-local")),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::10.0.0.1", Some("RFC 1918")),
            ("64:ff9b::8.8.8.8", None),
            ("2001:db8::1", None),
            ("2606:4700:4700::1111", None),
        ];
        for (ip, expected) in cases {
            assert_eq!(kind(ip), expected, "{ip}");
        }
        assert!(!address_allowed(IpAddr::V6(Ipv6Addr::LOCALHOST)));
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
}
