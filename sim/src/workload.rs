//! What simulated clients do, what they were told, and the checks on it.
//!
//! - The *set* workload: each client adds unique elements to shared keys by
//!   read-merge-write (read the key, take the union of its siblings' element sets, add
//!   one element, write with the read's context). An element is *acknowledged* when its
//!   write is; *maybe* when the write failed or went unanswered.
//! - The *delete* workload: writers put unique ids with the read's context, deleters
//!   read and delete with that read's context; every id a deleter saw before an
//!   acknowledged delete is *deleted* and must never be read again once the cluster has
//!   settled.
//!
//! Each workload is a [`Workload`]: it drives its clients and checks their history.
//! [`SET`], [`OWN_SET`], [`FRESH`], [`DELETE`] and [`MOVING`] are the scenarios'; a new
//! data type brings its own (its clients and its checker) and the scenarios' faults,
//! floors and runner serve it unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dynakv_crdt::Context;
use dynakv_http_api::GetOutcome;
use rand::Rng;
use rand::seq::IndexedRandom;

use dynakv_crdt::ConflictMode;
use futures::future::BoxFuture;

use crate::history::{ColdRead, Elements, History, Placed, ReadRecord, Shared, encode_set, names, union_of};
use crate::world::World;

/// The settings of a history that its checks depend on.
#[derive(Clone, Copy, Debug)]
pub struct Checking {
    pub mode: ConflictMode,
    /// No fallback counts towards a quorum (see `SimConfig::strict_quorums`): a quorum
    /// read must then see every write acknowledged before it.
    pub strict_quorums: bool,
}

/// What a workload's check found.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Acknowledged writes: elements for the set workloads, ids for the delete one.
    pub acked: usize,
    /// Acknowledged elements missing at the end (last-writer-wins only).
    pub lost: usize,
    /// Ids covered by acknowledged deletes.
    pub deleted: usize,
    pub problems: Vec<String>,
}

/// Simulated clients and the check of what they were told. The runner also checks
/// every workload's reads ([`check_reads`], [`check_cold_reads`]) and last-writer-wins
/// stamps ([`check_lww_stamps`]) from the same [`History`].
pub trait Workload: Send + Sync {
    /// Runs the clients until `until_ms` (simulated), recording what they did.
    fn drive<'a>(&'a self, world: &'a World, until_ms: u64) -> BoxFuture<'a, Shared>;
    /// Checks the history against the values the replicas settled on.
    fn check(&self, checking: &Checking, h: &History, settled: &Elements) -> Verdict;

    /// Checks of the reads a workload adds to every workload's (run whether or not the
    /// final reads succeeded).
    fn check_reads(&self, _checking: &Checking, _h: &History) -> Vec<String> {
        Vec::new()
    }
}

/// Read-merge-write of element sets.
#[derive(Clone, Copy, Debug)]
pub struct Sets {
    pub clients: usize,
    pub keys: usize,
    /// Each client has keys of its own (no concurrent writers).
    pub own_keys: bool,
    /// Under strict quorums (and multi-value registers), every read must see every
    /// write acknowledged before it ([`check_strict_reads`]).
    pub strict_reads: bool,
}

/// Six clients sharing six keys.
pub const SET: Sets = Sets {
    clients: 6,
    keys: 6,
    own_keys: false,
    strict_reads: false,
};

/// Six clients, each with two keys of its own.
pub const OWN_SET: Sets = Sets {
    clients: 6,
    keys: 2,
    own_keys: true,
    strict_reads: false,
};

/// [`SET`], each read checked against every write acknowledged before it (for primary
/// quorums: pr = r, pw = w).
pub const STRICT_SET: Sets = Sets {
    strict_reads: true,
    ..SET
};

fn set_verdict(strict: bool, h: &History, settled: &Elements) -> Verdict {
    let v = check_set(strict, h, settled);
    Verdict {
        acked: v.acked,
        lost: v.lost,
        deleted: 0,
        problems: v.problems,
    }
}

impl Workload for Sets {
    fn drive<'a>(&'a self, world: &'a World, until_ms: u64) -> BoxFuture<'a, Shared> {
        Box::pin(set_clients(world, self.clients, self.keys, self.own_keys, until_ms))
    }

    fn check(&self, checking: &Checking, h: &History, settled: &Elements) -> Verdict {
        set_verdict(checking.mode == ConflictMode::Mv, h, settled)
    }

    fn check_reads(&self, checking: &Checking, h: &History) -> Vec<String> {
        if !self.strict_reads {
            return Vec::new();
        }
        if !(checking.mode == ConflictMode::Mv && checking.strict_quorums) {
            return vec![format!(
                "the strict read check needs multi-value registers and strict quorums, not {:?}",
                checking
            )];
        }
        check_strict_reads(h).1
    }
}

/// Each write to a fresh key (nothing to overwrite, so nothing may be lost even under
/// last writer wins).
#[derive(Clone, Copy, Debug)]
pub struct Fresh {
    pub clients: usize,
}

pub const FRESH: Fresh = Fresh { clients: 6 };

impl Workload for Fresh {
    fn drive<'a>(&'a self, world: &'a World, until_ms: u64) -> BoxFuture<'a, Shared> {
        Box::pin(fresh_clients(world, self.clients, until_ms))
    }

    fn check(&self, _: &Checking, h: &History, settled: &Elements) -> Verdict {
        set_verdict(true, h, settled)
    }
}

/// Writers and deleters racing on a few keys.
#[derive(Clone, Copy, Debug)]
pub struct Deletes {
    pub writers: usize,
    pub deleters: usize,
    pub keys: usize,
}

pub const DELETE: Deletes = Deletes {
    writers: 3,
    deleters: 2,
    keys: 4,
};

impl Workload for Deletes {
    fn drive<'a>(&'a self, world: &'a World, until_ms: u64) -> BoxFuture<'a, Shared> {
        Box::pin(delete_clients(world, self.writers, self.deleters, self.keys, until_ms))
    }

    fn check(&self, _: &Checking, h: &History, settled: &Elements) -> Verdict {
        Verdict {
            acked: h.written.values().map(|ids| ids.len()).sum(),
            lost: 0,
            deleted: h.deleted.values().map(|ids| ids.len()).sum(),
            problems: check_deletes(h, settled),
        }
    }
}

/// [`SET`], and cold keys written once at the start and then only read (checked by
/// [`check_cold_reads`]): for layout changes. With strict quorums in mv mode every
/// quorum read must see every write acknowledged before it ([`check_strict_reads`]).
#[derive(Clone, Copy, Debug)]
pub struct Moving {
    pub cold_keys: usize,
    pub cold_readers: usize,
}

pub const MOVING: Moving = Moving {
    cold_keys: 200,
    cold_readers: 2,
};

impl Workload for Moving {
    fn drive<'a>(&'a self, world: &'a World, until_ms: u64) -> BoxFuture<'a, Shared> {
        Box::pin(async move {
            let cold = tokio::spawn({
                let world = world.clone();
                let (keys, readers) = (self.cold_keys, self.cold_readers);
                async move { cold_clients(&world, keys, readers, until_ms).await }
            });
            let h = SET.drive(world, until_ms).await;
            absorb(&h, &cold.await.expect("cold clients"));
            h
        })
    }

    fn check(&self, checking: &Checking, h: &History, settled: &Elements) -> Verdict {
        SET.check(checking, h, settled)
    }

    fn check_reads(&self, checking: &Checking, h: &History) -> Vec<String> {
        if checking.mode == ConflictMode::Mv && checking.strict_quorums {
            check_strict_reads(h).1
        } else {
            Vec::new()
        }
    }
}

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("key-{i}")).collect()
}

async fn think(world: &World, range: (u64, u64)) {
    let ms = world.random(|r| r.random_range(range.0..=range.1));
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// A read through `node`, recorded for the read checker: the elements found and the
/// context to write with; `None` (counted as a failed operation) if it failed.
async fn read(world: &World, h: &Shared, node: usize, key: &str) -> Option<(BTreeSet<u64>, Option<Context>)> {
    let start_ms = world.now_ms();
    let placed = world.get_placed(node, key).await;
    let replicas = placed.as_ref().map(|(p, _)| p.clone());
    let got = placed.map(|(_, got)| got);
    let ok = matches!(got, Some(Ok(_)));
    let not_found = matches!(got, Some(Ok(GetOutcome::NotFound { context: None })));
    let found = match &got {
        Some(Ok(GetOutcome::Found { values, .. })) => Some(union_of(values)),
        Some(Ok(GetOutcome::NotFound { .. })) => Some(BTreeSet::new()),
        _ => None,
    };
    h.lock().reads.push(ReadRecord {
        node,
        key: key.to_string(),
        start_ms,
        end_ms: world.now_ms(),
        ok,
        not_found,
        found,
        replicas,
    });
    match got {
        Some(Ok(GetOutcome::Found { values, context })) => Some((union_of(&values), Some(context))),
        Some(Ok(GetOutcome::NotFound { context })) => Some((BTreeSet::new(), context)),
        _ => {
            h.lock().failed_ops += 1;
            None
        }
    }
}

/// Runs `clients` set-workload clients until `until_ms`, over `key_count` keys they
/// share, or (`own_keys`) that each client has to itself.
pub async fn set_clients(world: &World, clients: usize, key_count: usize, own_keys: bool, until_ms: u64) -> Shared {
    let h: Shared = Arc::default();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let keys: Vec<String> = match own_keys {
            false => keys(key_count),
            true => keys(key_count).into_iter().map(|k| format!("c{c}-{k}")).collect(),
        };
        let (world, h, keys) = (world.clone(), h.clone(), keys.clone());
        tasks.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while world.now_ms() < until_ms {
                think(&world, (10, 60)).await;
                let (key, x) = world.random(|r| (keys.choose(r).unwrap().clone(), r.random_range(0..world.nodes())));
                seq += 1;
                let element = ((c as u64 + 1) << 32) | seq;
                h.lock().ops += 1;
                let Some((base, context)) = read(&world, &h, x, &key).await else {
                    continue;
                };
                let mut next = base;
                next.insert(element);
                // Mostly through the node that read; now and then through another.
                let y = world.random(|r| {
                    if r.random_bool(0.8) {
                        x
                    } else {
                        r.random_range(0..world.nodes())
                    }
                });
                let written = world.put(y, &key, Some(encode_set(&next)), context).await;
                let mut h = h.lock();
                match written {
                    Some(Ok(ctx)) => {
                        let now = world.now_ms();
                        h.acked_at.entry(key.clone()).or_default().push((element, now));
                        h.acked.entry(key).or_default().insert(element);
                        if let Context::Lww(ts) = ctx {
                            let incarnation = world.incarnation(y);
                            h.lww_stamps.entry((y, incarnation)).or_default().push(ts);
                        }
                    }
                    _ => {
                        h.failed_ops += 1;
                        h.maybe.entry(key).or_default().insert(element);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    h
}

/// Runs `clients` clients that each write fresh keys, once each, without reading first,
/// until `until_ms`: every acknowledged write must be there at the end, whatever the
/// conflict mode (nothing competes with it).
pub async fn fresh_clients(world: &World, clients: usize, until_ms: u64) -> Shared {
    let h: Shared = Arc::default();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (world, h) = (world.clone(), h.clone());
        tasks.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while world.now_ms() < until_ms {
                think(&world, (10, 60)).await;
                seq += 1;
                let id = ((c as u64 + 1) << 32) | seq;
                let key = format!("fresh-{c}-{seq}");
                let x = world.random(|r| r.random_range(0..world.nodes()));
                h.lock().ops += 1;
                let value = encode_set(&BTreeSet::from([id]));
                let written = world.put(x, &key, Some(value), None).await;
                let mut h = h.lock();
                match written {
                    Some(Ok(_)) => h.acked.entry(key).or_default().insert(id),
                    _ => {
                        h.failed_ops += 1;
                        h.maybe.entry(key).or_default().insert(id)
                    }
                };
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    h
}

/// Runs `writers` writers and `deleters` deleters over `key_count` keys until `until_ms`;
/// the writers stop 1.5 s earlier, so most keys end deleted and their tombstones can be
/// collected.
pub async fn delete_clients(world: &World, writers: usize, deleters: usize, key_count: usize, until_ms: u64) -> Shared {
    let h: Shared = Arc::default();
    let keys = Arc::new(keys(key_count));
    let mut tasks = Vec::new();
    for c in 0..writers + deleters {
        let (world, h, keys) = (world.clone(), h.clone(), keys.clone());
        let deleter = c >= writers;
        let until_ms = if deleter {
            until_ms
        } else {
            until_ms.saturating_sub(1_500)
        };
        tasks.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while world.now_ms() < until_ms {
                think(&world, (20, 120)).await;
                let (key, x) = world.random(|r| (keys.choose(r).unwrap().clone(), r.random_range(0..world.nodes())));
                h.lock().ops += 1;
                let Some((seen, context)) = read(&world, &h, x, &key).await else {
                    continue;
                };
                if deleter {
                    if seen.is_empty() {
                        continue;
                    }
                    if let Some(Ok(_)) = world.put(x, &key, None, context).await {
                        h.lock().deleted.entry(key).or_default().extend(seen);
                    } else {
                        h.lock().failed_ops += 1;
                    }
                } else {
                    seq += 1;
                    let id = ((c as u64 + 1) << 32) | seq;
                    let value: Bytes = encode_set(&BTreeSet::from([id]));
                    if let Some(Ok(_)) = world.put(x, &key, Some(value), context).await {
                        h.lock().written.entry(key).or_default().insert(id);
                    } else {
                        h.lock().failed_ops += 1;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    h
}

/// The settled state of every key the history touched, read with `r = n` through
/// healthy nodes (a few attempts each).
pub async fn final_reads(world: &World, keys: impl Iterator<Item = String>) -> Result<Elements, String> {
    let n = world.0.config.n;
    let mut out = Elements::new();
    for key in keys {
        let mut got = None;
        for attempt in 0..5 {
            let node = attempt % world.nodes();
            match world.get_r(node, &key, n).await {
                Some(Ok(GetOutcome::Found { values, .. })) => {
                    got = Some(union_of(&values));
                    break;
                }
                Some(Ok(GetOutcome::NotFound { .. })) => {
                    got = Some(BTreeSet::new());
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        match got {
            Some(set) => {
                out.insert(key, set);
            }
            None => return Err(format!("the settled cluster could not read {key} with r = {n}")),
        }
    }
    Ok(out)
}

/// What the set workload's final state says.
pub struct SetVerdict {
    pub acked: usize,
    pub lost: usize,
    pub problems: Vec<String>,
}

/// No acknowledged element is missing (asserted if `strict`, else only counted: last
/// writer wins loses concurrent read-merge-writes by design), and nothing appears that
/// no client wrote.
pub fn check_set(strict: bool, h: &History, settled: &Elements) -> SetVerdict {
    let mut problems = Vec::new();
    let (mut acked, mut lost) = (0, 0);
    for (key, set) in settled {
        let want = h.acked.get(key).cloned().unwrap_or_default();
        let maybe = h.maybe.get(key).cloned().unwrap_or_default();
        acked += want.len();
        let missing: Vec<u64> = want.difference(set).copied().collect();
        lost += missing.len();
        if strict && !missing.is_empty() {
            problems.push(format!(
                "{key}: {} acknowledged elements lost, e.g. {:x?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            ));
        }
        let phantom: Vec<u64> = set
            .iter()
            .filter(|e| !want.contains(e) && !maybe.contains(e))
            .copied()
            .collect();
        if !phantom.is_empty() {
            problems.push(format!("{key}: elements nobody wrote: {phantom:x?}"));
        }
    }
    SetVerdict { acked, lost, problems }
}

/// No id covered by an acknowledged delete comes back once the cluster has settled.
pub fn check_deletes(h: &History, settled: &Elements) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, deleted) in &h.deleted {
        let now = settled.get(key).cloned().unwrap_or_default();
        let back: Vec<u64> = now.intersection(deleted).copied().collect();
        if !back.is_empty() {
            problems.push(format!("{key}: deleted ids came back: {back:x?}"));
        }
    }
    problems
}

/// Each node's last-writer-wins timestamps only grow across its restarts: everything an
/// incarnation issued is above everything an earlier one did.
pub fn check_lww_stamps(h: &History) -> Vec<String> {
    let mut problems = Vec::new();
    let mut by_node: BTreeMap<usize, Vec<(u64, dynakv_crdt::Timestamp, dynakv_crdt::Timestamp)>> = BTreeMap::new();
    for ((node, incarnation), stamps) in &h.lww_stamps {
        let (lo, hi) = (stamps.iter().min().unwrap(), stamps.iter().max().unwrap());
        by_node.entry(*node).or_default().push((*incarnation, *lo, *hi));
    }
    for (node, mut runs) in by_node {
        runs.sort();
        for w in runs.windows(2) {
            let ((g, _, hi), (h2, lo, _)) = (w[0], w[1]);
            if lo <= hi {
                problems.push(format!(
                    "n{} issued {lo} in incarnation {h2}, not above {hi} from incarnation {g}",
                    node + 1
                ));
            }
        }
    }
    problems
}

/// Two checks of every successful read, from the replica reads the network carried:
/// - "not found" is said only on a replica's word: a read that found nothing had an
///   answer from one of the key's replicas (its coordinator's own copy counts when it is
///   one) by the time it completed; fallbacks' "nothing" is no answer about the key;
/// - a read does not complete on fallbacks' answers while a live replica it asked
///   answers within the read's patience (half the request timeout): every read that had
///   fewer than `r` replica answers when it completed is checked for an answer from a
///   replica it did not judge dead that arrived after it completed but in time. (The
///   replicas it judged dead are asked too, in case the network is back, but not waited
///   for: a read would otherwise wait out its patience whenever a replica is down.)
///
/// A read during which another read of the same key started through the same node is
/// skipped by the second check (their replica reads cannot be told apart; the first
/// check can only be fooled into passing by them).
pub fn check_reads(world: &World, h: &History) -> (usize, Vec<String>) {
    let config = &world.0.config;
    let patience = config.request_timeout_ms / 2;
    let gets = world.gets();
    let mut checked = 0;
    let mut problems = Vec::new();
    for (i, read) in h.reads.iter().enumerate().filter(|(_, r)| r.ok) {
        // A read the node answered was placed there.
        let Some(Placed { replicas, judged_dead }) = &read.replicas else {
            continue;
        };
        let mine: Vec<_> = gets
            .iter()
            .filter(|g| g.from == read.node && g.key == read.key && (read.start_ms..=read.end_ms).contains(&g.sent_ms))
            .filter(|g| replicas.contains(&g.to))
            .collect();
        // The coordinator's own copy answers at once if it is a replica.
        let mut before = usize::from(replicas.contains(&read.node));
        let mut late_in_time = Vec::new();
        for g in &mine {
            match g.answered_ms {
                Some(t) if t <= read.end_ms => before += 1,
                Some(t) if t <= read.start_ms + patience && !judged_dead.contains(&g.to) => {
                    late_in_time.push((g.to, t))
                }
                _ => {}
            }
        }
        checked += 1;
        if read.not_found && before == 0 {
            problems.push(format!(
                "read of {} through n{} at {} ms answered \"not found\" at {} ms without an answer from any \
                 of its replicas ({})",
                read.key,
                read.node + 1,
                read.start_ms,
                read.end_ms,
                names(replicas)
            ));
        }
        // Another read of the key through the node that started during this one sends
        // replica reads this one's cannot be told apart from.
        let overlapping = h.reads.iter().enumerate().any(|(j, o)| {
            j != i && o.node == read.node && o.key == read.key && (read.start_ms..=read.end_ms).contains(&o.start_ms)
        });
        if !overlapping && before < config.r && !late_in_time.is_empty() {
            problems.push(format!(
                "read of {} through n{} at {} ms answered at {} ms with {before} replica answers \
                 (r = {}); replica answers arriving in time after that: {}",
                read.key,
                read.node + 1,
                read.start_ms,
                read.end_ms,
                config.r,
                late_in_time
                    .iter()
                    .map(|(n, t)| format!("n{} at {t} ms", n + 1))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    (checked, problems)
}

/// Cold keys: `keys` keys written once each (a fresh write) as the history starts, then
/// only read, by `readers` readers through random nodes until `until_ms`. A node that
/// gains a cold key's partition in a layout change holds the key only if the transfer
/// brought it: reads that miss it show a transfer that lost data, or reads moved to new
/// owners too early ([`check_cold_reads`]).
pub async fn cold_clients(world: &World, keys: usize, readers: usize, until_ms: u64) -> Shared {
    let h: Shared = Arc::default();
    for i in 0..keys {
        let key = format!("cold-{i}");
        let element = (1000u64 << 32) | i as u64;
        let x = world.random(|r| r.random_range(0..world.nodes()));
        h.lock().ops += 1;
        let written = world
            .put(x, &key, Some(encode_set(&BTreeSet::from([element]))), None)
            .await;
        let mut h = h.lock();
        match written {
            Some(Ok(_)) => {
                h.acked.entry(key.clone()).or_default().insert(element);
                h.cold_acked.insert(key, (element, world.now_ms()));
            }
            _ => {
                h.failed_ops += 1;
                h.maybe.entry(key).or_default().insert(element);
            }
        }
    }
    let mut tasks = Vec::new();
    for _ in 0..readers {
        let (world, h) = (world.clone(), h.clone());
        tasks.push(tokio::spawn(async move {
            while world.now_ms() < until_ms {
                think(&world, (5, 30)).await;
                let (i, x) = world.random(|r| (r.random_range(0..keys), r.random_range(0..world.nodes())));
                let key = format!("cold-{i}");
                let start_ms = world.now_ms();
                h.lock().ops += 1;
                if let Some((found, _)) = read(&world, &h, x, &key).await {
                    h.lock().cold_reads.push(ColdRead {
                        key,
                        node: x,
                        start_ms,
                        found,
                    });
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("cold reader task");
    }
    h
}

/// Reads `key` through each of `nodes` in turn, one every `every_ms`, until `until_ms`,
/// into the world's probe history: a fault schedule looking at one moment closely.
pub async fn probe_reads(world: &World, nodes: &[usize], key: &str, every_ms: u64, until_ms: u64) {
    let h = world.probes();
    let mut turn = 0;
    while world.now_ms() < until_ms {
        let node = nodes[turn % nodes.len()];
        turn += 1;
        h.lock().ops += 1;
        let world = world.clone();
        let (h, key) = (h.clone(), key.to_string());
        // Not awaited one by one: a read that waits for its quorum must not hold up the
        // next probe.
        tokio::spawn(async move { read(&world, &h, node, &key).await });
        tokio::time::sleep(Duration::from_millis(every_ms)).await;
    }
}

/// Writes each of `keys` once (a fresh write, one element) through a random node that is
/// up, into the world's probe history: writes a fault schedule places at one moment.
/// Returns the keys acknowledged.
pub async fn probe_writes(world: &World, keys: &[String]) -> Vec<String> {
    let h = world.probes();
    let mut acked = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let up: Vec<usize> = (0..world.nodes()).filter(|&n| world.is_up(n)).collect();
        let x = world.random(|r| *up.choose(r).expect("a node is up"));
        let element = (2000u64 << 32) | i as u64;
        h.lock().ops += 1;
        let written = world
            .put(x, key, Some(encode_set(&BTreeSet::from([element]))), None)
            .await;
        let mut h = h.lock();
        match written {
            Some(Ok(_)) => {
                let now = world.now_ms();
                h.acked.entry(key.clone()).or_default().insert(element);
                h.acked_at.entry(key.clone()).or_default().push((element, now));
                acked.push(key.clone());
            }
            _ => {
                h.failed_ops += 1;
                h.maybe.entry(key.clone()).or_default().insert(element);
            }
        }
    }
    acked
}

/// Reads random ones of `keys` through random nodes, one every `every_ms`, until
/// `until_ms`, into the world's probe history.
pub async fn probe_reads_of(world: &World, keys: &[String], every_ms: u64, until_ms: u64) {
    let h = world.probes();
    while world.now_ms() < until_ms && !keys.is_empty() {
        let (node, key) = world.random(|r| (r.random_range(0..world.nodes()), keys.choose(r).unwrap().clone()));
        h.lock().ops += 1;
        let (world, h) = (world.clone(), h.clone());
        tokio::spawn(async move { read(&world, &h, node, &key).await });
        tokio::time::sleep(Duration::from_millis(every_ms)).await;
    }
}

/// Adds `other`'s records to `into`.
pub fn absorb(into: &Shared, other: &Shared) {
    let o = std::mem::take(&mut *other.lock());
    let mut h = into.lock();
    for (k, v) in o.acked {
        h.acked.entry(k).or_default().extend(v);
    }
    for (k, v) in o.maybe {
        h.maybe.entry(k).or_default().extend(v);
    }
    for (k, v) in o.acked_at {
        h.acked_at.entry(k).or_default().extend(v);
    }
    h.reads.extend(o.reads);
    h.ops += o.ops;
    h.failed_ops += o.failed_ops;
    h.cold_acked.extend(o.cold_acked);
    h.cold_reads.extend(o.cold_reads);
}

/// Under strict quorums (R + W > N, no fallbacks) and multi-value registers, a read sees
/// every element whose write was acknowledged before it started: that write reached W
/// replicas, any R meet them, and a later version of the key either includes the element
/// (its writer read it) or is a sibling of it. Checks every successful read of a set
/// key; returns how many it checked.
pub fn check_strict_reads(h: &History) -> (usize, Vec<String>) {
    let mut problems = Vec::new();
    let mut checked = 0;
    for r in &h.reads {
        let (Some(found), Some(acked)) = (&r.found, h.acked_at.get(&r.key)) else {
            continue;
        };
        checked += 1;
        let missed: Vec<(u64, u64)> = acked
            .iter()
            .filter(|(e, at)| *at < r.start_ms && !found.contains(e))
            .copied()
            .collect();
        if let Some((e, at)) = missed.first() {
            problems.push(format!(
                "read of {} through n{} at {} ms missed {} acknowledged element(s), e.g. {e:x} (acknowledged at {at} ms)",
                r.key,
                r.node + 1,
                r.start_ms,
                missed.len()
            ));
        }
    }
    (checked, problems)
}

/// Every successful read of a cold key that started after the key's write was
/// acknowledged found it (strict quorums: R + W > N, without fallbacks).
pub fn check_cold_reads(h: &History) -> (usize, Vec<String>) {
    let mut problems = Vec::new();
    let mut checked = 0;
    for r in &h.cold_reads {
        let Some(&(element, acked_ms)) = h.cold_acked.get(&r.key) else {
            continue;
        };
        if acked_ms >= r.start_ms {
            continue;
        }
        checked += 1;
        if !r.found.contains(&element) {
            problems.push(format!(
                "read of {} through n{} at {} ms missed its write, acknowledged at {acked_ms} ms",
                r.key,
                r.node + 1,
                r.start_ms
            ));
        }
    }
    (checked, problems)
}

#[cfg(test)]
mod tests {
    use dynakv_crdt::Timestamp;

    use super::*;

    fn set(items: &[u64]) -> BTreeSet<u64> {
        items.iter().copied().collect()
    }

    #[test]
    fn the_set_checker_flags_lost_and_invented_elements() {
        let mut h = History::default();
        h.acked.insert("k".into(), set(&[1, 2, 3]));
        h.maybe.insert("k".into(), set(&[4]));
        let settled = |s: &[u64]| Elements::from([("k".to_string(), set(s))]);
        let ok = check_set(true, &h, &settled(&[1, 2, 3, 4]));
        assert!(ok.problems.is_empty() && ok.lost == 0 && ok.acked == 3);
        let lost = check_set(true, &h, &settled(&[1, 3]));
        assert_eq!((lost.lost, lost.problems.len()), (1, 1));
        assert_eq!(
            check_set(false, &h, &settled(&[1, 3])).problems.len(),
            0,
            "counted, not asserted"
        );
        assert_eq!(
            check_set(false, &h, &settled(&[1, 2, 3, 9])).problems.len(),
            1,
            "9 was never written"
        );
    }

    #[test]
    fn the_delete_checker_flags_ids_that_come_back() {
        let mut h = History::default();
        h.deleted.insert("k".into(), set(&[7, 8]));
        assert!(check_deletes(&h, &Elements::from([("k".to_string(), set(&[9]))])).is_empty());
        assert_eq!(
            check_deletes(&h, &Elements::from([("k".to_string(), set(&[8, 9]))])).len(),
            1
        );
    }

    #[test]
    fn the_stamp_checker_flags_an_incarnation_that_goes_back() {
        let mut h = History::default();
        h.lww_stamps.insert((0, 1), vec![Timestamp(10), Timestamp(20)]);
        h.lww_stamps.insert((0, 2), vec![Timestamp(21), Timestamp(30)]);
        h.lww_stamps.insert((1, 1), vec![Timestamp(5)]);
        assert!(check_lww_stamps(&h).is_empty());
        h.lww_stamps.insert((0, 3), vec![Timestamp(25)]);
        assert_eq!(check_lww_stamps(&h).len(), 1);
    }
}
