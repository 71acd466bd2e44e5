//! Every relay setting, as a clap flag with an environment fallback, so the same
//! binary runs from a shell, from `rallypoint up` and from a Helm chart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};
use rallypoint_service::parse_duration;

/// A regional rallypoint relay.
///
/// Clients reach it over WebSocket (`/ws` on the HTTP listener) and/or
/// WebTransport (HTTP/3 on the WebTransport listener). Rooms fan out over the
/// NATS super-cluster, so participants on relays in other regions share rooms.
#[derive(Debug, Clone, Parser)]
#[command(name = "rallypoint-relay", version, about, long_about = None)]
pub struct RelayConfig {
    /// Region this relay serves, e.g. `us-east`. Becomes part of NATS subjects.
    #[arg(long, env = "RALLYPOINT_REGION")]
    pub region: String,

    /// Unique id of this relay across all regions, e.g. `us-east-ws-0`.
    #[arg(long, env = "RALLYPOINT_RELAY_ID")]
    pub relay_id: String,

    /// This region's NATS cluster: URLs, credential, CA (`--nats-*`).
    #[command(flatten)]
    pub nats: rallypoint_service::nats::NatsArgs,

    /// Which client transports to serve: `ws` (WebSocket over the HTTP
    /// listener), `wt` (WebTransport over HTTP/3).
    #[arg(
        long,
        env = "RALLYPOINT_TRANSPORTS",
        value_delimiter = ',',
        default_value = "ws,wt"
    )]
    pub transports: Vec<TransportKind>,

    /// Public HTTP listener: `/ws` (when WebSocket is served) and `/cert-hash`,
    /// nothing else.
    #[arg(long, env = "RALLYPOINT_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
    pub http_listen: SocketAddr,

    /// Admin listener, for operators and probes only: `/healthz`, `/readyz`,
    /// `/stats`. Keep it off the public network.
    #[arg(
        long,
        env = "RALLYPOINT_ADMIN_LISTEN",
        default_value = "127.0.0.1:9091"
    )]
    pub admin_listen: SocketAddr,

    /// WebTransport (HTTP/3 over QUIC, UDP) listener.
    #[arg(long, env = "RALLYPOINT_WT_LISTEN", default_value = "127.0.0.1:4433")]
    pub wt_listen: SocketAddr,

    #[command(flatten)]
    pub tls: TlsConfig,

    #[command(flatten)]
    pub auth: AuthConfig,

    #[command(flatten)]
    pub limits: Limits,

    #[command(flatten)]
    pub telemetry: TelemetryIntakeConfig,

    /// How long to keep serving after SIGTERM so clients can move (they receive
    /// Drain at once); the relay exits earlier when every client has left.
    #[arg(long, env = "RALLYPOINT_DRAIN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub drain_grace: Duration,
}

pub use rallypoint_protocol::TransportKind;

#[derive(Debug, Clone, Args)]
pub struct TlsConfig {
    /// Path to the PEM certificate chain for WebTransport (and the HTTP listener with
    /// `--ws-tls`). Without it (and the key), the relay makes a self-signed
    /// development identity (ECDSA P-256, valid 13 days) whose SHA-256 it
    /// serves at `/cert-hash` for `serverCertificateHashes`.
    #[arg(long, env = "RALLYPOINT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Path to the PEM private key matching `--tls-cert`.
    #[arg(long, env = "RALLYPOINT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Keep the development identity in this directory (cert.pem, key.pem) and
    /// reuse it across restarts while it has more than a day left, so the
    /// certificate hash clients were given stays valid.
    #[arg(long, env = "RALLYPOINT_DEV_IDENTITY_DIR")]
    pub dev_identity_dir: Option<PathBuf>,

    /// Serve the HTTP listener (`/ws` and every other route) over TLS with
    /// the same identity, for `wss://` with no TLS-terminating proxy in
    /// front. Off by default: behind an ingress or load balancer that
    /// terminates TLS the relay speaks plain HTTP.
    #[arg(long, env = "RALLYPOINT_WS_TLS")]
    pub ws_tls: bool,

    /// Extra subject alternative names for the development certificate.
    #[arg(
        long,
        env = "RALLYPOINT_DEV_CERT_NAMES",
        value_delimiter = ',',
        default_value = "localhost,127.0.0.1,::1"
    )]
    pub dev_cert_names: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct AuthConfig {
    /// HS256 secret shared by all regions' relays and the token issuer.
    #[arg(long, env = "RALLYPOINT_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<rallypoint_service::secret::Secret>,

    /// Path to an EdDSA (Ed25519) public key, a PEM file, instead of an HS256
    /// secret: relays can verify tokens without being able to mint them.
    #[arg(long, env = "RALLYPOINT_JWT_PUBLIC_KEY", conflicts_with = "jwt_secret")]
    pub jwt_public_key: Option<PathBuf>,

    /// Expected `iss` claim; unset accepts any issuer.
    #[arg(long, env = "RALLYPOINT_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Expected `aud` claim; unset accepts tokens with or without one.
    #[arg(long, env = "RALLYPOINT_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Longest token lifetime accepted (`exp` minus `iat`, or minus now when
    /// the token has no `iat`). Calls outlive tokens by refreshing them.
    #[arg(long, env = "RALLYPOINT_MAX_TOKEN_LIFETIME", default_value = "24h", value_parser = parse_duration)]
    pub max_token_lifetime: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Outbound media frames queued per connection before that receiver's media
    /// is dropped (and a keyframe requested). Control frames are never dropped.
    /// WebTransport media that fits a datagram skips this queue: its bound is
    /// the QUIC connection's datagram send buffer.
    #[arg(long, env = "RALLYPOINT_MEDIA_QUEUE", default_value_t = 256)]
    pub media_queue: usize,

    /// Outbound control frames queued per connection; a client this far behind
    /// on control is disconnected.
    #[arg(long, env = "RALLYPOINT_CONTROL_QUEUE", default_value_t = 256)]
    pub control_queue: usize,

    /// Most concurrent client connections, counted from accept (TCP) or the
    /// first QUIC packet, before any authentication: a hard cap, more are
    /// closed at once.
    #[arg(long, env = "RALLYPOINT_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Most concurrent connections of one token subject (user id).
    #[arg(
        long,
        env = "RALLYPOINT_MAX_CONNECTIONS_PER_TOKEN",
        default_value_t = 16
    )]
    pub max_connections_per_token: usize,

    /// Deadline for a TLS handshake, or a QUIC handshake plus the WebTransport
    /// CONNECT, and for a complete HTTP request header.
    #[arg(long, env = "RALLYPOINT_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// A connection must authenticate (Hello) within this time.
    #[arg(long, env = "RALLYPOINT_HELLO_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub hello_timeout: Duration,

    /// Most participants in one room; a Join beyond gets a RoomFull error.
    /// Keeps the Joined roster well under the 64 KiB control-frame limit.
    #[arg(long, env = "RALLYPOINT_MAX_ROOM_SIZE", default_value_t = 100)]
    pub max_room_size: usize,

    /// Join, Leave and Refresh frames per token subject (user) per minute,
    /// across its connections (bursts of as many).
    #[arg(long, env = "RALLYPOINT_ROOM_OPS_PER_MINUTE", default_value_t = 20)]
    pub room_ops_per_minute: u32,

    /// Preparations for a move (`Join.prepare`) per token subject per
    /// minute, across its connections (bursts of as many). A client on a
    /// rough path prepares up to about twice a second; one over the budget
    /// is not made, and its move, if it comes, is a plain Join.
    #[arg(long, env = "RALLYPOINT_PREPARES_PER_MINUTE", default_value_t = 120)]
    pub prepares_per_minute: u32,

    /// Keyframe requests per connection per second (bursts of ten times as
    /// many, for the requests after a move).
    #[arg(
        long,
        env = "RALLYPOINT_KEYFRAME_REQUESTS_PER_SECOND",
        default_value_t = 5
    )]
    pub keyframe_requests_per_second: u32,

    /// Probes answered per connection per second (bursts of three seconds'
    /// worth: a stalled WebSocket delivers them at once), said to each
    /// client in its Welcome. Clients probe every 200 ms, every 50 ms while
    /// they send media (plus five at once when their traffic falls silent
    /// or probes go unanswered), faster early in an election, and a standby
    /// every second; while their relay loses probes, a standby in another
    /// region and a WebTransport relay 50 times a second, never beyond 80%
    /// of this (within a budget per decision): the lower it is, the longer
    /// a call stays on a lossy relay. At least 25, what clients that do not
    /// read it assume.
    #[arg(
        long,
        env = "RALLYPOINT_PROBES_PER_SECOND",
        default_value_t = rallypoint_protocol::limits::PROBES_ANSWERED_PER_SECOND,
        value_parser = clap::value_parser!(u32).range(25..)
    )]
    pub probes_per_second: u32,

    /// Media frames per sender per second (bursts of as many): audio, camera
    /// and screen together are about 110.
    #[arg(
        long,
        env = "RALLYPOINT_MEDIA_FRAMES_PER_SECOND",
        default_value_t = 250
    )]
    pub media_frames_per_second: u32,

    /// Media payload bytes per sender per second, with bursts of up to twice
    /// the media payload limit (keyframes). The default is 8 Mbit/s.
    #[arg(
        long,
        env = "RALLYPOINT_MEDIA_BYTES_PER_SECOND",
        default_value_t = 1_000_000
    )]
    pub media_bytes_per_second: u32,

    /// After NATS has been unreachable this long the relay stops answering
    /// probes and tells its in-room clients to move (Drain): a relay that
    /// cannot reach the room must not win elections.
    #[arg(long, env = "RALLYPOINT_NATS_LOSS_GRACE", default_value = "2s", value_parser = parse_duration)]
    pub nats_loss_grace: Duration,

    /// A participant whose connection vanished is reported as left after this
    /// long, unless it reappears on some relay first (then it moved).
    #[arg(long, env = "RALLYPOINT_PRESENCE_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub presence_grace: Duration,

    /// How often a relay states its roster of each room it serves. The same
    /// for every relay of a deployment: a relay not heard from in a room for
    /// three beats and a second no longer gets the room's media.
    #[arg(long, env = "RALLYPOINT_ROSTER_BEAT", default_value = "1s", value_parser = parse_duration)]
    pub roster_beat: Duration,

    /// Publish every local media frame to NATS, even for rooms no other
    /// relay serves. Only while rolling out over relays older than this
    /// setting, which state their rosters only for rooms with participants:
    /// a prepared standby on one of them could go unheard.
    #[arg(long, env = "RALLYPOINT_PUBLISH_ALL_MEDIA")]
    pub publish_all_media: bool,

    /// Close connections that sent nothing (not even a probe) for this long.
    #[arg(long, env = "RALLYPOINT_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct TelemetryIntakeConfig {
    /// MaxMind-format database (GeoLite2-ASN/City, DB-IP Lite, IPinfo Lite) used
    /// to derive ASN, ISP and country at the edge. Missing: every report says "unknown".
    #[arg(long, env = "RALLYPOINT_GEOIP_DB")]
    pub geoip_db: Vec<PathBuf>,

    /// Proxies (exact IPs) whose X-Forwarded-For is believed. Anyone else's is ignored.
    #[arg(long, env = "RALLYPOINT_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<std::net::IpAddr>,

    /// Election reports accepted per token subject (user) per minute, across
    /// all of its connections and every relay of this region (bursts of as
    /// many; see `report_budget`). Every relay of a region must use the same
    /// value.
    #[arg(long, env = "RALLYPOINT_REPORTS_PER_MINUTE", default_value_t = 30)]
    pub reports_per_minute: u32,

    /// Election reports accepted per client address per minute, whatever
    /// the tokens (an IPv6 client counts by its /64, which one host can
    /// hold whole): one machine with many tokens gets no more. Generous,
    /// since many users can share an address behind a NAT. Spans the
    /// region's relays when they share `--report-address-key`; without it,
    /// each relay's own.
    #[arg(
        long,
        env = "RALLYPOINT_REPORTS_PER_MINUTE_PER_ADDRESS",
        default_value_t = 600
    )]
    pub reports_per_minute_per_address: u32,

    /// Secret shared by the relays of a region (at least 32 characters,
    /// e.g. `openssl rand -hex 32`): they tell each other the reports they
    /// accepted per client address under a digest keyed with it, never the
    /// address, so an address's budget spans the region. Unset, each relay
    /// holds the per-address budget alone.
    #[arg(long, env = "RALLYPOINT_REPORT_ADDRESS_KEY", hide_env_values = true)]
    pub report_address_key: Option<rallypoint_service::secret::Secret>,

    /// Every region a client's candidate list may name, shadow (planned)
    /// regions included, e.g. `us-east,singapore`: reports naming any other
    /// region are refused as invalid. Must include this relay's region. Unset,
    /// any well-formed region name passes (so set it in production: the Helm
    /// chart does, from `candidates.regions`).
    #[arg(long, env = "RALLYPOINT_KNOWN_REGIONS", value_delimiter = ',')]
    pub known_regions: Vec<String>,
}

impl TelemetryIntakeConfig {
    /// The regions reports are checked against.
    pub fn known_regions(&self) -> rallypoint_protocol::telemetry::KnownRegions<'_> {
        use rallypoint_protocol::telemetry::KnownRegions;
        if self.known_regions.is_empty() {
            KnownRegions::Any
        } else {
            KnownRegions::Only(&self.known_regions)
        }
    }
}

impl RelayConfig {
    pub fn serves(&self, transport: TransportKind) -> bool {
        self.transports.contains(&transport)
    }

    /// Checks what clap cannot: names usable as NATS tokens, a key to verify with.
    pub fn validate(&self) -> anyhow::Result<()> {
        rallypoint_protocol::subjects::validate_region(&self.region)
            .map_err(|e| anyhow::anyhow!("--region: {e}"))?;
        if self.relay_id.is_empty() {
            anyhow::bail!("--relay-id must not be empty");
        }
        if self.auth.jwt_secret.is_none() && self.auth.jwt_public_key.is_none() {
            anyhow::bail!(
                "no token key: set --jwt-secret (HS256) or --jwt-public-key (EdDSA); every region's relays must share it"
            );
        }
        if self.transports.is_empty() {
            anyhow::bail!("--transports is empty: serve ws, wt or both");
        }
        if let Some(key) = &self.telemetry.report_address_key {
            crate::report_budget::AddressSecret::from_secret(key.expose())
                .map_err(|e| anyhow::anyhow!("--report-address-key: {e}"))?;
        }
        let known = &self.telemetry.known_regions;
        for region in known {
            rallypoint_protocol::subjects::validate_region(region)
                .map_err(|e| anyhow::anyhow!("--known-regions: {e}"))?;
        }
        if !known.is_empty() && !known.contains(&self.region) {
            anyhow::bail!(
                "--known-regions ({}) does not list this relay's region {}: list every region of the candidate lists",
                known.join(","),
                self.region
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_every_setting_with_its_env() {
        use clap::CommandFactory;
        let help = RelayConfig::command().render_long_help().to_string();
        for env in [
            "RALLYPOINT_REGION",
            "RALLYPOINT_RELAY_ID",
            "RALLYPOINT_NATS_URLS",
            "RALLYPOINT_TLS_CERT",
            "RALLYPOINT_JWT_SECRET",
            "RALLYPOINT_MEDIA_QUEUE",
            "RALLYPOINT_KNOWN_REGIONS",
        ] {
            assert!(help.contains(env), "--help does not mention {env}");
        }
    }

    fn parse(extra: &[&str]) -> RelayConfig {
        let args = [
            "rallypoint-relay",
            "--region",
            "us-east",
            "--relay-id",
            "us-east-0",
            "--jwt-secret",
            "s",
        ];
        RelayConfig::try_parse_from(args.iter().chain(extra)).expect("parses")
    }

    #[test]
    fn known_regions_must_be_names_and_include_this_region() {
        assert!(parse(&[]).validate().is_ok(), "unset: any region");
        assert!(
            parse(&["--known-regions", "us-east,singapore"])
                .validate()
                .is_ok()
        );
        let err = parse(&["--known-regions", "singapore"])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("us-east"), "{err}");
        let err = parse(&["--known-regions", "us-east,sing apore"])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("--known-regions"), "{err}");
    }
}
