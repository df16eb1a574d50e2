//! Recording latencies (HdrHistogram, microseconds) per operation, errors by class, and a
//! per-second time series.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;

use crate::workload::Op;

/// Highest latency tracked: anything slower is clamped (and shows as the max).
const MAX_LATENCY_US: u64 = 60_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

struct OpStats {
    hist: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

struct Second {
    ops: u64,
    errors: u64,
    hist: Histogram<u64>,
}

struct Inner {
    ops: BTreeMap<Op, OpStats>,
    seconds: Vec<Second>,
    /// Since the last progress refresh.
    window: Histogram<u64>,
    window_ops: u64,
    window_errors: u64,
    /// Open loop: how late each request was started after it was due.
    lag: Option<Histogram<u64>>,
}

/// Shared by every worker; cheap to lock (two threads of workers).
pub struct Recorder {
    start: Instant,
    /// Wall-clock time of `start`, to line the per-second series up with the servers'
    /// own logs (flushes, compactions).
    started_unix_ms: u64,
    inner: Mutex<Inner>,
}

/// Progress since the last call.
pub struct Window {
    pub ops: u64,
    pub errors: u64,
    pub p99_us: u64,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            started_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            inner: Mutex::new(Inner {
                ops: BTreeMap::new(),
                seconds: Vec::new(),
                window: histogram(),
                window_ops: 0,
                window_errors: 0,
                lag: None,
            }),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// One finished operation: its latency, and its error class if it failed.
    pub fn record(&self, op: Op, latency: Duration, error: Option<String>) {
        let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        let second = self.start.elapsed().as_secs() as usize;
        let mut g = self.inner.lock();
        let inner = &mut *g;
        while inner.seconds.len() <= second {
            inner.seconds.push(Second {
                ops: 0,
                errors: 0,
                hist: histogram(),
            });
        }
        let stats = inner.ops.entry(op).or_insert_with(|| OpStats {
            hist: histogram(),
            errors: BTreeMap::new(),
        });
        match error {
            None => {
                stats.hist.saturating_record(us);
                inner.seconds[second].ops += 1;
                inner.seconds[second].hist.saturating_record(us);
                inner.window.saturating_record(us);
                inner.window_ops += 1;
            }
            Some(class) => {
                *stats.errors.entry(class).or_default() += 1;
                inner.seconds[second].errors += 1;
                inner.window_errors += 1;
            }
        }
    }

    /// Open loop: a request was started `lag` after it was due.
    pub fn record_lag(&self, lag: Duration) {
        let us = (lag.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        self.inner
            .lock()
            .lag
            .get_or_insert_with(histogram)
            .saturating_record(us);
    }

    pub fn take_window(&self) -> Window {
        let mut g = self.inner.lock();
        let w = Window {
            ops: g.window_ops,
            errors: g.window_errors,
            p99_us: g.window.value_at_quantile(0.99),
        };
        g.window.reset();
        g.window_ops = 0;
        g.window_errors = 0;
        w
    }

    pub fn total_ops(&self) -> u64 {
        self.inner
            .lock()
            .ops
            .values()
            .map(|s| s.hist.len() + s.errors.values().sum::<u64>())
            .sum()
    }

    /// The summary of everything recorded over `duration`.
    pub fn summary(&self, duration: Duration) -> Summary {
        let g = self.inner.lock();
        let secs = duration.as_secs_f64().max(1e-9);
        let mut all = histogram();
        let mut operations = BTreeMap::new();
        let mut total_errors = 0;
        for (op, s) in &g.ops {
            all.add(&s.hist).expect("same bounds");
            let errors: u64 = s.errors.values().sum();
            total_errors += errors;
            operations.insert(
                op.name().to_string(),
                OpSummary {
                    count: s.hist.len(),
                    errors,
                    throughput: s.hist.len() as f64 / secs,
                    latency_us: Latency::of(&s.hist),
                    errors_by_class: s.errors.clone(),
                },
            );
        }
        let timeseries = g
            .seconds
            .iter()
            .enumerate()
            .map(|(i, s)| Point {
                second: i as u64,
                ops: s.ops,
                errors: s.errors,
                p50_us: s.hist.value_at_quantile(0.5),
                p99_us: s.hist.value_at_quantile(0.99),
                max_us: s.hist.max(),
            })
            .collect();
        let distribution = [50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0]
            .iter()
            .map(|&p| Percentile {
                percentile: p,
                latency_us: all.value_at_percentile(p),
            })
            .collect();
        Summary {
            started_unix_ms: self.started_unix_ms,
            duration_s: secs,
            total: OpSummary {
                count: all.len(),
                errors: total_errors,
                throughput: all.len() as f64 / secs,
                latency_us: Latency::of(&all),
                errors_by_class: BTreeMap::new(),
            },
            operations,
            timeseries,
            distribution,
            dispatch_lag_us: g.lag.as_ref().map(Latency::of),
            tool_cpu_cores: None,
        }
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    #[serde(rename = "p99.9")]
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        Latency {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct OpSummary {
    /// Successful operations.
    pub count: u64,
    pub errors: u64,
    /// Successful operations per second.
    pub throughput: f64,
    /// Latency of successful operations, in microseconds.
    pub latency_us: Latency,
    pub errors_by_class: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct Point {
    pub second: u64,
    pub ops: u64,
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    /// The slowest request of the second.
    #[serde(default)]
    pub max_us: u64,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Percentile {
    pub percentile: f64,
    pub latency_us: u64,
}

#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct Summary {
    /// When the run started (unix ms); second 0 of `timeseries` begins then.
    #[serde(default)]
    pub started_unix_ms: u64,
    pub duration_s: f64,
    pub total: OpSummary,
    pub operations: BTreeMap<String, OpSummary>,
    pub timeseries: Vec<Point>,
    pub distribution: Vec<Percentile>,
    /// Open loop only: how long after it was due the tool started each request, a part
    /// of every latency above that is the load generator's own (a busy machine delays
    /// it). Large values mean the tool, not the target, is the bottleneck.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch_lag_us: Option<Latency>,
    /// CPU the load tool itself used while the run lasted, in cores (CPU seconds per
    /// second): on a machine it shares with the target, what it took from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_cpu_cores: Option<f64>,
}

/// CPU time this process has used so far (user and system), in seconds.
pub fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return 0.0;
        }
        usage.assume_init()
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_latencies_errors_and_seconds() {
        let r = Recorder::new();
        for i in 1..=100u64 {
            r.record(Op::Read, Duration::from_micros(i * 10), None);
        }
        r.record(Op::Update, Duration::from_millis(5), None);
        r.record(Op::Update, Duration::from_millis(1), Some("503 quorum_failed".into()));
        let s = r.summary(Duration::from_secs(2));
        let read = &s.operations["read"];
        assert_eq!(read.count, 100);
        assert!((495..=505).contains(&read.latency_us.p50), "{}", read.latency_us.p50);
        assert!((985..=1001).contains(&read.latency_us.p99));
        assert_eq!(read.throughput, 50.0);
        let update = &s.operations["update"];
        assert_eq!((update.count, update.errors), (1, 1));
        assert_eq!(update.errors_by_class["503 quorum_failed"], 1);
        assert_eq!(s.total.count, 101);
        assert_eq!(s.timeseries[0].ops, 101);
        assert_eq!(s.timeseries[0].errors, 1);
        assert_eq!(r.total_ops(), 102);
        let w = r.take_window();
        assert_eq!((w.ops, w.errors), (101, 1));
        assert_eq!(r.take_window().ops, 0);
    }
}
