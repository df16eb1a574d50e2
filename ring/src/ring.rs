//! The consistent-hash ring and preference lists.
//!
//! Each member places `tokens` virtual nodes at pseudo-random positions derived from its
//! id ([`token_position`]). The 64-bit key space is also cut into `2^partition_bits`
//! equal *partitions*; every key of a partition has the same replicas: the first N
//! distinct members met walking clockwise from the partition's first position.
//!
//! Why partitions on top of tokens: replicas of a key set are then fixed units, so
//! anti-entropy can keep one Merkle tree per partition and compare it with exactly the
//! co-replicas of that partition, and ownership moves in whole partitions when members
//! join. The tokens still decide who owns what, so adding a member moves only the
//! partitions whose successor walk it enters (about 1/(n+1) of them), and no partition
//! moves between the old members.
//!
//! The ring depends only on the set of `(member, tokens)` pairs, not on the order they
//! were given in, so every node that agrees on membership agrees on placement.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hash::{key_position, token_position};
use crate::node_id::NodeId;

/// Default virtual nodes per member.
pub const DEFAULT_TOKENS: u32 = 128;
/// Default partition count exponent: 1024 partitions.
pub const DEFAULT_PARTITION_BITS: u8 = 10;
/// Bounds on the partition count exponent: at least 2 partitions, at most 65,536.
pub const MAX_PARTITION_BITS: u8 = 16;
/// Bound on virtual nodes per member, to keep ring construction cheap.
pub const MAX_TOKENS: u32 = 4096;

/// Index of a partition, `0..2^partition_bits`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Partition(pub u32);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    #[error("partition bits must be between 1 and {MAX_PARTITION_BITS}, got {0}")]
    PartitionBits(u8),
    #[error("member {id} has {tokens} tokens; must be between 1 and {MAX_TOKENS}")]
    Tokens { id: NodeId, tokens: u32 },
}

/// Placement of keys on members. Cheap to query; rebuilt when membership changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    partition_bits: u8,
    /// Members sorted by id; tokens refer to them by index.
    members: Vec<NodeId>,
    /// `(position, member index)`, sorted. Ties on position (astronomically unlikely)
    /// are broken by member id through the index, so the order is still deterministic.
    tokens: Vec<(u64, u32)>,
}

impl Ring {
    /// Builds the ring of `members`, each with its number of virtual nodes. Duplicate ids
    /// keep the larger token count.
    pub fn new(partition_bits: u8, members: impl IntoIterator<Item = (NodeId, u32)>) -> Result<Ring, RingError> {
        Ring::with_seats(
            partition_bits,
            members.into_iter().map(|(id, tokens)| (id.clone(), id, tokens)),
        )
    }

    /// Builds the ring of `(member, seat, tokens)`: a member's virtual nodes sit where
    /// those of the member named `seat` would. A member normally sits in its own seat; one
    /// that replaced another takes the other's seat, and with it exactly the other's
    /// partitions. Duplicate ids keep the larger token count (and the later seat).
    pub fn with_seats(
        partition_bits: u8,
        members: impl IntoIterator<Item = (NodeId, NodeId, u32)>,
    ) -> Result<Ring, RingError> {
        if partition_bits == 0 || partition_bits > MAX_PARTITION_BITS {
            return Err(RingError::PartitionBits(partition_bits));
        }
        let mut by_id: BTreeMap<NodeId, (NodeId, u32)> = BTreeMap::new();
        for (id, seat, tokens) in members {
            if tokens == 0 || tokens > MAX_TOKENS {
                return Err(RingError::Tokens { id, tokens });
            }
            let t = by_id.entry(id).or_insert((seat.clone(), 0));
            *t = (seat, t.1.max(tokens));
        }
        let mut tokens = Vec::with_capacity(by_id.values().map(|&(_, t)| t as usize).sum());
        for (index, (seat, count)) in by_id.values().enumerate() {
            tokens.extend((0..*count).map(|i| (token_position(seat, i), index as u32)));
        }
        tokens.sort_unstable();
        Ok(Ring {
            partition_bits,
            members: by_id.into_keys().collect(),
            tokens,
        })
    }

    pub fn members(&self) -> &[NodeId] {
        &self.members
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn contains(&self, id: &NodeId) -> bool {
        self.members.binary_search(id).is_ok()
    }

    pub fn partition_bits(&self) -> u8 {
        self.partition_bits
    }

    pub fn partition_count(&self) -> u32 {
        1 << self.partition_bits
    }

    pub fn partitions(&self) -> impl Iterator<Item = Partition> + use<> {
        (0..self.partition_count()).map(Partition)
    }

    pub fn partition_of_position(&self, position: u64) -> Partition {
        Partition((position >> (64 - self.partition_bits)) as u32)
    }

    pub fn partition_of_key(&self, key: &[u8]) -> Partition {
        self.partition_of_position(key_position(key))
    }

    /// First ring position of a partition.
    pub fn partition_start(&self, p: Partition) -> u64 {
        (p.0 as u64) << (64 - self.partition_bits)
    }

    /// Every member once, in ring order starting at the partition: the first N are the
    /// partition's replicas, the rest are fallbacks in the order they should be tried.
    pub fn successors(&self, p: Partition) -> Successors<'_> {
        let start = self.partition_start(p);
        let first = self.tokens.partition_point(|&(pos, _)| pos < start);
        Successors {
            ring: self,
            next: first,
            steps: 0,
            seen: Vec::new(),
        }
    }

    /// The `n` replicas of a partition in preference order (fewer if the ring is smaller).
    pub fn partition_preference(&self, p: Partition, n: usize) -> Vec<&NodeId> {
        self.successors(p).take(n).collect()
    }

    /// The `n` replicas of a key in preference order (fewer if the ring is smaller).
    pub fn preference_list(&self, key: &[u8], n: usize) -> Vec<&NodeId> {
        self.partition_preference(self.partition_of_key(key), n)
    }
}

/// Iterator over distinct members in ring order; see [`Ring::successors`].
pub struct Successors<'a> {
    ring: &'a Ring,
    next: usize,
    steps: usize,
    /// Member indexes already produced. Callers take a handful (N plus fallbacks), so a
    /// linear scan beats a set.
    seen: Vec<u32>,
}

impl<'a> Iterator for Successors<'a> {
    type Item = &'a NodeId;

    fn next(&mut self) -> Option<&'a NodeId> {
        let tokens = &self.ring.tokens;
        while self.steps < tokens.len() && self.seen.len() < self.ring.members.len() {
            let (_, member) = tokens[self.next % tokens.len()];
            self.next += 1;
            self.steps += 1;
            if !self.seen.contains(&member) {
                self.seen.push(member);
                return Some(&self.ring.members[member as usize]);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn ids(n: usize, salt: u32) -> Vec<NodeId> {
        (0..n)
            .map(|i| NodeId::new(format!("node-{salt}-{i}")).unwrap())
            .collect()
    }

    fn ring(members: &[NodeId], tokens: u32) -> Ring {
        Ring::new(DEFAULT_PARTITION_BITS, members.iter().map(|m| (m.clone(), tokens))).unwrap()
    }

    /// Fraction of partitions for which each member is among the first `n` replicas.
    fn shares(r: &Ring, n: usize) -> BTreeMap<NodeId, f64> {
        let mut count: BTreeMap<NodeId, f64> = r.members().iter().map(|m| (m.clone(), 0.0)).collect();
        for p in r.partitions() {
            for m in r.partition_preference(p, n) {
                *count.get_mut(m).unwrap() += 1.0;
            }
        }
        let total = r.partition_count() as f64;
        count.values_mut().for_each(|c| *c /= total);
        count
    }

    #[test]
    fn rejects_bad_parameters() {
        assert_eq!(Ring::new(0, []).unwrap_err(), RingError::PartitionBits(0));
        assert_eq!(Ring::new(17, []).unwrap_err(), RingError::PartitionBits(17));
        let id = NodeId::new("a").unwrap();
        assert!(matches!(Ring::new(8, [(id, 0)]), Err(RingError::Tokens { .. })));
    }

    #[test]
    fn empty_ring_has_no_replicas() {
        let r = Ring::new(4, []).unwrap();
        assert!(r.preference_list(b"k", 3).is_empty());
    }

    #[test]
    fn keys_of_a_partition_share_replicas_and_partitions_cover_the_space() {
        let r = ring(&ids(5, 0), 32);
        assert_eq!(r.partition_of_position(0), Partition(0));
        assert_eq!(r.partition_of_position(u64::MAX), Partition(r.partition_count() - 1));
        let p = r.partition_of_key(b"some key");
        let start = r.partition_start(p);
        assert_eq!(r.partition_of_position(start), p);
        assert_eq!(r.preference_list(b"some key", 3), r.partition_preference(p, 3));
    }

    /// Heavier members get proportionally more partitions.
    #[test]
    fn tokens_weight_ownership() {
        let m = ids(2, 9);
        let r = Ring::new(12, [(m[0].clone(), 64), (m[1].clone(), 192)]).unwrap();
        let s = shares(&r, 1);
        assert!((s[&m[1]] - 0.75).abs() < 0.1, "share {:?}", s);
    }

    /// A member in another's seat gets exactly the partitions the other had.
    #[test]
    fn a_member_in_another_seat_takes_its_partitions() {
        let m = ids(4, 3);
        let before = ring(&m[..3], 32);
        let after = Ring::with_seats(
            DEFAULT_PARTITION_BITS,
            [
                (m[0].clone(), m[0].clone(), 32),
                (m[1].clone(), m[1].clone(), 32),
                (m[3].clone(), m[2].clone(), 32),
            ],
        )
        .unwrap();
        for p in before.partitions() {
            let renamed: Vec<&NodeId> = before
                .partition_preference(p, 3)
                .into_iter()
                .map(|id| if *id == m[2] { &m[3] } else { id })
                .collect();
            assert_eq!(after.partition_preference(p, 3), renamed);
        }
    }

    proptest! {
        #[test]
        fn preference_list_has_n_distinct_members(
            members in 1usize..12, n in 1usize..6, salt in any::<u32>(), key in any::<Vec<u8>>()
        ) {
            let m = ids(members, salt);
            let r = ring(&m, 16);
            let pl = r.preference_list(&key, n);
            prop_assert_eq!(pl.len(), n.min(members));
            let distinct: BTreeSet<_> = pl.iter().collect();
            prop_assert_eq!(distinct.len(), pl.len());
            prop_assert!(pl.iter().all(|id| m.contains(id)));
            // The whole walk visits every member exactly once.
            let walk: Vec<_> = r.successors(r.partition_of_key(&key)).collect();
            prop_assert_eq!(walk.len(), members);
            prop_assert_eq!(&walk[..pl.len()], &pl[..]);
        }

        #[test]
        fn placement_ignores_member_order(members in 1usize..10, salt in any::<u32>(), rot in 0usize..10) {
            let m = ids(members, salt);
            let mut shuffled = m.clone();
            shuffled.rotate_left(rot % members);
            shuffled.reverse();
            prop_assert_eq!(ring(&m, 16), ring(&shuffled, 16));
        }

        /// Minimal movement: when a member joins, each partition's new preference list,
        /// with the newcomer removed, is a prefix of the old one. Nothing moves between
        /// old members; the newcomer takes a place and pushes the last replica out.
        #[test]
        fn join_moves_partitions_only_to_the_newcomer(
            members in 1usize..10, n in 1usize..5, salt in any::<u32>()
        ) {
            let m = ids(members + 1, salt);
            let (old, new) = (ring(&m[..members], 32), ring(&m, 32));
            let newcomer = &m[members];
            for p in old.partitions() {
                let before = old.partition_preference(p, n);
                let after: Vec<_> = new.partition_preference(p, n).into_iter().filter(|id| *id != newcomer).collect();
                prop_assert_eq!(&before[..after.len()], &after[..]);
            }
        }

        /// With 128 tokens a member, the newcomer takes about 1/(n+1) of the partitions as
        /// primary. Bound tested: between 0.5 and 1.6 times 1/(n+1). (`cargo run --release
        /// --example spread -p dynakv-ring` over 2,000 clusters of 3 to 19 members: 0.65..1.36.)
        #[test]
        fn join_moves_about_one_over_n_plus_one(members in 3usize..20, salt in any::<u32>()) {
            let m = ids(members + 1, salt);
            let (old, new) = (ring(&m[..members], DEFAULT_TOKENS), ring(&m, DEFAULT_TOKENS));
            let moved = old.partitions()
                .filter(|&p| old.partition_preference(p, 1) != new.partition_preference(p, 1))
                .count() as f64 / old.partition_count() as f64;
            let fair = 1.0 / (members as f64 + 1.0);
            prop_assert!(moved > 0.5 * fair && moved < 1.6 * fair, "moved {moved:.4}, fair {fair:.4}");
        }

        /// Load spread with 128 tokens a member and 1,024 partitions: every member's share of
        /// N=3 replicas (what it stores and serves) is within ±30% of 3/n, and its share of
        /// primaries within ±60% of 1/n. (The `spread` example over 2,000 clusters of 3 to 19
        /// members: worst ±21% and ±48%. Primaries are noisier: at 19 members each has only
        /// about 54 partitions.)
        #[test]
        /// Each member's share is within six standard deviations of fair. A member's
        /// count of partitions is a sum over its tokens' arcs (exponential lengths) of
        /// the partition starts each holds, a variance about 1.5 times its mean; a fixed
        /// tolerance (60% once) is a few deviations at 19 members, and a proptest run
        /// found a ring past it (19 members, salt 251009648: 87 partitions where 54 are
        /// fair, 3.8 deviations). A hash that placed tokens unevenly would still fail.
        fn load_spreads_evenly(members in 3usize..20, salt in any::<u32>()) {
            let m = ids(members, salt);
            let r = ring(&m, DEFAULT_TOKENS);
            let partitions = r.partition_count() as f64;
            for n in [1, 3] {
                let fair = n as f64 / members as f64;
                let expected = fair * partitions;
                let tolerance = 6.0 * (1.5 * expected).sqrt() / expected;
                for (id, share) in shares(&r, n) {
                    prop_assert!(
                        (share / fair - 1.0).abs() < tolerance,
                        "{id} share of n = {n}: {share:.4} vs {fair:.4} (tolerance {tolerance:.2})"
                    );
                }
            }
        }
    }
}
