//! The namespaces this node knows: the table of `dynakv_ring::namespace`, changed by a
//! create or a tuning here and by what gossip brings, stored in the node's metadata
//! after every change (before it is published), so a restart knows what it knew.
//!
//! After every change this node marks itself a holder of every namespace in the table
//! (`Namespaces::hold_all`): a namespace is active once every owner of the current
//! layout has said so in gossip.

use std::sync::Arc;

use dynakv_ring::NodeId;
use dynakv_ring::layout::Stamp;
use dynakv_ring::namespace::{Created, Fixed, NamespaceError, Namespaces, Tunables};
use parking_lot::{Mutex, RwLock};

use crate::env::storage::{Op, Space, StorageError, Store};

const KEY: &[u8] = crate::env::storage::meta::NAMESPACES;

/// Most namespaces a cluster may have: every gossip round carries the whole table.
pub const MAX_NAMESPACES: usize = 256;

/// Why a change to the table was refused or not kept.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Refused(#[from] NamespaceError),
    #[error("the cluster has {MAX_NAMESPACES} namespaces, the most it may have")]
    Full,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

pub struct Catalog {
    me: NodeId,
    /// Changed only under this lock: stored, then published in `view`.
    table: Mutex<Namespaces>,
    view: RwLock<Arc<Namespaces>>,
    store: Arc<dyn Store>,
}

impl Catalog {
    /// The table as this node last stored it (empty on a fresh node).
    pub fn load(me: NodeId, store: Arc<dyn Store>) -> Result<Catalog, StorageError> {
        let table: Namespaces = match store.get(Space::Meta, KEY)? {
            None => Namespaces::default(),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| StorageError::Corrupt {
                what: "the namespace table".into(),
                detail: e.to_string(),
            })?,
        };
        Ok(Catalog {
            me,
            view: RwLock::new(Arc::new(table.clone())),
            table: Mutex::new(table),
            store,
        })
    }

    /// The table as it is now.
    pub fn table(&self) -> Arc<Namespaces> {
        self.view.read().clone()
    }

    /// Applies `change` to a copy of the table; if it changed anything, marks this node
    /// a holder of every namespace, stores and publishes the result.
    fn change<T>(&self, change: impl FnOnce(&mut Namespaces) -> Result<T, CatalogError>) -> Result<T, CatalogError> {
        let mut table = self.table.lock();
        let mut next = table.clone();
        let out = change(&mut next)?;
        next.hold_all(&self.me);
        if next != *table {
            let bytes = serde_json::to_vec(&next).expect("a namespace table encodes");
            self.store
                .write_synced(vec![Op::Put(Space::Meta, KEY.to_vec(), bytes)])?;
            *self.view.write() = Arc::new(next.clone());
            *table = next;
        }
        Ok(out)
    }

    /// Creates `name` (its definition checked by the caller against the layout).
    pub fn create(&self, name: &str, fixed: Fixed, tunables: Tunables, stamp: Stamp) -> Result<Created, CatalogError> {
        self.change(|t| {
            if t.get(name).is_none() && t.iter().count() >= MAX_NAMESPACES {
                return Err(CatalogError::Full);
            }
            Ok(t.create(name, fixed, tunables, stamp)?)
        })
    }

    /// Sets `name`'s tunables (checked by the caller).
    pub fn tune(&self, name: &str, tunables: Tunables, stamp: Stamp) -> Result<(), CatalogError> {
        self.change(|t| Ok(t.tune(name, tunables, stamp)?))
    }

    /// Merges a peer's table into ours.
    pub fn merge(&self, theirs: &Namespaces) -> Result<(), StorageError> {
        if *self.table() == *theirs {
            return Ok(());
        }
        match self.change(|t| {
            t.merge(theirs);
            Ok(())
        }) {
            Ok(()) => Ok(()),
            Err(CatalogError::Storage(e)) => Err(e),
            Err(other) => unreachable!("a merge refuses nothing: {other}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use dynakv_ring::namespace::{Conflict, State};

    use super::*;
    use crate::env::storage::MemoryStore;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn defs(n: u8) -> (Fixed, Tunables) {
        (
            Fixed {
                n,
                conflict: Conflict::Mv,
                datatype: None,
            },
            Tunables {
                r: 1,
                w: 1,
                pr: 0,
                pw: 0,
                ttl_s: None,
            },
        )
    }

    fn stamp(at_ms: u64) -> Stamp {
        Stamp { at_ms, by: id("n1") }
    }

    #[test]
    fn changes_are_stored_and_survive_a_restart() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let c = Catalog::load(id("n1"), store.clone()).unwrap();
        let (f, t) = defs(2);
        assert_eq!(c.create("carts", f.clone(), t.clone(), stamp(1)).unwrap(), Created::New);
        let again = Catalog::load(id("n1"), store.clone()).unwrap();
        assert_eq!(*again.table(), *c.table());
        assert!(again.table().get("carts").unwrap().holders.contains(&id("n1")));

        // What a peer gossips is merged, held by us, and stored.
        let peer_store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let peer = Catalog::load(id("n2"), peer_store).unwrap();
        peer.merge(&c.table()).unwrap();
        let owners: BTreeSet<NodeId> = [id("n1"), id("n2")].into();
        assert_eq!(
            peer.table().state("carts", &owners),
            Some(State::Active),
            "n2 holds what it merged, and knows n1 does"
        );
        assert_eq!(
            c.table().state("carts", &owners),
            Some(State::Pending),
            "n1 has not heard n2 hold it yet"
        );
        c.merge(&peer.table()).unwrap();
        assert_eq!(c.table().state("carts", &owners), Some(State::Active));
        let again = Catalog::load(id("n1"), store).unwrap();
        assert_eq!(again.table().state("carts", &owners), Some(State::Active));
    }

    #[test]
    fn the_table_is_bounded() {
        let c = Catalog::load(id("n1"), Arc::new(MemoryStore::new())).unwrap();
        for i in 0..MAX_NAMESPACES {
            let (f, t) = defs(1);
            c.create(&format!("ns{i}"), f, t, stamp(1)).unwrap();
        }
        let (f, t) = defs(1);
        assert!(matches!(
            c.create("one-more", f.clone(), t.clone(), stamp(2)),
            Err(CatalogError::Full)
        ));
        assert_eq!(
            c.create("ns0", f, t, stamp(3)).unwrap(),
            Created::Exists,
            "an existing one is still found"
        );
    }
}
