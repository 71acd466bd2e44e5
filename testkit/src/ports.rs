//! Free loopback ports for servers we start.
//!
//! A port is found free and released before the server binds it, so something
//! else may take it in between. Two things make that rare: ports come from
//! *below* the kernel's ephemeral range, which outgoing connections (every
//! NATS client, route and HTTP request of a test) take their local ports
//! from; and each process walks that range from a random point, never
//! handing out the same port twice. Start-ups that still lose the race try
//! again on fresh ports ([`start_on_fresh_ports`]). A server a test stops and
//! restarts on the same port keeps that port with a [`PortKeeper`] while it
//! is down.

use std::net::{TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Lowest port handed out.
const FLOOR: u16 = 10_000;

/// A TCP port free on 127.0.0.1 right now.
pub fn free_tcp() -> u16 {
    next_free(|port| TcpListener::bind(("127.0.0.1", port)).is_ok())
}

/// A port free on 127.0.0.1 for both UDP and TCP (WebTransport relays use UDP;
/// keeping TCP free too avoids surprises when a port is reused for HTTP).
pub fn free_udp() -> u16 {
    next_free(|port| {
        UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
    })
}

fn next_free(is_free: impl Fn(u16) -> bool) -> u16 {
    let Some((low, high)) = range() else {
        // No room below the ephemeral range: let the kernel choose.
        return TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("binding 127.0.0.1:0 must work on any machine with loopback");
    };
    let span = u32::from(high - low);
    static CURSOR: AtomicU32 = AtomicU32::new(u32::MAX);
    // First use: a random starting point, so parallel test processes walk
    // different parts of the range.
    let _ = CURSOR.compare_exchange(
        u32::MAX,
        random_below(span),
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let offset = CURSOR.fetch_add(1, Ordering::Relaxed) % span;
        let port = low + offset as u16;
        if is_free(port) {
            return port;
        }
    }
    panic!("no free loopback port between {low} and {high}")
}

/// Starts something that binds ports it picks itself from [`free_tcp`] or
/// [`free_udp`]: `start(attempt)` (from 1) is called again, up to `attempts`
/// times, while it fails in a way `lost_a_port` says may be a port taken by
/// another process in between; each call picks fresh ports.
pub async fn start_on_fresh_ports<T, Fut>(
    what: &str,
    attempts: usize,
    lost_a_port: impl Fn(&anyhow::Error) -> bool,
    mut start: impl FnMut(usize) -> Fut,
) -> anyhow::Result<T>
where
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut attempt = 1;
    loop {
        match start(attempt).await {
            Err(e) if attempt < attempts && lost_a_port(&e) => {
                eprintln!("[{what}] {e:#}; starting again on fresh ports");
                attempt += 1;
            }
            done => return done,
        }
    }
}

/// Keeps a stopped server's TCP port from being taken by another test's
/// process, so the server can be restarted on it (its clients know only that
/// port).
///
/// It listens on the port and closes every connection as soon as it is
/// accepted: a client's request fails as against a server that is down, but
/// as a connection closed before any answer, not a refused connection (for
/// an HTTP client such as the collector's, both are a failed request it
/// retries). (A socket that is bound but not listening would refuse
/// connections outright, but it cannot be bound while the stopped server's
/// closed connections are in TIME_WAIT; and bound with `SO_REUSEADDR` it no
/// longer keeps other `SO_REUSEADDR` listeners, which is all of them, away.)
pub struct PortKeeper {
    stop: Arc<AtomicBool>,
    closer: Option<JoinHandle<()>>,
}

/// How often the keeper looks for connections to close and for its release.
const KEEPER_POLL: Duration = Duration::from_millis(10);

impl PortKeeper {
    /// Keeps each of `ports` that is free. A port not kept only risks a
    /// failed restart, which then says why.
    pub fn keep_all(ports: impl IntoIterator<Item = u16>) -> Vec<PortKeeper> {
        ports
            .into_iter()
            .filter_map(|port| PortKeeper::keep_tcp(port).ok())
            .collect()
    }

    /// Takes 127.0.0.1:`port` (TCP). Fails if something else has it already.
    pub fn keep_tcp(port: u16) -> std::io::Result<PortKeeper> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let closer = std::thread::Builder::new()
            .name(format!("keep-port-{port}"))
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((connection, _)) => drop(connection),
                        Err(_) => std::thread::sleep(KEEPER_POLL),
                    }
                }
            })?;
        Ok(PortKeeper {
            stop,
            closer: Some(closer),
        })
    }
}

impl Drop for PortKeeper {
    /// Frees the port before returning, so the server can bind it next.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(closer) = self.closer.take() {
            let _ = closer.join();
        }
    }
}

/// `[FLOOR, start of the ephemeral range)`, when that is a usable range.
fn range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok();
    let ephemeral_low: u16 = text
        .as_deref()
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(32_768);
    (ephemeral_low > FLOOR + 1_000).then_some((FLOOR, ephemeral_low))
}

fn random_below(span: u32) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // Mix the clock with the process id so processes started in the same
    // instant still start apart.
    let mixed = (u64::from(nanos) ^ (u64::from(std::process::id()) << 20))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((mixed >> 32) as u32) % span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_tcp()).collect();
        let distinct: std::collections::HashSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len(), "a port handed out twice");
        if let Some((low, high)) = range() {
            assert!(ports.iter().all(|p| (low..high).contains(p)), "{ports:?}");
        }
        let udp = free_udp();
        assert!(UdpSocket::bind(("127.0.0.1", udp)).is_ok());
    }

    #[tokio::test]
    async fn a_start_that_lost_a_port_is_tried_again_up_to_its_attempts() {
        let lost = |e: &anyhow::Error| e.to_string().contains("in use");
        let tried = std::cell::Cell::new(Vec::new());
        let record = |attempt: usize| {
            let mut seen = tried.take();
            seen.push(attempt);
            tried.set(seen);
        };
        let started = start_on_fresh_ports("test", 3, lost, |attempt| {
            record(attempt);
            async move {
                match attempt {
                    1 => anyhow::bail!("address in use"),
                    _ => Ok(attempt),
                }
            }
        })
        .await;
        assert_eq!(started.unwrap(), 2);
        assert_eq!(tried.take(), [1, 2]);

        let gave_up: anyhow::Result<()> = start_on_fresh_ports("test", 3, lost, |attempt| {
            record(attempt);
            async { anyhow::bail!("address in use") }
        })
        .await;
        assert!(gave_up.is_err());
        assert_eq!(tried.take(), [1, 2, 3], "no more than its attempts");

        let other: anyhow::Result<()> = start_on_fresh_ports("test", 3, lost, |attempt| {
            record(attempt);
            async { anyhow::bail!("bad configuration") }
        })
        .await;
        assert!(other.is_err());
        assert_eq!(tried.take(), [1], "another failure is not retried");
    }

    #[test]
    fn a_kept_port_cannot_be_taken_fails_connections_and_is_free_once_released() {
        let port = free_tcp();
        let keeper = PortKeeper::keep_tcp(port).unwrap();
        // Rust's listeners set SO_REUSEADDR, as most servers' do.
        let taken = TcpListener::bind(("127.0.0.1", port));
        assert!(taken.is_err(), "another listener took a kept port");
        let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut byte = [0u8; 1];
        let read = std::io::Read::read(&mut client, &mut byte);
        assert!(
            matches!(read, Ok(0)) || read.is_err(),
            "a kept port answered: {read:?}"
        );
        drop(keeper);
        assert!(TcpListener::bind(("127.0.0.1", port)).is_ok());
    }
}
