//! The filters every view shares, carried in the URL so a view can be
//! bookmarked, shared and reloaded: `?range=24h&country=SG&transport=webtransport`.

use serde::Deserialize;

/// Time ranges offered, with the chart bucket each uses.
pub const RANGES: &[(&str, u32, u32)] = &[
    // (name, seconds, bucket seconds)
    ("1h", 3_600, 60),
    ("6h", 21_600, 300),
    ("24h", 86_400, 900),
    ("7d", 604_800, 3_600),
    // Daily buckets: a month's charts come from the per-day rollups.
    ("30d", 2_592_000, 86_400),
];

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Filters {
    /// One of [`RANGES`]; default 24h.
    #[serde(default)]
    pub range: Option<String>,
    /// End of the range (unix seconds); default now. Tests pin it.
    #[serde(default)]
    pub until: Option<u32>,
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default)]
    pub transport: Option<String>,
    #[serde(default)]
    pub isp: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// Include synthetic reports (`rallypoint simulate`); default no.
    #[serde(default)]
    pub synthetic: Option<u8>,
    /// What-if: a region to remove.
    #[serde(default)]
    pub remove: Option<String>,
    /// What-if: a shadow region to add.
    #[serde(default)]
    pub add: Option<String>,
    /// Session explorer: a session id (hex).
    #[serde(default)]
    pub session: Option<String>,
}

/// The latest `until` the dashboard answers for: 2100-01-01 00:00 UTC.
/// ClickHouse's `DateTime` ends in 2106, and the views round windows to
/// whole hours and days past their end, which must stay within `u32`.
pub const MAX_UNTIL: u32 = 4_102_444_800;

/// The longest text value a filter may have. ISP names, the longest real
/// values, stay well under it; a longer one is a mistake or an attack, and
/// repeated in a query's text it could pass ClickHouse's query size limit.
pub const MAX_VALUE_CHARS: usize = 200;

/// The resolved time window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: u32,
    pub to: u32,
    pub bucket: u32,
}

impl Filters {
    pub fn range_name(&self) -> &str {
        self.range
            .as_deref()
            .filter(|r| RANGES.iter().any(|(name, _, _)| name == r))
            .unwrap_or("24h")
    }

    pub fn window(&self, now: u32) -> Window {
        let (_, seconds, bucket) = RANGES
            .iter()
            .find(|(name, _, _)| *name == self.range_name())
            .copied()
            .expect("range_name is one of RANGES");
        let to = self.until.unwrap_or(now);
        Window {
            from: to.saturating_sub(seconds),
            to,
            bucket,
        }
    }

    /// Why no view can answer these filters, in words for the person who
    /// typed the URL; `Ok` when they can. Checked before any query runs.
    pub fn check(&self) -> Result<(), String> {
        self.check_lengths()?;
        self.check_range()?;
        self.check_until()?;
        self.check_synthetic()
    }

    /// A range, when given, is one of [`RANGES`] (an empty one means the
    /// default).
    fn check_range(&self) -> Result<(), String> {
        match self.range.as_deref().filter(|r| !r.is_empty()) {
            Some(range) if !RANGES.iter().any(|(name, _, _)| *name == range) => {
                let names: Vec<&str> = RANGES.iter().map(|(name, _, _)| *name).collect();
                Err(format!(
                    "The range parameter must be one of {}.",
                    names.join(", ")
                ))
            }
            _ => Ok(()),
        }
    }

    /// `until` is at most [`MAX_UNTIL`].
    fn check_until(&self) -> Result<(), String> {
        match self.until {
            Some(until) if until > MAX_UNTIL => Err(format!(
                "The until parameter must be a unix time (seconds) no later than {MAX_UNTIL}, the start of 2100."
            )),
            _ => Ok(()),
        }
    }

    /// `synthetic` is a yes (1) or no (0).
    fn check_synthetic(&self) -> Result<(), String> {
        match self.synthetic {
            Some(s) if s > 1 => Err(
                "The synthetic parameter must be 0 (leave synthetic reports out) or 1 (include them)."
                    .into(),
            ),
            _ => Ok(()),
        }
    }

    /// Every text value within [`MAX_VALUE_CHARS`].
    fn check_lengths(&self) -> Result<(), String> {
        let values = [
            ("range", &self.range),
            ("country", &self.country),
            ("transport", &self.transport),
            ("isp", &self.isp),
            ("region", &self.region),
            ("remove", &self.remove),
            ("add", &self.add),
            ("session", &self.session),
        ];
        match values.iter().find(|(_, value)| {
            value
                .as_deref()
                .is_some_and(|v| v.chars().count() > MAX_VALUE_CHARS)
        }) {
            Some((name, _)) => Err(format!(
                "The {name} parameter is longer than {MAX_VALUE_CHARS} characters."
            )),
            None => Ok(()),
        }
    }

    pub fn include_synthetic(&self) -> bool {
        self.synthetic == Some(1)
    }

    /// The query string for these filters with some changed (links).
    pub fn with(&self, key: &str, value: Option<&str>) -> String {
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut push = |k: &str, v: Option<String>| {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                pairs.push((k.to_owned(), v));
            }
        };
        let pick = |k: &str, current: Option<String>| -> Option<String> {
            if k == key {
                value.map(str::to_owned)
            } else {
                current
            }
        };
        push("range", pick("range", self.range.clone()));
        push("until", pick("until", self.until.map(|u| u.to_string())));
        push("country", pick("country", self.country.clone()));
        push("transport", pick("transport", self.transport.clone()));
        push("isp", pick("isp", self.isp.clone()));
        push("region", pick("region", self.region.clone()));
        push(
            "synthetic",
            pick("synthetic", self.synthetic.map(|s| s.to_string())),
        );
        push("remove", pick("remove", self.remove.clone()));
        push("add", pick("add", self.add.clone()));
        push("session", pick("session", self.session.clone()));
        if pairs.is_empty() {
            return String::new();
        }
        let encoded: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        format!("?{}", encoded.join("&"))
    }
}

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A string made safe to embed in SQL as a literal: the only way a filter
/// value reaches a query. In a ClickHouse string literal only `\` escapes
/// and only an unescaped `'` ends it (on 18.16 and on current servers), so
/// escaping those two keeps any text — quotes, `?`, newlines, NUL — inside
/// one literal. (`?` is nothing to ClickHouse; see `Db::rows` for why it is
/// nothing to the client either.)
pub fn sql_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_links() {
        let f = Filters {
            range: Some("1h".into()),
            country: Some("SG".into()),
            ..Default::default()
        };
        assert_eq!(
            f.window(10_000),
            Window {
                from: 6_400,
                to: 10_000,
                bucket: 60
            }
        );
        assert_eq!(
            f.with("transport", Some("websocket")),
            "?range=1h&country=SG&transport=websocket"
        );
        assert_eq!(f.with("country", None), "?range=1h");
        let bad = Filters {
            range: Some("1y".into()),
            ..Default::default()
        };
        assert_eq!(bad.range_name(), "24h");
    }

    #[test]
    fn checks_accept_the_edges_and_refuse_past_them() {
        let with = |change: fn(&mut Filters)| {
            let mut f = Filters::default();
            change(&mut f);
            f.check()
        };
        assert_eq!(with(|f| f.until = Some(MAX_UNTIL)), Ok(()));
        assert!(with(|f| f.until = Some(MAX_UNTIL + 1)).is_err());
        assert_eq!(with(|f| f.isp = Some("é".repeat(MAX_VALUE_CHARS))), Ok(()));
        assert!(with(|f| f.isp = Some("é".repeat(MAX_VALUE_CHARS + 1))).is_err());
        assert_eq!(with(|f| f.range = Some(String::new())), Ok(()));
        assert_eq!(with(|f| f.range = Some("30d".into())), Ok(()));
        assert!(with(|f| f.range = Some("100y".into())).is_err());
        assert_eq!(with(|f| f.synthetic = Some(1)), Ok(()));
        assert!(with(|f| f.synthetic = Some(2)).is_err());
    }

    #[test]
    fn sql_strings_cannot_escape() {
        assert_eq!(sql_string("it's"), "'it\\'s'");
        assert_eq!(sql_string("a\\' OR 1"), "'a\\\\\\' OR 1'");
    }
}
