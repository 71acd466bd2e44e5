//! `GET /metrics`: the process's OpenTelemetry instruments in Prometheus text
//! format, for servers that are scraped rather than (or as well as) pushing
//! OTLP.
//!
//! There is one set of instruments per process, registered on OpenTelemetry's
//! global meter provider (see [`crate::observability`]). That provider carries
//! a Prometheus reader feeding the registry held here, so a scrape runs the
//! instruments' callbacks and nothing is counted twice or kept in two places.
//! Names follow the OpenTelemetry-to-Prometheus rules: dots become
//! underscores, the unit is appended (`By` → `_bytes`), and monotonic
//! counters end in `_total`.

use std::sync::OnceLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use prometheus::{Encoder as _, TextEncoder};

/// The registry the meter provider's Prometheus reader fills. Global because
/// the meter provider it belongs to is.
static REGISTRY: OnceLock<prometheus::Registry> = OnceLock::new();

fn registry() -> &'static prometheus::Registry {
    REGISTRY.get_or_init(prometheus::Registry::new)
}

/// The reader to add to the process's meter provider. Instrumentation scope
/// labels are left off: every instrument of a process has the same scope.
pub(crate) fn reader() -> anyhow::Result<opentelemetry_prometheus::PrometheusExporter> {
    Ok(opentelemetry_prometheus::exporter()
        .with_registry(registry().clone())
        .scope_info_enabled(false)
        .build()?)
}

/// The exposition of everything registered so far (empty before
/// [`crate::observability::init`], e.g. in a process that never called it).
pub fn render() -> String {
    let mut text = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&registry().gather(), &mut text) {
        tracing::warn!("encoding the Prometheus exposition failed: {e}");
    }
    String::from_utf8(text).unwrap_or_default()
}

/// The `/metrics` route's handler, for every server's admin router.
pub async fn handler() -> impl IntoResponse {
    ([(CONTENT_TYPE, prometheus::TEXT_FORMAT)], render())
}
