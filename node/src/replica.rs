//! This node's replica of the data: registers keyed by ring position and user key, with
//! read-merge-write under a per-key lock.
//!
//! Storage key: the key's 8-byte ring position (big-endian) then the key's bytes, so a
//! partition or any sub-range of the ring is one contiguous scan (anti-entropy and
//! ownership handoff walk them). Value: a format byte then the postcard-encoded
//! [`Register`], carrying its causal metadata.

use std::sync::Arc;

use dynakv_crdt::Register;
use dynakv_ring::hash::key_position;
use parking_lot::Mutex;

use crate::storage::{Space, StorageError, Store};

const RECORD_FORMAT: u8 = 1;
/// Lock stripes: enough that unrelated keys rarely share one.
const LOCK_STRIPES: usize = 4096;

pub struct ReplicaStore {
    store: Arc<dyn Store>,
    /// Serialises read-merge-write per key (striped). Held only around synchronous
    /// storage calls, never across an await.
    locks: Box<[Mutex<()>]>,
}

pub fn storage_key(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&key_position(key.as_bytes()).to_be_bytes());
    k.extend_from_slice(key.as_bytes());
    k
}

fn encode(reg: &Register) -> Vec<u8> {
    let mut out = vec![RECORD_FORMAT];
    postcard::to_io(reg, &mut out).expect("writing to a Vec cannot fail");
    out
}

fn decode(key: &str, bytes: &[u8]) -> Result<Register, StorageError> {
    let corrupt = |detail: String| StorageError::Corrupt {
        what: format!("key {key:?}"),
        detail,
    };
    match bytes.split_first() {
        Some((&RECORD_FORMAT, rest)) => {
            postcard::from_bytes(rest).map_err(|e| corrupt(e.to_string()))
        }
        Some((f, _)) => Err(corrupt(format!("unknown record format {f}"))),
        None => Err(corrupt("empty record".into())),
    }
}

impl ReplicaStore {
    pub fn new(store: Arc<dyn Store>) -> Self {
        ReplicaStore {
            store,
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    fn lock(&self, skey: &[u8]) -> parking_lot::MutexGuard<'_, ()> {
        // The first 8 bytes are a uniform hash.
        let h = u64::from_be_bytes(
            skey[..8]
                .try_into()
                .expect("storage keys start with a position"),
        );
        self.locks[(h % LOCK_STRIPES as u64) as usize].lock()
    }

    pub fn get(&self, key: &str) -> Result<Option<Register>, StorageError> {
        self.store
            .get(Space::Data, &storage_key(key))?
            .map(|b| decode(key, &b))
            .transpose()
    }

    /// Applies `f` to the stored state and stores what it returns, atomically with
    /// respect to other updates of the key. Returns the stored state and `f`'s extra.
    pub fn update<T>(
        &self,
        key: &str,
        f: impl FnOnce(Option<Register>) -> (Register, T),
    ) -> Result<(Register, T), StorageError> {
        let skey = storage_key(key);
        let _guard = self.lock(&skey);
        let current = self
            .store
            .get(Space::Data, &skey)?
            .map(|b| decode(key, &b))
            .transpose()?;
        let unchanged = current.clone();
        let (next, extra) = f(current);
        if unchanged.as_ref() != Some(&next) {
            self.store.put(Space::Data, &skey, &encode(&next))?;
        }
        Ok((next, extra))
    }

    /// Merges a state received from another replica into ours; returns the result.
    pub fn merge(&self, key: &str, incoming: &Register) -> Result<Register, StorageError> {
        self.update(key, |current| {
            let merged = match current {
                Some(mut mine) => {
                    mine.merge(incoming);
                    mine
                }
                None => incoming.clone(),
            };
            (merged, ())
        })
        .map(|(r, ())| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStore;
    use bytes::Bytes;
    use dynakv_crdt::{Actor, CausalContext, MvRegister};

    #[test]
    fn merge_update_and_get() {
        let r = ReplicaStore::new(Arc::new(MemoryStore::new()));
        assert_eq!(r.get("k").unwrap(), None);
        let mut a = MvRegister::new();
        a.write(
            Actor(1),
            &CausalContext::new(),
            Some(Bytes::from_static(b"x")),
        );
        r.merge("k", &Register::Mv(a.clone())).unwrap();
        let mut b = MvRegister::new();
        b.write(
            Actor(2),
            &CausalContext::new(),
            Some(Bytes::from_static(b"y")),
        );
        let merged = r.merge("k", &Register::Mv(b)).unwrap();
        assert_eq!(merged.values().len(), 2);
        assert_eq!(r.get("k").unwrap(), Some(merged));
        // Merging the same state again changes nothing.
        let again = r.merge("k", &Register::Mv(a)).unwrap();
        assert_eq!(again.values().len(), 2);
    }

    #[test]
    fn corrupt_records_are_reported_not_panicked_on() {
        let store = Arc::new(MemoryStore::new());
        store.put(Space::Data, &storage_key("k"), &[9, 9]).unwrap();
        let r = ReplicaStore::new(store);
        assert!(matches!(r.get("k"), Err(StorageError::Corrupt { .. })));
    }
}
