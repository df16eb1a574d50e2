//! Merkle-tree anti-entropy between co-replicas: each round runs one exchange at a time
//! with each live peer that shares partitions with us; differing keys are pulled and
//! pushed in batches, merged with the register merge on both sides, and paced by a
//! token bucket. The comparison itself is the pure DRIVER/RECEIVER pair of
//! `dynakv_antientropy::exchange`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dynakv_antientropy::rate::TokenBucket;
use dynakv_antientropy::{CompareResponse, Driver, KeyDiff, answer as answer_compare};
use dynakv_crdt::Register;
use dynakv_ring::{NodeId, Status};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tracing::{debug, info};

use super::Service;
use crate::local::Local;
use crate::state::replica::{LocalView, user_key};
use crate::transport::message::{self, Call};
use crate::transport::{RpcError, Traffic};

/// Keys per pull request.
const PULL_BATCH: usize = 64;
/// Bytes of registers per push request (a batch always holds at least one).
const PUSH_BATCH_BYTES: usize = 4 << 20;

/// RECEIVER: one round of an exchange `from` drives.
pub fn answer(local: &Local, from: &NodeId, compare: &dynakv_antientropy::Compare) -> CompareResponse {
    let shared = local.cluster.shared_partitions(from);
    answer_compare(&mut LocalView::new(&local.replicas, shared), compare)
}

/// What the last exchange with a peer did.
#[derive(Clone, Debug, Default)]
pub struct PeerReport {
    /// When it ended (monotonic ms).
    pub finished_at_ms: Option<u64>,
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
    /// Exchanges that completed and that failed, over all exchanges with the peer.
    pub total_ok: u64,
    pub total_failed: u64,
    pub total_pushed: u64,
    pub total_pulled: u64,
}

pub struct AntiEntropy {
    local: Arc<Local>,
    interval: Option<Duration>,
    bucket: Mutex<TokenBucket>,
    peers: Mutex<BTreeMap<NodeId, PeerReport>>,
}

impl AntiEntropy {
    /// `interval` `None` disables exchanges; `keys_per_sec` paces repairs.
    pub fn new(local: Arc<Local>, interval: Option<Duration>, keys_per_sec: u32) -> AntiEntropy {
        let rate = keys_per_sec.max(1) as f64;
        let now = local.clock.monotonic_ms();
        AntiEntropy {
            local,
            interval,
            bucket: Mutex::new(TokenBucket::new(rate, rate, now)),
            peers: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    /// The last exchange with each peer.
    pub fn reports(&self) -> BTreeMap<NodeId, PeerReport> {
        self.peers.lock().clone()
    }

    /// Waits until `keys` more repairs fit the rate.
    async fn pace(&self, keys: usize) {
        let wait = self.bucket.lock().take(keys as f64, self.local.clock.monotonic_ms());
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }

    async fn exchange_all(&self) {
        for peer in self.local.cluster.peers() {
            if peer.status != Status::Alive {
                continue;
            }
            let shared = self.local.cluster.shared_partitions(&peer.id);
            if shared.is_empty() {
                continue;
            }
            let report = self.exchange(&peer.addr, shared).await;
            self.record(&peer.id, report);
        }
    }

    fn record(&self, peer: &NodeId, report: Result<PeerReport, (PeerReport, String)>) {
        let ok = report.is_ok();
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
        let mut peers = self.peers.lock();
        let entry = peers.entry(peer.clone()).or_default();
        report.result = result;
        report.finished_at_ms = Some(self.local.clock.monotonic_ms());
        report.exchanges = entry.exchanges + 1;
        report.total_repaired = entry.total_repaired + repaired;
        report.total_ok = entry.total_ok + u64::from(ok);
        report.total_failed = entry.total_failed + u64::from(!ok);
        report.total_pushed = entry.total_pushed + report.pushed as u64;
        report.total_pulled = entry.total_pulled + report.pulled as u64;
        *entry = report;
    }

    /// DRIVER: one exchange with the peer at `addr` over the partitions we share.
    pub async fn exchange(&self, addr: &str, shared: Vec<u32>) -> Result<PeerReport, (PeerReport, String)> {
        let started = self.local.clock.monotonic_ms();
        let mut report = PeerReport {
            shared_partitions: shared.len(),
            ..Default::default()
        };
        let outcome = self.drive(addr, shared, &mut report).await;
        report.duration_ms = self.local.clock.monotonic_ms().saturating_sub(started);
        match outcome {
            Ok(()) => Ok(report),
            Err(e) => Err((report, e)),
        }
    }

    /// Sends one request, counting bytes both ways.
    async fn call<C: Call>(&self, addr: &str, req: C, report: &mut PeerReport) -> Result<C::Answer, String> {
        let timeout = self.local.settings.request_timeout;
        let (answer, Traffic { sent, received }) = self
            .local
            .peers
            .call_measured(addr, req, timeout)
            .await
            .map_err(|e: RpcError| e.to_string())?;
        report.bytes_sent += sent;
        report.bytes_received += received;
        Ok(answer)
    }

    async fn drive(&self, addr: &str, shared: Vec<u32>, report: &mut PeerReport) -> Result<(), String> {
        let replicas = &self.local.replicas;
        let (mut driver, mut compare) = Driver::start(&mut LocalView::new(replicas, shared.clone()));
        loop {
            let req = message::Compare {
                from: self.local.id().clone(),
                compare,
            };
            let resp = self.call(addr, req, report).await?;
            match driver.step(&mut LocalView::new(replicas, shared.clone()), resp) {
                Some(c) => compare = c,
                None => break,
            }
        }
        report.rounds = driver.rounds();
        let diffs = driver.into_differences();
        report.differences = diffs.len();
        if !diffs.is_empty() {
            debug!(peer = addr, differences = diffs.len(), "anti-entropy found differences");
        }
        self.transfer(addr, &diffs, report).await
    }

    /// Pulls the peer's versions of keys it holds differently and merges them here;
    /// pushes ours of keys we hold differently. Merging both ways makes the order
    /// irrelevant.
    ///
    /// A tombstone is only copied where an older version of its key is held: a replica
    /// that holds nothing for the key (it never had it, or already collected the
    /// tombstone) has nothing to be protected from, and copying would keep tombstones
    /// bouncing between replicas that collect them at different moments (see
    /// `tombstones`).
    async fn transfer(&self, addr: &str, diffs: &[KeyDiff], report: &mut PeerReport) -> Result<(), String> {
        let replicas = &self.local.replicas;
        let forest = replicas.forest();
        let note = |report: &mut PeerReport, skey: &[u8]| {
            *report
                .repaired_by_partition
                .entry(forest.partition_of(skey))
                .or_default() += 1;
        };
        let pulls: Vec<(&KeyDiff, std::borrow::Cow<'_, str>)> = diffs
            .iter()
            .filter(|d| d.remote.is_some())
            .filter_map(|d| Some((d, user_key(&d.key)?)))
            .collect();
        for batch in pulls.chunks(PULL_BATCH) {
            self.pace(batch.len()).await;
            let keys: Vec<String> = batch.iter().map(|(_, k)| k.to_string()).collect();
            let n = keys.len();
            let states = self.call(addr, message::GetBatch { keys }, report).await?;
            if states.len() != n {
                return Err(format!("{} states for {n} keys", states.len()));
            }
            for ((d, key), state) in batch.iter().zip(states) {
                if let Some(reg) = state.filter(|r| d.local.is_some() || !r.is_tombstone()) {
                    replicas.merge(key, &reg).map_err(|e| e.to_string())?;
                    report.pulled += 1;
                    note(report, &d.key);
                }
            }
        }
        let mut items = Vec::new();
        let mut bytes = 0;
        for d in diffs.iter().filter(|d| d.local.is_some()) {
            let Some(key) = user_key(&d.key) else { continue };
            let reg = replicas.get(&key).map_err(|e| e.to_string())?;
            if let Some(reg) = reg.filter(|r| d.remote.is_some() || !r.is_tombstone()) {
                bytes += reg.values().iter().map(|v| v.len()).sum::<usize>() + 64;
                items.push((key.to_string(), reg));
                note(report, &d.key);
            }
            if bytes >= PUSH_BATCH_BYTES {
                self.push(addr, std::mem::take(&mut items), report).await?;
                bytes = 0;
            }
        }
        self.push(addr, items, report).await
    }

    async fn push(&self, addr: &str, items: Vec<(String, Register)>, report: &mut PeerReport) -> Result<(), String> {
        if items.is_empty() {
            return Ok(());
        }
        self.pace(items.len()).await;
        let n = items.len();
        let batch = message::MergeBatch {
            items,
            layout: self.local.cluster.newest_known(),
        };
        self.call(addr, batch, report).await?;
        report.pushed += n;
        Ok(())
    }
}

impl Service for AntiEntropy {
    fn name(&self) -> &'static str {
        "anti-entropy"
    }

    fn interval(&self) -> Option<Duration> {
        self.interval
    }

    fn round(self: Arc<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move { self.exchange_all().await })
    }
}
