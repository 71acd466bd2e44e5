//! ASN, ISP and country of a client address, from MaxMind-format databases.
//!
//! Several free databases share the format but not the field names, so each
//! field is looked up by every known path:
//!
//! | database                      | ASN                          | ISP / org                         | country            |
//! |-------------------------------|------------------------------|-----------------------------------|--------------------|
//! | GeoLite2 / DB-IP Lite ASN     | `autonomous_system_number`   | `autonomous_system_organization`  | –                  |
//! | GeoIP2 ISP                    | `autonomous_system_number`   | `isp`                             | –                  |
//! | GeoLite2 / DB-IP Country/City | –                            | –                                 | `country.iso_code` |
//! | IPinfo Lite                   | `asn` ("AS13335")            | `as_name`                         | `country_code`     |
//!
//! Databases are opened once at start; a missing or unreadable path is a start-up
//! error (a relay silently reporting "unknown" everywhere would be worse).
//! Addresses no database knows (private ranges, loopback) are "unknown".

use std::net::IpAddr;
use std::path::Path;

use maxminddb::{PathElement, Reader};

pub const UNKNOWN: &str = "unknown";

/// What the edge derives from a client address; the address itself is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    pub asn: u32,
    pub isp: String,
    pub country: String,
}

impl Default for NetworkInfo {
    fn default() -> Self {
        NetworkInfo {
            asn: 0,
            isp: UNKNOWN.into(),
            country: UNKNOWN.into(),
        }
    }
}

#[derive(Default)]
pub struct GeoLookup {
    readers: Vec<Reader<Vec<u8>>>,
}

impl GeoLookup {
    pub fn open(paths: &[impl AsRef<Path>]) -> anyhow::Result<Self> {
        let readers = paths
            .iter()
            .map(|path| {
                let path = path.as_ref();
                Reader::open_readfile(path).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot open MaxMind database {}: {e}; fix --geoip-db or remove it",
                        path.display()
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(GeoLookup { readers })
    }

    pub fn lookup(&self, ip: IpAddr) -> NetworkInfo {
        let mut info = NetworkInfo::default();
        for reader in &self.readers {
            let Ok(result) = reader.lookup(ip) else {
                continue;
            };
            let text = |path: &[PathElement<'_>]| -> Option<String> {
                result
                    .decode_path::<String>(path)
                    .ok()
                    .flatten()
                    .filter(|s| !s.is_empty())
            };
            if info.asn == 0 {
                if let Some(asn) = result
                    .decode_path::<u32>(&[PathElement::Key("autonomous_system_number")])
                    .ok()
                    .flatten()
                {
                    info.asn = asn;
                } else if let Some(asn) = text(&[PathElement::Key("asn")])
                    .and_then(|s| s.trim_start_matches("AS").parse().ok())
                {
                    info.asn = asn;
                }
            }
            if info.isp == UNKNOWN
                && let Some(isp) = text(&[PathElement::Key("isp")])
                    .or_else(|| text(&[PathElement::Key("autonomous_system_organization")]))
                    .or_else(|| text(&[PathElement::Key("as_name")]))
            {
                info.isp = isp;
            }
            if info.country == UNKNOWN
                && let Some(country) =
                    text(&[PathElement::Key("country"), PathElement::Key("iso_code")])
                        .or_else(|| text(&[PathElement::Key("country_code")]))
            {
                info.country = country;
            }
        }
        info
    }
}

/// The client address to look up: the socket peer, unless the peer is a
/// trusted proxy, in which case the right-most untrusted X-Forwarded-For hop.
pub fn client_address(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    header
        .rsplit(',')
        .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
        .find(|hop| !trusted.contains(hop))
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        let spoofed = Some("198.51.100.1, 203.0.113.7");
        assert_eq!(client_address(client, spoofed, &[proxy]), client);
        assert_eq!(
            client_address(proxy, spoofed, &[proxy]),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_address(proxy, None, &[proxy]), proxy);
    }

    #[test]
    fn without_databases_everything_is_unknown() {
        let info = GeoLookup::default().lookup("8.8.8.8".parse().unwrap());
        assert_eq!(info, NetworkInfo::default());
    }
}
