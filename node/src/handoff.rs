//! Hinted handoff: deliver the writes this node holds for replicas that were down, once
//! they are alive again, then delete them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dynakv_http_api::wire::{ReplicaRequest, ReplicaResponse};
use dynakv_ring::Status;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::coordinator::Node;

/// Hints per delivery request at most...
const BATCH: usize = 256;
/// ...and bytes of values (a larger single hint still goes, alone).
const BATCH_BYTES: usize = 4 << 20;
/// Batches per owner per round, so one owner's backlog cannot hog the loop.
const BATCHES_PER_ROUND: usize = 8;

pub async fn run(node: Arc<Node>, interval: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = round(&node).await {
            warn!(error = %e, "hint delivery round failed");
        }
    }
}

/// One delivery round; also publishes the age of the oldest pending hint to gossip.
async fn round(node: &Node) -> Result<(), String> {
    let replicas = node.replicas();
    if !replicas.has_hints() {
        node.cluster().set_oldest_hint(None);
        return Ok(());
    }
    let summary = replicas.hint_summary().map_err(|e| e.to_string())?;
    node.cluster().set_oldest_hint(summary.oldest_ms);
    for owner in summary.by_owner.keys() {
        let Ok(owner) = dynakv_ring::NodeId::new(owner.as_str()) else {
            continue;
        };
        let Some((addr, status)) = node.cluster().member(&owner) else {
            continue;
        };
        if status != Status::Alive {
            continue;
        }
        for _ in 0..BATCHES_PER_ROUND {
            let hints = replicas
                .hints_for(&owner, BATCH, BATCH_BYTES)
                .map_err(|e| e.to_string())?;
            if hints.is_empty() {
                break;
            }
            let items = hints.iter().map(|h| (h.key.clone(), h.register.clone())).collect();
            let timeout = node.settings().request_timeout;
            match node
                .rpc()
                .replica(&addr, &ReplicaRequest::MergeBatch { items }, timeout)
                .await
            {
                Ok(ReplicaResponse::Merged) => {}
                Ok(other) => return Err(format!("unexpected answer {other:?}")),
                Err(e) => {
                    debug!(owner = %owner, error = %e, "hint delivery failed; will retry");
                    break;
                }
            }
            let mut delivered = 0;
            for h in &hints {
                if replicas.remove_hint(&owner, h).map_err(|e| e.to_string())? {
                    delivered += 1;
                }
            }
            node.stats.hints_delivered.fetch_add(delivered, Ordering::Relaxed);
            info!(owner = %owner, delivered, "hints delivered");
        }
    }
    let after = replicas.hint_summary().map_err(|e| e.to_string())?;
    node.cluster().set_oldest_hint(after.oldest_ms);
    Ok(())
}
