//! A second `rallypoint up` on a running stack's directory is refused before
//! it touches anything there. It used to rewrite the running stack's
//! ClickHouse users, certificates and NATS credentials, then exit when its
//! own ClickHouse found the data directory locked — and the running stack's
//! dashboard could no longer sign in to ClickHouse (503 on every page).

use std::path::Path;
use std::time::Duration;

use rallypoint_testkit::stack::{Stack, StackConfig};

/// Every file under `dir` and its contents (logs and data excepted, which
/// the running stack itself writes).
fn configuration(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = path.to_string_lossy().into_owned();
            if path.is_dir() {
                if !name.ends_with("/data")
                    && !name.ends_with("/tmp")
                    && !name.contains("jetstream")
                {
                    pending.push(path);
                }
            } else if [
                ".xml", ".conf", ".creds", ".nk", ".pem", ".key", ".crt", ".json",
            ]
            .iter()
            .any(|suffix| name.ends_with(suffix))
            {
                files.push((name, std::fs::read(&path).unwrap_or_default()));
            }
        }
    }
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_stack_on_a_running_stacks_directory_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(StackConfig::for_test(dir.path()))
        .await
        .expect("stack starts");
    let before = configuration(dir.path());
    assert!(
        before.iter().any(|(name, _)| name.ends_with("users.xml")),
        "the stack wrote its ClickHouse users: {:?}",
        before.iter().map(|(name, _)| name).collect::<Vec<_>>()
    );

    let second = tokio::time::timeout(
        Duration::from_secs(120),
        Stack::start(StackConfig::for_test(dir.path())),
    )
    .await
    .expect("the second stack answers within 2 minutes");
    let error = match second {
        Ok(second) => {
            second.stop().await;
            panic!("a second stack started on a running stack's directory");
        }
        Err(error) => format!("{error:#}"),
    };
    assert!(
        error.contains("another stack is running") && error.contains("--dir"),
        "{error}"
    );
    let after = configuration(dir.path());
    let changed: Vec<&String> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b != a)
        .map(|(b, _)| &b.0)
        .collect();
    assert!(
        changed.is_empty() && before.len() == after.len(),
        "the refused stack changed the running one's files: {changed:?}"
    );

    // The running stack's dashboard still signs in to ClickHouse.
    let dashboard = stack
        .dashboard
        .as_ref()
        .expect("telemetry starts the dashboard");
    let page = dashboard.get("/").await.unwrap();
    assert!(
        page.status().is_success(),
        "the dashboard answers {}",
        page.status()
    );
    stack.stop().await;
}
