//! The rallypoint collector: election reports from JetStream into ClickHouse.
//!
//! * [`streams`] — the regional streams and the central stream that sources them;
//! * [`rows`] — a message to rows, or a dead letter with a reason;
//! * [`store`] — exactly-once writes to ClickHouse, by report id;
//! * [`keys`] — which reports are stored, filed by the report's own clock;
//! * [`in_flight`] — report ids this process is storing right now;
//! * [`schema`] — tables, rollups and migrations (ClickHouse 18.16 to current);
//! * [`ingest`] — the consume → store → acknowledge loop;
//! * [`retention`] — partition drops where the server has no TTL;
//! * [`rebuild`] — rollups of whole days rebuilt from the raw tables.

pub mod config;
pub mod http;
pub mod in_flight;
pub mod ingest;
pub mod keys;
pub mod progress;
pub mod rebuild;
pub mod retention;
pub mod rows;
pub mod schema;
pub mod stats;
pub mod store;
pub mod streams;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::config::{CollectorConfig, RebuildConfig, SetupConfig};
use crate::stats::Stats;
use crate::store::Store;
use rallypoint_service::clickhouse::ClickHouseArgs;

/// How collectors appear to NATS; their permissions allow replies under this
/// inbox prefix only.
pub const COLLECTOR_IDENTITY: rallypoint_service::nats::ClientIdentity<'static> =
    rallypoint_service::nats::ClientIdentity {
        name: "rallypoint-collector",
        inbox_prefix: rallypoint_protocol::subjects::COLLECTOR_INBOX_PREFIX,
    };

/// Rebuilds the rollups of the days `config` names, printing each as it
/// goes; refuses today and later (reports still arrive for them).
pub async fn rebuild_rollups(config: RebuildConfig) -> anyhow::Result<()> {
    if config.from > config.to {
        anyhow::bail!("--from {} is after --to {}", config.from, config.to);
    }
    let store = Store::connect(&for_long_statements(&config.clickhouse)).await?;
    let client = store.client();
    let today: u32 = client
        .query("SELECT toUInt32(toYYYYMMDD(today()))")
        .fetch_one()
        .await
        .context("cannot read ClickHouse's date")?;
    if config.to >= today {
        anyhow::bail!(
            "--to {} is not over yet (ClickHouse's today is {today}): rebuild days before today",
            config.to
        );
    }
    let mut rollups = rebuild::rollups(client).await?;
    if !config.rollup.is_empty() {
        if let Some(unknown) = config
            .rollup
            .iter()
            .find(|name| !rollups.iter().any(|r| &r.table == *name))
        {
            let known: Vec<&str> = rollups.iter().map(|r| r.table.as_str()).collect();
            anyhow::bail!(
                "--rollup {unknown} is not a rollup; the rollups are {}",
                known.join(", ")
            );
        }
        rollups.retain(|r| config.rollup.contains(&r.table));
    }
    // At most ten years of days: a bound for the scan, not a limit anyone meets.
    let days: Vec<u32> = client
        .query(
            "SELECT toUInt32(toYYYYMMDD(toDate(?) + number)) FROM numbers(3660) \
             WHERE toDate(?) + number <= toDate(?) ORDER BY number",
        )
        .bind(day_text(config.from))
        .bind(day_text(config.from))
        .bind(day_text(config.to))
        .fetch_all()
        .await
        .context("cannot list the days")?;
    let expected =
        crate::config::day_number(config.to) - crate::config::day_number(config.from) + 1;
    if days.len() as i64 != expected {
        anyhow::bail!(
            "--from {} --to {} spans {expected} days; rebuild at most ten years at once",
            day_text(config.from),
            day_text(config.to)
        );
    }
    let mut columns = Vec::new();
    for rollup in &rollups {
        columns.push(rebuild::columns(client, &rollup.table).await?);
    }
    let total = days.len() * rollups.len();
    let mut done = 0;
    for day in &days {
        for (rollup, columns) in rollups.iter().zip(&columns) {
            rebuild::rebuild_day(client, rollup, columns, *day).await?;
            done += 1;
            eprintln!(
                "[rebuild] {} for {} ({done}/{total})",
                rollup.table,
                day_text(*day)
            );
        }
    }
    eprintln!("[rebuild] {total} rollup days rebuilt");
    Ok(())
}

/// The administrator's statements (a migration's backfill, a day's rebuild)
/// send nothing until they finish, which can take minutes on a large table:
/// their I/O deadline is at least ten minutes, whatever the running
/// collector's is. The Job's own deadline still bounds them.
fn for_long_statements(login: &ClickHouseArgs) -> ClickHouseArgs {
    let mut login = login.clone();
    login.io_timeout = login.io_timeout.max(Duration::from_secs(600));
    login
}

fn day_text(day: u32) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        day / 10_000,
        day / 100 % 100,
        day % 100
    )
}

/// Creates or updates the streams and the consumer, then returns: the one
/// step that needs JetStream administrator rights.
pub async fn setup(config: SetupConfig) -> anyhow::Result<()> {
    let nats = rallypoint_service::nats::connect(
        &config.nats,
        rallypoint_service::nats::ClientIdentity {
            name: "rallypoint-collector setup",
            inbox_prefix: rallypoint_protocol::subjects::ADMIN_INBOX_PREFIX,
        },
    )
    .await?;
    let js = async_nats::jetstream::new(nats.clone());
    let bounds = config.layout.stream_bounds()?;
    let store = Store::open(
        &for_long_statements(&config.clickhouse),
        config.retention_days,
    )
    .await
    .context("cannot set up the ClickHouse schema (are these the administrator's credentials?)")?;
    if !store.version.has_ttl() {
        let dropped = retention::drop_expired(&store, config.retention_days).await?;
        tracing::info!(
            cleared = dropped,
            "expired partitions dropped and expired dead letters deleted"
        );
    }
    let deadline = Duration::from_secs(60);
    let work = async {
        let layout = &config.layout;
        // Right after the servers start, the meta group may still be electing
        // its leader, and a new central stream its own: try again a while.
        let stream = retry("JetStream streams", || {
            streams::ensure(
                &js,
                &layout.regions,
                &layout.central_region,
                layout.central_replicas,
                &bounds,
            )
        })
        .await;
        retry("JetStream consumer", || {
            streams::consumer(&stream, &config.consumer.consumer)
        })
        .await;
    };
    tokio::time::timeout(deadline, work).await.map_err(|_| {
        anyhow::anyhow!(
            "setup did not finish within {deadline:?}: is JetStream up in cluster {} and are these admin credentials?",
            config.layout.central_region
        )
    })?;
    nats.flush().await.ok();
    tracing::info!(
        stream = streams::CENTRAL_STREAM,
        consumer = %config.consumer.consumer,
        "telemetry streams and consumer are set up"
    );
    Ok(())
}

/// Runs until `shutdown` resolves; a batch being stored is finished first.
pub async fn run(
    config: CollectorConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let batch_bytes = config.batch_bytes()?;
    let nats = rallypoint_service::nats::connect(&config.nats, COLLECTOR_IDENTITY).await?;
    let js = async_nats::jetstream::new(nats.clone());

    let store = Arc::new(retry("ClickHouse", || Store::connect(&config.clickhouse)).await);
    // The streams and the consumer are `setup`'s to make; until it has run
    // (a Job next to this Deployment, say), wait and say so.
    let consumer = retry("JetStream consumer", || {
        streams::open_consumer(&js, &config.consumer.consumer)
    })
    .await;

    let stats = Arc::new(Stats::default());
    stats::register_instruments(stats.clone());
    let progress = Arc::new(progress::Progress::default());
    let listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("cannot listen on --http-listen {}", config.http_listen))?;
    let router = http::router(http::Shared {
        stats: stats.clone(),
        store: store.clone(),
        progress: progress.clone(),
        stuck_after: config.stuck_after,
    });
    let background = vec![
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        }),
        tokio::spawn(ingest::watch_lag(consumer.clone(), stats.clone())),
    ];

    tracing::info!(consumer = %config.consumer.consumer, workers = config.workers, "collecting election reports");
    let stop = CancellationToken::new();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..config.workers {
        let ingest = ingest::Ingest {
            consumer: consumer.clone(),
            store: store.clone(),
            stats: stats.clone(),
            progress: progress.clone(),
            batch_size: config.batch_size,
            batch_bytes,
            batch_wait: config.batch_wait,
        };
        workers.spawn(ingest.run(stop.clone()));
    }
    // The first worker to end (stopped, or its consumer gone) ends them all;
    // each finishes the batch it is storing before it returns.
    let mut result = tokio::select! {
        ended = workers.join_next() => flatten(ended),
        _ = shutdown => Ok(()),
    };
    stop.cancel();
    while let Some(ended) = workers.join_next().await {
        if result.is_ok() {
            result = flatten(Some(ended));
        }
    }
    for task in background {
        task.abort();
    }
    tracing::info!("collector stopped");
    result
}

fn flatten(
    ended: Option<Result<anyhow::Result<()>, tokio::task::JoinError>>,
) -> anyhow::Result<()> {
    match ended {
        Some(Ok(result)) => result,
        Some(Err(e)) => Err(anyhow::anyhow!("an ingest worker failed: {e}")),
        None => Ok(()),
    }
}

/// Retries `attempt` with backoff until it succeeds, saying what it waits for.
async fn retry<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut backoff = Duration::from_millis(200);
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(e) => {
                tracing::warn!("{what} not ready ({e:#}); retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
