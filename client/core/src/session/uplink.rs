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
//! audio was then heard at p50 73–187 ms, 785–1 014 frames of it (2.9–3.3 s
//! late before, ~300 frames); holding on the latest answer alone (no
//! prediction, no own time) gave 0.46–0.53 s, and with the prediction but
//! keyframes let through, a third of the audio, the keyframes taking the
//! line.

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
/// Answers that waited beyond this, one after another, time the line: a
/// queue held them, and its drain is the line's rate. Jitter must not: a
/// queue that ran dry between two answers makes the line look as slow as
/// what was sent, and a keyframe would then be held back on a fast path.
/// Both the one-way delay's and the round trip's excess must pass it, which
/// 30 ms of round-trip jitter does about once in ten thousand answers
/// (three and a half standard deviations on the way up).
const QUEUED: Duration = Duration::from_millis(75);
/// A rate not timed again for this long is forgotten: on a line that got
/// faster the queue stays empty and would never time it again, and a
/// keyframe held back for the old rate would be held for good. Forgotten,
/// the next keyframe goes, and a line still as slow times itself again.
const RATE_MEMORY: Duration = Duration::from_secs(30);
/// Media bytes that must have left between two answers for them to time
/// the line: a few frames, not a probe or two.
const TIMED_BYTES: u64 = 1_500;
/// The slowest line a timing is believed to show (16 kbit/s): below it a
/// frame of audio would be charged a second of its own, and a call muted
/// for good by one bad timing.
const MIN_RATE: f64 = 2_000.0;
/// Answers kept to bound the rate from below: 16 span 800 ms at a talking
/// client's 20 probes a second, more than [`RATE_SPAN`] at any pace.
const ANSWERS_KEPT: usize = 16;
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
    /// Bytes sent on the connection so far, and when each amount was
    /// reached (oldest first).
    sent_total: u64,
    sent: VecDeque<(Micros, u64)>,
    /// The total of the newest record no longer kept.
    forgotten: u64,
    /// The latest answer (by its probe's send time): that time, the bytes
    /// sent before it, and its wait.
    last_answer: Option<Answer>,
    /// The line's rate, bytes a second, while its queue held something,
    /// and when it was last timed.
    rate: Option<(f64, Micros)>,
    /// The answer the rate is being timed from: one that waited, with every
    /// answer since having waited too.
    anchor: Option<Answer>,
    /// The latest answers, for [`Self::at_least`].
    answers: VecDeque<Answer>,
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
        let (least_one_way, least_round_trip) = self
            .buckets
            .iter()
            .fold((one_way, round_trip), |(one_way, round_trip), b| {
                (one_way.min(b.one_way), round_trip.min(b.round_trip))
            });
        let one_way_excess =
            Duration::from_micros(u64::try_from(one_way - least_one_way).unwrap_or(u64::MAX));
        let round_trip_excess = round_trip.saturating_sub(least_round_trip);
        let wait = one_way_excess.min(round_trip_excess);
        self.time_the_line(now, Micros(client_send_us), wait);
    }

    /// `bytes` of media went onto the connection at `now` (what the line's
    /// rate is timed by, and what a probe sent after it waits behind).
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
        self.last_answer
            .map_or(Duration::ZERO, |answer| answer.wait)
    }

    /// The line's rate while its queue held something, once timed and
    /// while remembered.
    pub fn rate(&self, now: Micros) -> Option<f64> {
        self.rate
            .filter(|&(_, timed_at)| now.since(timed_at) <= RATE_MEMORY)
            .map(|(rate, _)| rate)
    }

    /// How long what is sent now would wait on its way up.
    pub fn predicted_wait(&self, now: Micros) -> Duration {
        let (Some(answer), Some(rate)) = (self.last_answer, self.rate(now)) else {
            return self.wait();
        };
        let since = self.sent_total.saturating_sub(answer.sent_before);
        let queued = answer.wait.as_secs_f64() + since as f64 / rate;
        seconds((queued - now.since(answer.sent_at).as_secs_f64()).max(0.0))
    }

    /// Whether a media frame of `len` bytes may be sent now: the wait it
    /// would find plus its own time on the line (once the line's rate is
    /// known) within [`MAX_UPLINK_WAIT`], or [`MAX_PICTURE_WAIT`] for a
    /// picture's frame.
    pub fn frame_may_go(&self, now: Micros, len: usize, picture: bool) -> bool {
        let own = self
            .rate(now)
            .map_or(Duration::ZERO, |rate| seconds(len as f64 / rate));
        let bound = if picture {
            MAX_PICTURE_WAIT
        } else {
            MAX_UPLINK_WAIT
        };
        self.predicted_wait(now).saturating_add(own) <= bound
    }

    /// An answer whose probe left at `sent_at` showed `wait`: with the
    /// anchor, a sample of the line's rate if they and every answer between
    /// waited and left the queue at least [`RATE_SPAN`] apart.
    fn time_the_line(&mut self, now: Micros, sent_at: Micros, wait: Duration) {
        let sent_before = self.sent_before(sent_at);
        let answer = Answer {
            sent_at,
            sent_before,
            wait,
        };
        if self
            .last_answer
            .is_some_and(|previous| previous.sent_at >= sent_at)
        {
            return; // answered out of order: nothing newer
        }
        self.last_answer = Some(answer);
        self.at_least(now, answer);
        if answer.wait <= QUEUED {
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
        if left < TIMED_BYTES {
            // Waits with little sent to wait behind: a slower path (its
            // base catches up within the window) or jitter, not a queue.
            self.anchor = Some(answer);
            return;
        }
        let sample = (left as f64 / between.as_secs_f64()).max(MIN_RATE);
        let rate = match self.rate(now) {
            None => sample,
            Some(rate) => rate + (sample - rate) * RATE_GAIN,
        };
        self.rate = Some((rate, now));
        self.anchor = Some(answer);
    }

    /// Raises a remembered rate the line evidently beats: everything sent
    /// before `answer`'s probe had left by its departure, so what was sent
    /// since an answer at least [`RATE_SPAN`] earlier left within the time
    /// between their departures, idle time included — a lower bound of the
    /// rate. A line that got faster shows it at once, where the queue it no
    /// longer forms would never time it again (a stale low rate would hold
    /// media back for [`RATE_MEMORY`]).
    fn at_least(&mut self, now: Micros, answer: Answer) {
        let departs = |a: &Answer| a.sent_at + a.wait;
        let earlier = self
            .answers
            .iter()
            .rev()
            .find(|a| departs(&answer).since(departs(a)) >= RATE_SPAN)
            .copied();
        self.answers.push_back(answer);
        if self.answers.len() > ANSWERS_KEPT {
            self.answers.pop_front();
        }
        let (Some(earlier), Some(rate)) = (earlier, self.rate(now)) else {
            return;
        };
        let left = answer.sent_before.saturating_sub(earlier.sent_before);
        if left < TIMED_BYTES {
            return;
        }
        let between = departs(&answer).since(departs(&earlier));
        let lower = left as f64 / between.as_secs_f64();
        if lower > rate {
            self.rate = Some((lower, now));
        }
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

/// A non-negative number of seconds as a duration, however large.
fn seconds(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
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
        let rate = queue.rate(Micros::from_millis(1_700)).expect("timed");
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
    fn jitter_does_not_time_the_line_nor_hold_a_keyframe_back() {
        let mut queue = UplinkQueue::default();
        answer(&mut queue, 1_000, 0, 0);
        // A fast path whose answers wait 0–70 ms by chance while the client
        // sends 75 kB/s (a camera): nothing queues, nothing is timed.
        for (i, t) in (1_050..11_000).step_by(50).enumerate() {
            queue.sent(Micros::from_millis(t - 1), 3_750);
            answer(&mut queue, t, [0, 70, 20, 65, 5][i % 5], 0);
        }
        let now = Micros::from_millis(11_000);
        assert_eq!(queue.rate(now), None);
        assert!(queue.frame_may_go(now, 20_000, true), "a 20 kB keyframe");
    }

    #[test]
    fn a_timed_rate_is_forgotten_when_the_queue_stays_empty() {
        let mut queue = UplinkQueue::default();
        answer(&mut queue, 1_000, 0, 0);
        queue.sent(Micros::from_millis(1_100), 2_000);
        answer(&mut queue, 1_101, 200, 0);
        queue.sent(Micros::from_millis(1_102), 3_000);
        answer(&mut queue, 1_103, 500, 0);
        let timed = Micros::from_millis(1_603 + 40);
        assert!(
            !queue.frame_may_go(timed, 20_000, true),
            "2 s on a 10 kB/s line"
        );
        // Half a minute of answers that did not wait: the line may be
        // faster now; the next keyframe goes and would time it again.
        for t in (2_000..32_000).step_by(1_000) {
            answer(&mut queue, t, 0, 0);
        }
        let later = timed + RATE_MEMORY + Duration::from_millis(1);
        assert_eq!(queue.rate(later), None);
        assert!(queue.frame_may_go(later, 20_000, true));
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
