//! Whether a room's media must leave this relay: is any other relay serving
//! the room?
//!
//! A sender's frame reaches this relay's receivers through the room task
//! and the other relays through NATS. When every participant of a room is
//! on this relay — most rooms, since callers near each other elect the same
//! relay — a publish reaches nobody, yet costs the relay a TLS write and
//! nats-server a message per frame (13% of the relay's CPU at call rates,
//! measured by `bench capacity` with `perf`, and 0.15–0.24 of a core of
//! nats-server's). So the room task keeps an [`Audience`] and the sessions
//! publish only while it says others listen.
//!
//! Another relay serving the room makes itself heard: it announces its
//! participants' joins, states its roster every beat while it has
//! participants *or serves a prepared standby* (the standby is in no roster,
//! so its beat is the only word of it), and asks for rosters for a standby
//! the roster does not list. The relay's NATS connection has no echo, so
//! everything the room's subscription delivers comes from another relay.
//! Others listen while
//!
//! - something was heard from another relay within the *span*, three beats
//!   and a second: two lost beats, or a late one (a beat waits behind the
//!   other relay's room events, each allowed up to half a second), do not
//!   stop the media; or
//! - the roster lists a participant on another relay (a silent relay's
//!   participants stay listed until their grace ends); or
//! - this relay's NATS connection was down, or came back, less than a span
//!   ago (as the room task sees on its 250 ms tick: the state, and the
//!   connection's count of connects): what was said meanwhile is unknown;
//!   or
//! - the room task started less than a beat and a second ago: a relay new
//!   to a room learns who else serves it a round trip later (relays with
//!   participants answer its announcement or its ask at once; the others,
//!   and any whose answer is lost, beat within a beat) — its clients' first
//!   frames must not wait for that (a failover to a relay that did not
//!   serve the room would otherwise lose that round trip of media).
//!
//! Past that, the room is this relay's alone until another relay speaks
//! (the frames not published are counted as kept here). What a relay
//! joining the room misses: frames published before the others heard its
//! announcement, one way across the backbone — as before, when they were
//! published but its subscription had not reached the other regions'
//! servers yet. A client that has been told of a peer on another relay
//! (`PeerJoined`) has its own frames published: the room task notes what it
//! heard before it tells its clients. After a gateway partition longer than
//! the span, media resumes with the first beat heard across it.
//!
//! Relays older than this module beat only for rooms with participants; a
//! deployment rolling out over them runs with `--publish-all-media` until
//! it is done.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Beats heard within which another relay still counts as serving the room.
const BEATS_HEARD: u32 = 3;
/// Added to the span for beats that come late rather than not at all.
const LATE_BEAT: Duration = Duration::from_secs(1);

/// Whether other relays listen to the room's media, as its room task last
/// decided; cloned into the sessions (one load per frame). Made with the
/// room's slot, listening until the room task says otherwise.
#[derive(Debug, Clone)]
pub struct Listening(Arc<AtomicBool>);

impl Default for Listening {
    fn default() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }
}

impl Listening {
    /// Whether the room's media must be published for other relays.
    pub fn by_others(&self) -> bool {
        self.0.load(Relaxed)
    }
}

/// This relay's NATS connection as the room task sees it on a tick.
#[derive(Debug, Clone, Copy)]
pub struct NatsLink {
    pub connected: bool,
    /// How often the connection has been (re)established so far: a change
    /// between two looks is an outage the looks themselves missed.
    pub connects: u64,
}

impl NatsLink {
    pub fn of(client: &async_nats::Client) -> Self {
        Self {
            connected: client.connection_state() == async_nats::connection::State::Connected,
            connects: client.statistics().connects.load(Relaxed),
        }
    }
}

/// The room task's account of who else serves the room.
#[derive(Debug)]
pub struct Audience {
    span: Duration,
    /// Publish whatever is heard (`--publish-all-media`).
    always: bool,
    /// When something last came from another relay (or could have: NATS
    /// outages count, see the module doc).
    last_heard: Option<Instant>,
    /// Until when the room task is too new to know who else serves the
    /// room: the answers to its announcement, or the next beats if one
    /// was lost.
    young_until: Instant,
    /// The NATS connection's connects at the last look (none yet).
    nats_connects: Option<u64>,
    listening: Listening,
}

impl Audience {
    /// A room task starting at `now`, with the relays' roster `beat`,
    /// deciding `listening` for the room's sessions (`always`: it stays
    /// true).
    pub fn new(beat: Duration, always: bool, now: Instant, listening: Listening) -> Self {
        listening.0.store(true, Relaxed);
        Self {
            span: beat * BEATS_HEARD + LATE_BEAT,
            always,
            last_heard: None,
            young_until: now + beat + LATE_BEAT,
            nats_connects: None,
            listening,
        }
    }

    /// Something arrived from another relay, or might have unseen (NATS
    /// was down): publish from now on.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = Some(now);
        // Stored only on a change: every session of the room reads it per
        // frame, and remote media calls this per frame.
        if !self.listening.0.load(Relaxed) {
            self.listening.0.store(true, Relaxed);
        }
    }

    /// The room task looked at its NATS connection: down, or reconnected
    /// since the last look (however briefly), counts as hearing — what
    /// other relays said meanwhile went unheard. The first look only notes
    /// the count.
    pub fn nats_seen(&mut self, link: NatsLink, now: Instant) {
        let reconnected = self
            .nats_connects
            .is_some_and(|connects| connects != link.connects);
        self.nats_connects = Some(link.connects);
        if !link.connected || reconnected {
            self.heard(now);
        }
    }

    /// Decides again (on the room task's tick): `remote_listed` says whether
    /// the roster lists a participant on another relay.
    pub fn review(&mut self, remote_listed: bool, now: Instant) {
        let recent = self
            .last_heard
            .is_some_and(|heard| now.saturating_duration_since(heard) < self.span);
        let young = now < self.young_until;
        self.listening
            .0
            .store(self.always || remote_listed || recent || young, Relaxed);
    }
}

impl Drop for Audience {
    /// A room task that ended while its slot lives on (its subscription
    /// ended) decides nothing more: its sessions publish, as they would
    /// without it.
    fn drop(&mut self) {
        self.listening.0.store(true, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEAT: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    fn audience(beat: Duration, always: bool, start: Instant) -> (Audience, Listening) {
        let listening = Listening::default();
        (
            Audience::new(beat, always, start, listening.clone()),
            listening,
        )
    }

    /// A room task's tick: it looks at NATS (`connected`, `connects`), then
    /// decides with nobody listed elsewhere. Whether others listen after.
    fn tick(audience: &mut Audience, connected: bool, connects: u64, at: Instant) -> bool {
        let link = NatsLink {
            connected,
            connects,
        };
        audience.nats_seen(link, at);
        audience.review(false, at);
        audience.listening.by_others()
    }

    #[test]
    fn a_nats_outage_or_a_reconnect_between_looks_counts_as_hearing_for_a_span() {
        let start = Instant::now();
        let (mut audience, _) = audience(BEAT, false, start);
        tick(&mut audience, true, 1, start);
        let (quiet, later) = (start + 10 * BEAT, start + 30 * BEAT);
        // (connected, connects, at, others listen after, why)
        let looks = [
            (true, 1, quiet, false, "a steady connection is no news"),
            (
                false,
                1,
                quiet + BEAT,
                true,
                "NATS is down: others may have spoken",
            ),
            (true, 1, later, false, "a span after the outage"),
            // Connected at every look, but reconnected in between.
            (true, 2, later + BEAT, true, "a reconnect between two looks"),
            (
                true,
                2,
                later + 5 * BEAT - MS,
                true,
                "within the reconnect's span",
            ),
            (
                true,
                2,
                later + 5 * BEAT,
                false,
                "a span after the reconnect",
            ),
        ];
        for (connected, connects, at, listen, why) in looks {
            assert_eq!(
                tick(&mut audience, connected, connects, at),
                listen,
                "{why}"
            );
        }
    }

    #[test]
    fn the_first_look_at_nats_only_notes_its_count() {
        let start = Instant::now();
        let (mut audience, _) = audience(BEAT, false, start);
        // A relay whose connection came back twice before this room began.
        assert!(!tick(&mut audience, true, 3, start + 10 * BEAT));
    }

    #[test]
    fn a_new_room_publishes_for_a_beat_and_a_second_with_nobody_heard() {
        let start = Instant::now();
        let (mut audience, listening) = audience(BEAT, false, start);
        assert!(listening.by_others(), "before the first review");
        audience.review(false, start + 1999 * MS);
        assert!(listening.by_others(), "answers may still be on their way");
        audience.review(false, start + 2000 * MS);
        assert!(!listening.by_others(), "a beat and a second, nobody spoke");
    }

    #[test]
    fn another_relay_heard_opens_at_once_and_its_silence_closes_after_the_span() {
        let start = Instant::now();
        let (mut audience, listening) = audience(BEAT, false, start);
        audience.review(false, start + 10 * BEAT);
        assert!(!listening.by_others());

        let heard = start + 11 * BEAT;
        audience.heard(heard);
        assert!(listening.by_others(), "open without waiting for a review");
        // Two beats lost, and the third late by most of a second.
        audience.review(false, heard + 3 * BEAT + 999 * MS);
        assert!(listening.by_others());
        audience.review(false, heard + 4 * BEAT);
        assert!(!listening.by_others());
    }

    #[test]
    fn a_participant_listed_on_another_relay_keeps_it_open_however_quiet() {
        let start = Instant::now();
        let (mut audience, listening) = audience(BEAT, false, start);
        audience.review(true, start + 60 * BEAT);
        assert!(listening.by_others());
        audience.review(false, start + 61 * BEAT);
        assert!(!listening.by_others());
    }

    #[test]
    fn the_span_follows_the_configured_beat() {
        let start = Instant::now();
        let (mut audience, listening) = audience(200 * MS, false, start);
        audience.review(false, start + 1199 * MS);
        assert!(listening.by_others(), "young");
        audience.review(false, start + 1200 * MS);
        assert!(!listening.by_others());
        audience.heard(start + 2000 * MS);
        audience.review(false, start + 3599 * MS);
        assert!(listening.by_others(), "heard");
        audience.review(false, start + 3600 * MS);
        assert!(!listening.by_others());
    }

    #[test]
    fn publish_all_media_keeps_it_open() {
        let start = Instant::now();
        let (mut audience, listening) = audience(BEAT, true, start);
        audience.review(false, start + 60 * BEAT);
        assert!(listening.by_others());
    }

    #[test]
    fn a_room_task_that_ends_leaves_its_sessions_publishing() {
        let start = Instant::now();
        let (mut audience, listening) = audience(BEAT, false, start);
        audience.review(false, start + 60 * BEAT);
        assert!(!listening.by_others());
        drop(audience);
        assert!(listening.by_others());
    }
}
