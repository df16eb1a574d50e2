//! What a node measures as it serves: Prometheus metrics (`GET /metrics`) and the last
//! minute of client latency the web view shows.
//!
//! The crate is `prometheus-client`, the Prometheus project's own Rust client, rather
//! than the `metrics` facade with `metrics-exporter-prometheus`:
//! - its registry is a value, not a process-wide recorder, so each node of the simulator
//!   or of an in-process test cluster counts for itself;
//! - a handle is an `Arc` over atomics (a histogram: a lock over its buckets) that the
//!   hot path keeps; nothing is buffered between scrapes (the exporter keeps histogram
//!   samples until a scrape or an upkeep task drains them);
//! - it encodes OpenMetrics text, which Prometheus scrapes natively.
//!
//! Two kinds of figures:
//! - **events** the request path records as they happen ([`Metrics`]: client requests by
//!   operation and status, quorum failures, replica RPCs by peer and verb, siblings and
//!   value sizes), cheap enough to leave on (`--metrics=false` turns them off);
//! - **state** read at scrape time from what the node already keeps (hints, anti-entropy
//!   reports, members, layout, RocksDB properties, the process): see
//!   `crate::admin::Admin::render_metrics`. Nothing extra is kept for them, and a member
//!   that left simply stops appearing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use dynakv_http_api::KvOp;
use parking_lot::RwLock;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The statuses a `/kv` request can end with, as label values.
/// `499`: the client closed the connection before the answer (as nginx counts it).
const STATUSES: [&str; 16] = [
    "200", "204", "300", "400", "401", "403", "404", "405", "408", "409", "413", "499", "500", "502", "503", "other",
];

fn status_index(status: u16) -> usize {
    match status {
        200 => 0,
        204 => 1,
        300 => 2,
        400 => 3,
        401 => 4,
        403 => 5,
        404 => 6,
        405 => 7,
        408 => 8,
        409 => 9,
        413 => 10,
        499 => 11,
        500 => 12,
        502 => 13,
        503 => 14,
        _ => 15,
    }
}

fn op_index(op: KvOp) -> usize {
    match op {
        KvOp::Get => 0,
        KvOp::Put => 1,
        KvOp::Delete => 2,
    }
}

type Labels2 = [(&'static str, &'static str); 2];
type Labels1 = [(&'static str, &'static str); 1];
/// A peer's label and a static one (a pair of label sets).
type PeerVerb = ([(&'static str, String); 1], Labels1);
/// A peer's label and two static ones.
type PeerVerbKind = ([(&'static str, String); 1], Labels2);
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Most namespaces with request series of their own; the requests of any further one
/// count under `namespace="other"` (the label set stays bounded however many there are).
pub const NAMESPACE_SERIES: usize = 64;

/// A namespace's label and two static ones (operation, outcome).
type NamespaceOpOutcome = ([(&'static str, String); 1], Labels2);
/// A namespace's counters by operation then outcome (`ok`, `error`).
type NamespaceCounters = [[Counter; 2]; 3];

/// How a node-to-node call can fail (`crate::transport::RpcError::kind`).
const FAILURE_KINDS: [&str; 5] = ["timeout", "connect", "transport", "remote", "protocol"];

/// Latency buckets, in seconds: 100 µs doubling to 6.5 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// Size buckets, in bytes: 16 B quadrupling to 16 MiB.
fn size_histogram() -> Histogram {
    Histogram::new(exponential_buckets(16.0, 4.0, 11))
}

fn siblings_histogram() -> Histogram {
    Histogram::new([1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0, 32.0, 64.0])
}

/// The event metrics of one node. Cheap to share (`Arc`); every method is a no-op when
/// metrics are off.
pub struct Metrics {
    enabled: bool,
    requests: HistogramFamily<Labels2>,
    /// The family's histograms by operation and status, found without hashing labels.
    request_handles: [[std::sync::OnceLock<Histogram>; STATUSES.len()]; 3],
    quorum_failures: Family<Labels1, Counter>,
    rpc: HistogramFamily<PeerVerb>,
    rpc_failures: Family<PeerVerbKind, Counter>,
    /// Handles by peer address and verb, so a call finds its histogram without building
    /// a label set (an allocation).
    rpc_handles: RwLock<HashMap<String, HashMap<&'static str, Histogram>>>,
    siblings: Histogram,
    value_bytes: HistogramFamily<Labels1>,
    /// Client requests by namespace, operation and outcome.
    namespace_requests: Family<NamespaceOpOutcome, Counter>,
    /// Their handles by namespace (at most [`NAMESPACE_SERIES`] and `other`), so a
    /// request finds its counter without building a label set.
    namespace_handles: RwLock<HashMap<String, std::sync::Arc<NamespaceCounters>>>,
    /// `default`'s, found without a lock or a hash (most requests are `/kv`).
    default_namespace: std::sync::OnceLock<std::sync::Arc<NamespaceCounters>>,
    recent: Recent,
}

impl Metrics {
    pub fn new(enabled: bool) -> Metrics {
        let m = Metrics {
            enabled,
            requests: Family::new_with_constructor(latency_histogram),
            request_handles: Default::default(),
            quorum_failures: Family::default(),
            rpc: Family::new_with_constructor(latency_histogram),
            rpc_failures: Family::default(),
            rpc_handles: RwLock::default(),
            siblings: siblings_histogram(),
            value_bytes: Family::new_with_constructor(size_histogram),
            namespace_requests: Family::default(),
            namespace_handles: RwLock::default(),
            default_namespace: std::sync::OnceLock::new(),
            recent: Recent::new(),
        };
        // The usual series exist from the start (at 0), so that rates and dashboards
        // work before the first such event.
        if enabled {
            for (op, statuses) in [
                (KvOp::Get, &["200", "300", "404", "503"][..]),
                (KvOp::Put, &["204", "503"][..]),
                (KvOp::Delete, &["204", "503"][..]),
            ] {
                for status in statuses {
                    let _ = m.requests.get_or_create(&[("op", op.as_str()), ("status", status)]);
                }
            }
            for op in ["read", "write"] {
                let _ = m.quorum_failures.get_or_create(&[("op", op)]);
            }
            for op in ["get", "put"] {
                let _ = m.value_bytes.get_or_create(&[("op", op)]);
            }
        }
        m
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// A finished `/kv` request. `now_ms` is wall-clock time (for the last-minute view).
    pub fn request(&self, op: KvOp, status: u16, elapsed: Duration, now_ms: u64) {
        if !self.enabled {
            return;
        }
        let index = status_index(status);
        self.request_handles[op_index(op)][index]
            .get_or_init(|| {
                self.requests
                    .get_or_create_owned(&[("op", op.as_str()), ("status", STATUSES[index])])
            })
            .observe(elapsed.as_secs_f64());
        // A client that gave up (499) is not the server failing.
        self.recent.record(now_ms / 1000, elapsed, (500..600).contains(&status));
    }

    /// A client request in `namespace` (one the node knows: a request naming an unknown
    /// or malformed namespace is not counted here, so clients cannot grow the label
    /// set), answered (`ok`) or failed.
    pub fn namespace_request(&self, namespace: &str, op: KvOp, ok: bool) {
        if !self.enabled {
            return;
        }
        let (op, outcome) = (op_index(op), usize::from(!ok));
        if namespace == "default" {
            let c = self
                .default_namespace
                .get_or_init(|| self.namespace_counters(namespace));
            c[op][outcome].inc();
            return;
        }
        if let Some(c) = self.namespace_handles.read().get(namespace) {
            c[op][outcome].inc();
            return;
        }
        let counters = self.namespace_counters(namespace);
        counters[op][outcome].inc();
    }

    /// The counters of `namespace` (or of `other`, once [`NAMESPACE_SERIES`] namespaces
    /// have their own), created with their series.
    fn namespace_counters(&self, namespace: &str) -> std::sync::Arc<NamespaceCounters> {
        let mut handles = self.namespace_handles.write();
        if let Some(c) = handles.get(namespace) {
            return c.clone();
        }
        let own = handles.keys().filter(|n| *n != "other").count() < NAMESPACE_SERIES;
        let label = if own { namespace } else { "other" };
        if let Some(c) = handles.get(label) {
            return c.clone();
        }
        let counter = |op: KvOp, outcome: &'static str| {
            self.namespace_requests.get_or_create_owned(&(
                [("namespace", label.to_string())],
                [("op", op.as_str()), ("outcome", outcome)],
            ))
        };
        let counters = std::sync::Arc::new(
            [KvOp::Get, KvOp::Put, KvOp::Delete].map(|op| [counter(op, "ok"), counter(op, "error")]),
        );
        handles.insert(label.to_string(), counters.clone());
        counters
    }

    /// A read or write that did not reach its quorum.
    pub fn quorum_failure(&self, write: bool) {
        if self.enabled {
            self.quorum_failures
                .get_or_create(&[("op", if write { "write" } else { "read" })])
                .inc();
        }
    }

    /// A client read's answer: how many siblings and how large each value.
    pub fn read_values<'a>(&self, values: impl ExactSizeIterator<Item = &'a [u8]>) {
        if !self.enabled {
            return;
        }
        self.siblings.observe(values.len() as f64);
        let sizes = self.value_bytes.get_or_create(&[("op", "get")]);
        for v in values {
            sizes.observe(v.len() as f64);
        }
    }

    /// A client write's value size.
    pub fn written_value(&self, bytes: usize) {
        if self.enabled {
            self.value_bytes.get_or_create(&[("op", "put")]).observe(bytes as f64);
        }
    }

    /// A node-to-node call: how long it took, or how it failed (`kind`: `timeout`,
    /// `connect`, `transport`, `remote`, `protocol`).
    pub fn rpc(&self, peer: &str, verb: &'static str, elapsed: Duration, failed: Option<&'static str>) {
        if !self.enabled {
            return;
        }
        if let Some(kind) = failed {
            self.rpc_failures
                .get_or_create(&([("peer", peer.to_string())], [("verb", verb), ("kind", kind)]))
                .inc();
        }
        let seconds = elapsed.as_secs_f64();
        if let Some(h) = self.rpc_handles.read().get(peer).and_then(|m| m.get(verb)) {
            h.observe(seconds);
            return;
        }
        let h = self
            .rpc
            .get_or_create_owned(&([("peer", peer.to_string())], [("verb", verb)]));
        h.observe(seconds);
        for kind in FAILURE_KINDS {
            let _ = self
                .rpc_failures
                .get_or_create(&([("peer", peer.to_string())], [("verb", verb), ("kind", kind)]));
        }
        self.rpc_handles
            .write()
            .entry(peer.to_string())
            .or_default()
            .insert(verb, h);
    }

    /// Drops the series of peers not in `keep` (members that left or changed address),
    /// so the label sets follow the membership instead of growing forever.
    pub fn forget_peers_except(&self, keep: &std::collections::HashSet<String>) {
        let mut handles = self.rpc_handles.write();
        let gone: Vec<String> = handles.keys().filter(|p| !keep.contains(*p)).cloned().collect();
        for peer in gone {
            for verb in handles.remove(&peer).into_iter().flat_map(|m| m.into_keys()) {
                self.rpc.remove(&([("peer", peer.clone())], [("verb", verb)]));
                for kind in FAILURE_KINDS {
                    self.rpc_failures
                        .remove(&([("peer", peer.clone())], [("verb", verb), ("kind", kind)]));
                }
            }
        }
    }

    /// The last minute of client requests.
    pub fn recent(&self, now_ms: u64) -> RecentSummary {
        self.recent.summary(now_ms / 1000)
    }

    /// Registers the event metrics in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "dynakv_request_duration",
            "Client /kv requests by operation and HTTP status, from the request's arrival to its answer",
            Unit::Seconds,
            self.requests.clone(),
        );
        registry.register(
            "dynakv_namespace_requests",
            "Client requests by namespace (each of the first 64 a node served, then \"other\"), operation and \
             outcome (ok: answered, found or not; error: refused or failed)",
            self.namespace_requests.clone(),
        );
        registry.register(
            "dynakv_quorum_failures",
            "Client reads and writes that did not reach R or W replicas in time",
            self.quorum_failures.clone(),
        );
        registry.register_with_unit(
            "dynakv_rpc_duration",
            "Node-to-node calls by peer (its cluster address) and verb, including failed ones",
            Unit::Seconds,
            self.rpc.clone(),
        );
        registry.register(
            "dynakv_rpc_failures",
            "Node-to-node calls that failed, by peer, verb and kind (timeout, connect, transport, remote, protocol)",
            self.rpc_failures.clone(),
        );
        registry.register(
            "dynakv_read_siblings",
            "Concurrent values (siblings) per successful client read",
            self.siblings.clone(),
        );
        registry.register_with_unit(
            "dynakv_value_size",
            "Sizes of values read (each sibling) and written by clients",
            Unit::Bytes,
            self.value_bytes.clone(),
        );
    }
}

/// Encodes `registry` as OpenMetrics text.
pub fn encode_text(registry: &Registry) -> String {
    let mut out = String::with_capacity(16 * 1024);
    // Writing to a String cannot fail.
    let _ = encode(&mut out, registry);
    out
}

/// Buckets of the last-minute histogram: 8 per power of two from 16 µs, up to ~70 s.
const SUB: u32 = 8;
const MIN_SHIFT: u32 = 4;
const BUCKETS: usize = (SUB * 22) as usize;
const SECONDS: usize = 60;

/// One second of requests.
struct Slot {
    second: AtomicU64,
    count: AtomicU32,
    errors: AtomicU32,
    buckets: Box<[AtomicU32]>,
}

/// Client requests of the last minute, one slot per second: a rate, an error rate and
/// latency percentiles per second and over the minute, at the cost of three atomic adds
/// per request. A slot is reused a minute later; a request racing that reset may be
/// lost, which a display can afford.
pub struct Recent {
    slots: Vec<Slot>,
}

/// What [`Recent`] shows.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RecentSummary {
    /// Seconds covered: from the first second of the last minute with a request to the
    /// last complete second (up to 60; 0 without requests).
    pub window_s: u32,
    pub rate: f64,
    pub errors: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Per second, oldest first: (unix second, requests, p99 ms).
    pub series: Vec<(u64, u32, Option<f64>)>,
}

fn bucket_of(us: u64) -> usize {
    let v = us.max(1 << MIN_SHIFT);
    let exp = 63 - v.leading_zeros();
    let sub = ((v >> (exp - 3)) & (SUB as u64 - 1)) as u32;
    (((exp - MIN_SHIFT) * SUB + sub) as usize).min(BUCKETS - 1)
}

/// The upper bound of a bucket, in microseconds.
fn bucket_upper_us(i: usize) -> f64 {
    let exp = i as u32 / SUB + MIN_SHIFT;
    let sub = i as u32 % SUB;
    ((1u64 << exp) as f64) * (1.0 + (sub + 1) as f64 / SUB as f64)
}

impl Default for Recent {
    fn default() -> Self {
        Recent::new()
    }
}

impl Recent {
    pub fn new() -> Recent {
        Recent {
            slots: (0..SECONDS)
                .map(|_| Slot {
                    second: AtomicU64::new(0),
                    count: AtomicU32::new(0),
                    errors: AtomicU32::new(0),
                    buckets: (0..BUCKETS).map(|_| AtomicU32::new(0)).collect(),
                })
                .collect(),
        }
    }

    pub fn record(&self, second: u64, elapsed: Duration, error: bool) {
        let slot = &self.slots[(second % SECONDS as u64) as usize];
        let seen = slot.second.load(Ordering::Acquire);
        if seen != second {
            if seen > second {
                return; // a straggler from a second already reused
            }
            if slot
                .second
                .compare_exchange(seen, second, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                slot.count.store(0, Ordering::Relaxed);
                slot.errors.store(0, Ordering::Relaxed);
                for b in slot.buckets.iter() {
                    b.store(0, Ordering::Relaxed);
                }
            }
        }
        slot.count.fetch_add(1, Ordering::Relaxed);
        if error {
            slot.errors.fetch_add(1, Ordering::Relaxed);
        }
        slot.buckets[bucket_of(elapsed.as_micros() as u64)].fetch_add(1, Ordering::Relaxed);
    }

    /// The minute before `now` (the current, incomplete second is left out).
    pub fn summary(&self, now: u64) -> RecentSummary {
        let mut all = vec![0u64; BUCKETS];
        let (mut count, mut errors, mut window) = (0u64, 0u64, 0u32);
        let mut series = Vec::new();
        let first = now.saturating_sub(SECONDS as u64);
        for second in first..now {
            let slot = &self.slots[(second % SECONDS as u64) as usize];
            if slot.second.load(Ordering::Acquire) != second {
                if window > 0 {
                    window += 1;
                    series.push((second, 0, None));
                }
                continue;
            }
            let mut these = vec![0u64; BUCKETS];
            for (i, b) in slot.buckets.iter().enumerate() {
                let n = b.load(Ordering::Relaxed) as u64;
                these[i] = n;
                all[i] += n;
            }
            let c = slot.count.load(Ordering::Relaxed);
            count += c as u64;
            errors += slot.errors.load(Ordering::Relaxed) as u64;
            window += 1;
            series.push((second, c, quantile_ms(&these, 0.99)));
        }
        let per_s = |n: u64| if window == 0 { 0.0 } else { n as f64 / window as f64 };
        RecentSummary {
            window_s: window,
            rate: per_s(count),
            errors: per_s(errors),
            p50_ms: quantile_ms(&all, 0.5),
            p99_ms: quantile_ms(&all, 0.99),
            series,
        }
    }
}

/// The `q` quantile of a bucket histogram, as its bucket's upper bound in ms.
fn quantile_ms(buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(bucket_upper_us(i) / 1000.0);
        }
    }
    None
}

/// What the operating system says about this process (Linux `/proc`; elsewhere nothing).
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessFigures {
    pub resident_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub threads: Option<u64>,
}

pub fn process_figures() -> ProcessFigures {
    // SAFETY: sysconf only reads configuration values.
    let (page, ticks_per_s) = unsafe { (libc::sysconf(libc::_SC_PAGESIZE), libc::sysconf(libc::_SC_CLK_TCK)) };
    let page = if page > 0 { page as u64 } else { 4096 };
    let ticks_per_s = if ticks_per_s > 0 { ticks_per_s as f64 } else { 100.0 };
    let resident_bytes = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * page);
    let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64);
    let max_fds = std::fs::read_to_string("/proc/self/limits").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("Max open files"))?
            .split_whitespace()
            .nth(3)?
            .parse()
            .ok()
    });
    // Fields after the command name (which may hold spaces) in /proc/self/stat.
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    let fields: Vec<&str> = stat
        .as_deref()
        .and_then(|s| s.rsplit_once(')'))
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 (1-based) of the whole line, 12 and 13 after
    // the name (indexes 11 and 12 here), in clock ticks; threads is field 20.
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    let cpu_seconds = match (ticks(11), ticks(12)) {
        (Some(u), Some(s)) => Some((u + s) as f64 / ticks_per_s),
        _ => None,
    };
    let threads = ticks(17);
    ProcessFigures {
        resident_bytes,
        open_fds,
        max_fds,
        cpu_seconds,
        threads,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What recording costs per client write (one request, two replica calls), on two
    /// threads at once. A measurement, not a check:
    /// `cargo test --release -p dynakv-node --lib -- --ignored recording_cost --nocapture`
    #[test]
    #[ignore]
    fn recording_cost() {
        let m = std::sync::Arc::new(Metrics::new(true));
        let rounds = 2_000_000u64;
        let started = std::time::Instant::now();
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for i in 0..rounds {
                        let d = Duration::from_micros(200 + (i % 1000));
                        m.request(KvOp::Put, 204, d, 1_000_000 + i / 50_000);
                        m.rpc(if t == 0 { "10.0.0.2:8000" } else { "10.0.0.3:8000" }, "Merge", d, None);
                        m.rpc("10.0.0.4:8000", "Merge", d, None);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let per_write = started.elapsed().as_nanos() as f64 / rounds as f64;
        eprintln!(
            "recording a write and its two replica calls, two threads: {per_write:.0} ns of wall time per write per thread"
        );
    }

    #[test]
    fn namespace_requests_are_counted_by_namespace_up_to_a_bound_then_as_other() {
        let m = Metrics::new(true);
        m.namespace_request("default", KvOp::Get, true);
        m.namespace_request("default", KvOp::Get, true);
        m.namespace_request("carts", KvOp::Put, false);
        for i in 0..NAMESPACE_SERIES + 10 {
            m.namespace_request(&format!("ns{i}"), KvOp::Delete, true);
        }
        let mut reg = Registry::default();
        m.register(&mut reg);
        let text = encode_text(&reg);
        let line = |ns: &str, op: &str, outcome: &str| {
            let head =
                format!("dynakv_namespace_requests_total{{namespace=\"{ns}\",op=\"{op}\",outcome=\"{outcome}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(head.as_str()))
                .map(|v| v.parse::<u64>().unwrap())
        };
        assert_eq!(line("default", "get", "ok"), Some(2), "{text}");
        assert_eq!(
            line("default", "get", "error"),
            Some(0),
            "every series of a namespace exists"
        );
        assert_eq!(line("carts", "put", "error"), Some(1));
        // 64 namespaces have their own series (default, carts and 62 more), the rest
        // count as other.
        let own = text
            .lines()
            .filter(|l| l.starts_with("dynakv_namespace_requests_total{") && l.contains("op=\"get\",outcome=\"ok\""))
            .count();
        assert_eq!(own, NAMESPACE_SERIES + 1, "64 namespaces and other");
        assert_eq!(line("other", "delete", "ok"), Some(12));
        let off = Metrics::new(false);
        off.namespace_request("carts", KvOp::Get, true);
        assert!(off.namespace_handles.read().is_empty());
    }

    #[test]
    fn status_labels_match_their_index() {
        for (i, label) in STATUSES.iter().enumerate() {
            let code: u16 = label.parse().unwrap_or(599);
            assert_eq!(status_index(code), i, "{label}");
        }
    }

    #[test]
    fn buckets_are_ordered_and_bound_their_values() {
        let mut last = 0;
        for us in [1u64, 16, 17, 100, 999, 1000, 1001, 5_000, 123_456, 10_000_000] {
            let b = bucket_of(us);
            assert!(b >= last, "bucket of {us} went down");
            last = b;
            assert!(bucket_upper_us(b) >= us as f64, "{us} µs above its bucket's bound");
            // Within one eighth of a power of two (or the floor).
            assert!(
                bucket_upper_us(b) <= (us.max(16) as f64) * 1.26,
                "{us}: {}",
                bucket_upper_us(b)
            );
        }
    }

    #[test]
    fn summary_covers_the_last_minute_and_finds_percentiles() {
        let recent = Recent::new();
        // 100 requests a second for 10 seconds: 98 at ~1 ms, 2 at ~20 ms each second.
        for s in 1000..1010u64 {
            for i in 0..100 {
                let ms = if i < 98 { 1 } else { 20 };
                recent.record(s, Duration::from_millis(ms), i == 99);
            }
        }
        let sum = recent.summary(1010);
        assert_eq!(sum.window_s, 10);
        assert!((sum.rate - 100.0).abs() < 1e-9);
        assert!((sum.errors - 1.0).abs() < 1e-9);
        let p50 = sum.p50_ms.unwrap();
        let p99 = sum.p99_ms.unwrap();
        assert!((1.0..1.2).contains(&p50), "p50 {p50}");
        assert!((20.0..25.0).contains(&p99), "p99 {p99}");
        assert_eq!(sum.series.len(), 10);
        assert_eq!(sum.series[0].0, 1000);
        // The current second is not counted; a minute later everything has aged out.
        recent.record(1010, Duration::from_millis(1), false);
        assert_eq!(recent.summary(1010).window_s, 10);
        assert_eq!(recent.summary(1200).window_s, 0);
        assert_eq!(recent.summary(1200).p99_ms, None);
    }

    #[test]
    fn a_reused_slot_forgets_the_minute_before() {
        let recent = Recent::new();
        recent.record(5, Duration::from_millis(50), false);
        recent.record(65, Duration::from_millis(1), false);
        let sum = recent.summary(66);
        assert_eq!(sum.series.last().unwrap().1, 1);
        assert!(sum.p99_ms.unwrap() < 2.0);
        // A late record for the old second does not land in the new one.
        recent.record(5, Duration::from_millis(50), false);
        assert!(recent.summary(66).p99_ms.unwrap() < 2.0);
    }

    #[test]
    fn event_metrics_appear_in_the_text_and_off_means_off() {
        let m = Metrics::new(true);
        m.request(KvOp::Put, 204, Duration::from_millis(2), 1_000_000);
        m.quorum_failure(true);
        m.rpc("127.0.0.1:8002", "Merge", Duration::from_millis(1), None);
        m.rpc("127.0.0.1:8002", "Merge", Duration::from_millis(1), Some("timeout"));
        let mut reg = Registry::default();
        m.register(&mut reg);
        let text = encode_text(&reg);
        assert!(
            text.contains(r#"dynakv_request_duration_seconds_count{op="put",status="204"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"dynakv_quorum_failures_total{op="write"} 1"#), "{text}");
        assert!(
            text.contains(r#"dynakv_rpc_duration_seconds_count{peer="127.0.0.1:8002",verb="Merge"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"dynakv_rpc_failures_total{peer="127.0.0.1:8002",verb="Merge",kind="timeout"} 1"#),
            "{text}"
        );
        // A peer that is no longer a member loses its series.
        m.forget_peers_except(&["127.0.0.1:8003".to_string()].into_iter().collect());
        let mut reg = Registry::default();
        m.register(&mut reg);
        assert!(!encode_text(&reg).contains("127.0.0.1:8002"));
        // Server errors count as errors in the last-minute view; a client giving up does not.
        m.request(KvOp::Get, 503, Duration::from_millis(2), 1_000_000);
        m.request(KvOp::Get, 499, Duration::from_millis(2), 1_000_000);
        let recent = m.recent(1_001_000);
        assert_eq!(recent.window_s, 1);
        assert!((recent.errors - 1.0).abs() < 1e-9, "{recent:?}");
        assert!((recent.rate - 3.0).abs() < 1e-9, "{recent:?}");
        let off = Metrics::new(false);
        off.request(KvOp::Put, 204, Duration::from_millis(2), 1_000_000);
        let mut reg = Registry::default();
        off.register(&mut reg);
        assert!(!encode_text(&reg).contains("status=\"204\""));
        assert_eq!(off.recent(1_002_000).window_s, 0);
    }
}
