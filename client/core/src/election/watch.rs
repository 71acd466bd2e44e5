//! Watching the serving connection's traffic, so a dead relay is noticed
//! from silence rather than from probes alone.
//!
//! A call carries tens of frames a second (audio alone is 50), and a client
//! that talks probes its relay 20 times a second: when that traffic stops,
//! the path is suspect long before three probes 200 ms apart have gone
//! unanswered. Silence alone proves nothing — the others may have muted or
//! left — so it only makes the election ask: a few probes at once, with a
//! deadline of twice the recent round trip (the same burst makes sure
//! before probes lost in a row end a call on a relay). Any answer, or any frame, clears
//! the suspicion; none means the relay is gone and the call fails over to
//! its standby. Used on WebTransport only: a WebSocket's TCP stream stalls
//! whole for a retransmission (silence and late probes alike, a false
//! alarm), and a relay that dies under a WebSocket closes it at once.
//!
//! On a rough path silence comes by chance, and each false alarm prepares
//! the standby (media sent twice, a keyframe asked for): a talker whose only
//! traffic back is its probes' answers did so 1.7 times a second at 5% loss
//! and 30 ms jitter. So every false alarm (steady traffic back within a
//! second: a gap, not traffic that ended) doubles the silence the watch
//! waits for, up to [`MAX_SILENCE`], and each [`CALM`] without one halves it
//! again: a clean path keeps [`SILENCE`] (and failover at its fastest), a
//! rough one pays a slower failover instead of a steady stream of alarms.

use std::collections::VecDeque;
use std::time::Duration;

use crate::time::Micros;

/// Frames heard within this window count towards steady traffic.
const STEADY_WINDOW: Duration = Duration::from_secs(1);
/// Frames per [`STEADY_WINDOW`] that make silence mean something (a
/// participant's audio alone is 50; the answers to a talking client's probes
/// 20).
const STEADY_FRAMES: usize = 15;
/// Silence after steady traffic that makes the path suspect: two of a
/// talker's probe answers (50 ms apart) or five audio frames missed in a
/// row. Shorter would ask on every jitter bunch of a rough path; each ms
/// here is a ms of every failover's media gap.
pub const SILENCE: Duration = Duration::from_millis(100);
/// The longest silence false alarms back the watch off to: eight of a
/// talker's probe answers missed in a row, or twenty audio frames.
pub const MAX_SILENCE: Duration = Duration::from_millis(400);
/// A backed-off silence halves after this long without a false alarm.
pub const CALM: Duration = Duration::from_secs(30);
/// Probes sent at once when the path turns suspect. Silence this short
/// comes by chance on a rough path (a lost answer and a late next one), so
/// the burst must not be lost whole by chance: five at 10% round-trip loss
/// each are 1 in 100 000, three 1 in 1 000 (the regular probes sent until
/// the deadline can still clear it too).
pub const SUSPECT_PROBES: u32 = 5;
/// The suspicion's deadline is at least this long.
const MIN_CONFIRM: Duration = Duration::from_millis(50);

/// The suspicion's deadline is at most this long: a multi-second late
/// answer on a stalled WebSocket must not keep a vanished relay's call
/// waiting longer still.
const MAX_CONFIRM: Duration = Duration::from_secs(2);

/// How long the answers to [`SUSPECT_PROBES`] may take on a path whose
/// recent worst round trip is `round_trip`.
pub(super) fn confirm_deadline(round_trip: Duration) -> Duration {
    (round_trip * 2).clamp(MIN_CONFIRM, MAX_CONFIRM)
}

/// What the watch wants done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Alarm {
    /// Steady traffic stopped: probe now, answers due by `deadline`.
    Suspect { deadline: Micros },
    /// Nothing came back by the deadline: the relay is gone.
    Dead { silent_for: Duration },
}

#[derive(Debug, Default)]
pub(super) struct TrafficWatch {
    heard: VecDeque<Micros>,
    suspect_until: Option<Micros>,
    /// When a suspicion was last cleared by traffic that came after a real
    /// silence: a false alarm if the traffic is steady again within
    /// [`STEADY_WINDOW`] (see [`Self::heard`]).
    cleared_at: Option<Micros>,
    /// False alarms backed off from: the silence waited for is
    /// [`SILENCE`] doubled this many times (at most [`MAX_SILENCE`]).
    backoff: u32,
    /// The last false alarm, or the last halving since.
    backed_off_at: Micros,
}

impl TrafficWatch {
    /// A frame (or a probe answer) came from the serving connection.
    ///
    /// A suspicion it clears is a *false alarm* — the path lost or delayed
    /// traffic that goes on — only when the traffic is steady again within
    /// [`STEADY_WINDOW`]: traffic that ended (the talker stopped, so its
    /// probes slowed to five a second; the room fell quiet) raises one
    /// suspicion, which its next probe answers clear, and says nothing
    /// about the path. Nor is a frame that arrived before the silence was
    /// long (stamped earlier, handled late).
    ///
    /// Traffic is steady again only on frames after a silence that raised a
    /// suspicion: the answers to the suspicion's own burst of probes, five
    /// at once, kept traffic that had ended looking steady, so each silence
    /// after them raised the next suspicion — a muted talker's relay was
    /// suspected 2.5 times a second for good, each time preparing the
    /// standby, with more probes than a relay answers. The price: for the
    /// few hundred milliseconds a call's traffic takes to be steady again
    /// after a false alarm, a relay that dies is noticed by its lost probes
    /// instead.
    pub(super) fn heard(&mut self, at: Micros) {
        let Some(&previous) = self.heard.back() else {
            self.heard.push_back(at);
            return;
        };
        if at < previous {
            return; // stamped before the newest: nothing new
        }
        while self
            .heard
            .front()
            .is_some_and(|&t| at.since(t) > STEADY_WINDOW)
        {
            self.heard.pop_front();
        }
        if self.heard.len() == 4 * STEADY_FRAMES {
            self.heard.pop_front();
        }
        let ends_suspicion = self.suspect_until.take().is_some();
        // …after a real silence: not a frame stamped before it grew long,
        // which shows the traffic never stopped.
        let ends_silence = ends_suspicion && at.since(previous) >= self.silence();
        if ends_silence {
            // Steady again only on traffic after the silence (see above).
            self.heard.clear();
        }
        self.heard.push_back(at);
        if ends_suspicion {
            if ends_silence {
                self.cleared_at = Some(at);
            }
        } else if let Some(cleared) = self.cleared_at {
            if at.since(cleared) > STEADY_WINDOW {
                self.cleared_at = None;
            } else if self.heard.iter().filter(|&&t| t >= cleared).count() >= STEADY_FRAMES {
                self.cleared_at = None;
                if self.silence() < MAX_SILENCE {
                    self.backoff += 1;
                }
                self.backed_off_at = at;
            }
        } else if self.backoff > 0 && at.since(self.backed_off_at) >= CALM {
            self.backoff -= 1;
            self.backed_off_at = at;
        }
    }

    /// The silence that makes the path suspect now.
    pub(super) fn silence(&self) -> Duration {
        (SILENCE * 2u32.pow(self.backoff)).min(MAX_SILENCE)
    }

    /// Whether traffic was steady up to its last frame.
    fn steady(&self) -> bool {
        let Some(&last) = self.heard.back() else {
            return false;
        };
        self.heard
            .iter()
            .filter(|&&t| last.since(t) <= STEADY_WINDOW)
            .count()
            >= STEADY_FRAMES
    }

    /// Whether the path is suspect: silent, its probes' answers still due.
    pub(super) fn is_suspect(&self) -> bool {
        self.suspect_until.is_some()
    }

    /// When the watch next needs a look.
    pub(super) fn poll_timeout(&self) -> Option<Micros> {
        if let Some(deadline) = self.suspect_until {
            return Some(deadline);
        }
        self.steady()
            .then(|| *self.heard.back().expect("steady has frames") + self.silence())
    }

    /// What is due at `now`; `round_trip` is the path's recent worst RTT.
    pub(super) fn check(&mut self, now: Micros, round_trip: Duration) -> Option<Alarm> {
        let last = *self.heard.back()?;
        match self.suspect_until {
            Some(deadline) if now >= deadline => {
                self.heard.clear();
                self.suspect_until = None;
                Some(Alarm::Dead {
                    silent_for: now.since(last),
                })
            }
            Some(_) => None,
            None if self.steady() && now.since(last) >= self.silence() => {
                let deadline = now + confirm_deadline(round_trip);
                self.suspect_until = Some(deadline);
                Some(Alarm::Suspect { deadline })
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Micros {
        Micros::from_millis(ms)
    }

    /// Audio every 20 ms from 0 to `until` ms.
    fn steady_until(until: u64) -> TrafficWatch {
        let mut watch = TrafficWatch::default();
        for t in (0..=until).step_by(20) {
            watch.heard(ms(t));
        }
        watch
    }

    /// Audio every 20 ms until 2 s, then silence: suspect at 2.1 s.
    fn suspect_at_2100(rtt: Duration) -> TrafficWatch {
        let mut watch = steady_until(2000);
        assert!(matches!(
            watch.check(ms(2100), rtt),
            Some(Alarm::Suspect { .. })
        ));
        watch
    }

    #[test]
    fn silence_after_steady_traffic_is_suspect_then_dead_without_an_answer() {
        let rtt = Duration::from_millis(40);
        let mut watch = steady_until(2000);
        assert_eq!(watch.poll_timeout(), Some(ms(2100)));
        assert_eq!(watch.check(ms(2099), rtt), None);
        assert_eq!(
            watch.check(ms(2100), rtt),
            Some(Alarm::Suspect { deadline: ms(2180) })
        );
        assert_eq!(watch.check(ms(2150), rtt), None);
        assert_eq!(
            watch.check(ms(2180), rtt),
            Some(Alarm::Dead {
                silent_for: Duration::from_millis(180)
            })
        );
        assert_eq!(watch.poll_timeout(), None, "it starts over");
    }

    #[test]
    fn an_answer_or_a_frame_clears_the_suspicion() {
        let rtt = Duration::from_millis(1);
        let mut watch = suspect_at_2100(rtt);
        watch.heard(ms(2110));
        assert_eq!(
            watch.check(ms(2160), rtt),
            None,
            "MIN_CONFIRM deadline passed, but heard"
        );
        // One frame does not make it a false alarm (see the next test), nor
        // traffic steady again: that takes frames after the suspicion.
        assert_eq!(watch.poll_timeout(), None);
        for t in (2130..=2370).step_by(20) {
            watch.heard(ms(t));
        }
        assert_eq!(watch.poll_timeout(), None, "14 frames since");
        watch.heard(ms(2390));
        // Steady within a second of the suspicion: a false alarm, so the
        // silence waited for has doubled.
        assert_eq!(watch.poll_timeout(), Some(ms(2590)), "15 frames since");
    }

    /// A frame stamped before the silence grew long (handled late) ends the
    /// suspicion, but the traffic never stopped: the watch stays armed on
    /// what it heard, and the next silence is suspect at once.
    #[test]
    fn a_frame_stamped_before_the_silence_keeps_the_watch_armed() {
        let rtt = Duration::from_millis(40);
        let mut watch = suspect_at_2100(rtt);
        watch.heard(ms(2030));
        assert!(!watch.is_suspect());
        assert_eq!(watch.poll_timeout(), Some(ms(2130)));
        assert!(matches!(
            watch.check(ms(2130), rtt),
            Some(Alarm::Suspect { .. })
        ));
    }

    /// A talker mutes: its relay's answers drop from 20 a second to five.
    /// The silence raises one suspicion; its burst's five answers, and the
    /// answers at five a second after them, never make the traffic steady
    /// again, so there is no second one.
    #[test]
    fn traffic_that_ended_raises_one_suspicion() {
        let rtt = Duration::from_millis(40);
        let mut watch = TrafficWatch::default();
        for t in (0..=2000).step_by(50) {
            watch.heard(ms(t));
        }
        let mut suspicions = 0;
        let mut answers = Vec::new();
        let mut t = 2000;
        while t < 10_000 {
            t += 10;
            if t % 200 == 0 {
                answers.push(t + 40);
            }
            answers.retain(|&at| {
                if at == t {
                    watch.heard(ms(at));
                }
                at > t
            });
            if let Some(Alarm::Suspect { .. }) = watch.check(ms(t), rtt) {
                suspicions += 1;
                answers.extend([t + 40; SUSPECT_PROBES as usize]);
            }
        }
        assert_eq!(suspicions, 1);
    }

    #[test]
    fn false_alarms_back_off_the_silence_and_calm_brings_it_back() {
        let rtt = Duration::from_millis(40);
        let mut watch = steady_until(2000);
        let mut t = 2000;
        // Four false alarms (the last at the cap): the silence, then
        // steady traffic again.
        for expected in [100, 200, 400, 400] {
            assert_eq!(watch.silence(), Duration::from_millis(expected));
            assert!(watch.check(ms(t + expected - 1), rtt).is_none());
            assert!(matches!(
                watch.check(ms(t + expected), rtt),
                Some(Alarm::Suspect { .. })
            ));
            t += expected + 10;
            watch.heard(ms(t));
            for _ in 0..50 {
                t += 20;
                watch.heard(ms(t));
            }
        }
        assert_eq!(watch.silence(), MAX_SILENCE, "at most");
        // A silence shorter than the backed-off one raises nothing now.
        assert_eq!(watch.check(ms(t + 399), rtt), None);
        // Each calm (CALM without a false alarm) halves it, not sooner.
        let hear = |watch: &mut TrafficWatch, from: u64, until: u64| {
            for at in (from..=until).step_by(20) {
                watch.heard(ms(at));
            }
            until
        };
        let calm = CALM.as_millis() as u64;
        // The last back-off was under a second before `t`.
        t = hear(&mut watch, t, t + calm - 1_000);
        assert_eq!(watch.silence(), MAX_SILENCE, "not a whole calm yet");
        t = hear(&mut watch, t, t + 1_000);
        assert_eq!(watch.silence(), Duration::from_millis(200));
        t = hear(&mut watch, t, t + calm - 1_000);
        assert_eq!(
            watch.silence(),
            Duration::from_millis(200),
            "not twice in one calm"
        );
        hear(&mut watch, t, t + 1_000);
        assert_eq!(watch.silence(), SILENCE);
    }

    #[test]
    fn traffic_that_ends_or_a_late_frame_is_no_false_alarm() {
        let rtt = Duration::from_millis(40);
        // The talker stops: its probes (and their answers) slow to five a
        // second. The first gap raises a suspicion; the burst's answers and
        // the slow answers after clear it.
        let mut watch = suspect_at_2100(rtt);
        for t in [2130, 2131, 2132, 2133, 2134] {
            watch.heard(ms(t));
        }
        for t in (2334..=6000).step_by(200) {
            watch.heard(ms(t));
        }
        assert_eq!(watch.silence(), SILENCE);
        // A frame that arrived 30 ms after the last, handled only once the
        // suspicion was raised, then steady traffic.
        let mut watch = suspect_at_2100(rtt);
        for t in (2030..=4000).step_by(20) {
            watch.heard(ms(t));
        }
        assert_eq!(watch.silence(), SILENCE);
    }

    #[test]
    fn sparse_traffic_is_not_watched() {
        let mut watch = TrafficWatch::default();
        for t in (0..=2000).step_by(100) {
            watch.heard(ms(t)); // 10 a second: a quiet room's probe answers
        }
        assert_eq!(watch.poll_timeout(), None);
        assert_eq!(watch.check(ms(5000), Duration::ZERO), None);
    }
}
