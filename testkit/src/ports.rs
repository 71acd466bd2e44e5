//! Free loopback ports for servers we start.
//!
//! A port is found free and released before the server binds it, so something
//! else may take it in between. Two things make that rare: ports come from
//! *below* the kernel's ephemeral range, which outgoing connections (every
//! NATS client, route and HTTP request of a test) take their local ports
//! from; and each process walks that range from a random point, never
//! handing out the same port twice. Start-ups that still lose the race try
//! again on fresh ports (see `nats`).

use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

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
}
