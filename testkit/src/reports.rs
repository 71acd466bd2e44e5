//! Realistic election reports, for `rallypoint simulate` and the telemetry
//! tests: a client somewhere in the world (country, ISP, ASN), every
//! candidate of the deployment measured with an RTT that follows from where
//! the client and the region are, the winner the election rule would pick;
//! and [`send`], which delivers them through relays and counts the acks.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rallypoint_client::sim::Rng;
use rallypoint_client::{Candidate, TransportKind};
use rallypoint_client_native::Peer;
use rallypoint_protocol::telemetry::SCHEMA_VERSION;
use rallypoint_protocol::v1::{
    CandidateOutcome, CandidateReport, ClientContext, ClientFrame, DecisionRule, ElectionReport,
    ElectionTrigger, TelemetryReport, client_frame, server_frame, telemetry_report,
};

/// Where simulated clients are: country, ISPs with ASNs, base RTT (ms) to
/// each known region, and a weight (share of clients).
pub struct Market {
    pub country: &'static str,
    pub isps: &'static [(&'static str, u32)],
    pub rtt_ms: &'static [(&'static str, f64)],
    pub weight: f64,
}

/// Public inter-region RTTs are the order of magnitude; each ISP adds its own access latency.
pub const MARKETS: &[Market] = &[
    Market {
        country: "US",
        isps: &[
            ("Comcast", 7922),
            ("Verizon Fios", 701),
            ("T-Mobile US", 21928),
        ],
        rtt_ms: &[("us-east", 22.0), ("singapore", 235.0)],
        weight: 0.30,
    },
    Market {
        country: "SG",
        isps: &[("Singtel", 7473), ("StarHub", 4657), ("M1", 17547)],
        rtt_ms: &[("us-east", 238.0), ("singapore", 6.0)],
        weight: 0.12,
    },
    Market {
        country: "ID",
        isps: &[("Telkomsel", 23693), ("Indosat", 4761)],
        rtt_ms: &[("us-east", 265.0), ("singapore", 28.0)],
        weight: 0.10,
    },
    Market {
        country: "IN",
        isps: &[("Jio", 55836), ("Airtel", 9498)],
        rtt_ms: &[("us-east", 215.0), ("singapore", 62.0)],
        weight: 0.14,
    },
    Market {
        country: "DE",
        isps: &[("Deutsche Telekom", 3320), ("Vodafone DE", 3209)],
        rtt_ms: &[("us-east", 88.0), ("singapore", 162.0)],
        weight: 0.12,
    },
    Market {
        country: "BR",
        isps: &[("Claro BR", 28573), ("Vivo", 26599)],
        rtt_ms: &[("us-east", 118.0), ("singapore", 320.0)],
        weight: 0.08,
    },
    Market {
        country: "AU",
        isps: &[("Telstra", 1221), ("Optus", 4804)],
        rtt_ms: &[("us-east", 205.0), ("singapore", 95.0)],
        weight: 0.07,
    },
    Market {
        country: "JP",
        isps: &[("NTT", 2914), ("KDDI", 2516)],
        rtt_ms: &[("us-east", 155.0), ("singapore", 72.0)],
        weight: 0.07,
    },
];

/// Base RTT (ms) from a market to a region the table does not know.
const UNKNOWN_REGION_RTT_MS: f64 = 180.0;

/// Generates reports for one deployment's candidates.
pub struct ReportGenerator {
    rng: Rng,
    candidates: Vec<Candidate>,
    pub synthetic: bool,
}

impl ReportGenerator {
    pub fn new(candidates: Vec<Candidate>, seed: u64, synthetic: bool) -> Self {
        ReportGenerator {
            rng: Rng::new(seed),
            candidates,
            synthetic,
        }
    }

    fn pick_market(&mut self) -> &'static Market {
        let total: f64 = MARKETS.iter().map(|m| m.weight).sum();
        let mut x = self.rng.unit() * total;
        for market in MARKETS {
            if x < market.weight {
                return market;
            }
            x -= market.weight;
        }
        &MARKETS[0]
    }

    /// One report, as a client in a random market would send it.
    pub fn next_report(&mut self) -> ElectionReport {
        let market = self.pick_market();
        let (isp, asn) = market.isps[(self.rng.next_u64() % market.isps.len() as u64) as usize];
        // Each ISP has a stable extra access delay; each client a little more.
        let access_ms = 2.0 + (asn % 17) as f64 + self.rng.unit() * 8.0;
        let mut reports: Vec<CandidateReport> = Vec::with_capacity(self.candidates.len());
        for candidate in &self.candidates {
            let base = market
                .rtt_ms
                .iter()
                .find(|(r, _)| *r == candidate.region)
                .map(|(_, ms)| *ms)
                .unwrap_or(UNKNOWN_REGION_RTT_MS);
            let failed =
                candidate.transport == TransportKind::WebTransport && self.rng.unit() < 0.03;
            if failed {
                reports.push(CandidateReport {
                    region: candidate.region.clone(),
                    relay_id: candidate.relay_id.clone(),
                    transport: candidate.transport.to_proto() as i32,
                    error: "WebTransport connect timed out (UDP blocked?)".into(),
                    outcome: CandidateOutcome::Failed as i32,
                    endpoint: candidate.endpoint(),
                    shadow: candidate.shadow,
                    ..Default::default()
                });
                continue;
            }
            let rtt_ms = base + access_ms + self.rng.normal().abs() * 2.0;
            let jitter_ms = 0.5 + self.rng.unit() * 4.0;
            let us = |ms: f64| (ms * 1000.0).max(1.0) as u32;
            let samples = 4 + (self.rng.next_u64() % 10) as u32;
            reports.push(CandidateReport {
                region: candidate.region.clone(),
                relay_id: candidate.relay_id.clone(),
                transport: candidate.transport.to_proto() as i32,
                connect_ms: (rtt_ms * 3.0) as u32,
                samples,
                lost: u32::from(self.rng.unit() < 0.05),
                rtt_min_us: us(rtt_ms - jitter_ms),
                rtt_median_us: us(rtt_ms),
                rtt_p95_us: us(rtt_ms + 2.0 * jitter_ms),
                rtt_mean_us: us(rtt_ms + 0.2 * jitter_ms),
                jitter_us: us(jitter_ms),
                outcome: CandidateOutcome::Loser as i32,
                endpoint: candidate.endpoint(),
                shadow: candidate.shadow,
                ..Default::default()
            });
        }
        let winner = reports
            .iter()
            .enumerate()
            .filter(|(i, r)| r.error.is_empty() && !self.candidates[*i].shadow)
            .min_by_key(|(_, r)| r.rtt_median_us)
            .map(|(i, _)| i);
        if let Some(w) = winner {
            reports[w].outcome = CandidateOutcome::Winner as i32;
        }
        let id: [u8; 16] = std::array::from_fn(|_| self.rng.next_u64() as u8);
        let session: [u8; 16] = std::array::from_fn(|_| self.rng.next_u64() as u8);
        let now_ms = rallypoint_service::clock::unix_millis();
        let failover = self.rng.unit() < 0.04;
        ElectionReport {
            schema_version: SCHEMA_VERSION,
            report_id: Bytes::copy_from_slice(&id),
            client_session_id: Bytes::copy_from_slice(&session),
            client_time_ms: now_ms,
            trigger: if failover {
                ElectionTrigger::Failover
            } else {
                ElectionTrigger::Initial
            } as i32,
            rule: if failover {
                DecisionRule::Standby
            } else {
                DecisionRule::Early
            } as i32,
            decision_ms: if failover {
                0
            } else {
                400 + (self.rng.unit() * 800.0) as u32
            },
            winner_index: winner.map(|w| w as u32),
            previous_index: None,
            candidates: reports,
            client: Some(ClientContext {
                platform: "browser".into(),
                client_version: env!("CARGO_PKG_VERSION").into(),
                browser_family: ["chrome", "edge", "firefox"][(self.rng.next_u64() % 3) as usize]
                    .into(),
                effective_connection_type: "4g".into(),
                synthetic: self.synthetic,
                synthetic_country: if self.synthetic {
                    market.country.into()
                } else {
                    String::new()
                },
                synthetic_asn: if self.synthetic { asn } else { 0 },
                synthetic_isp: if self.synthetic {
                    isp.into()
                } else {
                    String::new()
                },
            }),
            reason: "synthetic report from rallypoint simulate".into(),
            session_seq: 0,
        }
    }
}

/// The local stack's shape without a running stack: both regions, WebSocket
/// and WebTransport each (for benchmarks that write reports straight to
/// ClickHouse).
pub fn two_region_candidates() -> Vec<Candidate> {
    let mut candidates = Vec::new();
    for region in ["us-east", "singapore"] {
        for (transport, scheme) in [
            (TransportKind::WebSocket, "ws"),
            (TransportKind::WebTransport, "https"),
        ] {
            candidates.push(Candidate {
                region: region.into(),
                relay_id: format!("{region}-{scheme}-0"),
                transport,
                url: format!("{scheme}://{region}.invalid/"),
                cert_hash: None,
                shadow: false,
            });
        }
    }
    candidates
}

/// Acknowledgements received for sent reports.
#[derive(Debug, Default)]
pub struct SendOutcome {
    pub accepted: u64,
    pub refused: u64,
    pub first_refusal: Option<String>,
}

impl SendOutcome {
    fn count(&mut self, accepted: bool, reason: String) {
        if accepted {
            self.accepted += 1;
        } else {
            self.refused += 1;
            self.first_refusal.get_or_insert(reason);
        }
    }
}

/// Sends `count` reports round-robin over `peers` at `rate` per second and
/// waits for every acknowledgement (or 30 s without one).
pub async fn send(
    peers: Vec<Peer>,
    mut generator: ReportGenerator,
    count: u64,
    rate: u64,
) -> SendOutcome {
    let (ack_tx, mut acks) = tokio::sync::mpsc::unbounded_channel();
    let senders: Vec<_> = peers
        .into_iter()
        .map(|peer| {
            let (sender, mut frames) = peer.conn.into_split();
            let ack_tx = ack_tx.clone();
            tokio::spawn(async move {
                while let Some(received) = frames.recv().await {
                    if let Some(server_frame::Kind::TelemetryAck(ack)) = received.frame.kind
                        && ack_tx.send((ack.accepted, ack.reason)).is_err()
                    {
                        return;
                    }
                }
            });
            sender
        })
        .collect();
    drop(ack_tx);
    let started = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut outcome = SendOutcome::default();
    let mut last_progress = Instant::now();
    for i in 0..count {
        let frame = ClientFrame::of(client_frame::Kind::Telemetry(TelemetryReport {
            kind: Some(telemetry_report::Kind::Election(generator.next_report())),
        }));
        senders[(i as usize) % senders.len()].send(&frame);
        while let Ok((accepted, reason)) = acks.try_recv() {
            outcome.count(accepted, reason);
        }
        if let Some(wait) = (started + gap * (i as u32 + 1)).checked_duration_since(Instant::now())
        {
            tokio::time::sleep(wait).await;
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            eprintln!(
                "[simulate] sent {} of {count}, {} acknowledged",
                i + 1,
                outcome.accepted + outcome.refused
            );
            last_progress = Instant::now();
        }
    }
    while outcome.accepted + outcome.refused < count {
        match tokio::time::timeout(Duration::from_secs(30), acks.recv()).await {
            Ok(Some((accepted, reason))) => outcome.count(accepted, reason),
            _ => break,
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_reports_are_valid_and_elect_the_nearest_region() {
        let candidates = two_region_candidates();
        let mut generator = ReportGenerator::new(candidates, 7, true);
        for _ in 0..500 {
            let report = generator.next_report();
            rallypoint_protocol::telemetry::validate(&report).unwrap();
            let client = report.client.as_ref().unwrap();
            let winner = &report.candidates[report.winner_index.unwrap() as usize];
            if client.synthetic_country == "SG" {
                assert_eq!(winner.region, "singapore");
            }
            if client.synthetic_country == "US" {
                assert_eq!(winner.region, "us-east");
            }
        }
    }
}
