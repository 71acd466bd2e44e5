//! Time as the core sees it: an opaque monotonic count of microseconds chosen
//! by whoever drives the core (a tokio `Instant`, `performance.now()`, or a
//! simulation's virtual clock). The core never reads a clock itself.

use std::ops::{Add, Sub};
use std::time::Duration;

/// Microseconds on the driver's monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Micros(pub u64);

impl Micros {
    pub const ZERO: Micros = Micros(0);

    pub fn from_millis(ms: u64) -> Self {
        Micros(ms * 1000)
    }

    pub fn as_millis(self) -> u64 {
        self.0 / 1000
    }

    /// `self - earlier`, or zero if `earlier` is later.
    pub fn since(self, earlier: Micros) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Micros {
    type Output = Micros;
    fn add(self, rhs: Duration) -> Micros {
        Micros(self.0 + rhs.as_micros() as u64)
    }
}

impl Sub<Duration> for Micros {
    type Output = Micros;
    fn sub(self, rhs: Duration) -> Micros {
        Micros(self.0.saturating_sub(rhs.as_micros() as u64))
    }
}
