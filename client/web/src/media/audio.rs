//! Audio over WebCodecs: microphone samples → `AudioEncoder` (Opus, 20 ms
//! frames) → `Media`; `Media` → per-participant `AudioDecoder` → Web Audio,
//! scheduled back to back by [`Playout`].

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use bytes::Bytes;
use js_sys::{Float32Array, Uint8Array};
use rallypoint_protocol::v1::{Media, TrackKind};
use wasm_bindgen::prelude::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::spawn_local;
use web_sys::{
    AudioContext, AudioData, AudioDataCopyToOptions, AudioDecoder, AudioDecoderConfig,
    AudioDecoderInit, AudioEncoder, AudioEncoderConfig, AudioEncoderInit, AudioSampleFormat,
    CodecState, EncodedAudioChunk, EncodedAudioChunkInit, EncodedAudioChunkType, MediaStreamTrack,
    ReadableStreamDefaultReader,
};

use super::playout::Playout;
use super::speech;
use super::{Decoded, MediaSink, next_chunk, track_reader};
use crate::clock;

pub const CODEC: &str = "opus";
/// Opus always decodes at 48 kHz; mono is what a call needs.
const SAMPLE_RATE: u32 = 48_000;
const CHANNELS: u32 = 1;
const BITRATE: u32 = 32_000;
/// Playback runs this far ahead of now to absorb network jitter…
const TARGET_LEAD_S: f64 = 0.06;
/// …and never further than this (chunks beyond it are dropped).
const MAX_LEAD_S: f64 = 0.3;

/// Encodes the microphone and hands every chunk to the sink.
pub struct AudioSender {
    state: Rc<SenderState>,
    reader: ReadableStreamDefaultReader,
    _output: Closure<dyn FnMut(EncodedAudioChunk)>,
    _error: Closure<dyn FnMut(JsValue)>,
}

struct SenderState {
    encoder: AudioEncoder,
    enabled: Cell<bool>,
    configured: Cell<bool>,
    seq: Cell<u64>,
    sink: MediaSink,
}

impl AudioSender {
    pub fn start(track: &MediaStreamTrack, sink: MediaSink) -> Result<Self, String> {
        let reader = track_reader(track, "microphone")?;
        let shared: Rc<RefCell<Option<Rc<SenderState>>>> = Rc::new(RefCell::new(None));
        let output = {
            let shared = shared.clone();
            Closure::<dyn FnMut(EncodedAudioChunk)>::new(move |chunk: EncodedAudioChunk| {
                if let Some(state) = shared.borrow().as_ref() {
                    state.emit(&chunk);
                }
            })
        };
        let error = Closure::<dyn FnMut(JsValue)>::new(|e: JsValue| {
            web_sys::console::warn_2(&"audio encoder failed:".into(), &e);
        });
        let encoder = AudioEncoder::new(&AudioEncoderInit::new(
            error.as_ref().unchecked_ref(),
            output.as_ref().unchecked_ref(),
        ))
        .map_err(|e| format!("no audio encoder: {}", crate::transport::describe(&e)))?;
        let state = Rc::new(SenderState {
            encoder,
            enabled: Cell::new(true),
            configured: Cell::new(false),
            seq: Cell::new(0),
            sink,
        });
        *shared.borrow_mut() = Some(state.clone());
        {
            let state = state.clone();
            let reader = reader.clone();
            spawn_local(async move {
                while let Some(data) = next_chunk::<AudioData>(&reader).await {
                    state.encode(data);
                }
            });
        }
        Ok(AudioSender {
            state,
            reader,
            _output: output,
            _error: error,
        })
    }

    /// Microphone on or off (muted: nothing is encoded or sent).
    pub fn set_enabled(&self, on: bool) {
        self.state.enabled.set(on);
    }
}

impl Drop for AudioSender {
    fn drop(&mut self) {
        let _ = self.reader.cancel();
        if self.state.encoder.state() != CodecState::Closed {
            let _ = self.state.encoder.close();
        }
    }
}

impl SenderState {
    fn encode(&self, data: AudioData) {
        if self.enabled.get() && self.encoder.state() != CodecState::Closed {
            if !self.configured.get() {
                // The encoder takes the microphone's rate and channels as they are.
                let config = AudioEncoderConfig::new(
                    CODEC,
                    data.number_of_channels(),
                    data.sample_rate() as u32,
                );
                config.set_bitrate(BITRATE);
                match self.encoder.configure(&config) {
                    Ok(()) => self.configured.set(true),
                    Err(e) => {
                        web_sys::console::warn_2(&"audio encoder configuration refused:".into(), &e)
                    }
                }
            }
            if self.configured.get()
                && let Err(e) = self.encoder.encode(&data)
            {
                web_sys::console::warn_2(&"audio encode failed:".into(), &e);
            }
        }
        data.close();
    }

    fn emit(&self, chunk: &EncodedAudioChunk) {
        let mut payload = vec![0u8; chunk.byte_length() as usize];
        if chunk.copy_to_with_u8_slice(&mut payload).is_err() {
            return;
        }
        let seq = self.seq.get();
        self.seq.set(seq + 1);
        (self.sink)(Media {
            sender: String::new(),
            kind: TrackKind::Audio as i32,
            seq,
            // The chunk holds the audio up to now. (Its timestamp continues
            // from the first input by sample count, so it drifts from the
            // wall clock whenever the microphone skips.)
            capture_us: (clock::wall_us() - chunk.duration().unwrap_or(20_000.0)) as u64,
            // Every Opus packet decodes on its own.
            keyframe: true,
            payload: Bytes::from(payload),
        });
    }
}

/// Chunks in the decoder beyond which the oldest capture times are
/// forgotten (the decoder stopped answering).
const MAX_IN_DECODER: usize = 50;

/// Decodes one participant's audio and plays it.
pub struct AudioReceiver {
    decoder: AudioDecoder,
    last_seq: Cell<Option<u64>>,
    /// Capture times of the chunks in the decoder, oldest first. Opus gives
    /// one output per chunk, but the decoder's output timestamps continue
    /// from its first input by sample count, so after a lost packet they
    /// fall behind: latency is taken from these instead.
    in_decoder: Rc<RefCell<VecDeque<f64>>>,
    _output: Closure<dyn FnMut(AudioData)>,
    _error: Closure<dyn FnMut(JsValue)>,
}

impl AudioReceiver {
    pub fn new(context: AudioContext, on_decoded: Rc<dyn Fn(Decoded)>) -> Result<Self, String> {
        let playout = RefCell::new(Playout::new(TARGET_LEAD_S, MAX_LEAD_S));
        let in_decoder = Rc::new(RefCell::new(VecDeque::new()));
        let captures = in_decoder.clone();
        let output = Closure::<dyn FnMut(AudioData)>::new(move |data: AudioData| {
            let level = play(&context, &mut playout.borrow_mut(), &data);
            data.close();
            if let Some(captured_us) = captures.borrow_mut().pop_front() {
                on_decoded(Decoded {
                    kind: TrackKind::Audio,
                    latency_ms: (clock::wall_us() - captured_us) / 1000.0,
                    level,
                });
            }
        });
        let error = Closure::<dyn FnMut(JsValue)>::new(|e: JsValue| {
            web_sys::console::warn_2(&"audio decoder failed:".into(), &e);
        });
        let decoder = AudioDecoder::new(&AudioDecoderInit::new(
            error.as_ref().unchecked_ref(),
            output.as_ref().unchecked_ref(),
        ))
        .map_err(|e| crate::transport::describe(&e))?;
        decoder
            .configure(&AudioDecoderConfig::new(CODEC, CHANNELS, SAMPLE_RATE))
            .map_err(|e| crate::transport::describe(&e))?;
        Ok(AudioReceiver {
            decoder,
            last_seq: Cell::new(None),
            in_decoder,
            _output: output,
            _error: error,
        })
    }

    pub fn push(&self, media: &Media) {
        if self.last_seq.get().is_some_and(|last| media.seq <= last)
            || self.decoder.state() == CodecState::Closed
        {
            return; // late or duplicate: its moment has passed
        }
        self.last_seq.set(Some(media.seq));
        let init = EncodedAudioChunkInit::new_with_u8_array(
            &Uint8Array::from(&media.payload[..]),
            0,
            EncodedAudioChunkType::Key,
        );
        init.set_timestamp_f64(media.capture_us as f64);
        let Ok(chunk) = EncodedAudioChunk::new(&init) else {
            return;
        };
        if self.decoder.decode(&chunk).is_ok() {
            let mut in_decoder = self.in_decoder.borrow_mut();
            if in_decoder.len() == MAX_IN_DECODER {
                in_decoder.pop_front();
            }
            in_decoder.push_back(media.capture_us as f64);
        }
    }
}

impl Drop for AudioReceiver {
    fn drop(&mut self) {
        if self.decoder.state() != CodecState::Closed {
            let _ = self.decoder.close();
        }
    }
}

/// Schedules `data` for playing; its level (RMS of the first channel), or
/// `None` when it could not be read.
fn play(context: &AudioContext, playout: &mut Playout, data: &AudioData) -> Option<f32> {
    let frames = data.number_of_frames();
    let channels = data.number_of_channels();
    let buffer = context
        .create_buffer(channels, frames, data.sample_rate())
        .ok()?;
    let mut level = None;
    for channel in 0..channels {
        let samples = Float32Array::new_with_length(frames);
        let options = AudioDataCopyToOptions::new(channel);
        options.set_format(AudioSampleFormat::F32Planar);
        data.copy_to_with_buffer_source(&samples, &options).ok()?;
        if channel == 0 {
            level = Some(speech::rms(&samples.to_vec()));
        }
        let _ = buffer.copy_to_channel_with_f32_array(&samples, channel as i32);
    }
    let Some(start) = playout.schedule(context.current_time(), buffer.duration()) else {
        return level;
    };
    let Ok(source) = context.create_buffer_source() else {
        return level;
    };
    source.set_buffer(Some(&buffer));
    if source
        .connect_with_audio_node(&context.destination())
        .is_ok()
    {
        let _ = source.start_with_when(start);
    }
    level
}
