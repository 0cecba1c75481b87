//! The HTTP side of a hub: routes, start-up, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tower_http::services::ServeDir;

use crate::auth::Authority;
use crate::breaker::Breaker;
use crate::config::Config;
use crate::hub::Hub;
use crate::managed_redis::ManagedRedis;
pub use crate::managed_redis::ManagedRedisError;
use crate::metrics::Metrics;
use crate::protocol::openrpc;
use crate::push::Push;
use crate::session::writer::MAX_UNANSWERED_PINGS;
use crate::store::Store;
use crate::tasks::{dashboards, deadlines, keepalive, policies, probe, publisher, sweep};
use crate::upgrade::WebSocketRequest;
use crate::webhooks::dispatch::{self, Dispatcher};
use crate::{connection, listener};

mod events;
mod gate;
mod push_key;
mod rpc;

use gate::{Admitted, admit_session, guard_host, resume_from};
pub use rpc::MAX_RPC_IN_FLIGHT;
use rpc::RpcRoute;

/// Longest the hub waits, on shutdown, for sessions to finish their calls and close.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Kernel send buffer per connection. A fixed size (instead of the kernel's autotuning,
/// up to megabytes) bounds what a client that stops reading costs; once it is full the
/// session's own queue fills and the session is closed as a slow consumer.
pub const SOCKET_SEND_BUFFER: usize = 64 * 1024;
/// Initial read buffer of a WebSocket, and the most one read takes; it grows as large
/// messages need. Calls are mostly shorter (a vote is about 150 bytes), and 256 bytes
/// fewer per idle session than 512 kept a session under 8 KiB.
pub const READ_BUFFER_BYTES: usize = 256;
/// Connections the kernel may hold completed for the hub before it accepts them (the
/// kernel caps it at `net.core.somaxconn`). Tokio's default of 1,024 overflowed when
/// 10,000 clients came back after a restart (`bench storm`: 500-1,100 SYNs dropped per
/// storm, each costing its client a 1 s retransmission); 4,096 dropped none in 24 of 25.
pub const LISTEN_BACKLOG: u32 = 4096;
/// Longest a readiness check waits for Redis.
pub const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a hub that could not yet reach Redis asks again whether the keyspace's
/// layout is its own.
const LAYOUT_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    ManagedRedis(#[from] ManagedRedisError),
    #[error(transparent)]
    Store(#[from] crate::error::Error),
    #[error("serving HTTP failed: {0}")]
    Serve(std::io::Error),
    #[error("{0}")]
    Config(String),
}

/// Listens on `addr` for [`run`], with an accept queue of [`LISTEN_BACKLOG`] and, like
/// `TcpListener::bind`, `SO_REUSEADDR`, so a restarted hub gets its port back at once.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
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
        None => Some(ManagedRedis::start(&config.data_dir, config.redis_start_timeout).await?),
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
    mut config: Config,
    url: &str,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let authority = match &config.auth_secret {
        Some(secret) => Some(Authority::new(secret).map_err(StartError::Config)?),
        None => None,
    };
    let addr = listener.local_addr().map_err(StartError::Serve)?;
    // The address actually bound (port 0 becomes a real port): the Host guard answers to it.
    config.listen = addr;
    if authority.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            "serving {addr} without --auth-secret: anyone who can reach this port can register any instance and vote as it"
        );
    }
    let breaker = Breaker::new(config.breaker_failures, config.breaker_open);
    let metrics = Metrics::new();
    let store = Store::open(
        url,
        breaker,
        config.vote_timeout,
        config.wait_replicas,
        crate::store::Lifecycle {
            max_open: config.max_open,
            retention: config.decision_retention,
        },
        metrics.redis_errors.clone(),
    )?;
    let external = config.redis_url.is_some();
    let web_dir = config.web_dir.clone();
    let configured_webhooks = dispatch::configured(&config.webhooks).map_err(StartError::Config)?;
    let push = Push::from_config(&config)
        .map_err(StartError::Config)?
        .map(Arc::new);
    let policy_file = match &config.policy_file {
        Some(path) => crate::policy::read_policy_file(path).map_err(StartError::Config)?,
        None => Default::default(),
    };
    let hub = Arc::new(Hub::new(
        store,
        config,
        authority,
        metrics,
        shutdown.clone(),
        push,
    ));
    // Start-up work is the hub's own: it never counts towards the breaker.
    let loader = hub.store.unguarded();
    hub.tracker.spawn(async move {
        if let Err(err) = loader.load_scripts().await {
            tracing::warn!(%err, "Redis is not reachable yet; /readyz answers 503 until it is");
        } else if external && let Some(warning) = loader.durability_warning().await {
            tracing::warn!("{warning}");
        }
    });
    let layout_conflict = Arc::new(OnceLock::new());
    hub.tracker.spawn(refuse_a_foreign_layout(
        hub.clone(),
        layout_conflict.clone(),
    ));
    hub.tracker.spawn(listener::listen(hub.clone()));
    if hub.store.layout().is_cluster() {
        hub.tracker.spawn(sweep::sweep_unlogged(
            hub.store.clone(),
            hub.shutdown.clone(),
        ));
    }
    hub.tracker.spawn(dashboards::keep_dashboards_flagged(
        hub.store.clone(),
        hub.dashboards_wanted(),
        hub.shutdown.clone(),
    ));
    hub.tracker.spawn(keepalive::run(hub.clone()));
    hub.tracker.spawn(policies::run(hub.clone(), policy_file));
    hub.tracker
        .spawn(probe::run(hub.store.clone(), hub.shutdown.clone()));
    hub.tracker
        .spawn(deadlines::run(hub.store.clone(), hub.shutdown.clone()));
    if hub.store.waits_for_replicas() {
        hub.tracker
            .spawn(publisher::run(hub.store.clone(), hub.shutdown.clone()));
    }
    let dispatcher = Dispatcher::new(
        hub.store.unguarded(),
        hub.config.webhooks.clone(),
        configured_webhooks,
        hub.metrics.clone(),
        hub.event_delivered.clone(),
        hub.push.clone(),
    );
    hub.tracker
        .spawn(Arc::new(dispatcher).run(hub.shutdown.clone()));

    let app = router(hub.clone(), &web_dir);
    if let Some(metrics_addr) = hub.config.metrics_listen {
        let metrics = TcpListener::bind(metrics_addr).await.map_err(|e| {
            StartError::Config(format!("cannot listen on {metrics_addr} for metrics: {e}"))
        })?;
        let metrics_addr = metrics.local_addr().map_err(StartError::Serve)?;
        let routes = Router::new()
            .route("/metrics", get(metrics_text))
            .with_state(hub.clone());
        let stop = shutdown.clone();
        hub.tracker.spawn(async move {
            let served = axum::serve(metrics, routes)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(err) = served {
                tracing::error!(%err, "serving metrics failed");
            }
        });
        tracing::info!("metrics on {metrics_addr}");
    }
    tracing::info!("listening on {addr}");
    let unacknowledged = hub.config.ping_interval * MAX_UNANSWERED_PINGS;
    let listener = listener.tap_io(move |tcp| tune_socket(tcp, unacknowledged));
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
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
    match layout_conflict.get() {
        Some(conflict) => Err(StartError::Config(conflict.clone())),
        None => Ok(()),
    }
}

/// Stops the hub if its Redis Cluster keyspace was written with another layout, asking
/// again every [`LAYOUT_RETRY`] until Redis answers.
async fn refuse_a_foreign_layout(hub: Arc<Hub>, conflict: Arc<OnceLock<String>>) {
    let store = hub.store.unguarded();
    loop {
        match store.layout_conflict().await {
            Ok(None) => return,
            Ok(Some(found)) => {
                tracing::error!("{found}; stopping");
                let _ = conflict.set(found);
                hub.shutdown.cancel();
                return;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = hub.shutdown.cancelled() => return,
            _ = tokio::time::sleep(LAYOUT_RETRY) => {}
        }
    }
}

/// Replies and events are small frames that must leave at once, not wait for Nagle; and
/// a client that stops reading may hold at most [`SOCKET_SEND_BUFFER`] of kernel memory.
/// Sets up an accepted connection. `unacknowledged`: how long sent data may wait for the
/// peer's acknowledgement, or for room in a window the peer keeps closed, before the kernel
/// drops the connection (`TCP_USER_TIMEOUT`). It ends a Server-Sent Events stream whose
/// reader stopped reading, which no write of the hub's can notice while the kernel holds
/// its bytes, and a WebSocket stuck the same way as soon as its keep-alive would.
fn tune_socket(tcp: &mut tokio::net::TcpStream, unacknowledged: Duration) {
    if let Err(err) = tcp.set_nodelay(true) {
        tracing::debug!(%err, "could not set TCP_NODELAY");
    }
    let socket = socket2::SockRef::from(&*tcp);
    if let Err(err) = socket.set_send_buffer_size(SOCKET_SEND_BUFFER) {
        tracing::debug!(%err, "could not set SO_SNDBUF");
    }
    #[cfg(target_os = "linux")]
    if let Err(err) = socket.set_tcp_user_timeout(Some(unacknowledged)) {
        tracing::debug!(%err, "could not set TCP_USER_TIMEOUT");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = unacknowledged;
}

/// `GET /openrpc.json`: the contract, as `rpc.discover` returns it.
async fn openrpc_document() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openrpc::document_text().get(),
    )
}

fn router(hub: Arc<Hub>, web_dir: &std::path::Path) -> Router {
    // What a browser page can reach sits behind the Host guard; health checks do not.
    let pages = Router::new()
        .route("/ws", get(upgrade))
        .route("/events", get(events::events))
        .route("/push/key", get(push_key::push_key))
        .route(
            "/rpc",
            post(rpc::rpc)
                .with_state(Arc::new(RpcRoute::new(hub.clone())))
                .layer(DefaultBodyLimit::max(hub.config.max_message_bytes as usize)),
        )
        .fallback_service(ServeDir::new(web_dir))
        .layer(axum::middleware::from_fn_with_state(
            hub.clone(),
            guard_host,
        ));
    let mut app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/openrpc.json", get(openrpc_document));
    if hub.config.metrics_listen.is_none() {
        app = app.route("/metrics", get(metrics_text));
    }
    app.merge(pages).with_state(hub)
}

/// Query parameters of `GET /ws`.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionQuery {
    /// Resume after this decision event: replay what was missed, then go live.
    last_event_id: Option<String>,
    /// A token, for browsers, which cannot set headers on a WebSocket.
    token: Option<String>,
}

async fn upgrade(
    State(hub): State<Arc<Hub>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<SessionQuery>,
    headers: HeaderMap,
    handshake: WebSocketRequest,
) -> Response {
    let Admitted {
        grant,
        expires_at_ms,
        slot,
    } = match admit_session(&hub, peer.ip(), &headers, query.token.as_deref()) {
        Ok(admitted) => admitted,
        Err(refused) => return refused.into_response(),
    };
    let resume = query.last_event_id.map(resume_from);
    let guard = hub.tracker.token();
    let max = hub.config.max_message_bytes as usize;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        // Read buffers grow on demand; a small start keeps idle sessions cheap.
        .read_buffer_size(READ_BUFFER_BYTES);
    handshake.accept(move |upgraded| async move {
        connection::serve(
            hub,
            upgraded,
            config,
            connection::Opening {
                slot,
                grant,
                expires_at_ms,
                resume,
            },
        )
        .await;
        drop(guard);
    })
}

async fn metrics_text(State(hub): State<Arc<Hub>>) -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], hub.render_metrics()).into_response()
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
