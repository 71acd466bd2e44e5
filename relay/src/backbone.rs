//! Whether this relay can reach the room: its NATS connection, as clients
//! must see it.
//!
//! A relay cut off from NATS still answers probes quickly, so without this an
//! election keeps choosing a relay through which every call is silent. Once
//! NATS has been unreachable for `--nats-loss-grace` the relay is *cut off*:
//! sessions stop answering probes (the election treats the relay as dead) and
//! tell in-room clients to move (`Drain`). When NATS comes back the relay
//! serves again, without a restart.

use std::time::Duration;

use async_nats::connection::State;
use tokio::sync::watch;

/// How often the connection state is sampled.
const SAMPLE: Duration = Duration::from_millis(100);

/// Watches `nats` and publishes `true` on the returned channel while the
/// relay is cut off. The task ends when every receiver is gone.
pub fn watch_cut_off(nats: async_nats::Client, grace: Duration) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut lost_since: Option<tokio::time::Instant> = None;
        let mut tick = tokio::time::interval(SAMPLE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                _ = tick.tick() => {}
            }
            let now = tokio::time::Instant::now();
            let connected = nats.connection_state() == State::Connected;
            lost_since = if connected {
                None
            } else {
                Some(lost_since.unwrap_or(now))
            };
            let cut_off = lost_since.is_some_and(|since| now.duration_since(since) >= grace);
            if *tx.borrow() != cut_off {
                if cut_off {
                    tracing::warn!(
                        ?grace,
                        "NATS unreachable: no longer answering probes; moving clients away"
                    );
                } else {
                    tracing::info!("NATS reachable again: serving clients");
                }
                tx.send_replace(cut_off);
            }
        }
    });
    rx
}
