//! A batch's rows into one SQLite statement as bound parameters of a `VALUES` list.
//!
//! Postgres takes a batch as column arrays (`UNNEST`). SQLite has no arrays; the batch used to
//! go in as one JSON array of rows, taken apart by `json_each` and a `json_extract` per column,
//! which parsed the whole batch, printed each row back to text and parsed it again, all inside
//! the write transaction that every writer of the database waits for. Bound parameters cost
//! SQLite nothing to read. A statement's text depends on its number of rows, so a batch goes in
//! chunks of a power of two rows (at most [`MAX_ROWS`]): at most nine texts per statement, each
//! prepared once per connection and then cached (docs/benchmarks.md, "Issue 15: the thirteenth
//! session").
//!
//! Rows are given as JSON values, bound as `json_extract` would have returned them: a string
//! as text, an integer as an integer, a float as a real, `true`/`false` as 1/0, null as NULL,
//! an array or object as its JSON text.

use std::sync::OnceLock;

use serde_json::Value;
use sqlx::sqlite::{SqliteArguments, SqliteConnection, SqliteQueryResult, SqliteRow};
use sqlx::{Arguments, Executor};

/// The most rows in one statement (a power of two): with 22 columns, the widest row here,
/// 5,632 parameters, well under SQLite's limit of 32,766. Each statement is a round trip to
/// the connection's thread while the write lock is held: 256 rows ran a 100,000-task
/// `shoal dev` drain 1.04x as fast as 64 (docs/benchmarks.md, the sixteenth session). When
/// every connection wrote, the larger prepared forms cached on each of them cost ~20 MiB of
/// RSS; now only the writer's connection prepares them (ADR 30): +4 MiB.
pub(crate) const MAX_ROWS: usize = 256;

/// Texts for 1, 2, 4, ... [`MAX_ROWS`] rows.
const SIZES: usize = MAX_ROWS.trailing_zeros() as usize + 1;

/// A statement whose rows come from a `VALUES` list: `before`, then `(?, ...), ...`, then
/// `after`. Declared as a `static`, so its texts are built once per process.
pub(crate) struct RowsStatement {
    before: &'static str,
    columns: usize,
    after: &'static str,
    texts: OnceLock<Vec<String>>,
}

impl RowsStatement {
    pub(crate) const fn new(before: &'static str, columns: usize, after: &'static str) -> Self {
        Self {
            before,
            columns,
            after,
            texts: OnceLock::new(),
        }
    }

    /// The text for `2^size` rows.
    fn text(&self, size: usize) -> &str {
        let texts = self.texts.get_or_init(|| {
            let row = format!("({})", vec!["?"; self.columns].join(", "));
            (0..SIZES)
                .map(|s| {
                    let rows = vec![row.as_str(); 1 << s].join(", ");
                    format!("{}{rows}{}", self.before, self.after)
                })
                .collect()
        });
        &texts[size]
    }

    /// Runs the statement over `rows` (each of `columns` values), in order, in as few chunks
    /// as the sizes allow ([`chunks`]).
    pub(crate) async fn execute(
        &self,
        conn: &mut SqliteConnection,
        rows: &[Vec<Value>],
    ) -> sqlx::Result<()> {
        for chunk in chunks(rows) {
            self.execute_chunk(conn, chunk).await?;
        }
        Ok(())
    }

    /// Runs the statement over one chunk of [`chunks`]; returns the rows it returned.
    pub(crate) async fn fetch_chunk(
        &self,
        conn: &mut SqliteConnection,
        chunk: &[Vec<Value>],
    ) -> sqlx::Result<Vec<SqliteRow>> {
        let (text, args) = self.query(chunk)?;
        conn.fetch_all(sqlx::query_with(text, args)).await
    }

    /// Runs the statement over one chunk of [`chunks`]; returns how many rows it changed and
    /// the last rowid it inserted.
    pub(crate) async fn execute_chunk(
        &self,
        conn: &mut SqliteConnection,
        chunk: &[Vec<Value>],
    ) -> sqlx::Result<SqliteQueryResult> {
        let (text, args) = self.query(chunk)?;
        conn.execute(sqlx::query_with(text, args)).await
    }

    /// The text and the bound values for `chunk`.
    fn query<'q>(&self, chunk: &'q [Vec<Value>]) -> sqlx::Result<(&str, SqliteArguments<'q>)> {
        assert!(
            chunk.len().is_power_of_two() && chunk.len() <= MAX_ROWS,
            "a chunk of {} rows",
            chunk.len()
        );
        let mut args = SqliteArguments::default();
        for row in chunk {
            debug_assert_eq!(row.len(), self.columns, "{}", self.before);
            for value in row {
                bind(&mut args, value).map_err(sqlx::Error::Encode)?;
            }
        }
        Ok((self.text(chunk.len().trailing_zeros() as usize), args))
    }
}

/// `rows` in the chunks a statement takes them in, in order: the largest power of two rows
/// left, at most [`MAX_ROWS`].
pub(crate) fn chunks(rows: &[Vec<Value>]) -> impl Iterator<Item = &[Vec<Value>]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (chunk, after) = rest.split_at(1 << chunk_size(rest.len()));
        rest = after;
        Some(chunk)
    })
}

/// The exponent of the chunk that takes the first of `rows` rows: the largest power of two
/// not above them, at most [`MAX_ROWS`].
fn chunk_size(rows: usize) -> usize {
    (rows.min(MAX_ROWS).ilog2()) as usize
}

fn bind<'q>(
    args: &mut SqliteArguments<'q>,
    value: &'q Value,
) -> Result<(), sqlx::error::BoxDynError> {
    match value {
        Value::Null => args.add(None::<i64>),
        Value::Bool(b) => args.add(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => args.add(i),
            None => args.add(n.as_f64()),
        },
        Value::String(s) => args.add(s.as_str()),
        Value::Array(_) | Value::Object(_) => args.add(value.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sqlx::Row;
    use sqlx::sqlite::SqlitePoolOptions;

    use super::*;

    #[test]
    fn batches_go_in_power_of_two_chunks() {
        let sizes = |n: usize| {
            let rows = vec![Vec::new(); n];
            chunks(&rows).map(<[_]>::len).collect::<Vec<_>>()
        };
        assert_eq!(sizes(0), [0; 0]);
        assert_eq!(sizes(1), [1]);
        assert_eq!(sizes(200), [128, 64, 8]);
        assert_eq!(sizes(600), [256, 256, 64, 16, 8]);
    }

    static SELECT: RowsStatement = RowsStatement::new(
        "WITH r(a, b, c) AS (VALUES ",
        3,
        ") SELECT a, typeof(a), b, typeof(b), c, typeof(c) FROM r",
    );

    /// Every shape of value comes back as `json_extract` gave it, and every row of a batch
    /// that takes several chunks comes back, in order.
    #[tokio::test]
    async fn values_are_bound_as_json_extract_returned_them() {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        let mut conn = pool.acquire().await.unwrap();
        let rows = vec![
            vec![json!("text"), json!(7), json!(1.5)],
            vec![json!(true), json!(false), Value::Null],
            vec![json!({"k": [1, "x"]}), json!([1, 2]), json!(-3)],
        ];
        let mut many = rows.clone();
        for i in 0..300 {
            many.push(vec![json!(i), json!(format!("row {i}")), Value::Null]);
        }
        let mut got = Vec::new();
        for chunk in chunks(&many) {
            got.extend(SELECT.fetch_chunk(&mut conn, chunk).await.unwrap());
        }
        assert_eq!(got.len(), many.len());
        for (row, sent) in got.iter().zip(&many) {
            for (i, value) in sent.iter().enumerate() {
                let expected: (String, &str) = match value {
                    Value::Null => ("NULL".into(), "null"),
                    Value::Bool(b) => (i64::from(*b).to_string(), "integer"),
                    Value::Number(n) if n.is_i64() => (n.to_string(), "integer"),
                    Value::Number(n) => (n.to_string(), "real"),
                    Value::String(s) => (s.clone(), "text"),
                    other => (other.to_string(), "text"),
                };
                let kind: String = row.get(2 * i + 1);
                assert_eq!(kind, expected.1, "{value}");
                let shown: Option<String> = match expected.1 {
                    "null" => None,
                    "integer" => Some(row.get::<i64, _>(2 * i).to_string()),
                    "real" => Some(row.get::<f64, _>(2 * i).to_string()),
                    _ => Some(row.get::<String, _>(2 * i)),
                };
                assert_eq!(
                    shown.unwrap_or_else(|| "NULL".into()),
                    expected.0,
                    "{value}"
                );
            }
        }
    }
}
