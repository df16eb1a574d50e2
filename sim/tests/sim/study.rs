//! Gossip and the ring at scale, by simulation: real nodes (gossip only: no client load,
//! anti-entropy off) at 10, 100 and 1,000 members, with the production gossip settings
//! (a round a second, suspect after 3 s of silence, dead after 6 s).
//!
//! ```text
//! cargo test --release -p dynakv-sim --test sim -- --ignored gossip_study --nocapture
//! DYNAKV_STUDY_SIZES=10,100 DYNAKV_STUDY_STEADY_S=600 ... (the same)
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant as WallClock};

use dynakv_ring::{NodeId, Ring, Status};
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;

use dynakv_sim::world::{SimConfig, World};

/// Counts the status changes nodes log ("member status changed"), by new status.
#[derive(Clone, Default)]
struct StatusChanges {
    suspect: Arc<AtomicU64>,
    dead: Arc<AtomicU64>,
}

struct ToField(Option<String>);

impl Visit for ToField {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "to" {
            self.0 = Some(value.to_string());
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

impl<S: tracing::Subscriber> Layer<S> for StatusChanges {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut to = ToField(None);
        event.record(&mut to);
        match to.0.as_deref() {
            Some("suspect") => self.suspect.fetch_add(1, Ordering::Relaxed),
            Some("dead") => self.dead.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }
}

/// One row of the table.
#[derive(Debug, Default)]
struct Row {
    members: usize,
    form_rounds: f64,
    join_rounds: f64,
    suspect_rounds: f64,
    dead_rounds: f64,
    /// False suspicions (suspect or dead while running) per hour, by loss.
    false_per_hour: Vec<(f64, f64)>,
    /// Share of (node, member) views in which a live member had been silent for at
    /// least 3 rounds, sampled once a round without loss.
    silent_3_rounds: f64,
    bytes_per_message: f64,
    bytes_per_member_per_sec: f64,
    wall_secs: f64,
}

const INTERVAL_MS: u64 = 1000;

fn rounds(ms: u64) -> f64 {
    ms as f64 / INTERVAL_MS as f64
}

/// Waits (polling each round) until `cond`; returns the simulated ms it took.
async fn time_until(world: &World, limit_rounds: u64, mut cond: impl FnMut(&World) -> bool) -> Option<u64> {
    let start = world.now_ms();
    let ok = world
        .wait_until(Duration::from_millis(limit_rounds * INTERVAL_MS), |w| cond(w))
        .await;
    ok.then(|| world.now_ms() - start)
}

fn study(members: usize, steady_secs: u64, changes: &StatusChanges) -> Row {
    let started = WallClock::now();
    dynakv_sim::world::runtime().block_on(async move {
        let config = SimConfig {
            nodes: members + 1,
            boot: Some(members),
            // Gossip alone: the layout's own rounds are not what this measures.
            auto_join: false,
            seeds: Some(3),
            gossip_ms: INTERVAL_MS,
            request_timeout_ms: 2000,
            anti_entropy_ms: 0,
            handoff_ms: 60_000,
            tombstone_grace_ms: 3_600_000,
            tokens: 16,
            ..Default::default()
        };
        let t0 = tokio::time::Instant::now();
        let world = World::start(members as u64, config).await;
        let mut row = Row {
            members,
            form_rounds: rounds(t0.elapsed().as_millis() as u64),
            ..Default::default()
        };
        // A new member: rounds until every member knows it (and sees it alive).
        let new = members;
        world.add(new).await;
        let join = time_until(&world, 200, |w| {
            (0..=members).all(|i| i == new || w.status_seen_by(i, new) == Some(Status::Alive))
        })
        .await;
        row.join_rounds = join.map_or(f64::NAN, rounds);
        // Steady state: false suspicions per hour of simulated time, by message loss.
        for loss in [0.0, 0.01, 0.05] {
            world.set_loss(loss, 0.0);
            // A little time for the loss to settle in before counting.
            tokio::time::sleep(Duration::from_secs(10)).await;
            let before = (
                changes.suspect.load(Ordering::Relaxed),
                changes.dead.load(Ordering::Relaxed),
            );
            let stats_before = world.net_stats();
            if loss == 0.0 {
                let (mut views, mut silent) = (0u64, 0u64);
                for _ in 0..steady_secs {
                    tokio::time::sleep(Duration::from_millis(INTERVAL_MS)).await;
                    for i in 0..=members {
                        let Some(node) = world.node(i) else { continue };
                        node.local.cluster.with_membership(|m, now| {
                            for v in m.members(now).filter(|v| v.info.id != *m.me()) {
                                views += 1;
                                silent += u64::from(v.silent_ms >= 3 * INTERVAL_MS);
                            }
                        });
                    }
                }
                row.silent_3_rounds = silent as f64 / views.max(1) as f64;
            } else {
                tokio::time::sleep(Duration::from_secs(steady_secs)).await;
            }
            let after = (
                changes.suspect.load(Ordering::Relaxed),
                changes.dead.load(Ordering::Relaxed),
            );
            let false_changes = (after.0 - before.0) + (after.1 - before.1);
            row.false_per_hour
                .push((loss, false_changes as f64 * 3600.0 / steady_secs as f64));
            if loss == 0.0 {
                let stats = world.net_stats();
                let gossip = |s: &dynakv_sim::world::NetStats| {
                    [false, true]
                        .iter()
                        .map(|&a| s.by_verb.get(&("Gossip", a)).copied().unwrap_or_default())
                        .fold((0, 0), |(m, b), (m2, b2)| (m + m2, b + b2))
                };
                let (m0, b0) = gossip(&stats_before);
                let (m1, b1) = gossip(&stats);
                row.bytes_per_message = (b1 - b0) as f64 / (m1 - m0).max(1) as f64;
                row.bytes_per_member_per_sec = (b1 - b0) as f64 / (members + 1) as f64 / steady_secs as f64;
            }
        }
        world.set_loss(0.0, 0.0);
        tokio::time::sleep(Duration::from_secs(15)).await;
        // A member crashes: rounds until every other sees it suspect, then dead.
        let victim = members / 2;
        world.crash(victim);
        let others: Vec<usize> = (0..=members).filter(|&i| i != victim).collect();
        let suspect = time_until(&world, 200, |w| {
            others
                .iter()
                .all(|&i| matches!(w.status_seen_by(i, victim), Some(Status::Suspect | Status::Dead)))
        })
        .await;
        let dead_more = time_until(&world, 200, |w| {
            others
                .iter()
                .all(|&i| w.status_seen_by(i, victim) == Some(Status::Dead))
        })
        .await;
        row.suspect_rounds = suspect.map_or(f64::NAN, rounds);
        row.dead_rounds = match (suspect, dead_more) {
            (Some(s), Some(d)) => rounds(s + d),
            _ => f64::NAN,
        };
        for i in 0..=members {
            world.crash(i);
        }
        row.wall_secs = started.elapsed().as_secs_f64();
        row
    })
}

/// Partitions whose replica set changes when one member joins a ring of `members`, and
/// how long building a ring of that size takes (128 tokens each, 1,024 partitions).
fn ring_figures(members: usize) -> (f64, f64, f64) {
    let ids = |n: usize| (0..n).map(|i| (NodeId::new(format!("n{i}")).unwrap(), 128));
    let t = WallClock::now();
    let before = Ring::new(10, ids(members)).unwrap();
    let build_ms = t.elapsed().as_secs_f64() * 1000.0;
    let after = Ring::new(10, ids(members + 1)).unwrap();
    let n = 3.min(members);
    let (mut moved_partitions, mut moved_slots) = (0usize, 0usize);
    for p in before.partitions() {
        let a = before.partition_preference(p, n);
        let b = after.partition_preference(p, n);
        let lost = a.iter().filter(|id| !b.contains(id)).count();
        if lost > 0 {
            moved_partitions += 1;
        }
        moved_slots += lost;
    }
    let partitions = before.partition_count() as f64;
    (
        moved_partitions as f64 / partitions,
        moved_slots as f64 / (partitions * n as f64),
        build_ms,
    )
}

#[test]
#[ignore = "a study: minutes at 1,000 members"]
fn gossip_study() {
    let sizes: Vec<usize> = std::env::var("DYNAKV_STUDY_SIZES")
        .unwrap_or_else(|_| "10,100,1000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("sizes are numbers"))
        .collect();
    let steady: u64 = std::env::var("DYNAKV_STUDY_STEADY_S")
        .ok()
        .map_or(300, |s| s.parse().expect("seconds"));
    let changes = StatusChanges::default();
    let filtered = changes.clone().with_filter(tracing_subscriber::filter::filter_fn(|m| {
        m.target() == "dynakv_node::roles::services::gossip"
    }));
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(filtered));
    println!(
        "| members | rounds to form | rounds until all know a new member | rounds until all suspect a crashed one | ... all see it dead | views with a live member silent 3+ rounds | false suspicions/hour at 0% / 1% / 5% loss | bytes per gossip message | gossip bytes per member per s | partitions moved on a join (replica slots) | ring build (ms) | wall time (s) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for members in sizes {
        let row = study(members, steady, &changes);
        let (parts, slots, build_ms) = ring_figures(members);
        let fp: Vec<String> = row.false_per_hour.iter().map(|(_, f)| format!("{f:.0}")).collect();
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.3}% | {} | {:.0} | {:.0} | {:.2}% ({:.2}%; 1/(n+1) = {:.2}%) | {:.2} | {:.0} |",
            row.members,
            row.form_rounds,
            row.join_rounds,
            row.suspect_rounds,
            row.dead_rounds,
            row.silent_3_rounds * 100.0,
            fp.join(" / "),
            row.bytes_per_message,
            row.bytes_per_member_per_sec,
            parts * 100.0,
            slots * 100.0,
            100.0 / (members as f64 + 1.0),
            build_ms,
            row.wall_secs
        );
    }
}
