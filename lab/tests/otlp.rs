//! OTLP push still works beside the Prometheus exposition: a real relay
//! process, told `OTEL_EXPORTER_OTLP_ENDPOINT`, sends its metrics over
//! OTLP/HTTP to a receiver here that decodes them with the
//! opentelemetry-proto types; after a client connected, the pushed counters
//! say so, and the relay's `/metrics` says the same at the same time.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use prost::Message as _;
use rallypoint_client::TransportKind;
use rallypoint_client_native::Peer;
use rallypoint_testkit::nats::{NatsRole, SuperCluster, SuperClusterSpec};
use rallypoint_testkit::relays::{RelayProcess, RelaySpec};
use rallypoint_testkit::tokens::DevIssuer;
use tokio::sync::mpsc;

const SECRET: &str = "otlp-test";
const RELAY_ID: &str = "otlp-0";
const T: Duration = Duration::from_secs(10);

/// `POST /v1/metrics` (the exporter's path under the endpoint): each decoded
/// request goes to the test. OTLP/HTTP answers an empty response message.
fn receiver(requests: mpsc::UnboundedSender<ExportMetricsServiceRequest>) -> Router {
    Router::new()
        .route(
            "/v1/metrics",
            post(
                |State(requests): State<mpsc::UnboundedSender<_>>, body: Bytes| async move {
                    match ExportMetricsServiceRequest::decode(body) {
                        Ok(request) => {
                            let _ = requests.send(request);
                            (axum::http::StatusCode::OK, Vec::new())
                        }
                        Err(e) => (axum::http::StatusCode::BAD_REQUEST, e.to_string().into()),
                    }
                },
            ),
        )
        .with_state(requests)
}

fn string(value: &Option<AnyValue>) -> Option<&str> {
    match value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    string(&attributes.iter().find(|kv| kv.key == key)?.value)
}

/// The WebSocket series of `rallypoint.relay.connections.opened` in a
/// request from the relay `RELAY_ID`, if it has one.
fn websocket_connections_opened(request: &ExportMetricsServiceRequest) -> Option<i64> {
    for resource in &request.resource_metrics {
        let attributes = &resource.resource.as_ref()?.attributes;
        if attribute(attributes, "service.name") != Some("rallypoint-relay")
            || attribute(attributes, "relay.id") != Some(RELAY_ID)
        {
            continue;
        }
        for metric in resource.scope_metrics.iter().flat_map(|s| &s.metrics) {
            if metric.name != "rallypoint.relay.connections.opened" {
                continue;
            }
            assert_eq!(metric.unit, "{connection}");
            let Some(metric::Data::Sum(sum)) = &metric.data else {
                panic!("connections.opened is not a sum: {metric:?}");
            };
            assert!(sum.is_monotonic, "connections.opened is a counter");
            for point in &sum.data_points {
                if attribute(&point.attributes, "transport") == Some("websocket") {
                    return match point.value {
                        Some(number_data_point::Value::AsInt(n)) => Some(n),
                        ref other => panic!("not an integer: {other:?}"),
                    };
                }
            }
        }
    }
    None
}

#[test]
fn the_relay_pushes_its_metrics_over_otlp_while_serving_metrics() {
    // The listener is bound before any other thread runs, so the endpoint is
    // known while setting the environment the relay process inherits.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    // SAFETY: this is the only test of its binary and the runtime is built
    // below, so no other thread reads the environment meanwhile (nextest
    // also gives each test its own process).
    unsafe {
        std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint);
        std::env::set_var("OTEL_METRIC_EXPORT_INTERVAL", "500");
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(pushes(listener));
}

async fn pushes(listener: std::net::TcpListener) {
    listener.set_nonblocking(true).unwrap();
    let (requests_tx, mut requests) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, receiver(requests_tx)).await });

    let dir = tempfile::tempdir().unwrap();
    let mut nats = SuperCluster::start(
        SuperClusterSpec::one_server("us-east", true),
        &dir.path().join("nats"),
    )
    .await
    .expect("NATS starts");
    let mut relay = RelayProcess::start(
        RelaySpec {
            region: "us-east".into(),
            relay_id: RELAY_ID.into(),
            transports: vec![TransportKind::WebSocket],
            nats: nats.access(NatsRole::Relay("us-east".into()), "us-east"),
            jwt_secret: SECRET.into(),
            extra_args: Vec::new(),
        },
        &dir.path().join("relays"),
    )
    .await
    .expect("relay starts");

    // Pushed before any client: 0 connections.
    let deadline = Instant::now() + T * 3;
    let mut before = None;
    while before.is_none() && Instant::now() < deadline {
        if let Ok(Some(request)) = tokio::time::timeout_at(deadline.into(), requests.recv()).await {
            before = websocket_connections_opened(&request);
        }
    }
    assert_eq!(
        before,
        Some(0),
        "no OTLP metrics from the relay:\n{}",
        relay.log_tail(20)
    );

    let identity = rallypoint_client_native::identity(DevIssuer::new(SECRET).mint(
        "otlp",
        "alice",
        "Alice",
        T * 60,
    ));
    let _alice = Peer::connect(&relay.candidate(TransportKind::WebSocket), &identity, T)
        .await
        .expect("alice connects");
    let deadline = Instant::now() + T * 3;
    let mut after = before;
    while after != Some(1) && Instant::now() < deadline {
        if let Ok(Some(request)) = tokio::time::timeout_at(deadline.into(), requests.recv()).await {
            after = websocket_connections_opened(&request).or(after);
        }
    }
    assert_eq!(after, Some(1), "the pushed counter after one connection");

    // The same instrument, scraped at the same time.
    let exposition = reqwest::get(format!("{}/metrics", relay.admin_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = format!(
        "rallypoint_relay_connections_opened_total{{relay_id=\"{RELAY_ID}\",relay_region=\"us-east\",transport=\"websocket\"}} 1"
    );
    assert!(exposition.contains(&line), "{line} not in:\n{exposition}");

    relay.stop(Duration::from_secs(5)).await;
    nats.stop().await;
    server.abort();
}
