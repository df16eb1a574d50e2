//! This node's Merkle trees, one per partition it holds data for, kept in memory and
//! updated under the same per-key lock as the storage write they describe.

use dynakv_antientropy::merkle::{self, Hash, PartitionTree, item_hash, leaf_of};
use parking_lot::Mutex;

pub struct Forest {
    partition_bits: u8,
    /// Allocated on the first key of a partition: a node holds ~N/n of the partitions.
    trees: Vec<Mutex<Option<Box<PartitionTree>>>>,
}

/// Ring position of a storage key (its first 8 bytes).
pub fn position(storage_key: &[u8]) -> u64 {
    u64::from_be_bytes(storage_key[..8].try_into().expect("storage keys start with a position"))
}

impl Forest {
    pub fn new(partition_bits: u8) -> Forest {
        Forest {
            partition_bits,
            trees: (0..1usize << partition_bits).map(|_| Mutex::new(None)).collect(),
        }
    }

    pub fn partition_bits(&self) -> u8 {
        self.partition_bits
    }

    pub fn partition_of(&self, storage_key: &[u8]) -> u32 {
        (position(storage_key) >> (64 - self.partition_bits as u32)) as u32
    }

    /// Records that `storage_key`'s stored bytes changed from `old` to `new` (`None`:
    /// absent).
    pub fn update(&self, storage_key: &[u8], old: Option<&[u8]>, new: Option<&[u8]>) {
        let pos = position(storage_key);
        let leaf = leaf_of(pos, self.partition_bits);
        let item = |bytes: &[u8]| item_hash(storage_key, &merkle::digest(bytes));
        let mut slot = self.trees[self.partition_of(storage_key) as usize].lock();
        let tree = slot.get_or_insert_with(Default::default);
        match (old, new) {
            (Some(o), Some(n)) => tree.replace(leaf, &item(o), &item(n)),
            (None, Some(n)) => tree.insert(leaf, &item(n)),
            (Some(o), None) => tree.remove(leaf, &item(o)),
            (None, None) => {}
        }
    }

    /// Runs `f` on a partition's tree (an empty one if the partition holds nothing, or
    /// does not exist: a peer's message may name any number).
    pub fn with<T>(&self, partition: u32, f: impl FnOnce(&mut PartitionTree) -> T) -> T {
        let Some(slot) = self.trees.get(partition as usize) else {
            return f(&mut PartitionTree::new());
        };
        let mut slot = slot.lock();
        match slot.as_mut() {
            Some(tree) => f(tree),
            None => f(&mut PartitionTree::new()),
        }
    }

    pub fn root(&self, partition: u32) -> Hash {
        self.with(partition, |t| t.root())
    }

    pub fn key_count(&self, partition: u32) -> u64 {
        self.trees
            .get(partition as usize)
            .map_or(0, |t| t.lock().as_ref().map_or(0, |t| t.key_count()))
    }

    pub fn partition_count(&self) -> u32 {
        self.trees.len() as u32
    }
}
