//! Scenario files: where the simulated client sits, as the path it has to each
//! region.
//!
//! ```json
//! {"name": "client in Singapore",
//!  "links": {"singapore": {"rtt_ms": 40, "jitter_ms": 5, "loss": 0.0},
//!            "us-east":   {"rtt_ms": 250, "jitter_ms": 5, "loss": 0.0,
//!                          "down": {"loss": 0.01}}}}
//! ```
//!
//! A link is described the way people measure paths: a round trip (`rtt_ms`),
//! its standard deviation (`jitter_ms`) and a per-direction loss probability.
//! Each direction then gets half the round trip and a jitter of
//! `jitter_ms / √2` (two independent normal legs add up to `jitter_ms`).
//! Asymmetric paths override any of that per direction with `"up"` (client →
//! relay) or `"down"` (relay → client), using a one-way `delay_ms`,
//! `jitter_ms` and `loss`; fields left out keep the derived value.
//!
//! Transport-specific paths override the link for one transport with
//! `"udp"` (WebTransport) or `"tcp"` (WebSocket): `"blocked": true` drops
//! every packet (the corporate firewall that lets only TCP through), and
//! `rtt_ms`, `jitter_ms`, `loss` replace the link's for that transport:
//!
//! ```json
//! {"name": "office behind a UDP-blocking firewall",
//!  "links": {"us-east": {"rtt_ms": 85, "udp": {"blocked": true}},
//!            "singapore": {"rtt_ms": 165, "udp": {"loss": 0.2}}}}
//! ```
//!
//! A location's own line — a home's DSL, a hotel's Wi-Fi — is crossed by its
//! path to every region, so what one region's media fills, another region's
//! probes wait behind. `"access"` gives it a bottleneck per direction that
//! every proxy of the location shares (a link's own `rate_kbit` is a
//! bottleneck of that path alone):
//!
//! ```json
//! {"name": "hotel on a slow uplink",
//!  "access": {"up": {"rate_kbit": 100, "queue_ms": 100}},
//!  "links": {"singapore": {"rtt_ms": 40}, "us-east": {"rtt_ms": 250}}}
//! ```
//!
//! With `"after_s"` a line is as fast as its paths until that many seconds
//! after the proxies start, and slow from then on.
//!
//! Unknown fields are rejected: a typo such as `"jiter_ms"` would otherwise
//! silently give a jitter-free link.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A client location: the link to each region, by region name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// For people: "client in Singapore".
    pub name: String,
    /// The location's own line, shared by its paths to every region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessSpec>,
    pub links: BTreeMap<String, LinkSpec>,
}

/// A location's access line: the bottleneck each direction of every path
/// from the location crosses, whichever region it leads to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessSpec {
    /// Client → relays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up: Option<LineSpec>,
    /// Relays → client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down: Option<LineSpec>,
}

/// One direction of an access line.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineSpec {
    /// Its rate, in kbit/s (at least 1).
    pub rate_kbit: f64,
    /// How long a packet may wait in its queue, as for a link's bottleneck
    /// ([`DirectionOverride::queue_ms`]); default [`DEFAULT_QUEUE_MS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_ms: Option<f64>,
    /// The line is this slow from this many seconds after the location's
    /// proxies start, as fast as its paths before: a line that slows down
    /// mid-call (a weaker signal, a camera that outgrows it). Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_s: Option<f64>,
}

impl LineSpec {
    /// The line as a bottleneck.
    pub fn bottleneck(&self) -> Bottleneck {
        Bottleneck::new(self.rate_kbit, self.queue_ms)
    }

    /// How long after the location's proxies start the line is slow (zero
    /// for an `after_s` that [`Scenario::validate`] would refuse).
    pub fn slow_after(&self) -> Duration {
        Duration::try_from_secs_f64(self.after_s.unwrap_or(0.0)).unwrap_or(Duration::ZERO)
    }
}

/// The path between the client and one region.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// Round-trip delay the proxy adds.
    pub rtt_ms: f64,
    /// Standard deviation of the added round-trip delay.
    #[serde(default)]
    pub jitter_ms: f64,
    /// Packet loss probability, per direction (0..=1).
    #[serde(default)]
    pub loss: f64,
    /// Overrides for the client → relay direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up: Option<DirectionOverride>,
    /// Overrides for the relay → client direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down: Option<DirectionOverride>,
    /// The path WebTransport (UDP) takes, where it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<TransportOverride>,
    /// The path WebSocket (TCP) takes, where it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TransportOverride>,
}

/// One transport's path, overriding the link's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportOverride {
    /// Every packet is dropped, both ways.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub blocked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<f64>,
    /// Per-direction loss probability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
}

/// One direction of a link, overriding what is derived from the round trip.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectionOverride {
    /// One-way delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<f64>,
    /// Standard deviation of the one-way delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// A bottleneck in this direction, in kbit/s (at least 1): packets leave
    /// it one after another at this rate, as through a slow link on this path.
    /// Without it a direction is as fast as what is sent into it. The UDP
    /// proxy's client → relay bottleneck is one link shared by all of the
    /// proxy's clients; its relay → client one, and the TCP proxy's, are one
    /// per client (per connection). A location's line, shared by every
    /// path and proxy, is [`Scenario::access`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_kbit: Option<f64>,
    /// How long a UDP packet may wait in the bottleneck's queue (a router's
    /// buffer, in time at its rate); one that would wait longer is dropped.
    /// Default [`DEFAULT_QUEUE_MS`]. The TCP proxy never drops: it reads no
    /// more than its queue has room for, and nothing while it holds this
    /// long, so TCP's flow control holds the sender back (see `proxy::tcp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_ms: Option<f64>,
}

/// A bottleneck's queue when a scenario does not say: about what a home
/// router's buffer holds at its line rate.
pub const DEFAULT_QUEUE_MS: f64 = 100.0;

/// What one direction of a link does to every packet, resolved from a
/// [`LinkSpec`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OneWay {
    pub delay: Duration,
    /// Standard deviation of the delay.
    pub jitter: Duration,
    pub loss: f64,
    pub bottleneck: Option<Bottleneck>,
}

/// A direction's slowest link: its rate and how long its queue may grow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bottleneck {
    pub bytes_per_sec: f64,
    pub max_wait: Duration,
}

impl Bottleneck {
    /// A bottleneck of `rate_kbit` whose queue holds `queue_ms` (default
    /// [`DEFAULT_QUEUE_MS`]).
    pub fn new(rate_kbit: f64, queue_ms: Option<f64>) -> Bottleneck {
        Bottleneck {
            bytes_per_sec: rate_kbit * 1000.0 / 8.0,
            max_wait: millis(queue_ms.unwrap_or(DEFAULT_QUEUE_MS)),
        }
    }

    /// How long `bytes` take to pass.
    pub fn time_for(&self, bytes: usize) -> Duration {
        Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec)
    }
}

impl Scenario {
    /// Reads and checks a scenario file. Errors name the file and the problem.
    pub fn load(path: impl AsRef<Path>) -> anyhow::Result<Scenario> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read scenario {}: {e}", path.display()))?;
        Scenario::parse(&text)
            .map_err(|e| anyhow::anyhow!("invalid scenario {}: {e}", path.display()))
    }

    /// Parses and checks a scenario from JSON text.
    pub fn parse(json: &str) -> anyhow::Result<Scenario> {
        let scenario: Scenario = serde_json::from_str(json)?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// The link to `region`, if the scenario has one.
    pub fn link(&self, region: &str) -> Option<&LinkSpec> {
        self.links.get(region)
    }

    /// Checks every link; the error names the region and the field.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.links.is_empty() {
            anyhow::bail!("scenario {:?} has no links", self.name);
        }
        let access = self.access.unwrap_or_default();
        for (direction, line) in [("up", access.up), ("down", access.down)] {
            let Some(line) = line else { continue };
            check_rate(&format!("access.{direction}.rate_kbit"), line.rate_kbit)?;
            if let Some(queue) = line.queue_ms {
                check_delay(&format!("access.{direction}.queue_ms"), queue)?;
            }
            if let Some(after) = line.after_s
                && !(after.is_finite() && (0.0..=86_400.0).contains(&after))
            {
                anyhow::bail!(
                    "access.{direction}.after_s is {after}, it must be a number of seconds from 0 \
                     to 86400 (a day)"
                );
            }
        }
        for (region, link) in &self.links {
            link.validate()
                .map_err(|e| anyhow::anyhow!("link {region:?}: {e}"))?;
            for (direction, line, own) in
                [("up", access.up, link.up), ("down", access.down, link.down)]
            {
                if line.is_some() && own.is_some_and(|own| own.rate_kbit.is_some()) {
                    anyhow::bail!(
                        "link {region:?}: {direction}.rate_kbit and access.{direction} both set; \
                         a direction crosses one bottleneck here: keep the access line \
                         (shared by every region) or the link's own"
                    );
                }
            }
        }
        Ok(())
    }
}

impl LinkSpec {
    /// A symmetric link.
    pub fn new(rtt_ms: f64, jitter_ms: f64, loss: f64) -> LinkSpec {
        LinkSpec {
            rtt_ms,
            jitter_ms,
            loss,
            up: None,
            down: None,
            udp: None,
            tcp: None,
        }
    }

    /// The link as `transport` sees it: its override applied (a blocked
    /// path loses every packet both ways).
    pub fn for_transport(&self, transport: rallypoint_protocol::TransportKind) -> LinkSpec {
        let with = match transport {
            rallypoint_protocol::TransportKind::WebSocket => self.tcp,
            rallypoint_protocol::TransportKind::WebTransport => self.udp,
        };
        let mut link = LinkSpec {
            udp: None,
            tcp: None,
            ..*self
        };
        let Some(with) = with else { return link };
        link.rtt_ms = with.rtt_ms.unwrap_or(link.rtt_ms);
        link.jitter_ms = with.jitter_ms.unwrap_or(link.jitter_ms);
        link.loss = with.loss.unwrap_or(link.loss);
        if with.blocked {
            let dropped = DirectionOverride {
                loss: Some(1.0),
                ..Default::default()
            };
            link.loss = 1.0;
            link.up = Some(DirectionOverride {
                loss: Some(1.0),
                ..link.up.unwrap_or(dropped)
            });
            link.down = Some(DirectionOverride {
                loss: Some(1.0),
                ..link.down.unwrap_or(dropped)
            });
        }
        link
    }

    /// Checks that delays are finite and not negative and losses are
    /// probabilities, naming the offending field.
    pub fn validate(&self) -> anyhow::Result<()> {
        check_delay("rtt_ms", self.rtt_ms)?;
        check_delay("jitter_ms", self.jitter_ms)?;
        check_loss("loss", self.loss)?;
        for (direction, spec) in [("up", &self.up), ("down", &self.down)] {
            let Some(spec) = spec else { continue };
            if let Some(delay) = spec.delay_ms {
                check_delay(&format!("{direction}.delay_ms"), delay)?;
            }
            if let Some(jitter) = spec.jitter_ms {
                check_delay(&format!("{direction}.jitter_ms"), jitter)?;
            }
            if let Some(loss) = spec.loss {
                check_loss(&format!("{direction}.loss"), loss)?;
            }
            if let Some(rate) = spec.rate_kbit {
                check_rate(&format!("{direction}.rate_kbit"), rate)?;
            }
            if let Some(queue) = spec.queue_ms {
                check_delay(&format!("{direction}.queue_ms"), queue)?;
                if spec.rate_kbit.is_none() {
                    anyhow::bail!(
                        "{direction}.queue_ms needs {direction}.rate_kbit: only a bottleneck has a queue"
                    );
                }
            }
        }
        for (transport, spec) in [("udp", &self.udp), ("tcp", &self.tcp)] {
            let Some(spec) = spec else { continue };
            if let Some(rtt) = spec.rtt_ms {
                check_delay(&format!("{transport}.rtt_ms"), rtt)?;
            }
            if let Some(jitter) = spec.jitter_ms {
                check_delay(&format!("{transport}.jitter_ms"), jitter)?;
            }
            if let Some(loss) = spec.loss {
                check_loss(&format!("{transport}.loss"), loss)?;
            }
        }
        Ok(())
    }

    /// The client → relay direction.
    pub fn up(&self) -> OneWay {
        self.one_way(self.up.unwrap_or_default())
    }

    /// The relay → client direction.
    pub fn down(&self) -> OneWay {
        self.one_way(self.down.unwrap_or_default())
    }

    fn one_way(&self, with: DirectionOverride) -> OneWay {
        let delay_ms = with.delay_ms.unwrap_or(self.rtt_ms / 2.0);
        let jitter_ms = with
            .jitter_ms
            .unwrap_or(self.jitter_ms / std::f64::consts::SQRT_2);
        OneWay {
            delay: millis(delay_ms),
            jitter: millis(jitter_ms),
            loss: with.loss.unwrap_or(self.loss),
            bottleneck: with
                .rate_kbit
                .map(|kbit| Bottleneck::new(kbit, with.queue_ms)),
        }
    }
}

/// Exact to the nanosecond for whole milliseconds (`from_secs_f64(0.02)` is
/// a hair under 20 ms).
fn millis(ms: f64) -> Duration {
    Duration::from_nanos((ms.max(0.0) * 1_000_000.0).round() as u64)
}

fn check_delay(field: &str, ms: f64) -> anyhow::Result<()> {
    if !ms.is_finite() || ms < 0.0 {
        anyhow::bail!("{field} is {ms}, it must be a number of milliseconds ≥ 0");
    }
    // Far beyond any real path; also keeps `Duration::from_secs_f64` safe.
    if ms > 600_000.0 {
        anyhow::bail!("{field} is {ms}, more than 10 minutes is not a network path");
    }
    Ok(())
}

fn check_rate(field: &str, kbit: f64) -> anyhow::Result<()> {
    if !(kbit.is_finite() && kbit >= 1.0) {
        anyhow::bail!("{field} is {kbit}, it must be a rate of at least 1 kbit/s");
    }
    Ok(())
}

fn check_loss(field: &str, probability: f64) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&probability) {
        anyhow::bail!("{field} is {probability}, it must be a probability between 0 and 1");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_link_splits_the_round_trip() {
        let link = LinkSpec::new(40.0, 5.0, 0.01);
        let up = link.up();
        assert_eq!(up.delay, Duration::from_millis(20));
        assert!((up.jitter.as_secs_f64() * 1000.0 - 5.0 / 2f64.sqrt()).abs() < 1e-6);
        assert_eq!(up.loss, 0.01);
        assert_eq!(link.down(), up);
    }

    #[test]
    fn overrides_replace_only_what_they_name() {
        let scenario = Scenario::parse(
            r#"{"name": "x", "links": {"a": {"rtt_ms": 100, "jitter_ms": 0,
                "up": {"delay_ms": 70}, "down": {"loss": 0.5}}}}"#,
        )
        .unwrap();
        let link = scenario.link("a").unwrap();
        assert_eq!(link.up().delay, Duration::from_millis(70));
        assert_eq!(link.up().loss, 0.0);
        assert_eq!(link.down().delay, Duration::from_millis(50));
        assert_eq!(link.down().loss, 0.5);
        assert!(scenario.link("b").is_none());
    }

    #[test]
    fn a_transport_can_take_its_own_path_or_none() {
        use rallypoint_protocol::TransportKind::{WebSocket, WebTransport};
        let scenario = Scenario::parse(
            r#"{"name": "office", "links": {
                "a": {"rtt_ms": 80, "loss": 0.01, "udp": {"blocked": true}},
                "b": {"rtt_ms": 160, "udp": {"loss": 0.2, "rtt_ms": 170}}}}"#,
        )
        .unwrap();
        let a = scenario.link("a").unwrap();
        assert_eq!(a.for_transport(WebSocket).up().loss, 0.01, "TCP untouched");
        assert_eq!(a.for_transport(WebTransport).up().loss, 1.0);
        assert_eq!(a.for_transport(WebTransport).down().loss, 1.0);
        let b = scenario.link("b").unwrap();
        assert_eq!(b.for_transport(WebSocket).rtt_ms, 160.0);
        let udp = b.for_transport(WebTransport);
        assert_eq!((udp.rtt_ms, udp.loss), (170.0, 0.2));
        assert_eq!(udp.up().delay, Duration::from_millis(85));
        let error =
            Scenario::parse(r#"{"name": "x", "links": {"a": {"rtt_ms": 1, "udp": {"loss": 3}}}}"#)
                .unwrap_err()
                .to_string();
        assert!(error.contains("udp.loss"), "{error}");
    }

    #[test]
    fn an_access_line_is_one_bottleneck_per_direction_for_every_region() {
        let scenario = Scenario::parse(
            r#"{"name": "hotel", "access": {"up": {"rate_kbit": 100, "queue_ms": 50}},
                "links": {"a": {"rtt_ms": 40}, "b": {"rtt_ms": 250, "down": {"rate_kbit": 500}}}}"#,
        )
        .unwrap();
        let up = scenario.access.unwrap().up.unwrap().bottleneck();
        assert_eq!(up.bytes_per_sec, 12_500.0);
        assert_eq!(up.max_wait, Duration::from_millis(50));
        assert!(scenario.access.unwrap().down.is_none());
        let error = |json: &str| Scenario::parse(json).unwrap_err().to_string();
        let both = error(
            r#"{"name": "x", "access": {"down": {"rate_kbit": 60}},
                "links": {"a": {"rtt_ms": 1, "down": {"rate_kbit": 60}}}}"#,
        );
        assert!(
            both.contains("down.rate_kbit and access.down both set"),
            "{both}"
        );
        let slow = error(
            r#"{"name": "x", "access": {"up": {"rate_kbit": 0.5}}, "links": {"a": {"rtt_ms": 1}}}"#,
        );
        assert!(slow.contains("access.up.rate_kbit is 0.5"), "{slow}");
        let typo = error(
            r#"{"name": "x", "access": {"up": {"rate": 60}}, "links": {"a": {"rtt_ms": 1}}}"#,
        );
        assert!(typo.contains("unknown field `rate`"), "{typo}");
        let never = error(
            r#"{"name": "x", "access": {"down": {"rate_kbit": 60, "after_s": -1}},
                "links": {"a": {"rtt_ms": 1}}}"#,
        );
        assert!(never.contains("access.down.after_s is -1"), "{never}");
        let later = Scenario::parse(
            r#"{"name": "x", "access": {"down": {"rate_kbit": 60, "after_s": 15}},
                "links": {"a": {"rtt_ms": 1}}}"#,
        )
        .unwrap();
        assert_eq!(
            later.access.unwrap().down.unwrap().slow_after(),
            Duration::from_secs(15)
        );
    }

    #[test]
    fn problems_are_named() {
        let error = |json: &str| Scenario::parse(json).unwrap_err().to_string();
        assert!(error(r#"{"name": "x", "links": {"a": {"rtt_ms": -1}}}"#).contains("rtt_ms"));
        assert!(
            error(r#"{"name": "x", "links": {"a": {"rtt_ms": 1, "loss": 2}}}"#).contains("loss")
        );
        assert!(
            error(r#"{"name": "x", "links": {"a": {"rtt_ms": 1, "up": {"loss": -0.1}}}}"#)
                .contains("up.loss")
        );
        assert!(
            error(r#"{"name": "x", "links": {"a": {"rtt_ms": 1, "jiter_ms": 2}}}"#)
                .contains("unknown field `jiter_ms`")
        );
        assert!(error(r#"{"name": "x", "links": {}}"#).contains("no links"));
    }
}
