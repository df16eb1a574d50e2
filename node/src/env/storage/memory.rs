//! In-memory twin of the RocksDB store, for fast unit tests.

use std::collections::BTreeMap;
use std::ops::Bound;

use parking_lot::RwLock;

use super::{Op, Scan, Space, StorageError, Store};

/// Every space in one ordered map, keyed by `(space, key)`.
type Entries = BTreeMap<(Space, Vec<u8>), Vec<u8>>;

#[derive(Default)]
pub struct MemoryStore {
    spaces: RwLock<Entries>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of everything stored now (the simulator's disk at a sync).
    pub fn snapshot(&self) -> MemoryStore {
        MemoryStore {
            spaces: RwLock::new(self.spaces.read().clone()),
        }
    }
}

impl Store for MemoryStore {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.spaces.read().get(&(space, key.to_vec())).cloned())
    }

    fn write(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        let mut map = self.spaces.write();
        for op in ops {
            match op {
                Op::Put(s, k, v) => {
                    map.insert((s, k), v);
                }
                Op::Delete(s, k) => {
                    map.remove(&(s, k));
                }
            }
        }
        Ok(())
    }

    /// Memory survives no crash of the machine: nothing to sync.
    fn sync(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn scan<'a>(&'a self, space: Space, from: &[u8], to: Option<&[u8]>) -> Scan<'a> {
        // A snapshot: the lock is not held while the caller iterates.
        let map = self.spaces.read();
        let start = Bound::Included((space, from.to_vec()));
        let items: Vec<_> = map
            .range((start, Bound::Unbounded))
            .take_while(|((s, k), _)| *s == space && to.is_none_or(|t| k.as_slice() < t))
            .map(|((_, k), v)| Ok((k.clone(), v.clone())))
            .collect();
        Box::new(items.into_iter())
    }
}
