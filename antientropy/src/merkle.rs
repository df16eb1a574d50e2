//! One Merkle tree per partition, updated in place as writes land.
//!
//! ```text
//!   root ─ blake3(segment hashes)
//!    ├─ segment 0..16 ─ blake3(its 16 leaf hashes)
//!    │   └─ leaf 0..256 ─ XOR of item hashes of the keys in the leaf
//!    └─ ...
//! ```
//! A key falls in the leaf given by the 8 bits of its ring position that follow the
//! partition bits. Its *item hash* is blake3 over its storage key and the digest of its
//! stored version, so two replicas' leaves agree exactly when they hold the same keys at
//! the same versions. Leaves combine items with XOR: a write updates its leaf in O(1)
//! (XOR out the old item, XOR in the new) without reading the leaf's other keys. Interior
//! hashes are blake3 over the children, recomputed lazily when read after a change.
//!
//! An empty subtree hashes to [`EMPTY`], so a partition with no keys and a partition never
//! seen compare equal.

use serde::{Deserialize, Serialize};

/// A tree hash or digest.
pub type Hash = [u8; 32];
/// Hash of an empty subtree.
pub const EMPTY: Hash = [0; 32];
/// Segments under a partition root.
pub const SEGMENTS: usize = 16;
/// Leaves under a segment.
pub const LEAVES_PER_SEGMENT: usize = 16;
/// Leaves in a partition.
pub const LEAVES: usize = SEGMENTS * LEAVES_PER_SEGMENT;
/// Bits of the ring position that pick the leaf within a partition.
pub const LEAF_BITS: u32 = 8;

/// Digest of a stored version (its encoded bytes).
pub fn digest(bytes: &[u8]) -> Hash {
    *blake3::hash(bytes).as_bytes()
}

/// What one key at one version contributes to its leaf.
pub fn item_hash(storage_key: &[u8], version_digest: &Hash) -> Hash {
    let mut h = blake3::Hasher::new_derive_key("dynakv merkle item v1");
    h.update(&(storage_key.len() as u64).to_be_bytes());
    h.update(storage_key);
    h.update(version_digest);
    *h.finalize().as_bytes()
}

/// Leaf of a ring position within its partition.
pub fn leaf_of(position: u64, partition_bits: u8) -> usize {
    ((position << partition_bits) >> (64 - LEAF_BITS)) as usize
}

/// First ring position of a leaf, and the first position after it (`None` past the end of
/// the ring).
pub fn leaf_range(partition: u32, leaf: usize, partition_bits: u8) -> (u64, Option<u64>) {
    let leaf_shift = 64 - partition_bits as u32 - LEAF_BITS;
    let start = ((partition as u64) << (64 - partition_bits as u32)) | ((leaf as u64) << leaf_shift);
    let end = start.checked_add(1u64 << leaf_shift);
    (start, end)
}

fn xor(a: &mut Hash, b: &Hash) {
    for (x, y) in a.iter_mut().zip(b) {
        *x ^= y;
    }
}

/// The tree of one partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionTree {
    leaves: Vec<Hash>,
    counts: Vec<u32>,
    /// Cached segment hashes; `None` when a leaf below changed since the last read.
    segments: [Option<Hash>; SEGMENTS],
    root: Option<Hash>,
}

impl Default for PartitionTree {
    fn default() -> Self {
        PartitionTree {
            leaves: vec![EMPTY; LEAVES],
            counts: vec![0; LEAVES],
            segments: [Some(EMPTY); SEGMENTS],
            root: Some(EMPTY),
        }
    }
}

impl PartitionTree {
    pub fn new() -> Self {
        Self::default()
    }

    fn touch(&mut self, leaf: usize) {
        self.segments[leaf / LEAVES_PER_SEGMENT] = None;
        self.root = None;
    }

    /// Adds a key's item to `leaf`.
    pub fn insert(&mut self, leaf: usize, item: &Hash) {
        xor(&mut self.leaves[leaf], item);
        self.counts[leaf] += 1;
        self.touch(leaf);
    }

    /// Removes a key's item from `leaf` (the item it was inserted with).
    pub fn remove(&mut self, leaf: usize, item: &Hash) {
        xor(&mut self.leaves[leaf], item);
        self.counts[leaf] = self.counts[leaf].saturating_sub(1);
        self.touch(leaf);
    }

    /// Replaces a key's item (a new version of a stored key).
    pub fn replace(&mut self, leaf: usize, old: &Hash, new: &Hash) {
        xor(&mut self.leaves[leaf], old);
        xor(&mut self.leaves[leaf], new);
        self.touch(leaf);
    }

    pub fn leaf(&self, leaf: usize) -> Hash {
        if self.counts[leaf] == 0 {
            EMPTY
        } else {
            self.leaves[leaf]
        }
    }

    pub fn segment(&mut self, s: usize) -> Hash {
        if let Some(h) = self.segments[s] {
            return h;
        }
        let range = s * LEAVES_PER_SEGMENT..(s + 1) * LEAVES_PER_SEGMENT;
        let h = if self.counts[range.clone()].iter().all(|&c| c == 0) {
            EMPTY
        } else {
            let mut hasher = blake3::Hasher::new();
            for l in range {
                hasher.update(&self.leaf(l));
            }
            *hasher.finalize().as_bytes()
        };
        self.segments[s] = Some(h);
        h
    }

    pub fn root(&mut self) -> Hash {
        if let Some(h) = self.root {
            return h;
        }
        let segments: Vec<Hash> = (0..SEGMENTS).map(|s| self.segment(s)).collect();
        let h = if segments.iter().all(|s| *s == EMPTY) {
            EMPTY
        } else {
            let mut hasher = blake3::Hasher::new();
            for s in &segments {
                hasher.update(s);
            }
            *hasher.finalize().as_bytes()
        };
        self.root = Some(h);
        h
    }

    pub fn key_count(&self) -> u64 {
        self.counts.iter().map(|&c| c as u64).sum()
    }

    pub fn leaf_count(&self, leaf: usize) -> u32 {
        self.counts[leaf]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn item(k: u32, v: u32) -> Hash {
        item_hash(&k.to_be_bytes(), &digest(&v.to_be_bytes()))
    }

    #[test]
    fn empty_tree_hashes_to_empty() {
        let mut t = PartitionTree::new();
        assert_eq!(t.root(), EMPTY);
        t.insert(3, &item(1, 1));
        assert_ne!(t.root(), EMPTY);
        t.remove(3, &item(1, 1));
        assert_eq!(t.root(), EMPTY);
        assert_eq!(t.key_count(), 0);
    }

    #[test]
    fn positions_map_to_leaves_and_back() {
        for bits in [1u8, 4, 10, 16] {
            for p in [0u32, (1 << bits) - 1] {
                for leaf in [0usize, 7, 255] {
                    let (start, end) = leaf_range(p, leaf, bits);
                    assert_eq!(leaf_of(start, bits), leaf);
                    assert_eq!((start >> (64 - bits as u32)) as u32, p);
                    if let Some(end) = end {
                        assert_eq!(leaf_of(end - 1, bits), leaf);
                    } else {
                        assert_eq!((p, leaf), ((1 << bits) - 1, 255));
                    }
                }
            }
        }
    }

    proptest! {
        /// The root depends on the set of (key, version) items only, not on the order or
        /// history of updates.
        #[test]
        fn root_depends_only_on_content(
            items in prop::collection::btree_map(0u32..500, 0u32..3, 0..60),
            churn in prop::collection::vec((0u32..500, 0u32..3), 0..30),
        ) {
            let leaf = |k: u32| (k % LEAVES as u32) as usize;
            let mut direct = PartitionTree::new();
            for (&k, &v) in &items {
                direct.insert(leaf(k), &item(k, v));
            }
            // Same content reached through extra versions that were replaced or removed.
            let mut churned = PartitionTree::new();
            let mut state = std::collections::BTreeMap::new();
            for &(k, v) in &churn {
                match state.insert(k, v) {
                    Some(old) => churned.replace(leaf(k), &item(k, old), &item(k, v)),
                    None => churned.insert(leaf(k), &item(k, v)),
                }
            }
            for (k, v) in std::mem::take(&mut state) {
                churned.remove(leaf(k), &item(k, v));
            }
            for (&k, &v) in items.iter().rev() {
                churned.insert(leaf(k), &item(k, v));
            }
            prop_assert_eq!(direct.root(), churned.root());
            prop_assert_eq!(direct.key_count(), items.len() as u64);
        }

        #[test]
        fn different_content_gives_different_roots(
            items in prop::collection::btree_map(0u32..500, 0u32..3, 1..40),
            pick in any::<prop::sample::Index>(),
        ) {
            let leaf = |k: u32| (k % LEAVES as u32) as usize;
            let mut a = PartitionTree::new();
            let mut b = PartitionTree::new();
            let changed = *pick.get(&items.keys().copied().collect::<Vec<_>>());
            for (&k, &v) in &items {
                a.insert(leaf(k), &item(k, v));
                b.insert(leaf(k), &item(k, if k == changed { v + 10 } else { v }));
            }
            prop_assert_ne!(a.root(), b.root());
            let s = leaf(changed) / LEAVES_PER_SEGMENT;
            prop_assert_ne!(a.segment(s), b.segment(s));
            for other in (0..SEGMENTS).filter(|&o| o != s) {
                prop_assert_eq!(a.segment(other), b.segment(other));
            }
        }
    }
}
