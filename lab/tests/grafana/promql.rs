//! The PromQL of the Prometheus dashboard (`grafana/dashboards/relay-health.json`),
//! expanded the way Grafana sends it with every variable at "All", for the
//! checks in `tests/grafana.rs` (syntax, by promtool) and `tests/prometheus.rs`
//! (run on a real Prometheus scraping a real relay and collector).

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value as Json;

/// The data source uid every panel of the dashboard uses.
pub const PROMETHEUS_UID: &str = "rallypoint-prometheus";

pub const FILE: &str = "relay-health.json";

pub fn dashboard() -> Json {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../grafana/dashboards/relay-health.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One expression of a panel: `"<panel title> / <refId>"` and the PromQL.
pub struct Expression {
    pub name: String,
    pub promql: String,
}

/// Every panel target's expression, expanded.
pub fn expressions(dashboard: &Json) -> Vec<Expression> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let name = format!("{} / {}", panel["title"], target["refId"]);
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: every target is PromQL (`expr`)"));
            out.push(Expression {
                promql: expand(expr).unwrap_or_else(|e| panic!("{name}: {e}")),
                name,
            });
        }
    }
    out
}

/// Grafana's expansion with `$region` and `$relay` at "All" (their
/// `allValue`, `.*`) and a one-minute `$__rate_interval`.
pub fn expand(expr: &str) -> Result<String, String> {
    let expanded = expr
        .replace("$__rate_interval", "1m")
        .replace("$region", ".*")
        .replace("$relay", ".*");
    if expanded.contains('$') {
        return Err(format!("left unexpanded: {expanded}"));
    }
    Ok(expanded)
}

/// Our metric names a PromQL expression (or a rules file) reads.
pub fn metric_names(promql: &str) -> BTreeSet<String> {
    let name = regex::Regex::new(r"\brallypoint_[a-z0-9_]+\b").unwrap();
    name.find_iter(promql)
        .map(|m| m.as_str().to_owned())
        .collect()
}
