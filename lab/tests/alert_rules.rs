//! The alert rules (`prometheus/rallypoint-rules.yml`) checked and
//! unit-tested by Prometheus's own `promtool` (Debian's 2.42): every rule
//! parses, and each alert fires when its unit tests say and not otherwise
//! (`prometheus/tests/*.test.yml`). Whether the rules' metric names are the
//! ones the relay and collector export is checked against a live scrape in
//! `tests/prometheus.rs`.

#[path = "prometheus/promtool.rs"]
mod promtool;

use std::path::PathBuf;

fn prometheus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../prometheus")
}

#[test]
fn rules_pass_promtool_check() {
    let text = promtool::check_rules(&prometheus_dir().join("rallypoint-rules.yml"))
        .unwrap_or_else(|e| panic!("promtool check rules:\n{e}"));
    assert!(text.contains("SUCCESS: 12 rules found"), "{text}");
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
    let mut args = vec![PathBuf::from("test"), PathBuf::from("rules")];
    args.extend(tests);
    let text = promtool::run(&prometheus_dir(), &args)
        .unwrap_or_else(|e| panic!("promtool test rules:\n{e}"));
    assert!(!text.contains("FAILED"), "{text}");
}
