//! `GET /push/key`: the hub's VAPID public key, which a browser subscribes with
//! (`pushManager.subscribe({applicationServerKey})`). Public by nature: no token needed.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::hub::Hub;
use crate::protocol::push::PushKey;

pub(super) async fn push_key(State(hub): State<Arc<Hub>>) -> Response {
    let Some(push) = &hub.push else {
        return refusal(
            StatusCode::NOT_FOUND,
            "Web Push is off on this hub: a hub with --auth-secret sends it only when started \
             with --vapid-subject",
        );
    };
    match push.key(&hub.store).await {
        Ok(key) => Json(PushKey {
            public_key: key.public_key().to_owned(),
        })
        .into_response(),
        Err(err) => {
            tracing::warn!(%err, "cannot read the VAPID key");
            refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "the hub cannot reach Redis for its VAPID key; retry shortly",
            )
        }
    }
}

fn refusal(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}
