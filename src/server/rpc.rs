//! `POST /rpc`: one JSON-RPC call or batch per request, for callers that hold no
//! session, within a call budget per address and a bound on requests served at once.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::gate::{authenticate, check_origin, refuse};
use crate::budget::RpcBudgets;
use crate::hub::Hub;
use crate::methods::{self, Caller};

/// Most `POST /rpc` requests a hub serves at once: what their replies can take in memory
/// is bounded by this times a batch's reply bound.
pub const MAX_RPC_IN_FLIGHT: usize = 16;

/// What `POST /rpc` serves with: the hub, and what bounds its callers.
pub(super) struct RpcRoute {
    hub: Arc<Hub>,
    /// The call budgets of its clients, by address.
    budgets: RpcBudgets,
    /// Places for requests being served at once ([`MAX_RPC_IN_FLIGHT`]); others wait,
    /// holding only their body.
    in_flight: tokio::sync::Semaphore,
}

impl RpcRoute {
    pub(super) fn new(hub: Arc<Hub>) -> Self {
        Self {
            budgets: RpcBudgets::new(hub.config.session_rate_limit),
            in_flight: tokio::sync::Semaphore::new(MAX_RPC_IN_FLIGHT),
            hub,
        }
    }
}

/// Serves one request: the origin and token checks, the caller's budget and a place,
/// then the call or batch, answered as one JSON body (204 for notifications alone).
pub(super) async fn rpc(
    State(route): State<Arc<RpcRoute>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let hub = &route.hub;
    if let Err(refused) = check_origin(hub, &headers) {
        return refused.into_response();
    }
    let (grant, _) = match authenticate(hub, peer.ip(), &headers, None) {
        Ok(verified) => verified,
        Err(refused) => return refused.into_response(),
    };
    let Some(budget) = route.budgets.of(peer.ip()) else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many clients are calling /rpc at once; retry in a second",
        )
        .into_response();
    };
    let Ok(_serving) = route.in_flight.acquire().await else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "hub shutting down").into_response();
    };
    match methods::handle_frame(hub, Caller::Http(&grant, &budget), &body).await {
        Some(reply) => ([(header::CONTENT_TYPE, "application/json")], reply).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}
