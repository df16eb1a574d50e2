//! Recording latencies (HdrHistogram, microseconds) per operation, errors by class, and a
//! per-second time series.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// How the machine's CPUs spent each second, and the whole run, where known.
    machine_seconds: Vec<Option<MachineCpu>>,
    machine_run: Option<MachineCpu>,
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
                machine_seconds: Vec::new(),
                machine_run: None,
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

    /// How the machine's CPUs spent second `second` of the run.
    pub fn record_machine_second(&self, second: usize, cpu: MachineCpu) {
        let mut g = self.inner.lock();
        if g.machine_seconds.len() <= second {
            g.machine_seconds.resize(second + 1, None);
        }
        g.machine_seconds[second] = Some(cpu);
    }

    /// How the machine's CPUs spent the whole run.
    pub fn record_machine_run(&self, cpu: MachineCpu) {
        self.inner.lock().machine_run = Some(cpu);
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
                machine: g.machine_seconds.get(i).copied().flatten(),
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
            machine_cpu: g.machine_run,
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
    /// How the machine's CPUs (all of them, every process) spent the second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<MachineCpu>,
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
    /// How the machine's CPUs (all of them, every process) spent the run: whether the
    /// target and the tool had the machine to themselves, or it had no time to spare.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_cpu: Option<MachineCpu>,
}

/// How a machine's CPUs spent a span of time, as shares of it (each 0 to 1, together
/// 1), from the kernel's counters for all CPUs together (`/proc/stat`).
///
/// Idle, iowait and steal are measured against the wall clock: the kernel counts idle
/// time exactly (from when each CPU stopped and restarted its tick), but it counts busy
/// time only by sampling a tick, which a tickless kernel misses when work comes in short
/// bursts between idle spells (seen here: at 2,500 requests/s the ticks saw from a fifth
/// to all of the busy time that the processes' own exact CPU times add up to, varying
/// from run to run). So busy time is what the wall clock leaves after idle, iowait and
/// steal, split between user, system and irq in the proportions the ticks saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct MachineCpu {
    /// Running processes (user and nice).
    pub user: f64,
    /// Running the kernel for processes.
    pub system: f64,
    /// Interrupts and softirqs (much of the network stack, loopback included).
    pub irq: f64,
    /// Idle, waiting for I/O.
    pub iowait: f64,
    /// Idle.
    pub idle: f64,
    /// Wanted to run while the hypervisor ran someone else: time the machine did not
    /// have, whatever the processes on it did.
    pub steal: f64,
}

impl MachineCpu {
    /// The mean of several spans' shares (each span weighing the same), `None` for none.
    pub fn mean<'a>(spans: impl IntoIterator<Item = &'a MachineCpu>) -> Option<MachineCpu> {
        let mut n = 0.0;
        let mut sum = MachineCpu::default();
        for c in spans {
            n += 1.0;
            sum.user += c.user;
            sum.system += c.system;
            sum.irq += c.irq;
            sum.iowait += c.iowait;
            sum.idle += c.idle;
            sum.steal += c.steal;
        }
        (n > 0.0).then(|| MachineCpu {
            user: sum.user / n,
            system: sum.system / n,
            irq: sum.irq / n,
            iowait: sum.iowait / n,
            idle: sum.idle / n,
            steal: sum.steal / n,
        })
    }

    /// Busy: user, system and irq together.
    pub fn busy(&self) -> f64 {
        self.user + self.system + self.irq
    }
}

/// The kernel's cumulative CPU counters, in clock ticks (`USER_HZ`): the `cpu` line of
/// `/proc/stat`, and how many CPUs it sums.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    cpus: u32,
    user: u64,
    nice: u64,
    system: u64,
    idle: u64,
    iowait: u64,
    irq: u64,
    softirq: u64,
    steal: u64,
}

impl CpuTimes {
    /// The counters in the text of `/proc/stat`, or `None` without a well-formed `cpu`
    /// line or any `cpuN` line. (Guest time is already counted in user time, so it is
    /// not read.)
    pub fn parse(stat: &str) -> Option<CpuTimes> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let cpus = stat
            .lines()
            .filter(|l| {
                l.strip_prefix("cpu")
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            })
            .count() as u32;
        if cpus == 0 {
            return None;
        }
        let mut fields = line.split_whitespace().skip(1).map(|f| f.parse::<u64>());
        let mut next = || fields.next().map_or(Some(0), |f| f.ok());
        let (user, nice, system, idle) = (next()?, next()?, next()?, next()?);
        let (iowait, irq, softirq, steal) = (next()?, next()?, next()?, next()?);
        Some(CpuTimes {
            cpus,
            user,
            nice,
            system,
            idle,
            iowait,
            irq,
            softirq,
            steal,
        })
    }

    /// This machine's counters now; `None` where there is no `/proc/stat`.
    pub fn now() -> Option<CpuTimes> {
        CpuTimes::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// How the CPUs spent the `wall` of time from `earlier` to these counters, with
    /// `ticks_per_second` (`USER_HZ`); `None` for no time, or counters that went
    /// backwards.
    pub fn since(&self, earlier: &CpuTimes, wall: Duration, ticks_per_second: f64) -> Option<MachineCpu> {
        let d = |now: u64, then: u64| now.checked_sub(then).map(|t| t as f64);
        let user = d(self.user + self.nice, earlier.user + earlier.nice)?;
        let system = d(self.system, earlier.system)?;
        let irq = d(self.irq + self.softirq, earlier.irq + earlier.softirq)?;
        let iowait = d(self.iowait, earlier.iowait)?;
        let idle = d(self.idle, earlier.idle)?;
        let steal = d(self.steal, earlier.steal)?;
        let capacity = self.cpus as f64 * wall.as_secs_f64() * ticks_per_second;
        if capacity <= 0.0 {
            return None;
        }
        // Idle, iowait and steal against the wall clock (the counters and the clock are
        // read a moment apart, so their sum may pass 1 by a little: scaled back).
        let (mut idle, mut iowait, mut steal) = (idle / capacity, iowait / capacity, steal / capacity);
        let not_busy = idle + iowait + steal;
        if not_busy > 1.0 {
            (idle, iowait, steal) = (idle / not_busy, iowait / not_busy, steal / not_busy);
        }
        let busy = 1.0 - (idle + iowait + steal);
        let ticked = user + system + irq;
        let (user, system, irq) = if ticked > 0.0 {
            (busy * user / ticked, busy * system / ticked, busy * irq / ticked)
        } else {
            // Busy without a tick to say how: counted as processes running.
            (busy, 0.0, 0.0)
        };
        Some(MachineCpu {
            user,
            system,
            irq,
            iowait,
            idle,
            steal,
        })
    }
}

/// Clock ticks per second in `/proc/stat` (`USER_HZ`, almost always 100).
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// Samples the machine's CPU counters every second of a run (from the recorder's start)
/// into `recorder`, and over the whole run when stopped. Does nothing where the
/// counters cannot be read.
pub struct MachineSampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MachineSampler {
    pub fn start(recorder: Arc<Recorder>) -> MachineSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = CpuTimes::now().map(|first| {
            let stop = stop.clone();
            let first_at = Instant::now();
            let hz = ticks_per_second();
            std::thread::spawn(move || {
                let (mut last, mut last_at) = (first, first_at);
                for second in 0.. {
                    let until = recorder.start + Duration::from_secs(second as u64 + 1);
                    // Woken early by `stop`; spurious wake-ups just loop.
                    while !stop.load(Ordering::Acquire) && Instant::now() < until {
                        std::thread::park_timeout(until.saturating_duration_since(Instant::now()));
                    }
                    let Some(now) = CpuTimes::now() else { return };
                    let now_at = Instant::now();
                    if stop.load(Ordering::Acquire) {
                        if let Some(cpu) = now.since(&first, now_at - first_at, hz) {
                            recorder.record_machine_run(cpu);
                        }
                        return;
                    }
                    if let Some(cpu) = now.since(&last, now_at - last_at, hz) {
                        recorder.record_machine_second(second, cpu);
                    }
                    (last, last_at) = (now, now_at);
                }
            })
        });
        MachineSampler { stop, thread }
    }

    /// Records the whole run's shares and ends the sampling (as dropping it does).
    pub fn finish(self) {}
}

impl Drop for MachineSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
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

    const STAT: &str =
        "cpu  100 5 40 800 10 1 4 20 0 0\ncpu0 50 2 20 400 5 0 2 10 0 0\ncpu1 50 3 20 400 5 1 2 10 0 0\nintr 1 2 3\n";

    #[test]
    fn reads_the_machine_counters_and_shares_a_span_between_them() {
        let before = CpuTimes::parse(STAT).unwrap();
        let after = CpuTimes::parse("cpu  160 5 60 900 10 1 9 40 0 0\ncpu0 0\ncpu1 0\n").unwrap();
        let second = Duration::from_secs(1);
        let near = |a: f64, b: f64| (a - b).abs() < 1e-12;
        // Two CPUs for a second at 100 ticks a second: 200 ticks of capacity. Idle 100 and
        // steal 20 of them, against the clock; the rest, 0.4, was busy, split as the
        // ticks saw it (60 user, 20 system, 5 softirq: 85 ticks, where the clock says 80).
        let span = after.since(&before, second, 100.0).unwrap();
        assert!(
            near(span.idle, 0.5) && near(span.steal, 0.1) && near(span.iowait, 0.0),
            "{span:?}"
        );
        assert!(near(span.busy(), 0.4), "{span:?}");
        assert!(
            near(span.user, 0.4 * 60.0 / 85.0) && near(span.system, 0.4 * 20.0 / 85.0),
            "{span:?}"
        );
        assert!(near(span.irq, 0.4 * 5.0 / 85.0), "{span:?}");
        // Ticks that missed busy time entirely (a tickless kernel, short bursts of work):
        // the clock still says how much there was.
        let quiet = CpuTimes::parse("cpu  100 5 40 860 10 1 4 20 0 0\ncpu0 0\ncpu1 0\n").unwrap();
        let span = quiet.since(&before, second, 100.0).unwrap();
        assert!(
            near(span.idle, 0.3) && near(span.user, 0.7) && near(span.busy(), 0.7),
            "{span:?}"
        );
        // Counters read a moment after the clock: shares scaled back to a whole.
        let late = CpuTimes::parse("cpu  100 5 40 1010 10 1 4 20 0 0\ncpu0 0\ncpu1 0\n").unwrap();
        let span = late.since(&before, second, 100.0).unwrap();
        assert!(near(span.idle, 1.0) && near(span.busy(), 0.0), "{span:?}");
        // No time passed, counters that went backwards, no cpu line or no CPUs: nothing.
        assert_eq!(before.since(&before, Duration::ZERO, 100.0), None);
        assert_eq!(before.since(&after, second, 100.0), None);
        assert_eq!(CpuTimes::parse("cpu0 1 2 3 4\n"), None);
        assert_eq!(CpuTimes::parse("cpu  1 2 3 4\n"), None);
        assert_eq!(CpuTimes::parse("cpu  1 x 3 4\ncpu0 1\n"), None);
        // An old kernel without the later columns (iowait onwards) counts them as 0.
        let old = CpuTimes::parse("cpu  1 2 3 4\ncpu0 1 2 3 4\n").unwrap();
        let new = CpuTimes::parse("cpu  2 2 3 54\ncpu0 2 2 3 54\n").unwrap();
        let span = new.since(&old, second, 100.0).unwrap();
        assert!(
            near(span.idle, 0.5) && near(span.steal, 0.0) && near(span.user, 0.5),
            "{span:?}"
        );
    }

    #[test]
    fn the_mean_of_spans_weighs_each_the_same() {
        let busy = MachineCpu {
            user: 1.0,
            ..MachineCpu::default()
        };
        let idle = MachineCpu {
            idle: 0.5,
            steal: 0.5,
            ..MachineCpu::default()
        };
        let m = MachineCpu::mean([&busy, &idle, &idle, &busy]).unwrap();
        assert_eq!((m.user, m.idle, m.steal), (0.5, 0.25, 0.25));
        assert_eq!(MachineCpu::mean([]), None);
    }

    #[test]
    fn machine_seconds_land_in_the_series() {
        let r = Recorder::new();
        r.record(Op::Read, Duration::from_millis(1), None);
        let busy = MachineCpu {
            user: 1.0,
            ..MachineCpu::default()
        };
        r.record_machine_second(0, busy);
        // A second with no request gets no point.
        r.record_machine_second(3, busy);
        r.record_machine_run(busy);
        let s = r.summary(Duration::from_secs(1));
        assert_eq!(s.timeseries.len(), 1);
        assert_eq!(s.timeseries[0].machine, Some(busy));
        assert_eq!(s.machine_cpu, Some(busy));
        assert_eq!(Recorder::new().summary(Duration::from_secs(1)).machine_cpu, None);
    }

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
