//! What a WebSocket writer does with media that waited too long for its
//! socket.
//!
//! TCP never drops, so a receiver whose downlink is slower than its room's
//! media would get every frame, ever later: the connection's media queue
//! (thousands of frames) and the kernel's send buffer fill and then carry
//! each frame their worth late. Measured before this
//! (`tests/slow_downlink.rs`, a receiver at 500 kbit/s whose room sends
//! twice that): frames 4.8 s late (p50) after 8 s, nothing dropped, and only
//! 158 of the last 4 s's frames heard. A call that late is no call.
//!
//! So the writer drops a frame that waited longer than it is worth —
//! stand-alone frames (audio) after [`MAX_DATAGRAM_WAIT`], a picture's frames
//! after [`MAX_STREAM_WAIT`], as on WebTransport — and a picture track that
//! lost a frame skips to its next keyframe (its deltas are useless without
//! the one lost). The kernel's share is bounded where the connection is
//! accepted: it reports the socket writable only while less than
//! [`super::UNSENT_LOW_WATER`] is unsent, so what a slow path has not taken
//! waits here, where its age is known.

use std::time::{Duration, Instant};

use rallypoint_protocol::queue_age::{MAX_DATAGRAM_WAIT, MAX_STREAM_WAIT};

use crate::keyframe_gate::KeyframeGate;
use crate::outbox::MediaFrame;

/// What to do with a media frame the writer takes from the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Write,
    /// Waited too long: dropped.
    Stale,
    /// Its picture track lost a frame since the last keyframe: dropped.
    AwaitingKeyframe,
}

/// The picture tracks of one connection that lost a frame to age.
#[derive(Debug, Default)]
pub(super) struct StaleMedia {
    awaiting_keyframe: KeyframeGate<u64>,
}

impl StaleMedia {
    /// Judges `frame`, taken from the queue at `now`.
    pub(super) fn judge(&mut self, frame: &MediaFrame, now: Instant) -> Verdict {
        let waited = now.saturating_duration_since(frame.handed_over);
        let Some(track) = frame.picture_track else {
            return if waited > MAX_DATAGRAM_WAIT {
                Verdict::Stale
            } else {
                Verdict::Write
            };
        };
        if !self.awaiting_keyframe.passes(&track, frame.keyframe) {
            return Verdict::AwaitingKeyframe;
        }
        if waited > MAX_PICTURE_WAIT {
            self.awaiting_keyframe.lost(track);
            return Verdict::Stale;
        }
        Verdict::Write
    }
}

/// How long a picture's frame may wait: a picture is played only once all
/// of it has arrived, so it may wait as long as a streamed one.
const MAX_PICTURE_WAIT: Duration = MAX_STREAM_WAIT;

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn aged(mut frame: MediaFrame, now: Instant, waited_ms: u64) -> MediaFrame {
        frame.handed_over = now - Duration::from_millis(waited_ms);
        frame
    }

    fn audio(now: Instant, waited_ms: u64) -> MediaFrame {
        aged(MediaFrame::single(Bytes::from_static(b"a")), now, waited_ms)
    }

    fn picture(now: Instant, waited_ms: u64, sender: &str, keyframe: bool) -> MediaFrame {
        let frame = MediaFrame::picture(Bytes::from_static(b"v"), sender, 2, keyframe);
        aged(frame, now, waited_ms)
    }

    #[test]
    fn audio_is_written_while_fresh_and_dropped_once_older_than_a_jitter_buffer_waits() {
        let now = Instant::now();
        let mut stale = StaleMedia::default();
        assert_eq!(stale.judge(&audio(now, 0), now), Verdict::Write);
        assert_eq!(stale.judge(&audio(now, 150), now), Verdict::Write);
        assert_eq!(stale.judge(&audio(now, 151), now), Verdict::Stale);
        // Audio frames stand alone: the next fresh one goes.
        assert_eq!(stale.judge(&audio(now, 10), now), Verdict::Write);
    }

    #[test]
    fn a_picture_track_that_lost_a_frame_to_age_waits_for_its_next_keyframe() {
        let now = Instant::now();
        let mut stale = StaleMedia::default();
        assert_eq!(
            stale.judge(&picture(now, 200, "a", false), now),
            Verdict::Write
        );
        assert_eq!(
            stale.judge(&picture(now, 301, "a", false), now),
            Verdict::Stale
        );
        assert_eq!(
            stale.judge(&picture(now, 0, "a", false), now),
            Verdict::AwaitingKeyframe
        );
        // Another sender's track is not held up.
        assert_eq!(
            stale.judge(&picture(now, 0, "b", false), now),
            Verdict::Write
        );
        assert_eq!(
            stale.judge(&picture(now, 0, "a", true), now),
            Verdict::Write
        );
        assert_eq!(
            stale.judge(&picture(now, 0, "a", false), now),
            Verdict::Write
        );
    }

    #[test]
    fn a_stale_keyframe_leaves_its_track_waiting_for_the_next() {
        let now = Instant::now();
        let mut stale = StaleMedia::default();
        assert_eq!(
            stale.judge(&picture(now, 400, "a", true), now),
            Verdict::Stale
        );
        assert_eq!(
            stale.judge(&picture(now, 0, "a", false), now),
            Verdict::AwaitingKeyframe
        );
    }
}
