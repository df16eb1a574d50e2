//! Running one history of a scenario and checking it: the scenario's shape
//! ([`Scenario`]: settings, fault schedule, workload, floors), the run ([`run`]), what it
//! found ([`Report`]), and the replay command a failure prints.

use std::time::Duration;

use futures::future::BoxFuture;
use rand::Rng;
use rand::seq::SliceRandom;

use crate::disk;
use crate::disk::Mutation;
use crate::workload::{self, Checking, Workload};
use crate::world::{self, SimConfig, World};

/// Simulated milliseconds of client load in each history.
pub const LOAD_MS: u64 = 10_000;
/// Longest a settled cluster may take for every partition's replicas to agree.
pub const CONVERGE_WITHIN: Duration = Duration::from_secs(30);

#[derive(Clone, Copy)]
pub struct Scenario {
    pub name: &'static str,
    pub what: &'static str,
    /// The clients and what their history is checked for.
    pub workload: &'static dyn Workload,
    pub config: fn(&mut SimConfig),
    pub faults: fn(World) -> BoxFuture<'static, ()>,
    /// What every history of the scenario must at least do, so that a workload that
    /// stopped working, or a cluster that failed every request, cannot pass.
    pub floors: Floors,
}

/// A scenario's non-vacuity floors (see [`Floors::check`]).
#[derive(Clone, Copy, Debug)]
pub struct Floors {
    /// Acknowledged writes: elements for the set workloads, ids for the delete one.
    pub acked: usize,
    /// Client reads the read checkers looked at.
    pub reads_checked: usize,
    /// Ids covered by acknowledged deletes (the delete checker's input).
    pub deleted: usize,
    pub tombstones_collected: u64,
    /// Partition pages fetched by nodes gaining partitions.
    pub pages_fetched: u64,
    /// Unsynced batches machine crashes lost.
    pub batches_lost: u64,
    /// Storage calls failed by injected faults.
    pub storage_errors: u64,
}

/// Zero floors, for scenarios to raise: each sets its acknowledged writes and checked
/// reads to about a third of the least a history of it made in a swarm soak of 150
/// seeds (2026-12-07), and what it must do besides.
pub const FLOORS: Floors = Floors {
    acked: 0,
    reads_checked: 0,
    deleted: 0,
    tombstones_collected: 0,
    pages_fetched: 0,
    batches_lost: 0,
    storage_errors: 0,
};

impl Floors {
    /// The floors `report` is under, as problems.
    pub fn check(&self, r: &Report) -> Vec<String> {
        let figures: [(&str, u64, u64); 7] = [
            ("acknowledged writes", r.acked as u64, self.acked as u64),
            ("reads checked", r.reads_checked as u64, self.reads_checked as u64),
            ("ids deleted", r.deleted as u64, self.deleted as u64),
            (
                "tombstones collected",
                r.tombstones_collected,
                self.tombstones_collected,
            ),
            ("partition pages fetched", r.pages_fetched, self.pages_fetched),
            ("unsynced batches lost", r.disk.batches_lost, self.batches_lost),
            ("injected storage errors", r.disk.injected_errors, self.storage_errors),
        ];
        figures
            .iter()
            .filter(|(_, got, floor)| got < floor)
            .map(|(what, got, floor)| format!("vacuous history: {got} {what}, below the scenario's floor of {floor}"))
            .collect()
    }
}

pub async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

pub fn between(world: &World, lo: u64, hi: u64) -> u64 {
    world.random(|r| r.random_range(lo..=hi))
}

/// Node indexes in a seeded random order.
pub fn shuffled(world: &World) -> Vec<usize> {
    let mut all: Vec<usize> = (0..world.nodes()).collect();
    world.random(|r| all.shuffle(r));
    all
}

pub fn no_change(_: &mut SimConfig) {}

/// What one history did and found.
#[derive(Debug, Default)]
pub struct Report {
    pub ops: u64,
    pub failed_ops: u64,
    pub acked: usize,
    /// Acknowledged elements missing at the end (lww mode only; mv mode fails instead).
    pub lost: usize,
    pub reads_checked: usize,
    /// Delete workload: ids covered by acknowledged deletes.
    pub deleted: usize,
    pub tombstones_collected: u64,
    pub pages_fetched: u64,
    pub disk: disk::DiskStats,
    /// The settings the seed drew.
    pub settings: String,
    pub messages: u64,
    pub sim_ms: u64,
    pub problems: Vec<String>,
    pub digest: String,
    pub trace: Vec<String>,
}

pub fn mutation_name(m: Mutation) -> &'static str {
    match m {
        Mutation::None => "none",
        Mutation::DropHints => "drop-hints",
        Mutation::ForgetClock => "forget-clock",
        Mutation::ForgetLayout => "forget-layout",
        Mutation::PretendCleanStop => "pretend-clean-stop",
    }
}

/// Runs one history of `scenario` from `seed` and checks it.
pub fn run(scenario: &Scenario, seed: u64, mutation: Mutation) -> Report {
    world::runtime().block_on(async move {
        let mut config = SimConfig {
            mutation,
            ..SimConfig::swarm(seed)
        };
        (scenario.config)(&mut config);
        let checking = Checking {
            mode: config.mode,
            strict_quorums: config.strict_quorums(),
        };
        let settings = config.summary();
        let world = World::start(seed, config).await;
        world.trace(format!("scenario {}: {}", scenario.name, scenario.what));
        world.trace(format!("settings (swarm): {settings}"));
        let until = world.now_ms() + LOAD_MS;
        let faults = tokio::spawn((scenario.faults)(world.clone()));
        let history = scenario.workload.drive(&world, until).await;
        faults.await.expect("fault schedule");
        workload::absorb(&history, &world.probes());
        world.trace("load over; healing every fault");
        world.heal_all().await;
        let mut problems = Vec::new();
        let converged = world.wait_until(CONVERGE_WITHIN, |w| w.roots_agree()).await;
        world.trace(format!("replicas agree: {converged}"));
        if !converged {
            problems.push(format!(
                "replicas' Merkle roots still differ {CONVERGE_WITHIN:?} after every fault healed"
            ));
        }
        // Time for tombstone collection (past the grace period, a few rounds), which
        // must leave the replicas agreeing too and bring nothing back.
        sleep_ms(2 * world.0.config.tombstone_grace_ms + 1_000).await;
        if converged && !world.wait_until(CONVERGE_WITHIN, |w| w.roots_agree()).await {
            problems.push("replicas' Merkle roots differ again after tombstone collection".into());
        }
        problems.extend(world.violations());
        let h = std::mem::take(&mut *history.lock());
        let keys: Vec<String> = h
            .acked
            .keys()
            .chain(h.maybe.keys())
            .chain(h.written.keys())
            .chain(h.deleted.keys())
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut report = Report {
            ops: h.ops,
            failed_ops: h.failed_ops,
            settings,
            ..Default::default()
        };
        match workload::final_reads(&world, keys.into_iter()).await {
            Err(e) => problems.push(e),
            Ok(settled) => {
                let verdict = scenario.workload.check(&checking, &h, &settled);
                report.acked = verdict.acked;
                report.lost = verdict.lost;
                report.deleted = verdict.deleted;
                problems.extend(verdict.problems);
            }
        }
        problems.extend(workload::check_lww_stamps(&h));
        let (checked, read_problems) = workload::check_reads(&world, &h);
        report.reads_checked = checked;
        problems.extend(read_problems);
        let (cold_checked, cold_problems) = workload::check_cold_reads(&h);
        report.reads_checked += cold_checked;
        problems.extend(cold_problems);
        problems.extend(scenario.workload.check_reads(&checking, &h));
        report.tombstones_collected = (0..world.nodes())
            .filter_map(|i| world.node(i))
            .map(|n| n.services.tombstones.collected())
            .sum();
        report.pages_fetched = world
            .net_stats()
            .by_verb
            .get(&("FetchPartition", true))
            .map_or(0, |(count, _)| *count);
        report.disk = world.disk_stats();
        problems.extend(scenario.floors.check(&report));
        for p in &problems {
            world.trace(format!("PROBLEM {p}"));
        }
        report.messages = world.net_stats().sent;
        report.sim_ms = world.now_ms();
        report.problems = problems;
        report.digest = world.digest();
        report.trace = world.trace_lines();
        // Stop every node so that their tasks end with the runtime.
        for i in 0..world.nodes() {
            world.crash(i);
        }
        report
    })
}

pub fn replay_command(scenario: &str, seed: u64, mutation: Mutation) -> String {
    let m = match mutation {
        Mutation::None => String::new(),
        m => format!("DYNAKV_SIM_MUTATION={} ", mutation_name(m)),
    };
    format!(
        "{m}DYNAKV_SIM_SCENARIO={scenario} DYNAKV_SIM_SEED={seed} \
         cargo test --release -p dynakv-sim --test sim -- --ignored replay --nocapture"
    )
}

/// Runs `seeds` of `scenario`; panics with the first failure's seed, problems, trace
/// and replay command.
pub fn run_seeds(scenario: &Scenario, seeds: impl IntoIterator<Item = u64>) -> Vec<Report> {
    let (reports, failed) = run_seeds_on(scenario, seeds, false);
    assert!(failed.is_empty());
    reports
}

/// Runs `seeds` of `scenario`. The first failure panics, unless `keep_going`: then every
/// failure is printed and returned with its seed.
pub fn run_seeds_on(
    scenario: &Scenario,
    seeds: impl IntoIterator<Item = u64>,
    keep_going: bool,
) -> (Vec<Report>, Vec<u64>) {
    let name = scenario.name;
    let mut reports = Vec::new();
    let mut failed = Vec::new();
    for seed in seeds {
        let mut report = run(scenario, seed, Mutation::None);
        if !report.problems.is_empty() {
            if !keep_going {
                fail(name, seed, Mutation::None, &report);
            }
            println!(
                "FAILED {name} seed {seed} ({}):\n  {}\n  replay: {}",
                report.settings,
                report.problems.join("\n  "),
                replay_command(name, seed, Mutation::None)
            );
            failed.push(seed);
        }
        // A soak keeps thousands of reports: not their traces.
        report.trace = Vec::new();
        reports.push(report);
    }
    (reports, failed)
}

pub fn fail(name: &str, seed: u64, mutation: Mutation, report: &Report) -> ! {
    let tail: Vec<&String> = report.trace.iter().rev().take(60).collect();
    let tail: Vec<&str> = tail.into_iter().rev().map(String::as_str).collect();
    panic!(
        "scenario {name}, seed {seed} ({}): {} problem(s):\n  {}\n\nlast events:\n{}\n\nreplay: {}",
        report.settings,
        report.problems.len(),
        report.problems.join("\n  "),
        tail.join("\n"),
        replay_command(name, seed, mutation)
    );
}

pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} must be a number")))
}

pub fn env_mutation() -> Mutation {
    match std::env::var("DYNAKV_SIM_MUTATION").as_deref() {
        Err(_) | Ok("none") => Mutation::None,
        Ok("drop-hints") => Mutation::DropHints,
        Ok("forget-clock") => Mutation::ForgetClock,
        Ok("forget-layout") => Mutation::ForgetLayout,
        Ok("pretend-clean-stop") => Mutation::PretendCleanStop,
        Ok(other) => panic!("unknown DYNAKV_SIM_MUTATION {other:?}"),
    }
}
