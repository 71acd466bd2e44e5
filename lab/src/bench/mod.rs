//! Benchmarks that print numbers and ratios against a baseline measured in the
//! same run (`rallypoint bench …`). Results are recorded in BENCHMARKS.md.

pub mod capacity;
pub mod dashboard;
pub mod election;
pub mod failover;
pub mod handshakes;
pub mod ingest;
pub mod relay;

use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use rallypoint_client::TransportKind;
use rallypoint_testkit::nats::{NatsAccess, NatsRole, SuperCluster, SuperClusterSpec};
use rallypoint_testkit::relays::{RelayProcess, RelaySpec};

/// The `q` quantile (0..=1) of `sorted`, by the nearest rank: what the
/// benchmarks print as p50, p95 and max. `sorted` must not be empty.
pub fn quantile<T: Copy>(sorted: &[T], q: f64) -> T {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// What the relay benchmarks measure on: one nats-server and one relay (or a
/// few, all of one region) serving `transport` through it.
pub struct Rig {
    pub nats: SuperCluster,
    /// At least one; `relays[0]` is the relay of single-relay benchmarks.
    pub relays: Vec<RelayProcess>,
}

/// The region (and NATS cluster) of the rig.
const RIG_REGION: &str = "bench";

impl Rig {
    /// `secure`: NATS with TLS and NKey users, as deployed. `relay_args`:
    /// more relay flags (limits).
    pub async fn start(
        dir: &Path,
        secure: bool,
        transport: TransportKind,
        jwt_secret: &str,
        relay_args: Vec<String>,
    ) -> anyhow::Result<Rig> {
        Self::start_relays(dir, secure, transport, jwt_secret, relay_args, 1).await
    }

    /// Like [`Rig::start`] with `count` relays on the same nats-server.
    pub async fn start_relays(
        dir: &Path,
        secure: bool,
        transport: TransportKind,
        jwt_secret: &str,
        relay_args: Vec<String>,
        count: usize,
    ) -> anyhow::Result<Rig> {
        let spec = SuperClusterSpec::one_server(RIG_REGION, secure);
        let nats = SuperCluster::start(spec, &dir.join("nats")).await?;
        let mut rig = Rig {
            nats,
            relays: Vec::with_capacity(count),
        };
        for i in 0..count.max(1) {
            let relay = RelayProcess::start(
                RelaySpec {
                    region: RIG_REGION.into(),
                    relay_id: format!("{RIG_REGION}-{i}"),
                    transports: vec![transport],
                    nats: rig.nats_access(NatsRole::Relay(RIG_REGION.into())),
                    jwt_secret: jwt_secret.into(),
                    extra_args: relay_args.clone(),
                },
                &dir.join(format!("relay-{i}")),
            )
            .await;
            match relay {
                Ok(relay) => rig.relays.push(relay),
                Err(e) => {
                    // Whatever started is stopped as a finished run stops it.
                    rig.stop().await;
                    return Err(e);
                }
            }
        }
        Ok(rig)
    }

    /// The relay of single-relay benchmarks.
    pub fn relay(&self) -> &RelayProcess {
        &self.relays[0]
    }

    /// How a client with `role` reaches the rig's NATS.
    pub fn nats_access(&self, role: NatsRole) -> NatsAccess {
        self.nats.access(role, RIG_REGION)
    }

    pub async fn stop(mut self) {
        for relay in &mut self.relays {
            relay.stop(Duration::from_secs(3)).await;
        }
        self.nats.stop().await;
    }
}

/// A latency histogram in microseconds (1 µs .. 60 s, 3 significant digits).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// `p50/p99/max` of a histogram in milliseconds, for tables.
pub fn summary_ms(h: &Histogram<u64>) -> (f64, f64, f64) {
    let ms = |us: u64| us as f64 / 1000.0;
    (
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
    )
}
