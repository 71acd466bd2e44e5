//! Batches with real parts — a backlog in the telemetry streams of a NATS
//! super-cluster, one collector process, ClickHouse 18.16: bounded by bytes,
//! and split around reports ClickHouse refuses.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use rallypoint_collector::streams::{self, StreamBounds};
use rallypoint_protocol::limits::MAX_REPORT_CANDIDATES;
use rallypoint_protocol::v1::EnrichedElectionReport;
use rallypoint_protocol::{encode, hex};
use rallypoint_testkit::clickhouse::{ClickHouseRole, ClickHouseServer};
use rallypoint_testkit::collector::{CollectorProcess, CollectorSpec};
use rallypoint_testkit::nats::{NatsRole, SuperCluster, SuperClusterSpec};
use rallypoint_testkit::reports::ReportGenerator;

/// The longest text field a report may carry (`telemetry::validate`).
const MAX_TEXT: usize = 512;
/// The streams' bounds here: a backlog of 12 000 of the largest reports
/// (about 250 MB) must fit without the oldest being discarded.
const REGIONAL_MAX_BYTES: i64 = 768 << 20;
const CENTRAL_MAX_BYTES: i64 = 1 << 30;

/// A valid report as large as a client may send: the most candidates, each
/// with the longest endpoint, and the longest reason.
fn large_report(generator: &mut ReportGenerator) -> EnrichedElectionReport {
    let mut report = generator.next_report();
    report.reason = "r".repeat(512);
    let loser = report
        .candidates
        .iter()
        .find(|c| c.error.is_empty())
        .cloned()
        .unwrap();
    report.candidates.truncate(4);
    while report.candidates.len() < MAX_REPORT_CANDIDATES {
        report.candidates.push(loser.clone());
    }
    for candidate in &mut report.candidates {
        candidate.endpoint = format!("wss://{}/", "e".repeat(MAX_TEXT - 7));
    }
    if let Some(winner) = report.winner_index {
        report.winner_index = Some(winner.min(3));
    }
    EnrichedElectionReport {
        report: Some(report),
        relay_id: "us-east-ws-0".into(),
        relay_region: "us-east".into(),
        received_ms: 1_790_000_000_000,
        asn: 64500,
        isp: "Example".into(),
        country: "US".into(),
    }
}

/// Streams with a backlog, ClickHouse, and collectors to start on them.
struct Backlog {
    dir: tempfile::TempDir,
    nats: SuperCluster,
    clickhouse: ClickHouseServer,
    js: jetstream::Context,
}

impl Backlog {
    async fn start() -> Backlog {
        let dir = tempfile::tempdir().unwrap();
        let nats = SuperCluster::start(SuperClusterSpec::reference(true), &dir.path().join("nats"))
            .await
            .unwrap();
        let clickhouse = ClickHouseServer::start(&dir.path().join("clickhouse"))
            .await
            .unwrap();
        let js = jetstream::new(
            nats.access(NatsRole::Admin, "us-east")
                .connect()
                .await
                .unwrap(),
        );
        let regions = vec![("us-east".to_owned(), 3), ("singapore".to_owned(), 1)];
        let bounds = StreamBounds {
            duplicate_window: Duration::from_secs(600),
            regional_max_bytes: REGIONAL_MAX_BYTES,
            central_max_bytes: CENTRAL_MAX_BYTES,
            max_msg_size: 80 * 1024,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Err(e) = streams::ensure(&js, &regions, "us-east", 3, &bounds).await {
            assert!(Instant::now() < deadline, "{e:#}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Backlog {
            dir,
            nats,
            clickhouse,
            js,
        }
    }

    /// Publishes `reports` like a us-east relay, many in flight at once;
    /// returns the payloads' total size.
    async fn publish_all(&self, reports: &[EnrichedElectionReport]) -> usize {
        let mut total = 0;
        for chunk in reports.chunks(256) {
            let mut acks = Vec::with_capacity(chunk.len());
            for enriched in chunk {
                let payload = encode(enriched);
                total += payload.len();
                let message = jetstream::message::PublishMessage::build()
                    .payload(payload)
                    .message_id(hex(&enriched.report.as_ref().unwrap().report_id));
                acks.push(
                    self.js
                        .send_publish("telemetry.election.us-east", message)
                        .await
                        .unwrap(),
                );
            }
            let acks = acks.into_iter().map(std::future::IntoFuture::into_future);
            for ack in futures_util::future::join_all(acks).await {
                ack.unwrap();
            }
        }
        total
    }

    /// Publishes like a us-east relay; returns the payload's size.
    async fn publish(&self, enriched: &EnrichedElectionReport) -> usize {
        rallypoint_protocol::telemetry::validate(enriched.report.as_ref().unwrap()).unwrap();
        let payload = encode(enriched);
        let size = payload.len();
        let message = jetstream::message::PublishMessage::build()
            .payload(payload)
            .message_id(hex(&enriched.report.as_ref().unwrap().report_id));
        self.js
            .send_publish("telemetry.election.us-east", message)
            .await
            .unwrap()
            .await
            .unwrap();
        size
    }

    async fn collector(&self, name: &str, extra_args: &[&str]) -> CollectorProcess {
        let url = self.clickhouse.url();
        self.collector_via(&url, name, extra_args).await
    }

    /// A collector that reaches ClickHouse at `clickhouse_url` (a proxy);
    /// its setup goes straight to the server.
    async fn collector_via(
        &self,
        clickhouse_url: &str,
        name: &str,
        extra_args: &[&str],
    ) -> CollectorProcess {
        let args: Vec<String> = extra_args.iter().copied().map(String::from).collect();
        let mut clickhouse = self.clickhouse.login(ClickHouseRole::Collector);
        clickhouse.url = clickhouse_url.to_owned();
        let setup_args = vec![
            "--regional-max-bytes".into(),
            format!("{}MiB", REGIONAL_MAX_BYTES >> 20),
            "--central-max-bytes".into(),
            format!("{}MiB", CENTRAL_MAX_BYTES >> 20),
        ];
        CollectorProcess::start(
            CollectorSpec {
                name: name.into(),
                nats: self.nats.access(NatsRole::Collector, "us-east"),
                admin: self.nats.access(NatsRole::Admin, "us-east"),
                regions: vec!["us-east:3".into(), "singapore:1".into()],
                central_region: "us-east".into(),
                central_replicas: 3,
                clickhouse,
                clickhouse_admin: self.clickhouse.login(ClickHouseRole::Admin),
                extra_args: args,
                setup_args,
            },
            &self.dir.path().join("collector"),
        )
        .await
        .unwrap()
    }

    /// The collector's schema, plus candidate columns computed at insert
    /// (`name`, expression): how these tests make ClickHouse misbehave.
    async fn with_candidate_columns(&self, columns: &[(String, String)]) {
        rallypoint_collector::store::Store::open(
            &self.clickhouse.login(ClickHouseRole::Admin).args(),
            90,
        )
        .await
        .unwrap();
        for (name, expression) in columns {
            self.clickhouse
                .query(&format!(
                    "ALTER TABLE rp_candidates ADD COLUMN {name} UInt8 MATERIALIZED {expression}"
                ))
                .await
                .unwrap();
        }
    }

    async fn stop(mut self, collectors: Vec<CollectorProcess>) {
        for mut collector in collectors {
            collector.stop().await;
        }
        self.clickhouse.stop().await;
        self.nats.stop().await;
    }
}

/// The collector's `/stats` once `done` accepts them (90 s at most).
async fn stats_when(
    collector: &CollectorProcess,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let stats = collector.stats().await.unwrap();
        if done(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "not done: {stats}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_large_reports_is_taken_in_batches_bounded_by_bytes() {
    let backlog = Backlog::start().await;
    const N: u64 = 400;
    let mut generator = ReportGenerator::new(
        rallypoint_testkit::reports::two_region_candidates(),
        21,
        false,
    );
    let mut total_bytes = 0;
    for _ in 0..N {
        total_bytes += backlog.publish(&large_report(&mut generator)).await;
    }

    const BATCH_BYTES: usize = 1 << 20;
    let collector = backlog
        .collector(
            "collector-0",
            &[
                "--batch-bytes",
                "1MiB",
                "--batch-wait",
                "3s",
                "--workers",
                "1",
            ],
        )
        .await;
    let stats = stats_when(&collector, |s| s["elections_stored"].as_u64() == Some(N)).await;
    let batches = stats["batches"].as_u64().unwrap();
    let fewest = total_bytes.div_ceil(BATCH_BYTES) as u64;
    eprintln!(
        "{N} reports, {total_bytes} bytes of payload, {batches} batches (at least {fewest}); peak RSS {:?}",
        collector.peak_memory()
    );
    assert!(
        batches >= fewest,
        "{batches} batches for {total_bytes} bytes: not bounded by 1 MiB"
    );
    assert_eq!(
        backlog
            .clickhouse
            .count("SELECT count() FROM rp_elections")
            .await
            .unwrap(),
        N
    );
    backlog.stop(vec![collector]).await;
}

/// The chart's memory limit for a collector (helm/rallypoint/values.yaml).
const CHART_MEMORY_LIMIT: u64 = 1 << 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_thousand_of_the_largest_reports_are_stored_within_the_charts_memory_limit() {
    let backlog = Backlog::start().await;
    const N: u64 = 12_000;
    let mut generator = ReportGenerator::new(
        rallypoint_testkit::reports::two_region_candidates(),
        22,
        false,
    );
    let reports: Vec<EnrichedElectionReport> =
        (0..N).map(|_| large_report(&mut generator)).collect();
    for enriched in &reports[..1] {
        rallypoint_protocol::telemetry::validate(enriched.report.as_ref().unwrap()).unwrap();
    }
    let started = Instant::now();
    let total_bytes = backlog.publish_all(&reports).await;
    eprintln!(
        "published {N} reports, {} MiB, in {:?}",
        total_bytes >> 20,
        started.elapsed()
    );
    drop(reports);

    // The collector as the chart runs it: default batches and workers.
    let started = Instant::now();
    let collector = backlog.collector("collector-0", &[]).await;
    stats_when(&collector, |s| s["elections_stored"].as_u64() == Some(N)).await;
    let peak = collector.peak_memory().expect("the collector's peak RSS");
    eprintln!(
        "stored {N} in {:?}; collector peak RSS {} MiB (limit {} MiB)",
        started.elapsed(),
        peak >> 20,
        CHART_MEMORY_LIMIT >> 20
    );
    assert!(
        peak < CHART_MEMORY_LIMIT,
        "peak RSS {peak} bytes is over the chart's limit"
    );
    let count = |sql: &'static str| async { backlog.clickhouse.count(sql).await.unwrap() };
    assert_eq!(
        count("SELECT uniqExact(report_id) FROM rp_elections").await,
        N
    );
    assert_eq!(count("SELECT count() FROM rp_elections").await, N);
    assert_eq!(
        count("SELECT countMerge(elections) FROM rp_elections_minute").await,
        N
    );
    assert_eq!(
        count("SELECT count() FROM rp_candidates").await,
        N * MAX_REPORT_CANDIDATES as u64
    );
    backlog.stop(vec![collector]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_clickhouse_keeps_refusing_are_dead_lettered_and_the_rest_of_their_batch_stored() {
    let backlog = Backlog::start().await;
    // A ClickHouse that refuses some reports for good: a column computed at
    // insert (before anything is written) that throws for one ISP.
    backlog
        .with_candidate_columns(&[("refuse".into(), "throwIf(isp = 'Poison')".into())])
        .await;
    const GOOD: u64 = 300;
    const POISON: u64 = 3;
    let mut generator = ReportGenerator::new(
        rallypoint_testkit::reports::two_region_candidates(),
        22,
        false,
    );
    for i in 0..GOOD + POISON {
        let mut enriched = large_report(&mut generator);
        if i % 100 == 50 {
            enriched.isp = "Poison".into();
        }
        backlog.publish(&enriched).await;
    }
    let collector = backlog
        .collector("collector-0", &["--batch-wait", "2s", "--workers", "1"])
        .await;
    let stats = stats_when(&collector, |s| {
        s["elections_stored"].as_u64() == Some(GOOD) && s["dead_letters"].as_u64() == Some(POISON)
    })
    .await;
    eprintln!("{stats}");
    let ch = &backlog.clickhouse;
    assert_eq!(
        ch.count("SELECT count() FROM rp_dead_letters WHERE position(reason, 'ClickHouse refused it') > 0")
            .await
            .unwrap(),
        POISON
    );
    for sql in [
        "SELECT uniqExact(report_id) FROM rp_elections",
        "SELECT count() FROM rp_elections",
        "SELECT uniqExact(report_id) FROM rp_candidates",
        "SELECT countMerge(elections) FROM rp_elections_minute",
    ] {
        assert_eq!(ch.count(sql).await.unwrap(), GOOD, "{sql}");
    }
    assert_eq!(
        ch.count("SELECT count() FROM rp_elections WHERE isp = 'Poison'")
            .await
            .unwrap(),
        0
    );
    backlog.stop(vec![collector]).await;
}

/// ClickHouse writes a table's rows, then pushes them into its views one
/// by one, and keeps the rows when a view fails. Here a view on
/// `rp_candidates` that sorts before the rollups' views fails on every
/// insert after the raw table took the rows. Once it is dropped, the retry
/// finds those rows stored and skips them:
/// the raw table holds every report once, and the RTT rollups, fed from
/// the views after the failed one, miss them. The collector cannot tell
/// which views counted them, so it says so: counted
/// (`rollup_gaps_suspected`) and logged with the day to rebuild. Before, it
/// said nothing, and the rollups stayed short unnoticed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_a_failed_view_left_out_of_the_rollups_are_counted_and_their_day_named() {
    let backlog = Backlog::start().await;
    let ch = &backlog.clickhouse;
    rallypoint_collector::store::Store::open(&ch.login(ClickHouseRole::Admin).args(), 90)
        .await
        .unwrap();
    // Its query reads a URL, answered while the view is made and then
    // gone: it fails when rows are pushed into it (a network error, an
    // outage the collector waits out), after `rp_candidates` took them.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let answering = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nx\n")
                .await;
        }
    });
    ch.query(&format!(
        "CREATE MATERIALIZED VIEW rp_aaa_gate_mv ENGINE = Memory AS SELECT report_id FROM rp_candidates \
         WHERE toString(report_id) NOT IN (SELECT x FROM url('http://127.0.0.1:{port}/', CSV, 'x String'))"
    ))
    .await
    .unwrap();
    answering.abort();
    let _ = answering.await;
    const N: u64 = 40;
    let mut generator = ReportGenerator::new(
        rallypoint_testkit::reports::two_region_candidates(),
        23,
        false,
    );
    for _ in 0..N {
        backlog.publish(&large_report(&mut generator)).await;
    }
    let collector = backlog
        .collector("collector-0", &["--batch-wait", "1s", "--workers", "1"])
        .await;
    stats_when(&collector, |s| s["insert_failures"].as_u64() >= Some(1)).await;
    ch.query("DROP TABLE rp_aaa_gate_mv").await.unwrap();
    let stats = stats_when(&collector, |s| s["elections_stored"].as_u64() == Some(N)).await;
    eprintln!("{stats}");

    let raw = ch
        .count("SELECT uniqExact(report_id) FROM rp_candidates")
        .await
        .unwrap();
    assert_eq!(raw, N, "the raw table holds every report once");
    let counted = ch
        .count("SELECT countMerge(measurements) FROM rp_rtt_minute")
        .await
        .unwrap();
    let rows = ch
        .count("SELECT count() FROM rp_candidates WHERE samples > 0")
        .await
        .unwrap();
    assert!(
        counted < rows,
        "the failed view's batch was meant to be missing from the rollup ({counted} of {rows})"
    );
    let suspected = stats["rollup_gaps_suspected"].as_u64().unwrap_or(0);
    assert!(
        (1..=N).contains(&suspected),
        "the collector did not say that the rollups may miss reports: {stats}"
    );
    let log = collector.log_tail(200);
    assert!(
        log.contains("rebuild-rollups --from"),
        "the day to rebuild is not named in the collector's log"
    );
    backlog.stop(vec![collector]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_slower_than_the_ack_wait_is_not_stored_again_by_another_collector() {
    let backlog = Backlog::start().await;
    // A ClickHouse that takes about 38 s for every candidate insert: 13
    // columns computed at insert, each sleeping its own (different, or they
    // would be computed once) near-maximum 3 s — longer than the consumer's
    // 30 s ack wait.
    let slow: Vec<(String, String)> = (0..13)
        .map(|i| {
            (
                format!("slow_{i}"),
                format!("sleep({:.2})", 3.0 - 0.01 * f64::from(i)),
            )
        })
        .collect();
    backlog.with_candidate_columns(&slow).await;
    const N: u64 = 40;
    let mut generator = ReportGenerator::new(
        rallypoint_testkit::reports::two_region_candidates(),
        24,
        false,
    );
    for _ in 0..N {
        backlog.publish(&large_report(&mut generator)).await;
    }
    let first = backlog
        .collector("collector-0", &["--batch-wait", "1s", "--workers", "1"])
        .await;
    stats_when(&first, |s| s["messages"].as_u64() == Some(N)).await;
    // A second collector, idle, ready to take whatever JetStream redelivers.
    let second = backlog
        .collector("collector-1", &["--batch-wait", "1s", "--workers", "2"])
        .await;
    let started = Instant::now();
    stats_when(&first, |s| s["elections_stored"].as_u64() == Some(N)).await;
    eprintln!(
        "the slow batch took {:?} after the second collector started",
        started.elapsed()
    );
    // Past the ack wait again: nothing redelivered in the meantime either.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = second.stats().await.unwrap();
    assert_eq!(idle["messages"].as_u64(), Some(0), "redelivered: {idle}");
    let ch = &backlog.clickhouse;
    assert_eq!(
        ch.count("SELECT count() FROM rp_elections").await.unwrap(),
        N
    );
    let candidates = ch.count("SELECT count() FROM rp_candidates").await.unwrap();
    assert_eq!(
        ch.count("SELECT uniqExact(report_id, idx) FROM rp_candidates")
            .await
            .unwrap(),
        candidates,
        "candidate rows stored twice"
    );
    assert_eq!(
        ch.count("SELECT countMerge(measurements) FROM rp_rtt_minute")
            .await
            .unwrap(),
        ch.count("SELECT count() FROM rp_candidates WHERE samples > 0")
            .await
            .unwrap()
    );
    backlog.stop(vec![first, second]).await;
}

/// The collector's `/readyz`: status and body.
async fn readyz(collector: &CollectorProcess) -> (u16, String) {
    let url = format!("http://127.0.0.1:{}/readyz", collector.http_port);
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// A ClickHouse that answers but cannot store anything (a table the store
/// needs is detached: an operator's mistake, not the reports' fault) makes
/// the collector wait, not dead-letter every report, and turns `/readyz`
/// red once reports have waited `--stuck-after`; when the table is back,
/// everything is stored exactly once and `/readyz` is green again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_cannot_store_says_it_is_stuck_and_loses_nothing() {
    let backlog = Backlog::start().await;
    let collector = backlog
        .collector("collector-0", &["--stuck-after", "2s", "--workers", "1"])
        .await;
    assert_eq!(readyz(&collector).await.0, 200);
    let ch = &backlog.clickhouse;
    ch.query("DETACH TABLE rp_report_keys").await.unwrap();

    const N: u64 = 40;
    let mut generator = ReportGenerator::new(
        rallypoint_testkit::reports::two_region_candidates(),
        31,
        false,
    );
    for _ in 0..N {
        backlog.publish(&large_report(&mut generator)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let why = loop {
        let (status, body) = readyz(&collector).await;
        if status == 503 {
            break body;
        }
        assert!(Instant::now() < deadline, "/readyz stayed {status}: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(why.contains("stuck") && why.contains("has waited"), "{why}");
    // Long enough for a batch split down to single reports (three failures
    // a level, 200 ms backoff on) to dead-letter its first ones: it must not.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let stats = collector.stats().await.unwrap();
    assert_eq!(
        stats["dead_letters"], 0,
        "good reports were dead-lettered: {stats}"
    );
    assert_eq!(stats["elections_stored"], 0, "{stats}");

    ch.query("ATTACH TABLE rp_report_keys").await.unwrap();
    stats_when(&collector, |s| s["elections_stored"].as_u64() == Some(N)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while readyz(&collector).await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "/readyz stayed red after recovery"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for sql in [
        "SELECT count() FROM rp_elections",
        "SELECT uniqExact(report_id) FROM rp_candidates",
        "SELECT countMerge(elections) FROM rp_elections_minute",
    ] {
        assert_eq!(ch.count(sql).await.unwrap(), N, "{sql}");
    }
    assert_eq!(
        ch.count("SELECT count() FROM rp_dead_letters")
            .await
            .unwrap(),
        0
    );
    backlog.stop(vec![collector]).await;
}

/// A TCP proxy in front of ClickHouse that, once, lets a large request
/// through (an insert: the server commits it) and then eats the answer,
/// keeping the connection open and silent: the one fault here that a real
/// server cannot be made to produce on cue. TLS passes through untouched; the request is
/// told apart from key lookups by its size.
struct AnswerEater {
    addr: std::net::SocketAddr,
    eaten: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl AnswerEater {
    /// Bytes a client must have sent on a connection before its answers
    /// are eaten: more than any lookup, less than a batch of large reports.
    const REQUEST_BYTES: usize = 64 * 1024;

    async fn start(upstream: std::net::SocketAddr) -> AnswerEater {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let eaten = std::sync::Arc::new(AtomicUsize::new(0));
        let armed = std::sync::Arc::new(AtomicBool::new(true));
        let counter = eaten.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let (armed, counter) = (armed.clone(), counter.clone());
                tokio::spawn(async move {
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let sent = std::sync::Arc::new(AtomicUsize::new(0));
                    let sent_up = sent.clone();
                    let up = tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        while let Ok(n) = client_read.read(&mut buf).await {
                            if n == 0 || server_write.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            sent_up.fetch_add(n, Ordering::Relaxed);
                        }
                    });
                    let mut buf = vec![0u8; 16 * 1024];
                    let mut eating = false;
                    while let Ok(n) = server_read.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if !eating
                            && sent.load(Ordering::Relaxed) > Self::REQUEST_BYTES
                            && armed.swap(false, Ordering::Relaxed)
                        {
                            // The answer to a committed insert, and all
                            // after it on this connection: never delivered,
                            // and the connection stays open, silent.
                            counter.fetch_add(1, Ordering::Relaxed);
                            eating = true;
                        }
                        if eating {
                            continue;
                        }
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    up.abort();
                });
            }
        });
        AnswerEater { addr, eaten }
    }
}

/// ClickHouse commits an insert whose answer never reaches the collector
/// (a dropped connection, a lost packet): the collector gives up on the
/// request at its I/O deadline instead of waiting for ever, stores the batch
/// again, and the report keys keep every report counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_whose_answer_is_lost_is_counted_once() {
    let backlog = Backlog::start().await;
    let upstream: std::net::SocketAddr = format!("127.0.0.1:{}", backlog.clickhouse.https_port)
        .parse()
        .unwrap();
    let eater = AnswerEater::start(upstream).await;
    const N: u64 = 60;
    let mut generator = ReportGenerator::new(
        rallypoint_testkit::reports::two_region_candidates(),
        41,
        false,
    );
    for _ in 0..N {
        backlog.publish(&large_report(&mut generator)).await;
    }
    let collector = backlog
        .collector_via(
            &format!("https://{}", eater.addr),
            "collector-0",
            &[
                "--clickhouse-io-timeout",
                "3s",
                "--workers",
                "1",
                "--batch-wait",
                "1s",
            ],
        )
        .await;
    let stats = stats_when(&collector, |s| s["elections_stored"].as_u64() == Some(N)).await;
    assert_eq!(
        eater.eaten.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the proxy never ate an answer: the test did not test"
    );
    assert!(
        stats["insert_failures"].as_u64().unwrap() >= 1,
        "the lost answer was not noticed: {stats}"
    );
    let ch = &backlog.clickhouse;
    for sql in [
        "SELECT count() FROM rp_elections",
        "SELECT uniqExact(report_id) FROM rp_candidates",
        "SELECT countMerge(elections) FROM rp_elections_minute",
    ] {
        assert_eq!(ch.count(sql).await.unwrap(), N, "{sql}");
    }
    backlog.stop(vec![collector]).await;
}
