//! The rallypoint client's decision-making, with no clock and no socket inside
//! (sans-IO, like quinn's protocol state): the same code runs in the native
//! client, the `rallypoint` CLI, virtual-time simulations and the browser.
//!
//! * [`candidate`] — the relays a client can elect (region, relay id, transport, URL).
//! * [`time`] — the core's notion of time: microseconds handed in by the driver.

pub mod candidate;
pub mod election;
pub mod report_json;
pub mod sim;
pub mod time;

pub use candidate::{Candidate, CandidateList, TransportKind};
pub use time::Micros;
