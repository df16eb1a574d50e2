//! The causal context of a multi-value register: a version vector plus a *dot cloud*.
//!
//! A plain version vector can only stand for downward-closed sets of dots. The causal
//! past of a single write is not one: it is "what the client had read" plus the one new
//! dot, and the dots of the same actor in between may belong to concurrent siblings that
//! the client never saw. Folding the new dot into a vector would claim those siblings as
//! seen and a later merge would silently drop them. The dot cloud keeps such dots exact
//! (Almeida et al., "Delta state replicated data types"), and [`CausalContext::compact`]
//! folds them into the vector as soon as the gap closes, so in the common case the cloud
//! is empty and the context is an ordinary version vector.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::version_vector::{Actor, Dot, VersionVector};

/// A set of dots: a version vector for the contiguous prefixes plus the dots beyond them.
///
/// Invariant (kept by every method): every dot in `cloud` is at least two past its
/// actor's vector entry, i.e. not covered and not next in line. Two equal sets therefore
/// have equal representations, and `PartialOrd` is set inclusion.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CausalContext {
    vv: VersionVector,
    cloud: BTreeSet<Dot>,
}

impl CausalContext {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_vv(vv: VersionVector) -> Self {
        CausalContext {
            vv,
            cloud: BTreeSet::new(),
        }
    }

    /// Rebuilds a context from its parts (for example after decoding), restoring the
    /// invariant whatever the input.
    pub fn from_parts(vv: VersionVector, cloud: impl IntoIterator<Item = Dot>) -> Self {
        let mut cc = CausalContext {
            vv,
            cloud: cloud.into_iter().filter(|d| d.counter > 0).collect(),
        };
        cc.compact();
        cc
    }

    pub fn vv(&self) -> &VersionVector {
        &self.vv
    }

    pub fn cloud(&self) -> impl Iterator<Item = Dot> + '_ {
        self.cloud.iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.vv.is_empty() && self.cloud.is_empty()
    }

    pub fn covers(&self, dot: Dot) -> bool {
        self.vv.covers(dot) || self.cloud.contains(&dot)
    }

    /// Highest counter of `actor` in the set (0 when none).
    pub fn max_counter(&self, actor: Actor) -> u64 {
        let in_cloud = self
            .cloud
            .range(Dot::new(actor, 0)..=Dot::new(actor, u64::MAX))
            .next_back()
            .map(|d| d.counter)
            .unwrap_or(0);
        self.vv.get(actor).max(in_cloud)
    }

    pub fn insert(&mut self, dot: Dot) {
        if dot.counter == 0 || self.covers(dot) {
            return;
        }
        self.cloud.insert(dot);
        self.compact();
    }

    /// Set union.
    pub fn merge(&mut self, other: &CausalContext) {
        self.vv.merge(&other.vv);
        self.cloud.extend(other.cloud.iter().copied());
        self.compact();
    }

    /// Folds cloud dots that extend an actor's contiguous prefix into the vector and drops
    /// cloud dots the vector already covers.
    fn compact(&mut self) {
        if self.cloud.is_empty() {
            return;
        }
        let mut keep = BTreeSet::new();
        // BTreeSet iterates by (actor, counter): each actor's dots in increasing order, so
        // one pass extends the prefix as far as it goes.
        for dot in std::mem::take(&mut self.cloud) {
            let have = self.vv.get(dot.actor);
            if dot.counter <= have {
                continue;
            }
            if dot.counter == have + 1 {
                self.vv.raise(dot.actor, dot.counter);
            } else {
                keep.insert(dot);
            }
        }
        // Once a dot is kept, its actor's entry stops moving: every later dot of that actor
        // is larger still and cannot fill the gap below the kept one.
        self.cloud = keep;
    }

    /// `true` when every dot of `other` is in `self`.
    pub fn includes(&self, other: &CausalContext) -> bool {
        // Thanks to the invariant, `self` covers `other`'s prefix `(a, 1..=k)` only if its
        // own vector reaches k: the dot right after its vector entry is never in its cloud.
        other.vv.iter().all(|(a, k)| self.vv.get(a) >= k) && other.cloud.iter().all(|&d| self.covers(d))
    }
}

impl PartialOrd for CausalContext {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match (self.includes(other), other.includes(self)) {
            (true, true) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Greater),
            (false, true) => Some(Ordering::Less),
            (false, false) => None,
        }
    }
}

impl From<VersionVector> for CausalContext {
    fn from(vv: VersionVector) -> Self {
        CausalContext::from_vv(vv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dots() -> impl Strategy<Value = Vec<Dot>> {
        prop::collection::vec((0u64..3, 1u64..7), 0..10)
            .prop_map(|v| v.into_iter().map(|(a, c)| Dot::new(Actor(a), c)).collect())
    }

    fn from_dots(ds: &[Dot]) -> CausalContext {
        let mut cc = CausalContext::new();
        for &d in ds {
            cc.insert(d);
        }
        cc
    }

    fn as_set(cc: &CausalContext) -> BTreeSet<Dot> {
        let mut s: BTreeSet<Dot> = cc.cloud().collect();
        for (a, k) in cc.vv().iter() {
            s.extend((1..=k).map(|c| Dot::new(a, c)));
        }
        s
    }

    #[test]
    fn gap_keeps_dot_in_cloud_until_filled() {
        let a = Actor(1);
        let mut cc = CausalContext::from_vv([(a, 1)].into_iter().collect());
        cc.insert(Dot::new(a, 3));
        assert!(cc.covers(Dot::new(a, 3)));
        assert!(!cc.covers(Dot::new(a, 2)), "the gap must not be claimed as seen");
        assert_eq!(cc.max_counter(a), 3);
        cc.insert(Dot::new(a, 2));
        assert_eq!(cc.vv().get(a), 3);
        assert_eq!(cc.cloud().count(), 0);
    }

    proptest! {
        #[test]
        fn represents_exactly_the_inserted_dots(ds in dots()) {
            let cc = from_dots(&ds);
            let expected: BTreeSet<Dot> = ds.iter().copied().collect();
            prop_assert_eq!(as_set(&cc), expected);
        }

        #[test]
        fn equal_sets_have_equal_representations(ds in dots(), seed in any::<u64>()) {
            let mut shuffled = ds.clone();
            // Deterministic shuffle from the seed.
            let n = shuffled.len();
            for i in 0..n {
                let j = (seed.wrapping_mul(i as u64 + 1) % (n as u64)) as usize;
                shuffled.swap(i, j);
            }
            prop_assert_eq!(from_dots(&ds), from_dots(&shuffled));
        }

        #[test]
        fn merge_is_union(a in dots(), b in dots()) {
            let mut m = from_dots(&a);
            m.merge(&from_dots(&b));
            let expected: BTreeSet<Dot> = a.iter().chain(b.iter()).copied().collect();
            prop_assert_eq!(as_set(&m), expected);
        }

        #[test]
        fn order_is_set_inclusion(a in dots(), b in dots()) {
            let (ca, cb) = (from_dots(&a), from_dots(&b));
            let (sa, sb) = (as_set(&ca), as_set(&cb));
            prop_assert_eq!(ca <= cb, sa.is_subset(&sb));
            prop_assert_eq!(ca == cb, sa == sb);
        }

        #[test]
        fn max_counter_is_highest_dot(ds in dots(), actor in 0u64..3) {
            let cc = from_dots(&ds);
            let expected = ds.iter().filter(|d| d.actor == Actor(actor)).map(|d| d.counter).max().unwrap_or(0);
            prop_assert_eq!(cc.max_counter(Actor(actor)), expected);
        }
    }
}
