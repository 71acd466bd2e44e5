//! Putting a sender's video frames back in order before decoding.
//!
//! On WebTransport a video frame larger than a datagram travels on a stream
//! of its own, so frames overtake each other; on any transport a frame can be
//! lost (a full relay queue, a failover). A delta frame decoded out of order
//! or after a gap corrupts the picture until the next keyframe, so frames are
//! held until their predecessors arrive, for at most `max_wait_ms`. A gap that
//! does not fill in time is a loss: the receiver waits for a keyframe and asks
//! the sender for one. A keyframe never waits for what came before it.

use std::collections::BTreeMap;

/// Frames held beyond this many count as a loss whatever their age.
const MAX_HELD: usize = 90;

#[derive(Debug)]
struct Held<T> {
    keyframe: bool,
    since_ms: f64,
    item: T,
}

/// What a pushed frame released.
#[derive(Debug, PartialEq)]
pub struct Released<T> {
    /// Frames to decode now, in order.
    pub frames: Vec<T>,
    /// Ask the sender for a keyframe.
    pub request_keyframe: bool,
}

#[derive(Debug)]
pub struct Reorder<T> {
    /// The sequence number to decode next; `None` while waiting for a keyframe.
    next: Option<u64>,
    held: BTreeMap<u64, Held<T>>,
    max_wait_ms: f64,
    request_every_ms: f64,
    last_request_ms: Option<f64>,
}

impl<T> Reorder<T> {
    pub fn new(max_wait_ms: f64, request_every_ms: f64) -> Self {
        Reorder {
            next: None,
            held: BTreeMap::new(),
            max_wait_ms,
            request_every_ms,
            last_request_ms: None,
        }
    }

    /// Start over from the next keyframe (the decoder was reset).
    pub fn reset(&mut self) {
        self.next = None;
        self.held.clear();
    }

    pub fn push(&mut self, seq: u64, keyframe: bool, item: T, now_ms: f64) -> Released<T> {
        let mut out = Released {
            frames: Vec::new(),
            request_keyframe: false,
        };
        if self.next.is_some_and(|next| seq < next) {
            return out; // late or duplicate: its turn has passed
        }
        self.held.insert(
            seq,
            Held {
                keyframe,
                since_ms: now_ms,
                item,
            },
        );
        if keyframe
            && self
                .next
                .is_none_or(|next| seq > next && !self.complete(next, seq))
        {
            self.jump_to(seq);
        }
        self.release(&mut out);
        let stuck = self
            .held
            .values()
            .next()
            .is_some_and(|oldest| now_ms - oldest.since_ms > self.max_wait_ms)
            || self.held.len() > MAX_HELD;
        if stuck {
            match self.held.iter().find(|(_, h)| h.keyframe).map(|(&s, _)| s) {
                Some(key) => {
                    self.jump_to(key);
                    self.release(&mut out);
                }
                None => self.reset(),
            }
        }
        if self.next.is_none() {
            // Deltas without their keyframe are useless: drop them and ask.
            self.held.clear();
            let due = self
                .last_request_ms
                .is_none_or(|at| now_ms - at >= self.request_every_ms);
            if due {
                self.last_request_ms = Some(now_ms);
                out.request_keyframe = true;
            }
        }
        out
    }

    /// Whether every frame from `from` up to (not including) `to` is held.
    fn complete(&self, from: u64, to: u64) -> bool {
        self.held.range(from..to).count() as u64 == to - from
    }

    fn jump_to(&mut self, keyframe_seq: u64) {
        self.held = self.held.split_off(&keyframe_seq);
        self.next = Some(keyframe_seq);
    }

    fn release(&mut self, out: &mut Released<T>) {
        while let Some(next) = self.next {
            let Some(held) = self.held.remove(&next) else {
                break;
            };
            out.frames.push(held.item);
            self.next = Some(next + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(r: &mut Reorder<u64>, pushes: &[(u64, bool, f64)]) -> (Vec<u64>, u32) {
        let mut decoded = Vec::new();
        let mut requests = 0;
        for &(seq, key, at) in pushes {
            let out = r.push(seq, key, seq, at);
            decoded.extend(out.frames);
            requests += out.request_keyframe as u32;
        }
        (decoded, requests)
    }

    #[test]
    fn in_order_frames_pass_straight_through() {
        let mut r = Reorder::new(100.0, 500.0);
        let (decoded, requests) = frames(
            &mut r,
            &[(0, true, 0.0), (1, false, 33.0), (2, false, 66.0)],
        );
        assert_eq!((decoded, requests), (vec![0, 1, 2], 0));
    }

    #[test]
    fn a_frame_that_overtook_waits_for_its_predecessor() {
        let mut r = Reorder::new(100.0, 500.0);
        let (decoded, requests) = frames(
            &mut r,
            &[
                (0, true, 0.0),
                (2, false, 40.0),
                (1, false, 50.0),
                (3, false, 66.0),
            ],
        );
        assert_eq!((decoded, requests), (vec![0, 1, 2, 3], 0));
    }

    #[test]
    fn a_lost_frame_stops_decoding_until_a_keyframe_and_asks_for_one() {
        let mut r = Reorder::new(100.0, 500.0);
        let (decoded, requests) = frames(
            &mut r,
            &[
                (0, true, 0.0),
                (2, false, 66.0),
                (3, false, 100.0),
                (4, false, 200.0), // 2 has waited 134 ms: 1 is lost
                (5, false, 233.0),
                (6, true, 266.0),
                (7, false, 300.0),
            ],
        );
        assert_eq!(decoded, vec![0, 6, 7]);
        assert_eq!(
            requests, 1,
            "asked once when 1 was declared lost, not again within 500 ms"
        );
    }

    #[test]
    fn a_keyframe_does_not_wait_for_older_frames() {
        let mut r = Reorder::new(100.0, 500.0);
        let (decoded, _) = frames(&mut r, &[(0, true, 0.0), (5, true, 10.0), (6, false, 20.0)]);
        assert_eq!(decoded, vec![0, 5, 6]);
    }

    #[test]
    fn a_late_joiner_waits_for_a_keyframe_and_asks_at_a_bounded_rate() {
        let mut r = Reorder::new(100.0, 500.0);
        let (decoded, requests) = frames(
            &mut r,
            &[
                (40, false, 0.0),
                (41, false, 33.0),
                (42, false, 600.0),
                (43, true, 633.0),
                (44, false, 666.0),
            ],
        );
        assert_eq!(decoded, vec![43, 44]);
        assert_eq!(requests, 2, "at 0 ms and again after 500 ms");
    }

    #[test]
    fn late_and_duplicate_frames_are_dropped() {
        let mut r = Reorder::new(100.0, 500.0);
        let (decoded, _) = frames(
            &mut r,
            &[
                (0, true, 0.0),
                (1, false, 33.0),
                (1, false, 34.0),
                (0, true, 35.0),
            ],
        );
        assert_eq!(decoded, vec![0, 1]);
    }
}
