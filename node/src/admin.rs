//! What an operator sees of a node: its members, a key's replicas, its own copy of a key,
//! and the state of repair (`/admin/antientropy`).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use dynakv_crdt::Register;
use dynakv_http_api::{AdminService, ApiError, Key, MemberJson};
use dynakv_ring::NodeId;
use dynakv_ring::layout::Change;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Registry, Unit};
use serde_json::json;

use crate::coordinator::{Coordinator, storage_error};
use crate::local::Local;
use crate::services::Services;
use crate::services::layout::{commit, layout_error};
use crate::transport::message::{ExchangeStat, NodeStats, Stats};

/// The parts whose state the admin views show.
pub struct Admin {
    pub local: Arc<Local>,
    pub coordinator: Arc<Coordinator>,
    pub services: Services,
    /// Connections accepted and refused on the cluster port.
    pub refusals: Arc<crate::transport::port::Refusals>,
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
    fn members(&self) -> Vec<MemberJson> {
        self.local.cluster.with_membership(|m, now| {
            m.members(now)
                .map(|v| MemberJson {
                    id: v.info.id.to_string(),
                    addr: v.info.api.clone(),
                    cluster_addr: v.info.addr.clone(),
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
        let view = self.local.cluster.view();
        let ring = view.read_ring();
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
        let view = local.cluster.view();
        let ring = view.read_ring();
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
                "discarded_stale": self.services.handoff.discarded(),
            },
            "tombstones": {
                "pending": local.replicas.tombstone_count().ok(),
                "collected": self.services.tombstones.collected(),
            },
            "peers": peer_list,
            "partitions": partitions,
            "transfers": self.services.layout.transfers(),
            "cluster_port": self.refusals.to_json(),
        })
    }

    /// `GET /admin/layout`.
    fn layout(&self) -> serde_json::Value {
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
                .map(|(i, s)| (Some(i.api), Some(i.addr), Some(s.as_str())))
                .unwrap_or((None, None, None));
            members.push(json!({
                "id": id.to_string(),
                "addr": addr,
                "cluster_addr": cluster_addr,
                "tokens": tokens,
                "state": state,
                "status": status,
                "acked": history.acked(id),
                "synced": history.synced(id),
                "reads": history.reads(id),
            }));
        }
        let staged: Vec<serde_json::Value> = if history.staging.base == current.version {
            history
                .staging
                .entries
                .values()
                .map(|e| json!({"change": e.change, "by": e.stamp.by.to_string(), "at_ms": e.stamp.at_ms}))
                .collect()
        } else {
            Vec::new()
        };
        json!({
            "node": cluster.me().to_string(),
            "version": current.version,
            "read_version": view.read,
            "active_versions": history.versions().iter().map(|l| l.version).collect::<Vec<_>>(),
            "members": members,
            "staged": staged,
            "transfers": self.services.layout.transfers(),
            "moving_partitions": history.moving(cluster.id().partition_bits, self.local.settings.n).len(),
            "settled": history.settled(),
            "service": self.services.layout.status(),
        })
    }

    /// `GET /admin/layout/plan`.
    fn layout_plan(&self) -> Result<serde_json::Value, ApiError> {
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
        let partitions: serde_json::Map<String, serde_json::Value> = plan
            .partitions
            .iter()
            .map(|(id, (before, after))| (id.to_string(), json!({"before": before, "after": after})))
            .collect();
        Ok(json!({
            "version": next.version,
            "owners": next.owners.keys().map(|id| id.to_string()).collect::<Vec<_>>(),
            "moves": plan.moves.len(),
            "partition_copies_to_send": copies,
            "keys_to_move_estimate": keys,
            "partitions": partitions,
            "changes": plan.moves,
        }))
    }

    /// `POST /admin/layout/stage`.
    fn layout_stage(&self, body: &[u8]) -> Result<serde_json::Value, ApiError> {
        let change: Change = serde_json::from_slice(body).map_err(|e| ApiError::Layout {
            status: 400,
            code: crate::services::layout::BAD_CHANGE,
            message: format!(
                "the body must be one change: {{\"join\":ID}}, {{\"leave\":ID}}, {{\"remove\":ID}}, \
                     {{\"replace\":{{\"old\":ID,\"new\":ID}}}} or {{\"capacity\":{{\"id\":ID,\"tokens\":N}}}} ({e})"
            ),
        })?;
        self.local.cluster.stage(change).map_err(layout_error)?;
        Ok(self.layout())
    }

    /// `POST /admin/layout/revert`.
    fn layout_revert(&self) -> serde_json::Value {
        self.local.cluster.revert();
        self.layout()
    }

    /// `POST /admin/layout/commit`.
    fn layout_commit(&self, body: &[u8]) -> impl Future<Output = Result<serde_json::Value, ApiError>> + Send {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Commit {
            version: u64,
        }
        let asked: Result<Commit, ApiError> = serde_json::from_slice(body).map_err(|e| {
            ApiError::BadParameter(format!(
                "the body must be {{\"version\": V}}, V being the current layout version + 1 ({e})"
            ))
        });
        async move {
            let next = commit(&self.local, asked?.version).await?;
            Ok(json!({"version": next.version, "layout": self.layout()}))
        }
    }

    fn metrics(&self) -> (&'static str, String) {
        (crate::metrics::CONTENT_TYPE, self.render_metrics())
    }

    fn overview(&self) -> impl Future<Output = serde_json::Value> + Send {
        self.gather_overview()
    }
}

fn stats_json(s: &NodeStats) -> serde_json::Value {
    json!({
        "reachable": true,
        "window_s": s.recent.window_s,
        "rate": s.recent.rate,
        "errors": s.recent.errors,
        "p50_ms": s.recent.p50_ms,
        "p99_ms": s.recent.p99_ms,
        "series": s.recent.series.iter().map(|(t, n, p99)| json!({"t": t, "rate": n, "p99_ms": p99})).collect::<Vec<_>>(),
        "hints_pending": s.hints_pending,
        "hints_oldest_ms": s.hints_oldest_ms,
        "transfers": s.transfers.iter().map(|t| json!({
            "version": t.version, "partition": t.partition, "from": t.from, "to": t.to,
            "state": t.state, "keys": t.keys, "bytes": t.bytes,
        })).collect::<Vec<_>>(),
        "antientropy": s.antientropy.iter().map(|e| json!({
            "peer": e.peer, "last_exchange_ms_ago": e.last_exchange_ms_ago, "result": e.result,
        })).collect::<Vec<_>>(),
    })
}

/// How long the overview waits for each member's figures.
const STATS_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

impl Admin {
    /// `GET /admin/overview`.
    async fn gather_overview(&self) -> serde_json::Value {
        let local = &self.local;
        let me = local.id().clone();
        let members = self.members();
        let view = local.cluster.view();
        let ring = view.read_ring();
        let n = local.settings.n;
        let preference: Vec<Vec<String>> = ring
            .partitions()
            .map(|p| {
                ring.partition_preference(p, n)
                    .into_iter()
                    .map(|id| id.to_string())
                    .collect()
            })
            .collect();
        // Every member's figures, asked at once; our own are read directly.
        let asks = local.cluster.with_membership(|m, now| {
            m.members(now)
                .filter(|v| v.info.id != me && v.status != dynakv_ring::Status::Left)
                .map(|v| (v.info.id.to_string(), v.info.addr.clone()))
                .collect::<Vec<_>>()
        });
        let answers = futures::future::join_all(asks.into_iter().map(|(id, addr)| async move {
            let r = local.peers.call(&addr, Stats {}, STATS_TIMEOUT).await;
            (id, r.map(|s| *s).map_err(|e| e.to_string()))
        }))
        .await;
        let mut stats: BTreeMap<String, Result<NodeStats, String>> = answers.into_iter().collect();
        stats.insert(me.to_string(), Ok(self.services.stats.get(local, &self.services)));
        let nodes: serde_json::Map<String, serde_json::Value> = stats
            .iter()
            .map(|(id, s)| {
                let v = match s {
                    Ok(s) => stats_json(s),
                    Err(e) => json!({"reachable": false, "error": e}),
                };
                (id.clone(), v)
            })
            .collect();
        // Per pair of replicas: partitions shared, how many of those both sides reported a
        // root for (each side's roots are as of its last sample, at most ROOTS_EVERY_MS
        // old), and how many of those were equal.
        let mut pairs: BTreeMap<(String, String), (u64, u64, u64)> = BTreeMap::new();
        let roots: BTreeMap<&str, BTreeMap<u32, [u8; 8]>> = stats
            .iter()
            .filter_map(|(id, s)| Some((id.as_str(), s.as_ref().ok()?.roots.iter().copied().collect())))
            .collect();
        for (p, replicas) in preference.iter().enumerate() {
            for (i, a) in replicas.iter().enumerate() {
                for b in &replicas[i + 1..] {
                    let (a, b) = if a < b { (a, b) } else { (b, a) };
                    let entry = pairs.entry((a.clone(), b.clone())).or_default();
                    entry.0 += 1;
                    let root = |id: &str| roots.get(id).and_then(|r| r.get(&(p as u32)));
                    if let (Some(x), Some(y)) = (root(a), root(b)) {
                        entry.1 += 1;
                        entry.2 += u64::from(x == y);
                    }
                }
            }
        }
        let exchange = |a: &str, b: &str| -> Option<&ExchangeStat> {
            stats.get(a)?.as_ref().ok()?.antientropy.iter().find(|e| e.peer == b)
        };
        let pairs: Vec<serde_json::Value> = pairs
            .into_iter()
            .map(|((a, b), (shared, compared, agree))| {
                // The more recent of the two sides' reports of their last exchange.
                let last = [exchange(&a, &b), exchange(&b, &a)]
                    .into_iter()
                    .flatten()
                    .filter(|e| e.last_exchange_ms_ago.is_some())
                    .min_by_key(|e| e.last_exchange_ms_ago);
                json!({
                    "a": a, "b": b, "shared": shared, "compared": compared,
                    // Unknown when nothing could be compared (a side did not answer).
                    "agree": (compared > 0).then_some(agree),
                    "last_exchange_ms_ago": last.and_then(|e| e.last_exchange_ms_ago),
                    "result": last.map(|e| e.result.clone()),
                })
            })
            .collect();
        let history = &view.history;
        json!({
            "node": me.to_string(),
            "time_ms": local.clock.wall_ms(),
            "settings": {
                "n": n,
                "r": local.settings.r,
                "w": local.settings.w,
                "conflict": local.settings.mode.to_string(),
                "partitions": preference.len(),
            },
            "layout": {
                "version": view.current().version,
                "read_version": view.read,
                "settled": history.settled(),
                "moving_partitions": history.moving(local.cluster.id().partition_bits, n).len(),
            },
            "ring": preference,
            "members": members,
            "nodes": nodes,
            "pairs": pairs,
        })
    }

    /// `GET /metrics`: the event metrics and the node's state, read now.
    pub fn render_metrics(&self) -> String {
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
        use std::sync::atomic::Ordering::Relaxed;

        type L1 = [(&'static str, String); 1];
        type L2 = [(&'static str, String); 2];
        let local = &self.local;
        // Node-to-node series follow the membership: a peer that left or moved goes.
        let current: std::collections::HashSet<String> = local.cluster.with_membership(|m, now| {
            m.members(now)
                .filter(|v| v.status != dynakv_ring::Status::Left)
                .map(|v| v.info.addr.clone())
                .collect()
        });
        local.metrics.forget_peers_except(&current);
        let mut reg = Registry::default();
        local.metrics.register(&mut reg);
        let counter = |reg: &mut Registry, name: &str, help: &str, v: u64| {
            reg.register(name, help, ConstCounter::new(v));
        };
        let gauge = |reg: &mut Registry, name: &str, help: &str, v: i64| {
            reg.register(name, help, ConstGauge::new(v));
        };
        let stats = self.coordinator.stats();
        counter(
            &mut reg,
            "dynakv_read_repairs",
            "Replicas repaired after a read found them stale",
            stats.read_repairs.load(Relaxed),
        );
        counter(
            &mut reg,
            "dynakv_hinted_writes",
            "Writes a fallback replica took for a replica that was down (sloppy quorum)",
            stats.hinted_writes.load(Relaxed),
        );
        // Hints.
        let wall = local.clock.wall_ms();
        let members = self.members();
        // Other members, for series that exist (at 0) before their first event.
        let others: Vec<String> = members
            .iter()
            .filter(|m| m.id != local.id().as_str() && m.status != "left")
            .map(|m| m.id.clone())
            .collect();
        let scans = self.services.stats.scans(local);
        if let Some(h) = &scans.hints {
            let pending = Family::<L1, Gauge>::default();
            for owner in &others {
                let _ = pending.get_or_create(&[("owner", owner.clone())]);
            }
            for (owner, n) in &h.by_owner {
                pending.get_or_create(&[("owner", owner.clone())]).set(*n as i64);
            }
            reg.register(
                "dynakv_hints_pending",
                "Hints held, by the replica they are for",
                pending,
            );
            let age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
            age.set(h.oldest_ms.map_or(0.0, |t| wall.saturating_sub(t) as f64 / 1000.0));
            reg.register_with_unit(
                "dynakv_hints_oldest_age",
                "Age of the oldest hint held (0 when none)",
                Unit::Seconds,
                age,
            );
        }
        counter(
            &mut reg,
            "dynakv_hints_delivered",
            "Hints handed over to their replica",
            self.services.handoff.delivered(),
        );
        counter(
            &mut reg,
            "dynakv_hints_discarded",
            "Hints dropped as stale (older than the tombstone grace)",
            self.services.handoff.discarded(),
        );
        // Anti-entropy, by peer.
        let exchanges = Family::<L2, Counter>::default();
        let pushed = Family::<L1, Counter>::default();
        let pulled = Family::<L1, Counter>::default();
        let last = Family::<L1, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let now = local.clock.monotonic_ms();
        for p in &others {
            for result in ["ok", "error"] {
                let _ = exchanges.get_or_create(&[("peer", p.clone()), ("result", result.into())]);
            }
            let _ = pushed.get_or_create(&[("peer", p.clone())]);
            let _ = pulled.get_or_create(&[("peer", p.clone())]);
        }
        for (peer, r) in self.services.antientropy.reports() {
            let p = peer.to_string();
            exchanges
                .get_or_create(&[("peer", p.clone()), ("result", "ok".into())])
                .inc_by(r.total_ok);
            exchanges
                .get_or_create(&[("peer", p.clone()), ("result", "error".into())])
                .inc_by(r.total_failed);
            pushed.get_or_create(&[("peer", p.clone())]).inc_by(r.total_pushed);
            pulled.get_or_create(&[("peer", p.clone())]).inc_by(r.total_pulled);
            if let Some(t) = r.finished_at_ms {
                last.get_or_create(&[("peer", p)])
                    .set(now.saturating_sub(t) as f64 / 1000.0);
            }
        }
        reg.register(
            "dynakv_antientropy_exchanges",
            "Merkle-tree exchanges this node drove, by peer and result",
            exchanges,
        );
        reg.register(
            "dynakv_antientropy_keys_pushed",
            "Keys anti-entropy sent to a peer that lacked their version",
            pushed,
        );
        reg.register(
            "dynakv_antientropy_keys_pulled",
            "Keys anti-entropy fetched from a peer",
            pulled,
        );
        reg.register_with_unit(
            "dynakv_antientropy_last_exchange_age",
            "Time since the last exchange with each peer ended",
            Unit::Seconds,
            last,
        );
        // Tombstones.
        if let Some(n) = scans.tombstones {
            gauge(
                &mut reg,
                "dynakv_tombstones_pending",
                "Tombstones stored and not yet collected",
                n as i64,
            );
        }
        counter(
            &mut reg,
            "dynakv_tombstones_collected",
            "Tombstones removed once every replica had them and the grace passed",
            self.services.tombstones.collected(),
        );
        // Members, as this node sees them: one series per member and status, 1 for the
        // current one.
        let status = Family::<L2, Gauge>::default();
        let generation = Family::<L1, Gauge>::default();
        for m in &members {
            for s in ["alive", "suspect", "dead", "left"] {
                status
                    .get_or_create(&[("member", m.id.clone()), ("status", s.into())])
                    .set(i64::from(m.status == s));
            }
            generation
                .get_or_create(&[("member", m.id.clone())])
                .set(m.generation as i64);
        }
        reg.register(
            "dynakv_member_status",
            "1 for each member's current status as this node sees it",
            status,
        );
        reg.register(
            "dynakv_member_generation",
            "Each member's generation (it grows at every restart)",
            generation,
        );
        let gossip_rounds = self.services.gossip.rounds();
        counter(
            &mut reg,
            "dynakv_gossip_rounds",
            "Gossip rounds this node started",
            gossip_rounds,
        );
        // Layout and transfers.
        let view = local.cluster.view();
        gauge(
            &mut reg,
            "dynakv_layout_version",
            "Current cluster layout version",
            view.current().version as i64,
        );
        gauge(
            &mut reg,
            "dynakv_layout_read_version",
            "Layout version reads use",
            view.read as i64,
        );
        gauge(
            &mut reg,
            "dynakv_partitions_moving",
            "Partitions whose replicas differ between the active layout versions",
            view.history
                .moving(local.cluster.id().partition_bits, local.settings.n)
                .len() as i64,
        );
        let transfers = Family::<L1, Gauge>::default();
        for state in ["pending", "running", "done", "failed", "skipped", "not_needed"] {
            let _ = transfers.get_or_create(&[("state", state.into())]);
        }
        for t in self.services.layout.transfers() {
            transfers.get_or_create(&[("state", t.state.to_string())]).inc();
        }
        reg.register(
            "dynakv_transfers",
            "This node's incoming partition transfers, by state",
            transfers,
        );
        let (keys_fetched, bytes_fetched) = self.services.layout.fetched();
        counter(
            &mut reg,
            "dynakv_transfer_keys",
            "Keys fetched by partition transfers",
            keys_fetched,
        );
        reg.register_with_unit(
            "dynakv_transfer",
            "Bytes fetched by partition transfers",
            Unit::Bytes,
            ConstCounter::new(bytes_fetched),
        );
        // The cluster port and the replica streams.
        let refused = Family::<L1, Counter>::default();
        for reason in [
            "no_secret",
            "bad_proof",
            "wrong_cluster",
            "malformed",
            "tls",
            "certificate_id",
            "timeout",
            "too_many_connections",
        ] {
            let _ = refused.get_or_create(&[("reason", reason.into())]);
        }
        for (reason, n) in self.refusals.counts() {
            refused.get_or_create(&[("reason", reason.to_string())]).inc_by(n);
        }
        reg.register(
            "dynakv_cluster_connections_refused",
            "Connections to the cluster port refused, by reason",
            refused,
        );
        counter(
            &mut reg,
            "dynakv_cluster_connections_accepted",
            "Connections to the cluster port that passed the handshake",
            self.refusals.accepted(),
        );
        let opened = Family::<L1, Counter>::default();
        for (peer, n) in local.peers.streams_opened() {
            opened.get_or_create(&[("peer", peer)]).inc_by(n);
        }
        reg.register(
            "dynakv_replica_stream_opens",
            "Replica streams opened to each peer: the first, then one per reconnect",
            opened,
        );
        // RocksDB.
        for f in local.replicas.store().engine_figures() {
            gauge(&mut reg, &format!("dynakv_rocksdb_{}", f.name), f.help, f.value as i64);
        }
        // The async runtime: how busy its workers are and what waits for them.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let rt = handle.metrics();
            gauge(
                &mut reg,
                "tokio_workers",
                "Async worker threads",
                rt.num_workers() as i64,
            );
            gauge(
                &mut reg,
                "tokio_alive_tasks",
                "Tasks alive on the async runtime",
                rt.num_alive_tasks() as i64,
            );
            gauge(
                &mut reg,
                "tokio_global_queue_depth",
                "Tasks waiting in the runtime's shared queue",
                rt.global_queue_depth() as i64,
            );
            let busy = Family::<L1, Counter<f64, std::sync::atomic::AtomicU64>>::default();
            let parks = Family::<L1, Counter>::default();
            for w in 0..rt.num_workers() {
                busy.get_or_create(&[("worker", w.to_string())])
                    .inc_by(rt.worker_total_busy_duration(w).as_secs_f64());
                parks
                    .get_or_create(&[("worker", w.to_string())])
                    .inc_by(rt.worker_park_count(w));
            }
            reg.register_with_unit(
                "tokio_worker_busy",
                "Time each async worker spent running tasks",
                Unit::Seconds,
                busy,
            );
            reg.register("tokio_worker_parks", "Times each async worker went idle", parks);
        }
        // The process.
        let p = crate::metrics::process_figures();
        if let Some(v) = p.resident_bytes {
            reg.register_with_unit(
                "process_resident_memory",
                "Resident memory size",
                Unit::Bytes,
                ConstGauge::new(v as i64),
            );
        }
        if let Some(v) = p.open_fds {
            gauge(&mut reg, "process_open_fds", "Open file descriptors", v as i64);
        }
        if let Some(v) = p.max_fds {
            gauge(&mut reg, "process_max_fds", "Limit of open file descriptors", v as i64);
        }
        if let Some(v) = p.threads {
            gauge(&mut reg, "process_threads", "Threads of the process", v as i64);
        }
        if let Some(v) = p.cpu_seconds {
            reg.register_with_unit(
                "process_cpu",
                "User and system CPU time spent",
                Unit::Seconds,
                ConstCounter::new(v),
            );
        }
        let info = Family::<L2, Gauge>::default();
        info.get_or_create(&[
            ("version", env!("CARGO_PKG_VERSION").into()),
            ("node", local.id().to_string()),
        ])
        .set(1);
        reg.register(
            "dynakv_build_info",
            "Always 1; the labels name the build and the node",
            info,
        );
        crate::metrics::encode_text(&reg)
    }
}
