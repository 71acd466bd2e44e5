//! Token verification and participant identity.
//!
//! A client authenticates with a JWT minted by the deployment's issuer and
//! verified by every relay in every region with a shared key: an HS256 secret,
//! or an Ed25519 public key when relays should not be able to mint tokens.
//!
//! The claims are `rallypoint_protocol::token::Claims`.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rallypoint_protocol::token::Claims;
use rallypoint_protocol::v1::ErrorCode;
use sha2::{Digest, Sha256};

use crate::config::AuthConfig;

/// Why a token was refused, with the code the client sees.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct AuthError {
    pub code: ErrorCode,
    pub message: String,
}

impl AuthError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        AuthError {
            code,
            message: message.into(),
        }
    }
}

/// Verifies tokens with the deployment's shared key.
#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl TokenVerifier {
    pub fn from_config(config: &AuthConfig) -> anyhow::Result<Self> {
        let (key, algorithm) = match (&config.jwt_secret, &config.jwt_public_key) {
            (Some(secret), _) => (
                DecodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
            ),
            (None, Some(path)) => {
                let pem = std::fs::read(path).map_err(|e| {
                    anyhow::anyhow!("cannot read --jwt-public-key {}: {e}", path.display())
                })?;
                let key = DecodingKey::from_ed_pem(&pem).map_err(|e| {
                    anyhow::anyhow!(
                        "--jwt-public-key {} is not an Ed25519 public key in PEM: {e}",
                        path.display()
                    )
                })?;
                (key, Algorithm::EdDSA)
            }
            (None, None) => anyhow::bail!("no token key configured"),
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if let Some(issuer) = &config.jwt_issuer {
            validation.set_issuer(&[issuer]);
        }
        Ok(TokenVerifier { key, validation })
    }

    /// Checks signature, expiry and issuer, then that the claims are usable.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::new(
                ErrorCode::Unauthenticated,
                "no token: Hello.token must carry a JWT from the token issuer",
            ));
        }
        if token.len() > rallypoint_protocol::limits::MAX_TOKEN {
            return Err(AuthError::new(
                ErrorCode::Unauthenticated,
                "token is longer than 8 KiB",
            ));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::new(
                    ErrorCode::TokenExpired,
                    "token expired: fetch a new one from the token issuer and reconnect",
                ),
                ErrorKind::InvalidSignature => AuthError::new(
                    ErrorCode::Unauthenticated,
                    "token signature is invalid: it was not issued for this deployment",
                ),
                ErrorKind::InvalidIssuer => AuthError::new(
                    ErrorCode::Unauthenticated,
                    "token issuer is not the one this relay trusts",
                ),
                ErrorKind::MissingRequiredClaim(claim) => AuthError::new(
                    ErrorCode::Unauthenticated,
                    format!("token lacks the required claim {claim:?}"),
                ),
                other => AuthError::new(
                    ErrorCode::Unauthenticated,
                    format!("token is not valid: {other:?}"),
                ),
            },
        )?;
        let claims = data.claims;
        rallypoint_protocol::subjects::validate_room(&claims.room).map_err(|e| {
            AuthError::new(ErrorCode::Unauthenticated, format!("token room claim: {e}"))
        })?;
        if claims.sub.is_empty() {
            return Err(AuthError::new(
                ErrorCode::Unauthenticated,
                "token has an empty user id (sub)",
            ));
        }
        Ok(claims)
    }

    /// True while `claims` has not expired (checked again at Join: a probe-only
    /// connection may sit for a while before it is elected).
    pub fn still_valid(&self, claims: &Claims, now_unix: u64) -> bool {
        claims.exp + self.validation.leeway > now_unix
    }
}

/// The participant's id in its room: derived from the token's user id and the
/// client's session id, so the same client keeps the same id on every relay it
/// moves to, while two tabs of one user are two participants. Hex, so it is a
/// valid NATS subject token.
pub fn peer_id(user_id: &str, session_id: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(user_id.as_bytes());
    hasher.update([0]);
    hasher.update(session_id);
    let digest = hasher.finalize();
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    fn verifier() -> TokenVerifier {
        TokenVerifier::from_config(&AuthConfig {
            jwt_secret: Some("s3cret".into()),
            jwt_public_key: None,
            jwt_issuer: None,
        })
        .unwrap()
    }

    fn token(secret: &str, room: &str, exp: u64) -> String {
        let claims = Claims {
            sub: "u1".into(),
            name: "Ada".into(),
            room: room.into(),
            exp,
            iss: None,
            iat: None,
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn accepts_a_good_token() {
        let claims = verifier()
            .verify(&token("s3cret", "r1", now() + 60))
            .unwrap();
        assert_eq!(claims.room, "r1");
    }

    #[test]
    fn refuses_bad_tokens_with_the_right_code() {
        let v = verifier();
        assert_eq!(
            v.verify(&token("s3cret", "r1", now() - 600))
                .unwrap_err()
                .code,
            ErrorCode::TokenExpired
        );
        assert_eq!(
            v.verify(&token("other", "r1", now() + 60))
                .unwrap_err()
                .code,
            ErrorCode::Unauthenticated
        );
        assert_eq!(
            v.verify("garbage").unwrap_err().code,
            ErrorCode::Unauthenticated
        );
        assert!(
            v.verify(&token("s3cret", "bad.room", now() + 60))
                .unwrap_err()
                .message
                .contains("room")
        );
    }

    #[test]
    fn peer_ids_are_stable_per_session_and_distinct_across_sessions() {
        assert_eq!(peer_id("u1", b"s1"), peer_id("u1", b"s1"));
        assert_ne!(peer_id("u1", b"s1"), peer_id("u1", b"s2"));
        assert_ne!(peer_id("u1", b"s1"), peer_id("u2", b"s1"));
        assert_eq!(peer_id("u1", b"s1").len(), 24);
    }
}
