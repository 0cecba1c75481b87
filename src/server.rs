//! The HTTP side of a hub: routes, start-up, and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Query, State, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::services::ServeDir;

use crate::breaker::Breaker;
use crate::config::Config;
use crate::decision::EventId;
use crate::hub::Hub;
use crate::managed_redis::{ManagedRedis, ManagedRedisError};
use crate::methods::{self, Caller};
use crate::store::Store;
use crate::{events, keepalive, session};

/// Largest JSON-RPC message (WebSocket message or HTTP body) the hub reads.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Longest the hub waits, on shutdown, for sessions to finish their calls and close.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Longest a readiness check waits for Redis.
pub const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    ManagedRedis(#[from] ManagedRedisError),
    #[error(transparent)]
    Store(#[from] crate::error::Error),
    #[error("serving HTTP failed: {0}")]
    Serve(std::io::Error),
}

/// Runs a hub on `listener` until `shutdown` is cancelled, then closes every session
/// (1001), lets in-flight calls finish (bounded by [`SHUTDOWN_GRACE`]) and stops the
/// managed Redis, if it started one.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let managed = match &config.redis_url {
        Some(_) => None,
        None => Some(ManagedRedis::start(&config.data_dir).await?),
    };
    let url = match (&config.redis_url, &managed) {
        (Some(url), _) => url.clone(),
        (None, Some(redis)) => redis.url(),
        (None, None) => unreachable!("managed Redis is started when no URL is given"),
    };
    let result = serve(listener, config, &url, shutdown).await;
    if let Some(redis) = managed {
        redis.stop().await;
    }
    result
}

async fn serve(
    listener: TcpListener,
    config: Config,
    url: &str,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let breaker = Breaker::new(config.breaker_failures, config.breaker_open);
    let store = Store::open(url, breaker, config.vote_timeout)?;
    let external = config.redis_url.is_some();
    let web_dir = config.web_dir.clone();
    let hub = Arc::new(Hub::new(store, config, shutdown.clone()));
    let loader = hub.store.clone();
    hub.tracker.spawn(async move {
        if let Err(err) = loader.load_scripts().await {
            tracing::warn!(%err, "Redis is not reachable yet; /readyz answers 503 until it is");
        } else if external && let Some(warning) = loader.durability_warning().await {
            tracing::warn!("{warning}");
        }
    });
    hub.tracker.spawn(events::listen(hub.clone()));
    hub.tracker.spawn(keepalive::run(hub.clone()));

    let app = router(hub.clone(), &web_dir);
    let addr = listener.local_addr().map_err(StartError::Serve)?;
    tracing::info!("listening on {addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .map_err(StartError::Serve)?;

    // Upgraded WebSockets are not connections axum waits for; the tracker holds them.
    hub.tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, hub.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("sessions still open after {SHUTDOWN_GRACE:?}; stopping anyway");
    }
    tracing::info!("hub stopped");
    Ok(())
}

fn router(hub: Arc<Hub>, web_dir: &std::path::Path) -> Router {
    Router::new()
        .route("/ws", get(upgrade))
        .route(
            "/rpc",
            post(rpc).layer(DefaultBodyLimit::max(MAX_MESSAGE_BYTES)),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .fallback_service(ServeDir::new(web_dir))
        .with_state(hub)
}

/// Query parameters of `GET /ws`.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionQuery {
    /// Resume after this decision event: replay what was missed, then go live.
    last_event_id: Option<String>,
}

async fn upgrade(
    State(hub): State<Arc<Hub>>,
    Query(query): Query<SessionQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    if hub.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "hub is shutting down\n").into_response();
    }
    let resume_after = match query.last_event_id.as_deref().map(str::parse::<EventId>) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(err)) => {
            return (StatusCode::BAD_REQUEST, format!("lastEventId: {err}\n")).into_response();
        }
    };
    let guard = hub.tracker.token();
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            session::serve(hub, socket, resume_after).await;
            drop(guard);
        })
}

async fn rpc(State(hub): State<Arc<Hub>>, body: String) -> Response {
    match methods::handle_frame(&hub, Caller::Http, &body).await {
        Some(reply) => ([(header::CONTENT_TYPE, "application/json")], reply).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn ready(State(hub): State<Arc<Hub>>) -> Response {
    match tokio::time::timeout(READY_CHECK_TIMEOUT, hub.check_ready()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(reason)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: Redis did not answer in time\n",
        )
            .into_response(),
    }
}
