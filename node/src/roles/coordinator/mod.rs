//! The client coordinator: quorum reads (with read repair) and writes (with sloppy
//! quorum) over a key's replicas.
//!
//! - [`read`]: [`read::ReadRound`], where a read goes and how its answers count.
//! - [`write`]: [`write::WriteRound`], which node takes each replica's copy.
//! - [`forward`]: when a forwarded write may be tried at another replica.
//! - [`fanout`]: the one async loop that drives either round.
//! - [`quorum`]: counting successes against a quorum.
//!
//! Reads ask `r` of the key's replicas (this node first when it holds the key) and the
//! others only if one fails or no quorum came within `read_speculate` (all at once when
//! that is zero). They answer once `r` answers count, with the merge of what came back;
//! the read then keeps listening, up to the request timeout, and sends the merged
//! version to every replica that answered with something older or nothing (read
//! repair), after the client has its answer.
//!
//! Writes go to each of the N replicas and answer once `w` acknowledged. Sends still
//! running when the quorum is decided carry on in the background until the request
//! timeout.
//!
//! Multi-value writes must be coordinated by a replica of the key, because minting the
//! new version's dot needs the actor's earlier dots for that key (see `dynakv_crdt::mv`).
//! A node that is not a replica forwards the write to the first live one.
//!
//! Why this file is long: the async side of both rounds (placement, forwarding, read
//! repair, hints) lives here around the pure rounds in `read.rs` and `write.rs`.

pub mod fanout;
pub mod forward;
pub mod quorum;
pub mod read;
pub mod write;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dynakv_crdt::{CausalContext, ConflictMode, Context, LwwRegister, MvRegister, Register};
use dynakv_http_api::{ApiError, GetOutcome, Key, KvOp, KvService, NamespaceName, Observed, QuorumOp, QuorumParams};
use dynakv_ring::NodeId;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::local::{Local, MAX_CLOCK_DRIFT_MS};
use crate::roles::edge::storage_error;
use crate::roles::namespace::{self, Scope};
use crate::state::cluster::{Placed, Plan};
use crate::state::identity::MintFloor;
use crate::transport::message;
use fanout::{Answered, FanOut};
use quorum::Verdict;
use read::{Ask, ReadRound};
use write::{Delivery, WriteRound};

/// Share of the remaining deadline given to a node we forward a write to, so its own
/// answer (success or quorum failure) arrives before we give up on it.
const FORWARD_DEADLINE_SHARE: f64 = 0.9;

/// What the coordinator counts (shown on `/admin/antientropy`).
#[derive(Debug, Default)]
pub struct Stats {
    pub read_repairs: AtomicU64,
    pub hinted_writes: AtomicU64,
}

/// A multi-value write: a new value (`None`: a delete) replacing what `context` covers,
/// needing `w` acknowledgements by `deadline`.
struct MvWrite<'a> {
    /// The key with its namespace (`dynakv_ring::item`).
    item: &'a str,
    value: Option<Bytes>,
    context: Option<CausalContext>,
    /// `w` and `pw`.
    quorum: (usize, usize),
    /// The namespace's default `r` and `pr`: a delete without a context reads first.
    read: (usize, usize),
    deadline: Instant,
}

pub struct Coordinator {
    local: Arc<Local>,
    /// Where dot counters start on keys this node holds nothing for.
    mint_floor: MintFloor,
    stats: Arc<Stats>,
}

impl Coordinator {
    pub fn new(local: Arc<Local>, mint_floor: MintFloor) -> Coordinator {
        Coordinator {
            local,
            mint_floor,
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn quorum_error(op: QuorumOp, (required, succeeded, primaries): (usize, usize, bool)) -> ApiError {
        ApiError::Quorum {
            op,
            required,
            succeeded,
            primaries,
        }
    }

    // ---- reads -------------------------------------------------------------------

    /// Quorum read: the merge of the answers once `r` count, `pr` of them replicas'.
    /// Read repair follows in the background.
    async fn read(&self, item: &str, quorum: (usize, usize), deadline: Instant) -> Result<Option<Register>, ApiError> {
        // Counted in flight until the answer is decided: moving reads to a newer layout
        // waits for it.
        let (plan, _placed) = self.local.cluster.plan_read(item);
        let owners = plan.primary_ids();
        let layout = plan.layout;
        let mut round = ReadRound::new(plan, quorum, self.local.settings.sloppy_quorum);
        let speculate = self.local.settings.read_speculate;
        let initial = round.ask(if speculate.is_zero() { Ask::All } else { Ask::Quorum });
        let send = {
            let (local, key) = (self.local.clone(), item.to_string());
            move |round: &ReadRound, i: usize| -> Answered<Option<Option<Register>>> {
                let (target, role) = &round.targets()[i];
                if target.is_self {
                    let answer = local.replicas.get_with_hints(&key, &owners).map_err(|e| e.to_string());
                    return Answered::Now(absorb_read(&local, &target.id, answer));
                }
                let req = message::Get {
                    key: key.clone(),
                    layout,
                    fallback: *role == read::Role::Fallback,
                };
                let (local, target) = (local.clone(), target.clone());
                Answered::Later(Box::pin(async move {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    let answer = local.peers.call(&target.addr, req, remaining).await;
                    absorb_read(&local, &target.id, answer.map_err(|e| e.to_string()))
                }))
            }
        };
        let now = Instant::now();
        let patience = now + self.local.settings.request_timeout / 2;
        let mut fanout = FanOut::start(round, initial, send, deadline, Some(patience.min(deadline)));
        if !speculate.is_zero() {
            fanout.speculate_at(now + speculate);
        }
        match fanout.decide().await {
            Verdict::Met => {}
            _ => {
                return Err(Self::quorum_error(QuorumOp::Read, fanout.round().shortfall()));
            }
        }
        let merged = fanout.round().merged();
        // Most reads are done here: every replica asked has answered and agreed.
        if fanout.idle() && fanout.round().repairs().is_empty() {
            return Ok(merged);
        }
        let (local, stats, key) = (self.local.clone(), self.stats.clone(), item.to_string());
        self.local.spawn(async move {
            fanout.finish().await;
            read_repair(&local, &stats, &key, fanout.round().repairs()).await;
        });
        Ok(merged)
    }

    // ---- writes ------------------------------------------------------------------

    /// Sends `register` to every replica but us (our copy is stored already) and waits
    /// until `w` acknowledged, `pw` of them replicas (`quorum`: (w, pw)).
    async fn replicate(
        &self,
        item: &str,
        register: Register,
        (plan, placed): (Plan, Placed),
        quorum: (usize, usize),
        deadline: Instant,
    ) -> Result<(), ApiError> {
        let sloppy = self.local.settings.sloppy_quorum;
        let layout = plan.layout;
        let (round, initial) = WriteRound::new(plan, quorum, sloppy);
        let send = {
            let (local, stats, key) = (self.local.clone(), self.stats.clone(), item.to_string());
            move |_: &WriteRound, d: Delivery| -> Answered<bool> {
                if let Delivery::Hint { to, owner, .. } = &d
                    && to.is_self
                {
                    // We are the fallback: the hint is stored here and now.
                    stats.hinted_writes.fetch_add(1, Ordering::Relaxed);
                    return Answered::Now(match local.replicas.store_hint(&owner.id, &key, &register) {
                        Ok(()) => true,
                        Err(e) => {
                            warn!(error = %e, "storing a hint failed");
                            false
                        }
                    });
                }
                Answered::Later(Box::pin(deliver(
                    local.clone(),
                    stats.clone(),
                    Outgoing {
                        key: key.clone(),
                        register: register.clone(),
                        layout,
                    },
                    d,
                    deadline,
                    sloppy,
                )))
            }
        };
        let mut fanout = FanOut::start(round, initial, send, deadline, None);
        let verdict = fanout.decide().await;
        let shortfall = fanout.round().shortfall();
        // Sends still out (and the fallbacks they may call for) finish in the background.
        self.local.spawn(async move {
            fanout.finish().await;
            // In flight until the last send is answered: the ack of a newer layout
            // waits for it.
            drop(placed);
        });
        match verdict {
            Verdict::Met => Ok(()),
            _ => Err(Self::quorum_error(QuorumOp::Write, shortfall)),
        }
    }

    /// A multi-value write coordinated here: mint the dot on our copy, then replicate.
    async fn coordinate_mv(&self, write: MvWrite<'_>) -> Result<Context, ApiError> {
        let item = write.item;
        let context = match write.context {
            Some(c) => c,
            // A delete without context removes what a read quorum has seen, as Riak's
            // delete does; a put without context is a new concurrent version.
            None if write.value.is_none() => match self.read(item, write.read, write.deadline).await? {
                Some(reg) => match reg.context() {
                    Context::Mv(c) => c,
                    Context::Lww(_) => CausalContext::new(),
                },
                None => CausalContext::new(),
            },
            None => CausalContext::new(),
        };
        let actor = self.local.identity.actor;
        let floor = self.mint_floor.reserve().map_err(storage_error)?;
        let limit = self.local.settings.max_siblings;
        let (register, version) = self
            .local
            .replicas
            .update(item, |current| {
                // A write that adds a sibling (one with a value) must leave at most
                // `limit`: refuse it, storing nothing, rather than let blind writes grow
                // the key without bound (Riak's max_siblings).
                if let Some(Register::Mv(m)) = &current
                    && write.value.is_some()
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
                            key = item,
                            "key holds an lww value but its namespace is in mv mode; overwriting"
                        );
                        MvRegister::new()
                    }
                    None => MvRegister::new(),
                };
                // No dot of ours here (a new key, or one whose history was collected):
                // start past every counter this node ever minted.
                mv.start_after(actor, floor);
                let version = mv.write(actor, &context, write.value);
                (Register::Mv(mv), Ok(version))
            })
            .map_err(storage_error)?;
        let version = version.map_err(|count| ApiError::TooManySiblings { count, limit })?;
        if let Register::Mv(m) = &register {
            self.mint_floor.minted(m.context().max_counter(actor));
        }
        // Our copy counts towards W only if we are one of the key's replicas (a forwarded
        // write can land here while ring views differ for a moment).
        let placed = self.local.cluster.plan_write(item);
        self.replicate(item, register, placed, write.quorum, write.deadline)
            .await?;
        Ok(Context::Mv(version))
    }

    /// A multi-value write received by a node that is not a replica: hand it to the first
    /// live replica that answers.
    async fn forward_mv(&self, write: MvWrite<'_>) -> Result<Context, ApiError> {
        let live = self
            .local
            .cluster
            .replicas(write.item)
            .into_iter()
            .filter(|r| !r.is_dead());
        for target in live {
            let remaining = write.deadline.saturating_duration_since(Instant::now());
            let req = message::Coordinate {
                key: write.item.to_string(),
                value: write.value.clone(),
                context: write.context.clone().map(Context::Mv),
                w: write.quorum.0,
                pw: write.quorum.1,
                timeout_ms: (remaining.as_millis() as f64 * FORWARD_DEADLINE_SHARE) as u64,
                layout: self.local.cluster.newest_known(),
            };
            let outcome = self.local.peers.call(&target.addr, req, remaining).await;
            if let Err(e) = &outcome {
                debug!(replica = %target.id, error = %e, "forwarded write failed");
            }
            match forward::after(outcome) {
                forward::Next::Answer(answer) => return answer,
                forward::Next::TryNext => continue,
                forward::Next::GiveUp => break,
            }
        }
        Err(Self::quorum_error(QuorumOp::Write, (write.quorum.0, 0, false)))
    }

    /// A last-writer-wins write: any node may coordinate it.
    async fn coordinate_lww(
        &self,
        item: &str,
        value: Option<Bytes>,
        after: Option<dynakv_crdt::Timestamp>,
        quorum: (usize, usize),
        deadline: Instant,
    ) -> Result<Context, ApiError> {
        let timestamp = self.local.timestamp(after).map_err(storage_error)?;
        let register = Register::Lww(LwwRegister::new(timestamp, self.local.identity.actor, value));
        let (plan, placed) = self.local.cluster.plan_write(item);
        // Our copy is stored while the other replicas' are sent: the round counts it as
        // acknowledged from the start, and the write is answered only once it is stored.
        let ours = plan.holds_self().then(|| register.clone());
        let store_ours = async {
            match ours {
                Some(register) => self.local.commits.merge(item, register).await.map_err(storage_error),
                None => Ok(()),
            }
        };
        let (stored, replicated) = tokio::join!(
            store_ours,
            self.replicate(item, register, (plan, placed), quorum, deadline)
        );
        stored?;
        replicated?;
        Ok(Context::Lww(timestamp))
    }

    /// A write forwarded here by a node that is not a replica of its key.
    pub async fn coordinate_forwarded(&self, req: message::Coordinate) -> Result<Context, ApiError> {
        let settings = &self.local.settings;
        let item = namespace::check_item(&req.key)?;
        let scope = namespace::resolve(&self.local, Some(dynakv_ring::item::namespace(item)))?;
        if scope.mode != ConflictMode::Mv {
            return Err(ApiError::BadRequest(
                "forwarded coordination is for mv mode only".into(),
            ));
        }
        let quorum = write_quorum(
            &scope,
            QuorumParams {
                w: Some(req.w),
                pw: Some(req.pw),
                ..QuorumParams::default()
            },
        )?;
        if req.value.as_ref().is_some_and(|v| v.len() > settings.max_value_bytes) {
            return Err(ApiError::ValueTooLarge {
                limit: settings.max_value_bytes,
            });
        }
        let context = match req.context {
            None => None,
            Some(Context::Mv(cc)) => Some(cc),
            Some(Context::Lww(_)) => return Err(ApiError::BadContext("an lww context in mv mode".into())),
        };
        let budget = Duration::from_millis(req.timeout_ms).min(settings.request_timeout);
        self.coordinate_mv(MvWrite {
            item,
            value: req.value,
            context,
            quorum,
            read: (scope.r, scope.pr),
            deadline: Instant::now() + budget,
        })
        .await
    }
}

impl KvService for Coordinator {
    fn n(&self) -> usize {
        self.local.settings.n
    }

    fn default_quorums(&self) -> (usize, usize) {
        (self.local.settings.r, self.local.settings.w)
    }

    fn observe(&self, request: Observed) {
        let metrics = &self.local.metrics;
        if !metrics.enabled() {
            return;
        }
        if request.quorum_failed {
            metrics.quorum_failure(request.op != KvOp::Get);
        }
        metrics.request(request.op, request.status, request.elapsed, self.local.clock.wall_ms());
    }

    fn max_value_bytes(&self) -> usize {
        self.local.settings.max_value_bytes
    }

    fn read_timeout(&self) -> Duration {
        self.local.settings.read_timeout
    }

    /// A client read.
    async fn get(&self, ns: NamespaceName, key: Key, quorum: QuorumParams) -> Result<GetOutcome, ApiError> {
        self.local.cluster.check_current()?;
        let scope = namespace::resolve(&self.local, ns.as_deref())?;
        let got = self.get_in(&scope, key, quorum).await;
        self.local.metrics.namespace_request(scope.name, KvOp::Get, got.is_ok());
        got
    }

    /// A client write: `value` (or a delete, with `None`) after `context`; returns the
    /// new version's context.
    async fn write(
        &self,
        ns: NamespaceName,
        key: Key,
        value: Option<Bytes>,
        context: Option<Context>,
        quorum: QuorumParams,
    ) -> Result<Context, ApiError> {
        self.local.cluster.check_current()?;
        let scope = namespace::resolve(&self.local, ns.as_deref())?;
        let op = if value.is_some() { KvOp::Put } else { KvOp::Delete };
        let done = self.write_in(&scope, key, value, context, quorum).await;
        self.local.metrics.namespace_request(scope.name, op, done.is_ok());
        done
    }
}

impl Coordinator {
    /// A client read in the namespace `scope`.
    async fn get_in(&self, scope: &Scope<'_>, key: Key, quorum: QuorumParams) -> Result<GetOutcome, ApiError> {
        let quorum = read_quorum(scope, quorum)?;
        let item = dynakv_ring::item::item(scope.name, key.as_str());
        Ok(match self.read(&item, quorum, self.local.deadline()).await? {
            Some(reg) if !reg.is_tombstone() => {
                let values = reg.values();
                self.local.metrics.read_values(values.iter().map(|v| &v[..]));
                GetOutcome::Found {
                    values,
                    context: reg.context(),
                }
            }
            Some(tombstone) => GetOutcome::NotFound {
                context: Some(tombstone.context()),
            },
            None => GetOutcome::NotFound { context: None },
        })
    }

    /// A client write in the namespace `scope`.
    async fn write_in(
        &self,
        scope: &Scope<'_>,
        key: Key,
        value: Option<Bytes>,
        context: Option<Context>,
        quorum: QuorumParams,
    ) -> Result<Context, ApiError> {
        let quorum = write_quorum(scope, quorum)?;
        if let Some(v) = &value {
            self.local.metrics.written_value(v.len());
        }
        let item = dynakv_ring::item::item(scope.name, key.as_str());
        let deadline = self.local.deadline();
        match (scope.mode, context) {
            (ConflictMode::Mv, Some(Context::Lww(_))) | (ConflictMode::Lww, Some(Context::Mv(_))) => {
                Err(ApiError::BadContext(format!(
                    "the context comes from a different conflict mode; namespace {} is in {} mode",
                    scope.name, scope.mode
                )))
            }
            (ConflictMode::Mv, context) => {
                let context = context.map(|c| match c {
                    Context::Mv(cc) => cc,
                    Context::Lww(_) => unreachable!("rejected above"),
                });
                let write = MvWrite {
                    item: &item,
                    value,
                    context,
                    quorum,
                    read: (scope.r, scope.pr),
                    deadline,
                };
                if self.local.cluster.replicas(&item).iter().any(|r| r.is_self) {
                    self.coordinate_mv(write).await
                } else {
                    self.forward_mv(write).await
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
                    && t.physical_ms() > self.local.clock.wall_ms().saturating_add(MAX_CLOCK_DRIFT_MS)
                {
                    return Err(ApiError::BadContext(format!(
                        "the context's timestamp is more than {} s ahead of this node's clock",
                        MAX_CLOCK_DRIFT_MS / 1000
                    )));
                }
                self.coordinate_lww(&item, value, after, quorum, deadline).await
            }
        }
    }
}

/// A read's (r, pr): each the request's, else the namespace's; `pr` at most `r`.
fn read_quorum(scope: &Scope, q: QuorumParams) -> Result<(usize, usize), ApiError> {
    primary_quorum(("r", q.r, scope.r), ("pr", q.pr, scope.pr), scope.n)
}

/// A write's (w, pw): each the request's, else the namespace's; `pw` at most `w`.
fn write_quorum(scope: &Scope, q: QuorumParams) -> Result<(usize, usize), ApiError> {
    primary_quorum(("w", q.w, scope.w), ("pw", q.pw, scope.pw), scope.n)
}

/// A quorum and its primary part, each (name, the request's, the default), checked:
/// 1 <= quorum <= n and primary part <= quorum. A default primary part larger than the
/// request's quorum is refused too, not lowered: it is a guarantee the operator asked
/// for.
fn primary_quorum(
    (name, asked, default): (&str, Option<usize>, usize),
    (pname, pasked, pdefault): (&str, Option<usize>, usize),
    n: usize,
) -> Result<(usize, usize), ApiError> {
    let q = asked.unwrap_or(default);
    let p = pasked.unwrap_or(pdefault);
    if q == 0 || q > n {
        return Err(ApiError::BadParameter(format!(
            "{name} must be between 1 and n ({n}), got {q}"
        )));
    }
    if p > q {
        let whose = if pasked.is_some() { "" } else { " (the default)" };
        return Err(ApiError::BadParameter(format!(
            "{pname} = {p}{whose} is more than {name} = {q}: of {q} replies, at most {q} can come from \
             primaries; ask for {pname} <= {name}"
        )));
    }
    Ok((q, p))
}

/// A replica's answer to a read as the round takes it (`None`: it failed), its timestamp
/// observed.
fn absorb_read(local: &Local, from: &NodeId, answer: Result<Option<Register>, String>) -> Option<Option<Register>> {
    match answer {
        Ok(state) => {
            // A replica judged dead that answers is alive again (reads ask those too).
            crate::roles::services::gossip::on_events(local, &local.cluster.heard_from(from));
            if let Some(reg) = &state {
                local.observe(reg);
            }
            Some(state)
        }
        Err(e) => {
            debug!(replica = %from, error = %e, "replica read failed");
            None
        }
    }
}

/// One copy of a write, as it is sent: the key, its state, and the layout version the
/// write was placed under.
struct Outgoing {
    key: String,
    register: Register,
    layout: u64,
}

/// Delivers one slot's copy of a write to another node; whether it was acknowledged.
async fn deliver(
    local: Arc<Local>,
    stats: Arc<Stats>,
    Outgoing { key, register, layout }: Outgoing,
    delivery: Delivery,
    deadline: Instant,
    sloppy: bool,
) -> bool {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return false;
    }
    match delivery {
        Delivery::Replica { to, .. } => {
            // Leave time for a fallback if this replica turns out to be unresponsive.
            let attempt = if sloppy { remaining / 2 } else { remaining };
            let req = message::Merge { key, register, layout };
            match local.peers.call(&to.addr, req, attempt).await {
                Ok(()) => true,
                Err(e) => {
                    debug!(replica = %to.id, error = %e, "replica write failed");
                    false
                }
            }
        }
        Delivery::Hint { to, owner, .. } => {
            stats.hinted_writes.fetch_add(1, Ordering::Relaxed);
            let req = message::MergeHint {
                key,
                register,
                owner: owner.id.clone(),
                layout,
            };
            match local.peers.call(&to.addr, req, remaining).await {
                Ok(()) => true,
                Err(e) => {
                    debug!(fallback = %to.id, error = %e, "hinted write failed");
                    false
                }
            }
        }
    }
}

/// Sends each replica that answered a read with something older (or nothing) the
/// merged version.
async fn read_repair(
    local: &Local,
    stats: &Stats,
    key: &str,
    repairs: Vec<(crate::state::cluster::Replica, Register)>,
) {
    for (replica, merged) in repairs {
        stats.read_repairs.fetch_add(1, Ordering::Relaxed);
        debug!(key, replica = %replica.id, "read repair");
        if replica.is_self {
            // The read was placed a while ago (its repairs wait for late answers): if the
            // layout it used has retired since, our copy is no replica's any more, and
            // one stored now would outlive the sweep that dropped the partition.
            if local
                .cluster
                .check_serves(
                    key,
                    crate::state::cluster::Serving::Replica,
                    local.cluster.newest_known(),
                )
                .is_err()
            {
                continue;
            }
            if let Err(e) = local.replicas.merge(key, &merged) {
                warn!(key, error = %e, "read repair of our own replica failed");
            }
            continue;
        }
        let req = message::Merge {
            key: key.to_string(),
            register: merged,
            layout: local.cluster.newest_known(),
        };
        if let Err(e) = local
            .peers
            .call(&replica.addr, req, local.settings.request_timeout)
            .await
        {
            debug!(key, replica = %replica.id, error = %e, "read repair failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(
        given: Option<usize>,
        default: usize,
        pgiven: Option<usize>,
        pdefault: usize,
    ) -> Result<(usize, usize), String> {
        primary_quorum(("r", given, default), ("pr", pgiven, pdefault), 3).map_err(|e| {
            assert_eq!(e.code(), "bad_parameter");
            e.to_string()
        })
    }

    #[test]
    fn a_primary_quorum_is_at_most_its_quorum_given_or_default() {
        assert_eq!(q(None, 2, None, 0), Ok((2, 0)));
        assert_eq!(q(Some(3), 2, Some(3), 0), Ok((3, 3)));
        assert_eq!(q(Some(1), 2, None, 1), Ok((1, 1)));
        assert_eq!(q(Some(2), 2, Some(0), 2), Ok((2, 0)), "a request may drop the default");
        let given = q(Some(1), 2, Some(2), 0).unwrap_err();
        assert!(given.contains("pr = 2 is more than r = 1"), "{given}");
        let default = q(Some(1), 2, None, 2).unwrap_err();
        assert!(default.contains("pr = 2 (the default) is more than r = 1"), "{default}");
        assert!(q(Some(4), 2, None, 0).is_err(), "r above n");
        assert!(q(Some(0), 2, None, 0).is_err(), "r zero");
    }
}
