//! What the dashboard's integration tests share: a known dataset of
//! reports (written through the collector's real write path), the dashboard
//! served on a loopback port over ClickHouse 18.16 holding it, requests with
//! a deadline, the checks every answer must pass, and the replay of recorded
//! statements on current ClickHouse (chDB).
#![allow(dead_code)] // each test binary uses its own part of this module

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rallypoint_collector::rows::{CandidateRow, ElectionRow, ReportRows};
use rallypoint_dashboard::data::Db;
use rallypoint_dashboard::filters::Filters;
use rallypoint_testkit::clickhouse::{ClickHouseRole, ClickHouseServer};

/// 2026-11-24 00:00 UTC: the dashboard's "now" in this test.
pub const UNTIL: u32 = 1_795_478_400;
/// Every report arrived two hours before.
pub const AT: u32 = UNTIL - 7_200;

pub struct Candidate(pub &'static str, pub &'static str, pub u32, pub bool);

#[allow(clippy::too_many_arguments)] // one argument per column of the seeded row
pub fn report(
    id: u8,
    session: u8,
    seq: u32,
    trigger: &str,
    decision_ms: u32,
    (country, isp, asn): (&str, &str, u32),
    candidates: &[Candidate],
    winner: usize,
) -> ReportRows {
    let report_id = [id; 16];
    let session_id = [session; 16];
    let rows: Vec<CandidateRow> = candidates
        .iter()
        .enumerate()
        .map(
            |(idx, Candidate(region, transport, rtt_ms, shadow))| CandidateRow {
                report_id,
                received_at: AT,
                idx: idx as u8,
                session_id,
                trigger: trigger.into(),
                region: (*region).into(),
                relay_id: format!("{region}-{transport}"),
                transport: (*transport).into(),
                endpoint: "relay.example:443".into(),
                shadow: u8::from(*shadow),
                connect_ms: rtt_ms * 3,
                error: String::new(),
                samples: 5,
                // Far regions lose one probe in six: the matrix shows it.
                lost: u32::from(*rtt_ms >= 200),
                rtt_min_us: rtt_ms * 1000 - 500,
                rtt_median_us: rtt_ms * 1000,
                rtt_p95_us: rtt_ms * 1000 + 2000,
                rtt_mean_us: rtt_ms * 1000 + 100,
                jitter_us: 800,
                outcome: if idx == winner { "winner" } else { "loser" }.into(),
                country: country.into(),
                asn,
                isp: isp.into(),
                platform: "browser".into(),
                synthetic: 0,
            },
        )
        .collect();
    let w = &rows[winner];
    ReportRows {
        election: ElectionRow {
            report_id,
            received_at: AT,
            received_ms: AT as u64 * 1000,
            client_time_ms: AT as u64 * 1000,
            session_id,
            session_seq: seq,
            relay_id: w.relay_id.clone(),
            relay_region: w.region.clone(),
            trigger: trigger.into(),
            rule: if trigger == "initial" {
                "early"
            } else {
                "standby"
            }
            .into(),
            decision_ms,
            has_winner: 1,
            winner_region: w.region.clone(),
            winner_relay_id: w.relay_id.clone(),
            winner_transport: w.transport.clone(),
            winner_rtt_us: w.rtt_median_us,
            previous_region: if trigger == "initial" {
                String::new()
            } else {
                "singapore".into()
            },
            previous_relay_id: String::new(),
            previous_transport: String::new(),
            candidates: rows.len() as u8,
            failed: 0,
            country: country.into(),
            asn,
            isp: isp.into(),
            platform: "browser".into(),
            client_version: "test".into(),
            browser_family: "chrome".into(),
            effective_connection_type: "4g".into(),
            synthetic: 0,
            reason: format!("test report {id}"),
            schema_version: 1,
        },
        candidates: rows,
    }
}

pub const SINGTEL: (&str, &str, u32) = ("SG", "Singtel", 7473);
pub const COMCAST: (&str, &str, u32) = ("US", "Comcast", 7922);

/// Singtel clients: singapore ~40 ms, us-east ~250 ms, WebTransport wins.
/// Comcast clients: us-east ~20 ms (WebSocket; WebTransport 10 ms slower),
/// singapore ~240 ms, and a shadow region "frankfurt" measured at 15–17 ms.
pub fn dataset() -> Vec<ReportRows> {
    let sg = |id: u8, ms: u32, decision: u32| {
        report(
            id,
            id,
            0,
            "initial",
            decision,
            SINGTEL,
            &[
                Candidate("singapore", "websocket", ms, false),
                Candidate("singapore", "webtransport", ms + 1, false),
                Candidate("us-east", "websocket", 210 + ms, false),
                Candidate("us-east", "webtransport", 211 + ms, false),
            ],
            1,
        )
    };
    let us = |id: u8, ms: u32, decision: u32| {
        report(
            id,
            id,
            0,
            "initial",
            decision,
            COMCAST,
            &[
                Candidate("us-east", "websocket", ms, false),
                Candidate("us-east", "webtransport", ms + 10, false),
                Candidate("singapore", "websocket", 220 + ms, false),
                Candidate("singapore", "webtransport", 221 + ms, false),
                Candidate("frankfurt", "websocket", ms - 5, true),
            ],
            0,
        )
    };
    vec![
        sg(1, 40, 500),
        sg(2, 42, 700),
        sg(3, 44, 1200),
        us(4, 20, 400),
        us(5, 21, 450),
        us(6, 22, 600),
        // Session 1 fails over to its standby.
        report(
            7,
            1,
            1,
            "failover",
            0,
            SINGTEL,
            &[Candidate("singapore", "websocket", 40, false)],
            0,
        ),
    ]
}

/// `report` as if it had arrived at `at`.
pub fn arrived(mut report: ReportRows, at: u32) -> ReportRows {
    report.election.received_at = at;
    report.election.received_ms = at as u64 * 1000;
    report.election.client_time_ms = at as u64 * 1000;
    for candidate in &mut report.candidates {
        candidate.received_at = at;
    }
    report
}

/// Serves the dashboard over `db` on a free loopback port, planning relay
/// cores at `participants_per_relay_core` (`None`: the default).
pub async fn serve(db: Db, participants_per_relay_core: Option<u64>) -> SocketAddr {
    let app = rallypoint_dashboard::http::router(Arc::new(rallypoint_dashboard::http::Dashboard {
        db,
        refresh_seconds: 30,
        participants_per_relay_core,
        auth: Arc::new(rallypoint_dashboard::auth::Auth::none()),
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Longest any answer may take.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Starts the dashboard binary over `clickhouse` on a free loopback port
/// with `args`, logging to `log`, and waits until it answers; killed when
/// dropped.
pub async fn start_binary(
    clickhouse: &rallypoint_testkit::clickhouse::ClickHouseLogin,
    args: &[&str],
    log: &std::path::Path,
) -> (tokio::process::Child, SocketAddr) {
    let port = rallypoint_testkit::ports::free_tcp();
    let (password_env, password) = clickhouse.env();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rallypoint-dashboard"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(clickhouse.cli_args())
        .env(password_env, password)
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stderr(std::fs::File::create(log).unwrap())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = ([127, 0, 0, 1], port).into();
    wait_ready(addr, log).await;
    (child, addr)
}

/// Waits until `addr` answers `/healthz`; fails with the `log` if it never
/// does.
async fn wait_ready(addr: SocketAddr, log: &std::path::Path) {
    let started = std::time::Instant::now();
    while reqwest::get(format!("http://{addr}/healthz"))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < DEADLINE,
            "the dashboard never came up:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every view, with the parameters that make it do its full work (a cell,
/// a what-if question, one session).
pub const VIEWS: &[(&str, &[(&str, &str)])] = &[
    ("/", &[]),
    ("/matrix", &[]),
    ("/matrix/cell", &[("region", "us-east"), ("isp", "Comcast")]),
    ("/outcomes", &[]),
    (
        "/capacity",
        &[("remove", "singapore"), ("add", "frankfurt")],
    ),
    ("/sessions", &[]),
    (
        "/sessions",
        &[("session", "01010101010101010101010101010101")],
    ),
];

/// A dashboard over ClickHouse 18.16 holding some reports.
pub struct Fixture {
    _dir: tempfile::TempDir,
    _clickhouse: ClickHouseServer,
    pub db: Db,
    pub addr: SocketAddr,
}

/// The collector's store over `server`, opened as the administrator
/// (schema migrated), as `rallypoint-collector setup` would.
pub async fn admin_store(
    server: &ClickHouseServer,
    retention_days: u32,
) -> rallypoint_collector::store::Store {
    rallypoint_collector::store::Store::open(
        &server.login(ClickHouseRole::Admin).args(),
        retention_days,
    )
    .await
    .expect("the administrator opens the store")
}

/// The dashboard's data access over `server`, logged in as `role`.
pub fn dashboard_db(server: &ClickHouseServer, role: ClickHouseRole) -> Db {
    Db::new(&server.login(role).args()).expect("the lab's TLS settings are usable")
}

pub async fn fixture(reports: &[ReportRows]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clickhouse = ClickHouseServer::start(dir.path()).await.unwrap();
    let store = admin_store(&clickhouse, 90).await;
    store.write(reports, &[]).await.unwrap();
    let db = dashboard_db(&clickhouse, ClickHouseRole::Dashboard).recording();
    let addr = serve(db.clone(), None).await;
    Fixture {
        _dir: dir,
        _clickhouse: clickhouse,
        db,
        addr,
    }
}

/// What the dashboard answered.
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

/// GETs `path` with `query` (encoded here), within [`DEADLINE`]; a dropped
/// connection or a timeout fails the test, naming the request.
pub async fn get(addr: SocketAddr, path: &str, query: &[(&str, &str)]) -> Answer {
    let client = reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .unwrap();
    let shown: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", v.chars().take(40).collect::<String>()))
        .collect();
    let request = format!("{path}?{}", shown.join("&"));
    let response = client
        .get(format!("http://{addr}{path}"))
        .query(query)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{request}: no answer ({e:?})"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .text()
        .await
        .unwrap_or_else(|e| panic!("{request}: the body broke off ({e:?})"));
    Answer {
        status,
        headers,
        body,
    }
}

/// The range and end every request in these tests starts from.
pub fn pinned() -> Vec<(&'static str, String)> {
    vec![("range", "24h".into()), ("until", UNTIL.to_string())]
}

/// `pairs` as borrowed pairs, for [`get`].
pub fn borrowed<'a>(pairs: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// GETs `path` with the pinned range and `extra` parameters.
pub async fn get_pinned(addr: SocketAddr, path: &str, extra: &[(&'static str, &str)]) -> Answer {
    let mut query = pinned();
    query.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    get(addr, path, &borrowed(&query)).await
}

/// Fragments that only SQL or ClickHouse's error messages put in a page.
pub const INTERNALS: &[&str] = &[
    "SELECT",
    "FROM rp_",
    "WHERE ",
    "Code:",
    "DB::Exception",
    "e.what()",
    "query failed",
];

pub fn assert_shows_no_internals(what: &str, body: &str) {
    for fragment in INTERNALS {
        assert!(
            !body.contains(fragment),
            "{what} shows {fragment:?}:\n{}",
            &body[body.len().saturating_sub(2_000)..]
        );
    }
}

/// The headers every answer carries: no framing, no sniffing, no referrer
/// leaking filters to other sites, and only the dashboard's own scripts and
/// styles.
pub fn assert_secure_headers(what: &str, headers: &reqwest::header::HeaderMap) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{what} has no {name} header"))
            .to_owned()
    };
    let csp = header("content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{what}: {csp:?} lacks {directive}");
    }
    assert!(!csp.contains("unsafe"), "{what}: {csp:?}");
    assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(header("referrer-policy"), "no-referrer", "{what}");
}

/// The lowercase hex id of the dataset's session `n` (every byte `n`).
pub fn session_hex(n: u8) -> String {
    format!("{n:02x}").repeat(16)
}

/// The pinned 24 hours as filters.
pub fn filters_at(until: u32) -> Filters {
    Filters {
        range: Some("24h".into()),
        until: Some(until),
        ..Default::default()
    }
}

/// The number in the overview's "Calls started" tile.
pub fn calls_started(body: &str) -> u64 {
    let tile = &body[body.find(r#"data-kpi="calls""#).expect("a calls tile")..];
    let number = &tile[tile.find("<b>").expect("a number") + 3..];
    number[..number.find("</b>").expect("a number's end")]
        .parse()
        .expect("a count")
}

pub fn replay_on_chdb(statements: &[String]) {
    let ddl: Vec<&str> = rallypoint_collector::schema::fresh_schema().collect();
    let checks: Vec<serde_json::Value> = statements
        .iter()
        .enumerate()
        .map(|(i, sql)| serde_json::json!({ "name": format!("dashboard statement {i}"), "sql": sql }))
        .collect();
    let seed = [
        "INSERT INTO rp_candidates (report_id, received_at, idx, trigger, region, transport, samples, rtt_median_us, country, isp) \
         VALUES ('aaaaaaaaaaaaaaaa', toDateTime(1795471200), 0, 'initial', 'singapore', 'websocket', 5, 40000, 'SG', 'Singtel')",
        "INSERT INTO rp_elections (report_id, received_at, session_id, trigger, winner_region, winner_transport, winner_rtt_us, decision_ms, country, isp) \
         VALUES ('aaaaaaaaaaaaaaaa', toDateTime(1795471200), 'ssssssssssssssss', 'initial', 'singapore', 'websocket', 40000, 500, 'SG', 'Singtel')",
    ];
    let spec = serde_json::json!({ "ddl": ddl, "ttl": [], "seed": seed, "checks": checks });
    if let Err(e) = rallypoint_testkit::chdb::check(&spec) {
        panic!("a dashboard query fails on current ClickHouse:\n{e}");
    }
}
