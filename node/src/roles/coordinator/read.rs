//! A quorum read as a pure state machine: where it goes, how answers count, when it is
//! decided, and which replicas read repair must bring up to date.
//!
//! A read's targets are the key's replicas, those believed alive first, and, under
//! sloppy quorum, one live fallback for each replica this node believes dead. Which of
//! them are asked:
//! - with [`Ask::Quorum`], only `r` of them at first: this node's own copy first when it
//!   holds one, then replicas believed alive before suspected ones, in preference order.
//!   A target that fails is replaced at once by the next one not yet asked, and the rest
//!   are asked when the coordinator speculates ([`Round::speculate`], after a short delay
//!   without a quorum). With fewer than `r` live replicas every target is asked at once.
//! - with [`Ask::All`], every target at once (read repair then checks every replica).
//!
//! A replica believed dead is still asked whenever the fallbacks are: the failure
//! detector lags behind the network (after a partition heals, a member is judged dead
//! for a second or more while its messages arrive again), and its answer is a replica's.
//! Asking it costs a connection attempt, refused at once while the transport backs off
//! from it.
//!
//! Asking `r` rather than all N keeps quorum intersection (any `r` replicas meet any `w`
//! that took a write when `r + w > n`) and saves one replica read per client read at
//! N = 3, R = 2; what it gives up is read repair of the replica not asked, which is left
//! to anti-entropy and hinted handoff.
//!
//! A read is decided once `r` answers *count* and at least one of them is a replica's
//! (at least `pr` of them, with a primary read quorum):
//! - a replica's answer counts at once;
//! - a fallback's answer counts only if it holds something for the key, and only once
//!   no live replica's answer is still awaited, or once the read lost patience (half the
//!   request timeout by default).
//!
//! A fallback stands in for a replica it is not: it holds only the hints it took while
//! that replica was down, so its "nothing" says nothing about the key. Counted, two
//! fallbacks' "nothing" could complete `r = 2` before the one reachable replica holding
//! every acknowledged write had answered, and the read would miss them all (found in the
//! container tests; replayed in the simulator); with every replica judged dead (just
//! after a partition healed) they answered 404 for keys holding hundreds of acknowledged
//! elements. So "not found" is said only on a replica's word, and a read that reaches no
//! replica fails (503) rather than answer from fallbacks alone. What a fallback holds is
//! merged into the answer, and counts once no live replica is awaited: waiting for the
//! live replicas first means a read never answers without what a reachable, responsive
//! replica of the key holds.

use dynakv_crdt::Register;
use dynakv_ring::Status;

use super::fanout::Round;
use super::quorum::Verdict;

use crate::state::cluster::{Plan, Replica};

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
    /// Answers that must come from the key's replicas themselves (at least one always).
    primaries: usize,
    targets: Vec<(Replica, Role)>,
    states: Vec<State>,
    patience_lost: bool,
}

impl ReadRound {
    /// A read needing `r` answers over `plan`'s live replicas and, if `sloppy`, one
    /// fallback per dead replica, `pr` of them (and at least one) from replicas. Nobody
    /// is asked yet: see [`ReadRound::ask`].
    pub fn new(plan: Plan, (r, pr): (usize, usize), sloppy: bool) -> ReadRound {
        let (dead, mut live): (Vec<Replica>, Vec<Replica>) = plan.primaries.into_iter().partition(Replica::is_dead);
        // Our own copy answers without a message; a suspected replica may not answer.
        live.sort_by_key(|r| (!r.is_self, r.status != Status::Alive));
        let mut targets: Vec<(Replica, Role)> = live.into_iter().map(|r| (r, Role::Primary)).collect();
        if sloppy {
            targets.extend(plan.fallbacks.into_iter().take(dead.len()).map(|r| (r, Role::Fallback)));
        }
        // Last: the replicas believed dead, asked with the fallbacks.
        targets.extend(dead.into_iter().map(|r| (r, Role::Primary)));
        let states = vec![State::Unasked; targets.len()];
        ReadRound {
            required: r,
            primaries: pr.max(1),
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
    /// when at least that many replicas believed alive are among them.
    pub fn ask(&mut self, ask: Ask) -> Vec<usize> {
        let live = self
            .targets
            .iter()
            .filter(|(r, role)| *role == Role::Primary && !r.is_dead())
            .count();
        let count = match ask {
            Ask::Quorum if live >= self.required => self.required,
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

    /// A replica believed alive has been asked and has not answered yet.
    fn live_replica_awaited(&self) -> bool {
        self.targets
            .iter()
            .zip(&self.states)
            .any(|((r, role), s)| *role == Role::Primary && !r.is_dead() && *s == State::Waiting)
    }

    fn counts(&self, i: usize) -> bool {
        match (&self.states[i], self.targets[i].1) {
            (State::Answered(_), Role::Primary) => true,
            // A fallback's "nothing" never counts; what it holds does, in its turn.
            (State::Answered(Some(_)), Role::Fallback) => self.patience_lost || !self.live_replica_awaited(),
            _ => false,
        }
    }

    /// Answers that count towards the quorum now.
    pub fn counted(&self) -> usize {
        (0..self.targets.len()).filter(|&i| self.counts(i)).count()
    }

    /// Answers that count towards the quorum, as a failed read reports them: none
    /// without a replica's.
    pub fn succeeded(&self) -> usize {
        if self.replicas_answered() == 0 {
            0
        } else {
            self.counted()
        }
    }

    /// What a read that is not met lacks, as (required, succeeded, primaries): `r` when
    /// fewer than `r` answers count, else the primary answers `pr` asks for.
    pub fn shortfall(&self) -> (usize, usize, bool) {
        if self.succeeded() < self.required {
            (self.required, self.succeeded(), false)
        } else {
            (self.primaries, self.replicas_answered(), true)
        }
    }

    /// Replicas (not fallbacks) that answered.
    fn replicas_answered(&self) -> usize {
        self.targets
            .iter()
            .zip(&self.states)
            .filter(|((_, role), s)| *role == Role::Primary && matches!(s, State::Answered(_)))
            .count()
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

    /// Met once `r` answers count and `pr` (at least one) of them are replicas'; failed
    /// once that can no longer happen (for `pr` above one, only once `r` answers count,
    /// so the answer says how many replicas did answer).
    fn verdict(&self) -> Verdict {
        let r_met = self.counted() >= self.required && self.replicas_answered() > 0;
        if r_met && self.replicas_answered() >= self.primaries {
            return Verdict::Met;
        }
        // What may still count: every target that has not failed, but fallbacks that
        // answered "nothing".
        let may_count = |(i, s): (usize, &State)| match s {
            State::Failed => false,
            State::Answered(None) => self.targets[i].1 == Role::Primary,
            _ => true,
        };
        let possible = self.states.iter().enumerate().filter(|&x| may_count(x)).count();
        let replicas_possible = self
            .targets
            .iter()
            .zip(&self.states)
            .filter(|((_, role), s)| *role == Role::Primary && **s != State::Failed)
            .count();
        if possible < self.required || replicas_possible == 0 || (r_met && replicas_possible < self.primaries) {
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
    use crate::state::testing::{mv, replica};

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
        let mut round = ReadRound::new(plan(dead), (required, 0), true);
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

    fn index(round: &ReadRound, name: &str) -> usize {
        round
            .targets()
            .iter()
            .position(|(r, _)| r.id.as_str() == name)
            .unwrap_or_else(|| panic!("{name} is no target"))
    }

    #[test]
    fn targets_are_the_live_replicas_a_fallback_per_dead_one_then_the_dead_replicas() {
        use Role::*;
        // (dead replicas, sloppy, targets)
        type Case<'a> = (&'a [&'a str], bool, &'a [(&'a str, Role)]);
        let cases: &[Case] = &[
            (&[], true, &[("p1", Primary), ("p2", Primary), ("p3", Primary)]),
            (
                &["p2"],
                true,
                &[("p1", Primary), ("p3", Primary), ("f1", Fallback), ("p2", Primary)],
            ),
            (
                &["p1", "p3"],
                true,
                &[
                    ("p2", Primary),
                    ("f1", Fallback),
                    ("f2", Fallback),
                    ("p1", Primary),
                    ("p3", Primary),
                ],
            ),
            (
                &["p1", "p3"],
                false,
                &[("p2", Primary), ("p1", Primary), ("p3", Primary)],
            ),
        ];
        for (dead, sloppy, expected) in cases {
            let round = ReadRound::new(plan(dead), (2, 0), *sloppy);
            let expected: Vec<(String, Role)> = expected.iter().map(|(id, r)| (id.to_string(), *r)).collect();
            assert_eq!(ids(&round), expected, "dead {dead:?}, sloppy {sloppy}");
        }
    }

    /// One event of a read: a target's answer, or the read losing patience.
    #[derive(Clone, Copy)]
    enum Ev {
        /// The target holds nothing for the key.
        Nothing(&'static str),
        /// The target holds the acknowledged value.
        Value(&'static str),
        Fails(&'static str),
        Patience,
    }

    /// The value every `Value` answer holds.
    fn held() -> Register {
        mv(1, "acked")
    }

    /// Feeds `events` to a round over `plan(dead)` that asked every target; returns the
    /// verdict after each.
    fn run(dead: &[&str], required: usize, events: &[Ev]) -> (ReadRound, Vec<Verdict>) {
        let mut round = asked(dead, required);
        let verdicts = events
            .iter()
            .map(|ev| {
                match *ev {
                    Ev::Nothing(t) => drop(round.absorb(&index(&round, t), Some(None))),
                    Ev::Value(t) => drop(round.absorb(&index(&round, t), Some(Some(held())))),
                    Ev::Fails(t) => drop(round.absorb(&index(&round, t), None)),
                    Ev::Patience => round.lose_patience(),
                }
                round.verdict()
            })
            .collect();
        (round, verdicts)
    }

    /// When a read is decided, and on what: the read round's whole decision, case by case.
    #[test]
    fn a_read_is_decided_by_r_answers_that_count_one_of_them_a_replicas() {
        use Ev::*;
        use Verdict::{Failed as F, Met as M, Pending as P};
        // (what happens, dead replicas, r, events, verdict after each, merged value found)
        type Case<'a> = (&'a str, &'a [&'a str], usize, &'a [Ev], &'a [Verdict], bool);
        let cases: &[Case] = &[
            (
                "replicas count at once",
                &[],
                2,
                &[Nothing("p3"), Value("p1")],
                &[P, M],
                true,
            ),
            (
                "two replicas failing leave r = 2 out of reach",
                &[],
                2,
                &[Fails("p1"), Fails("p2")],
                &[P, F],
                false,
            ),
            (
                "every replica judged dead (a heal the detector has not seen yet): the fallbacks' \
                 nothing is no 404",
                &["p1", "p2", "p3"],
                2,
                &[Nothing("f1"), Nothing("f2"), Fails("p1"), Fails("p2")],
                &[P, P, P, F],
                false,
            ),
            (
                "every replica judged dead, but the network is back: they answer",
                &["p1", "p2", "p3"],
                2,
                &[Nothing("f1"), Nothing("f2"), Value("p2"), Nothing("p3")],
                &[P, P, P, M],
                true,
            ),
            (
                "fallbacks holding hints, but no replica reached: no answer from fallbacks alone",
                &["p1", "p2", "p3"],
                2,
                &[
                    Value("f1"),
                    Value("f2"),
                    Patience,
                    Fails("p1"),
                    Fails("p2"),
                    Fails("p3"),
                ],
                &[P, P, P, P, P, F],
                true,
            ),
            (
                "one live replica and two fallbacks with nothing: r = 2 is not met by them",
                &["p1", "p3"],
                2,
                &[Nothing("f1"), Nothing("f2"), Value("p2"), Fails("p1"), Fails("p3")],
                &[P, P, P, P, F],
                true,
            ),
            (
                "a fallback's hint counts once the live replica answered",
                &["p1", "p3"],
                2,
                &[Value("f1"), Nothing("p2")],
                &[P, M],
                true,
            ),
            (
                "a fallback's hint waits for a live replica still out, until patience is lost",
                &["p3"],
                2,
                &[Value("f1"), Nothing("p2"), Patience],
                &[P, P, M],
                true,
            ),
            (
                "r = 3 with a dead replica: its fallback's nothing cannot stand in for it",
                &["p3"],
                3,
                &[Nothing("f1"), Nothing("p1"), Nothing("p2"), Fails("p3")],
                &[P, P, P, F],
                false,
            ),
            (
                "r = 3 with a dead replica that answers after all",
                &["p3"],
                3,
                &[Nothing("f1"), Nothing("p1"), Value("p3"), Nothing("p2")],
                &[P, P, P, M],
                true,
            ),
            (
                "a repeated answer is counted once",
                &[],
                2,
                &[Nothing("p1"), Nothing("p1")],
                &[P, P],
                false,
            ),
        ];
        for (what, dead, r, events, expected, found) in cases {
            let (round, verdicts) = run(dead, *r, events);
            assert_eq!(verdicts, *expected, "{what}");
            assert_eq!(round.merged().is_some(), *found, "{what}: merged");
        }
    }

    #[test]
    fn repairs_go_to_replicas_that_answered_older_or_nothing_never_to_fallbacks() {
        let old = mv(1, "old");
        let mut new = old.clone();
        new.merge(&mv(2, "new"));
        let mut round = asked(&["p3"], 2);
        // p1 old, p2 new, f1 (for p3) nothing, the dead p3 nothing.
        for (t, a) in [
            ("p1", Some(Some(old.clone()))),
            ("p2", Some(Some(new.clone()))),
            ("f1", Some(None)),
            ("p3", Some(None)),
        ] {
            round.absorb(&index(&round, t), a);
        }
        let repairs: Vec<(String, Register)> = round
            .repairs()
            .into_iter()
            .map(|(r, reg)| (r.id.to_string(), reg))
            .collect();
        assert_eq!(
            repairs,
            vec![("p1".to_string(), new.clone()), ("p3".to_string(), new.clone())]
        );
        // A replica with nothing gets the value; one that failed gets nothing.
        let mut round = asked(&[], 2);
        for (t, a) in [("p1", Some(None)), ("p2", Some(Some(new.clone()))), ("p3", None)] {
            round.absorb(&index(&round, t), a);
        }
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
        let mut round = ReadRound::new(plan.clone(), (2, 0), true);
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
        let mut round = ReadRound::new(plan.clone(), (3, 0), true);
        assert_eq!(round.ask(Ask::Quorum).len(), 3);
        let mut round = ReadRound::new(plan, (1, 0), true);
        assert_eq!(round.ask(Ask::All).len(), 3);
    }

    #[test]
    fn a_failed_target_is_replaced_by_the_next_one_not_asked() {
        use Verdict::*;
        // p2 dead: targets p1, p3, f1, p2. The quorum read asks p1 and p3.
        let mut round = ReadRound::new(plan(&["p2"]), (2, 0), true);
        assert_eq!(round.ask(Ask::Quorum), vec![0, 1]);
        assert_eq!(round.absorb(&0, Some(None)), Vec::<usize>::new());
        assert_eq!(round.absorb(&1, None), vec![2], "p3 failed: f1 is asked");
        assert_eq!(round.verdict(), Pending);
        assert_eq!(round.absorb(&2, Some(None)), Vec::<usize>::new());
        assert_eq!(round.verdict(), Pending, "f1's nothing does not count");
        assert_eq!(round.speculate(), vec![3], "speculation asks the dead p2");
        assert_eq!(round.absorb(&3, Some(None)), Vec::<usize>::new());
        assert_eq!(round.verdict(), Met);
        // With nobody left to ask, a failure asks nobody and the read fails.
        let mut round = ReadRound::new(plan(&[]), (2, 0), false);
        assert_eq!(round.ask(Ask::Quorum), vec![0, 1]);
        assert_eq!(round.absorb(&0, None), vec![2]);
        assert_eq!(round.absorb(&2, None), Vec::<usize>::new());
        assert_eq!(round.verdict(), Failed);
    }

    #[test]
    fn fewer_live_replicas_than_r_asks_every_target_at_once() {
        // p1 and p3 dead: p2 alone cannot make r = 2, so p2, f1, f2 and the dead p1 and
        // p3 are all asked.
        let mut round = ReadRound::new(plan(&["p1", "p3"]), (2, 0), true);
        assert_eq!(round.ask(Ask::Quorum), vec![0, 1, 2, 3, 4]);
        // Without sloppy quorum p2 and the dead replicas are asked; the read fails once
        // the dead ones do.
        let mut round = ReadRound::new(plan(&["p1", "p3"]), (2, 0), false);
        assert_eq!(round.ask(Ask::Quorum), vec![0, 1, 2]);
        assert_eq!(round.verdict(), Verdict::Pending);
        round.absorb(&1, None);
        round.absorb(&2, None);
        assert_eq!(round.verdict(), Verdict::Failed);
    }

    #[test]
    fn pr_needs_that_many_answers_from_replicas_never_from_fallbacks() {
        use Verdict::*;
        // p2 and p3 dead: targets p1, f1, f2, p2, p3. r = 2 is met by p1 and a
        // fallback holding a hint; pr = 2 is not.
        let held = mv(1, "hint");
        let run = |pr: usize, answers: &[(usize, Option<Option<Register>>)]| {
            let mut round = ReadRound::new(plan(&["p2", "p3"]), (2, pr), true);
            round.ask(Ask::All);
            for (i, a) in answers {
                round.absorb(i, a.clone());
            }
            round
        };
        let fallback_answers = [(0, Some(None)), (1, Some(Some(held.clone()))), (3, None), (4, None)];
        let round = run(0, &fallback_answers);
        assert_eq!(round.verdict(), Met, "r = 2 without pr: p1 and f1's hint");
        let round = run(2, &fallback_answers);
        assert_eq!(round.verdict(), Failed, "p2 and p3 failed: one replica answered");
        assert_eq!(round.shortfall(), (2, 1, true), "the failure names the primaries");
        // Two replicas answering meets pr = 2, "nothing" included: it is a replica's.
        let round = run(2, &[(0, Some(None)), (3, Some(None))]);
        assert_eq!(round.verdict(), Met);
        let round = run(2, &[(0, Some(None)), (1, Some(Some(held)))]);
        assert_eq!(round.verdict(), Pending, "the dead replicas may still answer");
        // Short of r: the failure names r.
        let round = run(2, &[(0, None), (1, None), (2, None), (3, None), (4, None)]);
        assert_eq!((round.verdict(), round.shortfall()), (Failed, (2, 0, false)));
    }

    #[test]
    fn a_replica_not_asked_is_not_repaired() {
        let new = mv(2, "new");
        let mut round = ReadRound::new(plan(&[]), (2, 0), true);
        round.ask(Ask::Quorum);
        round.absorb(&0, Some(Some(new.clone())));
        round.absorb(&1, Some(None));
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
        round.absorb(&0, Some(None));
        round.absorb(&1, Some(Some(tomb)));
        assert!(round.repairs().is_empty());
    }
}
