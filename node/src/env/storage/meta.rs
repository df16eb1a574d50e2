//! Every key this node keeps in [`Space::Meta`](super::Space::Meta), in one place: what
//! a node records about itself and the cluster beside the data. A new record gets its
//! key here, so two modules cannot pick the same one.

/// The node's id (`identity`): a data directory belongs to one node.
pub const NODE_ID: &[u8] = b"node_id";
/// The actor id that mints this node's dots and breaks timestamp ties (`identity`).
pub const ACTOR: &[u8] = b"actor";
/// How many times the node has started (`identity`).
pub const GENERATION: &[u8] = b"generation";
/// Written at a clean stop (the generation that stopped), deleted at start (`identity`).
pub const CLEAN_STOP: &[u8] = b"clean_stop";
/// The highest dot counter the actor may have minted (`identity`).
pub const MINT_CEILING: &[u8] = b"mint_ceiling";
/// A bound on the timestamps this node has issued or observed (`identity`).
pub const CLOCK_CEILING: &[u8] = b"clock_ceiling";
/// The cluster's layout history as this node last knew it (`cluster`).
pub const LAYOUT: &[u8] = b"layout";
/// The newest layout version a write this node received named (`cluster`).
pub const LAYOUT_SEEN: &[u8] = b"layout_seen";
/// Set once this node has owned partitions: it never auto-joins again
/// (`services::layout`).
pub const LAYOUT_JOINED: &[u8] = b"layout-joined";
/// The namespace table as this node last knew it (`catalog`).
pub const NAMESPACES: &[u8] = b"namespaces";
/// The prefix of transfer progress records, one per (layout version, partition, source),
/// so a transfer resumes after a restart (`services::layout`).
pub const TRANSFER_PROGRESS_PREFIX: &[u8] = b"transfer/";

/// The fixed keys (the prefix is checked apart).
pub const FIXED: [&[u8]; 10] = [
    NODE_ID,
    ACTOR,
    GENERATION,
    CLEAN_STOP,
    MINT_CEILING,
    CLOCK_CEILING,
    LAYOUT,
    LAYOUT_SEEN,
    LAYOUT_JOINED,
    NAMESPACES,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_and_none_falls_under_the_progress_prefix() {
        let distinct: std::collections::BTreeSet<&[u8]> = FIXED.iter().copied().collect();
        assert_eq!(distinct.len(), FIXED.len(), "two records share a key");
        for k in FIXED {
            assert!(
                !k.starts_with(TRANSFER_PROGRESS_PREFIX),
                "{} would be scanned and deleted as transfer progress",
                String::from_utf8_lossy(k)
            );
        }
    }
}
