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
//! [`eligible`] decides 1 and 2 and [`confirms`] 3, without I/O; [`Tombstones`] runs
//! them in rounds.
//!
//! Each replica decides for itself, so a tombstone disappears from all of them within a
//! collection round or two of each other. Anti-entropy and read repair never copy a
//! tombstone to a replica that holds nothing for the key: such a replica has no older
//! version to be protected from, and copying would bounce tombstones between replicas
//! that collect them at different moments. (Merkle roots of such replicas differ until
//! the holders collect their tombstones.)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dynakv_antientropy::merkle::Hash;
use dynakv_ring::{NodeId, Status};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tracing::{debug, info, warn};

use super::Service;
use crate::local::Local;
use crate::state::cluster::MemberState;
use crate::transport::message;

/// Candidates examined per round.
const BATCH: usize = 512;
/// Allowance for disagreement between members' wall clocks when comparing the age of a
/// hint stored on another node with the age of a tombstone stored here.
pub const CLOCK_SKEW_MARGIN_MS: u64 = 5_000;

/// Why no tombstone may be collected now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hold {
    /// A ring member is not alive: it may hold an older value or a hint.
    MemberNotAlive { id: NodeId, status: Status },
}

/// Conditions 1 and 2: of `candidates` (keys and when this node stored their
/// tombstones, all past the grace period), those no member's hint may predate, given
/// every ring member's state and this node's own oldest hint (fresher than gossip's).
pub fn eligible(
    mut candidates: Vec<(String, u64)>,
    members: &[MemberState],
    me: &NodeId,
    own_oldest_hint_ms: Option<u64>,
) -> Result<Vec<String>, Hold> {
    if let Some(m) = members.iter().find(|m| m.status != Status::Alive) {
        return Err(Hold::MemberNotAlive {
            id: m.id.clone(),
            status: m.status,
        });
    }
    let oldest_hint = members
        .iter()
        .filter(|m| m.id != *me)
        .filter_map(|m| m.oldest_hint_ms)
        .chain(own_oldest_hint_ms)
        .min();
    if let Some(h) = oldest_hint {
        candidates.retain(|(_, since)| h > since + CLOCK_SKEW_MARGIN_MS);
    }
    Ok(candidates.into_iter().map(|(k, _)| k).collect())
}

/// Condition 3: whether another replica's answer lets us drop the tombstone we hold
/// with digest `ours`. It must hold the same version, or nothing at all; no answer
/// (`None`) keeps the tombstone.
pub fn confirms(ours: &Hash, theirs: Option<Option<Hash>>) -> bool {
    match theirs {
        Some(None) => true,
        Some(Some(h)) => h == *ours,
        None => false,
    }
}

pub struct Tombstones {
    local: Arc<Local>,
    grace: Duration,
    /// Where the next round starts: rounds walk the whole tombstone index in turn.
    cursor: Mutex<Vec<u8>>,
    collected: AtomicU64,
}

impl Tombstones {
    pub fn new(local: Arc<Local>, grace: Duration) -> Tombstones {
        Tombstones {
            local,
            grace,
            cursor: Mutex::new(Vec::new()),
            collected: AtomicU64::new(0),
        }
    }

    /// Tombstones collected since start.
    pub fn collected(&self) -> u64 {
        self.collected.load(Ordering::Relaxed)
    }

    /// One collection round, moving the cursor on; returns how many were removed.
    pub async fn collect(&self) -> Result<u64, String> {
        let (replicas, cluster) = (&self.local.replicas, &self.local.cluster);
        // While partitions move, a tombstone may be on its way to a new owner (or not
        // yet fetched by it): collecting it anywhere could resurrect the key there.
        if !cluster.view().history.settled() {
            debug!("not collecting tombstones while the layout is changing");
            return Ok(0);
        }
        let cutoff = self.local.clock.wall_ms().saturating_sub(self.grace.as_millis() as u64);
        let cursor = self.cursor.lock().clone();
        let (candidates, next) = replicas
            .tombstones_older_than(cutoff, BATCH, &cursor)
            .map_err(|e| e.to_string())?;
        *self.cursor.lock() = next;
        if candidates.is_empty() {
            return Ok(0);
        }
        let own_oldest = replicas.hint_summary().map_err(|e| e.to_string())?.oldest_ms;
        let keys = match eligible(candidates, &cluster.ring_member_states(), self.local.id(), own_oldest) {
            Ok(keys) => keys,
            Err(Hold::MemberNotAlive { id, status }) => {
                debug!(member = %id, status = status.as_str(), "not collecting tombstones while a member is not alive");
                return Ok(0);
            }
        };
        // Our digest of each candidate, and which other replicas must confirm it.
        let mut digests: BTreeMap<String, Hash> = BTreeMap::new();
        let mut asks: BTreeMap<NodeId, (String, Vec<String>)> = BTreeMap::new();
        for key in keys {
            let Some(d) = replicas.digest(&key).map_err(|e| e.to_string())? else {
                continue;
            };
            for r in cluster.replicas(&key) {
                if !r.is_self {
                    asks.entry(r.id.clone())
                        .or_insert_with(|| (r.addr.clone(), Vec::new()))
                        .1
                        .push(key.clone());
                }
            }
            digests.insert(key, d);
        }
        for (peer, (addr, keys)) in asks {
            let req = message::Digests { keys: keys.clone() };
            let theirs: Vec<Option<Option<Hash>>> = match self
                .local
                .peers
                .call(&addr, req, self.local.settings.request_timeout)
                .await
            {
                Ok(d) if d.len() == keys.len() => d.into_iter().map(Some).collect(),
                Ok(d) => {
                    warn!(peer = %peer, answered = d.len(), asked = keys.len(), "wrong number of digests");
                    vec![None; keys.len()]
                }
                Err(e) => {
                    debug!(peer = %peer, error = %e, "digest check failed; keeping its tombstones");
                    vec![None; keys.len()]
                }
            };
            for (key, their) in keys.iter().zip(theirs) {
                if digests.get(key).is_some_and(|ours| !confirms(ours, their)) {
                    digests.remove(key);
                }
            }
        }
        let mut collected = 0;
        for (key, digest) in digests {
            if replicas.remove_tombstone(&key, &digest).map_err(|e| e.to_string())? {
                collected += 1;
            }
        }
        self.collected.fetch_add(collected, Ordering::Relaxed);
        Ok(collected)
    }
}

impl Service for Tombstones {
    fn name(&self) -> &'static str {
        "tombstones"
    }

    fn interval(&self) -> Option<Duration> {
        Some((self.grace / 4).clamp(Duration::from_millis(200), Duration::from_secs(60)))
    }

    fn round(self: Arc<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            match self.collect().await {
                Ok(0) => {}
                Ok(n) => info!(collected = n, "tombstones collected"),
                Err(e) => warn!(error = %e, "tombstone collection round failed"),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, status: Status, oldest_hint_ms: Option<u64>) -> MemberState {
        MemberState {
            id: NodeId::new(id).unwrap(),
            addr: format!("{id}:1"),
            status,
            oldest_hint_ms,
        }
    }

    fn keys(c: &[(&str, u64)]) -> Vec<(String, u64)> {
        c.iter().map(|(k, t)| (k.to_string(), *t)).collect()
    }

    #[test]
    fn nothing_is_collected_while_a_member_is_down_and_hints_older_than_a_tombstone_keep_it() {
        let me = NodeId::new("a").unwrap();
        let alive = |hint| vec![member("a", Status::Alive, None), member("b", Status::Alive, hint)];
        let candidates = keys(&[("old", 1_000), ("new", 100_000)]);
        // (members, our own oldest hint, what may be collected or why nothing may)
        type Case = (Vec<MemberState>, Option<u64>, Result<Vec<&'static str>, Status>);
        let cases: Vec<Case> = vec![
            (alive(None), None, Ok(vec!["old", "new"])),
            // b holds a hint from t=50 s: only tombstones stored well before it may go.
            (alive(Some(50_000)), None, Ok(vec!["old"])),
            // Within the skew margin of the hint is too close.
            (alive(Some(1_000 + CLOCK_SKEW_MARGIN_MS)), None, Ok(vec![])),
            // Our own hint counts too, and our gossiped entry is ignored for it.
            (alive(None), Some(50_000), Ok(vec!["old"])),
            (
                vec![member("a", Status::Alive, Some(1)), member("b", Status::Alive, None)],
                None,
                Ok(vec!["old", "new"]),
            ),
            (
                vec![member("a", Status::Alive, None), member("b", Status::Suspect, None)],
                None,
                Err(Status::Suspect),
            ),
            (
                vec![member("a", Status::Alive, None), member("b", Status::Dead, None)],
                None,
                Err(Status::Dead),
            ),
        ];
        for (members, own, expected) in cases {
            let got =
                eligible(candidates.clone(), &members, &me, own).map_err(|Hold::MemberNotAlive { status, .. }| status);
            let expected = expected.map(|v| v.into_iter().map(String::from).collect::<Vec<_>>());
            assert_eq!(got, expected, "members {members:?}, own hint {own:?}");
        }
    }

    #[test]
    fn only_the_same_tombstone_or_nothing_confirms() {
        let ours = [1u8; 32];
        assert!(confirms(&ours, Some(None)), "already collected there");
        assert!(confirms(&ours, Some(Some(ours))));
        assert!(!confirms(&ours, Some(Some([2; 32]))), "another version");
        assert!(!confirms(&ours, None), "no answer");
    }
}
