//! A quorum write as a pure state machine: which node takes each replica's copy, and
//! when `w` acknowledgements are in or out of reach.
//!
//! Every replica but the coordinator itself is a *slot*. A live replica is sent the
//! write directly. When it is dead, or its send fails, and sloppy quorum is on, the slot
//! passes to the next unused live fallback along the ring, which keeps the write as a
//! hint for that replica and counts in its place; fallbacks are handed out in the order
//! slots need them. The coordinator's own copy, already stored, counts if it is one of
//! the replicas.
//!
//! While the key's partition moves between layouts, the write needs `w` in each of its
//! replica sets (the key's replicas, and those of every other active layout,
//! [`Plan::moving`]): a replica in several sets is one slot that counts in each of them.
//!
//! A primary write quorum `pw` (Riak's) also needs `pw` of each set's acknowledgements
//! to come from the replicas themselves: a fallback's acknowledgement counts towards `w`
//! but never towards `pw`. With `pw = w`, `pr = r` and `r + w > n`, a read meets every
//! acknowledged write even across partitions (a sloppy quorum alone does not promise
//! that: the fallbacks that took a write may be cut off from the replicas a read asks).

use std::collections::VecDeque;

use super::fanout::Round;
use super::quorum::{Quorum, Verdict};
use crate::state::cluster::{Plan, Replica};

/// Where one slot's copy goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// To the replica itself.
    Replica { slot: usize, to: Replica },
    /// To a fallback, as a hint for `owner`.
    Hint { slot: usize, to: Replica, owner: Replica },
}

impl Delivery {
    fn slot(&self) -> usize {
        match self {
            Delivery::Replica { slot, .. } | Delivery::Hint { slot, .. } => *slot,
        }
    }
}

/// A replica other than the coordinator, and the replica sets it counts in (bit `i`:
/// set `i`).
#[derive(Clone, Debug)]
struct Slot {
    owner: Replica,
    sets: u64,
}

/// The indexes of the sets in a set mask.
fn members(mask: u64) -> impl Iterator<Item = usize> {
    (0..64).filter(move |i| mask & (1 << i) != 0)
}

/// One quorum write.
#[derive(Clone, Debug)]
pub struct WriteRound {
    /// One per replica set.
    quorums: Vec<Quorum>,
    /// One per replica set: acknowledgements from the set's own replicas, against `pw`.
    primaries: Vec<Quorum>,
    fallbacks: VecDeque<Replica>,
    sloppy: bool,
    slots: Vec<Slot>,
}

impl WriteRound {
    /// A write needing `w` acknowledgements in each replica set of `plan`, `pw` of them
    /// from the set's own replicas; returns it and its first sends.
    pub fn new(plan: Plan, (w, pw): (usize, usize), sloppy: bool) -> (WriteRound, Vec<Delivery>) {
        assert!(plan.moving.len() < 64, "a write spans at most 64 layouts");
        let mut slots: Vec<Slot> = Vec::new();
        let mut quorums = Vec::with_capacity(1 + plan.moving.len());
        let mut primaries = Vec::with_capacity(1 + plan.moving.len());
        // The sets this node's own copy counts in.
        let mut ours = 0u64;
        for (i, set) in std::iter::once(plan.primaries).chain(plan.moving).enumerate() {
            quorums.push(Quorum::new(w, set.len()));
            primaries.push(Quorum::new(pw, set.len()));
            for r in set {
                if r.is_self {
                    ours |= 1 << i;
                } else if let Some(slot) = slots.iter_mut().find(|s| s.owner.id == r.id) {
                    slot.sets |= 1 << i;
                } else {
                    slots.push(Slot { owner: r, sets: 1 << i });
                }
            }
        }
        // A fallback never stands in for one replica while being another: not a slot,
        // and not this node when its own copy already counts in a set (one copy would
        // count twice there).
        let fallbacks = plan
            .fallbacks
            .into_iter()
            .filter(|f| (ours == 0 || !f.is_self) && slots.iter().all(|s| s.owner.id != f.id))
            .collect();
        let mut round = WriteRound {
            quorums,
            primaries,
            fallbacks,
            sloppy,
            slots,
        };
        for i in members(ours) {
            round.quorums[i].record(true);
            round.primaries[i].record(true);
        }
        let mut sends = Vec::new();
        for slot in 0..round.slots.len() {
            let owner = round.slots[slot].owner.clone();
            if owner.is_dead() {
                round.record_primary(slot, false);
                sends.extend(round.next_fallback(slot));
            } else {
                sends.push(Delivery::Replica { slot, to: owner });
            }
        }
        (round, sends)
    }

    fn record(&mut self, slot: usize, success: bool) {
        for i in members(self.slots[slot].sets) {
            self.quorums[i].record(success);
        }
    }

    /// The slot's replica itself acknowledged (or, `false`, never will: it is believed
    /// dead, or its send failed): recorded once per slot.
    fn record_primary(&mut self, slot: usize, success: bool) {
        for i in members(self.slots[slot].sets) {
            self.primaries[i].record(success);
        }
    }

    /// The slot's next fallback, or the slot's failure when there is none.
    fn next_fallback(&mut self, slot: usize) -> Option<Delivery> {
        let next = if self.sloppy { self.fallbacks.pop_front() } else { None };
        match next {
            Some(to) => Some(Delivery::Hint {
                slot,
                to,
                owner: self.slots[slot].owner.clone(),
            }),
            None => {
                self.record(slot, false);
                None
            }
        }
    }

    /// Acknowledgements each replica set needs.
    pub fn required(&self) -> usize {
        self.quorums[0].required()
    }

    /// Acknowledgements in the replica set that has fewest.
    pub fn succeeded(&self) -> usize {
        self.quorums.iter().map(Quorum::succeeded).min().unwrap_or(0)
    }

    /// What a write that is not met lacks, as (required, succeeded, primaries): `w` when
    /// some set has fewer than `w` acknowledgements, else `pw`, counting the primaries
    /// of the set that has fewest.
    pub fn shortfall(&self) -> (usize, usize, bool) {
        if self.quorums.iter().any(|q| q.verdict() != Verdict::Met) {
            return (self.required(), self.succeeded(), false);
        }
        let fewest = self.primaries.iter().map(Quorum::succeeded).min().unwrap_or(0);
        (self.primaries[0].required(), fewest, true)
    }
}

impl Round for WriteRound {
    type Send = Delivery;
    /// Whether the node acknowledged the write.
    type Answer = bool;

    fn absorb(&mut self, send: &Delivery, acked: bool) -> Vec<Delivery> {
        let slot = send.slot();
        if let Delivery::Replica { .. } = send {
            self.record_primary(slot, acked);
        }
        if acked {
            self.record(slot, true);
            return Vec::new();
        }
        self.next_fallback(slot).into_iter().collect()
    }

    /// Met once every set is, for `w` and for `pw`. Failed as soon as a set's `w` is out
    /// of reach; a set's `pw` out of reach fails the write only once every set's `w` is
    /// met, so the answer says how many primaries the write did reach.
    fn verdict(&self) -> Verdict {
        let all = |qs: &[Quorum], v: Verdict| qs.iter().all(|q| q.verdict() == v);
        let any = |qs: &[Quorum], v: Verdict| qs.iter().any(|q| q.verdict() == v);
        if any(&self.quorums, Verdict::Failed) {
            Verdict::Failed
        } else if !all(&self.quorums, Verdict::Met) {
            Verdict::Pending
        } else if all(&self.primaries, Verdict::Met) {
            Verdict::Met
        } else if any(&self.primaries, Verdict::Failed) {
            Verdict::Failed
        } else {
            Verdict::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use dynakv_ring::Status;

    use super::*;
    use crate::state::testing::replica;

    fn replicas(ids: &[&str], dead: &[&str]) -> Vec<Replica> {
        ids.iter()
            .map(|id| replica(id, if dead.contains(id) { Status::Dead } else { Status::Alive }))
            .collect()
    }

    fn plan(primaries: &[&str], dead: &[&str], fallbacks: &[&str]) -> Plan {
        Plan {
            primaries: replicas(primaries, dead),
            fallbacks: replicas(fallbacks, &[]),
            moving: Vec::new(),
            layout: 1,
        }
    }

    /// A plan whose partition moves: `w` is needed in `primaries` and in `other`.
    fn moving(primaries: &[&str], other: &[&str], dead: &[&str], fallbacks: &[&str]) -> Plan {
        Plan {
            moving: vec![replicas(other, dead)],
            ..plan(primaries, dead, fallbacks)
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
        let (round, sends) = WriteRound::new(plan(&["me", "a", "b"], &[], &["f1", "f2"]), (2, 0), true);
        assert_eq!(shorts(&sends), vec![s(0, "a", None), s(1, "b", None)]);
        assert_eq!(
            (round.succeeded(), round.verdict()),
            (1, Verdict::Pending),
            "our copy counts"
        );
        let (_, sends) = WriteRound::new(plan(&["a", "b", "c"], &["a", "c"], &["f1", "f2"]), (2, 0), true);
        assert_eq!(
            shorts(&sends),
            vec![s(0, "f1", Some("a")), s(1, "b", None), s(2, "f2", Some("c"))]
        );
        // Strict quorum: a dead replica's slot fails at once.
        let (round, sends) = WriteRound::new(plan(&["a", "b", "c"], &["a", "c"], &["f1"]), (2, 0), false);
        assert_eq!(shorts(&sends), vec![s(1, "b", None)]);
        assert_eq!(round.verdict(), Verdict::Failed);
    }

    #[test]
    fn a_failed_send_passes_its_slot_to_the_next_fallback_until_none_is_left() {
        let (mut round, sends) = WriteRound::new(plan(&["me", "a", "b"], &[], &["f1", "f2"]), (3, 0), true);
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
        let (mut round, sends) = WriteRound::new(plan(&["me", "a", "b"], &[], &["f1"]), (2, 0), true);
        assert!(round.absorb(&sends[1], true).is_empty());
        assert_eq!((round.verdict(), round.succeeded()), (Verdict::Met, 2));
    }

    /// The answer each delivery gets, by node: `true` acks.
    fn settle(round: &mut WriteRound, mut queue: Vec<Delivery>, answers: &[(&str, bool)]) {
        while let Some(d) = queue.pop() {
            let to = match &d {
                Delivery::Replica { to, .. } | Delivery::Hint { to, .. } => to.id.to_string(),
            };
            let ok = answers
                .iter()
                .find(|(id, _)| *id == to)
                .expect("an answer for each node")
                .1;
            queue.extend(round.absorb(&d, ok));
        }
    }

    #[test]
    fn a_moving_partition_needs_w_in_each_replica_set() {
        // One slot per distinct replica; a replica in both sets counts in both.
        let (mut round, sends) = WriteRound::new(moving(&["me", "a", "b"], &["me", "a", "d"], &[], &[]), (2, 0), true);
        assert_eq!(shorts(&sends), vec![s(0, "a", None), s(1, "b", None), s(2, "d", None)]);
        assert!(round.absorb(&sends[0], true).is_empty());
        assert_eq!(round.verdict(), Verdict::Met, "our copy and a's count in both sets");

        // W in each set: the old set alone is not enough, nor the new set alone.
        let cases = [
            ([("a", true), ("b", false), ("c", true), ("d", false)], Verdict::Failed),
            ([("a", true), ("b", false), ("c", false), ("d", true)], Verdict::Failed),
            ([("a", true), ("b", false), ("c", true), ("d", true)], Verdict::Met),
        ];
        for (answers, want) in cases {
            let (mut round, sends) =
                WriteRound::new(moving(&["a", "b", "c"], &["a", "b", "d"], &[], &[]), (2, 0), false);
            settle(&mut round, sends, &answers);
            assert_eq!(round.verdict(), want, "{answers:?}");
            if want == Verdict::Failed {
                assert_eq!((round.required(), round.succeeded()), (2, 1), "the weaker set has one");
            }
        }

        // A dead new replica's slot goes to a fallback, never to a replica of the other
        // set; and never to this node when its own copy counts in a set (here it is a
        // replica only in the new layout, so it would count twice there).
        let hinted = [
            (
                moving(&["a", "b", "c"], &["a", "b", "d"], &["d"], &["c", "f1"]),
                [("a", true), ("b", false), ("c", true), ("f1", true)],
                Verdict::Met,
            ),
            (
                moving(&["a", "b", "c"], &["a", "me", "d"], &["d"], &["me", "f1"]),
                [("a", false), ("b", true), ("c", true), ("f1", false)],
                Verdict::Failed,
            ),
        ];
        for (plan, answers, want) in hinted {
            let (mut round, sends) = WriteRound::new(plan, (2, 0), true);
            assert_eq!(
                shorts(&sends),
                vec![s(0, "a", None), s(1, "b", None), s(2, "c", None), s(3, "f1", Some("d"))]
            );
            settle(&mut round, sends, &answers);
            assert_eq!(round.verdict(), want, "{answers:?}");
        }
        // With a single set, this node may still hold a hint when it is not a replica.
        let (_, sends) = WriteRound::new(plan(&["a", "b", "c"], &["c"], &["me"]), (2, 0), true);
        assert_eq!(short(&sends[2]), s(2, "me", Some("c")));
    }

    #[test]
    fn pw_counts_only_the_replicas_own_acknowledgements_never_a_fallbacks() {
        // c is dead and b's send fails: their slots go to fallbacks, which ack. w = 2
        // is met (a and f1), but only a (one primary) acknowledged.
        let answers = [("a", true), ("b", false), ("f1", true), ("f2", true)];
        let run = |pw: usize| {
            let (mut round, sends) = WriteRound::new(plan(&["a", "b", "c"], &["c"], &["f1", "f2"]), (2, pw), true);
            settle(&mut round, sends, &answers);
            round
        };
        let round = run(0);
        assert_eq!(round.verdict(), Verdict::Met, "no primary requirement: the hints count");
        let round = run(1);
        assert_eq!(round.verdict(), Verdict::Met, "a is one primary");
        let round = run(2);
        assert_eq!(round.verdict(), Verdict::Failed, "one primary of the two pw needs");
        assert_eq!(round.shortfall(), (2, 1, true), "the failure names the primaries");

        // This node's own copy is a primary's.
        let (mut round, sends) = WriteRound::new(plan(&["me", "a", "b"], &[], &["f1"]), (2, 2), true);
        assert_eq!(round.verdict(), Verdict::Pending);
        let hinted = round.absorb(&sends[0], false);
        assert_eq!(shorts(&hinted), vec![s(0, "f1", Some("a"))]);
        round.absorb(&hinted[0], true);
        assert_eq!(round.verdict(), Verdict::Pending, "w is met by the hint, pw is not");
        round.absorb(&sends[1], true);
        assert_eq!(round.verdict(), Verdict::Met, "our copy and b's");

        // A set short of w reports w, not pw.
        let (mut round, sends) = WriteRound::new(plan(&["a", "b", "c"], &[], &[]), (3, 1), false);
        settle(&mut round, sends, &[("a", true), ("b", false), ("c", true)]);
        assert_eq!((round.verdict(), round.shortfall()), (Verdict::Failed, (3, 2, false)));

        // While a partition moves, pw is needed in each set from its own replicas.
        let (mut round, sends) = WriteRound::new(
            moving(&["a", "b", "c"], &["a", "b", "d"], &["d"], &["f1"]),
            (2, 2),
            true,
        );
        settle(
            &mut round,
            sends,
            &[("a", true), ("b", false), ("c", true), ("f1", true)],
        );
        assert_eq!(
            round.verdict(),
            Verdict::Failed,
            "the new set has one primary (a): d's hint does not count"
        );
        assert_eq!(round.shortfall(), (2, 1, true));
    }

    #[test]
    fn every_slot_ends_exactly_once_whatever_the_order_of_answers() {
        // All orders of success and failure over the slots and fallbacks: the round
        // always decides, and never counts more answers than slots.
        let decides = |plan: &dyn Fn() -> Plan, bits: u32| {
            for (pattern, pw) in (0u32..(1 << bits)).flat_map(|p| [(p, 0), (p, 2)]) {
                let (mut round, mut queue) = WriteRound::new(plan(), (2, pw), true);
                let mut bit = 0;
                while let Some(d) = queue.pop() {
                    let ok = pattern & (1 << (bit % bits)) != 0;
                    bit += 1;
                    queue.extend(round.absorb(&d, ok));
                }
                assert_ne!(round.verdict(), Verdict::Pending, "pattern {pattern:b}, pw {pw}");
                assert!(round.succeeded() <= 3);
                let (_, primaries, _) = round.shortfall();
                assert!(primaries <= round.succeeded(), "a primary's ack is an ack");
            }
        };
        decides(&|| plan(&["a", "b", "c"], &[], &["f1", "f2"]), 5);
        // The partition moving: two sets sharing two replicas.
        decides(&|| moving(&["a", "b", "c"], &["a", "b", "d"], &[], &["f1", "f2"]), 6);
    }
}
