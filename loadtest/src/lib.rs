//! `dynakv-loadtest`: drives dynakv (and the stores it is compared with) and reports what
//! a configuration really delivers.
//!
//! Layout:
//! - [`workload`]: YCSB mixes, key distributions (uniform, zipfian, latest), value sizes.
//! - [`target`]: clients for dynakv, etcd (v3 JSON gateway), Redis and a bare HTTP server.
//! - [`http1`]: the lean HTTP/1.1 connection those HTTP clients use.
//! - [`runner`]: the load phase, closed-loop and open-loop run phases, live progress.
//! - [`stats`]: HdrHistogram latencies per operation, errors by class, per-second series.
//! - [`report`]: the end-of-run table and the JSON report.
//! - [`plot`]: SVG charts of throughput, p99 over time and the latency distribution.
//! - [`staleness`]: probabilistically bounded staleness, measured.
//! - [`bare`]: the bare HTTP server (the machine's HTTP ceiling).
//! - [`bench`]: the markdown report of the side-by-side benchmark.

pub mod bare;
pub mod bench;
pub mod http1;
pub mod plot;
pub mod report;
pub mod runner;
pub mod staleness;
pub mod stats;
pub mod target;
pub mod workload;
