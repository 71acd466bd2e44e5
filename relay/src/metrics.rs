//! The relay's counters: plain atomics (cheap on the hot path, served as JSON at
//! `/stats`) observed by OpenTelemetry instruments at export time, so there is
//! one source of truth and no cost when export is off.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use opentelemetry::KeyValue;
use serde::Serialize;

use crate::config::TransportKind;

#[derive(Debug, Default, Serialize)]
pub struct Stats {
    pub ws_connections_opened: AtomicU64,
    pub wt_connections_opened: AtomicU64,
    pub ws_connections_active: AtomicI64,
    pub wt_connections_active: AtomicI64,
    pub rooms_active: AtomicI64,
    pub participants_active: AtomicI64,
    pub media_packets_in: AtomicU64,
    pub media_bytes_in: AtomicU64,
    pub media_packets_out: AtomicU64,
    pub media_bytes_out: AtomicU64,
    /// Media frames dropped because a receiver's queue was full.
    pub media_dropped: AtomicU64,
    /// Media frames skipped for a receiver until the sender's next keyframe.
    pub media_skipped_awaiting_keyframe: AtomicU64,
    pub keyframe_requests_sent: AtomicU64,
    pub probes_answered: AtomicU64,
    /// Frames refused (malformed, oversize, out of protocol).
    pub frames_rejected: AtomicU64,
    pub auth_failures: AtomicU64,
    pub reports_accepted: AtomicU64,
    pub reports_rejected: AtomicU64,
    pub drains_sent: AtomicU64,
    /// Probes not answered because the relay was cut off from NATS.
    pub probes_withheld: AtomicU64,
    /// Probes, keyframe requests and media frames over their sender's budget.
    pub probes_over_budget: AtomicU64,
    pub keyframe_requests_over_budget: AtomicU64,
    pub media_over_budget: AtomicU64,
    /// Media frames too large for the NATS server's max_payload.
    pub media_refused_oversize: AtomicU64,
    /// Media frames not published because NATS was unreachable or slow.
    pub media_unpublished: AtomicU64,
    /// Joins refused because the room was full.
    pub room_full_refusals: AtomicU64,
    /// Room commands dropped because the room's queue was full.
    pub room_commands_dropped: AtomicU64,
}

impl Stats {
    pub fn connection_opened(&self, transport: TransportKind) {
        match transport {
            TransportKind::Ws => {
                self.ws_connections_opened.fetch_add(1, Relaxed);
                self.ws_connections_active.fetch_add(1, Relaxed);
            }
            TransportKind::Wt => {
                self.wt_connections_opened.fetch_add(1, Relaxed);
                self.wt_connections_active.fetch_add(1, Relaxed);
            }
        }
    }

    pub fn connection_closed(&self, transport: TransportKind) {
        match transport {
            TransportKind::Ws => self.ws_connections_active.fetch_sub(1, Relaxed),
            TransportKind::Wt => self.wt_connections_active.fetch_sub(1, Relaxed),
        };
    }

    pub fn connections_active(&self) -> i64 {
        self.ws_connections_active.load(Relaxed) + self.wt_connections_active.load(Relaxed)
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}

/// Registers observable OpenTelemetry instruments over `stats`. The callbacks
/// run only when a meter provider exports, i.e. when OTLP export is configured.
/// An instrument exported over OpenTelemetry: name, description, how to read it.
type CounterSpec = (&'static str, &'static str, fn(&Stats) -> u64);
type GaugeSpec = (&'static str, &'static str, fn(&Stats) -> i64);

pub fn register_instruments(stats: Arc<Stats>, relay_id: &str, region: &str) {
    let meter = opentelemetry::global::meter("rallypoint-relay");
    let base = vec![
        KeyValue::new("relay.id", relay_id.to_owned()),
        KeyValue::new("relay.region", region.to_owned()),
    ];
    let with = |extra: KeyValue| {
        let mut attrs = base.clone();
        attrs.push(extra);
        attrs
    };

    let (s, ws, wt) = (
        stats.clone(),
        with(KeyValue::new("transport", "websocket")),
        with(KeyValue::new("transport", "webtransport")),
    );
    meter
        .i64_observable_up_down_counter("rallypoint.relay.connections.active")
        .with_description("Open client connections")
        .with_callback(move |o| {
            o.observe(s.ws_connections_active.load(Relaxed), &ws);
            o.observe(s.wt_connections_active.load(Relaxed), &wt);
        })
        .build();

    let (s, ws, wt) = (
        stats.clone(),
        with(KeyValue::new("transport", "websocket")),
        with(KeyValue::new("transport", "webtransport")),
    );
    meter
        .u64_observable_counter("rallypoint.relay.connections.opened")
        .with_description("Client connections accepted")
        .with_callback(move |o| {
            o.observe(s.ws_connections_opened.load(Relaxed), &ws);
            o.observe(s.wt_connections_opened.load(Relaxed), &wt);
        })
        .build();

    let gauges: [GaugeSpec; 2] = [
        (
            "rallypoint.relay.rooms.active",
            "Rooms with a participant on this relay",
            |s| s.rooms_active.load(Relaxed),
        ),
        (
            "rallypoint.relay.participants.active",
            "Participants joined through this relay",
            |s| s.participants_active.load(Relaxed),
        ),
    ];
    for (name, description, read) in gauges {
        let (s, attrs) = (stats.clone(), base.clone());
        meter
            .i64_observable_up_down_counter(name)
            .with_description(description)
            .with_callback(move |o| o.observe(read(&s), &attrs))
            .build();
    }

    let counters: [CounterSpec; 18] = [
        (
            "rallypoint.relay.media.packets.in",
            "Media frames received from clients",
            |s| s.media_packets_in.load(Relaxed),
        ),
        (
            "rallypoint.relay.media.bytes.in",
            "Media payload bytes received from clients",
            |s| s.media_bytes_in.load(Relaxed),
        ),
        (
            "rallypoint.relay.media.packets.out",
            "Media frames queued to clients",
            |s| s.media_packets_out.load(Relaxed),
        ),
        (
            "rallypoint.relay.media.bytes.out",
            "Media frame bytes queued to clients",
            |s| s.media_bytes_out.load(Relaxed),
        ),
        (
            "rallypoint.relay.media.dropped",
            "Media frames dropped for slow receivers",
            |s| s.media_dropped.load(Relaxed),
        ),
        (
            "rallypoint.relay.probes.answered",
            "RTT probes answered",
            |s| s.probes_answered.load(Relaxed),
        ),
        (
            "rallypoint.relay.frames.rejected",
            "Malformed, oversize or out-of-protocol frames",
            |s| s.frames_rejected.load(Relaxed),
        ),
        ("rallypoint.relay.auth.failures", "Refused tokens", |s| {
            s.auth_failures.load(Relaxed)
        }),
        (
            "rallypoint.relay.reports.accepted",
            "Election reports published to JetStream",
            |s| s.reports_accepted.load(Relaxed),
        ),
        (
            "rallypoint.relay.reports.rejected",
            "Election reports refused",
            |s| s.reports_rejected.load(Relaxed),
        ),
        (
            "rallypoint.relay.probes.withheld",
            "Probes not answered while cut off from NATS",
            |s| s.probes_withheld.load(Relaxed),
        ),
        (
            "rallypoint.relay.probes.over_budget",
            "Probes over their connection's budget",
            |s| s.probes_over_budget.load(Relaxed),
        ),
        (
            "rallypoint.relay.keyframe_requests.over_budget",
            "Keyframe requests over their connection's budget",
            |s| s.keyframe_requests_over_budget.load(Relaxed),
        ),
        (
            "rallypoint.relay.media.over_budget",
            "Media frames over their sender's budget",
            |s| s.media_over_budget.load(Relaxed),
        ),
        (
            "rallypoint.relay.media.refused_oversize",
            "Media frames larger than NATS accepts",
            |s| s.media_refused_oversize.load(Relaxed),
        ),
        (
            "rallypoint.relay.media.unpublished",
            "Media frames not published (NATS unreachable or slow)",
            |s| s.media_unpublished.load(Relaxed),
        ),
        (
            "rallypoint.relay.rooms.full_refusals",
            "Joins refused because the room was full",
            |s| s.room_full_refusals.load(Relaxed),
        ),
        (
            "rallypoint.relay.rooms.commands_dropped",
            "Room commands dropped on a full queue",
            |s| s.room_commands_dropped.load(Relaxed),
        ),
    ];
    for (name, description, read) in counters {
        let (s, attrs) = (stats.clone(), base.clone());
        meter
            .u64_observable_counter(name)
            .with_description(description)
            .with_callback(move |o| o.observe(read(&s), &attrs))
            .build();
    }
}
