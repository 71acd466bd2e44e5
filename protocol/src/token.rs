//! The token format: claims of the JWT a client presents in `Hello`.
//!
//! Minted by the deployment's issuer (`rallypoint up` runs a development
//! issuer), verified by every relay with a key all regions share.
//!
//! | claim  | meaning                                  |
//! |--------|------------------------------------------|
//! | `sub`  | user id                                  |
//! | `name` | display name shown to the room           |
//! | `room` | the one room this token admits to        |
//! | `exp`  | expiry, unix seconds                     |
//! | `iat`  | issued at, unix seconds (optional)       |
//! | `iss`  | issuer (optional; relays may require one) |
//! | `nbf`  | not before, unix seconds (optional)      |
//! | `aud`  | audience (optional; relays may require one) |
//! | `synthetic` | `true` only in tokens minted for `rallypoint simulate` (optional) |
//!
//! `synthetic` lets a token's reports be labelled synthetic and carry the
//! network context (country, ASN, ISP) the simulator invented; a relay refuses
//! synthetic reports from any other token, or anyone could put made-up
//! networks on the dashboards. Issuers for browsers never set it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub name: String,
    pub room: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub synthetic: bool,
}
