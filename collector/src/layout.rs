//! Where the schema's tables live: one ClickHouse server, or a cluster of
//! them (`--clickhouse-cluster NAME`).
//!
//! On a cluster every table of the schema is two tables:
//!
//! * `<db>.<table>_local`, a `Replicated*MergeTree` on every server of the
//!   cluster (ZooKeeper path `/clickhouse/tables/{shard}/<db>/<table>_local`,
//!   replica `{replica}`: the servers' own macros), holding the rows;
//! * `<db>.<table>`, a `Distributed` table over them, which everything that
//!   reads or inserts rows uses — the collector's store, the dashboard and
//!   Grafana keep their table names and do not know the difference.
//!
//! The rollups' materialized views read and write the *local* tables, so an
//! insert feeds the rollups of the server that stored it, and replication
//! copies the rollup rows the view wrote (a fetched part does not fire the
//! views again): each report is counted once per shard it lives on. Rows
//! with a report id are sharded by it, so every copy of a report meets the
//! first on the same shard, where the store's exactly-once check and
//! `ReplacingMergeTree` see it (see `store`).
//!
//! The clustered statements are derived from the single-server ones in
//! `schema`, which stay the one home of the schema; every statement shape
//! the schema uses is recognised, and anything else is an error (a unit test
//! runs every migration through it), not a statement silently run on one
//! server. Changes to the data (`INSERT`, dropped partitions, deletions)
//! replicate by themselves; changes to tables run `ON CLUSTER`.

use anyhow::Context as _;
use rallypoint_service::clickhouse::ClickHouseArgs;

use crate::schema::MIGRATIONS;

/// One server, or a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    Single,
    Cluster { name: String, database: String },
}

/// The suffix of a clustered table's replicated, local half.
const LOCAL: &str = "_local";

impl Layout {
    /// The layout `login` asks for (`--clickhouse-cluster`).
    pub fn of(login: &ClickHouseArgs) -> anyhow::Result<Layout> {
        let Some(name) = &login.cluster else {
            return Ok(Layout::Single);
        };
        // Both go into DDL unquoted.
        for (what, value) in [
            ("--clickhouse-cluster", name),
            ("--clickhouse-database", &login.database),
        ] {
            if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                anyhow::bail!(
                    "{what} {value:?} is not a plain name (letters, digits, `_`), \
                     which a clustered schema needs"
                );
            }
        }
        Ok(Layout::Cluster {
            name: name.clone(),
            database: login.database.clone(),
        })
    }

    pub fn is_clustered(&self) -> bool {
        matches!(self, Layout::Cluster { .. })
    }

    /// The table holding `table`'s rows on the server the client talks to:
    /// where partitions, parts and table settings are.
    pub fn local_table(&self, table: &str) -> String {
        match self {
            Layout::Single => table.to_owned(),
            Layout::Cluster { .. } => format!("{table}{LOCAL}"),
        }
    }

    /// The schema's name of a table the client talks to: `local_table`'s
    /// inverse.
    pub fn shared_name<'a>(&self, table: &'a str) -> &'a str {
        match self {
            Layout::Single => table,
            Layout::Cluster { .. } => table.strip_suffix(LOCAL).unwrap_or(table),
        }
    }

    /// ` ON CLUSTER <name>` for statements that change tables, or nothing.
    pub fn on_cluster(&self) -> String {
        match self {
            Layout::Single => String::new(),
            Layout::Cluster { name, .. } => format!(" ON CLUSTER {name}"),
        }
    }

    /// `CREATE TABLE <staging> …`: an empty table on the server the client
    /// talks to, with `table`'s columns, partitions and sorting, where a
    /// rebuild stages rows before `REPLACE PARTITION` moves them into
    /// `table`. On a cluster `table` is replicated and `create` is what
    /// `SHOW CREATE TABLE` prints for it: the staging table gets the same
    /// engine unreplicated, since copying a replicated engine would register
    /// a second replica of `table` in ZooKeeper.
    pub fn staging_table(
        &self,
        staging: &str,
        table: &str,
        create: &str,
    ) -> anyhow::Result<String> {
        match self {
            Layout::Single => Ok(format!("CREATE TABLE {staging} AS {table}")),
            Layout::Cluster { .. } => {
                let engine = unreplicated_engine(create).with_context(|| {
                    format!("cannot read the replicated engine of {table} from: {create}")
                })?;
                Ok(format!("CREATE TABLE {staging} AS {table} {engine}"))
            }
        }
    }

    /// The statements that do what the single-server `statement` does.
    pub fn statements(&self, statement: &str) -> anyhow::Result<Vec<String>> {
        let Layout::Cluster { name, database } = self else {
            return Ok(vec![statement.to_owned()]);
        };
        let clustered = Clustered { name, database };
        let text = statement.trim_start();
        let result = if let Some(rest) = text.strip_prefix("CREATE TABLE IF NOT EXISTS ") {
            clustered.table(rest)
        } else if let Some(rest) = text.strip_prefix("CREATE MATERIALIZED VIEW IF NOT EXISTS ") {
            clustered.view(rest).map(|v| vec![v])
        } else if let Some(rest) = text.strip_prefix("INSERT INTO ") {
            clustered.insert(rest).map(|i| vec![i])
        } else if let Some(rest) = text.strip_prefix("ALTER TABLE ") {
            clustered.alter(rest)
        } else {
            None
        };
        result.with_context(|| {
            format!(
                "no clustered form for this statement (teach layout.rs its shape): {}",
                text.lines().next().unwrap_or_default()
            )
        })
    }
}

struct Clustered<'a> {
    name: &'a str,
    database: &'a str,
}

impl Clustered<'_> {
    /// `<t> (<columns>) ENGINE = <E>(<args>) <rest>` → the replicated local
    /// table and the `Distributed` table over it.
    fn table(&self, rest: &str) -> Option<Vec<String>> {
        let (table, definition) = split_name(rest)?;
        let (columns, engine) = definition.split_once(" ENGINE = ")?;
        let (engine_name, after_name) = engine.split_once('(')?;
        if !engine_name.ends_with("MergeTree") {
            return None;
        }
        let (args, tail) = after_name.split_once(')')?;
        let Clustered { name, database } = self;
        let path =
            format!("'/clickhouse/tables/{{shard}}/{database}/{table}{LOCAL}', '{{replica}}'");
        let args = if args.trim().is_empty() {
            path
        } else {
            format!("{path}, {args}")
        };
        Some(vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {database}.{table}{LOCAL} ON CLUSTER {name}{columns} \
                 ENGINE = Replicated{engine_name}({args}){tail}"
            ),
            self.distributed(table, shard_key(columns)),
        ])
    }

    /// The `Distributed` table over `table`'s local tables, with the local
    /// table's columns as they are now.
    fn distributed(&self, table: &str, shard_key: &str) -> String {
        let Clustered { name, database } = self;
        format!(
            "CREATE TABLE IF NOT EXISTS {database}.{table} ON CLUSTER {name} \
             AS {database}.{table}{LOCAL} \
             ENGINE = Distributed({name}, {database}, {table}{LOCAL}, {shard_key})"
        )
    }

    /// `<v> TO <t> AS SELECT … FROM <s> …` → the view on every server,
    /// from the local source into the local rollup.
    fn view(&self, rest: &str) -> Option<String> {
        let (view, definition) = split_name(rest)?;
        let definition = definition.trim_start().strip_prefix("TO ")?;
        let (target, query) = split_name(definition)?;
        let (before, after) = query.split_once(" FROM ")?;
        let (source, tail) = split_name(after.trim_start())?;
        let Clustered { name, database } = self;
        Some(format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.{view} ON CLUSTER {name} \
             TO {database}.{target}{LOCAL}{before} FROM {database}.{source}{LOCAL}{tail}"
        ))
    }

    /// `<t> (<columns>) SELECT … FROM <s>` → the same through the
    /// `Distributed` tables (the store's client inserts synchronously).
    fn insert(&self, rest: &str) -> Option<String> {
        let (table, definition) = split_name(rest)?;
        let (before, after) = definition.split_once(" FROM ")?;
        let (source, tail) = split_name(after.trim_start())?;
        let database = self.database;
        Some(format!(
            "INSERT INTO {database}.{table}{before} FROM {database}.{source}{tail}"
        ))
    }

    /// `<t> DROP COLUMN <c>` or `ADD COLUMN …` → on the replicated local tables (once per
    /// shard, replicated from there); the `Distributed` tables are made
    /// again over the changed columns, because 18.16 runs no `ALTER` `ON
    /// CLUSTER` on a table that is not replicated. (The rows are in the
    /// local tables; a reader or writer in between gets a missing table,
    /// which the collector retries.)
    fn alter(&self, rest: &str) -> Option<Vec<String>> {
        let (table, change) = split_name(rest)?;
        let change_kind = change.trim_start();
        if !(change_kind.starts_with("DROP COLUMN ") || change_kind.starts_with("ADD COLUMN ")) {
            return None;
        }
        let shard_key = shard_key(created_columns(table)?);
        let Clustered { name, database } = self;
        Some(vec![
            format!("ALTER TABLE {database}.{table}{LOCAL} ON CLUSTER {name}{change}"),
            format!("DROP TABLE IF EXISTS {database}.{table} ON CLUSTER {name}"),
            self.distributed(table, shard_key),
        ])
    }
}

/// How a table's rows are spread over shards: by report id where rows have
/// one, so every copy of a report lands on the shard of the first.
fn shard_key(columns: &str) -> &'static str {
    if columns.contains("report_id ") {
        "sipHash64(report_id)"
    } else {
        "rand()"
    }
}

/// The column list `table` was created with, from its migration.
fn created_columns(table: &str) -> Option<&'static str> {
    let create = format!("CREATE TABLE IF NOT EXISTS {table} (");
    MIGRATIONS
        .iter()
        .flat_map(|m| m.statements.iter())
        .find_map(|statement| statement.trim_start().strip_prefix(create.as_str()))
        .and_then(|rest| rest.split_once(" ENGINE = "))
        .map(|(columns, _)| columns)
}

/// `… ENGINE = Replicated<E>('<path>', '<replica>'[, <args>]) <rest>` →
/// `ENGINE = <E>(<args>) <rest>`: the inverse of [`Clustered::table`]'s
/// engine, read off a table's `CREATE` as the server prints it.
fn unreplicated_engine(create: &str) -> Option<String> {
    let create = create.split_whitespace().collect::<Vec<_>>().join(" ");
    let after = &create[create.find("ENGINE = Replicated")? + "ENGINE = Replicated".len()..];
    let (engine_name, after_name) = after.split_once('(')?;
    let (args, rest) = top_level_arguments(after_name)?;
    let kept = args.get(2..)?.join(", ");
    let rest = rest.trim_end().trim_end_matches(';');
    Some(format!("ENGINE = {engine_name}({kept}){rest}"))
}

/// The comma-separated arguments of a call whose `(` has been read, up to
/// its matching `)`, and the text after it. Commas and brackets inside
/// quotes or nested brackets belong to their argument.
fn top_level_arguments(text: &str) -> Option<(Vec<&str>, &str)> {
    let (mut depth, mut quoted, mut start) = (0usize, false, 0);
    let mut arguments = Vec::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' if quoted => {
                chars.next();
            }
            '\'' => quoted = !quoted,
            _ if quoted => {}
            '(' => depth += 1,
            ',' if depth == 0 => {
                arguments.push(text[start..i].trim());
                start = i + 1;
            }
            ')' if depth == 0 => {
                let last = text[start..i].trim();
                if !last.is_empty() || !arguments.is_empty() {
                    arguments.push(last);
                }
                return Some((arguments, &text[i + 1..]));
            }
            ')' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// A leading unqualified schema name (`rp_…`) and what follows it.
fn split_name(text: &str) -> Option<(&str, &str)> {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    let (name, rest) = text.split_at(end);
    name.starts_with("rp_").then_some((name, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::MIGRATIONS_TABLE;
    use rallypoint_service::secret::Secret;

    fn cluster() -> Layout {
        Layout::Cluster {
            name: "rp".into(),
            database: "telemetry".into(),
        }
    }

    #[test]
    fn every_schema_statement_has_a_clustered_form() {
        let statements = MIGRATIONS
            .iter()
            .flat_map(|m| m.statements.iter().copied())
            .chain([MIGRATIONS_TABLE]);
        for statement in statements {
            let clustered = cluster().statements(statement).unwrap();
            for sql in &clustered {
                // Every table it names is qualified: the servers that run
                // `ON CLUSTER` statements have their own current database.
                // (The Distributed engine's arguments and the ZooKeeper
                // path name the local table on their own terms.)
                let checked: String = sql
                    .split("ENGINE = Distributed(")
                    .next()
                    .unwrap()
                    .split('\'')
                    .step_by(2)
                    .collect();
                let unqualified = checked
                    .split(|c: char| !(c.is_ascii_alphanumeric() || "_.".contains(c)))
                    .find(|word| word.starts_with("rp_"));
                assert_eq!(unqualified, None, "in {sql}");
            }
            assert_eq!(
                Layout::Single.statements(statement).unwrap(),
                vec![statement.to_owned()]
            );
        }
    }

    #[test]
    fn a_table_becomes_replicated_and_distributed() {
        let statements = cluster()
            .statements(
                "CREATE TABLE IF NOT EXISTS rp_moves_hour (hour DateTime, elections UInt64) \
                 ENGINE = SummingMergeTree(elections) PARTITION BY toYYYYMMDD(hour) ORDER BY hour",
            )
            .unwrap();
        assert_eq!(
            statements,
            vec![
                "CREATE TABLE IF NOT EXISTS telemetry.rp_moves_hour_local ON CLUSTER rp \
                 (hour DateTime, elections UInt64) ENGINE = ReplicatedSummingMergeTree(\
                 '/clickhouse/tables/{shard}/telemetry/rp_moves_hour_local', '{replica}', elections) \
                 PARTITION BY toYYYYMMDD(hour) ORDER BY hour",
                "CREATE TABLE IF NOT EXISTS telemetry.rp_moves_hour ON CLUSTER rp \
                 AS telemetry.rp_moves_hour_local \
                 ENGINE = Distributed(rp, telemetry, rp_moves_hour_local, rand())",
            ]
        );
    }

    #[test]
    fn a_staging_table_is_the_replicated_engine_unreplicated() {
        // Every table of the schema, made replicated as setup makes it, and
        // read back: the same engine as one server's.
        let creates = MIGRATIONS
            .iter()
            .flat_map(|m| m.statements.iter())
            .filter(|s| s.trim_start().starts_with("CREATE TABLE IF NOT EXISTS "));
        let mut seen = 0;
        for single in creates {
            let replicated = &cluster().statements(single).unwrap()[0];
            let expected = single.split_once(" ENGINE = ").unwrap().1;
            let engine = unreplicated_engine(replicated).unwrap();
            let normal = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
            assert_eq!(
                normal(&engine),
                normal(&format!("ENGINE = {expected}")),
                "{replicated}"
            );
            seen += 1;
        }
        assert!(seen >= 8, "{seen}");
        // As 18.16 prints one, with settings after the sorting key.
        let printed = "CREATE TABLE telemetry.rp_rtt_hour_local (hour DateTime, n UInt64) \
             ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/telemetry/rp_rtt_hour_local', \
             '{replica}', (n, 'a,b')) PARTITION BY toYYYYMMDD(hour) ORDER BY hour SETTINGS index_granularity = 8192";
        assert_eq!(
            cluster()
                .staging_table(
                    "rp_rtt_hour_rebuild",
                    "telemetry.rp_rtt_hour_local",
                    printed
                )
                .unwrap(),
            "CREATE TABLE rp_rtt_hour_rebuild AS telemetry.rp_rtt_hour_local \
             ENGINE = SummingMergeTree((n, 'a,b')) PARTITION BY toYYYYMMDD(hour) ORDER BY hour \
             SETTINGS index_granularity = 8192"
        );
        assert_eq!(
            Layout::Single.staging_table("s", "t", "").unwrap(),
            "CREATE TABLE s AS t"
        );
        assert!(
            cluster()
                .staging_table(
                    "s",
                    "t",
                    "CREATE TABLE t (x UInt8) ENGINE = MergeTree() ORDER BY x"
                )
                .is_err()
        );
    }

    #[test]
    fn reports_are_sharded_by_their_id() {
        let statements = cluster()
            .statements(
                "CREATE TABLE IF NOT EXISTS rp_report_keys (report_id FixedString(16)) \
                 ENGINE = ReplacingMergeTree() ORDER BY report_id",
            )
            .unwrap();
        assert!(statements[0].contains("ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/telemetry/rp_report_keys_local', '{replica}')"));
        assert!(statements[1].ends_with("sipHash64(report_id))"));
    }

    #[test]
    fn views_connect_the_local_tables() {
        let view = cluster()
            .statements(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS rp_moves_hour_mv TO rp_moves_hour AS
            SELECT toStartOfHour(received_at) AS hour, count() AS elections
            FROM rp_elections
            WHERE trigger != 'initial'
            GROUP BY hour",
            )
            .unwrap();
        assert_eq!(view.len(), 1);
        assert!(view[0].starts_with(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS telemetry.rp_moves_hour_mv ON CLUSTER rp \
             TO telemetry.rp_moves_hour_local AS"
        ));
        assert!(view[0].contains("FROM telemetry.rp_elections_local\n"));
    }

    #[test]
    fn unknown_shapes_and_names_are_refused() {
        assert!(cluster().statements("DROP TABLE rp_elections").is_err());
        assert!(
            cluster()
                .statements("ALTER TABLE rp_nowhere DROP COLUMN x")
                .is_err()
        );
        assert!(
            cluster()
                .statements("ALTER TABLE rp_elections MODIFY TTL x")
                .is_err()
        );
        let mut login = ClickHouseArgs::new("http://x", "u", Secret::new("")).with_cluster("a;b");
        assert!(Layout::of(&login).is_err());
        login.cluster = Some("rp".into());
        login.database = "db`".into();
        assert!(Layout::of(&login).is_err());
        login.database = "telemetry".into();
        assert_eq!(Layout::of(&login).unwrap(), cluster());
        login.cluster = None;
        assert_eq!(Layout::of(&login).unwrap(), Layout::Single);
    }
}
