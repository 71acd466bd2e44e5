//! What people see when something fails, and what frames every answer:
//! a failed query shows a request id and no SQL or ClickHouse text (the
//! detail is in the log under that id); every answer carries the security
//! headers, and the pages need nothing those headers forbid.

mod common;

use std::time::Duration;

use common::{
    DEADLINE, UNTIL, VIEWS, assert_secure_headers, assert_shows_no_internals, dataset, fixture,
    get, get_pinned, start_binary,
};
use rallypoint_testkit::clickhouse::{ClickHouseRole, ClickHouseServer};

/// Waits until the log has a line with every one of `words`; returns it.
async fn logged_line(log: &std::path::Path, words: &[&str]) -> String {
    let started = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| words.iter().all(|w| l.contains(w))) {
            return line.to_owned();
        }
        assert!(
            started.elapsed() < DEADLINE,
            "no log line has all of {words:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_query_shows_a_request_id_and_logs_the_detail_under_it() {
    // A ClickHouse without the schema: every view's query fails there, with
    // ClickHouse's own error text.
    let dir = tempfile::tempdir().unwrap();
    let clickhouse = ClickHouseServer::start(&dir.path().join("clickhouse"))
        .await
        .unwrap();
    let log = dir.path().join("dashboard.log");
    let (_dashboard, addr) = start_binary(
        &clickhouse.login(ClickHouseRole::Dashboard),
        &["--no-auth"],
        &log,
    )
    .await;

    let mut ids = Vec::new();
    for (path, params) in VIEWS {
        let answer = get(addr, path, params).await;
        let what = format!("{path} without the schema");
        assert_eq!(answer.status, 503, "{what}: {}", answer.body);
        assert_shows_no_internals(&what, &answer.body);
        assert_secure_headers(&what, &answer.headers);
        let id = answer
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{what} has no X-Request-Id"))
            .to_owned();
        assert!(
            answer.body.contains(&id),
            "{what} shows its request id {id}"
        );
        assert!(answer.body.contains(r#"role="alert""#), "{what}");
        // The detail is in the log, under the same id.
        let line = logged_line(&log, &[&id, "DB::Exception"]).await;
        assert!(
            line.contains("rp_"),
            "the logged detail names the table: {line}"
        );
        ids.push(id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), VIEWS.len(), "every request has its own id");
}

/// Script and style elements and attributes a strict CSP blocks, found in
/// `page`.
fn inline_code(page: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (i, _) in page.match_indices("<script") {
        let tag = &page[i..i + page[i..].find('>').unwrap()];
        if !tag.contains(" src=") {
            found.push(format!("inline script: {tag}"));
        }
    }
    for pattern in [
        "<style",
        " style=",
        " onclick=",
        " onload=",
        " onerror=",
        "javascript:",
    ] {
        if page.contains(pattern) {
            found.push(pattern.to_owned());
        }
    }
    found
}

/// The `/assets/…` files a page links to.
fn assets(page: &str) -> Vec<String> {
    page.match_indices("\"/assets/")
        .map(|(i, _)| {
            let rest = &page[i + 1..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_is_framed_by_security_headers_and_pages_need_nothing_they_forbid() {
    let fx = fixture(&dataset()).await;
    let mut linked = std::collections::BTreeSet::new();
    for (path, params) in VIEWS {
        let params: Vec<(&'static str, &str)> = params.to_vec();
        let answer = get_pinned(fx.addr, path, &params).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        assert_secure_headers(path, &answer.headers);
        assert_eq!(inline_code(&answer.body), Vec::<String>::new(), "{path}");
        linked.extend(assets(&answer.body));
    }
    assert!(
        linked.iter().any(|a| a.ends_with(".css")) && linked.iter().any(|a| a.ends_with(".js")),
        "pages link their stylesheet and script: {linked:?}"
    );
    for asset in &linked {
        let answer = get(fx.addr, asset, &[]).await;
        assert_eq!(answer.status, 200, "{asset}");
        assert_secure_headers(asset, &answer.headers);
        let kind = if asset.ends_with(".css") {
            "text/css"
        } else {
            "text/javascript"
        };
        let content_type = answer
            .headers
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap();
        assert!(content_type.starts_with(kind), "{asset}: {content_type}");
        assert!(answer.body.len() > 100, "{asset} has content");
    }
    for (path, status) in [("/healthz", 200), ("/nowhere", 404)] {
        let answer = get(fx.addr, path, &[]).await;
        assert_eq!(answer.status, status, "{path}");
        assert_secure_headers(path, &answer.headers);
    }
    let bad = get(fx.addr, "/sessions", &[("session", "zz")]).await;
    assert_secure_headers("a 400", &bad.headers);
}

/// A range that would read more than the dashboard's ClickHouse user may is
/// a clear "choose a shorter range" page (400), from every view, quickly and
/// without ClickHouse's text; a 100-year range is refused before any query.
/// The limit is ClickHouse's own (the reader profile), lowered here so that
/// a few reports reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_past_the_readers_limits_is_a_clear_page_not_a_scan() {
    let dir = tempfile::tempdir().unwrap();
    let clickhouse = ClickHouseServer::start_with_reader_limits(
        &dir.path().join("clickhouse"),
        &[("max_rows_to_read", "3")],
    )
    .await
    .unwrap();
    let store = common::admin_store(&clickhouse, 90).await;
    store.write(&dataset(), &[]).await.unwrap();
    let log = dir.path().join("dashboard.log");
    let (_dashboard, addr) = start_binary(
        &clickhouse.login(ClickHouseRole::Dashboard),
        &["--no-auth"],
        &log,
    )
    .await;

    let mut too_large = 0;
    for (path, params) in VIEWS {
        let until = UNTIL.to_string();
        let mut query: Vec<(&str, &str)> = vec![("range", "30d"), ("until", &until)];
        query.extend(params.iter().copied());
        let answer = get(addr, path, &query).await;
        let what = format!("{path} over 30 days past the row limit");
        assert_shows_no_internals(&what, &answer.body);
        assert_secure_headers(&what, &answer.headers);
        if answer.status == 400 {
            assert!(
                answer.body.contains("shorter time range"),
                "{what}: {}",
                answer.body
            );
            too_large += 1;
        } else {
            // A view whose queries stay under 3 rows read answers as usual.
            assert_eq!(answer.status, 200, "{what}: {}", answer.body);
        }
    }
    assert!(
        too_large >= VIEWS.len() - 1,
        "only {too_large} of {} views hit the limit: the test no longer reaches it",
        VIEWS.len()
    );

    // A hundred years: refused by the dashboard itself, before ClickHouse.
    for (path, _) in VIEWS {
        let answer = get(addr, path, &[("range", "100y")]).await;
        assert_eq!(answer.status, 400, "{path}?range=100y: {}", answer.body);
        assert!(
            answer.body.contains("range parameter must be one of"),
            "{}",
            answer.body
        );
        assert_shows_no_internals(path, &answer.body);
    }
}
