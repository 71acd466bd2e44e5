//! The rallypoint collector: election reports from JetStream into ClickHouse.
//!
//! * [`streams`] — the regional streams and the central stream that sources them;
//! * [`rows`] — a message to rows, or a dead letter with a reason;
//! * [`store`] — exactly-once writes to ClickHouse, by report id;
//! * [`keys`] — which reports are stored, filed by the report's own clock;
//! * [`in_flight`] — report ids this process is storing right now;
//! * [`schema`] — tables, rollups and migrations (ClickHouse 18.16 to current);
//! * [`ingest`] — the consume → store → acknowledge loop;
//! * [`retention`] — partition drops where the server has no TTL.

pub mod config;
pub mod http;
pub mod in_flight;
pub mod ingest;
pub mod keys;
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

use crate::config::CollectorConfig;
use crate::stats::Stats;
use crate::store::Store;

/// Runs until `shutdown` resolves; a batch being stored is finished first.
pub async fn run(
    config: CollectorConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let bounds = config.stream_bounds()?;
    let batch_bytes = config.batch_bytes()?;
    let nats = async_nats::ConnectOptions::new()
        .name("rallypoint-collector")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(config.nats_urls.clone())
        .await
        .with_context(|| format!("cannot connect to NATS at {}", config.nats_urls.join(",")))?;
    let js = async_nats::jetstream::new(nats.clone());

    let store = Arc::new(
        retry("ClickHouse", || {
            Store::open(
                &config.clickhouse.url,
                &config.clickhouse.user,
                &config.clickhouse.password,
                &config.clickhouse.database,
                config.retention_days,
            )
        })
        .await,
    );
    let stream = retry("JetStream streams", || {
        streams::ensure(
            &js,
            &config.regions,
            &config.central_region,
            config.central_replicas,
            &bounds,
        )
    })
    .await;
    // Right after the streams are created (a fresh stack), the central
    // stream may still be electing its leader: opening the consumer times out.
    let consumer = retry("JetStream consumer", || {
        streams::consumer(&stream, &config.consumer)
    })
    .await;

    let stats = Arc::new(Stats::default());
    stats::register_instruments(stats.clone());
    let listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("cannot listen on --http-listen {}", config.http_listen))?;
    let router = http::router(stats.clone(), store.clone());
    let mut background = vec![
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        }),
        tokio::spawn(ingest::watch_lag(consumer.clone(), stats.clone())),
    ];
    if !store.version.has_ttl() {
        background.push(tokio::spawn(retention::run(
            store.clone(),
            config.retention_days,
        )));
    }

    tracing::info!(consumer = %config.consumer, workers = config.workers, "collecting election reports");
    let stop = CancellationToken::new();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..config.workers {
        let ingest = ingest::Ingest {
            consumer: consumer.clone(),
            store: store.clone(),
            stats: stats.clone(),
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
