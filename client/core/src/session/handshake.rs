//! The connection handshake, one home for every client: the client says
//! `Hello` (protocol version, token, who it is, its call's session id) and
//! the relay answers `Welcome`, or an `Error` that refuses it.
//!
//! The [`Session`](super::Session) runs it on every connection it asks for;
//! tools that talk to one relay directly (`rallypoint join`, the tests'
//! participants) build the same Hello and read the answer the same way.

use bytes::Bytes;
use rallypoint_protocol::PROTOCOL_VERSION;
use rallypoint_protocol::v1::{
    ClientContext, ClientFrame, ClientInfo, ErrorCode, Hello, Welcome, client_frame, server_frame,
};

/// Who the client is, the same on every relay it talks to.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The JWT naming the room, the user and the display name.
    pub token: String,
    /// Random bytes fixed for the whole call: with the token's user id they
    /// make the peer id, so every relay knows this participant as the same one.
    pub session_id: Bytes,
    pub info: ClientInfo,
}

/// The first frame on every connection.
pub fn hello(token: &str, session_id: &Bytes, info: &ClientInfo) -> ClientFrame {
    ClientFrame::of(client_frame::Kind::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        token: token.to_owned(),
        client: Some(info.clone()),
        session_id: session_id.clone(),
        // Both clients read them (`rallypoint_protocol::media_streams`).
        media_stream_groups: true,
    }))
}

/// What a relay said to a Hello.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Welcome(Welcome),
    /// An `Error` frame: the relay will not serve this client (bad or
    /// expired token, wrong protocol version, too many connections, …).
    Refused {
        code: ErrorCode,
        message: String,
    },
}

/// The answer in a frame from a relay still greeting, if it is one; other
/// frames are not for the handshake.
pub fn answer(kind: &server_frame::Kind) -> Option<Answer> {
    match kind {
        server_frame::Kind::Welcome(welcome) => Some(Answer::Welcome(welcome.clone())),
        server_frame::Kind::Error(_) => {
            let (code, message) = refusal(kind)?;
            Some(Answer::Refused { code, message })
        }
        _ => None,
    }
}

/// The code and message of an `Error` frame, at any point of a connection.
pub fn refusal(kind: &server_frame::Kind) -> Option<(ErrorCode, String)> {
    let server_frame::Kind::Error(error) = kind else {
        return None;
    };
    let code = ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified);
    Some((code, error.message.clone()))
}

/// Whether a refusal ends the call: another relay would refuse the same —
/// the token (its signature, its expiry, its room) or the room (full) — so
/// electing one only repeats the refusal, and the person must be told.
/// Every other refusal is this relay's (busy, cut off, a protocol error on
/// this connection): the election goes on without it.
pub fn ends_the_call(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Unauthenticated
            | ErrorCode::TokenExpired
            | ErrorCode::WrongRoom
            | ErrorCode::RoomFull
    )
}

/// What the election's reports say about the client, from what it says in
/// Hello (the relay adds the network context it derives itself).
pub fn report_context(info: &ClientInfo) -> ClientContext {
    ClientContext {
        platform: info.platform.clone(),
        client_version: info.client_version.clone(),
        browser_family: info.browser_family.clone(),
        effective_connection_type: info.effective_connection_type.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rallypoint_protocol::v1::ServerFrame;

    #[test]
    fn a_full_room_or_a_bad_token_ends_the_call_and_a_busy_relay_does_not() {
        for code in [
            ErrorCode::Unauthenticated,
            ErrorCode::TokenExpired,
            ErrorCode::WrongRoom,
            ErrorCode::RoomFull,
        ] {
            assert!(ends_the_call(code), "{code:?}");
        }
        for code in [
            ErrorCode::Unspecified,
            ErrorCode::UnsupportedVersion,
            ErrorCode::MalformedFrame,
            ErrorCode::FrameTooLarge,
            ErrorCode::ProtocolViolation,
            ErrorCode::RateLimited,
            ErrorCode::Unavailable,
        ] {
            assert!(!ends_the_call(code), "{code:?}");
        }
    }

    #[test]
    fn hello_carries_the_version_the_token_and_the_identity() {
        let info = ClientInfo {
            platform: "native".into(),
            ..Default::default()
        };
        let frame = hello("t", &Bytes::from_static(&[1; 16]), &info);
        let Some(client_frame::Kind::Hello(hello)) = frame.kind else {
            panic!("a Hello");
        };
        assert_eq!(hello.protocol_version, PROTOCOL_VERSION);
        assert_eq!(hello.token, "t");
        assert_eq!(hello.client, Some(info));
        assert_eq!(hello.session_id.as_ref(), &[1; 16]);
    }

    #[test]
    fn welcome_and_error_answer_other_frames_do_not() {
        let welcome = Welcome {
            peer_id: "p".into(),
            ..Default::default()
        };
        assert_eq!(
            answer(&server_frame::Kind::Welcome(welcome.clone())),
            Some(Answer::Welcome(welcome))
        );
        let error = ServerFrame::error(ErrorCode::Unauthenticated, "bad token");
        assert_eq!(
            answer(error.kind.as_ref().unwrap()),
            Some(Answer::Refused {
                code: ErrorCode::Unauthenticated,
                message: "bad token".into()
            })
        );
        let unknown_code = server_frame::Kind::Error(rallypoint_protocol::v1::Error {
            code: 9999,
            message: "?".into(),
        });
        assert!(matches!(
            answer(&unknown_code),
            Some(Answer::Refused {
                code: ErrorCode::Unspecified,
                ..
            })
        ));
        let ack = server_frame::Kind::ProbeAck(Default::default());
        assert_eq!(answer(&ack), None);
    }
}
