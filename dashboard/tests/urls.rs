//! What people type into the dashboard's URLs, against a real ClickHouse
//! 18.16: impossible times and numbers and malformed session ids are
//! refused with a 400 that says why, and every view with every parameter
//! holds up to hostile values — a page or a clear 4xx, soon, with the
//! security headers, never SQL or ClickHouse's own error text.

mod common;

use std::net::SocketAddr;

use common::{
    VIEWS, assert_secure_headers, assert_shows_no_internals, borrowed, calls_started, dataset,
    fixture, get, get_pinned, pinned,
};

/// Every parameter any view reads.
const PARAMETERS: &[&str] = &[
    "range",
    "until",
    "country",
    "transport",
    "isp",
    "region",
    "synthetic",
    "remove",
    "add",
    "session",
];

/// Parameters no view can answer, each with a word its message must name.
fn unanswerable() -> Vec<(&'static str, String, &'static str)> {
    let mut cases: Vec<(&str, String, &str)> = [
        ("until", "4294967295", "until"),
        ("until", "4102444801", "until"),
        ("until", "18446744073709551615", "until"),
        ("until", "-1", "until"),
        ("until", "soon", "until"),
        ("range", "100y", "range"),
        ("range", "-1h", "range"),
        ("synthetic", "300", "synthetic"),
        ("synthetic", "-1", "synthetic"),
        ("synthetic", "2", "synthetic"),
    ]
    .into_iter()
    .map(|(name, value, word)| (name, value.to_owned(), word))
    .collect();
    cases.push(("isp", "x".repeat(10_000), "isp"));
    cases.push(("remove", "?".repeat(201), "remove"));
    cases
}

/// The text of a page's alert.
fn alert_text(body: &str) -> &str {
    let alert = &body[body.find(r#"role="alert""#).expect("an alert")..];
    &alert[..alert.find("</div>").expect("the alert's end")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_times_and_numbers_get_a_400_that_says_why() {
    let fx = fixture(&dataset()).await;
    for (path, params) in VIEWS {
        for (name, value, word) in unanswerable() {
            let mut query: Vec<(&str, &str)> = params.to_vec();
            query.push((name, &value));
            let answer = get(fx.addr, path, &query).await;
            let what = format!("{path} {name}={}", &value[..value.len().min(40)]);
            assert_eq!(answer.status, 400, "{what}: {}", answer.body);
            assert!(
                alert_text(&answer.body).contains(word),
                "{what}: the message names {word}: {}",
                alert_text(&answer.body)
            );
            assert_shows_no_internals(&what, &answer.body);
        }
        // The latest and the earliest times the dashboard answers for.
        for (range, until) in [("30d", "4102444800"), ("7d", "4102444800"), ("30d", "0")] {
            let mut query: Vec<(&str, &str)> = params.to_vec();
            query.extend([("range", range), ("until", until)]);
            let answer = get(fx.addr, path, &query).await;
            assert_eq!(answer.status, 200, "{path} {range} until {until}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_session_id_is_a_400() {
    let fx = fixture(&dataset()).await;
    let short = "0".repeat(31);
    let long = "0".repeat(33);
    let wide = "é".repeat(16);
    for id in [
        "zz",
        &short,
        &long,
        &wide,
        "' OR 1=1 --",
        "0101010101010101010101010101010g",
    ] {
        let answer = get(fx.addr, "/sessions", &[("session", id)]).await;
        assert_eq!(answer.status, 400, "{id:?}: {}", answer.body);
        assert!(
            alert_text(&answer.body).contains("32 hex characters"),
            "{id:?}: says what a session id is"
        );
        assert!(
            !answer.body.contains("ClickHouse"),
            "{id:?}: not a database problem"
        );
    }
    let unknown = get(fx.addr, "/sessions", &[("session", &"ab".repeat(16))]).await;
    assert_eq!(unknown.status, 200);
    assert!(
        unknown
            .body
            .contains("No elections stored for this session")
    );
}

/// Values people (and scanners) put in URLs.
fn hostile_values() -> Vec<String> {
    let mut values: Vec<String> = [
        "SG",
        "Singtel",
        "singapore",
        "webtransport",
        "",
        "'",
        "''",
        "\"",
        "\\",
        "\\'",
        "?",
        "??",
        "a?b??c?fields",
        "' OR 1=1 --",
        "\"><script>alert(1)</script>",
        "日本語 ✓ 🚀",
        "\0",
        "line\nbreak\ttab",
        "%",
        "1h",
        "30d",
        "100y",
        "0",
        "1",
        "-1",
        "3155760000",
        "4294967295",
        "18446744073709551615",
    ]
    .iter()
    .map(|v| v.to_string())
    .collect();
    values.push("x".repeat(10_000));
    values.push("?".repeat(5_000));
    values.push(format!("{}'", "\\".repeat(999)));
    values
}

/// One request of the walk: a view, its own parameters, and one parameter
/// set to one value.
struct Case {
    path: &'static str,
    query: Vec<(&'static str, String)>,
}

/// Every view × every parameter × every hostile value.
fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (path, own) in VIEWS {
        for parameter in PARAMETERS {
            for value in hostile_values() {
                let mut query = pinned();
                query.extend(own.iter().map(|(k, v)| (*k, v.to_string())));
                query.retain(|(k, _)| k != parameter);
                query.push((parameter, value));
                cases.push(Case { path, query });
            }
        }
    }
    cases
}

/// Runs `cases` one after another, checking each answer.
async fn walk(addr: SocketAddr, cases: Vec<Case>) -> usize {
    let mut client_errors = 0;
    for case in &cases {
        let answer = get(addr, case.path, &borrowed(&case.query)).await;
        let (parameter, value) = case.query.last().unwrap();
        let what = format!(
            "{} {parameter}={:?}",
            case.path,
            value.chars().take(40).collect::<String>()
        );
        assert!(
            answer.status == 200 || (400..500).contains(&answer.status),
            "{what}: {} {}",
            answer.status,
            answer.body
        );
        client_errors += usize::from(answer.status != 200);
        assert_shows_no_internals(&what, &answer.body);
        assert!(
            !answer.body.contains("<script>alert"),
            "{what}: a value became markup"
        );
        assert_secure_headers(&what, &answer.headers);
    }
    client_errors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_view_and_filter_holds_up_to_hostile_values() {
    let fx = fixture(&dataset()).await;
    let cases = cases();
    let total = cases.len();
    // Four walkers at once, each with its share.
    let mut shares: Vec<Vec<Case>> = (0..4).map(|_| Vec::new()).collect();
    for (i, case) in cases.into_iter().enumerate() {
        shares[i % 4].push(case);
    }
    let walkers: Vec<_> = shares
        .into_iter()
        .map(|share| tokio::spawn(walk(fx.addr, share)))
        .collect();
    let mut client_errors = 0;
    for walker in walkers {
        client_errors += walker.await.unwrap();
    }
    assert!(
        client_errors > 0 && client_errors < total,
        "some values are answered, some refused ({client_errors} of {total} refused)"
    );
    // ClickHouse is still there for the next person.
    let answer = get_pinned(fx.addr, "/", &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(calls_started(&answer.body), 6);
}
