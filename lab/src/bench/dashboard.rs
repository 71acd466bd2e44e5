//! Dashboard latency over a large history: ClickHouse 18.16 seeded with
//! millions of elections (four candidates each, 30 days, eight markets), then
//! every view's queries timed — on the per-minute rollups (what the dashboard
//! runs) and on the raw tables (the baseline) in the same run.

use std::time::{Duration, Instant};

use rallypoint_dashboard::data::{Source, capacity, matrix, outcomes, overview, sessions};
use rallypoint_dashboard::filters::Filters;

use rallypoint_testkit::clickhouse::{ClickHouseRole, ClickHouseServer};

#[derive(Debug, Clone, clap::Args)]
pub struct DashboardBenchArgs {
    /// Elections to seed.
    #[arg(long, default_value_t = 10_000_000)]
    pub elections: u64,
    /// Timed runs per view.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
}

const DAYS: u64 = 30;
const CHUNK: u64 = 1_000_000;

pub async fn run(args: DashboardBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut clickhouse = ClickHouseServer::start(dir.path()).await?;
    rallypoint_collector::store::Store::open(&clickhouse.login(ClickHouseRole::Admin).args(), 90)
        .await?;
    let now = rallypoint_service::clock::unix_seconds();
    let started = Instant::now();
    for offset in (0..args.elections).step_by(CHUNK as usize) {
        let count = CHUNK.min(args.elections - offset);
        clickhouse
            .query(&seed_candidates(offset, count, args.elections, now))
            .await?;
        clickhouse
            .query(&seed_elections(offset, count, args.elections, now))
            .await?;
        eprintln!(
            "[bench] seeded {} of {} elections ({:.0}s)",
            offset + count,
            args.elections,
            started.elapsed().as_secs_f64()
        );
    }
    eprintln!("[bench] merging");
    for table in [
        "rp_elections_minute",
        "rp_rtt_minute",
        "rp_elections_hour",
        "rp_rtt_hour",
        "rp_decisions_hour",
        "rp_rtt_day",
        "rp_elections_day",
        "rp_moves_hour",
    ] {
        clickhouse
            .query(&format!("OPTIMIZE TABLE {table} FINAL"))
            .await?;
    }
    let db = rallypoint_dashboard::data::Db::new(&clickhouse.login(ClickHouseRole::Admin).args())?;
    let now = now as u32;
    println!(
        "dashboard view latency, ClickHouse 18.16 with {} elections ({} candidate rows) over {DAYS} days; {} runs each",
        args.elections,
        args.elections * 4,
        args.runs
    );
    println!();
    println!(
        "| view | range | rollups p50 ms | rollups p95 ms | raw tables p50 ms | raw tables p95 ms |"
    );
    println!("|---|---|---|---|---|---|");
    for range in ["24h", "7d", "30d"] {
        let f = Filters {
            range: Some(range.into()),
            until: Some(now),
            synthetic: Some(1),
            ..Default::default()
        };
        let o_r = time(args.runs, || overview::load(&db, &f, now, Source::Rollup)).await?;
        let o_w = time(args.runs, || overview::load(&db, &f, now, Source::Raw)).await?;
        println!(
            "| overview | {range} | {:.0} | {:.0} | {:.0} | {:.0} |",
            o_r.0, o_r.1, o_w.0, o_w.1
        );
        let m_r = time(args.runs, || matrix::cells(&db, &f, now, Source::Rollup)).await?;
        let m_w = time(args.runs, || matrix::cells(&db, &f, now, Source::Raw)).await?;
        println!(
            "| region × ISP | {range} | {:.0} | {:.0} | {:.0} | {:.0} |",
            m_r.0, m_r.1, m_w.0, m_w.1
        );
        let out = time(args.runs, || outcomes::load(&db, &f, now)).await?;
        println!(
            "| outcomes | {range} | {:.0} | {:.0} | – | – |",
            out.0, out.1
        );
    }
    let f = Filters {
        range: Some("24h".into()),
        until: Some(now),
        synthetic: Some(1),
        ..Default::default()
    };
    let cap = time(args.runs, || capacity::hourly(&db, &f, now)).await?;
    println!(
        "| capacity (sessions by hour, 14 days) | 24h | {:.0} | {:.0} | – | – |",
        cap.0, cap.1
    );
    let question = capacity::WhatIf {
        remove: Some("singapore".into()),
        add: None,
    };
    let what_if = time(args.runs.min(5), || {
        capacity::what_if(&db, &f, now, &question)
    })
    .await?;
    println!(
        "| what-if: remove a region (raw candidates) | 24h | {:.0} | {:.0} | – | – |",
        what_if.0, what_if.1
    );
    let recent = time(args.runs, || sessions::recent(&db, &f, now)).await?;
    println!(
        "| sessions: recent list | 24h | {:.0} | {:.0} | – | – |",
        recent.0, recent.1
    );
    clickhouse.stop().await;
    Ok(())
}

/// p50 and p95 milliseconds of `runs` calls (after one warm-up).
async fn time<T, F, Fut>(runs: usize, mut call: F) -> anyhow::Result<(f64, f64)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    call().await?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        call().await?;
        times.push(started.elapsed());
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok((
        ms(times[(times.len() - 1) / 2]),
        ms(times[((times.len() - 1) as f64 * 0.95).round() as usize]),
    ))
}

/// Markets as SQL arrays: country, ISP, RTT to us-east and singapore (ms).
const COUNTRIES: &str = "['US','SG','ID','IN','DE','BR','AU','JP']";
const ISPS: &str =
    "['Comcast','Singtel','Telkomsel','Jio','Deutsche Telekom','Claro BR','Telstra','NTT']";
const US_EAST_MS: &str = "[22,238,265,215,88,118,205,155]";
const SINGAPORE_MS: &str = "[235,6,28,62,162,320,95,72]";

/// Shared expressions over `number` (0..total): time spread evenly over 30
/// days, session (three elections each), market.
fn columns(total: u64, now: u64) -> String {
    let span = DAYS * 86_400;
    format!(
        "toFixedString(reinterpretAsString(number), 16) AS rid,
         toDateTime({now} - {span} + intDiv(number * {span}, {total})) AS at,
         toFixedString(reinterpretAsString(intDiv(number, 3)), 16) AS sid,
         number % 8 + 1 AS m,
         if(number % 25 = 0, 'failover', 'initial') AS trig"
    )
}

fn seed_candidates(offset: u64, count: u64, total: u64, now: u64) -> String {
    format!(
        "INSERT INTO rp_candidates (report_id, received_at, idx, session_id, trigger, region, relay_id, transport,
            samples, lost, rtt_min_us, rtt_median_us, rtt_p95_us, rtt_mean_us, jitter_us, outcome, country, asn, isp, platform, synthetic)
         SELECT rid, at, toUInt8(idx), sid, trig,
            if(idx < 2, 'us-east', 'singapore') AS region, concat(region, '-0'), if(idx % 2 = 0, 'websocket', 'webtransport'),
            toUInt32(5), toUInt32(number % 50 = 0),
            toUInt32(rtt * 950), toUInt32(rtt * 1000), toUInt32(rtt * 1150), toUInt32(rtt * 1020), toUInt32(800),
            'loser', {COUNTRIES}[m], toUInt32(64500 + m), {ISPS}[m], 'browser', toUInt8(1)
         FROM (SELECT *, {cols}, (if(idx < 2, {US_EAST_MS}[m], {SINGAPORE_MS}[m]) + (number % 97) / 10 + idx % 2) AS rtt
               FROM (SELECT number, idx FROM numbers({offset}, {count}) ARRAY JOIN [0, 1, 2, 3] AS idx))",
        cols = columns(total, now),
    )
}

fn seed_elections(offset: u64, count: u64, total: u64, now: u64) -> String {
    format!(
        "INSERT INTO rp_elections (report_id, received_at, received_ms, client_time_ms, session_id, session_seq,
            relay_id, relay_region, trigger, rule, decision_ms, has_winner, winner_region, winner_relay_id, winner_transport,
            winner_rtt_us, candidates, country, asn, isp, platform, synthetic, reason, schema_version)
         SELECT rid, at, toUInt64(toUInt32(at)) * 1000, toUInt64(toUInt32(at)) * 1000, sid, toUInt32(number % 3),
            concat(region, '-0'), region, trig, if(trig = 'initial', 'early', 'standby'), toUInt32(300 + number % 900), toUInt8(1),
            region, concat(region, '-0'), 'webtransport', toUInt32(rtt * 1000), toUInt8(4),
            {COUNTRIES}[m], toUInt32(64500 + m), {ISPS}[m], 'browser', toUInt8(1), 'seeded', toUInt16(1)
         FROM (SELECT *, {cols},
                  if({US_EAST_MS}[m] <= {SINGAPORE_MS}[m], 'us-east', 'singapore') AS region,
                  (least({US_EAST_MS}[m], {SINGAPORE_MS}[m]) + (number % 97) / 10 + 1) AS rtt
               FROM numbers({offset}, {count}))",
        cols = columns(total, now),
    )
}
