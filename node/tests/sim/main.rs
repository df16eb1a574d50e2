//! The deterministic cluster simulator: the real coordinator, peer handler and
//! background services of five nodes, on in-memory storage, over a simulated network,
//! with seeded faults; after every history the checkers run (see `workload`).
//!
//! `cargo test` runs each scenario over a fixed set of seeds. Soak and replay:
//!
//! ```text
//! DYNAKV_SIM_SEEDS=1000 cargo test --release -p dynakv-node --test sim -- --ignored soak --nocapture
//! DYNAKV_SIM_SCENARIO=minority_partition DYNAKV_SIM_SEED=17 \
//!     cargo test --release -p dynakv-node --test sim -- --ignored replay --nocapture
//! ```
//!
//! A failing seed prints that replay command and the trace of the events (faults,
//! client operations, violations; `DYNAKV_SIM_TRACE=1` prints the whole trace of a
//! replay). The same seed always gives the same history: [`deterministic`] checks it.

mod gate;
mod lagging;
mod study;
mod workload;
mod world;

use std::time::Duration;

use dynakv_crdt::ConflictMode;
use futures::future::BoxFuture;
use rand::Rng;
use rand::seq::SliceRandom;

use dynakv_ring::layout::Change;
use world::{Mutation, SimConfig, World};

/// Simulated milliseconds of client load in each history.
const LOAD_MS: u64 = 10_000;
/// Longest a settled cluster may take for every partition's replicas to agree.
const CONVERGE_WITHIN: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    /// Read-merge-write of element sets, six clients sharing six keys.
    Set,
    /// The same, each client with keys of its own (no concurrent writers).
    OwnSet,
    /// Each write to a fresh key.
    Fresh,
    Delete,
    /// `Set`, and cold keys written once at the start and then only read (checked by
    /// `check_cold_reads`): for layout changes.
    Moving,
}

#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    what: &'static str,
    workload: Workload,
    config: fn(&mut SimConfig),
    faults: fn(World) -> BoxFuture<'static, ()>,
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

fn between(world: &World, lo: u64, hi: u64) -> u64 {
    world.random(|r| r.random_range(lo..=hi))
}

/// Node indexes in a seeded random order.
fn shuffled(world: &World) -> Vec<usize> {
    let mut all: Vec<usize> = (0..world.nodes()).collect();
    world.random(|r| all.shuffle(r));
    all
}

fn no_change(_: &mut SimConfig) {}

/// A moment after a layout change, a random node of the first five crashes and
/// restarts: a sender or a receiver of the transfers, or a bystander.
async fn crash_one_while_moving(w: &World) {
    sleep_ms(between(w, 50, 1_000)).await;
    let i = between(w, 0, 4) as usize;
    w.crash(i);
    sleep_ms(between(w, 200, 2_000)).await;
    w.restart(i).await;
}

/// Node `at` (index) stages the leave of n4 and n5 and commits it.
async fn n4_and_n5_leave(w: &World, at: usize) {
    let id = |i: usize| dynakv_ring::NodeId::new(format!("n{i}")).unwrap();
    w.change_layout(at, vec![Change::Leave(id(4)), Change::Leave(id(5))])
        .await;
}

/// For the layout scenarios: strict quorums (a quorum read must then see every write
/// acknowledged before it, which the cold-key reads check) and anti-entropy rare enough
/// that it cannot cover for a transfer that lost data.
fn layout_checks(c: &mut SimConfig) {
    c.sloppy = false;
    c.anti_entropy_ms = 5_000;
}

/// How a node is stopped.
enum Stop {
    /// Killed, then restarted on its storage.
    Crash,
    /// Paused (as under SIGSTOP), then resumed.
    Pause,
}

/// Until two seconds before the load ends: every 0.3-2 s a random node stops for
/// 0.2 s to `longest_ms`.
async fn again_and_again(w: World, stop: Stop, longest_ms: u64) {
    while w.now_ms() < LOAD_MS - 2_000 {
        sleep_ms(between(&w, 300, 2_000)).await;
        let i = between(&w, 0, w.nodes() as u64 - 1) as usize;
        match stop {
            Stop::Crash => drop(w.crash(i)),
            Stop::Pause => w.pause(i),
        }
        sleep_ms(between(&w, 200, longest_ms)).await;
        match stop {
            Stop::Crash => w.restart(i).await,
            Stop::Pause => w.resume(i),
        }
    }
}

/// Until two seconds before the load ends, every 0.2-1.5 s one fault at random: a
/// random split of the nodes, a node cut off, the network healed, a crash (of up to two
/// nodes at a time), a restart, a pause, a resume, a new loss rate, a clock jump.
async fn chaos_faults(w: World) {
    while w.now_ms() < LOAD_MS - 2_000 {
        sleep_ms(between(&w, 200, 1_500)).await;
        let i = between(&w, 0, w.nodes() as u64 - 1) as usize;
        match between(&w, 0, 7) {
            0 => {
                let order = shuffled(&w);
                let k = between(&w, 1, w.nodes() as u64 - 1) as usize;
                w.cut(&order[..k], &order[k..]);
            }
            1 => w.isolate(i),
            2 => w.heal_network(),
            3 if (0..w.nodes()).filter(|&j| !w.is_up(j)).count() < 2 => drop(w.crash(i)),
            4 if !w.is_up(i) => w.restart(i).await,
            5 if w.is_up(i) && !w.is_paused(i) => w.pause(i),
            6 if w.is_paused(i) => w.resume(i),
            7 => {
                let loss = between(&w, 0, 10) as f64 / 100.0;
                w.set_loss(loss, loss / 2.0);
            }
            _ => {
                let skew = between(&w, 0, 6_000) as i64 - 3_000;
                w.set_skew(i, skew);
            }
        }
    }
}

/// After 1-3 s, two nodes are cut off from the other three for 3-6 s.
fn cut_two_from_three(w: World) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        sleep_ms(between(&w, 1_000, 3_000)).await;
        let order = shuffled(&w);
        w.cut(&order[..2], &order[2..]);
        sleep_ms(between(&w, 3_000, 6_000)).await;
        w.heal_network();
    })
}

/// After 1-3 s, three nodes are each cut off from every other node for 3-6 s.
fn isolate_three(w: World) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        sleep_ms(between(&w, 1_000, 3_000)).await;
        for &i in &shuffled(&w)[..3] {
            w.isolate(i);
        }
        sleep_ms(between(&w, 3_000, 6_000)).await;
        w.heal_network();
    })
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "minority_partition",
        what: "two nodes cut off from the other three while clients write through all five",
        workload: Workload::Set,
        config: no_change,
        faults: cut_two_from_three,
    },
    Scenario {
        name: "majority_partition",
        what: "three nodes each cut off from every other node while clients write through all five",
        workload: Workload::Set,
        config: no_change,
        faults: isolate_three,
    },
    Scenario {
        name: "majority_partition_lww",
        what: "last-writer-wins writes of fresh keys while three nodes are each cut off from every other",
        workload: Workload::Fresh,
        config: |c| c.mode = ConflictMode::Lww,
        faults: isolate_three,
    },
    Scenario {
        name: "minority_partition_lww",
        what: "last-writer-wins, each client with keys of its own, while two nodes are cut off from the other three",
        workload: Workload::OwnSet,
        config: |c| c.mode = ConflictMode::Lww,
        faults: cut_two_from_three,
    },
    Scenario {
        name: "crash_restart",
        what: "a node crashes under load and restarts, again and again",
        workload: Workload::Set,
        config: no_change,
        faults: |w| Box::pin(again_and_again(w, Stop::Crash, 3_000)),
    },
    Scenario {
        name: "pause_coordinator",
        what: "a node stops (as under SIGSTOP) in the middle of coordinating writes, then goes on",
        workload: Workload::Set,
        config: no_change,
        faults: |w| Box::pin(again_and_again(w, Stop::Pause, 2_500)),
    },
    Scenario {
        name: "message_loss",
        what: "5% of messages lost and 2% delivered twice throughout, with delays up to 30 ms",
        workload: Workload::Set,
        config: |c| {
            c.loss = 0.05;
            c.duplicate = 0.02;
            c.delay_ms = (1, 30);
        },
        faults: |_| Box::pin(async {}),
    },
    Scenario {
        name: "clock_skew_lww",
        what: "last-writer-wins with clocks seconds apart; nodes restart with their clocks set back",
        workload: Workload::Set,
        config: |c| c.mode = ConflictMode::Lww,
        faults: |w| {
            Box::pin(async move {
                for i in 0..w.nodes() {
                    let skew = between(&w, 0, 8_000) as i64 - 4_000;
                    w.set_skew(i, skew);
                }
                for _ in 0..2 {
                    sleep_ms(between(&w, 1_000, 3_000)).await;
                    let i = between(&w, 0, w.nodes() as u64 - 1) as usize;
                    w.crash(i);
                    sleep_ms(between(&w, 100, 1_000)).await;
                    let back = w.0.slots[i].lock().clock.skew_ms() - between(&w, 1_000, 4_000) as i64;
                    w.set_skew(i, back);
                    w.restart(i).await;
                }
            })
        },
    },
    Scenario {
        name: "chaos",
        what: "partitions, crashes, pauses, loss, duplication and clock jumps, all at once and at random",
        workload: Workload::Set,
        config: no_change,
        faults: |w| Box::pin(chaos_faults(w)),
    },
    Scenario {
        name: "join_under_load",
        what: "two nodes join a three-node cluster under load; a random node crashes and restarts while partitions move",
        workload: Workload::Moving,
        config: |c| {
            layout_checks(c);
            c.boot = Some(3);
        },
        faults: |w| {
            Box::pin(async move {
                sleep_ms(between(&w, 300, 1_500)).await;
                w.add(3).await;
                sleep_ms(between(&w, 100, 1_500)).await;
                w.add(4).await;
                crash_one_while_moving(&w).await;
            })
        },
    },
    Scenario {
        name: "join_receiver_crash",
        what: "a node joins under load and crashes and restarts once or twice as partitions move (paced at 8 KB/s, which slows only partitions of more than one page)",
        workload: Workload::Moving,
        config: |c| {
            layout_checks(c);
            c.nodes = 4;
            c.boot = Some(3);
            c.handoff_bytes_per_sec = 8_000;
        },
        faults: |w| {
            Box::pin(async move {
                sleep_ms(between(&w, 300, 1_000)).await;
                w.add(3).await;
                for _ in 0..between(&w, 1, 2) {
                    sleep_ms(between(&w, 300, 2_000)).await;
                    w.crash(3);
                    sleep_ms(between(&w, 50, 1_500)).await;
                    w.restart(3).await;
                }
            })
        },
    },
    Scenario {
        name: "leave_under_load",
        what: "two of five nodes leave under load, with 3% of messages lost; a random node crashes and restarts while partitions move",
        workload: Workload::Moving,
        config: |c| {
            layout_checks(c);
            c.loss = 0.03;
        },
        faults: |w| {
            Box::pin(async move {
                sleep_ms(between(&w, 300, 1_500)).await;
                let at = between(&w, 0, 2) as usize;
                n4_and_n5_leave(&w, at).await;
                crash_one_while_moving(&w).await;
            })
        },
    },
    Scenario {
        name: "lagging_member",
        what: "a node hears no gossip for 1-4 s while two of five nodes leave under load, so it takes writes for partitions it gains before it knows the layout; 3% of messages lost; settled nodes look for copies to drop every 300 ms",
        workload: Workload::Moving,
        config: |c| {
            layout_checks(c);
            c.loss = 0.03;
            c.drop_sweep_ms = 300;
        },
        faults: |w| {
            Box::pin(async move {
                sleep_ms(between(&w, 300, 1_500)).await;
                // One of the three that stay (each gains partitions) lags; another
                // commits the change.
                let lagging = between(&w, 0, 2) as usize;
                let at = (lagging + between(&w, 1, 2) as usize) % 3;
                w.deafen(lagging, "Gossip");
                sleep_ms(between(&w, 0, 300)).await;
                n4_and_n5_leave(&w, at).await;
                sleep_ms(between(&w, 1_000, 4_000)).await;
                if let Some(n) = w.node(lagging) {
                    let c = &n.local.cluster;
                    w.trace(format!(
                        "n{} knows layout v{}; writes it took named v{}",
                        lagging + 1,
                        c.view().current().version,
                        c.layout_seen()
                    ));
                }
                w.heal_network();
            })
        },
    },
    Scenario {
        name: "replace_under_load",
        what: "a dead node is replaced by a fresh one under load; partitions are rebuilt from the surviving replicas",
        workload: Workload::Moving,
        config: |c| {
            layout_checks(c);
            c.nodes = 6;
            c.boot = Some(5);
            c.spares = 1;
        },
        faults: |w| {
            Box::pin(async move {
                sleep_ms(between(&w, 300, 1_500)).await;
                let id = |i: usize| dynakv_ring::NodeId::new(format!("n{i}")).unwrap();
                let gone = between(&w, 1, 4) as usize;
                w.crash(gone);
                w.add(5).await;
                let dead = w
                    .wait_until(Duration::from_secs(10), |w| w.seen_dead_by_all(gone))
                    .await;
                if dead {
                    w.change_layout(
                        0,
                        vec![Change::Replace {
                            old: id(gone + 1),
                            new: id(6),
                        }],
                    )
                    .await;
                }
                // The replaced node stays down: the end checks run on the new layout.
                w.retire(gone);
            })
        },
    },
    Scenario {
        name: "delete_race",
        what: "deletes race writes while a replica is down; it comes back; tombstones are collected",
        workload: Workload::Delete,
        config: no_change,
        faults: |w| {
            Box::pin(async move {
                sleep_ms(between(&w, 500, 2_000)).await;
                let i = between(&w, 0, w.nodes() as u64 - 1) as usize;
                w.crash(i);
                sleep_ms(between(&w, 2_000, 5_000)).await;
                w.restart(i).await;
            })
        },
    },
];

fn scenario(name: &str) -> Scenario {
    *SCENARIOS.iter().find(|s| s.name == name).unwrap_or_else(|| {
        panic!(
            "no scenario {name:?}; there are {:?}",
            SCENARIOS.iter().map(|s| s.name).collect::<Vec<_>>()
        )
    })
}

/// What one history did and found.
#[derive(Debug, Default)]
struct Report {
    ops: u64,
    failed_ops: u64,
    acked: usize,
    /// Acknowledged elements missing at the end (lww mode only; mv mode fails instead).
    lost: usize,
    reads_checked: usize,
    tombstones_collected: u64,
    messages: u64,
    sim_ms: u64,
    problems: Vec<String>,
    digest: String,
    trace: Vec<String>,
}

fn mutation_name(m: Mutation) -> &'static str {
    match m {
        Mutation::None => "none",
        Mutation::DropHints => "drop-hints",
        Mutation::ForgetClock => "forget-clock",
        Mutation::ForgetLayout => "forget-layout",
    }
}

/// Runs one history of `scenario` from `seed` and checks it.
fn run(scenario: Scenario, seed: u64, mutation: Mutation) -> Report {
    world::runtime().block_on(async move {
        let mut config = SimConfig {
            mutation,
            // Reads that ask every replica at once, ask r and speculate soon (within
            // the network's delays), or ask r and speculate late: a third of the seeds each.
            read_speculate_ms: [0, 5, 40][(seed % 3) as usize],
            ..Default::default()
        };
        (scenario.config)(&mut config);
        let mode = config.mode;
        let speculate_ms = config.read_speculate_ms;
        let world = World::start(seed, config).await;
        world.trace(format!("scenario {}: {}", scenario.name, scenario.what));
        world.trace(format!(
            "reads ask every replica after {speculate_ms} ms without a quorum"
        ));
        let until = world.now_ms() + LOAD_MS;
        let faults = tokio::spawn((scenario.faults)(world.clone()));
        let history = match scenario.workload {
            Workload::Set => workload::set_clients(&world, 6, 6, false, until).await,
            Workload::OwnSet => workload::set_clients(&world, 6, 2, true, until).await,
            Workload::Fresh => workload::fresh_clients(&world, 6, until).await,
            Workload::Delete => workload::delete_clients(&world, 3, 2, 4, until).await,
            Workload::Moving => {
                let cold = tokio::spawn({
                    let world = world.clone();
                    async move { workload::cold_clients(&world, 200, 2, until).await }
                });
                let h = workload::set_clients(&world, 6, 6, false, until).await;
                workload::absorb(&h, &cold.await.expect("cold clients"));
                h
            }
        };
        faults.await.expect("fault schedule");
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
            ..Default::default()
        };
        match workload::final_reads(&world, keys.into_iter()).await {
            Err(e) => problems.push(e),
            Ok(settled) => match scenario.workload {
                Workload::Set | Workload::OwnSet | Workload::Fresh | Workload::Moving => {
                    let strict = mode == ConflictMode::Mv || scenario.workload == Workload::Fresh;
                    let verdict = workload::check_set(strict, &h, &settled);
                    report.acked = verdict.acked;
                    report.lost = verdict.lost;
                    problems.extend(verdict.problems);
                }
                Workload::Delete => problems.extend(workload::check_deletes(&h, &settled)),
            },
        }
        problems.extend(workload::check_lww_stamps(&h));
        let (checked, read_problems) = workload::check_reads(&world, &h);
        report.reads_checked = checked;
        problems.extend(read_problems);
        let (cold_checked, cold_problems) = workload::check_cold_reads(&h);
        report.reads_checked += cold_checked;
        problems.extend(cold_problems);
        for p in &problems {
            world.trace(format!("PROBLEM {p}"));
        }
        report.tombstones_collected = (0..world.nodes())
            .filter_map(|i| world.node(i))
            .map(|n| n.services.tombstones.collected())
            .sum();
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

fn replay_command(scenario: &str, seed: u64, mutation: Mutation) -> String {
    let m = match mutation {
        Mutation::None => String::new(),
        m => format!("DYNAKV_SIM_MUTATION={} ", mutation_name(m)),
    };
    format!(
        "{m}DYNAKV_SIM_SCENARIO={scenario} DYNAKV_SIM_SEED={seed} \
         cargo test --release -p dynakv-node --test sim -- --ignored replay --nocapture"
    )
}

/// Runs `seeds` of `scenario`; panics with the first failure's seed, problems, trace
/// and replay command.
fn run_seeds(name: &str, seeds: impl IntoIterator<Item = u64>) -> Vec<Report> {
    let scenario = scenario(name);
    let mut reports = Vec::new();
    for seed in seeds {
        let report = run(scenario, seed, Mutation::None);
        if !report.problems.is_empty() {
            fail(name, seed, Mutation::None, &report);
        }
        reports.push(report);
    }
    reports
}

fn fail(name: &str, seed: u64, mutation: Mutation, report: &Report) -> ! {
    let tail: Vec<&String> = report.trace.iter().rev().take(60).collect();
    let tail: Vec<&str> = tail.into_iter().rev().map(String::as_str).collect();
    panic!(
        "scenario {name}, seed {seed}: {} problem(s):\n  {}\n\nlast events:\n{}\n\nreplay: {}",
        report.problems.len(),
        report.problems.join("\n  "),
        tail.join("\n"),
        replay_command(name, seed, mutation)
    );
}

/// Seeds each scenario runs under `cargo test`.
const FIXED_SEEDS: std::ops::Range<u64> = 0..4;

#[test]
fn minority_partition() {
    run_seeds("minority_partition", FIXED_SEEDS);
}

#[test]
fn majority_partition() {
    run_seeds("majority_partition", FIXED_SEEDS);
}

#[test]
fn majority_partition_lww() {
    run_seeds("majority_partition_lww", FIXED_SEEDS);
}

/// Runs a last-writer-wins scenario and reports (does not assert) what it lost.
fn lww_loss(name: &str) {
    let reports = run_seeds(name, FIXED_SEEDS);
    let (acked, lost) = reports.iter().fold((0, 0), |(a, l), r| (a + r.acked, l + r.lost));
    println!("{name}: {lost} of {acked} acknowledged elements lost (last writer wins)");
}

#[test]
fn minority_partition_lww() {
    lww_loss("minority_partition_lww");
}

#[test]
fn crash_restart() {
    run_seeds("crash_restart", FIXED_SEEDS);
}

#[test]
fn pause_coordinator() {
    run_seeds("pause_coordinator", FIXED_SEEDS);
}

#[test]
fn message_loss() {
    run_seeds("message_loss", FIXED_SEEDS);
}

#[test]
fn clock_skew_lww() {
    lww_loss("clock_skew_lww");
}

#[test]
fn chaos() {
    run_seeds("chaos", FIXED_SEEDS);
}

#[test]
fn join_under_load() {
    run_seeds("join_under_load", FIXED_SEEDS);
}

#[test]
fn join_receiver_crash() {
    run_seeds("join_receiver_crash", FIXED_SEEDS);
}

/// Seed 424242033 (found by a soak): a read through n3 was placed under layout v2
/// (replicas n1, n3, n4) just after n3 moved its reads there, and the read checker took
/// n4's answer for a stranger's because it had taken the replicas before the read was
/// placed (v1's: n1, n2, n3). The read was right; the checker now takes the replicas the
/// coordinator used.
#[test]
fn join_receiver_crash_seed_424242033() {
    run_seeds("join_receiver_crash", [424_242_033]);
}

#[test]
fn leave_under_load() {
    run_seeds("leave_under_load", FIXED_SEEDS);
}

#[test]
fn lagging_member() {
    run_seeds("lagging_member", FIXED_SEEDS);
}

#[test]
fn replace_under_load() {
    run_seeds("replace_under_load", FIXED_SEEDS);
}

#[test]
fn delete_race() {
    let reports = run_seeds("delete_race", FIXED_SEEDS);
    let collected: u64 = reports.iter().map(|r| r.tombstones_collected).sum();
    assert!(collected > 0, "the delete scenario never collected a tombstone");
}

/// The same seed twice gives the same history, event for event.
#[test]
fn deterministic() {
    let s = scenario("crash_restart");
    let a = run(s, 7, Mutation::None);
    let b = run(s, 7, Mutation::None);
    assert_eq!(a.trace, b.trace);
    assert_eq!(a.digest, b.digest, "same events, different network histories");
    let c = run(s, 8, Mutation::None);
    assert_ne!(a.digest, c.digest, "another seed, another history");
}

/// A mutation that breaks a guarantee must make a checker fail, with a seed to replay.
fn mutation_is_caught(name: &str, mutation: Mutation, seeds: std::ops::Range<u64>, expect: &str) {
    let scenario = scenario(name);
    for seed in seeds.clone() {
        let report = run(scenario, seed, mutation);
        if let Some(p) = report.problems.iter().find(|p| p.contains(expect)) {
            println!(
                "mutation {} caught by {name}, seed {seed}: {p}\n  replay: {}",
                mutation_name(mutation),
                replay_command(name, seed, mutation)
            );
            return;
        }
    }
    panic!(
        "mutation {} was never caught by {name} over seeds {seeds:?}",
        mutation_name(mutation)
    );
}

#[test]
fn dropping_hints_is_caught() {
    mutation_is_caught(
        "majority_partition_lww",
        Mutation::DropHints,
        0..8,
        "acknowledged elements lost",
    );
}

#[test]
fn forgetting_the_clock_record_is_caught() {
    mutation_is_caught("clock_skew_lww", Mutation::ForgetClock, 0..8, "clock went back");
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} must be a number")))
}

fn env_mutation() -> Mutation {
    match std::env::var("DYNAKV_SIM_MUTATION").as_deref() {
        Err(_) | Ok("none") => Mutation::None,
        Ok("drop-hints") => Mutation::DropHints,
        Ok("forget-clock") => Mutation::ForgetClock,
        Ok("forget-layout") => Mutation::ForgetLayout,
        Ok(other) => panic!("unknown DYNAKV_SIM_MUTATION {other:?}"),
    }
}

/// Replays one seed: `DYNAKV_SIM_SCENARIO`, `DYNAKV_SIM_SEED`, optionally
/// `DYNAKV_SIM_MUTATION` and `DYNAKV_SIM_TRACE=1`.
#[test]
#[ignore = "replays the seed named in DYNAKV_SIM_SEED"]
fn replay() {
    let name = std::env::var("DYNAKV_SIM_SCENARIO").expect("DYNAKV_SIM_SCENARIO names the scenario");
    let seed = env_u64("DYNAKV_SIM_SEED").expect("DYNAKV_SIM_SEED names the seed");
    let mutation = env_mutation();
    let report = run(scenario(&name), seed, mutation);
    if std::env::var("DYNAKV_SIM_TRACE").is_ok_and(|v| v == "1") {
        for line in &report.trace {
            println!("{line}");
        }
    }
    println!(
        "{name} seed {seed}: {} ops ({} failed), {} acked, {} lost, {} reads checked, {} messages, {} ms simulated, digest {}",
        report.ops,
        report.failed_ops,
        report.acked,
        report.lost,
        report.reads_checked,
        report.messages,
        report.sim_ms,
        &report.digest[..16]
    );
    if !report.problems.is_empty() {
        fail(&name, seed, mutation, &report);
    }
}

/// Runs `DYNAKV_SIM_SEEDS` random seeds (from `DYNAKV_SIM_SEED_BASE`, else the clock) of
/// every scenario, or of `DYNAKV_SIM_SCENARIO`.
#[test]
#[ignore = "a soak: DYNAKV_SIM_SEEDS seeds per scenario"]
fn soak() {
    let count = env_u64("DYNAKV_SIM_SEEDS").unwrap_or(100);
    let base = env_u64("DYNAKV_SIM_SEED_BASE").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .wrapping_mul(1_000_003)
    });
    let only = std::env::var("DYNAKV_SIM_SCENARIO").ok();
    for s in SCENARIOS.iter().filter(|s| only.as_deref().is_none_or(|o| o == s.name)) {
        let started = std::time::Instant::now();
        let reports = run_seeds(s.name, base..base + count);
        let secs = started.elapsed().as_secs_f64();
        let ops: u64 = reports.iter().map(|r| r.ops).sum();
        let (acked, lost) = reports.iter().fold((0, 0), |(a, l), r| (a + r.acked, l + r.lost));
        let checked: usize = reports.iter().map(|r| r.reads_checked).sum();
        let collected: u64 = reports.iter().map(|r| r.tombstones_collected).sum();
        println!(
            "{:<20} {count} seeds from {base} in {secs:.1} s ({:.2} seeds/s): {ops} client ops, \
             {acked} acked, {lost} lost, {checked} reads checked, {collected} tombstones collected",
            s.name,
            count as f64 / secs
        );
    }
}
