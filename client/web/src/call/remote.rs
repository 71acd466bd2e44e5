//! The other participants: who is in the call (kept by the core's
//! [`Roster`](rallypoint_client::roster::Roster) from room events and media),
//! and each one's decoders and statistics. A decoder that cannot start
//! without a keyframe asks its sender for one.

use std::rc::Rc;

use leptos::prelude::*;
use rallypoint_client::roster::Sender;
use rallypoint_protocol::v1::{Media, MediaState, Participant, TrackKind, server_frame};
use wasm_bindgen::JsValue;

use super::Call;
use super::view::{PeerStats, Phase, RemotePeer, canvas_id, screen_canvas_id};
use crate::clock;
use crate::driver::Command;
use crate::media::audio::AudioReceiver;
use crate::media::video::VideoReceiver;
use crate::media::{Decoded, speech};
use crate::stats::{FreezeTracker, LatencyWindow, RateMeter};
use crate::transport::Received;

/// Latency samples kept per participant and kind (a minute of video).
const LATENCY_SAMPLES: usize = 1_800;
/// Percentiles are recomputed at most this often (ms).
const PERCENTILES_EVERY_MS: f64 = 500.0;

/// Media and statistics of one remote participant.
pub(super) struct PeerMedia {
    video: VideoReceiver,
    /// Its shared screen, from the first screen frame on.
    screen: Option<VideoReceiver>,
    on_decoded: Rc<dyn Fn(Decoded)>,
    audio: Option<AudioReceiver>,
    video_latency: LatencyWindow,
    audio_latency: LatencyWindow,
    freeze: FreezeTracker,
    received: RateMeter,
    percentiles_at: f64,
    stats: RwSignal<PeerStats>,
}

impl Call {
    /// Room traffic from the serving relay: roster events, media, keyframe
    /// requests for our own video.
    pub(super) fn on_room(self: &Rc<Self>, received: Received) {
        let Some(kind) = received.frame.kind else {
            return;
        };
        match kind {
            server_frame::Kind::Joined(joined) => {
                // After a move the new relay may not know the whole room yet
                // (it learns it from the roster beats): participants it does
                // not list stay until it names them or `roster` gives up.
                let listed = joined.participants.iter().map(|p| p.peer_id.as_str());
                self.roster.borrow_mut().joined(listed, clock::now());
                for participant in &joined.participants {
                    self.add_peer(participant);
                    self.request_keyframe(&participant.peer_id, TrackKind::Video);
                    if participant.state.is_some_and(|s| s.sharing_screen) {
                        self.request_keyframe(&participant.peer_id, TrackKind::Screen);
                    }
                }
                self.state.phase.set(Phase::InCall);
            }
            server_frame::Kind::PeerJoined(joined) => {
                if let Some(participant) = &joined.peer {
                    self.roster.borrow_mut().named(&participant.peer_id);
                    self.add_peer(participant);
                }
            }
            server_frame::Kind::PeerMoved(moved) => {
                if let Some(participant) = &moved.peer {
                    self.roster.borrow_mut().named(&participant.peer_id);
                    self.add_peer(participant);
                    let now = clock::now_ms();
                    if let Some(peer) = self.peers.borrow().get(&participant.peer_id) {
                        peer.stats.update(|s| {
                            s.moved_at = Some(now);
                            s.moves += 1;
                        });
                    }
                }
            }
            server_frame::Kind::PeerState(changed) => {
                let shown = self.roster.borrow_mut().confirmed(&changed.peer_id);
                if shown {
                    self.apply_media_state(&changed.peer_id, changed.state.unwrap_or_default());
                }
            }
            server_frame::Kind::PeerLeft(left) => {
                self.roster.borrow_mut().left(&left.peer_id, clock::now());
                self.remove_peer(&left.peer_id);
            }
            server_frame::Kind::Media(media) => self.on_media(&media),
            server_frame::Kind::KeyframeRequest(request) => {
                match TrackKind::try_from(request.kind) {
                    Ok(TrackKind::Video) => {
                        if let Some(sender) = &*self.video_sender.borrow() {
                            sender.request_keyframe();
                        }
                    }
                    Ok(TrackKind::Screen) => {
                        if let Some(share) = &*self.screen.borrow() {
                            share.request_keyframe();
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// Takes a participant's tile and decoders away.
    pub(super) fn remove_peer(&self, peer_id: &str) {
        self.peers.borrow_mut().remove(peer_id);
        self.state
            .peers
            .update(|peers| peers.retain(|p| p.peer_id != peer_id));
    }

    /// Adds a participant, or updates where it is connected.
    fn add_peer(self: &Rc<Self>, participant: &Participant) {
        let mut known = false;
        let media_state = participant.state.unwrap_or_default();
        self.state.peers.update(|peers| {
            if let Some(peer) = peers.iter_mut().find(|p| p.peer_id == participant.peer_id) {
                known = true;
                peer.name = participant.display_name.clone();
                peer.region = participant.region.clone();
                peer.relay_id = participant.relay_id.clone();
            }
        });
        if known {
            self.apply_media_state(&participant.peer_id, media_state);
            return;
        }
        let stats = self.owner.with(|| RwSignal::new(PeerStats::default()));
        let media_state = self.owner.with(|| RwSignal::new(media_state));
        self.state.peers.update(|peers| {
            peers.push(RemotePeer {
                peer_id: participant.peer_id.clone(),
                name: participant.display_name.clone(),
                region: participant.region.clone(),
                relay_id: participant.relay_id.clone(),
                stats,
                media_state,
            })
        });
        self.media_for(&participant.peer_id, stats);
    }

    /// A known participant's microphone, camera and screen, as it announced
    /// them (in `PeerState`, or carried by `Joined` and `PeerMoved`).
    fn apply_media_state(&self, peer_id: &str, state: MediaState) {
        if !state.sharing_screen
            && let Some(peer) = self.peers.borrow_mut().get_mut(peer_id)
        {
            // Whatever screen frames come later belong to another share.
            peer.screen = None;
        }
        self.state.peers.with_untracked(|peers| {
            if let Some(peer) = peers.iter().find(|p| p.peer_id == peer_id) {
                peer.media_state.set(state);
            }
        });
    }

    fn media_for(self: &Rc<Self>, peer_id: &str, stats: RwSignal<PeerStats>) {
        if self.peers.borrow().contains_key(peer_id) {
            return;
        }
        let on_decoded: Rc<dyn Fn(Decoded)> = {
            let call = Rc::downgrade(self);
            let peer_id = peer_id.to_owned();
            Rc::new(move |decoded| {
                if let Some(call) = call.upgrade() {
                    call.on_decoded(&peer_id, decoded);
                }
            })
        };
        let audio = match AudioReceiver::new(self.audio.clone(), on_decoded.clone()) {
            Ok(receiver) => Some(receiver),
            Err(e) => {
                web_sys::console::warn_1(&JsValue::from_str(&format!("no audio decoder: {e}")));
                None
            }
        };
        self.peers.borrow_mut().insert(
            peer_id.to_owned(),
            PeerMedia {
                video: VideoReceiver::new(canvas_id(peer_id), TrackKind::Video, on_decoded.clone()),
                screen: None,
                on_decoded,
                audio,
                video_latency: LatencyWindow::new(LATENCY_SAMPLES),
                audio_latency: LatencyWindow::new(LATENCY_SAMPLES),
                freeze: FreezeTracker::default(),
                received: RateMeter::new(1000.0),
                percentiles_at: 0.0,
                stats,
            },
        );
    }

    fn on_media(self: &Rc<Self>, media: &Media) {
        self.received
            .borrow_mut()
            .record(clock::now_ms(), media.payload.len());
        let sender = self
            .roster
            .borrow_mut()
            .media_from(&media.sender, clock::now());
        match sender {
            Sender::Known => {}
            // Media can overtake the roster event that announces its sender.
            Sender::New => self.add_peer(&Participant {
                peer_id: media.sender.clone(),
                display_name: "…".into(),
                ..Default::default()
            }),
            // A standby's late copy of someone who left.
            Sender::Departed => return,
        }
        let ask = {
            let mut peers = self.peers.borrow_mut();
            let Some(peer) = peers.get_mut(&media.sender) else {
                return;
            };
            peer.received.record(clock::now_ms(), media.payload.len());
            match TrackKind::try_from(media.kind) {
                Ok(TrackKind::Video) => peer.video.push(media).then_some(TrackKind::Video),
                Ok(TrackKind::Screen) => {
                    let on_decoded = peer.on_decoded.clone();
                    peer.screen
                        .get_or_insert_with(|| {
                            VideoReceiver::new(
                                screen_canvas_id(&media.sender),
                                TrackKind::Screen,
                                on_decoded,
                            )
                        })
                        .push(media)
                        .then_some(TrackKind::Screen)
                }
                Ok(TrackKind::Audio) => {
                    if let Some(audio) = &peer.audio {
                        audio.push(media);
                    }
                    None
                }
                _ => None,
            }
        };
        if let Some(kind) = ask {
            self.request_keyframe(&media.sender, kind);
        }
    }

    fn on_decoded(&self, peer_id: &str, decoded: Decoded) {
        let now = clock::now_ms();
        let mut peers = self.peers.borrow_mut();
        let Some(peer) = peers.get_mut(peer_id) else {
            return;
        };
        if decoded.kind == TrackKind::Screen {
            peer.stats.update(|s| s.screen_decoded += 1);
            return;
        }
        peer.stats.update_untracked(|s| s.last_media_at = Some(now));
        let video = decoded.kind == TrackKind::Video;
        if video {
            peer.video_latency.record(decoded.latency_ms);
            peer.freeze.frame(now);
        } else {
            peer.audio_latency.record(decoded.latency_ms);
        }
        let refresh = now - peer.percentiles_at >= PERCENTILES_EVERY_MS;
        if refresh {
            peer.percentiles_at = now;
        }
        let (freeze, received) = (peer.freeze, &mut peer.received);
        let kbps = received.kbps(now);
        let (video_latency, audio_latency) = (&peer.video_latency, &peer.audio_latency);
        peer.stats.update(|s| {
            if video {
                s.video_decoded += 1;
                s.last_video_at = Some(now);
                s.longest_freeze_ms = freeze.longest_ms;
                if s.freezes.last() != freeze.recent().last().as_ref() {
                    s.freezes = freeze.recent().collect();
                }
            } else {
                s.audio_decoded += 1;
                if let Some(level) = decoded.level {
                    s.speaking_until = speech::speaking_until(s.speaking_until, level, now);
                }
            }
            if refresh {
                s.video_latency_p50_ms = video_latency.quantile(0.5);
                s.video_latency_p95_ms = video_latency.quantile(0.95);
                s.audio_latency_p50_ms = audio_latency.quantile(0.5);
                s.kbps = kbps;
            }
        });
    }

    fn request_keyframe(&self, peer_id: &str, kind: TrackKind) {
        let _ = self.commands.unbounded_send(Command::RequestKeyframe {
            peer_id: peer_id.to_owned(),
            kind,
        });
    }
}
