//! This node's live figures (the `Stats` verb, its own part of `/admin/overview`, and the
//! storage counts `/metrics` shows), computed at most so often and shared by every
//! caller.

use parking_lot::{Mutex, RwLock};

use crate::local::Local;
use crate::roles::services::Services;
use crate::transport::message::{ExchangeStat, NodeStats, TransferStat};

/// How often the figures are computed at most: every open web view asks every node
/// once a second, and counting hints scans them.
pub const STATS_EVERY_MS: u64 = 1_000;
/// How often the Merkle roots are read at most: under writes a root must be rehashed
/// from its dirty segments, over every partition the node replicates (in one measured
/// run, reading them every second cost a tenth of YCSB A's throughput).
pub const ROOTS_EVERY_MS: u64 = 10_000;

/// How long counts that scan storage (pending hints, tombstones) are reused: a
/// Prometheus per replica and every open web view would each rescan them otherwise.
pub const SCANS_EVERY_MS: u64 = 5_000;

/// The node's figures ([`node_stats`]), computed at most every [`STATS_EVERY_MS`], with
/// roots at most every [`ROOTS_EVERY_MS`] and storage scans at most every
/// [`SCANS_EVERY_MS`]. One caller computes while the others are served what was
/// computed last, so two workers are not both busy rehashing at once.
#[derive(Default)]
pub struct StatsCache {
    cached: RwLock<Cached>,
    computing: Mutex<()>,
    scans: Mutex<Option<(u64, Scans)>>,
}

/// The first bytes of each replicated partition's Merkle root.
type Roots = Vec<(u32, [u8; 8])>;

#[derive(Default)]
struct Cached {
    stats: Option<(u64, NodeStats)>,
    roots: Option<(u64, Roots)>,
}

/// Counts read by scanning storage.
#[derive(Clone, Debug, Default)]
pub struct Scans {
    pub hints: Option<crate::state::replica::HintSummary>,
    pub tombstones: Option<u64>,
}

impl StatsCache {
    pub fn get(&self, local: &Local, services: &Services) -> NodeStats {
        let now = local.clock.monotonic_ms();
        if let Some((at, stats)) = self.cached.read().stats.as_ref()
            && now.saturating_sub(*at) < STATS_EVERY_MS
        {
            return stats.clone();
        }
        let _computing = match self.computing.try_lock() {
            Some(guard) => guard,
            None => {
                if let Some((_, stale)) = self.cached.read().stats.as_ref() {
                    return stale.clone();
                }
                self.computing.lock()
            }
        };
        let roots = match self.cached.read().roots.as_ref() {
            Some((at, roots)) if now.saturating_sub(*at) < ROOTS_EVERY_MS => Some(roots.clone()),
            _ => None,
        };
        let roots = roots.unwrap_or_else(|| {
            let roots = partition_roots(local);
            self.cached.write().roots = Some((now, roots.clone()));
            roots
        });
        let stats = node_stats(local, services, roots, &self.scans(local).hints);
        self.cached.write().stats = Some((now, stats.clone()));
        stats
    }

    /// Pending hints and tombstones, counted at most every [`SCANS_EVERY_MS`].
    pub fn scans(&self, local: &Local) -> Scans {
        let now = local.clock.monotonic_ms();
        let mut scans = self.scans.lock();
        if let Some((at, s)) = scans.as_ref()
            && now.saturating_sub(*at) < SCANS_EVERY_MS
        {
            return s.clone();
        }
        let s = Scans {
            hints: local.replicas.hint_summary().ok(),
            tombstones: local.replicas.tombstone_count().ok(),
        };
        *scans = Some((now, s.clone()));
        s
    }
}

/// The first bytes of the Merkle root of each partition this node replicates.
fn partition_roots(local: &Local) -> Roots {
    let view = local.cluster.view();
    let ring = view.read_ring();
    let forest = local.replicas.forest();
    let me = local.id();
    ring.partitions()
        .filter(|p| ring.partition_preference(*p, local.settings.n).contains(&me))
        .map(|p| {
            let root = forest.root(p.0);
            let mut prefix = [0u8; 8];
            prefix.copy_from_slice(&root[..8]);
            (p.0, prefix)
        })
        .collect()
}

/// This node's live figures (the `Stats` verb and its own part of `/admin/overview`).
fn node_stats(
    local: &Local,
    services: &Services,
    roots: Roots,
    hints: &Option<crate::state::replica::HintSummary>,
) -> NodeStats {
    let now = local.clock.monotonic_ms();
    let wall = local.clock.wall_ms();
    NodeStats {
        recent: local.metrics.recent(wall),
        hints_pending: hints.as_ref().map_or(0, |h| h.by_owner.values().sum()),
        hints_oldest_ms: hints.as_ref().and_then(|h| h.oldest_ms).map(|t| wall.saturating_sub(t)),
        transfers: services
            .layout
            .transfers()
            .into_iter()
            .map(|t| TransferStat {
                version: t.version,
                partition: t.partition,
                from: t.from,
                to: t.to,
                state: t.state.to_string(),
                keys: t.keys,
                bytes: t.bytes,
            })
            .collect(),
        antientropy: services
            .antientropy
            .reports()
            .into_iter()
            .map(|(peer, r)| ExchangeStat {
                peer: peer.to_string(),
                last_exchange_ms_ago: r.finished_at_ms.map(|t| now.saturating_sub(t)),
                result: r.result,
            })
            .collect(),
        roots,
    }
}
