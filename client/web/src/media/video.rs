//! Video over WebCodecs: camera frames → `VideoEncoder` (VP8) → `Media`;
//! `Media` → per-participant `VideoDecoder` → the tile's canvas.
//!
//! VP8 is a software codec every WebCodecs browser has; at 640x360 and
//! 600 kbit/s it encodes in a few milliseconds on one core.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use bytes::Bytes;
use js_sys::Uint8Array;
use rallypoint_protocol::v1::{Media, TrackKind};
use wasm_bindgen::prelude::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::spawn_local;
use web_sys::{
    CanvasRenderingContext2d, CodecState, EncodedVideoChunk, EncodedVideoChunkInit,
    EncodedVideoChunkType, HtmlCanvasElement, LatencyMode, MediaStreamTrack, OffscreenCanvas,
    OffscreenCanvasRenderingContext2d, ReadableStreamDefaultReader, VideoDecoder,
    VideoDecoderConfig, VideoDecoderInit, VideoEncoder, VideoEncoderConfig,
    VideoEncoderEncodeOptions, VideoEncoderInit, VideoFrame, VideoFrameInit, VideoPixelFormat,
};

use super::keyframes::KeyframePolicy;
use super::reorder::Reorder;
use super::{Decoded, MediaSink, next_chunk, track_reader};
use crate::clock;

pub const CODEC: &str = "vp8";
pub const WIDTH: u32 = 640;
pub const HEIGHT: u32 = 360;
pub const FPS: f64 = 30.0;
pub const BITRATE: u32 = 600_000;

/// What a video track carries: its kind on the wire and how it is encoded.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    pub kind: TrackKind,
    pub bitrate: u32,
    pub fps: f64,
    /// For messages: "camera", "screen".
    pub what: &'static str,
}

/// The camera: motion matters, 640x360 at 30 fps.
pub const CAMERA: Profile = Profile {
    kind: TrackKind::Video,
    bitrate: BITRATE,
    fps: FPS,
    what: "camera",
};

/// A shared screen: text must stay legible and motion matters less, so
/// more bits for fewer frames, at the screen's own size (capped when it is
/// captured, see capture::open_screen).
pub const SCREEN: Profile = Profile {
    kind: TrackKind::Screen,
    bitrate: 1_500_000,
    fps: 15.0,
    what: "screen",
};
/// A keyframe at least this often, so a receiver that lost one recovers
/// even if its request is lost too.
const KEYFRAME_INTERVAL_MS: f64 = 2_000.0;
/// Frames waiting in the encoder beyond which new camera frames are skipped
/// (a slow machine lowers the frame rate instead of adding latency).
const MAX_ENCODE_QUEUE: u32 = 2;
/// How long a frame waits for a predecessor that overtook it, at most.
const REORDER_WAIT_MS: f64 = 120.0;
const KEYFRAME_REQUEST_EVERY_MS: f64 = 500.0;

/// Encodes the camera and hands every frame to the sink.
pub struct VideoSender {
    state: Rc<SenderState>,
    reader: RefCell<ReadableStreamDefaultReader>,
    _output: Closure<dyn FnMut(EncodedVideoChunk)>,
    _error: Closure<dyn FnMut(JsValue)>,
}

struct SenderState {
    encoder: VideoEncoder,
    policy: RefCell<KeyframePolicy>,
    enabled: Cell<bool>,
    configured: Cell<Option<(u32, u32)>>,
    /// The last timestamp given to the encoder. Frames are re-stamped
    /// with the wall clock (their capture time, for the receiver's latency)
    /// kept strictly increasing: a camera switched mid-call brings its own
    /// clock, and an encoder fed an earlier timestamp fails.
    last_stamp_us: Cell<f64>,
    /// Which track's reader may feed the encoder: a replaced track's frames
    /// still in flight are dropped.
    generation: Cell<u64>,
    /// Where frames in a pixel format the encoder does not take (a depth
    /// camera's Y16, say) are redrawn as RGBA.
    converter: RefCell<Option<(OffscreenCanvas, OffscreenCanvasRenderingContext2d)>>,
    seq: Cell<u64>,
    sink: MediaSink,
    profile: Profile,
}

impl VideoSender {
    pub fn start(
        track: &MediaStreamTrack,
        profile: Profile,
        sink: MediaSink,
    ) -> Result<Self, String> {
        let reader = track_reader(track, profile.what)?;
        let shared: Rc<RefCell<Option<Rc<SenderState>>>> = Rc::new(RefCell::new(None));
        let output = {
            let shared = shared.clone();
            Closure::<dyn FnMut(EncodedVideoChunk)>::new(move |chunk: EncodedVideoChunk| {
                if let Some(state) = shared.borrow().as_ref() {
                    state.emit(&chunk);
                }
            })
        };
        let error = Closure::<dyn FnMut(JsValue)>::new(|e: JsValue| {
            web_sys::console::warn_2(&"video encoder failed:".into(), &e);
        });
        let encoder = VideoEncoder::new(&VideoEncoderInit::new(
            error.as_ref().unchecked_ref(),
            output.as_ref().unchecked_ref(),
        ))
        .map_err(|e| format!("no video encoder: {}", crate::transport::describe(&e)))?;
        let state = Rc::new(SenderState {
            encoder,
            policy: RefCell::new(KeyframePolicy::new(KEYFRAME_INTERVAL_MS)),
            enabled: Cell::new(true),
            configured: Cell::new(None),
            last_stamp_us: Cell::new(0.0),
            generation: Cell::new(0),
            converter: RefCell::new(None),
            seq: Cell::new(0),
            sink,
            profile,
        });
        *shared.borrow_mut() = Some(state.clone());
        read_frames(&state, &reader, 0);
        Ok(VideoSender {
            state,
            reader: RefCell::new(reader),
            _output: output,
            _error: error,
        })
    }

    /// Encodes `track` from now on (another camera): the same track on the
    /// wire, its numbering going on, starting with a keyframe — receivers
    /// see the picture change, not a new sender.
    pub fn replace_track(&self, track: &MediaStreamTrack) -> Result<(), String> {
        let reader = track_reader(track, self.state.profile.what)?;
        let old = self.reader.replace(reader.clone());
        let _ = old.cancel();
        let generation = self.state.generation.get() + 1;
        self.state.generation.set(generation);
        self.request_keyframe();
        read_frames(&self.state, &reader, generation);
        Ok(())
    }

    /// Numbers this sender's frames from `seq` on (a track that continues
    /// another sender's, like a screen shared again).
    pub fn continue_from(&self, seq: u64) {
        self.state.seq.set(seq);
    }

    /// The number the next frame will get.
    pub fn next_seq(&self) -> u64 {
        self.state.seq.get()
    }

    /// The next frame is a keyframe.
    pub fn request_keyframe(&self) {
        self.state.policy.borrow_mut().request();
    }

    /// Camera on or off (off: nothing is encoded or sent).
    pub fn set_enabled(&self, on: bool) {
        if on && !self.state.enabled.get() {
            self.request_keyframe();
        }
        self.state.enabled.set(on);
    }
}

/// Pixel formats a browser's VP8 encoder takes as they are.
fn encodable(format: Option<VideoPixelFormat>) -> bool {
    matches!(
        format,
        Some(
            VideoPixelFormat::I420
                | VideoPixelFormat::I420a
                | VideoPixelFormat::Nv12
                | VideoPixelFormat::Rgba
                | VideoPixelFormat::Rgbx
                | VideoPixelFormat::Bgra
                | VideoPixelFormat::Bgrx
        )
    )
}

/// Feeds `reader`'s frames to the encoder until the track ends or the
/// reader is cancelled.
fn read_frames(state: &Rc<SenderState>, reader: &ReadableStreamDefaultReader, generation: u64) {
    let (state, reader) = (state.clone(), reader.clone());
    spawn_local(async move {
        while let Some(frame) = next_chunk::<VideoFrame>(&reader).await {
            if state.generation.get() != generation {
                frame.close();
                return;
            }
            state.encode(frame);
        }
    });
}

impl Drop for VideoSender {
    fn drop(&mut self) {
        let _ = self.reader.borrow().cancel();
        if self.state.encoder.state() != CodecState::Closed {
            let _ = self.state.encoder.close();
        }
    }
}

impl SenderState {
    fn encode(&self, frame: VideoFrame) {
        let busy = self.encoder.state() == CodecState::Closed
            || self.encoder.encode_queue_size() > MAX_ENCODE_QUEUE;
        if self.enabled.get() && !busy {
            let size = (frame.display_width(), frame.display_height());
            if self.configured.get() != Some(size) && self.configure(size) {
                self.policy.borrow_mut().request();
            }
            let stamp = clock::wall_us().max(self.last_stamp_us.get() + 1.0);
            self.last_stamp_us.set(stamp);
            let init = VideoFrameInit::new();
            init.set_timestamp_f64(stamp);
            let stamped = if encodable(frame.format()) {
                VideoFrame::new_with_video_frame_and_video_frame_init(&frame, &init)
            } else {
                self.converted(&frame, &init)
            };
            match stamped {
                Ok(stamped) => {
                    let options = VideoEncoderEncodeOptions::new();
                    options
                        .set_key_frame(self.policy.borrow_mut().next_is_keyframe(clock::now_ms()));
                    if let Err(e) = self.encoder.encode_with_options(&stamped, &options) {
                        web_sys::console::warn_2(&"video encode failed:".into(), &e);
                    }
                    stamped.close();
                }
                Err(e) => web_sys::console::warn_2(&"video frame not re-stamped:".into(), &e),
            }
        }
        frame.close();
    }

    /// `frame` redrawn as RGBA, which every encoder takes.
    fn converted(&self, frame: &VideoFrame, init: &VideoFrameInit) -> Result<VideoFrame, JsValue> {
        let (width, height) = (frame.display_width(), frame.display_height());
        let mut converter = self.converter.borrow_mut();
        if !converter
            .as_ref()
            .is_some_and(|(c, _)| c.width() == width && c.height() == height)
        {
            let canvas = OffscreenCanvas::new(width, height)?;
            let context = canvas
                .get_context("2d")?
                .ok_or("no 2d context")?
                .dyn_into::<OffscreenCanvasRenderingContext2d>()?;
            *converter = Some((canvas, context));
        }
        let (canvas, context) = converter.as_ref().expect("made above");
        context.draw_image_with_video_frame(frame, 0.0, 0.0)?;
        VideoFrame::new_with_offscreen_canvas_and_video_frame_init(canvas, init)
    }

    fn configure(&self, (width, height): (u32, u32)) -> bool {
        let config = VideoEncoderConfig::new(CODEC, height, width);
        config.set_bitrate(self.profile.bitrate);
        config.set_framerate(self.profile.fps);
        config.set_latency_mode(LatencyMode::Realtime);
        match self.encoder.configure(&config) {
            Ok(()) => {
                self.configured.set(Some((width, height)));
                true
            }
            Err(e) => {
                web_sys::console::warn_2(&"video encoder configuration refused:".into(), &e);
                false
            }
        }
    }

    fn emit(&self, chunk: &EncodedVideoChunk) {
        let mut payload = vec![0u8; chunk.byte_length() as usize];
        if chunk.copy_to_with_u8_slice(&mut payload).is_err() {
            return;
        }
        let seq = self.seq.get();
        self.seq.set(seq + 1);
        (self.sink)(Media {
            sender: String::new(),
            kind: self.profile.kind as i32,
            seq,
            capture_us: chunk.timestamp() as u64,
            keyframe: chunk.type_() == EncodedVideoChunkType::Key,
            payload: Bytes::from(payload),
        });
    }
}

/// Decodes one participant's camera or screen (`kind`) into the canvas with
/// id `canvas_id`.
pub struct VideoReceiver {
    decoder: RefCell<Option<VideoDecoder>>,
    reorder: RefCell<Reorder<EncodedVideoChunk>>,
    output: Closure<dyn FnMut(VideoFrame)>,
    error: Closure<dyn FnMut(JsValue)>,
    broken: Rc<Cell<bool>>,
}

impl VideoReceiver {
    pub fn new(canvas_id: String, kind: TrackKind, on_decoded: Rc<dyn Fn(Decoded)>) -> Self {
        let canvas: RefCell<Option<(HtmlCanvasElement, CanvasRenderingContext2d)>> =
            RefCell::new(None);
        let output = Closure::<dyn FnMut(VideoFrame)>::new(move |frame: VideoFrame| {
            let latency_ms = (clock::wall_us() - frame.timestamp()) / 1000.0;
            draw(&canvas, &canvas_id, &frame);
            frame.close();
            on_decoded(Decoded {
                kind,
                latency_ms,
                level: None,
            });
        });
        let broken = Rc::new(Cell::new(false));
        let error = {
            let broken = broken.clone();
            Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
                web_sys::console::warn_2(&"video decoder failed:".into(), &e);
                broken.set(true);
            })
        };
        VideoReceiver {
            decoder: RefCell::new(None),
            reorder: RefCell::new(Reorder::new(REORDER_WAIT_MS, KEYFRAME_REQUEST_EVERY_MS)),
            output,
            error,
            broken,
        }
    }

    /// Takes a received frame; `true` if the sender should be asked for a keyframe.
    pub fn push(&self, media: &Media) -> bool {
        if self.broken.replace(false) {
            // A decoder error closes the decoder: start again from a keyframe.
            self.decoder.borrow_mut().take();
            self.reorder.borrow_mut().reset();
        }
        let kind = if media.keyframe {
            EncodedVideoChunkType::Key
        } else {
            EncodedVideoChunkType::Delta
        };
        let init = EncodedVideoChunkInit::new_with_u8_array(
            &Uint8Array::from(&media.payload[..]),
            0,
            kind,
        );
        // The capture time travels as the timestamp: the decoded frame says
        // when it was captured.
        init.set_timestamp_f64(media.capture_us as f64);
        let Ok(chunk) = EncodedVideoChunk::new(&init) else {
            return false;
        };
        let released =
            self.reorder
                .borrow_mut()
                .push(media.seq, media.keyframe, chunk, clock::now_ms());
        for chunk in released.frames {
            let Some(decoder) = self.decoder() else { break };
            if decoder.decode(&chunk).is_err() {
                self.broken.set(true);
                break;
            }
        }
        released.request_keyframe
    }

    fn decoder(&self) -> Option<VideoDecoder> {
        let mut slot = self.decoder.borrow_mut();
        if slot.is_none() {
            let decoder = VideoDecoder::new(&VideoDecoderInit::new(
                self.error.as_ref().unchecked_ref(),
                self.output.as_ref().unchecked_ref(),
            ))
            .ok()?;
            decoder.configure(&VideoDecoderConfig::new(CODEC)).ok()?;
            *slot = Some(decoder);
        }
        slot.clone()
    }
}

impl Drop for VideoReceiver {
    fn drop(&mut self) {
        if let Some(decoder) = self.decoder.borrow_mut().take()
            && decoder.state() != CodecState::Closed
        {
            let _ = decoder.close();
        }
    }
}

/// Draws into the tile's canvas, looking it up again if the tile was redrawn.
fn draw(
    cache: &RefCell<Option<(HtmlCanvasElement, CanvasRenderingContext2d)>>,
    id: &str,
    frame: &VideoFrame,
) {
    let mut cache = cache.borrow_mut();
    if !cache.as_ref().is_some_and(|(c, _)| c.is_connected()) {
        *cache = web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.get_element_by_id(id))
            .and_then(|e| e.dyn_into::<HtmlCanvasElement>().ok())
            .and_then(|canvas| {
                let context = canvas.get_context("2d").ok()??.dyn_into().ok()?;
                Some((canvas, context))
            });
    }
    let Some((canvas, context)) = cache.as_ref() else {
        return;
    };
    let (width, height) = (frame.display_width(), frame.display_height());
    if canvas.width() != width || canvas.height() != height {
        canvas.set_width(width);
        canvas.set_height(height);
    }
    let _ = context.draw_image_with_video_frame(frame, 0.0, 0.0);
}
