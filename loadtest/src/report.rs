//! The end-of-run table, and the machine-readable report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::stats::Summary;

/// Everything a run produced, as written by `--json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub label: String,
    pub target: String,
    pub nodes: Vec<String>,
    pub workload: String,
    pub mix: BTreeMap<String, f64>,
    pub distribution: String,
    pub records: u64,
    pub value_size: String,
    pub concurrency: usize,
    /// Open-loop target rate; `None` for a closed loop.
    pub rate: Option<f64>,
    pub r: Option<usize>,
    pub w: Option<usize>,
    pub load_seconds: Option<f64>,
    pub summary: Summary,
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// The human-readable table.
pub fn table(report: &Report) -> String {
    let s = &report.summary;
    let mut out = format!(
        "{} — {} workload {} ({}), {} {}, {:.1} s\n",
        report.label,
        report.target,
        report.workload,
        report.distribution,
        match report.rate {
            Some(r) => format!("open loop at {r:.0}/s, up to"),
            None => "closed loop,".to_string(),
        },
        format_args!("{} clients", report.concurrency),
        s.duration_s
    );
    out.push_str(&format!(
        "{:<8} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8}\n",
        "op", "count", "ops/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "errors"
    ));
    let rows = s
        .operations
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .chain(std::iter::once(("total", &s.total)));
    for (name, o) in rows {
        out.push_str(&format!(
            "{:<8} {:>10} {:>10.0} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8}\n",
            name,
            o.count,
            o.throughput,
            ms(o.latency_us.p50),
            ms(o.latency_us.p90),
            ms(o.latency_us.p99),
            ms(o.latency_us.p999),
            ms(o.latency_us.max),
            o.errors
        ));
    }
    let errors: BTreeMap<&str, u64> = s
        .operations
        .values()
        .flat_map(|o| o.errors_by_class.iter().map(|(k, v)| (k.as_str(), *v)))
        .fold(BTreeMap::new(), |mut m, (k, v)| {
            *m.entry(k).or_default() += v;
            m
        });
    if !errors.is_empty() {
        out.push_str("errors by class:");
        for (k, v) in errors {
            out.push_str(&format!("  {k}: {v}"));
        }
        out.push('\n');
    }
    if let Some(lag) = &s.dispatch_lag_us {
        out.push_str(&format!(
            "tool: requests started after they were due by p50 {} ms, p99 {} ms, max {} ms (part of the latencies above)\n",
            ms(lag.p50),
            ms(lag.p99),
            ms(lag.max)
        ));
    }
    if let Some(cores) = s.tool_cpu_cores {
        out.push_str(&format!("tool: used {cores:.2} cores of CPU itself\n"));
    }
    if let Some(m) = &s.machine_cpu {
        let pct = |x: f64| x * 100.0;
        out.push_str(&format!(
            "machine (every CPU, every process): user {:.0}%, system {:.0}%, irq {:.0}%, iowait {:.0}%, idle {:.0}%, steal {:.1}%\n",
            pct(m.user),
            pct(m.system),
            pct(m.irq),
            pct(m.iowait),
            pct(m.idle),
            pct(m.steal)
        ));
    }
    out
}
