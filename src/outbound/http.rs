//! One webhook POST to a receiver: a single bounded HTTP/1.1 attempt (plain or TLS) to a
//! [`EndpointUrl`] whose answer becomes an [`Outcome`] the delivery engine acts on.
//!
//! The address rule ([`super::url`]) is applied to every address the host resolves to, at
//! connect time, so a name that resolves (or later re-resolves) to a loopback or private
//! address never reaches inside the hub's network. Redirects are never followed: a 3xx is a
//! failed attempt.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::header::{self, HeaderMap};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;

use super::url::{ALLOW_PRIVATE_FLAG, EndpointUrl, UrlError, refused_kind};

/// Most response-body bytes read (and discarded) after a response head, so a receiver that
/// answers with a large or endless body costs the hub nothing more.
pub const MAX_DRAINED_BODY_BYTES: usize = 4 * 1024;
/// Longest wait for that much of the response body once the head has arrived; the outcome is
/// already known, so this only lets a receiver finish writing before the connection closes.
pub const RESPONSE_BODY_WAIT: Duration = Duration::from_secs(1);
/// Longest `Retry-After` honoured: a receiver asking for more is retried after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// How a [`Poster`] behaves.
#[derive(Debug, Clone)]
pub struct PosterSettings {
    /// Bounds a whole attempt: resolving, connecting, TLS, the request and the response head.
    pub timeout: Duration,
    /// Lets attempts connect to the addresses the rule in [`super::url`] refuses
    /// (`--webhook-allow-private`).
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
    /// True when a push service says the subscription is no more: 404 or 410.
    pub fn ends_subscription(&self) -> bool {
        matches!(self, Outcome::Gone | Outcome::Failed { status: 404, .. })
    }

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
    pub async fn post(
        &self,
        url: &EndpointUrl,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Attempt {
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
        url: &EndpointUrl,
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
        url: &EndpointUrl,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, String> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(url.target.clone())
            .header(header::HOST, url.authority.as_str())
            .header(header::USER_AGENT, self.settings.user_agent.as_str())
            .header(header::CONTENT_LENGTH, body.len())
            .header(header::CONNECTION, "close");
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        request
            .body(Full::new(body))
            .map_err(|err| format!("cannot build the request: {err}"))
    }

    /// Resolves the host and connects to the first address that is allowed and answers.
    async fn connect(&self, url: &EndpointUrl) -> Result<TcpStream, String> {
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
mod tests;
