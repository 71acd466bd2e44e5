//! Which way a frame travels on a connection: the protocol's rule, in one
//! place for every client.
//!
//! WebSocket has one ordered byte stream, so every frame takes it.
//! WebTransport has three ways, and the kind of frame picks one: probes go
//! as datagrams so they measure the UDP path the media takes (routed apart
//! from media datagrams, which a sender may refuse when its queue is longer
//! than a call can wait: a refused probe would read as loss); media goes as
//! a datagram when it fits and on a unidirectional stream of its own when it
//! does not (a video keyframe), so one lost packet delays only that frame;
//! everything else (Hello, Join, reports) takes the ordered control stream.

use rallypoint_protocol::v1::client_frame;

use crate::TransportKind;

/// How a frame travels; only WebTransport distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The control stream (WebTransport, length-prefixed) or the socket (WebSocket).
    Control,
    /// One datagram that measures the path: never held back by the
    /// sender's own queue bound (`rallypoint_protocol::queue_age`).
    Probe,
    /// One datagram: media that fits.
    Datagram,
    /// A unidirectional stream of its own: media too large for a datagram.
    Stream,
}

/// The route for a frame of `kind` encoded in `len` bytes on a connection
/// whose datagrams carry at most `max_datagram` bytes.
pub fn route(
    kind: Option<&client_frame::Kind>,
    transport: TransportKind,
    len: usize,
    max_datagram: usize,
) -> Route {
    match (kind, transport) {
        (_, TransportKind::WebSocket) => Route::Control,
        (Some(client_frame::Kind::Probe(_)), _) => Route::Probe,
        (Some(client_frame::Kind::Media(_)), _) if len <= max_datagram => Route::Datagram,
        (Some(client_frame::Kind::Media(_)), _) => Route::Stream,
        _ => Route::Control,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rallypoint_protocol::v1::{Hello, Join, Media, Probe};

    #[test]
    fn frames_take_the_protocol_route() {
        let probe = client_frame::Kind::Probe(Probe::default());
        let media = client_frame::Kind::Media(Media::default());
        let join = client_frame::Kind::Join(Join::default());
        let hello = client_frame::Kind::Hello(Hello::default());
        let wt = TransportKind::WebTransport;
        assert_eq!(route(Some(&probe), wt, 20, 1200), Route::Probe);
        assert_eq!(route(Some(&media), wt, 1200, 1200), Route::Datagram);
        assert_eq!(route(Some(&media), wt, 1201, 1200), Route::Stream);
        assert_eq!(route(Some(&join), wt, 20, 1200), Route::Control);
        assert_eq!(route(Some(&hello), wt, 20, 1200), Route::Control);
        assert_eq!(route(None, wt, 0, 1200), Route::Control);
        // A connection without datagrams (max 0) still carries media.
        assert_eq!(route(Some(&media), wt, 1, 0), Route::Stream);
        for kind in [&probe, &media, &join] {
            assert_eq!(
                route(Some(kind), TransportKind::WebSocket, 5000, 0),
                Route::Control
            );
        }
    }
}
