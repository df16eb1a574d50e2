//! Who this node is, kept in the data directory: its id, its actor id (the name under
//! which it mints versions) and its generation (bumped on every start).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dynakv_crdt::Actor;
use dynakv_ring::NodeId;
use parking_lot::Mutex;

use crate::storage::{Op, Space, StorageError, Store};

const NODE_ID: &[u8] = b"node_id";
const ACTOR: &[u8] = b"actor";
const GENERATION: &[u8] = b"generation";
const MINT_CEILING: &[u8] = b"mint_ceiling";
/// Counters reserved at a time, so the ceiling is written once in a great while.
const MINT_BLOCK: u64 = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub id: NodeId,
    pub actor: Actor,
    pub generation: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("invalid setting `id` = {given:?}: the data directory belongs to node {stored:?}")]
    Mismatch { given: String, stored: String },
    #[error("the data directory's identity records are corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}

fn read_u64(store: &dyn Store, key: &[u8]) -> Result<Option<u64>, IdentityError> {
    match store.get(Space::Meta, key)? {
        None => Ok(None),
        Some(b) => Ok(Some(u64::from_be_bytes(b.as_slice().try_into().map_err(|_| {
            IdentityError::Corrupt(format!("{} is {} bytes", String::from_utf8_lossy(key), b.len()))
        })?))),
    }
}

/// Loads the identity stored in `store`, or creates one on first start (with `wanted` as
/// the id, or a random one), and records a new generation.
pub fn load_or_create(store: &dyn Store, wanted: Option<&NodeId>) -> Result<Identity, IdentityError> {
    let stored_id = store
        .get(Space::Meta, NODE_ID)?
        .map(|b| {
            String::from_utf8(b)
                .ok()
                .and_then(|s| NodeId::new(s).ok())
                .ok_or_else(|| IdentityError::Corrupt("node id".into()))
        })
        .transpose()?;
    let id = match (stored_id, wanted) {
        (Some(stored), Some(given)) if stored != *given => {
            return Err(IdentityError::Mismatch {
                given: given.to_string(),
                stored: stored.to_string(),
            });
        }
        (Some(stored), _) => stored,
        (None, Some(given)) => given.clone(),
        (None, None) => NodeId::new(format!("n-{:08x}", rand::random::<u32>())).expect("valid generated id"),
    };
    let actor = match read_u64(store, ACTOR)? {
        Some(a) => Actor(a),
        None => Actor(rand::random()),
    };
    let generation = read_u64(store, GENERATION)?.unwrap_or(0) + 1;
    store.write(vec![
        Op::Put(Space::Meta, NODE_ID.to_vec(), id.as_str().as_bytes().to_vec()),
        Op::Put(Space::Meta, ACTOR.to_vec(), actor.0.to_be_bytes().to_vec()),
        Op::Put(Space::Meta, GENERATION.to_vec(), generation.to_be_bytes().to_vec()),
    ])?;
    Ok(Identity { id, actor, generation })
}

/// A floor for the dot counters this node mints on keys it holds nothing for: at least
/// every counter it has ever minted, across restarts (see
/// `dynakv_crdt::MvRegister::start_after`). Counters are reserved in blocks recorded in the
/// data directory before they are used; after a restart the floor starts at the recorded
/// ceiling.
pub struct MintFloor {
    store: Arc<dyn Store>,
    /// Highest counter minted (or the ceiling loaded at start).
    max: AtomicU64,
    /// Recorded ceiling: every counter ever minted is at most this.
    ceiling: Mutex<u64>,
}

impl MintFloor {
    pub fn load(store: Arc<dyn Store>) -> Result<MintFloor, IdentityError> {
        let ceiling = read_u64(&*store, MINT_CEILING)?.unwrap_or(0);
        Ok(MintFloor {
            store,
            max: AtomicU64::new(ceiling),
            ceiling: Mutex::new(ceiling),
        })
    }

    /// The current floor, with room recorded for the counters about to be minted (each
    /// is at most the floor plus one, plus whatever is minted concurrently).
    pub fn reserve(&self) -> Result<u64, StorageError> {
        let floor = self.max.load(Ordering::Acquire);
        let mut ceiling = self.ceiling.lock();
        if floor + MINT_BLOCK / 2 > *ceiling {
            let next = floor + MINT_BLOCK;
            self.store.put(Space::Meta, MINT_CEILING, &next.to_be_bytes())?;
            *ceiling = next;
        }
        Ok(floor)
    }

    /// Records a counter just minted.
    pub fn minted(&self, counter: u64) {
        self.max.fetch_max(counter, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStore;

    #[test]
    fn identity_persists_and_generation_grows() {
        let s = MemoryStore::new();
        let n1 = NodeId::new("n1").unwrap();
        let first = load_or_create(&s, Some(&n1)).unwrap();
        assert_eq!(first.generation, 1);
        let second = load_or_create(&s, None).unwrap();
        assert_eq!(
            (second.id.clone(), second.actor, second.generation),
            (n1.clone(), first.actor, 2)
        );
        let err = load_or_create(&s, Some(&NodeId::new("n2").unwrap())).unwrap_err();
        assert!(err.to_string().contains("belongs to node \"n1\""), "{err}");
    }

    #[test]
    fn mint_floor_never_goes_back_across_restarts() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let f = MintFloor::load(store.clone()).unwrap();
        assert_eq!(f.reserve().unwrap(), 0);
        f.minted(7);
        f.minted(3);
        assert_eq!(f.reserve().unwrap(), 7);
        // After a restart the floor is past everything minted before it.
        let again = MintFloor::load(store).unwrap();
        assert!(again.reserve().unwrap() >= 7);
    }

    #[test]
    fn fresh_directories_get_distinct_actors() {
        let a = load_or_create(&MemoryStore::new(), None).unwrap();
        let b = load_or_create(&MemoryStore::new(), None).unwrap();
        assert_ne!(a.actor, b.actor);
        assert_ne!(a.id, b.id);
    }
}
