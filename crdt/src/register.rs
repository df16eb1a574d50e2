//! The value stored for a key on each replica, whatever the conflict mode.
//!
//! # Merge laws
//! [`Register::merge`] is the join of a semilattice. For all states `a`, `b`, `c`:
//! - idempotent: `a ⊔ a = a`
//! - commutative: `a ⊔ b = b ⊔ a`
//! - associative: `(a ⊔ b) ⊔ c = a ⊔ (b ⊔ c)`
//!
//! so replicas that have received the same set of updates hold equal states, whatever
//! the order, duplication or grouping in which the updates (or whole states) reached
//! them. Read repair, hinted handoff and anti-entropy all rely on this: each of them just
//! merges, and doing so twice or crosswise is harmless. The property tests below check
//! the laws on generated histories.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::causal_context::CausalContext;
use crate::hlc::Timestamp;
use crate::lww::LwwRegister;
use crate::mv::MvRegister;

/// How concurrent writes to one key are reconciled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConflictMode {
    /// Keep concurrent writes as siblings for the client to resolve.
    Mv,
    /// Keep the write with the greatest hybrid-logical-clock timestamp.
    Lww,
}

impl std::str::FromStr for ConflictMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mv" => Ok(ConflictMode::Mv),
            "lww" => Ok(ConflictMode::Lww),
            other => Err(format!("unknown conflict mode {other:?} (expected mv or lww)")),
        }
    }
}

impl std::fmt::Display for ConflictMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConflictMode::Mv => "mv",
            ConflictMode::Lww => "lww",
        })
    }
}

/// A key's replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Register {
    Mv(MvRegister),
    Lww(LwwRegister),
}

/// What a client gets back: the live values and the context to send with its next write.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Context {
    /// Everything the read saw, as a set of dots.
    Mv(CausalContext),
    /// The timestamp of the version read; a write carrying it is ordered after it even
    /// if the writer's clock is behind.
    Lww(Timestamp),
}

impl Register {
    pub fn mode(&self) -> ConflictMode {
        match self {
            Register::Mv(_) => ConflictMode::Mv,
            Register::Lww(_) => ConflictMode::Lww,
        }
    }

    /// Join of two states. Both sides are normally of the same mode; if the cluster's mode
    /// was changed while data existed, an LWW state wins over an MV one so replicas still
    /// converge (changing the mode of live data is otherwise not supported).
    pub fn merge(&mut self, other: &Register) {
        match (&mut *self, other) {
            (Register::Mv(a), Register::Mv(b)) => a.merge(b),
            (Register::Lww(a), Register::Lww(b)) => a.merge(b),
            (Register::Mv(_), Register::Lww(_)) => *self = other.clone(),
            (Register::Lww(_), Register::Mv(_)) => {}
        }
    }

    /// The live values: none for a tombstone, one normally, several for MV siblings.
    pub fn values(&self) -> Vec<Bytes> {
        match self {
            Register::Mv(r) => r.values().cloned().collect(),
            Register::Lww(r) => r.value.iter().cloned().collect(),
        }
    }

    pub fn is_tombstone(&self) -> bool {
        match self {
            Register::Mv(r) => r.is_tombstone(),
            Register::Lww(r) => r.is_tombstone(),
        }
    }

    pub fn context(&self) -> Context {
        match self {
            Register::Mv(r) => Context::Mv(r.context().clone()),
            Register::Lww(r) => Context::Lww(r.timestamp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version_vector::Actor;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// One client operation against one of three replicas.
    #[derive(Clone, Debug)]
    enum Op {
        /// Replica `at` writes `value` (or deletes) with the context of a read of replica
        /// `read_from` (or with no context).
        Write {
            at: usize,
            read_from: Option<usize>,
            value: Option<u8>,
        },
        /// Replica `to` merges the state of replica `from`.
        Sync { from: usize, to: usize },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (
                0..3usize,
                prop::option::of(0..3usize),
                prop::option::weighted(0.8, any::<u8>())
            )
                .prop_map(|(at, read_from, value)| Op::Write { at, read_from, value }),
            (0..3usize, 0..3usize).prop_map(|(from, to)| Op::Sync { from, to }),
        ]
    }

    /// Runs a history on three MV replicas (actors 0, 1, 2) and returns their states.
    fn run_mv(ops: &[Op]) -> Vec<MvRegister> {
        let mut replicas = vec![MvRegister::new(); 3];
        for op in ops {
            match *op {
                Op::Write { at, read_from, value } => {
                    let ctx = read_from.map(|r| replicas[r].context().clone()).unwrap_or_default();
                    // The client read from one replica and writes through another,
                    // which may not have seen what the context names.
                    replicas[at].write(Actor(at as u64), &ctx, value.map(|v| Bytes::from(vec![v])));
                }
                Op::Sync { from, to } => {
                    let s = replicas[from].clone();
                    replicas[to].merge(&s);
                }
            }
        }
        replicas
    }

    fn mv_state() -> impl Strategy<Value = Register> {
        (prop::collection::vec(op(), 0..12), 0..3usize).prop_map(|(ops, pick)| Register::Mv(run_mv(&ops)[pick].clone()))
    }

    fn lww_state() -> impl Strategy<Value = Register> {
        (0u64..5, 0u64..3, prop::option::of(any::<u8>())).prop_map(|(t, a, v)| {
            Register::Lww(LwwRegister::new(
                Timestamp::new(t, 0),
                Actor(a),
                v.map(|v| Bytes::from(vec![v])),
            ))
        })
    }

    fn state() -> impl Strategy<Value = Register> {
        prop_oneof![4 => mv_state(), 1 => lww_state()]
    }

    fn join(a: &Register, b: &Register) -> Register {
        let mut m = a.clone();
        m.merge(b);
        m
    }

    /// Runs the same ops starting from a shared history and returns replica states, used
    /// to build states that are related (share dots) rather than independent.
    fn related_states() -> impl Strategy<Value = (Register, Register, Register)> {
        prop::collection::vec(op(), 0..20).prop_map(|ops| {
            let r = run_mv(&ops);
            (
                Register::Mv(r[0].clone()),
                Register::Mv(r[1].clone()),
                Register::Mv(r[2].clone()),
            )
        })
    }

    proptest! {
        #[test]
        fn merge_is_idempotent(a in state()) {
            prop_assert_eq!(join(&a, &a), a);
        }

        #[test]
        fn merge_is_commutative(a in state(), b in state()) {
            prop_assert_eq!(join(&a, &b), join(&b, &a));
        }

        #[test]
        fn merge_is_associative(a in state(), b in state(), c in state()) {
            prop_assert_eq!(join(&join(&a, &b), &c), join(&a, &join(&b, &c)));
        }

        #[test]
        fn laws_hold_on_related_replicas((a, b, c) in related_states()) {
            prop_assert_eq!(join(&a, &a), a.clone());
            prop_assert_eq!(join(&a, &b), join(&b, &a));
            prop_assert_eq!(join(&join(&a, &b), &c), join(&a, &join(&b, &c)));
        }

        /// Replicas that end up with the same updates read the same, whatever order the
        /// updates or states reached them in.
        #[test]
        fn read_after_merge_is_independent_of_delivery_order(
            ops in prop::collection::vec(op(), 0..20),
            order in prop::collection::vec(0..3usize, 3),
        ) {
            let replicas = run_mv(&ops);
            let reference = {
                let mut m = replicas[0].clone();
                m.merge(&replicas[1]);
                m.merge(&replicas[2]);
                m
            };
            let mut other = replicas[order[0]].clone();
            other.merge(&replicas[order[1]]);
            other.merge(&replicas[order[2]]);
            // Whatever the delivery order, the merged state includes every replica's.
            for r in &replicas { other.merge(r); }
            let values = |r: &MvRegister| r.values().cloned().collect::<BTreeSet<_>>();
            prop_assert_eq!(values(&other), values(&reference));
            prop_assert_eq!(other, reference);
        }

        /// Every sibling is a write that no later write overwrote knowingly: the merged
        /// siblings are exactly the writes whose dot is not covered by the context of any
        /// write that saw it.
        #[test]
        fn siblings_are_exactly_the_unsuperseded_writes(ops in prop::collection::vec(op(), 0..20)) {
            let mut replicas = vec![MvRegister::new(); 3];
            let mut writes = Vec::new(); // (dot, read context)
            for op in &ops {
                match *op {
                    Op::Write { at, read_from, value } => {
                        let ctx = read_from.map(|r| replicas[r].context().clone()).unwrap_or_default();
                        let before: BTreeSet<_> = replicas[at].siblings().iter().map(|s| s.dot).collect();
                        replicas[at].write(Actor(at as u64), &ctx, value.map(|v| Bytes::from(vec![v])));
                        let new_dot = replicas[at].siblings().iter().map(|s| s.dot).find(|d| !before.contains(d));
                        writes.push((new_dot, ctx));
                    }
                    Op::Sync { from, to } => {
                        let s = replicas[from].clone();
                        replicas[to].merge(&s);
                    }
                }
            }
            let mut all = MvRegister::new();
            for r in &replicas { all.merge(r); }
            let expected: BTreeSet<_> = writes.iter()
                .filter_map(|(dot, _)| *dot)
                .filter(|d| !writes.iter().any(|(_, ctx)| ctx.covers(*d)))
                .collect();
            let got: BTreeSet<_> = all.siblings().iter().map(|s| s.dot).collect();
            prop_assert_eq!(got, expected);
        }

        /// Riak's DVV lesson: k clients that each write with the context of their last
        /// response (a read, or the context a write returns), through any replicas in any
        /// interleaving, never leave more than k siblings. Reads and writes use intersecting
        /// quorums of two out of three replicas, as R = W = 2, N = 3 does.
        #[test]
        fn no_sibling_explosion(
            steps in prop::collection::vec((0..4usize, 0..3usize, any::<bool>()), 1..60)
        ) {
            const CLIENTS: usize = 4;
            const QUORUMS: [(usize, usize); 3] = [(0, 1), (1, 2), (0, 2)];
            let mut replicas = vec![MvRegister::new(); 3];
            let mut last: Vec<CausalContext> = vec![CausalContext::new(); CLIENTS];
            for (client, quorum, is_read) in steps {
                let (x, y) = QUORUMS[quorum];
                if is_read {
                    let mut seen = replicas[x].clone();
                    seen.merge(&replicas[y]);
                    last[client] = seen.context().clone();
                } else {
                    let ctx = last[client].clone();
                    last[client] = replicas[x].write(Actor(x as u64), &ctx, Some(Bytes::from(vec![client as u8])));
                    let s = replicas[x].clone();
                    replicas[y].merge(&s);
                }
                for r in &replicas {
                    prop_assert!(r.siblings().len() <= CLIENTS,
                        "{} siblings with {} clients", r.siblings().len(), CLIENTS);
                }
            }
            let mut all = MvRegister::new();
            for r in &replicas { all.merge(r); }
            prop_assert!(all.siblings().len() <= CLIENTS);
        }
    }
}
