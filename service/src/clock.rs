//! Wall-clock time as the wire and the tables carry it: since the unix
//! epoch. One home, so every part reads the same clock the same way (a
//! clock set before 1970 reads as 0 rather than failing).

use std::time::{SystemTime, UNIX_EPOCH};

fn since_epoch() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Microseconds since the unix epoch (probe answers).
pub fn unix_micros() -> u64 {
    since_epoch().as_micros() as u64
}

/// Milliseconds since the unix epoch (report receive times).
pub fn unix_millis() -> u64 {
    since_epoch().as_millis() as u64
}

/// Seconds since the unix epoch (token expiry, ClickHouse `DateTime`).
pub fn unix_seconds() -> u64 {
    since_epoch().as_secs()
}
