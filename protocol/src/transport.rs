//! The two ways a client reaches a relay, named once for every crate: the
//! client's candidate lists (JSON), the relay's `--transports` flag, and the
//! telemetry enum on the wire ([`v1::Transport`]), with conversions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::v1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// One ordered byte stream over TCP (TLS optional): works wherever HTTPS does.
    #[serde(alias = "ws")]
    WebSocket,
    /// HTTP/3 over QUIC: datagrams for probes and media, streams for the rest.
    #[serde(alias = "wt")]
    WebTransport,
}

impl TransportKind {
    pub const ALL: [TransportKind; 2] = [TransportKind::WebSocket, TransportKind::WebTransport];

    /// `ws` or `wt`: labels (`singapore/wt`), flags, metric attributes.
    pub fn short(self) -> &'static str {
        match self {
            TransportKind::WebSocket => "ws",
            TransportKind::WebTransport => "wt",
        }
    }

    /// The telemetry enum on the wire.
    pub fn to_proto(self) -> v1::Transport {
        match self {
            TransportKind::WebSocket => v1::Transport::Websocket,
            TransportKind::WebTransport => v1::Transport::Webtransport,
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short())
    }
}

impl FromStr for TransportKind {
    type Err = String;

    /// `ws`/`websocket` or `wt`/`webtransport`, any case.
    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "ws" | "websocket" => Ok(TransportKind::WebSocket),
            "wt" | "webtransport" => Ok(TransportKind::WebTransport),
            _ => Err(format!(
                "{text:?} is not a transport: use ws (WebSocket) or wt (WebTransport)"
            )),
        }
    }
}

impl TryFrom<v1::Transport> for TransportKind {
    type Error = String;

    fn try_from(wire: v1::Transport) -> Result<Self, String> {
        match wire {
            v1::Transport::Websocket => Ok(TransportKind::WebSocket),
            v1::Transport::Webtransport => Ok(TransportKind::WebTransport),
            v1::Transport::Unspecified => Err("transport unspecified".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_names_the_same_transport_and_round_trips_the_wire() {
        for kind in TransportKind::ALL {
            assert_eq!(kind.short().parse::<TransportKind>(), Ok(kind));
            assert_eq!(kind.to_string().parse::<TransportKind>(), Ok(kind));
            assert_eq!(TransportKind::try_from(kind.to_proto()), Ok(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(serde_json::from_str::<TransportKind>(&json).unwrap(), kind);
        }
        assert_eq!("WebSocket".parse(), Ok(TransportKind::WebSocket));
        assert_eq!(
            serde_json::from_str::<TransportKind>("\"wt\"").unwrap(),
            TransportKind::WebTransport
        );
        assert!(
            "quic"
                .parse::<TransportKind>()
                .unwrap_err()
                .contains("ws (WebSocket)")
        );
        assert!(TransportKind::try_from(v1::Transport::Unspecified).is_err());
    }
}
