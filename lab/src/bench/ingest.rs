//! Telemetry ingest benchmark: election reports published to the regional
//! JetStream streams as fast as JetStream takes them, through the central
//! stream and the collector(s), into ClickHouse 18.16 — all real, all on
//! this machine.
//! Reported: sustained reports/s and candidate rows/s from the first publish
//! to the last row visible in ClickHouse, p50/p99 ingest lag (publish →
//! visible, from polling the stored count), collector peak memory. One and
//! two collectors (the second standing by: see the collector's `lease`) in
//! the same run, with two baselines measured in it: JetStream alone (the
//! same publishing while no collector runs) and ClickHouse alone (the
//! collector's writes without NATS).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rallypoint_collector::rows::{ReportRows, rows};
use rallypoint_protocol::encode;
use rallypoint_protocol::v1::{ElectionReport, EnrichedElectionReport};

use rallypoint_testkit::clickhouse::{ClickHouseRole, ClickHouseServer};
use rallypoint_testkit::reports::{ReportGenerator, two_region_candidates};
use rallypoint_testkit::stack::{Stack, StackConfig};

#[derive(Debug, Clone, clap::Args)]
pub struct IngestBenchArgs {
    /// Reports per run.
    #[arg(long, default_value_t = 200_000)]
    pub reports: usize,
    /// Collector batch size.
    #[arg(long, default_value_t = 10_000)]
    pub batch_size: usize,
    /// Batches in flight per collector (the collector's `--workers`).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
}

pub async fn run(args: IngestBenchArgs) -> anyhow::Result<()> {
    println!(
        "telemetry ingest: {} reports (4 candidates each) per run, JetStream (regional R3/R1 + central R3) -> collector -> ClickHouse 18.16",
        args.reports
    );
    println!();
    println!("ClickHouse alone (the collector's store writing the same rows, no NATS):");
    println!();
    println!("| writers | reports/s | candidate rows/s |");
    println!("|---|---|---|");
    for writers in [1, args.workers.max(2)] {
        println!(
            "{}",
            clickhouse_alone(args.reports, args.batch_size, writers).await?
        );
    }
    println!();
    println!(
        "Backlog drain (no collector running while the reports are published: JetStream alone; then the collectors start):"
    );
    println!();
    println!(
        "| collectors | JetStream alone reports/s | drain reports/s | candidate rows/s | collector peak RSS MiB |"
    );
    println!("|---|---|---|---|---|");
    let mut jetstream_alone = Vec::new();
    for collectors in [1, 2] {
        let run = one_run(&args, collectors, None).await?;
        jetstream_alone.push(run.published_per_second);
        println!("{}", run.row);
    }
    let jetstream_alone = jetstream_alone.iter().sum::<f64>() / jetstream_alone.len() as f64;
    println!();
    println!(
        "End to end, publishing and collecting at once ({} batches in flight per collector), \
         as a ratio to JetStream alone above ({jetstream_alone:.0} reports/s, the mean of its two runs):",
        args.workers
    );
    println!();
    println!(
        "| collectors | reports/s | ratio to JetStream alone | candidate rows/s | lag p50 ms | lag p99 ms | collector peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|");
    for collectors in [1, 2] {
        println!(
            "{}",
            one_run(&args, collectors, Some(jetstream_alone)).await?.row
        );
    }
    Ok(())
}

/// What one run measured.
struct RunResult {
    /// Its table row.
    row: String,
    /// Reports JetStream acknowledged per second while publishing.
    published_per_second: f64,
}

/// One run. Without `jetstream_alone` (a backlog run) the collectors are
/// stopped while publishing, and the row says how fast JetStream alone took
/// the reports and how fast the collectors drain them afterwards; with it,
/// they run throughout, and the row compares their rate with it.
async fn one_run(
    args: &IngestBenchArgs,
    collectors: usize,
    jetstream_alone: Option<f64>,
) -> anyhow::Result<RunResult> {
    let backlog = jetstream_alone.is_none();
    let dir = tempfile::tempdir()?;
    eprintln!("[bench] starting the stack ({collectors} collector(s))");
    let mut stack = Stack::start(StackConfig {
        dir: dir.path().to_path_buf(),
        http: "127.0.0.1:0".parse()?,
        jwt_secret: None,
        dev_tokens: false,
        relay_args: Vec::new(),
        scenarios: Vec::new(),
        telemetry: true,
        collector_args: vec![
            "--batch-size".into(),
            args.batch_size.to_string(),
            "--batch-wait".into(),
            "100ms".into(),
            "--workers".into(),
            args.workers.to_string(),
        ],
        stream_args: Vec::new(),
    })
    .await?;
    for _ in 1..collectors {
        stack.add_collector().await?;
    }
    if backlog {
        for collector in &mut stack.collectors {
            collector.stop().await;
        }
    }

    // Reports are generated as they are published, stamped with the time a
    // relay would have received them (the collector's duplicate check looks at
    // that time range, as it would in production).
    let mut generator = ReportGenerator::new(stack.candidates(), 42, true);
    let nats = stack
        .nats
        .access(rallypoint_testkit::nats::NatsRole::Admin, "us-east")
        .connect()
        .await?;
    let js = async_nats::jetstream::new(nats);
    let clickhouse = stack.clickhouse.as_ref().expect("telemetry on");
    let total = args.reports;
    let started = Instant::now();
    let publisher = tokio::spawn(async move {
        let mut published = Vec::with_capacity(total);
        let mut pending = std::collections::VecDeque::new();
        for i in 0..total {
            let report = generator.next_report();
            let region = if i % 3 == 0 { "singapore" } else { "us-east" };
            let id: String = report
                .report_id
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let enriched = enrich(report, region);
            let message = async_nats::jetstream::message::PublishMessage::build()
                .payload(encode(&enriched))
                .message_id(id);
            let subject = rallypoint_protocol::subjects::telemetry_election(region);
            pending.push_back(js.send_publish(subject, message).await?);
            published.push(started.elapsed());
            if pending.len() >= 4096 {
                pending.pop_front().expect("non-empty").await?;
            }
        }
        for ack in pending {
            ack.await?;
        }
        let took = started.elapsed();
        eprintln!("[bench] published {total} in {:.1}s", took.as_secs_f64());
        anyhow::Ok((published, took))
    });

    if backlog {
        let (_, publishing) = publisher.await??;
        let drain_started = Instant::now();
        for collector in &mut stack.collectors {
            collector.restart().await?;
        }
        wait_stored(clickhouse, args.reports as u64, drain_started).await?;
        let took = drain_started.elapsed().as_secs_f64();
        let rows = clickhouse
            .count("SELECT count() FROM rp_candidates")
            .await?;
        let peak = peak_collector_mib(&stack);
        let published_per_second = args.reports as f64 / publishing.as_secs_f64();
        let row = format!(
            "| {collectors} | {published_per_second:.0} | {:.0} | {:.0} | {:.0} |",
            args.reports as f64 / took,
            rows as f64 / took,
            peak
        );
        stack.stop().await;
        return Ok(RunResult {
            row,
            published_per_second,
        });
    }

    let visible = wait_stored(clickhouse, args.reports as u64, started).await?;
    let (published, publishing) = publisher.await??;
    let total = visible.last().expect("polled").0;
    let rows = clickhouse
        .count("SELECT count() FROM rp_candidates")
        .await?;
    let mut lags: Vec<f64> = published
        .iter()
        .enumerate()
        .map(|(i, at)| {
            let seen = visible
                .iter()
                .find(|(_, stored)| *stored > i as u64)
                .map(|(t, _)| *t)
                .unwrap_or(total);
            seen.saturating_sub(*at).as_secs_f64() * 1000.0
        })
        .collect();
    lags.sort_by(f64::total_cmp);
    let q = |p: f64| lags[((lags.len() - 1) as f64 * p) as usize];
    let peak = peak_collector_mib(&stack);
    let stored_per_second = args.reports as f64 / total.as_secs_f64();
    let row = format!(
        "| {collectors} | {stored_per_second:.0} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} |",
        stored_per_second / jetstream_alone.expect("an end-to-end run has its baseline"),
        rows as f64 / total.as_secs_f64(),
        q(0.5),
        q(0.99),
        peak
    );
    stack.stop().await;
    Ok(RunResult {
        row,
        published_per_second: args.reports as f64 / publishing.as_secs_f64(),
    })
}

/// The largest peak resident memory of the stack's collectors, MiB.
fn peak_collector_mib(stack: &Stack) -> f64 {
    let peak = stack
        .collectors
        .iter()
        .filter_map(|c| c.peak_memory())
        .max()
        .unwrap_or(0);
    peak as f64 / (1024.0 * 1024.0)
}

/// A report as a relay would publish it, received now.
fn enrich(report: ElectionReport, region: &str) -> EnrichedElectionReport {
    let received_ms = rallypoint_service::clock::unix_millis();
    EnrichedElectionReport {
        report: Some(report),
        relay_id: format!("{region}-bench"),
        relay_region: region.into(),
        received_ms,
        asn: 64500,
        isp: "Example".into(),
        country: "SG".into(),
    }
}

/// The collector's store writing `reports` (decoded beforehand, so only the
/// writes are timed) in batches from `writers` concurrent tasks to a fresh
/// ClickHouse: what the end-to-end path could reach if NATS cost nothing.
async fn clickhouse_alone(
    reports: usize,
    batch_size: usize,
    writers: usize,
) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    eprintln!("[bench] ClickHouse alone, {writers} writer(s): preparing {reports} reports");
    let mut server = ClickHouseServer::start(dir.path()).await?;
    let store = Arc::new(
        rallypoint_collector::store::Store::open(&server.login(ClickHouseRole::Admin).args(), 90)
            .await?,
    );
    let mut generator = ReportGenerator::new(two_region_candidates(), 42, true);
    let mut batches = Vec::new();
    let mut batch: Vec<ReportRows> = Vec::with_capacity(batch_size);
    for i in 0..reports {
        let region = if i % 3 == 0 { "singapore" } else { "us-east" };
        let payload = encode(&enrich(generator.next_report(), region));
        batch.push(
            rows(&payload)
                .map_err(|reason| anyhow::anyhow!("generated report rejected: {reason}"))?,
        );
        if batch.len() == batch_size {
            batches.push(std::mem::take(&mut batch));
        }
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    let queue = Arc::new(Mutex::new(batches));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..writers {
        let queue = queue.clone();
        let store = store.clone();
        tasks.spawn(async move {
            let mut candidates = 0;
            loop {
                let next = queue.lock().expect("not poisoned").pop();
                let Some(batch) = next else {
                    return anyhow::Ok(candidates);
                };
                candidates += store.write(&batch, &[]).await?.candidates;
            }
        });
    }
    let mut candidates = 0;
    while let Some(done) = tasks.join_next().await {
        candidates += done??;
    }
    let took = started.elapsed().as_secs_f64();
    server.stop().await;
    Ok(format!(
        "| {writers} | {:.0} | {:.0} |",
        reports as f64 / took,
        candidates as f64 / took
    ))
}

/// Polls the stored election count until it reaches `expected`; returns
/// (time since `since`, count) at every poll.
async fn wait_stored(
    clickhouse: &rallypoint_testkit::clickhouse::ClickHouseServer,
    expected: u64,
    since: Instant,
) -> anyhow::Result<Vec<(Duration, u64)>> {
    let mut visible = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last_report = Instant::now();
    loop {
        let stored = clickhouse
            .count("SELECT count() FROM rp_elections")
            .await
            .unwrap_or(0);
        visible.push((since.elapsed(), stored));
        if stored >= expected {
            return Ok(visible);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "ingest did not finish in 10 minutes ({stored} stored)"
        );
        if last_report.elapsed() >= Duration::from_secs(2) {
            eprintln!(
                "[bench] {:>6.1}s: {stored} stored",
                since.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
