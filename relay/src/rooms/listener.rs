//! A prepared standby in a room: who may hear and speak without being seen.
//!
//! A client whose serving relay falls silent prepares a move to a standby
//! (`Join.prepare`, make-before-break): the standby forwards the client's
//! media into the room and the room's media back, but it is in no roster —
//! nobody is told. An invisible participant must not be a way to listen to
//! or talk into a room unseen, so a standby is served in both directions
//! only while the room's roster lists its client (through the relay that
//! still serves it).
//!
//! A roster can lag: a relay that has just started serving the room knows
//! it only after the others answer its ask (`RosterBeat.asks_roster`). A
//! relay that died took its own roster with it — the very failover the
//! standby was prepared for — but the others still hold its participants
//! until their presence grace ends, and say so in their answers
//! (`RosterBeat.known_peer_ids`): the client counts as *listed* then too.
//! That word lapses two seconds after the last answer that gave it (at once
//! on the client's `PresenceLeft`), and the relay asks again every second
//! while a standby depends on it, so a client the others stop naming is not
//! served for long.
//! Until the answers come, a standby the roster does not list gets one
//! grace of [`UNSEEN_GRACE`], spending one of its token subject's
//! [`UNSEEN_GRACES_PER_MINUTE`] on this relay; the grace is given back when
//! the client turns out listed, or joins (it was only early). So an
//! outsider holding a token for the room hears and speaks at most three
//! seconds a minute on each relay, in pieces. What it does not cover: a
//! room served by no relay but the dead one and this one — nobody is left
//! to vouch for the client, and its standby goes quiet a second after it
//! prepared until its Join arrives.
//!
//! The room task decides ([`Listener::review`], after every command and
//! room event and on its tick); the connection's session, which publishes
//! the standby's media itself, reads the decision from the shared
//! [`ListenerGate`] — one atomic load per frame. A listener that goes
//! (Unlisten, Join, its room task ending) closes its gate.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::rate::SubjectRates;

/// How long a standby the roster does not list is served: long enough for
/// the other relays' answers to the ask to arrive from across the world.
pub(super) const UNSEEN_GRACE: Duration = Duration::from_secs(1);
/// Graces per token subject per minute (bursts of as many).
pub(super) const UNSEEN_GRACES_PER_MINUTE: u32 = 3;

/// Whether a prepared standby is served now, as its room task last decided.
/// Cloned into the session, which checks it before publishing the
/// standby's media.
#[derive(Debug, Clone, Default)]
pub struct ListenerGate(Arc<AtomicU64>);

/// The gate's value while the roster lists the client.
const OPEN: u64 = u64::MAX;
/// The gate's value while the standby is withheld (and before the room task
/// has decided).
const CLOSED: u64 = 0;

impl ListenerGate {
    /// Whether the standby is served at `now`.
    pub fn is_open(&self, now: Instant) -> bool {
        match self.0.load(Relaxed) {
            OPEN => true,
            CLOSED => false,
            until => micros_since_start(now) < until,
        }
    }

    fn set(&self, standing: Standing) {
        let value = match standing {
            Standing::Listed => OPEN,
            Standing::Grace(until) => micros_since_start(until).max(1),
            Standing::Unjudged | Standing::Withheld => CLOSED,
        };
        self.0.store(value, Relaxed);
    }
}

/// Microseconds from the first call in this process to `at` (a monotonic
/// clock that fits an atomic).
fn micros_since_start(at: Instant) -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    at.saturating_duration_since(start).as_micros() as u64
}

/// Where a standby stands with the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// Not reviewed yet.
    Unjudged,
    /// The roster lists its client.
    Listed,
    /// Not listed; served until then on a grace.
    Grace(Instant),
    /// Not listed, and no grace left.
    Withheld,
}

/// A local connection that listens (and speaks) for a client preparing a
/// move here.
#[derive(Debug)]
pub(super) struct Listener {
    /// The token's subject, whose graces an unseen standby spends.
    subject: String,
    standing: Standing,
    gate: ListenerGate,
}

impl Listener {
    pub(super) fn new(subject: String, gate: ListenerGate) -> Self {
        gate.set(Standing::Unjudged);
        Listener {
            subject,
            standing: Standing::Unjudged,
            gate,
        }
    }

    /// Decides again, now that the roster does (`listed`) or does not list
    /// the client. A grace is spent when the client is first found missing,
    /// and given back when the roster lists it before the grace is over.
    pub(super) fn review(&mut self, listed: bool, graces: &SubjectRates, now: Instant) {
        let standing = match (listed, self.standing) {
            (true, Standing::Grace(until)) => {
                if now < until {
                    graces.refund(&self.subject, now);
                }
                Standing::Listed
            }
            (true, _) => Standing::Listed,
            (false, Standing::Unjudged | Standing::Listed) => {
                match graces.try_take(&self.subject, now) {
                    Ok(()) => Standing::Grace(now + UNSEEN_GRACE),
                    Err(_) => Standing::Withheld,
                }
            }
            (false, unchanged) => unchanged,
        };
        if standing != self.standing {
            self.standing = standing;
            self.gate.set(standing);
        }
    }

    /// Whether the standby is served at `now`.
    pub(super) fn is_served(&self, now: Instant) -> bool {
        self.gate.is_open(now)
    }

    /// The standby's connection joined the room (the client moved here, the
    /// Join accepted): a grace it is on was spent honestly, and is given
    /// back.
    pub(super) fn joined(self, graces: &SubjectRates, now: Instant) {
        if let Standing::Grace(until) = self.standing
            && now < until
        {
            graces.refund(&self.subject, now);
        }
    }
}

impl Drop for Listener {
    /// A session may hold the gate after the room let go of its listener
    /// (Unlisten raced by a new Listen, the room task ending): it must not
    /// stay open with nobody to review it.
    fn drop(&mut self) {
        self.gate.set(Standing::Withheld);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(gate: &ListenerGate) -> Listener {
        Listener::new("carol".into(), gate.clone())
    }

    #[test]
    fn a_listed_client_is_served_and_an_unjudged_one_is_not() {
        let graces = SubjectRates::per_minute(UNSEEN_GRACES_PER_MINUTE);
        let gate = ListenerGate::default();
        let mut standby = listener(&gate);
        let now = Instant::now();
        assert!(!gate.is_open(now), "closed until the room task decides");
        standby.review(true, &graces, now);
        assert!(gate.is_open(now + Duration::from_secs(3600)));
        assert!(standby.is_served(now));
    }

    #[test]
    fn an_unlisted_client_is_served_for_a_grace_then_withheld() {
        let graces = SubjectRates::per_minute(UNSEEN_GRACES_PER_MINUTE);
        let now = Instant::now();
        let mut served = Vec::new();
        for _ in 0..UNSEEN_GRACES_PER_MINUTE + 1 {
            let gate = ListenerGate::default();
            let mut standby = listener(&gate);
            standby.review(false, &graces, now);
            standby.review(false, &graces, now + UNSEEN_GRACE / 2);
            served.push((
                gate.is_open(now + UNSEEN_GRACE / 2),
                gate.is_open(now + UNSEEN_GRACE),
            ));
        }
        assert_eq!(
            served,
            [(true, false), (true, false), (true, false), (false, false)],
            "three graces a minute, each ending on time; a review spends none"
        );
    }

    #[test]
    fn a_listener_that_goes_closes_its_gate_and_a_join_gives_its_grace_back() {
        let graces = SubjectRates::per_minute(1);
        let now = Instant::now();
        let gate = ListenerGate::default();
        let mut listed = listener(&gate);
        listed.review(true, &graces, now);
        drop(listed);
        assert!(!gate.is_open(now), "open with nobody to review it");

        let gate = ListenerGate::default();
        let mut moving = listener(&gate);
        moving.review(false, &graces, now);
        assert!(gate.is_open(now), "on the subject's one grace");
        moving.joined(&graces, now);
        let mut next = listener(&ListenerGate::default());
        next.review(false, &graces, now);
        assert!(next.is_served(now), "the grace came back with the Join");
    }

    #[test]
    fn a_grace_is_given_back_when_the_roster_was_only_late() {
        let graces = SubjectRates::per_minute(UNSEEN_GRACES_PER_MINUTE);
        let now = Instant::now();
        for _ in 0..10 {
            let gate = ListenerGate::default();
            let mut standby = listener(&gate);
            standby.review(false, &graces, now);
            standby.review(true, &graces, now + Duration::from_millis(50));
            assert!(gate.is_open(now + UNSEEN_GRACE * 2));
        }
        let gate = ListenerGate::default();
        let mut late = listener(&gate);
        late.review(false, &graces, now);
        assert!(
            gate.is_open(now),
            "ten late rosters spent no grace for good"
        );
        // A client the roster stops listing (it left the call) spends one.
        late.review(true, &graces, now);
        late.review(false, &graces, now + UNSEEN_GRACE);
        assert!(gate.is_open(now + UNSEEN_GRACE));
        assert!(!gate.is_open(now + UNSEEN_GRACE * 2));
    }
}
