//! Driving a workload: the load phase, then the run phase in a closed loop (C clients,
//! each sending its next request when the previous one is answered) or an open loop
//! (requests at a target rate whatever the answers; latency measured from when each
//! request was *due*, so a stall delays the requests behind it and shows up in the
//! percentiles instead of hiding: no coordinated omission).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::sync::Semaphore;

use crate::stats::{MachineSampler, Recorder};
use crate::target::{Client, TargetConfig};
use crate::workload::{KeyChooser, Mix, Op, ValueSize, key};

/// Shortest sleep of the open-loop pacer: requests due within it go out together.
const PACER_TICK: Duration = Duration::from_micros(200);

/// How a run ends and paces itself.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub mix: Mix,
    pub value_size: ValueSize,
    /// Closed loop: clients. Open loop: the most requests in flight at once.
    pub concurrency: usize,
    /// Open loop at this many requests per second; closed loop when `None`.
    pub rate: Option<f64>,
    pub duration: Option<Duration>,
    pub operations: Option<u64>,
    /// Send everything to the first node instead of spreading over all of them.
    pub pin: bool,
    pub progress: bool,
}

struct Shared {
    cfg: RunConfig,
    target: TargetConfig,
    keys: Arc<KeyChooser>,
    recorder: Arc<Recorder>,
    issued: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    /// Claims the next operation, or `None` when the run is over.
    fn claim(&self, deadline: Option<Instant>) -> Option<u64> {
        if self.stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        if self.cfg.operations.is_some_and(|max| n >= max) {
            return None;
        }
        Some(n)
    }

    fn node(&self, n: u64) -> usize {
        if self.cfg.pin {
            0
        } else {
            (n % self.target.nodes.len() as u64) as usize
        }
    }
}

/// Executes one operation and records it; `started` is when it was due.
async fn execute(shared: &Shared, client: &mut Client, rng: &mut SmallRng, n: u64, started: Instant) {
    let op = shared.cfg.mix.pick(rng);
    let node = shared.node(n);
    let outcome = match op {
        Op::Read => client.read(node, &key(shared.keys.existing(rng))).await,
        Op::Update => {
            let k = key(shared.keys.existing(rng));
            client.write(node, &k, shared.cfg.value_size.value(rng), None).await
        }
        Op::Insert => {
            let k = key(shared.keys.insert());
            client.write(node, &k, shared.cfg.value_size.value(rng), None).await
        }
        Op::Delete => client.delete(node, &key(shared.keys.existing(rng))).await,
        Op::Rmw => {
            let k = key(shared.keys.existing(rng));
            let read = client.read(node, &k).await;
            match read.error {
                Some(_) => read,
                None => {
                    let value = shared.cfg.value_size.value(rng);
                    client.write(node, &k, value, read.context.as_deref()).await
                }
            }
        }
    };
    shared.recorder.record(op, started.elapsed(), outcome.error);
}

/// Runs the workload; returns how long it ran and what was recorded. Every client
/// connects to every node before the clock starts.
pub async fn run(
    target: &TargetConfig,
    keys: Arc<KeyChooser>,
    cfg: RunConfig,
) -> anyhow::Result<(Duration, Arc<Recorder>)> {
    let mut clients = Vec::with_capacity(cfg.concurrency);
    for _ in 0..cfg.concurrency {
        let mut client = Client::connect(target).await?;
        client.warm_up().await;
        clients.push(client);
    }
    let recorder = Arc::new(Recorder::new());
    // How busy the whole machine was, second by second: a tail on a shared machine may
    // be the machine's, not the target's.
    let sampler = MachineSampler::start(recorder.clone());
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        target: target.clone(),
        keys,
        recorder: recorder.clone(),
        issued: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let started = Instant::now();
    let deadline = cfg.duration.map(|d| started + d);
    let progress = progress_task(recorder.clone(), cfg.duration, cfg.progress);
    match cfg.rate {
        None => {
            let mut workers = Vec::new();
            for (w, mut client) in clients.into_iter().enumerate() {
                let shared = shared.clone();
                workers.push(tokio::spawn(async move {
                    let mut rng = SmallRng::seed_from_u64(0x5eed ^ w as u64);
                    while let Some(n) = shared.claim(deadline) {
                        execute(&shared, &mut client, &mut rng, n, Instant::now()).await;
                    }
                }));
            }
            for w in workers {
                w.await?;
            }
        }
        Some(rate) => {
            let pool = Arc::new(parking_lot::Mutex::new(clients));
            let slots = Arc::new(Semaphore::new(cfg.concurrency));
            let interval = Duration::from_secs_f64(1.0 / rate);
            // The pacer runs on a thread of its own and sleeps with the OS timer (tens of
            // microseconds), not on the runtime: there, its sleeps would end only on the
            // runtime's millisecond ticks and behind whatever tasks are queued, sending a
            // millisecond's requests in one burst up to a millisecond late, which the
            // latencies (counted from when each request was due) would blame on the target.
            let runtime = tokio::runtime::Handle::current();
            let pacer = {
                let shared = shared.clone();
                tokio::task::spawn_blocking(move || {
                    let mut due = Instant::now();
                    let mut tasks = Vec::new();
                    'dispatch: loop {
                        let now = Instant::now();
                        while due <= now {
                            let Some(n) = shared.claim(deadline) else {
                                break 'dispatch;
                            };
                            let (shared, pool, slots, intended) = (shared.clone(), pool.clone(), slots.clone(), due);
                            tasks.push(runtime.spawn(async move {
                                // How late the tool itself started the request (it counts
                                // in the latency, but is reported on its own too).
                                shared.recorder.record_lag(intended.elapsed());
                                // Waiting for a free slot counts: the latency clock started at `intended`.
                                let _permit = slots.acquire_owned().await.expect("semaphore never closed");
                                let mut client = pool.lock().pop().expect("one client per slot");
                                let mut rng = SmallRng::seed_from_u64(n);
                                execute(&shared, &mut client, &mut rng, n, intended).await;
                                pool.lock().push(client);
                            }));
                            due += interval;
                        }
                        tasks.retain(|t| !t.is_finished());
                        // Each wake-up hands tasks to the runtime (waking one of its
                        // threads): at high rates, send what is due every PACER_TICK
                        // rather than request by request, so the tool's own CPU stays low.
                        std::thread::sleep(due.saturating_duration_since(Instant::now()).max(PACER_TICK));
                    }
                    tasks
                })
            };
            for t in pacer.await? {
                t.await?;
            }
        }
    }
    let elapsed = started.elapsed();
    sampler.finish();
    shared.stop.store(true, Ordering::Relaxed);
    if let Some(p) = progress {
        p.abort();
    }
    Ok((elapsed, recorder))
}

/// Loads records `0..records` (YCSB's load phase) with `concurrency` writers. Returns
/// how long it took and the failed writes by error class.
pub async fn load(
    target: &TargetConfig,
    records: u64,
    value_size: ValueSize,
    concurrency: usize,
    show: bool,
) -> anyhow::Result<(Duration, BTreeMap<String, u64>)> {
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(parking_lot::Mutex::new(BTreeMap::<String, u64>::new()));
    let bar = if show {
        ProgressBar::new(records)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("load {bar:40} {pos}/{len} records, {per_sec}, eta {eta}")
            .expect("valid template"),
    );
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let mut client = Client::connect(target).await?;
        let (next, failed, bar, nodes) = (next.clone(), failed.clone(), bar.clone(), target.nodes.len());
        workers.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(w as u64);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= records {
                    break;
                }
                let out = client
                    .write((i % nodes as u64) as usize, &key(i), value_size.value(&mut rng), None)
                    .await;
                if let Some(class) = out.error {
                    *failed.lock().entry(class).or_default() += 1;
                }
                bar.inc(1);
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    bar.finish_and_clear();
    let failed = failed.lock().clone();
    Ok((started.elapsed(), failed))
}

/// Live progress on the terminal: elapsed, ops/s, errors and p99 of the last half second.
fn progress_task(
    recorder: Arc<Recorder>,
    duration: Option<Duration>,
    show: bool,
) -> Option<tokio::task::JoinHandle<()>> {
    if !show {
        return None;
    }
    let bar = match duration {
        Some(d) => ProgressBar::new(d.as_secs()),
        None => ProgressBar::new_spinner(),
    };
    bar.set_style(ProgressStyle::with_template("{bar:30} {elapsed_precise} {msg}").expect("valid template"));
    Some(tokio::spawn(async move {
        let mut errors = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let w = recorder.take_window();
            errors += w.errors;
            bar.set_position(recorder.elapsed().as_secs());
            bar.set_message(format!(
                "{:>8.0} ops/s  errors {:>6}  p99 {:>7.2} ms",
                w.ops as f64 * 2.0,
                errors,
                w.p99_us as f64 / 1000.0
            ));
        }
    }))
}
