//! The compiled components a host keeps: a cache bounded by bytes, least recently used evicted first.
//!
//! The order is kept by the `lru` crate (already in the build through the S3 client); it bounds
//! entries by count, so the weights are summed here and the least recently used entries popped
//! until the total fits. Evicting only drops the cache's reference: a binding or a session
//! holding the plugin keeps it alive and working. [`ComponentCache`] also remembers, weakly,
//! every plugin still in use, so a plugin evicted while bound is found again (not compiled a
//! second time) when the registry reloads its bindings; only a plugin nobody uses is compiled
//! anew.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Weak};

use lru::LruCache;

/// Compiled plugins by digest: the most recently used within a byte budget, and any other
/// still in use somewhere.
pub struct ComponentCache<T> {
    recent: WeightedLru<String, Arc<T>>,
    live: HashMap<String, Weak<T>>,
}

impl<T> ComponentCache<T> {
    /// An empty cache keeping at most `capacity` bytes of plugins nobody else holds.
    pub fn new(capacity: usize) -> Self {
        Self {
            recent: WeightedLru::new(capacity),
            live: HashMap::new(),
        }
    }

    /// The plugin with `digest`, now the most recently used: from the cache, else one still in
    /// use (kept again).
    pub fn get(&mut self, digest: &str, weight: impl Fn(&T) -> usize) -> Option<Arc<T>> {
        if let Some(plugin) = self.recent.get(&digest.to_owned()) {
            return Some(plugin);
        }
        let plugin = self.live.get(digest)?.upgrade()?;
        self.recent
            .insert(digest.to_owned(), plugin.clone(), weight(&plugin));
        Some(plugin)
    }

    /// Keeps `plugin` of `weight` bytes; returns the digests evicted, least recently used first.
    pub fn insert(&mut self, digest: String, plugin: Arc<T>, weight: usize) -> Vec<String> {
        self.live.retain(|_, live| live.strong_count() > 0);
        self.live.insert(digest.clone(), Arc::downgrade(&plugin));
        self.recent.insert(digest, plugin, weight)
    }

    /// How many plugins the byte budget holds, and their bytes.
    pub fn usage(&self) -> (usize, usize) {
        (self.recent.len(), self.recent.bytes())
    }
}

/// Values by key, at most `capacity` bytes of them by the weight given with each.
pub struct WeightedLru<K: Hash + Eq, V> {
    entries: LruCache<K, (V, usize)>,
    capacity: usize,
    bytes: usize,
}

impl<K: Hash + Eq, V: Clone> WeightedLru<K, V> {
    /// An empty cache holding at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: LruCache::unbounded(),
            capacity,
            bytes: 0,
        }
    }

    /// The value for `key`, now the most recently used.
    pub fn get(&mut self, key: &K) -> Option<V> {
        self.entries.get(key).map(|(value, _)| value.clone())
    }

    /// Keeps `value` (of `weight` bytes) under `key`, evicting the least recently used until the
    /// total fits; a value heavier than the whole capacity is not kept. Returns the keys
    /// evicted, least recently used first.
    pub fn insert(&mut self, key: K, value: V, weight: usize) -> Vec<K> {
        if weight > self.capacity {
            return Vec::new();
        }
        if let Some((_, replaced)) = self.entries.put(key, (value, weight)) {
            self.bytes -= replaced;
        }
        self.bytes += weight;
        let mut evicted = Vec::new();
        while self.bytes > self.capacity {
            let Some((key, (_, weight))) = self.entries.pop_lru() else {
                break;
            };
            self.bytes -= weight;
            evicted.push(key);
        }
        evicted
    }

    /// How many values it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The bytes of the values it holds, by their weights.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_go_first_until_the_total_fits() {
        let mut cache = WeightedLru::new(100);
        assert!(cache.insert("a", 1, 40).is_empty());
        assert!(cache.insert("b", 2, 40).is_empty());
        // Using `a` makes `b` the least recently used.
        assert_eq!(cache.get(&"a"), Some(1));
        assert_eq!(cache.insert("c", 3, 40), vec!["b"]);
        assert_eq!((cache.len(), cache.bytes()), (2, 80));
        // One heavy entry evicts as many as it takes, oldest first.
        assert_eq!(cache.insert("d", 4, 90), vec!["a", "c"]);
        assert_eq!((cache.len(), cache.bytes()), (1, 90));
        assert_eq!(cache.get(&"b"), None);
        assert_eq!(cache.get(&"d"), Some(4));
    }

    #[test]
    fn a_value_heavier_than_the_capacity_is_not_kept_and_evicts_nothing() {
        let mut cache = WeightedLru::new(100);
        cache.insert("a", 1, 60);
        assert!(cache.insert("huge", 2, 101).is_empty());
        assert_eq!(cache.get(&"huge"), None);
        assert_eq!(cache.get(&"a"), Some(1));
        assert_eq!(cache.bytes(), 60);
    }

    #[test]
    fn an_evicted_plugin_still_in_use_is_found_again_and_one_nobody_holds_is_not() {
        let mut cache = ComponentCache::new(100);
        let bound = Arc::new(60_usize);
        cache.insert("bound".into(), bound.clone(), 60);
        cache.insert("unused".into(), Arc::new(30), 30);
        assert_eq!(
            cache.insert("newest".into(), Arc::new(50), 50),
            vec!["bound"]
        );
        assert_eq!(cache.usage(), (2, 80));
        // Still held by its binding: found again, the same compiled plugin, kept again (which
        // evicts the others, least recently used first).
        let again = cache
            .get("bound", |weight| *weight)
            .expect("a plugin in use is found");
        assert!(Arc::ptr_eq(&again, &bound));
        assert_eq!(cache.usage(), (1, 60));
        // Nobody holds the evicted ones: they are gone.
        assert!(cache.get("unused", |weight| *weight).is_none());
        assert!(cache.get("newest", |weight| *weight).is_none());
    }

    #[test]
    fn replacing_a_key_counts_its_new_weight_only() {
        let mut cache = WeightedLru::new(100);
        cache.insert("a", 1, 60);
        assert!(cache.insert("a", 2, 70).is_empty());
        assert_eq!((cache.len(), cache.bytes()), (1, 70));
        assert_eq!(cache.get(&"a"), Some(2));
    }
}
