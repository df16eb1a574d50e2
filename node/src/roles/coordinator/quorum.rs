//! Counting replica answers against a quorum.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not decided: more answers are needed and possible.
    Pending,
    /// At least `required` replicas succeeded.
    Met,
    /// Too many failed for `required` to be reachable.
    Failed,
}

/// Tracks `total` outstanding replica requests of which `required` must succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quorum {
    required: usize,
    pending: usize,
    succeeded: usize,
}

impl Quorum {
    pub fn new(required: usize, total: usize) -> Self {
        Quorum {
            required,
            pending: total,
            succeeded: 0,
        }
    }

    pub fn record(&mut self, success: bool) -> Verdict {
        debug_assert!(self.pending > 0, "more answers than requests");
        self.pending = self.pending.saturating_sub(1);
        if success {
            self.succeeded += 1;
        }
        self.verdict()
    }

    pub fn verdict(&self) -> Verdict {
        if self.succeeded >= self.required {
            Verdict::Met
        } else if self.succeeded + self.pending < self.required {
            Verdict::Failed
        } else {
            Verdict::Pending
        }
    }

    pub fn required(&self) -> usize {
        self.required
    }

    pub fn succeeded(&self) -> usize {
        self.succeeded
    }

    pub fn pending(&self) -> usize {
        self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        // (required, total, answers, verdict after all answers)
        let cases: &[(usize, usize, &[bool], Verdict)] = &[
            (2, 3, &[], Verdict::Pending),
            (2, 3, &[true], Verdict::Pending),
            (2, 3, &[true, true], Verdict::Met),
            (2, 3, &[false, false], Verdict::Failed),
            (2, 3, &[false, true], Verdict::Pending),
            (2, 3, &[false, true, true], Verdict::Met),
            (1, 1, &[true], Verdict::Met),
            (2, 1, &[], Verdict::Failed),
            (3, 3, &[true, true, false], Verdict::Failed),
            (1, 0, &[], Verdict::Failed),
        ];
        for &(required, total, answers, expected) in cases {
            let mut q = Quorum::new(required, total);
            for &a in answers {
                q.record(a);
            }
            assert_eq!(
                q.verdict(),
                expected,
                "required {required} of {total} after {answers:?}"
            );
        }
    }
}
