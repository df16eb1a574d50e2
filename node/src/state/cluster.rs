//! This node's view of the cluster: the membership state machine (who is alive) and the
//! layout history (who owns what, `dynakv_ring::history`) with the rings of its active
//! layouts, shared by request handlers and the background services.
//!
//! Why this file is long: membership, the layout history, its persistence and the checks
//! every replica request takes (`may_serve`, `check_serves`) share one state under one
//! lock order, and change together.

use std::sync::Arc;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dynakv_ring::history::{LayoutHistory, Mark, Promise, Rings};
use dynakv_ring::layout::{Change, Digest, Known, Layout, LayoutError, Plan as LayoutPlan, Stamp};
use dynakv_ring::ring::MAX_TOKENS;
use dynakv_ring::{Event, GossipEntry, MemberInfo, Membership, NodeId, Partition, Ring, RingError, Status, Tick};
use parking_lot::{Mutex, RwLock};
use rand::Rng;

use crate::env::clock::Clock;
use crate::env::storage::{Space, StorageError, Store};

/// Why this node does not take a request now: it is behind on the cluster's layout, or
/// the request was placed under a layout in which this node has no part. The sender
/// should ask another node or retry (the HTTP edge answers it as unavailable).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotServing(pub String);

/// A peer of another cluster (its name or placement settings differ from ours).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OtherCluster(pub String);

/// What members of one cluster must agree on; gossip from a node that differs is
/// refused, so a misconfigured node cannot join and disagree about placement.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterId {
    pub name: String,
    pub partition_bits: u8,
    /// Replication factor: replicas of a partition must agree on who they are.
    pub n: u32,
    pub conflict: dynakv_crdt::ConflictMode,
}

/// One replica of a key as a request sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    pub id: NodeId,
    pub addr: String,
    pub status: Status,
    pub is_self: bool,
}

impl Replica {
    pub fn is_dead(&self) -> bool {
        matches!(self.status, Status::Dead | Status::Left)
    }
}

/// Where a key's requests go: its N replicas in preference order, then the live nodes
/// that follow them on the ring, which stand in for replicas that are down (sloppy
/// quorum), at most N of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub primaries: Vec<Replica>,
    pub fallbacks: Vec<Replica>,
    /// While the key's partition moves between layouts: its replica sets in the other
    /// active layouts (those that differ from `primaries`). A write must reach W in each
    /// of them as well. Empty while the partition is settled.
    pub moving: Vec<Vec<Replica>>,
    /// The version of the current layout the plan was made from: the writes sent by it
    /// name it.
    pub layout: u64,
}

impl Plan {
    pub fn includes_self(&self) -> bool {
        self.primaries.iter().any(|r| r.is_self)
    }

    /// This node is a replica in some set of the write (the read set or a moving one).
    pub fn holds_self(&self) -> bool {
        self.includes_self() || self.moving.iter().flatten().any(|r| r.is_self)
    }

    pub fn primary_ids(&self) -> Vec<NodeId> {
        self.primaries.iter().map(|r| r.id.clone()).collect()
    }
}

/// Why a node is sent a replica request: as one of the key's replicas, or as a
/// fallback standing in for one (a hint, or a sloppy read of the hints it holds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serving {
    Replica,
    Fallback,
}

/// Whether a node takes a replica write, or answers a replica read, sent by a member
/// that placed it under layout `named`, the node's own current layout being `current`.
/// A node serves a key as a replica only if it replicates the key's partition in some
/// active layout it knows (`replicates`), and as a fallback only if it owns partitions
/// in some active layout (`owner`): a layout retired, its former replicas dropped or
/// will drop their copies, and a write they took for it would be dropped with them (a
/// member that left took writes that way after its leave had settled, in a container
/// run); their "nothing" is not the key's state either. A request placed under a layout
/// newer than the node knows is served: the node may be a replica there.
pub fn may_serve(serving: Serving, replicates: bool, owner: bool, named: u64, current: u64) -> bool {
    named > current
        || match serving {
            Serving::Replica => replicates,
            Serving::Fallback => owner,
        }
}

/// A ring member as the collector of tombstones needs to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberState {
    pub id: NodeId,
    pub addr: String,
    pub status: Status,
    pub oldest_hint_ms: Option<u64>,
}

/// The layout history and the rings of its active layouts, rebuilt on each change;
/// readers take a cheap `Arc`.
pub struct LayoutView {
    pub history: LayoutHistory,
    pub rings: Rings,
    /// The version reads use ([`LayoutHistory::read_version`]).
    pub read: u64,
    /// By partition: this node replicates it in some active layout.
    replicated: Arc<Vec<bool>>,
    /// This node owns partitions in some active layout.
    owner: bool,
}

impl LayoutView {
    fn build(
        history: LayoutHistory,
        partition_bits: u8,
        previous: Option<&LayoutView>,
        me: &NodeId,
        n: usize,
    ) -> Result<LayoutView, RingError> {
        // Tracker changes (acks, syncs) are the common case: keep the rings then.
        let same_layouts = previous.is_some_and(|p| p.history.versions() == history.versions());
        let (rings, replicated) = match previous {
            Some(p) if same_layouts => (p.rings.clone(), p.replicated.clone()),
            _ => {
                let rings = Rings::of(&history, partition_bits)?;
                let replicated = rings
                    .current()
                    .partitions()
                    .map(|p| rings.all().any(|(_, r)| r.partition_preference(p, n).contains(&me)))
                    .collect();
                (rings, Arc::new(replicated))
            }
        };
        Ok(LayoutView {
            read: history.read_version(),
            owner: history.versions().iter().any(|l| l.owns(me)),
            history,
            rings,
            replicated,
        })
    }

    /// This node replicates `key`'s partition in some active layout.
    pub fn replicates(&self, key: &str) -> bool {
        let p = self
            .rings
            .current()
            .partition_of_position(dynakv_ring::item::position(key));
        self.replicated.get(p.0 as usize).copied().unwrap_or(false)
    }

    /// The ring reads use.
    pub fn read_ring(&self) -> &Ring {
        self.rings.version(self.read).unwrap_or_else(|| self.rings.current())
    }

    pub fn current(&self) -> &Layout {
        self.history.current()
    }
}

struct LayoutState {
    history: LayoutHistory,
    promise: Option<Promise>,
}

/// Where this node keeps the cluster's layout history.
const LAYOUT_KEY: &[u8] = crate::env::storage::meta::LAYOUT;

/// Loads the layout history this node last knew (a new one on a fresh node).
pub fn load_layout(store: &dyn Store) -> Result<LayoutHistory, StorageError> {
    match store.get(Space::Meta, LAYOUT_KEY)? {
        None => Ok(LayoutHistory::new()),
        Some(bytes) => parse_layout(&bytes).map_err(|e| StorageError::Corrupt {
            what: "the cluster layout".into(),
            detail: e.to_string(),
        }),
    }
}

/// A stored layout history, also as builds before 2026-12-07 stored it: their trackers
/// hold bare versions, read here as marks without a digest (a member then counts as one
/// version behind until it marks again, which it does at its next round).
fn parse_layout(bytes: &[u8]) -> Result<LayoutHistory, serde_json::Error> {
    let first = match serde_json::from_slice(bytes) {
        Ok(h) => return Ok(h),
        Err(e) => e,
    };
    let mut v: serde_json::Value = serde_json::from_slice(bytes)?;
    let none = serde_json::to_value(Mark::NONE.digest).expect("a digest encodes");
    let mut legacy = false;
    if let Some(trackers) = v.get_mut("trackers").and_then(|t| t.as_object_mut()) {
        for map in trackers.values_mut().filter_map(|m| m.as_object_mut()) {
            for mark in map.values_mut() {
                if let Some(version) = mark.as_u64() {
                    *mark = serde_json::json!({ "version": version, "digest": none });
                    legacy = true;
                }
            }
        }
    }
    if !legacy {
        return Err(first);
    }
    serde_json::from_value(v)
}

/// Where this node keeps the newest layout version a write it received named.
const SEEN_KEY: &[u8] = crate::env::storage::meta::LAYOUT_SEEN;

/// The newest layout version a write this node received named (0 on a fresh node).
pub fn load_seen(store: &dyn Store) -> Result<u64, StorageError> {
    match store.get(Space::Meta, SEEN_KEY)? {
        None => Ok(0),
        Some(bytes) => bytes
            .as_slice()
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| StorageError::Corrupt {
                what: "the newest layout version seen".into(),
                detail: format!("{} bytes, not 8", bytes.len()),
            }),
    }
}

pub struct Cluster {
    me: NodeId,
    id: ClusterId,
    n: usize,
    membership: Mutex<Membership>,
    /// The history, changed only under this lock; each change is stored, then published
    /// in `view`.
    layout: Mutex<LayoutState>,
    view: RwLock<Arc<LayoutView>>,
    store: Arc<dyn Store>,
    /// Writes this node coordinates, in flight, by the layout version they were placed
    /// with: the ack of a new layout waits for the older ones to finish.
    writes: InFlight,
    /// Reads this node coordinates, in flight, by the read version they were placed
    /// with: moving reads to a newer layout waits for the older ones to finish.
    reads: InFlight,
    /// This node has heard the cluster's layout from a peer since it started (or needs
    /// no one: it owns everything, or nothing is laid out yet).
    heard: AtomicBool,
    /// The monotonic milliseconds the membership state machine runs on.
    clock: Arc<dyn Clock>,
    /// The newest layout version named by a write this node received (stored under
    /// `SEEN_KEY` before it grows); while it is ahead of our current layout, we drop
    /// no partition ([`LayoutHistory::droppable`]).
    seen: AtomicU64,
    seen_lock: Mutex<()>,
}

/// Requests in flight, counted by the layout version they were placed with.
type InFlight = Arc<Mutex<BTreeMap<u64, usize>>>;

/// A request placed under a layout version, in flight until dropped.
pub struct Placed {
    counts: InFlight,
    version: u64,
}

impl Drop for Placed {
    fn drop(&mut self) {
        let mut c = self.counts.lock();
        if let Some(n) = c.get_mut(&self.version) {
            *n -= 1;
            if *n == 0 {
                c.remove(&self.version);
            }
        }
    }
}

/// Counts a request under the version `version_of` reads (it also returns what the
/// version was read from), both under the counts' lock:
/// a check of the counts under that lock (before an ack) sees either the request or a
/// version it was placed after.
fn place<T>(counts: &InFlight, version_of: impl FnOnce() -> (u64, T)) -> (T, Placed) {
    let mut c = counts.lock();
    let (version, with) = version_of();
    *c.entry(version).or_insert(0) += 1;
    let placed = Placed {
        counts: counts.clone(),
        version,
    };
    (with, placed)
}

impl Cluster {
    /// `history` and `seen` are what [`load_layout`] and [`load_seen`] read.
    pub fn new(
        id: ClusterId,
        n: usize,
        membership: Membership,
        history: LayoutHistory,
        seen: u64,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Cluster, RingError> {
        let view = LayoutView::build(history.clone(), id.partition_bits, None, membership.me(), n)?;
        Ok(Cluster {
            me: membership.me().clone(),
            id,
            n,
            membership: Mutex::new(membership),
            layout: Mutex::new(LayoutState { history, promise: None }),
            view: RwLock::new(Arc::new(view)),
            store,
            writes: Arc::new(Mutex::new(BTreeMap::new())),
            reads: Arc::new(Mutex::new(BTreeMap::new())),
            heard: AtomicBool::new(false),
            clock,
            seen: AtomicU64::new(seen),
            seen_lock: Mutex::new(()),
        })
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.monotonic_ms()
    }

    pub fn id(&self) -> &ClusterId {
        &self.id
    }

    pub fn me(&self) -> &NodeId {
        &self.me
    }

    /// The current layout's view: its history and rings.
    pub fn view(&self) -> Arc<LayoutView> {
        self.view.read().clone()
    }

    pub fn partition_of(&self, key: &str) -> Partition {
        self.view()
            .rings
            .current()
            .partition_of_position(dynakv_ring::item::position(key))
    }

    /// The key's N replicas in preference order, with what we know of each.
    pub fn replicas(&self, key: &str) -> Vec<Replica> {
        self.plan(key).primaries
    }

    fn replica(&self, m: &Membership, id: &NodeId) -> Replica {
        // An owner gossip has not told us of yet (just after a restart) cannot be
        // reached: it counts as down until it is heard from.
        let (addr, status) = match (m.info(id), m.status(id)) {
            (Some(info), Some(status)) => (info.addr.clone(), status),
            _ => (String::new(), Status::Dead),
        };
        Replica {
            id: id.clone(),
            addr,
            status,
            is_self: *id == self.me,
        }
    }

    /// The key's replicas and live fallbacks. The replicas are those of the layout reads
    /// use; while the key's partition moves, the replica sets of the other active
    /// layouts are `moving` (a write needs W in each).
    pub fn plan(&self, key: &str) -> Plan {
        self.plan_in(&self.view(), key)
    }

    fn plan_in(&self, view: &LayoutView, key: &str) -> Plan {
        let p = view
            .rings
            .current()
            .partition_of_position(dynakv_ring::item::position(key));
        let m = self.membership.lock();
        let read = view.read_ring().partition_preference(p, self.n);
        let others = view.rings.all().map(|(_, ring)| ring.partition_preference(p, self.n));
        let mut sets: Vec<Vec<&NodeId>> = Vec::new();
        // A layout without owners (the one before the cluster's first) never held data
        // and takes none: it is no replica set. While a node still reads from it, right
        // after the first layout is committed, its primaries are the first layout's.
        for set in std::iter::once(read).chain(others) {
            if !set.is_empty() && !sets.iter().any(|s| same_members(s, &set)) {
                sets.push(set);
            }
        }
        let fallbacks = view
            .rings
            .current()
            .successors(p)
            .filter(|id| !sets.iter().any(|s| s.contains(id)))
            .map(|id| self.replica(&m, id))
            .filter(|r| !r.is_dead())
            .take(self.n)
            .collect();
        let mut sets = sets
            .into_iter()
            .map(|s| s.into_iter().map(|id| self.replica(&m, id)).collect());
        Plan {
            primaries: sets.next().unwrap_or_default(),
            moving: sets.collect(),
            fallbacks,
            layout: view.current().version,
        }
    }

    /// The partitions both we and `peer` replicate in some active layout, ascending.
    pub fn shared_partitions(&self, peer: &NodeId) -> Vec<u32> {
        let view = self.view();
        view.rings
            .current()
            .partitions()
            .filter(|&p| {
                view.rings.all().any(|(_, ring)| {
                    let pl = ring.partition_preference(p, self.n);
                    pl.contains(&&self.me) && pl.contains(&peer)
                })
            })
            .map(|p| p.0)
            .collect()
    }

    /// The owners of every active layout.
    fn owners(&self, view: &LayoutView) -> BTreeSet<NodeId> {
        view.history
            .versions()
            .iter()
            .flat_map(|l| l.owners.keys().cloned())
            .collect()
    }

    /// Every owner in an active layout but us, with its status.
    pub fn peers(&self) -> Vec<Replica> {
        let owners = self.owners(&self.view());
        let m = self.membership.lock();
        owners
            .iter()
            .filter(|id| **id != self.me)
            .map(|id| self.replica(&m, id))
            .collect()
    }

    /// Every owner in an active layout, ourselves included.
    pub fn ring_member_states(&self) -> Vec<MemberState> {
        let owners = self.owners(&self.view());
        let m = self.membership.lock();
        owners
            .iter()
            .map(|id| {
                let r = self.replica(&m, id);
                MemberState {
                    oldest_hint_ms: m.info(id).and_then(|i| i.oldest_hint_ms),
                    id: r.id,
                    addr: r.addr,
                    status: r.status,
                }
            })
            .collect()
    }

    /// What a member says about itself, and its status.
    pub fn member_info(&self, id: &NodeId) -> Option<(MemberInfo, Status)> {
        let m = self.membership.lock();
        Some((m.info(id)?.clone(), m.status(id)?))
    }

    /// Cluster address and status of a member.
    pub fn member(&self, id: &NodeId) -> Option<(String, Status)> {
        let m = self.membership.lock();
        Some((m.info(id)?.addr.clone(), m.status(id)?))
    }

    pub fn set_oldest_hint(&self, oldest_hint_ms: Option<u64>) {
        self.membership.lock().set_oldest_hint(oldest_hint_ms);
    }

    pub fn tick(&self, rng: &mut impl Rng) -> Tick {
        let now = self.now_ms();
        self.membership.lock().tick(now, rng)
    }

    /// Merges a peer's table. Entries that could not be placed on a ring (a token count
    /// out of bounds) are dropped with a warning rather than poisoning our view.
    pub fn merge(&self, entries: &[GossipEntry]) -> Vec<Event> {
        let now = self.now_ms();
        let valid: Vec<GossipEntry> = entries
            .iter()
            .filter(|e| {
                let ok = (1..=MAX_TOKENS).contains(&e.info.tokens);
                if !ok {
                    tracing::warn!(member = %e.info.id, tokens = e.info.tokens, "ignoring gossip entry with invalid token count");
                }
                ok
            })
            .cloned()
            .collect();
        self.membership.lock().merge(&valid, now)
    }

    /// `id` answered one of our requests: alive now ([`Membership::heard_from`]).
    pub fn heard_from(&self, id: &NodeId) -> Vec<Event> {
        let now = self.now_ms();
        let mut m = self.membership.lock();
        // Nothing to do in the common case: it is alive already.
        if m.status(id) == Some(Status::Alive) {
            return Vec::new();
        }
        m.heard_from(id, now)
    }

    pub fn gossip_table(&self) -> Vec<GossipEntry> {
        let now = self.now_ms();
        self.membership.lock().gossip(now)
    }

    /// Applies `f` to the membership table (for views).
    pub fn with_membership<T>(&self, f: impl FnOnce(&Membership, u64) -> T) -> T {
        let now = self.now_ms();
        f(&self.membership.lock(), now)
    }

    // ---- layout --------------------------------------------------------------------

    /// Changes the layout history under its lock; a change is stored and published.
    fn change_layout<T>(&self, f: impl FnOnce(&mut LayoutState) -> T) -> T {
        let mut state = self.layout.lock();
        let before = state.history.clone();
        let out = f(&mut state);
        if state.history != before {
            self.publish(&state.history);
        }
        out
    }

    fn publish(&self, history: &LayoutHistory) {
        match serde_json::to_vec(history) {
            Ok(bytes) => {
                if let Err(e) = self.store.put(Space::Meta, LAYOUT_KEY, &bytes) {
                    tracing::error!(error = %e, "storing the cluster layout failed");
                }
            }
            Err(e) => tracing::error!(error = %e, "encoding the cluster layout failed"),
        }
        let previous = self.view();
        match LayoutView::build(
            history.clone(),
            self.id.partition_bits,
            Some(&previous),
            &self.me,
            self.n,
        ) {
            Ok(view) => {
                if view.current().version != previous.current().version || view.read != previous.read {
                    tracing::info!(
                        version = view.current().version,
                        read = view.read,
                        active = view.history.versions().len(),
                        owners = view.current().owners.len(),
                        "layout changed"
                    );
                }
                *self.view.write() = Arc::new(view);
            }
            Err(e) => tracing::error!(error = %e, "cannot build the layout's rings; keeping the previous ones"),
        }
    }

    /// What gossip knows of each member, as layout changes are checked against.
    pub fn known(&self) -> BTreeMap<NodeId, Known> {
        let now = self.now_ms();
        let m = self.membership.lock();
        m.members(now)
            .map(|v| {
                (
                    v.info.id.clone(),
                    Known {
                        status: v.status,
                        tokens: v.info.tokens,
                    },
                )
            })
            .collect()
    }

    /// The members whose acks and syncs a layout change waits for: every live member
    /// (any may coordinate) and every owner of an active layout, alive or not, but those
    /// an operator declared gone ([`LayoutHistory::holders`]: a dead owner, or a member
    /// that left and is cut off, holds a change up until it is back or removed).
    /// (Tracking only the live ones let a layout retire while a member that left, cut off
    /// from the others, still took writes under it: found in a container run, replayed in
    /// the simulator's `leave_partitioned`.)
    pub fn tracked(&self) -> BTreeSet<NodeId> {
        let view = self.view();
        let now = self.now_ms();
        let m = self.membership.lock();
        let mut tracked: BTreeSet<NodeId> = m
            .members(now)
            .filter(|v| matches!(v.status, Status::Alive | Status::Suspect))
            .map(|v| v.info.id.clone())
            .collect();
        tracked.extend(view.history.holders());
        tracked
    }

    fn stamp(&self) -> Stamp {
        Stamp {
            at_ms: self.clock.wall_ms(),
            by: self.me.clone(),
        }
    }

    pub fn stage(&self, change: Change) -> Result<(), LayoutError> {
        let known = self.known();
        let stamp = self.stamp();
        self.change_layout(|s| s.history.stage(change, stamp, &known, self.n))
    }

    pub fn revert(&self) {
        let stamp = self.stamp();
        self.change_layout(|s| s.history.revert(stamp));
    }

    /// What committing the staged changes would make.
    pub fn proposal(&self) -> Result<Layout, LayoutError> {
        let known = self.known();
        self.layout.lock().history.proposal(&known, self.n)
    }

    /// What the staged changes would move.
    pub fn layout_plan(&self) -> Result<LayoutPlan, LayoutError> {
        let known = self.known();
        self.layout.lock().history.plan(&known, self.n, self.id.partition_bits)
    }

    /// An acceptor's promise for a proposed layout ([`LayoutHistory::promise`]).
    pub fn promise(&self, version: u64, digest: Digest) -> Result<(), LayoutError> {
        let now = self.now_ms();
        let mut state = self.layout.lock();
        let LayoutState { history, promise } = &mut *state;
        history.promise(promise, version, digest, now)
    }

    /// Installs a proposal whose promises are in.
    pub fn install(&self, next: Layout) -> Result<(), LayoutError> {
        self.change_layout(|s| s.history.install(next))
    }

    /// Client requests wait until this node has heard the layout from a peer since it
    /// started: a node back from a long outage may hold a layout the cluster has moved
    /// past (its old partitions dropped, new owners fetched without its writes), and
    /// would place requests by it.
    pub fn check_current(&self) -> Result<(), NotServing> {
        if self.heard.load(Ordering::Relaxed) {
            return Ok(());
        }
        let view = self.view();
        let alone = view
            .history
            .versions()
            .iter()
            .all(|l| l.owners.keys().all(|id| *id == self.me));
        if alone {
            return Ok(());
        }
        Err(NotServing(
            "this node has not heard the cluster's layout from a peer since it started; retry shortly or ask \
             another node"
                .into(),
        ))
    }

    /// Merges a peer's history into ours.
    pub fn merge_layout(&self, other: &LayoutHistory) {
        self.heard.store(true, Ordering::Relaxed);
        let merged = self.change_layout(|s| s.history.merge(other));
        for v in merged.conflicts {
            tracing::error!(
                version = v,
                "two different layouts were committed as one version; kept the one with the larger digest"
            );
        }
    }

    pub fn layout_history(&self) -> LayoutHistory {
        self.view().history.clone()
    }

    /// We use layout `version` for the writes we coordinate, once the writes placed
    /// under older layouts have finished; returns whether we acked.
    pub fn ack_layout(&self, version: u64) -> bool {
        let writes = self.writes.lock();
        if writes.range(..version).next().is_some() {
            return false;
        }
        self.change_layout(|s| s.history.ack(&self.me, version));
        true
    }

    /// We hold every partition we replicate in the active layouts up to `version`.
    pub fn mark_synced(&self, version: u64) {
        self.change_layout(|s| s.history.mark_synced(&self.me, version));
    }

    /// We read from the newest layout whose owners have synced (once the reads placed
    /// under older ones have finished), and retire the layouts no tracked member reads
    /// from any more.
    pub fn advance_reads(&self) {
        let tracked = self.tracked();
        let reads = self.reads.lock();
        let target = self.view().history.read_version();
        let quiet = reads.range(..target).next().is_none();
        self.change_layout(|s| {
            if quiet {
                s.history.ack_sync(&self.me);
            }
            s.history.retire(&tracked);
        });
    }

    /// A write's placement: counted in flight (under the current layout version) before
    /// the plan is made, until the returned guard drops.
    pub fn plan_write(&self, key: &str) -> (Plan, Placed) {
        // The view is read under the counts' lock (see `place`), and the plan is made
        // from that same view.
        let (view, placed) = place(&self.writes, || {
            let view = self.view();
            (view.current().version, view)
        });
        (self.plan_in(&view, key), placed)
    }

    /// A read's placement, counted in flight under the read version likewise.
    pub fn plan_read(&self, key: &str) -> (Plan, Placed) {
        let (view, placed) = place(&self.reads, || {
            let view = self.view();
            (view.read, view)
        });
        (self.plan_in(&view, key), placed)
    }

    /// A write placed under layout `version` reached us: from now on (and after a
    /// restart) we drop no partition until we know that layout. Stored before it
    /// counts, so call it before storing the write.
    pub fn saw_layout(&self, version: u64) -> Result<(), StorageError> {
        if version <= self.seen.load(Ordering::SeqCst) {
            return Ok(());
        }
        let _one_at_a_time = self.seen_lock.lock();
        if version <= self.seen.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.store.put(Space::Meta, SEEN_KEY, &version.to_be_bytes())?;
        self.seen.store(version, Ordering::SeqCst);
        Ok(())
    }

    /// Refuses (as unavailable) a replica request for `key` placed under layout `named`
    /// that this node must not serve ([`may_serve`]).
    pub fn check_serves(&self, key: &str, serving: Serving, named: u64) -> Result<(), NotServing> {
        let view = self.view();
        let current = view.current().version;
        if may_serve(serving, view.replicates(key), view.owner, named, current) {
            return Ok(());
        }
        Err(NotServing(format!(
            "{} is no {} of this key in any layout in use (it knows layout v{current}; the request was placed under \
             v{named}): the sender's layout is out of date",
            self.me,
            match serving {
                Serving::Replica => "replica",
                Serving::Fallback => "fallback",
            }
        )))
    }

    /// The newest layout version a write we received named.
    pub fn layout_seen(&self) -> u64 {
        self.seen.load(Ordering::SeqCst)
    }

    /// The newest layout version we know exists: our current one, or a newer one a
    /// write named. Copies we pass on (hints handed over, anti-entropy pushes, read
    /// repairs) carry it.
    pub fn newest_known(&self) -> u64 {
        self.view().current().version.max(self.layout_seen())
    }

    /// Whether this node may act on its layout: it has heard the layout from a peer
    /// since it started, or needs no one.
    pub fn heard(&self) -> bool {
        self.check_current().is_ok()
    }
}

fn same_members(a: &[&NodeId], b: &[&NodeId]) -> bool {
    a.len() == b.len() && a.iter().all(|id| b.contains(id))
}

#[cfg(test)]
mod tests {
    use dynakv_crdt::ConflictMode;
    use dynakv_ring::DetectorConfig;
    use dynakv_ring::layout::Change;

    use super::*;
    use crate::env::clock::ManualClock;
    use crate::env::storage::MemoryStore;

    fn node(name: &str, store: Arc<dyn Store>) -> Cluster {
        let me = MemberInfo {
            id: NodeId::new(name).unwrap(),
            addr: format!("{name}:1"),
            api: format!("{name}:2"),
            generation: 1,
            heartbeat: 0,
            tokens: 8,
            left: false,
            oldest_hint_ms: None,
        };
        let detector = DetectorConfig {
            suspect_after_ms: 3_000,
            dead_after_ms: 6_000,
            gossip_interval_ms: 1_000,
        };
        let history = load_layout(&*store).unwrap();
        let seen = load_seen(&*store).unwrap();
        let id = ClusterId {
            name: "c".into(),
            partition_bits: 4,
            n: 3,
            conflict: ConflictMode::Lww,
        };
        let membership = Membership::new(me, Vec::new(), detector, 0);
        Cluster::new(
            id,
            3,
            membership,
            history,
            seen,
            store,
            Arc::new(ManualClock::new(1_000)),
        )
        .unwrap()
    }

    #[test]
    fn a_node_serves_as_replica_only_what_it_replicates_and_as_fallback_only_if_it_owns_anything() {
        use Serving::*;
        // (serving, replicates, owner, named, current, served)
        let cases = [
            (Replica, true, true, 5, 5, true),
            (Replica, true, true, 3, 5, true),
            (Replica, false, true, 5, 5, false),
            (Replica, false, true, 4, 5, false),
            // Placed under a layout the node has not heard of: it may be a replica there.
            (Replica, false, false, 6, 5, true),
            (Fallback, false, true, 5, 5, true),
            (Fallback, true, true, 5, 5, true),
            // A node that owns nothing (it left, or never joined) is no fallback either.
            (Fallback, false, false, 5, 5, false),
            (Fallback, false, false, 6, 5, true),
            // A write that names no layout (from a member that knows none) is no newer.
            (Replica, false, true, 0, 5, false),
        ];
        for (serving, replicates, owner, named, current, served) in cases {
            assert_eq!(
                may_serve(serving, replicates, owner, named, current),
                served,
                "{serving:?} replicates={replicates} owner={owner} named={named} current={current}"
            );
        }
    }

    #[test]
    fn a_restarted_node_serves_clients_only_once_it_heard_the_layout_from_a_peer() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let a = node("a", store.clone());
        // Alone (no layout, or a layout of itself only) a node needs no one.
        assert!(a.check_current().is_ok());
        a.stage(Change::Join(NodeId::new("a").unwrap())).unwrap();
        a.install(a.proposal().unwrap()).unwrap();
        assert!(a.check_current().is_ok());
        // A layout with another owner, as gossip brings it.
        let mut h = a.layout_history();
        let mut b_view = h.clone();
        let b = NodeId::new("b").unwrap();
        let mut known = a.known();
        known.insert(
            b.clone(),
            Known {
                status: Status::Alive,
                tokens: 8,
            },
        );
        let stamp = Stamp {
            at_ms: 5,
            by: b.clone(),
        };
        b_view.stage(Change::Join(b), stamp, &known, 3).unwrap();
        b_view.commit(2, &known, 3).unwrap();
        h.merge(&b_view);
        a.merge_layout(&h);
        assert_eq!(a.view().current().version, 2);
        // The layout was stored: after a restart the node knows it, and holds clients
        // off until a peer has spoken.
        drop(a);
        let again = node("a", store);
        assert_eq!(again.view().current().version, 2);
        assert!(again.check_current().unwrap_err().0.contains("has not heard"));
        again.merge_layout(&LayoutHistory::new());
        assert!(again.check_current().is_ok());
    }

    #[test]
    fn a_layout_stored_with_bare_tracker_versions_still_loads() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let a = node("a", store.clone());
        a.stage(Change::Join(NodeId::new("a").unwrap())).unwrap();
        a.install(a.proposal().unwrap()).unwrap();
        a.ack_layout(1);
        let stored = store.get(Space::Meta, LAYOUT_KEY).unwrap().unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&stored).unwrap();
        assert_eq!(v["trackers"]["ack"]["a"]["version"], 1, "{v}");
        // As an older build wrote it.
        v["trackers"]["ack"]["a"] = serde_json::json!(1);
        store
            .put(Space::Meta, LAYOUT_KEY, &serde_json::to_vec(&v).unwrap())
            .unwrap();
        let loaded = load_layout(&*store).unwrap();
        assert_eq!(loaded.current().version, 1);
        assert_eq!(
            loaded.acked(&NodeId::new("a").unwrap()),
            0,
            "a bare version is a mark without digest"
        );
        store.put(Space::Meta, LAYOUT_KEY, b"{\"nonsense\": 1}").unwrap();
        assert!(matches!(load_layout(&*store), Err(StorageError::Corrupt { .. })));
    }

    #[test]
    fn the_newest_layout_a_write_named_only_grows_and_survives_a_restart() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let a = node("a", store.clone());
        assert_eq!(a.layout_seen(), 0);
        a.saw_layout(5).unwrap();
        a.saw_layout(3).unwrap();
        assert_eq!(a.layout_seen(), 5);
        assert_eq!(a.newest_known(), 5, "newer than the current layout (none yet)");
        drop(a);
        let again = node("a", store.clone());
        assert_eq!(again.layout_seen(), 5);
        store.put(Space::Meta, SEEN_KEY, b"bad").unwrap();
        assert!(matches!(load_seen(&*store), Err(StorageError::Corrupt { .. })));
    }

    /// Right after the first layout is committed, a node still reads from the layout
    /// before it, which has no owners: its writes (and reads) go to the first layout's
    /// replicas, instead of needing a quorum of an empty set (which failed every write
    /// such a node coordinated for a second or so after a cluster formed).
    #[test]
    fn the_empty_layout_before_the_first_is_no_replica_set() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let a = node("a", store);
        assert!(a.plan("k").primaries.is_empty(), "no layout, no replicas");
        a.stage(Change::Join(NodeId::new("a").unwrap())).unwrap();
        a.install(a.proposal().unwrap()).unwrap();
        let view = a.view();
        assert_eq!(
            (view.current().version, view.read),
            (1, 0),
            "still reading from version 0"
        );
        let plan = a.plan("k");
        let ids: Vec<String> = plan.primaries.iter().map(|r| r.id.to_string()).collect();
        assert_eq!(ids, ["a"]);
        assert!(plan.moving.is_empty(), "{:?}", plan.moving.len());
    }
}
