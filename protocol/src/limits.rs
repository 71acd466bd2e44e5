//! Hard size limits. Every decoder checks these before it allocates, so a peer
//! announcing a huge frame costs us a comparison, not memory.

/// Largest media payload: a 640x360 VP8/VP9 keyframe is 20–80 KB, a 1080p one
/// rarely above 300 KB; 1 MiB leaves room without letting one frame hog a queue.
pub const MAX_MEDIA_PAYLOAD: usize = 1 << 20;

/// Largest encoded frame of any kind: a maximal media payload plus headroom for
/// the envelope fields (sender id, sequence numbers, timestamps).
pub const MAX_FRAME: usize = MAX_MEDIA_PAYLOAD + 4 * 1024;

/// Largest control frame (everything but media). A Hello carries a JWT and a
/// telemetry report carries up to 32 candidates; both fit in a few KB.
pub const MAX_CONTROL_FRAME: usize = 64 * 1024;

/// Size of the length prefix on WebTransport streams (big-endian u32).
pub const LENGTH_PREFIX: usize = 4;

/// Longest room name (also bounded to one NATS subject token, see `subjects`).
pub const MAX_ROOM_NAME: usize = 64;

/// Longest JWT we are willing to parse.
pub const MAX_TOKEN: usize = 8 * 1024;

/// Most candidates one election report may carry.
pub const MAX_REPORT_CANDIDATES: usize = 32;

/// Probes a relay answers per connection per second (the relay's
/// `--probes-per-second` default), said in `Welcome.probes_per_second`. A
/// client paces its probes of any one connection below what its relay says:
/// past it the relay's silence reads as loss. A probe and its answer are a
/// few dozen bytes; the budget is there against floods, and a client
/// gathering evidence of a lossy path wants to probe fast (see the client's
/// `ElectionConfig::loss_evidence_probe_interval`).
pub const PROBES_ANSWERED_PER_SECOND: u32 = 100;

/// What a relay answers that does not say (`Welcome.probes_per_second` 0):
/// the default before relays said it.
pub const PROBES_ANSWERED_BY_EARLIER_RELAYS: u32 = 25;

/// Probes answered per second by a relay whose Welcome said `said`.
pub const fn probes_answered(said: u32) -> u32 {
    if said == 0 {
        PROBES_ANSWERED_BY_EARLIER_RELAYS
    } else {
        said
    }
}

/// … in bursts of this many seconds' worth: a WebSocket stalled by TCP
/// retransmissions delivers every probe sent meanwhile at once (a talking
/// client's 20 a second; a client leaves a stream stalled for 2 s), and a
/// burst of one second's worth left a stalled talker's probes unanswered,
/// counted as loss.
pub const PROBE_ANSWER_BURST_SECONDS: u32 = 3;

/// The burst of a relay answering `per_second` probes a connection:
/// [`PROBE_ANSWER_BURST_SECONDS`]' worth.
pub const fn probe_answer_burst(per_second: u32) -> u32 {
    per_second.saturating_mul(PROBE_ANSWER_BURST_SECONDS)
}
