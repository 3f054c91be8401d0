//! A map from label sets to registered handles: lock-free reads, rare
//! copy-on-write inserts, and a cap on the number of label sets.

use std::{collections::HashMap, hash::Hash, sync::Arc};

use arc_swap::ArcSwap;

/// Handles by label set, at most `limit` of them.
pub(crate) struct SeriesCache<K, V> {
    map: ArcSwap<HashMap<K, Arc<V>, foldhash::fast::RandomState>>,
    insert: parking_lot::Mutex<()>,
    limit: usize,
}

impl<K: Hash + Eq + Clone, V> SeriesCache<K, V> {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            map: ArcSwap::default(),
            insert: parking_lot::Mutex::new(()),
            limit,
        }
    }

    /// The handles for `key`, registering them on first use; `None` once the
    /// cap is reached and `key` is new.
    pub(crate) fn get_or_register(&self, key: K, register: impl FnOnce(&K) -> V) -> Option<Arc<V>> {
        if let Some(v) = self.map.load().get(&key) {
            return Some(v.clone());
        }
        // Inserts are rare (a label set is new once), so copying the map keeps
        // every read lock-free.
        let _guard = self.insert.lock();
        let current = self.map.load_full();
        if let Some(v) = current.get(&key) {
            return Some(v.clone());
        }
        if current.len() >= self.limit {
            return None;
        }
        let value = Arc::new(register(&key));
        let mut next = HashMap::clone(&current);
        next.insert(key, value.clone());
        self.map.store(Arc::new(next));
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_once_and_caps() {
        let cache = SeriesCache::new(2);
        let mut registered = 0;
        for key in [1, 1, 2, 1] {
            assert!(cache
                .get_or_register(key, |_| {
                    registered += 1;
                })
                .is_some());
        }
        assert_eq!(registered, 2);
        assert!(cache.get_or_register(3, |_| ()).is_none());
        assert!(
            cache.get_or_register(2, |_| ()).is_some(),
            "known keys still resolve"
        );
    }
}
