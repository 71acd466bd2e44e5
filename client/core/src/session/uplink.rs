//! How long the client's own media waits on its way to the serving relay,
//! and holding media back while that is too long.
//!
//! A sender whose uplink is slower than what it sends queues the rest
//! somewhere the client cannot see: a browser's WebSocket (its
//! `bufferedAmount` counts only what the page has not yet handed to the
//! browser's network process, not the kernel's send buffer, which on its own
//! holds seconds), or a browser's WebTransport datagram queue. Nothing there
//! drops, so the room hears the sender ever later: in the browser test
//! (`client/web/tests/call.test.mjs`, a WebSocket through 100 kbit/s) the
//! audio arrived 2.9–3.3 s after capture (p50), the video 6.7–6.9 s (p95),
//! 20 s into the call — also with the page sending media only while
//! `bufferedAmount` drained within 150 ms.
//!
//! The serving relay's probe answers say when each probe was read
//! (`relay_recv_us`, the relay's clock) and echo when it was sent (the
//! client's): their difference is the one-way delay up plus an unknown,
//! constant offset between the clocks, so its excess over its least recent
//! value is how long the probe waited in a queue on the way up — behind the
//! media sent before it, over TCP or in any FIFO queue. A clock stepped by
//! NTP would look the same, so the round trip must show the wait too (a
//! queue on the way up delays the whole round trip): the wait taken is the
//! smaller of the two excesses. The least values are kept over
//! [`BASE_WINDOW`], so a slow change of the path's delay is followed.
//!
//! An answer comes back its own wait late, and a queue that fills meanwhile
//! is not seen in it: holding media back on the latest answer alone let the
//! queue overshoot to four times the bound (600 ms at 150 ms, a talker
//! sending 2.5 times its line). So the queue is predicted: from two answers
//! that both waited, the line's rate is what left the queue between their
//! departures (the client counts what it sent: everything sent between two
//! probes leaves between them) over the time between them; the wait now is
//! the latest answer's, plus what was sent since its probe at that rate,
//! less the time since. A media frame goes only if that wait and its own
//! time on the line stay within [`MAX_UPLINK_WAIT`] ([`MAX_PICTURE_WAIT`]
//! for a picture's frame; the session then holds the track's deltas until a
//! keyframe goes, and its receivers ask for one); probes and control frames
//! always go, and the queue drains. In the browser test the slow sender's
//! audio was then all heard, p50 73 ms (2.9–3.3 s before); holding on the
//! latest answer alone (no prediction, no own time) gave 0.46–0.53 s, and
//! with the prediction but keyframes let through, a third of the audio,
//! the keyframes taking the line.

use std::collections::VecDeque;
use std::time::Duration;

use crate::time::Micros;

/// The longest the client's media may wait on its way up: beyond it a
/// frame is later than a listener's jitter buffer waits for it (the bound
/// a WebTransport sender keeps in its own queue,
/// `rallypoint_protocol::queue_age::MAX_DATAGRAM_WAIT`).
pub const MAX_UPLINK_WAIT: Duration = Duration::from_millis(150);
/// … and a picture's frame, which is shown only once all of it arrived
/// (`rallypoint_protocol::queue_age::MAX_STREAM_WAIT`). A frame that cannot
/// cross the line within it (a keyframe on a line far slower than its
/// camera) is not sent at all, and its track waits for the next keyframe
/// that can: on such a line the call goes on with audio.
pub const MAX_PICTURE_WAIT: Duration = Duration::from_millis(300);
/// The least one-way delay and round trip are taken over this long.
pub const BASE_WINDOW: Duration = Duration::from_secs(60);
/// The window is kept as this many buckets of its least values.
const BUCKETS: u32 = 6;
/// What is sent is remembered this long (to find what was sent since a
/// probe whose answer comes back), at most [`SENT_RECORDS`] entries.
const SENT_MEMORY: Duration = Duration::from_secs(4);
const SENT_RECORDS: usize = 1_024;
/// An answer counts as having waited (a queue that held it, whose drain
/// times the line) beyond this.
const WAITED: Duration = Duration::from_millis(10);
/// Weight of a new rate sample.
const RATE_GAIN: f64 = 0.25;
/// The rate is timed over departures at least this far apart.
const RATE_SPAN: Duration = Duration::from_millis(200);

/// The serving connection's uplink, as its probe answers show it.
#[derive(Debug, Default, Clone)]
pub struct UplinkQueue {
    /// Per bucket of `BASE_WINDOW / BUCKETS`: when it started, the least
    /// one-way delay (with the clocks' offset) and round trip seen in it.
    buckets: VecDeque<Bucket>,
    /// The wait the latest answer showed.
    latest: Duration,
    /// Bytes sent on the connection so far, and when each amount was
    /// reached (oldest first).
    sent_total: u64,
    sent: VecDeque<(Micros, u64)>,
    /// The total of the newest record no longer kept.
    forgotten: u64,
    /// The latest answer: its probe's send time, the bytes sent before it,
    /// and its wait.
    last_answer: Option<Answer>,
    /// The line's rate, bytes a second, while its queue held something.
    rate: Option<f64>,
    /// The answer the rate is being timed from: one that waited, with every
    /// answer since having waited too.
    anchor: Option<Answer>,
}

#[derive(Debug, Clone, Copy)]
struct Answer {
    sent_at: Micros,
    sent_before: u64,
    wait: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    from: Micros,
    one_way: i128,
    round_trip: Duration,
}

impl UplinkQueue {
    /// A probe sent at `client_send_us` (the client's clock) was read by
    /// the relay at `relay_recv_us` (the relay's) and its answer made a
    /// round trip of `round_trip`; `now` is when the answer came.
    pub fn answered(
        &mut self,
        now: Micros,
        client_send_us: u64,
        relay_recv_us: u64,
        round_trip: Duration,
    ) {
        let one_way = i128::from(relay_recv_us) - i128::from(client_send_us);
        let span = BASE_WINDOW / BUCKETS;
        match self.buckets.back_mut() {
            Some(bucket) if now.since(bucket.from) < span => {
                bucket.one_way = bucket.one_way.min(one_way);
                bucket.round_trip = bucket.round_trip.min(round_trip);
            }
            _ => self.buckets.push_back(Bucket {
                from: now,
                one_way,
                round_trip,
            }),
        }
        while self
            .buckets
            .front()
            .is_some_and(|bucket| now.since(bucket.from) >= BASE_WINDOW)
        {
            self.buckets.pop_front();
        }
        let least_one_way = self
            .buckets
            .iter()
            .map(|b| b.one_way)
            .min()
            .unwrap_or(one_way);
        let least_round_trip = self
            .buckets
            .iter()
            .map(|b| b.round_trip)
            .min()
            .unwrap_or(round_trip);
        let one_way_excess =
            Duration::from_micros(u64::try_from(one_way - least_one_way).unwrap_or(u64::MAX));
        let round_trip_excess = round_trip.saturating_sub(least_round_trip);
        self.latest = one_way_excess.min(round_trip_excess);
        self.time_the_line(Micros(client_send_us));
    }

    /// `bytes` went onto the connection at `now` (a frame of any kind).
    pub fn sent(&mut self, now: Micros, bytes: usize) {
        self.sent_total += bytes as u64;
        self.sent.push_back((now, self.sent_total));
        while self.sent.len() > SENT_RECORDS
            || self
                .sent
                .front()
                .is_some_and(|&(at, _)| now.since(at) > SENT_MEMORY)
        {
            if let Some((_, total)) = self.sent.pop_front() {
                self.forgotten = total;
            }
        }
    }

    /// How long the latest answered probe waited on its way up.
    pub fn wait(&self) -> Duration {
        self.latest
    }

    /// The line's rate while its queue held something, once timed.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// How long what is sent now would wait on its way up.
    pub fn predicted_wait(&self, now: Micros) -> Duration {
        let (Some(answer), Some(rate)) = (self.last_answer, self.rate) else {
            return self.latest;
        };
        let since = self.sent_total.saturating_sub(answer.sent_before);
        let queued = answer.wait.as_secs_f64() + since as f64 / rate;
        Duration::from_secs_f64((queued - now.since(answer.sent_at).as_secs_f64()).max(0.0))
    }

    /// Whether a media frame of `len` bytes may be sent now: the wait it
    /// would find plus its own time on the line (once the line's rate is
    /// known) within [`MAX_UPLINK_WAIT`], or [`MAX_PICTURE_WAIT`] for a
    /// picture's frame.
    pub fn frame_may_go(&self, now: Micros, len: usize, picture: bool) -> bool {
        let own = self.rate.map_or(Duration::ZERO, |rate| {
            Duration::from_secs_f64(len as f64 / rate)
        });
        let bound = if picture {
            MAX_PICTURE_WAIT
        } else {
            MAX_UPLINK_WAIT
        };
        self.predicted_wait(now) + own <= bound
    }

    /// The latest answer's probe left at `sent_at`: with the anchor, a
    /// sample of the line's rate if they and every answer between waited
    /// and left the queue at least [`RATE_SPAN`] apart.
    fn time_the_line(&mut self, sent_at: Micros) {
        let sent_before = self.sent_before(sent_at);
        let answer = Answer {
            sent_at,
            sent_before,
            wait: self.latest,
        };
        if self
            .last_answer
            .is_some_and(|previous| previous.sent_at >= sent_at)
        {
            return; // answered out of order: nothing newer
        }
        self.last_answer = Some(answer);
        if answer.wait <= WAITED {
            self.anchor = None; // the queue ran dry: nothing to time
            return;
        }
        let Some(anchor) = self.anchor else {
            self.anchor = Some(answer);
            return;
        };
        // Their departures from the queue, far enough apart that a few
        // milliseconds of error in either wait make little of the rate.
        let between = (sent_at + answer.wait).since(anchor.sent_at + anchor.wait);
        if between < RATE_SPAN {
            return;
        }
        let left = answer.sent_before.saturating_sub(anchor.sent_before);
        if left == 0 {
            // Waits without anything sent to wait behind: a slower path,
            // not a queue (its base catches up within the window).
            self.anchor = Some(answer);
            return;
        }
        let sample = left as f64 / between.as_secs_f64();
        self.rate = Some(match self.rate {
            None => sample,
            Some(rate) => rate + (sample - rate) * RATE_GAIN,
        });
        self.anchor = Some(answer);
    }

    /// Bytes sent before `at`.
    fn sent_before(&self, at: Micros) -> u64 {
        self.sent
            .iter()
            .rev()
            .find(|&&(when, _)| when < at)
            .map_or(self.forgotten, |&(_, total)| total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFSET: u64 = 1_700_000_000_000_000; // the relay's unix clock

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// A probe sent at `sent_ms` that waited `up_queue_ms` on the way up of
    /// a 20 + 20 ms path, and `down_queue_ms` on the way down.
    fn answer(queue: &mut UplinkQueue, sent_ms: u64, up_queue_ms: u64, down_queue_ms: u64) {
        let read = sent_ms + 20 + up_queue_ms;
        let back = read + 20 + down_queue_ms;
        queue.answered(
            Micros::from_millis(back),
            sent_ms * 1000,
            OFFSET + read * 1000,
            ms(back - sent_ms),
        );
    }

    #[test]
    fn a_queue_on_the_way_up_holds_media_back_until_it_drains() {
        let mut queue = UplinkQueue::default();
        for t in 0..20 {
            answer(&mut queue, t * 50, 0, 0);
        }
        assert!(queue.frame_may_go(Micros::ZERO, 0, false));
        answer(&mut queue, 1_000, 400, 0);
        assert_eq!(queue.wait(), ms(400));
        assert!(!queue.frame_may_go(Micros::ZERO, 0, false));
        answer(&mut queue, 1_050, 120, 0);
        assert!(queue.frame_may_go(Micros::ZERO, 0, false));
    }

    #[test]
    fn the_line_is_timed_from_what_left_between_two_answers_and_a_frame_must_cross_it_in_time() {
        let mut queue = UplinkQueue::default();
        answer(&mut queue, 1_000, 0, 0); // the path's base, nothing queued
        // 2 kB queued, then a probe behind it; 3 kB more, then another: on
        // a 10 kB/s line they wait 200 and 500 ms and leave 300 ms apart.
        queue.sent(Micros::from_millis(1_100), 2_000);
        answer(&mut queue, 1_101, 200, 0);
        queue.sent(Micros::from_millis(1_102), 3_000);
        answer(&mut queue, 1_103, 500, 0);
        let rate = queue.rate().expect("timed");
        assert!((9_900.0..=10_100.0).contains(&rate), "rate {rate}");
        // The 5 kB leave by 1.6 s: at 1.5 s about 100 ms are left.
        let now = Micros::from_millis(1_500);
        let wait = queue.predicted_wait(now);
        assert!(
            (Duration::from_millis(95)..=Duration::from_millis(110)).contains(&wait),
            "{wait:?}"
        );
        // Audio (its own 10 ms) fits 150 ms; a 2.4 kB delta (240 ms) not
        // behind 100 ms, but within a picture's 300 ms once the queue is
        // gone; a 20 kB keyframe (2 s) never on this line.
        assert!(queue.frame_may_go(now, 100, false));
        assert!(!queue.frame_may_go(now, 2_400, true));
        let later = Micros::from_millis(1_700);
        assert!(queue.frame_may_go(later, 2_400, true));
        assert!(!queue.frame_may_go(later, 20_000, true));
    }

    #[test]
    fn a_queue_on_the_way_down_is_not_the_senders() {
        let mut queue = UplinkQueue::default();
        answer(&mut queue, 0, 0, 0);
        answer(&mut queue, 50, 0, 500);
        assert_eq!(queue.wait(), Duration::ZERO);
        assert!(queue.frame_may_go(Micros::ZERO, 0, false));
    }

    #[test]
    fn a_relay_clock_stepped_forward_is_not_a_queue() {
        let mut queue = UplinkQueue::default();
        answer(&mut queue, 0, 0, 0);
        // The relay's clock jumps 2 s: the one-way delay seems to, the
        // round trip does not.
        let sent = 50;
        queue.answered(
            Micros::from_millis(sent + 40),
            sent * 1000,
            OFFSET + (sent + 20 + 2_000) * 1000,
            ms(40),
        );
        assert_eq!(queue.wait(), Duration::ZERO);
    }

    #[test]
    fn the_base_follows_a_path_that_became_slower_within_its_window() {
        let mut queue = UplinkQueue::default();
        answer(&mut queue, 0, 0, 0);
        // From 1 s on the path itself takes 300 ms more each way (a new
        // route), which is no queue once the old base has left the window.
        for t in (1_000..70_000).step_by(500) {
            answer(&mut queue, t, 300, 300);
        }
        assert_eq!(queue.wait(), Duration::ZERO);
        assert!(queue.frame_may_go(Micros::ZERO, 0, false));
    }
}
