//! Hybrid logical clock (Kulkarni et al.): timestamps that follow wall-clock time when
//! clocks behave, never go backwards, and order an event after everything its node has
//! observed, even across nodes whose clocks disagree.
//!
//! A [`Timestamp`] packs milliseconds since the Unix epoch in the high 48 bits and a
//! logical counter in the low 16. The clock takes the wall time as an argument so it can
//! be tested without a real clock.

use std::fmt;

use serde::{Deserialize, Serialize};

const LOGICAL_BITS: u32 = 16;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;

/// An HLC reading; totally ordered, comparable across nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn new(physical_ms: u64, logical: u16) -> Self {
        Timestamp((physical_ms << LOGICAL_BITS) | logical as u64)
    }

    pub fn physical_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    pub fn logical(self) -> u16 {
        (self.0 & LOGICAL_MASK) as u16
    }

    /// The smallest timestamp greater than `self`.
    pub fn successor(self) -> Self {
        Timestamp(self.0.saturating_add(1))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.physical_ms(), self.logical())
    }
}

/// The clock of one node. Every reading is greater than every earlier reading and every
/// timestamp passed to [`Hlc::observe`] (within the drift bound).
#[derive(Clone, Debug)]
pub struct Hlc {
    last: Timestamp,
    /// Remote timestamps further than this ahead of our wall clock are not adopted: one
    /// node with a broken clock must not drag the whole cluster into the future.
    max_drift_ms: u64,
}

/// A remote timestamp was too far ahead of the local wall clock to adopt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("remote timestamp {remote} is {ahead_ms} ms ahead of the local clock (limit {limit_ms} ms)")]
pub struct ClockDrift {
    pub remote: Timestamp,
    pub ahead_ms: u64,
    pub limit_ms: u64,
}

impl Hlc {
    pub fn new(max_drift_ms: u64) -> Self {
        Hlc {
            last: Timestamp::default(),
            max_drift_ms,
        }
    }

    /// A fresh timestamp for a local event at wall time `wall_ms`.
    pub fn now(&mut self, wall_ms: u64) -> Timestamp {
        let next = if wall_ms > self.last.physical_ms() {
            Timestamp::new(wall_ms, 0)
        } else {
            // Wall clock stalled or went backwards: count logically. When the counter is
            // exhausted, borrow a millisecond from the future (successor handles the carry).
            self.last.successor()
        };
        self.last = next;
        next
    }

    /// Takes a timestamp seen in a message into account, so later readings order after it.
    pub fn observe(&mut self, remote: Timestamp, wall_ms: u64) -> Result<(), ClockDrift> {
        let ahead_ms = remote.physical_ms().saturating_sub(wall_ms);
        if ahead_ms > self.max_drift_ms {
            return Err(ClockDrift {
                remote,
                ahead_ms,
                limit_ms: self.max_drift_ms,
            });
        }
        self.last = self.last.max(remote);
        Ok(())
    }

    /// Continues a clock that, before a restart, issued no timestamp past `physical_ms`:
    /// every later reading is greater than all of those, whatever the wall clock says.
    pub fn resume_after(&mut self, physical_ms: u64) {
        self.last = self.last.max(Timestamp::new(physical_ms, u16::MAX));
    }

    pub fn last(&self) -> Timestamp {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn follows_wall_clock_when_it_advances() {
        let mut c = Hlc::new(1000);
        assert_eq!(c.now(100), Timestamp::new(100, 0));
        assert_eq!(c.now(105), Timestamp::new(105, 0));
    }

    #[test]
    fn counts_logically_when_wall_clock_goes_back() {
        let mut c = Hlc::new(1000);
        c.now(100);
        assert_eq!(c.now(90), Timestamp::new(100, 1));
        assert_eq!(c.now(100), Timestamp::new(100, 2));
    }

    #[test]
    fn logical_overflow_carries_into_milliseconds() {
        let mut c = Hlc::new(1000);
        c.observe(Timestamp::new(100, u16::MAX), 100).unwrap();
        assert_eq!(c.now(100), Timestamp::new(101, 0));
    }

    #[test]
    fn resumes_past_a_recorded_millisecond_whatever_the_wall_clock_says() {
        let mut c = Hlc::new(1000);
        c.resume_after(500);
        assert_eq!(c.now(100), Timestamp::new(501, 0));
        assert_eq!(c.now(900), Timestamp::new(900, 0));
        // Never moves a clock back.
        c.resume_after(10);
        assert!(c.now(900) > Timestamp::new(900, 0));
    }

    #[test]
    fn rejects_remote_far_in_the_future() {
        let mut c = Hlc::new(1000);
        let err = c.observe(Timestamp::new(10_000, 0), 100).unwrap_err();
        assert_eq!(err.ahead_ms, 9_900);
        assert_eq!(c.now(100), Timestamp::new(100, 0));
    }

    proptest! {
        #[test]
        fn readings_increase_and_follow_observations(
            events in prop::collection::vec((any::<bool>(), 0u64..1_000, 0u64..1_000, any::<u16>()), 1..50)
        ) {
            let mut c = Hlc::new(500);
            let mut prev = Timestamp::default();
            let mut observed = Timestamp::default();
            for (is_observe, wall, remote_ms, remote_l) in events {
                if is_observe {
                    let remote = Timestamp::new(remote_ms, remote_l);
                    if c.observe(remote, wall).is_ok() {
                        observed = observed.max(remote);
                    }
                } else {
                    let t = c.now(wall);
                    prop_assert!(t > prev, "clock went backwards: {t} after {prev}");
                    prop_assert!(t > observed);
                    prop_assert!(t.physical_ms() >= wall);
                    prev = t;
                }
            }
        }
    }
}
