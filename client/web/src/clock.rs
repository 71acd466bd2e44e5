//! The browser's clocks.
//!
//! * [`now`]: monotonic (`performance.now()`), for the election and RTTs.
//! * [`wall_us`]: the wall clock in microseconds, for media capture stamps
//!   (sender and receiver must agree, which only a wall clock gives) and
//!   reports. Built from `performance.timeOrigin + performance.now()`, which
//!   is finer than `Date.now()`.

use rallypoint_client::Micros;

fn performance() -> web_sys::Performance {
    web_sys::window()
        .and_then(|w| w.performance())
        .expect("the app runs in a window with the Performance API")
}

/// Monotonic time since the page loaded.
pub fn now() -> Micros {
    Micros((performance().now() * 1000.0) as u64)
}

/// Monotonic milliseconds (rates, freezes).
pub fn now_ms() -> f64 {
    performance().now()
}

/// Wall clock, microseconds since the Unix epoch.
pub fn wall_us() -> f64 {
    let p = performance();
    (p.time_origin() + p.now()) * 1000.0
}

/// Wall clock, milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    js_sys::Date::now() as u64
}

/// 16 random bytes from the browser's CSPRNG (session and report ids).
pub fn random_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    web_sys::window()
        .expect("window")
        .crypto()
        .expect("the app needs window.crypto")
        .get_random_values_with_u8_array(&mut id)
        .expect("getRandomValues on 16 bytes cannot exceed its quota");
    id
}

/// Resolves after `ms` milliseconds.
pub async fn sleep_ms(ms: u32) {
    gloo_timers::future::TimeoutFuture::new(ms).await
}
