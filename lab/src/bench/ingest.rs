//! Telemetry ingest benchmark: election reports published to the regional
//! JetStream streams as fast as JetStream takes them, through the central
//! stream and the collector(s), into ClickHouse 18.16 — all real, all on
//! this machine.
//! Reported: sustained reports/s and candidate rows/s from the first publish
//! to the last row visible in ClickHouse, p50/p99 ingest lag (publish →
//! visible, from polling the stored count), collector peak memory. One and
//! two collectors (the second standing by: see the collector's `lease`) in
//! the same run, with three baselines measured in it: JetStream alone (the
//! same publishing while no collector runs), JetStream consumed (the same
//! publishing while the bench pulls the collectors' durable consumer and
//! acknowledges every message, storing nothing: all the NATS work of the
//! pipeline, without ClickHouse or the collector's decoding) and ClickHouse
//! alone (the collector's writes without NATS). The consumed and end-to-end
//! runs also say where the machine's CPU went, per process, so the ratio can
//! be read: on one machine the collector and ClickHouse take CPU from NATS.
//! `--separate-cores` gives NATS a core of its own, as deployed, for every
//! run that uses it, baselines included, so the ratios compare the pipeline
//! with NATS's own cost rather than with the CPU storage takes from it.

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
    /// Measure ClickHouse alone and stop (no NATS): for comparing changes
    /// to the store or the schema.
    #[arg(long)]
    pub only_clickhouse: bool,
    /// Give NATS a core of its own, as a deployment gives it machines of
    /// its own: the five nats-servers on the first CPU this bench may use,
    /// everything else (ClickHouse, the collectors, the idle relays and
    /// dashboard, the publisher and this bench) on the others, in every run
    /// that uses NATS. The baselines are measured the same way, so the
    /// ratios compare like with like. Needs at least two CPUs.
    #[arg(long)]
    pub separate_cores: bool,
}

pub async fn run(args: IngestBenchArgs) -> anyhow::Result<()> {
    println!(
        "telemetry ingest: {} reports (4 candidates each) per run, JetStream (regional R3/R1 + central R3) -> collector -> ClickHouse 18.16",
        args.reports
    );
    println!();
    println!("ClickHouse alone (the collector's store writing the same rows, no NATS):");
    println!();
    println!(
        "| writers | reports/s | candidate rows/s | ClickHouse core-seconds per 10 000 reports | writer (the bench) core-seconds per 10 000 |"
    );
    println!("|---|---|---|---|---|");
    for writers in [1, args.workers.max(2)] {
        println!(
            "{}",
            clickhouse_alone(args.reports, args.batch_size, writers).await?
        );
    }
    if args.only_clickhouse {
        return Ok(());
    }
    let layout = args.separate_cores.then(CoreLayout::split).transpose()?;
    if let Some(layout) = &layout {
        println!();
        println!(
            "Every run below: the nats-servers on CPU {:?}, ClickHouse, the collectors, the relays, the \
             dashboard and this bench (the publisher) on CPUs {:?}.",
            layout.nats, layout.rest
        );
        rallypoint_testkit::usage::pin_to_cpus(std::process::id(), &layout.rest)?;
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
        let run = one_run(&args, layout.as_ref(), collectors, Mode::Backlog).await?;
        jetstream_alone.push(run.published_per_second);
        println!("{}", run.row);
    }
    let jetstream_alone = jetstream_alone.iter().sum::<f64>() / jetstream_alone.len() as f64;
    println!();
    println!(
        "JetStream consumed: publishing while {} pulls of the collectors' durable consumer acknowledge \
         every message as it arrives, storing nothing (all of the pipeline's NATS work):",
        args.workers
    );
    println!();
    let consumed = one_run(&args, layout.as_ref(), 1, Mode::Consumed).await?;
    println!("| reports/s | ratio to JetStream alone |");
    println!("|---|---|");
    println!(
        "| {:.0} | {:.2} |",
        consumed.stored_per_second,
        consumed.stored_per_second / jetstream_alone
    );
    let mut cpu = vec![("JetStream consumed".to_owned(), consumed.cpu)];
    println!();
    println!(
        "End to end, publishing and collecting at once ({} batches in flight per collector), \
         as a ratio to JetStream alone above ({jetstream_alone:.0} reports/s, the mean of its two runs) \
         and to JetStream consumed ({:.0} reports/s):",
        args.workers, consumed.stored_per_second
    );
    println!();
    println!(
        "| collectors | reports/s | ratio to JetStream alone | ratio to JetStream consumed | candidate rows/s | lag p50 ms | lag p99 ms | collector peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for collectors in [1, 2] {
        let run = one_run(
            &args,
            layout.as_ref(),
            collectors,
            Mode::EndToEnd {
                jetstream_alone,
                consumed: consumed.stored_per_second,
            },
        )
        .await?;
        println!("{}", run.row);
        cpu.push((format!("end to end, {collectors} collector(s)"), run.cpu));
    }
    println!();
    println!(
        "Where the CPU went (core-seconds per 10 000 reports, from the first publish to the last row \
         visible; \"others\" is the rest of the machine: kernel threads, anything else running):"
    );
    println!();
    println!(
        "| run | nats-server (5) | ClickHouse | collector(s) | publisher and bench | others | machine busy % |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (run, cpu) in cpu {
        println!("{}", cpu.row(&run, args.reports));
    }
    Ok(())
}

/// Which CPUs NATS gets, and which the rest of the stack, with
/// `--separate-cores`.
struct CoreLayout {
    nats: Vec<usize>,
    rest: Vec<usize>,
}

impl CoreLayout {
    /// The first CPU this bench may use for NATS, the others for the rest.
    /// Read once, before the bench pins itself to the rest.
    fn split() -> anyhow::Result<CoreLayout> {
        let allowed = rallypoint_testkit::usage::allowed_cpus(std::process::id())?;
        let Some((&first, rest)) = allowed.split_first().filter(|(_, rest)| !rest.is_empty())
        else {
            anyhow::bail!(
                "--separate-cores needs at least two CPUs; this bench may use {allowed:?}: run without it"
            );
        };
        Ok(CoreLayout {
            nats: vec![first],
            rest: rest.to_vec(),
        })
    }

    /// Pins every process of `stack` that is running now, and says how many
    /// threads went where. Only the nats-servers move: the rest were started
    /// by this bench, already pinned to `rest`, and inherited it; pinning
    /// them checks that and counts their threads. (So collectors restarted
    /// later need no second call.)
    fn pin(&self, stack: &Stack) -> anyhow::Result<()> {
        use anyhow::Context;
        use rallypoint_testkit::usage::pin_to_cpus;
        let mut nats_threads = 0;
        for pid in stack.nats.servers().iter().filter_map(|s| s.pid()) {
            nats_threads += pin_to_cpus(pid, &self.nats)
                .with_context(|| format!("pinning nats-server {pid}"))?;
        }
        let rest = stack
            .clickhouse
            .iter()
            .filter_map(|c| c.pid().map(|pid| ("ClickHouse", pid)))
            .chain(
                stack
                    .collectors
                    .iter()
                    .filter_map(|c| c.pid().map(|pid| ("a collector", pid))),
            )
            .chain(
                stack
                    .relays
                    .iter()
                    .filter_map(|r| r.pid().map(|pid| ("a relay", pid))),
            )
            .chain(
                stack
                    .dashboard
                    .iter()
                    .filter_map(|d| d.process.pid().map(|pid| ("the dashboard", pid))),
            );
        let mut rest_threads = 0;
        for (what, pid) in rest {
            rest_threads +=
                pin_to_cpus(pid, &self.rest).with_context(|| format!("pinning {what} ({pid})"))?;
        }
        eprintln!(
            "[bench] pinned {nats_threads} nats-server threads to CPUs {:?}, {rest_threads} threads of the rest to {:?}",
            self.nats, self.rest
        );
        Ok(())
    }
}

/// What a run does while the reports are published.
#[derive(Clone, Copy)]
enum Mode {
    /// The collectors are stopped while publishing (JetStream alone), then
    /// started to drain the backlog.
    Backlog,
    /// The collectors are stopped; the bench itself pulls the collectors'
    /// consumer and acknowledges every message, storing nothing.
    Consumed,
    /// The collectors run throughout; the row compares their rate with the
    /// two baselines.
    EndToEnd { jetstream_alone: f64, consumed: f64 },
}

/// What one run measured.
struct RunResult {
    /// Its table row (backlog and end-to-end runs).
    row: String,
    /// Reports JetStream acknowledged per second while publishing.
    published_per_second: f64,
    /// Reports stored (or, consumed, acknowledged) per second, from the first
    /// publish to the last.
    stored_per_second: f64,
    /// CPU over the same time (end-to-end and consumed runs).
    cpu: CpuUse,
}

/// One run, as `mode` says.
async fn one_run(
    args: &IngestBenchArgs,
    layout: Option<&CoreLayout>,
    collectors: usize,
    mode: Mode,
) -> anyhow::Result<RunResult> {
    // Only end-to-end runs keep the collectors running while publishing.
    let collectors_stopped = !matches!(mode, Mode::EndToEnd { .. });
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
    if collectors_stopped {
        for collector in &mut stack.collectors {
            collector.stop().await;
        }
    }
    if let Some(layout) = layout {
        layout.pin(&stack)?;
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
    let acknowledged = match mode {
        Mode::Consumed => Some(acknowledge_all(&js, args).await?),
        _ => None,
    };
    let cpu_before = CpuSnapshot::take(&stack);
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

    if let Some(acknowledged) = acknowledged {
        let (_, publishing) = publisher.await??;
        let took = acknowledged.await??;
        let cpu = CpuSnapshot::take(&stack).since(&cpu_before);
        stack.stop().await;
        return Ok(RunResult {
            row: String::new(),
            published_per_second: args.reports as f64 / publishing.as_secs_f64(),
            stored_per_second: args.reports as f64 / took.as_secs_f64(),
            cpu,
        });
    }

    if matches!(mode, Mode::Backlog) {
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
            stored_per_second: args.reports as f64 / took,
            cpu: CpuUse::default(),
        });
    }

    let visible = wait_stored(clickhouse, args.reports as u64, started).await?;
    let cpu = CpuSnapshot::take(&stack).since(&cpu_before);
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
    let Mode::EndToEnd {
        jetstream_alone,
        consumed,
    } = mode
    else {
        unreachable!("the other modes returned above");
    };
    let row = format!(
        "| {collectors} | {stored_per_second:.0} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} |",
        stored_per_second / jetstream_alone,
        stored_per_second / consumed,
        rows as f64 / total.as_secs_f64(),
        q(0.5),
        q(0.99),
        peak
    );
    stack.stop().await;
    Ok(RunResult {
        row,
        published_per_second: args.reports as f64 / publishing.as_secs_f64(),
        stored_per_second,
        cpu,
    })
}

/// Pulls the collectors' durable consumer as the collector does (`workers`
/// streams of `batch_size` messages) and acknowledges every message as it
/// arrives, storing nothing, until `args.reports` are acknowledged; the
/// task returns when the last was, timed from its start.
async fn acknowledge_all(
    js: &async_nats::jetstream::Context,
    args: &IngestBenchArgs,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<Duration>>> {
    use futures_util::StreamExt;
    let consumer = rallypoint_collector::streams::open_consumer(js, "collector").await?;
    let reports = args.reports;
    let acknowledged = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let started = Instant::now();
    let mut pulls = tokio::task::JoinSet::new();
    for _ in 0..args.workers {
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(args.batch_size)
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("cannot start consuming: {e}"))?;
        let (acknowledged, done) = (acknowledged.clone(), done.clone());
        pulls.spawn(async move {
            while let Some(message) = messages.next().await {
                let Ok(message) = message else { continue };
                // A plain ack, as the collector sends them.
                if message.ack().await.is_ok()
                    && acknowledged.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
                        == reports
                {
                    done.notify_one();
                }
            }
        });
    }
    Ok(tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(600), done.notified())
            .await
            .map_err(|_| {
                anyhow::anyhow!("the consumer did not acknowledge every report in 10 minutes")
            })?;
        let took = started.elapsed();
        pulls.abort_all();
        Ok(took)
    }))
}

/// CPU time of the stack's parts and of the whole machine, core-seconds:
/// used so far (a snapshot) or between two snapshots.
#[derive(Default, Clone, Copy)]
struct CpuTimes {
    nats: f64,
    clickhouse: f64,
    collectors: f64,
    bench: f64,
    machine: f64,
}

impl CpuTimes {
    fn minus(self, before: CpuTimes) -> CpuTimes {
        CpuTimes {
            nats: self.nats - before.nats,
            clickhouse: self.clickhouse - before.clickhouse,
            collectors: self.collectors - before.collectors,
            bench: self.bench - before.bench,
            machine: self.machine - before.machine,
        }
    }
}

/// CPU time used so far, and when it was read.
struct CpuSnapshot {
    times: CpuTimes,
    at: Instant,
}

/// CPU time used between two snapshots, and the wall time between them.
#[derive(Default)]
struct CpuUse {
    spent: CpuTimes,
    wall: f64,
}

impl CpuSnapshot {
    fn take(stack: &Stack) -> CpuSnapshot {
        use rallypoint_testkit::usage::{cpu_seconds, machine_busy_seconds};
        let sum = |pids: Vec<Option<u32>>| -> f64 {
            pids.into_iter().flatten().filter_map(cpu_seconds).sum()
        };
        CpuSnapshot {
            times: CpuTimes {
                nats: sum(stack.nats.servers().iter().map(|s| s.pid()).collect()),
                clickhouse: sum(vec![stack.clickhouse.as_ref().and_then(|c| c.pid())]),
                collectors: sum(stack.collectors.iter().map(|c| c.pid()).collect()),
                bench: cpu_seconds(std::process::id()).unwrap_or(0.0),
                machine: machine_busy_seconds().unwrap_or(0.0),
            },
            at: Instant::now(),
        }
    }

    /// What was used since `before` (a process stopped in between counts
    /// from its restart: the backlog runs do not use this).
    fn since(&self, before: &CpuSnapshot) -> CpuUse {
        CpuUse {
            spent: self.times.minus(before.times),
            wall: self.at.duration_since(before.at).as_secs_f64(),
        }
    }
}

impl CpuUse {
    /// A table row: core-seconds per 10 000 reports for each part.
    fn row(&self, run: &str, reports: usize) -> String {
        let t = &self.spent;
        let per = |seconds: f64| seconds * 10_000.0 / reports as f64;
        let others = t.machine - t.nats - t.clickhouse - t.collectors - t.bench;
        let cores = rallypoint_testkit::usage::machine_cpus() as f64;
        format!(
            "| {run} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} |",
            per(t.nats),
            per(t.clickhouse),
            per(t.collectors),
            per(t.bench),
            per(others.max(0.0)),
            100.0 * t.machine / (self.wall * cores)
        )
    }
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
    let cpu = |pid: Option<u32>| {
        pid.and_then(rallypoint_testkit::usage::cpu_seconds)
            .unwrap_or(0.0)
    };
    let (clickhouse_before, bench_before) = (cpu(server.pid()), cpu(Some(std::process::id())));
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
    let per_10k = |seconds: f64| seconds * 10_000.0 / reports as f64;
    let clickhouse_cpu = per_10k(cpu(server.pid()) - clickhouse_before);
    let bench_cpu = per_10k(cpu(Some(std::process::id())) - bench_before);
    server.stop().await;
    Ok(format!(
        "| {writers} | {:.0} | {:.0} | {clickhouse_cpu:.2} | {bench_cpu:.2} |",
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
