//! Camera and microphone over WebCodecs.
//!
//! Sending: a `MediaStreamTrackProcessor` hands camera frames and microphone
//! samples to a `VideoEncoder` (VP8, 640x360 at 30 fps) and an `AudioEncoder`
//! (Opus, 20 ms); every encoded chunk becomes one `Media` frame through the
//! serving relay, stamped with its capture time on the wall clock so the
//! receiver can measure end-to-end latency.
//!
//! Receiving: per remote participant a `VideoDecoder` drawing into the tile's
//! canvas (behind a small reorder buffer, [`reorder`]) and an `AudioDecoder`
//! played through Web Audio on a steady schedule ([`playout`]).

pub mod keyframes;
pub mod playout;
pub mod reorder;

#[cfg(target_arch = "wasm32")]
pub mod audio;
#[cfg(target_arch = "wasm32")]
pub mod capture;
#[cfg(target_arch = "wasm32")]
pub mod video;

/// Where encoded media goes (the call hands it to the serving connection).
#[cfg(target_arch = "wasm32")]
pub type MediaSink = std::rc::Rc<dyn Fn(rallypoint_protocol::v1::Media)>;

/// A frame came out of a decoder: what the statistics need.
#[cfg(target_arch = "wasm32")]
#[derive(Debug, Clone, Copy)]
pub struct Decoded {
    pub kind: rallypoint_protocol::v1::TrackKind,
    /// Capture on the sender to decoded output here, wall clock.
    pub latency_ms: f64,
}
