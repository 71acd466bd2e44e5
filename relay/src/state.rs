//! What every connection of this relay shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use crate::auth::TokenVerifier;
use crate::config::RelayConfig;
use crate::intake::Intake;
use crate::metrics::Stats;
use crate::rooms::Hub;

pub struct RelayState {
    pub config: RelayConfig,
    pub verifier: TokenVerifier,
    pub hub: Hub,
    pub stats: Arc<Stats>,
    pub nats: async_nats::Client,
    pub intake: Intake,
    /// Flips to `true` once when the relay starts draining.
    pub draining: watch::Receiver<bool>,
    /// SHA-256 of the WebTransport certificate, for `serverCertificateHashes`.
    pub cert_hash: Option<[u8; 32]>,
    next_conn: AtomicU64,
}

impl RelayState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: RelayConfig,
        verifier: TokenVerifier,
        hub: Hub,
        stats: Arc<Stats>,
        nats: async_nats::Client,
        intake: Intake,
        draining: watch::Receiver<bool>,
        cert_hash: Option<[u8; 32]>,
    ) -> Self {
        RelayState {
            config,
            verifier,
            hub,
            stats,
            nats,
            intake,
            draining,
            cert_hash,
            next_conn: AtomicU64::new(1),
        }
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Ready means: connected to NATS, not draining, below the connection limit.
    pub fn readiness(&self) -> Result<(), String> {
        if self.is_draining() {
            return Err("draining: this relay is shutting down".into());
        }
        let state = self.nats.connection_state();
        if state != async_nats::connection::State::Connected {
            return Err(format!("NATS is {state:?}"));
        }
        let active = self.stats.connections_active();
        if active >= self.config.limits.max_connections as i64 {
            return Err(format!("at the connection limit ({active})"));
        }
        Ok(())
    }
}

/// Microseconds since the unix epoch (the relay's clock in probe answers).
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
