//! `GET /metrics`: the event metrics the request path recorded, and the node's state read
//! now (members, layout, hints, anti-entropy, RocksDB, the process, the runtime).

use dynakv_http_api::AdminService;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Registry, Unit};

use super::Admin;

impl Admin {
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
        let p = crate::env::metrics::process_figures();
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
        crate::env::metrics::encode_text(&reg)
    }
}
