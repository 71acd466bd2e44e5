//! Where a client command gets its candidates and token from.

use std::path::PathBuf;

use anyhow::Context as _;
use rallypoint_client::{Candidate, CandidateList, TransportKind};

#[derive(Debug, Clone, clap::Args)]
pub struct Source {
    /// A running stack (`rallypoint up`): its candidate list and, unless
    /// `--token` is given, a development token.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8090",
        conflicts_with = "candidates"
    )]
    pub stack: String,

    /// Candidate list file (the `/candidates.json` format) instead of a stack.
    #[arg(long)]
    pub candidates: Option<PathBuf>,

    /// Candidate URLs instead of a stack: `ws://host:port/ws` or
    /// `https://host:port/` (WebTransport; add `#cert=<sha256 hex>` for a
    /// self-signed relay). Prefix `region@` to name the region.
    #[arg(value_name = "URL")]
    pub urls: Vec<String>,

    /// Token (JWT); from the stack's development issuer when not given
    /// (`simulate` mints its own instead: see `--jwt-secret`).
    #[arg(long, env = "RALLYPOINT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl Source {
    /// Resolves the candidates and a token for `room` as `name`.
    pub async fn resolve(
        &self,
        room: &str,
        name: &str,
    ) -> anyhow::Result<(Vec<Candidate>, String)> {
        let candidates = if !self.urls.is_empty() {
            parse_urls(&self.urls)?
        } else if let Some(path) = &self.candidates {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read candidate list {}", path.display()))?;
            CandidateList::parse(&text)
                .with_context(|| format!("candidate list {}", path.display()))?
                .candidates
        } else {
            let url = format!("{}/candidates.json", self.stack.trim_end_matches('/'));
            let text = reqwest::get(&url)
                .await
                .and_then(|r| r.error_for_status())
                .with_context(|| format!("cannot fetch {url}; is `rallypoint up` running?"))?
                .text()
                .await?;
            CandidateList::parse(&text)
                .with_context(|| format!("candidate list from {url}"))?
                .candidates
        };
        let token = match &self.token {
            Some(token) => token.clone(),
            None => {
                let url = format!("{}/token", self.stack.trim_end_matches('/'));
                reqwest::Client::new()
                    .get(&url)
                    .query(&[("room", room), ("name", name)])
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .with_context(|| {
                        format!("cannot get a development token from {url}; pass --token or start `rallypoint up`")
                    })?
                    .text()
                    .await?
            }
        };
        Ok((candidates, token))
    }
}

pub(crate) fn parse_urls(urls: &[String]) -> anyhow::Result<Vec<Candidate>> {
    let candidates: Vec<Candidate> = urls
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let (region, url) = match spec.split_once('@') {
                Some((region, url)) if !region.contains("://") => (region.to_owned(), url),
                _ => (format!("region-{i}"), spec.as_str()),
            };
            let (url, cert_hash) = match url.split_once("#cert=") {
                Some((url, hash)) => (url, Some(hash.to_owned())),
                None => (url, None),
            };
            let transport = if url.starts_with("https://") {
                TransportKind::WebTransport
            } else {
                TransportKind::WebSocket
            };
            Candidate {
                relay_id: format!("{region}-{}", transport.short()),
                region,
                transport,
                url: url.to_owned(),
                cert_hash,
                shadow: false,
            }
        })
        .collect();
    let list = CandidateList { candidates };
    list.validate().context("candidate URLs")?;
    Ok(list.candidates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_candidate_urls() {
        let c = parse_urls(&[
            "singapore@ws://127.0.0.1:1/ws".into(),
            "https://127.0.0.1:2/#cert=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff".into(),
        ])
        .unwrap();
        assert_eq!(c[0].region, "singapore");
        assert_eq!(c[1].transport, TransportKind::WebTransport);
        assert!(c[1].cert_hash_bytes().is_some());
        assert!(parse_urls(&["ftp://x".into()]).is_err());
    }
}
