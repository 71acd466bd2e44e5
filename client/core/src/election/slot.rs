//! One candidate as the election tracks it: its connection, its role, and
//! the bookkeeping of every probe sent to it — in flight, answered, late or
//! lost. The election decides; a slot only records and counts.

use std::collections::VecDeque;
use std::time::Duration;

use rallypoint_protocol::limits::PROBES_ANSWERED_BY_EARLIER_RELAYS;

use super::config::ElectionConfig;
use super::events::Role;
use super::stats::{self, RttStats};
use crate::candidate::Candidate;
use crate::time::Micros;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Conn {
    Closed,
    Connecting { since: Micros },
    Connected,
}

/// Most relay hold time subtracted from a measured RTT. An honest relay
/// holds a probe for microseconds; more is a busy relay, whose delay the
/// client feels all the same, or a lie.
pub const MAX_RELAY_HOLD: Duration = Duration::from_millis(2);

/// An answer this much later than its path's recent median round trip is
/// lost to a call: a listener's jitter buffer holds tens of milliseconds of
/// audio, not hundreds, so a frame delayed like it is concealed like a lost
/// one. It matters most on WebSocket, where TCP never loses a probe but
/// delivers it a retransmission timeout (at least 200 ms) late and holds
/// back what follows it; a datagram path's jitter rarely reaches it (three
/// standard deviations of 30 ms jitter).
pub const LATE_FOR_MEDIA: Duration = Duration::from_millis(100);

/// A probe this election sent, by its own clock.
#[derive(Debug, Clone, Copy)]
struct SentProbe {
    seq: u64,
    sent_at: Micros,
    until: Micros,
}

#[derive(Debug, Clone)]
pub(super) struct Slot {
    pub(super) candidate: Candidate,
    pub(super) conn: Conn,
    pub(super) role: Role,
    pub(super) stats: RttStats,
    /// Probes in flight, oldest first; `until` is the answer's deadline.
    outstanding: VecDeque<SentProbe>,
    /// Probes past their deadline (`until`: when counted lost): an answer
    /// that still comes is a late sample, not a loss.
    late: VecDeque<SentProbe>,
    pub(super) next_probe: Option<Micros>,
    pub(super) consecutive_lost: u32,
    /// When the first probe of the current run of unanswered ones left.
    lost_run_since: Option<Micros>,
    /// The serving relay looked gone and a burst of probes went to make
    /// sure: their answers are due by then.
    pub(super) confirming_until: Option<Micros>,
    pub(super) connect_time: Option<Duration>,
    pub(super) error: Option<String>,
    pub(super) draining: bool,
    pub(super) reprobe_left: u32,
    /// Probes its relay answers a second (said in its Welcome).
    pub(super) probes_answered: u32,
}

impl Slot {
    pub(super) fn new(candidate: Candidate) -> Self {
        Slot {
            candidate,
            conn: Conn::Closed,
            role: Role::Idle,
            stats: RttStats::new(),
            outstanding: VecDeque::new(),
            late: VecDeque::new(),
            next_probe: None,
            consecutive_lost: 0,
            lost_run_since: None,
            confirming_until: None,
            connect_time: None,
            error: None,
            draining: false,
            reprobe_left: 0,
            probes_answered: PROBES_ANSWERED_BY_EARLIER_RELAYS,
        }
    }

    /// The shortest interval this slot's probes may keep up for long: 80% of
    /// what its relay answers, so a burst (a suspicion's five at once) still
    /// finds room in its budget.
    pub(super) fn fastest_sustained_probing(&self) -> Duration {
        // The relay's word, off the wire: any u32 must do.
        Duration::from_millis(1_250) / self.probes_answered.max(1)
    }

    /// Whether the slot is probed at all now: connected, with a role, and
    /// (in a light re-probe) samples still to take.
    fn probing(&self) -> bool {
        self.conn == Conn::Connected
            && self.role != Role::Idle
            && !(self.role == Role::Reprobe && self.reprobe_left == 0)
    }

    /// Whether a probe is due at `now`.
    pub(super) fn probe_due(&self, now: Micros) -> bool {
        self.probing() && self.next_probe.is_some_and(|due| now >= due)
    }

    /// When the slot next needs the election: a probe due, or the oldest
    /// answer's deadline.
    pub(super) fn poll_timeout(&self) -> Option<Micros> {
        let next_probe = self.next_probe.filter(|_| self.probing());
        let deadline = self.outstanding.front().map(|probe| probe.until);
        next_probe.into_iter().chain(deadline).min()
    }

    /// Probe `seq` leaves now; its answer is due within `timeout`, the next
    /// probe `interval` after this one was due (no drift, no burst after a
    /// stall).
    pub(super) fn sent(&mut self, seq: u64, now: Micros, timeout: Duration, interval: Duration) {
        let due = self.next_probe.unwrap_or(now);
        self.outstanding.push_back(SentProbe {
            seq,
            sent_at: now,
            until: now + timeout,
        });
        self.next_probe = Some(due.max(now - interval) + interval);
        if self.role == Role::Reprobe {
            self.reprobe_left -= 1;
        }
    }

    /// An extra probe `seq` leaves now, outside the schedule, its answer due
    /// within `timeout`.
    pub(super) fn sent_extra(&mut self, seq: u64, now: Micros, timeout: Duration) {
        self.outstanding.push_back(SentProbe {
            seq,
            sent_at: now,
            until: now + timeout,
        });
    }

    /// The worst round trip among the last ten samples, if any.
    pub(super) fn recent_worst_rtt(&self) -> Option<Duration> {
        self.stats.latest(10).max().map(Duration::from_micros)
    }

    /// The answer to probe `seq`, read at `received_at`: recorded as a
    /// sample (late if its deadline had passed). `false` if the probe is not
    /// one of this slot's (a closed connection's).
    pub(super) fn answered(
        &mut self,
        seq: u64,
        relay_hold: Duration,
        received_at: Micros,
        now: Micros,
    ) -> bool {
        let rtt = |probe: SentProbe| {
            let measured = received_at.since(probe.sent_at);
            measured.saturating_sub(relay_hold.min(MAX_RELAY_HOLD))
        };
        let usual = stats::median(&self.stats.latest(10).collect::<Vec<_>>());
        let too_late_for_media = |rtt: Duration| {
            usual.is_some_and(|us| rtt.as_micros() as f64 > us + LATE_FOR_MEDIA.as_micros() as f64)
        };
        let rtt = if let Some(position) = self.outstanding.iter().position(|p| p.seq == seq) {
            let probe = self.outstanding.remove(position).expect("found above");
            let rtt = rtt(probe);
            self.stats.record(now, rtt);
            rtt
        } else if let Some(position) = self.late.iter().position(|p| p.seq == seq) {
            let probe = self.late.remove(position).expect("found above");
            let rtt = rtt(probe);
            self.stats.record_late(now, rtt);
            rtt
        } else {
            return false;
        };
        if too_late_for_media(rtt) {
            self.stats.record_too_late();
        }
        self.start_counting_losses_anew();
        true
    }

    /// Counts the probes past their deadline as lost (an answer that still
    /// comes within `keep_late` is a late sample); how many were lost now.
    pub(super) fn expire(&mut self, now: Micros, keep_late: Duration) -> u32 {
        while self
            .late
            .front()
            .is_some_and(|probe| now.since(probe.until) > keep_late)
        {
            self.late.pop_front();
        }
        let mut lost = 0;
        while self
            .outstanding
            .front()
            .is_some_and(|probe| probe.until <= now)
        {
            let probe = self.outstanding.pop_front().expect("checked");
            self.lost_run_since.get_or_insert(probe.sent_at);
            self.late.push_back(SentProbe {
                until: now,
                ..probe
            });
            self.stats.record_lost(now);
            self.consecutive_lost += 1;
            lost += 1;
        }
        lost
    }

    /// Probes are in flight.
    pub(super) fn awaiting_answers(&self) -> bool {
        !self.outstanding.is_empty()
    }

    /// How many probes are in flight.
    pub(super) fn in_flight(&self) -> usize {
        self.outstanding.len()
    }

    /// Forgets every probe: the connection is gone.
    pub(super) fn forget_probes(&mut self) {
        self.outstanding.clear();
        self.late.clear();
        self.next_probe = None;
        self.start_counting_losses_anew();
    }

    /// A new role: earlier losses in a row do not count towards its failover.
    pub(super) fn start_counting_losses_anew(&mut self) {
        self.consecutive_lost = 0;
        self.lost_run_since = None;
        self.confirming_until = None;
    }

    /// How long the current run of unanswered probes has lasted.
    pub(super) fn unanswered_for(&self, now: Micros) -> Duration {
        self.lost_run_since
            .map_or(Duration::ZERO, |since| now.since(since))
    }

    /// Whether the probes lost in a row mean the relay is gone: as many as
    /// [`Slot::lost_probes_for_failover`] asks, and on a WebSocket for at
    /// least `config.stream_stall_limit` too. TCP loses nothing; it stalls
    /// — a retransmission timeout of 200 ms, doubled for each further loss
    /// of the same segment — and a talking client's probes, 50 ms apart,
    /// all wait behind the stalled one. A relay that dies under a WebSocket
    /// closes it at once; only a relay whose host vanished without a word
    /// is noticed this late.
    pub(super) fn relay_gone(&self, now: Micros, config: &ElectionConfig) -> bool {
        if self.consecutive_lost < self.lost_probes_for_failover(config) {
            return false;
        }
        match self.candidate.transport {
            crate::TransportKind::WebTransport => true,
            crate::TransportKind::WebSocket => {
                self.unanswered_for(now) >= config.stream_stall_limit
            }
        }
    }

    /// How long an answer may take before the probe counts as lost: four
    /// times the recent median RTT (or the connect-time bound before any
    /// sample), clamped.
    pub(super) fn probe_timeout(&self, config: &ElectionConfig) -> Duration {
        let latest: Vec<u64> = self.stats.latest(10).collect();
        let basis = stats::median(&latest)
            .map(|us| Duration::from_micros(us as u64))
            .or_else(|| {
                self.connect_time
                    .map(|c| c / config.handshake_round_trips.max(1))
            })
            .unwrap_or(config.probe_timeout_max);
        (basis * 4).clamp(config.probe_timeout_min, config.probe_timeout_max)
    }

    /// Consecutive lost probes that mean the relay is gone: at least
    /// `failover_lost_probes`, more on a lossy path — as many as a path losing
    /// probes at its observed rate would lose in a row by chance less than once
    /// in a million probes. A lossy Wi-Fi must not cause failovers.
    pub(super) fn lost_probes_for_failover(&self, config: &ElectionConfig) -> u32 {
        // A prior of 1% loss worth ten probes: a fresh window (reset at every
        // decision) must not look lossy for lack of data. The current run of
        // losses is left out: it is what is being judged.
        let lost = self.stats.lost().saturating_sub(self.consecutive_lost) as f64;
        let answered = self.stats.samples() as f64;
        let rate = (lost + 0.1) / (lost + answered + 10.0);
        let by_chance = (1e-6f64.ln() / rate.ln()).ceil();
        (by_chance as u32).clamp(config.failover_lost_probes, 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TransportKind;

    fn slot(transport: TransportKind) -> Slot {
        let mut slot = Slot::new(Candidate {
            region: "near".into(),
            relay_id: "near-0".into(),
            transport,
            url: "wss://near.invalid/".into(),
            cert_hash: None,
            shadow: false,
        });
        slot.conn = Conn::Connected;
        slot.role = Role::Serving;
        slot
    }

    fn ms(ms: u64) -> Micros {
        Micros::from_millis(ms)
    }

    /// 80% of what the relay says it answers, whatever it says: the number
    /// comes off the wire.
    #[test]
    fn the_fastest_sustained_probing_follows_what_the_relay_says() {
        let mut slot = slot(TransportKind::WebTransport);
        let fastest = |slot: &Slot| slot.fastest_sustained_probing();
        assert_eq!(fastest(&slot), Duration::from_millis(50), "25 until told");
        slot.probes_answered = 100;
        assert_eq!(fastest(&slot), Duration::from_micros(12_500));
        slot.probes_answered = u32::MAX;
        assert!(fastest(&slot) < Duration::from_micros(1));
        slot.probes_answered = 0;
        assert_eq!(fastest(&slot), Duration::from_millis(1_250));
    }

    /// Ten answers of 40 ms, then probes 50 ms apart that all go unanswered
    /// until `until` ms (each due 250 ms after it left).
    fn answered_then_silent(transport: TransportKind, until: u64) -> Slot {
        let mut slot = slot(transport);
        let timeout = Duration::from_millis(250);
        let interval = Duration::from_millis(50);
        for seq in 0..10 {
            slot.sent(seq, ms(seq * 50), timeout, interval);
            assert!(slot.answered(seq, Duration::ZERO, ms(seq * 50 + 40), ms(seq * 50 + 40)));
        }
        for seq in 10..(until / 50) {
            slot.sent(seq, ms(seq * 50), timeout, interval);
            slot.expire(ms(seq * 50), Duration::from_secs(4));
        }
        slot.expire(ms(until), Duration::from_secs(4));
        slot
    }

    #[test]
    fn a_stalled_websocket_is_gone_only_past_the_stall_limit() {
        let config = ElectionConfig::default();
        // Silent from 500 ms: by 1 000 ms five probes are lost in a row.
        let wt = answered_then_silent(TransportKind::WebTransport, 1_000);
        assert!(wt.relay_gone(ms(1_000), &config));
        let ws = answered_then_silent(TransportKind::WebSocket, 1_000);
        assert!(ws.consecutive_lost >= config.failover_lost_probes);
        assert!(
            !ws.relay_gone(ms(1_000), &config),
            "a TCP stall, not a death"
        );
        let ws = answered_then_silent(TransportKind::WebSocket, 2_600);
        assert!(ws.relay_gone(ms(2_600), &config), "silent for 2.1 s");
    }

    #[test]
    fn an_answer_far_later_than_usual_is_lost_to_a_call() {
        let mut slot = slot(TransportKind::WebSocket);
        let timeout = Duration::from_secs(1);
        let interval = Duration::from_millis(200);
        for (seq, rtt) in [40, 42, 41, 39, 40, 120, 260].into_iter().enumerate() {
            let sent = ms(seq as u64 * 200);
            slot.sent(seq as u64, sent, timeout, interval);
            let back = sent + Duration::from_millis(rtt);
            assert!(slot.answered(seq as u64, Duration::ZERO, back, back));
        }
        assert_eq!(slot.stats.samples(), 7, "every answer is an RTT sample");
        assert_eq!(
            slot.stats.lost_to_media(),
            1,
            "only 260 ms is 100 ms past the usual 40"
        );
        assert_eq!(slot.stats.answered_in_time(), 6);
    }
}
