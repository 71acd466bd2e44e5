//! One level's numbers as a table row, and where the knee is.

use super::child::ChildRun;

/// A level through the relay and the same level straight over NATS.
pub struct Level {
    pub participants: usize,
    pub relay: ChildRun,
    pub nats: ChildRun,
    /// The relays' resident memory (together) before any load.
    pub idle_rss: Option<u64>,
}

/// Why a series stopped rising.
#[derive(Debug, Clone, PartialEq)]
pub enum Knee {
    RelayCpu(f64),
    Drops(f64),
    LatencyJump { p99_ms: f64, first_p99_ms: f64 },
    MachineBusy(f64),
}

impl std::fmt::Display for Knee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Knee::RelayCpu(cores) => write!(f, "a relay used {cores:.2} cores (>= 0.9)"),
            Knee::Drops(fraction) => {
                write!(f, "{:.3}% of frames dropped (>= 0.1%)", fraction * 100.0)
            }
            Knee::LatencyJump {
                p99_ms,
                first_p99_ms,
            } => write!(
                f,
                "p99 latency {p99_ms:.2} ms, more than 5 ms and 3x the first level's {first_p99_ms:.2} ms"
            ),
            Knee::MachineBusy(cores) => write!(
                f,
                "relay + NATS + load generator used {cores:.2} cores, >= 90% of the machine: \
                 past here the load generator starves the relay"
            ),
        }
    }
}

/// The first reason, if any, that `level` is at or past the knee.
/// `first_p99_ms` is the series' first relay p99. Only the benchmark's own
/// processes count towards a full machine; others are shown per level.
pub fn knee(level: &Level, first_p99_ms: f64, machine_cores: f64) -> Option<Knee> {
    let r = &level.relay;
    let ours = r.cores.relay + r.cores.nats + r.cores.load;
    let (_, added_p99) = added_latency(level);
    if r.cores.busiest_relay >= 0.9 {
        Some(Knee::RelayCpu(r.cores.busiest_relay))
    } else if r.summary.drop_fraction >= 0.001 {
        Some(Knee::Drops(r.summary.drop_fraction))
    } else if added_p99 > 5.0 && r.summary.latency_p99_ms > 3.0 * first_p99_ms {
        Some(Knee::LatencyJump {
            p99_ms: r.summary.latency_p99_ms,
            first_p99_ms,
        })
    } else if ours >= 0.9 * machine_cores {
        Some(Knee::MachineBusy(ours))
    } else {
        None
    }
}

pub fn print_header() {
    println!(
        "| path | participants | offered pkt/s | forwarded pkt/s | relay cores | nats-server cores | load-gen cores \
         | other cores | fwd pkt/s per server core | fwd pkt/s per core incl. NATS | RTP-sized pkt/s per server core \
         | payload MB/s per server core | RSS per connection | p50 ms | p99 ms | drops |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
}

/// Two rows: the relay, then raw NATS; and the relay's added latency.
pub fn print_level(level: &Level) {
    let r = &level.relay;
    let n = &level.nats;
    let rss_per_connection = match (r.relay_rss, level.idle_rss) {
        (Some(now), Some(idle)) => format!(
            "{:.1} KiB",
            (now as f64 - idle as f64) / 1024.0 / r.summary.participants as f64
        ),
        _ => "?".into(),
    };
    // The relay path costs NATS too (its publishes and deliveries to the
    // relay); raw NATS is all NATS.
    row(
        &r.summary.path,
        level.participants,
        r,
        Some(r.cores.relay),
        r.cores.relay + r.cores.nats,
        &rss_per_connection,
    );
    row("raw NATS", level.participants, n, None, n.cores.nats, "-");
}

/// `server_cores`: what forwarded the frames (the relay, or nats-server);
/// `with_nats`: that plus nats-server for the relay path.
fn row(
    path: &str,
    participants: usize,
    run: &ChildRun,
    relay_cores: Option<f64>,
    with_nats: f64,
    rss: &str,
) {
    let s = &run.summary;
    let c = &run.cores;
    let server_cores = relay_cores.unwrap_or(c.nats);
    let per = |x: f64, cores: f64| if cores > 0.0 { x / cores } else { f64::NAN };
    let relay_cores = relay_cores.map_or("-".to_owned(), |cores| format!("{cores:.2}"));
    println!(
        "| {path} | {participants} | {:.0} | {:.0} | {relay_cores} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} | {:.2} | {rss} | {:.2} | {:.2} | {:.3}% |",
        s.offered_per_s,
        s.forwarded_per_s,
        c.nats,
        c.load,
        c.others,
        per(s.forwarded_per_s, server_cores),
        per(s.forwarded_per_s, with_nats),
        per(s.forwarded_rtp_packets_per_s, server_cores),
        per(s.forwarded_payload_bytes_per_s, server_cores) / 1e6,
        s.latency_p50_ms,
        s.latency_p99_ms,
        s.drop_fraction * 100.0,
    );
}

/// The relay's latency over raw NATS's at the same level.
pub fn added_latency(level: &Level) -> (f64, f64) {
    let (r, n) = (&level.relay.summary, &level.nats.summary);
    (
        r.latency_p50_ms - n.latency_p50_ms,
        r.latency_p99_ms - n.latency_p99_ms,
    )
}

#[cfg(test)]
mod tests {
    use super::super::child::Cores;
    use super::*;
    use crate::load::Summary;

    fn run(relay_cores: f64, load_cores: f64, drops: f64, p99_ms: f64) -> ChildRun {
        ChildRun {
            summary: Summary {
                path: "relay-ws".into(),
                rooms: 4,
                participants: 20,
                video: false,
                connect_s: 0.1,
                sent: 1000,
                not_sent: 0,
                expected: 4000,
                received: 4000,
                drop_fraction: drops,
                window_s: 4.0,
                offered_per_s: 1000.0,
                forwarded_per_s: 4000.0,
                forwarded_payload_bytes_per_s: 480_000.0,
                forwarded_rtp_packets_per_s: 4000.0,
                latency_p50_ms: 0.5,
                latency_p99_ms: p99_ms,
                latency_max_ms: p99_ms,
            },
            cores: Cores {
                relay: relay_cores,
                busiest_relay: relay_cores,
                nats: 0.1,
                load: load_cores,
                others: 0.0,
            },
            relay_rss: None,
        }
    }

    fn level(relay: ChildRun) -> Level {
        Level {
            participants: 20,
            relay,
            nats: run(0.0, 0.2, 0.0, 1.0),
            idle_rss: None,
        }
    }

    #[test]
    fn the_knee_names_the_first_limit_reached() {
        let knee_of = |r| knee(&level(r), 1.0, 2.0);
        assert_eq!(knee_of(run(0.3, 0.3, 0.0, 1.2)), None);
        assert_eq!(
            knee_of(run(0.95, 0.3, 0.0, 1.2)),
            Some(Knee::RelayCpu(0.95))
        );
        assert_eq!(knee_of(run(0.3, 0.3, 0.002, 1.2)), Some(Knee::Drops(0.002)));
        // A p99 of 5.5 ms is 5.5x the first level's but under 5 ms above
        // raw NATS's 1 ms.
        assert_eq!(knee_of(run(0.3, 0.3, 0.0, 5.5)), None);
        assert!(matches!(
            knee_of(run(0.3, 0.3, 0.0, 6.5)),
            Some(Knee::LatencyJump { .. })
        ));
        assert!(matches!(
            knee_of(run(0.8, 1.0, 0.0, 1.2)),
            Some(Knee::MachineBusy(_))
        ));
        // Several relays: one of them near a full core is the knee, not
        // their sum.
        let mut spread = run(1.2, 0.3, 0.0, 1.2);
        spread.cores.busiest_relay = 0.6;
        assert_eq!(knee_of(spread), None);
        let mut one_full = run(1.2, 0.3, 0.0, 1.2);
        one_full.cores.busiest_relay = 0.92;
        assert_eq!(knee_of(one_full), Some(Knee::RelayCpu(0.92)));
        // Other processes do not make a knee (they are shown per level).
        let mut busy_elsewhere = run(0.3, 0.3, 0.0, 1.2);
        busy_elsewhere.cores.others = 1.5;
        assert_eq!(knee_of(busy_elsewhere), None);
        assert!(matches!(
            knee_of(run(0.8, 1.0, 0.0, 1.2)),
            Some(Knee::MachineBusy(_))
        ));
    }
}
