//! Multi-value register: keeps every causally concurrent value as a sibling.
//!
//! The state is a set of siblings, each tagged with the [`Dot`] of the write that produced
//! it, plus one [`CausalContext`] for everything the replica has seen (the DVVSet of
//! Almeida et al., as used by Riak 2.0). A write names what the client had read; it removes
//! exactly the siblings that context covers and adds one new sibling, so a client that
//! always writes with the context of its last read never makes more siblings than there
//! are concurrent writers (no "sibling explosion").
//!
//! A delete is a write of no value: it removes the covered siblings and adds none. A
//! register with an empty sibling set and a non-empty context is a tombstone: its context
//! is what keeps older siblings on other replicas from coming back when they merge.
//!
//! Minting a dot needs the actor's previous dots: the writer must be a replica that holds
//! the key's state. The coordinator in the node crate forwards writes to such a replica.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::causal_context::CausalContext;
use crate::version_vector::{Actor, Dot};

/// One concurrent value and the dot of the write that produced it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sibling {
    pub dot: Dot,
    pub value: Bytes,
}

/// Invariant: siblings are sorted by dot, have distinct dots, and every dot is covered by
/// `context`. Equal states therefore have equal representations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MvRegister {
    context: CausalContext,
    siblings: Vec<Sibling>,
}

impl MvRegister {
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything this replica has seen for the key; what a reader sends back to resolve.
    pub fn context(&self) -> &CausalContext {
        &self.context
    }

    pub fn siblings(&self) -> &[Sibling] {
        &self.siblings
    }

    pub fn values(&self) -> impl Iterator<Item = &Bytes> {
        self.siblings.iter().map(|s| &s.value)
    }

    /// No live value, but history (a delete happened).
    pub fn is_tombstone(&self) -> bool {
        self.siblings.is_empty()
    }

    /// Writes `value` (or deletes, with `None`) as `actor`, replacing every sibling that
    /// `read_context` covers. Returns the causal context of the new version alone: what
    /// the client read plus the new dot. Handing that back, rather than the replica's whole
    /// context, keeps a follow-up write from overwriting siblings the client never saw.
    pub fn write(&mut self, actor: Actor, read_context: &CausalContext, value: Option<Bytes>) -> CausalContext {
        self.siblings.retain(|s| !read_context.covers(s.dot));
        self.context.merge(read_context);
        let mut version_context = read_context.clone();
        if let Some(value) = value {
            let dot = Dot::new(actor, self.context.max_counter(actor).saturating_add(1));
            self.context.insert(dot);
            version_context.insert(dot);
            // Fresh dots sort after every earlier dot of the same actor; other actors'
            // dots may sort either side, so insert in order.
            let at = self.siblings.partition_point(|s| s.dot < dot);
            self.siblings.insert(at, Sibling { dot, value });
        }
        version_context
    }

    /// Marks every dot of `actor` up to `counter` as seen, so the next dot `actor` mints
    /// here is past them all. For a register that holds no dot of `actor` (a replica
    /// starting afresh, or a key recreated by others): the key may have had versions by
    /// `actor` that were deleted and whose tombstone was collected here while other
    /// replicas still hold it or clients still hold contexts naming them. Restarting at 1
    /// would mint dots those already cover, and the new write would vanish on merge (the
    /// bug Riak calls kv679). Holding no dot of `actor`, the register has no sibling this
    /// could hide.
    pub fn start_after(&mut self, actor: Actor, counter: u64) {
        if self.context.max_counter(actor) == 0 {
            self.context
                .merge(&CausalContext::from_vv([(actor, counter)].into_iter().collect()));
        }
    }

    /// Join of two replica states: a sibling survives if the other side holds it too or
    /// has never seen its dot. Idempotent, commutative and associative.
    pub fn merge(&mut self, other: &MvRegister) {
        let mut merged = Vec::with_capacity(self.siblings.len().max(other.siblings.len()));
        let (mut i, mut j) = (0, 0);
        let (a, b) = (&self.siblings, &other.siblings);
        while i < a.len() || j < b.len() {
            match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) if x.dot == y.dot => {
                    // Same write on both sides; the value is the same by construction. Pick
                    // deterministically anyway so a corrupted replica cannot break
                    // commutativity.
                    merged.push(if x.value >= y.value { x.clone() } else { y.clone() });
                    i += 1;
                    j += 1;
                }
                (Some(x), y) if y.is_none_or(|y| x.dot < y.dot) => {
                    if !other.context.covers(x.dot) {
                        merged.push(x.clone());
                    }
                    i += 1;
                }
                (_, Some(y)) => {
                    if !self.context.covers(y.dot) {
                        merged.push(y.clone());
                    }
                    j += 1;
                }
                (Some(_), None) | (None, None) => unreachable!("guarded by the loop condition"),
            }
        }
        self.siblings = merged;
        self.context.merge(&other.context);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn vals(r: &MvRegister) -> Vec<&[u8]> {
        let mut v: Vec<&[u8]> = r.values().map(|b| b.as_ref()).collect();
        v.sort();
        v
    }

    const A: Actor = Actor(1);
    const B: Actor = Actor(2);

    #[test]
    fn blind_writes_on_two_replicas_become_siblings() {
        let (mut ra, mut rb) = (MvRegister::new(), MvRegister::new());
        ra.write(A, &CausalContext::new(), b("x"));
        rb.write(B, &CausalContext::new(), b("y"));
        ra.merge(&rb);
        assert_eq!(vals(&ra), vec![b"x".as_ref(), b"y"]);
    }

    #[test]
    fn write_with_read_context_resolves_siblings() {
        let (mut ra, mut rb) = (MvRegister::new(), MvRegister::new());
        ra.write(A, &CausalContext::new(), b("x"));
        rb.write(B, &CausalContext::new(), b("y"));
        ra.merge(&rb);
        let read = ra.context().clone();
        ra.write(A, &read, b("z"));
        assert_eq!(vals(&ra), vec![b"z".as_ref()]);
        // The other replica learns of the resolution by merge.
        rb.merge(&ra);
        assert_eq!(vals(&rb), vec![b"z".as_ref()]);
    }

    #[test]
    fn version_context_does_not_claim_unseen_siblings() {
        // Two blind writes through the same replica: concurrent, both kept.
        let mut r = MvRegister::new();
        let first = r.write(A, &CausalContext::new(), b("one"));
        r.write(A, &CausalContext::new(), b("two"));
        assert_eq!(r.siblings().len(), 2);
        // The client that wrote "one" overwrites it with its own version context; "two",
        // which it never saw, must survive.
        r.write(A, &first, b("three"));
        assert_eq!(vals(&r), vec![b"three".as_ref(), b"two"]);
    }

    #[test]
    fn delete_is_a_tombstone_that_beats_older_replicas() {
        let (mut ra, mut rb) = (MvRegister::new(), MvRegister::new());
        ra.write(A, &CausalContext::new(), b("x"));
        rb.merge(&ra);
        let read = ra.context().clone();
        ra.write(A, &read, None);
        assert!(ra.is_tombstone());
        // The stale replica's value does not come back on merge, in either direction.
        let mut stale = rb.clone();
        stale.merge(&ra);
        assert!(stale.is_tombstone());
        ra.merge(&rb);
        assert!(ra.is_tombstone());
    }

    #[test]
    fn a_write_after_the_tombstone_was_collected_here_is_not_swallowed() {
        // A wrote x (dots A:1..3) and deleted it; B still holds the tombstone, A has
        // collected it and starts from nothing.
        let mut a = MvRegister::new();
        for v in ["x1", "x2", "x3"] {
            let ctx = a.context().clone();
            a.write(A, &ctx, b(v));
        }
        let ctx = a.context().clone();
        a.write(A, &ctx, None);
        let tombstone_at_b = a.clone();
        // Without a floor the fresh write reuses A:1, which B's tombstone covers.
        let mut naive = MvRegister::new();
        naive.write(A, &CausalContext::new(), b("new"));
        let mut merged = tombstone_at_b.clone();
        merged.merge(&naive);
        assert!(merged.is_tombstone(), "the bug: the acknowledged write is lost");
        // With the node's floor (at least every counter it ever minted) it survives.
        let mut fresh = MvRegister::new();
        fresh.start_after(A, 3);
        fresh.write(A, &CausalContext::new(), b("new"));
        let mut merged = tombstone_at_b;
        merged.merge(&fresh);
        assert_eq!(vals(&merged), vec![b"new".as_ref()]);
    }

    #[test]
    fn concurrent_write_survives_delete() {
        let (mut ra, mut rb) = (MvRegister::new(), MvRegister::new());
        ra.write(A, &CausalContext::new(), b("x"));
        rb.merge(&ra);
        let read = ra.context().clone();
        ra.write(A, &read, None);
        rb.write(B, &CausalContext::new(), b("y"));
        ra.merge(&rb);
        assert_eq!(vals(&ra), vec![b"y".as_ref()]);
    }
}
