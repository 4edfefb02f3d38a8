//! What the Postgres server did for a benchmark's work, from its own statistics: statements
//! (`pg_stat_statements`, when the server preloads it), WAL bytes (`pg_current_wal_lsn()`
//! before and after), and rows and index entries written per table (`pg_stat_user_tables`).
//! These figures do not move with the machine's load, unlike times and rates.
//!
//! The benchmark's own statements carry the comment [`BENCH_MARK`] and are left out of the
//! statement counts.

use anyhow::Context;
use sqlx::PgPool;

/// Marks a statement as the benchmark's own (polls, these statistics), not the product's.
pub const BENCH_MARK: &str = "/* shoal-bench */";

/// A table's write counters (`pg_stat_user_tables`) and its number of B-tree indexes that
/// cover every row (a partial index takes few entries, a BRIN index one per block range).
#[derive(Debug, Clone, PartialEq)]
pub struct TableWrites {
    pub table: String,
    pub inserted: i64,
    pub updated: i64,
    pub hot_updated: i64,
    pub deleted: i64,
    pub indexes: i64,
}

impl TableWrites {
    /// Index entries these writes added: one per index for each insert and each update that
    /// was not HOT (a delete adds none; vacuum removes the dead entries later).
    pub fn index_entries(&self) -> i64 {
        (self.inserted + self.updated - self.hot_updated) * self.indexes
    }

    pub fn rows(&self) -> i64 {
        self.inserted + self.updated + self.deleted
    }
}

/// The server's counters at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    wal_lsn: i64,
    tables: Vec<TableWrites>,
}

/// One statement's share of the work between two snapshots.
#[derive(Debug, Clone)]
pub struct Statement {
    pub query: String,
    pub calls: i64,
    pub rows: i64,
    pub exec_ms: f64,
    pub wal_bytes: i64,
}

/// What happened between two snapshots.
#[derive(Debug, Clone)]
pub struct Delta {
    pub wal_bytes: i64,
    pub tables: Vec<TableWrites>,
    /// `None` when `pg_stat_statements` is not loaded on the server.
    pub statements: Option<Vec<Statement>>,
}

impl Delta {
    pub fn rows_written(&self) -> i64 {
        self.tables.iter().map(TableWrites::rows).sum()
    }

    pub fn index_entries(&self) -> i64 {
        self.tables.iter().map(TableWrites::index_entries).sum()
    }

    pub fn statement_calls(&self) -> Option<i64> {
        self.statements
            .as_ref()
            .map(|s| s.iter().map(|s| s.calls).sum())
    }
}

/// Whether the server has `pg_stat_statements` loaded; if so, creates the extension in the
/// database of `pool` and empties its counters (for the whole server).
pub async fn reset_statements(pool: &PgPool) -> bool {
    let created = sqlx::query(&format!(
        "{BENCH_MARK} CREATE EXTENSION IF NOT EXISTS pg_stat_statements"
    ))
    .execute(pool)
    .await;
    if created.is_err() {
        return false;
    }
    sqlx::query(&format!("{BENCH_MARK} SELECT pg_stat_statements_reset()"))
        .execute(pool)
        .await
        .is_ok()
}

pub async fn snapshot(pool: &PgPool) -> anyhow::Result<Snapshot> {
    let (wal_lsn,): (i64,) = sqlx::query_as(&format!(
        "{BENCH_MARK} SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint"
    ))
    .fetch_one(pool)
    .await?;
    let rows: Vec<(String, i64, i64, i64, i64, i64)> = sqlx::query_as(&format!(
        "{BENCH_MARK} SELECT t.relname::text, t.n_tup_ins, t.n_tup_upd, t.n_tup_hot_upd, t.n_tup_del,
                (SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                 JOIN pg_am a ON a.oid = c.relam
                 WHERE i.indrelid = t.relid AND i.indpred IS NULL AND a.amname = 'btree')
         FROM pg_stat_user_tables t ORDER BY t.relname"
    ))
    .fetch_all(pool)
    .await
    .context("reading pg_stat_user_tables")?;
    Ok(Snapshot {
        wal_lsn,
        tables: rows
            .into_iter()
            .map(
                |(table, inserted, updated, hot_updated, deleted, indexes)| TableWrites {
                    table,
                    inserted,
                    updated,
                    hot_updated,
                    deleted,
                    indexes,
                },
            )
            .collect(),
    })
}

/// The change since `before`, with the statements since [`reset_statements`] if it returned
/// true. Table counters reach the statistics when a backend ends or idles (at most a second
/// late); read this after the benchmark's connections have closed.
pub async fn since(pool: &PgPool, before: &Snapshot, statements: bool) -> anyhow::Result<Delta> {
    let after = snapshot(pool).await?;
    let tables = after
        .tables
        .iter()
        .map(|a| {
            let b = before.tables.iter().find(|b| b.table == a.table);
            let base = |f: fn(&TableWrites) -> i64| b.map_or(0, f);
            TableWrites {
                table: a.table.clone(),
                inserted: a.inserted - base(|t| t.inserted),
                updated: a.updated - base(|t| t.updated),
                hot_updated: a.hot_updated - base(|t| t.hot_updated),
                deleted: a.deleted - base(|t| t.deleted),
                indexes: a.indexes,
            }
        })
        .filter(|t| t.rows() > 0)
        .collect();
    let statements = if statements {
        let rows: Vec<(String, i64, i64, f64, i64)> = sqlx::query_as(&format!(
            "{BENCH_MARK} SELECT s.query, s.calls, s.rows, s.total_exec_time, s.wal_bytes::bigint
             FROM pg_stat_statements s
             WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND s.query NOT LIKE '%{BENCH_MARK}%'
             ORDER BY s.total_exec_time DESC"
        ))
        .fetch_all(pool)
        .await
        .context("reading pg_stat_statements")?;
        Some(
            rows.into_iter()
                .map(|(query, calls, rows, exec_ms, wal_bytes)| Statement {
                    query,
                    calls,
                    rows,
                    exec_ms,
                    wal_bytes,
                })
                .collect(),
        )
    } else {
        None
    };
    Ok(Delta {
        wal_bytes: after.wal_lsn - before.wal_lsn,
        tables,
        statements,
    })
}

/// A Markdown breakdown of `delta` for `tasks` tasks: the top `top` statements by execution
/// time, and the writes per table.
pub fn breakdown(delta: &Delta, tasks: f64, top: usize) -> String {
    let mut out = String::new();
    if let Some(statements) = &delta.statements {
        let total_ms: f64 = statements.iter().map(|s| s.exec_ms).sum();
        let calls: i64 = statements.iter().map(|s| s.calls).sum();
        out.push_str(&format!(
            "Statements: {:.3} per task ({calls} in all, {} distinct), {:.1} ms of execution in all.\n\n",
            calls as f64 / tasks,
            statements.len(),
            total_ms
        ));
        out.push_str(
            "| statement | calls/task | rows/call | time share | WAL bytes/task |\n|---|---|---|---|---|\n",
        );
        for s in statements.iter().take(top) {
            out.push_str(&format!(
                "| `{}` | {:.4} | {:.1} | {:.1}% | {:.0} |\n",
                one_line(&s.query, 110),
                s.calls as f64 / tasks,
                if s.calls > 0 {
                    s.rows as f64 / s.calls as f64
                } else {
                    0.0
                },
                if total_ms > 0.0 {
                    100.0 * s.exec_ms / total_ms
                } else {
                    0.0
                },
                s.wal_bytes as f64 / tasks
            ));
        }
        out.push('\n');
    } else {
        out.push_str(
            "Statements: n/a (the server does not preload pg_stat_statements; scripts/pg.sh does).\n\n",
        );
    }
    out.push_str(&format!(
        "WAL: {:.0} bytes per task. Writes per task (pg_stat_user_tables; index entries = (inserts + non-HOT updates) x full B-tree indexes):\n\n",
        delta.wal_bytes as f64 / tasks
    ));
    out.push_str("| table | inserts | updates (HOT) | deletes | indexes | index entries |\n|---|---|---|---|---|---|\n");
    let mut tables = delta.tables.clone();
    tables.sort_by_key(|t| std::cmp::Reverse(t.rows()));
    for t in &tables {
        out.push_str(&format!(
            "| {} | {:.3} | {:.3} ({:.3}) | {:.3} | {} | {:.3} |\n",
            t.table,
            t.inserted as f64 / tasks,
            t.updated as f64 / tasks,
            t.hot_updated as f64 / tasks,
            t.deleted as f64 / tasks,
            t.indexes,
            t.index_entries() as f64 / tasks
        ));
    }
    out.push_str(&format!(
        "| all | | | | | {:.3} (rows {:.3}) |\n",
        delta.index_entries() as f64 / tasks,
        delta.rows_written() as f64 / tasks
    ));
    out
}

/// `query` on one line, whitespace collapsed, cut to `max` characters, pipes escaped.
fn one_line(query: &str, max: usize) -> String {
    let flat = query.split_whitespace().collect::<Vec<_>>().join(" ");
    let cut: String = flat.chars().take(max).collect();
    let cut = if cut.len() < flat.len() {
        format!("{cut}…")
    } else {
        cut
    };
    cut.replace('|', "\\|").replace('`', "'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_index_entries_of_non_hot_writes() {
        let t = TableWrites {
            table: "task_queue".into(),
            inserted: 10,
            updated: 10,
            hot_updated: 4,
            deleted: 10,
            indexes: 3,
        };
        assert_eq!(t.index_entries(), (10 + 6) * 3);
        assert_eq!(t.rows(), 30);
    }

    #[test]
    fn flattens_a_statement() {
        assert_eq!(one_line("SELECT a |\n   b", 100), "SELECT a \\| b");
        assert_eq!(one_line("abcdef", 3), "abc…");
    }
}
