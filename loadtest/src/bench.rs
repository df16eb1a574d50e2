//! The side-by-side benchmark report: reads what `loadtest/bench/run.sh` measured and
//! writes the markdown tables, ratios and verdicts against the targets.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde_json::Value;

use crate::report::Report;
use crate::stats::{MachineCpu, Point};

fn load(dir: &Path, name: &str) -> anyhow::Result<Report> {
    let path = dir.join(format!("{name}.json"));
    let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// "p50 / p99" of one operation type in a report, in ms ("-" when absent).
fn p50_p99(r: &Report, op: &str) -> String {
    r.summary.operations.get(op).map_or("-".to_string(), |o| {
        format!("{} / {}", ms(o.latency_us.p50), ms(o.latency_us.p99))
    })
}

/// Throughput of one operation type in a report (0 when absent).
fn ops(r: &Report, op: &str) -> f64 {
    r.summary.operations.get(op).map_or(0.0, |o| o.throughput)
}

/// `Requests/sec` and the median from `wrk --latency` output.
pub fn parse_wrk(text: &str) -> Option<(f64, f64)> {
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())?;
    let median = text.lines().find_map(|l| {
        let l = l.trim();
        let rest = l.strip_prefix("50%")?;
        let v = rest.trim();
        let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
        let num: f64 = num.parse().ok()?;
        Some(match unit {
            "us" => num / 1000.0,
            "ms" => num,
            "s" => num * 1000.0,
            _ => return None,
        })
    })?;
    Some((rps, median))
}

/// The open-loop tail targets: p99 and p99.9 of the whole run, and the p99 of every
/// one-second window.
pub const TAIL_P99_MS: f64 = 5.0;
pub const TAIL_P999_MS: f64 = 15.0;
pub const TAIL_SECOND_P99_MS: f64 = 20.0;

/// One open-loop run against the tail targets.
#[derive(Debug, PartialEq)]
pub struct Tail {
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// The highest p99 of any whole second of the run.
    pub worst_second_ms: f64,
    /// Whole seconds whose p99 was over [`TAIL_SECOND_P99_MS`].
    pub seconds_over: usize,
    pub seconds: usize,
}

/// The seconds a run is judged by: whole ones with requests (the last, partial one holds
/// few), each with its p99 in milliseconds.
fn judged_seconds(r: &Report) -> impl Iterator<Item = (&Point, f64)> {
    let whole = r.summary.duration_s.floor() as u64;
    r.summary
        .timeseries
        .iter()
        .filter(move |p| p.second < whole && p.ops > 0)
        .map(|p| (p, p.p99_us as f64 / 1000.0))
}

impl Tail {
    pub fn of(r: &Report) -> Tail {
        let seconds: Vec<f64> = judged_seconds(r).map(|(_, ms)| ms).collect();
        Tail {
            p99_ms: r.summary.total.latency_us.p99 as f64 / 1000.0,
            p999_ms: r.summary.total.latency_us.p999 as f64 / 1000.0,
            worst_second_ms: seconds.iter().copied().fold(0.0, f64::max),
            seconds_over: seconds.iter().filter(|&&ms| ms > TAIL_SECOND_P99_MS).count(),
            seconds: seconds.len(),
        }
    }

    pub fn p99_met(&self) -> bool {
        self.p99_ms < TAIL_P99_MS
    }

    pub fn p999_met(&self) -> bool {
        self.p999_ms < TAIL_P999_MS
    }

    pub fn seconds_met(&self) -> bool {
        self.seconds_over == 0
    }

    pub fn met(&self) -> bool {
        self.p99_met() && self.p999_met() && self.seconds_met()
    }
}

/// How the machine's CPUs (every process) spent an open loop: over the whole run, and
/// on average over its stalled seconds (p99 over [`TAIL_SECOND_P99_MS`]) and its calm
/// ones. `None` for a report without the machine's counters.
#[derive(Debug, PartialEq)]
pub struct MachineDuring {
    pub run: MachineCpu,
    pub stalled: Option<MachineCpu>,
    pub calm: Option<MachineCpu>,
}

impl MachineDuring {
    pub fn of(r: &Report) -> Option<MachineDuring> {
        let seconds = || judged_seconds(r).filter_map(|(p, ms)| Some((ms > TAIL_SECOND_P99_MS, p.machine.as_ref()?)));
        Some(MachineDuring {
            run: r.summary.machine_cpu?,
            stalled: MachineCpu::mean(seconds().filter(|(s, _)| *s).map(|(_, m)| m)),
            calm: MachineCpu::mean(seconds().filter(|(s, _)| !*s).map(|(_, m)| m)),
        })
    }

    /// "12 (3 / 15)": a share in percent over the run, then over the stalled and the
    /// calm seconds ("-" where there were none).
    pub fn cell(&self, share: impl Fn(&MachineCpu) -> f64) -> String {
        let pct = |c: &Option<MachineCpu>| {
            c.as_ref()
                .map_or("-".to_string(), |c| format!("{:.0}", share(c) * 100.0))
        };
        format!(
            "{:.0} ({} / {})",
            share(&self.run) * 100.0,
            pct(&self.stalled),
            pct(&self.calm)
        )
    }
}

/// The open-loop runs `run.sh` makes, in the order the report lists them.
pub const TAIL_RUNS: [(&str, &str); 5] = [
    ("dynakv-a-open-25", "25% of the peak"),
    ("dynakv-a-open-40", "40% of the peak"),
    ("dynakv-a-open", "50% of the peak"),
    (
        "dynakv-a-open-compaction",
        "50%, right after a reload (flushes and compactions)",
    ),
    (
        "dynakv-a-open-antientropy",
        "50%, while anti-entropy repairs a node that missed 10,000 keys",
    ),
];

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

pub fn write_report(dir: &Path, out: &Path, machine: &str) -> anyhow::Result<()> {
    let targets = ["dynakv", "etcd", "redis", "bare"];
    let mut md = String::new();
    // Written by run.sh when the measurements start, so a regenerated report keeps it.
    let date = std::fs::read_to_string(dir.join("run-date"))
        .map(|d| d.trim().to_string())
        .unwrap_or_else(|_| "(date not recorded)".to_string());
    let a = load(dir, "dynakv-a")?;
    writeln!(md, "# dynakv side-by-side benchmark\n")?;
    writeln!(
        md,
        "Run {date} on {machine}, by `loadtest/bench/run.sh`. All stores on this one machine, on loopback, driven \
         by the same tool (`dynakv-loadtest`) in the same run: YCSB workloads, {} records of {}-byte values, \
         {} connections, {:.0} s per run, closed loop. The machine is shared and noisy: compare the ratios, \
         which were measured minutes apart, more than the absolute figures.\n",
        a.records, a.value_size, a.concurrency, a.summary.duration_s
    )?;
    writeln!(
        md,
        "- **dynakv**: 3 nodes, N=3 R=2 W=2, last-writer-wins registers (YCSB updates are blind overwrites, as \
         in etcd and Redis), RocksDB (WAL, no fsync per write). A second 3-node cluster in multi-value mode runs \
         YCSB F (read-modify-write carrying the read's causal context).\n\
         - **etcd** (Debian's 3.4): 3 members, writes through Raft (fsync), linearizable reads, via the v3 JSON gateway.\n\
         - **Redis** (Debian's 7.0): one server, no persistence, no replication: the ceiling of a non-replicated store.\n\
         - **bare**: an axum server answering 204 to everything: the HTTP ceiling of this machine and stack.\n"
    )?;

    writeln!(md, "## Throughput and latency\n")?;
    writeln!(
        md,
        "| store | workload | ops/s | read p50 / p99 ms | update p50 / p99 ms | p99.9 ms | errors |"
    )?;
    writeln!(md, "|---|---|---:|---:|---:|---:|---:|")?;
    let mut reports = std::collections::BTreeMap::new();
    for t in targets {
        for w in ["a", "c"] {
            let r = load(dir, &format!("{t}-{w}"))?;
            writeln!(
                md,
                "| {t} | {} | {:.0} | {} | {} | {} | {} |",
                w.to_uppercase(),
                r.summary.total.throughput,
                p50_p99(&r, "read"),
                p50_p99(&r, "update"),
                ms(r.summary.total.latency_us.p999),
                r.summary.total.errors
            )?;
            reports.insert(format!("{t}-{w}"), r);
        }
    }
    if let Ok(f) = load(dir, "dynakv-mv-f") {
        writeln!(
            md,
            "| dynakv (mv) | F | {:.0} | {} | rmw {} | {} | {} |",
            f.summary.total.throughput,
            p50_p99(&f, "read"),
            p50_p99(&f, "rmw"),
            ms(f.summary.total.latency_us.p999),
            f.summary.total.errors
        )?;
    }
    let open = load(dir, "dynakv-a-open")?;
    writeln!(
        md,
        "\nOpen loop, dynakv, YCSB A at {:.0} requests/s (half the closed-loop peak), latency counted from when \
         each request was due: {:.0} ops/s achieved, p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms, {} errors.\n",
        open.rate.unwrap_or(0.0),
        open.summary.total.throughput,
        ms(open.summary.total.latency_us.p50),
        ms(open.summary.total.latency_us.p99),
        ms(open.summary.total.latency_us.p999),
        ms(open.summary.total.latency_us.max),
        open.summary.total.errors
    )?;
    // The same open loop at lower rates, where the script ran them: where the tail starts.
    let sweep: Vec<(&str, Report)> = [
        ("25%", "dynakv-a-open-25"),
        ("40%", "dynakv-a-open-40"),
        ("50%", "dynakv-a-open"),
    ]
    .into_iter()
    .filter_map(|(share, label)| load(dir, label).ok().map(|r| (share, r)))
    .collect();
    if sweep.len() > 1 {
        writeln!(
            md,
            "| open loop, share of the peak | requests/s | p50 ms | p99 ms | p99.9 ms | max ms | errors | tool late by, p99 ms |"
        )?;
        writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|")?;
        for (share, r) in &sweep {
            let l = &r.summary.total.latency_us;
            writeln!(
                md,
                "| {share} | {:.0} | {} | {} | {} | {} | {} | {} |",
                r.rate.unwrap_or(0.0),
                ms(l.p50),
                ms(l.p99),
                ms(l.p999),
                ms(l.max),
                r.summary.total.errors,
                r.summary
                    .dispatch_lag_us
                    .as_ref()
                    .map_or("-".to_string(), |d| ms(d.p99))
            )?;
        }
        writeln!(
            md,
            "\n(\"tool late by\": how long after it was due the load tool itself started a request, a part of \
             every latency in the row: the tool shares the two cores with the nodes.)\n"
        )?;
    }

    tail_section(&mut md, dir)?;

    let dk_a = &reports["dynakv-a"];
    let dk_c = &reports["dynakv-c"];
    let et_a = &reports["etcd-a"];
    let et_c = &reports["etcd-c"];
    let bare_c = &reports["bare-c"];
    let write_ratio = ops(dk_a, "update") / ops(et_a, "update").max(1e-9);
    let read_ratio = ops(dk_c, "read") / ops(et_c, "read").max(1e-9);
    let ceiling = dk_c.summary.total.throughput / bare_c.summary.total.throughput.max(1e-9);
    let ceiling_a = dk_a.summary.total.throughput / reports["bare-a"].summary.total.throughput.max(1e-9);
    let open_tail = Tail::of(&open);
    writeln!(md, "## Targets\n")?;
    writeln!(md, "| target | measured | verdict |")?;
    writeln!(md, "|---|---|---|")?;
    writeln!(
        md,
        "| quorum writes ≥ 4× etcd (YCSB A updates) | {:.0} vs {:.0} ops/s: {write_ratio:.1}× | {} |",
        ops(dk_a, "update"),
        ops(et_a, "update"),
        verdict(write_ratio >= 4.0)
    )?;
    writeln!(
        md,
        "| reads ≥ 3× etcd (YCSB C) | {:.0} vs {:.0} ops/s: {read_ratio:.1}× | {} |",
        ops(dk_c, "read"),
        ops(et_c, "read"),
        verdict(read_ratio >= 3.0)
    )?;
    for (workload, ratio, dk, bare) in [("C", ceiling, dk_c, bare_c), ("A", ceiling_a, dk_a, &reports["bare-a"])] {
        writeln!(
            md,
            "| ≥ 20% of the bare HTTP ceiling (YCSB {workload}) | {:.0} vs {:.0} req/s = {:.0}% | {} |",
            dk.summary.total.throughput,
            bare.summary.total.throughput,
            ratio * 100.0,
            verdict(ratio >= 0.2)
        )?;
    }
    writeln!(
        md,
        "| open loop at half the peak: p99 < {TAIL_P99_MS} ms, p99.9 < {TAIL_P999_MS} ms, no second with p99 over \
         {TAIL_SECOND_P99_MS} ms | p99 {:.2} ms, p99.9 {:.2} ms, worst second {:.1} ms at {:.0}/s | {} |",
        open_tail.p99_ms,
        open_tail.p999_ms,
        open_tail.worst_second_ms,
        open.rate.unwrap_or(0.0),
        verdict(open_tail.met())
    )?;
    if let Ok(mem) = std::fs::read(dir.join("memory.json")) {
        let v: Value = serde_json::from_slice(&mem)?;
        let nodes: Vec<String> = v["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| {
                format!(
                    "{} {:.0} MiB RSS, {:.0} MiB on disk",
                    n["id"].as_str().unwrap_or("?"),
                    n["rss_kib"].as_f64().unwrap_or(0.0) / 1024.0,
                    n["disk_kib"].as_f64().unwrap_or(0.0) / 1024.0
                )
            })
            .collect();
        writeln!(
            md,
            "| node memory at {} keys (N=3: every node holds every key) | {} | stated |",
            v["keys"],
            nodes.join("; ")
        )?;
    }

    writeln!(md, "\n## Staleness: how often a read misses an acknowledged write\n")?;
    writeln!(
        md,
        "Each experiment writes a fresh key with `w=3`, overwrites it with the W below, and once that write is \
         acknowledged waits the delay and reads through another node with the R below. Stale = the read did not \
         return the new value. N=3, {} experiments per cell.\n",
        std::fs::read(dir.join("staleness-r1-w1.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .map(|v| v["trials"].to_string())
            .unwrap_or_default()
    )?;
    let settings = [(1, 1), (1, 2), (2, 2), (1, 3)];
    let tables: Vec<Option<Value>> = settings
        .iter()
        .map(|(r, w)| {
            std::fs::read(dir.join(format!("staleness-r{r}-w{w}.json")))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
        })
        .collect();
    write!(md, "| delay |")?;
    for (r, w) in settings {
        write!(md, " R={r} W={w} |")?;
    }
    writeln!(md)?;
    writeln!(md, "|---:|{}", "---:|".repeat(settings.len()))?;
    let delays: Vec<u64> = tables
        .iter()
        .flatten()
        .next()
        .map(|t| {
            t["rows"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["delay_ms"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    for d in delays {
        write!(md, "| {d} ms |")?;
        for t in &tables {
            let cell = t
                .as_ref()
                .and_then(|t| t["rows"].as_array()?.iter().find(|r| r["delay_ms"] == d).cloned())
                .map(|r| {
                    format!(
                        " {:.1}% ({}/{}) |",
                        r["stale_fraction"].as_f64().unwrap_or(0.0) * 100.0,
                        r["stale"],
                        r["reads"]
                    )
                })
                .unwrap_or_else(|| " - |".into());
            md.push_str(&cell);
        }
        writeln!(md)?;
    }

    writeln!(md, "\n## Sanity: this tool against wrk\n")?;
    let wrk = std::fs::read_to_string(dir.join("wrk.txt"))
        .ok()
        .and_then(|t| parse_wrk(&t));
    let sanity = load(dir, "sanity").ok();
    if let (Some((wrk_rps, wrk_p50)), Some(s)) = (wrk, sanity) {
        let tool_rps = s.summary.total.throughput;
        let tool_p50 = s.summary.total.latency_us.p50 as f64 / 1000.0;
        let d_rps = (tool_rps / wrk_rps - 1.0) * 100.0;
        let d_p50 = (tool_p50 / wrk_p50 - 1.0) * 100.0;
        writeln!(
            md,
            "GET of one key through one node, {} connections, 10 s each: wrk {wrk_rps:.0} req/s, median \
             {wrk_p50:.2} ms; dynakv-loadtest {tool_rps:.0} req/s ({d_rps:+.1}%), median {tool_p50:.2} ms ({d_p50:+.1}%). \
             Within 15%: {}.",
            s.concurrency,
            if d_rps.abs() <= 15.0 && d_p50.abs() <= 15.0 {
                "yes"
            } else {
                "**no**"
            }
        )?;
    } else {
        writeln!(md, "(wrk or the sanity run is missing)")?;
    }

    writeln!(md, "\n## Plots\n")?;
    for (label, title) in [
        ("compare-a", "YCSB A"),
        ("compare-c", "YCSB C"),
        ("dynakv-a-open", "dynakv open loop, YCSB A at half peak"),
        ("tail", "dynakv open loops, every run of the tail targets"),
    ] {
        writeln!(md, "**{title}**\n")?;
        for kind in ["throughput", "p99", "latency"] {
            writeln!(md, "![{title} {kind}](results/plots/{label}-{kind}.svg)")?;
        }
        writeln!(md)?;
    }
    writeln!(
        md,
        "Raw reports (JSON with per-second series) and tables are in `loadtest/bench/results/`."
    )?;
    std::fs::write(out, md)?;
    Ok(())
}

/// The tail targets, run by run: whole-run p99 and p99.9 and the worst second, with what
/// else was going on in the cluster where `run.sh` recorded it (`{label}.context`).
fn tail_section(md: &mut String, dir: &Path) -> anyhow::Result<()> {
    let runs: Vec<(&str, &str, Report)> = TAIL_RUNS
        .iter()
        .filter_map(|(label, what)| load(dir, label).ok().map(|r| (*label, *what, r)))
        .collect();
    if runs.is_empty() {
        return Ok(());
    }
    writeln!(
        md,
        "## Tail targets
"
    )?;
    writeln!(
        md,
        "Open loop, YCSB A, {} s per run, latency counted from when each request was due. Targets: p99 under \
         {TAIL_P99_MS} ms, p99.9 under {TAIL_P999_MS} ms, and no one-second window with a p99 over \
         {TAIL_SECOND_P99_MS} ms. The per-second p99 of every run is plotted below (`tail-p99.svg`). \
         The machine's idle and steal time (all CPUs, every process, from `/proc/stat`) are given over the \
         whole run, and in brackets averaged over its seconds with a p99 over {TAIL_SECOND_P99_MS} ms and \
         over the others: a stall with idle CPU is not a want of CPU inside the machine, and steal is time \
         the hypervisor gave to someone else.\n",
        runs[0].2.summary.duration_s.round()
    )?;
    writeln!(
        md,
        "| run | requests/s | p99 ms | p99.9 ms | worst second's p99 ms | seconds over {TAIL_SECOND_P99_MS} ms \
         | idle % (stalled / calm s) | steal % (stalled / calm s) | verdict |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---|")?;
    let mut contexts = Vec::new();
    for (label, what, r) in &runs {
        let t = Tail::of(r);
        let missed: Vec<&str> = [
            (t.p99_met(), "p99"),
            (t.p999_met(), "p99.9"),
            (t.seconds_met(), "seconds"),
        ]
        .into_iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, name)| name)
        .collect();
        let machine = MachineDuring::of(r);
        let cell = |share: fn(&MachineCpu) -> f64| machine.as_ref().map_or("-".to_string(), |m| m.cell(share));
        writeln!(
            md,
            "| {what} | {:.0} | {:.2} | {:.2} | {:.1} | {} of {} | {} | {} | {} |",
            r.rate.unwrap_or(0.0),
            t.p99_ms,
            t.p999_ms,
            t.worst_second_ms,
            t.seconds_over,
            t.seconds,
            cell(|m| m.idle + m.iowait),
            cell(|m| m.steal),
            if missed.is_empty() {
                "met".to_string()
            } else {
                format!("**missed** ({})", missed.join(", "))
            }
        )?;
        if let Ok(context) = std::fs::read_to_string(dir.join(format!("{label}.context"))) {
            contexts.push(format!("- {what}: {}", context.trim()));
        }
    }
    if !contexts.is_empty() {
        writeln!(md, "\nDuring those runs:\n\n{}", contexts.join("\n"))?;
    }
    writeln!(md)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Latency, OpSummary, Point, Summary};

    fn open_run(p99_us: u64, p999_us: u64, seconds: &[u64]) -> Report {
        let latency = Latency {
            p99: p99_us,
            p999: p999_us,
            ..Latency::default()
        };
        Report {
            summary: Summary {
                duration_s: seconds.len() as f64 + 0.5,
                total: OpSummary {
                    latency_us: latency,
                    ..OpSummary::default()
                },
                timeseries: seconds
                    .iter()
                    .enumerate()
                    .map(|(i, &p99)| Point {
                        second: i as u64,
                        ops: 100,
                        p99_us: p99,
                        ..Point::default()
                    })
                    // The partial last second does not count, however slow.
                    .chain(std::iter::once(Point {
                        second: seconds.len() as u64,
                        ops: 3,
                        p99_us: 90_000,
                        ..Point::default()
                    }))
                    .collect(),
                ..Summary::default()
            },
            ..Report::default()
        }
    }

    #[test]
    fn tail_targets_judge_the_whole_run_and_every_whole_second() {
        let calm = Tail::of(&open_run(4_000, 12_000, &[3_000, 4_500, 19_000]));
        assert_eq!(
            calm,
            Tail {
                p99_ms: 4.0,
                p999_ms: 12.0,
                worst_second_ms: 19.0,
                seconds_over: 0,
                seconds: 3
            }
        );
        assert!(calm.met());
        let one_bad_second = Tail::of(&open_run(4_000, 12_000, &[3_000, 21_000, 4_000]));
        assert_eq!((one_bad_second.seconds_over, one_bad_second.worst_second_ms), (1, 21.0));
        assert!(one_bad_second.p99_met() && one_bad_second.p999_met() && !one_bad_second.met());
        let slow = Tail::of(&open_run(5_000, 15_000, &[3_000]));
        assert!(!slow.p99_met() && !slow.p999_met() && slow.seconds_met());
    }

    #[test]
    fn machine_time_is_split_between_stalled_and_calm_seconds() {
        let share = |idle: f64, steal: f64| MachineCpu {
            user: 1.0 - idle - steal,
            idle,
            steal,
            ..MachineCpu::default()
        };
        let mut r = open_run(4_000, 12_000, &[3_000, 30_000, 25_000, 4_000]);
        assert_eq!(MachineDuring::of(&r), None, "no counters, nothing to say");
        r.summary.machine_cpu = Some(share(0.2, 0.1));
        let per_second = [
            share(0.4, 0.0),
            share(0.0, 0.3),
            share(0.1, 0.1),
            share(0.2, 0.0),
            share(0.9, 0.0),
        ];
        for (p, m) in r.summary.timeseries.iter_mut().zip(per_second) {
            p.machine = Some(m);
        }
        let m = MachineDuring::of(&r).unwrap();
        let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
        // Seconds 1 and 2 stalled; 0 and 3 were calm; the partial last second is left out.
        let (stalled, calm) = (m.stalled.unwrap(), m.calm.unwrap());
        assert!(near(stalled.idle, 0.05) && near(stalled.steal, 0.2), "{stalled:?}");
        assert!(near(calm.idle, 0.3) && near(calm.steal, 0.0), "{calm:?}");
        assert_eq!(m.cell(|c| c.idle), "20 (5 / 30)");
        assert_eq!(m.cell(|c| c.steal), "10 (20 / 0)");
        // A run with no stalled second says so.
        let calm_run = Report {
            summary: Summary {
                machine_cpu: Some(share(0.5, 0.0)),
                ..open_run(4_000, 12_000, &[3_000]).summary
            },
            ..Report::default()
        };
        assert_eq!(MachineDuring::of(&calm_run).unwrap().cell(|c| c.idle), "50 (- / -)");
    }

    #[test]
    fn reads_wrk_output() {
        let text = "  Latency Distribution\n     50%    1.49ms\n     75%    2.01ms\n  Requests/sec:  42113.52\n";
        assert_eq!(parse_wrk(text), Some((42113.52, 1.49)));
        let us = "     50%  812.00us\nRequests/sec: 100.0\n";
        assert_eq!(parse_wrk(us), Some((100.0, 0.812)));
        assert_eq!(parse_wrk("nothing"), None);
    }
}
