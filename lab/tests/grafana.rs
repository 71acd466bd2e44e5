//! Keeps the provisioned Grafana dashboards (`grafana/`) honest.
//!
//! Every panel's SQL (and every variable's) is expanded the way Grafana and
//! the ClickHouse plugin expand it (`grafana/expand.rs`), then run
//!
//! * on a real ClickHouse 18.16 (Debian's, what the local stack runs) holding
//!   the schema and a small known dataset (`grafana/seed.rs`): every query must
//!   return rows with the columns its panel needs, and one or more panels per
//!   dashboard must show exactly the numbers computed here from the seed;
//! * on current ClickHouse in-process (chDB, `testkit/tools/chdb_check.py`)
//!   with the same schema and seed: every query must run.
//!
//! The relay-health dashboard reads Prometheus instead: here its structure
//! and its PromQL's syntax (by promtool); in `tests/prometheus.rs` every
//! expression runs on a real Prometheus scraping a real relay and collector
//! and may read only metrics they export.

#[path = "grafana/expand.rs"]
mod expand;
#[path = "grafana/promql.rs"]
mod promql;
#[path = "prometheus/promtool.rs"]
mod promtool;
#[path = "grafana/seed.rs"]
mod seed;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use expand::{Range, Value, Variables};
use rallypoint_collector::schema::fresh_schema;
use rallypoint_testkit::clickhouse::ClickHouseServer;
use seed::{BASE, DAY, Election, HOUR, distinct, group, quantile};
use serde_json::{Value as Json, json};

const DATASOURCE_UID: &str = "rallypoint-clickhouse";

/// The seeded fortnight, bucketed by the hour.
const RANGE: Range = Range {
    from: BASE,
    to: BASE + 14 * DAY - 1,
    interval_s: HOUR,
};

fn grafana_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../grafana")
}

struct Dashboard {
    file: String,
    json: Json,
}

/// The ClickHouse dashboards (every one but the Prometheus relay-health one).
fn dashboards() -> Vec<Dashboard> {
    all_dashboards()
        .into_iter()
        .filter(|d| d.file != promql::FILE)
        .collect()
}

fn all_dashboards() -> Vec<Dashboard> {
    let mut files: Vec<_> = std::fs::read_dir(grafana_dir().join("dashboards"))
        .expect("grafana/dashboards exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| Dashboard {
            file: path.file_name().unwrap().to_string_lossy().into_owned(),
            json: serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        })
        .collect()
}

/// One SQL query of a dashboard: a panel's target or a query variable.
struct Query<'a> {
    name: String,
    panel: Option<&'a Json>,
    timeseries: bool,
    sql: &'a str,
    variables: Variables,
}

fn queries(dashboard: &Dashboard) -> Vec<Query<'_>> {
    let variables = expand::defaults(&dashboard.json);
    let mut out = Vec::new();
    for panel in dashboard.json["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            out.push(Query {
                name: format!("{} / {}", dashboard.file, panel["title"].as_str().unwrap()),
                panel: Some(panel),
                timeseries: target["format"] == 0,
                sql: target["rawSql"].as_str().expect("every target is raw SQL"),
                variables: variables.clone(),
            });
        }
    }
    for variable in dashboard.json["templating"]["list"].as_array().unwrap() {
        if variable["type"] == "query" {
            out.push(Query {
                name: format!(
                    "{} / variable {}",
                    dashboard.file,
                    variable["name"].as_str().unwrap()
                ),
                panel: None,
                timeseries: false,
                sql: variable["query"]["rawSql"].as_str().unwrap(),
                variables: variables.clone(),
            });
        }
    }
    out
}

impl<'a> Query<'a> {
    fn expanded(&self) -> String {
        self.expanded_for(&RANGE)
    }

    fn expanded_for(&self, range: &Range) -> String {
        let sql = expand::expand(self.sql, &self.variables, range)
            .unwrap_or_else(|e| panic!("{}: {e}", self.name));
        assert!(!sql.contains('$'), "{}: left unexpanded:\n{sql}", self.name);
        sql
    }

    /// The same query with the variable `name` set to `value`.
    fn with(&self, name: &str, value: &str) -> Query<'a> {
        let mut variables = self.variables.clone();
        variables.insert(name.into(), Value::Single(value.into()));
        Query {
            name: format!("{} ({name} = {value})", self.name),
            panel: self.panel,
            timeseries: self.timeseries,
            sql: self.sql,
            variables,
        }
    }

    /// Whether the query reads the rollup the `rollup` variable picks.
    fn follows_the_rollup(&self) -> bool {
        self.sql.contains("${rollup}")
    }

    /// Field names the panel's options refer to (matrix and bar chart fields,
    /// per-field overrides): each must be a column of the result.
    fn referenced_fields(&self) -> Vec<String> {
        let Some(panel) = self.panel else {
            return Vec::new();
        };
        let mut names = vec![&panel["options"]["xField"]];
        for t in panel["transformations"].as_array().into_iter().flatten() {
            names.extend(["rowField", "columnField", "valueField"].map(|f| &t["options"][f]));
        }
        for o in panel["fieldConfig"]["overrides"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if o["matcher"]["id"] == "byName" {
                names.push(&o["matcher"]["options"]);
            }
        }
        names
            .into_iter()
            .filter_map(|n| n.as_str().map(String::from))
            .collect()
    }
}

/// A data source provisioning file (`grafana/provisioning/datasources/`)
/// says each of `needles`.
fn assert_provisioned(file: &str, needles: &[&str]) {
    let path = grafana_dir().join("provisioning/datasources").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    for needle in needles {
        assert!(text.contains(needle), "{file} lacks {needle}");
    }
}

#[test]
fn dashboards_and_provisioning_are_well_formed() {
    let dashboards = dashboards();
    let files: BTreeSet<_> = dashboards.iter().map(|d| d.file.as_str()).collect();
    assert_eq!(
        files,
        BTreeSet::from([
            "capacity.json",
            "outcomes.json",
            "overview.json",
            "region-isp.json"
        ])
    );
    let mut uids = BTreeSet::new();
    for d in &all_dashboards() {
        let uid = d.json["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no uid", d.file));
        assert!(
            uids.insert(uid.to_owned()),
            "{}: uid {uid} is used twice",
            d.file
        );
    }
    for d in &dashboards {
        assert!(
            d.json["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{}: no title",
            d.file
        );
        let variables = d.json["templating"]["list"].as_array().unwrap();
        let synthetic = variables.iter().find(|v| v["name"] == "synthetic");
        assert!(
            synthetic.is_some_and(|v| v["current"]["value"] == "0"),
            "{}: needs a `synthetic` variable defaulting to 0",
            d.file
        );
        let mut panel_ids = BTreeSet::new();
        for panel in d.json["panels"].as_array().unwrap() {
            let title = panel["title"].as_str().expect("every panel has a title");
            assert!(
                panel_ids.insert(panel["id"].as_u64().unwrap()),
                "{}: duplicate panel id",
                d.file
            );
            assert_eq!(
                panel["datasource"]["uid"], DATASOURCE_UID,
                "{} / {title}",
                d.file
            );
            let targets = panel["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{} / {title}: no query", d.file);
            for target in targets {
                assert_eq!(
                    target["datasource"]["uid"], DATASOURCE_UID,
                    "{} / {title}",
                    d.file
                );
                let sql = target["rawSql"].as_str().unwrap();
                assert!(
                    sql.contains("synthetic <= $synthetic"),
                    "{} / {title}: does not honour $synthetic",
                    d.file
                );
            }
        }
        for variable in variables.iter().filter(|v| v["type"] == "query") {
            assert_eq!(
                variable["datasource"]["uid"], DATASOURCE_UID,
                "{}: {}",
                d.file, variable["name"]
            );
        }
    }
    assert_provisioned(
        "clickhouse.yaml",
        &[
            "type: grafana-clickhouse-datasource",
            "uid: rallypoint-clickhouse",
            "${RALLYPOINT_CLICKHOUSE_HOST}",
            "protocol: http",
            "secure: true",
            "tlsAuthWithCACert: true",
        ],
    );
    let provider =
        std::fs::read_to_string(grafana_dir().join("provisioning/dashboards/rallypoint.yaml"))
            .unwrap();
    assert!(provider.contains("type: file"));
}

/// The relay-health dashboard: Prometheus only, the panels an SRE needs,
/// every expression valid PromQL (checked by promtool as recording rules),
/// and its data source provisioned beside the ClickHouse one.
#[test]
fn relay_health_dashboard_is_well_formed_and_its_promql_parses() {
    let all = all_dashboards();
    assert!(
        all.iter().any(|d| d.file == promql::FILE),
        "grafana/dashboards/{} exists",
        promql::FILE
    );
    let dashboard = promql::dashboard();
    let mut panel_ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().expect("every panel has a title");
        assert!(
            panel_ids.insert(panel["id"].as_u64().unwrap()),
            "duplicate panel id"
        );
        assert_eq!(
            panel["datasource"]["uid"],
            promql::PROMETHEUS_UID,
            "{title}"
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        let mut ref_ids = BTreeSet::new();
        for target in targets {
            assert_eq!(
                target["datasource"]["uid"],
                promql::PROMETHEUS_UID,
                "{title}"
            );
            assert!(
                ref_ids.insert(target["refId"].as_str().unwrap()),
                "{title}: refId twice"
            );
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        assert_eq!(variable["datasource"]["uid"], promql::PROMETHEUS_UID);
        assert_eq!(
            variable["allValue"], ".*",
            "{}: All must match every value",
            variable["name"]
        );
        let query = promql::expand(variable["query"]["query"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("variable {}: {e}", variable["name"]));
        assert!(query.starts_with("label_values("), "{query}");
    }

    let expressions = promql::expressions(&dashboard);
    let read: BTreeSet<String> = expressions
        .iter()
        .flat_map(|e| promql::metric_names(&e.promql))
        .collect();
    // What the issue asks the dashboard to show.
    for needed in [
        "rallypoint_relay_connections_active",
        "rallypoint_relay_rooms_active",
        "rallypoint_relay_media_packets_total",
        "rallypoint_relay_media_io_bytes_total",
        "rallypoint_relay_media_dropped_total",
        "rallypoint_relay_probes_total",
        "rallypoint_relay_nats_connected",
        "rallypoint_relay_reports_total",
        "rallypoint_collector_lag",
        "rallypoint_collector_dead_letters_total",
    ] {
        assert!(read.contains(needed), "no panel shows {needed}");
    }

    // promtool parses each expression as a recording rule's.
    let dir = tempfile::tempdir().unwrap();
    let rules = json!({"groups": [{
        "name": "relay-health-dashboard",
        "rules": expressions.iter().enumerate().map(|(i, e)| json!({
            "record": format!("dashboard:expression_{i}"),
            "expr": e.promql,
        })).collect::<Vec<_>>(),
    }]});
    let file = dir.path().join("dashboard-rules.yml");
    // JSON is YAML.
    std::fs::write(&file, rules.to_string()).unwrap();
    if let Err(e) = promtool::check_rules(&file) {
        panic!("a dashboard expression is not valid PromQL:\n{e}");
    }

    assert_provisioned(
        "prometheus.yaml",
        &[
            "type: prometheus",
            "uid: rallypoint-prometheus",
            "${RALLYPOINT_PROMETHEUS_URL}",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_runs_on_clickhouse_18_and_shows_the_seeded_numbers() {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut clickhouse = ClickHouseServer::start(dir.path()).await.unwrap();
    for statement in fresh_schema() {
        clickhouse.query(statement).await.unwrap();
    }
    let elections = seed::elections();
    for insert in seed::inserts(&elections) {
        clickhouse.query(&insert).await.unwrap();
    }

    let dashboards = dashboards();
    for dashboard in &dashboards {
        for query in queries(dashboard) {
            let result = run(&clickhouse, &query.expanded()).await;
            check_columns(&query, &result);
        }
    }

    let real: Vec<&Election> = elections.iter().filter(|e| !e.synthetic).collect();
    let checks = Checks {
        clickhouse: &clickhouse,
        dashboards: &dashboards,
    };
    checks.variable_countries(&real).await;
    checks.overview(&real).await;
    checks.region_isp(&real).await;
    checks.outcomes(&real).await;
    checks.capacity(&real).await;
    checks.rollup_follows_the_range().await;

    // Beyond 36 hours the panels read the hourly rollups: over the seeded,
    // hour-aligned fortnight they must show what the per-minute ones show.
    let mut compared = 0;
    for dashboard in &dashboards {
        for query in queries(dashboard) {
            if !query.follows_the_rollup() {
                continue;
            }
            let by_minute = run(&clickhouse, &query.with("rollup", "minute").expanded()).await;
            let by_hour = run(&clickhouse, &query.with("rollup", "hour").expanded()).await;
            assert_eq!(by_hour.columns, by_minute.columns, "{}", query.name);
            let same =
                by_hour.rows.len() == by_minute.rows.len()
                    && by_hour.rows.iter().zip(&by_minute.rows).all(|(h, m)| {
                        h.len() == m.len() && h.iter().zip(m).all(|(a, b)| a.matches(b))
                    });
            assert!(
                same,
                "{}: the hourly rollup shows\n{}\nthe per-minute one\n{}",
                query.name,
                table(&by_hour.rows),
                table(&by_minute.rows)
            );
            compared += 1;
        }
    }
    assert!(
        compared >= 15,
        "only {compared} queries follow the rollup variable"
    );

    clickhouse.stop().await;
    eprintln!("ClickHouse 18.16 checks took {:?}", started.elapsed());
}

#[test]
fn every_panel_runs_on_modern_clickhouse() {
    let started = std::time::Instant::now();
    let dashboards = dashboards();
    let mut checks = Vec::new();
    for dashboard in &dashboards {
        for query in queries(dashboard) {
            if query.follows_the_rollup() {
                let hourly = query.with("rollup", "hour");
                checks.push(json!({"name": hourly.name, "sql": hourly.expanded()}));
            }
            checks.push(json!({"name": query.name, "sql": query.expanded()}));
        }
    }
    let spec = json!({
        "ddl": fresh_schema().collect::<Vec<_>>(),
        "ttl": [],
        "seed": seed::inserts(&seed::elections()),
        "checks": checks,
    });
    let stdout = rallypoint_testkit::chdb::check(&spec)
        .unwrap_or_else(|e| panic!("chDB check failed:\n{e}"));
    let ok = stdout.lines().filter(|l| l.starts_with("ok: ")).count();
    assert_eq!(ok, checks.len(), "chDB ran only some queries:\n{stdout}");
    eprintln!("chDB: {ok} queries ran in {:?}", started.elapsed());
}

// ------------------------------------------------------------------ results

struct QueryResult {
    columns: Vec<(String, String)>,
    rows: Vec<Vec<Cell>>,
}

async fn run(clickhouse: &ClickHouseServer, sql: &str) -> QueryResult {
    let body = clickhouse
        .query(&format!("{sql}\nFORMAT JSONCompact"))
        .await
        .unwrap_or_else(|e| panic!("ClickHouse 18.16 refused:\n{sql}\n{e}"));
    let json: Json = serde_json::from_str(&body).unwrap();
    QueryResult {
        columns: json["meta"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().into(),
                    c["type"].as_str().unwrap().into(),
                )
            })
            .collect(),
        rows: json["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(Cell::from_json)
                    .collect()
            })
            .collect(),
    }
}

fn check_columns(query: &Query<'_>, result: &QueryResult) {
    let name = &query.name;
    assert!(
        !result.rows.is_empty(),
        "{name}: no rows for the seeded data"
    );
    for (column, _) in &result.columns {
        assert!(
            column
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{name}: column {column:?} needs a plain alias"
        );
    }
    let numeric = |t: &str| {
        let t = t.trim_start_matches("Nullable(");
        t.starts_with("UInt") || t.starts_with("Int") || t.starts_with("Float")
    };
    if query.timeseries {
        assert_eq!(
            result.columns[0],
            ("time".to_string(), "DateTime".to_string()),
            "{name}: a time series starts with `time`"
        );
        assert!(
            result.columns.iter().any(|(_, t)| numeric(t)),
            "{name}: a time series needs a numeric column"
        );
    }
    let columns: BTreeSet<_> = result.columns.iter().map(|(c, _)| c.clone()).collect();
    for field in query.referenced_fields() {
        assert!(
            columns.contains(&field),
            "{name}: the panel refers to {field:?}, not a column of {columns:?}"
        );
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Num(f64),
    Text(String),
    Null,
}

impl Cell {
    fn from_json(value: &Json) -> Cell {
        match value {
            Json::Number(n) => Cell::Num(n.as_f64().unwrap()),
            // ClickHouse quotes 64-bit integers in JSON.
            Json::String(s) => s
                .parse()
                .map(Cell::Num)
                .unwrap_or_else(|_| Cell::Text(s.clone())),
            Json::Null => Cell::Null,
            other => panic!("unexpected cell {other}"),
        }
    }

    fn key(&self) -> String {
        match self {
            Cell::Num(n) => format!("{n:020.6}"),
            Cell::Text(s) => s.clone(),
            Cell::Null => "null".into(),
        }
    }

    fn matches(&self, other: &Cell) -> bool {
        match (self, other) {
            (Cell::Num(a), Cell::Num(b)) => (a - b).abs() <= 1e-9 * a.abs().max(1.0),
            _ => self == other,
        }
    }
}

impl From<&str> for Cell {
    fn from(s: &str) -> Cell {
        Cell::Text(s.into())
    }
}
impl From<f64> for Cell {
    fn from(n: f64) -> Cell {
        Cell::Num(n)
    }
}
impl From<usize> for Cell {
    fn from(n: usize) -> Cell {
        Cell::Num(n as f64)
    }
}
impl From<u32> for Cell {
    fn from(n: u32) -> Cell {
        Cell::Num(n.into())
    }
}
impl From<Option<f64>> for Cell {
    fn from(n: Option<f64>) -> Cell {
        n.map_or(Cell::Null, Cell::Num)
    }
}

macro_rules! row {
    ($($cell:expr),* $(,)?) => { vec![$(Cell::from($cell)),*] };
}

// ------------------------------------------------------------------ values

struct Checks<'a> {
    clickhouse: &'a ClickHouseServer,
    dashboards: &'a [Dashboard],
}

impl Checks<'_> {
    /// Runs `SELECT columns FROM (panel SQL)` with the dashboard's variables
    /// (some overridden) and compares the rows, in any order, to `expected`.
    async fn panel(
        &self,
        file: &str,
        title: &str,
        overrides: &[(&str, Value)],
        columns: &str,
        expected: Vec<Vec<Cell>>,
    ) {
        let dashboard = self.dashboards.iter().find(|d| d.file == file).unwrap();
        let mut query = queries(dashboard)
            .into_iter()
            .find(|q| q.panel.is_some_and(|p| p["title"] == title))
            .unwrap_or_else(|| panic!("{file}: no panel {title:?}"));
        for (name, value) in overrides {
            query.variables.insert((*name).into(), value.clone());
        }
        let sql = format!("SELECT {columns} FROM (\n{}\n)", query.expanded());
        let mut actual = run(self.clickhouse, &sql).await.rows;
        let mut expected = expected;
        let sort = |rows: &mut Vec<Vec<Cell>>| {
            rows.sort_by_key(|r| r.iter().map(Cell::key).collect::<Vec<_>>())
        };
        sort(&mut actual);
        sort(&mut expected);
        let same = actual.len() == expected.len()
            && actual
                .iter()
                .zip(&expected)
                .all(|(a, e)| a.len() == e.len() && a.iter().zip(e).all(|(a, e)| a.matches(e)));
        assert!(
            same,
            "{file} / {title} ({columns}):\nexpected {}\nactual   {}",
            table(&expected),
            table(&actual)
        );
        eprintln!("values ok: {file} / {title} ({} rows)", actual.len());
    }

    /// The hidden `rollup` variable: per minute up to 36 hours, per hour beyond.
    async fn rollup_follows_the_range(&self) {
        for dashboard in self.dashboards {
            for query in queries(dashboard) {
                if !query.name.ends_with("/ variable rollup") {
                    continue;
                }
                for (span, expected) in [(DAY, "minute"), (36 * HOUR, "minute"), (7 * DAY, "hour")]
                {
                    let range = Range {
                        from: BASE,
                        to: BASE + span,
                        interval_s: 60,
                    };
                    let result = run(self.clickhouse, &query.expanded_for(&range)).await;
                    assert_eq!(
                        result.rows,
                        vec![row![expected]],
                        "{}: over {span} s",
                        query.name
                    );
                }
            }
        }
    }

    async fn variable_countries(&self, real: &[&Election]) {
        let expected: BTreeSet<&str> = real.iter().map(|e| e.country).collect();
        for dashboard in self.dashboards {
            for query in queries(dashboard)
                .iter()
                .filter(|q| q.name.ends_with("variable country"))
            {
                let rows = run(self.clickhouse, &query.expanded()).await.rows;
                let actual: Vec<Cell> = rows.into_iter().flatten().collect();
                let expected: Vec<Cell> = expected.iter().map(|&c| Cell::from(c)).collect();
                assert_eq!(actual, expected, "{}", query.name);
            }
        }
    }

    async fn overview(&self, real: &[&Election]) {
        let bucket = |e: &Election| e.at / RANGE.interval_s * RANGE.interval_s;
        let by_region = group(
            real.iter().copied(),
            |e| (bucket(e), e.winner_region()),
            |_| (),
        );
        let expected = by_region
            .iter()
            .map(|((time, region), n)| {
                row![
                    *time,
                    if region.is_empty() { "(none)" } else { *region },
                    n.len()
                ]
            })
            .collect();
        self.panel(
            "overview.json",
            "Elections by winner region",
            &[],
            "toUInt32(time), region, elections",
            expected,
        )
        .await;

        let by_time = group(real.iter().copied(), |e| bucket(e), |e| e.trigger);
        let share = |triggers: &[&str], t: &str| {
            triggers.iter().filter(|&&x| x == t).count() as f64 / triggers.len() as f64
        };
        let expected = by_time
            .iter()
            .map(|(time, triggers)| {
                row![*time, share(triggers, "failover"), share(triggers, "drain")]
            })
            .collect();
        self.panel(
            "overview.json",
            "Failover rate",
            &[],
            "toUInt32(time), failover, drain",
            expected,
        )
        .await;

        let decided = real.iter().filter(|e| e.winner.is_some());
        let histogram = group(
            decided,
            |e| (e.decision_ms / 250 * 250).min(3000),
            |e| e.trigger == "initial",
        );
        let expected = histogram
            .iter()
            .map(|(&b, initial)| {
                let label = if b >= 3000 {
                    "3000+ ms".to_string()
                } else {
                    format!("{b}-{} ms", b + 250)
                };
                let first = initial.iter().filter(|&&i| i).count();
                row![label.as_str(), first, initial.len() - first]
            })
            .collect();
        self.panel(
            "overview.json",
            "Decision time distribution",
            &[],
            "decision_time, initial, later",
            expected,
        )
        .await;
    }

    async fn region_isp(&self, real: &[&Election]) {
        let expected = |country: Option<&str>, transport: Option<&str>| -> Vec<Vec<Cell>> {
            let measured = real
                .iter()
                .filter(|e| country.is_none_or(|c| e.country == c))
                .flat_map(|e| e.candidates.iter().map(move |c| (e.isp, c)))
                .filter(|(_, c)| c.samples > 0 && transport.is_none_or(|t| c.transport == t));
            group(measured, |(isp, c)| (*isp, c.region, c.shadow), |(_, c)| *c)
                .iter()
                .map(|((isp, region, shadow), candidates)| {
                    let rtt_ms: Vec<f64> = candidates
                        .iter()
                        .map(|c| f64::from(c.rtt_us) / 1000.0)
                        .collect();
                    let probes: u32 = candidates.iter().map(|c| c.samples).sum();
                    let lost: u32 = candidates.iter().map(|c| c.lost).sum();
                    row![
                        *isp,
                        *region,
                        u32::from(*shadow),
                        quantile(&rtt_ms, 0.5),
                        quantile(&rtt_ms, 0.95),
                        candidates.len(),
                        probes,
                        lost,
                        f64::from(lost) / f64::from(probes + lost),
                    ]
                })
                .collect()
        };
        let title = "RTT per ISP and region, with sample counts";
        let columns =
            "isp, region, shadow, p50_ms, p95_ms, measured, probes_answered, probes_lost, loss";
        self.panel("region-isp.json", title, &[], columns, expected(None, None))
            .await;
        let selected = [
            ("country", Value::Multi(vec!["SG".into()])),
            ("transport", Value::Multi(vec!["webtransport".into()])),
        ];
        self.panel(
            "region-isp.json",
            title,
            &selected,
            columns,
            expected(Some("SG"), Some("webtransport")),
        )
        .await;

        let bucket = |e: &Election| e.at / RANGE.interval_s * RANGE.interval_s;
        let measured = real.iter().flat_map(|e| {
            e.candidates
                .iter()
                .filter(|c| c.samples > 0)
                .map(move |c| (bucket(e), c))
        });
        let to_region = |c: &seed::Candidate| {
            let shadow = if c.shadow { " (shadow)" } else { "" };
            format!("{}/{}{shadow}", c.region, c.transport)
        };
        let loss_over_time = group(measured, |(time, c)| (*time, to_region(c)), |(_, c)| *c)
            .iter()
            .map(|((time, to_region), candidates)| {
                let probes: u32 = candidates.iter().map(|c| c.samples).sum();
                let lost: u32 = candidates.iter().map(|c| c.lost).sum();
                row![
                    *time,
                    to_region.as_str(),
                    f64::from(lost) / f64::from(probes + lost)
                ]
            })
            .collect();
        self.panel(
            "region-isp.json",
            "Probe loss to each region and transport",
            &[],
            "toUInt32(time), to_region, loss",
            loss_over_time,
        )
        .await;
    }

    async fn outcomes(&self, real: &[&Election]) {
        let decided: Vec<&Election> = real
            .iter()
            .copied()
            .filter(|e| e.winner.is_some())
            .collect();
        let per_isp = group(
            decided.iter().copied(),
            |e| e.isp,
            |e| (e.winner_region(), e.winner_transport()),
        );
        let mut shares = Vec::new();
        let mut webtransport = Vec::new();
        for (isp, wins) in &per_isp {
            for (region, n) in group(wins.iter(), |(r, _)| *r, |_| ()) {
                shares.push(row![
                    *isp,
                    region,
                    n.len(),
                    n.len() as f64 / wins.len() as f64
                ]);
            }
            let wt = wins.iter().filter(|(_, t)| *t == "webtransport").count();
            webtransport.push(row![*isp, wins.len(), wt as f64 / wins.len() as f64]);
        }
        self.panel(
            "outcomes.json",
            "Winning region share per ISP",
            &[],
            "isp, region, wins, share",
            shares,
        )
        .await;
        self.panel(
            "outcomes.json",
            "WebTransport share per ISP",
            &[],
            "isp, elections, webtransport_share",
            webtransport,
        )
        .await;

        let later = real.iter().filter(|e| e.trigger != "initial");
        let expected = group(later, |e| (e.trigger, e.rule), |e| e.session)
            .iter()
            .map(|((trigger, rule), sessions)| {
                row![*trigger, *rule, sessions.len(), distinct(sessions)]
            })
            .collect();
        self.panel(
            "outcomes.json",
            "Failover triggers and rules",
            &[],
            "trigger, rule, elections, sessions",
            expected,
        )
        .await;
    }

    async fn capacity(&self, real: &[&Election]) {
        let decided: Vec<&Election> = real
            .iter()
            .copied()
            .filter(|e| e.winner.is_some())
            .collect();
        let hourly = group(
            decided.iter().copied(),
            |e| (e.at / HOUR, e.winner_region()),
            |e| e.session,
        );
        let active: BTreeMap<(u32, &str), usize> =
            hourly.iter().map(|(k, s)| (*k, distinct(s))).collect();
        let expected = active
            .iter()
            .map(|(&(hour, region), &n)| row![hour * HOUR, region, n])
            .collect();
        self.panel(
            "capacity.json",
            "Active sessions per region, hourly",
            &[],
            "toUInt32(time), region, active_sessions",
            expected,
        )
        .await;

        let daily = group(
            active.iter(),
            |((hour, region), _)| (*hour / 24, *region),
            |(_, n)| **n as f64,
        );
        let expected = daily
            .iter()
            .map(|(&(day, region), hours)| {
                let peak = hours.iter().copied().fold(0.0, f64::max);
                row![day * DAY, region, peak, quantile(hours, 0.95), hours.len()]
            })
            .collect();
        self.panel(
            "capacity.json",
            "Per day: peak and p95 hour",
            &[],
            "toUInt32(day), region, peak, p95, hours_with_sessions",
            expected,
        )
        .await;

        let week = |e: &Election| (RANGE.to - e.at) / (7 * DAY);
        let weekly = group(
            decided.iter().copied(),
            |e| e.winner_region(),
            |e| (week(e), e.session),
        );
        let expected = weekly
            .iter()
            .map(|(region, sessions)| {
                let count = |w| {
                    distinct(
                        &sessions
                            .iter()
                            .filter(|(x, _)| *x == w)
                            .map(|(_, s)| *s)
                            .collect::<Vec<_>>(),
                    )
                };
                let (this, previous) = (count(0), count(1));
                let growth = (previous > 0).then(|| this as f64 / previous as f64 - 1.0);
                row![*region, this, previous, growth]
            })
            .collect();
        self.panel(
            "capacity.json",
            "Week-over-week growth",
            &[],
            "region, this_week, previous_week, growth",
            expected,
        )
        .await;
    }
}

fn table(rows: &[Vec<Cell>]) -> String {
    rows.iter()
        .map(|r| {
            r.iter()
                .map(|c| match c {
                    Cell::Num(n) => format!("{n}"),
                    Cell::Text(s) => s.clone(),
                    Cell::Null => "null".into(),
                })
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect::<Vec<_>>()
        .join("\n         ")
}
