//! What one receiver got: frames over the whole run, and frames, payload
//! bytes, RTP-sized packets and latency in the measured window.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use rallypoint_protocol::v1::Media;

use super::Schedule;

/// Turns arrival instants into wall-clock microseconds, the clock senders
/// stamp `capture_us` with (one process: the two cannot drift apart).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
    origin_unix_us: u64,
}

impl Clock {
    pub fn now() -> Self {
        let origin_unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Clock {
            origin: Instant::now(),
            origin_unix_us,
        }
    }

    fn unix_us(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.origin).as_micros() as u64;
        self.origin_unix_us + since
    }
}

/// Payload bytes an RTP packet carries at most: libwebrtc sends packets of
/// at most 1 200 bytes, so a 2.4 kB video frame is two RTP packets and a
/// 24 kB keyframe twenty. Taking the whole 1 200 as payload (no RTP header)
/// counts no more packets than an SFU would forward for the same media.
pub const RTP_PACKET_PAYLOAD: usize = 1200;

/// How many RTP packets an SFU would forward for a frame of `payload_len`
/// bytes: the unit of LiveKit's published packets per second, which a
/// frame count does not match once frames are larger than a packet.
pub fn rtp_packets(payload_len: usize) -> u64 {
    payload_len.div_ceil(RTP_PACKET_PAYLOAD).max(1) as u64
}

/// One receiver's counts.
pub struct Tally {
    pub received: u64,
    pub window_frames: u64,
    pub window_payload_bytes: u64,
    /// The window's frames as RTP packets ([`rtp_packets`]).
    pub window_rtp_packets: u64,
    /// Microseconds, frames that arrived in the window.
    pub latency: Histogram<u64>,
}

impl Tally {
    pub fn new() -> Self {
        Tally {
            received: 0,
            window_frames: 0,
            window_payload_bytes: 0,
            window_rtp_packets: 0,
            // Two significant digits: ~27 KB per receiver, thousands of them.
            latency: Histogram::new_with_bounds(1, 60_000_000, 2).expect("valid histogram bounds"),
        }
    }

    /// Counts a media frame that arrived at `at`.
    pub fn record(&mut self, media: &Media, at: Instant, schedule: &Schedule, clock: &Clock) {
        self.received += 1;
        if schedule.in_window(at) {
            self.window_frames += 1;
            self.window_payload_bytes += media.payload.len() as u64;
            self.window_rtp_packets += rtp_packets(media.payload.len());
            let latency = clock.unix_us(at).saturating_sub(media.capture_us);
            let _ = self.latency.record(latency.clamp(1, 60_000_000));
        }
    }

    /// All receivers together.
    pub fn merge(tallies: Vec<Tally>) -> anyhow::Result<Tally> {
        let mut total = Tally::new();
        for t in tallies {
            total.received += t.received;
            total.window_frames += t.window_frames;
            total.window_payload_bytes += t.window_payload_bytes;
            total.window_rtp_packets += t.window_rtp_packets;
            total.latency.add(&t.latency)?;
        }
        Ok(total)
    }
}

impl Default for Tally {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;

    #[test]
    fn only_window_arrivals_count_towards_rates_and_latency() {
        let clock = Clock::now();
        let start = Instant::now();
        let schedule = Schedule {
            send_start: start,
            window_open: start + Duration::from_secs(1),
            window_close: start + Duration::from_secs(2),
            receive_end: start + Duration::from_secs(3),
        };
        let at = start + Duration::from_millis(1500);
        let media = Media {
            capture_us: clock.unix_us(at) - 2_000,
            payload: Bytes::from_static(&[0; 100]),
            ..Default::default()
        };
        let mut tally = Tally::new();
        tally.record(
            &media,
            start + Duration::from_millis(500),
            &schedule,
            &clock,
        );
        tally.record(&media, at, &schedule, &clock);
        let total = Tally::merge(vec![tally, Tally::new()]).unwrap();
        assert_eq!(total.received, 2);
        assert_eq!(total.window_frames, 1);
        assert_eq!(total.window_payload_bytes, 100);
        assert_eq!(total.window_rtp_packets, 1);
        assert_eq!(total.latency.len(), 1);
        let p50 = total.latency.value_at_quantile(0.5);
        assert!((1_980..=2_020).contains(&p50), "{p50}");
    }

    #[test]
    fn frames_count_as_the_rtp_packets_that_would_carry_them() {
        // An audio frame, an empty one, a frame that fills a packet, one
        // byte more, a 2.4 kB delta and a 24 kB keyframe.
        let packets: Vec<u64> = [120, 0, 1200, 1201, 2400, 24_000]
            .into_iter()
            .map(rtp_packets)
            .collect();
        assert_eq!(packets, [1, 1, 1, 2, 2, 20]);
    }
}
