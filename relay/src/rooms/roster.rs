//! Who is in a room, as one relay sees it — pure state, no I/O, driven by the
//! room task with explicit times so it can be tested with virtual time.
//!
//! Every participant has one *location*: the relay it joined last, ordered by
//! the client's `join_seq`. A later join elsewhere is a **move**, never a leave
//! followed by a join. A participant whose connection vanishes stays in the room
//! for a grace period; if it shows up on any relay meanwhile it moved, otherwise
//! it is reported as left. Relays state their rosters periodically ("beats"), so
//! a relay that dies without a word has its participants time out the same way.
//!
//! A room fills past its size only when joins race through relays that did
//! not know of each other's participants yet (a relay new to a room admits
//! before the others' rosters reach it): every relay then orders the room by
//! when each participant was first admitted ([`Roster::beyond_size`]) and
//! refuses its own participants past the size, so the room settles on its
//! earliest participants within a roster round trip.
//!
//! The roster answers with [`Effect`]s: what to tell local clients, what to
//! publish to other relays, and when a membership slot this relay held is free.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rallypoint_protocol::v1::{
    Admission, LeaveReason, MediaState, Participant, PeerJoined, PeerLeft, PeerMoved, PeerState,
    PresenceJoined, PresenceLeft, PresenceState, RoomEvent, RosterBeat, RosterEntry, room_event,
    server_frame,
};

/// How long after its admission a participant may still be refused for a
/// room over its size: a race between relays is settled within a roster
/// round trip (a second or two, across gateways).
pub const RACE_WINDOW_MS: u64 = 10_000;

/// Identifies one client connection on this relay.
pub type ConnId = u64;

/// Something the room task must do because the roster changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Tell every local client except `except` (the participant concerned).
    Notify {
        except: Option<String>,
        frame: server_frame::Kind,
    },
    /// Tell the other relays serving the room.
    Publish(RoomEvent),
    /// A participant held in its grace period is settled: free its slot.
    Release,
}

#[derive(Debug, Clone, PartialEq)]
enum Place {
    Local {
        conn: ConnId,
        grace_until: Option<Instant>,
    },
    Remote {
        last_seen: Instant,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    participant: Participant,
    join_seq: u64,
    place: Place,
    /// The connection's number for the last microphone/camera change
    /// applied (0 before any): a change that overtook an earlier one in the
    /// room's queue must not be undone by it.
    state_seq: u64,
}

/// What happened to a local connection's slot when it went away.
#[derive(Debug, PartialEq, Eq)]
pub enum Departure {
    /// The slot is free now.
    Released,
    /// The participant is held for the grace period; a later [`Effect::Release`] frees it.
    Held,
}

#[derive(Debug)]
pub struct Roster {
    relay_id: String,
    region: String,
    grace: Duration,
    entries: HashMap<String, Entry>,
}

impl Roster {
    pub fn new(relay_id: impl Into<String>, region: impl Into<String>, grace: Duration) -> Self {
        Roster {
            relay_id: relay_id.into(),
            region: region.into(),
            grace,
            entries: HashMap::new(),
        }
    }

    /// A local client joined. Returns the other participants (for its `Joined`
    /// answer) and the effects.
    pub fn local_join(
        &mut self,
        conn: ConnId,
        mut participant: Participant,
        join_seq: u64,
    ) -> (Vec<Participant>, Vec<Effect>) {
        participant.relay_id = self.relay_id.clone();
        participant.region = self.region.clone();
        let peer_id = participant.peer_id.clone();
        let mut effects = Vec::new();
        let previous = self.entries.get(&peer_id).cloned();
        if let Some(previous) = &previous {
            participant.admitted_at_ms = earliest(
                previous.participant.admitted_at_ms,
                participant.admitted_at_ms,
            );
        }
        let stale = previous.as_ref().is_some_and(|p| p.join_seq > join_seq);
        if !stale {
            match &previous {
                None => effects.push(Effect::Notify {
                    except: Some(peer_id.clone()),
                    frame: server_frame::Kind::PeerJoined(PeerJoined {
                        peer: Some(participant.clone()),
                    }),
                }),
                Some(Entry {
                    participant: before,
                    place: Place::Local { grace_until, .. },
                    ..
                }) => {
                    // Back on this same relay: nothing changed for the room,
                    // unless the microphone or camera did meanwhile.
                    if grace_until.is_some() {
                        effects.push(Effect::Release);
                    }
                    if before.state != participant.state {
                        effects.push(notify_state(&participant));
                    }
                }
                Some(Entry {
                    participant: from,
                    place: Place::Remote { .. },
                    ..
                }) => effects.push(moved(&participant, from)),
            }
            self.entries.insert(
                peer_id.clone(),
                Entry {
                    participant: participant.clone(),
                    join_seq,
                    place: Place::Local {
                        conn,
                        grace_until: None,
                    },
                    state_seq: 0,
                },
            );
            effects.push(Effect::Publish(RoomEvent {
                kind: Some(room_event::Kind::Joined(PresenceJoined {
                    peer: Some(participant),
                    join_seq,
                })),
            }));
        }
        let others = self
            .entries
            .iter()
            .filter(|(id, _)| **id != peer_id)
            .map(|(_, e)| e.participant.clone())
            .collect();
        (others, effects)
    }

    /// A local client hung up (sent Leave, or closed cleanly after Leave).
    pub fn local_hangup(&mut self, conn: ConnId, peer_id: &str) -> Vec<Effect> {
        if !self.is_located_at(peer_id, conn) {
            return Vec::new();
        }
        let entry = self.entries.remove(peer_id).expect("checked above");
        self.left_effects(peer_id, entry.join_seq, LeaveReason::Hangup)
    }

    /// A local client's microphone or camera changed (its connection's
    /// `seq`th change): the room's other clients are told, and so are the
    /// other relays. Nothing happens for a connection that is no longer
    /// where the participant is, for a change older than one applied, or
    /// when nothing changed.
    pub fn local_state(
        &mut self,
        conn: ConnId,
        peer_id: &str,
        state: MediaState,
        seq: u64,
    ) -> Vec<Effect> {
        if !self.is_located_at(peer_id, conn) {
            return Vec::new();
        }
        let entry = self.entries.get_mut(peer_id).expect("checked above");
        if seq <= entry.state_seq {
            return Vec::new();
        }
        entry.state_seq = seq;
        if entry.participant.state == Some(state) {
            return Vec::new();
        }
        entry.participant.state = Some(state);
        vec![
            notify_state(&entry.participant),
            Effect::Publish(RoomEvent {
                kind: Some(room_event::Kind::State(PresenceState {
                    peer_id: peer_id.to_owned(),
                    relay_id: self.relay_id.clone(),
                    join_seq: entry.join_seq,
                    state: Some(state),
                })),
            }),
        ]
    }

    /// A Join over `conn` carried the state as of that connection's
    /// `state_seq`th change: a change the connection sent before it (still
    /// waiting in a full room queue) must not undo it.
    pub fn state_told_at_join(&mut self, conn: ConnId, peer_id: &str, state_seq: u64) {
        if self.is_located_at(peer_id, conn) {
            let entry = self.entries.get_mut(peer_id).expect("checked above");
            entry.state_seq = entry.state_seq.max(state_seq);
        }
    }

    /// Another relay says a participant it serves changed its microphone or
    /// camera. Only the relay where the participant is, for its current
    /// join, is believed.
    pub fn remote_state(&mut self, changed: PresenceState) -> Vec<Effect> {
        let Some(entry) = self.entries.get_mut(&changed.peer_id) else {
            return Vec::new();
        };
        let current = entry.participant.relay_id == changed.relay_id
            && entry.join_seq == changed.join_seq
            && matches!(entry.place, Place::Remote { .. });
        if !current || entry.participant.state == changed.state {
            return Vec::new();
        }
        entry.participant.state = changed.state;
        vec![notify_state(&entry.participant)]
    }

    /// A local client's connection vanished without a Leave.
    pub fn local_lost(&mut self, conn: ConnId, peer_id: &str, now: Instant) -> Departure {
        if !self.is_located_at(peer_id, conn) {
            return Departure::Released;
        }
        let entry = self.entries.get_mut(peer_id).expect("checked above");
        entry.place = Place::Local {
            conn,
            grace_until: Some(now + self.grace),
        };
        Departure::Held
    }

    /// Another relay announced a join. Returns whether this relay should answer
    /// with a beat (so the newcomer's relay learns who is here at once).
    pub fn remote_joined(&mut self, joined: PresenceJoined, now: Instant) -> (bool, Vec<Effect>) {
        let Some(participant) = joined.peer else {
            return (false, Vec::new());
        };
        if participant.relay_id == self.relay_id {
            return (false, Vec::new());
        }
        let effects = self.observe_remote(participant, joined.join_seq, now);
        (self.has_local_participants(), effects)
    }

    /// Another relay announced a leave.
    pub fn remote_left(&mut self, left: PresenceLeft) -> Vec<Effect> {
        if left.relay_id == self.relay_id {
            return Vec::new();
        }
        let current = self.entries.get(&left.peer_id).is_some_and(|e| {
            e.participant.relay_id == left.relay_id
                && e.join_seq <= left.join_seq
                && matches!(e.place, Place::Remote { .. })
        });
        if !current {
            return Vec::new();
        }
        self.entries.remove(&left.peer_id);
        let reason = LeaveReason::try_from(left.reason).unwrap_or(LeaveReason::TimedOut);
        vec![notify_left(&left.peer_id, reason)]
    }

    /// Another relay stated its roster for this room.
    pub fn remote_beat(&mut self, beat: RosterBeat, now: Instant) -> Vec<Effect> {
        if beat.relay_id == self.relay_id {
            return Vec::new();
        }
        for admission in &beat.admissions {
            if let Some(entry) = self.entries.get_mut(&admission.peer_id) {
                entry.participant.admitted_at_ms =
                    earliest(entry.participant.admitted_at_ms, admission.admitted_at_ms);
            }
        }
        let mut effects = Vec::new();
        let mut listed = Vec::with_capacity(beat.peers.len());
        for entry in beat.peers {
            let Some(mut participant) = entry.peer else {
                continue;
            };
            participant.relay_id = beat.relay_id.clone();
            participant.region = beat.region.clone();
            listed.push(participant.peer_id.clone());
            effects.extend(self.observe_remote(participant, entry.join_seq, now));
        }
        // Whoever the beating relay used to serve but no longer lists is gone
        // (we missed its PresenceLeft: core NATS is at-most-once).
        let gone: Vec<String> = self
            .entries
            .iter()
            .filter(|(id, e)| {
                e.participant.relay_id == beat.relay_id
                    && matches!(e.place, Place::Remote { .. })
                    && !listed.contains(id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for peer_id in gone {
            self.entries.remove(&peer_id);
            effects.push(notify_left(&peer_id, LeaveReason::TimedOut));
        }
        effects
    }

    /// Expires grace periods and participants of relays that went silent.
    pub fn tick(&mut self, now: Instant) -> Vec<Effect> {
        let expired: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| match e.place {
                Place::Local {
                    grace_until: Some(until),
                    ..
                } => now >= until,
                Place::Local { .. } => false,
                Place::Remote { last_seen } => now >= last_seen + self.grace,
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut effects = Vec::new();
        for peer_id in expired {
            let entry = self.entries.remove(&peer_id).expect("listed above");
            match entry.place {
                Place::Local { .. } => {
                    effects.extend(self.left_effects(
                        &peer_id,
                        entry.join_seq,
                        LeaveReason::TimedOut,
                    ));
                    effects.push(Effect::Release);
                }
                Place::Remote { .. } => effects.push(notify_left(&peer_id, LeaveReason::TimedOut)),
            }
        }
        effects
    }

    /// This relay's statement of who it serves in the room (held ones included:
    /// they have not left yet).
    pub fn beat(&self, in_reply: bool) -> RosterBeat {
        RosterBeat {
            relay_id: self.relay_id.clone(),
            region: self.region.clone(),
            peers: self
                .entries
                .values()
                .filter(|e| matches!(e.place, Place::Local { .. }))
                .map(|e| RosterEntry {
                    peer: Some(e.participant.clone()),
                    join_seq: e.join_seq,
                })
                .collect(),
            in_reply,
            asks_roster: false,
            known_peer_ids: Vec::new(),
            admissions: if in_reply {
                self.admissions()
            } else {
                Vec::new()
            },
        }
    }

    /// When each participant this relay knows was first admitted, as far as
    /// it knows (see [`RosterBeat::admissions`]).
    fn admissions(&self) -> Vec<Admission> {
        self.entries
            .iter()
            .filter(|(_, e)| e.participant.admitted_at_ms != 0)
            .map(|(id, e)| Admission {
                peer_id: id.clone(),
                admitted_at_ms: e.participant.admitted_at_ms,
            })
            .collect()
    }

    /// The participants this relay knows through other relays (those of a
    /// relay that went silent included, until their grace ends).
    pub fn remote_peer_ids(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, e)| matches!(e.place, Place::Remote { .. }))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Whether any participant is on another relay (or was, until its
    /// grace ends).
    pub fn has_remote_participants(&self) -> bool {
        self.entries
            .values()
            .any(|e| matches!(e.place, Place::Remote { .. }))
    }

    pub fn has_local_participants(&self) -> bool {
        self.entries
            .values()
            .any(|e| matches!(e.place, Place::Local { .. }))
    }

    /// How many participants the room has, wherever they are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// This relay's connected participants past the room's first
    /// `max_size`, ordered by first admission (then peer id, so every relay
    /// orders alike; participants of relays that do not say when they
    /// admitted count as the earliest) and admitted within [`RACE_WINDOW_MS`]
    /// of `now_ms`: joins that raced, not participants long in the call (a
    /// relay restarted with a smaller `--max-room-size` must not drop them).
    /// Empty unless the room is over its size. Held participants are not
    /// among them: they count, and leave or come back by themselves.
    pub fn beyond_size(&self, max_size: usize, now_ms: u64) -> Vec<(ConnId, String)> {
        if self.entries.len() <= max_size {
            return Vec::new();
        }
        let mut order: Vec<(&String, &Entry)> = self.entries.iter().collect();
        order.sort_by_key(|(id, e)| (e.participant.admitted_at_ms, *id));
        order
            .into_iter()
            .skip(max_size)
            .filter(|(_, e)| {
                let admitted = e.participant.admitted_at_ms;
                admitted != 0 && now_ms.saturating_sub(admitted) <= RACE_WINDOW_MS
            })
            .filter_map(|(id, e)| match e.place {
                Place::Local {
                    conn,
                    grace_until: None,
                } => Some((conn, id.clone())),
                _ => None,
            })
            .collect()
    }

    /// Whether `peer_id` is in the room, wherever it is.
    pub fn contains(&self, peer_id: &str) -> bool {
        self.entries.contains_key(peer_id)
    }

    /// Participants currently in the room, wherever they are.
    pub fn participants(&self) -> impl Iterator<Item = &Participant> {
        self.entries.values().map(|e| &e.participant)
    }

    /// Participants held in their grace period (each holds a slot).
    pub fn held(&self) -> usize {
        self.entries
            .values()
            .filter(|e| {
                matches!(
                    e.place,
                    Place::Local {
                        grace_until: Some(_),
                        ..
                    }
                )
            })
            .count()
    }

    fn is_located_at(&self, peer_id: &str, conn: ConnId) -> bool {
        self.entries
            .get(peer_id)
            .is_some_and(|e| matches!(e.place, Place::Local { conn: c, .. } if c == conn))
    }

    /// A remote relay says `participant` is there at `join_seq`.
    fn observe_remote(
        &mut self,
        mut participant: Participant,
        join_seq: u64,
        now: Instant,
    ) -> Vec<Effect> {
        let peer_id = participant.peer_id.clone();
        let mut effects = Vec::new();
        if let Some(entry) = self.entries.get_mut(&peer_id) {
            // Whatever else this word says, it may know an earlier admission.
            let admitted = earliest(entry.participant.admitted_at_ms, participant.admitted_at_ms);
            entry.participant.admitted_at_ms = admitted;
            participant.admitted_at_ms = admitted;
        }
        match self.entries.get_mut(&peer_id) {
            Some(entry) if entry.join_seq > join_seq => return effects,
            Some(entry)
                if entry.join_seq == join_seq
                    && entry.participant.relay_id == participant.relay_id =>
            {
                if let Place::Remote { last_seen } = &mut entry.place {
                    *last_seen = now;
                }
                // A beat repairs a state change whose announcement was lost.
                if entry.participant.state != participant.state {
                    entry.participant.state = participant.state;
                    effects.push(notify_state(&entry.participant));
                }
                return effects;
            }
            Some(entry) => {
                if matches!(
                    entry.place,
                    Place::Local {
                        grace_until: Some(_),
                        ..
                    }
                ) {
                    effects.push(Effect::Release);
                }
                effects.push(moved(&participant, &entry.participant));
            }
            None => effects.push(Effect::Notify {
                except: Some(peer_id.clone()),
                frame: server_frame::Kind::PeerJoined(PeerJoined {
                    peer: Some(participant.clone()),
                }),
            }),
        }
        self.entries.insert(
            peer_id,
            Entry {
                participant,
                join_seq,
                place: Place::Remote { last_seen: now },
                state_seq: 0,
            },
        );
        effects
    }

    fn left_effects(&self, peer_id: &str, join_seq: u64, reason: LeaveReason) -> Vec<Effect> {
        vec![
            notify_left(peer_id, reason),
            Effect::Publish(RoomEvent {
                kind: Some(room_event::Kind::Left(PresenceLeft {
                    peer_id: peer_id.to_owned(),
                    relay_id: self.relay_id.clone(),
                    reason: reason as i32,
                    join_seq,
                })),
            }),
        ]
    }
}

fn moved(to: &Participant, from: &Participant) -> Effect {
    Effect::Notify {
        except: Some(to.peer_id.clone()),
        frame: server_frame::Kind::PeerMoved(PeerMoved {
            peer: Some(to.clone()),
            from_relay_id: from.relay_id.clone(),
            from_region: from.region.clone(),
        }),
    }
}

/// The earlier of two admission times, where 0 says nothing.
fn earliest(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, t) | (t, 0) => t,
        (a, b) => a.min(b),
    }
}

fn notify_state(participant: &Participant) -> Effect {
    Effect::Notify {
        except: Some(participant.peer_id.clone()),
        frame: server_frame::Kind::PeerState(PeerState {
            peer_id: participant.peer_id.clone(),
            state: participant.state,
        }),
    }
}

fn notify_left(peer_id: &str, reason: LeaveReason) -> Effect {
    Effect::Notify {
        except: Some(peer_id.to_owned()),
        frame: server_frame::Kind::PeerLeft(PeerLeft {
            peer_id: peer_id.to_owned(),
            reason: reason as i32,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(5);
    /// "Now" for admissions stamped at 900–2 000 ms: all within the race
    /// window.
    const NOW_MS: u64 = 5_000;

    fn participant(peer: &str) -> Participant {
        Participant {
            peer_id: peer.into(),
            display_name: format!("name-{peer}"),
            ..Default::default()
        }
    }

    fn remote(peer: &str, relay: &str) -> Participant {
        Participant {
            relay_id: relay.into(),
            region: "singapore".into(),
            ..participant(peer)
        }
    }

    fn notified(effects: &[Effect]) -> Vec<&'static str> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Notify { frame, .. } => Some(match frame {
                    server_frame::Kind::PeerJoined(_) => "joined",
                    server_frame::Kind::PeerLeft(_) => "left",
                    server_frame::Kind::PeerMoved(_) => "moved",
                    server_frame::Kind::PeerState(_) => "state",
                    _ => "other",
                }),
                _ => None,
            })
            .collect()
    }

    fn releases(effects: &[Effect]) -> usize {
        effects.iter().filter(|e| **e == Effect::Release).count()
    }

    #[test]
    fn join_then_hangup_is_announced_and_published() {
        let mut roster = Roster::new("r1", "us-east", GRACE);
        let (others, effects) = roster.local_join(1, participant("a"), 0);
        assert!(others.is_empty());
        assert_eq!(notified(&effects), ["joined"]);
        assert!(effects.iter().any(|e| matches!(e, Effect::Publish(_))));
        let effects = roster.local_hangup(1, "a");
        assert_eq!(notified(&effects), ["left"]);
        assert_eq!(roster.participants().count(), 0);
    }

    #[test]
    fn a_lost_participant_that_reappears_elsewhere_moved_and_never_left() {
        let t0 = Instant::now();
        let mut roster = Roster::new("r1", "us-east", GRACE);
        roster.local_join(1, participant("a"), 0);
        assert_eq!(roster.local_lost(1, "a", t0), Departure::Held);
        let (_, effects) = roster.remote_joined(
            PresenceJoined {
                peer: Some(remote("a", "r2")),
                join_seq: 1,
            },
            t0 + Duration::from_millis(800),
        );
        assert_eq!(notified(&effects), ["moved"]);
        assert_eq!(releases(&effects), 1);
        // The local grace period running out later changes nothing.
        assert!(roster.tick(t0 + GRACE).is_empty());
    }

    #[test]
    fn a_lost_participant_that_never_reappears_leaves_after_the_grace_period() {
        let t0 = Instant::now();
        let mut roster = Roster::new("r1", "us-east", GRACE);
        roster.local_join(1, participant("a"), 0);
        roster.local_join(2, participant("b"), 0);
        roster.local_lost(1, "a", t0);
        assert!(
            roster
                .tick(t0 + GRACE - Duration::from_millis(1))
                .is_empty()
        );
        let effects = roster.tick(t0 + GRACE);
        assert_eq!(notified(&effects), ["left"]);
        assert_eq!(releases(&effects), 1);
        assert_eq!(roster.participants().count(), 1);
    }

    #[test]
    fn a_stale_connection_closing_after_the_move_is_silent() {
        let t0 = Instant::now();
        let mut roster = Roster::new("r1", "us-east", GRACE);
        roster.local_join(1, participant("a"), 0);
        let (_, effects) = roster.remote_joined(
            PresenceJoined {
                peer: Some(remote("a", "r2")),
                join_seq: 1,
            },
            t0,
        );
        assert_eq!(notified(&effects), ["moved"]);
        assert_eq!(roster.local_lost(1, "a", t0), Departure::Released);
        assert!(roster.local_hangup(1, "a").is_empty());
    }

    #[test]
    fn remote_participants_come_from_beats_and_vanish_with_their_relay() {
        let t0 = Instant::now();
        let mut roster = Roster::new("r1", "us-east", GRACE);
        roster.local_join(1, participant("a"), 0);
        let beat = RosterBeat {
            relay_id: "r2".into(),
            region: "singapore".into(),
            peers: vec![RosterEntry {
                peer: Some(participant("b")),
                join_seq: 0,
            }],
            in_reply: false,
            asks_roster: false,
            known_peer_ids: Vec::new(),
            admissions: Vec::new(),
        };
        assert_eq!(notified(&roster.remote_beat(beat.clone(), t0)), ["joined"]);
        assert!(notified(&roster.remote_beat(beat, t0 + Duration::from_secs(1))).is_empty());
        // r2 dies: no more beats.
        assert!(roster.tick(t0 + Duration::from_secs(5)).is_empty());
        assert_eq!(
            notified(&roster.tick(t0 + Duration::from_secs(6))),
            ["left"]
        );
    }

    #[test]
    fn a_beat_that_omits_a_participant_means_it_left() {
        let t0 = Instant::now();
        let mut roster = Roster::new("r1", "us-east", GRACE);
        let with_b = RosterBeat {
            relay_id: "r2".into(),
            region: "singapore".into(),
            peers: vec![RosterEntry {
                peer: Some(participant("b")),
                join_seq: 0,
            }],
            in_reply: false,
            asks_roster: false,
            known_peer_ids: Vec::new(),
            admissions: Vec::new(),
        };
        roster.remote_beat(with_b, t0);
        let empty = RosterBeat {
            relay_id: "r2".into(),
            region: "singapore".into(),
            peers: vec![],
            in_reply: false,
            asks_roster: false,
            known_peer_ids: Vec::new(),
            admissions: Vec::new(),
        };
        assert_eq!(notified(&roster.remote_beat(empty, t0)), ["left"]);
    }

    #[test]
    fn own_echoes_and_stale_announcements_are_ignored() {
        let t0 = Instant::now();
        let mut roster = Roster::new("r1", "us-east", GRACE);
        roster.local_join(1, participant("a"), 3);
        let (_, effects) = roster.remote_joined(
            PresenceJoined {
                peer: Some(remote("a", "r1")),
                join_seq: 3,
            },
            t0,
        );
        assert!(effects.is_empty(), "own echo");
        let (_, effects) = roster.remote_joined(
            PresenceJoined {
                peer: Some(remote("a", "r2")),
                join_seq: 2,
            },
            t0,
        );
        assert!(effects.is_empty(), "older join elsewhere");
        let effects = roster.remote_left(PresenceLeft {
            peer_id: "a".into(),
            relay_id: "r2".into(),
            reason: LeaveReason::Hangup as i32,
            join_seq: 2,
        });
        assert!(effects.is_empty(), "leave of an older location");
    }

    #[test]
    fn rejoining_the_same_relay_within_grace_releases_the_held_slot_silently() {
        let t0 = Instant::now();
        let mut roster = Roster::new("r1", "us-east", GRACE);
        roster.local_join(1, participant("a"), 0);
        roster.local_lost(1, "a", t0);
        assert_eq!(roster.held(), 1);
        let (_, effects) = roster.local_join(2, participant("a"), 1);
        assert_eq!(releases(&effects), 1);
        assert!(notified(&effects).is_empty());
        assert_eq!(roster.held(), 0);
    }

    fn muted() -> MediaState {
        MediaState {
            muted: true,
            camera_off: false,
            sharing_screen: false,
        }
    }

    #[test]
    fn a_state_change_reaches_the_room_and_the_other_relays_once() {
        let mut roster = Roster::new("r1", "us-east", GRACE);
        roster.local_join(1, participant("a"), 0);
        let effects = roster.local_state(1, "a", muted(), 1);
        assert_eq!(notified(&effects), ["state"]);
        let published = effects.iter().find_map(|e| match e {
            Effect::Publish(RoomEvent {
                kind: Some(room_event::Kind::State(state)),
            }) => Some(state.clone()),
            _ => None,
        });
        let published = published.expect("the other relays are told");
        assert_eq!(published.relay_id, "r1");
        assert_eq!(published.state, Some(muted()));
        // The same state again changes nothing; a stale connection neither.
        assert!(roster.local_state(1, "a", muted(), 2).is_empty());
        assert!(
            roster
                .local_state(2, "a", MediaState::default(), 3)
                .is_empty()
        );
        // A relay joining later learns it from the beat.
        let beat = roster.beat(false);
        assert_eq!(beat.peers[0].peer.as_ref().unwrap().state, Some(muted()));
    }

    /// A full room queue hands changes to waiting tasks, which may deliver
    /// them out of order: the later change must stand.
    #[test]
    fn an_older_state_change_arriving_late_is_ignored() {
        let mut roster = Roster::new("r1", "us-east", GRACE);
        roster.local_join(1, participant("a"), 0);
        let unmuted = MediaState::default();
        assert_eq!(notified(&roster.local_state(1, "a", muted(), 1)), ["state"]);
        // Change 3 (unmuted) overtakes change 2 (muted again).
        assert_eq!(notified(&roster.local_state(1, "a", unmuted, 3)), ["state"]);
        assert!(roster.local_state(1, "a", muted(), 2).is_empty());
        let beat = roster.beat(false);
        assert_eq!(beat.peers[0].peer.as_ref().unwrap().state, Some(unmuted));
        // A new connection counts from 1 again.
        roster.local_join(2, participant("a"), 1);
        assert_eq!(notified(&roster.local_state(2, "a", muted(), 1)), ["state"]);
        // A re-join over that connection after its 5th change: a 4th still
        // queued must not undo the state the Join carried.
        roster.local_join(2, participant("a"), 2);
        roster.state_told_at_join(2, "a", 5);
        assert!(roster.local_state(2, "a", muted(), 4).is_empty());
        assert_eq!(notified(&roster.local_state(2, "a", muted(), 6)), ["state"]);
    }

    #[test]
    fn remote_state_is_believed_only_from_where_the_participant_is() {
        let t0 = Instant::now();
        let mut roster = Roster::new("r1", "us-east", GRACE);
        roster.remote_joined(
            PresenceJoined {
                peer: Some(remote("b", "r2")),
                join_seq: 3,
            },
            t0,
        );
        let change = |relay: &str, join_seq| PresenceState {
            peer_id: "b".into(),
            relay_id: relay.into(),
            join_seq,
            state: Some(muted()),
        };
        assert!(
            roster.remote_state(change("r3", 3)).is_empty(),
            "another relay"
        );
        assert!(
            roster.remote_state(change("r2", 2)).is_empty(),
            "an older join"
        );
        assert_eq!(notified(&roster.remote_state(change("r2", 3))), ["state"]);
        assert!(
            roster.remote_state(change("r2", 3)).is_empty(),
            "nothing changed"
        );
    }

    fn admitted(peer: &Participant, at: u64) -> Participant {
        Participant {
            admitted_at_ms: at,
            ..peer.clone()
        }
    }

    fn beat_of(relay: &str, peers: Vec<Participant>) -> RosterBeat {
        RosterBeat {
            relay_id: relay.into(),
            region: "singapore".into(),
            peers: peers
                .into_iter()
                .map(|p| RosterEntry {
                    peer: Some(p),
                    join_seq: 0,
                })
                .collect(),
            in_reply: false,
            asks_roster: false,
            known_peer_ids: Vec::new(),
            admissions: Vec::new(),
        }
    }

    #[test]
    fn a_room_over_its_size_refuses_its_latest_local_participants() {
        let t0 = Instant::now();
        let mut roster = Roster::new("r1", "us-east", GRACE);
        roster.local_join(1, admitted(&participant("a"), 1_000), 0);
        roster.local_join(2, admitted(&participant("c"), 1_100), 0);
        assert!(roster.beyond_size(2, NOW_MS).is_empty());
        // Another relay, new to the room too, admitted b before c.
        roster.remote_beat(beat_of("r2", vec![admitted(&remote("b", "r2"), 900)]), t0);
        assert_eq!(roster.beyond_size(2, NOW_MS), [(2, "c".to_owned())]);
        // One place: b (900) stays, a (1000) is this relay's to refuse, c
        // too; b is the other relay's business.
        assert_eq!(
            roster.beyond_size(1, NOW_MS),
            [(1, "a".to_owned()), (2, "c".to_owned())]
        );
        // A held participant counts but is not refused: it leaves or comes
        // back by itself.
        assert_eq!(roster.local_lost(2, "c", t0), Departure::Held);
        assert!(roster.beyond_size(2, NOW_MS).is_empty());
        assert_eq!(roster.beyond_size(1, NOW_MS), [(1, "a".to_owned())]);
    }

    #[test]
    fn ties_and_unknown_admissions_order_alike_on_every_relay() {
        let t0 = Instant::now();
        let mut here = Roster::new("r1", "us-east", GRACE);
        here.local_join(1, admitted(&participant("b"), 1_000), 0);
        here.remote_beat(beat_of("r2", vec![admitted(&remote("a", "r2"), 1_000)]), t0);
        // Same millisecond: the peer id decides, so r2 refuses nobody and
        // this relay refuses b.
        assert_eq!(here.beyond_size(1, NOW_MS), [(1, "b".to_owned())]);
        // A relay that does not say when it admitted counts as earliest.
        let mut here = Roster::new("r1", "us-east", GRACE);
        here.local_join(1, admitted(&participant("a"), 1_000), 0);
        here.remote_beat(beat_of("r2", vec![admitted(&remote("z", "r2"), 0)]), t0);
        assert_eq!(here.beyond_size(1, NOW_MS), [(1, "a".to_owned())]);
    }

    #[test]
    fn a_participant_long_in_the_call_is_never_refused_for_the_size() {
        let t0 = Instant::now();
        let mut roster = Roster::new("r1", "us-east", GRACE);
        let a_minute_later = NOW_MS + 60_000;
        roster.local_join(1, admitted(&participant("a"), 1_000), 0);
        roster.remote_beat(beat_of("r2", vec![admitted(&remote("b", "r2"), 900)]), t0);
        // A relay started with a smaller size than the room grew to under
        // others: its participant admitted a minute ago stays.
        assert_eq!(roster.beyond_size(1, NOW_MS), [(1, "a".to_owned())]);
        assert!(roster.beyond_size(1, a_minute_later).is_empty());
    }

    #[test]
    fn a_relay_new_to_the_room_learns_a_movers_first_admission_from_the_replies() {
        let t0 = Instant::now();
        // r2 is new to the room: a participant moving here (its relay died)
        // is stamped now; another joined here a moment earlier.
        let mut here = Roster::new("r2", "singapore", GRACE);
        here.local_join(1, admitted(&participant("z"), 4_990), 0);
        here.local_join(2, admitted(&participant("a"), 5_000), 3);
        assert_eq!(here.beyond_size(1, NOW_MS), [(2, "a".to_owned())]);
        // r3 answers the Joined: it serves nobody of these two, but knew `a`
        // (through the dead relay) since 100.
        let mut r3 = Roster::new("r3", "us-east", GRACE);
        r3.local_join(7, admitted(&participant("c"), 50), 0);
        r3.remote_beat(beat_of("r1", vec![admitted(&remote("a", "r1"), 100)]), t0);
        let reply = r3.beat(true);
        assert!(
            reply
                .peers
                .iter()
                .all(|p| p.peer.as_ref().unwrap().peer_id == "c")
        );
        here.remote_beat(reply, t0);
        // Now `a` (100) and `c` (50) come first; `z` is the one past the size.
        assert_eq!(here.beyond_size(2, NOW_MS), [(1, "z".to_owned())]);
        // Only replies carry admissions.
        assert!(r3.beat(false).admissions.is_empty());
    }

    #[test]
    fn a_participant_keeps_its_first_admission_when_it_moves() {
        let t0 = Instant::now();
        let mut roster = Roster::new("r1", "us-east", GRACE);
        roster.remote_beat(beat_of("r2", vec![admitted(&remote("a", "r2"), 500)]), t0);
        // Moves here: this relay stamps its own (later) admission; the
        // earlier one stands, and is what the room is told.
        let (_, effects) = roster.local_join(1, admitted(&participant("a"), 2_000), 1);
        let published = effects.iter().find_map(|e| match e {
            Effect::Publish(RoomEvent {
                kind: Some(room_event::Kind::Joined(joined)),
            }) => joined.peer.as_ref().map(|p| p.admitted_at_ms),
            _ => None,
        });
        assert_eq!(published, Some(500));
        // And a later word with an earlier time still lowers it.
        roster.remote_beat(beat_of("r3", vec![admitted(&remote("a", "r3"), 400)]), t0);
        let beat = roster.beat(false);
        assert_eq!(beat.peers[0].peer.as_ref().unwrap().admitted_at_ms, 400);
    }

    #[test]
    fn a_beat_repairs_a_lost_state_change() {
        let t0 = Instant::now();
        let mut roster = Roster::new("r1", "us-east", GRACE);
        let beat = |state: Option<MediaState>| RosterBeat {
            relay_id: "r2".into(),
            region: "singapore".into(),
            peers: vec![RosterEntry {
                peer: Some(Participant {
                    state,
                    ..remote("b", "r2")
                }),
                join_seq: 0,
            }],
            in_reply: false,
            asks_roster: false,
            known_peer_ids: Vec::new(),
            admissions: Vec::new(),
        };
        assert_eq!(notified(&roster.remote_beat(beat(None), t0)), ["joined"]);
        assert!(roster.remote_beat(beat(None), t0).is_empty());
        assert_eq!(
            notified(&roster.remote_beat(beat(Some(muted())), t0)),
            ["state"]
        );
    }

    #[test]
    fn rejoining_with_another_state_tells_the_room() {
        let t0 = Instant::now();
        let mut roster = Roster::new("r1", "us-east", GRACE);
        roster.local_join(1, participant("a"), 0);
        assert_eq!(roster.local_lost(1, "a", t0), Departure::Held);
        let rejoined = Participant {
            state: Some(muted()),
            ..participant("a")
        };
        let (_, effects) = roster.local_join(2, rejoined, 1);
        assert_eq!(notified(&effects), ["state"]);
        assert_eq!(releases(&effects), 1);
    }
}
