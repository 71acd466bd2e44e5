//! The rallypoint client's decision-making, with no clock and no socket inside
//! (sans-IO, like quinn's protocol state): the same code runs in the native
//! client, the `rallypoint` CLI, virtual-time simulations and the browser.
//!
//! * [`candidate`] — the relays a client can elect (region, relay id, transport, URL).
//! * [`election`] — the tournament, the rules, failover and the reports.
//! * [`roster`] — who else is in the call: the serving relay's presence,
//!   media that overtakes it, and no ghosts after a move.
//! * [`session`] — the protocol around the election: frames in and out, the
//!   room through the winner, reports kept until a relay acknowledges them.
//! * [`time`] — the core's notion of time: microseconds handed in by the driver.
//! * `sim` (feature `sim`) — the election in a virtual-time network, for
//!   benchmarks and simulation tests.

pub mod candidate;
pub mod election;
pub mod report_json;
pub mod roster;
pub mod session;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod time;

pub use candidate::{Candidate, CandidateList, TransportKind};
pub use time::Micros;
