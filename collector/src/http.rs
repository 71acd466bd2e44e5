//! `/healthz` (process up), `/readyz` (ClickHouse reachable), `/stats` (counters),
//! `/metrics` (the same counters and the stream lag, Prometheus text format).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

use crate::stats::Stats;
use crate::store::Store;

#[derive(Clone)]
struct Shared {
    stats: Arc<Stats>,
    store: Arc<Store>,
}

pub fn router(stats: Arc<Stats>, store: Arc<Store>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<Shared>| async move {
                if s.store.ping().await {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "ClickHouse unreachable")
                }
            }),
        )
        .route(
            "/stats",
            get(|State(s): State<Shared>| async move {
                Json(serde_json::to_value(&*s.stats).unwrap_or_default())
            }),
        )
        .route("/metrics", get(rallypoint_service::exposition::handler))
        .with_state(Shared { stats, store })
}
