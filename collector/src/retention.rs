//! Retention on servers without TTL: drop daily partitions older than the
//! retention period, an administrator's DDL that `rallypoint-collector
//! setup` runs (run it daily on such servers). Servers with TTL get
//! `MODIFY TTL` in the same step instead.

use crate::schema::RETAINED_TABLES;
use crate::store::Store;

/// Drops partitions older than `days`; returns how many were dropped.
pub async fn drop_expired(store: &Store, days: u32) -> anyhow::Result<usize> {
    let mut dropped = 0;
    for (table, _) in RETAINED_TABLES {
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
        for partition in partitions {
            store
                .client()
                .query(&format!("ALTER TABLE {table} DROP PARTITION {partition}"))
                .execute()
                .await
                .map_err(|e| {
                    anyhow::anyhow!("cannot drop partition {partition} of {table}: {e}")
                })?;
            tracing::info!(table, partition, "dropped expired partition");
            dropped += 1;
        }
    }
    Ok(dropped)
}
