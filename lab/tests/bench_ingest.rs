//! `rallypoint bench ingest` as a process, at a size CI can afford: every
//! run of the benchmark (ClickHouse alone, the backlog drains, JetStream
//! consumed, end to end) completes with NATS on a core of its own, and every
//! table it prints has its rows. The figures themselves are in
//! BENCHMARKS.md; this keeps the command that printed them working.

use std::process::Command;

/// The cells of the table rows in `output` that follow the header line
/// starting with `header`, up to the next blank line.
fn table_after(output: &str, header: &str) -> Vec<Vec<String>> {
    output
        .lines()
        .skip_while(|line| !line.starts_with(header))
        .skip(2) // the header and its |---| line
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            line.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_owned())
                .collect()
        })
        .collect()
}

#[test]
fn the_ingest_benchmark_runs_with_nats_on_its_own_core() {
    let allowed = rallypoint_testkit::usage::allowed_cpus(std::process::id()).unwrap();
    if allowed.len() < 2 {
        // Said, not hidden: this machine cannot give NATS a core of its own.
        eprintln!("skipped: --separate-cores needs two CPUs and this test may use {allowed:?}");
        return;
    }
    let output = Command::new(env!("CARGO_BIN_EXE_rallypoint"))
        .args([
            "bench",
            "ingest",
            "--reports",
            "2000",
            "--batch-size",
            "500",
            "--separate-cores",
        ])
        .output()
        .expect("rallypoint runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench ingest failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(&format!("the nats-servers on CPU [{}]", allowed[0])),
        "the layout is not stated:\n{stdout}"
    );
    // Every stack of the four NATS runs was pinned, and the bench read back
    // each thread's CPUs: the five nats-servers have threads on NATS's CPU.
    let pinned: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("[bench] pinned "))
        .collect();
    assert!(
        pinned.len() >= 4,
        "pinned once per run, at least:\n{stderr}"
    );
    for line in &pinned {
        let nats_threads: usize = line["[bench] pinned ".len()..]
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no thread count in {line:?}"));
        assert!(nats_threads >= 5, "{line}");
    }

    let rate = |cell: &str| -> f64 {
        cell.parse()
            .unwrap_or_else(|e| panic!("{cell:?} is not a rate ({e}):\n{stdout}"))
    };
    let drains = table_after(&stdout, "| collectors | JetStream alone");
    assert_eq!(drains.len(), 2, "one and two collectors:\n{stdout}");
    for row in &drains {
        assert!(rate(&row[1]) > 0.0 && rate(&row[2]) > 0.0, "{row:?}");
    }
    let end_to_end = table_after(&stdout, "| collectors | reports/s | ratio");
    assert_eq!(end_to_end.len(), 2, "one and two collectors:\n{stdout}");
    for row in &end_to_end {
        // reports/s, then its ratios to JetStream alone and consumed.
        assert!(
            rate(&row[1]) > 0.0 && rate(&row[2]) > 0.0 && rate(&row[3]) > 0.0,
            "{row:?}"
        );
    }
    let cpu = table_after(&stdout, "| run | nats-server");
    assert_eq!(cpu.len(), 3, "consumed and two end-to-end runs:\n{stdout}");
    for row in &cpu {
        assert!(rate(&row[1]) > 0.0, "NATS did the work of {row:?}");
    }
}
