//! `/healthz` (process up), `/readyz` (started — ClickHouse, the consumers
//! and the lease bucket found — ClickHouse reachable, and no batch waiting
//! past `--stuck-after`: see `progress`), `/stats` (counters), `/metrics`
//! (the same counters and the stream lag, Prometheus text format). Served
//! from the start, so a collector waiting for its dependencies is alive
//! (not restarted) and says what it waits for.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

use crate::progress::Progress;
use crate::stats::Stats;
use crate::store::Store;

/// What the endpoints read.
#[derive(Clone)]
pub struct Shared {
    pub stats: Arc<Stats>,
    /// Set once the collector has everything it needs to start.
    pub store: Arc<OnceLock<Arc<Store>>>,
    pub progress: Arc<Progress>,
    pub stuck_after: Duration,
}

pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<Shared>| async move {
                let Some(store) = s.store.get() else {
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "starting: waiting for ClickHouse, the JetStream consumers and the lease \
                         bucket (see the log; has `rallypoint-collector setup` run?)"
                            .into(),
                    );
                };
                if !store.ping().await {
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "ClickHouse unreachable".into(),
                    );
                }
                match s.progress.stuck(s.stuck_after) {
                    Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
                    None => (StatusCode::OK, "ready".to_owned()),
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
        .with_state(shared)
}
