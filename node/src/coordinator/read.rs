//! A quorum read as a pure state machine: where it goes, how answers count, when it is
//! decided, and which replicas read repair must bring up to date.
//!
//! A read's targets are the key's live replicas and, under sloppy quorum, one live
//! fallback for each replica this node believes dead. Which of them are asked:
//! - with [`Ask::Quorum`], only `r` of them at first: this node's own copy first when it
//!   holds one, then replicas believed alive before suspected ones, in preference order.
//!   A target that fails is replaced at once by the next one not yet asked, and the rest
//!   are asked when the coordinator speculates ([`Round::speculate`], after a short delay
//!   without a quorum). With fewer than `r` live replicas every target is asked at once.
//! - with [`Ask::All`], every target at once (read repair then checks every replica).
//!
//! Asking `r` rather than all N keeps quorum intersection (any `r` replicas meet any `w`
//! that took a write when `r + w > n`) and saves one replica read per client read at
//! N = 3, R = 2; what it gives up is read repair of the replica not asked, which is left
//! to anti-entropy and hinted handoff.
//!
//! A read is decided once `r` answers *count*:
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
use dynakv_ring::Status;

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

/// How many targets a read asks before any of them answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// Every target.
    All,
    /// `r` targets; more only on failure or speculation.
    Quorum,
}

#[derive(Clone, Debug, PartialEq)]
enum State {
    /// Not asked (yet).
    Unasked,
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
    /// one fallback per dead replica. Nobody is asked yet: see [`ReadRound::ask`].
    pub fn new(plan: Plan, required: usize, sloppy: bool) -> ReadRound {
        let dead = plan.primaries.iter().filter(|r| r.is_dead()).count();
        let mut primaries: Vec<Replica> = plan.primaries.into_iter().filter(|r| !r.is_dead()).collect();
        // Our own copy answers without a message; a suspected replica may not answer.
        primaries.sort_by_key(|r| (!r.is_self, r.status != Status::Alive));
        let mut targets: Vec<(Replica, Role)> = primaries.into_iter().map(|r| (r, Role::Primary)).collect();
        if sloppy {
            targets.extend(plan.fallbacks.into_iter().take(dead).map(|r| (r, Role::Fallback)));
        }
        let states = vec![State::Unasked; targets.len()];
        ReadRound {
            required,
            targets,
            states,
            patience_lost: false,
        }
    }

    /// Who may be asked, in the order they are; a send is an index into this.
    pub fn targets(&self) -> &[(Replica, Role)] {
        &self.targets
    }

    /// The first sends: every target, or (`Ask::Quorum`) the first `required` of them
    /// when at least that many live replicas are among them.
    pub fn ask(&mut self, ask: Ask) -> Vec<usize> {
        let primaries = self.targets.iter().filter(|(_, role)| *role == Role::Primary).count();
        let count = match ask {
            Ask::Quorum if primaries >= self.required => self.required,
            _ => self.targets.len(),
        };
        self.ask_next(count)
    }

    /// Marks the next `count` targets not yet asked as asked, and returns them.
    fn ask_next(&mut self, count: usize) -> Vec<usize> {
        let next: Vec<usize> = (0..self.targets.len())
            .filter(|&i| self.states[i] == State::Unasked)
            .take(count)
            .collect();
        for &i in &next {
            self.states[i] = State::Waiting;
        }
        next
    }

    /// How many targets were asked.
    pub fn asked(&self) -> usize {
        self.states.iter().filter(|s| **s != State::Unasked).count()
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
                    State::Unasked | State::Waiting | State::Failed => true,
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

    /// A failed target is replaced by the next one not asked yet.
    fn absorb(&mut self, &i: &usize, answer: Self::Answer) -> Vec<usize> {
        if matches!(self.states[i], State::Unasked | State::Waiting) {
            self.states[i] = match answer {
                Some(state) => State::Answered(state),
                None => {
                    self.states[i] = State::Failed;
                    return self.ask_next(1);
                }
            };
        }
        Vec::new()
    }

    /// Asks every target not asked yet.
    fn speculate(&mut self) -> Vec<usize> {
        self.ask_next(self.targets.len())
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
            layout: 1,
        }
    }

    /// A round that asked every target.
    fn asked(dead: &[&str], required: usize) -> ReadRound {
        let mut round = ReadRound::new(plan(dead), required, true);
        let all = round.ask(Ask::All);
        assert_eq!(all, (0..round.targets().len()).collect::<Vec<_>>());
        round
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
        let mut round = asked(&["p1", "p3"], 2);
        let verdicts = run(
            &mut round,
            &[(1, Some(None)), (2, Some(None)), (0, Some(Some(held.clone())))],
        );
        assert_eq!(verdicts, vec![Pending, Pending, Met], "waits for p2");
        assert_eq!(round.merged(), Some(held));
        // If the live replica fails, the fallbacks' answers are all there is.
        let mut round = asked(&["p1", "p3"], 2);
        assert_eq!(run(&mut round, &[(1, Some(None)), (0, None)]), vec![Pending, Pending]);
        assert_eq!(run(&mut round, &[(2, Some(None))]), vec![Met]);
        assert_eq!(round.merged(), None);
    }

    #[test]
    fn losing_patience_lets_fallbacks_count() {
        let mut round = asked(&["p1", "p3"], 2);
        run(&mut round, &[(1, Some(None)), (2, Some(None))]);
        assert_eq!(round.verdict(), Verdict::Pending);
        round.lose_patience();
        assert_eq!(round.verdict(), Verdict::Met);
        assert_eq!(round.counted(), 2);
    }

    #[test]
    fn replicas_count_at_once_and_failures_decide_early() {
        use Verdict::*;
        let mut round = asked(&[], 2);
        assert_eq!(run(&mut round, &[(2, Some(None)), (0, Some(None))]), vec![Pending, Met]);
        let mut round = asked(&[], 2);
        assert_eq!(run(&mut round, &[(0, None), (1, None)]), vec![Pending, Failed]);
        // r = 3 with one replica dead: even counting its fallback, one failure ends it.
        let mut round = asked(&["p3"], 3);
        assert_eq!(run(&mut round, &[(2, Some(None)), (0, None)]), vec![Pending, Failed]);
        // A repeated answer is ignored.
        let mut round = asked(&[], 2);
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
        let mut round = asked(&["p3"], 2);
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
        let mut round = asked(&[], 2);
        run(&mut round, &[(0, Some(None)), (1, Some(Some(new.clone()))), (2, None)]);
        let repaired: Vec<String> = round.repairs().into_iter().map(|(r, _)| r.id.to_string()).collect();
        assert_eq!(repaired, vec!["p1"]);
    }

    #[test]
    fn a_quorum_read_asks_r_targets_ourselves_first_and_suspects_last() {
        let plan = Plan {
            primaries: vec![
                replica("p1", Status::Suspect),
                replica("p2", Status::Alive),
                replica("me", Status::Alive),
            ],
            fallbacks: vec![replica("f1", Status::Alive)],
            moving: Vec::new(),
            layout: 1,
        };
        let mut round = ReadRound::new(plan.clone(), 2, true);
        let names = |round: &ReadRound, sends: &[usize]| -> Vec<String> {
            sends.iter().map(|&i| round.targets()[i].0.id.to_string()).collect()
        };
        let first = round.ask(Ask::Quorum);
        assert_eq!(names(&round, &first), vec!["me", "p2"]);
        assert_eq!(round.asked(), 2);
        // Speculation asks the rest; then there is nobody left to ask.
        let more = round.speculate();
        assert_eq!(names(&round, &more), vec!["p1"]);
        assert!(round.speculate().is_empty());
        // r = 3 asks all three replicas at once; `Ask::All` likewise.
        let mut round = ReadRound::new(plan.clone(), 3, true);
        assert_eq!(round.ask(Ask::Quorum).len(), 3);
        let mut round = ReadRound::new(plan, 1, true);
        assert_eq!(round.ask(Ask::All).len(), 3);
    }

    #[test]
    fn a_failed_target_is_replaced_by_the_next_one_not_asked() {
        use Verdict::*;
        // p2 dead: targets p1, p3, f1. The quorum read asks p1 and p3.
        let mut round = ReadRound::new(plan(&["p2"]), 2, true);
        assert_eq!(round.ask(Ask::Quorum), vec![0, 1]);
        assert_eq!(round.absorb(&0, Some(None)), Vec::<usize>::new());
        assert_eq!(round.absorb(&1, None), vec![2], "p3 failed: f1 is asked");
        assert_eq!(round.verdict(), Pending);
        assert_eq!(round.absorb(&2, Some(None)), Vec::<usize>::new());
        assert_eq!(round.verdict(), Met, "f1 counts: no replica is awaited");
        // With nobody left to ask, a failure asks nobody and the read fails.
        let mut round = ReadRound::new(plan(&[]), 2, false);
        assert_eq!(round.ask(Ask::Quorum), vec![0, 1]);
        assert_eq!(round.absorb(&0, None), vec![2]);
        assert_eq!(round.absorb(&2, None), Vec::<usize>::new());
        assert_eq!(round.verdict(), Failed);
    }

    #[test]
    fn fewer_live_replicas_than_r_asks_every_target_at_once() {
        // p1 and p3 dead: p2 alone cannot make r = 2, so p2, f1 and f2 are all asked.
        let mut round = ReadRound::new(plan(&["p1", "p3"]), 2, true);
        assert_eq!(round.ask(Ask::Quorum), vec![0, 1, 2]);
        // Without sloppy quorum only p2 is there to ask, and the read cannot succeed.
        let mut round = ReadRound::new(plan(&["p1", "p3"]), 2, false);
        assert_eq!(round.ask(Ask::Quorum), vec![0]);
        assert_eq!(round.verdict(), Verdict::Failed);
    }

    #[test]
    fn a_replica_not_asked_is_not_repaired() {
        let new = mv(2, "new");
        let mut round = ReadRound::new(plan(&[]), 2, true);
        round.ask(Ask::Quorum);
        run(&mut round, &[(0, Some(Some(new.clone()))), (1, Some(None))]);
        let repaired: Vec<String> = round.repairs().into_iter().map(|(r, _)| r.id.to_string()).collect();
        assert_eq!(repaired, vec!["p2"], "p3 was not asked");
    }

    #[test]
    fn a_replica_with_nothing_gets_no_tombstone() {
        let mut dead = MvRegister::new();
        let ctx = dead.write(Actor(1), &CausalContext::new(), Some(Bytes::from_static(b"x")));
        dead.write(Actor(1), &ctx, None);
        let tomb = Register::Mv(dead);
        let mut round = asked(&[], 2);
        run(&mut round, &[(0, Some(None)), (1, Some(Some(tomb)))]);
        assert!(round.repairs().is_empty());
    }
}
