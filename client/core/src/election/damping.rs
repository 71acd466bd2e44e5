//! Damping moves for degradation, so a call stops chasing a degradation
//! that follows it.
//!
//! The switching rule compares the serving path, which carries the call,
//! with standbys that carry only probes. When the bottleneck is the
//! client's own — a downlink slower than the call's media — the serving
//! relay's answers wait behind that media (in the relay's own queue and
//! unsent bytes, and in the line's queue, where a standby's answers wait
//! only in the line's), a standby looks clearly better, and the call
//! moves; the queue follows it to the new relay, the relay it left answers
//! at once again, and the call moves back. Moving cannot help
//! there, and each move costs a join, a keyframe and a glitch: the
//! simulation moved such a listener 107 times in ten minutes
//! (`tests/election_sim.rs`), the latency lab 15 times in a minute
//! (`bench failover --slow-downlink-kbit 60`).
//!
//! The client cannot tell that case from a relay that really degraded by
//! one comparison, but it can by their history: a real degradation is left
//! once, a degradation that follows the call brings the next move soon
//! after. So each move for degradation (or improvement) multiplies the time
//! the next such move must be sustained by [`FACTOR`] — 2 s, 8 s, 32 s, then
//! at most [`MAX_SUSTAIN`] — and each [`CALM`] without one divides it again.
//! A call whose every relay degrades with it moves about every two minutes
//! instead of every few seconds; the first move off a relay that degrades
//! is as quick as before, and a second within minutes waits 8 s instead of
//! 2. Failovers (a dead, draining or silent relay) are never damped.

use std::time::Duration;

use crate::time::Micros;

/// Each recent move multiplies the next one's sustain by this.
pub const FACTOR: u32 = 4;
/// The longest a move must be sustained, however many came before.
pub const MAX_SUSTAIN: Duration = Duration::from_secs(120);
/// Each this long without a move forgets one of the recent moves.
pub const CALM: Duration = Duration::from_secs(120);
/// Recent moves counted at most. The sustain reaches its cap at three;
/// counting a few more keeps a call that moved in a burst damped for a few
/// calm periods longer, and the count bounded.
const MAX_LEVEL: u32 = 5;

/// Recent moves for degradation, and what they ask of the next one.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct SwitchDamping {
    /// Recent moves as of `last_move` (before [`CALM`] forgets any).
    level: u32,
    last_move: Option<Micros>,
}

impl SwitchDamping {
    /// The call moved for degradation (or improvement) at `now`.
    pub(super) fn moved(&mut self, now: Micros) {
        self.level = (self.level_at(now) + 1).min(MAX_LEVEL);
        self.last_move = Some(now);
    }

    /// Recent moves at `now`.
    pub(super) fn level_at(&self, now: Micros) -> u32 {
        let Some(last) = self.last_move else {
            return 0;
        };
        let forgotten = now.since(last).as_micros() / CALM.as_micros();
        self.level
            .saturating_sub(u32::try_from(forgotten).unwrap_or(u32::MAX))
    }

    /// How long a challenge must hold at `now` before the call moves, where
    /// an undamped one holds `base`.
    pub(super) fn sustain_at(&self, base: Duration, now: Micros) -> Duration {
        sustain(base, self.level_at(now))
    }

    /// When a challenge held since `since` has held long enough: the
    /// earliest time at or after `since` when it has held what is asked at
    /// that time (what is asked falls as [`CALM`]s pass).
    pub(super) fn due_at(&self, base: Duration, since: Micros) -> Micros {
        let Some(last) = self.last_move else {
            return since + base;
        };
        // What is asked is constant between the times a recent move is
        // forgotten; in each such span the challenge is due at the later of
        // the span's start and `since` plus what the span asks.
        (0..=self.level)
            .map(|forgotten| {
                let asks_from = last + CALM * forgotten;
                let due = since + sustain(base, self.level - forgotten);
                due.max(asks_from)
            })
            .filter(|&due| self.sustain_at(base, due) <= due.since(since))
            .min()
            .unwrap_or(since + base)
    }
}

/// The sustain asked after `level` recent moves.
fn sustain(base: Duration, level: u32) -> Duration {
    let factor = FACTOR.saturating_pow(level);
    base.saturating_mul(factor).min(MAX_SUSTAIN.max(base))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(2);

    fn at(secs: u64) -> Micros {
        Micros::ZERO + Duration::from_secs(secs)
    }

    #[test]
    fn an_undamped_call_holds_the_base_sustain() {
        let damping = SwitchDamping::default();
        assert_eq!(damping.sustain_at(BASE, at(0)), BASE);
        assert_eq!(damping.due_at(BASE, at(10)), at(12));
    }

    #[test]
    fn each_move_quadruples_the_next_ones_sustain_up_to_its_cap() {
        let mut damping = SwitchDamping::default();
        let mut asked = Vec::new();
        for s in [5, 14, 47, 100, 110] {
            damping.moved(at(s));
            asked.push(damping.sustain_at(BASE, at(s)).as_secs());
        }
        assert_eq!(asked, [8, 32, 120, 120, 120]);
    }

    #[test]
    fn each_calm_forgets_one_move() {
        let mut damping = SwitchDamping::default();
        damping.moved(at(0));
        damping.moved(at(10));
        assert_eq!(damping.sustain_at(BASE, at(129)).as_secs(), 32);
        assert_eq!(damping.sustain_at(BASE, at(130)).as_secs(), 8);
        assert_eq!(damping.sustain_at(BASE, at(250)).as_secs(), 2);
        // A move after one calm counts from what is left.
        damping.moved(at(200));
        assert_eq!(damping.sustain_at(BASE, at(200)).as_secs(), 32);
    }

    #[test]
    fn a_challenge_is_due_when_it_has_held_what_is_asked_then() {
        let mut damping = SwitchDamping::default();
        damping.moved(at(0));
        damping.moved(at(10));
        damping.moved(at(40));
        // Three recent moves ask 120 s until 160 s, 32 s until 280 s.
        assert_eq!(damping.due_at(BASE, at(41)), at(160));
        // Held from 100 s: 120 s would be 220, but from 160 s 32 s is asked.
        assert_eq!(damping.due_at(BASE, at(100)), at(160));
        assert_eq!(damping.due_at(BASE, at(150)), at(182));
        // Long after the last move nothing is remembered.
        assert_eq!(damping.due_at(BASE, at(1_000)), at(1_002));
    }
}
