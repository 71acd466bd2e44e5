//! Candidates: every relay endpoint a client may elect.
//!
//! The list is served by the deployment (`rallypoint up` serves it at
//! `/candidates.json`) and looks like:
//!
//! ```json
//! {"candidates": [
//!   {"region": "us-east", "relay_id": "us-east-ws-0", "transport": "websocket",
//!    "url": "ws://127.0.0.1:18080/ws"},
//!   {"region": "us-east", "relay_id": "us-east-wt-0", "transport": "webtransport",
//!    "url": "https://127.0.0.1:14433/", "cert_hash": "3f2a…"}
//! ]}
//! ```
//!
//! `cert_hash` (hex SHA-256) is present only for development relays with
//! self-signed certificates; `shadow: true` marks a not-yet-launched relay that
//! clients measure for capacity planning but never elect.

use serde::{Deserialize, Serialize};

/// The transport enum's one home is the protocol crate.
pub use rallypoint_protocol::TransportKind;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub region: String,
    pub relay_id: String,
    pub transport: TransportKind,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_hash: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
}

impl Candidate {
    /// `region/transport` — how people refer to a candidate in tables and logs.
    pub fn label(&self) -> String {
        format!("{}/{}", self.region, self.transport.short())
    }

    /// The certificate hash as bytes, if the candidate carries a valid one.
    pub fn cert_hash_bytes(&self) -> Option<[u8; 32]> {
        rallypoint_protocol::unhex(self.cert_hash.as_deref()?)?
            .try_into()
            .ok()
    }

    /// host[:port] of the URL, for reports (no path, no credentials).
    pub fn endpoint(&self) -> String {
        let rest = self.url.split("://").nth(1).unwrap_or(&self.url);
        let host = rest.split('/').next().unwrap_or(rest);
        host.rsplit('@').next().unwrap_or(host).to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CandidateList {
    pub candidates: Vec<Candidate>,
}

/// Why a candidate list cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CandidateListError {
    #[error("candidate list is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("candidate list is empty: there is nothing to elect")]
    Empty,
    #[error("candidate {index} ({label}): {problem}")]
    Invalid {
        index: usize,
        label: String,
        problem: String,
    },
}

impl CandidateList {
    pub fn parse(json: &str) -> Result<Self, CandidateListError> {
        let list: CandidateList = serde_json::from_str(json)?;
        list.validate()?;
        Ok(list)
    }

    pub fn validate(&self) -> Result<(), CandidateListError> {
        if self.candidates.is_empty() {
            return Err(CandidateListError::Empty);
        }
        if self.candidates.len() > rallypoint_protocol::limits::MAX_REPORT_CANDIDATES {
            return Err(CandidateListError::Invalid {
                index: self.candidates.len() - 1,
                label: "…".into(),
                problem: format!(
                    "more than {} candidates",
                    rallypoint_protocol::limits::MAX_REPORT_CANDIDATES
                ),
            });
        }
        for (index, c) in self.candidates.iter().enumerate() {
            let invalid = |problem: String| CandidateListError::Invalid {
                index,
                label: c.label(),
                problem,
            };
            rallypoint_protocol::subjects::validate_region(&c.region)
                .map_err(|e| invalid(e.to_string()))?;
            if c.relay_id.is_empty() {
                return Err(invalid("relay_id is empty".into()));
            }
            let scheme_ok = match c.transport {
                TransportKind::WebSocket => {
                    c.url.starts_with("ws://") || c.url.starts_with("wss://")
                }
                TransportKind::WebTransport => c.url.starts_with("https://"),
            };
            if !scheme_ok {
                return Err(invalid(format!(
                    "url {:?} does not fit the transport (ws:// or wss:// for websocket, https:// for webtransport)",
                    c.url
                )));
            }
            if c.cert_hash.is_some() && c.cert_hash_bytes().is_none() {
                return Err(invalid("cert_hash must be 64 hex characters".into()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates_a_list() {
        let list = CandidateList::parse(
            r#"{"candidates":[
                {"region":"us-east","relay_id":"a","transport":"websocket","url":"ws://127.0.0.1:1/ws"},
                {"region":"singapore","relay_id":"b","transport":"wt","url":"https://127.0.0.1:2/",
                 "cert_hash":"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"}]}"#,
        )
        .unwrap();
        assert_eq!(list.candidates[1].transport, TransportKind::WebTransport);
        assert_eq!(list.candidates[1].cert_hash_bytes().unwrap()[1], 0x11);
        assert_eq!(list.candidates[0].endpoint(), "127.0.0.1:1");
        assert_eq!(list.candidates[1].label(), "singapore/wt");
    }

    #[test]
    fn refuses_lists_that_cannot_work() {
        assert!(matches!(
            CandidateList::parse(r#"{"candidates":[]}"#),
            Err(CandidateListError::Empty)
        ));
        let err = CandidateList::parse(
            r#"{"candidates":[{"region":"us-east","relay_id":"a","transport":"websocket","url":"https://x/"}]}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("does not fit the transport"),
            "{err}"
        );
    }
}
