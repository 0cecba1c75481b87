//! `GET /events`: decision events as Server-Sent Events, for clients that hold no
//! WebSocket (`curl -N`, a browser's `EventSource`). The same rules as `/ws`: the token
//! (`Authorization` or `?token=`), the origin and `Host` checks, a place among
//! `--max-sessions`, the session's queue bounds; the same resume (`Last-Event-ID` or
//! `?lastEventId=`) and subscriptions (`?events=`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::gate::{Admitted, admit_session, refuse, resume_from};
use crate::auth;
use crate::hub::Hub;
use crate::methods;
use crate::protocol::event;
use crate::session::sse::{SseSettings, event_stream};
use crate::session::{self, SessionHandle};

/// How often an idle stream carries a heartbeat comment, so idle proxies keep it open.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);
/// Most event patterns one stream asks for.
const MAX_PATTERNS: usize = 16;

/// Query parameters of `GET /events`.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct EventsQuery {
    /// Resume after this decision event (the `Last-Event-ID` header wins when both come).
    last_event_id: Option<String>,
    /// A token, for browsers (`EventSource` sets no headers).
    token: Option<String>,
    /// Event patterns beyond the decisions every stream gets, comma-separated.
    events: Option<String>,
}

/// Opens a stream, or says why not.
pub(super) async fn events(
    State(hub): State<Arc<Hub>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> Response {
    let Admitted {
        grant,
        expires_at_ms,
        slot,
    } = match admit_session(&hub, peer.ip(), &headers, query.token.as_deref()) {
        Ok(admitted) => admitted,
        Err(refused) => return refused.into_response(),
    };
    let patterns = match patterns(query.events.as_deref()) {
        Ok(patterns) => patterns,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, message).into_response(),
    };
    let cursor = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .or(query.last_event_id);
    let resume = cursor.map(resume_from);
    let (session, outbound) = hub.open_session(slot, grant, expires_at_ms, resume.is_some(), None);
    if !patterns.is_empty() {
        hub.subscribe(&session, patterns);
        // As system.subscribe does: the stream starts once dashboard events flow here.
        hub.dashboards_flowing(methods::SUBSCRIBE_WAIT).await;
    }
    if let Some(from) = resume {
        let (store, session) = (hub.store.clone(), session.clone());
        hub.tracker
            .spawn(async move { session::resume(&store, &session, from).await });
    }
    let stream = event_stream(
        session.clone(),
        outbound,
        SseSettings {
            heartbeat: HEARTBEAT_INTERVAL,
            stop: hub.shutdown.clone(),
            deadline: expires_at_ms.map(auth::session_deadline),
        },
    );
    // The session closes (its place and subscriptions given back) when the body is
    // dropped: the stream ended, or the client went away.
    let open = Opened {
        hub: hub.clone(),
        session: Some(session),
    };
    let body = stream.map(move |chunk| {
        let _ = &open;
        chunk
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            // Proxies that buffer responses (nginx) pass this one on as it comes.
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// The patterns of `?events=`, checked as `system.subscribe` checks its own.
fn patterns(events: Option<&str>) -> Result<Vec<String>, String> {
    let Some(events) = events.filter(|e| !e.is_empty()) else {
        return Ok(Vec::new());
    };
    let patterns: Vec<String> = events.split(',').map(|p| p.trim().to_owned()).collect();
    if patterns.len() > MAX_PATTERNS {
        return Err(format!("events: at most {MAX_PATTERNS} patterns"));
    }
    for pattern in &patterns {
        if !event::SUBSCRIBABLE
            .iter()
            .any(|name| event::pattern_matches(pattern, name))
        {
            return Err(format!(
                "events: {pattern:?} matches no event; known events: {}",
                event::SUBSCRIBABLE.join(", ")
            ));
        }
    }
    Ok(patterns)
}

/// An open stream's session, closed on the hub when the response body is dropped.
struct Opened {
    hub: Arc<Hub>,
    session: Option<Arc<SessionHandle>>,
}

impl Drop for Opened {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            // Nothing drains the queue any more: a replay waiting for room gives up.
            session.outbox.close_queue();
            let hub = self.hub.clone();
            self.hub
                .tracker
                .spawn(async move { hub.close_session(&session).await });
        }
    }
}
