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

/// Longest display name shown to a room, in bytes; longer names are cut (at a
/// character boundary). Keeps a full room's roster within one control frame.
pub const MAX_DISPLAY_NAME: usize = 64;

/// Verifies tokens with the deployment's shared key.
#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
    max_lifetime: u64,
}

impl TokenVerifier {
    pub fn from_config(config: &AuthConfig) -> anyhow::Result<Self> {
        let (key, algorithm) = match (&config.jwt_secret, &config.jwt_public_key) {
            (Some(secret), _) => (
                DecodingKey::from_secret(secret.expose().as_bytes()),
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
        validation.validate_nbf = true;
        if let Some(issuer) = &config.jwt_issuer {
            validation.set_issuer(&[issuer]);
        }
        match &config.jwt_audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.set_required_spec_claims(&["exp", "sub", "aud"]);
            }
            None => {
                validation.validate_aud = false;
                validation.set_required_spec_claims(&["exp", "sub"]);
            }
        }
        Ok(TokenVerifier {
            key,
            validation,
            max_lifetime: config.max_token_lifetime.as_secs(),
        })
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
                ErrorKind::ImmatureSignature => AuthError::new(
                    ErrorCode::Unauthenticated,
                    "token is not valid yet (nbf is in the future): check the issuer's clock",
                ),
                ErrorKind::InvalidAudience => AuthError::new(
                    ErrorCode::Unauthenticated,
                    "token audience is not this deployment",
                ),
                ErrorKind::MissingRequiredClaim(claim) => AuthError::new(
                    ErrorCode::Unauthenticated,
                    format!("token lacks the required claim {claim:?}"),
                ),
                ErrorKind::Json(e) => AuthError::new(
                    ErrorCode::Unauthenticated,
                    format!("token claims are not what this relay expects: {e}"),
                ),
                ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                    AuthError::new(
                        ErrorCode::Unauthenticated,
                        "token is not a JWT (three base64url parts: header.claims.signature): \
                     fetch one from the token issuer",
                    )
                }
                other => AuthError::new(
                    ErrorCode::Unauthenticated,
                    format!("token is not valid: {other:?}"),
                ),
            },
        )?;
        let mut claims = data.claims;
        // A claimed issue time in the future would shorten the lifetime seen.
        let now = rallypoint_service::clock::unix_seconds();
        let issued = claims.iat.map_or(now, |iat| iat.min(now));
        if claims.exp.saturating_sub(issued) > self.max_lifetime {
            return Err(AuthError::new(
                ErrorCode::Unauthenticated,
                format!(
                    "token lives longer than the {} s this relay accepts; issue shorter tokens and refresh them",
                    self.max_lifetime
                ),
            ));
        }
        truncate_at_char(&mut claims.name, MAX_DISPLAY_NAME);
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
        self.expiry_with_leeway(claims) > now_unix
    }

    /// When `claims` stop being accepted (unix seconds), overflow-safe.
    pub fn expiry_with_leeway(&self, claims: &Claims) -> u64 {
        claims.exp.saturating_add(self.validation.leeway)
    }
}

fn truncate_at_char(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// Whether `text` has the shape of a [`peer_id`] (24 lowercase hex digits).
pub fn is_peer_id(text: &str) -> bool {
    text.len() == 24 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
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
        verifier_with(None)
    }

    fn verifier_with(audience: Option<&str>) -> TokenVerifier {
        TokenVerifier::from_config(&AuthConfig {
            jwt_secret: Some("s3cret".into()),
            jwt_public_key: None,
            jwt_issuer: None,
            jwt_audience: audience.map(str::to_owned),
            max_token_lifetime: std::time::Duration::from_secs(3600),
        })
        .unwrap()
    }

    fn token(secret: &str, room: &str, exp: u64) -> String {
        sign(
            secret,
            &Claims {
                sub: "u1".into(),
                name: "Ada".into(),
                room: room.into(),
                exp,
                ..Default::default()
            },
        )
    }

    fn sign(secret: &str, claims: &Claims) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "u1".into(),
            name: "Ada".into(),
            room: "r1".into(),
            exp,
            ..Default::default()
        }
    }

    #[test]
    fn an_expiry_at_the_end_of_time_does_not_overflow() {
        let v = verifier();
        assert!(v.still_valid(&claims(u64::MAX), now()));
        assert_eq!(v.expiry_with_leeway(&claims(u64::MAX)), u64::MAX);
    }

    #[test]
    fn tokens_living_longer_than_the_maximum_are_refused() {
        let v = verifier();
        let forever = v.verify(&token("s3cret", "r1", now() + 7200)).unwrap_err();
        assert!(forever.message.contains("longer"), "{}", forever.message);
        let issued_long_ago = Claims {
            iat: Some(now() - 7000),
            ..claims(now() + 600)
        };
        assert!(v.verify(&sign("s3cret", &issued_long_ago)).is_err());
        let claims_to_be_young = Claims {
            iat: Some(now() + 7000),
            ..claims(now() + 7200)
        };
        assert!(v.verify(&sign("s3cret", &claims_to_be_young)).is_err());
        assert!(v.verify(&token("s3cret", "r1", now() + 1800)).is_ok());
    }

    #[test]
    fn not_before_and_audience_are_checked() {
        let early = Claims {
            nbf: Some(now() + 600),
            ..claims(now() + 900)
        };
        let refused = verifier().verify(&sign("s3cret", &early)).unwrap_err();
        assert!(
            refused.message.contains("not valid yet"),
            "{}",
            refused.message
        );

        let for_us = Claims {
            aud: Some("rallypoint".into()),
            ..claims(now() + 60)
        };
        let for_others = Claims {
            aud: Some("elsewhere".into()),
            ..claims(now() + 60)
        };
        let strict = verifier_with(Some("rallypoint"));
        assert!(strict.verify(&sign("s3cret", &for_us)).is_ok());
        assert!(strict.verify(&sign("s3cret", &for_others)).is_err());
        assert!(strict.verify(&token("s3cret", "r1", now() + 60)).is_err());
        // Without a configured audience, tokens with or without one pass.
        assert!(verifier().verify(&sign("s3cret", &for_others)).is_ok());
    }

    #[test]
    fn display_names_are_cut_to_fit_a_roster() {
        let long = Claims {
            name: "é".repeat(100),
            ..claims(now() + 60)
        };
        let name = verifier().verify(&sign("s3cret", &long)).unwrap().name;
        assert!(name.len() <= MAX_DISPLAY_NAME && name.starts_with("éé"));
    }

    #[test]
    fn peer_ids_have_one_shape() {
        assert!(is_peer_id(&peer_id("u1", b"s1")));
        assert!(!is_peer_id("../../etc"));
        assert!(!is_peer_id(&"a".repeat(25)));
    }

    use rallypoint_service::clock::unix_seconds as now;

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
        let garbage = v.verify("garbage").unwrap_err();
        assert_eq!(garbage.code, ErrorCode::Unauthenticated);
        assert!(garbage.message.contains("not a JWT"), "{}", garbage.message);
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
