//! Logs through `tracing`; traces and metrics through OpenTelemetry.
//!
//! Metrics always go to a meter provider with a Prometheus reader, served as
//! `GET /metrics` by each server (see [`crate::exposition`]); its instruments
//! are observed only when scraped or exported, so an unscraped process pays
//! nothing for them. OTLP push is added when `OTEL_EXPORTER_OTLP_ENDPOINT` is
//! set (the standard OTLP variables, including `OTEL_EXPORTER_OTLP_HEADERS`,
//! are honoured by the exporter): metrics from the same instruments, and
//! traces. `RUST_LOG` filters logs (default `info`).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::io::IsTerminal;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Flushes and stops the exporters when dropped (at the end of `main`).
pub struct Guard {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(tracer) = self.tracer.take()
            && let Err(e) = tracer.shutdown()
        {
            eprintln!("flushing OpenTelemetry traces failed: {e}");
        }
        if let Some(meter) = self.meter.take()
            && let Err(e) = meter.shutdown()
        {
            eprintln!("flushing OpenTelemetry metrics failed: {e}");
        }
    }
}

/// Installs logging, the metrics pipeline, and OTLP export when configured.
/// Call once, first thing in `main`.
pub fn init(service_name: &'static str, attributes: &[(&'static str, String)]) -> Guard {
    let resource = Resource::builder()
        .with_service_name(service_name)
        .with_attributes(
            attributes
                .iter()
                .map(|(k, v)| opentelemetry::KeyValue::new(*k, v.clone())),
        )
        .build();
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty());
    let (otlp, otlp_error) = match endpoint.as_ref().map(|_| otlp_exporters()) {
        Some(Ok(exporters)) => (Some(exporters), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    let (spans, metrics) = otlp.unzip();

    let mut meter = SdkMeterProvider::builder().with_resource(resource.clone());
    let prometheus_error = match crate::exposition::reader() {
        Ok(reader) => {
            meter = meter.with_reader(reader);
            None
        }
        Err(e) => Some(e),
    };
    if let Some(metrics) = metrics {
        meter = meter.with_periodic_exporter(metrics);
    }
    let meter = meter.build();
    opentelemetry::global::set_meter_provider(meter.clone());

    let tracer = spans.map(|spans| {
        SdkTracerProvider::builder()
            .with_batch_exporter(spans)
            .with_resource(resource)
            .build()
    });
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal: a log file or a container
    // log collector gets plain text, not escape codes.
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let otel = tracer.as_ref().map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer.tracer(service_name))
            .with_filter(EnvFilter::new("info"))
    });
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .init();

    if let Some(e) = prometheus_error {
        tracing::error!("Prometheus exposition disabled: {e:#}");
    }
    match (&endpoint, otlp_error) {
        (Some(endpoint), Some(e)) => {
            tracing::error!(%endpoint, "OpenTelemetry export disabled: {e:#}")
        }
        (Some(endpoint), None) => {
            tracing::info!(%endpoint, "exporting traces and metrics over OTLP/HTTP")
        }
        (None, _) => {}
    }
    Guard {
        tracer,
        meter: Some(meter),
    }
}

fn otlp_exporters() -> anyhow::Result<(
    opentelemetry_otlp::SpanExporter,
    opentelemetry_otlp::MetricExporter,
)> {
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .build()?;
    Ok((spans, metrics))
}
