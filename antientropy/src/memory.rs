//! An in-memory replica's tree view, for tests and benchmarks of the exchange.

use std::collections::{BTreeMap, BTreeSet};

use crate::exchange::{KeyDigest, TreeView};
use crate::merkle::{Hash, PartitionTree, item_hash, leaf_of, leaf_range};

/// Keys (whose first 8 bytes are a ring position) with version digests, and their trees.
#[derive(Clone, Debug)]
pub struct MemoryReplica {
    partition_bits: u8,
    keys: BTreeMap<Vec<u8>, Hash>,
    trees: BTreeMap<u32, PartitionTree>,
    shared: Vec<u32>,
}

fn position(key: &[u8]) -> u64 {
    u64::from_be_bytes(key[..8].try_into().expect("keys start with a ring position"))
}

impl MemoryReplica {
    pub fn new(partition_bits: u8) -> Self {
        MemoryReplica {
            partition_bits,
            keys: BTreeMap::new(),
            trees: BTreeMap::new(),
            shared: Vec::new(),
        }
    }

    fn partition(&self, pos: u64) -> u32 {
        (pos >> (64 - self.partition_bits as u32)) as u32
    }

    /// Stores `key` at a version with `digest` (or removes it with `None`).
    pub fn set(&mut self, key: Vec<u8>, digest: Option<Hash>) {
        let pos = position(&key);
        let (p, leaf) = (self.partition(pos), leaf_of(pos, self.partition_bits));
        let tree = self.trees.entry(p).or_default();
        match (self.keys.get(&key).copied(), digest) {
            (Some(old), Some(new)) => tree.replace(leaf, &item_hash(&key, &old), &item_hash(&key, &new)),
            (None, Some(new)) => tree.insert(leaf, &item_hash(&key, &new)),
            (Some(old), None) => tree.remove(leaf, &item_hash(&key, &old)),
            (None, None) => {}
        }
        match digest {
            Some(d) => self.keys.insert(key, d),
            None => self.keys.remove(&key),
        };
    }

    pub fn get(&self, key: &[u8]) -> Option<Hash> {
        self.keys.get(key).copied()
    }

    pub fn keys(&self) -> &BTreeMap<Vec<u8>, Hash> {
        &self.keys
    }

    /// Sets the partitions this replica shares with its exchange peer.
    pub fn share(&mut self, partitions: impl IntoIterator<Item = u32>) {
        let set: BTreeSet<u32> = partitions.into_iter().collect();
        self.shared = set.into_iter().collect();
    }
}

impl TreeView for MemoryReplica {
    fn partitions(&self) -> &[u32] {
        &self.shared
    }

    fn root(&mut self, partition: u32) -> Hash {
        self.trees.entry(partition).or_default().root()
    }

    fn segment(&mut self, partition: u32, segment: usize) -> Hash {
        self.trees.entry(partition).or_default().segment(segment)
    }

    fn leaf(&mut self, partition: u32, leaf: usize) -> Hash {
        self.trees.entry(partition).or_default().leaf(leaf)
    }

    fn keys(&mut self, partition: u32, leaf: usize) -> Vec<KeyDigest> {
        let (start, end) = leaf_range(partition, leaf, self.partition_bits);
        let from = start.to_be_bytes().to_vec();
        self.keys
            .range(from..)
            .take_while(|(k, _)| end.is_none_or(|e| position(k) < e))
            .map(|(k, d)| KeyDigest {
                key: k.clone(),
                digest: *d,
            })
            .collect()
    }
}
