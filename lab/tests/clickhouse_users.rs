//! Least privilege in ClickHouse, against a real server: nobody logs in
//! without a password; the collector reads and inserts but cannot change the
//! schema; the dashboard's and Grafana's users only read, cannot lift their
//! own limits, and a query past those limits fails instead of scanning on.

use rallypoint_lab::clickhouse::{ClickHouseLogin, ClickHouseRole, ClickHouseServer};

async fn run(login: &ClickHouseLogin, sql: &str) -> Result<String, String> {
    let response = reqwest::Client::new()
        .post(&login.url)
        .header("X-ClickHouse-User", &login.user)
        .header("X-ClickHouse-Key", &login.password)
        .body(sql.to_owned())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let ok = response.status().is_success();
    let body = response.text().await.map_err(|e| e.to_string())?;
    if ok { Ok(body) } else { Err(body) }
}

fn refused_with(result: Result<String, String>, code: &str, what: &str) {
    match result {
        Ok(body) => panic!("{what} was allowed: {body}"),
        Err(body) => assert!(body.contains(code), "{what}: expected {code}, got {body}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_part_may_do_what_it_needs_and_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let server = ClickHouseServer::start(dir.path()).await.unwrap();
    server
        .query("CREATE TABLE rp_probe (x UInt64) ENGINE = MergeTree ORDER BY x")
        .await
        .unwrap();

    // No password: refused (the server's default user has one).
    let mut anonymous = server.login(ClickHouseRole::Admin);
    anonymous.password.clear();
    refused_with(
        run(&anonymous, "SELECT 1").await,
        "Code: 194",
        "no password",
    );

    // The collector: reads and inserts, no DDL.
    let collector = server.login(ClickHouseRole::Collector);
    run(&collector, "INSERT INTO rp_probe VALUES (1)")
        .await
        .unwrap();
    assert_eq!(
        run(&collector, "SELECT count() FROM rp_probe")
            .await
            .unwrap()
            .trim(),
        "1"
    );
    refused_with(
        run(&collector, "DROP TABLE rp_probe").await,
        "Code: 392",
        "collector DROP",
    );
    refused_with(
        run(
            &collector,
            "CREATE TABLE rp_other (x UInt8) ENGINE = Memory",
        )
        .await,
        "Code: 392",
        "collector CREATE",
    );
    refused_with(
        run(&collector, "ALTER TABLE rp_probe DELETE WHERE 1").await,
        "Code: 392",
        "collector ALTER",
    );

    for role in [ClickHouseRole::Dashboard, ClickHouseRole::Grafana] {
        let reader = server.login(role);
        assert_eq!(
            run(&reader, "SELECT count() FROM rp_probe")
                .await
                .unwrap()
                .trim(),
            "1"
        );
        refused_with(
            run(&reader, "INSERT INTO rp_probe VALUES (2)").await,
            "Code: 164",
            "reader INSERT",
        );
        refused_with(
            run(&reader, "DROP TABLE rp_probe").await,
            "Code: 164",
            "reader DROP",
        );
        // Its limits are not its own to lift.
        refused_with(
            run(&reader, "SELECT 1 SETTINGS max_rows_to_read = 0").await,
            "Code: 164",
            "reader lifting its limit",
        );
        // A scan past max_rows_to_read stops with TOO_MANY_ROWS, which the
        // dashboard turns into its "range too large" page.
        refused_with(
            run(
                &reader,
                "SELECT count() FROM system.numbers LIMIT 1000000000",
            )
            .await,
            "Code: 158",
            "a scan past the reader's limit",
        );
    }
    assert_eq!(
        server.count("SELECT count() FROM rp_probe").await.unwrap(),
        1
    );
}
