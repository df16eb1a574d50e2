//! Gossip: drives the membership state machine (`dynakv_ring::membership`) and spreads
//! the layout history (`dynakv_ring::history`) and the namespace table
//! (`dynakv_ring::namespace`). Each round
//! ticks it (our heartbeat advances, statuses are refreshed) and runs a push-pull
//! exchange with each target the tick names, concurrently, so that one slow peer never
//! delays the heartbeat.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dynakv_ring::Event;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use serde_json::json;
use tracing::{debug, error, info, warn};

use super::Service;
use crate::local::Local;
use crate::state::cluster::OtherCluster;
use crate::transport::RpcError;
use crate::transport::message;

pub struct Gossip {
    local: Arc<Local>,
    interval: Duration,
    rng: Mutex<StdRng>,
    rounds: AtomicU64,
    exchanges_ok: AtomicU64,
    exchanges_failed: AtomicU64,
}

impl Gossip {
    pub fn new(local: Arc<Local>, interval: Duration) -> Gossip {
        Gossip {
            rng: Mutex::new(local.rng("gossip")),
            local,
            interval,
            rounds: AtomicU64::new(0),
            exchanges_ok: AtomicU64::new(0),
            exchanges_failed: AtomicU64::new(0),
        }
    }

    /// Rounds started so far.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    pub fn status(&self) -> serde_json::Value {
        json!({
            "rounds": self.rounds(),
            "exchanges_ok": self.exchanges_ok.load(Ordering::Relaxed),
            "exchanges_failed": self.exchanges_failed.load(Ordering::Relaxed),
        })
    }

    /// One tick, and the exchanges it calls for (started, not awaited).
    ///
    /// A member judged dead that the tick picks is dialled at once, whatever backoff the
    /// transport keeps from failed attempts (up to seconds): that probe is how a member
    /// back from a partition is seen alive again, and every read or write that goes
    /// around it meanwhile is one that could have reached it. (A heal took 1.3 s to be
    /// seen in a container run, mostly such backoffs.) It costs one connection attempt
    /// per round at most.
    pub fn tick(self: &Arc<Self>) {
        self.rounds.fetch_add(1, Ordering::Relaxed);
        let tick = self.local.cluster.tick(&mut *self.rng.lock());
        on_events(&self.local, &tick.events);
        let dead: Vec<String> = self.local.cluster.with_membership(|m, now| {
            m.members(now)
                .filter(|v| v.status == dynakv_ring::Status::Dead)
                .map(|v| v.info.addr.clone())
                .collect()
        });
        for addr in tick.targets {
            if dead.contains(&addr) {
                self.local.peers.reachable(&addr);
            }
            let this = self.clone();
            self.local.spawn(async move { this.exchange(&addr).await });
        }
    }

    async fn exchange(&self, addr: &str) {
        match exchange_with(&self.local, addr).await {
            Ok(()) => {
                self.exchanges_ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.exchanges_failed.fetch_add(1, Ordering::Relaxed);
                match e {
                    RpcError::Remote { error, .. } if error.code() == "cluster_mismatch" => warn!(
                        peer = addr, %error,
                        "peer belongs to another cluster; check --cluster-name, --n, --conflict, --partition-bits"
                    ),
                    e => debug!(peer = addr, error = %e, "gossip exchange failed"),
                }
            }
        }
    }
}

/// One push-pull exchange with the node at `addr`: ours sent, theirs merged. The
/// namespace table is merged before the layout history, so a node that learns of a
/// layout from a peer knows the namespaces that peer knew.
pub async fn exchange_with(local: &Local, addr: &str) -> Result<(), RpcError> {
    let cluster = &local.cluster;
    let req = message::Gossip {
        cluster: cluster.id().clone(),
        entries: cluster.gossip_table(),
        layout: cluster.layout_history(),
        namespaces: (*local.catalog.table()).clone(),
    };
    let reply = local.peers.call(addr, req, local.settings.request_timeout).await?;
    on_events(local, &cluster.merge(&reply.entries));
    merge_namespaces(local, &reply.namespaces);
    cluster.merge_layout(&reply.layout);
    Ok(())
}

impl Service for Gossip {
    fn name(&self) -> &'static str {
        "gossip"
    }

    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }

    /// A node's first heartbeat and exchanges go out as soon as it starts: that is how it
    /// finds its peers.
    fn starts_at_once(&self) -> bool {
        true
    }

    fn round(self: Arc<Self>) -> BoxFuture<'static, ()> {
        self.tick();
        Box::pin(async {})
    }
}

/// Merges a peer's namespace table; a failure to store it is logged (the table is
/// gossiped again next round).
fn merge_namespaces(local: &Local, theirs: &dynakv_ring::namespace::Namespaces) {
    if let Err(e) = local.catalog.merge(theirs) {
        warn!(error = %e, "storing the namespace table failed");
    }
}

/// RECEIVER: merges a peer's membership table, layout history and namespace table, and
/// answers with ours.
pub fn answer(local: &Local, req: message::Gossip) -> Result<message::GossipReply, OtherCluster> {
    let ours = local.cluster.id();
    if req.cluster != *ours {
        return Err(OtherCluster(format!(
            "gossip refused: peer is in cluster {:?} but this node is in {:?}",
            req.cluster, ours
        )));
    }
    on_events(local, &local.cluster.merge(&req.entries));
    merge_namespaces(local, &req.namespaces);
    local.cluster.merge_layout(&req.layout);
    Ok(message::GossipReply {
        entries: local.cluster.gossip_table(),
        layout: Box::new(local.cluster.layout_history()),
        namespaces: Box::new((*local.catalog.table()).clone()),
    })
}

/// Logs what gossip noticed; a member up again is worth connecting to at once.
pub fn on_events(local: &Local, events: &[Event]) {
    for e in events {
        match e {
            Event::Discovered { id, addr } => {
                info!(member = %id, %addr, "discovered member");
                // It may have been dialled (as a seed) before it listened.
                local.peers.reachable(addr);
            }
            Event::Restarted { id, generation, addr } => {
                info!(member = %id, generation, %addr, "member restarted");
                local.peers.reachable(addr);
            }
            Event::StatusChanged { id, from, to } => {
                info!(member = %id, from = from.as_str(), to = to.as_str(), "member status changed");
                if *to == dynakv_ring::Status::Alive
                    && let Some((info, _)) = local.cluster.member_info(id)
                {
                    local.peers.reachable(&info.addr);
                }
            }
            Event::IdentityConflict { remote_generation } => error!(
                remote_generation,
                "another process gossips this node's id with a newer generation: two nodes share an id?"
            ),
        }
    }
}
