//! One rule for pictures that lost a frame, wherever it was lost.
//!
//! A picture's delta frames each build on the frames before them, back to
//! the last keyframe: once one is lost, the rest of its group only shows
//! corruption, so forwarding them spends a slow receiver's link on frames
//! it cannot use. A track that lost a frame therefore skips to its next
//! keyframe. Frames are lost at the room's fan-out (a receiver's queue was
//! full) and at a WebSocket's writer (a frame waited too long); each keeps
//! a gate per receiver. (WebTransport's writer keeps the same rule in its
//! per-track group state, `transport::wt::media_streams`, where a track is
//! either an open stream or awaiting its keyframe.)

use std::collections::HashSet;
use std::hash::Hash;

/// The picture tracks of one receiver that lost a frame since their last
/// keyframe.
#[derive(Debug)]
pub struct KeyframeGate<Track> {
    awaiting: HashSet<Track>,
}

impl<Track> Default for KeyframeGate<Track> {
    fn default() -> Self {
        KeyframeGate {
            awaiting: HashSet::new(),
        }
    }
}

impl<Track: Hash + Eq> KeyframeGate<Track> {
    /// Whether a frame of `track` goes on: a keyframe always does, and
    /// starts the track afresh; a delta frame only while its track has lost
    /// nothing since its keyframe.
    pub fn passes(&mut self, track: &Track, keyframe: bool) -> bool {
        if keyframe {
            self.awaiting.remove(track);
            true
        } else {
            !self.awaiting.contains(track)
        }
    }

    /// A frame of `track` was lost: it skips to its next keyframe.
    pub fn lost(&mut self, track: Track) {
        self.awaiting.insert(track);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_track_that_lost_a_frame_skips_to_its_next_keyframe_and_others_go_on() {
        let mut gate = KeyframeGate::default();
        assert!(gate.passes(&1, false), "nothing lost yet");
        gate.lost(1);
        assert!(!gate.passes(&1, false), "a delta after the loss");
        assert!(gate.passes(&2, false), "another track lost nothing");
        assert!(gate.passes(&1, true), "its keyframe");
        assert!(gate.passes(&1, false), "the deltas after that keyframe");
    }
}
