//! The UDP delay proxy: what WebTransport (QUIC) probes and media go through.
//!
//! ```text
//!  client A ─┐                ┌─ socket for A ─┐
//!            ├─ listen socket ┤                ├─ upstream (relay)
//!  client B ─┘                └─ socket for B ─┘
//! ```
//!
//! Each client source address gets its own upstream socket (a "mapping", like
//! a NAT's): the relay sees one 5-tuple per client, which QUIC needs to keep
//! connections apart, and replies find their way back to the right client.
//! A mapping that carried nothing in either direction for
//! [`MAPPING_IDLE_TIMEOUT`] is forgotten.
//!
//! Threads: one reads the listen socket, one per mapping reads its upstream
//! socket; both stamp each datagram's arrival, draw its fate (lost, or delayed
//! by the direction's delay plus normal jitter) and queue it. One release
//! thread sends every queued datagram at its time, in release order.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::path::{Path, Way};
use super::queue::ReleaseQueue;
use super::threads::Threads;
use super::timing::{Impairment, ProxyStats, SeedSource, StatsRecorder};

/// A client mapping with no traffic either way for this long is forgotten (its
/// upstream socket closed); the client's next datagram makes a new one.
pub const MAPPING_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often blocked readers look up from their socket to notice a stop or an
/// idle mapping.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Datagrams waiting for release, over all clients; beyond it they are dropped
/// (netem's default limit is 1000 packets per direction).
const QUEUE_CAPACITY: usize = 10_000;

/// Distinct clients one proxy serves at a time (each costs a socket and a thread).
const MAX_MAPPINGS: usize = 1024;

const MAX_DATAGRAM: usize = 65_536;

/// Forwards UDP between clients and one upstream address, delaying and dropping
/// datagrams as its [`Path`] (a [`LinkSpec`](super::LinkSpec), and the
/// location's access line if any) says. Stops when dropped.
pub struct UdpDelayProxy {
    local_addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    queue: Arc<ReleaseQueue<Outgoing>>,
    stats: Arc<StatsRecorder>,
    threads: Threads,
}

impl UdpDelayProxy {
    /// Listens on `listen` (`127.0.0.1:0` for a free port) and forwards to
    /// `upstream`. `seed` makes jitter and loss reproducible.
    pub fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        path: impl Into<Path>,
        seed: u64,
    ) -> anyhow::Result<UdpDelayProxy> {
        let path = path.into();
        path.link()
            .validate()
            .map_err(|e| anyhow::anyhow!("UDP proxy to {upstream}: {e}"))?;
        let socket = UdpSocket::bind(listen)
            .map_err(|e| anyhow::anyhow!("UDP proxy cannot bind {listen}: {e}"))?;
        socket.set_read_timeout(Some(POLL_INTERVAL))?;
        let local_addr = socket.local_addr()?;

        let stopping = Arc::new(AtomicBool::new(false));
        let queue = Arc::new(ReleaseQueue::new(QUEUE_CAPACITY));
        let stats = Arc::new(StatsRecorder::default());
        let threads = Threads::default();

        start_sender(&queue, &stats, &threads)?;

        let mut seeds = SeedSource::new(seed);
        let client_side = ClientSide {
            socket: Arc::new(socket),
            upstream,
            up: path.impairment(Way::Up, seeds.next_seed()),
            path,
            seeds,
            mappings: HashMap::new(),
            clock: IdleClock::new(),
            queue: Arc::clone(&queue),
            stats: Arc::clone(&stats),
            stopping: Arc::clone(&stopping),
            threads: threads.clone(),
        };
        let started = threads.spawn("udp-proxy-in", move || client_side.run());
        let proxy = UdpDelayProxy {
            local_addr,
            stopping,
            queue,
            stats,
            threads,
        };
        started?;
        Ok(proxy)
    }

    /// Where clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Datagrams forwarded and lost so far, and how punctually.
    pub fn stats(&self) -> ProxyStats {
        self.stats.snapshot()
    }

    /// Stops forwarding, drops queued datagrams, closes every socket and waits
    /// for the proxy's threads (about a tenth of a second at most).
    pub fn stop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.queue.stop();
        self.threads.join_all();
    }
}

impl Drop for UdpDelayProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The thread that sends every queued datagram at its release time.
fn start_sender(
    queue: &Arc<ReleaseQueue<Outgoing>>,
    stats: &Arc<StatsRecorder>,
    threads: &Threads,
) -> std::io::Result<()> {
    let queue = Arc::clone(queue);
    let stats = Arc::clone(stats);
    threads.spawn("udp-proxy-send", move || {
        queue.run(|release_at, outgoing: Outgoing| {
            stats.released(release_at);
            outgoing.send();
        })
    })
}

/// A datagram on its way out.
struct Outgoing {
    socket: Arc<UdpSocket>,
    /// `None` on a connected (upstream) socket.
    to: Option<SocketAddr>,
    payload: Vec<u8>,
}

impl Outgoing {
    fn send(self) {
        let sent = match self.to {
            Some(to) => self.socket.send_to(&self.payload, to),
            None => self.socket.send(&self.payload),
        };
        // A send that fails is a lost datagram, as on a real path.
        if let Err(e) = sent {
            tracing::trace!("UDP proxy could not send a datagram: {e}");
        }
    }
}

/// Milliseconds since the proxy started, cheap to share between threads.
#[derive(Clone, Copy)]
struct IdleClock(Instant);

impl IdleClock {
    fn new() -> IdleClock {
        IdleClock(Instant::now())
    }

    fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

/// One client's upstream socket.
struct Mapping {
    socket: Arc<UdpSocket>,
    /// [`IdleClock`] time of the last datagram in either direction.
    last_active_ms: AtomicU64,
    /// Set when the mapping expired: its reader thread ends.
    closed: AtomicBool,
}

impl Mapping {
    fn touch(&self, clock: IdleClock) {
        self.last_active_ms.store(clock.now_ms(), Ordering::Relaxed);
    }

    fn is_idle(&self, clock: IdleClock) -> bool {
        let idle_ms = clock
            .now_ms()
            .saturating_sub(self.last_active_ms.load(Ordering::Relaxed));
        idle_ms >= MAPPING_IDLE_TIMEOUT.as_millis() as u64
    }
}

/// The listen socket's reader: client → upstream.
struct ClientSide {
    socket: Arc<UdpSocket>,
    upstream: SocketAddr,
    path: Path,
    up: Impairment,
    seeds: SeedSource,
    mappings: HashMap<SocketAddr, Arc<Mapping>>,
    clock: IdleClock,
    queue: Arc<ReleaseQueue<Outgoing>>,
    stats: Arc<StatsRecorder>,
    stopping: Arc<AtomicBool>,
    threads: Threads,
}

impl ClientSide {
    fn run(mut self) {
        let mut buffer = vec![0u8; MAX_DATAGRAM];
        let mut last_sweep = Instant::now();
        while !self.stopping.load(Ordering::SeqCst) {
            match self.socket.recv_from(&mut buffer) {
                Ok((len, client)) => {
                    let arrival = Instant::now();
                    self.forward(client, &buffer[..len], arrival);
                }
                Err(e) => pause_after_error(&e, "UDP proxy listen socket"),
            }
            if last_sweep.elapsed() >= Duration::from_secs(1) {
                self.forget_idle_mappings();
                last_sweep = Instant::now();
            }
        }
        for mapping in self.mappings.values() {
            mapping.closed.store(true, Ordering::SeqCst);
        }
    }

    fn forward(&mut self, client: SocketAddr, payload: &[u8], arrival: Instant) {
        let Some(mapping) = self.mapping_for(client) else {
            return;
        };
        mapping.touch(self.clock);
        if self.up.is_lost() {
            self.stats.lost();
            return;
        }
        let Some(passed) = self.up.through_bottleneck(arrival, payload.len()) else {
            self.stats.lost();
            return;
        };
        let release_at = passed + self.up.delay();
        self.queue.push(
            release_at,
            Outgoing {
                socket: Arc::clone(&mapping.socket),
                to: None,
                payload: payload.to_vec(),
            },
        );
    }

    /// The client's mapping, made on its first datagram.
    fn mapping_for(&mut self, client: SocketAddr) -> Option<Arc<Mapping>> {
        if let Some(mapping) = self.mappings.get(&client) {
            return Some(Arc::clone(mapping));
        }
        if self.mappings.len() >= MAX_MAPPINGS {
            tracing::warn!(
                "UDP proxy to {} serves {MAX_MAPPINGS} clients already; dropping datagrams from {client}",
                self.upstream
            );
            return None;
        }
        match self.open_mapping(client) {
            Ok(mapping) => {
                self.mappings.insert(client, Arc::clone(&mapping));
                Some(mapping)
            }
            Err(e) => {
                tracing::warn!("UDP proxy cannot open an upstream socket for {client}: {e}");
                None
            }
        }
    }

    fn open_mapping(&mut self, client: SocketAddr) -> anyhow::Result<Arc<Mapping>> {
        let any: IpAddr = match self.upstream {
            SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        let socket = UdpSocket::bind((any, 0))?;
        // Connected: the kernel drops datagrams from anyone but the upstream.
        socket.connect(self.upstream)?;
        socket.set_read_timeout(Some(POLL_INTERVAL))?;
        let mapping = Arc::new(Mapping {
            socket: Arc::new(socket),
            last_active_ms: AtomicU64::new(self.clock.now_ms()),
            closed: AtomicBool::new(false),
        });
        let upstream_side = UpstreamSide {
            mapping: Arc::clone(&mapping),
            client,
            client_socket: Arc::clone(&self.socket),
            down: self.path.impairment(Way::Down, self.seeds.next_seed()),
            clock: self.clock,
            queue: Arc::clone(&self.queue),
            stats: Arc::clone(&self.stats),
            stopping: Arc::clone(&self.stopping),
        };
        self.threads
            .spawn("udp-proxy-out", move || upstream_side.run())?;
        Ok(mapping)
    }

    fn forget_idle_mappings(&mut self) {
        let clock = self.clock;
        self.mappings.retain(|_, mapping| {
            let idle = mapping.is_idle(clock);
            if idle {
                mapping.closed.store(true, Ordering::SeqCst);
            }
            !idle
        });
    }
}

/// One mapping's upstream socket reader: upstream → client.
struct UpstreamSide {
    mapping: Arc<Mapping>,
    client: SocketAddr,
    client_socket: Arc<UdpSocket>,
    down: Impairment,
    clock: IdleClock,
    queue: Arc<ReleaseQueue<Outgoing>>,
    stats: Arc<StatsRecorder>,
    stopping: Arc<AtomicBool>,
}

impl UpstreamSide {
    fn run(mut self) {
        let mut buffer = vec![0u8; MAX_DATAGRAM];
        while !self.stopping.load(Ordering::SeqCst) && !self.mapping.closed.load(Ordering::SeqCst) {
            match self.mapping.socket.recv(&mut buffer) {
                Ok(len) => {
                    let arrival = Instant::now();
                    self.forward(&buffer[..len], arrival);
                }
                Err(e) => pause_after_error(&e, "UDP proxy upstream socket"),
            }
        }
    }

    fn forward(&mut self, payload: &[u8], arrival: Instant) {
        self.mapping.touch(self.clock);
        if self.down.is_lost() {
            self.stats.lost();
            return;
        }
        let Some(passed) = self.down.through_bottleneck(arrival, payload.len()) else {
            self.stats.lost();
            return;
        };
        let release_at = passed + self.down.delay();
        self.queue.push(
            release_at,
            Outgoing {
                socket: Arc::clone(&self.client_socket),
                to: Some(self.client),
                payload: payload.to_vec(),
            },
        );
    }
}

/// Read timeouts are how readers poll; "connection refused" is an ICMP error
/// from an earlier send (the upstream is not listening), not a socket failure.
/// Anything else is unexpected: log it and back off briefly instead of spinning.
fn pause_after_error(error: &std::io::Error, socket: &str) {
    match error.kind() {
        ErrorKind::WouldBlock
        | ErrorKind::TimedOut
        | ErrorKind::Interrupted
        | ErrorKind::ConnectionRefused
        | ErrorKind::ConnectionReset => {}
        _ => {
            tracing::debug!("{socket}: {error}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
