//! The one quorum fan-out, for reads and writes alike.
//!
//! A [`Round`] is a pure state machine that decides what to send, how to count the
//! answers and when the quorum is met or lost; [`FanOut`] sends, waits and feeds it the
//! answers. The coordinator answers its client as soon as [`FanOut::decide`] returns,
//! then lets [`FanOut::finish`] gather the late answers (read repair, hints for replicas
//! that turned out to be slow) up to the request's deadline.
//!
//! ```text
//!   start(round, sends) ─► send each ─► answers ─► round.absorb ─► follow-up sends
//!                                              └─► round.verdict: Met / Failed / Pending
//! ```

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::time::{Instant, sleep_until};

use super::quorum::Verdict;

/// What a quorum fan-out decides, without doing any I/O.
pub trait Round {
    /// One request to one node.
    type Send: Clone + Send + 'static;
    type Answer: Send + 'static;
    /// Takes the answer to `send`; returns the requests it calls for in its place.
    fn absorb(&mut self, send: &Self::Send, answer: Self::Answer) -> Vec<Self::Send>;
    fn verdict(&self) -> Verdict;
    /// The patience deadline passed (see [`FanOut::start`]).
    fn lose_patience(&mut self) {}
    /// The round is still undecided at its speculation time (see
    /// [`FanOut::speculate_at`]): the extra requests it sends now.
    fn speculate(&mut self) -> Vec<Self::Send> {
        Vec::new()
    }
}

/// How one request is answered: at once (this node's own copy), or later (a peer's).
pub enum Answered<A> {
    Now(A),
    Later(BoxFuture<'static, A>),
}

type InFlight<R> = FuturesUnordered<BoxFuture<'static, (<R as Round>::Send, <R as Round>::Answer)>>;

/// Sends a round's requests and feeds it the answers.
pub struct FanOut<R: Round, F> {
    round: R,
    in_flight: InFlight<R>,
    send: F,
    deadline: Instant,
    /// When the round is told to stop waiting for some answers it prefers.
    patience: Option<Instant>,
    /// When an undecided round may send more requests.
    speculate: Option<Instant>,
}

impl<R, F> FanOut<R, F>
where
    R: Round,
    F: Fn(&R, R::Send) -> Answered<R::Answer>,
{
    /// Sends `initial` at once; nothing is waited for past `deadline`.
    pub fn start(round: R, initial: Vec<R::Send>, send: F, deadline: Instant, patience: Option<Instant>) -> Self {
        let mut f = FanOut {
            round,
            in_flight: FuturesUnordered::new(),
            send,
            deadline,
            patience,
            speculate: None,
        };
        for s in initial {
            f.launch(s);
        }
        f
    }

    fn launch(&mut self, s: R::Send) {
        match (self.send)(&self.round, s.clone()) {
            Answered::Now(answer) => self.take(s, answer),
            Answered::Later(answer) => self.in_flight.push(Box::pin(async move { (s, answer.await) })),
        }
    }

    /// Lets the round send more requests if it is still undecided at `at` (or has
    /// nothing left in flight before then).
    pub fn speculate_at(&mut self, at: Instant) {
        self.speculate = Some(at.min(self.deadline));
    }

    fn speculate_now(&mut self) {
        self.speculate = None;
        for s in self.round.speculate() {
            self.launch(s);
        }
    }

    /// Nothing is in flight: [`FanOut::finish`] would return at once.
    pub fn idle(&self) -> bool {
        self.in_flight.is_empty()
    }

    fn take(&mut self, s: R::Send, answer: R::Answer) {
        for next in self.round.absorb(&s, answer) {
            self.launch(next);
        }
    }

    /// Waits for answers until the round is decided; past the deadline, or with nothing
    /// left to wait for, an undecided round has failed.
    pub async fn decide(&mut self) -> Verdict {
        // One timer each for the whole wait, not one per answer.
        let deadline = sleep_until(self.deadline);
        let patience = sleep_until(self.patience.unwrap_or(self.deadline));
        let speculate = sleep_until(self.speculate.unwrap_or(self.deadline));
        tokio::pin!(deadline, patience, speculate);
        loop {
            let verdict = self.round.verdict();
            if verdict != Verdict::Pending {
                return verdict;
            }
            // Nothing left to wait for: the extra requests go now rather than later.
            if self.in_flight.is_empty() && self.speculate.is_some() {
                self.speculate_now();
                continue;
            }
            let waiting_patience = self.patience.is_some();
            if self.in_flight.is_empty() && !waiting_patience {
                return Verdict::Failed;
            }
            let waiting_speculation = self.speculate.is_some();
            tokio::select! {
                biased;
                next = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    let (s, answer) = next.expect("not empty");
                    self.take(s, answer);
                }
                () = &mut speculate, if waiting_speculation => self.speculate_now(),
                () = &mut patience, if waiting_patience => {
                    self.patience = None;
                    self.round.lose_patience();
                }
                () = &mut deadline => return Verdict::Failed,
            }
        }
    }

    /// Waits for the remaining answers (and the sends they call for) up to the deadline.
    pub async fn finish(&mut self) {
        let deadline = sleep_until(self.deadline);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                biased;
                next = self.in_flight.next() => match next {
                    Some((s, answer)) => self.take(s, answer),
                    None => return,
                },
                () = &mut deadline => return,
            }
        }
    }

    pub fn round(&self) -> &R {
        &self.round
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::roles::coordinator::quorum::Quorum;

    /// Needs `required` successes; a failed send `n` is retried once as `n + 100`.
    struct Retry {
        quorum: Quorum,
        seen: Vec<u32>,
    }

    impl Round for Retry {
        type Send = u32;
        type Answer = bool;
        fn absorb(&mut self, send: &u32, ok: bool) -> Vec<u32> {
            self.seen.push(*send);
            if !ok && *send < 100 {
                return vec![send + 100];
            }
            self.quorum.record(ok);
            vec![]
        }
        fn verdict(&self) -> Verdict {
            self.quorum.verdict()
        }
    }

    /// Send `n` answers after `n` ms (0: at once); odd sends below 100 fail.
    fn send<R>(_: &R, n: u32) -> Answered<bool> {
        let ok = n >= 100 || n.is_multiple_of(2);
        if n == 0 {
            return Answered::Now(ok);
        }
        Answered::Later(Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(n as u64)).await;
            ok
        }))
    }

    type RetryFanOut = FanOut<Retry, fn(&Retry, u32) -> Answered<bool>>;

    /// A fan-out of `sends` needing `required` successes by `deadline_ms`.
    fn retry(required: usize, sends: Vec<u32>, start: Instant, deadline_ms: u64) -> RetryFanOut {
        let round = Retry {
            quorum: Quorum::new(required, sends.len()),
            seen: vec![],
        };
        FanOut::start(
            round,
            sends,
            send::<Retry>,
            start + Duration::from_millis(deadline_ms),
            None,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn decides_on_the_quorum_then_finishes_with_the_follow_ups() {
        let start = Instant::now();
        let mut f = retry(2, vec![1, 0, 4], start, 1000);
        assert_eq!(f.round().seen, vec![0], "0 answered at once");
        assert_eq!(f.decide().await, Verdict::Met);
        assert_eq!(start.elapsed(), Duration::from_millis(4), "met by 0 and 4");
        f.finish().await;
        assert_eq!(f.round().seen, vec![0, 1, 4, 101], "1 failed and was sent again as 101");
        assert_eq!(start.elapsed(), Duration::from_millis(102));
    }

    #[tokio::test(start_paused = true)]
    async fn an_undecided_round_fails_at_the_deadline() {
        let start = Instant::now();
        let mut f = retry(2, vec![2, 500], start, 50);
        assert_eq!(f.decide().await, Verdict::Failed);
        assert_eq!(start.elapsed(), Duration::from_millis(50));
        f.finish().await;
        assert_eq!(f.round().seen, vec![2], "nothing waited for past the deadline");
    }

    /// Met once `needed` sends answered, or once patience is lost, whichever first.
    struct Patient {
        answered: usize,
        needed: usize,
        patience_lost: bool,
    }

    impl Round for Patient {
        type Send = u32;
        type Answer = bool;
        fn absorb(&mut self, _: &u32, _: bool) -> Vec<u32> {
            self.answered += 1;
            vec![]
        }
        fn verdict(&self) -> Verdict {
            if self.answered >= self.needed || (self.patience_lost && self.answered > 0) {
                Verdict::Met
            } else {
                Verdict::Pending
            }
        }
        fn lose_patience(&mut self) {
            self.patience_lost = true;
        }
    }

    /// Met once `needed` sends answered; speculation sends `extra`.
    struct Speculative {
        answered: Vec<u32>,
        needed: usize,
        extra: Vec<u32>,
    }

    impl Round for Speculative {
        type Send = u32;
        type Answer = bool;
        fn absorb(&mut self, send: &u32, _: bool) -> Vec<u32> {
            self.answered.push(*send);
            vec![]
        }
        fn verdict(&self) -> Verdict {
            if self.answered.len() >= self.needed {
                Verdict::Met
            } else {
                Verdict::Pending
            }
        }
        fn speculate(&mut self) -> Vec<u32> {
            std::mem::take(&mut self.extra)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn speculation_sends_more_at_its_time_or_once_nothing_is_in_flight() {
        // 300 answers late; at 20 the extra send (10 ms) goes and answers first.
        let start = Instant::now();
        let round = Speculative {
            answered: vec![],
            needed: 1,
            extra: vec![10],
        };
        let mut f = FanOut::start(
            round,
            vec![300],
            send::<Speculative>,
            start + Duration::from_secs(1),
            None,
        );
        f.speculate_at(start + Duration::from_millis(20));
        assert_eq!(f.decide().await, Verdict::Met);
        assert_eq!(start.elapsed(), Duration::from_millis(30));
        assert_eq!(f.round().answered, vec![10]);
        // Needing two, with 4 answered and nothing else in flight: the extra goes then,
        // long before the speculation time.
        let start = Instant::now();
        let round = Speculative {
            answered: vec![],
            needed: 2,
            extra: vec![10],
        };
        let mut f = FanOut::start(
            round,
            vec![4],
            send::<Speculative>,
            start + Duration::from_secs(1),
            None,
        );
        f.speculate_at(start + Duration::from_millis(500));
        assert_eq!(f.decide().await, Verdict::Met);
        assert_eq!(start.elapsed(), Duration::from_millis(14));
        // Without a speculation time the extra never goes: the round fails once nothing
        // is left in flight.
        let start = Instant::now();
        let round = Speculative {
            answered: vec![],
            needed: 2,
            extra: vec![10],
        };
        let mut f = FanOut::start(
            round,
            vec![4],
            send::<Speculative>,
            start + Duration::from_secs(1),
            None,
        );
        assert_eq!(f.decide().await, Verdict::Failed);
        assert_eq!(start.elapsed(), Duration::from_millis(4));
        assert!(f.idle());
    }

    #[tokio::test(start_paused = true)]
    async fn patience_is_lost_once_at_its_deadline() {
        let start = Instant::now();
        let round = Patient {
            answered: 0,
            needed: 2,
            patience_lost: false,
        };
        let mut f = FanOut::start(
            round,
            vec![2, 400],
            send::<Patient>,
            start + Duration::from_secs(1),
            Some(start + Duration::from_millis(30)),
        );
        assert_eq!(f.decide().await, Verdict::Met);
        assert_eq!(start.elapsed(), Duration::from_millis(30));
        assert!(f.round().patience_lost);
    }
}
