//! Relay fan-out benchmark: one sender, N receivers, fixed-size packets on
//! loopback, through a real relay — against raw async-nats pub/sub (one
//! publisher connection, N subscriber connections) on the same NATS server in
//! the same run.
//!
//! Two phases per path:
//! * **latency**: packets at a moderate fixed rate; each carries its send time
//!   and every receiver records arrival − send (stamped when read off the
//!   socket). The relay's *added* latency is its percentile minus NATS's.
//! * **throughput**: the sender sends as fast as its connection accepts; each
//!   receiver counts what it got between the first send and its last arrival.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use rallypoint_client::TransportKind;
use rallypoint_client_native::{Peer, media};
use rallypoint_protocol::v1::{TrackKind, server_frame};

use super::{Rig, latency_histogram, summary_ms};
use rallypoint_testkit::nats::{NatsAccess, NatsRole};
use rallypoint_testkit::tokens::DevIssuer;

#[derive(Debug, Clone, clap::Args)]
pub struct RelayBenchArgs {
    /// Receivers in the room.
    #[arg(long, default_value_t = 10)]
    pub receivers: usize,
    /// Payload bytes per packet.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Packets in the latency phase.
    #[arg(long, default_value_t = 5_000)]
    pub latency_packets: u64,
    /// Packets per second in the latency phase.
    #[arg(long, default_value_t = 1_000)]
    pub latency_rate: u64,
    /// Packets in the throughput phase.
    #[arg(long, default_value_t = 50_000)]
    pub throughput_packets: u64,
    /// Client transport through the relay.
    #[arg(long, value_enum, default_value = "ws")]
    pub transport: BenchTransport,
    /// NATS as deployed (`on`: TLS and NKey users), plain (`off`), or both
    /// one after the other with the cost of security as ratios (`compare`).
    #[arg(long, value_enum, default_value = "on")]
    pub nats_security: NatsSecurityMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NatsSecurityMode {
    On,
    Off,
    Compare,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BenchTransport {
    Ws,
    Wt,
}

/// One path's measurements.
pub struct PathResult {
    pub latency: Histogram<u64>,
    pub latency_delivered: u64,
    /// Packets per second each receiver got, averaged over receivers.
    pub throughput_per_receiver: f64,
    pub throughput_delivered_fraction: f64,
}

/// Both paths measured against one NATS server, secured or not.
struct Measurement {
    nats_latency: (Histogram<u64>, f64),
    nats_throughput: Blast,
    relay_latency: (Histogram<u64>, f64),
    relay_throughput: Blast,
    /// The relay's counters over the relay path's throughput phase.
    blast: RelayCounts,
}

pub async fn run(args: RelayBenchArgs) -> anyhow::Result<()> {
    let transport = match args.transport {
        BenchTransport::Ws => TransportKind::WebSocket,
        BenchTransport::Wt => TransportKind::WebTransport,
    };
    println!();
    println!(
        "relay fan-out: 1 sender -> {} receivers, {} B packets, relay over {:?}",
        args.receivers, args.size, transport
    );
    println!(
        "latency phase: {} packets at {}/s; throughput phase: {} packets as fast as accepted",
        args.latency_packets, args.latency_rate, args.throughput_packets
    );
    let modes: &[bool] = match args.nats_security {
        NatsSecurityMode::On => &[true],
        NatsSecurityMode::Off => &[false],
        NatsSecurityMode::Compare => &[false, true],
    };
    let mut results = Vec::new();
    for &secure in modes {
        let measurement = measure(&args, transport, secure).await?;
        print_measurement(&measurement, secure, &args);
        results.push(measurement);
    }
    if let [plain, secured] = &results[..] {
        let (pp50, pp99, _) = summary_ms(&plain.relay_latency.0);
        let (sp50, sp99, _) = summary_ms(&secured.relay_latency.0);
        println!();
        println!(
            "cost of NATS TLS + NKeys on the relay path: latency p50 {:+.3} ms, p99 {:+.3} ms; \
             throughput secured / plain: relay {:.2}, raw NATS {:.2}",
            sp50 - pp50,
            sp99 - pp99,
            secured.relay_throughput.per_receiver / plain.relay_throughput.per_receiver,
            secured.nats_throughput.per_receiver / plain.nats_throughput.per_receiver,
        );
    }
    Ok(())
}

async fn measure(
    args: &RelayBenchArgs,
    transport: TransportKind,
    secure: bool,
) -> anyhow::Result<Measurement> {
    let dir = tempfile::tempdir()?;
    let label = if secure { "TLS + NKeys" } else { "plain" };
    eprintln!("[bench] starting one NATS server ({label}) and one relay");
    let secret = "bench-secret";
    // A blast measures the forwarding path, not the per-sender budgets a
    // call is held to.
    let relay_args = [
        "--media-queue",
        "4096",
        "--media-bytes-per-second",
        "4000000000",
        "--media-frames-per-second",
        "4000000",
    ]
    .map(String::from)
    .to_vec();
    let rig = Rig::start(dir.path(), secure, transport, secret, relay_args).await?;
    let relay = rig.relay();
    // The raw NATS baseline runs over the same link security as the relay's.
    let baseline = rig.nats_access(NatsRole::Admin);

    eprintln!("[bench] raw NATS ({label}): latency phase");
    let nats_latency = nats_path_latency(&baseline, args).await?;
    let nats_pid = rig.nats.servers()[0]
        .pid()
        .ok_or_else(|| anyhow::anyhow!("the NATS server exited"))?;
    let relay_pid = relay
        .pid()
        .ok_or_else(|| anyhow::anyhow!("the relay exited"))?;
    eprintln!("[bench] raw NATS ({label}): throughput phase");
    let nats_meter = CpuMeter {
        relay: None,
        nats: nats_pid,
    };
    let nats_throughput = nats_path_throughput(&baseline, args, &nats_meter).await?;
    eprintln!("[bench] relay ({transport:?}, NATS {label}): latency phase");
    let issuer = DevIssuer::new(secret);
    let candidate = relay.candidate(transport);
    let relay_latency = relay_path_latency(&candidate, &issuer, args).await?;
    eprintln!("[bench] relay ({transport:?}, NATS {label}): throughput phase");
    let before = relay.stats().await?;
    let relay_meter = CpuMeter {
        relay: Some(relay_pid),
        nats: nats_pid,
    };
    let relay_throughput = relay_path_throughput(&candidate, &issuer, args, &relay_meter).await?;
    let blast = RelayCounts::between(&before, &relay.stats().await?)?;
    rig.stop().await;
    Ok(Measurement {
        nats_latency,
        nats_throughput,
        relay_latency,
        relay_throughput,
        blast,
    })
}

/// The processes that forward a path's packets — nats-server, and the
/// relay on the relay path — whose CPU time is read from `/proc/<pid>/stat`
/// (10 ms ticks).
struct CpuMeter {
    relay: Option<u32>,
    nats: u32,
}

/// CPU seconds of the forwarding processes (the relay's 0 on raw NATS).
#[derive(Debug, Clone, Copy)]
struct CpuSeconds {
    relay: f64,
    nats: f64,
}

impl CpuMeter {
    /// What each process has used so far.
    fn read(&self) -> anyhow::Result<CpuSeconds> {
        Ok(CpuSeconds {
            relay: self.relay.map(cpu_seconds).transpose()?.unwrap_or(0.0),
            nats: cpu_seconds(self.nats)?,
        })
    }

    /// What each process has used since `before`.
    fn since(&self, before: CpuSeconds) -> anyhow::Result<CpuSeconds> {
        let now = self.read()?;
        Ok(CpuSeconds {
            relay: now.relay - before.relay,
            nats: now.nats - before.nats,
        })
    }
}

/// A throughput phase's outcome.
struct Blast {
    /// Packets per second each receiver got, averaged over receivers.
    per_receiver: f64,
    /// Share of all expected packets the receivers got.
    delivered: f64,
    /// CPU of the forwarding processes from the first send to the
    /// receivers' end (which waits 3 s past the last arrival when packets
    /// are missing).
    cpu: CpuSeconds,
    /// Datagrams the sender's WebTransport connection put on the wire.
    sender_wire: Option<u64>,
}

impl Blast {
    /// Packets the receivers got per CPU-second of the forwarding
    /// processes: the machine's other work (the bench's own senders and
    /// receivers, which share its cores) taken out.
    fn per_cpu_second(&self, args: &RelayBenchArgs) -> f64 {
        let got = self.delivered * (args.throughput_packets * args.receivers as u64) as f64;
        got / (self.cpu.relay + self.cpu.nats).max(1e-3)
    }
}

/// CPU time (user + system) `pid` has used so far, in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    rallypoint_testkit::usage::cpu_seconds(pid)
        .ok_or_else(|| anyhow::anyhow!("cannot read /proc/{pid}/stat (did the process exit?)"))
}

/// What the relay did with the throughput phase's frames, from its own
/// counters: where a blast was lost, in front of the relay or in it.
struct RelayCounts {
    /// Media frames the relay read from the sender.
    taken_in: u64,
    /// Frames it queued to receivers.
    forwarded: u64,
    /// Frames it dropped for receivers whose queue was full.
    dropped: u64,
    /// Frames it dropped for every receiver, its room task being behind.
    room_behind: u64,
    /// Frames it published to NATS (for other relays: none in a settled room).
    published: u64,
}

impl RelayCounts {
    fn between(before: &serde_json::Value, after: &serde_json::Value) -> anyhow::Result<Self> {
        let delta = |key: &str| -> anyhow::Result<u64> {
            let read = |stats: &serde_json::Value| {
                stats[key].as_u64().ok_or_else(|| {
                    anyhow::anyhow!("the relay's /stats has no counter {key}: {stats}")
                })
            };
            Ok(read(after)?.saturating_sub(read(before)?))
        };
        Ok(RelayCounts {
            taken_in: delta("media_packets_in")?,
            forwarded: delta("media_packets_out")?,
            dropped: delta("media_dropped")?,
            room_behind: delta("media_room_behind")?,
            published: delta("media_published")?,
        })
    }
}

fn print_measurement(m: &Measurement, secure: bool, args: &RelayBenchArgs) {
    let (np50, np99, nmax) = summary_ms(&m.nats_latency.0);
    let (rp50, rp99, rmax) = summary_ms(&m.relay_latency.0);
    let (nats_tput, nats_frac) = (m.nats_throughput.per_receiver, m.nats_throughput.delivered);
    let (relay_tput, relay_frac) = (
        m.relay_throughput.per_receiver,
        m.relay_throughput.delivered,
    );
    println!();
    println!(
        "NATS {}:",
        if secure {
            "with TLS and NKey users (as deployed)"
        } else {
            "plain TCP, anonymous"
        }
    );
    println!(
        "| path | p50 ms | p99 ms | max ms | delivered (latency) | throughput pkts/s per receiver | delivered (throughput) |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| raw NATS | {np50:.3} | {np99:.3} | {nmax:.3} | {:.2}% | {nats_tput:.0} | {:.2}% |",
        m.nats_latency.1 * 100.0,
        nats_frac * 100.0
    );
    println!(
        "| relay | {rp50:.3} | {rp99:.3} | {rmax:.3} | {:.2}% | {relay_tput:.0} | {:.2}% |",
        m.relay_latency.1 * 100.0,
        relay_frac * 100.0
    );
    println!(
        "added latency by the relay: p50 {:+.3} ms, p99 {:+.3} ms (target: p99 <= 1 ms)",
        rp50 - np50,
        rp99 - np99
    );
    println!(
        "relay throughput / raw NATS throughput: {:.2} (target: >= 0.70)",
        relay_tput / nats_tput
    );
    let RelayCounts {
        taken_in,
        forwarded,
        dropped,
        room_behind,
        published,
    } = m.blast;
    let sent = args.throughput_packets.max(1);
    // On WebTransport the sender's connection says what left it, so a loss
    // between it and the relay's reading is the relay's: its QUIC stack
    // keeps a bounded number of datagrams it has not read.
    let on_the_wire = match m.relay_throughput.sender_wire {
        Some(wire) => format!(
            "; the sender's connection put {wire} on the wire, {} of them not read by the relay",
            wire.saturating_sub(taken_in)
        ),
        None => String::new(),
    };
    println!(
        "where the relay path's blast went: the relay read {taken_in} of the {sent} frames \
         sent ({:.1}%{on_the_wire}); its room task, behind, dropped {room_behind} of them \
         for every receiver; it forwarded {forwarded} ({:.2} per frame read, {} receivers), \
         dropped {dropped} for receivers whose queue was full and published {published} to \
         NATS for other relays",
        100.0 * taken_in as f64 / sent as f64,
        forwarded as f64 / taken_in.max(1) as f64,
        args.receivers,
    );
    let (nats_per_cpu, relay_per_cpu) = (
        m.nats_throughput.per_cpu_second(args),
        m.relay_throughput.per_cpu_second(args),
    );
    let (nats_cpu, relay_cpu) = (m.nats_throughput.cpu, m.relay_throughput.cpu);
    println!(
        "packets the receivers got per CPU-second of the forwarding processes: raw NATS \
         {nats_per_cpu:.0} (nats-server {:.2} s), relay {relay_per_cpu:.0} (relay {:.2} s + \
         nats-server {:.2} s); ratio {:.2}",
        nats_cpu.nats,
        relay_cpu.relay,
        relay_cpu.nats,
        relay_per_cpu / nats_per_cpu,
    );
}

fn payload(size: usize, sent_us: u64) -> Bytes {
    let mut buf = BytesMut::with_capacity(size.max(8));
    buf.put_u64(sent_us);
    buf.resize(size.max(8), 0xab);
    buf.freeze()
}

fn sent_us(payload: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(payload.get(..8)?.try_into().ok()?))
}

/// (histogram of all receivers, delivered fraction)
async fn nats_path_latency(
    nats: &NatsAccess,
    args: &RelayBenchArgs,
) -> anyhow::Result<(Histogram<u64>, f64)> {
    let origin = Instant::now();
    let subject = "bench.latency";
    let mut receivers = Vec::new();
    for _ in 0..args.receivers {
        let client = nats.connect().await?;
        let mut sub = client.subscribe(subject).await?;
        client.flush().await?;
        let expected = args.latency_packets;
        receivers.push(tokio::spawn(async move {
            let mut h = latency_histogram();
            let mut n = 0;
            while n < expected {
                match tokio::time::timeout(Duration::from_secs(3), sub.next()).await {
                    Ok(Some(m)) => {
                        let now = origin.elapsed().as_micros() as u64;
                        if let Some(sent) = sent_us(&m.payload) {
                            h.record(now.saturating_sub(sent).max(1)).ok();
                        }
                        n += 1;
                    }
                    _ => break,
                }
            }
            drop(client);
            (h, n)
        }));
    }
    let publisher = nats.connect().await?;
    let gap = Duration::from_secs_f64(1.0 / args.latency_rate as f64);
    let mut tick = tokio::time::interval(gap);
    for _ in 0..args.latency_packets {
        tick.tick().await;
        let now = origin.elapsed().as_micros() as u64;
        publisher.publish(subject, payload(args.size, now)).await?;
    }
    publisher.flush().await?;
    collect_latency(receivers, args).await
}

async fn collect_latency(
    receivers: Vec<tokio::task::JoinHandle<(Histogram<u64>, u64)>>,
    args: &RelayBenchArgs,
) -> anyhow::Result<(Histogram<u64>, f64)> {
    let mut all = latency_histogram();
    let mut delivered = 0;
    for r in receivers {
        let (h, n) = r.await?;
        all.add(h)?;
        delivered += n;
    }
    let expected = args.latency_packets * args.receivers as u64;
    Ok((all, delivered as f64 / expected as f64))
}

/// (packets/s per receiver, delivered fraction)
async fn nats_path_throughput(
    nats: &NatsAccess,
    args: &RelayBenchArgs,
    meter: &CpuMeter,
) -> anyhow::Result<Blast> {
    let subject = "bench.throughput";
    let start = Arc::new(std::sync::OnceLock::<Instant>::new());
    let mut receivers = Vec::new();
    for _ in 0..args.receivers {
        let client = nats
            .options()?
            .subscription_capacity(1 << 16)
            .connect(nats.urls())
            .await?;
        let mut sub = client.subscribe(subject).await?;
        client.flush().await?;
        let expected = args.throughput_packets;
        receivers.push(tokio::spawn(async move {
            let mut n = 0;
            let mut last = Instant::now();
            while n < expected {
                match tokio::time::timeout(Duration::from_secs(3), sub.next()).await {
                    Ok(Some(_)) => {
                        n += 1;
                        last = Instant::now();
                    }
                    _ => break,
                }
            }
            drop(client);
            (n, last)
        }));
    }
    let publisher = nats.connect().await?;
    let body = payload(args.size, 0);
    let cpu_before = meter.read()?;
    start.get_or_init(Instant::now);
    for _ in 0..args.throughput_packets {
        publisher.publish(subject, body.clone()).await?;
    }
    publisher.flush().await?;
    let (per_receiver, delivered) =
        collect_throughput(receivers, *start.get().unwrap(), args).await?;
    Ok(Blast {
        per_receiver,
        delivered,
        cpu: meter.since(cpu_before)?,
        sender_wire: None,
    })
}

async fn collect_throughput(
    receivers: Vec<tokio::task::JoinHandle<(u64, Instant)>>,
    start: Instant,
    args: &RelayBenchArgs,
) -> anyhow::Result<(f64, f64)> {
    let mut rates = Vec::new();
    let mut delivered = 0;
    for r in receivers {
        let (n, last) = r.await?;
        delivered += n;
        let secs = last.duration_since(start).as_secs_f64().max(1e-6);
        rates.push(n as f64 / secs);
    }
    let mean = rates.iter().sum::<f64>() / rates.len() as f64;
    let expected = args.throughput_packets * args.receivers as u64;
    Ok((mean, delivered as f64 / expected as f64))
}

async fn room(
    candidate: &rallypoint_client::Candidate,
    issuer: &DevIssuer,
    receivers: usize,
    room: &str,
) -> anyhow::Result<(Peer, Vec<Peer>)> {
    let t = Duration::from_secs(10);
    let token = |user: &str| {
        rallypoint_client_native::identity(issuer.mint(room, user, user, Duration::from_secs(3600)))
    };
    let mut sender = Peer::connect(candidate, &token("sender"), t).await?;
    sender.join(room, 0, t).await?;
    let mut peers = Vec::new();
    for i in 0..receivers {
        let mut peer = Peer::connect(candidate, &token(&format!("r{i}")), t).await?;
        peer.join(room, 0, t).await?;
        peers.push(peer);
    }
    // Measured as a call runs after its first seconds: a relay publishes a
    // new room's media to NATS too until it knows no other relay serves
    // the room (a roster beat and a second, reviewed on the next beat).
    tokio::time::sleep(ROOM_SETTLES).await;
    Ok((sender, peers))
}

/// Past a new room's start on the relay (see `room`): its default roster
/// beat (1 s), a second more, and the beat that notices.
const ROOM_SETTLES: Duration = Duration::from_millis(3_500);

async fn relay_path_latency(
    candidate: &rallypoint_client::Candidate,
    issuer: &DevIssuer,
    args: &RelayBenchArgs,
) -> anyhow::Result<(Histogram<u64>, f64)> {
    let origin = Instant::now();
    let (sender, peers) = room(candidate, issuer, args.receivers, "bench-latency").await?;
    let mut receivers = Vec::new();
    for mut peer in peers {
        let expected = args.latency_packets;
        receivers.push(tokio::spawn(async move {
            let mut h = latency_histogram();
            let mut n = 0;
            while n < expected {
                match tokio::time::timeout(Duration::from_secs(3), peer.recv()).await {
                    Ok(Some(received)) => {
                        if let Some(server_frame::Kind::Media(m)) = received.frame.kind {
                            let at = received.at.duration_since(origin).as_micros() as u64;
                            h.record(at.saturating_sub(m.capture_us).max(1)).ok();
                            n += 1;
                        }
                    }
                    _ => break,
                }
            }
            (h, n)
        }));
    }
    let gap = Duration::from_secs_f64(1.0 / args.latency_rate as f64);
    let mut tick = tokio::time::interval(gap);
    let body = payload(args.size, 0);
    for seq in 0..args.latency_packets {
        tick.tick().await;
        let now = origin.elapsed().as_micros() as u64;
        sender.send_media(TrackKind::Audio, seq, now, false, body.clone());
    }
    let result = collect_latency(receivers, args).await;
    drop(sender);
    result
}

async fn relay_path_throughput(
    candidate: &rallypoint_client::Candidate,
    issuer: &DevIssuer,
    args: &RelayBenchArgs,
    meter: &CpuMeter,
) -> anyhow::Result<Blast> {
    let (sender, peers) = room(candidate, issuer, args.receivers, "bench-throughput").await?;
    let mut receivers = Vec::new();
    for mut peer in peers {
        let expected = args.throughput_packets;
        receivers.push(tokio::spawn(async move {
            let mut n = 0;
            let mut last = Instant::now();
            while n < expected {
                match tokio::time::timeout(Duration::from_secs(3), peer.recv()).await {
                    Ok(Some(received)) => {
                        if matches!(received.frame.kind, Some(server_frame::Kind::Media(_))) {
                            n += 1;
                            last = received.at;
                        }
                    }
                    _ => break,
                }
            }
            (n, last)
        }));
    }
    let body = payload(args.size, 0);
    let wire_before = sender.conn.datagrams_sent();
    let cpu_before = meter.read()?;
    let start = Instant::now();
    for seq in 0..args.throughput_packets {
        if sender.conn.transport() == TransportKind::WebTransport {
            // As fast as the sender's connection accepts: a datagram the
            // connection has no room for would be dropped by the sender's
            // own QUIC stack, before the relay sees it.
            let frame = media(TrackKind::Audio, seq, 0, false, body.clone());
            if !sender.conn.send_datagram_when_room(&frame).await {
                anyhow::bail!("the blasting sender's WebTransport connection closed");
            }
        } else {
            sender.send_media(TrackKind::Audio, seq, 0, false, body.clone());
        }
        if seq % 256 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let (per_receiver, delivered) = collect_throughput(receivers, start, args).await?;
    let cpu = meter.since(cpu_before)?;
    let sender_wire = sender
        .conn
        .datagrams_sent()
        .zip(wire_before)
        .map(|(now, then)| now - then);
    drop(sender);
    Ok(Blast {
        per_receiver,
        delivered,
        cpu,
        sender_wire,
    })
}
