//! When the sender makes a keyframe.

/// A keyframe at least every `interval_ms`, and for the next frame whenever
/// someone asks: a receiver that lost video, joined late, or a move to
/// another relay. Everything else is a delta frame (an order of magnitude
/// smaller).
#[derive(Debug, Clone)]
pub struct KeyframePolicy {
    interval_ms: f64,
    last_keyframe_at: Option<f64>,
    requested: bool,
}

impl KeyframePolicy {
    pub fn new(interval_ms: f64) -> Self {
        KeyframePolicy {
            interval_ms,
            last_keyframe_at: None,
            requested: false,
        }
    }

    /// The next frame is a keyframe.
    pub fn request(&mut self) {
        self.requested = true;
    }

    /// Whether the frame encoded at `now_ms` is a keyframe (and counts it as one).
    pub fn next_is_keyframe(&mut self, now_ms: f64) -> bool {
        let due = self.requested
            || self
                .last_keyframe_at
                .is_none_or(|at| now_ms - at >= self.interval_ms);
        if due {
            self.requested = false;
            self.last_keyframe_at = Some(now_ms);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_frame_periodic_and_requested_keyframes() {
        let mut p = KeyframePolicy::new(2000.0);
        let keys: Vec<f64> = (0..120)
            .map(|i| i as f64 * 33.3)
            .filter(|&t| p.next_is_keyframe(t))
            .collect();
        assert_eq!(keys.len(), 2, "first frame and after 2 s: {keys:?}");
        assert_eq!(keys[0], 0.0);
        assert!((keys[1] - 2000.0).abs() < 34.0);
        p.request();
        assert!(p.next_is_keyframe(4000.0));
        assert!(!p.next_is_keyframe(4033.0), "a request is served once");
    }
}
