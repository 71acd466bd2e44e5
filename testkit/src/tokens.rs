//! The development token issuer: mints HS256 JWTs with the claims relays
//! verify (`rallypoint_protocol::token::Claims`). Production deployments mint
//! tokens in their own backend with the same shared secret or an Ed25519 key.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rallypoint_protocol::token::Claims;

/// The issuer name development tokens carry.
pub const DEV_ISSUER: &str = "rallypoint-dev";

pub struct DevIssuer {
    key: EncodingKey,
}

impl DevIssuer {
    pub fn new(secret: &str) -> Self {
        DevIssuer {
            key: EncodingKey::from_secret(secret.as_bytes()),
        }
    }

    /// A token admitting `user` (shown as `name`) to `room` for `ttl`: what
    /// browsers get. It may not send synthetic reports.
    pub fn mint(&self, room: &str, user: &str, name: &str, ttl: Duration) -> String {
        self.mint_claims(&Self::claims(room, user, name, ttl))
    }

    /// Like [`DevIssuer::mint`], with the `synthetic` claim: for
    /// `rallypoint simulate` only, whose reports are labelled synthetic and
    /// carry invented networks. Never hand one to a browser.
    pub fn mint_simulator(&self, room: &str, user: &str, name: &str, ttl: Duration) -> String {
        self.mint_claims(&Claims {
            synthetic: true,
            ..Self::claims(room, user, name, ttl)
        })
    }

    fn claims(room: &str, user: &str, name: &str, ttl: Duration) -> Claims {
        let now = rallypoint_service::clock::unix_seconds();
        Claims {
            sub: user.to_owned(),
            name: name.to_owned(),
            room: room.to_owned(),
            exp: now + ttl.as_secs(),
            iss: Some(DEV_ISSUER.to_owned()),
            iat: Some(now),
            ..Default::default()
        }
    }

    /// A token with exactly these claims (tests mint expired ones with it).
    pub fn mint_claims(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.key)
            .expect("HS256 signing with an in-memory key cannot fail")
    }
}
