//! Collecting tombstones without resurrecting anything.
//!
//! A tombstone is what keeps an older value, still held somewhere, from coming back when
//! it merges. So this node drops a tombstone only when
//! 1. it has held it for the grace period (in-flight writes and clock skew settle);
//! 2. every ring member is alive (a dead one may hold an older value or a hint), and no
//!    member holds a hint stored before this tombstone (delivering it later would bring
//!    the old value back; members gossip the age of their oldest hint);
//! 3. each of the key's other replicas, asked now, holds exactly the same tombstone or
//!    nothing (it already collected it).
//!
//! Each replica decides for itself, so a tombstone disappears from all of them within a
//! collection round or two of each other. Anti-entropy and read repair never copy a
//! tombstone to a replica that holds nothing for the key: such a replica has no older
//! version to be protected from, and copying would bounce tombstones between replicas
//! that collect them at different moments. (Merkle roots of such replicas differ until
//! the holders collect their tombstones.)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dynakv_antientropy::merkle::Hash;
use dynakv_http_api::wire::{ReplicaRequest, ReplicaResponse};
use dynakv_ring::{NodeId, Status};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::coordinator::Node;
use crate::replica::wall_ms;

/// Candidates examined per round.
const BATCH: usize = 512;
/// Allowance for disagreement between members' wall clocks when comparing the age of a
/// hint stored on another node with the age of a tombstone stored here.
pub const CLOCK_SKEW_MARGIN_MS: u64 = 5_000;

pub async fn run(node: Arc<Node>, grace: Duration, mut shutdown: watch::Receiver<bool>) {
    let every = (grace / 4).clamp(Duration::from_millis(200), Duration::from_secs(60));
    // Where the next round starts: rounds walk the whole tombstone index in turn.
    let mut cursor = Vec::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        match round(&node, grace, &mut cursor).await {
            Ok(0) => {}
            Ok(n) => info!(collected = n, "tombstones collected"),
            Err(e) => warn!(error = %e, "tombstone collection round failed"),
        }
    }
}

/// One collection round, starting at `cursor` and moving it on; returns how many
/// tombstones were removed.
pub async fn round(node: &Node, grace: Duration, cursor: &mut Vec<u8>) -> Result<u64, String> {
    let cutoff = wall_ms().saturating_sub(grace.as_millis() as u64);
    let (mut candidates, next) = node
        .replicas()
        .tombstones_older_than(cutoff, BATCH, cursor)
        .map_err(|e| e.to_string())?;
    *cursor = next;
    if candidates.is_empty() {
        return Ok(0);
    }
    let members = node.cluster().ring_member_states();
    if let Some(m) = members.iter().find(|m| m.status != Status::Alive) {
        debug!(member = %m.id, status = m.status.as_str(), "not collecting tombstones while a member is not alive");
        return Ok(0);
    }
    // Our own hints count too, and gossip may lag: take the freshest view of ours.
    let own_oldest = node.replicas().hint_summary().map_err(|e| e.to_string())?.oldest_ms;
    let oldest_hint = members
        .iter()
        .filter(|m| m.id != *node.id())
        .filter_map(|m| m.oldest_hint_ms)
        .chain(own_oldest)
        .min();
    if let Some(h) = oldest_hint {
        candidates.retain(|(_, since)| h > since + CLOCK_SKEW_MARGIN_MS);
    }

    // Our digest of each candidate, and which other replicas must confirm it.
    let mut digests: BTreeMap<String, Hash> = BTreeMap::new();
    let mut asks: BTreeMap<NodeId, (String, Vec<String>)> = BTreeMap::new();
    for (key, _) in &candidates {
        let Some(d) = node.replicas().digest(key).map_err(|e| e.to_string())? else {
            continue;
        };
        digests.insert(key.clone(), d);
        for r in node.cluster().replicas(key) {
            if !r.is_self {
                asks.entry(r.id.clone())
                    .or_insert_with(|| (r.addr.clone(), Vec::new()))
                    .1
                    .push(key.clone());
            }
        }
    }
    for (peer, (addr, keys)) in asks {
        let req = ReplicaRequest::Digests { keys: keys.clone() };
        let answer = node.rpc().replica(&addr, &req, node.settings().request_timeout).await;
        let theirs = match answer {
            Ok(ReplicaResponse::Digests(d)) if d.len() == keys.len() => d,
            Ok(other) => {
                warn!(peer = %peer, answer = ?other, "unexpected answer to a digest check");
                keys.iter().map(|_| Some([0xff; 32])).collect()
            }
            Err(e) => {
                debug!(peer = %peer, error = %e, "digest check failed; keeping its tombstones");
                keys.iter().map(|_| Some([0xff; 32])).collect()
            }
        };
        for (key, their) in keys.iter().zip(theirs) {
            if their.is_some_and(|t| digests.get(key) != Some(&t)) {
                digests.remove(key);
            }
        }
    }
    let mut collected = 0;
    for (key, digest) in digests {
        if node
            .replicas()
            .remove_tombstone(&key, &digest)
            .map_err(|e| e.to_string())?
        {
            collected += 1;
        }
    }
    node.stats.tombstones_collected.fetch_add(collected, Ordering::Relaxed);
    Ok(collected)
}
