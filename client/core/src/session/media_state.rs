//! Telling the room about microphone and camera changes without ever
//! exceeding the relay's budget for them.
//!
//! The relay drops a connection's `MediaState` frames beyond a burst of ten
//! and two per second (and counts them). A dropped change would leave the
//! room showing a muted microphone as open until the next change, so the
//! client paces itself under that budget instead: changes within its own
//! smaller budget go out at once; beyond it, only the latest state waits for
//! the next token. Quick toggles therefore coalesce, and the room always ends
//! on the state the person last chose.

use std::time::Duration;

use rallypoint_protocol::v1::MediaState;

use crate::time::Micros;

/// Changes sent at once after a quiet spell: half the relay's burst of ten.
pub const MEDIA_STATE_BURST: u32 = 5;

/// One more change may go out this often: half the relay's two per second.
pub const MEDIA_STATE_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(super) struct MediaStatePacer {
    /// What the room should see.
    current: MediaState,
    /// What the serving relay was last told (in a `MediaState` or a `Join`).
    told: MediaState,
    /// Changes that may go out now, at most [`MEDIA_STATE_BURST`].
    tokens: u32,
    /// When the next token is added (while below the burst).
    refill_at: Option<Micros>,
}

impl Default for MediaStatePacer {
    fn default() -> Self {
        MediaStatePacer {
            current: MediaState::default(),
            told: MediaState::default(),
            tokens: MEDIA_STATE_BURST,
            refill_at: None,
        }
    }
}

impl MediaStatePacer {
    /// What a `Join` carries.
    pub(super) fn current(&self) -> MediaState {
        self.current
    }

    /// A `Join` carried [`Self::current`]. The budget is not renewed: the
    /// Join may go over a connection whose relay budget was spent while it
    /// served before (a standby taken back), and one budget shared by every
    /// connection stays within each relay's.
    pub(super) fn joined(&mut self) {
        self.told = self.current;
    }

    /// The person changed their microphone or camera: the state to send now,
    /// if any (`None` when nothing changed or the change must wait).
    pub(super) fn set(&mut self, state: MediaState, now: Micros) -> Option<MediaState> {
        self.current = state;
        self.take_due(now)
    }

    /// When a waiting change may go out.
    pub(super) fn poll_timeout(&self) -> Option<Micros> {
        if self.current == self.told {
            None
        } else {
            self.refill_at
        }
    }

    /// The state to send now that a token came back, if one waits.
    pub(super) fn handle_timeout(&mut self, now: Micros) -> Option<MediaState> {
        self.take_due(now)
    }

    fn take_due(&mut self, now: Micros) -> Option<MediaState> {
        self.refill(now);
        if self.current == self.told || self.tokens == 0 {
            return None;
        }
        self.tokens -= 1;
        self.refill_at.get_or_insert(now + MEDIA_STATE_EVERY);
        self.told = self.current;
        Some(self.current)
    }

    fn refill(&mut self, now: Micros) {
        while let Some(at) = self.refill_at.filter(|at| *at <= now) {
            self.tokens += 1;
            self.refill_at = (self.tokens < MEDIA_STATE_BURST).then(|| at + MEDIA_STATE_EVERY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn muted(muted: bool) -> MediaState {
        MediaState {
            muted,
            ..MediaState::default()
        }
    }

    #[test]
    fn a_few_toggles_go_out_at_once() {
        let mut pacer = MediaStatePacer::default();
        let now = Micros::from_millis(1_000);
        for i in 0..MEDIA_STATE_BURST {
            let state = muted(i % 2 == 0);
            assert_eq!(pacer.set(state, now), Some(state), "toggle {i}");
        }
        assert_eq!(pacer.poll_timeout(), None, "nothing waits");
    }

    #[test]
    fn toggles_beyond_the_burst_coalesce_into_the_latest_state() {
        let mut pacer = MediaStatePacer::default();
        let start = Micros::from_millis(1_000);
        let mut sent = Vec::new();
        // Twenty toggles in 200 ms, starting muted and ending unmuted.
        for i in 0..20u64 {
            let now = start + Duration::from_millis(i * 10);
            sent.extend(pacer.set(muted(i % 2 == 0), now));
        }
        assert_eq!(sent.len(), MEDIA_STATE_BURST as usize);
        assert_eq!(sent.last(), Some(&muted(true)), "the burst's last");
        let due = pacer.poll_timeout().expect("the latest state waits");
        assert_eq!(due, start + MEDIA_STATE_EVERY);
        assert_eq!(pacer.handle_timeout(due - Duration::from_millis(1)), None);
        assert_eq!(pacer.handle_timeout(due), Some(muted(false)), "the latest");
        assert_eq!(pacer.poll_timeout(), None, "the room has it");
    }

    #[test]
    fn a_change_undone_before_its_token_sends_nothing() {
        let mut pacer = MediaStatePacer::default();
        let now = Micros::from_millis(1_000);
        for i in 0..MEDIA_STATE_BURST {
            pacer.set(muted(i % 2 == 0), now);
        }
        // The room was last told "muted"; the person unmutes and mutes again.
        assert_eq!(pacer.set(muted(false), now), None);
        assert_eq!(pacer.set(muted(true), now), None);
        assert_eq!(pacer.poll_timeout(), None, "the room already shows it");
    }

    #[test]
    fn the_pace_never_exceeds_the_relays_budget() {
        // The relay allows a burst of 10 and 2 per second: a client toggling
        // every 50 ms for a minute stays within it at every instant.
        let mut pacer = MediaStatePacer::default();
        let (relay_burst, relay_every) = (10.0_f64, 0.5_f64);
        let mut relay_tokens = relay_burst;
        let mut last = 0.0_f64;
        let mut sent = 0;
        for i in 0..1_200u64 {
            let now = Micros::from_millis(i * 50);
            let mut out: Vec<MediaState> = pacer.handle_timeout(now).into_iter().collect();
            out.extend(pacer.set(muted(i % 2 == 0), now));
            let t = i as f64 * 0.05;
            relay_tokens = (relay_tokens + (t - last) / relay_every).min(relay_burst);
            last = t;
            for _ in out {
                assert!(
                    relay_tokens >= 1.0,
                    "the relay would drop a change at {t} s"
                );
                relay_tokens -= 1.0;
                sent += 1;
            }
        }
        // A minute at one per second after the burst.
        assert!((60..=66).contains(&sent), "{sent} changes sent");
    }

    #[test]
    fn a_join_tells_the_state_but_does_not_renew_the_budget() {
        let mut pacer = MediaStatePacer::default();
        let now = Micros::from_millis(1_000);
        for i in 0..=MEDIA_STATE_BURST {
            pacer.set(muted(i % 2 == 0), now);
        }
        assert!(pacer.poll_timeout().is_some(), "a change waits");
        assert_eq!(pacer.current(), muted(false));
        pacer.joined();
        assert_eq!(pacer.poll_timeout(), None, "the Join carried it");
        // Back on a relay that served before: its budget may be spent too.
        assert_eq!(pacer.set(muted(true), now), None, "waits for a token");
        let due = pacer.poll_timeout().expect("the change waits");
        assert_eq!(pacer.handle_timeout(due), Some(muted(true)));
    }
}
