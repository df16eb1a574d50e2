//! Hinted handoff: deliver the writes this node holds for replicas that were down, once
//! they are alive again, then delete them. Each round also publishes the age of the
//! oldest pending hint to gossip (the tombstone collector of every node needs it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dynakv_ring::{NodeId, Status};
use futures::future::BoxFuture;
use tracing::{debug, info, warn};

use super::Service;
use crate::local::Local;
use crate::state::replica::Hint;
use crate::transport::message;

/// Hints per delivery request at most...
const BATCH: usize = 256;
/// ...and bytes of values (a larger single hint still goes, alone).
const BATCH_BYTES: usize = 4 << 20;
/// Batches per owner per round, so one owner's backlog cannot hog the loop.
const BATCHES_PER_ROUND: usize = 8;

pub struct Handoff {
    local: Arc<Local>,
    interval: Duration,
    tombstone_grace: Duration,
    delivered: AtomicU64,
    discarded: AtomicU64,
}

/// Whether a hint stored at `created_ms` must be discarded rather than delivered, by a
/// holder that `owns` partitions in an active layout or not. A holder that owns nothing
/// was removed (or replaced) while it was down: from then on its hints no longer held
/// tombstone collection up, so one older than the tombstone grace may predate a delete
/// whose tombstone is gone, and delivering it would bring the key back. (The write it
/// carries reached W - 1 replicas besides the hint.) An owner's hints are gossiped as
/// its oldest hint and hold collection up, so they are always safe to deliver.
pub fn stale_hint(created_ms: u64, now_ms: u64, grace_ms: u64, owns: bool) -> bool {
    !owns && now_ms.saturating_sub(created_ms) > grace_ms
}

impl Handoff {
    pub fn new(local: Arc<Local>, interval: Duration, tombstone_grace: Duration) -> Handoff {
        Handoff {
            local,
            interval,
            tombstone_grace,
            delivered: AtomicU64::new(0),
            discarded: AtomicU64::new(0),
        }
    }

    /// Hints discarded as stale ([`stale_hint`]) since start.
    pub fn discarded(&self) -> u64 {
        self.discarded.load(Ordering::Relaxed)
    }

    /// `hints` without the stale ones, which are deleted here.
    fn without_stale(&self, owner: &NodeId, hints: Vec<Hint>, owns: bool) -> Result<Vec<Hint>, String> {
        let now = self.local.clock.wall_ms();
        let grace = self.tombstone_grace.as_millis() as u64;
        let (stale, fresh): (Vec<Hint>, Vec<Hint>) = hints
            .into_iter()
            .partition(|h| stale_hint(h.created_ms, now, grace, owns));
        let mut discarded = 0;
        for h in &stale {
            if self.local.replicas.remove_hint(owner, h).map_err(|e| e.to_string())? {
                discarded += 1;
            }
        }
        if discarded > 0 {
            self.discarded.fetch_add(discarded, Ordering::Relaxed);
            warn!(
                owner = %owner,
                discarded,
                "discarded hints older than the tombstone grace: this node owns no partitions any more (it was \
                 removed while down), and a delete they predate may have been collected"
            );
        }
        Ok(fresh)
    }

    /// Hints delivered (and deleted here) since start.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// One delivery round.
    pub async fn deliver(&self) -> Result<(), String> {
        let (replicas, cluster) = (&self.local.replicas, &self.local.cluster);
        if !replicas.has_hints() {
            cluster.set_oldest_hint(None);
            return Ok(());
        }
        let summary = replicas.hint_summary().map_err(|e| e.to_string())?;
        cluster.set_oldest_hint(summary.oldest_ms);
        let view = cluster.view();
        let me_owns = view.current().owners.is_empty() || view.history.versions().iter().any(|l| l.owns(cluster.me()));
        for owner in summary.by_owner.keys() {
            let Ok(owner) = NodeId::new(owner.as_str()) else {
                continue;
            };
            // An owner no active layout names any more (removed or replaced): its hints
            // go to the keys' replicas now.
            let owns = view.history.versions().iter().any(|l| l.owns(&owner));
            if !owns && !view.current().owners.is_empty() {
                let hints = replicas
                    .hints_for(&owner, BATCH, BATCH_BYTES)
                    .map_err(|e| e.to_string())?;
                let hints = self.without_stale(&owner, hints, me_owns)?;
                self.rehome(&owner, hints).await?;
                continue;
            }
            let Some((addr, status)) = cluster.member(&owner) else {
                continue;
            };
            if status != Status::Alive {
                continue;
            }
            for _ in 0..BATCHES_PER_ROUND {
                let hints = replicas
                    .hints_for(&owner, BATCH, BATCH_BYTES)
                    .map_err(|e| e.to_string())?;
                let hints = self.without_stale(&owner, hints, me_owns)?;
                // A hint for a key whose partition the owner no longer replicates in
                // any active layout goes to the key's replicas instead: the owner would
                // drop it with the partition.
                let (hints, moved): (Vec<_>, Vec<_>) = hints.into_iter().partition(|h| {
                    let plan = cluster.plan(&h.key);
                    plan.primaries
                        .iter()
                        .chain(plan.moving.iter().flatten())
                        .any(|r| r.id == owner)
                });
                if !moved.is_empty() {
                    self.rehome(&owner, moved).await?;
                    continue;
                }
                if hints.is_empty() {
                    break;
                }
                let items = hints.iter().map(|h| (h.key.clone(), h.register.clone())).collect();
                let timeout = self.local.settings.request_timeout;
                let batch = message::MergeBatch {
                    items,
                    layout: self.local.cluster.newest_known(),
                };
                if let Err(e) = self.local.peers.call(&addr, batch, timeout).await {
                    debug!(owner = %owner, error = %e, "hint delivery failed; will retry");
                    break;
                }
                let mut delivered = 0;
                for h in &hints {
                    if replicas.remove_hint(&owner, h).map_err(|e| e.to_string())? {
                        delivered += 1;
                    }
                }
                self.delivered.fetch_add(delivered, Ordering::Relaxed);
                info!(owner = %owner, delivered, "hints delivered");
            }
        }
        let after = replicas.hint_summary().map_err(|e| e.to_string())?;
        cluster.set_oldest_hint(after.oldest_ms);
        Ok(())
    }
}

impl Handoff {
    /// Delivers `hints` held for `owner`, which no longer replicates their keys, to
    /// every live replica of each key (a hint is deleted once all of them have it).
    async fn rehome(&self, owner: &NodeId, hints: Vec<Hint>) -> Result<(), String> {
        let (replicas, cluster) = (&self.local.replicas, &self.local.cluster);
        let timeout = self.local.settings.request_timeout;
        let mut delivered = 0;
        for h in &hints {
            let plan = cluster.plan(&h.key);
            let mut targets: Vec<_> = plan
                .primaries
                .into_iter()
                .chain(plan.moving.into_iter().flatten())
                .collect();
            targets.sort_by(|a, b| a.id.cmp(&b.id));
            targets.dedup_by(|a, b| a.id == b.id);
            targets.retain(|r| !r.is_dead());
            if targets.is_empty() {
                continue;
            }
            let mut all = true;
            // Each copy is synced before the hint goes (a batch is synced by its receiver).
            for t in &targets {
                let ok = if t.is_self {
                    replicas.merge(&h.key, &h.register).is_ok() && replicas.store().sync().is_ok()
                } else {
                    let req = message::MergeBatch {
                        items: vec![(h.key.clone(), h.register.clone())],
                        layout: self.local.cluster.newest_known(),
                    };
                    self.local.peers.call(&t.addr, req, timeout).await.is_ok()
                };
                all &= ok;
            }
            if all && replicas.remove_hint(owner, h).map_err(|e| e.to_string())? {
                delivered += 1;
            }
        }
        if delivered > 0 {
            self.delivered.fetch_add(delivered, Ordering::Relaxed);
            info!(owner = %owner, delivered, "hints for a member that owns nothing any more delivered to the keys' replicas");
        }
        Ok(())
    }
}

impl Service for Handoff {
    fn name(&self) -> &'static str {
        "handoff"
    }

    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }

    fn round(self: Arc<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if let Err(e) = self.deliver().await {
                warn!(error = %e, "hint delivery round failed");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::stale_hint;

    #[test]
    fn only_a_holder_that_owns_nothing_discards_and_only_hints_past_the_grace() {
        let grace = 3_600_000;
        let cases = [
            // (created, now, owns, stale)
            (1_000, 1_000 + grace + 1, false, true),
            (1_000, 1_000 + grace, false, false),
            (1_000, 5_000, false, false),
            (1_000, 1_000 + 10 * grace, true, false),
            // A clock behind the hint's stamp never makes it stale.
            (9_000, 1_000, false, false),
        ];
        for (created, now, owns, stale) in cases {
            assert_eq!(stale_hint(created, now, grace, owns), stale, "{created} {now} {owns}");
        }
    }
}
