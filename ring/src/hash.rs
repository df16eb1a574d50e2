//! Positions on the ring: 64-bit prefixes of blake3 digests.
//!
//! blake3 is specified and portable, so every node, on every platform and version,
//! computes the same positions, which the ring's agreement depends on.

use crate::node_id::NodeId;

/// Where a key lives on the ring.
pub fn key_position(key: &[u8]) -> u64 {
    prefix(blake3::hash(key).as_bytes())
}

/// Where `key` of namespace `namespace` lives on the ring. The namespace is hashed with
/// the key, so one namespace's keys spread over the whole ring and the same key in two
/// namespaces lands in unrelated places; the `default` namespace keeps [`key_position`],
/// so the data of a cluster from before namespaces stays where it is. Domain-separated
/// from key and token positions, and the namespace's length goes first, so two different
/// (namespace, key) pairs never hash the same bytes.
pub fn namespaced_position(namespace: &str, key: &[u8]) -> u64 {
    if namespace == crate::namespace::DEFAULT {
        return key_position(key);
    }
    let mut h = blake3::Hasher::new_derive_key("dynakv ring namespaced key v1");
    h.update(&(namespace.len() as u64).to_be_bytes());
    h.update(namespace.as_bytes());
    h.update(key);
    prefix(h.finalize().as_bytes())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_namespace_keeps_todays_positions() {
        for key in [&b""[..], b"a", b"carts/42", &[0xff; 300]] {
            assert_eq!(namespaced_position("default", key), key_position(key));
        }
    }

    /// Other namespaces place the same key elsewhere, and the boundary between the
    /// namespace and the key cannot be shifted to make two pairs collide.
    #[test]
    fn namespaces_place_keys_independently() {
        assert_ne!(namespaced_position("carts", b"k"), key_position(b"k"));
        assert_ne!(namespaced_position("carts", b"k"), namespaced_position("cache", b"k"));
        assert_ne!(namespaced_position("ab", b"c"), namespaced_position("a", b"bc"));
        // One namespace's keys spread over the ring: 4,000 keys over 16 equal arcs, each
        // within a third of its fair share of 250 (about 5 standard deviations; the keys
        // and the hash are fixed, so the outcome is the same on every run).
        let mut arcs = [0u32; 16];
        for i in 0..4_000 {
            arcs[(namespaced_position("carts", format!("key-{i}").as_bytes()) >> 60) as usize] += 1;
        }
        for (arc, count) in arcs.iter().enumerate() {
            assert!((167..=333).contains(count), "arc {arc}: {count} of 4000 keys: {arcs:?}");
        }
    }
}
