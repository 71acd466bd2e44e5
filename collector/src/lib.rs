//! The rallypoint collector: election reports from JetStream into ClickHouse.
//!
//! * [`streams`] — the regional streams and the central stream that sources them;
//! * [`rows`] — a message to rows, or a dead letter with a reason;
//! * [`store`] — exactly-once writes to ClickHouse, by report id;
//! * [`keys`] — which reports are stored, filed by the report's own clock;
//! * [`in_flight`] — report ids this process is storing right now;
//! * [`schema`] — tables, rollups and migrations (ClickHouse 18.16 to current);
//! * [`layout`] — the schema on one server or replicated over a cluster;
//! * [`ingest`] — the consume → store → acknowledge loop;
//! * [`lease`] — one active collector at a time, the others standing by;
//! * [`retention`] — partition drops where the server has no TTL;
//! * [`rebuild`] — rollups of whole days rebuilt from the raw tables.

pub mod config;
pub mod http;
pub mod in_flight;
pub mod ingest;
pub mod keys;
pub mod layout;
pub mod lease;
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
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::config::{CollectorConfig, SetupConfig};
use crate::stats::Stats;
use crate::store::Store;
use rallypoint_service::clickhouse::ClickHouseArgs;

/// How collectors appear to NATS; their permissions allow replies under this
/// inbox prefix only.
pub const COLLECTOR_IDENTITY: rallypoint_service::nats::ClientIdentity<'static> =
    rallypoint_service::nats::ClientIdentity {
        name: "rallypoint-collector",
        inbox_prefix: rallypoint_protocol::subjects::COLLECTOR_INBOX_PREFIX,
        hears_itself: true,
    };

/// The administrator's statements (a migration's backfill, a day's rebuild)
/// send nothing until they finish, which can take minutes on a large table:
/// their I/O deadline is at least ten minutes, whatever the running
/// collector's is. The Job's own deadline still bounds them.
pub(crate) fn for_long_statements(login: &ClickHouseArgs) -> ClickHouseArgs {
    let mut login = login.clone();
    login.io_timeout = login.io_timeout.max(Duration::from_secs(600));
    login
}

/// Creates or updates the streams and the consumer, then returns: the one
/// step that needs JetStream administrator rights.
pub async fn setup(config: SetupConfig) -> anyhow::Result<()> {
    let nats = rallypoint_service::nats::connect(
        &config.nats,
        rallypoint_service::nats::ClientIdentity {
            name: "rallypoint-collector setup",
            inbox_prefix: rallypoint_protocol::subjects::ADMIN_INBOX_PREFIX,
            hears_itself: true,
        },
    )
    .await?;
    let js = async_nats::jetstream::new(nats.clone());
    let bounds = config.layout.stream_bounds()?;
    let store = Store::open(&config.clickhouse, config.retention_days)
        .await
        .context(
            "cannot set up the ClickHouse schema (are these the administrator's credentials?)",
        )?;
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
        retry("the collector lease bucket", || {
            lease::ensure_bucket(
                &js,
                &layout.central_region,
                layout.central_replicas,
                config.lease_ttl,
            )
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
/// Stores telemetry while it holds the collector lease (see `lease`), and
/// stands by, ready, while another process does.
pub async fn run(
    config: CollectorConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let batch_bytes = config.batch_bytes()?;
    let nats = rallypoint_service::nats::connect(&config.nats, COLLECTOR_IDENTITY).await?;
    let js = async_nats::jetstream::new(nats.clone());

    let stats = Arc::new(Stats::default());
    stats::register_instruments(&stats);
    let progress = Arc::new(progress::Progress::default());
    let started = Arc::new(std::sync::OnceLock::new());
    let listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("cannot listen on --http-listen {}", config.http_listen))?;
    let router = http::router(http::Shared {
        stats: stats.clone(),
        store: started.clone(),
        progress: progress.clone(),
        stuck_after: config.stuck_after,
    });
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });

    let mut shutdown = std::pin::pin!(shutdown);
    let dependencies = async {
        let store = Arc::new(retry("ClickHouse", || Store::connect(&config.clickhouse)).await);
        // The streams, the consumer and the lease bucket are `setup`'s to make;
        // until it has run (a Job next to this Deployment, say), wait and
        // say so.
        let consumer = retry("JetStream consumer", || {
            streams::open_consumer(&js, &config.consumer.consumer)
        })
        .await;
        let leases = retry("the collector lease bucket", || lease::Leases::open(&js)).await;
        (store, consumer, leases)
    };
    let (store, consumer, leases) = tokio::select! {
        ready = dependencies => ready,
        _ = &mut shutdown => {
            server.abort();
            tracing::info!("collector stopped before it started");
            return Ok(());
        }
    };
    let _ = started.set(store.clone());
    let background = vec![
        server,
        tokio::spawn(ingest::watch_lag(consumer.clone(), stats.clone())),
    ];

    let result = loop {
        let lease = tokio::select! {
            lease = leases.acquire(&config.consumer.consumer) => lease,
            _ = &mut shutdown => break Ok(()),
        };
        stats.active.store(1, Relaxed);
        tracing::info!(consumer = %config.consumer.consumer, workers = config.workers, "collecting election reports");
        let (lost, release) = (CancellationToken::new(), CancellationToken::new());
        let validity = lease.validity();
        let keeper = tokio::spawn(lease.keep(lost.clone(), release.clone()));
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
                lease: validity.clone(),
            };
            workers.spawn(ingest.run(stop.clone()));
        }
        // A worker that ends (stopped, its lease lapsed, or its consumer
        // gone) ends them all; each finishes the batch it is storing first,
        // and the lease is released only once none is writing.
        let (mut result, stopping) = tokio::select! {
            ended = workers.join_next() => (flatten(ended), false),
            _ = lost.cancelled() => (Ok(()), false),
            _ = &mut shutdown => (Ok(()), true),
        };
        stop.cancel();
        while let Some(ended) = workers.join_next().await {
            if result.is_ok() {
                result = flatten(Some(ended));
            }
        }
        release.cancel();
        let _ = keeper.await;
        stats.active.store(0, Relaxed);
        if stopping || result.is_err() {
            break result;
        }
        // The lease lapsed or was taken over: stand by for it again.
    };
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
