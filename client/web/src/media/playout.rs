//! When each decoded audio chunk plays.
//!
//! Chunks are scheduled back to back on the `AudioContext` clock, a little
//! ahead of now so network jitter does not starve the output. After an
//! underrun (the network stalled) playback restarts `target_lead` ahead; when
//! a burst of late chunks would push playback more than `max_lead` behind
//! real time, chunks are dropped rather than letting latency grow for the
//! rest of the call.

/// Scheduling state of one remote participant's audio (times in seconds).
#[derive(Debug, Clone)]
pub struct Playout {
    next_start: Option<f64>,
    target_lead: f64,
    max_lead: f64,
}

impl Playout {
    pub fn new(target_lead: f64, max_lead: f64) -> Self {
        Playout {
            next_start: None,
            target_lead,
            max_lead,
        }
    }

    /// When a chunk of `duration` arriving at `now` starts, or `None` to drop it.
    pub fn schedule(&mut self, now: f64, duration: f64) -> Option<f64> {
        let start = match self.next_start {
            Some(t) if t > now + self.max_lead => return None,
            Some(t) if t >= now => t,
            _ => now + self.target_lead,
        };
        self.next_start = Some(start + duration);
        Some(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_chunks_play_back_to_back() {
        let mut p = Playout::new(0.06, 0.3);
        assert_eq!(p.schedule(1.0, 0.02), Some(1.06));
        assert_eq!(p.schedule(1.02, 0.02), Some(1.08));
        assert_eq!(p.schedule(1.04, 0.02), Some(1.10));
    }

    #[test]
    fn an_underrun_restarts_ahead_of_now() {
        let mut p = Playout::new(0.06, 0.3);
        p.schedule(1.0, 0.02);
        assert_eq!(p.schedule(2.0, 0.02), Some(2.06));
    }

    #[test]
    fn a_burst_is_trimmed_instead_of_adding_latency() {
        let mut p = Playout::new(0.06, 0.31);
        let played = (0..40).filter(|_| p.schedule(1.0, 0.02).is_some()).count();
        // Starts at 1.06 s, 1.08 s, … 1.30 s (at most 310 ms ahead): 13
        // chunks of 20 ms, the rest dropped.
        assert_eq!(played, 13);
    }
}
