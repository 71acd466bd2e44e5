//! Call-rate load: many rooms of a few participants, each sending audio (and
//! optionally video) at the rates a real call does and receiving everyone
//! else, through a relay or straight over NATS (the baseline).
//!
//! `rallypoint load` runs it as its own process, so that a benchmark can read
//! the relay's CPU from `/proc` without counting the load generator's, and so
//! that the same load can be aimed at a deployed relay.
//!
//! Timeline of a run: everyone connects and joins; then everyone sends, each
//! participant starting at a random moment of the warm-up (so keyframes and
//! audio ticks are not in lock-step); the measured window follows the warm-up;
//! sending stops at its end, and receivers keep reading for a short drain.
//! Drops are counted over the whole sending time (everything sent while all
//! receivers were in the room must arrive); rates, bytes and latency over
//! the window only.

pub mod nats_path;
pub mod relay_path;
pub mod tally;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rallypoint_client_native::participant::{MediaPlan, MediaSource};
use rallypoint_protocol::v1::Media;
use serde::{Deserialize, Serialize};

use tally::{Clock, Tally};

/// Printed on stderr when the measured window opens and closes, so that a
/// parent process can read the relay's CPU at the same moments.
pub const WINDOW_OPEN_MARK: &str = "[load] window open";
pub const WINDOW_CLOSE_MARK: &str = "[load] window close";

/// Receivers keep reading this long after sending stops, for frames in flight.
const DRAIN: Duration = Duration::from_secs(1);
/// Connections set up at once while everyone joins.
const CONNECTS_IN_FLIGHT: usize = 32;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub rooms: usize,
    pub participants_per_room: usize,
    pub video: bool,
    pub warmup: Duration,
    pub window: Duration,
    /// Unique per run, so rooms never collide with real ones or an earlier run's.
    pub room_prefix: String,
}

impl LoadPlan {
    pub fn connections(&self) -> usize {
        self.rooms * self.participants_per_room
    }

    /// The media each participant sends: the headless participant's call
    /// profile (Opus 20 ms ~120 B; VP8 640x360 30 fps, ~2.4 kB deltas, a
    /// 24 kB keyframe every 2 s), the video part only with `video`.
    pub fn media(&self) -> MediaPlan {
        MediaPlan {
            video_fps: if self.video { 30 } else { 0 },
            ..MediaPlan::default()
        }
    }

    pub fn room_name(&self, room: usize) -> String {
        format!("{}-{room}", self.room_prefix)
    }

    pub fn participant_name(&self, room: usize, participant: usize) -> String {
        format!("{}-{room}-p{participant}", self.room_prefix)
    }
}

/// The one-line JSON `rallypoint load` prints when done.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// `relay-ws`, `relay-wt` or `nats`.
    pub path: String,
    pub rooms: usize,
    pub participants: usize,
    pub video: bool,
    /// Seconds from the first connect until everyone had joined.
    pub connect_s: f64,
    /// Media frames sent, over the whole sending time (not counting
    /// `not_sent`).
    pub sent: u64,
    /// Frames the load's own clients gave up on before they left (on
    /// WebTransport: no stream slot free): neither sent nor expected, so
    /// the drops are the relay's alone.
    #[serde(default)]
    pub not_sent: u64,
    /// What the others should have received: each frame × (room size − 1).
    pub expected: u64,
    pub received: u64,
    /// `(expected − received) / expected`.
    pub drop_fraction: f64,
    /// Length of the measured window.
    pub window_s: f64,
    /// Frames sent per second in the window (offered load).
    pub offered_per_s: f64,
    /// Frames received per second in the window, all receivers together:
    /// what the relay (or NATS) forwarded.
    pub forwarded_per_s: f64,
    /// Media payload bytes received per second in the window.
    pub forwarded_payload_bytes_per_s: f64,
    /// The same frames as RTP packets of at most 1 200 bytes per second
    /// (`tally::rtp_packets`): forwarded packets in the unit SFUs such as
    /// LiveKit publish, where a video frame is several packets.
    #[serde(default)]
    pub forwarded_rtp_packets_per_s: f64,
    /// Send-to-arrival latency of frames arriving in the window.
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
}

/// When things happen in a run.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub send_start: Instant,
    pub window_open: Instant,
    pub window_close: Instant,
    /// Receivers stop reading.
    pub receive_end: Instant,
}

impl Schedule {
    fn starting_now(plan: &LoadPlan) -> Self {
        let send_start = Instant::now() + Duration::from_millis(50);
        let window_open = send_start + plan.warmup;
        let window_close = window_open + plan.window;
        Schedule {
            send_start,
            window_open,
            window_close,
            receive_end: window_close + DRAIN,
        }
    }

    pub fn in_window(&self, at: Instant) -> bool {
        at >= self.window_open && at < self.window_close
    }
}

/// One participant's sending side, whatever it sends over.
pub trait MediaOut: Send + 'static {
    /// Hands one frame to the connection; false once it is closed.
    fn send_frame(&mut self, media: Media) -> impl Future<Output = bool> + Send;
}

/// Sets up every participant (`connect(room, participant)`), a bounded
/// number at a time; the first failure ends the run.
pub async fn connect_all<T, F, Fut>(plan: &LoadPlan, connect: F) -> anyhow::Result<Vec<(usize, T)>>
where
    F: Fn(usize, usize) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    use futures_util::StreamExt as _;
    let who: Vec<(usize, usize)> = (0..plan.rooms)
        .flat_map(|room| (0..plan.participants_per_room).map(move |p| (room, p)))
        .collect();
    let connect = &connect;
    let mut set_up = futures_util::stream::iter(who)
        .map(|(room, p)| async move { anyhow::Ok((room, connect(room, p).await?)) })
        .buffer_unordered(CONNECTS_IN_FLIGHT);
    let mut participants = Vec::with_capacity(plan.connections());
    while let Some(participant) = set_up.next().await {
        participants.push(participant?);
    }
    Ok(participants)
}

/// What one participant sent.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sent {
    pub total: u64,
    pub in_window: u64,
}

/// Sends `plan`'s media from a random moment of the warm-up until the window
/// closes. `keyframe_wanted` is set by the receiving side when the relay asks
/// this participant for a keyframe. Returns the counts and the sender (kept
/// open until the receivers are done, so the connection stays up).
pub async fn send_media<O: MediaOut>(
    mut out: O,
    plan: MediaPlan,
    schedule: Schedule,
    keyframe_wanted: Arc<AtomicBool>,
    warmup: Duration,
) -> (Sent, O) {
    let stagger = warmup.min(plan.keyframe_interval);
    let offset = stagger.mul_f64(rand::random::<f64>());
    let mut source = MediaSource::new(plan, schedule.send_start + offset);
    let mut sent = Sent::default();
    loop {
        let due = source.next_due();
        if due >= schedule.window_close {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        if keyframe_wanted.swap(false, Ordering::Relaxed) {
            source.request_keyframe();
        }
        let now = Instant::now();
        while let Some(media) = source.poll(now) {
            if !out.send_frame(media).await {
                return (sent, out);
            }
            sent.total += 1;
            if schedule.in_window(now) {
                sent.in_window += 1;
            }
        }
    }
    (sent, out)
}

/// One participant, connected and ready to run.
pub struct Participant<O, R> {
    pub room: usize,
    pub out: O,
    /// Its receiving side: reads until the schedule's end.
    pub receive: R,
    /// Raised by the receiving side when the relay asks it for a keyframe.
    pub keyframe_wanted: Arc<AtomicBool>,
}

/// Runs everyone on `schedule` (which their receiving sides share) and
/// marks the window. Returns what they sent and got, and the sending sides,
/// still open.
pub async fn drive<O, R>(
    plan: &LoadPlan,
    schedule: Schedule,
    participants: Vec<Participant<O, R>>,
) -> anyhow::Result<(Outcome, Vec<O>)>
where
    O: MediaOut,
    R: Future<Output = Tally> + Send + 'static,
{
    use anyhow::Context as _;
    let marks = announce_window(schedule);
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for p in participants {
        receivers.push(tokio::spawn(p.receive));
        let sending = send_media(
            p.out,
            plan.media(),
            schedule,
            p.keyframe_wanted,
            plan.warmup,
        );
        senders.push((p.room, tokio::spawn(sending)));
    }
    let mut sent = Vec::new();
    let mut open = Vec::new();
    for (room, task) in senders {
        let (count, out) = task.await.context("a sending task failed")?;
        sent.push((room, count));
        open.push(out);
    }
    let mut tallies = Vec::new();
    for task in receivers {
        tallies.push(task.await.context("a receiving task failed")?);
    }
    marks.await.ok();
    Ok((
        Outcome {
            sent,
            tallies,
            not_sent: 0,
        },
        open,
    ))
}

/// What a run's participants report, merged into the summary.
pub struct Outcome {
    pub sent: Vec<(usize, Sent)>,
    pub tallies: Vec<Tally>,
    /// Frames the senders' connections gave up on (see [`Summary::not_sent`]).
    pub not_sent: u64,
}

/// Turns per-room sends and per-receiver tallies into the summary.
pub fn summarize(
    path: &str,
    plan: &LoadPlan,
    connect: Duration,
    outcome: Outcome,
) -> anyhow::Result<Summary> {
    let receivers_per_frame = plan.participants_per_room.saturating_sub(1) as u64;
    let handed: u64 = outcome.sent.iter().map(|(_, s)| s.total).sum();
    let sent = handed.saturating_sub(outcome.not_sent);
    let sent_in_window: u64 = outcome.sent.iter().map(|(_, s)| s.in_window).sum();
    let expected = sent * receivers_per_frame;
    let total = Tally::merge(outcome.tallies)?;
    let window_s = plan.window.as_secs_f64();
    let (p50, p99, max) = crate::bench::summary_ms(&total.latency);
    Ok(Summary {
        path: path.to_owned(),
        rooms: plan.rooms,
        participants: plan.connections(),
        video: plan.video,
        connect_s: connect.as_secs_f64(),
        sent,
        not_sent: outcome.not_sent,
        expected,
        received: total.received,
        drop_fraction: drop_fraction(expected, total.received),
        window_s,
        offered_per_s: sent_in_window as f64 / window_s,
        forwarded_per_s: total.window_frames as f64 / window_s,
        forwarded_payload_bytes_per_s: total.window_payload_bytes as f64 / window_s,
        forwarded_rtp_packets_per_s: total.window_rtp_packets as f64 / window_s,
        latency_p50_ms: p50,
        latency_p99_ms: p99,
        latency_max_ms: max,
    })
}

/// The fraction of expected frames that never arrived (0 when none were expected).
pub fn drop_fraction(expected: u64, received: u64) -> f64 {
    if expected == 0 {
        0.0
    } else {
        expected.saturating_sub(received) as f64 / expected as f64
    }
}

/// Prints the window marks on stderr at the right moments.
fn announce_window(schedule: Schedule) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep_until(schedule.window_open.into()).await;
        eprintln!("{WINDOW_OPEN_MARK}");
        tokio::time::sleep_until(schedule.window_close.into()).await;
        eprintln!("{WINDOW_CLOSE_MARK}");
    })
}

/// Everyone is in (`how`: "joined", "subscribed" …): says so with how long
/// it took since `started`, and returns that time.
pub fn everyone_in(plan: &LoadPlan, how: &str, started: Instant) -> Duration {
    let took = started.elapsed();
    eprintln!(
        "[load] {} participants in {} rooms {how} in {:.1}s",
        plan.connections(),
        plan.rooms,
        took.as_secs_f64()
    );
    took
}

/// Start of a run: the schedule and the clock receivers share.
pub fn begin(plan: &LoadPlan) -> (Schedule, Clock) {
    (Schedule::starting_now(plan), Clock::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_the_missing_fraction_of_expected() {
        assert_eq!(drop_fraction(0, 0), 0.0);
        assert_eq!(drop_fraction(1000, 1000), 0.0);
        assert_eq!(drop_fraction(1000, 999), 0.001);
        // More than expected (duplicates) is not a negative drop.
        assert_eq!(drop_fraction(10, 12), 0.0);
    }
}
