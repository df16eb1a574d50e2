//! The node: coordinates client requests over the key's replicas and serves its own
//! replica to peers.
//!
//! Reads ask every live replica in the preference list and answer once `r` have replied,
//! with the merge of what they returned. Writes go to every live replica and answer once
//! `w` have acknowledged; the rest keep going in the background until the request
//! timeout, as in Dynamo. Members known to be dead are skipped, so a request that cannot
//! meet its quorum fails at once instead of waiting for the timeout.
//!
//! Multi-value writes must be coordinated by a replica of the key, because minting the
//! new version's dot needs the actor's earlier dots for that key (see `dynakv_crdt::mv`).
//! A node that is not a replica forwards the write to the first live one.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dynakv_crdt::{CausalContext, ConflictMode, Context, Hlc, LwwRegister, MvRegister, Register};
use dynakv_http_api::wire::{
    self, CoordinateWrite, GossipRequest, GossipResponse, ReplicaRequest, ReplicaResponse,
};
use dynakv_http_api::{
    ApiError, GetOutcome, InternalService, Key, KvService, MemberJson, QuorumOp,
};
use dynakv_ring::{Event, Status};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use tokio::time::{Instant, timeout_at};
use tracing::{debug, error, info, warn};

use crate::cluster::{Cluster, Replica};
use crate::identity::Identity;
use crate::quorum::{Quorum, Verdict};
use crate::replica::ReplicaStore;
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
}

pub struct Node {
    identity: Identity,
    settings: Settings,
    replicas: ReplicaStore,
    cluster: Cluster,
    rpc: Rpc,
    hlc: Mutex<Hlc>,
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn storage_error(e: StorageError) -> ApiError {
    error!(error = %e, "storage failure");
    ApiError::Internal(format!("storage failure on this node: {e}"))
}

fn live(replicas: Vec<Replica>) -> Vec<Replica> {
    replicas
        .into_iter()
        .filter(|r| r.status != Status::Dead)
        .collect()
}

impl Node {
    pub fn new(
        identity: Identity,
        settings: Settings,
        replicas: ReplicaStore,
        cluster: Cluster,
        rpc: Rpc,
    ) -> Node {
        Node {
            identity,
            settings,
            replicas,
            cluster,
            rpc,
            hlc: Mutex::new(Hlc::new(MAX_CLOCK_DRIFT_MS)),
        }
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    pub fn rpc(&self) -> &Rpc {
        &self.rpc
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
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

    /// One replica's state for `key`: ours from disk, a peer's over the network.
    async fn fetch(
        &self,
        replica: &Replica,
        key: &str,
        deadline: Instant,
    ) -> Result<Option<Register>, String> {
        if replica.is_self {
            return self.replicas.get(key).map_err(|e| e.to_string());
        }
        let req = ReplicaRequest::Get {
            key: key.to_string(),
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        match self.rpc.replica(&replica.addr, &req, remaining).await {
            Ok(ReplicaResponse::State(reg)) => Ok(reg),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Quorum read: the merge of the first `r` answers.
    async fn read(
        &self,
        key: &Key,
        r: usize,
        deadline: Instant,
    ) -> Result<Option<Register>, ApiError> {
        let targets = live(self.cluster.replicas(key.as_str()));
        let mut quorum = Quorum::new(r, targets.len());
        let mut calls: FuturesUnordered<_> = targets
            .iter()
            .map(|t| async move { (t, self.fetch(t, key.as_str(), deadline).await) })
            .collect();
        let mut merged: Option<Register> = None;
        loop {
            match quorum.verdict() {
                Verdict::Met => return Ok(merged),
                Verdict::Failed => break,
                Verdict::Pending => {}
            }
            let Ok(Some((replica, answer))) = timeout_at(deadline, calls.next()).await else {
                break;
            };
            match answer {
                Ok(reg) => {
                    if let Some(reg) = reg {
                        self.observe(&reg);
                        match &mut merged {
                            Some(m) => m.merge(&reg),
                            None => merged = Some(reg),
                        }
                    }
                    quorum.record(true);
                }
                Err(e) => {
                    debug!(replica = %replica.id, error = %e, "replica read failed");
                    quorum.record(false);
                }
            }
        }
        Err(ApiError::Quorum {
            op: QuorumOp::Read,
            required: r,
            succeeded: quorum.succeeded(),
        })
    }

    // ---- writes ------------------------------------------------------------------

    /// Sends `register` to every live replica but us and waits until `w` acknowledged,
    /// counting our own copy if `local_ack`. Sends that are still running when the
    /// quorum is decided carry on in the background until the deadline.
    async fn replicate(
        &self,
        key: &Key,
        register: Register,
        targets: &[Replica],
        local_ack: bool,
        w: usize,
        deadline: Instant,
    ) -> Result<(), ApiError> {
        let remotes: Vec<&Replica> = targets
            .iter()
            .filter(|t| !t.is_self && t.status != Status::Dead)
            .collect();
        let mut quorum = Quorum::new(w, remotes.len() + usize::from(local_ack));
        if local_ack {
            quorum.record(true);
        }
        let body = Bytes::from(wire::encode(&ReplicaRequest::Merge {
            key: key.as_str().to_string(),
            register,
        }));
        let (tx, mut rx) = tokio::sync::mpsc::channel(remotes.len().max(1));
        for t in remotes {
            let (rpc, tx, body, addr, id) = (
                self.rpc.clone(),
                tx.clone(),
                body.clone(),
                t.addr.clone(),
                t.id.clone(),
            );
            tokio::spawn(async move {
                let remaining = deadline.saturating_duration_since(Instant::now());
                let ok = match rpc.replica_encoded(&addr, body, remaining).await {
                    Ok(ReplicaResponse::Merged) => true,
                    Ok(other) => {
                        warn!(replica = %id, answer = ?other, "unexpected answer to a merge");
                        false
                    }
                    Err(e) => {
                        debug!(replica = %id, error = %e, "replica write failed");
                        false
                    }
                };
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
        let (register, version) = self
            .replicas
            .update(key.as_str(), |current| {
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
                let version = mv.write(actor, &context, value);
                (Register::Mv(mv), version)
            })
            .map_err(storage_error)?;
        let targets = self.cluster.replicas(key.as_str());
        // Our copy counts towards W only if we are one of the key's replicas (a forwarded
        // write can land here while ring views differ for a moment).
        let local_ack = targets.iter().any(|t| t.is_self);
        self.replicate(key, register, &targets, local_ack, w, deadline)
            .await?;
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
        for target in live(self.cluster.replicas(key.as_str())) {
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
                    return Err(ApiError::Internal(format!(
                        "replica {} answered {other:?}",
                        target.id
                    )));
                }
                // The replica took the write and answered; pass its verdict on. Retrying
                // elsewhere could apply the write twice as two concurrent versions.
                Err(RpcError::Remote { error, .. }) => return Err(error),
                Err(e @ RpcError::Timeout { .. }) => {
                    debug!(replica = %target.id, error = %e, "forwarded write timed out");
                    break;
                }
                // Never reached it: safe to try the next one.
                Err(e @ RpcError::Transport { .. }) => {
                    debug!(replica = %target.id, error = %e, "cannot forward write; trying the next replica");
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
        let register = Register::Lww(LwwRegister::new(timestamp, self.identity.actor, value));
        let targets = self.cluster.replicas(key.as_str());
        let local_ack = targets.iter().any(|t| t.is_self);
        if local_ack {
            self.replicas
                .merge(key.as_str(), &register)
                .map_err(storage_error)?;
        }
        self.replicate(key, register, &targets, local_ack, w, deadline)
            .await?;
        Ok(Context::Lww(timestamp))
    }
}

/// Logs what gossip noticed.
pub fn log_events(events: &[Event]) {
    for e in events {
        match e {
            Event::Discovered { id, addr } => info!(member = %id, %addr, "discovered member"),
            Event::Restarted {
                id,
                generation,
                addr,
            } => {
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
            (ConflictMode::Mv, Some(Context::Lww(_)))
            | (ConflictMode::Lww, Some(Context::Mv(_))) => Err(ApiError::BadContext(format!(
                "the context comes from a different conflict mode; this cluster is in {} mode",
                self.settings.mode
            ))),
            (ConflictMode::Mv, context) => {
                let context = context.map(|c| match c {
                    Context::Mv(cc) => cc,
                    Context::Lww(_) => unreachable!("rejected above"),
                });
                if self
                    .cluster
                    .replicas(key.as_str())
                    .iter()
                    .any(|r| r.is_self)
                {
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
}

impl InternalService for Node {
    async fn replica(&self, req: ReplicaRequest) -> Result<ReplicaResponse, ApiError> {
        match req {
            ReplicaRequest::Get { key } => {
                let key = Key::new(key)?;
                Ok(ReplicaResponse::State(
                    self.replicas.get(key.as_str()).map_err(storage_error)?,
                ))
            }
            ReplicaRequest::Merge { key, register } => {
                let key = Key::new(key)?;
                self.observe(&register);
                self.replicas
                    .merge(key.as_str(), &register)
                    .map_err(storage_error)?;
                Ok(ReplicaResponse::Merged)
            }
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
                let budget =
                    Duration::from_millis(cw.timeout_ms).min(self.settings.request_timeout);
                let context = self
                    .coordinate_mv(&key, cw.value, context, cw.w, Instant::now() + budget)
                    .await?;
                Ok(ReplicaResponse::Written { context })
            }
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

/// Shared handle used by the server and the gossip loop.
pub type SharedNode = Arc<Node>;
