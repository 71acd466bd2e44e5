//! The rallypoint relay: a regional edge that browsers and native clients reach
//! over WebSocket or WebTransport, joined to the other regions through a NATS
//! super-cluster.
//!
//! Layers, outside in:
//! * [`transport`] — WebSocket (axum) and WebTransport (wtransport) adapters;
//! * [`session`] — the per-connection protocol (Hello, probes, Join, media);
//! * [`rooms`] — room membership, roster and media fan-out over NATS;
//! * [`intake`] — election telemetry validation, enrichment and publishing.
//!
//! Beneath them, [`outbox`]: what the relay sends one client, which
//! sessions, rooms and the intake all write to and the transports drain.

pub mod auth;
pub mod backbone;
pub mod budget;
pub mod config;
pub mod http;
pub mod intake;
pub mod keyframe_gate;
pub mod metrics;
pub mod outbox;
pub mod rate;
pub mod report_budget;
pub mod rooms;
pub mod session;
pub mod state;
pub mod tls;
pub mod transport;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::config::{RelayConfig, TransportKind};
use crate::metrics::Stats;
use crate::state::RelayState;
use crate::transport::http_server::{self, Deadlines};

/// Sockets the admin listener holds at once: probes and scrapes only.
const ADMIN_CONNECTIONS: usize = 64;

/// Runs the relay until `shutdown` resolves, then drains: every client gets
/// `Drain`, new connections are refused, and the relay exits when the last
/// client has gone or the drain grace period ends.
pub async fn run(config: RelayConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    config.validate()?;
    // Returns at once (retry_on_initial_connect): a bad key file or GeoIP
    // database still fails the start before anything listens.
    let nats = connect_nats(&config).await?;
    let stats = Arc::new(Stats::default());
    metrics::register_instruments(&stats, &config.relay_id, &config.region);
    let identity = if config.serves(TransportKind::WebTransport) || config.tls.ws_tls {
        Some(tls::load(&config.tls).await?)
    } else {
        None
    };
    let (drain_tx, drain_rx) = watch::channel(false);
    let cut_off = backbone::watch_cut_off(nats.clone(), config.limits.nats_loss_grace);
    let relay = Arc::new(RelayState::assemble(
        config.clone(),
        nats.clone(),
        stats.clone(),
        drain_rx.clone(),
        identity.as_ref().map(|i| i.cert_hash),
        cut_off,
    )?);
    tokio::spawn(report_budget::share(
        relay.report_rates.clone(),
        nats.clone(),
        config.region.clone(),
        config.relay_id.clone(),
    ));

    let http_tls = match (&identity, config.tls.ws_tls) {
        (Some(identity), true) => Some(identity.http_tls_config()?),
        _ => None,
    };
    let tcp = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("cannot listen on --http-listen {}", config.http_listen))?;
    let admin_tcp = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("cannot listen on --admin-listen {}", config.admin_listen))?;
    let deadlines = Deadlines {
        tls_handshake: config.limits.handshake_timeout,
        request_header: config.limits.handshake_timeout,
    };
    let http = tokio::spawn(http_server::serve(
        tcp,
        http_tls,
        http::public_router(relay.clone()),
        relay.budget.clone(),
        deadlines,
        drain_rx.clone(),
    ));
    // What /readyz and /stats report beyond the counters (readiness, NATS,
    // the connection budget), as gauges for /metrics and OTLP too.
    metrics::register_state_instruments(&relay);
    // The admin listener keeps answering while draining (/readyz says so);
    // it stops with the process.
    let (_admin_stop_tx, admin_stop) = watch::channel(false);
    let admin = tokio::spawn(http_server::serve(
        admin_tcp,
        None,
        http::admin_router(relay.clone()),
        budget::ConnectionBudget::new(ADMIN_CONNECTIONS),
        deadlines,
        admin_stop,
    ));

    let mut wt_endpoint = None;
    if let Some(identity) = identity.filter(|_| config.serves(TransportKind::WebTransport)) {
        let server_config = transport::wt::server_config(config.wt_listen, identity.identity)?;
        let endpoint = Arc::new(
            wtransport::Endpoint::server(server_config)
                .with_context(|| format!("cannot listen on --wt-listen {}", config.wt_listen))?,
        );
        let accepting = tokio::spawn(transport::wt::accept_loop(
            relay.clone(),
            endpoint.clone(),
            drain_rx.clone(),
        ));
        wt_endpoint = Some((endpoint, accepting));
        tracing::info!(
            listen = %config.wt_listen,
            self_signed = identity.self_signed,
            "serving WebTransport"
        );
    }
    tracing::info!(
        relay_id = %config.relay_id,
        region = %config.region,
        http = %config.http_listen,
        admin = %config.admin_listen,
        transports = ?config.transports,
        "relay started"
    );

    shutdown.await;
    tracing::info!(
        clients = stats.connections_active(),
        grace = ?config.drain_grace,
        "draining: telling every client to move"
    );
    let _ = drain_tx.send(true);
    let deadline = tokio::time::Instant::now() + config.drain_grace;
    while stats.connections_active() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let remaining = stats.connections_active();
    if remaining > 0 {
        tracing::warn!(
            remaining,
            "drain grace period over; closing the remaining connections"
        );
    }
    if let Some((endpoint, accepting)) = wt_endpoint {
        // The accept loop must be gone before the endpoint closes under it.
        let _ = accepting.await;
        endpoint.close(wtransport::VarInt::from_u32(2), b"relay shut down");
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), http).await;
    admin.abort();
    // NATS may be gone already (the whole machine is stopping): do not wait on it.
    let _ = tokio::time::timeout(Duration::from_secs(1), nats.flush()).await;
    tracing::info!("relay stopped");
    Ok(())
}

async fn connect_nats(config: &RelayConfig) -> anyhow::Result<async_nats::Client> {
    rallypoint_service::nats::connect(
        &config.nats,
        rallypoint_service::nats::ClientIdentity {
            name: &format!("rallypoint-relay {}", config.relay_id),
            inbox_prefix: rallypoint_protocol::subjects::RELAY_INBOX_PREFIX,
            // The room tasks fan local media out themselves (see `rooms`).
            hears_itself: false,
        },
    )
    .await
}
