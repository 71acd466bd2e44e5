//! Simulated client locations: a delay proxy in front of every relay, with
//! the link the scenario gives the relay's region (and transport, where a
//! firewall or a lossy UDP path treats it differently). A client that uses a
//! location's candidate list experiences the world from there.

use rallypoint_client::{Candidate, TransportKind};

use crate::proxy::{AccessLine, Path, Scenario, TcpDelayProxy, UdpDelayProxy};
use crate::relays::RelayProcess;

/// One client location: its candidate list and the proxies behind it.
pub struct Location {
    pub name: String,
    /// URL-safe name (`/candidates/<slug>.json`).
    pub slug: String,
    pub candidates: Vec<Candidate>,
    /// The proxies, kept for their lifetime and their timing statistics.
    pub tcp_proxies: Vec<TcpDelayProxy>,
    pub udp_proxies: Vec<UdpDelayProxy>,
}

impl Location {
    /// Puts a proxy with the scenario's link in front of every relay
    /// candidate, each behind the location's one access line.
    pub fn new(scenario: &Scenario, relays: &[RelayProcess], seed: u64) -> anyhow::Result<Self> {
        scenario
            .validate()
            .map_err(|e| anyhow::anyhow!("scenario {:?}: {e}", scenario.name))?;
        let access = AccessLine::new(scenario.access.as_ref());
        let (mut tcp_proxies, mut udp_proxies) = (Vec::new(), Vec::new());
        let mut candidates = Vec::new();
        for (i, relay) in relays.iter().enumerate() {
            let region = &relay.spec.region;
            let link = scenario.link(region).ok_or_else(|| {
                anyhow::anyhow!(
                    "scenario {:?} has no link for region {region}; add \"{region}\" to its links",
                    scenario.name
                )
            })?;
            for mut candidate in relay.candidates() {
                let seed = seed
                    .wrapping_mul(31)
                    .wrapping_add(i as u64 * 2 + candidate.transport as u64);
                let listen = "127.0.0.1:0".parse()?;
                let path = Path::new(link.for_transport(candidate.transport), &access);
                match candidate.transport {
                    TransportKind::WebSocket => {
                        let upstream = format!("127.0.0.1:{}", relay.http_port).parse()?;
                        let proxy = TcpDelayProxy::start(listen, upstream, path, seed)?;
                        candidate.url = format!("ws://{}/ws", proxy.local_addr());
                        tcp_proxies.push(proxy);
                    }
                    TransportKind::WebTransport => {
                        let upstream = format!("127.0.0.1:{}", relay.wt_port).parse()?;
                        let proxy = UdpDelayProxy::start(listen, upstream, path, seed)?;
                        candidate.url = format!("https://{}/", proxy.local_addr());
                        udp_proxies.push(proxy);
                    }
                }
                candidates.push(candidate);
            }
        }
        Ok(Location {
            slug: slug(&scenario.name),
            name: scenario.name.clone(),
            candidates,
            tcp_proxies,
            udp_proxies,
        })
    }
}

/// "client in Singapore" -> "client-in-singapore".
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn slugs() {
        assert_eq!(super::slug("client in Singapore"), "client-in-singapore");
        assert_eq!(super::slug("  NYC / fiber "), "nyc-fiber");
    }
}
