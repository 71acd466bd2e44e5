//! The NATS subject scheme.
//!
//! Rooms (core NATS, no persistence — media is real-time or worthless):
//!
//! | subject                              | payload                              |
//! |--------------------------------------|--------------------------------------|
//! | `rp.room.<room>.media.<sender-peer>` | encoded `ServerFrame{media}`, forwarded to clients verbatim |
//! | `rp.room.<room>.ctl`                 | `RoomEvent` (presence, roster beats, keyframe requests) |
//!
//! A relay subscribes to `rp.room.<room>.>` only while it serves a participant
//! of that room. NATS gateways propagate interest, so a room's media crosses to
//! another region only when someone there is in the room. One subject per
//! sender keeps per-sender order (NATS orders messages per publisher and subject).
//!
//! Telemetry (JetStream):
//!
//! | subject                         | payload                    |
//! |---------------------------------|----------------------------|
//! | `telemetry.election.<region>`   | `EnrichedElectionReport`, `Nats-Msg-Id` = report id |
//!
//! Reports the collector cannot store are kept in ClickHouse's dead-letter
//! table with their reason, not on a subject.
//!
//! Budgets (core NATS, inside one region: only its relays subscribe):
//!
//! | subject                       | payload                              |
//! |-------------------------------|--------------------------------------|
//! | `rp.budget.<region>.reports`  | `ReportsAccepted`: reports a relay accepted per token subject and per client address (a keyed digest), so every relay of the region charges them |

/// Why a name cannot be used as a room or region.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("{what} name is empty")]
    Empty { what: &'static str },
    #[error("{what} name is {len} characters long; the limit is {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error(
        "{what} name {name:?} may only contain letters, digits, '-' and '_' (it becomes a NATS subject token)"
    )]
    BadCharacter { what: &'static str, name: String },
}

/// Checks that `room` is usable: 1 to 64 characters from `[A-Za-z0-9_-]`.
pub fn validate_room(room: &str) -> Result<(), NameError> {
    validate_token("room", room, crate::limits::MAX_ROOM_NAME)
}

/// Checks that `region` is usable as a subject token (same alphabet as rooms).
pub fn validate_region(region: &str) -> Result<(), NameError> {
    validate_token("region", region, 64)
}

fn validate_token(what: &'static str, name: &str, max: usize) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { what });
    }
    if name.len() > max {
        return Err(NameError::TooLong {
            what,
            len: name.len(),
            max,
        });
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(NameError::BadCharacter {
            what,
            name: name.to_owned(),
        });
    }
    Ok(())
}

pub const ROOM_PREFIX: &str = "rp.room";

/// Where the relays of `region` tell each other the reports they accepted
/// per token subject (see the table above).
pub fn report_budget(region: &str) -> String {
    format!("rp.budget.{region}.reports")
}

/// Everything about one room: what a serving relay subscribes to.
pub fn room_wildcard(room: &str) -> String {
    format!("{ROOM_PREFIX}.{room}.>")
}

/// Media of one sender in one room.
pub fn room_media(room: &str, sender: &str) -> String {
    format!("{ROOM_PREFIX}.{room}.media.{sender}")
}

/// Presence and control events of one room.
pub fn room_control(room: &str) -> String {
    format!("{ROOM_PREFIX}.{room}.ctl")
}

/// What a message on a room subject is.
#[derive(Debug, PartialEq, Eq)]
pub enum RoomSubject<'a> {
    Media { room: &'a str, sender: &'a str },
    Control { room: &'a str },
}

/// Parses a subject under [`ROOM_PREFIX`]; `None` for anything else.
pub fn parse_room_subject(subject: &str) -> Option<RoomSubject<'_>> {
    let rest = subject.strip_prefix(ROOM_PREFIX)?.strip_prefix('.')?;
    let mut parts = rest.split('.');
    let room = parts.next()?;
    match (parts.next()?, parts.next(), parts.next()) {
        ("media", Some(sender), None) => Some(RoomSubject::Media { room, sender }),
        ("ctl", None, None) => Some(RoomSubject::Control { room }),
        _ => None,
    }
}

pub const TELEMETRY_ELECTION_PREFIX: &str = "telemetry.election";

/// Where a relay publishes the election reports it accepted.
pub fn telemetry_election(region: &str) -> String {
    format!("{TELEMETRY_ELECTION_PREFIX}.{region}")
}

/// Reply subjects of relays (JetStream acknowledgements of their telemetry).
/// Each role has its own inbox prefix so its NATS permissions can allow its
/// own replies and nothing else: a relay must not read what JetStream
/// delivers to the collectors.
pub const RELAY_INBOX_PREFIX: &str = "_INBOX_relay";
/// Reply subjects of collectors (the messages their consumer delivers).
pub const COLLECTOR_INBOX_PREFIX: &str = "_INBOX_collector";
/// Reply subjects of administrators and tools.
pub const ADMIN_INBOX_PREFIX: &str = "_INBOX_admin";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert!(validate_room("standup-42_b").is_ok());
        assert!(matches!(validate_room(""), Err(NameError::Empty { .. })));
        assert!(matches!(
            validate_room("a.b"),
            Err(NameError::BadCharacter { .. })
        ));
        assert!(matches!(
            validate_room("a>"),
            Err(NameError::BadCharacter { .. })
        ));
        assert!(matches!(
            validate_room(&"x".repeat(65)),
            Err(NameError::TooLong { .. })
        ));
    }

    #[test]
    fn subjects_parse_back() {
        assert_eq!(
            parse_room_subject(&room_media("r1", "abc")),
            Some(RoomSubject::Media {
                room: "r1",
                sender: "abc"
            })
        );
        assert_eq!(
            parse_room_subject(&room_control("r1")),
            Some(RoomSubject::Control { room: "r1" })
        );
        assert_eq!(parse_room_subject("rp.room.r1.media"), None);
        assert_eq!(parse_room_subject("rp.room.r1.media.a.b"), None);
        assert_eq!(parse_room_subject("other.r1.ctl"), None);
    }
}
