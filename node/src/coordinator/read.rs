//! A quorum read as a pure state machine: where it goes, how answers count, when it is
//! decided, and which replicas read repair must bring up to date.
//!
//! A read asks the key's live replicas and, under sloppy quorum, one live fallback for
//! each replica this node believes dead. It is decided once `r` answers *count*:
//! - a replica's answer counts at once;
//! - a fallback's answer counts only once no live replica's answer is still awaited,
//!   or once the read lost patience (half the request timeout by default).
//!
//! A fallback stands in for a replica it is not: it holds only the hints it took while
//! that replica was down, so its "nothing" says nothing about the key. Counted at once,
//! two fallbacks' "nothing" could complete `r = 2` before the one reachable replica
//! holding every acknowledged write had answered, and the read would miss them all
//! (found in the container tests; replayed in the simulator). Waiting for the live
//! replicas first means a read never answers without what a reachable, responsive
//! replica of the key holds.

use dynakv_crdt::Register;

use super::fanout::Round;
use super::quorum::Verdict;
use crate::cluster::{Plan, Replica};

/// Why a node is asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// One of the key's N replicas.
    Primary,
    /// The next live node along the ring, standing in for a dead replica.
    Fallback,
}

#[derive(Clone, Debug, PartialEq)]
enum State {
    Waiting,
    Failed,
    Answered(Option<Register>),
}

/// One quorum read.
#[derive(Clone, Debug)]
pub struct ReadRound {
    required: usize,
    targets: Vec<(Replica, Role)>,
    states: Vec<State>,
    patience_lost: bool,
}

impl ReadRound {
    /// A read needing `required` answers over `plan`'s live replicas and, if `sloppy`,
    /// one fallback per dead replica.
    pub fn new(plan: Plan, required: usize, sloppy: bool) -> ReadRound {
        let dead = plan.primaries.iter().filter(|r| r.is_dead()).count();
        let mut targets: Vec<(Replica, Role)> = plan
            .primaries
            .into_iter()
            .filter(|r| !r.is_dead())
            .map(|r| (r, Role::Primary))
            .collect();
        if sloppy {
            targets.extend(plan.fallbacks.into_iter().take(dead).map(|r| (r, Role::Fallback)));
        }
        let states = vec![State::Waiting; targets.len()];
        ReadRound {
            required,
            targets,
            states,
            patience_lost: false,
        }
    }

    /// Who is asked; a send is an index into this.
    pub fn targets(&self) -> &[(Replica, Role)] {
        &self.targets
    }

    pub fn required(&self) -> usize {
        self.required
    }

    fn replica_awaited(&self) -> bool {
        self.targets
            .iter()
            .zip(&self.states)
            .any(|((_, role), s)| *role == Role::Primary && *s == State::Waiting)
    }

    fn counts(&self, i: usize) -> bool {
        matches!(self.states[i], State::Answered(_))
            && (self.targets[i].1 == Role::Primary || self.patience_lost || !self.replica_awaited())
    }

    /// Answers that count towards the quorum now.
    pub fn counted(&self) -> usize {
        (0..self.targets.len()).filter(|&i| self.counts(i)).count()
    }

    /// The merge of every answer so far (`None`: nobody holds anything).
    pub fn merged(&self) -> Option<Register> {
        self.states
            .iter()
            .filter_map(|s| match s {
                State::Answered(Some(r)) => Some(r.clone()),
                _ => None,
            })
            .reduce(|mut a, b| {
                a.merge(&b);
                a
            })
    }

    /// Every replica (never a fallback: handoff brings their owners up to date) whose
    /// answer is older than the merge of all answers, or who had nothing, with the
    /// version to send it. A replica holding nothing needs no tombstone (see
    /// `services::tombstones`).
    pub fn repairs(&self) -> Vec<(Replica, Register)> {
        let Some(merged) = self.merged() else {
            return Vec::new();
        };
        self.targets
            .iter()
            .zip(&self.states)
            .filter(|((_, role), _)| *role == Role::Primary)
            .filter_map(|((replica, _), state)| {
                let needless = match state {
                    State::Answered(None) => merged.is_tombstone(),
                    State::Answered(Some(a)) => *a == merged,
                    State::Waiting | State::Failed => true,
                };
                (!needless).then(|| (replica.clone(), merged.clone()))
            })
            .collect()
    }
}

impl Round for ReadRound {
    type Send = usize;
    /// The target's state for the key, or `None` if it failed to answer.
    type Answer = Option<Option<Register>>;

    fn absorb(&mut self, &i: &usize, answer: Self::Answer) -> Vec<usize> {
        if self.states[i] == State::Waiting {
            self.states[i] = match answer {
                Some(state) => State::Answered(state),
                None => State::Failed,
            };
        }
        Vec::new()
    }

    fn verdict(&self) -> Verdict {
        let counted = self.counted();
        // Answers that do not count yet may still count later.
        let possible = self.states.iter().filter(|s| !matches!(s, State::Failed)).count();
        if counted >= self.required {
            Verdict::Met
        } else if possible < self.required {
            Verdict::Failed
        } else {
            Verdict::Pending
        }
    }

    fn lose_patience(&mut self) {
        self.patience_lost = true;
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use dynakv_crdt::{Actor, CausalContext, MvRegister};
    use dynakv_ring::Status;

    use super::*;
    use crate::testing::{mv, replica};

    /// Replicas p1..p3 (the dead ones listed in `dead`) and fallbacks f1, f2.
    fn plan(dead: &[&str]) -> Plan {
        let status = |id: &str| {
            if dead.contains(&id) {
                Status::Dead
            } else {
                Status::Alive
            }
        };
        Plan {
            primaries: ["p1", "p2", "p3"].iter().map(|id| replica(id, status(id))).collect(),
            fallbacks: ["f1", "f2"].iter().map(|id| replica(id, Status::Alive)).collect(),
            moving: Vec::new(),
        }
    }

    fn ids(round: &ReadRound) -> Vec<(String, Role)> {
        round
            .targets()
            .iter()
            .map(|(r, role)| (r.id.to_string(), *role))
            .collect()
    }

    #[test]
    fn targets_are_the_live_replicas_and_one_fallback_per_dead_one() {
        use Role::*;
        // (dead replicas, sloppy, targets)
        type Case<'a> = (&'a [&'a str], bool, &'a [(&'a str, Role)]);
        let cases: &[Case] = &[
            (&[], true, &[("p1", Primary), ("p2", Primary), ("p3", Primary)]),
            (&["p2"], true, &[("p1", Primary), ("p3", Primary), ("f1", Fallback)]),
            (
                &["p1", "p3"],
                true,
                &[("p2", Primary), ("f1", Fallback), ("f2", Fallback)],
            ),
            (&["p1", "p3"], false, &[("p2", Primary)]),
        ];
        for (dead, sloppy, expected) in cases {
            let round = ReadRound::new(plan(dead), 2, *sloppy);
            let expected: Vec<(String, Role)> = expected.iter().map(|(id, r)| (id.to_string(), *r)).collect();
            assert_eq!(ids(&round), expected, "dead {dead:?}, sloppy {sloppy}");
        }
    }

    /// Feeds `answers` (target index, answer) in order; returns the verdict after each.
    fn run(round: &mut ReadRound, answers: &[(usize, Option<Option<Register>>)]) -> Vec<Verdict> {
        answers
            .iter()
            .map(|(i, a)| {
                round.absorb(i, a.clone());
                round.verdict()
            })
            .collect()
    }

    #[test]
    fn fallbacks_nothing_does_not_count_while_a_live_replica_is_awaited() {
        use Verdict::*;
        // p1 and p3 dead: targets p2, f1, f2. The two fallbacks answer "nothing" first.
        let held = mv(1, "acked");
        let mut round = ReadRound::new(plan(&["p1", "p3"]), 2, true);
        let verdicts = run(
            &mut round,
            &[(1, Some(None)), (2, Some(None)), (0, Some(Some(held.clone())))],
        );
        assert_eq!(verdicts, vec![Pending, Pending, Met], "waits for p2");
        assert_eq!(round.merged(), Some(held));
        // If the live replica fails, the fallbacks' answers are all there is.
        let mut round = ReadRound::new(plan(&["p1", "p3"]), 2, true);
        assert_eq!(run(&mut round, &[(1, Some(None)), (0, None)]), vec![Pending, Pending]);
        assert_eq!(run(&mut round, &[(2, Some(None))]), vec![Met]);
        assert_eq!(round.merged(), None);
    }

    #[test]
    fn losing_patience_lets_fallbacks_count() {
        let mut round = ReadRound::new(plan(&["p1", "p3"]), 2, true);
        run(&mut round, &[(1, Some(None)), (2, Some(None))]);
        assert_eq!(round.verdict(), Verdict::Pending);
        round.lose_patience();
        assert_eq!(round.verdict(), Verdict::Met);
        assert_eq!(round.counted(), 2);
    }

    #[test]
    fn replicas_count_at_once_and_failures_decide_early() {
        use Verdict::*;
        let mut round = ReadRound::new(plan(&[]), 2, true);
        assert_eq!(run(&mut round, &[(2, Some(None)), (0, Some(None))]), vec![Pending, Met]);
        let mut round = ReadRound::new(plan(&[]), 2, true);
        assert_eq!(run(&mut round, &[(0, None), (1, None)]), vec![Pending, Failed]);
        // r = 3 with one replica dead: even counting its fallback, one failure ends it.
        let mut round = ReadRound::new(plan(&["p3"]), 3, true);
        assert_eq!(run(&mut round, &[(2, Some(None)), (0, None)]), vec![Pending, Failed]);
        // A repeated answer is ignored.
        let mut round = ReadRound::new(plan(&[]), 2, true);
        assert_eq!(
            run(&mut round, &[(0, Some(None)), (0, Some(None))]),
            vec![Pending, Pending]
        );
    }

    #[test]
    fn repairs_go_to_replicas_that_answered_older_or_nothing_never_to_fallbacks() {
        let old = mv(1, "old");
        let mut new = old.clone();
        new.merge(&mv(2, "new"));
        let mut round = ReadRound::new(plan(&["p3"]), 2, true);
        // p1 old, p2 new, f1 (for p3) nothing.
        run(
            &mut round,
            &[
                (0, Some(Some(old.clone()))),
                (1, Some(Some(new.clone()))),
                (2, Some(None)),
            ],
        );
        let repairs: Vec<(String, Register)> = round
            .repairs()
            .into_iter()
            .map(|(r, reg)| (r.id.to_string(), reg))
            .collect();
        assert_eq!(repairs, vec![("p1".to_string(), new.clone())]);
        // A replica with nothing gets the value; one that failed gets nothing.
        let mut round = ReadRound::new(plan(&[]), 2, true);
        run(&mut round, &[(0, Some(None)), (1, Some(Some(new.clone()))), (2, None)]);
        let repaired: Vec<String> = round.repairs().into_iter().map(|(r, _)| r.id.to_string()).collect();
        assert_eq!(repaired, vec!["p1"]);
    }

    #[test]
    fn a_replica_with_nothing_gets_no_tombstone() {
        let mut dead = MvRegister::new();
        let ctx = dead.write(Actor(1), &CausalContext::new(), Some(Bytes::from_static(b"x")));
        dead.write(Actor(1), &ctx, None);
        let tomb = Register::Mv(dead);
        let mut round = ReadRound::new(plan(&[]), 2, true);
        run(&mut round, &[(0, Some(None)), (1, Some(Some(tomb)))]);
        assert!(round.repairs().is_empty());
    }
}
