//! Who is speaking: a participant whose decoded audio is louder than quiet
//! room noise is speaking, and stays shown as speaking for a moment after
//! (words have gaps; a tile that flickers on every syllable is noise too).

/// Root-mean-square level (full scale 1.0) above which audio is speech:
/// about −40 dBFS, well above a muted or silent microphone's zeros and
/// the encoder's comfort noise.
pub const SPEECH_RMS: f32 = 0.01;
/// How long a participant stays "speaking" after the last loud frame (ms).
pub const HANGOVER_MS: f64 = 600.0;

/// The RMS level of `samples`.
pub fn rms(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    (samples.iter().map(|s| s * s).sum::<f32>() / samples.len() as f32).sqrt()
}

/// Until when a participant whose frame at `now_ms` had level `rms`
/// counts as speaking: extended by a loud frame, unchanged by a quiet one.
pub fn speaking_until(previous: Option<f64>, rms: f32, now_ms: f64) -> Option<f64> {
    if rms >= SPEECH_RMS {
        Some(now_ms + HANGOVER_MS)
    } else {
        previous
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tone_is_speech_and_silence_is_not() {
        let tone: Vec<f32> = (0..960).map(|i| 0.1 * (i as f32 * 0.06).sin()).collect();
        assert!(rms(&tone) > SPEECH_RMS);
        assert_eq!(rms(&[0.0; 960]), 0.0);
        assert!(rms(&[0.001; 960]) < SPEECH_RMS, "room noise");
        assert_eq!(rms(&[]), 0.0);
    }

    #[test]
    fn speaking_lasts_a_moment_past_the_last_loud_frame() {
        let until = speaking_until(None, 0.2, 1_000.0);
        assert_eq!(until, Some(1_600.0));
        assert_eq!(
            speaking_until(until, 0.0, 1_100.0),
            until,
            "a gap between words"
        );
        assert_eq!(speaking_until(until, 0.2, 1_200.0), Some(1_800.0));
        assert_eq!(speaking_until(None, 0.0, 1_000.0), None);
    }
}
