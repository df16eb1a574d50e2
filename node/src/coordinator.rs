//! The node: coordinates client requests over the key's replicas and serves its own
//! replica to peers.
//!
//! Reads ask the key's live replicas (plus live fallbacks standing in for dead ones, under
//! sloppy quorum) and answer once `r` replied, with the merge of what they returned. The
//! read then keeps listening, up to the request timeout, for the other replicas, and
//! sends the merged version to every replica that answered with something older or
//! nothing (read repair), after the client has its answer.
//!
//! Writes go to each of the N replicas and answer once `w` acknowledged. When a replica
//! is dead or fails to answer, the write goes instead to the next live node along the
//! ring, which keeps it as a hint for that replica and counts towards `w` (sloppy quorum,
//! hinted handoff; `--sloppy-quorum false` turns this off). Sends still running when the
//! quorum is decided carry on in the background until the request timeout.
//!
//! Multi-value writes must be coordinated by a replica of the key, because minting the
//! new version's dot needs the actor's earlier dots for that key (see `dynakv_crdt::mv`).
//! A node that is not a replica forwards the write to the first live one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use dynakv_crdt::{CausalContext, ConflictMode, Context, Hlc, LwwRegister, MvRegister, Register};
use dynakv_http_api::wire::{
    BatchAnswer, BatchItem, CoordinateWrite, GossipRequest, GossipResponse, ReplicaRequest, ReplicaResponse, WireError,
};
use dynakv_http_api::{ApiError, GetOutcome, InternalService, Key, KvService, MemberJson, QuorumOp};
use dynakv_ring::{Event, NodeId};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};
use tracing::{debug, error, info, warn};

use crate::antientropy::AntiEntropy;
use crate::cluster::{Cluster, Plan, Replica};
use crate::identity::{Ceilings, ClockCeiling, Identity, MintFloor};
use crate::quorum::{Quorum, Verdict};
use crate::replica::{ReplicaStore, wall_ms};
use crate::rpc::{Rpc, RpcError};
use crate::storage::StorageError;

/// Remote timestamps further ahead of our wall clock than this are not adopted by the HLC.
const MAX_CLOCK_DRIFT_MS: u64 = 60_000;
/// Share of the remaining deadline given to a node we forward a write to, so its own
/// answer (success or quorum failure) arrives before we give up on it.
const FORWARD_DEADLINE_SHARE: f64 = 0.9;

/// Request-level settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub n: usize,
    pub r: usize,
    pub w: usize,
    pub mode: ConflictMode,
    pub request_timeout: Duration,
    pub max_value_bytes: usize,
    /// Longest pause allowed while a client sends a request body.
    pub read_timeout: Duration,
    /// Most siblings a blind write may leave on the coordinating replica (mv mode).
    pub max_siblings: usize,
    /// Let live fallbacks stand in for dead or silent replicas.
    pub sloppy_quorum: bool,
}

/// Counters shown on `/admin/antientropy`.
#[derive(Debug, Default)]
pub struct Stats {
    pub read_repairs: AtomicU64,
    pub hinted_writes: AtomicU64,
    pub hints_delivered: AtomicU64,
    pub tombstones_collected: AtomicU64,
}

pub struct Node {
    /// Ourselves, for work that outlives a request (read repair, background sends).
    this: Weak<Node>,
    identity: Identity,
    settings: Settings,
    replicas: ReplicaStore,
    cluster: Cluster,
    rpc: Rpc,
    hlc: Mutex<Hlc>,
    /// Where dot counters start on keys this node holds nothing for.
    mint_floor: MintFloor,
    /// Recorded bound on the timestamps `hlc` issues, so a restart resumes past them.
    clock_ceiling: ClockCeiling,
    pub stats: Stats,
    pub antientropy: AntiEntropy,
}

/// Replica reads still outstanding: answered by the read, then by its read repair.
type Pending = FuturesUnordered<futures::future::BoxFuture<'static, (Replica, Result<Option<Register>, String>)>>;

fn storage_error(e: StorageError) -> ApiError {
    error!(error = %e, "storage failure");
    ApiError::Internal(format!("storage failure on this node: {e}"))
}

/// Where a read goes: the live replicas and, under sloppy quorum, live fallbacks to make
/// up for the dead ones.
fn read_targets(plan: Plan, sloppy: bool) -> Vec<Replica> {
    let dead = plan.primaries.iter().filter(|r| r.is_dead()).count();
    let mut targets: Vec<Replica> = plan.primaries.into_iter().filter(|r| !r.is_dead()).collect();
    if sloppy {
        targets.extend(plan.fallbacks.into_iter().take(dead));
    }
    targets
}

impl Node {
    pub fn new(
        identity: Identity,
        settings: Settings,
        replicas: ReplicaStore,
        cluster: Cluster,
        rpc: Rpc,
        antientropy: AntiEntropy,
        ceilings: Ceilings,
    ) -> Arc<Node> {
        let Ceilings {
            mint: mint_floor,
            clock: clock_ceiling,
        } = ceilings;
        let mut hlc = Hlc::new(MAX_CLOCK_DRIFT_MS);
        hlc.resume_after(clock_ceiling.recorded_ms());
        Arc::new_cyclic(|this| Node {
            this: this.clone(),
            identity,
            settings,
            replicas,
            cluster,
            rpc,
            mint_floor,
            hlc: Mutex::new(hlc),
            clock_ceiling,
            stats: Stats::default(),
            antientropy,
        })
    }

    /// At shutdown, after serving stopped: records exactly how far this node's clock got.
    pub fn settle_clock(&self) -> Result<(), StorageError> {
        // Under the clock's lock: no timestamp can be issued past what is recorded.
        let hlc = self.hlc.lock();
        self.clock_ceiling.settle(hlc.last().physical_ms())
    }

    pub fn id(&self) -> &NodeId {
        &self.identity.id
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    pub fn rpc(&self) -> &Rpc {
        &self.rpc
    }

    pub fn replicas(&self) -> &ReplicaStore {
        &self.replicas
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn arc(&self) -> Arc<Node> {
        self.this.upgrade().expect("a node is only used while it is alive")
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.settings.request_timeout
    }

    fn observe(&self, reg: &Register) {
        if let Register::Lww(l) = reg
            && let Err(drift) = self.hlc.lock().observe(l.timestamp, wall_ms())
        {
            warn!(%drift, "not adopting a timestamp from the future");
        }
    }

    // ---- reads -------------------------------------------------------------------

    /// A peer's state for `key` (a fallback answers with the hints it holds for it).
    async fn fetch(&self, replica: &Replica, key: &str, deadline: Instant) -> Result<Option<Register>, String> {
        let req = ReplicaRequest::Get { key: key.to_string() };
        let remaining = deadline.saturating_duration_since(Instant::now());
        match self.rpc.replica(&replica.addr, &req, remaining).await {
            Ok(ReplicaResponse::State(reg)) => Ok(reg),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Quorum read: the merge of the first `r` answers. Our own replica answers at once;
    /// peers are asked concurrently. Read repair follows in the background.
    async fn read(&self, key: &Key, r: usize, deadline: Instant) -> Result<Option<Register>, ApiError> {
        let plan = self.cluster.plan(key.as_str());
        let owners = Arc::new(plan.primary_ids());
        let targets = read_targets(plan, self.settings.sloppy_quorum);
        let mut quorum = Quorum::new(r, targets.len());
        let mut pending: Pending = FuturesUnordered::new();
        let mut answers: Vec<(Replica, Option<Register>)> = Vec::new();
        let mut merged: Option<Register> = None;
        let mut absorb = |replica: Replica, answer: Result<Option<Register>, String>, quorum: &mut Quorum| match answer
        {
            Ok(reg) => {
                if let Some(reg) = &reg {
                    self.observe(reg);
                    match &mut merged {
                        Some(m) => m.merge(reg),
                        None => merged = Some(reg.clone()),
                    }
                }
                answers.push((replica, reg));
                quorum.record(true);
            }
            Err(e) => {
                debug!(replica = %replica.id, error = %e, "replica read failed");
                quorum.record(false);
            }
        };
        for t in targets {
            if t.is_self {
                let answer = self
                    .replicas
                    .get_with_hints(key.as_str(), &owners)
                    .map_err(|e| e.to_string());
                absorb(t, answer, &mut quorum);
            } else {
                let (node, key) = (self.arc(), key.as_str().to_string());
                pending.push(Box::pin(async move {
                    let answer = node.fetch(&t, &key, deadline).await;
                    (t, answer)
                }));
            }
        }
        loop {
            match quorum.verdict() {
                Verdict::Met => break,
                Verdict::Failed => return Err(self.read_quorum_error(&quorum)),
                Verdict::Pending => {}
            }
            let Ok(Some((replica, answer))) = timeout_at(deadline, pending.next()).await else {
                return Err(self.read_quorum_error(&quorum));
            };
            absorb(replica, answer, &mut quorum);
        }
        tokio::spawn(
            self.arc()
                .read_repair(key.as_str().to_string(), owners, answers, pending, deadline),
        );
        Ok(merged)
    }

    fn read_quorum_error(&self, quorum: &Quorum) -> ApiError {
        ApiError::Quorum {
            op: QuorumOp::Read,
            required: quorum.required(),
            succeeded: quorum.succeeded(),
        }
    }

    /// Waits for the replicas that had not answered yet (up to the deadline), then sends
    /// the merge of all answers to each replica whose answer was older or missing.
    async fn read_repair(
        self: Arc<Self>,
        key: String,
        owners: Arc<Vec<NodeId>>,
        mut answers: Vec<(Replica, Option<Register>)>,
        mut pending: Pending,
        deadline: Instant,
    ) {
        while let Ok(Some((replica, answer))) = timeout_at(deadline, pending.next()).await {
            if let Ok(reg) = answer {
                answers.push((replica, reg));
            }
        }
        let Some(merged) = answers.iter().filter_map(|(_, r)| r.clone()).reduce(|mut a, b| {
            a.merge(&b);
            a
        }) else {
            return;
        };
        for (replica, answer) in answers {
            // Fallbacks hold hints, not replicas: handoff brings their owners up to date.
            // A replica holding nothing needs no tombstone (see `tombstones`).
            let needless = match &answer {
                None => merged.is_tombstone(),
                Some(a) => *a == merged,
            };
            if needless || !owners.contains(&replica.id) {
                continue;
            }
            self.stats.read_repairs.fetch_add(1, Ordering::Relaxed);
            debug!(key, replica = %replica.id, "read repair");
            if replica.is_self {
                if let Err(e) = self.replicas.merge(&key, &merged) {
                    warn!(key, error = %e, "read repair of our own replica failed");
                }
                continue;
            }
            let req = ReplicaRequest::Merge {
                key: key.clone(),
                register: merged.clone(),
            };
            if let Err(e) = self
                .rpc
                .replica(&replica.addr, &req, self.settings.request_timeout)
                .await
            {
                debug!(key, replica = %replica.id, error = %e, "read repair failed");
            }
        }
    }

    // ---- writes ------------------------------------------------------------------

    /// Delivers `register` to one replica slot: the replica itself if it is alive and
    /// answers, else (sloppy quorum) the next free fallback, as a hint for the replica.
    async fn deliver(
        self: Arc<Self>,
        owner: Replica,
        key: String,
        register: Register,
        fallbacks: Arc<Mutex<VecDeque<Replica>>>,
        deadline: Instant,
    ) -> bool {
        let sloppy = self.settings.sloppy_quorum;
        if !owner.is_dead() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            // Leave time for a fallback if this replica turns out to be unresponsive.
            let attempt = if sloppy { remaining / 2 } else { remaining };
            let req = ReplicaRequest::Merge {
                key: key.clone(),
                register: register.clone(),
            };
            match self.rpc.replica(&owner.addr, &req, attempt).await {
                Ok(ReplicaResponse::Merged) => return true,
                Ok(other) => {
                    warn!(replica = %owner.id, answer = ?other, "unexpected answer to a merge")
                }
                Err(e) => debug!(replica = %owner.id, error = %e, "replica write failed"),
            }
        }
        if !sloppy {
            return false;
        }
        loop {
            let Some(fallback) = fallbacks.lock().pop_front() else {
                return false;
            };
            if Instant::now() >= deadline {
                return false;
            }
            self.stats.hinted_writes.fetch_add(1, Ordering::Relaxed);
            if fallback.is_self {
                match self.replicas.store_hint(&owner.id, &key, &register) {
                    Ok(()) => return true,
                    Err(e) => {
                        warn!(error = %e, "storing a hint failed");
                        continue;
                    }
                }
            }
            let req = ReplicaRequest::MergeHint {
                key: key.clone(),
                register: register.clone(),
                owner: owner.id.clone(),
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.rpc.replica(&fallback.addr, &req, remaining).await {
                Ok(ReplicaResponse::Merged) => return true,
                Ok(other) => {
                    warn!(fallback = %fallback.id, answer = ?other, "unexpected answer to a hint")
                }
                Err(e) => debug!(fallback = %fallback.id, error = %e, "hinted write failed"),
            }
        }
    }

    /// Sends `register` to every replica slot but ours and waits until `w` acknowledged,
    /// counting our own copy if `local_ack`.
    async fn replicate(
        &self,
        key: &Key,
        register: Register,
        plan: Plan,
        local_ack: bool,
        w: usize,
        deadline: Instant,
    ) -> Result<(), ApiError> {
        let others: Vec<Replica> = plan.primaries.into_iter().filter(|r| !r.is_self).collect();
        let mut quorum = Quorum::new(w, others.len() + usize::from(local_ack));
        if local_ack {
            quorum.record(true);
        }
        let fallbacks = Arc::new(Mutex::new(VecDeque::from(plan.fallbacks)));
        let (tx, mut rx) = mpsc::channel(others.len().max(1));
        for owner in others {
            let tx = tx.clone();
            let delivery = self.arc().deliver(
                owner,
                key.as_str().to_string(),
                register.clone(),
                fallbacks.clone(),
                deadline,
            );
            tokio::spawn(async move {
                let ok = delivery.await;
                // The coordinator may have answered already; nobody listening is fine.
                let _ = tx.send(ok).await;
            });
        }
        drop(tx);
        loop {
            match quorum.verdict() {
                Verdict::Met => return Ok(()),
                Verdict::Failed => break,
                Verdict::Pending => {}
            }
            match timeout_at(deadline, rx.recv()).await {
                Ok(Some(ok)) => {
                    quorum.record(ok);
                }
                Ok(None) | Err(_) => break,
            }
        }
        Err(ApiError::Quorum {
            op: QuorumOp::Write,
            required: w,
            succeeded: quorum.succeeded(),
        })
    }

    /// A multi-value write coordinated here: mint the dot on our copy, then replicate.
    async fn coordinate_mv(
        &self,
        key: &Key,
        value: Option<Bytes>,
        context: Option<CausalContext>,
        w: usize,
        deadline: Instant,
    ) -> Result<Context, ApiError> {
        let context = match context {
            Some(c) => c,
            // A delete without context removes what a read quorum has seen, as Riak's
            // delete does; a put without context is a new concurrent version.
            None if value.is_none() => match self.read(key, self.settings.r, deadline).await? {
                Some(reg) => match reg.context() {
                    Context::Mv(c) => c,
                    Context::Lww(_) => CausalContext::new(),
                },
                None => CausalContext::new(),
            },
            None => CausalContext::new(),
        };
        let actor = self.identity.actor;
        let floor = self.mint_floor.reserve().map_err(storage_error)?;
        let limit = self.settings.max_siblings;
        let (register, version) = self
            .replicas
            .update(key.as_str(), |current| {
                // A write that adds a sibling (one with a value) must leave at most
                // `limit`: refuse it, storing nothing, rather than let blind writes grow
                // the key without bound (Riak's max_siblings).
                if let Some(Register::Mv(m)) = &current
                    && value.is_some()
                {
                    let kept = m.siblings().iter().filter(|s| !context.covers(s.dot)).count();
                    if kept >= limit {
                        return (current.expect("matched above"), Err(kept));
                    }
                }
                let mut mv = match current {
                    Some(Register::Mv(m)) => m,
                    Some(Register::Lww(_)) => {
                        warn!(
                            key = key.as_str(),
                            "key holds an lww value but the cluster is in mv mode; overwriting"
                        );
                        MvRegister::new()
                    }
                    None => MvRegister::new(),
                };
                // No dot of ours here (a new key, or one whose history was collected):
                // start past every counter this node ever minted.
                mv.start_after(actor, floor);
                let version = mv.write(actor, &context, value);
                (Register::Mv(mv), Ok(version))
            })
            .map_err(storage_error)?;
        let version = version.map_err(|count| ApiError::TooManySiblings { count, limit })?;
        if let Register::Mv(m) = &register {
            self.mint_floor.minted(m.context().max_counter(actor));
        }
        let plan = self.cluster.plan(key.as_str());
        // Our copy counts towards W only if we are one of the key's replicas (a forwarded
        // write can land here while ring views differ for a moment).
        let local_ack = plan.includes_self();
        self.replicate(key, register, plan, local_ack, w, deadline).await?;
        Ok(Context::Mv(version))
    }

    /// A multi-value write received by a node that is not a replica: hand it to the first
    /// live replica that answers.
    async fn forward_mv(
        &self,
        key: &Key,
        value: Option<Bytes>,
        context: Option<CausalContext>,
        w: usize,
        deadline: Instant,
    ) -> Result<Context, ApiError> {
        let live = self.cluster.replicas(key.as_str()).into_iter().filter(|r| !r.is_dead());
        for target in live {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let req = ReplicaRequest::Coordinate(CoordinateWrite {
                key: key.as_str().to_string(),
                value: value.clone(),
                context: context.clone().map(Context::Mv),
                w,
                timeout_ms: (remaining.as_millis() as f64 * FORWARD_DEADLINE_SHARE) as u64,
            });
            match self.rpc.replica(&target.addr, &req, remaining).await {
                Ok(ReplicaResponse::Written { context }) => return Ok(context),
                Ok(other) => {
                    return Err(ApiError::Internal(format!("replica {} answered {other:?}", target.id)));
                }
                // The replica took the write and answered; pass its verdict on. Retrying
                // elsewhere could apply the write twice as two concurrent versions.
                Err(RpcError::Remote { error, .. }) => return Err(error),
                // Never reached it: safe to try the next one.
                Err(e @ RpcError::Connect { .. }) => {
                    debug!(replica = %target.id, error = %e, "cannot forward write; trying the next replica");
                }
                // It may have taken the write: do not apply it a second time elsewhere.
                Err(e @ (RpcError::Timeout { .. } | RpcError::Transport { .. })) => {
                    debug!(replica = %target.id, error = %e, "forwarded write's outcome unknown");
                    break;
                }
            }
        }
        Err(ApiError::Quorum {
            op: QuorumOp::Write,
            required: w,
            succeeded: 0,
        })
    }

    /// A last-writer-wins write: any node may coordinate it.
    async fn coordinate_lww(
        &self,
        key: &Key,
        value: Option<Bytes>,
        after: Option<dynakv_crdt::Timestamp>,
        w: usize,
        deadline: Instant,
    ) -> Result<Context, ApiError> {
        let timestamp = {
            let mut hlc = self.hlc.lock();
            let now = hlc.now(wall_ms());
            match after {
                // The client read a version stamped `t`; order this write after it even
                // if our clock is behind the clock that stamped it.
                Some(t) if t >= now => {
                    let ts = t.successor();
                    let _ = hlc.observe(ts, wall_ms());
                    ts
                }
                _ => now,
            }
        };
        self.clock_ceiling
            .cover(timestamp.physical_ms())
            .map_err(storage_error)?;
        let register = Register::Lww(LwwRegister::new(timestamp, self.identity.actor, value));
        let plan = self.cluster.plan(key.as_str());
        let local_ack = plan.includes_self();
        if local_ack {
            self.replicas.merge(key.as_str(), &register).map_err(storage_error)?;
        }
        self.replicate(key, register, plan, local_ack, w, deadline).await?;
        Ok(Context::Lww(timestamp))
    }
}

/// Logs what gossip noticed.
pub fn log_events(events: &[Event]) {
    for e in events {
        match e {
            Event::Discovered { id, addr } => info!(member = %id, %addr, "discovered member"),
            Event::Restarted { id, generation, addr } => {
                info!(member = %id, generation, %addr, "member restarted")
            }
            Event::StatusChanged { id, from, to } => {
                info!(member = %id, from = from.as_str(), to = to.as_str(), "member status changed")
            }
            Event::IdentityConflict { remote_generation } => error!(
                remote_generation,
                "another process gossips this node's id with a newer generation: two nodes share an id?"
            ),
        }
    }
}

impl KvService for Node {
    fn n(&self) -> usize {
        self.settings.n
    }

    fn max_value_bytes(&self) -> usize {
        self.settings.max_value_bytes
    }

    fn read_timeout(&self) -> Duration {
        self.settings.read_timeout
    }

    fn max_siblings(&self) -> usize {
        self.settings.max_siblings
    }

    fn node_id(&self) -> &str {
        self.identity.id.as_str()
    }

    async fn get(&self, key: Key, r: Option<usize>) -> Result<GetOutcome, ApiError> {
        let r = r.unwrap_or(self.settings.r);
        Ok(match self.read(&key, r, self.deadline()).await? {
            Some(reg) if !reg.is_tombstone() => GetOutcome::Found {
                values: reg.values(),
                context: reg.context(),
            },
            Some(tombstone) => GetOutcome::NotFound {
                context: Some(tombstone.context()),
            },
            None => GetOutcome::NotFound { context: None },
        })
    }

    async fn write(
        &self,
        key: Key,
        value: Option<Bytes>,
        context: Option<Context>,
        w: Option<usize>,
    ) -> Result<Context, ApiError> {
        let w = w.unwrap_or(self.settings.w);
        let deadline = self.deadline();
        match (self.settings.mode, context) {
            (ConflictMode::Mv, Some(Context::Lww(_))) | (ConflictMode::Lww, Some(Context::Mv(_))) => {
                Err(ApiError::BadContext(format!(
                    "the context comes from a different conflict mode; this cluster is in {} mode",
                    self.settings.mode
                )))
            }
            (ConflictMode::Mv, context) => {
                let context = context.map(|c| match c {
                    Context::Mv(cc) => cc,
                    Context::Lww(_) => unreachable!("rejected above"),
                });
                if self.cluster.replicas(key.as_str()).iter().any(|r| r.is_self) {
                    self.coordinate_mv(&key, value, context, w, deadline).await
                } else {
                    self.forward_mv(&key, value, context, w, deadline).await
                }
            }
            (ConflictMode::Lww, context) => {
                let after = context.map(|c| match c {
                    Context::Lww(t) => t,
                    Context::Mv(_) => unreachable!("rejected above"),
                });
                // A context is a timestamp this cluster handed out: one far in the future
                // is forged or from a broken clock, and would win over every later write.
                if let Some(t) = after
                    && t.physical_ms() > wall_ms().saturating_add(MAX_CLOCK_DRIFT_MS)
                {
                    return Err(ApiError::BadContext(format!(
                        "the context's timestamp is more than {} s ahead of this node's clock",
                        MAX_CLOCK_DRIFT_MS / 1000
                    )));
                }
                self.coordinate_lww(&key, value, after, w, deadline).await
            }
        }
    }

    fn members(&self) -> Vec<MemberJson> {
        self.cluster.with_membership(|m, now| {
            m.members(now)
                .map(|v| MemberJson {
                    id: v.info.id.to_string(),
                    addr: v.info.addr.clone(),
                    status: v.status.as_str(),
                    generation: v.info.generation,
                    heartbeat: v.info.heartbeat,
                    silent_ms: v.silent_ms,
                    tokens: v.info.tokens,
                })
                .collect()
        })
    }

    fn preference_list(&self, key: &Key) -> (u32, Vec<String>) {
        let ring = self.cluster.ring();
        let partition = ring.partition_of_key(key.as_bytes());
        let nodes = ring
            .partition_preference(partition, self.settings.n)
            .into_iter()
            .map(|id| id.to_string())
            .collect();
        (partition.0, nodes)
    }

    fn local_replica(&self, key: &Key) -> Result<Option<Register>, ApiError> {
        self.replicas.get(key.as_str()).map_err(storage_error)
    }

    fn antientropy_status(&self) -> serde_json::Value {
        crate::antientropy::status(self)
    }
}

impl InternalService for Node {
    async fn replica(&self, req: ReplicaRequest) -> Result<ReplicaResponse, ApiError> {
        match req {
            ReplicaRequest::Batch(items) => {
                // The batch's merges go to storage as one write; the rest one by one.
                let mut answers: Vec<Option<Result<BatchAnswer, ApiError>>> = Vec::with_capacity(items.len());
                let mut merges = Vec::new();
                let mut merge_slots = Vec::new();
                for item in items {
                    match item {
                        BatchItem::Merge { key, register } => match Key::new(key) {
                            Ok(key) => {
                                self.observe(&register);
                                merges.push((key.into_string(), register));
                                merge_slots.push(answers.len());
                                answers.push(None);
                            }
                            Err(e) => answers.push(Some(Err(e))),
                        },
                        other => {
                            let answer = match self.handle(other.into()).await {
                                Ok(ReplicaResponse::State(s)) => Ok(BatchAnswer::State(s)),
                                Ok(ReplicaResponse::Merged) => Ok(BatchAnswer::Merged),
                                Ok(_) => Err(ApiError::Internal("unexpected answer to a batch item".into())),
                                Err(e) => Err(e),
                            };
                            answers.push(Some(answer));
                        }
                    }
                }
                if !merges.is_empty() {
                    let merged = self
                        .replicas
                        .merge_many(merges)
                        .map(|()| BatchAnswer::Merged)
                        .map_err(storage_error);
                    for slot in merge_slots {
                        answers[slot] = Some(merged.clone());
                    }
                }
                Ok(ReplicaResponse::Batch(
                    answers
                        .into_iter()
                        .map(|a| a.expect("every slot answered").map_err(|e| WireError::from(&e)))
                        .collect(),
                ))
            }
            other => self.handle(other).await,
        }
    }

    fn gossip(&self, req: GossipRequest) -> Result<GossipResponse, ApiError> {
        let ours = self.cluster.id();
        if req.cluster != *ours {
            return Err(ApiError::ClusterMismatch(format!(
                "gossip refused: peer is in cluster {:?} but this node is in {:?}",
                req.cluster, ours
            )));
        }
        log_events(&self.cluster.merge(&req.entries));
        Ok(GossipResponse {
            entries: self.cluster.gossip_table(),
        })
    }
}

impl Node {
    /// One replica request (not a batch).
    async fn handle(&self, req: ReplicaRequest) -> Result<ReplicaResponse, ApiError> {
        match req {
            ReplicaRequest::Batch(_) => Err(ApiError::BadRequest("batches do not nest".into())),
            ReplicaRequest::Get { key } => {
                let key = Key::new(key)?;
                // Only a node holding hints needs to know whose hints to look at.
                let owners = if self.replicas.has_hints() {
                    self.cluster.plan(key.as_str()).primary_ids()
                } else {
                    Vec::new()
                };
                let state = self
                    .replicas
                    .get_with_hints(key.as_str(), &owners)
                    .map_err(storage_error)?;
                Ok(ReplicaResponse::State(state))
            }
            ReplicaRequest::Merge { key, register } => {
                let key = Key::new(key)?;
                self.observe(&register);
                self.replicas.merge(key.as_str(), &register).map_err(storage_error)?;
                Ok(ReplicaResponse::Merged)
            }
            ReplicaRequest::MergeHint { key, register, owner } => {
                let key = Key::new(key)?;
                self.observe(&register);
                if owner == self.identity.id {
                    // Never hold a hint for ourselves: it is simply a write.
                    self.replicas.merge(key.as_str(), &register).map_err(storage_error)?;
                } else {
                    self.replicas
                        .store_hint(&owner, key.as_str(), &register)
                        .map_err(storage_error)?;
                }
                Ok(ReplicaResponse::Merged)
            }
            ReplicaRequest::MergeBatch { items } => {
                for (key, register) in &items {
                    Key::new(key.as_str())?;
                    self.observe(register);
                }
                self.replicas.merge_many(items).map_err(storage_error)?;
                Ok(ReplicaResponse::Merged)
            }
            ReplicaRequest::GetBatch { keys } => {
                let mut states = Vec::with_capacity(keys.len());
                for key in keys {
                    let key = Key::new(key)?;
                    states.push(self.replicas.get(key.as_str()).map_err(storage_error)?);
                }
                Ok(ReplicaResponse::States(states))
            }
            ReplicaRequest::Digests { keys } => {
                let mut digests = Vec::with_capacity(keys.len());
                for key in keys {
                    let key = Key::new(key)?;
                    digests.push(self.replicas.digest(key.as_str()).map_err(storage_error)?);
                }
                Ok(ReplicaResponse::Digests(digests))
            }
            ReplicaRequest::Compare { from, compare } => Ok(ReplicaResponse::Compared(crate::antientropy::answer(
                self, &from, &compare,
            ))),
            ReplicaRequest::Coordinate(cw) => {
                let key = Key::new(cw.key)?;
                if self.settings.mode != ConflictMode::Mv {
                    return Err(ApiError::BadRequest(
                        "forwarded coordination is for mv mode only".into(),
                    ));
                }
                if cw.w == 0 || cw.w > self.settings.n {
                    return Err(ApiError::BadParameter(format!(
                        "w must be between 1 and n ({})",
                        self.settings.n
                    )));
                }
                if cw
                    .value
                    .as_ref()
                    .is_some_and(|v| v.len() > self.settings.max_value_bytes)
                {
                    return Err(ApiError::ValueTooLarge {
                        limit: self.settings.max_value_bytes,
                    });
                }
                let context = match cw.context {
                    None => None,
                    Some(Context::Mv(cc)) => Some(cc),
                    Some(Context::Lww(_)) => {
                        return Err(ApiError::BadContext("an lww context in mv mode".into()));
                    }
                };
                let budget = Duration::from_millis(cw.timeout_ms).min(self.settings.request_timeout);
                let context = self
                    .coordinate_mv(&key, cw.value, context, cw.w, Instant::now() + budget)
                    .await?;
                Ok(ReplicaResponse::Written { context })
            }
        }
    }
}
