//! Least privilege in ClickHouse, against a real server: nobody logs in
//! without a password; the collector reads and inserts but cannot change the
//! schema; the dashboard's and Grafana's users only read, cannot lift their
//! own limits, and a query past those limits fails instead of scanning on.
//! Every login is over TLS, and a client that does not trust the server's CA
//! (or would send its password in the clear) does not get to log in.

use rallypoint_testkit::clickhouse::{ClickHouseLogin, ClickHouseRole, ClickHouseServer};
use rallypoint_testkit::pki::DevCa;

async fn run(login: &ClickHouseLogin, sql: &str) -> Result<String, String> {
    let client = login.args().client().map_err(|e| format!("{e:#}"))?;
    let body = async {
        client
            .query(sql)
            .fetch_bytes("TabSeparated")?
            .collect()
            .await
    }
    .await
    .map_err(chain)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// An error with its causes, as the binaries log it (`{:#}`).
fn chain(error: clickhouse::error::Error) -> String {
    format!("{:#}", anyhow::Error::from(error))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_client_that_trusts_the_servers_ca_logs_in_and_only_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let server = ClickHouseServer::start(&dir.path().join("clickhouse"))
        .await
        .unwrap();
    let admin = server.login(ClickHouseRole::Admin);
    assert!(admin.url.starts_with("https://"), "{}", admin.url);
    assert_eq!(run(&admin, "SELECT 1").await.unwrap().trim(), "1");

    // A CA that did not sign the server's certificate: the handshake fails
    // before any password is sent.
    let stranger = DevCa::create(dir.path(), "stranger").unwrap();
    let mut wrong_ca = admin.clone();
    wrong_ca.ca = stranger.cert.clone();
    let error = run(&wrong_ca, "SELECT 1").await.unwrap_err();
    assert!(
        error.to_lowercase().contains("certificate"),
        "a wrong CA must fail the TLS handshake, got: {error}"
    );

    // Plain HTTP to the HTTPS port: refused by the client before it connects.
    let mut plain = admin.clone();
    plain.url = admin.url.replacen("https://", "http://", 1);
    let error = run(&plain, "SELECT 1").await.unwrap_err();
    assert!(
        error.contains("--clickhouse-ca") && error.contains("not https://"),
        "{error}"
    );

    // An unreadable CA file names the flag and the file.
    let mut missing = admin.clone();
    missing.ca = dir.path().join("no-such-ca.pem");
    let error = run(&missing, "SELECT 1").await.unwrap_err();
    assert!(
        error.contains("--clickhouse-ca") && error.contains("no-such-ca.pem"),
        "{error}"
    );
}

/// A ClickHouse that accepts connections and then says nothing (a hung
/// server, a black-holed packet) fails a request within the client's
/// deadlines instead of holding it: once during the TLS handshake (the
/// connect deadline) and once after a plain request was sent (the I/O
/// deadline). The silent server is a real socket that reads and never writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_clickhouse_fails_requests_at_the_deadlines() {
    use rallypoint_service::clickhouse::ClickHouseArgs;
    use rallypoint_service::secret::Secret;
    use std::time::Duration;
    use tokio::io::AsyncReadExt as _;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut sink = vec![0u8; 4096];
                while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::create(dir.path(), "ca").unwrap();
    // Each case sets its own deadline short and the other one longer than
    // the test waits: only the short one can end the request in time, and
    // each deadline fails in its own words.
    let (short, long) = (Duration::from_millis(300), Duration::from_secs(600));
    let cases = [
        (
            "TLS handshake",
            format!("https://{addr}"),
            Some(ca.cert.clone()),
            (short, long),
            // tokio's timeout around the connector (TCP and TLS).
            "deadline has elapsed",
        ),
        // hyper-timeout's read deadline on an open connection.
        (
            "answer",
            format!("http://{addr}"),
            None,
            (long, short),
            "timed out",
        ),
    ];
    for (stage, url, ca, (connect, io), says) in cases {
        let mut args = ClickHouseArgs::new(url, "default", Secret::new("unused"));
        args.ca = ca;
        args.connect_timeout = connect;
        args.io_timeout = io;
        let outcome = tokio::time::timeout(
            Duration::from_secs(30),
            args.client().unwrap().query("SELECT 1").fetch_one::<u8>(),
        )
        .await
        .unwrap_or_else(|_| panic!("a silent server held the request past 30 s ({stage})"));
        let error = chain(outcome.expect_err("a silent server cannot answer"));
        assert!(
            error.contains(says),
            "{stage}: expected its deadline ({says:?}), got {error}"
        );
    }
}

/// `rallypoint clickhouse-users` makes a deployment's users.xml: a real
/// ClickHouse loads it, each user logs in with its password file, and the
/// dashboard's user only reads. The same profiles as the local stack's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployment_users_file_gives_each_part_its_rights() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let server = ClickHouseServer::start(&dir.path().join("clickhouse"))
        .await
        .unwrap();
    server
        .query("CREATE TABLE rp_probe (x UInt64) ENGINE = MergeTree ORDER BY x")
        .await
        .unwrap();
    let users = dir.path().join("users");
    let output = std::process::Command::new(rallypoint_testkit::bins::ours("rallypoint").unwrap())
        .args(["clickhouse-users", "--dir", users.to_str().unwrap()])
        .args(["--networks", "127.0.0.1,::1"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{said}");
    assert!(
        said.contains("kubectl create secret generic rallypoint-clickhouse"),
        "{said}"
    );
    let xml = std::fs::read_to_string(users.join("users.xml")).unwrap();
    let password =
        |user: &str| std::fs::read_to_string(users.join(format!("{user}.password"))).unwrap();
    assert!(
        !xml.contains(&password("rallypoint_admin")),
        "a password in clear"
    );
    use std::os::unix::fs::PermissionsExt as _;
    for file in ["users.xml", "rallypoint_admin.password"] {
        let mode = std::fs::metadata(users.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{file} is readable by others");
    }

    // The server takes the new users file on a reload, without a restart.
    std::fs::write(dir.path().join("clickhouse/users.xml"), &xml).unwrap();
    server.query("SYSTEM RELOAD CONFIG").await.unwrap();
    let login = |user: &str| {
        let mut login = server.login(ClickHouseRole::Admin);
        login.user = user.to_owned();
        login.password = password(user);
        login
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(e) = run(&login("rallypoint_admin"), "SELECT 1").await {
        assert!(
            Instant::now() < deadline,
            "ClickHouse never loaded the new users file: {e}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    run(
        &login("rallypoint_collector"),
        "INSERT INTO rp_probe VALUES (1)",
    )
    .await
    .unwrap();
    refused_with(
        run(&login("rallypoint_collector"), "DROP TABLE rp_probe").await,
        "Code: ",
        "the collector dropping a table",
    );
    for reader in ["rallypoint_dashboard", "rallypoint_grafana"] {
        assert_eq!(
            run(&login(reader), "SELECT count() FROM rp_probe")
                .await
                .unwrap()
                .trim(),
            "1"
        );
        refused_with(
            run(&login(reader), "INSERT INTO rp_probe VALUES (2)").await,
            "Code: 164",
            "a reader inserting",
        );
    }
}
