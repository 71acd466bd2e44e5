//! One call: the election driver, the media pipelines and what the view shows.
//!
//! [`Call::start`] spawns the driver and the camera/microphone encoders, then
//! follows the driver's outputs: decisions and the live election table go to
//! the view, room events keep the participant list, media goes to each
//! participant's decoders. After every move to another relay the room is
//! re-joined by the driver and this side asks every participant for a
//! keyframe and sends one itself, so video resumes at once.
//!
//! The call is the controller; [`view`] is what the view shows and
//! [`remote`] the other participants' media.

mod remote;
mod view;

use remote::PeerMedia;
use view::row;
pub use view::{
    CallState, CandidateRow, PeerStats, Phase, RemotePeer, SendStats, Serving, screen_canvas_id,
};

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::channel::mpsc;
use leptos::prelude::*;
use rallypoint_client::election::{CandidateView, ElectionConfig};
use rallypoint_client::roster::Roster;
use rallypoint_client::{Candidate, TransportKind};
use rallypoint_protocol::v1::{
    ClientInfo, ElectionReport, ElectionTrigger, ErrorCode, Media, MediaState, TrackKind,
};
use wasm_bindgen::prelude::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::spawn_local;
use web_sys::{AudioContext, MediaStream, MediaStreamTrack};

use crate::clock;
use crate::driver::{self, Command, DriverConfig, Output};
use crate::media::audio::AudioSender;
use crate::media::devices::DeviceKind;
use crate::media::video::{self, VideoSender};
use crate::media::{MediaSink, capture};
use crate::stats::RateMeter;
use rallypoint_client::session::{Identity, Update as SessionUpdate, handshake};

/// A connection attempt (connect + Hello + Welcome) gives up after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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

/// A screen being shared: its encoder, its capture, and the handler that
/// notices the person stopping it from the browser's controls.
struct ScreenShare {
    sender: VideoSender,
    stream: MediaStream,
    _ended: Closure<dyn FnMut()>,
}

impl ScreenShare {
    fn request_keyframe(&self) {
        self.sender.request_keyframe();
    }
}

impl Drop for ScreenShare {
    /// The capture ends with the share: the browser's sharing indicator
    /// goes off, however the share ended.
    fn drop(&mut self) {
        capture::stop(&self.stream);
    }
}

pub struct Call {
    pub state: CallState,
    commands: mpsc::UnboundedSender<Command>,
    audio: AudioContext,
    stream: Option<MediaStream>,
    video_sender: RefCell<Option<VideoSender>>,
    audio_sender: RefCell<Option<AudioSender>>,
    screen: RefCell<Option<ScreenShare>>,
    /// The browser is asking the person what to share.
    picking_screen: Cell<bool>,
    /// Where the next share's frame numbers start.
    screen_seq: Cell<u64>,
    peers: RefCell<HashMap<String, PeerMedia>>,
    /// Who else is in the call (see `remote`).
    roster: RefCell<Roster>,
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
            screen: RefCell::new(None),
            picking_screen: Cell::new(false),
            screen_seq: Cell::new(0),
            peers: RefCell::new(HashMap::new()),
            roster: RefCell::new(Roster::new()),
            sent: RefCell::new(RateMeter::new(1000.0)),
            received: RefCell::new(RateMeter::new(1000.0)),
            owner,
        });
        call.start_senders();
        call.announce_media_state();
        if let Some(track) = call.stream.as_ref().and_then(capture::video_track) {
            call.state.camera_label.set(track.label());
        }
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
            match VideoSender::start(&track, video::CAMERA, sink.clone()) {
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
        let (kind, keyframe) = (TrackKind::try_from(media.kind), media.keyframe);
        self.state.sending.update(|s| match kind {
            Ok(TrackKind::Video) => {
                s.video_frames += 1;
                s.keyframes += keyframe as u64;
            }
            Ok(TrackKind::Screen) => s.screen_frames += 1,
            _ => s.audio_frames += 1,
        });
        let _ = self.commands.unbounded_send(Command::SendMedia(media));
    }

    pub fn set_muted(&self, muted: bool) {
        if let Some(sender) = &*self.audio_sender.borrow() {
            sender.set_enabled(!muted);
        }
        self.state.muted.set(muted);
        self.announce_media_state();
    }

    pub fn set_camera(&self, on: bool) {
        if let Some(sender) = &*self.video_sender.borrow() {
            sender.set_enabled(on);
        }
        self.state.camera_on.set(on);
        self.announce_media_state();
    }

    /// Tells the room (through the session, which carries it into every
    /// later join) whether others hear and see us: a microphone or camera
    /// that is off, or that never opened, is shown on our tile there.
    fn announce_media_state(&self) {
        let state = MediaState {
            muted: self.audio_sender.borrow().is_none() || self.state.muted.get_untracked(),
            camera_off: self.video_sender.borrow().is_none()
                || !self.state.camera_on.get_untracked(),
            sharing_screen: self.screen.borrow().is_some(),
        };
        let _ = self.commands.unbounded_send(Command::SetMediaState(state));
    }

    /// Shares a screen, window or tab the person picks, as its own track
    /// (the others show it large); stops when the person stops it from the
    /// browser's own controls too.
    pub async fn share_screen(self: &Rc<Self>) {
        if self.screen.borrow().is_some() || self.picking_screen.replace(true) {
            return;
        }
        self.state.media_error.set(None);
        let picked = capture::open_screen().await;
        self.picking_screen.set(false);
        let stream = match picked {
            Ok(Some(stream)) => stream,
            Ok(None) => return,
            Err(message) => {
                self.state.media_error.set(Some(message));
                return;
            }
        };
        if self.state.phase.get_untracked() == Phase::Ended {
            // Left while the browser asked what to share.
            capture::stop(&stream);
            return;
        }
        let Some(track) = capture::video_track(&stream) else {
            capture::stop(&stream);
            return;
        };
        let sink: MediaSink = {
            let call = Rc::downgrade(self);
            Rc::new(move |media: Media| {
                if let Some(call) = call.upgrade() {
                    call.send_media(media);
                }
            })
        };
        let sender = match VideoSender::start(&track, video::SCREEN, sink) {
            // Numbered on from the last share: viewers' decoders see one
            // track that paused, never numbers going back.
            Ok(sender) => {
                sender.continue_from(self.screen_seq.get());
                sender
            }
            Err(message) => {
                capture::stop(&stream);
                self.state.media_error.set(Some(message));
                return;
            }
        };
        let ended = {
            let call = Rc::downgrade(self);
            Closure::<dyn FnMut()>::new(move || {
                if let Some(call) = call.upgrade() {
                    call.stop_sharing();
                }
            })
        };
        track.set_onended(Some(ended.as_ref().unchecked_ref()));
        *self.screen.borrow_mut() = Some(ScreenShare {
            sender,
            stream,
            _ended: ended,
        });
        self.state.sharing.set(true);
        self.announce_media_state();
    }

    /// Sends from camera `id` from now on, and remembers it for the lobby.
    /// The others see the picture change in the same tile.
    pub async fn switch_camera(&self, id: String) {
        let Some(stream) = &self.stream else { return };
        let track = match capture::open_camera(&id).await {
            Ok(track) => track,
            // Phones often run one camera at a time: let go of the current
            // one, then open the new one (the others see a short freeze).
            Err(error) if error.busy => match self.reopen_without_current(stream, &id).await {
                Ok(track) => track,
                Err(message) => {
                    self.state.media_error.set(Some(message));
                    return;
                }
            },
            Err(error) => {
                self.state.media_error.set(Some(error.message));
                return;
            }
        };
        let replaced = match &*self.video_sender.borrow() {
            Some(sender) => sender.replace_track(&track),
            None => Err("This call sends no camera.".to_owned()),
        };
        if let Err(message) = replaced {
            track.stop();
            self.state.media_error.set(Some(message));
            return;
        }
        if let Some(old) = capture::video_track(stream) {
            stream.remove_track(&old);
            old.stop();
        }
        stream.add_track(&track);
        self.state.media_error.set(None);
        self.state.camera_label.set(track.label());
        let mut choice = capture::remembered();
        choice.set(DeviceKind::Camera, Some(id));
        capture::remember(&choice);
    }

    /// Stops the camera in use and opens `id`; when `id` still fails, takes
    /// the previous camera back so the call keeps its picture, and when that
    /// fails too, the camera is off (as the others are told) rather than a
    /// frozen picture that claims to be live.
    async fn reopen_without_current(
        &self,
        stream: &MediaStream,
        id: &str,
    ) -> Result<MediaStreamTrack, String> {
        let current = capture::video_track(stream);
        let previous = current.as_ref().and_then(capture::device_id);
        if let Some(current) = current {
            current.stop();
        }
        let error = match capture::open_camera(id).await {
            Ok(track) => return Ok(track),
            Err(error) => error.message,
        };
        let restored = match previous {
            Some(previous) => self.restore_camera(stream, &previous).await,
            None => Err("the browser did not say which camera it was".to_owned()),
        };
        match restored {
            Ok(()) => Err(error),
            Err(why) => {
                if let Some(stopped) = capture::video_track(stream) {
                    stream.remove_track(&stopped);
                }
                self.set_camera(false);
                Err(format!(
                    "{error} The previous camera could not be reopened either ({why}): the camera is off."
                ))
            }
        }
    }

    /// Reopens camera `id` in place of the stopped track in `stream`.
    async fn restore_camera(&self, stream: &MediaStream, id: &str) -> Result<(), String> {
        let back = capture::open_camera(id).await.map_err(|e| e.message)?;
        if let Some(sender) = &*self.video_sender.borrow()
            && let Err(why) = sender.replace_track(&back)
        {
            back.stop();
            return Err(why);
        }
        if let Some(stopped) = capture::video_track(stream) {
            stream.remove_track(&stopped);
        }
        stream.add_track(&back);
        Ok(())
    }

    /// Stops sharing the screen (nothing when not sharing).
    pub fn stop_sharing(&self) {
        let Some(share) = self.screen.borrow_mut().take() else {
            return;
        };
        self.screen_seq.set(share.sender.next_seq());
        drop(share);
        self.state.sharing.set(false);
        self.announce_media_state();
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
        self.stop_sharing();
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
                report,
            }) => {
                self.remember_measured(&report);
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
                    self.fresh_pictures();
                }
            }
            // Frames sent into the silence are lost, and the standby
            // forwards from now on: start them afresh there.
            Output::Session(SessionUpdate::Preparing { .. }) => self.fresh_pictures(),
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
                if handshake::ends_the_call(code) {
                    let _ = self.commands.unbounded_send(Command::Stop);
                    self.stop_media();
                    self.state.phase.set(Phase::Failed(if code == ErrorCode::RoomFull {
                        format!("Cannot join: {message}. Try again when someone has left.")
                    } else {
                        format!(
                            "Token rejected by the relay: {message}. Go back to the lobby to get a new one."
                        )
                    }));
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

    /// The next camera and screen frames are keyframes.
    fn fresh_pictures(&self) {
        if let Some(sender) = &*self.video_sender.borrow() {
            sender.request_keyframe();
        }
        if let Some(share) = &*self.screen.borrow() {
            share.request_keyframe();
        }
    }

    /// What the decision measured, kept on the election table's rows: the
    /// decision starts a new measurement window, and live tables are paced,
    /// so the last table may predate the samples the decision rested on.
    fn remember_measured(&self, report: &ElectionReport) {
        self.state.candidates.update(|rows| {
            for measured in report.candidates.iter().filter(|c| c.samples > 0) {
                let Ok(transport) = TransportKind::try_from(measured.transport()) else {
                    continue;
                };
                let label = format!("{}/{}", measured.region, transport.short());
                if let Some(row) = rows.iter_mut().find(|r| r.label == label) {
                    row.median_ms = Some(measured.rtt_median_us as f64 / 1000.0);
                    row.p95_ms = Some(measured.rtt_p95_us as f64 / 1000.0);
                }
            }
        });
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
}

/// Follows the driver until it stops.
async fn follow(call: Rc<Call>, mut outputs: mpsc::UnboundedReceiver<Output>) {
    while let Some(output) = outputs.next().await {
        call.on_output(output);
    }
}

/// Refreshes the rates once a second while the call lasts, and drops the
/// participants the serving relay never confirmed.
async fn tick(call: std::rc::Weak<Call>) {
    loop {
        clock::sleep_ms(1000).await;
        let Some(call) = call.upgrade() else { return };
        if call.state.phase.get_untracked() == Phase::Ended {
            return;
        }
        let unconfirmed = call.roster.borrow_mut().expire(clock::now());
        for peer_id in unconfirmed {
            call.remove_peer(&peer_id);
        }
        let now = clock::now_ms();
        call.state.now_ms.set(now);
        let up = call.sent.borrow_mut().kbps(now);
        let down = call.received.borrow_mut().kbps(now);
        call.state.sending.update(|s| {
            s.up_kbps = up;
            s.down_kbps = down;
        });
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
