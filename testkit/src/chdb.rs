//! Current ClickHouse, in-process: runs DDL, seed rows and queries on chDB
//! (`tools/chdb_check.py`) to prove that what runs on the old server here also
//! runs on the modern engine. Used by the collector, dashboard and Grafana tests.

/// Runs `spec` (`{"ddl": [...], "ttl": [...], "seed": [...], "checks": [{"name",
/// "sql", "expect"?}]}`) and returns the runner's output, or why it failed.
pub fn check(spec: &serde_json::Value) -> Result<String, String> {
    let file = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    std::fs::write(file.path(), spec.to_string()).map_err(|e| e.to_string())?;
    let output = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tools/chdb_check.py"))
        .arg(file.path())
        .output()
        .map_err(|e| format!("cannot run python3 ({e}); scripts/setup.sh installs it with chdb"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}
