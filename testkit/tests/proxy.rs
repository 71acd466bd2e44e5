//! The delay proxies on real loopback sockets: added delay accurate to a
//! millisecond, TCP order and end of stream, UDP loss, one upstream socket per
//! UDP client, scenario files.
//!
//! Servers here are plain threads on blocking sockets, left running until the
//! test process exits: they keep the measurements free of async scheduling.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use rallypoint_testkit::proxy::{
    AccessLine, AccessSpec, LineSpec, LinkSpec, Path, ProxyStats, Scenario, TcpDelayProxy,
    UdpDelayProxy,
};

const ANY_LOCAL: &str = "127.0.0.1:0";
const PATIENCE: Duration = Duration::from_secs(10);

fn any_local() -> SocketAddr {
    ANY_LOCAL.parse().unwrap()
}

// ---------------------------------------------------------------- servers --

/// A UDP server that answers every datagram with `reply(datagram, sender)`.
fn udp_server(reply: impl Fn(&[u8], SocketAddr) -> Vec<u8> + Send + 'static) -> SocketAddr {
    let socket = UdpSocket::bind(ANY_LOCAL).unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 65_536];
        loop {
            if let Ok((len, from)) = socket.recv_from(&mut buffer) {
                let _ = socket.send_to(&reply(&buffer[..len], from), from);
            }
        }
    });
    addr
}

fn udp_echo_server() -> SocketAddr {
    udp_server(|datagram, _| datagram.to_vec())
}

/// Answers with the address the datagram came from, as text.
fn udp_address_server() -> SocketAddr {
    udp_server(|_, from| from.to_string().into_bytes())
}

/// A TCP server that echoes every connection and passes on end of stream.
fn tcp_echo_server() -> SocketAddr {
    tcp_server(|mut stream| {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match stream.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(len) => {
                    if stream.write_all(&buffer[..len]).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = stream.shutdown(Shutdown::Write);
    })
}

fn tcp_server(serve: impl Fn(TcpStream) + Send + Sync + Copy + 'static) -> SocketAddr {
    let listener = TcpListener::bind(ANY_LOCAL).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            stream.set_nodelay(true).unwrap();
            std::thread::spawn(move || serve(stream));
        }
    });
    addr
}

// ----------------------------------------------------------- measurement --

/// `count` sequential UDP round trips to `target`, one every `gap`.
fn udp_round_trips(target: SocketAddr, count: u32, gap: Duration) -> Vec<Duration> {
    let mut pinger = Pinger::new(target);
    (0..count)
        .map(|seq| {
            std::thread::sleep(gap);
            pinger.round_trip(seq)
        })
        .collect()
}

/// `count` ping-pongs over one TCP connection to `target`, one every `gap`.
fn tcp_round_trips(target: SocketAddr, count: u32, gap: Duration) -> Vec<Duration> {
    let mut stream = TcpStream::connect(target).unwrap();
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buffer = [0u8; 4];
    (0..count)
        .map(|seq| {
            std::thread::sleep(gap);
            let sent = Instant::now();
            stream.write_all(&seq.to_be_bytes()).unwrap();
            stream.read_exact(&mut buffer).expect("an answer");
            assert_eq!(buffer, seq.to_be_bytes());
            sent.elapsed()
        })
        .collect()
}

fn quantile(samples: &[Duration], q: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Checks the lab's promise for a 40 ms link: no round trip is faster than
/// 40 ms, and the median added delay (proxied minus direct) is 40..43 ms —
/// the upper bound leaves room for the proxy's extra thread wake-ups on a
/// machine busy with other tests; the printed numbers show the real error.
fn assert_adds_40_ms(
    transport: &str,
    direct: &[Duration],
    proxied: &[Duration],
    stats: ProxyStats,
) {
    let rtt = Duration::from_millis(40);
    let fastest = quantile(proxied, 0.0);
    assert!(fastest >= rtt, "{transport}: a round trip took {fastest:?}");

    let direct_median = quantile(direct, 0.5);
    let errors_ms: Vec<f64> = proxied
        .iter()
        .map(|p| ms(*p) - ms(direct_median) - ms(rtt))
        .collect();
    let error = |q: f64| {
        let mut sorted = errors_ms.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[((sorted.len() - 1) as f64 * q).round() as usize]
    };
    println!(
        "{transport} 40 ms link, {} round trips: direct median {:.3} ms; \
         added-delay error median {:+.3} ms, p99 {:+.3} ms, max {:+.3} ms; \
         proxy releases {} late by > 1 ms of {}, worst {:.3} ms late",
        proxied.len(),
        ms(direct_median),
        error(0.5),
        error(0.99),
        error(1.0),
        stats.late,
        stats.released,
        ms(stats.worst_lateness),
    );
    assert_eq!(
        stats.released,
        2 * proxied.len() as u64,
        "{transport}: {stats:?}"
    );
    let added_median = ms(quantile(proxied, 0.5)) - ms(direct_median);
    assert!(
        (40.0..=43.0).contains(&added_median),
        "{transport}: median added delay {added_median:.3} ms"
    );
}

// ----------------------------------------------------------------- tests --

#[test]
fn udp_adds_the_round_trip_delay_never_less_and_at_most_3_ms_more() {
    let echo = udp_echo_server();
    let proxy = UdpDelayProxy::start(any_local(), echo, LinkSpec::new(40.0, 0.0, 0.0), 1).unwrap();
    let gap = Duration::from_millis(5);
    let direct = udp_round_trips(echo, 100, gap);
    let proxied = udp_round_trips(proxy.local_addr(), 100, gap);
    assert_adds_40_ms("UDP", &direct, &proxied, proxy.stats());
}

#[test]
fn tcp_adds_the_round_trip_delay_never_less_and_at_most_3_ms_more() {
    let echo = tcp_echo_server();
    let proxy = TcpDelayProxy::start(any_local(), echo, LinkSpec::new(40.0, 0.0, 0.0), 1).unwrap();
    let gap = Duration::from_millis(5);
    let direct = tcp_round_trips(echo, 100, gap);
    let proxied = tcp_round_trips(proxy.local_addr(), 100, gap);
    assert_adds_40_ms("TCP", &direct, &proxied, proxy.stats());
}

#[test]
fn udp_jitter_spreads_round_trips_around_the_rtt() {
    let echo = udp_echo_server();
    let link = LinkSpec::new(40.0, 10.0, 0.0);
    let proxy = UdpDelayProxy::start(any_local(), echo, link, 7).unwrap();
    // The baseline, measured in the same run: a proxy that adds nothing.
    // Each jittered round trip is paired with a direct one taken just
    // before it, so what the machine's load adds (scheduling, a busy test
    // run) is in both and cancels out of their difference.
    let direct = UdpDelayProxy::start(any_local(), echo, LinkSpec::new(0.0, 0.0, 0.0), 8).unwrap();
    let mut through_direct = Pinger::new(direct.local_addr());
    let mut through_jitter = Pinger::new(proxy.local_addr());
    let added: Vec<f64> = (0..100)
        .map(|seq| ms(through_jitter.round_trip(seq)) - ms(through_direct.round_trip(seq)))
        .collect();
    let mean = added.iter().sum::<f64>() / added.len() as f64;
    let variance = added.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (added.len() - 1) as f64;
    println!(
        "UDP 40 ms ± 10 ms link, over a direct proxy: mean {mean:.2} ms added, standard deviation {:.2} ms",
        variance.sqrt()
    );
    assert!((36.0..=44.0).contains(&mean), "mean {mean:.2} ms");
    assert!(
        (6.0..=14.0).contains(&variance.sqrt()),
        "σ {:.2} ms",
        variance.sqrt()
    );
}

/// One UDP socket sending numbered pings to `target`, one at a time.
struct Pinger {
    socket: UdpSocket,
}

impl Pinger {
    fn new(target: SocketAddr) -> Self {
        Pinger::waiting(target, PATIENCE)
    }

    /// A pinger whose round trips give up after `patience`.
    fn waiting(target: SocketAddr, patience: Duration) -> Self {
        let socket = UdpSocket::bind(ANY_LOCAL).unwrap();
        socket.connect(target).unwrap();
        socket.set_read_timeout(Some(patience)).unwrap();
        Pinger { socket }
    }

    fn round_trip(&mut self, seq: u32) -> Duration {
        let mut buffer = [0u8; 64];
        let sent = Instant::now();
        self.socket.send(&seq.to_be_bytes()).unwrap();
        let len = self.socket.recv(&mut buffer).expect("an answer");
        assert_eq!(&buffer[..len], seq.to_be_bytes());
        sent.elapsed()
    }

    /// As [`Pinger::round_trip`], but `None` when no answer comes within
    /// the pinger's patience; answers to earlier pings that came after
    /// theirs are skipped.
    fn round_trip_or_lost(&mut self, seq: u32) -> Option<Duration> {
        let mut buffer = [0u8; 64];
        let sent = Instant::now();
        self.socket.send(&seq.to_be_bytes()).unwrap();
        loop {
            match self.socket.recv(&mut buffer) {
                Ok(4) if buffer[..4] == seq.to_be_bytes() => return Some(sent.elapsed()),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }
}

#[test]
fn tcp_loss_costs_a_retransmission_not_bytes() {
    let echo = tcp_echo_server();
    let link = LinkSpec::new(10.0, 0.0, 1.0);
    let proxy = TcpDelayProxy::start(any_local(), echo, link, 8).unwrap();
    let round_trips = tcp_round_trips(proxy.local_addr(), 3, Duration::ZERO);
    // Every chunk is "lost" once each way: 10 ms + 2 × 200 ms.
    for round_trip in round_trips {
        assert!(round_trip >= Duration::from_millis(410), "{round_trip:?}");
    }
    // Six chunks, and the end of stream once the client hung up.
    let lost = proxy.stats().lost;
    assert!((6..=7).contains(&lost), "{lost} chunks lost");
}

/// Bytes that differ from their neighbours, so any reordering shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8 ^ (i >> 16) as u8)
        .collect()
}

#[test]
fn tcp_keeps_order_and_content_under_jitter_and_passes_end_of_stream() {
    let echo = tcp_echo_server();
    let proxy = TcpDelayProxy::start(any_local(), echo, LinkSpec::new(40.0, 20.0, 0.0), 2).unwrap();
    let sent = pattern(2 * 1024 * 1024);

    let mut stream = TcpStream::connect(proxy.local_addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let to_send = sent.clone();
    let writing = std::thread::spawn(move || {
        for piece in to_send.chunks(7_919) {
            writer.write_all(piece).unwrap();
        }
        // Half-close: the echo server sees end of stream only through the
        // proxy, then closes its side, which must reach us after the data.
        writer.shutdown(Shutdown::Write).unwrap();
    });

    let mut received = Vec::with_capacity(sent.len());
    stream
        .read_to_end(&mut received)
        .expect("the echo and then end of stream");
    writing.join().unwrap();
    assert_eq!(received.len(), sent.len());
    assert!(received == sent, "bytes arrived reordered or changed");
}

#[test]
fn tcp_reset_on_one_side_resets_the_other() {
    let resetting = tcp_server(|stream| {
        let mut byte = [0u8; 1];
        // Wait for the client's byte, then abort the connection.
        let _ = (&stream).read_exact(&mut byte);
        let socket = tokio::net::TcpSocket::from_std_stream(stream);
        socket.set_zero_linger().unwrap();
    });
    let proxy =
        TcpDelayProxy::start(any_local(), resetting, LinkSpec::new(10.0, 0.0, 0.0), 3).unwrap();
    let mut stream = TcpStream::connect(proxy.local_addr()).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(b"x").unwrap();
    let mut buffer = [0u8; 16];
    let error = stream
        .read(&mut buffer)
        .expect_err("a reset, not end of stream");
    assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");
}

#[test]
fn tcp_unreachable_upstream_resets_the_client() {
    let closed = TcpListener::bind(ANY_LOCAL).unwrap().local_addr().unwrap();
    let proxy =
        TcpDelayProxy::start(any_local(), closed, LinkSpec::new(10.0, 0.0, 0.0), 9).unwrap();
    let mut stream = TcpStream::connect(proxy.local_addr()).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buffer = [0u8; 16];
    let error = stream
        .read(&mut buffer)
        .expect_err("a reset, not end of stream");
    assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");
}

#[test]
fn udp_loses_each_direction_independently() {
    let echo = udp_echo_server();
    let proxy = UdpDelayProxy::start(any_local(), echo, LinkSpec::new(10.0, 0.0, 0.5), 4).unwrap();
    let socket = UdpSocket::bind(ANY_LOCAL).unwrap();
    socket.connect(proxy.local_addr()).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();

    let receiver = socket.try_clone().unwrap();
    let receiving = std::thread::spawn(move || {
        let mut answered = std::collections::HashSet::new();
        let mut buffer = [0u8; 64];
        // Answers come 10 ms after their request; a quiet second means done.
        while let Ok(len) = receiver.recv(&mut buffer) {
            answered.insert(buffer[..len].to_vec());
        }
        answered.len() as u32
    });
    const SENT: u32 = 400;
    for seq in 0..SENT {
        socket.send(&seq.to_be_bytes()).unwrap();
        // Paced so that no socket buffer overflows: losses are the proxy's.
        std::thread::sleep(Duration::from_millis(1));
    }
    let answered = receiving.join().unwrap();
    let stats = proxy.stats();
    // A round trip ends in exactly one loss (either way) or an answer.
    assert_eq!(stats.lost, (SENT - answered) as u64, "{stats:?}");
    let lost = 1.0 - answered as f64 / SENT as f64;
    println!(
        "UDP loss 0.5 per direction: {:.1}% of round trips lost",
        lost * 100.0
    );
    assert!((0.6..=0.9).contains(&lost), "{:.1}% lost", lost * 100.0);
}

#[test]
fn a_udp_bottleneck_passes_its_rate_and_drops_what_its_queue_cannot_hold() {
    let echo = udp_echo_server();
    // The answers' way is 800 kbit/s (100 bytes a millisecond) with a 100 ms
    // queue; requests pass freely.
    let link: LinkSpec =
        serde_json::from_str(r#"{"rtt_ms": 0, "down": {"rate_kbit": 800, "queue_ms": 100}}"#)
            .unwrap();
    let proxy = UdpDelayProxy::start(any_local(), echo, link, 5).unwrap();
    let socket = UdpSocket::bind(ANY_LOCAL).unwrap();
    socket.connect(proxy.local_addr()).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let receiver = socket.try_clone().unwrap();
    let receiving = std::thread::spawn(move || {
        let mut arrivals = Vec::new();
        let mut buffer = [0u8; 2_048];
        while receiver.recv(&mut buffer).is_ok() {
            arrivals.push(Instant::now());
        }
        arrivals
    });
    // 50 datagrams of 1 000 bytes at once (within a socket buffer): the
    // first goes through, ten more fit the 100 ms queue at 10 ms each, the
    // rest is dropped.
    const SENT: u64 = 50;
    for seq in 0..SENT {
        let mut datagram = vec![0u8; 1_000];
        datagram[..8].copy_from_slice(&seq.to_be_bytes());
        socket.send(&datagram).unwrap();
    }
    let arrivals = receiving.join().unwrap();
    let stats = proxy.stats();
    let spread = *arrivals.last().unwrap() - arrivals[0];
    println!(
        "800 kbit/s bottleneck, 100 ms queue: {} of {SENT} answers through over {:.0} ms, {} dropped",
        arrivals.len(),
        ms(spread),
        stats.lost
    );
    assert_eq!(stats.lost + arrivals.len() as u64, SENT, "{stats:?}");
    // Eleven if the burst reached the proxy at once; a little more if it
    // took the proxy a few milliseconds to read.
    assert!(
        (11..=14).contains(&arrivals.len()),
        "{} through",
        arrivals.len()
    );
    // Spaced by the rate: the last leaves about 10 ms per datagram after the first.
    assert!(
        spread >= Duration::from_millis(10 * (arrivals.len() as u64 - 2)),
        "{} datagrams spread over only {:.1} ms",
        arrivals.len(),
        ms(spread)
    );
}

#[test]
fn a_tcp_bottleneck_holds_the_sender_back_once_its_queue_is_full() {
    // The way down is 80 kbit/s (10 kB a second) with a 100 ms queue.
    let link = r#"{"rtt_ms": 0, "down": {"rate_kbit": 80, "queue_ms": 100}}"#;
    a_bottleneck_holds_its_sender_back(link, Sender::Server);
}

/// The same bound on the way up: the socket in front of the bottleneck is
/// the one the proxy accepted, whose receive buffer it inherits from the
/// listener.
#[test]
fn a_tcp_bottleneck_on_the_way_up_holds_the_client_back_once_its_queue_is_full() {
    let link = r#"{"rtt_ms": 0, "up": {"rate_kbit": 80, "queue_ms": 100}}"#;
    a_bottleneck_holds_its_sender_back(link, Sender::Client);
}

/// Which end writes through the bottleneck.
#[derive(Clone, Copy, Debug)]
enum Sender {
    Server,
    Client,
}

/// Through an 80 kbit/s bottleneck with a 100 ms queue (`link`), `sender`
/// writes as fast as its socket takes, for 2 s, with a small send buffer of
/// its own (as a relay bounds what it leaves to the kernel): what it manages
/// to write is what the link passed plus what waits between it and the
/// bottleneck, which must stay small.
fn a_bottleneck_holds_its_sender_back(link: &str, sender: Sender) {
    const SENDING: Duration = Duration::from_secs(2);
    let link: LinkSpec = serde_json::from_str(link).unwrap();
    let listener = TcpListener::bind(ANY_LOCAL).unwrap();
    let server = listener.local_addr().unwrap();
    let accepted = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        match sender {
            Sender::Server => write_for(&stream, SENDING),
            Sender::Client => read_for(&stream, SENDING),
        }
    });
    let proxy = TcpDelayProxy::start(any_local(), server, link, 9).unwrap();
    let client = TcpStream::connect(proxy.local_addr()).unwrap();
    let at_the_client = match sender {
        Sender::Server => read_for(&client, SENDING),
        Sender::Client => write_for(&client, SENDING),
    };
    let at_the_server = accepted.join().unwrap();
    let (written, received) = match sender {
        Sender::Server => (at_the_server, at_the_client),
        Sender::Client => (at_the_client, at_the_server),
    };
    println!(
        "80 kbit/s TCP bottleneck, 100 ms queue, 2 s, the {sender:?} sending: {written} bytes \
         written, {received} read"
    );
    // The link passes 10 kB a second.
    assert!(
        (14_000..=24_000).contains(&received),
        "{received} bytes through an 80 kbit/s link in 2 s"
    );
    // Beyond it: the 1 kB queue, the proxy's small receive buffer and the
    // sender's own (a few kB each, as the kernel rounds them). Before the
    // proxy held senders back it read all it was sent: megabytes.
    let waiting = written - received;
    assert!(
        waiting <= 48_000,
        "the {sender:?} wrote {written} bytes, {waiting} more than reached the other end: \
         the bottleneck's queue did not hold it back"
    );
}

/// Writes 1 kB chunks as fast as `stream` (given a 4 kB send buffer) takes
/// them, for `sending`; returns the bytes written.
fn write_for(stream: &TcpStream, sending: Duration) -> usize {
    socket2::SockRef::from(stream)
        .set_send_buffer_size(4_096)
        .unwrap();
    stream.set_nonblocking(true).unwrap();
    let chunk = [7u8; 1_000];
    let started = Instant::now();
    let mut written = 0usize;
    while started.elapsed() < sending {
        match (&*stream).write(&chunk) {
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    written
}

/// Reads `stream` for `sending`; returns the bytes read.
fn read_for(stream: &TcpStream, sending: Duration) -> usize {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let started = Instant::now();
    let mut received = 0usize;
    let mut buffer = [0u8; 16_384];
    while started.elapsed() < sending {
        match (&*stream).read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => received += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    received
}

/// A location's access line is one queue for all of its proxies: while a
/// download through one proxy (TCP, a WebSocket's way) fills an 80 kbit/s
/// downlink, small answers through another (UDP, a standby's probes) wait
/// behind it — as they would at home — where each path with a line of the
/// same rate but its own (the lab before access lines) answers at once.
#[test]
fn a_locations_access_line_is_one_queue_for_all_of_its_proxies() {
    const DOWNLOAD: Duration = Duration::from_secs(2);
    const PINGS: u32 = 12;
    let line = AccessSpec {
        up: None,
        down: Some(LineSpec {
            rate_kbit: 80.0,
            queue_ms: Some(100.0),
            after_s: None,
        }),
    };
    // Writes until the client goes away.
    let downloads = tcp_server(|mut stream| {
        let chunk = [7u8; 1_000];
        while stream.write_all(&chunk).is_ok() {}
    });
    let echo = udp_echo_server();
    let round_trips_during_a_download = |access: &AccessLine, link: LinkSpec| {
        let tcp = TcpDelayProxy::start(any_local(), downloads, Path::new(link, access), 3).unwrap();
        let udp = UdpDelayProxy::start(any_local(), echo, Path::new(link, access), 4).unwrap();
        let client = TcpStream::connect(tcp.local_addr()).unwrap();
        let downloading = std::thread::spawn(move || read_for(&client, DOWNLOAD));
        // Let the download fill the line's queue first; the pings (each up
        // to ~100 ms behind it) end well within the download.
        std::thread::sleep(Duration::from_millis(300));
        let pings = udp_round_trips_or_lost(udp.local_addr(), PINGS, Duration::from_millis(20));
        (pings, downloading.join().unwrap())
    };
    let shared = AccessLine::new(Some(&line));
    let (behind_the_download, downloaded) =
        round_trips_during_a_download(&shared, LinkSpec::new(0.0, 0.0, 0.0));
    let own_lines: LinkSpec =
        serde_json::from_str(r#"{"rtt_ms": 0, "down": {"rate_kbit": 80, "queue_ms": 100}}"#)
            .unwrap();
    let (on_its_own_line, downloaded_on_its_own) =
        round_trips_during_a_download(&AccessLine::default(), own_lines);
    let answered = |pings: &[Option<Duration>]| pings.iter().flatten().copied().collect::<Vec<_>>();
    let (shared_answers, own_answers) =
        (answered(&behind_the_download), answered(&on_its_own_line));
    println!(
        "UDP round trips while a TCP download fills an 80 kbit/s line (100 ms queue): one line \
         for both, p50 {:.1} ms, {} of {PINGS} answered ({downloaded} bytes downloaded); a line \
         each, p50 {:.1} ms, {} answered ({downloaded_on_its_own} bytes)",
        ms(quantile(&shared_answers, 0.5)),
        shared_answers.len(),
        ms(quantile(&own_answers, 0.5)),
        own_answers.len()
    );
    for bytes in [downloaded, downloaded_on_its_own] {
        assert!(
            (14_000..=24_000).contains(&bytes),
            "{bytes} bytes through an 80 kbit/s line in 2 s"
        );
    }
    // A full 100 ms queue: an answer waits most of it, or is dropped.
    assert!(
        !shared_answers.is_empty() && quantile(&shared_answers, 0.5) >= Duration::from_millis(40),
        "answers behind the download should wait in the shared queue: {shared_answers:?}"
    );
    assert!(
        own_answers.len() == PINGS as usize
            && quantile(&own_answers, 0.5) < Duration::from_millis(10),
        "answers on a line of their own should not wait: {own_answers:?}"
    );
}

/// A line that slows down later (`after_s`) is as fast as its paths until
/// then: a 4-byte answer takes 32 ms of a 1 kbit/s line once it is slow,
/// nothing before.
#[test]
fn an_access_line_that_slows_down_later_is_fast_until_then() {
    const SLOW_AFTER: Duration = Duration::from_millis(800);
    let line = AccessSpec {
        up: None,
        down: Some(LineSpec {
            rate_kbit: 1.0,
            queue_ms: None,
            after_s: Some(SLOW_AFTER.as_secs_f64()),
        }),
    };
    let started = Instant::now();
    let access = AccessLine::new(Some(&line));
    let udp = UdpDelayProxy::start(
        any_local(),
        udp_echo_server(),
        Path::new(LinkSpec::new(0.0, 0.0, 0.0), &access),
        5,
    )
    .unwrap();
    let mut pinger = Pinger::new(udp.local_addr());
    let before: Vec<Duration> = (0..5).map(|seq| pinger.round_trip(seq)).collect();
    assert!(
        started.elapsed() < SLOW_AFTER,
        "the pings before took until {:?}",
        started.elapsed()
    );
    std::thread::sleep(SLOW_AFTER.saturating_sub(started.elapsed()) + Duration::from_millis(50));
    let after: Vec<Duration> = (5..10).map(|seq| pinger.round_trip(seq)).collect();
    println!("round trips before the line slows: {before:?}; after: {after:?}");
    // The median, so one round trip a loaded machine delays is not a slow
    // line.
    assert!(
        quantile(&before, 0.5) < Duration::from_millis(16),
        "the line is fast until it slows: {before:?}"
    );
    assert!(
        after.iter().all(|rtt| *rtt >= Duration::from_millis(30)),
        "4 bytes take 32 ms of a 1 kbit/s line: {after:?}"
    );
}

/// As [`udp_round_trips`], but a round trip not answered within 500 ms is
/// `None` (a bottleneck's queue may drop it).
fn udp_round_trips_or_lost(target: SocketAddr, count: u32, gap: Duration) -> Vec<Option<Duration>> {
    let mut pinger = Pinger::waiting(target, Duration::from_millis(500));
    (0..count)
        .map(|seq| {
            std::thread::sleep(gap);
            pinger.round_trip_or_lost(seq)
        })
        .collect()
}

#[test]
fn udp_clients_get_their_own_upstream_sockets() {
    let server = udp_address_server();
    let proxy = UdpDelayProxy::start(any_local(), server, LinkSpec::new(2.0, 0.0, 0.0), 5).unwrap();
    let seen_from = |client: &UdpSocket| {
        client.send(b"who am I").unwrap();
        let mut buffer = [0u8; 128];
        let len = client.recv(&mut buffer).expect("an answer");
        String::from_utf8(buffer[..len].to_vec())
            .unwrap()
            .parse::<SocketAddr>()
            .unwrap()
    };
    let client = || {
        let socket = UdpSocket::bind(ANY_LOCAL).unwrap();
        socket.connect(proxy.local_addr()).unwrap();
        socket.set_read_timeout(Some(PATIENCE)).unwrap();
        socket
    };
    let (a, b) = (client(), client());
    let a_seen = seen_from(&a);
    let b_seen = seen_from(&b);
    assert_ne!(
        a_seen.port(),
        b_seen.port(),
        "clients share an upstream socket"
    );
    assert_ne!(a_seen.port(), proxy.local_addr().port());
    assert_eq!(seen_from(&a), a_seen, "a client keeps its upstream socket");
    assert_eq!(seen_from(&b), b_seen, "answers go back to the right client");
}

#[test]
fn stopping_closes_the_proxies() {
    let udp_echo = udp_echo_server();
    let mut udp =
        UdpDelayProxy::start(any_local(), udp_echo, LinkSpec::new(1.0, 0.0, 0.0), 6).unwrap();
    assert_eq!(
        udp_round_trips(udp.local_addr(), 1, Duration::ZERO).len(),
        1
    );
    udp.stop();
    UdpSocket::bind(udp.local_addr()).expect("the UDP port is free again");

    let tcp_echo = tcp_echo_server();
    let mut tcp =
        TcpDelayProxy::start(any_local(), tcp_echo, LinkSpec::new(1.0, 0.0, 0.0), 6).unwrap();
    let mut open = TcpStream::connect(tcp.local_addr()).unwrap();
    open.set_read_timeout(Some(PATIENCE)).unwrap();
    open.write_all(b"ping").unwrap();
    let mut buffer = [0u8; 4];
    open.read_exact(&mut buffer).unwrap();
    tcp.stop();
    let after_stop = open.read(&mut buffer);
    assert!(
        matches!(&after_stop, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "open connections are reset: {after_stop:?}"
    );
    TcpStream::connect(tcp.local_addr()).expect_err("no longer accepting");
}

/// A partition: a cut proxy resets what is open and every new connection,
/// but keeps its port, so that nothing else can take it before the heal (a
/// 30 s cut that released its port once lost it to another test's server).
#[test]
fn a_cut_resets_connections_keeps_its_port_and_heals() {
    let echo = tcp_echo_server();
    let proxy = TcpDelayProxy::start(any_local(), echo, LinkSpec::new(1.0, 0.0, 0.0), 8).unwrap();
    let echoes = |stream: &mut TcpStream| -> std::io::Result<()> {
        stream.set_read_timeout(Some(PATIENCE))?;
        stream.write_all(b"ping")?;
        let mut buffer = [0u8; 4];
        stream.read_exact(&mut buffer)?;
        assert_eq!(&buffer, b"ping");
        Ok(())
    };
    let mut open = TcpStream::connect(proxy.local_addr()).unwrap();
    echoes(&mut open).expect("forwarded before the cut");

    proxy.cut();
    let mut buffer = [0u8; 4];
    let after_cut = open.read(&mut buffer);
    assert!(
        matches!(&after_cut, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "open connections are reset by the cut: {after_cut:?}"
    );
    let mut during = TcpStream::connect(proxy.local_addr()).expect("still listening");
    let refused = echoes(&mut during);
    assert!(
        matches!(&refused, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "new connections are reset while cut: {refused:?}"
    );
    TcpListener::bind(proxy.local_addr()).expect_err("the cut proxy keeps its port");

    proxy.heal();
    let mut healed = TcpStream::connect(proxy.local_addr()).unwrap();
    echoes(&mut healed).expect("forwarded again after the heal");
}

// ------------------------------------------------------------- scenarios --

fn write_scenario(json: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(json.as_bytes()).unwrap();
    file
}

#[test]
fn scenario_load_names_the_file_and_the_problem() {
    let cases = [
        (
            r#"{"name": "x", "links": {"a": {"rtt_ms": -5}}}"#,
            "rtt_ms is -5",
        ),
        (
            r#"{"name": "x", "links": {"a": {"rtt_ms": 5, "loss": 1.5}}}"#,
            "loss is 1.5",
        ),
        (
            r#"{"name": "x", "links": {"a": {"rtt_ms": 5, "down": {"delay_ms": -1}}}}"#,
            "down.delay_ms is -1",
        ),
        (
            r#"{"name": "x", "links": {"a": {"rtt_ms": 5, "down": {"rate_kbit": 0}}}}"#,
            "down.rate_kbit is 0",
        ),
        (
            r#"{"name": "x", "links": {"a": {"rtt_ms": 5, "up": {"queue_ms": 50}}}}"#,
            "up.queue_ms needs up.rate_kbit",
        ),
        (
            r#"{"name": "x", "links": {"a": {"rtt_ms": 5, "latency": 3}}}"#,
            "unknown field `latency`",
        ),
        (r#"{"name": "x", "links": {"a": {"rtt_ms": 5}}"#, "EOF"),
    ];
    for (json, problem) in cases {
        let file = write_scenario(json);
        let message = Scenario::load(file.path()).unwrap_err().to_string();
        assert!(
            message.contains(problem),
            "{message:?} should name {problem:?}"
        );
        let path = file.path().display().to_string();
        assert!(message.contains(&path), "{message:?} should name the file");
    }
    let missing = Scenario::load("/nonexistent/scenario.json").unwrap_err();
    assert!(missing.to_string().contains("/nonexistent/scenario.json"));
}

#[test]
fn shipped_scenarios_load() {
    // The lab's scenarios, as `rallypoint up --scenario` ships them.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../lab/scenarios");
    let expected = [
        ("singapore.json", "singapore", 40.0, "us-east", 250.0),
        ("new-york.json", "us-east", 15.0, "singapore", 240.0),
        ("frankfurt.json", "us-east", 85.0, "singapore", 165.0),
    ];
    for (file, near, near_rtt, far, far_rtt) in expected {
        let scenario = Scenario::load(dir.join(file)).unwrap();
        assert_eq!(scenario.link(near).unwrap().rtt_ms, near_rtt, "{file}");
        assert_eq!(scenario.link(far).unwrap().rtt_ms, far_rtt, "{file}");
        assert!(scenario.link("mars").is_none());
    }
    // The hotel's one uplink is crossed by its paths to both regions.
    let hotel = Scenario::load(dir.join("hotel-slow-uplink.json")).unwrap();
    let uplink = hotel
        .access
        .and_then(|access| access.up)
        .expect("an uplink");
    assert_eq!(uplink.rate_kbit, 100.0);
    assert!(hotel.links.values().all(|link| link.up.is_none()));
}
