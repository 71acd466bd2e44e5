//! Retention on servers without TTL: drop daily partitions older than the
//! retention period, and delete the expired rows of the few tables without
//! such partitions (dead letters): an administrator's DDL that
//! `rallypoint-collector setup` runs (the chart runs it daily on such
//! servers). Servers with TTL get `MODIFY TTL` in the same step instead.
//!
//! On a cluster of such servers (18.x) partitions are not dropped: a
//! replica that is not its table's leader hands `DROP PARTITION` to the
//! leader over a connection as user `default` *without a password*, which
//! a server whose users all have one refuses. Expired rows are deleted
//! instead (`ALTER … DELETE`, a mutation every replica applies, on every
//! shard with `ON CLUSTER`) — dearer than a partition drop, since 18.x
//! rewrites the table's parts for it, and run only on days when something
//! expired. Current servers never get here: they have TTL.

use crate::schema::{RETAINED_TABLES, RETAINED_UNPARTITIONED};
use crate::store::Store;

/// Removes what is older than `days`; returns how many partitions (or, on
/// a cluster, tables) it cleared.
pub async fn drop_expired(store: &Store, days: u32) -> anyhow::Result<usize> {
    let mut cleared = 0;
    for (table, column) in RETAINED_TABLES {
        cleared += if store.layout.is_clustered() {
            let expired = format!("toDate({column}) < today() - {days}");
            delete_rows(store, table, &expired).await?
        } else {
            drop_partitions(store, table, days).await?
        };
    }
    for (table, column) in RETAINED_UNPARTITIONED {
        let expired = format!("{column} < now() - toIntervalDay({days})");
        cleared += delete_rows(store, table, &expired).await?;
    }
    Ok(cleared)
}

/// Drops `table`'s daily partitions older than `days`; returns how many.
async fn drop_partitions(store: &Store, table: &str, days: u32) -> anyhow::Result<usize> {
    let partitions: Vec<String> = store
        .client()
        .query(&format!(
            "SELECT DISTINCT partition FROM system.parts \
             WHERE database = currentDatabase() AND table = '{table}' AND active \
             AND toUInt32(partition) < toYYYYMMDD(today() - {days})"
        ))
        .fetch_all()
        .await
        .map_err(|e| anyhow::anyhow!("cannot list partitions of {table}: {e}"))?;
    for partition in &partitions {
        store
            .client()
            .query(&format!("ALTER TABLE {table} DROP PARTITION {partition}"))
            .execute()
            .await
            .map_err(|e| anyhow::anyhow!("cannot drop partition {partition} of {table}: {e}"))?;
        tracing::info!(table, partition, "dropped expired partition");
    }
    Ok(partitions.len())
}

/// Deletes `table`'s rows matching `expired` (a mutation: ClickHouse
/// rewrites the affected parts in the background); returns 1 if there were
/// any, else 0.
async fn delete_rows(store: &Store, table: &str, expired: &str) -> anyhow::Result<usize> {
    let rows: u64 = store
        .client()
        .query(&format!(
            "SELECT toUInt64(count()) FROM {table} WHERE {expired}"
        ))
        .fetch_one()
        .await
        .map_err(|e| anyhow::anyhow!("cannot count expired rows of {table}: {e}"))?;
    if rows == 0 {
        return Ok(0);
    }
    let local = store.layout.local_table(table);
    let on_cluster = store.layout.on_cluster();
    store
        .client()
        .query(&format!(
            "ALTER TABLE {local}{on_cluster} DELETE WHERE {expired}"
        ))
        .execute()
        .await
        .map_err(|e| anyhow::anyhow!("cannot delete expired rows of {table}: {e}"))?;
    tracing::info!(table, rows, "deleting expired rows");
    Ok(1)
}
