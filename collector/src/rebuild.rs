//! Rebuilding the rollups of whole days from the raw tables: after a
//! rollup was lost or damaged (a dropped partition, a view that failed), or
//! to fill a rollup added by a migration for the days before it.
//!
//! Each rollup is rebuilt with the `SELECT` of its own materialized view,
//! read back from ClickHouse (`SHOW CREATE TABLE`), so the rebuild computes
//! exactly what the view computes and there is no second copy of the SQL to
//! drift. The view's source table is narrowed to one day (and read `FINAL`,
//! so copies not merged yet count once), the day is built in a staging
//! table, and `REPLACE PARTITION` swaps it in whole: readers see the old day
//! or the new one, never half of it.
//!
//! Reports arriving for a day while it is rebuilt would be counted by the
//! view and again by the rebuild: rebuild days that are over (today is
//! refused) with the collectors stopped, or accept that a late copy filed
//! under such a day during the rebuild is counted twice.
//!
//! On a cluster (`--clickhouse-cluster`) the views write each shard's
//! rollups from that shard's own rows (see `layout`), so a rebuild does the
//! same: it rebuilds the shard of the server it talks to, from that
//! server's local raw tables once it has caught up with its replicas
//! (`SYSTEM SYNC REPLICA`), staging in an unreplicated table on that server
//! alone; `REPLACE PARTITION` on the replicated rollup then reaches the
//! shard's other replicas through replication. A cluster of several shards
//! is rebuilt by running the command against one server of each; it says
//! so, and which shard it did.
//!
//! Every statement of a run goes to one server ([`Run::pin`]: a ClickHouse
//! session, so a load balancer cannot split a sync, a read and a swap over
//! three servers), and stages in tables named for the run, so two runs at
//! once never drop or fill each other's.

use anyhow::Context as _;
use clickhouse::Client;

use crate::config::{RebuildConfig, day_number, day_text, days_from};
use crate::layout::Layout;
use crate::store::Store;

/// Longest range rebuilt at once: ten years of days.
const MAX_DAYS: i64 = 3_660;

/// `rebuild-rollups`: rebuilds the rollups of the days `config` names,
/// printing each as it goes; refuses today and later (reports still arrive
/// for them).
pub async fn run(config: RebuildConfig) -> anyhow::Result<()> {
    let run = Run::new();
    rebuild(config, &run).await.map_err(|e| run.explain(e))
}

async fn rebuild(config: RebuildConfig, run: &Run) -> anyhow::Result<()> {
    let span = day_number(config.to) - day_number(config.from) + 1;
    if span < 1 {
        anyhow::bail!(
            "--from {} is after --to {}",
            day_text(config.from),
            day_text(config.to)
        );
    }
    if span > MAX_DAYS {
        anyhow::bail!(
            "--from {} --to {} spans {span} days; rebuild at most {MAX_DAYS} at once",
            day_text(config.from),
            day_text(config.to)
        );
    }
    let store = Store::connect(&crate::for_long_statements(&config.clickhouse)).await?;
    let client = &run.pin(store.client()).await?;
    let left: Vec<String> = client
        .fetch_all(
            "SELECT name FROM system.tables WHERE database = currentDatabase() \
             AND name LIKE 'rp\\\\_%\\\\_rebuild\\\\_%' ORDER BY name",
        )
        .await
        .context("cannot list staging tables")?;
    if !left.is_empty() {
        // Another run's, at work or stopped half-way: not ours to drop.
        eprintln!(
            "[rebuild] staging tables of other runs are here: {}; drop them once no other \
             rebuild runs",
            left.join(", ")
        );
    }
    let shard = match &store.layout {
        Layout::Single => None,
        Layout::Cluster { name, .. } => Some(Shard::of_this_server(client, name).await?),
    };
    let today: u32 = client
        .fetch_one("SELECT toUInt32(toYYYYMMDD(today()))")
        .await
        .context("cannot read ClickHouse's date")?;
    if config.to >= today {
        anyhow::bail!(
            "--to {} is not over yet (ClickHouse's today is {}): rebuild days before today",
            day_text(config.to),
            day_text(today)
        );
    }
    let mut rollups = rollups(client, &store.layout).await?;
    if let Some(unknown) = config
        .rollup
        .iter()
        .find(|name| !rollups.iter().any(|r| &r.name == *name))
    {
        let known: Vec<&str> = rollups.iter().map(|r| r.name.as_str()).collect();
        anyhow::bail!(
            "--rollup {unknown} is not a rollup; the rollups are {}",
            known.join(", ")
        );
    }
    if !config.rollup.is_empty() {
        rollups.retain(|r| config.rollup.contains(&r.name));
    }
    if let Some(shard) = &shard {
        eprintln!("[rebuild] {shard}");
        let mut sources: Vec<&str> = rollups.iter().map(|r| r.source.as_str()).collect();
        sources.sort_unstable();
        sources.dedup();
        for source in sources {
            // The rebuild reads this server's copy of the shard's rows:
            // first fetch what its replicas stored and it has not.
            client
                .execute(&format!("SYSTEM SYNC REPLICA {source}"))
                .await
                .with_context(|| {
                    format!(
                        "{source} did not catch up with its replicas; check system.replicas \
                         on {} and run again",
                        shard.host
                    )
                })?;
        }
    }
    let days = days_from(config.from, span);
    let total = days.len() * rollups.len();
    let mut done = 0;
    for day in &days {
        for rollup in &rollups {
            rebuild_day(client, &store.layout, rollup, *day, run).await?;
            done += 1;
            eprintln!(
                "[rebuild] {} for {} ({done}/{total})",
                rollup.name,
                day_text(*day)
            );
        }
    }
    eprintln!("[rebuild] {total} rollup days rebuilt");
    if let Some(shard) = shard.filter(|s| s.of > 1) {
        eprintln!(
            "[rebuild] that was shard {} of {}: run the same command against one server \
             of each other shard",
            shard.number, shard.of
        );
    }
    Ok(())
}

/// One run of the command: a name of its own for its staging tables and
/// its ClickHouse session.
#[derive(Debug)]
pub struct Run {
    id: String,
}

impl Run {
    pub fn new() -> Run {
        Run {
            id: format!(
                "{}_{}",
                std::process::id(),
                rallypoint_service::clock::unix_millis()
            ),
        }
    }

    /// `rollup`'s staging table in this run: two runs at once never share
    /// one (each would drop and refill the other's).
    fn staging(&self, rollup: &Rollup) -> String {
        format!("{}_rebuild_{}", rollup.name, self.id)
    }

    /// `client`, its statements pinned to the server that answers the
    /// first: a ClickHouse session, checked on every later statement. A URL
    /// that spreads requests over several servers (a Kubernetes Service)
    /// would otherwise sync one replica, read another and stage on a
    /// third; with the session, a statement that reaches another server
    /// fails ("session not found") before it changes anything there.
    pub async fn pin(&self, client: &Client) -> anyhow::Result<Pinned> {
        let pinned = Pinned {
            client: client
                .clone()
                .with_setting("session_id", format!("rallypoint_rebuild_{}", self.id)),
        };
        pinned
            .execute("SELECT 1")
            .await
            .context("cannot open a ClickHouse session for the rebuild")?;
        Ok(Pinned {
            client: pinned.client.with_setting("session_check", "1"),
        })
    }

    /// A failed step, with what to do when it failed for reaching another
    /// server.
    pub fn explain(&self, error: anyhow::Error) -> anyhow::Error {
        let text = format!("{error:#}");
        if text.contains("Session not found") || text.contains("SESSION_NOT_FOUND") {
            error.context(
                "the rebuild's statements reached more than one ClickHouse server: give \
                 --clickhouse-url one server's own address, not a load-balanced one",
            )
        } else {
            error
        }
    }
}

impl Default for Run {
    fn default() -> Run {
        Run::new()
    }
}

/// A client whose statements all run in one ClickHouse session, so on one
/// server (see [`Run::pin`]).
pub struct Pinned {
    client: Client,
}

/// How long a statement waits for the session its previous one still
/// holds: the server releases it a moment after the answer has arrived.
const SESSION_BUSY_FOR_AT_MOST: std::time::Duration = std::time::Duration::from_secs(2);

impl Pinned {
    /// The same session's statements sent to `url` instead, as a load
    /// balancer might send one: they must fail, not run (see `tests/cluster.rs`).
    pub fn sent_to(self, url: &str) -> Pinned {
        Pinned {
            client: self.client.with_url(url),
        }
    }

    pub async fn execute(&self, sql: &str) -> clickhouse::error::Result<()> {
        self.when_free(|| self.client.query(sql).execute()).await
    }

    pub async fn fetch_all<T: clickhouse::RowOwned + clickhouse::RowRead>(
        &self,
        sql: &str,
    ) -> clickhouse::error::Result<Vec<T>> {
        self.when_free(|| self.client.query(sql).fetch_all()).await
    }

    pub async fn fetch_one<T: clickhouse::RowOwned + clickhouse::RowRead>(
        &self,
        sql: &str,
    ) -> clickhouse::error::Result<T> {
        self.when_free(|| self.client.query(sql).fetch_one()).await
    }

    /// `attempt`, again while the server says the session is still busy
    /// with the previous statement (code 373), up to
    /// [`SESSION_BUSY_FOR_AT_MOST`].
    async fn when_free<T, F, Fut>(&self, attempt: F) -> clickhouse::error::Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = clickhouse::error::Result<T>>,
    {
        let deadline = tokio::time::Instant::now() + SESSION_BUSY_FOR_AT_MOST;
        loop {
            match attempt().await {
                Err(e)
                    if rallypoint_service::clickhouse::error_code(&e) == Some(373)
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                result => return result,
            }
        }
    }
}

/// The shard of the cluster that the server the client talks to is in.
#[derive(Debug)]
struct Shard {
    number: u32,
    of: u32,
    host: String,
}

impl Shard {
    async fn of_this_server(client: &Pinned, cluster: &str) -> anyhow::Result<Shard> {
        #[derive(clickhouse::Row, serde::Deserialize)]
        struct Member {
            shard_num: u32,
            host_name: String,
            is_local: u8,
        }
        // The cluster's name is a plain name (`Layout::of` checked it).
        let members: Vec<Member> = client
            .fetch_all(&format!(
                "SELECT shard_num, host_name, is_local FROM system.clusters \
                 WHERE cluster = '{cluster}'"
            ))
            .await
            .context("cannot read system.clusters")?;
        let of = members.iter().map(|m| m.shard_num).max().unwrap_or(0);
        let this = members.iter().find(|m| m.is_local == 1).with_context(|| {
            format!(
                "the server is not a member of cluster {cluster} (system.clusters has {} \
                 entries for it): check --clickhouse-cluster and the server's remote_servers",
                members.len()
            )
        })?;
        Ok(Shard {
            number: this.shard_num,
            of,
            host: this.host_name.clone(),
        })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rebuilding shard {} of {} from the rows on {}",
            self.number, self.of, self.host
        )
    }
}

/// One rollup: the view that feeds it, its table and the view's `SELECT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollup {
    pub view: String,
    /// The schema's name of the rollup (`rp_rtt_hour`), as readers know it.
    pub name: String,
    /// The table the view writes: the name, or on a cluster its local half.
    pub table: String,
    /// The table's `CREATE`, as the server prints it (on a cluster only).
    pub create: String,
    /// The view's query, its source table named as `{source}`.
    pub select: String,
    pub source: String,
    /// The rollup table's columns (the rebuild inserts by name).
    pub columns: Vec<String>,
}

/// Every rollup view of the schema (`rp_*_mv`), in name order.
pub async fn rollups(client: &Pinned, layout: &Layout) -> anyhow::Result<Vec<Rollup>> {
    let views: Vec<String> = client
        .fetch_all(
            "SELECT name FROM system.tables WHERE database = currentDatabase() \
             AND engine = 'MaterializedView' AND name LIKE 'rp\\\\_%\\\\_mv' ORDER BY name",
        )
        .await
        .context("cannot list the rollup views")?;
    let mut rollups = Vec::new();
    for view in views {
        let create: String = client
            .fetch_one(&format!("SHOW CREATE TABLE {view}"))
            .await
            .with_context(|| format!("cannot read the definition of {view}"))?;
        let mut rollup = parse_view(&view, &create)?;
        rollup.name = layout.shared_name(&rollup.table).to_owned();
        rollup.columns = columns(client, &rollup.table).await?;
        if layout.is_clustered() {
            // Only a clustered staging table is made from it (see
            // `Layout::staging_table`).
            rollup.create = client
                .fetch_one(&format!("SHOW CREATE TABLE {}", rollup.table))
                .await
                .with_context(|| format!("cannot read the definition of {}", rollup.table))?;
        }
        rollups.push(rollup);
    }
    Ok(rollups)
}

/// `CREATE MATERIALIZED VIEW db.v TO db.t [(columns)] AS SELECT … FROM db.s …`
/// into its parts.
fn parse_view(view: &str, create: &str) -> anyhow::Result<Rollup> {
    // One line with single spaces, as 18.16 prints it; current servers
    // break it over lines and quote column names, which changes nothing
    // here (the views hold no string with runs of spaces).
    let create = create.split_whitespace().collect::<Vec<_>>().join(" ");
    let create = create.as_str();
    let unreadable = || anyhow::anyhow!("cannot read the definition of {view}: {create}");
    let after_to = &create[create.find(" TO ").ok_or_else(unreadable)? + 4..];
    let table = after_to
        .split(|c: char| c.is_whitespace() || c == '(')
        .next()
        .ok_or_else(unreadable)?;
    let select = &after_to[after_to.find(" AS SELECT ").ok_or_else(unreadable)? + 4..];
    let from = select.find(" FROM ").ok_or_else(unreadable)? + 6;
    let source_len = select[from..]
        .find(|c: char| c.is_whitespace())
        .unwrap_or(select.len() - from);
    let source = &select[from..from + source_len];
    let templated = format!(
        "{}{{source}}{}",
        &select[..from],
        &select[from + source_len..]
    );
    Ok(Rollup {
        view: view.to_owned(),
        name: unqualified(table).to_owned(),
        table: unqualified(table).to_owned(),
        create: String::new(),
        select: templated,
        source: unqualified(source).to_owned(),
        columns: Vec::new(),
    })
}

/// The columns of `table`.
async fn columns(client: &Pinned, table: &str) -> anyhow::Result<Vec<String>> {
    // `table` is a name read from system.tables (letters, digits, `_`).
    client
        .fetch_all(&format!(
            "SELECT name FROM system.columns WHERE database = currentDatabase() \
             AND table = '{table}'"
        ))
        .await
        .with_context(|| format!("cannot read the columns of {table}"))
}

fn unqualified(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

/// Rebuilds `rollup` for `day` (`YYYYMMDD`) from its source table.
///
/// The source is read from the day before to the day after: a rollup's
/// partition `day` is the server's local day of its time column, and the
/// per-day rollups file rows under UTC days, so on a server outside UTC a
/// partition holds reports received on a neighbouring local day. Staging
/// then holds partial neighbours too; only partition `day` is swapped in.
/// The view's output is inserted by column name, as the view itself does.
pub async fn rebuild_day(
    client: &Pinned,
    layout: &Layout,
    rollup: &Rollup,
    day: u32,
    run: &Run,
) -> anyhow::Result<()> {
    let staging = run.staging(rollup);
    let date = format!("toDate('{}')", day_text(day));
    let source = format!(
        "(SELECT * FROM {} FINAL WHERE toDate(received_at) BETWEEN {date} - 1 AND {date} + 1)",
        rollup.source
    );
    let select = rollup.select.replace("{source}", &source);
    let columns = rollup.columns.join(", ");
    let steps = [
        format!("DROP TABLE IF EXISTS {staging}"),
        layout.staging_table(&staging, &rollup.table, &rollup.create)?,
        format!("INSERT INTO {staging} ({columns}) SELECT {columns} FROM ({select})"),
        format!(
            "ALTER TABLE {} REPLACE PARTITION {day} FROM {staging}",
            rollup.table
        ),
        format!("DROP TABLE {staging}"),
    ];
    for step in steps {
        client
            .execute(&step)
            .await
            .with_context(|| format!("rebuilding {} for {day} failed at: {step}", rollup.table))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_definition_splits_into_table_query_and_source() {
        let create = "CREATE MATERIALIZED VIEW default.rp_moves_hour_mv TO default.rp_moves_hour \
            (hour DateTime, elections UInt64) AS SELECT toStartOfHour(received_at) AS hour, \
            count() AS elections FROM default.rp_elections WHERE trigger != 'initial' GROUP BY hour";
        let rollup = parse_view("rp_moves_hour_mv", create).unwrap();
        assert_eq!(rollup.table, "rp_moves_hour");
        assert_eq!(rollup.source, "rp_elections");
        assert!(rollup.select.starts_with("SELECT toStartOfHour"));
        assert!(
            rollup.select.contains("FROM {source} WHERE trigger"),
            "{}",
            rollup.select
        );
        assert!(parse_view("v", "CREATE VIEW v AS SELECT 1").is_err());
        // As current servers print it.
        let modern = "CREATE MATERIALIZED VIEW default.rp_moves_hour_mv TO default.rp_moves_hour\n(\n    \
            `hour` DateTime\n)\nAS SELECT\n    toStartOfHour(received_at) AS hour\nFROM default.rp_elections\n\
            WHERE trigger != 'initial'\nGROUP BY hour";
        let rollup = parse_view("rp_moves_hour_mv", modern).unwrap();
        assert_eq!(
            (rollup.table.as_str(), rollup.source.as_str()),
            ("rp_moves_hour", "rp_elections")
        );
        assert!(
            rollup.select.contains("FROM {source} WHERE"),
            "{}",
            rollup.select
        );
    }
}
