//! This node's view of the cluster: the membership state machine and the ring derived
//! from it, shared by request handlers and the gossip loop.

use std::sync::Arc;
use std::time::Instant;

use dynakv_http_api::wire::ClusterId;
use dynakv_ring::ring::MAX_TOKENS;
use dynakv_ring::{Event, GossipEntry, Membership, NodeId, Partition, Ring, Status, Tick};
use parking_lot::{Mutex, RwLock};
use rand::Rng;

/// One replica of a key as a request sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    pub id: NodeId,
    pub addr: String,
    pub status: Status,
    pub is_self: bool,
}

struct RingState {
    /// What the ring was built from, sorted by id (as `Membership::ring_members` is).
    members: Vec<(NodeId, u32)>,
    ring: Arc<Ring>,
}

pub struct Cluster {
    me: NodeId,
    id: ClusterId,
    n: usize,
    membership: Mutex<Membership>,
    /// Rebuilt whenever the ring members or their token counts change; readers take a
    /// cheap `Arc`.
    ring: RwLock<RingState>,
    /// Origin of the monotonic milliseconds the membership state machine runs on.
    epoch: Instant,
}

impl Cluster {
    pub fn new(id: ClusterId, n: usize, membership: Membership) -> Cluster {
        let members = membership.ring_members();
        let ring =
            Ring::new(id.partition_bits, members.clone()).expect("validated ring parameters");
        Cluster {
            me: membership.me().clone(),
            id,
            n,
            membership: Mutex::new(membership),
            ring: RwLock::new(RingState {
                members,
                ring: Arc::new(ring),
            }),
            epoch: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn id(&self) -> &ClusterId {
        &self.id
    }

    pub fn me(&self) -> &NodeId {
        &self.me
    }

    pub fn ring(&self) -> Arc<Ring> {
        self.ring.read().ring.clone()
    }

    pub fn partition_of(&self, key: &str) -> Partition {
        self.ring().partition_of_key(key.as_bytes())
    }

    /// The key's N replicas in preference order, with what we know of each.
    pub fn replicas(&self, key: &str) -> Vec<Replica> {
        let ring = self.ring();
        let preferred = ring.preference_list(key.as_bytes(), self.n);
        let m = self.membership.lock();
        preferred
            .into_iter()
            .map(|id| {
                let info = m.info(id).expect("ring members are members");
                Replica {
                    id: id.clone(),
                    addr: info.addr.clone(),
                    status: m.status(id).expect("ring members are members"),
                    is_self: *id == self.me,
                }
            })
            .collect()
    }

    pub fn tick(&self, rng: &mut impl Rng) -> Tick {
        let now = self.now_ms();
        let tick = self.membership.lock().tick(now, rng);
        self.refresh_ring();
        tick
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
        let events = self.membership.lock().merge(&valid, now);
        self.refresh_ring();
        events
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

    fn refresh_ring(&self) {
        let members = self.membership.lock().ring_members();
        if self.ring.read().members == members {
            return;
        }
        let ring = match Ring::new(self.id.partition_bits, members.clone()) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the ring; keeping the previous one");
                return;
            }
        };
        tracing::info!(members = ring.members().len(), "ring rebuilt");
        *self.ring.write() = RingState {
            members,
            ring: Arc::new(ring),
        };
    }
}
