//! The WebSocket handshake (RFC 6455, over HTTP/1.1): checks an upgrade request, answers
//! `101 Switching Protocols`, and hands the session the connection's own TCP stream, so
//! that its events can be written into the socket below the WebSocket layer.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto::upgrade::downcast;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// A request to open a WebSocket, checked.
pub struct WebSocketRequest {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// A connection that switched to the WebSocket protocol.
pub struct Upgraded {
    /// The connection, as it was accepted.
    pub tcp: TcpStream,
    /// Bytes the client sent after its request, read with it: the start of the
    /// WebSocket's stream.
    pub read_buf: Vec<u8>,
}

/// Why a request to `/ws` is not a WebSocket handshake.
#[derive(Debug)]
pub struct NotAHandshake(StatusCode, &'static str);

impl IntoResponse for NotAHandshake {
    fn into_response(self) -> Response {
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketRequest {
    type Rejection = NotAHandshake;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, NotAHandshake> {
        let refuse = |status, why| Err(NotAHandshake(status, why));
        if parts.method != Method::GET {
            return refuse(StatusCode::METHOD_NOT_ALLOWED, "a WebSocket opens with GET");
        }
        if !has_token(&parts.headers, header::CONNECTION, "upgrade") {
            return refuse(
                StatusCode::BAD_REQUEST,
                "`Connection` must include `upgrade`",
            );
        }
        if !has_token(&parts.headers, header::UPGRADE, "websocket") {
            return refuse(StatusCode::BAD_REQUEST, "`Upgrade` must be `websocket`");
        }
        if parts.headers.get(header::SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13"))
        {
            return refuse(
                StatusCode::BAD_REQUEST,
                "`Sec-WebSocket-Version` must be 13",
            );
        }
        let Some(key) = parts.headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
            return refuse(StatusCode::BAD_REQUEST, "`Sec-WebSocket-Key` is missing");
        };
        let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            return refuse(
                StatusCode::UPGRADE_REQUIRED,
                "this connection cannot be upgraded",
            );
        };
        Ok(Self { key, on_upgrade })
    }
}

impl WebSocketRequest {
    /// Answers the handshake; once the connection has switched, `serve` runs with it.
    pub fn accept<F, Fut>(self, serve: F) -> Response
    where
        F: FnOnce(Upgraded) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let accept = derive_accept_key(self.key.as_bytes());
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(err) => {
                    tracing::debug!(%err, "WebSocket upgrade failed");
                    return;
                }
            };
            // The server serves TCP connections, so this is the stream it accepted.
            let Ok(parts) = downcast::<TokioIo<TcpStream>>(upgraded) else {
                tracing::error!("an upgraded connection is not a TCP stream; dropping it");
                return;
            };
            // Taken apart before the session runs: hyper's read buffer behind `read_buf`
            // (16 KiB) must not live as long as the session.
            let upgraded = Upgraded {
                tcp: parts.io.into_inner(),
                read_buf: parts.read_buf.to_vec(),
            };
            drop(parts.read_buf);
            serve(upgraded).await;
        });
        // The accept key is base64, always a valid header value; were it not, the
        // response would be a 500 rather than a switch without it.
        let headers = [
            (header::CONNECTION, "upgrade".to_owned()),
            (header::UPGRADE, "websocket".to_owned()),
            (header::SEC_WEBSOCKET_ACCEPT, accept),
        ];
        (StatusCode::SWITCHING_PROTOCOLS, headers).into_response()
    }
}

/// Whether a comma-separated header has `token` among its values (any case).
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|value| value.trim().eq_ignore_ascii_case(token))
}
