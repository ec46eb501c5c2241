//! Per-key locks: serialise work on one key (a plugin in a workspace, an external cache entry)
//! without a lock per possible key living forever.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// An async lock per key (a mutex unless `L` says otherwise, such as `tokio::sync::RwLock<()>`);
/// entries nobody holds or waits for are dropped on the next lookup.
#[derive(Debug)]
pub struct KeyedLocks<K, L = tokio::sync::Mutex<()>> {
    locks: Mutex<HashMap<K, Arc<L>>>,
}

impl<K: Eq + Hash, L> Default for KeyedLocks<K, L> {
    fn default() -> Self {
        KeyedLocks {
            locks: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash, L: Default> KeyedLocks<K, L> {
    /// The lock of `key`: `.lock().await` it in async code, `.blocking_lock()` on a blocking
    /// thread.
    pub fn get(&self, key: K) -> Arc<L> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks.entry(key).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_key_is_serialised_and_unused_keys_are_forgotten() {
        let locks: KeyedLocks<&str> = KeyedLocks::default();
        let a = locks.get("a");
        let held = a.lock().await;
        assert!(locks.get("a").try_lock().is_err());
        assert!(locks.get("b").try_lock().is_ok());
        drop(held);
        drop(a);
        let _ = locks.get("c");
        assert_eq!(locks.locks.lock().unwrap().len(), 1);
    }
}
