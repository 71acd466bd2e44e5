//! Logs through `tracing`; traces and metrics through OpenTelemetry.
//!
//! Export is on only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the standard
//! OTLP variables, including `OTEL_EXPORTER_OTLP_HEADERS`, are honoured by the
//! exporter). Without it, metrics go to OpenTelemetry's no-op provider and cost
//! nothing. `RUST_LOG` filters logs (default `info`).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
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

/// Installs logging, and OTLP export when configured. Call once, first thing in `main`.
pub fn init(service_name: &'static str, attributes: &[(&'static str, String)]) -> Guard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_writer(std::io::stderr);
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok();
    let Some(endpoint) = endpoint.filter(|e| !e.is_empty()) else {
        tracing_subscriber::registry()
            .with(fmt.with_filter(filter))
            .init();
        return Guard {
            tracer: None,
            meter: None,
        };
    };

    let resource = Resource::builder()
        .with_service_name(service_name)
        .with_attributes(
            attributes
                .iter()
                .map(|(k, v)| opentelemetry::KeyValue::new(*k, v.clone())),
        )
        .build();
    let (tracer, meter) = match exporters(resource) {
        Ok(providers) => providers,
        Err(e) => {
            tracing_subscriber::registry()
                .with(fmt.with_filter(filter))
                .init();
            tracing::error!(%endpoint, "OpenTelemetry export disabled: {e:#}");
            return Guard {
                tracer: None,
                meter: None,
            };
        }
    };
    opentelemetry::global::set_meter_provider(meter.clone());
    let otel = tracing_opentelemetry::layer().with_tracer(tracer.tracer(service_name));
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel.with_filter(EnvFilter::new("info")))
        .init();
    tracing::info!(%endpoint, "exporting traces and metrics over OTLP/HTTP");
    Guard {
        tracer: Some(tracer),
        meter: Some(meter),
    }
}

fn exporters(resource: Resource) -> anyhow::Result<(SdkTracerProvider, SdkMeterProvider)> {
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    let tracer = SdkTracerProvider::builder()
        .with_batch_exporter(spans)
        .with_resource(resource.clone())
        .build();
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .build()?;
    let meter = SdkMeterProvider::builder()
        .with_periodic_exporter(metrics)
        .with_resource(resource)
        .build();
    Ok((tracer, meter))
}
