//! Bookkeeping of `message/send` work for the heartbeat: what is in flight, and how recent
//! requests went.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// How many recent requests the error rate is computed over.
pub const WINDOW: usize = 50;
/// Longest `current_task` reported, in characters.
pub const CURRENT_TASK_CHARS: usize = 200;

/// What the heartbeat reports about the agent's work.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub error_rate: f64,
    /// The most recent failure still inside the window.
    pub sample_error: Option<String>,
    pub active_tasks: usize,
    /// The most recently started task still running, truncated; empty when idle.
    pub current_task: String,
    pub uptime_seconds: u64,
}

/// Shared by the A2A handler (which starts tasks) and the heartbeat loop (which reads them).
#[derive(Debug, Clone)]
pub struct Tasks {
    inner: Arc<Mutex<Inner>>,
    started: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    in_flight: BTreeMap<u64, String>,
    /// `None` for a success, the error text for a failure; newest at the back.
    recent: VecDeque<Option<String>>,
}

impl Default for Tasks {
    fn default() -> Self {
        Self::new()
    }
}

impl Tasks {
    pub fn new() -> Self {
        Self {
            inner: Arc::default(),
            started: Instant::now(),
        }
    }

    /// Marks a task as in flight until the returned guard is finished or dropped. A guard
    /// dropped without [`TaskGuard::finish`] (the client went away) counts as neither outcome.
    pub fn start(&self, text: &str) -> TaskGuard {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner
            .in_flight
            .insert(id, text.chars().take(CURRENT_TASK_CHARS).collect());
        TaskGuard {
            tasks: self.clone(),
            id,
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        let failures = inner.recent.iter().filter(|r| r.is_some()).count();
        let error_rate = if inner.recent.is_empty() {
            0.0
        } else {
            failures as f64 / inner.recent.len() as f64
        };
        Snapshot {
            error_rate,
            sample_error: inner.recent.iter().rev().find_map(Clone::clone),
            active_tasks: inner.in_flight.len(),
            current_task: inner
                .in_flight
                .last_key_value()
                .map(|(_, text)| text.clone())
                .unwrap_or_default(),
            uptime_seconds: self.started.elapsed().as_secs(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The lock is never held across a panic point that could leave the maps inconsistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An in-flight task; see [`Tasks::start`].
#[derive(Debug)]
pub struct TaskGuard {
    tasks: Tasks,
    id: u64,
}

impl TaskGuard {
    /// Records the outcome: `Err(text)` counts towards the error rate.
    pub fn finish(self, outcome: Result<(), String>) {
        let mut inner = self.tasks.lock();
        inner.recent.push_back(outcome.err());
        while inner.recent.len() > WINDOW {
            inner.recent.pop_front();
        }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.tasks.lock().in_flight.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_in_flight_task_is_current_and_truncated() {
        let tasks = Tasks::new();
        let first = tasks.start("first");
        let second = tasks.start(&"x".repeat(500));
        let snap = tasks.snapshot();
        assert_eq!(snap.active_tasks, 2);
        assert_eq!(snap.current_task.chars().count(), CURRENT_TASK_CHARS);
        second.finish(Ok(()));
        assert_eq!(tasks.snapshot().current_task, "first");
        drop(first);
        let idle = tasks.snapshot();
        assert_eq!((idle.active_tasks, idle.current_task.as_str()), (0, ""));
    }

    #[test]
    fn the_error_rate_covers_a_sliding_window_of_recent_requests() {
        let tasks = Tasks::new();
        assert_eq!(tasks.snapshot().error_rate, 0.0);
        tasks.start("a").finish(Err("boom".into()));
        tasks.start("b").finish(Ok(()));
        let snap = tasks.snapshot();
        assert_eq!(snap.error_rate, 0.5);
        assert_eq!(snap.sample_error.as_deref(), Some("boom"));
        for _ in 0..WINDOW {
            tasks.start("ok").finish(Ok(()));
        }
        let snap = tasks.snapshot();
        assert_eq!(snap.error_rate, 0.0);
        assert_eq!(snap.sample_error, None);
    }
}
