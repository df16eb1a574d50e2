//! A model of partitions moving between layouts: five members, each with its own copy of
//! the layout history (merged by gossip steps), its own store, and the writes it
//! coordinates; every step is one message or one decision, in an order proptest picks.
//! After every step, every member's reads (each R-subset of the replicas its own history
//! reads from) must see every write acknowledged so far.
//!
//! When the faults stop, every member settles on one layout, the replicas it names hold
//! every acknowledged write (anti-entropy included) and no other member holds a copy.
//!
//! What the model abstracts away: values and deletes (a write is an id added to a
//! partition's set), failures (no member crashes; a delivery can be lost), and the time
//! a fetch takes (a gaining member copies a partition from every source in one step;
//! writes that start after every member acked the layout reach it or a quorum without
//! it, so the copy's duration does not matter for what it must hold).

use std::collections::{BTreeMap, BTreeSet};

use dynakv_ring::NodeId;
use dynakv_ring::history::{LayoutHistory, Rings};
use dynakv_ring::layout::{Change, Known, Stamp};
use dynakv_ring::membership::Status;
use dynakv_ring::ring::Partition;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::FileFailurePersistence;

const BITS: u8 = 3;
const N: usize = 3;
const W: usize = 2;
const R: usize = 2;
const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];

fn id(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

struct Write {
    id: u64,
    partition: Partition,
    /// The replica sets it must reach W of (one per active layout when it started).
    sets: Vec<Vec<NodeId>>,
    /// Deliveries not yet made or lost.
    pending: Vec<NodeId>,
    delivered: BTreeSet<NodeId>,
    /// The coordinator's current version when it started.
    version: u64,
    acked: bool,
    /// The coordinator gave up on it (timeout): not acknowledged, though deliveries
    /// still on their way may land.
    failed: bool,
}

impl Write {
    /// Still able to become acknowledged: a layout ack must wait for it.
    fn open(&self) -> bool {
        !self.acked && !self.failed
    }
}

struct Member {
    id: NodeId,
    history: LayoutHistory,
    store: BTreeMap<Partition, BTreeSet<u64>>,
    writes: Vec<Write>,
    /// A fetch done for the layout of this version, not yet marked synced.
    fetched: Option<u64>,
    /// The newest layout version named by a write delivered here.
    seen: u64,
}

struct Model {
    members: Vec<Member>,
    /// Acknowledged writes, by partition.
    acked: BTreeMap<Partition, BTreeSet<u64>>,
    next_write: u64,
    clock: u64,
    /// The bugs the model must catch.
    bugs: Bugs,
}

#[derive(Clone, Copy, Default)]
struct Bugs {
    /// A member acks a layout while writes it started under an older one are still on
    /// their way.
    ack_early: bool,
    /// A member that fetched for one layout marks itself synced for whatever layout is
    /// current when the fetch ends.
    sync_current: bool,
    /// A member drops partitions by the layouts it knows, though it has had writes
    /// from a newer one.
    drop_behind: bool,
}

fn known() -> BTreeMap<NodeId, Known> {
    NAMES
        .iter()
        .map(|n| {
            (
                id(n),
                Known {
                    status: Status::Alive,
                    tokens: 8,
                },
            )
        })
        .collect()
}

fn tracked() -> BTreeSet<NodeId> {
    NAMES.iter().map(|n| id(n)).collect()
}

fn all_partitions() -> impl Iterator<Item = Partition> {
    (0..1u32 << BITS).map(Partition)
}

#[derive(Clone, Copy, Debug)]
enum Step {
    /// Member stages one change and commits it, if its layout is the newest anywhere.
    Change {
        at: usize,
        kind: u8,
        x: usize,
        y: usize,
    },
    Gossip {
        from: usize,
        to: usize,
    },
    StartWrite {
        at: usize,
        partition: u32,
    },
    /// One pending delivery of one of the member's writes: made, or lost.
    Deliver {
        at: usize,
        pick: usize,
        lose: bool,
    },
    /// The coordinator gives up on one of its writes that is not acknowledged.
    GiveUp {
        at: usize,
        pick: usize,
    },
    Ack {
        at: usize,
    },
    /// The member fetches what it gains in its current layout (a snapshot of the
    /// sources now) ...
    Fetch {
        at: usize,
    },
    /// ... and, later, marks itself synced for the layout it fetched for.
    FetchDone {
        at: usize,
    },
    ReadAck {
        at: usize,
    },
    Drop {
        at: usize,
    },
    /// A Merkle exchange between the replicas of a partition in the member's current
    /// layout: each ends with the union of what they hold.
    AntiEntropy {
        at: usize,
        partition: u32,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let m = 0usize..NAMES.len();
    prop_oneof![
        1 => (m.clone(), 0u8..3, m.clone(), m.clone()).prop_map(|(at, kind, x, y)| Step::Change { at, kind, x, y }),
        6 => (m.clone(), m.clone()).prop_map(|(from, to)| Step::Gossip { from, to }),
        6 => (m.clone(), 0u32..1 << BITS).prop_map(|(at, partition)| Step::StartWrite { at, partition }),
        12 => (m.clone(), 0usize..8, prop::bool::weighted(0.1)).prop_map(|(at, pick, lose)| Step::Deliver { at, pick, lose }),
        1 => (m.clone(), 0usize..8).prop_map(|(at, pick)| Step::GiveUp { at, pick }),
        3 => m.clone().prop_map(|at| Step::Ack { at }),
        3 => m.clone().prop_map(|at| Step::Fetch { at }),
        3 => m.clone().prop_map(|at| Step::FetchDone { at }),
        3 => m.clone().prop_map(|at| Step::ReadAck { at }),
        2 => m.clone().prop_map(|at| Step::Drop { at }),
        1 => (m, 0u32..1 << BITS).prop_map(|(at, partition)| Step::AntiEntropy { at, partition }),
    ]
}

impl Model {
    /// a, b and c own everything, settled, known to all.
    fn new(bugs: Bugs) -> Model {
        let k = known();
        let mut h = LayoutHistory::new();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            h.stage(
                Change::Join(id(name)),
                Stamp {
                    at_ms: i as u64,
                    by: id("a"),
                },
                &k,
                N,
            )
            .unwrap();
            h.commit(i as u64 + 1, &k, N).unwrap();
        }
        for m in NAMES {
            h.ack(&id(m), 3);
            h.mark_synced(&id(m), 3);
        }
        for m in NAMES {
            h.ack_sync(&id(m));
        }
        h.retire(&tracked());
        assert!(h.settled());
        Model {
            members: NAMES
                .iter()
                .map(|n| Member {
                    id: id(n),
                    history: h.clone(),
                    store: BTreeMap::new(),
                    writes: Vec::new(),
                    fetched: None,
                    seen: 0,
                })
                .collect(),
            acked: BTreeMap::new(),
            next_write: 0,
            clock: 10,
            bugs,
        }
    }

    fn apply(&mut self, step: Step) {
        self.clock += 1;
        match step {
            Step::Change { at, kind, x, y } => {
                let newest = self.members.iter().map(|m| m.history.current().version).max().unwrap();
                let me = &mut self.members[at];
                if me.history.current().version != newest {
                    return; // the promise round would fail: a majority knows a newer one
                }
                let (x, y) = (id(NAMES[x]), id(NAMES[y]));
                let change = match kind {
                    0 => Change::Join(x),
                    1 => Change::Leave(x),
                    _ => Change::Replace { old: x, new: y },
                };
                let stamp = Stamp {
                    at_ms: self.clock,
                    by: me.id.clone(),
                };
                if me.history.stage(change, stamp, &known(), N).is_ok() {
                    let v = me.history.current().version + 1;
                    me.history.commit(v, &known(), N).unwrap();
                }
            }
            Step::Gossip { from, to } => {
                if from != to {
                    let h = self.members[from].history.clone();
                    self.members[to].history.merge(&h);
                }
            }
            Step::StartWrite { at, partition } => {
                let p = Partition(partition);
                let me = &mut self.members[at];
                let rings = Rings::of(&me.history, BITS).unwrap();
                let sets: Vec<Vec<NodeId>> = me
                    .history
                    .write_sets(&rings, p, N)
                    .into_iter()
                    .map(|s| s.into_iter().cloned().collect())
                    .collect();
                if sets.iter().any(|s| s.len() < W) {
                    return;
                }
                let targets: BTreeSet<NodeId> = sets.iter().flatten().cloned().collect();
                self.next_write += 1;
                me.writes.push(Write {
                    id: self.next_write,
                    partition: p,
                    sets,
                    pending: targets.into_iter().collect(),
                    delivered: BTreeSet::new(),
                    version: me.history.current().version,
                    acked: false,
                    failed: false,
                });
            }
            Step::Deliver { at, pick, lose } => {
                let Some(wi) = (!self.members[at].writes.is_empty()).then(|| pick % self.members[at].writes.len())
                else {
                    return;
                };
                let w = &mut self.members[at].writes[wi];
                let target = w.pending.remove(pick % w.pending.len());
                let (wid, p, version) = (w.id, w.partition, w.version);
                if !lose {
                    w.delivered.insert(target.clone());
                    let t = self.members.iter_mut().find(|m| m.id == target).unwrap();
                    t.store.entry(p).or_default().insert(wid);
                    t.seen = t.seen.max(version);
                }
                let w = &mut self.members[at].writes[wi];
                if w.open()
                    && w.sets
                        .iter()
                        .all(|s| s.iter().filter(|r| w.delivered.contains(r)).count() >= W)
                {
                    w.acked = true;
                    self.acked.entry(p).or_default().insert(wid);
                }
                if w.pending.is_empty() {
                    self.members[at].writes.remove(wi);
                }
            }
            Step::GiveUp { at, pick } => {
                let writes = &mut self.members[at].writes;
                if !writes.is_empty() {
                    let n = writes.len();
                    let w = &mut writes[pick % n];
                    if !w.acked {
                        w.failed = true;
                    }
                }
            }
            Step::Ack { at } => {
                let me = &mut self.members[at];
                let v = me.history.current().version;
                if self.bugs.ack_early || !me.writes.iter().any(|w| w.version < v && w.open()) {
                    let who = me.id.clone();
                    me.history.ack(&who, v);
                }
            }
            Step::Fetch { at } => {
                let me = &self.members[at];
                let who = me.id.clone();
                let v = me.history.current().version;
                if me.history.acked(&who) < v {
                    return;
                }
                let rings = Rings::of(&me.history, BITS).unwrap();
                let gains = me.history.gains(&who, &rings, N);
                // A member that gains nothing is synced once it acks; one that gains
                // waits until every member writes to it.
                if !gains.is_empty() && !me.history.all_acked(&tracked()) {
                    return;
                }
                let mut fetched: Vec<(Partition, BTreeSet<u64>)> = Vec::new();
                for g in gains {
                    let mut got = BTreeSet::new();
                    for s in &g.sources {
                        let src = self.members.iter().find(|m| m.id == *s).unwrap();
                        got.extend(src.store.get(&g.partition).into_iter().flatten().copied());
                    }
                    fetched.push((g.partition, got));
                }
                let me = &mut self.members[at];
                for (p, got) in fetched {
                    me.store.entry(p).or_default().extend(got);
                }
                me.fetched = Some(v);
            }
            Step::FetchDone { at } => {
                let me = &mut self.members[at];
                if let Some(v) = me.fetched.take() {
                    let v = if self.bugs.sync_current {
                        me.history.current().version
                    } else {
                        v
                    };
                    let who = me.id.clone();
                    me.history.mark_synced(&who, v);
                }
            }
            Step::ReadAck { at } => {
                let me = &mut self.members[at];
                let who = me.id.clone();
                me.history.ack_sync(&who);
                me.history.retire(&tracked());
            }
            Step::AntiEntropy { at, partition } => {
                let p = Partition(partition);
                let ring = self.members[at].history.current().ring(BITS).unwrap();
                let replicas: Vec<NodeId> = ring.partition_preference(p, N).into_iter().cloned().collect();
                if !replicas.contains(&self.members[at].id) {
                    return;
                }
                let mut union = BTreeSet::new();
                for m in self.members.iter().filter(|m| replicas.contains(&m.id)) {
                    union.extend(m.store.get(&p).into_iter().flatten().copied());
                }
                for m in self.members.iter_mut().filter(|m| replicas.contains(&m.id)) {
                    m.store.entry(p).or_default().extend(union.iter().copied());
                }
            }
            Step::Drop { at } => {
                let me = &mut self.members[at];
                let rings = Rings::of(&me.history, BITS).unwrap();
                let held: Vec<Partition> = me.store.keys().copied().collect();
                let seen = if self.bugs.drop_behind { 0 } else { me.seen };
                for p in me.history.droppable(&me.id, &rings, N, held, seen) {
                    me.store.remove(&p);
                }
            }
        }
    }

    /// Every member's every R-subset read sees every acknowledged write.
    fn check(&self) -> Result<(), String> {
        for m in &self.members {
            let v = m.history.read_version();
            let layout = m.history.versions().iter().find(|l| l.version == v);
            let ring = layout.expect("the read layout is active").ring(BITS).unwrap();
            for p in all_partitions() {
                let Some(acked) = self.acked.get(&p) else { continue };
                let replicas = ring.partition_preference(p, N);
                for i in 0..replicas.len() {
                    for j in i + 1..replicas.len() {
                        debug_assert_eq!(R, 2);
                        let mut seen = BTreeSet::new();
                        for r in [replicas[i], replicas[j]] {
                            let holder = self.members.iter().find(|x| x.id == *r).unwrap();
                            seen.extend(holder.store.get(&p).into_iter().flatten().copied());
                        }
                        if let Some(missing) = acked.iter().find(|w| !seen.contains(w)) {
                            return Err(format!(
                                "{} reads {p:?} at v{v} from {} and {}: acknowledged write {missing} missing",
                                m.id, replicas[i], replicas[j]
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Faults stop: every delivery is made, members gossip with each other and take
    /// every step, round after round. Checks after every step, as [`run`] does.
    fn quiesce(&mut self) -> Result<(), String> {
        let m = NAMES.len();
        for round in 0..12 {
            let mut steps = Vec::new();
            for at in 0..m {
                for _ in 0..self.members[at].writes.iter().map(|w| w.pending.len()).sum::<usize>() {
                    steps.push(Step::Deliver {
                        at,
                        pick: 0,
                        lose: false,
                    });
                }
            }
            for from in 0..m {
                for to in 0..m {
                    steps.push(Step::Gossip { from, to });
                }
            }
            for at in 0..m {
                steps.extend([
                    Step::Ack { at },
                    Step::Fetch { at },
                    Step::FetchDone { at },
                    Step::ReadAck { at },
                    Step::Drop { at },
                ]);
                steps.extend(all_partitions().map(|p| Step::AntiEntropy { at, partition: p.0 }));
            }
            for s in steps {
                self.apply(s);
                self.check()
                    .map_err(|e| format!("quiescing, round {round} ({s:?}): {e}"))?;
            }
            if self.check_settled().is_ok() {
                break;
            }
        }
        Ok(())
    }

    /// After quiescing: one layout everywhere, each partition's replicas under it hold
    /// every acknowledged write, and no other member holds a copy.
    fn check_settled(&self) -> Result<(), String> {
        let first = &self.members[0].history;
        for m in &self.members {
            if !m.history.settled() || m.history.current() != first.current() {
                return Err(format!(
                    "{} has not settled: layouts {:?} active, trackers {:?}",
                    m.id,
                    m.history.versions().iter().map(|l| l.version).collect::<Vec<_>>(),
                    m.history.trackers
                ));
            }
        }
        let ring = first.current().ring(BITS).unwrap();
        for p in all_partitions() {
            let replicas = ring.partition_preference(p, N);
            for m in &self.members {
                let holds = m.store.get(&p).is_some_and(|s| !s.is_empty());
                if replicas.contains(&&m.id) {
                    let acked = self.acked.get(&p).cloned().unwrap_or_default();
                    let held = m.store.get(&p).cloned().unwrap_or_default();
                    if let Some(w) = acked.difference(&held).next() {
                        return Err(format!("{} replicates {p:?} but lacks acknowledged write {w}", m.id));
                    }
                } else if holds {
                    return Err(format!("{} holds {p:?} though it does not replicate it", m.id));
                }
            }
        }
        Ok(())
    }

    fn versions_seen(&self) -> u64 {
        self.members.iter().map(|m| m.history.current().version).max().unwrap()
    }
}

/// The steps, then quiescing; checked after every step and at the end.
fn run(steps: &[Step], bugs: Bugs) -> Result<Model, String> {
    let mut model = Model::new(bugs);
    for (i, s) in steps.iter().enumerate() {
        model.apply(*s);
        model.check().map_err(|e| format!("after step {i} ({s:?}): {e}"))?;
    }
    model.quiesce()?;
    model.check_settled()?;
    Ok(model)
}

proptest! {
    // 400 histories here; `PROPTEST_CASES=20000` for a soak.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(400),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/layout_model.proptest-regressions"
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn reads_see_every_acknowledged_write_while_partitions_move(
        steps in prop::collection::vec(step(), 50..400)
    ) {
        let model = run(&steps, Bugs::default());
        prop_assert!(model.is_ok(), "{}", model.err().unwrap());
    }
}

/// The first history (of `tries` from a fixed seed) in which the model with `bugs`
/// shows a read missing an acknowledged write.
fn first_loss(bugs: Bugs, tries: usize) -> Option<(usize, String)> {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = prop::collection::vec(step(), 50..400);
    (0..tries).find_map(|i| {
        let steps = strategy.new_tree(&mut runner).unwrap().current();
        run(&steps, bugs).err().map(|e| (i, e))
    })
}

/// The first history the model with `bugs` fails must show a read missing an
/// acknowledged write, within 5,000 histories.
fn assert_caught(bugs: Bugs, what: &str) {
    let (i, e) = first_loss(bugs, 5000).unwrap_or_else(|| panic!("no history of 5,000 showed {what}"));
    assert!(e.contains("acknowledged write"), "history {i}: {e}");
    eprintln!("{what}: history {i} shows it: {e}");
}

/// The model is not toothless: a member that acks a layout while writes it started under
/// the older one are still on their way lets a newcomer fetch before those writes land,
/// and some history of steps then shows a read missing an acknowledged write.
#[test]
fn acking_before_old_writes_finish_loses_writes() {
    let ack_early = Bugs {
        ack_early: true,
        ..Bugs::default()
    };
    assert_caught(ack_early, "the early ack");
}

/// Nor does it miss a sync mark that vouches for a layout committed while the fetch ran.
#[test]
fn marking_sync_for_a_newer_layout_loses_writes() {
    let sync_current = Bugs {
        sync_current: true,
        ..Bugs::default()
    };
    assert_caught(sync_current, "the sync mark for a newer layout");
}

/// Layouts really change in these histories (the property above is not vacuous), and
/// partitions really move and settle.
#[test]
fn histories_commit_layouts_and_settle() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut changed, mut moved) = (0, 0);
    for _ in 0..200 {
        let steps = prop::collection::vec(step(), 300..400)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let model = run(&steps, Bugs::default()).unwrap();
        if model.versions_seen() > 3 {
            changed += 1;
        }
        let owners: BTreeSet<&NodeId> = model.members[0].history.current().owners.keys().collect();
        if owners != [id("a"), id("b"), id("c")].iter().collect() {
            moved += 1;
        }
    }
    assert!(changed > 100, "{changed} of 200 histories changed the layout");
    assert!(moved > 50, "{moved} of 200 histories ended with other owners");
}

/// A history a CI run found on 2026-12-03 (the proptest above, case d59f7af1, shrunk),
/// in which a read missed an acknowledged write before the fix.
///
/// What happens: e knows layout v4 (d joins; partition 0 moves from a, c, b to a, c,
/// d) and starts write 2 under it, delivered to d, while d itself still knows only the
/// settled v3, in which it replicates nothing of partition 0. Were d to drop partition 0
/// by the layouts it knows, write 2 would go with it; the write is acknowledged once a
/// and b have it too (a and b count for v3's set, a and d for v4's), after d fetched
/// partition 0 for v4, and a read at v4 from c and d would miss it. The fix: a write
/// names its coordinator's layout version, and a member that has had a write from a
/// layout it does not know drops nothing ([`LayoutHistory::droppable`]).
#[test]
fn found_2026_12_03_a_member_behind_on_layouts_keeps_what_a_newer_one_wrote() {
    let steps = found_2026_12_03();
    let model = run(&steps, Bugs::default());
    assert!(model.is_ok(), "{}", model.err().unwrap());
    let drop_behind = Bugs {
        drop_behind: true,
        ..Bugs::default()
    };
    let e = run(&steps, drop_behind)
        .err()
        .expect("dropping by the known layouts loses the write");
    assert!(e.contains("acknowledged write 2 missing"), "{e}");
}

fn found_2026_12_03() -> Vec<Step> {
    // (The proptest input ended with no-op changes, left out: a joining a again.)
    vec![
        Step::StartWrite { at: 4, partition: 0 },
        Step::Change {
            at: 1,
            kind: 0,
            x: 3,
            y: 0,
        },
        Step::Gossip { from: 1, to: 2 },
        Step::Gossip { from: 1, to: 0 },
        Step::Gossip { from: 0, to: 4 },
        Step::StartWrite { at: 4, partition: 0 },
        Step::Deliver {
            at: 4,
            pick: 6,
            lose: false,
        },
        Step::Deliver {
            at: 4,
            pick: 3,
            lose: false,
        },
        Step::StartWrite { at: 4, partition: 0 },
        Step::Drop { at: 3 },
        Step::StartWrite { at: 4, partition: 0 },
        Step::StartWrite { at: 4, partition: 0 },
        Step::Deliver {
            at: 4,
            pick: 5,
            lose: false,
        },
        Step::Gossip { from: 0, to: 0 },
        Step::Ack { at: 1 },
        Step::Ack { at: 4 },
        Step::Ack { at: 0 },
        Step::Fetch { at: 0 },
        Step::Gossip { from: 1, to: 0 },
        Step::Ack { at: 2 },
        Step::Gossip { from: 0, to: 0 },
        Step::Fetch { at: 1 },
        Step::Gossip { from: 4, to: 2 },
        Step::Gossip { from: 2, to: 3 },
        Step::Gossip { from: 0, to: 3 },
        Step::Ack { at: 3 },
        Step::FetchDone { at: 0 },
        Step::FetchDone { at: 1 },
        Step::Fetch { at: 3 },
        Step::FetchDone { at: 3 },
        Step::Fetch { at: 2 },
        Step::Gossip { from: 1, to: 0 },
        Step::Gossip { from: 3, to: 2 },
        Step::Gossip { from: 0, to: 2 },
        Step::FetchDone { at: 2 },
    ]
}
