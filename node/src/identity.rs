//! Who this node is, kept in the data directory: its id, its actor id (the name under
//! which it mints versions) and its generation (bumped on every start).

use dynakv_crdt::Actor;
use dynakv_ring::NodeId;

use crate::storage::{Op, Space, Store};

const NODE_ID: &[u8] = b"node_id";
const ACTOR: &[u8] = b"actor";
const GENERATION: &[u8] = b"generation";

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
    fn fresh_directories_get_distinct_actors() {
        let a = load_or_create(&MemoryStore::new(), None).unwrap();
        let b = load_or_create(&MemoryStore::new(), None).unwrap();
        assert_ne!(a.actor, b.actor);
        assert_ne!(a.id, b.id);
    }
}
