//! The alert rules (`prometheus/rallypoint-rules.yml`) checked and
//! unit-tested by Prometheus's own `promtool` (Debian's 2.42): every rule
//! parses, and each alert fires when its unit tests say and not otherwise
//! (`prometheus/tests/*.test.yml`). Whether the rules' metric names are the
//! ones the relay and collector export is checked against a live scrape in
//! `tests/prometheus.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

use rallypoint_lab::bins;

fn prometheus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../prometheus")
}

fn promtool() -> PathBuf {
    bins::external(
        "promtool",
        "PROMTOOL",
        "install Debian's prometheus package (scripts/setup.sh test does)",
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `promtool args…`, failing the test with its output unless it succeeds.
fn promtool_ok(args: &[&Path]) -> String {
    let output = Command::new(promtool())
        .args(args)
        .current_dir(prometheus_dir())
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn rules_pass_promtool_check() {
    let text = promtool_ok(&[
        "check".as_ref(),
        "rules".as_ref(),
        "rallypoint-rules.yml".as_ref(),
    ]);
    assert!(text.contains("SUCCESS: 11 rules found"), "{text}");
}

#[test]
fn alerts_fire_and_stay_quiet_as_the_unit_tests_say() {
    let mut tests: Vec<PathBuf> = std::fs::read_dir(prometheus_dir().join("tests"))
        .expect("prometheus/tests exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(".test.yml"))
        .collect();
    tests.sort();
    assert!(
        tests.len() >= 2,
        "unit tests for relay and collector alerts: {tests:?}"
    );
    // Every alert has a unit test in which it fires.
    let rules = std::fs::read_to_string(prometheus_dir().join("rallypoint-rules.yml")).unwrap();
    let all_tests: String = tests
        .iter()
        .map(|t| std::fs::read_to_string(t).unwrap())
        .collect();
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        let fires = format!("alertname: {alert}\n        exp_alerts:\n          - exp_labels:");
        assert!(
            all_tests.contains(&fires),
            "no unit test in prometheus/tests makes {alert} fire"
        );
    }
    let mut args: Vec<&Path> = vec!["test".as_ref(), "rules".as_ref()];
    args.extend(tests.iter().map(PathBuf::as_path));
    let text = promtool_ok(&args);
    assert!(!text.contains("FAILED"), "{text}");
}
