//! Telling a media frame's second copy from a frame that was only late.
//!
//! A client whose relay goes silent sends its media through a standby relay
//! as well, and hears the room through it too, until it knows whether the
//! first relay is gone (make-before-break, `Join.prepare`): for a few hundred
//! milliseconds frames travel two ways. Every frame must still be played
//! once — a second copy of an audio frame would be heard twice — so relays
//! drop the copies a sender makes, and clients the copies two relays deliver.
//!
//! Every frame carries its sender's sequence number for the track, so each
//! side remembers, per track, the newest number and which of the
//! [`WINDOW`] numbers before it arrived — SRTP's replay window. A number
//! inside the window is a copy if it was seen, a reordered frame if not.
//!
//! A number further back than the window is a stale copy while the track
//! goes on — a backlog a stalled path delivers late, seconds behind — and
//! is dropped: playing it would replay old audio, and starting the window
//! over there would let every later copy through twice. Only when the
//! track has stopped advancing for [`RESTART_AFTER_TICKS`] does such a
//! number mean the sender started numbering anew (our clients never do
//! within a call: a call has its own peer id, a shared screen continues its
//! numbers), and the window starts over there.

use std::collections::HashMap;

/// Frames remembered per track: 2.5 s of audio, 4 s of video at 30 fps —
/// far longer than two relays' paths differ.
const WINDOW: u64 = 128;
/// A number behind the window starts the window over (the sender numbers
/// anew) only once the track's newest number has not moved for this many
/// [`SeenFrames::tick`]s: 0.5–0.75 s of ticks every [`TICK_EVERY`] — long
/// past any copy of a live stream. A restarted sender loses that much of
/// its first frames. (The relay ticks on a timer; a client ticks as frames
/// arrive, which a restarted sender's keep doing.)
const RESTART_AFTER_TICKS: u64 = 3;
/// Tracks not heard for this many [`SeenFrames::tick`]s are forgotten (10 s
/// at a tick every [`TICK_EVERY`]).
const FORGET_AFTER_TICKS: u64 = 40;
/// How often an owner should call [`SeenFrames::tick`].
pub const TICK_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
/// Tracks remembered at most; beyond, frames pass unchecked rather than grow
/// the map (a room holds a few hundred participants, three tracks each).
const MAX_TRACKS: usize = 4096;

/// One sender's track: (peer id, track kind).
pub type Track = (String, i32);

/// What a frame is to its track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not seen before (now it is): pass it on.
    First,
    /// A second copy of a frame passed on already.
    Copy,
    /// Further back than the window while the track goes on: a backlog too
    /// late to play (see the module doc). Not a copy — counted apart, so a
    /// drop is charged to what caused it.
    Stale,
}

#[derive(Debug)]
struct Window {
    newest: u64,
    /// Bit `i` set: frame `newest - i` was seen.
    seen: u128,
    heard_at_tick: u64,
    /// When `newest` last moved forward.
    advanced_at_tick: u64,
}

impl Window {
    fn new(seq: u64, tick: u64) -> Self {
        Window {
            newest: seq,
            seen: 1,
            heard_at_tick: tick,
            advanced_at_tick: tick,
        }
    }

    /// Records `seq`, and says what it was.
    fn judge(&mut self, seq: u64, tick: u64) -> Seen {
        self.heard_at_tick = tick;
        if seq > self.newest {
            let ahead = seq - self.newest;
            self.seen = if ahead >= WINDOW {
                0
            } else {
                self.seen << ahead
            };
            self.seen |= 1;
            self.newest = seq;
            self.advanced_at_tick = tick;
            return Seen::First;
        }
        let behind = self.newest - seq;
        if behind >= WINDOW {
            if tick - self.advanced_at_tick < RESTART_AFTER_TICKS {
                return Seen::Stale;
            }
            *self = Window::new(seq, tick);
            return Seen::First;
        }
        let bit = 1u128 << behind;
        let first = self.seen & bit == 0;
        self.seen |= bit;
        if first { Seen::First } else { Seen::Copy }
    }
}

/// The frames already passed on, per track.
#[derive(Debug, Default)]
pub struct SeenFrames {
    tracks: HashMap<Track, Window>,
    tick: u64,
}

impl SeenFrames {
    /// Whether frame `seq` of `track` is new (and now seen).
    pub fn first_copy(&mut self, track: &Track, seq: u64) -> bool {
        self.judge(track, seq) == Seen::First
    }

    /// What frame `seq` of `track` is (and it is seen now).
    pub fn judge(&mut self, track: &Track, seq: u64) -> Seen {
        if let Some(window) = self.tracks.get_mut(track) {
            return window.judge(seq, self.tick);
        }
        if self.tracks.len() < MAX_TRACKS {
            self.tracks
                .insert(track.clone(), Window::new(seq, self.tick));
        }
        Seen::First
    }

    /// Time passes: tracks silent for long are forgotten.
    pub fn tick(&mut self) {
        self.tick += 1;
        let now = self.tick;
        self.tracks
            .retain(|_, w| now - w.heard_at_tick < FORGET_AFTER_TICKS);
    }

    #[cfg(test)]
    fn tracks(&self) -> usize {
        self.tracks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(peer: &str) -> Track {
        (peer.to_owned(), 1)
    }

    #[test]
    fn a_second_copy_is_dropped_and_a_late_frame_is_not() {
        let mut seen = SeenFrames::default();
        let a = track("a");
        for seq in [10, 11, 13, 14] {
            assert!(seen.first_copy(&a, seq));
        }
        assert!(!seen.first_copy(&a, 13), "copy through the second relay");
        assert!(seen.first_copy(&a, 12), "reordered, never seen");
        assert!(!seen.first_copy(&a, 12));
        assert!(!seen.first_copy(&a, 10), "oldest still remembered");
        assert!(seen.first_copy(&track("b"), 13), "tracks are apart");
        assert!(seen.first_copy(&(a.0.clone(), 2), 13), "so are kinds");
    }

    #[test]
    fn two_interleaved_copies_of_a_stream_come_out_once() {
        let mut seen = SeenFrames::default();
        let a = track("a");
        // One relay a few frames ahead of the other, as two paths are.
        let mut delivered = Vec::new();
        for seq in 0..500u64 {
            for copy in [seq, seq.saturating_sub(7)] {
                if seen.first_copy(&a, copy) {
                    delivered.push(copy);
                }
            }
        }
        delivered.sort_unstable();
        assert_eq!(delivered, (0..500).collect::<Vec<_>>());
    }

    #[test]
    fn a_sender_numbering_anew_is_heard_once_its_old_numbers_stopped() {
        let mut seen = SeenFrames::default();
        let a = track("a");
        for seq in 5000..5200 {
            assert!(seen.first_copy(&a, seq));
        }
        // Frames of the restarted track, twelve per tick (50 a second): the
        // first ones may be old copies, until the old numbers have not
        // moved for long.
        let mut heard = Vec::new();
        for seq in 0..50 {
            if seen.first_copy(&a, seq) {
                heard.push(seq);
            }
            if seq % 12 == 11 {
                seen.tick(); // 50 frames a second
            }
        }
        assert_eq!(heard, (36..50).collect::<Vec<_>>());
        assert!(!seen.first_copy(&a, 49));
    }

    #[test]
    fn a_stale_backlog_behind_the_window_is_dropped_while_the_track_goes_on() {
        let mut seen = SeenFrames::default();
        let a = track("a");
        // A live track, and a stalled path's backlog from seconds ago,
        // interleaved, each copy of the live frames twice.
        let mut heard = Vec::new();
        for seq in 1_000..1_300u64 {
            for copy in [seq, seq - 500, seq, seq - 499] {
                if seen.first_copy(&a, copy) {
                    heard.push(copy);
                }
            }
            if seq % 12 == 11 {
                seen.tick();
            }
        }
        assert_eq!(heard, (1_000..1_300).collect::<Vec<_>>());
    }

    #[test]
    fn a_frame_far_behind_is_stale_not_a_copy() {
        let mut seen = SeenFrames::default();
        let a = track("a");
        assert_eq!(seen.judge(&a, 200), Seen::First);
        assert_eq!(seen.judge(&a, 200), Seen::Copy);
        assert_eq!(
            seen.judge(&a, 200 - WINDOW + 1),
            Seen::First,
            "inside the window"
        );
        assert_eq!(
            seen.judge(&a, 200 - WINDOW),
            Seen::Stale,
            "never seen, too late"
        );
    }

    #[test]
    fn a_jump_past_the_window_forgets_the_old_numbers() {
        let mut seen = SeenFrames::default();
        let a = track("a");
        assert!(seen.first_copy(&a, 1));
        assert!(seen.first_copy(&a, 1 + WINDOW + 5));
        assert!(
            seen.first_copy(&a, 2 + WINDOW),
            "inside the new window, unseen"
        );
    }

    #[test]
    fn silent_tracks_are_forgotten_and_the_map_is_bounded() {
        let mut seen = SeenFrames::default();
        assert!(seen.first_copy(&track("quiet"), 1));
        for seq in 0..FORGET_AFTER_TICKS - 1 {
            seen.tick();
            assert!(seen.first_copy(&track("talker"), seq));
        }
        assert_eq!(seen.tracks(), 2);
        seen.tick();
        assert_eq!(seen.tracks(), 1, "the quiet track went");
        for n in 0..MAX_TRACKS + 10 {
            seen.first_copy(&track(&format!("p{n}")), 1);
        }
        assert_eq!(seen.tracks(), MAX_TRACKS);
        let unseen = track("over-the-limit");
        assert!(seen.first_copy(&unseen, 1));
        assert!(seen.first_copy(&unseen, 1), "untracked frames pass");
    }
}
