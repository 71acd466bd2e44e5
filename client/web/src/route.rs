//! Which way a frame travels on a connection (the protocol's rules).

use rallypoint_client::TransportKind;
use rallypoint_protocol::v1::client_frame;

/// How a frame travels; only WebTransport distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The control stream (WebTransport, length-prefixed) or the socket (WebSocket).
    Control,
    /// One datagram: probes, so they measure the UDP path, and media that fits.
    Datagram,
    /// A unidirectional stream of its own: media too large for a datagram
    /// (video keyframes), so one lost packet delays only that frame.
    Stream,
}

/// The route for a frame of `kind` encoded in `len` bytes.
pub fn route(
    kind: Option<&client_frame::Kind>,
    transport: TransportKind,
    len: usize,
    max_datagram: usize,
) -> Route {
    match (kind, transport) {
        (_, TransportKind::WebSocket) => Route::Control,
        (Some(client_frame::Kind::Probe(_)), _) => Route::Datagram,
        (Some(client_frame::Kind::Media(_)), _) if len <= max_datagram => Route::Datagram,
        (Some(client_frame::Kind::Media(_)), _) => Route::Stream,
        _ => Route::Control,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rallypoint_protocol::v1::{Join, Media, Probe};

    #[test]
    fn frames_take_the_protocol_route() {
        let probe = client_frame::Kind::Probe(Probe::default());
        let media = client_frame::Kind::Media(Media::default());
        let join = client_frame::Kind::Join(Join::default());
        let wt = TransportKind::WebTransport;
        assert_eq!(route(Some(&probe), wt, 20, 1200), Route::Datagram);
        assert_eq!(route(Some(&media), wt, 1200, 1200), Route::Datagram);
        assert_eq!(route(Some(&media), wt, 1201, 1200), Route::Stream);
        assert_eq!(route(Some(&join), wt, 20, 1200), Route::Control);
        for kind in [&probe, &media, &join] {
            assert_eq!(
                route(Some(kind), TransportKind::WebSocket, 5000, 0),
                Route::Control
            );
        }
    }
}
