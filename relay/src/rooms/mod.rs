//! Rooms as this relay serves them.
//!
//! The [`Hub`] keeps one task per room that has a participant on this relay.
//! The task owns the room's NATS subscription (`rp.room.<room>.>`), the local
//! connections, the [`roster::Roster`] and the fan-out of media to local
//! receivers. The hub counts *slots* per room — a joined connection, or a
//! participant held in its grace period — and stops the room task (dropping the
//! subscription, so gateways stop forwarding the room here) when the last slot
//! is released.

mod room;
pub mod roster;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rallypoint_protocol::subjects;
use rallypoint_protocol::v1::{Participant, TrackKind};
use tokio::sync::mpsc;

use crate::metrics::Stats;
use crate::session::outbox::Outbox;
use roster::ConnId;

/// Timing of presence.
#[derive(Debug, Clone, Copy)]
pub struct RoomSettings {
    /// How long a vanished participant is held before it is reported as left.
    pub grace: Duration,
    /// How often this relay states its roster of each room.
    pub beat: Duration,
}

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
}

struct RoomSlot {
    commands: mpsc::UnboundedSender<Command>,
    held: usize,
}

/// What a room task is asked to do.
enum Command {
    Join {
        conn: ConnId,
        participant: Participant,
        join_seq: u64,
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
    KeyframeRequest {
        requester: String,
        target: String,
        kind: TrackKind,
    },
    Stop,
}

impl Hub {
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
            }),
        }
    }

    /// Adds a connection to a room. The room task answers the client with
    /// `Joined` on its outbox and announces it to the room.
    pub fn join(
        &self,
        room: &str,
        conn: ConnId,
        participant: Participant,
        join_seq: u64,
        outbox: Outbox,
    ) {
        let mut rooms = self.inner.rooms.lock().expect("room map lock poisoned");
        let slot = rooms.entry(room.to_owned()).or_insert_with(|| {
            let (commands, receiver) = mpsc::unbounded_channel();
            tokio::spawn(room::run(self.clone(), room.to_owned(), receiver));
            RoomSlot { commands, held: 0 }
        });
        slot.held += 1;
        let _ = slot.commands.send(Command::Join {
            conn,
            participant,
            join_seq,
            outbox,
        });
    }

    /// The participant hung up.
    pub fn hangup(&self, room: &str, conn: ConnId, peer_id: &str) {
        self.send(
            room,
            Command::Hangup {
                conn,
                peer_id: peer_id.to_owned(),
            },
        );
    }

    /// The participant's connection vanished: it may be moving to another relay.
    pub fn lost(&self, room: &str, conn: ConnId, peer_id: &str) {
        self.send(
            room,
            Command::Lost {
                conn,
                peer_id: peer_id.to_owned(),
            },
        );
    }

    /// A participant asks `target` for a keyframe.
    pub fn keyframe_request(&self, room: &str, requester: &str, target: &str, kind: TrackKind) {
        self.send(
            room,
            Command::KeyframeRequest {
                requester: requester.to_owned(),
                target: target.to_owned(),
                kind,
            },
        );
    }

    /// Publishes a sender's media frame (an encoded `ServerFrame{media}`) to the
    /// room. While NATS is disconnected the frame is dropped rather than
    /// buffered: stale media is worse than none.
    pub async fn publish_media(&self, room: &str, sender: &str, frame: Bytes) -> bool {
        if self.inner.nats.connection_state() != async_nats::connection::State::Connected {
            return false;
        }
        self.inner
            .nats
            .publish(subjects::room_media(room, sender), frame)
            .await
            .is_ok()
    }

    /// Rooms with a task on this relay.
    pub fn room_count(&self) -> usize {
        self.inner
            .rooms
            .lock()
            .expect("room map lock poisoned")
            .len()
    }

    fn send(&self, room: &str, command: Command) {
        let rooms = self.inner.rooms.lock().expect("room map lock poisoned");
        if let Some(slot) = rooms.get(room) {
            let _ = slot.commands.send(command);
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
            let _ = slot.commands.send(Command::Stop);
        }
    }
}
