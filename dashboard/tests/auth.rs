//! Who may see the dashboard, with the real binary: without credentials
//! every view is a 401 that asks for them, a wrong password too, the right
//! one shows the page; a proxy's identity header is believed only from a
//! trusted address; an allow-list turns others away with a 403; `/healthz`
//! stays open; no password reaches the log; and without any of these
//! settings the dashboard does not start.

mod common;

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use common::{DEADLINE, VIEWS, assert_secure_headers, dataset, pinned, start_binary};
use rallypoint_dashboard::auth::users_line;
use rallypoint_testkit::clickhouse::{ClickHouseRole, ClickHouseServer};

const ALICE_PASSWORD: &str = "correct horse battery staple";
/// Bob signs in with the recommended Argon2id parameters
/// ([`users_line`]); alice with cheap ones, as a users file may have (her
/// many wrong passwords below are each a hash check, slow in debug builds).
fn cheap_line(name: &str, password: &str) -> String {
    use argon2::password_hash::PasswordHasher as _;
    let params = argon2::Params::new(1024, 1, 1, None).unwrap();
    let argon2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let hash = argon2.hash_password(password.as_bytes()).unwrap();
    format!("{name}:{hash}")
}
const BOB_PASSWORD: &str = "bob-s3cret-never-logged";

/// A client whose connections come from `source` (127.0.0.1 or another
/// loopback address).
fn client(source: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(DEADLINE)
        .local_address(source)
        .build()
        .unwrap()
}

const PROXY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
const ELSEWHERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

/// Every path that needs a signed-in user: the views, the assets and a
/// path no route has.
fn protected() -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    let mut paths: Vec<_> = VIEWS
        .iter()
        .map(|(path, params)| {
            let mut query = pinned();
            query.extend(params.iter().map(|(k, v)| (*k, v.to_string())));
            (*path, query)
        })
        .collect();
    for path in [
        rallypoint_dashboard::views::layout::STYLESHEET_PATH,
        rallypoint_dashboard::views::layout::SCRIPT_PATH,
        "/no-such-page",
    ] {
        paths.push((path, Vec::new()));
    }
    paths
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_users_a_trusted_proxy_and_an_allow_list() {
    let dir = tempfile::tempdir().unwrap();
    let clickhouse = ClickHouseServer::start(&dir.path().join("clickhouse"))
        .await
        .unwrap();
    let store = common::admin_store(&clickhouse, 90).await;
    store.write(&dataset(), &[]).await.unwrap();

    let users = dir.path().join("users");
    let text = format!(
        "# dashboard users\n{}\n\n{}\n",
        cheap_line("alice", ALICE_PASSWORD),
        users_line("bob", BOB_PASSWORD).unwrap()
    );
    std::fs::write(&users, text).unwrap();
    let log = dir.path().join("dashboard.log");
    let (_dashboard, addr) = start_binary(
        &clickhouse.login(ClickHouseRole::Dashboard),
        &[
            "--auth-users-file",
            users.to_str().unwrap(),
            "--trusted-proxy-header",
            "X-Forwarded-Email",
            "--trusted-proxies",
            "127.0.0.1,10.0.0.0/8",
            "--allowed-users",
            "alice,carol@example.com",
        ],
        &log,
    )
    .await;
    let local = client(PROXY);
    let elsewhere = client(ELSEWHERE);
    let url = |path: &str| format!("http://{addr}{path}");

    // /healthz needs no one.
    let health = local.get(url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    for (path, query) in protected() {
        let what = |how: &str| format!("{path} {how}");
        let get = |client: &reqwest::Client| client.get(url(path)).query(&query);

        // No one: 401, asking for basic credentials, with the usual headers.
        let answer = get(&local).send().await.unwrap();
        assert_eq!(answer.status(), 401, "{}", what("without credentials"));
        assert_eq!(
            answer.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .split(',')
                .next(),
            Some(r#"Basic realm="rallypoint""#),
            "{}",
            what("without credentials")
        );
        assert_secure_headers(&what("401"), answer.headers());
        assert!(answer.headers().contains_key("x-request-id"));
        let body = answer.text().await.unwrap();
        assert!(!body.contains("<table") && !body.contains("svg"), "{body}");

        // Wrong password, unknown user, another scheme, garbage: 401. (Each
        // wrong password costs a slow hash check: two paths are enough.)
        let wrong: &[(&str, &str)] = if matches!(path, "/" | "/no-such-page") {
            &[
                ("alice", "wrong"),
                ("alice", ""),
                ("mallory", ALICE_PASSWORD),
                ("", ALICE_PASSWORD),
            ]
        } else {
            &[("alice", "wrong")]
        };
        for &(user, password) in wrong {
            let answer = get(&local)
                .basic_auth(user, Some(password))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 401, "{}", what(&format!("as {user:?}")));
        }
        for authorization in ["Bearer x", "Basic !!!", "Basic YWxpY2U=", "Basic"] {
            let answer = get(&local)
                .header("authorization", authorization)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 401, "{}", what(authorization));
        }

        // The right password: the page.
        let answer = get(&local)
            .basic_auth("alice", Some(ALICE_PASSWORD))
            .send()
            .await
            .unwrap();
        let expected = if path == "/no-such-page" { 404 } else { 200 };
        assert_eq!(answer.status(), expected, "{}", what("as alice"));
        assert_secure_headers(&what("as alice"), answer.headers());

        // Bob's password is right, but the allow-list does not name him.
        let answer = get(&local)
            .basic_auth("bob", Some(BOB_PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 403, "{}", what("as bob"));

        // The proxy's header, from the proxy: believed.
        let answer = get(&local)
            .header("x-forwarded-email", "carol@example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(
            answer.status(),
            expected,
            "{}",
            what("as carol via the proxy")
        );
        let answer = get(&local)
            .header("x-forwarded-email", "mallory@example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 403, "{}", what("as mallory via the proxy"));

        // The same header from anyone else: ignored.
        for name in ["carol@example.com", "alice"] {
            let answer = get(&elsewhere)
                .header("x-forwarded-email", name)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 401, "{}", what(&format!("{name} forged")));
        }
        // There, basic credentials still work.
        let answer = get(&elsewhere)
            .basic_auth("alice", Some(ALICE_PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), expected, "{}", what("as alice elsewhere"));
    }

    // Each answer is logged with who asked; no password, credentials or
    // hash ever is.
    let text = logged(&log, "user=carol@example.com").await;
    assert!(
        text.lines()
            .any(|l| l.contains("user=alice") && l.contains("status=200")),
        "{text}"
    );
    assert!(text.lines().any(|l| l.contains("status=401")), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("user=bob") && l.contains("status=403")),
        "{text}"
    );
    assert!(text.contains("ignored the proxy header"), "{text}");
    let secrets = [
        ALICE_PASSWORD.to_owned(),
        BOB_PASSWORD.to_owned(),
        "$argon2".to_owned(),
        base64(&format!("alice:{ALICE_PASSWORD}")),
        base64(&format!("bob:{BOB_PASSWORD}")),
        "uthorization".to_owned(),
    ];
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "the log holds {secret:?}:\n{text}"
        );
    }
}

/// The log once it has a line with `word`.
async fn logged(log: &Path, word: &str) -> String {
    let started = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(word) {
            return text;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "no {word:?} in the log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn base64(text: &str) -> String {
    use base64ct::Encoding as _;
    base64ct::Base64::encode_string(text.as_bytes())
}

/// Runs the binary with `args` and `env`, expecting it to refuse to start;
/// returns what it said.
async fn refusal(args: &[&str], env: &[(&str, &str)]) -> String {
    let port = rallypoint_testkit::ports::free_tcp();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_rallypoint-dashboard"));
    command
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .kill_on_drop(true);
    for var in [
        "RALLYPOINT_DASHBOARD_AUTH_USERS_FILE",
        "RALLYPOINT_DASHBOARD_TRUSTED_PROXY_HEADER",
        "RALLYPOINT_DASHBOARD_TRUSTED_PROXIES",
        "RALLYPOINT_DASHBOARD_ALLOWED_USERS",
        "RALLYPOINT_DASHBOARD_NO_AUTH",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    let output = tokio::time::timeout(DEADLINE, command.output())
        .await
        .expect("the dashboard exits at once")
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !output.status.success(),
        "{args:?} {env:?} started:\n{said}"
    );
    assert!(
        reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_err(),
        "{args:?} serves"
    );
    said
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_way_to_know_who_asks_the_dashboard_does_not_start() {
    // Nothing set: the error names every way to set it.
    let said = refusal(&[], &[]).await;
    for flag in [
        "--auth-users-file",
        "RALLYPOINT_DASHBOARD_AUTH_USERS_FILE",
        "--trusted-proxy-header",
        "--trusted-proxies",
        "--no-auth",
    ] {
        assert!(said.contains(flag), "{said}");
    }
    // A header without the proxies it may come from.
    let said = refusal(
        &[],
        &[(
            "RALLYPOINT_DASHBOARD_TRUSTED_PROXY_HEADER",
            "X-Forwarded-User",
        )],
    )
    .await;
    assert!(said.contains("--trusted-proxies"), "{said}");
    // --no-auth with a users file.
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, users_line("alice", ALICE_PASSWORD).unwrap()).unwrap();
    let said = refusal(
        &["--no-auth", "--auth-users-file", users.to_str().unwrap()],
        &[],
    )
    .await;
    assert!(said.contains("--no-auth"), "{said}");

    // Plaintext passwords and other hashes are refused, naming the line but
    // never showing it.
    for (line, secret) in [
        ("alice:hunter2-plaintext", "hunter2-plaintext"),
        ("alice:$apr1$salt$hash-md5crypt", "hash-md5crypt"),
        ("alice:$argon2id$v=19$m=19456,t=2,p=1$bad-phc", "bad-phc"),
        ("hunter2-no-colon", "hunter2-no-colon"),
    ] {
        std::fs::write(&users, format!("# users\n{line}\n")).unwrap();
        let said = refusal(&["--auth-users-file", users.to_str().unwrap()], &[]).await;
        assert!(said.contains("line 2"), "{line}: {said}");
        assert!(!said.contains(secret), "{line}: the error shows it: {said}");
    }
    // No users at all.
    std::fs::write(&users, "# nobody yet\n").unwrap();
    let said = refusal(&["--auth-users-file", users.to_str().unwrap()], &[]).await;
    assert!(said.contains("no users"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_password_makes_a_line_the_dashboard_accepts() {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rallypoint-dashboard"))
        .args(["hash-password", "dave"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"dave's password\n").await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert!(output.status.success(), "{output:?}");
    let line = String::from_utf8(output.stdout).unwrap();
    assert!(line.starts_with("dave:$argon2id$v=19$"), "{line}");
    assert!(!line.contains("password"), "{line}");

    // The dashboard takes it and lets dave in (no ClickHouse needed: the
    // stylesheet is enough to tell).
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, &line).unwrap();
    let log = dir.path().join("dashboard.log");
    let nowhere = rallypoint_testkit::clickhouse::ClickHouseLogin {
        url: "https://127.0.0.1:9".into(),
        user: "rallypoint_dashboard".into(),
        password: String::new(),
        ca: rallypoint_testkit::pki::DevCa::create(dir.path(), "unused")
            .unwrap()
            .cert,
        cluster: None,
    };
    let (_dashboard, addr) = start_binary(
        &nowhere,
        &["--auth-users-file", users.to_str().unwrap()],
        &log,
    )
    .await;
    let path = rallypoint_dashboard::views::layout::STYLESHEET_PATH;
    let local = client(PROXY);
    for (password, status) in [("dave's password", 200), ("dave's password ", 401)] {
        let answer = local
            .get(format!("http://{addr}{path}"))
            .basic_auth("dave", Some(password))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), status, "{password:?}");
    }
}
