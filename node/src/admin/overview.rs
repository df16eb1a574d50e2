//! `GET /admin/overview`: the web view's figures, this node's and every member's (asked
//! over the cluster port), with per pair of replicas their Merkle-root agreement.

use std::collections::BTreeMap;

use dynakv_http_api::AdminService;
use dynakv_http_api::admin::{
    Exchange, Figures, LayoutSummary, NodeFigures, Overview, OverviewSettings, Pair, SeriesPoint, Transfer,
};

use super::Admin;
use crate::transport::message::{ExchangeStat, NodeStats, Stats};

fn figures(s: &NodeStats) -> NodeFigures {
    NodeFigures::Reached(Figures {
        reachable: true,
        window_s: s.recent.window_s,
        rate: s.recent.rate,
        errors: s.recent.errors,
        p50_ms: s.recent.p50_ms,
        p99_ms: s.recent.p99_ms,
        series: s
            .recent
            .series
            .iter()
            .map(|&(t, rate, p99_ms)| SeriesPoint { t, rate, p99_ms })
            .collect(),
        hints_pending: s.hints_pending,
        hints_oldest_ms: s.hints_oldest_ms,
        transfers: s
            .transfers
            .iter()
            .map(|t| Transfer {
                version: t.version,
                partition: t.partition,
                from: t.from.clone(),
                to: t.to.clone(),
                state: t.state.clone(),
                keys: t.keys,
                bytes: t.bytes,
            })
            .collect(),
        antientropy: s
            .antientropy
            .iter()
            .map(|e| Exchange {
                peer: e.peer.clone(),
                last_exchange_ms_ago: e.last_exchange_ms_ago,
                result: e.result.clone(),
            })
            .collect(),
    })
}

/// How long the overview waits for each member's figures.
const STATS_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

impl Admin {
    /// `GET /admin/overview`.
    pub(super) async fn gather_overview(&self) -> Overview {
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
        let nodes: BTreeMap<String, NodeFigures> = stats
            .iter()
            .map(|(id, s)| {
                let v = match s {
                    Ok(s) => figures(s),
                    Err(e) => NodeFigures::Unreached {
                        reachable: false,
                        error: e.clone(),
                    },
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
        let pairs: Vec<Pair> = pairs
            .into_iter()
            .map(|((a, b), (shared, compared, agree))| {
                // The more recent of the two sides' reports of their last exchange.
                let last = [exchange(&a, &b), exchange(&b, &a)]
                    .into_iter()
                    .flatten()
                    .filter(|e| e.last_exchange_ms_ago.is_some())
                    .min_by_key(|e| e.last_exchange_ms_ago);
                Pair {
                    a,
                    b,
                    shared,
                    compared,
                    // Unknown when nothing could be compared (a side did not answer).
                    agree: (compared > 0).then_some(agree),
                    last_exchange_ms_ago: last.and_then(|e| e.last_exchange_ms_ago),
                    result: last.map(|e| e.result.clone()),
                }
            })
            .collect();
        let history = &view.history;
        Overview {
            node: me.to_string(),
            time_ms: local.clock.wall_ms(),
            settings: OverviewSettings {
                n: n as u64,
                r: local.settings.r as u64,
                w: local.settings.w as u64,
                conflict: local.settings.mode.to_string(),
                partitions: preference.len() as u64,
            },
            layout: LayoutSummary {
                version: view.current().version,
                read_version: view.read,
                settled: history.settled(),
                moving_partitions: history.moving(local.cluster.id().partition_bits, n).len() as u64,
            },
            ring: preference,
            members,
            nodes,
            pairs,
            namespaces: self.list_namespaces().namespaces,
        }
    }
}
