//! A token bucket: `rate` tokens per second, bursts of up to `burst`.

/// Time is passed in (milliseconds on any monotonic clock).
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate_per_sec: f64,
    burst: f64,
    tokens: f64,
    last_ms: u64,
}

impl TokenBucket {
    pub fn new(rate_per_sec: f64, burst: f64, now_ms: u64) -> Self {
        TokenBucket {
            rate_per_sec,
            burst,
            tokens: burst,
            last_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * self.rate_per_sec).min(self.burst);
        self.last_ms = self.last_ms.max(now_ms);
    }

    /// Takes `n` tokens, going into debt if needed; returns how long to wait (ms) until the
    /// debt is paid, 0 when there was enough.
    pub fn take(&mut self, n: f64, now_ms: u64) -> u64 {
        self.refill(now_ms);
        self.tokens -= n;
        if self.tokens >= 0.0 {
            0
        } else {
            ((-self.tokens) / self.rate_per_sec * 1000.0).ceil() as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_to_the_rate_after_the_burst() {
        let mut b = TokenBucket::new(100.0, 50.0, 0);
        assert_eq!(b.take(50.0, 0), 0);
        // 100 more at 100/s: one second of debt.
        assert_eq!(b.take(100.0, 0), 1000);
        // After that second the debt is paid and the bucket is empty.
        assert_eq!(b.take(0.0, 1000), 0);
        assert_eq!(b.take(10.0, 1000), 100);
        // Refill never exceeds the burst.
        assert_eq!(b.take(50.0, 100_000), 0);
        assert_eq!(b.take(1.0, 100_000), 10);
    }
}
