//! The development token issuer: mints JWTs with the claims relays verify
//! (`rallypoint_protocol::token::Claims`), signed HS256 with a shared secret
//! or EdDSA with an Ed25519 private key (relays then hold only the public
//! key). Production deployments mint tokens in their own backend the same
//! way; `rallypoint load` mints with this against a deployment.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rallypoint_protocol::token::Claims;

/// The issuer name development tokens carry.
pub const DEV_ISSUER: &str = "rallypoint-dev";

pub struct DevIssuer {
    key: EncodingKey,
    algorithm: Algorithm,
    issuer: String,
}

impl DevIssuer {
    /// Signs HS256 with `secret`, as relays with `--jwt-secret` verify.
    pub fn new(secret: &str) -> Self {
        DevIssuer {
            key: EncodingKey::from_secret(secret.as_bytes()),
            algorithm: Algorithm::HS256,
            issuer: DEV_ISSUER.to_owned(),
        }
    }

    /// Signs EdDSA with an Ed25519 private key (PKCS#8 PEM), as relays with
    /// the matching `--jwt-public-key` verify.
    pub fn from_ed25519_pem(private_key_pem: &[u8]) -> anyhow::Result<Self> {
        let key = EncodingKey::from_ed_pem(private_key_pem)
            .map_err(|e| anyhow::anyhow!("not an Ed25519 private key in PKCS#8 PEM: {e}"))?;
        Ok(DevIssuer {
            key,
            algorithm: Algorithm::EdDSA,
            issuer: DEV_ISSUER.to_owned(),
        })
    }

    /// Tokens name `issuer` (`iss`) instead of [`DEV_ISSUER`]: a relay with
    /// `--jwt-issuer` accepts only its own.
    pub fn with_issuer(mut self, issuer: &str) -> Self {
        self.issuer = issuer.to_owned();
        self
    }

    /// A token admitting `user` (shown as `name`) to `room` for `ttl`: what
    /// browsers get. It may not send synthetic reports.
    pub fn mint(&self, room: &str, user: &str, name: &str, ttl: Duration) -> String {
        self.mint_claims(&self.claims(room, user, name, ttl))
    }

    /// Like [`DevIssuer::mint`], with the `synthetic` claim: for
    /// `rallypoint simulate` only, whose reports are labelled synthetic and
    /// carry invented networks. Never hand one to a browser.
    pub fn mint_simulator(&self, room: &str, user: &str, name: &str, ttl: Duration) -> String {
        self.mint_claims(&Claims {
            synthetic: true,
            ..self.claims(room, user, name, ttl)
        })
    }

    fn claims(&self, room: &str, user: &str, name: &str, ttl: Duration) -> Claims {
        let now = rallypoint_service::clock::unix_seconds();
        Claims {
            sub: user.to_owned(),
            name: name.to_owned(),
            room: room.to_owned(),
            exp: now + ttl.as_secs(),
            iss: Some(self.issuer.clone()),
            iat: Some(now),
            ..Default::default()
        }
    }

    /// A token with exactly these claims (tests mint expired ones with it).
    pub fn mint_claims(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(self.algorithm), claims, &self.key)
            .expect("signing with an in-memory key cannot fail")
    }
}

/// A fresh Ed25519 key pair as PEM: the private key (PKCS#8, what a token
/// issuer signs with) and the public key (SubjectPublicKeyInfo, what relays
/// get as `--jwt-public-key`).
pub fn ed25519_key_pair() -> anyhow::Result<(String, String)> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}
