//! Merkle-tree anti-entropy, without I/O.
//!
//! Layout:
//! - [`merkle`]: the per-partition tree, updated in O(1) per write.
//! - [`exchange`]: the comparison protocol between two replicas, as a DRIVER state machine
//!   and a RECEIVER answer function over a [`exchange::TreeView`].
//! - [`rate`]: a token bucket, so repairs after a long outage are paced.
//! - [`memory`]: an in-memory replica view for tests and benchmarks.
//!
//! The node keeps the trees next to its storage, updates them as versions are stored,
//! runs exchanges with each co-replica on a timer and transfers the differing keys,
//! merging both ways with the register merge (so repeated or crossed exchanges are
//! harmless).

pub mod exchange;
pub mod memory;
pub mod merkle;
pub mod rate;

#[cfg(test)]
mod tests;

pub use exchange::{Compare, CompareResponse, Differing, Driver, KeyDiff, KeyDigest, TreeNode, TreeView, answer};
pub use merkle::{EMPTY, Hash, PartitionTree};
