//! What the call view shows: the call's phase, the election table, the
//! serving relay, the remote participants and the sending statistics, as
//! signals the view and the call share.

use std::time::Duration;

use leptos::prelude::*;
use rallypoint_client::election::{CandidateView, Role};
use rallypoint_protocol::v1::MediaState;

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
    /// The newest freezes of its video, oldest first.
    pub freezes: Vec<crate::stats::Freeze>,
    pub kbps: f64,
    /// `performance.now()` of the last decoded video frame.
    pub last_video_at: Option<f64>,
    /// Until when the participant counts as speaking (`performance.now()`).
    pub speaking_until: Option<f64>,
    /// Frames of its shared screen decoded.
    pub screen_decoded: u64,
    /// When it last moved to another relay (`performance.now()`), and how
    /// often it did.
    pub moved_at: Option<f64>,
    pub moves: u32,
    /// When anything of it (audio or video) was last decoded.
    pub last_media_at: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RemotePeer {
    pub peer_id: String,
    pub name: String,
    pub region: String,
    pub relay_id: String,
    pub stats: RwSignal<PeerStats>,
    /// Microphone and camera as the participant announced them.
    pub media_state: RwSignal<MediaState>,
}

impl RemotePeer {
    /// The id of the canvas the participant's video is drawn into.
    pub fn canvas_id(&self) -> String {
        canvas_id(&self.peer_id)
    }
}

/// The id of the canvas a participant's shared screen is drawn into.
pub fn screen_canvas_id(peer_id: &str) -> String {
    format!("screen-{}", canvas_id(peer_id))
}

pub(super) fn canvas_id(peer_id: &str) -> String {
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
    pub screen_frames: u64,
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
    /// This page shares its screen.
    pub sharing: RwSignal<bool>,
    /// Why sharing the screen or switching cameras failed, for the person.
    pub media_error: RwSignal<Option<String>>,
    /// The camera being sent (its name as the browser gives it).
    pub camera_label: RwSignal<String>,
    /// `performance.now()`, advanced every second: what depends on time
    /// passing without news (a participant gone silent) reads it.
    pub now_ms: RwSignal<f64>,
}

impl CallState {
    pub(super) fn new(room: String, has_devices: bool) -> Self {
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
            sharing: RwSignal::new(false),
            media_error: RwSignal::new(None),
            camera_label: RwSignal::new(String::new()),
            now_ms: RwSignal::new(0.0),
        }
    }
}

/// One row of the election table for a candidate as the election sees it.
pub(super) fn row(view: &CandidateView) -> CandidateRow {
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
