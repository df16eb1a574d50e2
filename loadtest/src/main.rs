//! `dynakv-loadtest`: see `dynakv-loadtest --help`.

/// glibc's allocator spent ~12% of a node's CPU under load (malloc_consolidate,
/// unlink_chunk in perf profiles); mimalloc's thread-local pages avoid that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use dynakv_loadtest::report::{Report, table};
use dynakv_loadtest::runner::{RunConfig, load, run};
use dynakv_loadtest::stats::Summary;
use dynakv_loadtest::target::{Kind, TargetConfig};
use dynakv_loadtest::workload::{Distribution, KeyChooser, Mix, ValueSize};
use dynakv_loadtest::{bare, plot, staleness};

#[derive(Parser)]
#[command(
    name = "dynakv-loadtest",
    version,
    about = "Measure what a dynakv configuration (or a peer store) really delivers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Threads the tool runs its requests on [default: one per core]. On a machine it
    /// shares with the store it measures, fewer leave more CPU to the store.
    #[arg(long, global = true, env = "DYNAKV_LOADTEST_THREADS")]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Load records, then run a workload and report throughput, latency and errors.
    Run(Box<RunArgs>),
    /// Measure the fraction of stale reads after a write, per delay (PBS).
    Staleness(StalenessArgs),
    /// Serve HTTP answering 204 to everything: the machine's HTTP ceiling.
    Serve {
        #[arg(long, default_value = "127.0.0.1:7100")]
        listen: std::net::SocketAddr,
    },
    /// Write the side-by-side benchmark report from the results of loadtest/bench/run.sh.
    BenchReport {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "")]
        machine: String,
    },
    /// Judge open-loop JSON reports against the tail targets, as the benchmark report
    /// does (whole seconds only): one line each.
    Tail { reports: Vec<PathBuf> },
    /// Draw the charts of one or more JSON reports together.
    Plot {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "compare")]
        label: String,
        reports: Vec<PathBuf>,
    },
}

/// Durations as `30s`, `500ms`, `2m` or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| c.is_ascii_alphabetic())
        .map_or((s, "s"), |i| s.split_at(i));
    let v: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s, m)")),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("duration must be positive: {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[derive(clap::Args)]
struct RunArgs {
    /// dynakv, etcd, redis or bare.
    #[arg(long, default_value = "dynakv")]
    target: Kind,
    /// Comma-separated host:port of the nodes to spread requests over.
    #[arg(
        long,
        default_value = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003",
        value_delimiter = ',',
        required = true
    )]
    nodes: Vec<String>,
    /// Send every request to the first node.
    #[arg(long)]
    pin: bool,
    /// YCSB core workload: a (50/50 read/update), b (95/5), c (read only), d (read latest, 5% inserts), f (read-modify-write).
    #[arg(long, default_value = "a")]
    workload: String,
    /// A custom mix instead, e.g. read=60,update=30,delete=10 (also insert, rmw).
    #[arg(long)]
    mix: Option<String>,
    /// uniform, zipfian (theta 0.99) or latest [default: the workload's].
    #[arg(long)]
    distribution: Option<Distribution>,
    /// Records loaded before the run (and the key space of the run).
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Value size in bytes: fixed (100) or a range (50..500).
    #[arg(long, default_value = "100")]
    value_size: ValueSize,
    /// Skip the load phase (the records are already there).
    #[arg(long)]
    no_load: bool,
    /// Writers in the load phase.
    #[arg(long, default_value_t = 64)]
    load_concurrency: usize,
    /// How long the run phase lasts (30s, 500ms, 2m).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Or how many operations it performs.
    #[arg(long)]
    operations: Option<u64>,
    /// Closed loop: concurrent clients. Open loop: most requests in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Open loop at this many requests per second (latency counted from when each was due).
    #[arg(long)]
    rate: Option<f64>,
    /// Per-request read quorum (dynakv).
    #[arg(long)]
    r: Option<usize>,
    /// Per-request write quorum (dynakv).
    #[arg(long)]
    w: Option<usize>,
    /// Client-side timeout per request, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Name of this run in reports and charts.
    #[arg(long)]
    label: Option<String>,
    /// Write the full report (and a per-second time series) as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write throughput, p99 and latency-distribution charts (SVG) into this directory.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// No live progress.
    #[arg(long)]
    quiet: bool,
    /// dynakv over HTTPS (client ports with --client-tls), trusting this CA certificate.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// dynakv API token sent with every request (nodes with --tokens-file).
    #[arg(long, env = "DYNAKV_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(clap::Args)]
struct StalenessArgs {
    #[arg(
        long,
        default_value = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003",
        value_delimiter = ',',
        required = true
    )]
    nodes: Vec<String>,
    /// The cluster's replication factor (the old value is written with w=N).
    #[arg(long, default_value_t = 3)]
    n: usize,
    #[arg(long, default_value_t = 1)]
    r: usize,
    #[arg(long, default_value_t = 1)]
    w: usize,
    /// Experiments per delay.
    #[arg(long, default_value_t = 200)]
    trials: usize,
    /// Delays after the acknowledgement, in milliseconds.
    #[arg(long, default_value = "0,1,5,20,100", value_delimiter = ',')]
    delays: Vec<u64>,
    /// Experiments in flight at once.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    #[arg(long)]
    json: Option<PathBuf>,
}

async fn run_cmd(a: RunArgs) -> anyhow::Result<()> {
    let (mix, default_dist, workload) = match &a.mix {
        Some(spec) => (
            Mix::parse(spec).map_err(anyhow::Error::msg)?,
            Distribution::Uniform,
            format!("custom({spec})"),
        ),
        None => {
            let Some((m, d)) = Mix::ycsb(&a.workload) else {
                bail!("unknown workload {:?} (a, b, c, d, f)", a.workload)
            };
            (m, d, a.workload.to_ascii_uppercase())
        }
    };
    if a.duration.is_none() && a.operations.is_none() {
        bail!("give --duration or --operations");
    }
    if a.concurrency == 0 || a.records == 0 {
        bail!("--concurrency and --records must be at least 1");
    }
    let dist = a.distribution.unwrap_or(default_dist);
    let target = TargetConfig {
        kind: a.target,
        nodes: a.nodes.clone(),
        r: a.r,
        w: a.w,
        timeout: Duration::from_millis(a.timeout_ms),
        tls: a
            .ca
            .as_deref()
            .map(dynakv_loadtest::target::tls_connector)
            .transpose()?,
        token: a.token.clone(),
    };
    let show = !a.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let load_seconds = if a.no_load {
        None
    } else {
        let (took, failed) = load(&target, a.records, a.value_size, a.load_concurrency, show).await?;
        eprintln!(
            "loaded {} records in {:.1} s ({:.0}/s){}",
            a.records,
            took.as_secs_f64(),
            a.records as f64 / took.as_secs_f64(),
            if failed.is_empty() {
                String::new()
            } else {
                let classes: Vec<String> = failed.iter().map(|(class, n)| format!("{n} {class}")).collect();
                format!(", failed: {}", classes.join(", "))
            }
        );
        Some(took.as_secs_f64())
    };
    let keys = Arc::new(KeyChooser::new(dist, a.records));
    let cfg = RunConfig {
        mix: mix.clone(),
        value_size: a.value_size,
        concurrency: a.concurrency,
        rate: a.rate,
        duration: a.duration,
        operations: a.operations,
        pin: a.pin,
        progress: show,
    };
    let cpu_before = dynakv_loadtest::stats::cpu_seconds();
    let (elapsed, recorder) = run(&target, keys, cfg).await?;
    let tool_cpu = dynakv_loadtest::stats::cpu_seconds() - cpu_before;
    let label = a
        .label
        .clone()
        .unwrap_or_else(|| format!("{:?}-{}", a.target, workload).to_lowercase());
    let report = Report {
        label: label.clone(),
        target: format!("{:?}", a.target).to_lowercase(),
        nodes: a.nodes.clone(),
        workload,
        mix: mix.0.iter().map(|(op, w)| (op.name().to_string(), *w)).collect(),
        distribution: format!("{dist:?}").to_lowercase(),
        records: a.records,
        value_size: if a.value_size.min == a.value_size.max {
            a.value_size.min.to_string()
        } else {
            format!("{}..{}", a.value_size.min, a.value_size.max)
        },
        concurrency: a.concurrency,
        rate: a.rate,
        r: a.r,
        w: a.w,
        load_seconds,
        summary: Summary {
            tool_cpu_cores: Some(tool_cpu / elapsed.as_secs_f64().max(1e-9)),
            ..recorder.summary(elapsed)
        },
    };
    print!("{}", table(&report));
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(dir) = &a.plot {
        for f in plot::write(dir, &label, &[&report])? {
            eprintln!("wrote {}", f.display());
        }
    }
    Ok(())
}

async fn staleness_cmd(a: StalenessArgs) -> anyhow::Result<()> {
    if a.nodes.len() < 2 {
        bail!("staleness reads through a different node than it writes: give at least two --nodes");
    }
    let rows = staleness::measure(staleness::Config {
        nodes: a.nodes,
        n: a.n,
        r: a.r,
        w: a.w,
        trials: a.trials,
        delays_ms: a.delays,
        parallel: a.parallel,
        timeout: Duration::from_secs(5),
    })
    .await;
    println!(
        "staleness with N={} R={} W={}: fraction of reads that miss an acknowledged write",
        a.n, a.r, a.w
    );
    println!(
        "{:>10} {:>8} {:>8} {:>8} {:>8}",
        "delay ms", "reads", "stale", "stale %", "errors"
    );
    for r in &rows {
        println!(
            "{:>10} {:>8} {:>8} {:>8.2} {:>8}",
            r.delay_ms,
            r.reads,
            r.stale,
            r.stale_fraction * 100.0,
            r.errors
        );
    }
    if let Some(path) = &a.json {
        let doc = serde_json::json!({ "n": a.n, "r": a.r, "w": a.w, "trials": a.trials, "rows": rows });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)?;
    }
    Ok(())
}

/// Reads the load tool's JSON reports, naming the file that could not be read or parsed.
fn load_reports(paths: &[PathBuf]) -> anyhow::Result<Vec<Report>> {
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_slice::<Report>(&text).with_context(|| format!("parsing {}", p.display()))
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.threads {
        anyhow::ensure!(n >= 1, "--threads must be at least 1");
        rt.worker_threads(n);
    }
    let rt = rt.thread_name("loadtest").enable_all().build()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Run(a) => run_cmd(*a).await,
            Cmd::Staleness(a) => staleness_cmd(a).await,
            Cmd::Serve { listen } => bare::serve(listen).await,
            Cmd::BenchReport { dir, out, machine } => dynakv_loadtest::bench::write_report(&dir, &out, &machine),
            Cmd::Tail { reports } => {
                for (path, r) in reports.iter().zip(load_reports(&reports)?) {
                    let t = dynakv_loadtest::bench::Tail::of(&r);
                    let verdict = |met: bool| if met { "met" } else { "missed" };
                    println!(
                        "{}: p99 {:.2} ms, p99.9 {:.2} ms, worst second {:.1} ms, {} of {} seconds over {} ms: {}, {}, {}",
                        path.display(),
                        t.p99_ms,
                        t.p999_ms,
                        t.worst_second_ms,
                        t.seconds_over,
                        t.seconds,
                        dynakv_loadtest::bench::TAIL_SECOND_P99_MS,
                        verdict(t.p99_met()),
                        verdict(t.p999_met()),
                        verdict(t.seconds_met()),
                    );
                }
                Ok(())
            }
            Cmd::Plot { out, label, reports } => {
                let loaded = load_reports(&reports)?;
                let refs: Vec<&Report> = loaded.iter().collect();
                for f in plot::write(&out, &label, &refs)? {
                    println!("wrote {}", f.display());
                }
                Ok(())
            }
        }
    })
}
