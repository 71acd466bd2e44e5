//! The relay's counters: plain atomics (cheap on the hot path, served as JSON at
//! `/stats`) observed by OpenTelemetry instruments only when they are scraped
//! (`/metrics`, see `rallypoint_service::exposition`) or pushed over OTLP, so
//! there is one source of truth and no cost on the hot path.
//!
//! Instrument names carry no unit (OpenTelemetry's rule); the unit is set on
//! the instrument and Prometheus names gain it as a suffix, counters `_total`:
//! `rallypoint.relay.media.io` (`By`) is scraped as
//! `rallypoint_relay_media_io_bytes_total`. Kinds of one thing are one
//! instrument with an attribute (drops by `reason`, probes by `outcome`), so a
//! dashboard sums or splits them without knowing every kind.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use opentelemetry::KeyValue;
use rallypoint_service::instruments::{self, Attr, Kind};
use serde::Serialize;

use crate::config::TransportKind;
use crate::state::RelayState;

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
    /// Local media frames dropped because their room task was behind (its
    /// media queue full): no local receiver got them.
    pub media_room_behind: AtomicU64,
    /// Media frames skipped for a receiver until the sender's next keyframe.
    pub media_skipped_awaiting_keyframe: AtomicU64,
    /// Media frames whose WebTransport stream the client did not finish in
    /// time: the stream stopped, the frame dropped (`transport::wt::client_streams`).
    pub media_streams_abandoned: AtomicU64,
    /// Media frames a receiver already had: the sender sent them through two
    /// relays while preparing a move (make-before-break).
    pub media_duplicates: AtomicU64,
    /// Media frames further behind their track's newest than a receiver
    /// could still play (see `copies`): a stalled path's backlog, or frames
    /// overtaken by far later ones.
    pub media_stale: AtomicU64,
    /// Media frames not given to a prepared standby whose client the room
    /// cannot see: not in its roster, no other relay naming it lately (a
    /// listener must be someone the room can see).
    pub media_withheld: AtomicU64,
    /// Media frames from a prepared standby whose client the room cannot
    /// see: not forwarded (a talker must be someone the room can see).
    pub media_unheard: AtomicU64,
    /// Probe-only connections that began forwarding media for a move their
    /// client was preparing (`Join.prepare`).
    pub moves_prepared: AtomicU64,
    /// Preparations not made: over the token subject's budget.
    pub prepares_over_budget: AtomicU64,
    /// Preparations not made: the room's queue was full.
    pub prepares_room_busy: AtomicU64,
    /// Media frames on a connection in no room (before its Join, after its
    /// Leave): dropped.
    pub media_not_in_room: AtomicU64,
    pub keyframe_requests_sent: AtomicU64,
    /// Requests for a keyframe (a receiver's, or the relay's for receivers
    /// whose queue dropped a frame) held back because every receiver they
    /// were for had asked too often, counted each time; one held back by
    /// the track's own interval is not counted here. They go on when the
    /// first of those receivers may ask again, unless a keyframe came
    /// through first (see `rooms::keyframe_asks`).
    pub keyframe_requests_backed_off: AtomicU64,
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
    /// Microphone/camera changes over their sender's budget (dropped).
    pub media_states_over_budget: AtomicU64,
    pub media_over_budget: AtomicU64,
    /// Media frames too large for the NATS server's max_payload.
    pub media_refused_oversize: AtomicU64,
    /// Local media frames published for the other relays serving the room.
    pub media_published: AtomicU64,
    /// Local media frames not published: no other relay serves the room
    /// (see `rooms::audience`).
    pub media_kept_here: AtomicU64,
    /// Media frames not published because NATS was unreachable or slow:
    /// this relay's other clients in the room got them, other relays' did
    /// not.
    pub media_unpublished: AtomicU64,
    /// Joins refused because the room was full.
    pub room_full_refusals: AtomicU64,
    /// Room commands dropped because the room's queue was full.
    pub room_commands_dropped: AtomicU64,
}

impl Stats {
    pub fn connection_opened(&self, transport: TransportKind) {
        match transport {
            TransportKind::WebSocket => {
                self.ws_connections_opened.fetch_add(1, Relaxed);
                self.ws_connections_active.fetch_add(1, Relaxed);
            }
            TransportKind::WebTransport => {
                self.wt_connections_opened.fetch_add(1, Relaxed);
                self.wt_connections_active.fetch_add(1, Relaxed);
            }
        }
    }

    pub fn connection_closed(&self, transport: TransportKind) {
        match transport {
            TransportKind::WebSocket => self.ws_connections_active.fetch_sub(1, Relaxed),
            TransportKind::WebTransport => self.wt_connections_active.fetch_sub(1, Relaxed),
        };
    }

    pub fn connections_active(&self) -> i64 {
        self.ws_connections_active.load(Relaxed) + self.wt_connections_active.load(Relaxed)
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}

type Instrument<T> = rallypoint_service::instruments::Instrument<Stats, T>;

const WS: Attr = Some(("transport", "websocket"));
const WT: Attr = Some(("transport", "webtransport"));
const RECEIVE: Attr = Some(("network.io.direction", "receive"));
const TRANSMIT: Attr = Some(("network.io.direction", "transmit"));

const GAUGES: &[Instrument<i64>] = &[
    Instrument {
        name: "rallypoint.relay.connections.active",
        unit: "{connection}",
        description: "Open client connections",
        series: &[
            (WS, |s| s.ws_connections_active.load(Relaxed)),
            (WT, |s| s.wt_connections_active.load(Relaxed)),
        ],
    },
    Instrument {
        name: "rallypoint.relay.rooms.active",
        unit: "{room}",
        description: "Rooms with a participant on this relay",
        series: &[(None, |s| s.rooms_active.load(Relaxed))],
    },
    Instrument {
        name: "rallypoint.relay.participants.active",
        unit: "{participant}",
        description: "Participants joined through this relay",
        series: &[(None, |s| s.participants_active.load(Relaxed))],
    },
];

const COUNTERS: &[Instrument<u64>] = &[
    Instrument {
        name: "rallypoint.relay.connections.opened",
        unit: "{connection}",
        description: "Client connections accepted",
        series: &[
            (WS, |s| s.ws_connections_opened.load(Relaxed)),
            (WT, |s| s.wt_connections_opened.load(Relaxed)),
        ],
    },
    Instrument {
        name: "rallypoint.relay.media.packets",
        unit: "{packet}",
        description: "Media frames received from clients and queued to clients",
        series: &[
            (RECEIVE, |s| s.media_packets_in.load(Relaxed)),
            (TRANSMIT, |s| s.media_packets_out.load(Relaxed)),
        ],
    },
    Instrument {
        name: "rallypoint.relay.media.io",
        unit: "By",
        description: "Media bytes received from clients and queued to clients",
        series: &[
            (RECEIVE, |s| s.media_bytes_in.load(Relaxed)),
            (TRANSMIT, |s| s.media_bytes_out.load(Relaxed)),
        ],
    },
    Instrument {
        name: "rallypoint.relay.media.dropped",
        unit: "{packet}",
        description: "Media frames not delivered, by reason",
        series: &[
            (Some(("reason", "receiver_queue_full")), |s| {
                s.media_dropped.load(Relaxed)
            }),
            (Some(("reason", "room_behind")), |s| {
                s.media_room_behind.load(Relaxed)
            }),
            (Some(("reason", "awaiting_keyframe")), |s| {
                s.media_skipped_awaiting_keyframe.load(Relaxed)
            }),
            (Some(("reason", "stream_unfinished")), |s| {
                s.media_streams_abandoned.load(Relaxed)
            }),
            (Some(("reason", "duplicate")), |s| {
                s.media_duplicates.load(Relaxed)
            }),
            (Some(("reason", "stale")), |s| s.media_stale.load(Relaxed)),
            (Some(("reason", "not_in_room")), |s| {
                s.media_not_in_room.load(Relaxed)
            }),
            (Some(("reason", "listener_not_in_roster")), |s| {
                s.media_withheld.load(Relaxed)
            }),
            (Some(("reason", "standby_not_in_roster")), |s| {
                s.media_unheard.load(Relaxed)
            }),
            (Some(("reason", "over_budget")), |s| {
                s.media_over_budget.load(Relaxed)
            }),
            (Some(("reason", "oversize")), |s| {
                s.media_refused_oversize.load(Relaxed)
            }),
            (Some(("reason", "nats_unavailable")), |s| {
                s.media_unpublished.load(Relaxed)
            }),
        ],
    },
    Instrument {
        name: "rallypoint.relay.media.published",
        unit: "{packet}",
        description: "Local senders' media frames published to NATS for other relays, \
                      or kept here because no other relay serves the room",
        series: &[
            (Some(("outcome", "published")), |s| {
                s.media_published.load(Relaxed)
            }),
            (Some(("outcome", "kept_here")), |s| {
                s.media_kept_here.load(Relaxed)
            }),
        ],
    },
    Instrument {
        name: "rallypoint.relay.keyframe_requests",
        unit: "{request}",
        description: "Keyframe requests sent on, held back while their receivers back off, or refused over their connection's budget",
        series: &[
            (Some(("outcome", "sent")), |s| {
                s.keyframe_requests_sent.load(Relaxed)
            }),
            (Some(("outcome", "backed_off")), |s| {
                s.keyframe_requests_backed_off.load(Relaxed)
            }),
            (Some(("outcome", "over_budget")), |s| {
                s.keyframe_requests_over_budget.load(Relaxed)
            }),
        ],
    },
    Instrument {
        name: "rallypoint.relay.media_states_over_budget",
        unit: "{change}",
        description: "Microphone/camera changes dropped over their connection's budget",
        series: &[(None, |s| s.media_states_over_budget.load(Relaxed))],
    },
    Instrument {
        name: "rallypoint.relay.probes",
        unit: "{probe}",
        description: "RTT probes: answered, withheld while cut off from NATS, or over budget",
        series: &[
            (Some(("outcome", "answered")), |s| {
                s.probes_answered.load(Relaxed)
            }),
            (Some(("outcome", "withheld")), |s| {
                s.probes_withheld.load(Relaxed)
            }),
            (Some(("outcome", "over_budget")), |s| {
                s.probes_over_budget.load(Relaxed)
            }),
        ],
    },
    Instrument {
        name: "rallypoint.relay.reports",
        unit: "{report}",
        description: "Election reports published to JetStream or refused",
        series: &[
            (Some(("outcome", "accepted")), |s| {
                s.reports_accepted.load(Relaxed)
            }),
            (Some(("outcome", "rejected")), |s| {
                s.reports_rejected.load(Relaxed)
            }),
        ],
    },
    Instrument {
        name: "rallypoint.relay.frames.rejected",
        unit: "{frame}",
        description: "Malformed, oversize or out-of-protocol frames",
        series: &[(None, |s| s.frames_rejected.load(Relaxed))],
    },
    Instrument {
        name: "rallypoint.relay.auth.failures",
        unit: "{token}",
        description: "Refused tokens",
        series: &[(None, |s| s.auth_failures.load(Relaxed))],
    },
    Instrument {
        name: "rallypoint.relay.moves.prepared",
        unit: "{connection}",
        description: "Standby connections that forwarded media while their client prepared a move (make-before-break)",
        series: &[(None, |s| s.moves_prepared.load(Relaxed))],
    },
    Instrument {
        name: "rallypoint.relay.moves.prepares_refused",
        unit: "{preparation}",
        description: "Preparations for a move not made, by reason; the standby stays connected",
        series: &[
            (Some(("reason", "over_budget")), |s| {
                s.prepares_over_budget.load(Relaxed)
            }),
            (Some(("reason", "room_busy")), |s| {
                s.prepares_room_busy.load(Relaxed)
            }),
        ],
    },
    Instrument {
        name: "rallypoint.relay.drains.sent",
        unit: "{connection}",
        description: "Connections told to move away (Drain) on shutdown",
        series: &[(None, |s| s.drains_sent.load(Relaxed))],
    },
    Instrument {
        name: "rallypoint.relay.rooms.full_refusals",
        unit: "{join}",
        description: "Joins refused because the room was full, and participants refused just after joining when joins raced through relays new to the room past its size",
        series: &[(None, |s| s.room_full_refusals.load(Relaxed))],
    },
    Instrument {
        name: "rallypoint.relay.rooms.commands_dropped",
        unit: "{command}",
        description: "Room commands dropped on a full queue",
        series: &[(None, |s| s.room_commands_dropped.load(Relaxed))],
    },
];

/// The attributes of every series: the relay's identity.
fn identity(relay_id: &str, region: &str) -> [KeyValue; 2] {
    [
        KeyValue::new("relay.id", relay_id.to_owned()),
        KeyValue::new("relay.region", region.to_owned()),
    ]
}

/// Registers the observable instruments over `stats` on the global meter
/// provider; their callbacks run when the metrics are scraped or exported.
pub fn register_instruments(stats: &Arc<Stats>, relay_id: &str, region: &str) {
    let meter = opentelemetry::global::meter("rallypoint-relay");
    let (stats, identity) = (Arc::downgrade(stats), identity(relay_id, region));
    instruments::register(&meter, Kind::UpDownCounter, &stats, &identity, GAUGES);
    instruments::register(&meter, Kind::Counter, &stats, &identity, COUNTERS);
}

/// A gauge over the relay's whole state (not only its counters).
type StateGauge = rallypoint_service::instruments::Instrument<RelayState, i64>;

const STATE_GAUGES: &[StateGauge] = &[
    StateGauge {
        name: "rallypoint.relay.ready",
        unit: "",
        description: "1 while /readyz answers 200 (NATS connected, not draining, below the connection limit)",
        series: &[(None, |r| r.readiness().is_ok().into())],
    },
    StateGauge {
        name: "rallypoint.relay.nats.connected",
        unit: "",
        description: "1 while the relay's NATS connection is up",
        series: &[(None, |r| {
            (r.nats.connection_state() == async_nats::connection::State::Connected).into()
        })],
    },
    StateGauge {
        name: "rallypoint.relay.nats.cut_off",
        unit: "",
        description: "1 while NATS has been unreachable for longer than its grace (probes withheld)",
        series: &[(None, |r| r.is_cut_off().into())],
    },
    StateGauge {
        name: "rallypoint.relay.draining",
        unit: "",
        description: "1 once the relay is shutting down",
        series: &[(None, |r| r.is_draining().into())],
    },
    StateGauge {
        name: "rallypoint.relay.connection_slots.in_use",
        unit: "{connection}",
        description: "Client sockets and handshakes held, counted against the connection limit",
        series: &[(None, |r| r.budget.in_use() as i64)],
    },
    StateGauge {
        name: "rallypoint.relay.connection_slots.limit",
        unit: "{connection}",
        description: "The connection limit (--max-connections)",
        series: &[(None, |r| r.budget.limit() as i64)],
    },
];

/// Registers gauges of readiness, NATS and the connection budget: what an
/// SRE alerts on. They hold the relay weakly, so a relay that has stopped
/// (in a process that runs more than one) reports nothing rather than being
/// kept alive by its metrics.
pub fn register_state_instruments(relay: &Arc<RelayState>) {
    let meter = opentelemetry::global::meter("rallypoint-relay");
    let identity = identity(&relay.config.relay_id, &relay.config.region);
    let relay = Arc::downgrade(relay);
    instruments::register(&meter, Kind::Gauge, &relay, &identity, STATE_GAUGES);
}
