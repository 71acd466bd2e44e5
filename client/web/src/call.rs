//! One call: the election driver, the media pipelines and what the view shows.
//!
//! [`Call::start`] spawns the driver and the camera/microphone encoders, then
//! follows the driver's outputs: decisions and the live election table go to
//! the view, room events keep the participant list, media goes to each
//! participant's decoders. After every move to another relay the room is
//! re-joined by the driver and this side asks every participant for a
//! keyframe and sends one itself, so video resumes at once.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::channel::mpsc;
use leptos::prelude::*;
use rallypoint_client::Candidate;
use rallypoint_client::election::{CandidateView, ElectionConfig, Role};
use rallypoint_protocol::v1::{
    ClientInfo, ElectionTrigger, ErrorCode, Media, Participant, TrackKind, server_frame,
};
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::spawn_local;
use web_sys::{AudioContext, MediaStream};

use crate::clock;
use crate::driver::{self, Command, DriverConfig, Output};
use crate::media::audio::{AudioReceiver, AudioSender};
use crate::media::video::{VideoReceiver, VideoSender};
use crate::media::{Decoded, MediaSink, capture};
use crate::stats::{FreezeTracker, LatencyWindow, RateMeter};
use crate::transport::Received;
use rallypoint_client::session::{Identity, Update as SessionUpdate};

/// A connection attempt (connect + Hello + Welcome) gives up after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Latency samples kept per participant and kind (a minute of video).
const LATENCY_SAMPLES: usize = 1_800;
/// Percentiles are recomputed at most this often (ms).
const PERCENTILES_EVERY_MS: f64 = 500.0;

/// Where the call stands, as the view shows it.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// The first tournament runs.
    Electing,
    /// A relay was chosen; the room is being joined through it.
    Joining {
        via: String,
    },
    /// In the room.
    InCall,
    /// The serving relay was lost or is draining; moving to `via` (when known).
    Reconnecting {
        via: Option<String>,
    },
    NoRelay {
        retry_in: Duration,
        attempt: u32,
    },
    /// The call cannot go on (a rejected token); the message says why.
    Failed(String),
    Ended,
}

/// One row of the election table.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateRow {
    pub label: String,
    pub region: String,
    pub transport: &'static str,
    pub relay_id: String,
    pub state: String,
    pub samples: u32,
    pub lost: u32,
    pub median_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub serving: bool,
}

/// The relay the call goes through, for the connection badge.
#[derive(Debug, Clone, PartialEq)]
pub struct Serving {
    pub label: String,
    pub region: String,
    pub transport: &'static str,
    pub relay_id: String,
}

/// Live statistics of one remote participant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerStats {
    pub video_decoded: u64,
    pub audio_decoded: u64,
    pub video_latency_p50_ms: Option<f64>,
    pub video_latency_p95_ms: Option<f64>,
    pub audio_latency_p50_ms: Option<f64>,
    pub longest_freeze_ms: f64,
    pub kbps: f64,
    /// `performance.now()` of the last decoded video frame.
    pub last_video_at: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RemotePeer {
    pub peer_id: String,
    pub name: String,
    pub region: String,
    pub relay_id: String,
    pub stats: RwSignal<PeerStats>,
}

impl RemotePeer {
    /// The id of the canvas the participant's video is drawn into.
    pub fn canvas_id(&self) -> String {
        canvas_id(&self.peer_id)
    }
}

fn canvas_id(peer_id: &str) -> String {
    let safe: String = peer_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("video-{safe}")
}

/// Own sending statistics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SendStats {
    pub video_frames: u64,
    pub keyframes: u64,
    pub audio_frames: u64,
    pub up_kbps: f64,
    pub down_kbps: f64,
}

/// Everything the call view shows. Signals are `Copy`: the view and the call
/// share one instance.
#[derive(Debug, Clone, Copy)]
pub struct CallState {
    pub room: RwSignal<String>,
    pub phase: RwSignal<Phase>,
    pub candidates: RwSignal<Vec<CandidateRow>>,
    pub serving: RwSignal<Option<Serving>>,
    /// The last decision in words.
    pub reason: RwSignal<Option<String>>,
    pub peers: RwSignal<Vec<RemotePeer>>,
    pub sending: RwSignal<SendStats>,
    /// Election reports delivered to a relay, and still kept.
    pub reports: RwSignal<(u32, usize)>,
    pub muted: RwSignal<bool>,
    pub camera_on: RwSignal<bool>,
    pub has_devices: RwSignal<bool>,
}

impl CallState {
    fn new(room: String, has_devices: bool) -> Self {
        CallState {
            room: RwSignal::new(room),
            phase: RwSignal::new(Phase::Electing),
            candidates: RwSignal::new(Vec::new()),
            serving: RwSignal::new(None),
            reason: RwSignal::new(None),
            peers: RwSignal::new(Vec::new()),
            sending: RwSignal::new(SendStats::default()),
            reports: RwSignal::new((0, 0)),
            muted: RwSignal::new(false),
            camera_on: RwSignal::new(has_devices),
            has_devices: RwSignal::new(has_devices),
        }
    }
}

/// What the lobby hands over.
pub struct JoinRequest {
    pub room: String,
    pub token: String,
    pub candidates: Vec<Candidate>,
    /// Camera and microphone; `None` joins to watch and listen only.
    pub stream: Option<MediaStream>,
    /// Created while handling the click, so the browser lets it play.
    pub audio: AudioContext,
}

/// Media and statistics of one remote participant.
struct PeerMedia {
    video: VideoReceiver,
    audio: Option<AudioReceiver>,
    video_latency: LatencyWindow,
    audio_latency: LatencyWindow,
    freeze: FreezeTracker,
    received: RateMeter,
    percentiles_at: f64,
    stats: RwSignal<PeerStats>,
}

pub struct Call {
    pub state: CallState,
    commands: mpsc::UnboundedSender<Command>,
    audio: AudioContext,
    stream: Option<MediaStream>,
    video_sender: RefCell<Option<VideoSender>>,
    audio_sender: RefCell<Option<AudioSender>>,
    peers: RefCell<HashMap<String, PeerMedia>>,
    sent: RefCell<RateMeter>,
    received: RefCell<RateMeter>,
    owner: Owner,
}

impl Call {
    /// Starts the call. Its view state lives in `owner` (the app's), so it
    /// outlives the lobby that started it.
    pub fn start(request: JoinRequest, owner: Owner) -> Rc<Call> {
        let state = owner.with(|| CallState::new(request.room.clone(), request.stream.is_some()));
        let config = DriverConfig {
            election: ElectionConfig::default(),
            connect_timeout: CONNECT_TIMEOUT,
            room: request.room,
            identity: Identity {
                token: request.token,
                session_id: Bytes::copy_from_slice(&clock::random_id()),
                info: client_info(),
            },
        };
        let (commands, outputs) = driver::spawn(request.candidates, config);
        let call = Rc::new(Call {
            state,
            commands,
            audio: request.audio,
            stream: request.stream,
            video_sender: RefCell::new(None),
            audio_sender: RefCell::new(None),
            peers: RefCell::new(HashMap::new()),
            sent: RefCell::new(RateMeter::new(1000.0)),
            received: RefCell::new(RateMeter::new(1000.0)),
            owner,
        });
        call.start_senders();
        spawn_local(follow(call.clone(), outputs));
        spawn_local(tick(Rc::downgrade(&call)));
        call
    }

    fn start_senders(self: &Rc<Self>) {
        let Some(stream) = &self.stream else { return };
        let sink: MediaSink = {
            let call = Rc::downgrade(self);
            Rc::new(move |media: Media| {
                if let Some(call) = call.upgrade() {
                    call.send_media(media);
                }
            })
        };
        if let Some(track) = capture::video_track(stream) {
            match VideoSender::start(&track, sink.clone()) {
                Ok(sender) => *self.video_sender.borrow_mut() = Some(sender),
                Err(e) => web_sys::console::warn_1(&JsValue::from_str(&e)),
            }
        }
        if let Some(track) = capture::audio_track(stream) {
            match AudioSender::start(&track, sink) {
                Ok(sender) => *self.audio_sender.borrow_mut() = Some(sender),
                Err(e) => web_sys::console::warn_1(&JsValue::from_str(&e)),
            }
        }
    }

    fn send_media(&self, media: Media) {
        self.sent
            .borrow_mut()
            .record(clock::now_ms(), media.payload.len());
        let video = media.kind == TrackKind::Video as i32;
        let keyframe = media.keyframe;
        self.state.sending.update(|s| {
            if video {
                s.video_frames += 1;
                s.keyframes += keyframe as u64;
            } else {
                s.audio_frames += 1;
            }
        });
        let _ = self.commands.unbounded_send(Command::SendMedia(media));
    }

    pub fn set_muted(&self, muted: bool) {
        if let Some(sender) = &*self.audio_sender.borrow() {
            sender.set_enabled(!muted);
        }
        self.state.muted.set(muted);
    }

    pub fn set_camera(&self, on: bool) {
        if let Some(sender) = &*self.video_sender.borrow() {
            sender.set_enabled(on);
        }
        self.state.camera_on.set(on);
    }

    /// The local camera, for the self view.
    pub fn stream(&self) -> Option<MediaStream> {
        self.stream.clone()
    }

    /// Hangs up: the room is told, connections close, devices are released.
    pub fn leave(&self) {
        let _ = self.commands.unbounded_send(Command::Stop);
        self.stop_media();
        self.state.phase.set(Phase::Ended);
    }

    fn stop_media(&self) {
        self.video_sender.borrow_mut().take();
        self.audio_sender.borrow_mut().take();
        self.peers.borrow_mut().clear();
        if let Some(stream) = &self.stream {
            capture::stop(stream);
        }
        let _ = self.audio.close();
    }

    fn on_output(self: &Rc<Self>, output: Output) {
        match output {
            Output::Session(SessionUpdate::Snapshot(views)) => self.on_snapshot(&views),
            Output::Session(SessionUpdate::Decided {
                decision,
                candidate,
                ..
            }) => {
                let label = candidate.label();
                let moved = self
                    .state
                    .serving
                    .with_untracked(|s| s.as_ref().is_none_or(|s| s.label != label));
                self.state.reason.set(Some(decision.reason.clone()));
                if moved {
                    let lost_relay = matches!(
                        decision.trigger,
                        ElectionTrigger::Failover | ElectionTrigger::Drain
                    );
                    self.state.serving.set(Some(Serving {
                        label: label.clone(),
                        region: candidate.region.clone(),
                        transport: candidate.transport.short(),
                        relay_id: candidate.relay_id.clone(),
                    }));
                    self.state.phase.set(if lost_relay {
                        Phase::Reconnecting { via: Some(label) }
                    } else {
                        Phase::Joining { via: label }
                    });
                    // The others' relays may have dropped frames of ours
                    // while we moved: start them afresh.
                    if let Some(sender) = &*self.video_sender.borrow() {
                        sender.request_keyframe();
                    }
                }
            }
            Output::Session(SessionUpdate::CandidateFailed { candidate, .. }) => {
                let lost_serving = self
                    .state
                    .serving
                    .with_untracked(|s| s.as_ref().is_some_and(|s| s.label == candidate.label()));
                if lost_serving && self.state.phase.get_untracked() == Phase::InCall {
                    self.state.phase.set(Phase::Reconnecting { via: None });
                }
            }
            Output::Session(SessionUpdate::Refused { code, message, .. }) => {
                let fatal = matches!(
                    code,
                    ErrorCode::Unauthenticated | ErrorCode::TokenExpired | ErrorCode::WrongRoom
                );
                if fatal {
                    let _ = self.commands.unbounded_send(Command::Stop);
                    self.stop_media();
                    self.state.phase.set(Phase::Failed(format!(
                        "Token rejected by the relay: {message}. Go back to the lobby to get a new one."
                    )));
                }
            }
            Output::Session(SessionUpdate::NoRelayReachable { retry_in, attempt }) => {
                self.state.phase.set(Phase::NoRelay { retry_in, attempt });
            }
            Output::Room(received) => self.on_room(received),
            Output::Session(SessionUpdate::Reports {
                delivered, pending, ..
            }) => self.state.reports.set((delivered, pending)),
        }
    }

    fn on_snapshot(&self, views: &[CandidateView]) {
        self.state.candidates.update(|rows| {
            let fresh: Vec<CandidateRow> = views
                .iter()
                .map(|view| {
                    let mut fresh = row(view);
                    // Every decision starts a new measurement window; until
                    // its first sample, show the last RTT measured.
                    if fresh.median_ms.is_none()
                        && let Some(old) = rows.iter().find(|r| r.label == fresh.label)
                    {
                        fresh.median_ms = old.median_ms;
                        fresh.p95_ms = old.p95_ms;
                    }
                    fresh
                })
                .collect();
            *rows = fresh;
        });
    }

    fn on_room(self: &Rc<Self>, received: Received) {
        let Some(kind) = received.frame.kind else {
            return;
        };
        match kind {
            server_frame::Kind::Joined(joined) => {
                // After a move the new relay may not know the whole room yet
                // (it learns it from the roster beats): participants not
                // listed are kept; they leave only with PeerLeft.
                for participant in &joined.participants {
                    self.add_peer(participant);
                    self.request_keyframe(&participant.peer_id);
                }
                self.state.phase.set(Phase::InCall);
            }
            server_frame::Kind::PeerJoined(joined) => {
                if let Some(participant) = &joined.peer {
                    self.add_peer(participant);
                }
            }
            server_frame::Kind::PeerMoved(moved) => {
                if let Some(participant) = &moved.peer {
                    self.add_peer(participant);
                }
            }
            server_frame::Kind::PeerLeft(left) => {
                self.peers.borrow_mut().remove(&left.peer_id);
                self.state
                    .peers
                    .update(|peers| peers.retain(|p| p.peer_id != left.peer_id));
            }
            server_frame::Kind::Media(media) => self.on_media(&media),
            server_frame::Kind::KeyframeRequest(request) => {
                if request.kind == TrackKind::Video as i32
                    && let Some(sender) = &*self.video_sender.borrow()
                {
                    sender.request_keyframe();
                }
            }
            _ => {}
        }
    }

    /// Adds a participant, or updates where it is connected.
    fn add_peer(self: &Rc<Self>, participant: &Participant) {
        let mut known = false;
        self.state.peers.update(|peers| {
            if let Some(peer) = peers.iter_mut().find(|p| p.peer_id == participant.peer_id) {
                known = true;
                peer.name = participant.display_name.clone();
                peer.region = participant.region.clone();
                peer.relay_id = participant.relay_id.clone();
            }
        });
        if known {
            return;
        }
        let stats = self.owner.with(|| RwSignal::new(PeerStats::default()));
        self.state.peers.update(|peers| {
            peers.push(RemotePeer {
                peer_id: participant.peer_id.clone(),
                name: participant.display_name.clone(),
                region: participant.region.clone(),
                relay_id: participant.relay_id.clone(),
                stats,
            })
        });
        self.media_for(&participant.peer_id, stats);
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
                video: VideoReceiver::new(canvas_id(peer_id), on_decoded),
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
        if !self.peers.borrow().contains_key(&media.sender) {
            // Media can overtake the roster event that announces its sender.
            self.add_peer(&Participant {
                peer_id: media.sender.clone(),
                display_name: "…".into(),
                ..Default::default()
            });
        }
        let ask = {
            let mut peers = self.peers.borrow_mut();
            let Some(peer) = peers.get_mut(&media.sender) else {
                return;
            };
            peer.received.record(clock::now_ms(), media.payload.len());
            match TrackKind::try_from(media.kind) {
                Ok(TrackKind::Video) => peer.video.push(media),
                Ok(TrackKind::Audio) => {
                    if let Some(audio) = &peer.audio {
                        audio.push(media);
                    }
                    false
                }
                _ => false,
            }
        };
        if ask {
            self.request_keyframe(&media.sender);
        }
    }

    fn on_decoded(&self, peer_id: &str, decoded: Decoded) {
        let now = clock::now_ms();
        let mut peers = self.peers.borrow_mut();
        let Some(peer) = peers.get_mut(peer_id) else {
            return;
        };
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
            } else {
                s.audio_decoded += 1;
            }
            if refresh {
                s.video_latency_p50_ms = video_latency.quantile(0.5);
                s.video_latency_p95_ms = video_latency.quantile(0.95);
                s.audio_latency_p50_ms = audio_latency.quantile(0.5);
                s.kbps = kbps;
            }
        });
    }

    fn request_keyframe(&self, peer_id: &str) {
        let _ = self.commands.unbounded_send(Command::RequestKeyframe {
            peer_id: peer_id.to_owned(),
            kind: TrackKind::Video,
        });
    }
}

/// Follows the driver until it stops.
async fn follow(call: Rc<Call>, mut outputs: mpsc::UnboundedReceiver<Output>) {
    while let Some(output) = outputs.next().await {
        call.on_output(output);
    }
}

/// Refreshes the rates once a second while the call lasts.
async fn tick(call: std::rc::Weak<Call>) {
    loop {
        clock::sleep_ms(1000).await;
        let Some(call) = call.upgrade() else { return };
        if call.state.phase.get_untracked() == Phase::Ended {
            return;
        }
        let now = clock::now_ms();
        let up = call.sent.borrow_mut().kbps(now);
        let down = call.received.borrow_mut().kbps(now);
        call.state.sending.update(|s| {
            s.up_kbps = up;
            s.down_kbps = down;
        });
    }
}

fn row(view: &CandidateView) -> CandidateRow {
    let summary = view.summary;
    let ms = |us: u64| (summary.samples > 0).then_some(us as f64 / 1000.0);
    let state = match (&view.error, view.role, view.connecting, view.connected) {
        (Some(error), Role::Idle, _, _) => format!("failed: {error}"),
        (_, Role::Serving, _, _) => "serving".into(),
        (_, Role::Standby, _, _) => "standby".into(),
        (_, _, true, _) => "connecting".into(),
        (_, Role::Contender | Role::Reprobe, _, true) => "measuring".into(),
        _ => "idle".into(),
    };
    CandidateRow {
        label: view.candidate.label(),
        region: view.candidate.region.clone(),
        transport: view.candidate.transport.short(),
        relay_id: view.candidate.relay_id.clone(),
        state,
        samples: summary.samples,
        lost: summary.lost,
        median_ms: ms(summary.median),
        p95_ms: ms(summary.p95),
        serving: view.role == Role::Serving,
    }
}

/// What this client says about itself in Hello and in reports.
fn client_info() -> ClientInfo {
    let navigator = web_sys::window().map(|w| w.navigator());
    let user_agent = navigator
        .as_ref()
        .and_then(|n| n.user_agent().ok())
        .unwrap_or_default();
    // navigator.connection is not in every browser (nor in web-sys' stable set).
    let effective_connection_type = navigator
        .as_ref()
        .and_then(|n| js_sys::Reflect::get(n, &"connection".into()).ok())
        .filter(|c| c.is_object())
        .and_then(|c| js_sys::Reflect::get(&c, &"effectiveType".into()).ok())
        .and_then(|t| t.as_string())
        .unwrap_or_default();
    ClientInfo {
        platform: "browser".into(),
        client_version: env!("CARGO_PKG_VERSION").into(),
        browser_family: crate::client_info::browser_family(&user_agent).into(),
        effective_connection_type,
    }
}
