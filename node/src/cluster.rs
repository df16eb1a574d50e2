//! This node's view of the cluster: the membership state machine and the ring derived
//! from it, shared by request handlers and the gossip loop.

use std::sync::Arc;

use dynakv_ring::ring::MAX_TOKENS;
use dynakv_ring::{Event, GossipEntry, Membership, NodeId, Partition, Ring, Status, Tick};
use parking_lot::{Mutex, RwLock};
use rand::Rng;

use crate::clock::Clock;
use crate::transport::message::ClusterId;

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
}

impl Plan {
    pub fn includes_self(&self) -> bool {
        self.primaries.iter().any(|r| r.is_self)
    }

    pub fn primary_ids(&self) -> Vec<NodeId> {
        self.primaries.iter().map(|r| r.id.clone()).collect()
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
    /// Held across a rebuild (snapshot of the members, build, store), so a rebuild from an
    /// older snapshot can never overwrite one from a newer snapshot.
    rebuilding: Mutex<()>,
    /// The monotonic milliseconds the membership state machine runs on.
    clock: Arc<dyn Clock>,
}

impl Cluster {
    pub fn new(id: ClusterId, n: usize, membership: Membership, clock: Arc<dyn Clock>) -> Cluster {
        let members = membership.ring_members();
        let ring = Ring::new(id.partition_bits, members.clone()).expect("validated ring parameters");
        Cluster {
            me: membership.me().clone(),
            id,
            n,
            membership: Mutex::new(membership),
            rebuilding: Mutex::new(()),
            ring: RwLock::new(RingState {
                members,
                ring: Arc::new(ring),
            }),
            clock,
        }
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

    pub fn ring(&self) -> Arc<Ring> {
        self.ring.read().ring.clone()
    }

    pub fn partition_of(&self, key: &str) -> Partition {
        self.ring().partition_of_key(key.as_bytes())
    }

    /// The key's N replicas in preference order, with what we know of each.
    pub fn replicas(&self, key: &str) -> Vec<Replica> {
        self.plan(key).primaries
    }

    fn replica(&self, m: &Membership, id: &NodeId) -> Replica {
        let info = m.info(id).expect("ring members are members");
        Replica {
            id: id.clone(),
            addr: info.addr.clone(),
            status: m.status(id).expect("ring members are members"),
            is_self: *id == self.me,
        }
    }

    /// The key's replicas and live fallbacks.
    pub fn plan(&self, key: &str) -> Plan {
        let ring = self.ring();
        let m = self.membership.lock();
        let mut walk = ring.successors(ring.partition_of_key(key.as_bytes()));
        let primaries: Vec<Replica> = walk.by_ref().take(self.n).map(|id| self.replica(&m, id)).collect();
        let fallbacks = walk
            .map(|id| self.replica(&m, id))
            .filter(|r| !r.is_dead())
            .take(self.n)
            .collect();
        Plan {
            primaries,
            fallbacks,
            moving: Vec::new(),
        }
    }

    /// The partitions both we and `peer` replicate, ascending.
    pub fn shared_partitions(&self, peer: &NodeId) -> Vec<u32> {
        let ring = self.ring();
        ring.partitions()
            .filter(|&p| {
                let pl = ring.partition_preference(p, self.n);
                pl.contains(&&self.me) && pl.contains(&peer)
            })
            .map(|p| p.0)
            .collect()
    }

    /// Every ring member but us, with its status.
    pub fn peers(&self) -> Vec<Replica> {
        let ring = self.ring();
        let m = self.membership.lock();
        ring.members()
            .iter()
            .filter(|id| **id != self.me)
            .map(|id| self.replica(&m, id))
            .collect()
    }

    /// Every ring member, ourselves included.
    pub fn ring_member_states(&self) -> Vec<MemberState> {
        let ring = self.ring();
        let m = self.membership.lock();
        ring.members()
            .iter()
            .map(|id| {
                let info = m.info(id).expect("ring members are members");
                MemberState {
                    id: id.clone(),
                    addr: info.addr.clone(),
                    status: m.status(id).expect("ring members are members"),
                    oldest_hint_ms: info.oldest_hint_ms,
                }
            })
            .collect()
    }

    /// Address and status of a member.
    pub fn member(&self, id: &NodeId) -> Option<(String, Status)> {
        let m = self.membership.lock();
        Some((m.info(id)?.addr.clone(), m.status(id)?))
    }

    pub fn set_oldest_hint(&self, oldest_hint_ms: Option<u64>) {
        self.membership.lock().set_oldest_hint(oldest_hint_ms);
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
        let _rebuilding = self.rebuilding.lock();
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
