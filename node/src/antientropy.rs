//! Merkle-tree anti-entropy between co-replicas: a timer drives one exchange at a time
//! with each peer that shares partitions with us; differing keys are pulled and pushed in
//! batches, merged with the register merge on both sides, and paced by a token bucket.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dynakv_antientropy::merkle::{EMPTY, Hash, LEAVES, SEGMENTS};
use dynakv_antientropy::rate::TokenBucket;
use dynakv_antientropy::{Compare, CompareResponse, Driver, KeyDiff, KeyDigest, TreeView, answer as answer_compare};
use dynakv_http_api::wire::{self, ReplicaRequest, ReplicaResponse};
use dynakv_ring::{NodeId, Status};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::coordinator::Node;
use crate::replica::{ReplicaStore, user_key};

/// Keys per pull request.
const PULL_BATCH: usize = 64;
/// Bytes of registers per push request (a batch always holds at least one).
const PUSH_BATCH_BYTES: usize = 4 << 20;

/// This node's side of an exchange with one peer.
pub struct LocalView<'a> {
    replicas: &'a ReplicaStore,
    shared: Vec<u32>,
}

impl<'a> LocalView<'a> {
    pub fn new(replicas: &'a ReplicaStore, shared: Vec<u32>) -> Self {
        LocalView { replicas, shared }
    }
}

impl TreeView for LocalView<'_> {
    fn partitions(&self) -> &[u32] {
        &self.shared
    }

    fn root(&mut self, partition: u32) -> Hash {
        self.replicas.forest().root(partition)
    }

    fn segment(&mut self, partition: u32, segment: usize) -> Hash {
        if segment >= SEGMENTS {
            return EMPTY;
        }
        self.replicas.forest().with(partition, |t| t.segment(segment))
    }

    fn leaf(&mut self, partition: u32, leaf: usize) -> Hash {
        if leaf >= LEAVES {
            return EMPTY;
        }
        self.replicas.forest().with(partition, |t| t.leaf(leaf))
    }

    fn keys(&mut self, partition: u32, leaf: usize) -> Vec<KeyDigest> {
        if partition >= self.replicas.forest().partition_count() || leaf >= LEAVES {
            return Vec::new();
        }
        self.replicas.leaf_keys(partition, leaf).unwrap_or_else(|e| {
            warn!(partition, leaf, error = %e, "cannot list a merkle leaf");
            Vec::new()
        })
    }
}

/// RECEIVER: one round of an exchange `from` drives.
pub fn answer(node: &Node, from: &NodeId, compare: &Compare) -> CompareResponse {
    let shared = node.cluster().shared_partitions(from);
    answer_compare(&mut LocalView::new(node.replicas(), shared), compare)
}

/// What the last exchange with a peer did.
#[derive(Clone, Debug, Default)]
pub struct PeerReport {
    pub finished_at: Option<Instant>,
    pub result: String,
    pub shared_partitions: usize,
    pub rounds: usize,
    pub differences: usize,
    pub pushed: usize,
    pub pulled: usize,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub duration_ms: u64,
    /// Keys repaired per partition in this exchange.
    pub repaired_by_partition: BTreeMap<u32, usize>,
    /// Running totals over all exchanges with the peer.
    pub exchanges: u64,
    pub total_repaired: u64,
}

/// Anti-entropy state shared by the loop and the status page.
pub struct AntiEntropy {
    interval: Option<Duration>,
    bucket: Mutex<TokenBucket>,
    epoch: Instant,
    peers: Mutex<BTreeMap<NodeId, PeerReport>>,
}

impl AntiEntropy {
    /// `interval` `None` disables exchanges; `keys_per_sec` paces repairs.
    pub fn new(interval: Option<Duration>, keys_per_sec: u32) -> AntiEntropy {
        let rate = keys_per_sec.max(1) as f64;
        AntiEntropy {
            interval,
            bucket: Mutex::new(TokenBucket::new(rate, rate, 0)),
            epoch: Instant::now(),
            peers: Mutex::new(BTreeMap::new()),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Waits until `keys` more repairs fit the rate.
    async fn pace(&self, keys: usize) {
        let wait = self.bucket.lock().take(keys as f64, self.now_ms());
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }
}

/// Runs exchanges every interval until `shutdown` flips.
pub async fn run(node: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    let Some(interval) = node.antientropy.interval else {
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        for peer in node.cluster().peers() {
            if peer.status != Status::Alive {
                continue;
            }
            let shared = node.cluster().shared_partitions(&peer.id);
            if shared.is_empty() {
                continue;
            }
            let exchange = exchange(&node, &peer.id, &peer.addr, shared);
            let report = tokio::select! {
                r = exchange => r,
                _ = shutdown.changed() => return,
            };
            record(&node, &peer.id, report);
        }
    }
}

fn record(node: &Node, peer: &NodeId, report: Result<PeerReport, (PeerReport, String)>) {
    let (mut report, result) = match report {
        Ok(r) => (r, "ok".to_string()),
        Err((r, e)) => {
            debug!(peer = %peer, error = %e, "anti-entropy exchange failed");
            (r, format!("error: {e}"))
        }
    };
    let repaired = (report.pushed + report.pulled) as u64;
    if repaired > 0 {
        info!(peer = %peer, differences = report.differences, pushed = report.pushed, pulled = report.pulled,
              bytes_sent = report.bytes_sent, bytes_received = report.bytes_received, "anti-entropy repaired keys");
    }
    let mut peers = node.antientropy.peers.lock();
    let entry = peers.entry(peer.clone()).or_default();
    report.result = result;
    report.finished_at = Some(Instant::now());
    report.exchanges = entry.exchanges + 1;
    report.total_repaired = entry.total_repaired + repaired;
    *entry = report;
}

/// Sends one request, counting bytes both ways.
async fn call(
    node: &Node,
    addr: &str,
    req: &ReplicaRequest,
    report: &mut PeerReport,
) -> Result<ReplicaResponse, String> {
    let body = Bytes::from(wire::encode(req));
    report.bytes_sent += body.len() as u64;
    let (resp, received) = node
        .rpc()
        .replica_measured(addr, body, node.settings().request_timeout)
        .await
        .map_err(|e| e.to_string())?;
    report.bytes_received += received as u64;
    Ok(resp)
}

/// DRIVER: one exchange with `peer` over the partitions we share.
pub async fn exchange(
    node: &Node,
    peer: &NodeId,
    addr: &str,
    shared: Vec<u32>,
) -> Result<PeerReport, (PeerReport, String)> {
    let started = Instant::now();
    let mut report = PeerReport {
        shared_partitions: shared.len(),
        ..Default::default()
    };
    let outcome = drive(node, peer, addr, shared, &mut report).await;
    report.duration_ms = started.elapsed().as_millis() as u64;
    match outcome {
        Ok(()) => Ok(report),
        Err(e) => Err((report, e)),
    }
}

async fn drive(
    node: &Node,
    peer: &NodeId,
    addr: &str,
    shared: Vec<u32>,
    report: &mut PeerReport,
) -> Result<(), String> {
    let me = node.id().clone();
    let (mut driver, mut compare) = Driver::start(&mut LocalView::new(node.replicas(), shared.clone()));
    loop {
        let req = ReplicaRequest::Compare {
            from: me.clone(),
            compare,
        };
        let resp = match call(node, addr, &req, report).await? {
            ReplicaResponse::Compared(r) => r,
            other => return Err(format!("unexpected answer {other:?}")),
        };
        let next = driver.step(&mut LocalView::new(node.replicas(), shared.clone()), resp);
        match next {
            Some(c) => compare = c,
            None => break,
        }
    }
    report.rounds = driver.rounds();
    let diffs = driver.into_differences();
    report.differences = diffs.len();
    if !diffs.is_empty() {
        debug!(peer = %peer, differences = diffs.len(), "anti-entropy found differences");
    }
    transfer(node, addr, &diffs, report).await
}

/// Pulls the peer's versions of keys it holds differently and merges them here; pushes
/// ours of keys we hold differently. Merging both ways makes the order irrelevant.
///
/// A tombstone is only copied where an older version of its key is held: a replica that
/// holds nothing for the key (it never had it, or already collected the tombstone) has
/// nothing to be protected from, and copying would keep tombstones bouncing between
/// replicas that collect them at different moments (see `tombstones`).
async fn transfer(node: &Node, addr: &str, diffs: &[KeyDiff], report: &mut PeerReport) -> Result<(), String> {
    let forest = node.replicas().forest();
    let note = |report: &mut PeerReport, skey: &[u8]| {
        *report
            .repaired_by_partition
            .entry(forest.partition_of(skey))
            .or_default() += 1;
    };
    let pulls: Vec<(&KeyDiff, &str)> = diffs
        .iter()
        .filter(|d| d.remote.is_some())
        .filter_map(|d| Some((d, user_key(&d.key)?)))
        .collect();
    for batch in pulls.chunks(PULL_BATCH) {
        node.antientropy.pace(batch.len()).await;
        let keys: Vec<String> = batch.iter().map(|(_, k)| k.to_string()).collect();
        let states = match call(node, addr, &ReplicaRequest::GetBatch { keys: keys.clone() }, report).await? {
            ReplicaResponse::States(s) if s.len() == keys.len() => s,
            other => return Err(format!("unexpected answer {other:?}")),
        };
        for ((d, key), state) in batch.iter().zip(states) {
            if let Some(reg) = state.filter(|r| d.local.is_some() || !r.is_tombstone()) {
                node.replicas().merge(key, &reg).map_err(|e| e.to_string())?;
                report.pulled += 1;
                note(report, &d.key);
            }
        }
    }
    let mut items = Vec::new();
    let mut bytes = 0;
    for d in diffs.iter().filter(|d| d.local.is_some()) {
        let Some(key) = user_key(&d.key) else { continue };
        let reg = node.replicas().get(key).map_err(|e| e.to_string())?;
        if let Some(reg) = reg.filter(|r| d.remote.is_some() || !r.is_tombstone()) {
            bytes += reg.values().iter().map(|v| v.len()).sum::<usize>() + 64;
            items.push((key.to_string(), reg));
            note(report, &d.key);
        }
        if bytes >= PUSH_BATCH_BYTES {
            push(node, addr, std::mem::take(&mut items), report).await?;
            bytes = 0;
        }
    }
    push(node, addr, items, report).await
}

async fn push(
    node: &Node,
    addr: &str,
    items: Vec<(String, dynakv_crdt::Register)>,
    report: &mut PeerReport,
) -> Result<(), String> {
    if items.is_empty() {
        return Ok(());
    }
    node.antientropy.pace(items.len()).await;
    let n = items.len();
    match call(node, addr, &ReplicaRequest::MergeBatch { items }, report).await? {
        ReplicaResponse::Merged => {
            report.pushed += n;
            Ok(())
        }
        other => Err(format!("unexpected answer {other:?}")),
    }
}

fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// `GET /admin/antientropy`.
pub fn status(node: &Node) -> serde_json::Value {
    let ring = node.cluster().ring();
    let n = node.settings().n;
    let me = node.id();
    let forest = node.replicas().forest();
    let peers = node.antientropy.peers.lock().clone();
    let partitions: Vec<serde_json::Value> = ring
        .partitions()
        .filter_map(|p| {
            let replicas = ring.partition_preference(p, n);
            let holds = forest.key_count(p.0) > 0;
            if !replicas.contains(&me) && !holds {
                return None;
            }
            let per_peer: serde_json::Map<String, serde_json::Value> = replicas
                .iter()
                .filter(|id| **id != me)
                .filter_map(|id| {
                    let r = peers.get(*id)?;
                    Some((
                        id.to_string(),
                        json!({
                            "last_exchange_ms_ago": r.finished_at.map(|t| t.elapsed().as_millis() as u64),
                            "result": r.result,
                            "repaired": r.repaired_by_partition.get(&p.0).copied().unwrap_or(0),
                        }),
                    ))
                })
                .collect();
            Some(json!({
                "partition": p.0,
                "replicas": replicas.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
                "replica_here": replicas.contains(&me),
                "root": hex(&forest.root(p.0)),
                "keys": forest.key_count(p.0),
                "peers": per_peer,
            }))
        })
        .collect();
    let peer_list: Vec<serde_json::Value> = peers
        .iter()
        .map(|(id, r)| {
            json!({
                "peer": id.to_string(),
                "last_exchange_ms_ago": r.finished_at.map(|t| t.elapsed().as_millis() as u64),
                "result": r.result,
                "shared_partitions": r.shared_partitions,
                "rounds": r.rounds,
                "differences": r.differences,
                "keys_pushed": r.pushed,
                "keys_pulled": r.pulled,
                "bytes_sent": r.bytes_sent,
                "bytes_received": r.bytes_received,
                "duration_ms": r.duration_ms,
                "exchanges": r.exchanges,
                "keys_repaired_total": r.total_repaired,
            })
        })
        .collect();
    let hints = node.replicas().hint_summary().ok();
    let stats = &node.stats;
    use std::sync::atomic::Ordering::Relaxed;
    json!({
        "node": me.to_string(),
        "interval_ms": node.antientropy.interval.map(|d| d.as_millis() as u64),
        "read_repairs": stats.read_repairs.load(Relaxed),
        "hints": {
            "pending": hints.as_ref().map(|h| h.by_owner.values().sum::<u64>()),
            "by_owner": hints.as_ref().map(|h| h.by_owner.clone()),
            "oldest_ms": hints.as_ref().and_then(|h| h.oldest_ms),
            "hinted_writes": stats.hinted_writes.load(Relaxed),
            "delivered": stats.hints_delivered.load(Relaxed),
        },
        "tombstones": {
            "pending": node.replicas().tombstone_count().ok(),
            "collected": stats.tombstones_collected.load(Relaxed),
        },
        "peers": peer_list,
        "partitions": partitions,
    })
}
