//! What an operator sees of a node: its members, a key's replicas, its own copy of a key,
//! and the state of repair (`/admin/antientropy`); layout changes; namespaces
//! ([`namespaces`]); the overview ([`overview`]) and `/metrics` ([`prometheus`]).

mod namespaces;
mod overview;
mod prometheus;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use dynakv_crdt::Register;
use dynakv_http_api::admin::{
    AntiEntropy, Committed, Hints, Layout, LayoutMember, LayoutPlan, Member, Namespace, Namespaces, Overview,
    PartitionPeer, PartitionRepair, PeerExchange, Shares, Staged, Tombstones,
};
use dynakv_http_api::{AdminService, ApiError, Key, NamespaceName};
use dynakv_ring::NodeId;
use dynakv_ring::layout::Change;

use crate::local::Local;
use crate::roles::coordinator::Coordinator;
use crate::roles::edge::{layout_error, storage_error};
use crate::roles::services::Services;
use crate::roles::services::layout::commit;

/// The parts whose state the admin views show.
pub struct Admin {
    pub local: Arc<Local>,
    pub coordinator: Arc<Coordinator>,
    pub services: Services,
    /// Connections accepted and refused on the cluster port.
    pub refusals: Arc<crate::transport::port::Refusals>,
}

/// A JSON object body as `T`; anything else (serde would also take an array for a
/// struct) is 400 naming `what` the body must be.
pub(crate) fn object<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    let bad = |e: String| ApiError::BadParameter(format!("the body must be {what} ({e})"));
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v @ serde_json::Value::Object(_)) => serde_json::from_value(v).map_err(|e| bad(e.to_string())),
        Ok(other) => Err(bad(format!("got {}", json_kind(&other)))),
        Err(e) => Err(bad(e.to_string())),
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

impl AdminService for Admin {
    fn node_id(&self) -> &str {
        self.local.id().as_str()
    }

    fn read_timeout(&self) -> std::time::Duration {
        self.local.settings.read_timeout
    }

    /// `GET /cluster/members`.
    fn members(&self) -> Vec<Member> {
        self.local.cluster.with_membership(|m, now| {
            m.members(now)
                .map(|v| Member {
                    id: v.info.id.to_string(),
                    addr: v.info.api.clone(),
                    cluster_addr: v.info.addr.clone(),
                    status: v.status.as_str().to_string(),
                    generation: v.info.generation,
                    heartbeat: v.info.heartbeat,
                    silent_ms: v.silent_ms,
                    tokens: v.info.tokens,
                })
                .collect()
        })
    }

    /// `GET /cluster/preflist/{key}?ns=`: the key's partition and replicas in order, by
    /// the namespace's n (a namespace not active yet is shown too: where it will be).
    fn preference_list(&self, ns: NamespaceName, key: &Key) -> Result<(u32, Vec<String>), ApiError> {
        let (name, n) = self.inspected(ns.as_deref())?;
        let item = dynakv_ring::item::item(name, key.as_str());
        let view = self.local.cluster.view();
        let ring = view.read_ring();
        let partition = ring.partition_of_position(dynakv_ring::item::position(&item));
        let nodes = ring
            .partition_preference(partition, n)
            .into_iter()
            .map(|id| id.to_string())
            .collect();
        Ok((partition.0, nodes))
    }

    /// `GET /admin/replica/{key}?ns=`.
    fn local_replica(&self, ns: NamespaceName, key: &Key) -> Result<Option<Register>, ApiError> {
        let (name, _) = self.inspected(ns.as_deref())?;
        let item = dynakv_ring::item::item(name, key.as_str());
        self.local.replicas.get(&item).map_err(storage_error)
    }

    /// `GET /admin/antientropy`.
    fn antientropy_status(&self) -> AntiEntropy {
        let local = &self.local;
        let view = local.cluster.view();
        let ring = view.read_ring();
        let n = local.settings.n;
        let me = local.id();
        let forest = local.replicas.forest();
        let peers = self.services.antientropy.reports();
        let now = local.clock.monotonic_ms();
        let ago = |t: Option<u64>| t.map(|t| now.saturating_sub(t));
        let partitions = ring
            .partitions()
            .filter_map(|p| {
                let replicas = ring.partition_preference(p, n);
                let holds = forest.key_count(p.0) > 0;
                if !replicas.contains(&me) && !holds {
                    return None;
                }
                let per_peer = replicas
                    .iter()
                    .filter(|id| **id != me)
                    .filter_map(|id| {
                        let r = peers.get(*id)?;
                        Some((
                            id.to_string(),
                            PartitionPeer {
                                last_exchange_ms_ago: ago(r.finished_at_ms),
                                result: r.result.clone(),
                                repaired: r.repaired_by_partition.get(&p.0).copied().unwrap_or(0) as u64,
                            },
                        ))
                    })
                    .collect();
                Some(PartitionRepair {
                    partition: p.0,
                    replicas: replicas.iter().map(|id| id.to_string()).collect(),
                    replica_here: replicas.contains(&me),
                    root: hex(&forest.root(p.0)),
                    keys: forest.key_count(p.0),
                    peers: per_peer,
                })
            })
            .collect();
        let peer_list = peers
            .iter()
            .map(|(id, r)| PeerExchange {
                peer: id.to_string(),
                last_exchange_ms_ago: ago(r.finished_at_ms),
                result: r.result.clone(),
                shared_partitions: r.shared_partitions as u64,
                rounds: r.rounds as u64,
                differences: r.differences as u64,
                keys_pushed: r.pushed as u64,
                keys_pulled: r.pulled as u64,
                bytes_sent: r.bytes_sent,
                bytes_received: r.bytes_received,
                duration_ms: r.duration_ms,
                exchanges: r.exchanges,
                keys_repaired_total: r.total_repaired,
            })
            .collect();
        let hints = local.replicas.hint_summary().ok();
        let stats = self.coordinator.stats();
        use std::sync::atomic::Ordering::Relaxed;
        AntiEntropy {
            node: me.to_string(),
            interval_ms: self.services.antientropy.interval().map(|d| d.as_millis() as u64),
            read_repairs: stats.read_repairs.load(Relaxed),
            hints: Hints {
                pending: hints.as_ref().map(|h| h.by_owner.values().sum::<u64>()),
                by_owner: hints.as_ref().map(|h| h.by_owner.clone()),
                oldest_ms: hints.as_ref().and_then(|h| h.oldest_ms),
                hinted_writes: stats.hinted_writes.load(Relaxed),
                delivered: self.services.handoff.delivered(),
                discarded_stale: self.services.handoff.discarded(),
            },
            tombstones: Tombstones {
                pending: local.replicas.tombstone_count().ok(),
                collected: self.services.tombstones.collected(),
            },
            peers: peer_list,
            partitions,
            transfers: self.services.layout.transfers(),
            cluster_port: self.refusals.view(),
        }
    }

    /// `GET /admin/layout`.
    fn layout(&self) -> Layout {
        let cluster = &self.local.cluster;
        let view = cluster.view();
        let history = &view.history;
        let current = view.current();
        let oldest = &history.versions()[0];
        let mut members = Vec::new();
        let owners: BTreeSet<&NodeId> = history.versions().iter().flat_map(|l| l.owners.keys()).collect();
        for id in owners {
            let state = if !current.owns(id) {
                "leaving"
            } else if history.versions().iter().all(|l| l.owns(id)) && oldest.owners[id].seat == current.owners[id].seat
            {
                "active"
            } else {
                "joining"
            };
            let tokens = current
                .owners
                .get(id)
                .or_else(|| oldest.owners.get(id))
                .map(|o| o.tokens);
            let (addr, cluster_addr, status) = cluster
                .member_info(id)
                .map(|(i, s)| (Some(i.api), Some(i.addr), Some(s.as_str().to_string())))
                .unwrap_or((None, None, None));
            members.push(LayoutMember {
                id: id.to_string(),
                addr,
                cluster_addr,
                tokens,
                state: state.to_string(),
                status,
                acked: history.acked(id),
                synced: history.synced(id),
                reads: history.reads(id),
            });
        }
        let staged = if history.staging.base == current.version {
            history
                .staging
                .entries
                .values()
                .map(|e| Staged {
                    change: serde_json::to_value(&e.change).expect("a change serialises"),
                    by: e.stamp.by.to_string(),
                    at_ms: e.stamp.at_ms,
                })
                .collect()
        } else {
            Vec::new()
        };
        Layout {
            node: cluster.me().to_string(),
            version: current.version,
            read_version: view.read,
            active_versions: history.versions().iter().map(|l| l.version).collect(),
            members,
            staged,
            transfers: self.services.layout.transfers(),
            moving_partitions: history.moving(cluster.id().partition_bits, self.local.settings.n).len() as u64,
            settled: history.settled(),
            service: self.services.layout.status(),
        }
    }

    /// `GET /admin/layout/plan`.
    fn layout_plan(&self) -> Result<LayoutPlan, ApiError> {
        let cluster = &self.local.cluster;
        let next = cluster.proposal().map_err(layout_error)?;
        let plan = cluster.layout_plan().map_err(layout_error)?;
        // Keys to move, estimated from this node's copies: a partition it holds counts
        // what it holds; one it does not counts the average of those it does.
        let forest = self.local.replicas.forest();
        let held: Vec<u64> = (0..forest.partition_count())
            .map(|p| forest.key_count(p))
            .filter(|&k| k > 0)
            .collect();
        let average = if held.is_empty() {
            0
        } else {
            held.iter().sum::<u64>() / held.len() as u64
        };
        let mut copies = 0u64;
        let mut keys = 0u64;
        for m in &plan.moves {
            let gaining = m.gaining().len() as u64;
            let here = forest.key_count(m.partition.0);
            copies += gaining;
            keys += gaining * if here > 0 { here } else { average };
        }
        let partitions = plan
            .partitions
            .iter()
            .map(|(id, (before, after))| {
                (
                    id.to_string(),
                    Shares {
                        before: *before,
                        after: *after,
                    },
                )
            })
            .collect();
        Ok(LayoutPlan {
            version: next.version,
            owners: next.owners.keys().map(|id| id.to_string()).collect(),
            moves: plan.moves.len() as u64,
            partition_copies_to_send: copies,
            keys_to_move_estimate: keys,
            partitions,
            changes: plan
                .moves
                .iter()
                .map(|m| serde_json::to_value(m).expect("a move serialises"))
                .collect(),
        })
    }

    fn namespaces(&self) -> Namespaces {
        self.list_namespaces()
    }

    fn namespace(&self, name: &str) -> Result<Namespace, ApiError> {
        self.show_namespace(name)
    }

    async fn create_namespace(&self, name: &str, body: &[u8]) -> Result<(bool, Namespace), ApiError> {
        self.make_namespace(name, body).await
    }

    fn tune_namespace(&self, name: &str, body: &[u8]) -> Result<Namespace, ApiError> {
        self.set_namespace(name, body)
    }

    /// `POST /admin/layout/stage`.
    fn layout_stage(&self, body: &[u8]) -> Result<Layout, ApiError> {
        let change: Change = serde_json::from_slice(body).map_err(|e| ApiError::Layout {
            status: 400,
            code: crate::roles::services::layout::BAD_CHANGE,
            message: format!(
                "the body must be one change: {{\"join\":ID}}, {{\"leave\":ID}}, {{\"remove\":ID}}, \
                     {{\"replace\":{{\"old\":ID,\"new\":ID}}}} or {{\"capacity\":{{\"id\":ID,\"tokens\":N}}}} ({e})"
            ),
        })?;
        self.local.cluster.stage(change).map_err(layout_error)?;
        Ok(self.layout())
    }

    /// `POST /admin/layout/revert`.
    fn layout_revert(&self) -> Layout {
        self.local.cluster.revert();
        self.layout()
    }

    /// `POST /admin/layout/commit`.
    fn layout_commit(&self, body: &[u8]) -> impl Future<Output = Result<Committed, ApiError>> + Send {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Commit {
            version: u64,
        }
        let asked: Result<Commit, ApiError> = object(body, "{\"version\": V}, V being the current layout version + 1");
        async move {
            let next = commit(&self.local, asked?.version).await?;
            Ok(Committed {
                version: next.version,
                layout: self.layout(),
            })
        }
    }

    fn metrics(&self) -> (&'static str, String) {
        (crate::env::metrics::CONTENT_TYPE, self.render_metrics())
    }

    fn overview(&self) -> impl Future<Output = Overview> + Send {
        self.gather_overview()
    }
}
