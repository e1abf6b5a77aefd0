//! A map from sensor id to a per-sensor value, for the 100,000s of sensors a gateway keeps
//! state for (the pipeline's state, the board's entries).
//!
//! A hash map of id and value keeps both in every bucket, a third of the buckets empty after
//! a resize: at 100,000 sensors, 31,000 empty buckets of a 136-byte pair. Here the values
//! live in fixed chunks and carry their own id ([`Keyed`]); the hash table holds a 4-byte
//! slot per bucket, and the chunks waste at most one chunk's tail. A value never moves, so a
//! slot stays valid until its value is removed, and only the value added last can be.

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use std::hash::BuildHasher;

/// A value that knows its own id.
pub trait Keyed {
    fn key(&self) -> &str;
}

/// Values per chunk: one allocation per 1,024 sensors.
const CHUNK: usize = 1024;

pub struct IdMap<V> {
    slots: HashTable<u32>,
    chunks: Vec<Vec<V>>,
    len: usize,
}

impl<V> Default for IdMap<V> {
    fn default() -> Self {
        IdMap {
            slots: HashTable::new(),
            chunks: Vec::new(),
            len: 0,
        }
    }
}

fn hash(id: &str) -> u64 {
    FxBuildHasher.hash_one(id)
}

fn at<V>(chunks: &[Vec<V>], slot: u32) -> &V {
    let slot = slot as usize;
    &chunks[slot / CHUNK][slot % CHUNK]
}

impl<V: Keyed> IdMap<V> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn slot(&self, id: &str) -> Option<u32> {
        let chunks = &self.chunks;
        self.slots
            .find(hash(id), |s| at(chunks, *s).key() == id)
            .copied()
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.slot(id).is_some()
    }

    pub fn get(&self, id: &str) -> Option<&V> {
        self.slot(id).map(|s| at(&self.chunks, s))
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut V> {
        let slot = self.slot(id)? as usize;
        Some(&mut self.chunks[slot / CHUNK][slot % CHUNK])
    }

    /// The value of `id`, made with `make` if it has none.
    pub fn entry(&mut self, id: &str, make: impl FnOnce() -> V) -> &mut V {
        let slot = match self.slot(id) {
            Some(slot) => slot as usize,
            None => self.push(make()),
        };
        &mut self.chunks[slot / CHUNK][slot % CHUNK]
    }

    /// Adds a value, replacing the one with its id if there is one.
    pub fn insert(&mut self, value: V) {
        match self.get_mut(value.key()) {
            Some(held) => *held = value,
            None => {
                self.push(value);
            }
        }
    }

    /// Adds a value whose id is not in the map; returns its slot.
    fn push(&mut self, value: V) -> usize {
        let slot = self.len;
        let h = hash(value.key());
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.push(value);
        }
        self.len += 1;
        let chunks = &self.chunks;
        // More than 4 billion sensors cannot be configured (`max_sensors` is far below).
        self.slots
            .insert_unique(h, slot as u32, |s| hash(at(chunks, *s).key()));
        slot
    }

    /// Removes the value of `id` if it is the one added last (a new sensor whose first
    /// reading was rejected leaves no state behind); any other stays, and `false` says so.
    pub fn remove_last(&mut self, id: &str) -> bool {
        let Some(slot) = self.slot(id) else {
            return false;
        };
        if slot as usize + 1 != self.len {
            return false;
        }
        if let Ok(found) = self.slots.find_entry(hash(id), |s| *s == slot) {
            found.remove();
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.pop();
            if chunk.is_empty() {
                self.chunks.pop();
            }
        }
        self.len -= 1;
        true
    }

    pub fn iter(&self) -> impl Iterator<Item = &V> {
        self.chunks.iter().flatten()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.chunks.iter_mut().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Item(String, usize);

    impl Keyed for Item {
        fn key(&self) -> &str {
            &self.0
        }
    }

    #[test]
    fn values_across_chunks_are_found_by_id_and_only_the_last_can_go() {
        let mut map = IdMap::default();
        let n = 2 * CHUNK + 7;
        for i in 0..n {
            map.insert(Item(format!("s-{i}"), i));
        }
        assert_eq!(map.len(), n);
        for i in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, n - 1] {
            assert_eq!(map.get(&format!("s-{i}")), Some(&Item(format!("s-{i}"), i)));
        }
        assert!(map.get("s-x").is_none());
        // An insert of a known id replaces its value in place.
        map.insert(Item("s-5".into(), 500));
        assert_eq!((map.len(), map.get("s-5").map(|v| v.1)), (n, Some(500)));
        if let Some(v) = map.get_mut("s-6") {
            v.1 = 600;
        }
        assert_eq!(map.entry("s-6", || Item("no".into(), 0)).1, 600);
        assert_eq!(map.entry("s-new", || Item("s-new".into(), 1)).1, 1);

        // Only the value added last can be removed; then the one before it is last.
        assert!(!map.remove_last("s-0"));
        assert!(map.remove_last("s-new"));
        assert!(!map.remove_last("s-new"));
        assert!(map.get("s-new").is_none());
        let last = format!("s-{}", n - 1);
        assert!(map.remove_last(&last));
        assert_eq!(map.len(), n - 1);
        assert!(!map.contains_key(&last));
        // Down to a chunk boundary and back across it.
        for i in (2 * CHUNK..n - 1).rev() {
            assert!(map.remove_last(&format!("s-{i}")));
        }
        assert_eq!((map.len(), map.chunks.len()), (2 * CHUNK, 2));
        map.insert(Item("again".into(), 7));
        assert_eq!(map.get("again").map(|v| v.1), Some(7));
        assert_eq!(map.get("s-0").map(|v| v.1), Some(0));
        assert_eq!(map.iter().count(), 2 * CHUNK + 1);
        for v in map.iter_mut() {
            v.1 += 1;
        }
        assert_eq!(
            map.get(&format!("s-{}", CHUNK)).map(|v| v.1),
            Some(CHUNK + 1)
        );
    }
}
