//! The microphone's level, for the lobby's meter: people check that the
//! right microphone hears them before they join. Web Audio measures it; the
//! meter reads it a few times a second.

use wasm_bindgen::JsValue;
use web_sys::{AnalyserNode, AudioContext, MediaStream};

/// Below this the meter shows nothing (dBFS): room noise.
const FLOOR_DB: f64 = -60.0;

pub struct LevelMeter {
    context: AudioContext,
    analyser: AnalyserNode,
    samples: std::cell::RefCell<Vec<f32>>,
}

impl LevelMeter {
    /// Listens to `stream`'s microphone; an error when it has none.
    pub fn start(stream: &MediaStream) -> Result<Self, JsValue> {
        let context = AudioContext::new()?;
        let source = context.create_media_stream_source(stream)?;
        let analyser = context.create_analyser()?;
        analyser.set_fft_size(1024);
        source.connect_with_audio_node(&analyser)?;
        Ok(LevelMeter {
            samples: std::cell::RefCell::new(vec![0.0; analyser.fft_size() as usize]),
            context,
            analyser,
        })
    }

    /// The level now, from 0 (silence, or the room's noise) to 1 (full
    /// scale), on a decibel scale as people hear it.
    pub fn level(&self) -> f64 {
        // A browser that started the context suspended (no click yet)
        // starts it with the next call after one.
        let _ = self.context.resume();
        let mut samples = self.samples.borrow_mut();
        self.analyser.get_float_time_domain_data(&mut samples);
        let mean_square =
            samples.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / samples.len() as f64;
        let db = 10.0 * mean_square.max(1e-12).log10();
        ((db - FLOOR_DB) / -FLOOR_DB).clamp(0.0, 1.0)
    }
}

impl Drop for LevelMeter {
    fn drop(&mut self) {
        let _ = self.context.close();
    }
}
