//! Filter values reach ClickHouse exactly as people typed them: ISP and
//! country filters on the sessions and what-if views, and values with
//! quotes, backslashes and question marks — checked on ClickHouse 18.16 and
//! replayed on current ClickHouse (chDB).

mod common;

use common::{
    Candidate, UNTIL, calls_started, dataset, filters_at, fixture, get_pinned, replay_on_chdb,
    report, session_hex,
};
use rallypoint_collector::rows::ReportRows;
use rallypoint_dashboard::data::{Source, capacity, matrix, overview, sessions};
use rallypoint_dashboard::filters::Filters;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_what_if_filter_by_isp_and_country() {
    let fx = fixture(&dataset()).await;
    // The dataset's Singtel (SG) sessions are 1 to 3, Comcast's (US) 4 to 6.
    let singtel: Vec<String> = (1..=3).map(session_hex).collect();
    let comcast: Vec<String> = (4..=6).map(session_hex).collect();
    for filter in [("isp", "Singtel"), ("country", "SG")] {
        let answer = get_pinned(fx.addr, "/sessions", &[filter]).await;
        assert_eq!(answer.status, 200, "{filter:?}: {}", answer.body);
        for id in &singtel {
            assert!(answer.body.contains(id.as_str()), "{filter:?} lists {id}");
        }
        for id in &comcast {
            assert!(!answer.body.contains(id.as_str()), "{filter:?} hides {id}");
        }
    }
    for filter in [("isp", "unknown"), ("country", "AU")] {
        let answer = get_pinned(fx.addr, "/sessions", &[filter]).await;
        assert_eq!(answer.status, 200, "{filter:?}: {}", answer.body);
        assert!(
            answer.body.contains("No sessions in this time range"),
            "{filter:?} matches no session"
        );
    }
    let f = Filters {
        isp: Some("Comcast".into()),
        ..filters_at(UNTIL)
    };
    let recent = sessions::recent(&fx.db, &f, UNTIL).await.unwrap();
    let mut ids: Vec<String> = recent.into_iter().map(|s| s.session).collect();
    ids.sort();
    assert_eq!(ids, comcast);

    // What-if for one country: only its ISPs' elections are recomputed.
    let answer = get_pinned(
        fx.addr,
        "/capacity",
        &[("country", "SG"), ("remove", "singapore")],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.contains(r#"data-isp="Singtel""#));
    assert!(!answer.body.contains(r#"data-isp="Comcast""#));

    replay_on_chdb(&fx.db.recorded());
}

/// ISPs whose names are what a careless query builder breaks on, with how
/// many elections each has in [`awkward_reports`].
const AWKWARD_ISPS: &[(&str, u64)] = &[
    ("Ask??", 2),
    ("Ask?", 1),
    (r"O'Neil \ Net?", 3),
    ("?fields", 4),
];

/// One Australian election from each ISP of [`AWKWARD_ISPS`] per count.
fn awkward_reports() -> Vec<ReportRows> {
    let mut id = 0u8;
    let mut reports = Vec::new();
    for (isp, count) in AWKWARD_ISPS {
        for _ in 0..*count {
            id += 1;
            reports.push(report(
                id,
                id,
                0,
                "initial",
                500,
                ("AU", isp, 1221),
                &[
                    Candidate("singapore", "websocket", 90, false),
                    Candidate("us-east", "websocket", 200, false),
                ],
                0,
            ));
        }
    }
    reports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn question_marks_quotes_and_backslashes_in_filters_match_exactly() {
    let fx = fixture(&awkward_reports()).await;
    for (isp, count) in AWKWARD_ISPS {
        let f = Filters {
            isp: Some((*isp).into()),
            ..filters_at(UNTIL)
        };
        for source in [Source::Rollup, Source::Raw] {
            let o = overview::load(&fx.db, &f, UNTIL, source)
                .await
                .unwrap_or_else(|e| panic!("{isp:?} ({source:?}): {e:#}"));
            assert_eq!(o.total_elections, *count, "{isp:?} ({source:?})");
        }
        let recent = sessions::recent(&fx.db, &f, UNTIL).await.unwrap();
        assert_eq!(recent.len() as u64, *count, "{isp:?} sessions");
        assert!(recent.iter().all(|s| s.isp == *isp), "{isp:?}");
        let cell = Filters {
            region: Some("singapore".into()),
            ..f.clone()
        };
        let series = matrix::cell_series(&fx.db, &cell, UNTIL).await.unwrap();
        assert_eq!(series.len(), 2, "{isp:?}: p50 and p95");
        assert_eq!(series[0].points[0].1, 90.0, "{isp:?}");

        let answer = get_pinned(fx.addr, "/", &[("isp", isp)]).await;
        assert_eq!(answer.status, 200, "{isp:?}: {}", answer.body);
        assert_eq!(calls_started(&answer.body), *count, "{isp:?} page");
    }
    // The same characters in the other places values reach a query.
    let odd = Filters {
        country: Some("A?'\\".into()),
        transport: Some("web??socket".into()),
        ..filters_at(UNTIL)
    };
    let question = capacity::WhatIf {
        remove: Some("sing?apore".into()),
        add: Some("??".into()),
    };
    let what_if = capacity::what_if(&fx.db, &odd, UNTIL, &question)
        .await
        .unwrap();
    assert!(what_if.groups.is_empty(), "no country is called A?'\\");
    let without = capacity::WhatIf {
        remove: Some(r"O'Neil \ Net?".into()),
        add: None,
    };
    let kept = capacity::what_if(&fx.db, &filters_at(UNTIL), UNTIL, &without)
        .await
        .unwrap();
    let elections: u64 = kept.groups.iter().map(|g| g.elections).sum();
    assert_eq!(
        elections, 10,
        "no region is called that; every election stays"
    );

    replay_on_chdb(&fx.db.recorded());
}
