//! Validating an [`AppendBatch`] and laying it out for one insert statement; shared by both
//! backends so they accept and reject exactly the same input.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::{AppendBatch, LogError, LogResult};

/// Longest stream id, event type, idempotency key or checkpoint name, in bytes. Keeps index
/// entries small (Postgres rejects B-tree entries above ~2.7 kB with a database error, which
/// would wrongly look retryable).
pub(crate) const MAX_NAME_BYTES: usize = 512;

/// A validated batch, one entry per event in input order (the columns of the insert).
#[derive(Debug, Default)]
pub(crate) struct PreparedBatch {
    pub stream_ids: Vec<String>,
    pub versions: Vec<i64>,
    /// The expected version of the event's stream, repeated on each of its events.
    pub expected: Vec<i64>,
    pub event_types: Vec<String>,
    pub schema_versions: Vec<i32>,
    /// Each event's data and metadata, serialized: the backends pass JSON as text.
    pub data: Vec<String>,
    pub metadata: Vec<String>,
    /// Each event's job, for the log's index by job: see [`job_key`].
    pub job_ids: Vec<Option<Uuid>>,
    /// Per stream, in input order: index of its first event, number of events, expected version.
    streams: Vec<(usize, usize, i64)>,
}

impl PreparedBatch {
    pub fn len(&self) -> usize {
        self.stream_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stream_ids.is_empty()
    }

    /// The conflict to report for the whole batch when the database cannot say which stream
    /// conflicted (a deadlock between two overlapping appends).
    pub fn first_stream_conflict(&self) -> LogError {
        match self.streams.first() {
            Some(&(first, _, expected)) => LogError::Conflict {
                stream_id: self.stream_ids[first].clone(),
                expected,
            },
            None => LogError::Invalid("conflict on an empty batch".into()),
        }
    }

    /// Where the rows of new streams (expected version 0) begin, when every row from there on
    /// belongs to a new stream and there is at least one: such rows can be inserted without a
    /// version check, since a unique violation is their only possible conflict.
    pub fn new_streams_from(&self) -> Option<usize> {
        let first = self.expected.iter().position(|&expected| expected == 0)?;
        self.expected[first..]
            .iter()
            .all(|&expected| expected == 0)
            .then_some(first)
    }

    /// The conflict of the stream `stream_id`, if it is one of the batch's (a unique violation
    /// names it); otherwise the first stream's.
    pub fn conflict_on(&self, stream_id: &str) -> LogError {
        self.streams
            .iter()
            .find(|&&(first, _, _)| self.stream_ids[first] == stream_id)
            .map_or_else(
                || self.first_stream_conflict(),
                |&(first, _, expected)| LogError::Conflict {
                    stream_id: self.stream_ids[first].clone(),
                    expected,
                },
            )
    }

    /// Lays the rows the insert returned, as `(stream_id, stream_version, position)`, out in
    /// input order. If a stream's events are missing (its version was taken, or its expected
    /// version does not exist), that is the stream's `Conflict`: the caller must roll back.
    pub fn positions_in_input_order(
        &self,
        inserted: impl IntoIterator<Item = (String, i64, i64)>,
    ) -> LogResult<Vec<i64>> {
        let index: HashMap<&str, usize> = self
            .streams
            .iter()
            .map(|&(first, _, _)| (self.stream_ids[first].as_str(), first))
            .collect();
        let mut positions = vec![None; self.len()];
        for (stream_id, version, position) in inserted {
            let Some(&first) = index.get(stream_id.as_str()) else {
                continue;
            };
            let offset = version - self.versions[first];
            if let Some(slot) = usize::try_from(offset)
                .ok()
                .map(|offset| first + offset)
                .filter(|&i| i < self.len() && self.stream_ids[i] == stream_id)
            {
                positions[slot] = Some(position);
            }
        }
        if let Some(&(first, _, expected)) = self
            .streams
            .iter()
            .find(|&&(first, len, _)| positions[first..first + len].iter().any(Option::is_none))
        {
            return Err(LogError::Conflict {
                stream_id: self.stream_ids[first].clone(),
                expected,
            });
        }
        Ok(positions
            .into_iter()
            .map(|p| p.unwrap_or_default())
            .collect())
    }
}

/// Checks a batch and lays it out; `Invalid` if it is malformed (nothing is written then).
pub(crate) fn prepare(batch: &AppendBatch) -> LogResult<PreparedBatch> {
    if let Some(key) = &batch.idempotency_key {
        check_name("idempotency key", key)?;
    }
    if let Some(checkpoint) = &batch.checkpoint {
        check_name("checkpoint name", &checkpoint.name)?;
    }
    let mut prepared = PreparedBatch::default();
    let mut seen: HashSet<&str> = HashSet::new();
    for stream in &batch.streams {
        check_name("stream id", &stream.stream_id)?;
        if !seen.insert(&stream.stream_id) {
            return Err(LogError::Invalid(format!(
                "stream {:?} appears more than once in one append; merge its events",
                stream.stream_id
            )));
        }
        if stream.events.is_empty() {
            return Err(LogError::Invalid(format!(
                "stream {:?} has no events to append",
                stream.stream_id
            )));
        }
        let expected = stream.expected.as_i64();
        if expected < 0 {
            return Err(LogError::Invalid(format!(
                "stream {:?}: expected version {expected} is negative",
                stream.stream_id
            )));
        }
        prepared
            .streams
            .push((prepared.len(), stream.events.len(), expected));
        for (i, event) in stream.events.iter().enumerate() {
            check_name("event type", &event.event_type)?;
            if event.schema_version < 1 {
                return Err(LogError::Invalid(format!(
                    "event {:?}: schema version {} is below 1",
                    event.event_type, event.schema_version
                )));
            }
            let version = i64::try_from(i)
                .ok()
                .and_then(|i| expected.checked_add(i)?.checked_add(1))
                .ok_or_else(|| LogError::Invalid("stream version overflows".into()))?;
            let empty = Value::Object(Default::default());
            let metadata = match &event.metadata {
                Value::Null => &empty,
                Value::Object(_) => &event.metadata,
                _ => {
                    return Err(LogError::Invalid(format!(
                        "event {:?}: metadata must be a JSON object",
                        event.event_type
                    )));
                }
            };
            if contains_nul_escape(event.data.get()) || contains_nul(metadata) {
                return Err(LogError::Invalid(format!(
                    "event {:?}: JSON strings must not contain NUL characters",
                    event.event_type
                )));
            }
            // Serialized here, once, without copying the values (a `Value` serializes
            // infallibly).
            let metadata = match (&batch.idempotency_key, metadata) {
                (Some(key), Value::Object(map)) => {
                    let mut map = map.clone();
                    map.insert("idempotency_key".into(), Value::String(key.clone()));
                    Value::Object(map).to_string()
                }
                (_, metadata) => metadata.to_string(),
            };

            prepared.stream_ids.push(stream.stream_id.clone());
            prepared.versions.push(version);
            prepared.expected.push(expected);
            prepared.event_types.push(event.event_type.clone());
            prepared.schema_versions.push(event.schema_version);
            prepared.job_ids.push(job_key(event.data.get()));
            prepared.data.push(event.data.get().to_owned());
            prepared.metadata.push(metadata);
        }
    }
    Ok(prepared)
}

/// The job an event belongs to, for the `job_id` column of the log: the event's top-level
/// `job_id`, when it is a UUID written as `Uuid` writes one (lower case, hyphenated), which is
/// exactly when the text `data->>'job_id'` that the log's older index is built on equals the
/// text of a `JobId`. Any other payload (no such field, another shape, a number) gives `None`,
/// and such an event is indexed by that text as before (see the migration
/// `20261207000002_event_log_job_id`).
pub(crate) fn job_key(data: &str) -> Option<Uuid> {
    #[derive(Deserialize)]
    struct Key<'a> {
        #[serde(borrow)]
        job_id: Option<&'a str>,
    }
    // Only an object has fields (a struct would also take an array, by position).
    if !data.trim_start().starts_with('{') {
        return None;
    }
    let text = serde_json::from_str::<Key<'_>>(data).ok()?.job_id?;
    let id = Uuid::try_parse(text).ok()?;
    (id.hyphenated().encode_lower(&mut Uuid::encode_buffer()) == text).then_some(id)
}

/// Checks a name used as a key (stream id, checkpoint name, ...).
pub(crate) fn check_name(what: &str, name: &str) -> LogResult<()> {
    if name.is_empty() {
        return Err(LogError::Invalid(format!("{what} is empty")));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(LogError::Invalid(format!(
            "{what} is longer than {MAX_NAME_BYTES} bytes"
        )));
    }
    if name.contains('\0') {
        return Err(LogError::Invalid(format!(
            "{what} contains a NUL character"
        )));
    }
    Ok(())
}

/// Checks a read limit.
pub(crate) fn check_limit(limit: i64) -> LogResult<()> {
    if limit < 1 {
        return Err(LogError::Invalid(format!(
            "read limit must be at least 1, got {limit}"
        )));
    }
    Ok(())
}

/// Whether serialized JSON has a NUL character in a string: the only way to write one is the
/// escape `\u0000` (a raw control character is not valid JSON), and it is an escape only when
/// its backslash is not itself escaped (preceded by an even number of backslashes).
fn contains_nul_escape(json: &str) -> bool {
    let mut from = 0;
    while let Some(found) = json[from..].find("\\u0000") {
        let at = from + found;
        let backslashes_before = json.as_bytes()[..at]
            .iter()
            .rev()
            .take_while(|&&b| b == b'\\')
            .count();
        if backslashes_before % 2 == 0 {
            return true;
        }
        from = at + 1;
    }
    false
}

fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::eventlog::{ExpectedVersion, NewEvent, StreamAppend, raw_json};

    #[test]
    fn nul_escapes_are_found_and_escaped_backslashes_are_not() {
        let nul = raw_json(&json!({ "name": "a\u{0}b" }));
        assert!(contains_nul_escape(nul.get()));
        assert!(contains_nul_escape(
            &raw_json(&json!(["x", "\\\u{0}"])).to_string()
        ));
        // The text `\u0000` (a backslash, then "u0000"), which is no NUL.
        assert!(!contains_nul_escape(
            raw_json(&json!({ "path": "C:\\u0000" })).get()
        ));
        assert!(!contains_nul_escape(
            raw_json(&json!({ "n": 0, "s": "u0000" })).get()
        ));
    }

    fn event(event_type: &str) -> NewEvent {
        NewEvent {
            event_type: event_type.into(),
            schema_version: 1,
            data: raw_json(&json!({})),
            metadata: Value::Null,
        }
    }

    fn batch(streams: Vec<(&str, ExpectedVersion, usize)>) -> AppendBatch {
        AppendBatch {
            streams: streams
                .into_iter()
                .map(|(id, expected, n)| StreamAppend {
                    stream_id: id.into(),
                    expected,
                    events: (0..n).map(|_| event("Happened")).collect(),
                })
                .collect(),
            idempotency_key: Some("k".into()),
            checkpoint: None,
        }
    }

    #[test]
    fn assigns_versions_after_the_expected_one_and_stamps_the_key() {
        let p = prepare(&batch(vec![
            ("a", ExpectedVersion::Exact(3), 2),
            ("b", ExpectedVersion::NoStream, 1),
        ]))
        .unwrap();
        assert_eq!(p.stream_ids, ["a", "a", "b"]);
        assert_eq!(p.versions, [4, 5, 1]);
        assert_eq!(p.expected, [3, 3, 0]);
        let metadata: serde_json::Value = serde_json::from_str(&p.metadata[2]).unwrap();
        assert_eq!(metadata, json!({"idempotency_key": "k"}));
    }

    #[test]
    fn maps_returned_rows_to_input_order_and_finds_the_conflicting_stream() {
        let p = prepare(&batch(vec![
            ("a", ExpectedVersion::Exact(3), 2),
            ("b", ExpectedVersion::NoStream, 1),
        ]))
        .unwrap();
        let rows = vec![
            ("b".into(), 1, 10),
            ("a".into(), 5, 12),
            ("a".into(), 4, 11),
        ];
        assert_eq!(p.positions_in_input_order(rows).unwrap(), [11, 12, 10]);
        let partial = vec![("a".into(), 4, 11), ("a".into(), 5, 12)];
        match p.positions_in_input_order(partial) {
            Err(LogError::Conflict {
                stream_id,
                expected,
            }) => assert_eq!((stream_id.as_str(), expected), ("b", 0)),
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    #[test]
    fn rejects_malformed_batches() {
        let invalid = |b: AppendBatch| matches!(prepare(&b), Err(LogError::Invalid(_)));
        assert!(invalid(batch(vec![("", ExpectedVersion::NoStream, 1)])));
        assert!(invalid(batch(vec![("a", ExpectedVersion::NoStream, 0)])));
        assert!(invalid(batch(vec![("a", ExpectedVersion::Exact(-1), 1)])));
        assert!(invalid(batch(vec![
            ("a", ExpectedVersion::NoStream, 1),
            ("a", ExpectedVersion::Exact(1), 1),
        ])));
        let mut b = batch(vec![("a", ExpectedVersion::NoStream, 1)]);
        b.streams[0].events[0].metadata = json!([1]);
        assert!(invalid(b));
        let mut b = batch(vec![("a", ExpectedVersion::NoStream, 1)]);
        b.streams[0].events[0].data = raw_json(&json!({"x": "nul\u{0}"}));
        assert!(invalid(b));
        let mut b = batch(vec![("a", ExpectedVersion::NoStream, 1)]);
        b.streams[0].events[0].schema_version = 0;
        assert!(invalid(b));
        let mut b = batch(vec![("a", ExpectedVersion::NoStream, 1)]);
        b.idempotency_key = Some(String::new());
        assert!(invalid(b));
    }

    /// The column holds a job id exactly when the older index's text, `data->>'job_id'`,
    /// is the text of one; every other payload is left to that index.
    #[test]
    fn an_events_job_is_its_payloads_job_id_when_that_is_a_uuid() {
        let id = Uuid::now_v7();
        let text = id.to_string();
        assert_eq!(
            job_key(&json!({ "job_id": text, "index": 3 }).to_string()),
            Some(id)
        );
        assert_eq!(
            job_key(&json!({ "task_id": "t", "job_id": text }).to_string()),
            Some(id)
        );
        for other in [
            json!({ "job_id": text.to_uppercase() }),
            json!({ "job_id": text.replace('-', "") }),
            json!({ "job_id": "job-1" }),
            json!({ "job_id": 7 }),
            json!({ "job_id": null }),
            json!({ "task_id": text }),
            json!([text]),
            json!({ "nested": { "job_id": text } }),
        ] {
            assert_eq!(job_key(&other.to_string()), None, "{other}");
        }
        // A key written twice (not valid for a struct) and an escaped id: left to the older index.
        assert_eq!(
            job_key(&format!(r#"{{"job_id":"{text}","job_id":"{text}"}}"#)),
            None
        );
        let escaped = format!(
            r#"{{"job_id":"\u{:04x}{}"}}"#,
            u32::from(text.as_bytes()[0]),
            &text[1..]
        );
        assert_eq!(job_key(&escaped), None);
    }
}
