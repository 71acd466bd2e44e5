//! How old media is when it arrives, for tests of a path slower than the
//! media sent over it (`relay/tests/slow_downlink.rs`,
//! `client/native/tests/slow_uplink.rs`): the sender stamps each frame's
//! `capture_us` with [`now_us`], and the receiver, in the same process and
//! so on the same clock, records how old it is.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rallypoint_client_native::Peer;
use rallypoint_protocol::v1::server_frame;

/// Microseconds on this process's test clock: a frame's capture time.
pub fn now_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Frames of one sender as they arrived: (capture time, age on arrival),
/// microseconds.
#[derive(Debug, Default)]
pub struct Ages(pub Vec<(u64, u64)>);

impl Ages {
    /// Records `sender`'s media arriving at `receiver` until `deadline`.
    pub async fn of(receiver: &mut Peer, sender: &str, deadline: tokio::time::Instant) -> Ages {
        let mut ages = Vec::new();
        while let Ok(Some(received)) = tokio::time::timeout_at(deadline, receiver.recv()).await {
            if let Some(server_frame::Kind::Media(media)) = received.frame.kind
                && media.sender == sender
            {
                ages.push((media.capture_us, now_us().saturating_sub(media.capture_us)));
            }
        }
        Ages(ages)
    }

    /// The ages of the frames captured at least `after` after the first one
    /// that arrived, sorted: those sent once any queue had long filled.
    pub fn sent_after(&self, after: Duration) -> Vec<u64> {
        let started = self.0.first().map_or(0, |(sent, _)| *sent);
        let mut ages: Vec<u64> = self
            .0
            .iter()
            .filter(|(sent, _)| *sent >= started + after.as_micros() as u64)
            .map(|(_, age)| *age)
            .collect();
        ages.sort_unstable();
        ages
    }
}

/// The `q` quantile of sorted ages in microseconds, in milliseconds (NaN
/// for none).
pub fn quantile_ms(sorted_us: &[u64], q: f64) -> f64 {
    match sorted_us.len() {
        0 => f64::NAN,
        n => sorted_us[((n - 1) as f64 * q).round() as usize] as f64 / 1000.0,
    }
}
