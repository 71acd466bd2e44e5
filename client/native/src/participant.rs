//! A headless participant: synthetic audio- and video-sized media out, counts
//! and latencies in. `rallypoint join` runs one; failover tests and benchmarks
//! use its statistics (the largest gap between two frames of a sender is what a
//! caller would notice as a freeze).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hdrhistogram::Histogram;
use rallypoint_protocol::v1::{Media, TrackKind, server_frame};
use serde::Serialize;

use crate::connection::Received;

/// What a synthetic participant sends.
#[derive(Debug, Clone)]
pub struct MediaPlan {
    /// One audio frame this often (Opus: 20 ms).
    pub audio_interval: Duration,
    pub audio_bytes: usize,
    /// Video frames per second (0: no video).
    pub video_fps: u32,
    pub video_delta_bytes: usize,
    pub video_keyframe_bytes: usize,
    /// A keyframe at least this often (and whenever someone asks).
    pub keyframe_interval: Duration,
}

impl Default for MediaPlan {
    /// Roughly a 640x360 VP8 call: 30 fps, ~600 kbit/s, keyframe every 2 s,
    /// Opus at ~48 kbit/s.
    fn default() -> Self {
        MediaPlan {
            audio_interval: Duration::from_millis(20),
            audio_bytes: 120,
            video_fps: 30,
            video_delta_bytes: 2_400,
            video_keyframe_bytes: 24_000,
            keyframe_interval: Duration::from_secs(2),
        }
    }
}

/// Produces the frames of a [`MediaPlan`] in time order.
pub struct MediaSource {
    plan: MediaPlan,
    audio_seq: u64,
    video_seq: u64,
    next_audio: Instant,
    next_video: Instant,
    last_keyframe: Option<Instant>,
    keyframe_requested: bool,
}

impl MediaSource {
    pub fn new(plan: MediaPlan, start: Instant) -> Self {
        MediaSource {
            plan,
            audio_seq: 0,
            video_seq: 0,
            next_audio: start,
            next_video: start,
            last_keyframe: None,
            keyframe_requested: true,
        }
    }

    /// The next frame is a keyframe (someone lost our video, or we moved relay).
    pub fn request_keyframe(&mut self) {
        self.keyframe_requested = true;
    }

    /// When the next frame is due.
    pub fn next_due(&self) -> Instant {
        if self.plan.video_fps == 0 {
            self.next_audio
        } else {
            self.next_audio.min(self.next_video)
        }
    }

    /// The frame due at `now`, if any.
    pub fn poll(&mut self, now: Instant) -> Option<Media> {
        let capture_us = unix_micros();
        if now >= self.next_audio {
            self.next_audio += self.plan.audio_interval;
            self.audio_seq += 1;
            return Some(Media {
                sender: String::new(),
                kind: TrackKind::Audio as i32,
                seq: self.audio_seq - 1,
                capture_us,
                keyframe: true,
                payload: Bytes::from(vec![0xa0; self.plan.audio_bytes]),
            });
        }
        if self.plan.video_fps > 0 && now >= self.next_video {
            self.next_video += Duration::from_secs(1) / self.plan.video_fps;
            let keyframe = self.keyframe_requested
                || self
                    .last_keyframe
                    .is_none_or(|t| now.duration_since(t) >= self.plan.keyframe_interval);
            if keyframe {
                self.keyframe_requested = false;
                self.last_keyframe = Some(now);
            }
            let size = if keyframe {
                self.plan.video_keyframe_bytes
            } else {
                self.plan.video_delta_bytes
            };
            self.video_seq += 1;
            return Some(Media {
                sender: String::new(),
                kind: TrackKind::Video as i32,
                seq: self.video_seq - 1,
                capture_us,
                keyframe,
                payload: Bytes::from(vec![0x0b; size]),
            });
        }
        None
    }
}

/// What one participant received from one sender.
#[derive(Debug, Clone, Serialize)]
pub struct SenderStats {
    pub audio_frames: u64,
    pub video_frames: u64,
    pub bytes: u64,
    /// Frames whose sequence number went backwards (reordered or duplicated).
    pub out_of_order: u64,
    /// Largest time between two consecutive frames of this sender (ms).
    pub max_gap_ms: f64,
    /// When the largest gap started and ended (ms since the stats began).
    pub max_gap_at_ms: (f64, f64),
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    #[serde(skip)]
    latency: Option<Histogram<u64>>,
    #[serde(skip)]
    last_arrival: Option<Instant>,
    #[serde(skip)]
    last_seq: HashMap<i32, u64>,
}

/// Everything a participant received, by sender.
#[derive(Debug, Clone, Serialize)]
pub struct ReceiveStats {
    pub senders: HashMap<String, SenderStats>,
    #[serde(skip)]
    started: Instant,
}

impl ReceiveStats {
    pub fn new(started: Instant) -> Self {
        ReceiveStats {
            senders: HashMap::new(),
            started,
        }
    }

    /// Counts a received frame if it is media.
    pub fn record(&mut self, received: &Received) {
        let Some(server_frame::Kind::Media(media)) = &received.frame.kind else {
            return;
        };
        let started = self.started;
        let stats = self
            .senders
            .entry(media.sender.clone())
            .or_insert_with(|| SenderStats {
                audio_frames: 0,
                video_frames: 0,
                bytes: 0,
                out_of_order: 0,
                max_gap_ms: 0.0,
                max_gap_at_ms: (0.0, 0.0),
                latency_p50_ms: 0.0,
                latency_p99_ms: 0.0,
                latency: Histogram::new_with_bounds(1, 60_000_000, 3).ok(),
                last_arrival: None,
                last_seq: HashMap::new(),
            });
        if media.kind == TrackKind::Video as i32 {
            stats.video_frames += 1;
        } else {
            stats.audio_frames += 1;
        }
        stats.bytes += media.payload.len() as u64;
        if let Some(last) = stats.last_seq.insert(media.kind, media.seq)
            && media.seq <= last
        {
            stats.out_of_order += 1;
        }
        if let Some(last) = stats.last_arrival {
            let gap = received.at.saturating_duration_since(last).as_secs_f64() * 1000.0;
            if gap > stats.max_gap_ms {
                stats.max_gap_ms = gap;
                let ms = |t: Instant| t.saturating_duration_since(started).as_secs_f64() * 1000.0;
                stats.max_gap_at_ms = (ms(last), ms(received.at));
            }
        }
        stats.last_arrival = Some(received.at);
        // Sender and receiver share a wall clock in the lab (one machine);
        // across machines this is only as good as their clock sync.
        let latency = unix_micros().saturating_sub(media.capture_us).max(1);
        if let Some(h) = &mut stats.latency {
            let _ = h.record(latency.min(60_000_000));
            stats.latency_p50_ms = h.value_at_quantile(0.5) as f64 / 1000.0;
            stats.latency_p99_ms = h.value_at_quantile(0.99) as f64 / 1000.0;
        }
    }

    pub fn total_frames(&self) -> u64 {
        self.senders
            .values()
            .map(|s| s.audio_frames + s.video_frames)
            .sum()
    }
}

/// Wall clock in microseconds (capture timestamps).
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_yields_audio_every_20_ms_and_keyframes_on_request() {
        let start = Instant::now();
        let mut source = MediaSource::new(MediaPlan::default(), start);
        let mut frames = Vec::new();
        let mut now = start;
        while now < start + Duration::from_millis(1000) {
            while let Some(frame) = source.poll(now) {
                frames.push(frame);
            }
            now += Duration::from_millis(1);
        }
        let audio = frames
            .iter()
            .filter(|f| f.kind == TrackKind::Audio as i32)
            .count();
        let video: Vec<_> = frames
            .iter()
            .filter(|f| f.kind == TrackKind::Video as i32)
            .collect();
        assert_eq!(audio, 50);
        assert_eq!(video.len(), 30);
        assert!(video[0].keyframe, "the first video frame is a keyframe");
        assert_eq!(video.iter().filter(|f| f.keyframe).count(), 1);
        source.request_keyframe();
        let next = loop {
            if let Some(f) = source.poll(now)
                && f.kind == TrackKind::Video as i32
            {
                break f;
            }
            now += Duration::from_millis(1);
        };
        assert!(next.keyframe);
    }
}
