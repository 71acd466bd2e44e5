//! Every view's numbers, from a known dataset stored through the collector's
//! real write path into a real ClickHouse 18.16, checked against values
//! worked out by hand from that dataset; then every query the views ran,
//! replayed on current ClickHouse (chDB).

mod common;

use common::{AT, Candidate, SINGTEL, UNTIL, arrived, dataset, replay_on_chdb, report, serve};
use rallypoint_collector::rows::ReportRows;
use rallypoint_dashboard::data::{Source, capacity, matrix, outcomes, overview, sessions};
use rallypoint_dashboard::filters::Filters;
use rallypoint_testkit::clickhouse::{ClickHouseRole, ClickHouseServer};

fn filters() -> Filters {
    Filters {
        range: Some("24h".into()),
        until: Some(UNTIL),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_view_shows_the_numbers_the_data_implies_on_old_and_new_clickhouse() {
    let dir = tempfile::tempdir().unwrap();
    let mut clickhouse = ClickHouseServer::start(dir.path()).await.unwrap();
    let store = common::admin_store(&clickhouse, 90).await;
    store.write(&dataset(), &[]).await.unwrap();
    let db = common::dashboard_db(&clickhouse, ClickHouseRole::Admin).recording();
    let f = filters();

    // Overview.
    let o = overview::load(&db, &f, UNTIL, Source::Rollup)
        .await
        .unwrap();
    assert_eq!(o.total_elections, 6, "calls started");
    assert_eq!(o.total_failovers, 1);
    let total = |name: &str| -> f64 {
        o.elections
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.points.iter().map(|p| p.1).sum())
            .unwrap_or(0.0)
    };
    assert_eq!(total("singapore"), 4.0, "3 initial + 1 failover");
    assert_eq!(total("us-east"), 3.0);
    let us_p50 = o
        .rtt_p50
        .iter()
        .find(|s| s.name == "us-east")
        .unwrap()
        .points[0]
        .1;
    assert_eq!(us_p50, 21.0, "median of 20, 21, 22 ms");
    assert_eq!(o.failover_rate.points[0].1, 1.0 / 6.0);
    assert_eq!(
        o.decision_histogram,
        vec![(400, 2), (500, 1), (600, 1), (700, 1), (1200, 1)]
    );
    assert_eq!(
        overview::load(&db, &f, UNTIL, Source::Raw).await.unwrap(),
        o,
        "rollups agree with raw rows"
    );
    // A week: hourly buckets from the hourly rollups, still equal to raw.
    let week = Filters {
        range: Some("7d".into()),
        ..f.clone()
    };
    let weekly = overview::load(&db, &week, UNTIL, Source::Rollup)
        .await
        .unwrap();
    assert_eq!(weekly.total_elections, 6);
    assert_eq!(
        overview::load(&db, &week, UNTIL, Source::Raw)
            .await
            .unwrap(),
        weekly
    );
    assert_eq!(
        matrix::cells(&db, &week, UNTIL, Source::Rollup)
            .await
            .unwrap(),
        matrix::cells(&db, &week, UNTIL, Source::Raw).await.unwrap()
    );

    // Region × ISP.
    let cells = matrix::cells(&db, &f, UNTIL, Source::Rollup).await.unwrap();
    let cell = |region: &str, isp: &str| {
        cells
            .iter()
            .find(|c| c.region == region && c.isp == isp)
            .cloned()
    };
    let sg = cell("singapore", "Singtel").unwrap();
    assert_eq!(
        sg.samples, 7,
        "ws and wt of 3 elections, plus the failover's"
    );
    assert_eq!(sg.p50_ms, 42.0, "median of 40, 40, 41, 42, 43, 44, 45");
    assert_eq!(sg.loss_pct, 0.0);
    let far = cell("us-east", "Singtel").unwrap();
    assert_eq!(
        (far.loss_pct * 100.0).round() / 100.0,
        16.67,
        "one probe lost of every six"
    );
    assert_eq!(cell("us-east", "Comcast").unwrap().samples, 6);
    assert!(
        cell("frankfurt", "Comcast").is_none(),
        "shadow regions stay out of the matrix"
    );
    assert_eq!(
        matrix::cells(&db, &f, UNTIL, Source::Raw).await.unwrap(),
        cells
    );
    let only_wt = Filters {
        transport: Some("webtransport".into()),
        ..f.clone()
    };
    let wt = matrix::cells(&db, &only_wt, UNTIL, Source::Rollup)
        .await
        .unwrap();
    assert_eq!(
        wt.iter()
            .find(|c| c.region == "singapore" && c.isp == "Singtel")
            .unwrap()
            .p50_ms,
        43.0
    );
    let series = matrix::cell_series(
        &db,
        &Filters {
            region: Some("us-east".into()),
            isp: Some("Comcast".into()),
            ..f.clone()
        },
        UNTIL,
    )
    .await
    .unwrap();
    assert_eq!(series.len(), 2, "p50 and p95");

    // Outcomes.
    let out = outcomes::load(&db, &f, UNTIL).await.unwrap();
    let share = |shares: &[outcomes::Share], group: &str, choice: &str| {
        outcomes::fractions(shares, group)
            .into_iter()
            .find(|(c, _)| *c == choice)
            .map(|(_, f)| f)
    };
    assert_eq!(share(&out.by_isp, "Singtel", "singapore"), Some(1.0));
    assert_eq!(share(&out.by_isp, "Comcast", "us-east"), Some(1.0));
    assert_eq!(share(&out.by_country, "US", "us-east"), Some(1.0));
    assert_eq!(share(&out.transports, "all", "webtransport"), Some(0.5));
    assert_eq!(out.reasons.len(), 1);
    assert_eq!(
        (
            out.reasons[0].trigger.as_str(),
            out.reasons[0].rule.as_str(),
            out.reasons[0].count
        ),
        ("failover", "standby", 1)
    );
    assert_eq!(
        outcomes::load(&db, &week, UNTIL).await.unwrap().reasons,
        out.reasons,
        "a week counts why calls moved from the hourly rollup, the same"
    );

    // Capacity: sessions by hour and day.
    let hourly = capacity::hourly(&db, &f, UNTIL).await.unwrap();
    let hour = AT - AT % 3600;
    assert_eq!(
        hourly
            .iter()
            .map(|h| (h.hour, h.region.as_str(), h.sessions))
            .collect::<Vec<_>>(),
        vec![(hour, "singapore", 3), (hour, "us-east", 3)]
    );
    let daily = capacity::daily(&hourly, UNTIL);
    assert_eq!(
        daily[0].days,
        vec![(AT - AT % 86_400, 3, 0)],
        "peak 3; 23 empty hours make p95 0"
    );

    // What-if: without singapore, Singtel clients go to us-east, 210 ms worse.
    let removed = capacity::what_if(
        &db,
        &f,
        UNTIL,
        &capacity::WhatIf {
            remove: Some("singapore".into()),
            add: None,
        },
    )
    .await
    .unwrap();
    let singtel = removed.groups.iter().find(|g| g.isp == "Singtel").unwrap();
    assert_eq!(
        (singtel.elections, singtel.moved, singtel.stranded),
        (3, 3, 0)
    );
    assert_eq!(singtel.delta_p50_ms, 210.0);
    let comcast = removed.groups.iter().find(|g| g.isp == "Comcast").unwrap();
    assert_eq!((comcast.moved, comcast.delta_p50_ms), (0, 0.0));
    let after = |r: &capacity::WhatIfResult, region: &str| {
        r.regions
            .iter()
            .find(|x| x.region == region)
            .map(|x| (x.before, x.after))
    };
    assert_eq!(after(&removed, "us-east"), Some((3, 6)));
    assert_eq!(after(&removed, "singapore"), Some((3, 0)));
    // With the shadow region frankfurt launched, Comcast clients gain 5 ms.
    let added = capacity::what_if(
        &db,
        &f,
        UNTIL,
        &capacity::WhatIf {
            remove: None,
            add: Some("frankfurt".into()),
        },
    )
    .await
    .unwrap();
    let comcast = added.groups.iter().find(|g| g.isp == "Comcast").unwrap();
    assert_eq!(
        (comcast.moved, comcast.delta_p50_ms, comcast.new_p50_ms),
        (3, -5.0, 16.0)
    );
    assert_eq!(after(&added, "frankfurt"), Some((0, 3)));

    // Session explorer: session 1's elections in order.
    let id: String = [1u8; 16].iter().map(|b| format!("{b:02x}")).collect();
    let session = sessions::SessionId::parse(&id).unwrap();
    let (elections, candidates) = sessions::session(&db, &session).await.unwrap();
    assert_eq!(
        elections
            .iter()
            .map(|e| e.trigger.as_str())
            .collect::<Vec<_>>(),
        ["initial", "failover"]
    );
    assert_eq!(candidates.len(), 5);
    assert_eq!(sessions::recent(&db, &f, UNTIL).await.unwrap().len(), 6);

    // The pages render those numbers (with their test hooks) and an error state.
    let addr = serve(db.clone(), None).await;
    let get = |path: String| async move {
        let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    let q = format!("range=24h&until={UNTIL}");
    for (path, needle) in [
        (format!("/?{q}"), "Calls started".to_owned()),
        (format!("/matrix?{q}"), r#"data-p50-ms="42""#.to_owned()),
        (format!("/outcomes?{q}"), "singapore 100.0%".to_owned()),
        (
            format!("/capacity?{q}&remove=singapore"),
            r#"data-delta-p50="210""#.to_owned(),
        ),
        (
            format!("/sessions?{q}&session={id}"),
            r#"data-trigger="failover""#.to_owned(),
        ),
        (
            format!("/matrix/cell?{q}&region=us-east&isp=Comcast"),
            "RTT from Comcast to us-east".to_owned(),
        ),
    ] {
        let (status, body) = get(path.clone()).await;
        assert_eq!(status, 200, "{path}");
        assert!(body.contains(&needle), "{path} lacks {needle}");
        // Every column header says what its column means.
        for header in body.split("<th scope=\"col\"").skip(1) {
            let tag = header.split('>').next().unwrap_or_default();
            assert!(
                tag.contains("title=\""),
                "{path}: a column header without an explanation: <th{tag}>"
            );
        }
    }
    // The capacity view says what it plans relay cores with: this
    // repository's measurement unless the deployment set its own.
    let (_, page) = get(format!("/capacity?{q}")).await;
    let default = format!(
        r#"data-participants-per-relay-core="{}""#,
        capacity::PARTICIPANTS_PER_RELAY_CORE
    );
    assert!(page.contains(&default), "/capacity lacks {default}");
    assert!(page.contains("the default:"), "/capacity names its source");
    // A deployment's own figure is named as such, even one equal to the
    // default.
    for own in [37, capacity::PARTICIPANTS_PER_RELAY_CORE] {
        let addr = serve(db.clone(), Some(own)).await;
        let page = reqwest::get(format!("http://{addr}/capacity?{q}"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            page.contains(&format!(r#"data-participants-per-relay-core="{own}""#))
                && page.contains("set by --participants-per-relay-core")
                && !page.contains("the default:"),
            "/capacity with --participants-per-relay-core {own}"
        );
    }
    let (_, empty) = get("/?range=1h&until=1000000".into()).await;
    assert!(empty.contains("No data in this time range"), "empty state");

    // Every statement the views ran also runs on current ClickHouse.
    let statements = db.recorded();
    assert!(
        statements.len() >= 12,
        "{} statements recorded",
        statements.len()
    );
    replay_on_chdb(&statements);

    clickhouse.stop().await;
    let (status, body) = get(format!("/?{q}")).await;
    assert_eq!(status, 503);
    assert!(
        body.contains("role=\"alert\""),
        "error state when ClickHouse is down"
    );
}

/// The 30-day range ending at `until`.
fn thirty_days_until(until: u32) -> Filters {
    Filters {
        range: Some("30d".into()),
        until: Some(until),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_of_cells_merges_whole_days_and_the_hours_at_the_edges() {
    const HOUR: u32 = 3_600;
    const DAY: u32 = 86_400;
    // 19:00 to 19:00: the first and last days are partial.
    let until = UNTIL - 5 * HOUR;
    let from = until - 30 * DAY;
    let singtel = |id: u8, ms: u32, at: u32| {
        arrived(
            report(
                id,
                id,
                0,
                "initial",
                500,
                SINGTEL,
                &[
                    Candidate("singapore", "websocket", ms, false),
                    Candidate("us-east", "websocket", 200 + ms, false),
                ],
                0,
            ),
            at,
        )
    };
    let inside = [
        singtel(1, 40, from + 30 * 60),  // first, partial day: an hour row
        singtel(2, 41, from + 5 * HOUR), // midnight: the first whole day
        singtel(3, 42, from + 10 * DAY), // whole days
        singtel(4, 43, from + 20 * DAY + 7),
        singtel(5, 44, until - 5 * HOUR - 1), // last, partial day: hour rows
        singtel(6, 45, until - 2 * HOUR),
        // Either side of the last midnight, where days give way to hours.
        singtel(9, 41, until - 19 * HOUR - 1),
        singtel(10, 44, until - 19 * HOUR),
    ];
    let outside = [
        singtel(7, 90, from - 2 * HOUR),
        singtel(8, 91, until + 3 * HOUR),
    ];
    let dir = tempfile::tempdir().unwrap();
    let clickhouse = ClickHouseServer::start(dir.path()).await.unwrap();
    let store = common::admin_store(&clickhouse, 90).await;
    let all: Vec<ReportRows> = inside.iter().chain(&outside).cloned().collect();
    store.write(&all, &[]).await.unwrap();
    let db = common::dashboard_db(&clickhouse, ClickHouseRole::Admin).recording();
    let month = thirty_days_until(until);

    let cells = matrix::cells(&db, &month, until, Source::Rollup)
        .await
        .unwrap();
    let statement = db.recorded().pop().unwrap();
    assert!(
        statement.contains("rp_rtt_day") && statement.contains("rp_rtt_hour"),
        "a month reads days and edge hours: {statement}"
    );
    let singapore = cells
        .iter()
        .find(|c| c.region == "singapore" && c.isp == "Singtel")
        .unwrap();
    assert_eq!(
        singapore.samples,
        inside.len() as u64,
        "every report in the window once, none outside"
    );
    assert_eq!(
        singapore.p50_ms, 42.5,
        "median of 40..=45 ms (interpolated)"
    );
    assert_eq!(
        matrix::cells(&db, &month, until, Source::Raw)
            .await
            .unwrap(),
        cells,
        "days plus edge hours agree with the raw rows"
    );

    // The overview's daily buckets and the outcomes read the same way.
    let overview = overview::load(&db, &month, until, Source::Rollup)
        .await
        .unwrap();
    assert!(
        db.recorded()
            .iter()
            .any(|sql| sql.contains("rp_elections_day") && sql.contains("rp_elections_hour")),
        "a month's overview reads days and edge hours"
    );
    assert_eq!(overview.total_elections, inside.len() as u64);
    assert_eq!(
        overview::load(&db, &month, until, Source::Raw)
            .await
            .unwrap(),
        overview,
        "daily buckets from days plus edge hours agree with the raw rows"
    );
    let out = outcomes::load(&db, &month, until).await.unwrap();
    let counted: u64 = out.by_isp.iter().map(|s| s.elections).sum();
    assert_eq!(
        counted,
        inside.len() as u64,
        "every election in the window once"
    );
    replay_on_chdb(&db.recorded());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_database_reads_the_days_before_its_per_day_rollups_from_hours() {
    const HOUR: u32 = 3_600;
    const DAY: u32 = 86_400;
    let until = UNTIL - 5 * HOUR;
    // A month of reports stored under schema 5 (before the per-day rollups).
    let dir = tempfile::tempdir().unwrap();
    let clickhouse = ClickHouseServer::start(dir.path()).await.unwrap();
    let client = clickhouse
        .login(ClickHouseRole::Admin)
        .args()
        .client()
        .unwrap();
    rallypoint_collector::schema::migrate_to(
        &client,
        &rallypoint_collector::layout::Layout::Single,
        5,
    )
    .await
    .unwrap();
    let times = [
        until - 29 * DAY,
        until - 20 * DAY,
        until - 3 * DAY,
        until - HOUR,
    ];
    for (i, at) in times.iter().enumerate() {
        let id = format!("{:016}", i);
        clickhouse
            .query(&format!(
                "INSERT INTO rp_candidates (report_id, received_at, idx, trigger, region, transport, samples, rtt_median_us, country, isp) \
                 VALUES ('{id}', toDateTime({at}), 0, 'initial', 'singapore', 'websocket', 5, 40000, 'SG', 'Singtel')"
            ))
            .await
            .unwrap();
        clickhouse
            .query(&format!(
                "INSERT INTO rp_elections (report_id, received_at, session_id, trigger, winner_region, winner_transport, winner_rtt_us, decision_ms, country, isp) \
                 VALUES ('{id}', toDateTime({at}), '{id}', 'initial', 'singapore', 'websocket', 40000, 500, 'SG', 'Singtel')"
            ))
            .await
            .unwrap();
    }
    // One call moved, before the upgrade too.
    clickhouse
        .query(&format!(
            "INSERT INTO rp_elections (report_id, received_at, session_id, trigger, rule, winner_region, winner_transport, winner_rtt_us, decision_ms, country, isp) \
             VALUES ('moved-0000000000', toDateTime({}), '{:016}', 'failover', 'standby', 'singapore', 'websocket', 40000, 0, 'SG', 'Singtel')",
            until - 3 * DAY + HOUR,
            2
        ))
        .await
        .unwrap();
    // Today's collector upgrades it: the new rollups start empty.
    common::admin_store(&clickhouse, 3650).await;
    assert_eq!(
        clickhouse
            .count("SELECT count() FROM rp_rtt_day")
            .await
            .unwrap(),
        0
    );

    let db = common::dashboard_db(&clickhouse, ClickHouseRole::Admin).recording();
    let month = thirty_days_until(until);
    let cells = matrix::cells(&db, &month, until, Source::Rollup)
        .await
        .unwrap();
    assert_eq!(
        cells.iter().map(|c| c.samples).sum::<u64>(),
        times.len() as u64,
        "every report of the month, though the per-day rollup has none of them"
    );
    let overview = overview::load(&db, &month, until, Source::Rollup)
        .await
        .unwrap();
    assert_eq!(overview.total_elections, times.len() as u64);
    let out = outcomes::load(&db, &month, until).await.unwrap();
    assert_eq!(
        out.by_isp.iter().map(|s| s.elections).sum::<u64>(),
        times.len() as u64
    );
    assert_eq!(
        out.reasons
            .iter()
            .map(|r| (r.trigger.as_str(), r.rule.as_str(), r.count))
            .collect::<Vec<_>>(),
        vec![("failover", "standby", 1)],
        "why calls moved, though the hourly rollup of moves is newer"
    );
    assert!(
        db.recorded().iter().all(|sql| [
            "FROM rp_rtt_day",
            "FROM rp_elections_day",
            "FROM rp_moves_hour"
        ]
        .iter()
        .all(|table| !sql.contains(table))),
        "no view reads days the per-day rollups do not hold"
    );
}
