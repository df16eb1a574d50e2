//! The layout service: moves this node through layout changes (`dynakv_ring::history`).
//!
//! Each round it
//! 1. **joins** a fresh node (auto-join): stages its own join, and commits the staged
//!    joins when it is the joiner to do so ([`auto_join_step`]);
//! 2. **acks** the current layout once the writes it coordinated under older layouts
//!    have finished;
//! 3. **syncs**: once every tracked member has acked, fetches the partitions it gains
//!    from every live replica that has them (whole partitions, paged, paced, resumable:
//!    [`crate::state::transfer`]), then marks itself synced;
//! 4. **reads** from the newest layout whose owners have all synced, and retires older
//!    layouts no tracked member reads from;
//! 5. **drops** its copies of partitions no layout has it replicate, once the layouts
//!    are settled.
//!
//! Commits (an operator's or an auto-join's) go through [`commit`]: a majority of the
//! current owners must promise the version before it is installed, so of two racing
//! commits at most one wins; the other gets `layout_conflict`.
//!
//! Why this file is long: the steps of a round (join, ack, sync, read, retire, drop) are
//! one state machine over the same layout history and transfer progress; split across
//! files, its order would be harder to follow.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use dynakv_http_api::admin::{LastSync, LayoutService as ServiceView, Transfer};
use dynakv_ring::history::{Gain, LayoutHistory, fetched_enough};
use dynakv_ring::layout::{Change, Known, Layout, LayoutError};
use dynakv_ring::{NodeId, Status};
use futures::StreamExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tracing::{debug, info, warn};

use super::Service;
use crate::env::storage::{Op, Space};
use crate::local::Local;
use crate::state::cluster::OtherCluster;
use crate::state::transfer::{self, Pace, Progress};
use crate::transport::RpcError;
use crate::transport::message;

/// Most layouts in use at once: a commit beyond waits until older ones retire (a write
/// goes to a quorum in each).
pub const MAX_ACTIVE_LAYOUTS: usize = 8;

/// Where transfer progress is kept, so a transfer resumes after a restart.
const PROGRESS_PREFIX: &[u8] = crate::env::storage::meta::TRANSFER_PROGRESS_PREFIX;
/// Set once this node has owned partitions: it never auto-joins again.
const JOINED_KEY: &[u8] = crate::env::storage::meta::LAYOUT_JOINED;

/// A commit refused while too many layouts are active.
pub const LAYOUT_BUSY: &str = "layout_busy";
/// A stage request whose body is no change.
pub const BAD_CHANGE: &str = "bad_change";

/// Why a layout commit failed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The change, or the version asked, is refused.
    #[error(transparent)]
    Refused(#[from] LayoutError),
    #[error(
        "{active} layouts are in use while partitions move (is an owner down?); wait until they settle \
         (GET /admin/layout) before committing another"
    )]
    Busy { active: usize },
    #[error(
        "only {promised} of the {owners} owners asked promised layout version {asked}; a majority must (are \
         they up?)"
    )]
    NoMajority { promised: usize, owners: usize, asked: u64 },
}

/// Why this node refused to promise a layout version.
#[derive(Debug, thiserror::Error)]
pub enum PromiseError {
    #[error(transparent)]
    OtherCluster(#[from] OtherCluster),
    #[error(transparent)]
    Refused(#[from] LayoutError),
}

/// What auto-join does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JoinStep {
    Nothing,
    /// Stage our own join.
    Stage,
    /// Commit the staged joins (version current + 1).
    Commit,
}

/// Auto-join's decision for `me`, from the history and what gossip knows.
///
/// - A node that owns partitions, or ever did, never joins (a restart, or a node that
///   left, stays out until an operator says otherwise).
/// - A node with seeds waits until it has heard from another live member: a node whose
///   seeds are all down must not found a cluster of its own.
/// - The staged joins are committed by the live staged joiner with the lowest id, and
///   only when nothing but joins is staged (an operator's staged changes are theirs to
///   commit). A cluster that has no owners yet forms once every live member has staged
///   its join.
pub fn auto_join_step(
    me: &NodeId,
    history: &LayoutHistory,
    known: &BTreeMap<NodeId, Known>,
    seeded: bool,
    ever_joined: bool,
) -> JoinStep {
    let current = history.current();
    if ever_joined || current.owns(me) {
        return JoinStep::Nothing;
    }
    let alive = |id: &NodeId| -> bool { known.get(id).is_some_and(|k| k.status == Status::Alive) };
    let heard_from_others = known.keys().any(|id| id != me && alive(id));
    if seeded && !heard_from_others {
        return JoinStep::Nothing;
    }
    let staged = if history.staging.base == current.version {
        history.staging.changes()
    } else {
        Vec::new()
    };
    if !staged.contains(&Change::Join(me.clone())) {
        return JoinStep::Stage;
    }
    let mut joiners: Vec<&NodeId> = Vec::new();
    for c in &staged {
        match c {
            Change::Join(id) => joiners.push(id),
            _ => return JoinStep::Nothing,
        }
    }
    let first = joiners.iter().copied().filter(|id| alive(id)).min();
    if first != Some(me) {
        return JoinStep::Nothing;
    }
    if current.owners.is_empty() {
        let all_staged = known.keys().filter(|id| alive(id)).all(|id| joiners.contains(&id));
        if !all_staged {
            return JoinStep::Nothing;
        }
    }
    JoinStep::Commit
}

/// Commits the staged changes as version `asked` (current + 1): a majority of the
/// current owners must promise it first. The cluster's first layout, which has no
/// current owners, needs a majority of its own owners: two members that each think they
/// found the cluster (one had not yet heard of another) cannot both install a first
/// layout. (Before, both could, with different owners; the merge kept one, and a member
/// left out of it had already recorded that it owned partitions, so it never joined
/// again: found by swarm testing, leave_under_load seed 50047.)
pub async fn commit(local: &Local, asked: u64) -> Result<Layout, CommitError> {
    let cluster = &local.cluster;
    let view = cluster.view();
    view.history.check_version(asked)?;
    let active = view.history.versions().len();
    if active >= MAX_ACTIVE_LAYOUTS {
        return Err(CommitError::Busy { active });
    }
    let next = cluster.proposal()?;
    let digest = next.digest();
    let voters = if view.current().owners.is_empty() {
        &next.owners
    } else {
        &view.current().owners
    };
    let owners: Vec<NodeId> = voters.keys().cloned().collect();
    if !owners.is_empty() {
        let timeout = local.settings.request_timeout;
        let asks = owners.iter().map(|id| async move {
            if id == cluster.me() {
                return cluster
                    .promise(asked, digest)
                    .map_err(|e| e.code() == "layout_conflict");
            }
            let Some((addr, _)) = cluster.member(id) else {
                return Err(false);
            };
            let req = message::PromiseLayout {
                cluster: cluster.id().clone(),
                version: asked,
                digest,
            };
            match local.peers.call(&addr, req, timeout).await {
                Ok(()) => Ok(()),
                Err(RpcError::Remote { error, .. }) => Err(error.code() == "layout_conflict"),
                Err(_) => Err(false),
            }
        });
        let answers = futures::future::join_all(asks).await;
        let promised = answers.iter().filter(|a| a.is_ok()).count();
        if promised * 2 <= owners.len() {
            if answers.contains(&Err(true)) {
                let current = cluster.view().current().version;
                return Err(LayoutError::Conflict { current, asked }.into());
            }
            return Err(CommitError::NoMajority {
                promised,
                owners: owners.len(),
                asked,
            });
        }
    }
    cluster.install(next.clone())?;
    info!(version = next.version, owners = next.owners.len(), "layout committed");
    Ok(next)
}

/// RECEIVER of [`message::PromiseLayout`].
pub fn promise(local: &Local, req: message::PromiseLayout) -> Result<(), PromiseError> {
    if req.cluster != *local.cluster.id() {
        return Err(OtherCluster(format!(
            "layout promise refused: peer is in cluster {:?} but this node is in {:?}",
            req.cluster,
            local.cluster.id()
        ))
        .into());
    }
    Ok(local.cluster.promise(req.version, req.digest)?)
}

/// One incoming partition transfer (`/admin/layout` shows it as a
/// [`dynakv_http_api::admin::Transfer`]).
#[derive(Clone, Debug)]
struct TransferView {
    pub version: u64,
    pub partition: u32,
    pub from: String,
    pub to: String,
    /// `pending`, `running`, `done`, `failed`, `skipped` (the source is down) or
    /// `not_needed` (enough other sources were fetched from).
    pub state: &'static str,
    pub keys: u64,
    pub bytes: u64,
}

/// How the layout service runs.
#[derive(Clone, Debug)]
pub struct LayoutSettings {
    /// Pause between rounds.
    pub interval: Duration,
    /// A fresh node stages and commits its own join.
    pub auto_join: bool,
    /// The node has seeds other than itself (it waits for them before founding a
    /// cluster).
    pub seeded: bool,
    /// Partitions fetched at once.
    pub concurrency: usize,
    /// Bytes per second over all fetches; 0: no limit.
    pub bytes_per_sec: u64,
    /// How often a settled node looks again for partition copies it no longer
    /// replicates (at once after each layout change; a write placed by a member that had
    /// not yet heard of a retirement can leave one behind).
    pub drop_sweep: Duration,
}

pub struct LayoutService {
    local: Arc<Local>,
    settings: LayoutSettings,
    /// This node has owned partitions (stored under `JOINED_KEY`).
    joined: AtomicBool,
    syncing: AtomicBool,
    transfers: Mutex<BTreeMap<(u32, NodeId), TransferView>>,
    /// `(version, at_ms)` of the last sweep for partitions to drop.
    swept: Mutex<Option<(u64, u64)>>,
    rounds: AtomicU64,
    keys_fetched: AtomicU64,
    bytes_fetched: AtomicU64,
    partitions_synced: AtomicU64,
    keys_dropped: AtomicU64,
    commits: AtomicU64,
    /// The last completed fetch pass that moved data: what and how long.
    last_sync: Mutex<Option<LastSync>>,
}

impl LayoutService {
    pub fn new(local: Arc<Local>, mut settings: LayoutSettings) -> LayoutService {
        settings.concurrency = settings.concurrency.max(1);
        let joined = matches!(local.replicas.store().get(Space::Meta, JOINED_KEY), Ok(Some(_)));
        LayoutService {
            joined: AtomicBool::new(joined),
            local,
            settings,
            syncing: AtomicBool::new(false),
            transfers: Mutex::new(BTreeMap::new()),
            swept: Mutex::new(None),
            rounds: AtomicU64::new(0),
            keys_fetched: AtomicU64::new(0),
            bytes_fetched: AtomicU64::new(0),
            partitions_synced: AtomicU64::new(0),
            keys_dropped: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            last_sync: Mutex::new(None),
        }
    }

    pub fn transfers(&self) -> Vec<Transfer> {
        self.transfers
            .lock()
            .values()
            .map(|t| Transfer {
                version: t.version,
                partition: t.partition,
                from: t.from.clone(),
                to: t.to.clone(),
                state: t.state.to_string(),
                keys: t.keys,
                bytes: t.bytes,
            })
            .collect()
    }

    /// Keys and bytes partition transfers have fetched so far.
    pub fn fetched(&self) -> (u64, u64) {
        (
            self.keys_fetched.load(Ordering::Relaxed),
            self.bytes_fetched.load(Ordering::Relaxed),
        )
    }

    pub fn status(&self) -> ServiceView {
        let (keys_fetched, bytes_fetched) = self.fetched();
        ServiceView {
            rounds: self.rounds.load(Ordering::Relaxed),
            syncing: self.syncing.load(Ordering::Relaxed),
            keys_fetched,
            bytes_fetched,
            partitions_synced: self.partitions_synced.load(Ordering::Relaxed),
            keys_dropped: self.keys_dropped.load(Ordering::Relaxed),
            newest_layout_seen: self.local.cluster.layout_seen(),
            auto_join_commits: self.commits.load(Ordering::Relaxed),
            last_sync: self.last_sync.lock().clone(),
        }
    }

    /// Records once that this node owns partitions (it never auto-joins again).
    fn note_joined(&self) {
        if self.joined.load(Ordering::Relaxed) {
            return;
        }
        match self.local.replicas.store().put(Space::Meta, JOINED_KEY, b"1") {
            Ok(()) => self.joined.store(true, Ordering::Relaxed),
            Err(e) => warn!(error = %e, "recording that this node joined failed"),
        }
    }

    async fn step(self: &Arc<Self>) {
        self.rounds.fetch_add(1, Ordering::Relaxed);
        let cluster = &self.local.cluster;
        // A node back from an outage acts on its stored layout only once a peer has
        // told it the cluster's (its membership is also still empty then: a fetch would
        // find no source, a tracked set would be just itself).
        if !cluster.heard() {
            return;
        }
        let me = cluster.me().clone();
        let view = cluster.view();
        if view.current().owns(&me) {
            self.note_joined();
        } else if self.settings.auto_join {
            self.auto_join(&me).await;
        }
        let view = cluster.view();
        let history = &view.history;
        let current = history.current().version;
        let acked = history.acked(&me);
        if acked < current {
            cluster.ack_layout(current);
        }
        let view = cluster.view();
        let history = &view.history;
        let synced = history.synced(&me);
        if synced < current && history.all_acked(&cluster.tracked()) && !self.syncing.swap(true, Ordering::SeqCst) {
            let n = self.local.settings.n;
            let gains = history
                .gains(&me, &view.rings, n)
                .into_iter()
                .map(|g| {
                    // The replica sets the data is in: those without this node.
                    let sets = view
                        .rings
                        .all()
                        .map(|(_, r)| r.partition_preference(g.partition, n))
                        .filter(|pl| !pl.contains(&&me))
                        .map(|pl| pl.into_iter().cloned().collect())
                        .collect();
                    (g, sets)
                })
                .collect();
            let this = self.clone();
            self.local.spawn(async move { this.sync(current, gains).await });
        }
        cluster.advance_reads();
        self.sweep();
    }

    async fn auto_join(&self, me: &NodeId) {
        let cluster = &self.local.cluster;
        let view = cluster.view();
        let known = cluster.known();
        match auto_join_step(
            me,
            &view.history,
            &known,
            self.settings.seeded,
            self.joined.load(Ordering::Relaxed),
        ) {
            JoinStep::Nothing => {}
            JoinStep::Stage => match cluster.stage(Change::Join(me.clone())) {
                Ok(()) => info!("staged this node's join to the layout (auto-join)"),
                Err(e) => debug!(error = %e, "cannot stage this node's join yet"),
            },
            JoinStep::Commit => {
                let asked = view.current().version + 1;
                match commit(&self.local, asked).await {
                    Ok(l) => {
                        self.commits.fetch_add(1, Ordering::Relaxed);
                        info!(version = l.version, "committed the staged joins (auto-join)");
                    }
                    Err(e) => debug!(error = %e, "auto-join commit failed; will retry"),
                }
            }
        }
    }

    /// Fetches `gains` (computed at layout `version`) and marks this node synced.
    async fn sync(self: Arc<Self>, version: u64, gains: Vec<(Gain, Vec<Vec<NodeId>>)>) {
        let me = self.local.cluster.me().clone();
        {
            let mut t = self.transfers.lock();
            t.retain(|_, v| v.version == version && !matches!(v.state, "skipped" | "not_needed"));
            for (g, _) in &gains {
                for s in &g.sources {
                    t.entry((g.partition.0, s.clone())).or_insert_with(|| TransferView {
                        version,
                        partition: g.partition.0,
                        from: s.to_string(),
                        to: me.to_string(),
                        state: "pending",
                        keys: 0,
                        bytes: 0,
                    });
                }
            }
        }
        let total = gains.len();
        let started_ms = self.local.cluster.now_ms();
        let (keys0, bytes0) = (
            self.keys_fetched.load(Ordering::Relaxed),
            self.bytes_fetched.load(Ordering::Relaxed),
        );
        let ok = futures::stream::iter(gains)
            .map(|(g, sets)| self.fetch_gain(version, g, sets))
            .buffer_unordered(self.settings.concurrency)
            .fold(0usize, |n, ok| async move { n + ok as usize })
            .await;
        // What was fetched must survive a crash of this machine before the mark says
        // this node holds it: the old owners drop their copies once every owner synced.
        let durable = ok == total && {
            match self.local.replicas.store().sync() {
                Ok(()) => true,
                Err(e) => {
                    warn!(error = %e, "syncing the partitions fetched failed; will retry");
                    false
                }
            }
        };
        if durable {
            self.local.cluster.mark_synced(version);
            self.clear_progress(version);
            if total > 0 {
                let ms = self.local.cluster.now_ms().saturating_sub(started_ms);
                let keys = self.keys_fetched.load(Ordering::Relaxed) - keys0;
                let bytes = self.bytes_fetched.load(Ordering::Relaxed) - bytes0;
                info!(
                    version,
                    partitions = total,
                    keys,
                    bytes,
                    ms,
                    "fetched every partition gained (this pass)"
                );
                *self.last_sync.lock() = Some(LastSync {
                    version,
                    partitions: total as u64,
                    keys,
                    bytes,
                    ms,
                });
            }
        } else {
            debug!(
                version,
                fetched = ok,
                of = total,
                "some partitions are not fetched yet; will retry"
            );
        }
        self.syncing.store(false, Ordering::SeqCst);
    }

    /// Fetches one gained partition from its live sources, one after the other, until,
    /// in each replica set that had it, enough members were fetched from in full that
    /// every acknowledged write is among them ([`fetched_enough`]: |set| - W + 1, fewer
    /// members an operator declared gone). A source that is down is skipped; with too
    /// many down the partition waits.
    async fn fetch_gain(&self, version: u64, gain: Gain, sets: Vec<Vec<NodeId>>) -> bool {
        let p = gain.partition.0;
        let w = self.local.settings.w;
        let gone = self.local.cluster.view().history.gone();
        let complete = |fetched: &BTreeSet<NodeId>| fetched_enough(&sets, &gone, fetched, w);
        let mut fetched: BTreeSet<NodeId> = BTreeSet::new();
        for source in &gain.sources {
            let state = if gone.contains(source) {
                "skipped"
            } else if complete(&fetched) {
                // Enough sources already: any W of each set meet those fetched.
                "not_needed"
            } else {
                match self.local.cluster.member(source) {
                    Some((addr, Status::Alive | Status::Suspect)) => {
                        if self.fetch_from(version, p, source, &addr).await {
                            fetched.insert(source.clone());
                            "done"
                        } else {
                            "failed"
                        }
                    }
                    _ => "skipped",
                }
            };
            if let Some(t) = self.transfers.lock().get_mut(&(p, source.clone())) {
                t.state = state;
            }
        }
        let complete = complete(&fetched);
        if complete {
            self.partitions_synced.fetch_add(1, Ordering::Relaxed);
        } else {
            debug!(
                partition = p,
                fetched = fetched.len(),
                "not enough of a gained partition's replicas fetched from yet; will retry"
            );
        }
        complete
    }

    fn progress_key(version: u64, partition: u32, source: &NodeId) -> Vec<u8> {
        let mut k = PROGRESS_PREFIX.to_vec();
        k.extend_from_slice(format!("{version:020}/{partition:010}/{source}").as_bytes());
        k
    }

    async fn fetch_from(&self, version: u64, partition: u32, source: &NodeId, addr: &str) -> bool {
        let store = self.local.replicas.store();
        let pkey = Self::progress_key(version, partition, source);
        let mut progress: Progress = match store.get(Space::Meta, &pkey) {
            Ok(Some(b)) => serde_json::from_slice(&b).unwrap_or_default(),
            _ => Progress::default(),
        };
        if progress.done {
            return true;
        }
        if let Some(t) = self.transfers.lock().get_mut(&(partition, source.clone())) {
            t.state = "running";
        }
        let rate = self.settings.bytes_per_sec / self.settings.concurrency as u64;
        let mut pace = Pace::new(rate);
        let timeout = self.local.settings.request_timeout.max(Duration::from_secs(5));
        let (before_keys, before_bytes) = (progress.keys, progress.bytes);
        let result = transfer::fetch(
            &self.local.replicas,
            partition,
            &mut progress,
            &mut pace,
            |r| self.local.observe(r),
            |after| {
                let req = message::FetchPartition {
                    partition,
                    after,
                    max_bytes: transfer::PAGE_BYTES as u32,
                };
                self.local.peers.call(addr, req, timeout)
            },
            |p| {
                if let Ok(b) = serde_json::to_vec(p)
                    && let Err(e) = store.put(Space::Meta, &pkey, &b)
                {
                    warn!(error = %e, "storing transfer progress failed");
                }
                if let Some(t) = self.transfers.lock().get_mut(&(partition, source.clone())) {
                    t.keys = p.keys;
                    t.bytes = p.bytes;
                }
            },
            tokio::time::sleep,
        )
        .await;
        self.keys_fetched
            .fetch_add(progress.keys - before_keys, Ordering::Relaxed);
        self.bytes_fetched
            .fetch_add(progress.bytes - before_bytes, Ordering::Relaxed);
        match result {
            Ok(()) => true,
            Err(e) => {
                debug!(partition, source = %source, error = %e, "partition transfer interrupted; will resume");
                false
            }
        }
    }

    /// Forgets the progress of transfers for layouts up to `version`.
    fn clear_progress(&self, version: u64) {
        let store = self.local.replicas.store();
        let mut end = PROGRESS_PREFIX.to_vec();
        end.extend_from_slice(format!("{:020}", version + 1).as_bytes());
        let keys: Vec<Vec<u8>> = store
            .scan(Space::Meta, PROGRESS_PREFIX, Some(end.as_slice()))
            .filter_map(|kv| kv.ok().map(|(k, _)| k))
            .collect();
        if let Err(e) = store.write(keys.into_iter().map(|k| Op::Delete(Space::Meta, k)).collect()) {
            warn!(error = %e, "clearing transfer progress failed");
        }
    }

    /// Drops the partitions no active layout has this node replicate, once the layouts
    /// are settled (only then is no reader still using an older one).
    fn sweep(&self) {
        let cluster = &self.local.cluster;
        let view = cluster.view();
        let current = view.current();
        if !view.history.settled() || current.owners.is_empty() {
            return;
        }
        let now = cluster.now_ms();
        {
            let mut swept = self.swept.lock();
            let period = self.settings.drop_sweep.as_millis() as u64;
            if swept.is_some_and(|(v, at)| v == current.version && now < at + period) {
                return;
            }
            *swept = Some((current.version, now));
        }
        let me = cluster.me();
        let n = self.local.settings.n;
        let held = view.rings.current().partitions();
        let seen = cluster.layout_seen();
        if view.history.drops_held_back(seen) {
            debug!(
                seen,
                version = current.version,
                "a write named a layout this node has not heard of; dropping nothing until it has"
            );
        }
        let drop: BTreeSet<u32> = view
            .history
            .droppable(me, &view.rings, n, held, seen)
            .into_iter()
            .map(|p| p.0)
            .collect();
        // A write from a layout we have not heard of may land while we drop: it checks
        // in (`Cluster::saw_layout`) before taking its key's lock, and we look again
        // under the locks of each chunk.
        let still = || !view.history.drops_held_back(cluster.layout_seen());
        let mut dropped = 0;
        for p in drop {
            match self.local.replicas.drop_partition(p, still) {
                Ok(k) => dropped += k,
                Err(e) => warn!(partition = p, error = %e, "dropping a partition failed"),
            }
        }
        if dropped > 0 {
            self.keys_dropped.fetch_add(dropped, Ordering::Relaxed);
            info!(
                keys = dropped,
                version = current.version,
                "dropped copies of partitions this node no longer replicates"
            );
        }
    }
}

impl Service for LayoutService {
    fn name(&self) -> &'static str {
        "layout"
    }

    fn interval(&self) -> Option<Duration> {
        Some(self.settings.interval)
    }

    /// A node alone (no seeds) founds its cluster at once; one with seeds waits for them.
    fn starts_at_once(&self) -> bool {
        true
    }

    fn round(self: Arc<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move { self.step().await })
    }
}

#[cfg(test)]
mod tests {
    use dynakv_ring::layout::Stamp;

    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn known(alive: &[&str], dead: &[&str]) -> BTreeMap<NodeId, Known> {
        let k = |status| Known { status, tokens: 8 };
        alive
            .iter()
            .map(|s| (id(s), k(Status::Alive)))
            .chain(dead.iter().map(|s| (id(s), k(Status::Dead))))
            .collect()
    }

    fn staged(history: &mut LayoutHistory, changes: &[Change], known: &BTreeMap<NodeId, Known>) {
        for (i, c) in changes.iter().enumerate() {
            let stamp = Stamp {
                at_ms: i as u64 + 1,
                by: id("op"),
            };
            history.stage(c.clone(), stamp, known, 3).unwrap();
        }
    }

    fn join(s: &str) -> Change {
        Change::Join(id(s))
    }

    #[test]
    fn a_cluster_forms_once_every_live_member_staged_and_the_lowest_commits() {
        let k = known(&["a", "b", "c"], &["z"]);
        let mut h = LayoutHistory::new();
        // Seeded and alone: wait for the seeds.
        assert_eq!(
            auto_join_step(&id("a"), &h, &known(&["a"], &[]), true, false),
            JoinStep::Nothing
        );
        // Without seeds a node alone founds its cluster.
        assert_eq!(
            auto_join_step(&id("a"), &h, &known(&["a"], &[]), false, false),
            JoinStep::Stage
        );
        assert_eq!(auto_join_step(&id("a"), &h, &k, true, false), JoinStep::Stage);
        staged(&mut h, &[join("a"), join("b")], &k);
        // c has not staged yet: nobody commits; c stages.
        assert_eq!(auto_join_step(&id("a"), &h, &k, true, false), JoinStep::Nothing);
        assert_eq!(auto_join_step(&id("c"), &h, &k, true, false), JoinStep::Stage);
        staged(&mut h, &[join("c")], &k);
        // The dead z does not hold it up; only the lowest id commits.
        assert_eq!(auto_join_step(&id("a"), &h, &k, true, false), JoinStep::Commit);
        assert_eq!(auto_join_step(&id("b"), &h, &k, true, false), JoinStep::Nothing);
        // a dies before committing: b takes over.
        let without_a = known(&["b", "c"], &["a", "z"]);
        assert_eq!(auto_join_step(&id("b"), &h, &without_a, true, false), JoinStep::Commit);
    }

    #[test]
    fn owners_and_former_owners_never_join_and_operators_changes_are_theirs_to_commit() {
        let k = known(&["a", "b", "c", "d", "e"], &[]);
        let mut h = LayoutHistory::new();
        staged(&mut h, &[join("a"), join("b"), join("c")], &k);
        h.commit(1, &k, 3).unwrap();
        assert_eq!(auto_join_step(&id("a"), &h, &k, true, false), JoinStep::Nothing);
        // A node that left (it once owned partitions) stays out.
        assert_eq!(auto_join_step(&id("d"), &h, &k, true, true), JoinStep::Nothing);
        assert_eq!(auto_join_step(&id("d"), &h, &k, true, false), JoinStep::Stage);
        staged(&mut h, &[join("d"), join("e")], &k);
        assert_eq!(auto_join_step(&id("d"), &h, &k, true, false), JoinStep::Commit);
        assert_eq!(auto_join_step(&id("e"), &h, &k, true, false), JoinStep::Nothing);
        // An operator's change staged alongside: the joiner leaves the commit to them.
        staged(&mut h, &[Change::Leave(id("a"))], &k);
        assert_eq!(auto_join_step(&id("d"), &h, &k, true, false), JoinStep::Nothing);
    }
}
