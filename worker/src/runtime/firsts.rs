//! The tasks whose first attempt this worker runs before its start is recorded (ADR 27).
//!
//! Such an attempt is not in the log yet, so a second copy of its message (the relay sent it
//! twice) cannot learn from the log that it is taken. Within one worker, the second copy
//! waits here until the first one's outcome is recorded (or given up), and then learns it
//! from the log: a worker never runs one attempt twice at once.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Semaphore;
use uuid::Uuid;

/// The registry: a task id, and what its waiters wait on (closed when the holder is done).
#[derive(Default)]
pub(super) struct Firsts(Mutex<HashMap<Uuid, Arc<Semaphore>>>);

/// A task entered in [`Firsts`]; leaves it, and wakes its waiters, when dropped.
pub(super) struct First<'a> {
    firsts: &'a Firsts,
    task: Uuid,
    done: Arc<Semaphore>,
}

/// Another delivery holds the task: resolves once it is done.
pub(super) struct Taken(Arc<Semaphore>);

impl Firsts {
    /// Enters `task`, unless another delivery holds it.
    pub(super) fn enter(&self, task: Uuid) -> Result<First<'_>, Taken> {
        let mut held = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match held.entry(task) {
            Entry::Occupied(entry) => Err(Taken(entry.get().clone())),
            Entry::Vacant(entry) => {
                let done = Arc::new(Semaphore::new(0));
                entry.insert(done.clone());
                Ok(First {
                    firsts: self,
                    task,
                    done,
                })
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl Taken {
    /// Resolves once the holder's delivery is done with the attempt.
    pub(super) async fn done(self) {
        // The semaphore never has a permit: it is only ever closed, which wakes every waiter.
        let _ = self.0.acquire().await;
    }
}

impl Drop for First<'_> {
    fn drop(&mut self) {
        self.firsts
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.task);
        self.done.close();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_second_copy_waits_until_the_first_is_done() {
        let firsts = Firsts::default();
        let task = Uuid::now_v7();
        let first = firsts.enter(task).ok().unwrap();
        let Err(taken) = firsts.enter(task) else {
            panic!("a second copy entered a held task")
        };
        let waiting = tokio::spawn(taken.done());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiting.is_finished(),
            "woke before the first copy was done"
        );
        assert!(firsts.enter(Uuid::now_v7()).is_ok(), "another task is free");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiter wakes when the first copy is done")
            .unwrap();
        assert_eq!(firsts.len(), 0);
        assert!(firsts.enter(task).is_ok(), "the task can be entered again");
    }
}
