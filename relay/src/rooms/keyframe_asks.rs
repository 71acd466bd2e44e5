//! When a keyframe request goes on to its sender.
//!
//! A receiver that lost a frame of a picture (camera, screen) can decode
//! nothing of it until the sender's next keyframe, so it, or the relay for it
//! when one of the relay's own queues dropped the frame, asks for one. But a
//! keyframe goes to every receiver of the track and is several times the
//! size of a delta frame, so requests are rationed twice:
//!
//! * **Per track**, at most one per [`TRACK_INTERVAL`]: after a burst of
//!   drops one keyframe repairs every receiver. A request held back is
//!   *owed* and goes on once the interval has passed, unless a keyframe of
//!   the track came through first (a loss right after a request must not
//!   wait for the sender's next keyframe of its own accord, which for a
//!   shared screen can be long).
//! * **Per receiver**: a receiver that keeps losing — its path is slower
//!   than the video, it stopped reading, or it asks on purpose — is granted
//!   a keyframe after an interval that doubles with each grant, from
//!   [`FIRST_INTERVAL`] up to [`LONGEST_INTERVAL`]; what it asks within its
//!   interval is held back until the interval ends, unless a keyframe came
//!   through first (the sender's periodic one, or one someone else asked
//!   for). It starts again from [`FIRST_INTERVAL`] once it has asked for
//!   nothing for [`QUIET`]. Without this, a receiver stuck behind a full
//!   queue had every keyframe dropped again and asked for again: its
//!   sender was asked 14 times in 8 s and sent the whole room 13 keyframes
//!   in 6 s of camera where 3 were due; a participant asking four times a
//!   second had 14 of its 24 requests passed on
//!   (`relay/tests/slow_receiver.rs`; with the back-off 5 keyframes, and 5
//!   of the 24).
//!
//! A request on behalf of several receivers (a frame dropped for each of
//! them) goes on if any of them may ask, and counts as a grant for each
//! that may: the keyframe repairs them all. The cost of the back-off falls
//! on the receiver that keeps losing: from its fourth grant in a row it
//! waits 2.4 s, then 4 s, longer than the sender's periodic keyframe (2 s
//! in the browser). Each relay rations the requests of its own clients; a
//! request another relay passed on was rationed there.
//!
//! Pure state, no I/O: the room task asks, and sends what it is told to.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// At most one request per sender and kind per this interval.
pub const TRACK_INTERVAL: Duration = Duration::from_millis(300);
/// A receiver's first request after a quiet spell goes on at once; its next
/// no sooner than this after it.
pub const FIRST_INTERVAL: Duration = Duration::from_millis(300);
/// The longest a receiver that keeps asking waits between two grants: twice
/// the browser's periodic keyframe interval, so a receiver that loses every
/// group costs the room at most one keyframe in 4 s beyond the periodic ones.
pub const LONGEST_INTERVAL: Duration = Duration::from_secs(4);
/// A receiver that asked for nothing, and had nothing granted, this long
/// starts again from [`FIRST_INTERVAL`]: longer than [`LONGEST_INTERVAL`],
/// so one that keeps asking never does — counted from a grant too, since a
/// receiver that loses every keyframe asks again only once the keyframe its
/// held-back request brought has reached it.
pub const QUIET: Duration = Duration::from_secs(5);

/// A picture track: its sender's peer id and its kind.
pub type Track = (String, i32);

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it to the track's sender now.
    Send,
    /// Held back by [`TRACK_INTERVAL`]: [`KeyframeAsks::due`] gives it back.
    Owed,
    /// Every receiver it is for asked too often: held back until the first
    /// of them may ask again ([`KeyframeAsks::due`] gives it back then).
    BackingOff,
}

/// One receiver's rationing for one track.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    /// When its next request may go on.
    next_at: Instant,
    /// How long after its next grant the one after may go on.
    interval: Duration,
    /// Its last request, granted or not, or the last grant of one held
    /// back, whichever came later (see [`QUIET`]).
    active_at: Instant,
}

impl Backoff {
    /// A receiver new to the track, or back after [`QUIET`]: it may ask now.
    fn fresh(now: Instant) -> Self {
        Backoff {
            next_at: now,
            interval: FIRST_INTERVAL,
            active_at: now,
        }
    }

    /// Grants its request if its interval has passed (doubling it).
    fn grant(&mut self, now: Instant) -> bool {
        if now < self.next_at {
            return false;
        }
        self.next_at = now + self.interval;
        self.interval = (self.interval * 2).min(LONGEST_INTERVAL);
        self.active_at = now;
        true
    }
}

/// A request held back, and for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owed {
    /// Who asked last (the sender is told).
    pub requester: String,
    /// For whom: the first of them allowed to ask again lets it go on.
    pub receivers: Vec<String>,
}

#[derive(Debug, Default)]
pub struct KeyframeAsks {
    /// When a request for each track last went on.
    sent: HashMap<Track, Instant>,
    owed: HashMap<Track, Owed>,
    /// Per track and receiver (a peer id; "" for the relay's own request
    /// when a frame was lost for every receiver).
    receivers: HashMap<(Track, String), Backoff>,
}

impl KeyframeAsks {
    /// A request for `track` on behalf of `receivers` (those that lost a
    /// frame of it), from `requester` (the peer id the sender is told; ""
    /// for the relay).
    pub fn ask<'a>(
        &mut self,
        track: &Track,
        receivers: impl IntoIterator<Item = &'a str>,
        requester: &str,
        now: Instant,
    ) -> Verdict {
        let receivers: Vec<&str> = receivers.into_iter().collect();
        for receiver in &receivers {
            self.note_ask(track, receiver, now);
        }
        let track_free = track_free(&self.sent, track, now);
        if track_free && grant_any(&mut self.receivers, track, receivers.iter().copied(), now) {
            self.sent.insert(track.clone(), now);
            // Whatever was owed for the track goes with it.
            self.owed.remove(track);
            return Verdict::Send;
        }
        let owed = self.owed.entry(track.clone()).or_insert_with(|| Owed {
            requester: String::new(),
            receivers: Vec::new(),
        });
        requester.clone_into(&mut owed.requester);
        for receiver in receivers {
            if !owed.receivers.iter().any(|r| r == receiver) {
                owed.receivers.push(receiver.to_owned());
            }
        }
        if track_free {
            Verdict::BackingOff
        } else {
            Verdict::Owed
        }
    }

    /// A keyframe of `track` came through: what was owed for it is paid.
    pub fn keyframe_passed(&mut self, track: &Track) {
        self.owed.remove(track);
    }

    /// The requests held back that may go on now, counted as sent; and
    /// forgets what no longer matters.
    pub fn due(&mut self, now: Instant) -> Vec<(Track, Owed)> {
        self.sent
            .retain(|_, at| now.duration_since(*at) < TRACK_INTERVAL);
        self.receivers
            .retain(|_, backoff| now.duration_since(backoff.active_at) < QUIET);
        let (sent, receivers) = (&mut self.sent, &mut self.receivers);
        let due: Vec<(Track, Owed)> = self
            .owed
            .extract_if(|track, owed| {
                track_free(sent, track, now)
                    && grant_any(
                        receivers,
                        track,
                        owed.receivers.iter().map(String::as_str),
                        now,
                    )
            })
            .collect();
        for (track, _) in &due {
            sent.insert(track.clone(), now);
        }
        due
    }

    /// Records a request of `receiver`'s: one after a quiet spell starts
    /// its rationing over.
    fn note_ask(&mut self, track: &Track, receiver: &str, now: Instant) {
        let backoff = self
            .receivers
            .entry((track.clone(), receiver.to_owned()))
            .or_insert(Backoff::fresh(now));
        if now.duration_since(backoff.active_at) >= QUIET {
            *backoff = Backoff::fresh(now);
        }
        backoff.active_at = now;
    }
}

/// Whether no request for `track` went on within [`TRACK_INTERVAL`].
fn track_free(sent: &HashMap<Track, Instant>, track: &Track, now: Instant) -> bool {
    sent.get(track)
        .is_none_or(|at| now.duration_since(*at) >= TRACK_INTERVAL)
}

/// Whether any of `receivers` may have a request go on now; grants it to
/// each that may (their intervals double): the keyframe repairs them all,
/// and one left uncharged would ask again the moment it lost it.
fn grant_any<'a>(
    backoffs: &mut HashMap<(Track, String), Backoff>,
    track: &Track,
    receivers: impl Iterator<Item = &'a str>,
    now: Instant,
) -> bool {
    let mut granted = false;
    for receiver in receivers {
        // A receiver forgotten while its request was held back is new again.
        granted |= backoffs
            .entry((track.clone(), receiver.to_owned()))
            .or_insert(Backoff::fresh(now))
            .grant(now);
    }
    granted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn camera() -> Track {
        ("alice".to_owned(), 1)
    }

    /// What `due` gave back, as (track, requester).
    fn requesters(due: Vec<(Track, Owed)>) -> Vec<(Track, String)> {
        due.into_iter()
            .map(|(track, owed)| (track, owed.requester))
            .collect()
    }

    /// Requests of `receiver` every `every` for `span` from `start`, and the
    /// offsets (ms) of those that went on.
    fn asking(
        asks: &mut KeyframeAsks,
        start: Instant,
        receiver: &str,
        every: Duration,
        span: Duration,
    ) -> Vec<u128> {
        let mut passed = Vec::new();
        let mut at = Duration::ZERO;
        while at < span {
            let verdict = asks.ask(&camera(), [receiver], receiver, start + at);
            if verdict == Verdict::Send {
                passed.push(at.as_millis());
            }
            at += every;
        }
        passed
    }

    #[test]
    fn a_receiver_that_keeps_asking_is_granted_ever_more_rarely() {
        let start = Instant::now();
        let mut asks = KeyframeAsks::default();
        let passed = asking(
            &mut asks,
            start,
            "bob",
            Duration::from_millis(100),
            Duration::from_secs(20),
        );
        // 300, 600, 1 200, 2 400 ms apart, then every 4 s.
        assert_eq!(passed, [0, 300, 900, 2100, 4500, 8500, 12500, 16500]);
    }

    #[test]
    fn a_receiver_quiet_for_a_while_is_granted_at_once_again() {
        let start = Instant::now();
        let mut asks = KeyframeAsks::default();
        let early = asking(
            &mut asks,
            start,
            "bob",
            Duration::from_millis(100),
            Duration::from_secs(3),
        );
        assert_eq!(early, [0, 300, 900, 2100]);
        // Its last ask at 2.9 s; quiet until 7.9 s.
        let later = start + Duration::from_millis(7_900);
        assert_eq!(asks.ask(&camera(), ["bob"], "bob", later), Verdict::Send);
        assert_eq!(
            asks.ask(&camera(), ["bob"], "bob", later + FIRST_INTERVAL),
            Verdict::Send,
            "back to the first interval"
        );
        assert_eq!(
            asks.ask(&camera(), ["bob"], "bob", later + FIRST_INTERVAL * 2),
            Verdict::BackingOff,
            "then doubling again"
        );
    }

    #[test]
    fn one_receiver_backing_off_does_not_hold_up_another() {
        let start = Instant::now();
        let mut asks = KeyframeAsks::default();
        asking(
            &mut asks,
            start,
            "bob",
            Duration::from_millis(100),
            Duration::from_secs(3),
        );
        let at = start + Duration::from_millis(3_000);
        assert_eq!(asks.ask(&camera(), ["bob"], "bob", at), Verdict::BackingOff);
        assert_eq!(
            asks.ask(&camera(), ["carol"], "carol", at),
            Verdict::Send,
            "carol's first request"
        );
        // A frame lost for both: carol's need carries it, bob's alone does
        // not.
        let lost = at + FIRST_INTERVAL;
        assert_eq!(asks.ask(&camera(), ["bob"], "", lost), Verdict::BackingOff);
        assert_eq!(
            asks.ask(&camera(), ["bob", "carol"], "", lost),
            Verdict::Send
        );
    }

    #[test]
    fn requests_within_the_track_interval_are_owed_once_and_paid_by_a_keyframe() {
        let start = Instant::now();
        let mut asks = KeyframeAsks::default();
        assert_eq!(asks.ask(&camera(), ["bob"], "bob", start), Verdict::Send);
        let soon = start + Duration::from_millis(100);
        assert_eq!(asks.ask(&camera(), ["carol"], "carol", soon), Verdict::Owed);
        assert_eq!(asks.ask(&camera(), ["dave"], "dave", soon), Verdict::Owed);
        assert!(
            asks.due(start + Duration::from_millis(250)).is_empty(),
            "the track interval has not passed"
        );
        let due = requesters(asks.due(start + TRACK_INTERVAL));
        assert_eq!(due, [(camera(), "dave".to_owned())], "one request for both");
        assert!(asks.due(start + TRACK_INTERVAL * 3).is_empty());

        // A keyframe that passes first pays what is owed.
        let later = start + Duration::from_secs(1);
        asks.ask(&camera(), ["erin"], "erin", later);
        assert_eq!(
            asks.ask(&camera(), ["frank"], "frank", later),
            Verdict::Owed
        );
        asks.keyframe_passed(&camera());
        assert!(asks.due(later + TRACK_INTERVAL).is_empty());
    }

    #[test]
    fn a_request_held_back_for_its_receiver_goes_on_when_it_may_ask_again() {
        let start = Instant::now();
        let mut asks = KeyframeAsks::default();
        assert_eq!(asks.ask(&camera(), [""], "", start), Verdict::Send);
        let soon = start + Duration::from_millis(100);
        assert_eq!(asks.ask(&camera(), [""], "", soon), Verdict::Owed);
        let later = start + Duration::from_millis(400);
        assert!(asks.due(start + Duration::from_millis(250)).is_empty());
        assert_eq!(requesters(asks.due(later)), [(camera(), String::new())]);
        // Now its interval is 600 ms: asked again at once, the request
        // waits until 1 s.
        assert_eq!(
            asks.ask(&camera(), [""], "", later + TRACK_INTERVAL),
            Verdict::BackingOff
        );
        assert!(asks.due(later + Duration::from_millis(500)).is_empty());
        assert_eq!(
            requesters(asks.due(later + Duration::from_millis(600))),
            [(camera(), String::new())]
        );
        assert!(
            asks.due(later + Duration::from_secs(2)).is_empty(),
            "sent once"
        );
    }

    /// A receiver that loses every keyframe asks again only once the
    /// keyframe its held-back request brought has reached it, which can be
    /// more than [`QUIET`] after its previous ask: the grant counts as
    /// activity, so it is not taken for a fresh receiver.
    #[test]
    fn a_receiver_granted_a_held_back_request_is_not_taken_for_a_quiet_one() {
        let start = Instant::now();
        let mut asks = KeyframeAsks::default();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let granted = asking(
            &mut asks,
            start,
            "bob",
            Duration::from_millis(100),
            Duration::from_millis(8_600),
        );
        assert_eq!(granted.last(), Some(&8_500), "next at 12.5 s");
        assert_eq!(
            asks.ask(&camera(), ["bob"], "bob", at(9_000)),
            Verdict::BackingOff
        );
        assert!(asks.due(at(12_250)).is_empty());
        assert_eq!(
            requesters(asks.due(at(12_500))),
            [(camera(), "bob".to_owned())]
        );
        // Its next ask, 5.5 s after the one before, 2 s after the grant.
        assert_eq!(
            asks.ask(&camera(), ["bob"], "bob", at(14_500)),
            Verdict::BackingOff,
            "still 4 s between grants"
        );
    }

    #[test]
    fn a_frame_lost_for_several_receivers_counts_against_each_that_may_ask() {
        let start = Instant::now();
        let mut asks = KeyframeAsks::default();
        assert_eq!(
            asks.ask(&camera(), ["bob", "carol"], "", start),
            Verdict::Send
        );
        // The keyframe repairs both, and counts for both: carol's next two
        // grants are 300 ms, then 600 ms apart, as if she had asked first.
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert_eq!(
            asks.ask(&camera(), ["carol"], "carol", at(300)),
            Verdict::Send
        );
        assert_eq!(
            asks.ask(&camera(), ["carol"], "carol", at(600)),
            Verdict::BackingOff,
            "her interval is 600 ms now"
        );
    }

    #[test]
    fn what_is_remembered_is_forgotten_once_quiet() {
        let start = Instant::now();
        let mut asks = KeyframeAsks::default();
        for (i, receiver) in ["bob", "carol", "dave"].into_iter().enumerate() {
            asks.ask(
                &camera(),
                [receiver],
                receiver,
                start + TRACK_INTERVAL * i as u32,
            );
        }
        asks.due(start + Duration::from_secs(1));
        assert_eq!(asks.receivers.len(), 3);
        assert!(asks.due(start + TRACK_INTERVAL * 2 + QUIET).is_empty());
        assert!(asks.receivers.is_empty() && asks.sent.is_empty() && asks.owed.is_empty());
    }
}
