//! Positions on the ring: 64-bit prefixes of blake3 digests.
//!
//! blake3 is specified and portable, so every node, on every platform and version,
//! computes the same positions, which the ring's agreement depends on.

use crate::node_id::NodeId;

/// Where a key lives on the ring.
pub fn key_position(key: &[u8]) -> u64 {
    prefix(blake3::hash(key).as_bytes())
}

/// Where the `index`-th virtual node of `node` sits. Domain-separated from key positions
/// so no key can be crafted to coincide with a token by construction.
pub fn token_position(node: &NodeId, index: u32) -> u64 {
    let mut h = blake3::Hasher::new_derive_key("dynakv ring token v1");
    h.update(node.as_str().as_bytes());
    h.update(&index.to_be_bytes());
    prefix(h.finalize().as_bytes())
}

fn prefix(digest: &[u8; 32]) -> u64 {
    u64::from_be_bytes(digest[..8].try_into().expect("32-byte digest"))
}
