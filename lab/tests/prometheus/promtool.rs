//! Prometheus's `promtool` (Debian's prometheus package, installed by
//! `scripts/setup.sh test`), for the tests that check rules and PromQL.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn binary() -> PathBuf {
    rallypoint_testkit::bins::external(
        "promtool",
        "PROMTOOL",
        "install Debian's prometheus package (scripts/setup.sh test does)",
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `promtool args…` in `dir`: Ok(output) if it succeeded, else Err(output).
pub fn run<S: AsRef<OsStr>>(dir: &Path, args: &[S]) -> Result<String, String> {
    let output = Command::new(binary())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("promtool does not run: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// `promtool check rules FILE`.
pub fn check_rules(file: &Path) -> Result<String, String> {
    run(
        file.parent().unwrap_or(Path::new(".")),
        &[OsStr::new("check"), OsStr::new("rules"), file.as_os_str()],
    )
}
