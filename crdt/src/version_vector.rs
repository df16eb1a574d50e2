//! Actors, dots and version vectors: the vocabulary of causality.
//!
//! An [`Actor`] is whoever mints new versions of a key. In dynakv that is one node *data
//! directory*: the id is drawn at random when the directory is created, so a node whose
//! disk was wiped can never reuse a dot it minted before the wipe.
//!
//! A [`Dot`] names one version: the `counter`-th event of `actor`. A [`VersionVector`]
//! maps each actor to the highest counter seen, standing for *every* dot of that actor up
//! to it (a downward-closed set).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One minting replica incarnation (a node's data directory).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Actor(pub u64);

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A single event: the `counter`-th version minted by `actor`. Counters start at 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    pub actor: Actor,
    pub counter: u64,
}

impl Dot {
    pub fn new(actor: Actor, counter: u64) -> Self {
        Dot { actor, counter }
    }
}

/// Highest counter seen per actor; entry `a -> k` stands for the dots `(a, 1..=k)`.
///
/// Ordered by set inclusion of the dots it stands for (`PartialOrd`): `a < b` when `b` has
/// seen everything `a` has and more; `None` when each has seen something the other has not.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VersionVector(BTreeMap<Actor, u64>);

impl VersionVector {
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest counter seen from `actor` (0 when none).
    pub fn get(&self, actor: Actor) -> u64 {
        self.0.get(&actor).copied().unwrap_or(0)
    }

    pub fn covers(&self, dot: Dot) -> bool {
        dot.counter <= self.get(dot.actor)
    }

    /// Raises `actor`'s entry to at least `counter`.
    pub fn raise(&mut self, actor: Actor, counter: u64) {
        if counter == 0 {
            return;
        }
        let entry = self.0.entry(actor).or_insert(0);
        *entry = (*entry).max(counter);
    }

    /// Mints the next dot of `actor` and records it.
    pub fn increment(&mut self, actor: Actor) -> Dot {
        let counter = self.get(actor) + 1;
        self.0.insert(actor, counter);
        Dot::new(actor, counter)
    }

    /// Pointwise maximum: the union of the two dot sets.
    pub fn merge(&mut self, other: &VersionVector) {
        for (&actor, &counter) in &other.0 {
            self.raise(actor, counter);
        }
    }

    /// `true` when `self` has seen every dot `other` has.
    pub fn descends(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(&a, &c)| self.get(a) >= c)
    }

    pub fn iter(&self) -> impl Iterator<Item = (Actor, u64)> + '_ {
        self.0.iter().map(|(&a, &c)| (a, c))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl PartialOrd for VersionVector {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match (self.descends(other), other.descends(self)) {
            (true, true) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Greater),
            (false, true) => Some(Ordering::Less),
            (false, false) => None,
        }
    }
}

impl FromIterator<(Actor, u64)> for VersionVector {
    fn from_iter<T: IntoIterator<Item = (Actor, u64)>>(iter: T) -> Self {
        let mut vv = VersionVector::new();
        for (a, c) in iter {
            vv.raise(a, c);
        }
        vv
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vv() -> impl Strategy<Value = VersionVector> {
        prop::collection::btree_map(0u64..4, 0u64..5, 0..4)
            .prop_map(|m| m.into_iter().map(|(a, c)| (Actor(a), c)).collect())
    }

    #[test]
    fn increment_mints_consecutive_dots() {
        let mut v = VersionVector::new();
        let a = Actor(7);
        assert_eq!(v.increment(a), Dot::new(a, 1));
        assert_eq!(v.increment(a), Dot::new(a, 2));
        assert!(v.covers(Dot::new(a, 2)));
        assert!(!v.covers(Dot::new(a, 3)));
        assert!(!v.covers(Dot::new(Actor(8), 1)));
    }

    #[test]
    fn concurrent_vectors_are_unordered() {
        let a: VersionVector = [(Actor(1), 2)].into_iter().collect();
        let b: VersionVector = [(Actor(2), 1)].into_iter().collect();
        assert_eq!(a.partial_cmp(&b), None);
        let mut c = a.clone();
        c.merge(&b);
        assert!(c > a && c > b);
    }

    proptest! {
        #[test]
        fn order_is_reflexive(a in vv()) {
            prop_assert_eq!(a.partial_cmp(&a), Some(Ordering::Equal));
        }

        #[test]
        fn order_is_antisymmetric(a in vv(), b in vv()) {
            if a <= b && b <= a {
                prop_assert_eq!(a, b);
            }
        }

        #[test]
        fn order_is_transitive(a in vv(), b in vv(), c in vv()) {
            if a <= b && b <= c {
                prop_assert!(a <= c);
            }
        }

        #[test]
        fn order_agrees_with_dot_inclusion(a in vv(), b in vv()) {
            // a <= b exactly when every dot a stands for is covered by b.
            let dots_included = a.iter().all(|(actor, c)| (1..=c).all(|k| b.covers(Dot::new(actor, k))));
            prop_assert_eq!(a <= b, dots_included);
        }

        #[test]
        fn merge_is_least_upper_bound(a in vv(), b in vv(), c in vv()) {
            let mut m = a.clone();
            m.merge(&b);
            prop_assert!(m >= a && m >= b);
            if c >= a && c >= b {
                prop_assert!(c >= m);
            }
        }
    }
}
