//! Election reports on their way to the relay's telemetry intake.
//!
//! Every decision makes a report; the client keeps each one until a relay
//! acknowledges it, so reports made while no relay was reachable (the ones
//! planners most need) arrive once one is.

use std::collections::VecDeque;

use rallypoint_protocol::telemetry::refusal_is_final;
use rallypoint_protocol::v1::{ElectionReport, TelemetryAck};

/// Reports kept while no relay is reachable (oldest dropped beyond this).
pub const MAX_PENDING: usize = 64;

/// Reports not yet acknowledged, each marked while it is in flight.
#[derive(Debug, Default)]
pub struct ReportQueue {
    pending: VecDeque<(ElectionReport, bool)>,
    delivered: u32,
}

impl ReportQueue {
    pub fn push(&mut self, report: ElectionReport) {
        if self.pending.len() == MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back((report, false));
    }

    /// Reports to send now; they count as in flight until acknowledged or
    /// until [`ReportQueue::resend_all`].
    pub fn take_unsent(&mut self) -> Vec<ElectionReport> {
        self.pending
            .iter_mut()
            .filter(|(_, in_flight)| !*in_flight)
            .map(|(report, in_flight)| {
                *in_flight = true;
                report.clone()
            })
            .collect()
    }

    /// Whatever was in flight on a connection that is no longer used may be
    /// lost: offer everything again.
    pub fn resend_all(&mut self) {
        for (_, in_flight) in &mut self.pending {
            *in_flight = false;
        }
    }

    /// Settles a report: accepted, or refused for good (invalid, or a
    /// synthetic label the token may not use: sending it again would be
    /// refused again). Refused for a passing reason (rate limit, stream
    /// down), it is offered again later. Decided by the ack's code, never
    /// by its wording, which is for people.
    pub fn on_ack(&mut self, ack: &TelemetryAck) {
        let settled = ack.accepted || refusal_is_final(ack.refusal(), &ack.reason);
        let before = self.pending.len();
        self.pending.retain_mut(|(report, in_flight)| {
            if report.report_id != ack.report_id {
                return true;
            }
            *in_flight = false;
            !settled
        });
        if ack.accepted && self.pending.len() < before {
            self.delivered += 1;
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn delivered(&self) -> u32 {
        self.delivered
    }
}

/// Report ids with no random source in the core: the driver hands in 16
/// random bytes once per call, and the n-th report's id is that seed plus n
/// (as one 128-bit number). The ids of one call are distinct; two calls
/// collide only if their random seeds fall within a few thousand of each
/// other, about one chance in 2^115.
#[derive(Debug)]
pub struct ReportIds {
    seed: u128,
    issued: u128,
}

impl ReportIds {
    pub fn new(seed: [u8; 16]) -> Self {
        ReportIds {
            seed: u128::from_be_bytes(seed),
            issued: 0,
        }
    }

    pub fn next_id(&mut self) -> [u8; 16] {
        self.issued += 1;
        self.seed.wrapping_add(self.issued).to_be_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rallypoint_protocol::v1::TelemetryRefusal;

    fn report(id: u8) -> ElectionReport {
        ElectionReport {
            report_id: Bytes::from(vec![id; 16]),
            ..Default::default()
        }
    }

    fn ack(id: u8, accepted: bool, reason: &str) -> TelemetryAck {
        TelemetryAck {
            report_id: Bytes::from(vec![id; 16]),
            accepted,
            reason: reason.into(),
            ..Default::default()
        }
    }

    fn refused(id: u8, refusal: TelemetryRefusal, reason: &str) -> TelemetryAck {
        TelemetryAck {
            refusal: refusal as i32,
            ..ack(id, false, reason)
        }
    }

    #[test]
    fn a_report_is_sent_once_and_kept_until_accepted() {
        let mut q = ReportQueue::default();
        q.push(report(1));
        assert_eq!(q.take_unsent().len(), 1);
        assert!(q.take_unsent().is_empty(), "in flight: not sent twice");
        q.on_ack(&ack(1, true, ""));
        assert_eq!((q.pending(), q.delivered()), (0, 1));
    }

    #[test]
    fn a_relay_without_codes_is_judged_by_its_reason() {
        let mut q = ReportQueue::default();
        q.push(report(1));
        q.push(report(2));
        q.take_unsent();
        q.on_ack(&ack(1, false, "rate limited"));
        q.on_ack(&ack(2, false, "invalid report: too many candidates"));
        assert_eq!((q.pending(), q.delivered()), (1, 0));
        let again = q.take_unsent();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].report_id, report(1).report_id);
    }

    #[test]
    fn a_refusal_is_judged_by_its_code_not_its_wording() {
        let mut q = ReportQueue::default();
        for id in 1..=4 {
            q.push(report(id));
        }
        q.take_unsent();
        let why = "reworded for people";
        q.on_ack(&refused(1, TelemetryRefusal::Invalid, why));
        q.on_ack(&refused(2, TelemetryRefusal::SyntheticNotAllowed, why));
        q.on_ack(&refused(
            3,
            TelemetryRefusal::RateLimited,
            "invalid-looking text",
        ));
        q.on_ack(&refused(4, TelemetryRefusal::Unavailable, why));
        let kept: Vec<_> = q.take_unsent().into_iter().map(|r| r.report_id).collect();
        assert_eq!(kept, vec![report(3).report_id, report(4).report_id]);
        assert_eq!(q.delivered(), 0);
    }

    #[test]
    fn a_new_relay_gets_every_report_still_in_flight() {
        let mut q = ReportQueue::default();
        q.push(report(1));
        q.take_unsent();
        q.resend_all();
        assert_eq!(q.take_unsent().len(), 1);
    }

    #[test]
    fn the_oldest_reports_make_room() {
        let mut q = ReportQueue::default();
        for i in 0..(MAX_PENDING + 3) {
            q.push(report(i as u8));
        }
        assert_eq!(q.pending(), MAX_PENDING);
        assert_eq!(q.take_unsent()[0].report_id, report(3).report_id);
    }

    #[test]
    fn report_ids_of_one_call_are_distinct_and_follow_the_seed() {
        let mut ids = ReportIds::new([0xff; 16]);
        let first = ids.next_id();
        assert_eq!(first, [0; 16], "wraps instead of overflowing");
        let more: std::collections::HashSet<[u8; 16]> = (0..1000).map(|_| ids.next_id()).collect();
        assert_eq!(more.len(), 1000);
        assert!(!more.contains(&first));
        let mut other = ReportIds::new([7; 16]);
        assert_ne!(other.next_id(), first);
    }
}
