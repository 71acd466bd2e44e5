//! Metrics you can scrape, with real parts only: a real Prometheus (Debian's
//! 2.42) scrapes a real relay's admin listener and a real collector, both
//! fed by real clients through real NATS JetStream into ClickHouse 18.16.
//!
//! * the connection, room, media, probe and telemetry series carry the values
//!   the clients caused;
//! * every metric the relay-health dashboard and the alert rules read is one
//!   the servers export, and every dashboard expression returns series;
//! * the alert rules load and evaluate; none fires on the healthy pair, and
//!   stopping the relay makes `RallypointRelayDown` pending.

#[path = "grafana/promql.rs"]
mod promql;
#[path = "prometheus/server.rs"]
mod server;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use rallypoint_client::TransportKind;
use rallypoint_client_native::Peer;
use rallypoint_client_native::participant::unix_micros;
use rallypoint_protocol::v1::TrackKind;
use rallypoint_testkit::clickhouse::{ClickHouseRole, ClickHouseServer};
use rallypoint_testkit::collector::{CollectorProcess, CollectorSpec};
use rallypoint_testkit::nats::{ClusterSpec, NatsRole, SuperCluster, SuperClusterSpec};
use rallypoint_testkit::relays::{RelayProcess, RelaySpec};
use rallypoint_testkit::reports::ReportGenerator;
use rallypoint_testkit::reports::send;
use rallypoint_testkit::tokens::DevIssuer;
use server::{Job, Prometheus};

const SECRET: &str = "prometheus-test";
const REGION: &str = "us-east";
const RELAY_ID: &str = "us-east-ws-0";
const REPORTS: u64 = 25;
const MEDIA_FRAMES: u64 = 20;
/// Deadline for a value to reach Prometheus (scraped every second).
const SEEN: Duration = Duration::from_secs(30);
const T: Duration = Duration::from_secs(10);

/// What a query's single value must come to.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Equal(f64),
    AtLeast(f64),
}
use Expect::{AtLeast, Equal};

impl Expect {
    fn holds(self, value: f64) -> bool {
        match self {
            Equal(n) => value == n,
            AtLeast(n) => value >= n,
        }
    }
}

fn rules_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../prometheus/rallypoint-rules.yml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_real_relay_and_collector_series_that_dashboard_and_alerts_read() {
    let dir = tempfile::tempdir().unwrap();
    // Two servers: clustered JetStream (the streams are placed by cluster
    // name) needs routes.
    let mut nats = SuperCluster::start(
        SuperClusterSpec {
            clusters: vec![ClusterSpec {
                name: REGION.into(),
                servers: 2,
            }],
            jetstream: true,
            secure: true,
        },
        &dir.path().join("nats"),
    )
    .await
    .expect("NATS starts");
    let mut relay = RelayProcess::start(
        RelaySpec {
            region: REGION.into(),
            relay_id: RELAY_ID.into(),
            transports: vec![TransportKind::WebSocket],
            nats: nats.access(NatsRole::Relay(REGION.into()), REGION),
            jwt_secret: SECRET.into(),
            extra_args: Vec::new(),
        },
        &dir.path().join("relays"),
    )
    .await
    .expect("relay starts");
    let mut clickhouse = ClickHouseServer::start(&dir.path().join("clickhouse"))
        .await
        .expect("ClickHouse starts");
    let mut collector = CollectorProcess::start(
        CollectorSpec {
            name: "collector-0".into(),
            nats: nats.access(NatsRole::Collector, REGION),
            admin: nats.access(NatsRole::Admin, REGION),
            regions: vec![format!("{REGION}:1")],
            central_region: REGION.into(),
            central_replicas: 1,
            clickhouse: clickhouse.login(ClickHouseRole::Collector),
            clickhouse_admin: clickhouse.login(ClickHouseRole::Admin),
            extra_args: Vec::new(),
            setup_args: Vec::new(),
        },
        &dir.path().join("collectors"),
    )
    .await
    .expect("collector starts");
    let rules = rules_file();
    let mut prometheus = Prometheus::start(
        &dir.path().join("prometheus"),
        &[
            Job {
                name: "rallypoint-relay",
                targets: vec![format!("127.0.0.1:{}", relay.admin_port)],
            },
            Job {
                name: "rallypoint-collector",
                targets: vec![format!("127.0.0.1:{}", collector.http_port)],
            },
        ],
        &[&rules],
    )
    .await
    .expect("Prometheus starts");

    // Alice and Bob join a room; Alice probes and sends media that reaches
    // Bob; a third connection sends election reports.
    let issuer = DevIssuer::new(SECRET);
    let candidate = relay.candidate(TransportKind::WebSocket);
    let identity =
        |user: &str| rallypoint_client_native::identity(issuer.mint("metrics", user, user, T * 60));
    let mut alice = Peer::connect(&candidate, &identity("alice"), T)
        .await
        .expect("alice connects");
    alice.join("metrics", 0, T).await.expect("alice joins");
    let mut bob = Peer::connect(&candidate, &identity("bob"), T)
        .await
        .expect("bob connects");
    bob.join("metrics", 0, T).await.expect("bob joins");
    for seq in 0..3 {
        alice.probe(seq, unix_micros());
    }
    for seq in 0..MEDIA_FRAMES {
        let payload = Bytes::from(vec![7; 100]);
        alice.send_media(TrackKind::Audio, seq, unix_micros(), true, payload);
    }
    let reporter = Peer::connect(&candidate, &identity("reporter"), T)
        .await
        .expect("reporter connects");
    let reports = ReportGenerator::new(relay.candidates(), 13, false);
    let outcome = send(vec![reporter], reports, REPORTS, 200).await;
    assert_eq!(
        outcome.accepted, REPORTS,
        "reports accepted (first refusal: {:?})",
        outcome.first_refusal
    );

    // What Prometheus's query API returns for them.
    let frames = MEDIA_FRAMES as f64;
    let expectations = [
        (r#"up{job="rallypoint-relay"}"#, Equal(1.0)),
        (r#"up{job="rallypoint-collector"}"#, Equal(1.0)),
        // Alice and Bob (the reporter may have hung up).
        (
            r#"rallypoint_relay_connections_active{transport="websocket"}"#,
            AtLeast(2.0),
        ),
        (
            r#"rallypoint_relay_connections_opened_total{transport="websocket"}"#,
            Equal(3.0),
        ),
        ("rallypoint_relay_participants_active", Equal(2.0)),
        ("rallypoint_relay_rooms_active", Equal(1.0)),
        (
            r#"rallypoint_relay_probes_total{outcome="answered"}"#,
            Equal(3.0),
        ),
        (
            r#"rallypoint_relay_media_packets_total{network_io_direction="receive"}"#,
            Equal(frames),
        ),
        // To Bob (a slow start may cost the first frames).
        (
            r#"rallypoint_relay_media_packets_total{network_io_direction="transmit"}"#,
            AtLeast(1.0),
        ),
        (
            r#"rallypoint_relay_media_io_bytes_total{network_io_direction="receive"}"#,
            AtLeast(frames * 100.0),
        ),
        (
            r#"rallypoint_relay_reports_total{outcome="accepted"}"#,
            Equal(REPORTS as f64),
        ),
        ("rallypoint_relay_ready", Equal(1.0)),
        ("rallypoint_relay_nats_connected", Equal(1.0)),
        ("rallypoint_relay_connection_slots_in_use", AtLeast(2.0)),
        (
            "rallypoint_collector_elections_stored_total",
            Equal(REPORTS as f64),
        ),
        (r#"rallypoint_collector_lag{kind="pending"}"#, Equal(0.0)),
    ];
    for (promql, expect) in expectations {
        let value = prometheus
            .until(promql, |v| expect.holds(v), SEEN)
            .await
            .unwrap_or_else(|e| panic!("expected {expect:?}: {e}"));
        eprintln!("{promql} = {value}");
    }
    let labelled = prometheus
        .query("rallypoint_relay_participants_active")
        .await
        .unwrap();
    assert_eq!(labelled[0]["metric"]["relay_id"], RELAY_ID);
    assert_eq!(labelled[0]["metric"]["relay_region"], REGION);

    // Every metric the dashboard and the rules read is exported, and every
    // dashboard expression returns series.
    let exported: BTreeSet<String> = prometheus
        .api("label/__name__/values", &[])
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect();
    eprintln!("{} metric names scraped", exported.len());
    let dashboard = promql::dashboard();
    for expression in promql::expressions(&dashboard) {
        let unknown: Vec<_> = promql::metric_names(&expression.promql)
            .into_iter()
            .filter(|name| !exported.contains(name))
            .collect();
        assert!(
            unknown.is_empty(),
            "relay-health {}: no relay or collector exports {unknown:?}",
            expression.name
        );
        // Rates need two scrapes in their window: wait for them.
        prometheus
            .until_series(&expression.promql, SEEN)
            .await
            .unwrap_or_else(|e| panic!("relay-health {}: {e}", expression.name));
    }
    let rules_text = std::fs::read_to_string(&rules).unwrap();
    let unknown: Vec<_> = promql::metric_names(&rules_text)
        .into_iter()
        .filter(|name| !exported.contains(name))
        .collect();
    assert!(
        unknown.is_empty(),
        "prometheus/rallypoint-rules.yml reads metrics nothing exports: {unknown:?}"
    );

    // The rules loaded and evaluate without errors; on a healthy relay and
    // collector no alert is pending or firing.
    let groups = prometheus.api("rules", &[]).await.unwrap()["groups"].clone();
    let rule_list: Vec<_> = groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect();
    assert_eq!(rule_list.len(), 12, "{groups}");
    for rule in &rule_list {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
    let alerts = prometheus.api("alerts", &[]).await.unwrap()["alerts"].clone();
    assert_eq!(alerts, serde_json::json!([]), "alerts on a healthy pair");

    // The relay stops: its target goes down and the alert becomes pending
    // (it fires after its `for`, 2 minutes, which the unit tests cover).
    relay.stop(Duration::from_secs(5)).await;
    prometheus
        .until(r#"up{job="rallypoint-relay"}"#, |v| v == 0.0, SEEN)
        .await
        .unwrap();
    prometheus
        .until(
            r#"count(ALERTS{alertname="RallypointRelayDown", alertstate="pending"})"#,
            |v| v == 1.0,
            SEEN,
        )
        .await
        .unwrap();

    drop((alice, bob));
    prometheus.stop().await;
    collector.stop().await;
    clickhouse.stop().await;
    nats.stop().await;
}
