//! What every connection of this relay shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use crate::auth::TokenVerifier;
use crate::budget::{ConnectionBudget, SubjectConnections};
use crate::config::RelayConfig;
use crate::intake::{GeoLookup, Intake};
use crate::metrics::Stats;
use crate::rate::SubjectRates;
use crate::report_budget::{AddressSecret, RegionalReportBudget};
use crate::rooms::{Hub, RoomSettings};

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
    /// Every client socket and handshake, from accept on.
    pub budget: ConnectionBudget,
    /// Connections per token subject.
    pub subjects: SubjectConnections,
    /// Election reports per client address and per token subject, across
    /// connections and the region's relays.
    pub report_rates: Arc<RegionalReportBudget>,
    /// Join, Leave and Refresh per token subject, across its connections.
    pub room_op_rates: SubjectRates,
    /// Preparations for a move per token subject, across its connections.
    pub prepare_rates: SubjectRates,
    /// `true` while NATS has been unreachable for longer than its grace
    /// (see [`crate::backbone`]).
    pub cut_off: watch::Receiver<bool>,
    next_conn: AtomicU64,
}

impl RelayState {
    /// Everything a relay's connections share, built from its settings:
    /// the token verifier, the rooms hub and the telemetry intake over
    /// `nats`, and the budgets. `run` and the session fuzz target both
    /// start here.
    pub fn assemble(
        config: RelayConfig,
        nats: async_nats::Client,
        stats: Arc<Stats>,
        draining: watch::Receiver<bool>,
        cert_hash: Option<[u8; 32]>,
        cut_off: watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let verifier = TokenVerifier::from_config(&config.auth)?;
        let geo = GeoLookup::open(&config.telemetry.geoip_db)?;
        let (relay_id, region) = (config.relay_id.clone(), config.region.clone());
        let settings = RoomSettings {
            grace: config.limits.presence_grace,
            beat: config.limits.roster_beat,
            max_size: config.limits.max_room_size,
            publish_all_media: config.limits.publish_all_media,
        };
        let hub = Hub::new(
            nats.clone(),
            relay_id.clone(),
            region.clone(),
            settings,
            stats.clone(),
        );
        let intake = Intake::new(nats.clone(), relay_id, region, geo, stats.clone());
        let address_secret = match &config.telemetry.report_address_key {
            Some(key) => Some(AddressSecret::from_secret(key.expose())?),
            None => {
                tracing::info!(
                    "no --report-address-key: this relay holds its per-address report budget alone"
                );
                None
            }
        };
        Ok(RelayState {
            budget: ConnectionBudget::new(config.limits.max_connections),
            subjects: SubjectConnections::new(config.limits.max_connections_per_token),
            report_rates: Arc::new(RegionalReportBudget::per_minute(
                config.telemetry.reports_per_minute,
                config.telemetry.reports_per_minute_per_address,
                address_secret,
            )),
            room_op_rates: SubjectRates::per_minute(config.limits.room_ops_per_minute),
            prepare_rates: SubjectRates::per_minute(config.limits.prepares_per_minute),
            cut_off,
            config,
            verifier,
            hub,
            stats,
            nats,
            intake,
            draining,
            cert_hash,
            next_conn: AtomicU64::new(1),
        })
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    pub fn is_cut_off(&self) -> bool {
        *self.cut_off.borrow()
    }

    /// Whether a new session may start: not draining, connected to NATS.
    /// (The connection budget was taken at accept already.)
    pub fn accepts_sessions(&self) -> Result<(), String> {
        if self.is_draining() {
            return Err("draining: this relay is shutting down".into());
        }
        let state = self.nats.connection_state();
        if state != async_nats::connection::State::Connected {
            return Err(format!("NATS is {state:?}"));
        }
        Ok(())
    }

    /// Ready means: accepting sessions and below the connection limit.
    pub fn readiness(&self) -> Result<(), String> {
        self.accepts_sessions()?;
        let in_use = self.budget.in_use();
        if in_use >= self.budget.limit() {
            return Err(format!("at the connection limit ({in_use})"));
        }
        Ok(())
    }
}
