//! One room's task on one relay: subscription, local connections, roster,
//! media fan-out and keyframe bookkeeping.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use rallypoint_protocol::copies::{Seen, SeenFrames};
use rallypoint_protocol::prost::Message as _;
use rallypoint_protocol::subjects::{self, RoomSubject};
use rallypoint_protocol::v1::{
    ErrorCode, Joined, KeyframeRequest, RoomEvent, RosterBeat, RoutedKeyframeRequest, ServerFrame,
    room_event, server_frame,
};
use rallypoint_protocol::{decode_server_frame, encode};
use tokio::sync::mpsc;

use super::audience::{Audience, Listening, NatsLink};
use super::keyframe_asks::{KeyframeAsks, Track, Verdict};
use super::listener::Listener;
use super::roster::{ConnId, Departure, Effect, Roster};
use super::{Command, Hub, LocalMedia, MediaFacts};
use crate::keyframe_gate::KeyframeGate;
use crate::metrics::Stats;
use crate::outbox::{MediaFrame, MediaOffer, Outbox};

/// How often grace periods and silent relays are checked.
const TICK: Duration = Duration::from_millis(250);
/// Shortest time between two asks for the other relays' rosters.
const ROSTER_ASK_INTERVAL: Duration = Duration::from_secs(1);
/// How long another relay's word that a participant is in the call counts
/// (`known_peer_ids`): two asks, so one lost answer does not end it, and a
/// participant that relay stops naming (it left, its grace ended) is not
/// served on that word for long.
const VOUCHED_FOR: Duration = Duration::from_secs(2);

struct LocalConn {
    peer_id: String,
    outbox: Outbox,
    /// Senders' pictures (camera or screen: sender and kind) this receiver
    /// lost a frame of: their delta frames are useless to it until their
    /// next keyframe.
    awaiting_keyframe: KeyframeGate<Track>,
    /// Set for a standby whose client prepares a move here: it hears the
    /// room's media, nothing else, and is in no roster (see `listener`).
    listener: Option<Listener>,
}

struct Room {
    hub: Hub,
    name: String,
    roster: Roster,
    conns: HashMap<ConnId, LocalConn>,
    /// Which keyframe requests go on to their senders, and when.
    keyframe_asks: KeyframeAsks,
    /// When this relay last asked the others for their rosters.
    roster_asked: Option<Instant>,
    /// Frames already delivered: a sender preparing a move sends through two
    /// relays at once.
    seen: SeenFrames,
    /// Participants other relays said they know (`known_peer_ids` in their
    /// answers to this relay's asks), and when: in the call, though perhaps
    /// not in this relay's roster (see `listener`). Kept [`VOUCHED_FOR`],
    /// renewed by the asks made while a listener depends on it; at most
    /// twice the room's size.
    vouched: HashMap<String, Instant>,
    /// Whether other relays serve the room, so its media goes to NATS.
    audience: Audience,
}

pub(super) async fn run(
    hub: Hub,
    name: String,
    mut commands: mpsc::Receiver<Command>,
    mut local_media: mpsc::Receiver<LocalMedia>,
    listening: Listening,
) {
    let inner = &hub.inner;
    let subscribing = inner.nats.subscribe(subjects::room_wildcard(&name));
    let subscribed = match tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscribing).await {
        Ok(subscribed) => subscribed.map_err(|e| e.to_string()),
        Err(_) => Err(format!("NATS did not take it within {SUBSCRIBE_TIMEOUT:?}")),
    };
    let mut subscriber = match subscribed {
        Ok(subscriber) => subscriber,
        Err(why) => {
            tracing::error!(room = %name, "cannot subscribe to the room: {why}");
            refuse_all(&hub, &name, &mut commands).await;
            return;
        }
    };
    inner.stats.rooms_active.fetch_add(1, Relaxed);
    let mut room = Room {
        roster: Roster::new(
            inner.relay_id.clone(),
            inner.region.clone(),
            inner.settings.grace,
        ),
        hub: hub.clone(),
        name,
        conns: HashMap::new(),
        keyframe_asks: KeyframeAsks::default(),
        roster_asked: None,
        seen: SeenFrames::default(),
        vouched: HashMap::new(),
        audience: Audience::new(
            inner.settings.beat,
            inner.settings.publish_all_media,
            Instant::now(),
            listening,
        ),
    };
    tracing::debug!(room = %room.name, "serving room");
    let mut beat = tokio::time::interval(inner.settings.beat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    'serving: loop {
        tokio::select! {
            command = commands.recv() => match command {
                None | Some(Command::Stop) => break,
                Some(command) => {
                    room.command(command).await;
                    room.review_listeners();
                }
            },
            Some(local) = local_media.recv() => {
                // A sender's Join (or Listen) is queued before its first
                // frame: for a sender not known yet, take the commands
                // queued before the frame, so it is judged on them. One
                // still unknown then (a session the room refused, handing
                // over a last frame before it ends) sends nothing into it.
                if !room.knows_sender(&local.sender) {
                    while let Ok(command) = commands.try_recv() {
                        if matches!(command, Command::Stop) {
                            break 'serving;
                        }
                        room.command(command).await;
                        room.review_listeners();
                    }
                    if !room.knows_sender(&local.sender) {
                        inner.stats.media_not_in_room.fetch_add(1, Relaxed);
                        continue;
                    }
                }
                room.local_media(local).await
            }
            message = subscriber.next() => match message {
                Some(message) => room.bus_message(message).await,
                None => {
                    tracing::error!(room = %room.name, "room subscription ended");
                    break;
                }
            },
            _ = beat.tick() => {
                // A served standby is in no roster: the beat is the other
                // relays' only word that this one listens (see `audience`).
                if room.roster.has_local_participants() || room.serves_listeners() {
                    room.publish_beat(false).await;
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                room.ask_owed_keyframes(now).await;
                room.seen.tick();
                room.vouched.retain(|_, at| now.duration_since(*at) < VOUCHED_FOR);
                let effects = room.roster.tick(now);
                room.apply(effects).await;
                room.review_listeners();
                room.review_audience(now);
                if room.listeners_need_word(now) {
                    room.ask_roster().await;
                }
            }
        }
    }
    // Sessions holding this task's media queue see it closed at once, not
    // after the unsubscribe (which waits on NATS).
    drop(local_media);
    let _ = tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscriber.unsubscribe()).await;
    inner.stats.rooms_active.fetch_sub(1, Relaxed);
    tracing::debug!(room = %room.name, "stopped serving room");
}

/// Whether `peer_id` is in the call: in this relay's `roster`, or named by
/// another relay lately (`vouched`).
fn in_the_call(roster: &Roster, vouched: &HashMap<String, Instant>, peer_id: &str) -> bool {
    roster.contains(peer_id) || vouched.contains_key(peer_id)
}

/// How long a room task waits for NATS to take its subscription, or its
/// unsubscription. A NATS server that stalls (overloaded, or a link that
/// black-holes while TCP stays up) keeps the client's connection "connected"
/// for minutes, until its pings go unanswered, and stops draining the
/// client's command queue once its write buffer is full: a subscription
/// queued behind that would leave every join of a new room unanswered.
const SUBSCRIBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The room could not be served (NATS client closed, or it did not take the
/// subscription in time): refuse every join.
async fn refuse_all(hub: &Hub, name: &str, commands: &mut mpsc::Receiver<Command>) {
    let refusal = encode(&ServerFrame::error(
        ErrorCode::Unavailable,
        "this relay cannot reach the other relays (NATS); elect another relay",
    ));
    while let Some(command) = commands.recv().await {
        match command {
            // Both hold a slot: releasing them lets the room stop, so a
            // later Join starts it afresh (NATS may be back by then).
            Command::Join { outbox, .. } | Command::Listen { outbox, .. } => {
                outbox.refuse(refusal.clone());
                hub.release(name);
            }
            Command::Stop => return,
            _ => {}
        }
    }
}

impl Room {
    fn stats(&self) -> &Stats {
        &self.hub.inner.stats
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Join {
                conn,
                participant,
                join_seq,
                state_seq,
                outbox,
            } => {
                // A prepared standby joining: the join's slot keeps the room
                // served now; its grace comes back if the join is accepted.
                let mut prepared = None;
                if self.conns.get(&conn).is_some_and(|c| c.listener.is_some()) {
                    prepared = self.conns.remove(&conn).and_then(|c| c.listener);
                    self.hub.release(&self.name);
                }
                let mut participant = participant;
                // When this relay admits it; the roster keeps the earliest
                // time any relay says.
                participant.admitted_at_ms = rallypoint_service::clock::unix_millis();
                let peer_id = participant.peer_id.clone();
                let max_size = self.hub.inner.settings.max_size;
                if !self.roster.contains(&peer_id) && self.roster.len() >= max_size {
                    self.refuse_full(&outbox, "");
                    // The slot this join holds is freed when the refused
                    // session ends (as a Lost).
                    return;
                }
                if let Some(listener) = prepared {
                    listener.joined(&self.hub.inner.unseen_graces, Instant::now());
                }
                let (others, effects) = self.roster.local_join(conn, participant, join_seq);
                self.roster.state_told_at_join(conn, &peer_id, state_seq);
                outbox.frame(encode(&ServerFrame::of(server_frame::Kind::Joined(
                    Joined {
                        room: self.name.clone(),
                        participants: others,
                    },
                ))));
                self.conns.insert(
                    conn,
                    LocalConn {
                        peer_id,
                        outbox,
                        awaiting_keyframe: KeyframeGate::default(),
                        listener: None,
                    },
                );
                self.stats().participants_active.fetch_add(1, Relaxed);
                self.apply(effects).await;
                self.refuse_beyond_size().await;
            }
            Command::Hangup { conn, peer_id } => {
                if self.conns.remove(&conn).is_some() {
                    self.stats().participants_active.fetch_sub(1, Relaxed);
                }
                let effects = self.roster.local_hangup(conn, &peer_id);
                self.apply(effects).await;
                self.hub.release(&self.name);
            }
            Command::Lost { conn, peer_id } => {
                if self.conns.remove(&conn).is_some() {
                    self.stats().participants_active.fetch_sub(1, Relaxed);
                }
                if self.roster.local_lost(conn, &peer_id, Instant::now()) == Departure::Released {
                    self.hub.release(&self.name);
                }
            }
            Command::State {
                conn,
                peer_id,
                state,
                seq,
            } => {
                let effects = self.roster.local_state(conn, &peer_id, state, seq);
                self.apply(effects).await;
            }
            Command::KeyframeRequest {
                requester,
                target,
                kind,
            } => {
                // Only for someone in the room: anything else would publish
                // across gateways for nobody, and grow `keyframe_asks`.
                if self.roster.contains(&target) {
                    let track = (target, kind as i32);
                    self.request_keyframe(&track, [requester.as_str()], &requester)
                        .await;
                }
            }
            Command::Listen {
                conn,
                peer_id,
                subject,
                gate,
                outbox,
            } => {
                let unknown = !self.listed(&peer_id);
                let mut listener = Listener::new(subject, gate);
                listener.review(!unknown, &self.hub.inner.unseen_graces, Instant::now());
                let listener = LocalConn {
                    peer_id,
                    outbox,
                    awaiting_keyframe: KeyframeGate::default(),
                    listener: Some(listener),
                };
                if self.conns.insert(conn, listener).is_some() {
                    self.hub.release(&self.name); // listening already
                }
                if unknown {
                    self.ask_roster().await;
                }
            }
            Command::Unlisten { conn } => {
                if self.conns.get(&conn).is_some_and(|c| c.listener.is_some()) {
                    self.conns.remove(&conn);
                    self.hub.release(&self.name);
                }
            }
            Command::Stop => unreachable!("handled by the loop"),
        }
    }

    async fn bus_message(&mut self, message: async_nats::Message) {
        // Without echo, all of it is another relay's: before this relay's
        // clients hear of that relay's participants, their media goes there.
        self.audience.heard(Instant::now());
        match subjects::parse_room_subject(&message.subject) {
            Some(RoomSubject::Media { sender, .. }) => {
                let sender = sender.to_owned();
                self.remote_media(&sender, message.payload).await;
            }
            Some(RoomSubject::Control { .. }) => match RoomEvent::decode(message.payload) {
                Ok(event) => {
                    self.room_event(event).await;
                    self.refuse_beyond_size().await;
                    self.review_listeners();
                }
                Err(e) => tracing::warn!(room = %self.name, "undecodable room event: {e}"),
            },
            None => {}
        }
    }

    async fn room_event(&mut self, event: RoomEvent) {
        let now = Instant::now();
        match event.kind {
            Some(room_event::Kind::Joined(joined)) => {
                let (reply, effects) = self.roster.remote_joined(joined, now);
                self.apply(effects).await;
                if reply {
                    self.publish_beat(true).await;
                }
            }
            Some(room_event::Kind::Left(left)) => {
                // Gone from the call: no relay's earlier word keeps it in.
                self.vouched.remove(&left.peer_id);
                let effects = self.roster.remote_left(left);
                self.apply(effects).await;
            }
            Some(room_event::Kind::Beat(mut beat)) => {
                let other_relay = beat.relay_id != self.hub.inner.relay_id;
                let asks = beat.asks_roster && other_relay;
                if other_relay {
                    self.vouch(std::mem::take(&mut beat.known_peer_ids), now);
                }
                let effects = self.roster.remote_beat(beat, now);
                self.apply(effects).await;
                if asks && self.roster.has_local_participants() {
                    self.send_beat(RosterBeat {
                        known_peer_ids: self.roster.remote_peer_ids(),
                        ..self.roster.beat(true)
                    })
                    .await;
                }
            }
            Some(room_event::Kind::State(changed)) => {
                let effects = self.roster.remote_state(changed);
                self.apply(effects).await;
            }
            Some(room_event::Kind::KeyframeRequest(request)) => {
                self.pass_keyframe_request(request);
            }
            None => {}
        }
    }

    /// Gives a keyframe request to the connections of its target here (not
    /// to a prepared standby's: the serving connection answers it).
    fn pass_keyframe_request(&self, request: RoutedKeyframeRequest) {
        let frame = encode(&ServerFrame::of(server_frame::Kind::KeyframeRequest(
            KeyframeRequest {
                peer_id: request.requester_peer_id,
                kind: request.kind,
            },
        )));
        for conn in self.conns.values() {
            if conn.peer_id == request.target_peer_id && conn.listener.is_none() {
                conn.outbox.frame(frame.clone());
            }
        }
    }

    /// A media frame from one of this relay's clients. Frames of its
    /// pictures lost just before it (the room's queue was full) were lost
    /// for every receiver here: they wait for the next keyframe from here on.
    async fn local_media(&mut self, local: LocalMedia) {
        for kind in local.lost_before.kinds() {
            let track = (local.sender.clone(), kind as i32);
            for conn in self.conns.values_mut() {
                if conn.peer_id != local.sender {
                    conn.awaiting_keyframe.lost(track.clone());
                }
            }
            // Lost for every receiver here: the relay is the one that lost.
            self.request_keyframe(&track, [""], "").await;
        }
        self.fan_out(&local.sender, local.facts, local.frame).await;
    }

    /// Whether `peer_id` has a connection here: a participant, or a
    /// prepared standby (whose media the room takes while it is served).
    fn knows_sender(&self, peer_id: &str) -> bool {
        self.conns.values().any(|conn| conn.peer_id == peer_id)
    }

    /// A media frame another relay published to the room.
    async fn remote_media(&mut self, sender: &str, frame: Bytes) {
        let facts = match decode_server_frame(frame.clone()) {
            Ok(ServerFrame {
                kind: Some(server_frame::Kind::Media(media)),
            }) => MediaFacts::of(&media),
            _ => {
                self.stats().frames_rejected.fetch_add(1, Relaxed);
                tracing::warn!(room = %self.name, sender, "dropping a room message that is not a media frame");
                return;
            }
        };
        self.fan_out(sender, facts, frame).await;
    }

    /// Delivers one sender's media frame (from this relay's clients or
    /// another relay's) to every local receiver but the sender.
    async fn fan_out(&mut self, sender: &str, media: MediaFacts, frame: Bytes) {
        let is_picture = media.is_picture();
        let track = (sender.to_owned(), media.kind);
        let stats = self.hub.inner.stats.clone();
        match self.seen.judge(&track, media.seq) {
            Seen::First => {}
            Seen::Copy => {
                stats.media_duplicates.fetch_add(1, Relaxed);
                return;
            }
            Seen::Stale => {
                stats.media_stale.fetch_add(1, Relaxed);
                return;
            }
        }
        if is_picture && media.keyframe {
            // What a held-back request was for.
            self.keyframe_asks.keyframe_passed(&track);
        }
        // Receivers that lost this picture's frame: they ask for a keyframe.
        let mut lost_by: Vec<String> = Vec::new();
        let now = Instant::now();
        let frame = if is_picture {
            MediaFrame::picture(frame, sender, media.kind, media.keyframe)
        } else {
            MediaFrame::single(frame)
        };
        for conn in self.conns.values_mut() {
            if conn.peer_id == sender {
                continue;
            }
            // A prepared standby hears a room its client is in (through
            // another relay), not one its token merely names.
            if let Some(listener) = &conn.listener
                && !listener.is_served(now)
            {
                stats.media_withheld.fetch_add(1, Relaxed);
                continue;
            }
            if is_picture && !conn.awaiting_keyframe.passes(&track, media.keyframe) {
                stats.media_skipped_awaiting_keyframe.fetch_add(1, Relaxed);
                continue;
            }
            match conn.outbox.media(frame.clone()) {
                MediaOffer::Queued => {
                    Stats::add(&stats.media_packets_out, 1);
                    Stats::add(&stats.media_bytes_out, frame.bytes.len() as u64);
                }
                MediaOffer::Dropped => {
                    stats.media_dropped.fetch_add(1, Relaxed);
                    if is_picture {
                        conn.awaiting_keyframe.lost(track.clone());
                        lost_by.push(conn.peer_id.clone());
                    }
                }
                MediaOffer::Closed => {}
            }
        }
        if !lost_by.is_empty() {
            self.request_keyframe(&track, lost_by.iter().map(String::as_str), "")
                .await;
        }
    }

    /// Asks a track's sender (wherever it is) for a keyframe on behalf of
    /// `receivers`, from `requester` ("" for the relay), as
    /// [`KeyframeAsks`] rations.
    async fn request_keyframe<'a>(
        &mut self,
        track: &Track,
        receivers: impl IntoIterator<Item = &'a str>,
        requester: &str,
    ) {
        match self
            .keyframe_asks
            .ask(track, receivers, requester, Instant::now())
        {
            Verdict::Send => self.send_keyframe_request(track, requester).await,
            Verdict::Owed => {}
            Verdict::BackingOff => {
                self.stats()
                    .keyframe_requests_backed_off
                    .fetch_add(1, Relaxed);
            }
        }
    }

    async fn send_keyframe_request(&mut self, (target, kind): &Track, requester: &str) {
        self.stats().keyframe_requests_sent.fetch_add(1, Relaxed);
        let request = RoutedKeyframeRequest {
            target_peer_id: target.clone(),
            requester_peer_id: requester.to_owned(),
            kind: *kind,
        };
        // The target may be here (NATS does not echo this relay's own
        // publications back to it) or on other relays.
        self.pass_keyframe_request(request.clone());
        self.publish(RoomEvent {
            kind: Some(room_event::Kind::KeyframeRequest(request)),
        })
        .await;
    }

    /// Sends the keyframe requests held back that may go on now (see
    /// [`KeyframeAsks::due`]), unless their sender has left the room or
    /// every receiver they were for has left this relay: a request can be
    /// held back for seconds.
    async fn ask_owed_keyframes(&mut self, now: Instant) {
        for (track, owed) in self.keyframe_asks.due(now) {
            let for_someone_here = owed.receivers.iter().any(|receiver| {
                receiver.is_empty() || self.conns.values().any(|c| &c.peer_id == receiver)
            });
            if self.roster.contains(&track.0) && for_someone_here {
                self.send_keyframe_request(&track, &owed.requester).await;
            }
        }
    }

    async fn apply(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Notify { except, frame } => {
                    let bytes = encode(&ServerFrame::of(frame));
                    for conn in self.conns.values() {
                        if conn.listener.is_none()
                            && except.as_deref() != Some(conn.peer_id.as_str())
                        {
                            conn.outbox.frame(bytes.clone());
                        }
                    }
                }
                Effect::Publish(event) => self.publish(event).await,
                Effect::Release => self.hub.release(&self.name),
            }
        }
    }

    /// Tells a connection the room is full (`RoomFull`, then the
    /// connection closes), counted; `why` follows the size in the message.
    fn refuse_full(&self, outbox: &Outbox, why: &str) {
        self.stats().room_full_refusals.fetch_add(1, Relaxed);
        let max_size = self.hub.inner.settings.max_size;
        outbox.refuse(encode(&ServerFrame::error(
            ErrorCode::RoomFull,
            format!("room {} is full ({max_size} participants){why}", self.name),
        )));
    }

    /// Refuses this relay's participants past the room's size (see
    /// `roster`): they joined racing others through relays that did not
    /// know of each other yet, and were admitted later. Each is told
    /// `RoomFull`, like a refused join, and leaves the room at once; its slot
    /// is freed when its session ends (as a Lost), like a refused join's.
    async fn refuse_beyond_size(&mut self) {
        let max_size = self.hub.inner.settings.max_size;
        let now_ms = rallypoint_service::clock::unix_millis();
        for (conn, peer_id) in self.roster.beyond_size(max_size, now_ms) {
            let Some(local) = self.conns.remove(&conn) else {
                continue;
            };
            self.stats().participants_active.fetch_sub(1, Relaxed);
            tracing::info!(room = %self.name, max_size, "room over its size after joins raced through relays new to it: refusing a later participant");
            self.refuse_full(&local.outbox, ": others joined through other relays first");
            let effects = self.roster.local_hangup(conn, &peer_id);
            self.apply(effects).await;
        }
    }

    /// Decides again which prepared standbys are served, after the roster
    /// may have changed (see `listener`).
    fn review_listeners(&mut self) {
        let now = Instant::now();
        let graces = &self.hub.inner.unseen_graces;
        for conn in self.conns.values_mut() {
            if let Some(listener) = &mut conn.listener {
                let listed = in_the_call(&self.roster, &self.vouched, &conn.peer_id);
                listener.review(listed, graces, now);
            }
        }
    }

    /// Whether `peer_id` is in the call (see [`in_the_call`]).
    fn listed(&self, peer_id: &str) -> bool {
        in_the_call(&self.roster, &self.vouched, peer_id)
    }

    /// Decides again whether other relays serve the room (see `audience`).
    /// Whatever they said while NATS was away went unheard: an outage, or
    /// a reconnect between two ticks, counts as hearing them.
    fn review_audience(&mut self, now: Instant) {
        let link = NatsLink::of(&self.hub.inner.nats);
        self.audience.nats_seen(link, now);
        self.audience
            .review(self.roster.has_remote_participants(), now);
    }

    /// Whether a prepared standby here hears the room now.
    fn serves_listeners(&self) -> bool {
        let now = Instant::now();
        self.conns
            .values()
            .any(|c| c.listener.as_ref().is_some_and(|l| l.is_served(now)))
    }

    /// Whether a listener this relay's roster does not list is served (on
    /// another relay's word, or on a grace): the word must be renewed, or
    /// come, by asking again. A withheld one asks nothing more — an
    /// outsider costs the other relays no beats.
    fn listeners_need_word(&self, now: Instant) -> bool {
        self.conns.values().any(|c| {
            c.listener.as_ref().is_some_and(|l| l.is_served(now))
                && !self.roster.contains(&c.peer_id)
        })
    }

    /// Another relay knows `peer_ids` to be in the call (its answer to an
    /// ask).
    fn vouch(&mut self, peer_ids: Vec<String>, now: Instant) {
        let most = 2 * self.hub.inner.settings.max_size;
        for peer_id in peer_ids {
            if self.vouched.len() >= most && !self.vouched.contains_key(&peer_id) {
                break;
            }
            self.vouched.insert(peer_id, now);
        }
    }

    /// Asks the relays serving the room for their rosters (a listener's
    /// client is not in this relay's yet), at most once per
    /// [`ROSTER_ASK_INTERVAL`]: each ask costs every such relay a beat.
    async fn ask_roster(&mut self) {
        let now = Instant::now();
        if self
            .roster_asked
            .is_some_and(|at| now.duration_since(at) < ROSTER_ASK_INTERVAL)
        {
            return;
        }
        self.roster_asked = Some(now);
        let beat = RosterBeat {
            asks_roster: true,
            ..self.roster.beat(false)
        };
        self.send_beat(beat).await;
    }

    async fn publish_beat(&mut self, in_reply: bool) {
        self.send_beat(self.roster.beat(in_reply)).await;
    }

    async fn send_beat(&mut self, beat: RosterBeat) {
        self.publish(RoomEvent {
            kind: Some(room_event::Kind::Beat(beat)),
        })
        .await;
    }

    /// Publishes a room event, giving up after [`super::PUBLISH_TIMEOUT`]: a
    /// room task that waits on an unreachable NATS would answer no Join.
    /// Presence repairs itself: the next roster beat restates it.
    async fn publish(&self, event: RoomEvent) {
        let subject = subjects::room_control(&self.name);
        let publish = self.hub.inner.nats.publish(subject, encode(&event));
        match tokio::time::timeout(super::PUBLISH_TIMEOUT, publish).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(room = %self.name, "cannot publish a room event: {e}"),
            Err(_) => {
                tracing::warn!(room = %self.name, "NATS did not take a room event in time; dropped")
            }
        }
    }
}
