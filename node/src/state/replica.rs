//! This node's replica of the data: registers keyed by ring position and user key, with
//! read-merge-write under a per-key lock, and everything that must change in step with
//! a stored version: the partition's Merkle tree and the tombstone index. Also the hints
//! this node holds for replicas that were down.
//!
//! Storage layout:
//! - `data`: `position (8 bytes, big-endian) ‖ key` for `default` (`‖ item` for another
//!   namespace: [`storage_key`]) → format byte ‖ postcard([`Register`]).
//!   A partition, or a Merkle leaf, is one contiguous range.
//! - `tombstones`: same key → wall-clock ms at which this node first stored the tombstone.
//! - `hints`: `owner length (1) ‖ owner ‖ position ‖ key` → format byte ‖ created ms (8) ‖
//!   postcard([`Register`]). One owner's hints are one contiguous range.
//!
//! Why this file is long: every path that stores a version is here, so that none can
//! change a register without its Merkle tree and tombstone index.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use dynakv_antientropy::merkle::{self, EMPTY, Hash, LEAVES, SEGMENTS, leaf_range};
use dynakv_antientropy::{KeyDigest, TreeView};
use dynakv_crdt::Register;
use dynakv_ring::NodeId;
use parking_lot::Mutex;
use tracing::{info, warn};

use crate::env::clock::Clock;
use crate::env::storage::{Op, Space, StorageError, Store};
use crate::state::forest::Forest;

const RECORD_FORMAT: u8 = 1;
/// Lock stripes: enough that unrelated keys rarely share one.
const LOCK_STRIPES: usize = 4096;
/// Keys merged under one set of locks and one storage write.
const MERGE_CHUNK: usize = 256;

/// Where an item (a key with its namespace, `dynakv_ring::item`) is stored: its ring
/// position, then the key for `default` (as before namespaces) or the item.
pub fn storage_key(item: &str) -> Vec<u8> {
    let stored = dynakv_ring::item::stored(item);
    let mut k = Vec::with_capacity(8 + stored.len());
    k.extend_from_slice(&dynakv_ring::item::position(item).to_be_bytes());
    k.extend_from_slice(stored);
    k
}

/// The item stored under a storage key, if it is well formed.
pub fn user_key(storage_key: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    let position = u64::from_be_bytes(storage_key.get(..8)?.try_into().ok()?);
    dynakv_ring::item::from_stored(position, &storage_key[8..])
}

fn encode(reg: &Register) -> Vec<u8> {
    let mut out = vec![RECORD_FORMAT];
    postcard::to_io(reg, &mut out).expect("writing to a Vec cannot fail");
    out
}

fn decode(what: &dyn std::fmt::Debug, bytes: &[u8]) -> Result<Register, StorageError> {
    let corrupt = |detail: String| StorageError::Corrupt {
        what: format!("{what:?}"),
        detail,
    };
    match bytes.split_first() {
        Some((&RECORD_FORMAT, rest)) => postcard::from_bytes(rest).map_err(|e| corrupt(e.to_string())),
        Some((f, _)) => Err(corrupt(format!("unknown record format {f}"))),
        None => Err(corrupt("empty record".into())),
    }
}

fn hint_prefix(owner: &NodeId) -> Vec<u8> {
    let id = owner.as_str().as_bytes();
    let mut k = Vec::with_capacity(1 + id.len() + 8);
    k.push(id.len() as u8);
    k.extend_from_slice(id);
    k
}

fn hint_key(owner: &NodeId, key: &str) -> Vec<u8> {
    let mut k = hint_prefix(owner);
    k.extend_from_slice(&storage_key(key));
    k
}

/// Splits a hint key into owner and storage key.
fn parse_hint_key(k: &[u8]) -> Option<(NodeId, &[u8])> {
    let (&len, rest) = k.split_first()?;
    let (owner, skey) = rest.split_at_checked(len as usize)?;
    let owner = NodeId::new(std::str::from_utf8(owner).ok()?).ok()?;
    (skey.len() >= 8).then_some((owner, skey))
}

fn encode_hint(created_ms: u64, reg: &Register) -> Vec<u8> {
    let mut out = vec![RECORD_FORMAT];
    out.extend_from_slice(&created_ms.to_be_bytes());
    postcard::to_io(reg, &mut out).expect("writing to a Vec cannot fail");
    out
}

fn decode_hint(what: &dyn std::fmt::Debug, bytes: &[u8]) -> Result<(u64, Register), StorageError> {
    let corrupt = || StorageError::Corrupt {
        what: format!("hint {what:?}"),
        detail: "truncated".into(),
    };
    if bytes.len() < 9 || bytes[0] != RECORD_FORMAT {
        return Err(corrupt());
    }
    let created = u64::from_be_bytes(bytes[1..9].try_into().map_err(|_| corrupt())?);
    let mut framed = vec![RECORD_FORMAT];
    framed.extend_from_slice(&bytes[9..]);
    Ok((created, decode(what, &framed)?))
}

/// Appends to `ops` what replaces the stored `old` bytes (a tombstone if `was_tombstone`)
/// with `next`, keeping the tombstone index in step (a new tombstone is dated `now_ms`);
/// returns the new bytes, or `None` when nothing changes.
fn stage(
    skey: &[u8],
    old: Option<&[u8]>,
    was_tombstone: bool,
    next: &Register,
    now_ms: u64,
    ops: &mut Vec<Op>,
) -> Option<Vec<u8>> {
    let new = encode(next);
    if old == Some(new.as_slice()) {
        return None;
    }
    if next.is_tombstone() {
        // A new tombstone state (even one replacing another) restarts the grace period:
        // the collector must wait for every replica to hold this one.
        ops.push(Op::Put(Space::Tombstones, skey.to_vec(), now_ms.to_be_bytes().to_vec()));
    } else if was_tombstone {
        ops.push(Op::Delete(Space::Tombstones, skey.to_vec()));
    }
    ops.push(Op::Put(Space::Data, skey.to_vec(), new.clone()));
    Some(new)
}

/// Where a walk over a key space resumes: a storage key (empty: the start).
pub type Cursor = Vec<u8>;

/// A hint ready for delivery.
pub struct Hint {
    pub key: String,
    pub register: Register,
    /// Wall-clock ms when the first write of this hint was stored.
    pub created_ms: u64,
    /// The stored bytes, so delivery can delete exactly what it delivered.
    raw: Vec<u8>,
}

/// Pending hints, for status and for the tombstone collector's safety check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HintSummary {
    pub by_owner: BTreeMap<String, u64>,
    /// Wall-clock ms at which the oldest pending hint was first stored.
    pub oldest_ms: Option<u64>,
}

/// One page of a partition: see [`ReplicaStore::partition_page`].
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PartitionPage {
    pub items: Vec<(String, Register)>,
    /// Where the next page starts (exclusive); `None`: this was the last.
    pub next: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("partition {0} does not exist")]
    Partition(u32),
    #[error("the cursor is not a key of partition {0}")]
    Cursor(u32),
    #[error(transparent)]
    Storage(StorageError),
}

pub struct ReplicaStore {
    store: Arc<dyn Store>,
    /// Serialises read-modify-write per key (striped). Held only around synchronous
    /// storage calls, never across an await.
    locks: Box<[Mutex<()>]>,
    forest: Forest,
    /// Hints stored here (approximate under races, exact at rest); lets reads skip the
    /// hint lookups in the common case of none.
    hint_count: AtomicU64,
    /// Dates tombstones and hints (wall clock).
    clock: Arc<dyn Clock>,
}

impl ReplicaStore {
    /// Opens the replica over `store`, rebuilding the Merkle trees from the stored data.
    pub fn open(
        store: Arc<dyn Store>,
        partition_bits: u8,
        clock: Arc<dyn Clock>,
    ) -> Result<ReplicaStore, StorageError> {
        let r = ReplicaStore {
            store,
            clock,
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            forest: Forest::new(partition_bits),
            hint_count: AtomicU64::new(0),
        };
        let started = Instant::now();
        let mut keys = 0u64;
        for item in r.store.scan(Space::Data, &[], None) {
            let (k, v) = item?;
            r.forest.update(&k, None, Some(&v));
            keys += 1;
        }
        let mut hints = 0u64;
        for item in r.store.scan(Space::Hints, &[], None) {
            item?;
            hints += 1;
        }
        r.hint_count.store(hints, Ordering::Relaxed);
        info!(
            keys,
            hints,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "merkle trees rebuilt"
        );
        Ok(r)
    }

    /// The storage engine underneath (its meta space holds the node's own records).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn forest(&self) -> &Forest {
        &self.forest
    }

    fn stripe(&self, skey: &[u8]) -> usize {
        // The first 8 bytes are a uniform hash.
        (crate::state::forest::position(skey) % LOCK_STRIPES as u64) as usize
    }

    fn lock(&self, skey: &[u8]) -> parking_lot::MutexGuard<'_, ()> {
        self.locks[self.stripe(skey)].lock()
    }

    pub fn get(&self, key: &str) -> Result<Option<Register>, StorageError> {
        self.store
            .get(Space::Data, &storage_key(key))?
            .map(|b| decode(&key, &b))
            .transpose()
    }

    /// What this node holds for `key`: its replica merged with any hints it keeps for
    /// `owners` (the key's replicas). A fallback answers reads this way.
    pub fn get_with_hints(&self, key: &str, owners: &[NodeId]) -> Result<Option<Register>, StorageError> {
        let mut state = self.get(key)?;
        if self.hint_count.load(Ordering::Relaxed) == 0 {
            return Ok(state);
        }
        for owner in owners {
            if let Some(bytes) = self.store.get(Space::Hints, &hint_key(owner, key))? {
                let (_, hinted) = decode_hint(&key, &bytes)?;
                match &mut state {
                    Some(s) => s.merge(&hinted),
                    None => state = Some(hinted),
                }
            }
        }
        Ok(state)
    }

    /// Applies `f` to the stored state and stores what it returns, atomically with
    /// respect to other updates of the key, keeping the Merkle tree and the tombstone
    /// index in step. Returns the stored state and `f`'s extra.
    pub fn update<T>(
        &self,
        key: &str,
        f: impl FnOnce(Option<Register>) -> (Register, T),
    ) -> Result<(Register, T), StorageError> {
        let skey = storage_key(key);
        let _guard = self.locks[self.stripe(&skey)].lock();
        let old = self.store.get(Space::Data, &skey)?;
        let current = old.as_deref().map(|b| decode(&key, b)).transpose()?;
        let was_tombstone = current.as_ref().is_some_and(Register::is_tombstone);
        let (next, extra) = f(current);
        let mut ops = Vec::with_capacity(2);
        if let Some(new) = stage(
            &skey,
            old.as_deref(),
            was_tombstone,
            &next,
            self.clock.wall_ms(),
            &mut ops,
        ) {
            self.store.write(ops)?;
            self.forest.update(&skey, old.as_deref(), Some(&new));
        }
        Ok((next, extra))
    }

    /// Merges many states received from other replicas, as one storage write (one
    /// write-ahead-log append instead of one per key). Several states for one key merge
    /// into each other first.
    pub fn merge_many(&self, mut items: Vec<(String, Register)>) -> Result<(), StorageError> {
        // In chunks, so a large batch never holds most of the key locks at once.
        while items.len() > MERGE_CHUNK {
            let rest = items.split_off(MERGE_CHUNK);
            self.merge_chunk(std::mem::replace(&mut items, rest))?;
        }
        self.merge_chunk(items)
    }

    fn merge_chunk(&self, items: Vec<(String, Register)>) -> Result<(), StorageError> {
        // Every stripe involved, locked in ascending order: concurrent batches cannot
        // deadlock, and `update` only ever holds one.
        let mut stripes: Vec<usize> = items.iter().map(|(k, _)| self.stripe(&storage_key(k))).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let _guards: Vec<_> = stripes.iter().map(|&i| self.locks[i].lock()).collect();
        // storage key -> (stored bytes, whether they are a tombstone, merged state)
        type Staged = (Option<Vec<u8>>, bool, Register);
        let mut staged: BTreeMap<Vec<u8>, Staged> = BTreeMap::new();
        for (key, incoming) in items {
            let skey = storage_key(&key);
            match staged.get_mut(&skey) {
                Some((_, _, merged)) => merged.merge(&incoming),
                None => {
                    let old = self.store.get(Space::Data, &skey)?;
                    let current = old.as_deref().map(|b| decode(&key, b)).transpose()?;
                    let was_tombstone = current.as_ref().is_some_and(Register::is_tombstone);
                    let merged = match current {
                        Some(mut c) => {
                            c.merge(&incoming);
                            c
                        }
                        None => incoming,
                    };
                    staged.insert(skey, (old, was_tombstone, merged));
                }
            }
        }
        let mut ops = Vec::with_capacity(staged.len());
        let mut changed = Vec::new();
        let now_ms = self.clock.wall_ms();
        for (skey, (old, was_tombstone, merged)) in &staged {
            if let Some(new) = stage(skey, old.as_deref(), *was_tombstone, merged, now_ms, &mut ops) {
                changed.push((skey, old, new));
            }
        }
        if ops.is_empty() {
            return Ok(());
        }
        self.store.write(ops)?;
        for (skey, old, new) in changed {
            self.forest.update(skey, old.as_deref(), Some(&new));
        }
        Ok(())
    }

    /// Merges a state received from another replica into ours; returns the result.
    pub fn merge(&self, key: &str, incoming: &Register) -> Result<Register, StorageError> {
        self.update(key, |current| {
            let merged = match current {
                Some(mut mine) => {
                    mine.merge(incoming);
                    mine
                }
                None => incoming.clone(),
            };
            (merged, ())
        })
        .map(|(r, ())| r)
    }

    /// Digest of the stored version of `key`, as the Merkle trees see it.
    pub fn digest(&self, key: &str) -> Result<Option<Hash>, StorageError> {
        Ok(self
            .store
            .get(Space::Data, &storage_key(key))?
            .map(|b| merkle::digest(&b)))
    }

    /// Removes a tombstone if the stored version still has `digest` (nothing changed
    /// since the collector checked). Returns whether it was removed.
    pub fn remove_tombstone(&self, key: &str, digest: &Hash) -> Result<bool, StorageError> {
        let skey = storage_key(key);
        let _guard = self.lock(&skey);
        let Some(old) = self.store.get(Space::Data, &skey)? else {
            return Ok(false);
        };
        if merkle::digest(&old) != *digest || !decode(&key, &old)?.is_tombstone() {
            return Ok(false);
        }
        self.store.write(vec![
            Op::Delete(Space::Data, skey.clone()),
            Op::Delete(Space::Tombstones, skey.clone()),
        ])?;
        self.forest.update(&skey, Some(&old), None);
        Ok(true)
    }

    /// Tombstones first stored at or before `cutoff_ms` (wall clock), up to `limit`,
    /// starting at storage key `from` and wrapping around the end once. Returns them and
    /// where the next call should start, so repeated calls visit every tombstone even if
    /// the first ones found can never be collected.
    pub fn tombstones_older_than(
        &self,
        cutoff_ms: u64,
        limit: usize,
        from: &[u8],
    ) -> Result<(Vec<(String, u64)>, Cursor), StorageError> {
        let mut out = Vec::new();
        let ranges: [(&[u8], Option<&[u8]>); 2] = [(from, None), (&[], Some(from))];
        for (start, end) in ranges {
            for item in self.store.scan(Space::Tombstones, start, end) {
                let (k, v) = item?;
                let since = v.as_slice().try_into().map(u64::from_be_bytes).unwrap_or(0);
                if since <= cutoff_ms
                    && let Some(key) = user_key(&k)
                {
                    out.push((key.to_string(), since));
                    if out.len() >= limit {
                        let mut next = k;
                        next.push(0);
                        return Ok((out, next));
                    }
                }
            }
            if from.is_empty() {
                break;
            }
        }
        Ok((out, Vec::new()))
    }

    pub fn tombstone_count(&self) -> Result<u64, StorageError> {
        let mut n = 0;
        for item in self.store.scan(Space::Tombstones, &[], None) {
            item?;
            n += 1;
        }
        Ok(n)
    }

    // ---- Merkle leaves, for anti-entropy ------------------------------------------

    /// Keys stored in one leaf of a partition, with their version digests.
    pub fn leaf_keys(&self, partition: u32, leaf: usize) -> Result<Vec<KeyDigest>, StorageError> {
        let (start, end) = leaf_range(partition, leaf, self.forest.partition_bits());
        let end = end.map(|e| e.to_be_bytes());
        self.store
            .scan(Space::Data, &start.to_be_bytes(), end.as_ref().map(|e| e.as_slice()))
            .map(|item| {
                item.map(|(key, v)| KeyDigest {
                    key,
                    digest: merkle::digest(&v),
                })
            })
            .collect()
    }

    // ---- whole partitions, for transfers ------------------------------------------

    /// The storage keys of a partition: from its first position, up to the next
    /// partition's (`None` for the last partition).
    fn partition_range(&self, partition: u32) -> Result<([u8; 8], Option<[u8; 8]>), PageError> {
        if partition >= self.forest.partition_count() {
            return Err(PageError::Partition(partition));
        }
        let bits = self.forest.partition_bits();
        let start = leaf_range(partition, 0, bits).0.to_be_bytes();
        let end = leaf_range(partition, LEAVES - 1, bits).1.map(u64::to_be_bytes);
        Ok((start, end))
    }

    /// The stored states of a partition's keys in storage order, after the storage key
    /// `after` (from the partition's start when `None`): at least one if there is any,
    /// and no more once their encoded size reaches `max_bytes`. Tombstones included.
    /// Also the cursor to continue from, `None` once the partition is exhausted.
    pub fn partition_page(
        &self,
        partition: u32,
        after: Option<&[u8]>,
        max_bytes: usize,
    ) -> Result<PartitionPage, PageError> {
        let (start, end) = self.partition_range(partition)?;
        let from = match after {
            None => start.to_vec(),
            Some(cursor) => {
                let inside = cursor >= start.as_slice() && end.as_ref().is_none_or(|e| cursor < e.as_slice());
                if !inside {
                    return Err(PageError::Cursor(partition));
                }
                // The smallest key after the cursor.
                let mut next = cursor.to_vec();
                next.push(0);
                next
            }
        };
        let mut items = Vec::new();
        let mut bytes = 0;
        let mut last: Option<Vec<u8>> = None;
        let mut more = false;
        for item in self.store.scan(Space::Data, &from, end.as_ref().map(|e| e.as_slice())) {
            let (skey, raw) = item.map_err(PageError::Storage)?;
            if bytes >= max_bytes && !items.is_empty() {
                more = true;
                break;
            }
            let Some(key) = user_key(&skey) else {
                warn!(?skey, "a stored key is not well formed; skipped by the transfer");
                continue;
            };
            let register = decode(&key, &raw).map_err(PageError::Storage)?;
            bytes += skey.len() + raw.len();
            items.push((key.to_string(), register));
            last = Some(skey);
        }
        Ok(PartitionPage {
            items,
            next: if more { last } else { None },
        })
    }

    /// Deletes every key of `partition` (one this node no longer replicates), in chunks
    /// under the keys' locks, keeping the Merkle tree and the tombstone index in step.
    /// Before each chunk, with its keys locked, `still` must say the drop still holds
    /// (a write that could make the partition ours again checks in before it takes a
    /// key's lock); when it does not, the drop stops there. Returns how many keys went.
    pub fn drop_partition(&self, partition: u32, still: impl Fn() -> bool) -> Result<u64, PageError> {
        let (start, end) = self.partition_range(partition)?;
        let mut dropped = 0;
        loop {
            let keys: Vec<Vec<u8>> = self
                .store
                .scan(Space::Data, &start, end.as_ref().map(|e| e.as_slice()))
                .take(MERGE_CHUNK)
                .map(|item| item.map(|(k, _)| k))
                .collect::<Result<_, _>>()
                .map_err(PageError::Storage)?;
            if keys.is_empty() {
                return Ok(dropped);
            }
            let mut stripes: Vec<usize> = keys.iter().map(|k| self.stripe(k)).collect();
            stripes.sort_unstable();
            stripes.dedup();
            let _guards: Vec<_> = stripes.iter().map(|&i| self.locks[i].lock()).collect();
            if !still() {
                return Ok(dropped);
            }
            let mut ops = Vec::with_capacity(2 * keys.len());
            let mut gone = Vec::with_capacity(keys.len());
            for skey in keys {
                if let Some(old) = self.store.get(Space::Data, &skey).map_err(PageError::Storage)? {
                    ops.push(Op::Delete(Space::Data, skey.clone()));
                    ops.push(Op::Delete(Space::Tombstones, skey.clone()));
                    gone.push((skey, old));
                }
            }
            self.store.write(ops).map_err(PageError::Storage)?;
            for (skey, old) in &gone {
                self.forest.update(skey, Some(old), None);
            }
            dropped += gone.len() as u64;
        }
    }

    // ---- hints ----------------------------------------------------------------------

    /// Keeps `register` for `owner`, merged with any hint already held for the key.
    pub fn store_hint(&self, owner: &NodeId, key: &str, register: &Register) -> Result<(), StorageError> {
        let hkey = hint_key(owner, key);
        let _guard = self.lock(&storage_key(key));
        let (created, merged) = match self.store.get(Space::Hints, &hkey)? {
            Some(bytes) => {
                let (created, mut held) = decode_hint(&key, &bytes)?;
                held.merge(register);
                (created, held)
            }
            None => {
                self.hint_count.fetch_add(1, Ordering::Relaxed);
                (self.clock.wall_ms(), register.clone())
            }
        };
        self.store.put(Space::Hints, &hkey, &encode_hint(created, &merged))
    }

    /// Hints held for `owner`: up to `limit` of them, and stopping once their values add
    /// up to `max_bytes` (at least one is returned if there is any).
    pub fn hints_for(&self, owner: &NodeId, limit: usize, max_bytes: usize) -> Result<Vec<Hint>, StorageError> {
        let prefix = hint_prefix(owner);
        // The first key past the prefix: owner ids are ASCII, so the last byte of the
        // prefix is below 0xff and can simply be incremented.
        let mut end = prefix.clone();
        *end.last_mut().expect("non-empty prefix") += 1;
        let mut out = Vec::new();
        let mut bytes = 0;
        for item in self.store.scan(Space::Hints, &prefix, Some(&end)) {
            let (k, raw) = item?;
            let Some((_, skey)) = parse_hint_key(&k) else {
                continue;
            };
            let Some(key) = user_key(skey) else { continue };
            let (created_ms, register) = decode_hint(&key, &raw)?;
            bytes += raw.len();
            out.push(Hint {
                key: key.to_string(),
                register,
                created_ms,
                raw,
            });
            if out.len() >= limit || bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// Deletes a delivered hint unless it changed meanwhile (a newer hinted write merged
    /// into it, which must be delivered too).
    pub fn remove_hint(&self, owner: &NodeId, hint: &Hint) -> Result<bool, StorageError> {
        let hkey = hint_key(owner, &hint.key);
        let _guard = self.lock(&storage_key(&hint.key));
        if self.store.get(Space::Hints, &hkey)?.as_deref() != Some(hint.raw.as_slice()) {
            return Ok(false);
        }
        self.store.delete(Space::Hints, &hkey)?;
        self.hint_count.fetch_sub(1, Ordering::Relaxed);
        Ok(true)
    }

    pub fn has_hints(&self) -> bool {
        self.hint_count.load(Ordering::Relaxed) > 0
    }

    /// Every pending hint, counted by owner, and the oldest. Reads the whole hint space:
    /// meant for status pages and periodic checks, not for the request path. (It leaves
    /// `hint_count` alone: the scan is a snapshot taken without the key locks.)
    pub fn hint_summary(&self) -> Result<HintSummary, StorageError> {
        let mut summary = HintSummary::default();
        for item in self.store.scan(Space::Hints, &[], None) {
            let (k, v) = item?;
            if let Some((owner, _)) = parse_hint_key(&k) {
                *summary.by_owner.entry(owner.to_string()).or_default() += 1;
            }
            if v.len() >= 9 {
                let created = u64::from_be_bytes(v[1..9].try_into().expect("8 bytes"));
                summary.oldest_ms = Some(summary.oldest_ms.map_or(created, |o| o.min(created)));
            }
        }
        Ok(summary)
    }
}

/// This node's side of an anti-entropy exchange with one peer: its Merkle trees of the
/// partitions the two share.
pub struct LocalView<'a> {
    replicas: &'a ReplicaStore,
    shared: Vec<u32>,
}

impl<'a> LocalView<'a> {
    pub fn new(replicas: &'a ReplicaStore, shared: Vec<u32>) -> Self {
        LocalView { replicas, shared }
    }
}

impl TreeView for LocalView<'_> {
    fn partitions(&self) -> &[u32] {
        &self.shared
    }

    fn root(&mut self, partition: u32) -> Hash {
        self.replicas.forest().root(partition)
    }

    fn segment(&mut self, partition: u32, segment: usize) -> Hash {
        if segment >= SEGMENTS {
            return EMPTY;
        }
        self.replicas.forest().with(partition, |t| t.segment(segment))
    }

    fn leaf(&mut self, partition: u32, leaf: usize) -> Hash {
        if leaf >= LEAVES {
            return EMPTY;
        }
        self.replicas.forest().with(partition, |t| t.leaf(leaf))
    }

    fn keys(&mut self, partition: u32, leaf: usize) -> Vec<KeyDigest> {
        if partition >= self.replicas.forest().partition_count() || leaf >= LEAVES {
            return Vec::new();
        }
        self.replicas.leaf_keys(partition, leaf).unwrap_or_else(|e| {
            warn!(partition, leaf, error = %e, "cannot list a merkle leaf");
            Vec::new()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::storage::MemoryStore;
    use crate::state::testing::mv;
    use bytes::Bytes;
    use dynakv_crdt::{Actor, CausalContext, MvRegister};

    fn open(store: Arc<dyn Store>) -> ReplicaStore {
        ReplicaStore::open(store, 4, Arc::new(crate::env::clock::ManualClock::new(1_000))).unwrap()
    }

    #[test]
    fn merge_update_and_get() {
        let r = open(Arc::new(MemoryStore::new()));
        assert_eq!(r.get("k").unwrap(), None);
        r.merge("k", &mv(1, "x")).unwrap();
        let merged = r.merge("k", &mv(2, "y")).unwrap();
        assert_eq!(merged.values().len(), 2);
        assert_eq!(r.get("k").unwrap(), Some(merged));
        let again = r.merge("k", &mv(1, "x")).unwrap();
        assert_eq!(again.values().len(), 2);
    }

    #[test]
    fn merge_many_equals_merging_one_by_one() {
        let one = open(Arc::new(MemoryStore::new()));
        let many = open(Arc::new(MemoryStore::new()));
        let mut items = Vec::new();
        for i in 0..50 {
            items.push((format!("k{}", i % 20), mv(i % 3, &format!("v{i}"))));
        }
        // A tombstone among them: the index must follow.
        let mut dead = MvRegister::new();
        dead.write(Actor(9), &CausalContext::new(), Some(Bytes::from_static(b"x")));
        let ctx = dead.context().clone();
        dead.write(Actor(9), &ctx, None);
        items.push(("gone".into(), Register::Mv(dead)));
        for (k, r) in &items {
            one.merge(k, r).unwrap();
        }
        many.merge_many(items.clone()).unwrap();
        for (k, _) in &items {
            assert_eq!(one.get(k).unwrap(), many.get(k).unwrap(), "{k}");
        }
        for p in 0..16 {
            assert_eq!(one.forest().root(p), many.forest().root(p));
        }
        assert_eq!(many.tombstone_count().unwrap(), 1);
        // Merging the same batch again changes nothing.
        many.merge_many(items).unwrap();
        for p in 0..16 {
            assert_eq!(one.forest().root(p), many.forest().root(p));
        }
    }

    #[test]
    fn corrupt_records_are_reported_not_panicked_on() {
        let store = Arc::new(MemoryStore::new());
        let r = open(store.clone());
        store.put(Space::Data, &storage_key("k"), &[9, 9]).unwrap();
        assert!(matches!(r.get("k"), Err(StorageError::Corrupt { .. })));
    }

    #[test]
    fn trees_follow_writes_and_are_rebuilt_identically_on_open() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let r = open(store.clone());
        for i in 0..200 {
            r.merge(&format!("key-{i}"), &mv(1, &format!("v{i}"))).unwrap();
        }
        r.merge("key-7", &mv(2, "concurrent")).unwrap();
        let roots: Vec<Hash> = (0..16).map(|p| r.forest().root(p)).collect();
        assert!(roots.iter().any(|h| *h != merkle::EMPTY));
        let reopened = open(store);
        let again: Vec<Hash> = (0..16).map(|p| reopened.forest().root(p)).collect();
        assert_eq!(roots, again);
        // Leaf listings agree with the trees: every key shows up once, with its digest.
        let mut listed = 0;
        for p in 0..16 {
            for leaf in 0..merkle::LEAVES {
                for kd in reopened.leaf_keys(p, leaf).unwrap() {
                    let key = user_key(&kd.key).unwrap();
                    assert_eq!(Some(kd.digest), reopened.digest(&key).unwrap());
                    listed += 1;
                }
            }
        }
        assert_eq!(listed, 200);
    }

    #[test]
    fn tombstones_are_indexed_and_removed_only_if_unchanged() {
        let r = open(Arc::new(MemoryStore::new()));
        let live = r.merge("k", &mv(1, "x")).unwrap();
        assert_eq!(r.tombstone_count().unwrap(), 0);
        let (dead, ()) = r
            .update("k", |cur| {
                let Some(Register::Mv(mut m)) = cur else { panic!() };
                let ctx = m.context().clone();
                m.write(Actor(1), &ctx, None);
                (Register::Mv(m), ())
            })
            .unwrap();
        assert!(dead.is_tombstone() && !live.is_tombstone());
        assert_eq!(r.tombstone_count().unwrap(), 1);
        let (old, _) = r.tombstones_older_than(u64::MAX, 10, &[]).unwrap();
        assert_eq!(old.len(), 1);
        assert!(r.tombstones_older_than(0, 10, &[]).unwrap().0.is_empty());
        // A stale digest does not remove it; the current one does, tree included.
        assert!(!r.remove_tombstone("k", &[1; 32]).unwrap());
        let d = r.digest("k").unwrap().unwrap();
        assert!(r.remove_tombstone("k", &d).unwrap());
        assert_eq!(r.get("k").unwrap(), None);
        assert_eq!(r.tombstone_count().unwrap(), 0);
        let p = r.forest().partition_of(&storage_key("k"));
        assert_eq!(r.forest().root(p), merkle::EMPTY);
        // A live value is never removed as a tombstone.
        r.merge("live", &mv(1, "y")).unwrap();
        let d = r.digest("live").unwrap().unwrap();
        assert!(!r.remove_tombstone("live", &d).unwrap());
    }

    #[test]
    fn tombstone_scan_resumes_where_it_stopped_and_wraps_around() {
        let r = open(Arc::new(MemoryStore::new()));
        for i in 0..10 {
            let key = format!("t{i}");
            r.update(&key, |_| {
                let mut m = MvRegister::new();
                m.write(Actor(1), &CausalContext::new(), Some(Bytes::from_static(b"x")));
                let ctx = m.context().clone();
                m.write(Actor(1), &ctx, None);
                (Register::Mv(m), ())
            })
            .unwrap();
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut from = Vec::new();
        for _ in 0..4 {
            let (batch, next) = r.tombstones_older_than(u64::MAX, 3, &from).unwrap();
            assert!(batch.len() <= 3);
            seen.extend(batch.into_iter().map(|(k, _)| k));
            from = next;
        }
        assert_eq!(seen.len(), 10, "every tombstone visited across calls");
    }

    #[test]
    fn hints_merge_serve_reads_and_are_removed_only_if_unchanged() {
        let r = open(Arc::new(MemoryStore::new()));
        let owner = NodeId::new("n3").unwrap();
        assert!(!r.has_hints());
        r.store_hint(&owner, "k", &mv(1, "a")).unwrap();
        r.store_hint(&owner, "k", &mv(2, "b")).unwrap();
        assert!(r.has_hints());
        // Hints are not replica data, but a fallback answers reads with them.
        assert_eq!(r.get("k").unwrap(), None);
        let seen = r.get_with_hints("k", std::slice::from_ref(&owner)).unwrap().unwrap();
        assert_eq!(seen.values().len(), 2);
        let batch = r.hints_for(&owner, 10, 1 << 20).unwrap();
        assert_eq!(batch.len(), 1);
        assert!(
            r.hints_for(&NodeId::new("n1").unwrap(), 10, 1 << 20)
                .unwrap()
                .is_empty()
        );
        // A hinted write that lands after the batch was read keeps the hint alive.
        r.store_hint(&owner, "k", &mv(3, "c")).unwrap();
        assert!(!r.remove_hint(&owner, &batch[0]).unwrap());
        let batch = r.hints_for(&owner, 10, 1 << 20).unwrap();
        assert_eq!(batch[0].register.values().len(), 3);
        assert!(r.remove_hint(&owner, &batch[0]).unwrap());
        let s = r.hint_summary().unwrap();
        assert!(s.by_owner.is_empty() && s.oldest_ms.is_none());
        assert!(!r.has_hints());
    }
}
