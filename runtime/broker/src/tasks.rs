//! Every background task of the broker in one set, so that shutdown can join them:
//! loops that end when the shutdown signal fires (retention, sessions, memory trim,
//! the cluster's membership, reconcile and plugin-sync loops, followers' fetch loops)
//! and short tasks they start (ISR proposals). A task still running when the join's
//! bound passes is aborted and counted, rather than left behind. Per-request tasks are
//! not here: the request budgets already drain them.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::AbortHandle;

/// The broker's background tasks.
#[derive(Default)]
pub struct TaskSet {
    running: Mutex<HashMap<u64, (&'static str, AbortHandle)>>,
    next_id: std::sync::atomic::AtomicU64,
    /// Woken whenever a task ends.
    ended: tokio::sync::Notify,
}

/// Takes a task out of the set when it ends, however it ends (returns, panics, or is
/// aborted).
struct Ended {
    set: Arc<TaskSet>,
    id: u64,
}

impl Drop for Ended {
    fn drop(&mut self) {
        self.set.lock().remove(&self.id);
        self.set.ended.notify_waiters();
    }
}

impl TaskSet {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (&'static str, AbortHandle)>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `task`, named `name` for the shutdown log, as one of the set.
    pub fn spawn(
        self: &Arc<Self>,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ended = Ended {
            set: Arc::clone(self),
            id,
        };
        // Held across the spawn, so the task cannot take itself out before it is in.
        let mut running = self.lock();
        let handle = tokio::spawn(async move {
            let _ended = ended;
            task.await;
        });
        running.insert(id, (name, handle.abort_handle()));
    }

    /// Tasks running now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no task runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until every task ended, for at most `bound`; then aborts those still
    /// running, logs their names, and returns how many it aborted.
    pub async fn join(&self, bound: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let ended = self.ended.notified();
            if self.is_empty() {
                return 0;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                break;
            }
        }
        let stuck: Vec<(&'static str, AbortHandle)> = self.lock().values().cloned().collect();
        for (name, handle) in &stuck {
            tracing::warn!(
                task = name,
                "background task did not end at shutdown; aborted"
            );
            handle.abort();
        }
        stuck.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn join_waits_for_tasks_that_end_and_aborts_those_that_do_not() {
        let set = Arc::new(TaskSet::default());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        for _ in 0..3 {
            let mut stopped = stopped.clone();
            set.spawn("ends on the signal", async move {
                let _ = stopped.wait_for(|s| *s).await;
            });
        }
        set.spawn("never ends", std::future::pending());
        assert_eq!(set.len(), 4);
        stop.send_replace(true);
        assert_eq!(set.join(Duration::from_millis(200)).await, 1, "one aborted");
        // The aborted task leaves the set as it unwinds.
        for _ in 0..100 {
            if set.is_empty() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(set.is_empty());
    }

    #[tokio::test]
    async fn a_task_that_ended_at_once_leaves_no_entry() {
        let set = Arc::new(TaskSet::default());
        for _ in 0..50 {
            set.spawn("instant", async {});
        }
        assert_eq!(set.join(Duration::from_secs(5)).await, 0);
        assert!(set.is_empty());
    }
}
