//! Rooms as this relay serves them.
//!
//! The [`Hub`] keeps one task per room that has a participant on this relay.
//! The task owns the room's NATS subscription (`rp.room.<room>.>`), the local
//! connections, the [`roster::Roster`] and the fan-out of media to local
//! receivers. The hub counts *slots* per room — a joined connection, or a
//! participant held in its grace period — and stops the room task (dropping the
//! subscription, so gateways stop forwarding the room here) when the last slot
//! is released.
//!
//! Media from this relay's own clients reaches the room task twice over in
//! principle: straight from the session (the room's media queue) and back
//! from NATS, where it is published for the other relays. The relay's NATS
//! connection is opened without echo, so only the first happens: the room's
//! media from other relays arrives through NATS, its own clients' media
//! never makes the round trip through nats-server (one read, parse and
//! wake-up fewer per frame, and a local receiver hears it sooner). A room
//! no other relay serves is not published at all (see `audience`).

mod audience;
mod keyframe_asks;
mod listener;
mod room;
pub mod roster;

pub use listener::ListenerGate;

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rallypoint_protocol::subjects;
use rallypoint_protocol::v1::{Media, MediaState, Participant, TrackKind};
use tokio::sync::mpsc;

use crate::metrics::Stats;
use crate::outbox::Outbox;
use audience::Listening;
use roster::ConnId;

/// Timing of presence.
#[derive(Debug, Clone, Copy)]
pub struct RoomSettings {
    /// How long a vanished participant is held before it is reported as left.
    pub grace: Duration,
    /// How often this relay states its roster of each room.
    pub beat: Duration,
    /// Most participants in a room (across all relays).
    pub max_size: usize,
    /// Publish local media even when no other relay serves the room (see
    /// `audience`): for a rolling upgrade from relays that do not beat for
    /// a standby alone.
    pub publish_all_media: bool,
}

/// Commands queued per room task. Join and Leave are rate-limited per
/// connection, so only a room under attack from many connections fills it.
const ROOM_QUEUE: usize = 1024;
/// Local media frames queued per room task: 0.13 s of a full room (100
/// local senders of audio and camera, 80 frames/s each), seconds of a small
/// one. Past it the room task is behind and frames are dropped, counted; a
/// lost picture frame has its receivers wait for a keyframe, requested —
/// at the point of the loss, told by the sender's next frame to get through.
/// Bytes are bounded by the senders' media budgets, not here.
const ROOM_MEDIA_QUEUE: usize = 1024;
/// Longest wait for NATS to take a publish: past it, the message is dropped
/// (media) or logged (room events) instead of wedging the caller.
pub(crate) const PUBLISH_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    nats: async_nats::Client,
    relay_id: String,
    region: String,
    settings: RoomSettings,
    stats: Arc<Stats>,
    rooms: Mutex<HashMap<String, RoomSlot>>,
    /// Graces for listeners the roster does not list, per token subject
    /// and shared by every room of this relay (see `listener`).
    unseen_graces: crate::rate::SubjectRates,
}

struct RoomSlot {
    commands: mpsc::Sender<Command>,
    media: mpsc::Sender<LocalMedia>,
    /// Whether other relays serve the room, so its media goes to NATS.
    listening: Listening,
    held: usize,
}

/// What the room task reads off a media frame to fan it out.
#[derive(Debug, Clone, Copy)]
pub struct MediaFacts {
    kind: i32,
    seq: u64,
    keyframe: bool,
}

impl MediaFacts {
    pub fn of(media: &Media) -> Self {
        MediaFacts {
            kind: media.kind,
            seq: media.seq,
            keyframe: media.keyframe,
        }
    }

    /// Camera or screen: after a loss, useless until the next keyframe
    /// (audio frames stand alone).
    fn is_picture(&self) -> bool {
        self.kind == TrackKind::Video as i32 || self.kind == TrackKind::Screen as i32
    }
}

/// A session's way into its room task's media queue, found once per room:
/// the hub's map of rooms is behind a lock that every session would
/// otherwise take for every frame. (Not the command queue: a room task ends
/// when the last sender of that is gone.) A session starts a new door when
/// it joins, prepares or leaves.
#[derive(Default)]
pub struct RoomDoor {
    room: String,
    media: Option<mpsc::Sender<LocalMedia>>,
    /// Whether to publish for other relays (with `media`, from the slot).
    listening: Option<Listening>,
    /// Picture kinds whose frames the queue refused since the last frame it
    /// took: the next one that gets through tells the room task.
    lost: LostPictures,
}

/// Which of a sender's pictures lost a frame (camera, screen).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct LostPictures {
    camera: bool,
    screen: bool,
}

impl LostPictures {
    fn mark(&mut self, kind: i32) {
        if kind == TrackKind::Video as i32 {
            self.camera = true;
        } else if kind == TrackKind::Screen as i32 {
            self.screen = true;
        }
    }

    fn kinds(self) -> impl Iterator<Item = TrackKind> {
        [
            (self.camera, TrackKind::Video),
            (self.screen, TrackKind::Screen),
        ]
        .into_iter()
        .filter_map(|(lost, kind)| lost.then_some(kind))
    }
}

/// A media frame from one of this relay's clients, for the room task to
/// give the room's other local receivers.
struct LocalMedia {
    sender: String,
    facts: MediaFacts,
    /// The encoded `ServerFrame{media}`, as published.
    frame: Bytes,
    /// The sender's pictures that lost frames just before this one.
    lost_before: LostPictures,
}

/// What a room task is asked to do.
enum Command {
    Join {
        conn: ConnId,
        participant: Participant,
        join_seq: u64,
        /// The connection's count of media-state changes so far: the state
        /// the Join carries is at least that new.
        state_seq: u64,
        outbox: Outbox,
    },
    Hangup {
        conn: ConnId,
        peer_id: String,
    },
    Lost {
        conn: ConnId,
        peer_id: String,
    },
    State {
        conn: ConnId,
        peer_id: String,
        state: MediaState,
        /// The connection's count of changes: orders them when a full queue
        /// delivers them through waiting tasks.
        seq: u64,
    },
    KeyframeRequest {
        requester: String,
        target: String,
        kind: TrackKind,
    },
    /// A standby connection whose client prepares a move here hears the
    /// room's media (and only that) until it joins or stops preparing.
    Listen {
        conn: ConnId,
        peer_id: String,
        /// The token's subject (see `listener`).
        subject: String,
        /// Where the room task states whether the standby is served.
        gate: ListenerGate,
        outbox: Outbox,
    },
    Unlisten {
        conn: ConnId,
    },
    Stop,
}

impl Hub {
    /// `nats` must be a connection without echo (`no_echo`): the room tasks
    /// serve this relay's own clients' media and keyframe requests
    /// themselves, and an echo would bring each back as a duplicate.
    pub fn new(
        nats: async_nats::Client,
        relay_id: String,
        region: String,
        settings: RoomSettings,
        stats: Arc<Stats>,
    ) -> Self {
        Hub {
            inner: Arc::new(HubInner {
                nats,
                relay_id,
                region,
                settings,
                stats,
                rooms: Mutex::new(HashMap::new()),
                unseen_graces: crate::rate::SubjectRates::per_minute(
                    listener::UNSEEN_GRACES_PER_MINUTE,
                ),
            }),
        }
    }

    /// Adds a connection to a room. The room task answers the client with
    /// `Joined` (or a `RoomFull` error) on its outbox and announces it to the
    /// room. False when the room's queue is full: the join did not happen.
    pub fn join(
        &self,
        room: &str,
        conn: ConnId,
        participant: Participant,
        join_seq: u64,
        state_seq: u64,
        outbox: Outbox,
    ) -> bool {
        let joining = Command::Join {
            conn,
            participant,
            join_seq,
            state_seq,
            outbox,
        };
        self.take_slot(room, joining)
    }

    /// A standby connection hears the room's media from now on, and its
    /// media goes into the room, while the gate returned says so (its client
    /// prepares a move here; see `listener`): no roster entry, no presence,
    /// but a slot that keeps the room served, released by
    /// [`Hub::unlisten`] or a Join on the same connection. `None` when the
    /// room's queue is full.
    pub fn listen(
        &self,
        room: &str,
        conn: ConnId,
        peer_id: &str,
        subject: &str,
        outbox: Outbox,
    ) -> Option<ListenerGate> {
        let gate = ListenerGate::default();
        let listening = Command::Listen {
            conn,
            peer_id: peer_id.to_owned(),
            subject: subject.to_owned(),
            gate: gate.clone(),
            outbox,
        };
        self.take_slot(room, listening).then_some(gate)
    }

    /// The connection stopped preparing (Leave, or it closed).
    pub fn unlisten(&self, room: &str, conn: ConnId) {
        self.deliver(room, Command::Unlisten { conn });
    }

    /// Queues `command`, which holds a slot of `room` (a join or a listener),
    /// starting the room's task if this relay does not serve it yet.
    fn take_slot(&self, room: &str, command: Command) -> bool {
        let mut rooms = self.inner.rooms.lock().expect("room map lock poisoned");
        let slot = rooms.entry(room.to_owned()).or_insert_with(|| {
            let (commands, receiver) = mpsc::channel(ROOM_QUEUE);
            let (media, local_media) = mpsc::channel(ROOM_MEDIA_QUEUE);
            let listening = Listening::default();
            tokio::spawn(room::run(
                self.clone(),
                room.to_owned(),
                receiver,
                local_media,
                listening.clone(),
            ));
            RoomSlot {
                commands,
                media,
                listening,
                held: 0,
            }
        });
        if slot.commands.try_send(command).is_err() {
            self.inner.stats.room_commands_dropped.fetch_add(1, Relaxed);
            return false;
        }
        slot.held += 1;
        true
    }

    /// The participant hung up.
    pub fn hangup(&self, room: &str, conn: ConnId, peer_id: &str) {
        self.deliver(
            room,
            Command::Hangup {
                conn,
                peer_id: peer_id.to_owned(),
            },
        );
    }

    /// The participant's connection vanished: it may be moving to another relay.
    pub fn lost(&self, room: &str, conn: ConnId, peer_id: &str) {
        self.deliver(
            room,
            Command::Lost {
                conn,
                peer_id: peer_id.to_owned(),
            },
        );
    }

    /// The participant's microphone or camera changed, its connection's
    /// `seq`th change. Never dropped (like a join or a leave): a tile showing
    /// the wrong state misleads.
    pub fn media_state(
        &self,
        room: &str,
        conn: ConnId,
        peer_id: &str,
        state: MediaState,
        seq: u64,
    ) {
        self.deliver(
            room,
            Command::State {
                conn,
                peer_id: peer_id.to_owned(),
                state,
                seq,
            },
        );
    }

    /// A participant asks `target` for a keyframe; dropped when the room is
    /// too busy (a keyframe request is a hint, and the next one repairs).
    pub fn keyframe_request(&self, room: &str, requester: &str, target: &str, kind: TrackKind) {
        let rooms = self.inner.rooms.lock().expect("room map lock poisoned");
        if let Some(slot) = rooms.get(room) {
            let request = Command::KeyframeRequest {
                requester: requester.to_owned(),
                target: target.to_owned(),
                kind,
            };
            if slot.commands.try_send(request).is_err() {
                self.inner.stats.room_commands_dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Gives a sender's media frame (an encoded `ServerFrame{media}`) to the
    /// room: to this relay's other receivers through the room task, and to
    /// the other relays through NATS while any serves the room (see
    /// `audience`). While NATS is disconnected or slow the frame does not
    /// reach them rather than being buffered: stale media is worse than
    /// none. A frame larger than the NATS server takes is refused here,
    /// counted, instead of vanishing there (and reaches nobody, so all
    /// receivers see the same call). True when NATS took it (false too when
    /// no other relay needed it, counted as kept here).
    pub async fn publish_media(
        &self,
        door: &mut RoomDoor,
        room: &str,
        sender: &str,
        facts: MediaFacts,
        frame: Bytes,
    ) -> bool {
        let stats = &self.inner.stats;
        let nats = &self.inner.nats;
        if frame.len() > nats.max_payload() {
            stats.media_refused_oversize.fetch_add(1, Relaxed);
            return false;
        }
        self.fan_out_here(door, room, sender, facts, frame.clone());
        if door.listening.as_ref().is_some_and(|l| !l.by_others()) {
            stats.media_kept_here.fetch_add(1, Relaxed);
            return false;
        }
        if nats.connection_state() != async_nats::connection::State::Connected {
            stats.media_unpublished.fetch_add(1, Relaxed);
            return false;
        }
        let publish = nats.publish(subjects::room_media(room, sender), frame);
        let published = matches!(
            tokio::time::timeout(PUBLISH_TIMEOUT, publish).await,
            Ok(Ok(()))
        );
        if published {
            stats.media_published.fetch_add(1, Relaxed);
        } else {
            stats.media_unpublished.fetch_add(1, Relaxed);
        }
        published
    }

    /// Queues a local sender's frame for the room task's fan-out; never
    /// waits. A full queue (the room task is behind) drops it, counted; a
    /// dropped picture frame is reported with the sender's next frame to get
    /// through, so the room task has the receivers wait for a keyframe from
    /// that point on, and asks for one.
    fn fan_out_here(
        &self,
        door: &mut RoomDoor,
        room: &str,
        sender: &str,
        facts: MediaFacts,
        frame: Bytes,
    ) {
        let stats = &self.inner.stats;
        let stale = door.room != room || door.media.as_ref().is_none_or(|m| m.is_closed());
        if stale {
            // A room task that ended (its slots released) and started again
            // has a new queue.
            let rooms = self.inner.rooms.lock().expect("room map lock poisoned");
            let slot = rooms.get(room);
            door.media = slot.map(|slot| slot.media.clone());
            door.listening = slot.map(|slot| slot.listening.clone());
            room.clone_into(&mut door.room);
        }
        let Some(media) = &door.media else {
            stats.media_not_in_room.fetch_add(1, Relaxed);
            return;
        };
        let local = LocalMedia {
            sender: sender.to_owned(),
            facts,
            frame,
            lost_before: door.lost,
        };
        match media.try_send(local) {
            Ok(()) => door.lost = LostPictures::default(),
            Err(mpsc::error::TrySendError::Full(_)) => {
                stats.media_room_behind.fetch_add(1, Relaxed);
                door.lost.mark(facts.kind);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                stats.media_not_in_room.fetch_add(1, Relaxed);
            }
        }
    }

    /// Rooms with a task on this relay.
    pub fn room_count(&self) -> usize {
        self.inner
            .rooms
            .lock()
            .expect("room map lock poisoned")
            .len()
    }

    /// Sends a command that must not be lost (it frees a slot): when the
    /// queue is full it is delivered by a task that waits its turn.
    fn deliver(&self, room: &str, command: Command) {
        let rooms = self.inner.rooms.lock().expect("room map lock poisoned");
        let Some(slot) = rooms.get(room) else { return };
        if let Err(mpsc::error::TrySendError::Full(command)) = slot.commands.try_send(command) {
            let commands = slot.commands.clone();
            tokio::spawn(async move {
                let _ = commands.send(command).await;
            });
        }
    }

    /// Frees one slot of `room`; the last one stops the room task.
    fn release(&self, room: &str) {
        let mut rooms = self.inner.rooms.lock().expect("room map lock poisoned");
        let Some(slot) = rooms.get_mut(room) else {
            tracing::error!(room, "released a slot of a room this relay does not serve");
            return;
        };
        slot.held = slot.held.saturating_sub(1);
        if slot.held == 0 {
            let slot = rooms.remove(room).expect("present above");
            // Dropping the last sender stops the task too, once it has
            // drained what is queued; Stop only makes it sooner.
            let _ = slot.commands.try_send(Command::Stop);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{Control, Outgoing, outbox};

    /// Waits up to five seconds for `pick` to accept an item of `sees`.
    async fn until<T>(
        sees: &mut crate::outbox::OutboxReceiver,
        mut pick: impl FnMut(Outgoing) -> Option<T>,
    ) -> T {
        let found = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match sees.try_next() {
                    Some(item) => {
                        if let Some(found) = pick(item) {
                            return found;
                        }
                    }
                    None => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        });
        found.await.expect("within 5 s")
    }

    /// A local sender's frames that find its room task's media queue full
    /// are dropped and counted; from the sender's next frame to get through
    /// on — not before: the frames queued ahead of the loss are good — every
    /// local receiver skips the camera until its next keyframe, which the
    /// sender is asked for, even when it was asked a moment ago. (A
    /// current-thread runtime: the room task runs only when the test waits,
    /// so the test fills the queue for real.)
    #[tokio::test]
    async fn a_camera_frame_lost_before_the_room_task_makes_receivers_wait_for_a_keyframe() {
        use rallypoint_protocol::v1::{ServerFrame, server_frame};
        use rallypoint_protocol::{decode_server_frame, encode};
        use rallypoint_testkit::nats::{NatsRole, SuperCluster, SuperClusterSpec};
        let dir = tempfile::tempdir().unwrap();
        let spec = SuperClusterSpec::one_server("us-east", false);
        let servers = SuperCluster::start(spec, dir.path()).await.unwrap();
        let access = servers.access(NatsRole::Relay("us-east".into()), "us-east");
        let nats = access
            .options()
            .unwrap()
            .no_echo()
            .connect(access.urls().to_vec())
            .await
            .unwrap();
        let stats = Arc::new(Stats::default());
        let settings = RoomSettings {
            grace: Duration::from_secs(5),
            beat: Duration::from_secs(1),
            max_size: 10,
            publish_all_media: false,
        };
        let hub = Hub::new(
            nats,
            "us-east-0".into(),
            "us-east".into(),
            settings,
            stats.clone(),
        );
        let participant = |peer_id: &str| Participant {
            peer_id: peer_id.into(),
            ..Default::default()
        };
        let (alice, mut alice_sees) = outbox(64, 64);
        let (bob, mut bob_sees) = outbox(64, 2 * ROOM_MEDIA_QUEUE);
        assert!(hub.join("r", 1, participant("p-alice"), 0, 0, alice));
        assert!(hub.join("r", 2, participant("p-bob"), 0, 0, bob));
        let control = |item: Outgoing| match item {
            Outgoing::Control(Control::Frame(frame)) => decode_server_frame(frame).ok()?.kind,
            _ => None,
        };
        until(&mut bob_sees, |item| match control(item) {
            Some(server_frame::Kind::Joined(_)) => Some(()),
            _ => None,
        })
        .await;

        let camera = |seq: u64, keyframe: bool| {
            let media = Media {
                sender: "p-alice".into(),
                kind: TrackKind::Video as i32,
                seq,
                keyframe,
                ..Default::default()
            };
            let frame = encode(&ServerFrame::of(server_frame::Kind::Media(media.clone())));
            (MediaFacts::of(&media), frame)
        };
        let mut door = RoomDoor::default();
        let send = |door: &mut RoomDoor, seq: u64, keyframe: bool| {
            let (facts, frame) = camera(seq, keyframe);
            hub.fan_out_here(door, "r", "p-alice", facts, frame);
        };
        let delivered = || stats.media_packets_out.load(Relaxed);
        let until_delivered = |count: u64| async move {
            tokio::time::timeout(Duration::from_secs(5), async {
                while delivered() < count {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .expect("the room task takes the queued frames");
        };
        let queue = ROOM_MEDIA_QUEUE as u64;
        let keyframe_request = |item: Outgoing| match control(item) {
            Some(server_frame::Kind::KeyframeRequest(request)) => Some(request.kind),
            _ => None,
        };
        let bob_hears = |bob_sees: &mut crate::outbox::OutboxReceiver| {
            let mut seqs = Vec::new();
            while let Some(item) = bob_sees.try_next() {
                if let Outgoing::Media(frame) = item
                    && let Ok(ServerFrame {
                        kind: Some(server_frame::Kind::Media(media)),
                    }) = decode_server_frame(frame.bytes)
                {
                    seqs.push(media.seq);
                }
            }
            seqs
        };

        // Without waiting, more frames than the queue holds.
        for seq in 0..queue + 10 {
            send(&mut door, seq, false);
        }
        assert_eq!(
            stats.media_room_behind.load(Relaxed),
            10,
            "ten frames past the queue"
        );
        // Everything queued before the loss reaches Bob.
        until_delivered(queue).await;
        assert_eq!(bob_hears(&mut bob_sees), (0..queue).collect::<Vec<_>>());

        // The next frame through tells of the loss: Bob skips deltas until
        // the keyframe Alice is asked for.
        let next = queue + 10;
        for (seq, keyframe) in [(next, false), (next + 1, true), (next + 2, false)] {
            send(&mut door, seq, keyframe);
        }
        let asked = until(&mut alice_sees, keyframe_request).await;
        assert_eq!(asked, TrackKind::Video as i32);
        until_delivered(queue + 2).await;
        assert_eq!(
            bob_hears(&mut bob_sees),
            [next + 1, next + 2],
            "the delta after the loss skipped"
        );
        assert_eq!(stats.media_skipped_awaiting_keyframe.load(Relaxed), 1);

        // A second loss soon after (within the 300 ms between two requests
        // for a track, on a machine that is not very slow): the request is
        // held back, not dropped, and goes out when the interval has passed.
        let again = next + 3;
        for seq in again..again + queue + 5 {
            send(&mut door, seq, false);
        }
        until_delivered(2 * queue + 2).await;
        send(&mut door, again + queue + 5, false);
        let asked = until(&mut alice_sees, keyframe_request).await;
        assert_eq!(
            asked,
            TrackKind::Video as i32,
            "the second loss's keyframe is asked for"
        );
    }

    /// A hub of relay us-east-0 with nobody in its rooms yet.
    fn hub_without_peers(nats: async_nats::Client) -> Hub {
        let settings = RoomSettings {
            grace: Duration::from_secs(5),
            beat: Duration::from_secs(1),
            max_size: 10,
            publish_all_media: false,
        };
        let stats = Arc::new(Stats::default());
        Hub::new(nats, "us-east-0".into(), "us-east".into(), settings, stats)
    }

    /// One nats-server of region us-east and a relay's client of it; the
    /// directory lives as long as the servers.
    async fn one_nats_server() -> (
        tempfile::TempDir,
        rallypoint_testkit::nats::SuperCluster,
        async_nats::Client,
    ) {
        use rallypoint_testkit::nats::{NatsRole, SuperCluster, SuperClusterSpec};
        let dir = tempfile::tempdir().unwrap();
        let spec = SuperClusterSpec::one_server("us-east", false);
        let servers = SuperCluster::start(spec, dir.path()).await.unwrap();
        let nats = servers
            .access(NatsRole::Relay("us-east".into()), "us-east")
            .connect()
            .await
            .unwrap();
        (dir, servers, nats)
    }

    /// `item` closes the connection with an Error that names NATS.
    fn assert_refused_for_nats(item: Outgoing) {
        let Outgoing::Control(Control::CloseWith(frame)) = item else {
            panic!("expected a refusal, got {item:?}");
        };
        let error = rallypoint_protocol::decode_server_frame(frame).unwrap();
        assert!(format!("{error:?}").contains("NATS"), "{error:?}");
    }

    fn alice() -> Participant {
        Participant {
            peer_id: "p-alice".into(),
            ..Default::default()
        }
    }

    /// A room task that cannot subscribe (here: the NATS client was
    /// drained, as at shutdown — a real client in a real state, no mock)
    /// refuses what is queued for it, a join and a listener alike, and
    /// frees their slots: a later Join starts the room afresh.
    #[tokio::test]
    async fn a_room_that_cannot_subscribe_refuses_its_joins_and_listeners_and_frees_their_slots() {
        let (_dir, _servers, nats) = one_nats_server().await;
        nats.drain().await.expect("drains");
        let closing = tokio::time::timeout(Duration::from_secs(5), async {
            while nats.subscribe("rp.probe").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        closing.await.expect("the drained client closes within 5 s");
        let hub = hub_without_peers(nats);
        let (joiner, mut joiner_sees) = outbox(8, 8);
        let participant = alice();
        assert!(hub.join("r", 1, participant, 0, 0, joiner));
        let (listener, mut listener_sees) = outbox(8, 8);
        assert!(hub.listen("r", 2, "p-bob", "bob", listener).is_some());
        for sees in [&mut joiner_sees, &mut listener_sees] {
            assert_refused_for_nats(until(sees, Some).await);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while hub.room_count() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the room kept {} slot(s)",
                hub.inner.rooms.lock().unwrap()["r"].held
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A room task whose subscription NATS does not take (here: the server
    /// is stopped, SIGSTOP — a real stall, the connection still up — and the
    /// client's queue is full of publishes behind it) refuses its join in
    /// time instead of leaving it unanswered for as long as the stall lasts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_room_whose_subscription_stalls_refuses_its_joins_in_time() {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let (_dir, servers, nats) = one_nats_server().await;
        let server = Pid::from_raw(servers.servers()[0].pid().expect("running") as i32);
        kill(server, Signal::SIGSTOP).unwrap();
        // 64 MB: more than the sockets' buffers, the client's write buffer
        // and its command queue hold.
        let filler = nats.clone();
        let filling = tokio::spawn(async move {
            let payload = bytes::Bytes::from(vec![0u8; 16 * 1024]);
            for _ in 0..4096 {
                let _ = filler.publish("rp.filler", payload.clone()).await;
            }
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        let hub = hub_without_peers(nats);
        let (joiner, mut joiner_sees) = outbox(8, 8);
        let participant = alice();
        assert!(hub.join("fresh", 1, participant, 0, 0, joiner));
        let answer = until(&mut joiner_sees, Some).await;
        kill(server, Signal::SIGCONT).unwrap();
        filling.abort();
        assert_refused_for_nats(answer);
    }
}
