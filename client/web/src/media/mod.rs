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

pub mod devices;
pub mod keyframes;
pub mod playout;
pub mod reorder;
pub mod speech;

#[cfg(target_arch = "wasm32")]
pub mod audio;
#[cfg(target_arch = "wasm32")]
pub mod capture;
#[cfg(target_arch = "wasm32")]
pub mod level;
#[cfg(target_arch = "wasm32")]
pub mod video;

/// Reads a camera or microphone track raw (frames or samples), for an encoder.
#[cfg(target_arch = "wasm32")]
pub fn track_reader(
    track: &web_sys::MediaStreamTrack,
    what: &str,
) -> Result<web_sys::ReadableStreamDefaultReader, String> {
    use wasm_bindgen::JsCast;
    let processor = web_sys::MediaStreamTrackProcessor::new(
        &web_sys::MediaStreamTrackProcessorInit::new(track),
    )
    .map_err(|e| format!("cannot read the {what}: {}", crate::transport::describe(&e)))?;
    Ok(processor.readable().get_reader().unchecked_into())
}

/// The next frame or sample block from a [`track_reader`]; `None` when the
/// track ended or reading failed.
#[cfg(target_arch = "wasm32")]
pub async fn next_chunk<T: wasm_bindgen::JsCast>(
    reader: &web_sys::ReadableStreamDefaultReader,
) -> Option<T> {
    use wasm_bindgen::JsCast;
    let result = wasm_bindgen_futures::JsFuture::from(reader.read())
        .await
        .ok()?;
    let done = js_sys::Reflect::get(&result, &"done".into())
        .ok()?
        .as_bool()?;
    if done {
        return None;
    }
    js_sys::Reflect::get(&result, &"value".into())
        .ok()?
        .dyn_into()
        .ok()
}

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
    /// Audio only: the frame's RMS level (full scale 1.0), for who is
    /// speaking.
    pub level: Option<f32>,
}
