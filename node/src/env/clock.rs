//! Time as the node sees it, behind one small trait so that tests and the simulator can
//! set it.
//!
//! Two kinds of time matter:
//! - *wall* time (milliseconds since the Unix epoch): stamps last-writer-wins versions,
//!   tombstones and hints, and is compared across nodes, so clock skew shows up here;
//! - *monotonic* time (milliseconds since the node started): the failure detector's
//!   silences, rate limits and "how long ago" figures.
//!
//! Timers and deadlines use tokio's clock (`tokio::time`), which the simulator runs
//! paused and advances itself; [`SystemClock`] reads its monotonic time from the same
//! clock, so both agree.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch, as this node's wall clock says.
    fn wall_ms(&self) -> u64;
    /// Milliseconds since an origin fixed when the clock was made; never goes back.
    fn monotonic_ms(&self) -> u64;
}

/// The operating system's wall clock and tokio's monotonic clock.
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    pub fn new() -> SystemClock {
        SystemClock { origin: Instant::now() }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn wall_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn monotonic_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }
}

/// A clock that tokio's (possibly paused) time drives, with a wall clock that starts at
/// `wall_origin_ms` and can be set off by any skew, also backwards. The simulator gives
/// each node one.
pub struct SkewedClock {
    origin: Instant,
    wall_origin_ms: u64,
    skew_ms: AtomicI64,
}

impl SkewedClock {
    pub fn new(wall_origin_ms: u64, skew_ms: i64) -> SkewedClock {
        SkewedClock {
            origin: Instant::now(),
            wall_origin_ms,
            skew_ms: AtomicI64::new(skew_ms),
        }
    }

    /// Moves the wall clock by `skew_ms` relative to true time (a jump if it changes).
    pub fn set_skew(&self, skew_ms: i64) {
        self.skew_ms.store(skew_ms, Ordering::Relaxed);
    }

    pub fn skew_ms(&self) -> i64 {
        self.skew_ms.load(Ordering::Relaxed)
    }
}

impl Clock for SkewedClock {
    fn wall_ms(&self) -> u64 {
        let elapsed = self.origin.elapsed().as_millis() as i64;
        (self.wall_origin_ms as i64 + elapsed + self.skew_ms()).max(0) as u64
    }

    fn monotonic_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }
}

/// A clock that moves only when told to, for unit tests of time-dependent logic.
#[derive(Default)]
pub struct ManualClock {
    wall_ms: AtomicU64,
    monotonic_ms: AtomicU64,
}

impl ManualClock {
    pub fn new(wall_ms: u64) -> ManualClock {
        ManualClock {
            wall_ms: AtomicU64::new(wall_ms),
            monotonic_ms: AtomicU64::new(0),
        }
    }

    /// Moves both clocks forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.wall_ms.fetch_add(ms, Ordering::Relaxed);
        self.monotonic_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Sets the wall clock alone (it may go back, as a real one can).
    pub fn set_wall(&self, wall_ms: u64) {
        self.wall_ms.store(wall_ms, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn wall_ms(&self) -> u64 {
        self.wall_ms.load(Ordering::Relaxed)
    }

    fn monotonic_ms(&self) -> u64 {
        self.monotonic_ms.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told_and_its_wall_may_go_back() {
        let c = ManualClock::new(1_000);
        assert_eq!((c.wall_ms(), c.monotonic_ms()), (1_000, 0));
        c.advance(250);
        assert_eq!((c.wall_ms(), c.monotonic_ms()), (1_250, 250));
        c.set_wall(900);
        assert_eq!((c.wall_ms(), c.monotonic_ms()), (900, 250));
    }

    #[tokio::test(start_paused = true)]
    async fn skewed_clock_follows_tokio_time_plus_its_skew() {
        let c = SkewedClock::new(10_000, -3_000);
        assert_eq!(c.wall_ms(), 7_000);
        tokio::time::advance(std::time::Duration::from_millis(500)).await;
        assert_eq!((c.wall_ms(), c.monotonic_ms()), (7_500, 500));
        c.set_skew(2_000);
        assert_eq!(c.wall_ms(), 12_500);
        assert_eq!(c.monotonic_ms(), 500, "skew never moves monotonic time");
    }
}
