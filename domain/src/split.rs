//! How a job is split into tasks.

use std::ops::Range;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The key under which an item-split task finds its slice of items in its input.
pub const ITEMS_KEY: &str = "items";

/// How a job becomes tasks. Stored inside `JobSubmitted`, so its serialized form is part of the
/// log format: `{"kind":"total","total_tasks":10}` or
/// `{"kind":"items","items":[...],"batch_size":100}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Split {
    /// `total_tasks` identical tasks; each receives the job's parameters.
    Total {
        /// How many tasks.
        total_tasks: u32,
    },
    /// The items cut into consecutive batches of `batch_size` (the last may be shorter); each
    /// task receives the job's parameters plus its batch under `"items"`.
    Items {
        /// Every item, in order.
        items: Vec<Value>,
        /// Items per task.
        batch_size: u32,
    },
}

impl Split {
    /// How many tasks this split gives: `total_tasks`, or `ceil(items / batch_size)`.
    /// An invalid split (`batch_size` 0) gives 0; limits reject it before it is stored.
    pub fn task_count(&self) -> u32 {
        match self {
            Self::Total { total_tasks } => *total_tasks,
            Self::Items { items, batch_size } => {
                let batch = *batch_size as usize;
                if batch == 0 {
                    return 0;
                }
                u32::try_from(items.len().div_ceil(batch)).unwrap_or(u32::MAX)
            }
        }
    }

    /// The positions in `items` that task `index` receives; empty for a `Total` split and for an
    /// index at or past [`Split::task_count`].
    pub fn item_range(&self, index: u32) -> Range<usize> {
        match self {
            Self::Total { .. } => 0..0,
            Self::Items { items, batch_size } => {
                let batch = *batch_size as usize;
                let start = (index as usize).saturating_mul(batch).min(items.len());
                let end = start.saturating_add(batch).min(items.len());
                start..end
            }
        }
    }

    /// The input of task `index`: the job's parameters as a JSON object, plus, for an item split,
    /// its batch under `"items"` (replacing any `"items"` parameter; limits reject that case).
    ///
    /// `index` must be below [`Split::task_count`]; past it, an item split gets an empty batch.
    pub fn task_input(&self, index: u32, parameters: &Map<String, Value>) -> Value {
        let mut input = parameters.clone();
        if let Self::Items { items, .. } = self {
            let batch = items[self.item_range(index)].to_vec();
            input.insert(ITEMS_KEY.to_owned(), Value::Array(batch));
        }
        Value::Object(input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn items(n: usize) -> Vec<Value> {
        (0..n).map(|i| json!(i)).collect()
    }

    #[test]
    fn total_split_gives_total_tasks_with_the_parameters() {
        let split = Split::Total { total_tasks: 4 };
        let params = json!({"work_type": "io_bound"});
        let Value::Object(params) = params else {
            unreachable!()
        };
        assert_eq!(split.task_count(), 4);
        assert_eq!(
            split.task_input(2, &params),
            json!({"work_type": "io_bound"})
        );
    }

    #[test]
    fn fifty_thousand_items_in_batches_of_100_give_500_tasks() {
        let split = Split::Items {
            items: items(50_000),
            batch_size: 100,
        };
        assert_eq!(split.task_count(), 500);
        assert_eq!(split.item_range(499), 49_900..50_000);
    }

    #[test]
    fn one_more_item_gives_one_more_task_with_one_item() {
        let split = Split::Items {
            items: items(50_001),
            batch_size: 100,
        };
        assert_eq!(split.task_count(), 501);
        let last = split.task_input(500, &Map::new());
        assert_eq!(last, json!({"items": [50_000]}));
    }

    #[test]
    fn item_input_keeps_the_parameters() {
        let split = Split::Items {
            items: items(5),
            batch_size: 2,
        };
        let Value::Object(params) = json!({"model": "m1"}) else {
            unreachable!()
        };
        assert_eq!(
            split.task_input(1, &params),
            json!({"model": "m1", "items": [2, 3]})
        );
    }

    #[test]
    fn out_of_range_and_invalid_splits_do_not_panic() {
        let split = Split::Items {
            items: items(3),
            batch_size: 2,
        };
        assert_eq!(split.task_input(9, &Map::new()), json!({"items": []}));
        let zero = Split::Items {
            items: items(3),
            batch_size: 0,
        };
        assert_eq!(zero.task_count(), 0);
        assert_eq!(zero.task_input(0, &Map::new()), json!({"items": []}));
    }

    #[test]
    fn serialized_form_is_tagged() {
        assert_eq!(
            serde_json::to_value(Split::Total { total_tasks: 3 }).unwrap(),
            json!({"kind": "total", "total_tasks": 3})
        );
        assert_eq!(
            serde_json::to_value(Split::Items {
                items: vec![json!("a")],
                batch_size: 1
            })
            .unwrap(),
            json!({"kind": "items", "items": ["a"], "batch_size": 1})
        );
    }

    proptest! {
        #[test]
        fn every_item_lands_in_exactly_one_task_in_order(n in 1usize..2_000, batch in 1u32..300) {
            let original = items(n);
            let split = Split::Items { items: original.clone(), batch_size: batch };
            let count = split.task_count();
            prop_assert_eq!(count as usize, n.div_ceil(batch as usize));
            let mut seen = Vec::with_capacity(n);
            for index in 0..count {
                let input = split.task_input(index, &Map::new());
                let batch_items = input[ITEMS_KEY].as_array().cloned().unwrap_or_default();
                prop_assert!(!batch_items.is_empty());
                prop_assert!(batch_items.len() <= batch as usize);
                seen.extend(batch_items);
            }
            prop_assert_eq!(seen, original);
        }
    }
}
