//! The relay's HTTP surfaces, on two listeners.
//!
//! Public (`--http-listen`), what clients need and nothing more:
//!
//! | path         | answers                                                  |
//! |--------------|----------------------------------------------------------|
//! | `/ws`        | WebSocket upgrade (when WebSocket is served)             |
//! | `/cert-hash` | the WebTransport certificate's SHA-256, for `serverCertificateHashes` |
//!
//! Admin (`--admin-listen`), for probes and operators, never exposed:
//!
//! | path         | answers                                                  |
//! |--------------|----------------------------------------------------------|
//! | `/healthz`   | 200 while the process runs                               |
//! | `/readyz`    | 200 when NATS is connected and the relay accepts clients, else 503 with the reason |
//! | `/stats`     | the relay's counters as JSON                             |
//! | `/metrics`   | the same counters, readiness and NATS state for Prometheus (text format) |

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use tower_http::cors::CorsLayer;

use crate::config::TransportKind;
use crate::state::RelayState;
use crate::transport::ws;

/// The public listener's routes.
pub fn public_router(relay: Arc<RelayState>) -> Router {
    // Browsers on the app's origin may fetch the certificate hash
    // cross-origin; it is public information.
    let mut router =
        Router::new().route("/cert-hash", get(cert_hash).layer(CorsLayer::permissive()));
    if relay.config.serves(TransportKind::WebSocket) {
        router = router.route("/ws", get(ws::upgrade));
    }
    router.with_state(relay)
}

/// The admin listener's routes: health, readiness, stats and `/metrics`.
pub fn admin_router(relay: Arc<RelayState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/stats", get(stats))
        .route("/metrics", get(rallypoint_service::exposition::handler))
        .with_state(relay)
}

async fn readyz(State(relay): State<Arc<RelayState>>) -> impl IntoResponse {
    match relay.readiness() {
        Ok(()) => (StatusCode::OK, "ready".to_owned()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

async fn cert_hash(State(relay): State<Arc<RelayState>>) -> impl IntoResponse {
    match relay.cert_hash {
        Some(hash) => Json(json!({
            "algorithm": "sha-256",
            "hex": rallypoint_protocol::hex(&hash),
        }))
        .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "this relay does not serve WebTransport",
        )
            .into_response(),
    }
}

async fn stats(State(relay): State<Arc<RelayState>>) -> impl IntoResponse {
    let mut value = serde_json::to_value(&*relay.stats).unwrap_or_default();
    value["relay_id"] = json!(relay.config.relay_id);
    value["region"] = json!(relay.config.region);
    value["rooms_served"] = json!(relay.hub.room_count());
    value["connection_slots_in_use"] = json!(relay.budget.in_use());
    value["cut_off_from_nats"] = json!(relay.is_cut_off());
    Json(value)
}
