//! Who may reach a hub over HTTP: the token a request carries, its `Origin` and its
//! `Host`, and the one-line refusals that answer the rest.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::auth::Grant;
use crate::guards;
use crate::hub::Hub;
use crate::protocol::EventId;
use crate::session::{Resume, SessionSlot};

/// An HTTP refusal with a one-line reason.
pub(super) struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

pub(super) fn refuse(status: StatusCode, message: impl std::fmt::Display) -> Refusal {
    Refusal(status, message.to_string())
}

/// Checks the request's token, if the hub has a secret: what the caller may do, and when
/// its token expires (`None`: the hub has no secret, so nothing expires). Without a secret
/// anyone may act as any instance, and a caller on loopback may manage the hub too.
pub(super) fn authenticate(
    hub: &Hub,
    peer: IpAddr,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<(Grant, Option<u64>), Refusal> {
    let Some(authority) = &hub.authority else {
        let local = match peer {
            IpAddr::V4(ip) => ip.is_loopback(),
            IpAddr::V6(ip) => {
                ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|ip| ip.is_loopback())
            }
        };
        return Ok((if local { Grant::Local } else { Grant::Open }, None));
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    authority
        .check(bearer.or(query_token))
        .map(|verified| (verified.grant, Some(verified.expires_at_ms)))
        .map_err(|err| refuse(StatusCode::UNAUTHORIZED, err))
}

/// Refuses a browser request from an origin that is not allowed (cross-site WebSocket
/// hijacking, cross-site form posts). Requests without `Origin` are not from a page.
pub(super) fn check_origin(hub: &Hub, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if guards::origin_allowed(origin, host, &hub.config.allowed_origins) {
        Ok(())
    } else {
        Err(refuse(
            StatusCode::FORBIDDEN,
            format_args!("origin {origin} is not allowed; add it to --allowed-origins"),
        ))
    }
}

/// Without a secret, refuses a request whose `Host` this hub does not answer to, so a
/// page on a name that an attacker points at this machine (DNS rebinding) reaches nothing.
/// With a secret, the token is the guard.
pub(super) async fn guard_host(
    State(hub): State<Arc<Hub>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if hub.authority.is_none()
        && let Some(host) = request.headers().get(header::HOST)
    {
        let host = host.to_str().unwrap_or_default();
        if !guards::host_allowed(host, hub.config.listen, &hub.config.allowed_hosts) {
            return refuse(
                StatusCode::FORBIDDEN,
                format_args!(
                    "host {host:?} is not served without --auth-secret; add it to --allowed-hosts"
                ),
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// A client let in for a session (`/ws` or `/events`): what it may do, when its token
/// expires, and its place among `--max-sessions`.
pub(super) struct Admitted {
    pub grant: Grant,
    pub expires_at_ms: Option<u64>,
    pub slot: SessionSlot,
}

/// Lets a client in for a session, or answers why not: the hub is stopping (503), the
/// origin is not allowed (403), the token does not check out (401), or every place is
/// taken (503).
pub(super) fn admit_session(
    hub: &Hub,
    peer: IpAddr,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<Admitted, Refusal> {
    if hub.shutdown.is_cancelled() {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "hub is shutting down",
        ));
    }
    check_origin(hub, headers)?;
    let (grant, expires_at_ms) = authenticate(hub, peer, headers, query_token)?;
    let Some(slot) = hub.reserve_session() else {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format_args!(
                "this hub holds its maximum of {} sessions; try another hub or later",
                hub.config.max_sessions
            ),
        ));
    };
    Ok(Admitted {
        grant,
        expires_at_ms,
        slot,
    })
}

/// Where a session resumes from, given its cursor. A cursor that is not an event id still
/// opens the session: it is told so in a notice, then gets live events (a client stuck on a
/// bad id must not be locked out).
pub(super) fn resume_from(cursor: String) -> Resume {
    match cursor.parse::<EventId>() {
        Ok(id) => Resume::After(id),
        Err(_) => Resume::Malformed(cursor),
    }
}
