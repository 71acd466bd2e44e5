//! The rallypoint browser app.
//!
//! The browser does the whole client's job itself: it opens WebTransport and
//! WebSocket connections to every candidate relay, drives the sans-IO
//! election of `rallypoint-client` with them ([`driver`], the wasm twin of the
//! native runner), joins the room through the winner, and carries camera and
//! microphone over it with WebCodecs ([`media`]). Failover happens inside the
//! call: the standby takes over, the room is re-joined, keyframes are asked for.
//!
//! The pure parts — statistics, audio playout, keyframe policy, the report
//! queue, page parameters — compile and are unit-tested on the
//! host; everything that needs a browser exists only on `wasm32`.

pub mod client_info;
pub mod params;
pub mod stats;

pub mod media;

#[cfg(target_arch = "wasm32")]
pub mod call;
#[cfg(target_arch = "wasm32")]
pub mod clock;
#[cfg(target_arch = "wasm32")]
pub mod driver;
#[cfg(target_arch = "wasm32")]
pub mod http;
#[cfg(target_arch = "wasm32")]
pub mod transport;
#[cfg(target_arch = "wasm32")]
pub mod ui;
