//! What a [`super::Cache`] holds: values read from the database, each trusted for at most the
//! revalidation bound, under a generation count that every invalidation bumps, so a read that
//! an invalidation overtook is never kept (it may predate the change announced).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Values by key, each with when it was read.
#[derive(Debug)]
pub struct Held<K, V> {
    revalidate: Duration,
    /// Entries held at most; past it stale ones go first, then all of them.
    capacity: usize,
    inner: Mutex<Inner<K, V>>,
}

#[derive(Debug)]
struct Inner<K, V> {
    entries: HashMap<K, (V, Instant)>,
    generation: u64,
}

impl<K: Eq + Hash, V: Clone> Held<K, V> {
    pub fn new(revalidate: Duration, capacity: usize) -> Self {
        Held {
            revalidate,
            capacity,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                generation: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<K, V>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value of `key` when it is held and was read within the bound.
    pub fn get(&self, key: &K) -> Option<V> {
        let inner = self.lock();
        let (value, read_at) = inner.entries.get(key)?;
        (read_at.elapsed() < self.revalidate).then(|| value.clone())
    }

    /// Where the invalidation count stands: read it before reading the database, and hand it
    /// to [`Held::keep`] with what was read.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Holds `value` as read now, unless an invalidation came in since `generation`.
    pub fn keep(&self, key: K, value: V, generation: u64) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.entries.len() >= self.capacity {
            let revalidate = self.revalidate;
            inner
                .entries
                .retain(|_, (_, read_at)| read_at.elapsed() < revalidate);
            if inner.entries.len() >= self.capacity {
                inner.entries.clear();
            }
        }
        inner.entries.insert(key, (value, Instant::now()));
    }

    /// Drops `key`.
    pub fn forget(&self, key: &K) {
        let mut inner = self.bumped();
        inner.entries.remove(key);
    }

    /// Drops every entry `drop` names.
    pub fn forget_where(&self, mut drop: impl FnMut(&V) -> bool) {
        let mut inner = self.bumped();
        inner.entries.retain(|_, (value, _)| !drop(value));
    }

    /// Drops everything.
    pub fn clear(&self) {
        self.bumped().entries.clear();
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The lock, with the generation already bumped for the invalidation about to be applied.
    fn bumped(&self) -> MutexGuard<'_, Inner<K, V>> {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        inner
    }
}
