//! A quorum write as a pure state machine: which node takes each replica's copy, and
//! when `w` acknowledgements are in or out of reach.
//!
//! Every replica but the coordinator itself is a *slot*. A live replica is sent the
//! write directly. When it is dead, or its send fails, and sloppy quorum is on, the slot
//! passes to the next unused live fallback along the ring, which keeps the write as a
//! hint for that replica and counts in its place; fallbacks are handed out in the order
//! slots need them. The coordinator's own copy, already stored, counts if it is one of
//! the replicas.

use std::collections::VecDeque;

use super::fanout::Round;
use super::quorum::{Quorum, Verdict};
use crate::cluster::{Plan, Replica};

/// Where one slot's copy goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// To the replica itself.
    Replica { slot: usize, to: Replica },
    /// To a fallback, as a hint for `owner`.
    Hint { slot: usize, to: Replica, owner: Replica },
}

/// One quorum write.
#[derive(Clone, Debug)]
pub struct WriteRound {
    quorum: Quorum,
    fallbacks: VecDeque<Replica>,
    sloppy: bool,
    /// The replica of each slot.
    owners: Vec<Replica>,
}

impl WriteRound {
    /// A write needing `w` acknowledgements over `plan`; returns it and its first sends.
    pub fn new(plan: Plan, w: usize, sloppy: bool) -> (WriteRound, Vec<Delivery>) {
        let local_ack = plan.includes_self();
        let owners: Vec<Replica> = plan.primaries.into_iter().filter(|r| !r.is_self).collect();
        let mut round = WriteRound {
            quorum: Quorum::new(w, owners.len() + usize::from(local_ack)),
            fallbacks: plan.fallbacks.into(),
            sloppy,
            owners,
        };
        if local_ack {
            round.quorum.record(true);
        }
        let mut sends = Vec::new();
        for slot in 0..round.owners.len() {
            let owner = round.owners[slot].clone();
            if owner.is_dead() {
                sends.extend(round.next_fallback(slot));
            } else {
                sends.push(Delivery::Replica { slot, to: owner });
            }
        }
        (round, sends)
    }

    /// The slot's next fallback, or the slot's failure when there is none.
    fn next_fallback(&mut self, slot: usize) -> Option<Delivery> {
        let next = if self.sloppy { self.fallbacks.pop_front() } else { None };
        match next {
            Some(to) => Some(Delivery::Hint {
                slot,
                to,
                owner: self.owners[slot].clone(),
            }),
            None => {
                self.quorum.record(false);
                None
            }
        }
    }

    pub fn required(&self) -> usize {
        self.quorum.required()
    }

    pub fn succeeded(&self) -> usize {
        self.quorum.succeeded()
    }
}

impl Round for WriteRound {
    type Send = Delivery;
    /// Whether the node acknowledged the write.
    type Answer = bool;

    fn absorb(&mut self, send: &Delivery, acked: bool) -> Vec<Delivery> {
        if acked {
            self.quorum.record(true);
            return Vec::new();
        }
        let slot = match send {
            Delivery::Replica { slot, .. } | Delivery::Hint { slot, .. } => *slot,
        };
        self.next_fallback(slot).into_iter().collect()
    }

    fn verdict(&self) -> Verdict {
        self.quorum.verdict()
    }
}

#[cfg(test)]
mod tests {
    use dynakv_ring::Status;

    use super::*;
    use crate::testing::replica;

    fn plan(primaries: &[&str], dead: &[&str], fallbacks: &[&str]) -> Plan {
        Plan {
            primaries: primaries
                .iter()
                .map(|id| replica(id, if dead.contains(id) { Status::Dead } else { Status::Alive }))
                .collect(),
            fallbacks: fallbacks.iter().map(|id| replica(id, Status::Alive)).collect(),
        }
    }

    /// A delivery as (slot, node, owner if a hint).
    fn short(d: &Delivery) -> (usize, String, Option<String>) {
        match d {
            Delivery::Replica { slot, to } => (*slot, to.id.to_string(), None),
            Delivery::Hint { slot, to, owner } => (*slot, to.id.to_string(), Some(owner.id.to_string())),
        }
    }

    fn shorts(ds: &[Delivery]) -> Vec<(usize, String, Option<String>)> {
        ds.iter().map(short).collect()
    }

    fn s(slot: usize, to: &str, owner: Option<&str>) -> (usize, String, Option<String>) {
        (slot, to.to_string(), owner.map(str::to_string))
    }

    #[test]
    fn live_replicas_get_the_write_and_dead_ones_a_fallback_in_order() {
        let (round, sends) = WriteRound::new(plan(&["me", "a", "b"], &[], &["f1", "f2"]), 2, true);
        assert_eq!(shorts(&sends), vec![s(0, "a", None), s(1, "b", None)]);
        assert_eq!(
            (round.succeeded(), round.verdict()),
            (1, Verdict::Pending),
            "our copy counts"
        );
        let (_, sends) = WriteRound::new(plan(&["a", "b", "c"], &["a", "c"], &["f1", "f2"]), 2, true);
        assert_eq!(
            shorts(&sends),
            vec![s(0, "f1", Some("a")), s(1, "b", None), s(2, "f2", Some("c"))]
        );
        // Strict quorum: a dead replica's slot fails at once.
        let (round, sends) = WriteRound::new(plan(&["a", "b", "c"], &["a", "c"], &["f1"]), 2, false);
        assert_eq!(shorts(&sends), vec![s(1, "b", None)]);
        assert_eq!(round.verdict(), Verdict::Failed);
    }

    #[test]
    fn a_failed_send_passes_its_slot_to_the_next_fallback_until_none_is_left() {
        let (mut round, sends) = WriteRound::new(plan(&["me", "a", "b"], &[], &["f1", "f2"]), 3, true);
        let next = round.absorb(&sends[0], false);
        assert_eq!(shorts(&next), vec![s(0, "f1", Some("a"))]);
        let next2 = round.absorb(&next[0], false);
        assert_eq!(
            shorts(&next2),
            vec![s(0, "f2", Some("a"))],
            "the same slot, the next fallback"
        );
        assert!(
            round.absorb(&next2[0], false).is_empty(),
            "no fallback left: the slot fails"
        );
        assert_eq!(round.verdict(), Verdict::Failed, "w = 3 is out of reach");
        let (mut round, sends) = WriteRound::new(plan(&["me", "a", "b"], &[], &["f1"]), 2, true);
        assert!(round.absorb(&sends[1], true).is_empty());
        assert_eq!((round.verdict(), round.succeeded()), (Verdict::Met, 2));
    }

    #[test]
    fn every_slot_ends_exactly_once_whatever_the_order_of_answers() {
        // All orders of success and failure over three slots with two fallbacks: the
        // round always decides, and never counts more answers than slots.
        for pattern in 0u32..(1 << 5) {
            let (mut round, mut queue) = WriteRound::new(plan(&["a", "b", "c"], &[], &["f1", "f2"]), 2, true);
            let mut bit = 0;
            while let Some(d) = queue.pop() {
                let ok = pattern & (1 << (bit % 5)) != 0;
                bit += 1;
                queue.extend(round.absorb(&d, ok));
            }
            assert_ne!(round.verdict(), Verdict::Pending, "pattern {pattern:05b}");
            assert!(round.succeeded() <= 3);
        }
    }
}
