//! The TCP delay proxy: what WebSocket connections go through.
//!
//! Each accepted connection gets its own connection to the upstream and two
//! pumps, one per direction. A pump is a reader thread that stamps every chunk
//! it reads with a release time and a writer thread that writes each chunk at
//! that time (sleeping, then spinning the last fraction of a millisecond).
//!
//! TCP is a byte stream, so the model differs from UDP's:
//! * order is kept: a chunk's release time is
//!   `max(previous release, arrival + delay + jitter)` — jitter delays later
//!   bytes behind earlier ones (head-of-line blocking) instead of reordering;
//! * loss cannot drop bytes: a "lost" chunk is released
//!   [`RETRANSMISSION_PENALTY`] later, roughly what a retransmission costs, and
//!   holds back everything after it;
//! * end of stream is a chunk too: a half-close (FIN) is passed on after the
//!   data before it, with the direction's delay;
//! * a reset or error on either side tears both sides down at once (the other
//!   side gets a reset too); this is not delayed;
//! * a bottleneck (`rate_kbit`) passes bytes at its rate and never drops
//!   them; the pump reads no more than its queue (`queue_ms`) has room for,
//!   and nothing while it is full, from a socket with a small receive
//!   buffer (half the queue's bytes, at least [`RECEIVE_BUFFER_FLOOR`]), so
//!   the sender's TCP is held back within a little more than the queue — as
//!   a router's full buffer makes a real sender's congestion control do —
//!   and what it has not sent waits in the sender's own socket and queues.
//!   (Before, the pump read everything and the queue grew without bound: a
//!   WebSocket behind 60 kbit/s carrying 70 kbit/s of audio was seconds
//!   behind after a minute. Then, with a buffer as small as the kernel
//!   allows, the window closed after a few small segments and waited for
//!   the sender's zero-window probes: 40% of the link passed, with stalls of
//!   seconds. And a read larger than the queue passed the bottleneck as one
//!   chunk, released whole: bursts 0.8–2 s apart.)
//! * the proxy's kernel completes the client's handshake at once, so
//!   connecting costs no added round trip; only bytes are delayed. An
//!   upstream that refuses the connection resets the client.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::path::{Path, Way};
use super::scenario::Bottleneck;
use super::threads::Threads;
use super::timing::{Impairment, ProxyStats, SeedSource, StatsRecorder, wait_until};

/// What a lost chunk costs: about one retransmission timeout on a short path
/// (Linux's minimum RTO is 200 ms).
pub const RETRANSMISSION_PENALTY: Duration = Duration::from_millis(200);

/// Connecting to the upstream gives up after this long; the client then gets
/// a reset, as if the relay refused it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest chunk read at once.
const CHUNK_SIZE: usize = 16 * 1024;

/// Chunks in flight per direction (at most 16 MiB); a full pump stops reading,
/// which pushes back on the sender through TCP flow control.
const CHUNKS_IN_FLIGHT: usize = 1024;
/// The least a pump reads in front of a bottleneck: it waits until the
/// queue has room for this much (or, when shorter, is empty), so it never
/// wakes for a few bytes.
const LEAST_READ: usize = 256;
/// The least receive buffer asked for in front of a bottleneck. Smaller,
/// the kernel's window closes after two or three small segments (each
/// costs its buffer far more than its bytes) and opens again only at the
/// sender's zero-window probe, whose interval doubles: a WebSocket of 20 ms
/// audio frames behind 60 kbit/s passed 40% of the link, in bursts with
/// stalls of up to 4 s between (the latency lab's "false" failovers).
const RECEIVE_BUFFER_FLOOR: usize = 4 * 1024;

/// How often a writer blocked on a full socket checks whether its connection
/// was torn down.
const WRITE_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Forwards TCP connections to one upstream address, delaying bytes as its
/// [`Path`] (a [`LinkSpec`](super::LinkSpec), and the location's access line
/// if any) says. Stops when dropped.
pub struct TcpDelayProxy {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Threads,
}

/// What the acceptor, the connection threads and the handle share.
struct Shared {
    upstream: SocketAddr,
    path: Path,
    seeds: Mutex<SeedSource>,
    stopping: AtomicBool,
    /// A partition: new connections are reset, and so were the open ones.
    cut: AtomicBool,
    stats: Arc<StatsRecorder>,
    /// Live connections, so that stopping can tear them down.
    connections: Mutex<Vec<Weak<Connection>>>,
}

impl TcpDelayProxy {
    /// Listens on `listen` (`127.0.0.1:0` for a free port) and forwards each
    /// connection to `upstream`. `seed` makes jitter and loss reproducible.
    pub fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        path: impl Into<Path>,
        seed: u64,
    ) -> anyhow::Result<TcpDelayProxy> {
        let path = path.into();
        path.link()
            .validate()
            .map_err(|e| anyhow::anyhow!("TCP proxy to {upstream}: {e}"))?;
        let up_held = path.bottleneck(Way::Up).map(held_bytes);
        let listener = listen_with_receive_buffer(listen, up_held)
            .map_err(|e| anyhow::anyhow!("TCP proxy cannot listen on {listen}: {e}"))?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            path,
            seeds: Mutex::new(SeedSource::new(seed)),
            stopping: AtomicBool::new(false),
            cut: AtomicBool::new(false),
            stats: Arc::new(StatsRecorder::default()),
            connections: Mutex::new(Vec::new()),
        });
        let threads = Threads::default();
        let acceptor = Acceptor {
            listener,
            shared: Arc::clone(&shared),
            threads: threads.clone(),
        };
        threads.spawn("tcp-proxy-accept", move || acceptor.run())?;
        Ok(TcpDelayProxy {
            local_addr,
            shared,
            threads,
        })
    }

    /// Where clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Chunks forwarded and penalised as lost so far, over all connections,
    /// and how punctually.
    pub fn stats(&self) -> ProxyStats {
        self.shared.stats.snapshot()
    }

    /// Partitions the link: resets every open connection (both sides) and
    /// every new one until [`Self::heal`]. The proxy keeps listening, so its
    /// port stays ours for the heal — a released port can be taken by any
    /// other server in the meantime.
    pub fn cut(&self) {
        let connections = self.shared.connections.lock().expect("connections lock");
        self.shared.cut.store(true, Ordering::SeqCst);
        for connection in connections.iter().filter_map(Weak::upgrade) {
            connection.abort();
        }
    }

    /// Ends a [`Self::cut`]: new connections are forwarded again.
    pub fn heal(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    /// Stops accepting, resets every open connection (both sides) and waits for
    /// the proxy's threads.
    pub fn stop(&mut self) {
        if !self.shared.stopping.swap(true, Ordering::SeqCst) {
            wake_acceptor(self.local_addr);
            let connections = self.shared.connections.lock().expect("connections lock");
            for connection in connections.iter().filter_map(Weak::upgrade) {
                connection.abort();
            }
        }
        self.threads.join_all();
    }
}

impl Drop for TcpDelayProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A blocking `accept` only returns for a connection: make one.
fn wake_acceptor(listening: SocketAddr) {
    let mut target = listening;
    if target.ip().is_unspecified() {
        target.set_ip(match target {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    let _ = TcpStream::connect_timeout(&target, Duration::from_secs(1));
}

struct Acceptor {
    listener: TcpListener,
    shared: Arc<Shared>,
    threads: Threads,
}

impl Acceptor {
    fn run(self) {
        loop {
            let accepted = self.listener.accept();
            if self.shared.stopping.load(Ordering::SeqCst) {
                return;
            }
            match accepted {
                Ok((client, _)) if self.shared.cut.load(Ordering::SeqCst) => {
                    close_with_reset(client);
                }
                Ok((client, _)) => {
                    let shared = Arc::clone(&self.shared);
                    let threads = self.threads.clone();
                    let spawned = self.threads.spawn("tcp-proxy-conn", move || {
                        open_connection(client, &shared, &threads)
                    });
                    if let Err(e) = spawned {
                        tracing::warn!("TCP proxy cannot start a connection thread: {e}");
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, retry.
                    tracing::debug!("TCP proxy accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

/// Connects the upstream for an accepted client and starts both pumps.
fn open_connection(client: TcpStream, shared: &Shared, threads: &Threads) {
    let held = shared.path.bottleneck(Way::Down).map(held_bytes);
    let upstream = match connect_upstream(shared.upstream, held) {
        Ok(upstream) => upstream,
        Err(e) => {
            tracing::debug!("TCP proxy cannot reach {}: {e}", shared.upstream);
            close_with_reset(client);
            return;
        }
    };
    let connection = match Connection::new(client, upstream) {
        Ok(connection) => Arc::new(connection),
        Err(e) => {
            tracing::debug!("TCP proxy cannot set up a connection: {e}");
            return;
        }
    };
    if !register(shared, &connection) {
        return;
    }
    let (up_seed, down_seed) = {
        let mut seeds = shared.seeds.lock().expect("seeds lock");
        (seeds.next_seed(), seeds.next_seed())
    };
    for (direction, seed) in [(Way::Up, up_seed), (Way::Down, down_seed)] {
        let impairment = shared.path.impairment(direction, seed);
        let stats = Arc::clone(&shared.stats);
        if let Err(e) = start_pump(&connection, direction, impairment, stats, threads) {
            tracing::warn!("TCP proxy cannot start a pump thread: {e}");
            connection.abort();
            return;
        }
    }
}

/// Listens on `listen`, with a receive buffer of `receive_buffer` bytes
/// (as the kernel rounds it) when the way up has a bottleneck: accepted
/// sockets inherit it, and set before `listen` it also sizes the window
/// offered in the handshake (set after accepting, the first window is the
/// default's, and a client's first burst is taken whole).
fn listen_with_receive_buffer(
    listen: SocketAddr,
    receive_buffer: Option<usize>,
) -> std::io::Result<TcpListener> {
    let socket = stream_socket(listen, receive_buffer)?;
    // As `TcpListener::bind` does: a restarted lab may rebind at once.
    socket.set_reuse_address(true)?;
    socket.bind(&listen.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// A TCP socket for `address`'s family, with a receive buffer of
/// `receive_buffer` bytes (as the kernel rounds it) when asked: set before
/// it connects or listens, as the window it offers is sized then.
fn stream_socket(
    address: SocketAddr,
    receive_buffer: Option<usize>,
) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if let Some(bytes) = receive_buffer {
        socket.set_recv_buffer_size(bytes)?;
    }
    Ok(socket)
}

/// Connects to the upstream, with a receive buffer of `receive_buffer`
/// bytes (as the kernel rounds it) when the way down has a bottleneck: set
/// before connecting, so the window the upstream is offered is small from
/// the start.
fn connect_upstream(
    upstream: SocketAddr,
    receive_buffer: Option<usize>,
) -> std::io::Result<TcpStream> {
    let socket = stream_socket(upstream, receive_buffer)?;
    socket.connect_timeout(&upstream.into(), CONNECT_TIMEOUT)?;
    Ok(socket.into())
}

/// The receive buffer asked for the socket read in front of a bottleneck:
/// half what its queue holds in bytes, as the kernel doubles what is asked
/// (for its bookkeeping), and at least [`RECEIVE_BUFFER_FLOOR`] (a slow
/// link's queue is a few hundred bytes: see there). What it holds is in
/// flight besides the queue: asked for the queue's whole bytes, a WebSocket
/// behind 500 kbit/s got its frames ~180 ms later.
fn held_bytes(bottleneck: Bottleneck) -> usize {
    let half_the_queue = bottleneck.bytes_per_sec * bottleneck.max_wait.as_secs_f64() / 2.0;
    (half_the_queue.ceil() as usize).max(RECEIVE_BUFFER_FLOOR)
}

/// Adds a connection to the live list; false (and the connection torn down)
/// if the proxy is stopping or cut, checked under the lock `stop` and `cut`
/// abort under.
fn register(shared: &Shared, connection: &Arc<Connection>) -> bool {
    let mut connections = shared.connections.lock().expect("connections lock");
    if shared.stopping.load(Ordering::SeqCst) || shared.cut.load(Ordering::SeqCst) {
        connection.abort();
        return false;
    }
    connections.retain(|c| c.strong_count() > 0);
    connections.push(Arc::downgrade(connection));
    true
}

/// Sets `SO_LINGER` to zero and closes this descriptor: when the socket's
/// last descriptor closes, the peer gets a reset instead of a FIN.
fn close_with_reset(stream: TcpStream) {
    let socket = tokio::net::TcpSocket::from_std_stream(stream);
    let _ = socket.set_zero_linger();
}

/// Both sockets of one proxied connection. Dropping it (when the last pump
/// thread ends) closes them.
struct Connection {
    client: TcpStream,
    upstream: TcpStream,
    aborted: AtomicBool,
}

impl Connection {
    fn new(client: TcpStream, upstream: TcpStream) -> std::io::Result<Connection> {
        for stream in [&client, &upstream] {
            // Chunks must leave when released, not when Nagle's algorithm
            // thinks enough has gathered.
            stream.set_nodelay(true)?;
            stream.set_write_timeout(Some(WRITE_POLL_INTERVAL))?;
        }
        Ok(Connection {
            client,
            upstream,
            aborted: AtomicBool::new(false),
        })
    }

    /// `(from, to)` for a direction.
    fn ends(&self, direction: Way) -> (&TcpStream, &TcpStream) {
        match direction {
            Way::Up => (&self.client, &self.upstream),
            Way::Down => (&self.upstream, &self.client),
        }
    }

    fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }

    /// Tears both sides down: both sockets will close with a reset, and every
    /// pump thread wakes up and ends.
    fn abort(&self) {
        if self.aborted.swap(true, Ordering::SeqCst) {
            return;
        }
        for stream in [&self.client, &self.upstream] {
            if let Ok(duplicate) = stream.try_clone() {
                // Resets when the pump threads let go of the connection.
                close_with_reset(duplicate);
            }
            // Wakes a reader blocked on this socket (it reads end of stream).
            let _ = stream.shutdown(Shutdown::Read);
        }
    }
}

/// A chunk of bytes, or the end of the stream, and when to pass it on.
struct Release {
    at: Instant,
    bytes: Option<Vec<u8>>,
}

fn start_pump(
    connection: &Arc<Connection>,
    direction: Way,
    impairment: Impairment,
    stats: Arc<StatsRecorder>,
    threads: &Threads,
) -> std::io::Result<()> {
    let (releases, due) = sync_channel(CHUNKS_IN_FLIGHT);
    let reader = PumpReader {
        connection: Arc::clone(connection),
        direction,
        schedule: OrderedSchedule::new(impairment, Arc::clone(&stats)),
        releases,
    };
    threads.spawn("tcp-proxy-read", move || reader.run())?;
    let writer_connection = Arc::clone(connection);
    threads.spawn("tcp-proxy-write", move || {
        write_releases(&writer_connection, direction, due, &stats)
    })
}

/// Release times that never overtake each other.
struct OrderedSchedule {
    impairment: Impairment,
    last: Option<Instant>,
    stats: Arc<StatsRecorder>,
}

impl OrderedSchedule {
    fn new(impairment: Impairment, stats: Arc<StatsRecorder>) -> OrderedSchedule {
        OrderedSchedule {
            impairment,
            last: None,
            stats,
        }
    }

    /// When a chunk of `len` bytes that arrived at `arrival` may leave.
    fn release_time(&mut self, arrival: Instant, len: usize) -> Instant {
        let passed = self.impairment.through_bottleneck_unbounded(arrival, len);
        let mut delay = self.impairment.delay();
        if self.impairment.is_lost() {
            self.stats.lost();
            delay += RETRANSMISSION_PENALTY;
        }
        let at = self
            .last
            .map_or(passed + delay, |last| last.max(passed + delay));
        self.last = Some(at);
        at
    }
}

/// Reads one side and schedules what it reads.
struct PumpReader {
    connection: Arc<Connection>,
    direction: Way,
    schedule: OrderedSchedule,
    releases: SyncSender<Release>,
}

impl PumpReader {
    /// Reads nothing while the bottleneck's queue is full (see the module
    /// doc); false when the connection was torn down meanwhile.
    fn wait_for_room_in_the_bottleneck(&self) -> bool {
        while let Some(room_at) = self
            .schedule
            .impairment
            .held_back_until(Instant::now(), LEAST_READ)
        {
            if self.connection.is_aborted() {
                return false;
            }
            let left = room_at.saturating_duration_since(Instant::now());
            std::thread::sleep(left.min(WRITE_POLL_INTERVAL));
        }
        !self.connection.is_aborted()
    }

    fn run(mut self) {
        let (mut from, _) = self.connection.ends(self.direction);
        let mut buffer = vec![0u8; CHUNK_SIZE];
        loop {
            if !self.wait_for_room_in_the_bottleneck() {
                return;
            }
            let room =
                self.schedule
                    .impairment
                    .room_in_bottleneck(Instant::now(), LEAST_READ, CHUNK_SIZE);
            let read = from.read(&mut buffer[..room]);
            let arrival = Instant::now();
            if self.connection.is_aborted() {
                return;
            }
            let bytes = match read {
                Ok(0) => None,
                Ok(len) => Some(buffer[..len].to_vec()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.connection.abort();
                    return;
                }
            };
            let end_of_stream = bytes.is_none();
            let len = bytes.as_ref().map_or(0, Vec::len);
            let at = self.schedule.release_time(arrival, len);
            if self.releases.send(Release { at, bytes }).is_err() || end_of_stream {
                return;
            }
        }
    }
}

/// Writes each release to the other side at its time; ends after passing on
/// the end of stream, or when the connection is torn down.
fn write_releases(
    connection: &Connection,
    direction: Way,
    due: Receiver<Release>,
    stats: &StatsRecorder,
) {
    let (_, to) = connection.ends(direction);
    for release in due {
        wait_until(release.at);
        if connection.is_aborted() {
            return;
        }
        stats.released(release.at);
        match release.bytes {
            Some(bytes) => {
                if write_fully(to, &bytes, connection).is_err() {
                    connection.abort();
                    return;
                }
            }
            None => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
        }
    }
}

/// `write_all` that gives up when the connection is torn down while the
/// receiver is not reading.
fn write_fully(
    mut to: &TcpStream,
    mut bytes: &[u8],
    connection: &Connection,
) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match to.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(written) => bytes = &bytes[written..],
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                if connection.is_aborted() {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
