//! Cluster topology without I/O.
//!
//! Layout:
//! - [`node_id`]: the validated name of a member.
//! - [`hash`]: ring positions of keys and virtual nodes (blake3).
//! - [`item`]: a key with its namespace, as one string, and where it lives.
//! - [`ring`]: virtual-node ring, fixed partitions and preference lists.
//! - [`layout`]: which members own partitions, at which version; staged changes and
//!   what they would move.
//! - [`history`]: the layouts still in use while partitions move, per-member progress
//!   trackers, and which replicas reads and writes use meanwhile.
//! - [`membership`]: gossip membership table and failure detector, a state machine driven
//!   by ticks and merged tables.
//! - [`namespace`]: namespace definitions as cluster metadata, merged as a semilattice,
//!   and when a namespace is active.
//!
//! The node crate drives [`membership::Membership`] from a timer and sockets and rebuilds
//! the [`ring::Ring`] whenever the member set changes.

pub mod hash;
pub mod history;
pub mod item;
pub mod layout;
pub mod membership;
pub mod namespace;
pub mod node_id;
pub mod ring;

pub use membership::{DetectorConfig, Event, GossipEntry, MemberInfo, MemberView, Membership, Status, Tick};
pub use node_id::{InvalidNodeId, NodeId};
pub use ring::{Partition, Ring, RingError};

/// The laws a gossiped state's merge must obey, checked by property tests.
#[cfg(test)]
pub(crate) mod laws {
    use proptest::prelude::*;
    use std::fmt::Debug;

    /// `a` merged with `b`, as a new value.
    pub fn join<T: Clone>(a: &T, b: &T, merge: impl Fn(&mut T, &T)) -> T {
        let mut m = a.clone();
        merge(&mut m, b);
        m
    }

    /// Idempotent, commutative, associative.
    pub fn semilattice<T: Clone + PartialEq + Debug>(
        a: &T,
        b: &T,
        c: &T,
        merge: impl Fn(&mut T, &T) + Copy,
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(&join(a, a, merge), a);
        prop_assert_eq!(join(a, b, merge), join(b, a, merge));
        prop_assert_eq!(join(&join(a, b, merge), c, merge), join(a, &join(b, c, merge), merge));
        Ok(())
    }
}
