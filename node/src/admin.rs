//! What an operator sees of a node: its members, a key's replicas, its own copy of a key,
//! and the state of repair (`/admin/antientropy`).

use std::sync::Arc;

use dynakv_crdt::Register;
use dynakv_http_api::{AdminService, ApiError, Key, MemberJson};
use serde_json::json;

use crate::coordinator::{Coordinator, storage_error};
use crate::local::Local;
use crate::services::Services;

/// The parts whose state the admin views show.
pub struct Admin {
    pub local: Arc<Local>,
    pub coordinator: Arc<Coordinator>,
    pub services: Services,
}

fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

impl AdminService for Admin {
    fn node_id(&self) -> &str {
        self.local.id().as_str()
    }

    /// `GET /cluster/members`.
    fn members(&self) -> Vec<MemberJson> {
        self.local.cluster.with_membership(|m, now| {
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

    /// `GET /cluster/preflist/{key}`: the key's partition and replicas in order.
    fn preference_list(&self, key: &Key) -> (u32, Vec<String>) {
        let ring = self.local.cluster.ring();
        let partition = ring.partition_of_key(key.as_bytes());
        let nodes = ring
            .partition_preference(partition, self.local.settings.n)
            .into_iter()
            .map(|id| id.to_string())
            .collect();
        (partition.0, nodes)
    }

    /// `GET /admin/replica/{key}`.
    fn local_replica(&self, key: &Key) -> Result<Option<Register>, ApiError> {
        self.local.replicas.get(key.as_str()).map_err(storage_error)
    }

    /// `GET /admin/antientropy`.
    fn antientropy_status(&self) -> serde_json::Value {
        let local = &self.local;
        let ring = local.cluster.ring();
        let n = local.settings.n;
        let me = local.id();
        let forest = local.replicas.forest();
        let peers = self.services.antientropy.reports();
        let now = local.clock.monotonic_ms();
        let ago = |t: Option<u64>| t.map(|t| now.saturating_sub(t));
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
                                "last_exchange_ms_ago": ago(r.finished_at_ms),
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
                    "last_exchange_ms_ago": ago(r.finished_at_ms),
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
        let hints = local.replicas.hint_summary().ok();
        let stats = self.coordinator.stats();
        use std::sync::atomic::Ordering::Relaxed;
        json!({
            "node": me.to_string(),
            "interval_ms": self.services.antientropy.interval().map(|d| d.as_millis() as u64),
            "read_repairs": stats.read_repairs.load(Relaxed),
            "hints": {
                "pending": hints.as_ref().map(|h| h.by_owner.values().sum::<u64>()),
                "by_owner": hints.as_ref().map(|h| h.by_owner.clone()),
                "oldest_ms": hints.as_ref().and_then(|h| h.oldest_ms),
                "hinted_writes": stats.hinted_writes.load(Relaxed),
                "delivered": self.services.handoff.delivered(),
            },
            "tombstones": {
                "pending": local.replicas.tombstone_count().ok(),
                "collected": self.services.tombstones.collected(),
            },
            "peers": peer_list,
            "partitions": partitions,
        })
    }
}
