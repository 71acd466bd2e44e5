//! Delay proxies: the latency lab's network.
//!
//! The lab runs every region on one machine, where all paths take microseconds.
//! Clients only elect the right relay if the paths differ like the real world's,
//! and this machine has no `tc netem`, so we put our own proxies on loopback
//! between a simulated client location and each region's relays:
//!
//! ```text
//!                      ┌─ UdpDelayProxy (rtt 40 ms) ──▶ singapore WebTransport relay
//!  client "in Singapore" ─ TcpDelayProxy (rtt 40 ms) ──▶ singapore WebSocket relay
//!                      ├─ UdpDelayProxy (rtt 250 ms) ─▶ us-east WebTransport relay
//!                      └─ TcpDelayProxy (rtt 250 ms) ─▶ us-east WebSocket relay
//! ```
//!
//! A [`Scenario`] (a JSON file, see [`scenario`]) describes a client location
//! as one [`LinkSpec`] per region, and the location's own access line, which
//! every region's proxy shares ([`path`]).
//!
//! # The model
//!
//! Each direction of a link delays every packet by its one-way delay plus a
//! normal jitter (half the round trip and `jitter/√2` unless overridden; a
//! total delay is never negative) and loses it with its loss probability,
//! independently per packet, like netem's `delay … distribution normal` and
//! `loss random`. Delays are added to the moment the proxy reads a packet and
//! honoured to well within a millisecond: releases run on dedicated threads
//! that sleep and then spin, not on async timers. Forwarding itself costs
//! about 0.1 ms per direction on loopback (the extra hop and thread wake-up).
//!
//! Punctuality needs the CPU: on a machine busy with other work a release can
//! come a few milliseconds late. Each proxy counts releases later than
//! [`LATE_RELEASE`] in its [`ProxyStats`], so a measurement taken while the
//! machine could not keep time can be recognised and discarded.
//!
//! * UDP ([`UdpDelayProxy`]): datagrams are delayed individually, so jitter
//!   reorders them; lost datagrams are gone. Each client source address gets
//!   its own upstream socket, so a QUIC relay sees one 5-tuple per client.
//! * TCP ([`TcpDelayProxy`]): the byte stream keeps its order (jitter delays
//!   later bytes behind earlier ones), a lost chunk costs a 200 ms
//!   retransmission instead of disappearing, end of stream follows the data,
//!   and a reset on either side resets both.
//!
//! # Not emulated
//!
//! * Bandwidth and congestion, unless a direction names a bottleneck
//!   (`rate_kbit`, `queue_ms` on a link or on the location's access line: a
//!   drop-tail queue for UDP; for TCP a queue that, once full, holds the
//!   sender back instead): throughput is otherwise whatever loopback and the
//!   endpoints manage.
//! * TCP's own dynamics: the proxy terminates TCP on both sides, so the
//!   handshake costs no added round trip, acknowledgements are local, and a
//!   "lost" chunk costs a fixed penalty rather than a real RTO and congestion
//!   window collapse.
//! * Path MTU, duplication, corruption, bursty (Gilbert–Elliott) loss and
//!   delay that changes over time; a link's behaviour is fixed for the
//!   proxy's lifetime (stop it and start another to change it).
//! * Jitter is drawn per packet for UDP and per read chunk for TCP, so a TCP
//!   chunk spanning several segments shares one delay.

pub mod path;
mod queue;
pub mod scenario;
pub mod tcp;
mod threads;
mod timing;
pub mod udp;

pub use path::{AccessLine, Path};
pub use scenario::{
    AccessSpec, DirectionOverride, LineSpec, LinkSpec, OneWay, Scenario, TransportOverride,
};
pub use tcp::TcpDelayProxy;
pub use timing::{LATE_RELEASE, ProxyStats};
pub use udp::UdpDelayProxy;
