//! The anti-entropy exchange between two replicas: compare hashes top-down, descend only
//! into subtrees that differ, and end with the keys whose versions differ.
//!
//! ```text
//!   DRIVER                                         RECEIVER
//!   start(view) ── Compare[(group, hash)...] ─────► answer(view, req)
//!                ◄── Differing[children | keys] ──  (only nodes whose hash differs)
//!   step(view, resp) ── Compare[differing children] ──► ...
//!   ... until a response lists keys only: step returns None, differences() holds
//!   the keys to transfer.
//! ```
//! The virtual tree above the partitions groups [`GROUP_SIZE`] partitions, so two
//! replicas that agree exchange one hash per group rather than one per partition:
//!
//! ```text
//!   group ─► partition root ─► segment (16) ─► leaf (16) ─► (key, digest) list
//! ```
//! Each side describes only the partitions it shares with the other (its *view*). If the
//! two disagree about which partitions those are (ring views differ for a moment), the
//! group hashes differ and the explicit partition lists reconcile them: a partition that
//! one side lacks compares as empty.
//!
//! Every round costs bytes in proportion to the number of differing subtrees, so an
//! exchange between replicas that differ in `d` keys costs O(d · log) plus one hash per
//! group, whatever the number of keys.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::merkle::{EMPTY, Hash, LEAVES_PER_SEGMENT, SEGMENTS};

/// Partitions per group at the top of the exchange tree.
pub const GROUP_SIZE: u32 = 32;

/// A node of the exchange tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TreeNode {
    Group(u32),
    Partition(u32),
    Segment { partition: u32, segment: u8 },
    Leaf { partition: u32, leaf: u8 },
}

/// A stored key and the digest of its stored version.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyDigest {
    /// The storage key (ring position, then the user key).
    pub key: Vec<u8>,
    pub digest: Hash,
}

/// One replica's side of an exchange with one peer.
pub trait TreeView {
    /// The partitions shared with the peer, ascending.
    fn partitions(&self) -> &[u32];
    // The methods below may be asked about partitions the view does not hold, or that do
    // not exist (a peer's message names them): they answer as for an empty partition.
    fn root(&mut self, partition: u32) -> Hash;
    fn segment(&mut self, partition: u32, segment: usize) -> Hash;
    fn leaf(&mut self, partition: u32, leaf: usize) -> Hash;
    /// Keys stored in a leaf, sorted by key.
    fn keys(&mut self, partition: u32, leaf: usize) -> Vec<KeyDigest>;
}

fn shared_in_group(view: &dyn TreeView, group: u32) -> Vec<u32> {
    let lo = group * GROUP_SIZE;
    let hi = lo + GROUP_SIZE;
    view.partitions()
        .iter()
        .copied()
        .filter(|p| (lo..hi).contains(p))
        .collect()
}

fn hash(view: &mut dyn TreeView, node: TreeNode) -> Hash {
    match node {
        TreeNode::Group(g) => {
            let mut h = blake3::Hasher::new();
            let mut any = false;
            for p in shared_in_group(view, g) {
                let root = view.root(p);
                if root != EMPTY {
                    any = true;
                    h.update(&p.to_be_bytes());
                    h.update(&root);
                }
            }
            if any { *h.finalize().as_bytes() } else { EMPTY }
        }
        TreeNode::Partition(p) => view.root(p),
        TreeNode::Segment { partition, segment } => view.segment(partition, segment as usize),
        TreeNode::Leaf { partition, leaf } => view.leaf(partition, leaf as usize),
    }
}

fn children(view: &mut dyn TreeView, node: TreeNode) -> Vec<(TreeNode, Hash)> {
    match node {
        TreeNode::Group(g) => shared_in_group(view, g)
            .into_iter()
            .map(|p| (TreeNode::Partition(p), view.root(p)))
            .collect(),
        TreeNode::Partition(p) => (0..SEGMENTS)
            .map(|s| {
                let n = TreeNode::Segment {
                    partition: p,
                    segment: s as u8,
                };
                (n, view.segment(p, s))
            })
            .collect(),
        TreeNode::Segment { partition, segment } => (0..LEAVES_PER_SEGMENT)
            .map(|i| {
                let leaf = segment as usize * LEAVES_PER_SEGMENT + i;
                let n = TreeNode::Leaf {
                    partition,
                    leaf: leaf as u8,
                };
                (n, view.leaf(partition, leaf))
            })
            .collect(),
        TreeNode::Leaf { .. } => Vec::new(),
    }
}

/// Hashes the driver holds for some nodes; the receiver answers those that differ.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub nodes: Vec<(TreeNode, Hash)>,
}

/// The receiver's side of each node that differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Differing {
    /// An interior node: the receiver's children and their hashes.
    Children {
        node: TreeNode,
        children: Vec<(TreeNode, Hash)>,
    },
    /// A leaf: the receiver's keys in it.
    Keys { node: TreeNode, keys: Vec<KeyDigest> },
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompareResponse {
    pub differing: Vec<Differing>,
}

/// Whether a node names a real place in the tree (a peer's message could name any).
/// Partitions out of range are the view's to judge; it treats them as empty.
fn well_formed(node: TreeNode) -> bool {
    match node {
        TreeNode::Segment { segment, .. } => (segment as usize) < SEGMENTS,
        _ => true,
    }
}

/// RECEIVER: answers a comparison from its own view.
pub fn answer(view: &mut dyn TreeView, req: &Compare) -> CompareResponse {
    let mut differing = Vec::new();
    for &(node, theirs) in req.nodes.iter().filter(|(n, _)| well_formed(*n)) {
        if hash(view, node) == theirs {
            continue;
        }
        differing.push(match node {
            TreeNode::Leaf { partition, leaf } => Differing::Keys {
                node,
                keys: view.keys(partition, leaf as usize),
            },
            _ => Differing::Children {
                node,
                children: children(view, node),
            },
        });
    }
    CompareResponse { differing }
}

/// A key whose stored versions differ between the two replicas (`None`: not stored).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyDiff {
    pub key: Vec<u8>,
    pub local: Option<Hash>,
    pub remote: Option<Hash>,
}

/// DRIVER: walks down the differing subtrees, one round trip per level.
#[derive(Debug, Default)]
pub struct Driver {
    diffs: Vec<KeyDiff>,
    rounds: usize,
}

impl Driver {
    /// The first comparison: one hash per group that holds a shared partition.
    pub fn start(view: &mut dyn TreeView) -> (Driver, Compare) {
        let mut groups: Vec<u32> = view.partitions().iter().map(|p| p / GROUP_SIZE).collect();
        groups.dedup();
        let nodes = groups
            .into_iter()
            .map(|g| (TreeNode::Group(g), hash(view, TreeNode::Group(g))))
            .collect();
        (Driver::default(), Compare { nodes })
    }

    /// Takes the receiver's answer; returns the next comparison, or `None` when the
    /// differing keys are all known.
    pub fn step(&mut self, view: &mut dyn TreeView, resp: CompareResponse) -> Option<Compare> {
        self.rounds += 1;
        let mut next = Vec::new();
        for d in resp.differing {
            match d {
                Differing::Children { node, .. } | Differing::Keys { node, .. } if !well_formed(node) => {}
                Differing::Children { node, children: theirs } => {
                    let mut pairs: BTreeMap<TreeNode, (Hash, Hash)> = BTreeMap::new();
                    for (n, h) in children(view, node) {
                        pairs.entry(n).or_insert((EMPTY, EMPTY)).0 = h;
                    }
                    for (n, h) in theirs {
                        if is_child(node, n) {
                            pairs.entry(n).or_insert((EMPTY, EMPTY)).1 = h;
                        }
                    }
                    for (n, (ours, theirs)) in pairs {
                        if ours != theirs {
                            next.push((n, ours));
                        }
                    }
                }
                Differing::Keys { node, keys: theirs } => {
                    let TreeNode::Leaf { partition, leaf } = node else {
                        continue;
                    };
                    let ours = view.keys(partition, leaf as usize);
                    self.diff_keys(ours, theirs);
                }
            }
        }
        if next.is_empty() {
            None
        } else {
            Some(Compare { nodes: next })
        }
    }

    fn diff_keys(&mut self, ours: Vec<KeyDigest>, theirs: Vec<KeyDigest>) {
        let mut all: BTreeMap<Vec<u8>, (Option<Hash>, Option<Hash>)> = BTreeMap::new();
        for k in ours {
            all.entry(k.key).or_default().0 = Some(k.digest);
        }
        for k in theirs {
            all.entry(k.key).or_default().1 = Some(k.digest);
        }
        for (key, (local, remote)) in all {
            if local != remote {
                self.diffs.push(KeyDiff { key, local, remote });
            }
        }
    }

    /// Keys that differ, once `step` has returned `None`.
    pub fn differences(&self) -> &[KeyDiff] {
        &self.diffs
    }

    pub fn into_differences(self) -> Vec<KeyDiff> {
        self.diffs
    }

    /// Round trips taken so far.
    pub fn rounds(&self) -> usize {
        self.rounds
    }
}

/// Guards against a confused (or hostile) peer naming nodes outside the one asked about.
fn is_child(parent: TreeNode, child: TreeNode) -> bool {
    match (parent, child) {
        (TreeNode::Group(g), TreeNode::Partition(p)) => p / GROUP_SIZE == g,
        (TreeNode::Partition(p), TreeNode::Segment { partition, segment }) => {
            p == partition && (segment as usize) < SEGMENTS
        }
        (
            TreeNode::Segment {
                partition: p,
                segment: s,
            },
            TreeNode::Leaf { partition, leaf },
        ) => p == partition && leaf as usize / LEAVES_PER_SEGMENT == s as usize,
        _ => false,
    }
}
