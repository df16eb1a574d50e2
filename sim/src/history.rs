//! What the simulated clients did and were told ([`History`]), shared by the world (its
//! probes record into it) and the workloads (their clients record, their checkers read),
//! and the element sets the set workloads keep in values.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

/// A read's replicas (indexes) as its coordinator placed it, and those of them it judged
/// dead then.
#[derive(Clone, Debug, Default)]
pub struct Placed {
    pub replicas: Vec<usize>,
    pub judged_dead: Vec<usize>,
}

pub fn names(nodes: &[usize]) -> String {
    nodes
        .iter()
        .map(|i| format!("n{}", i + 1))
        .collect::<Vec<_>>()
        .join(",")
}

/// Sorted, deduplicated element sets, as the set workload stores them in values.
pub fn encode_set(set: &BTreeSet<u64>) -> Bytes {
    set.iter().flat_map(|e| e.to_be_bytes()).collect::<Vec<u8>>().into()
}

pub fn decode_set(value: &[u8]) -> BTreeSet<u64> {
    value
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
        .collect()
}

/// The union of the element sets in `values`.
pub fn union_of(values: &[Bytes]) -> BTreeSet<u64> {
    values.iter().flat_map(|v| decode_set(v)).collect()
}

pub type Elements = BTreeMap<String, BTreeSet<u64>>;

/// One client read, for the read checker.
#[derive(Clone, Debug)]
pub struct ReadRecord {
    pub node: usize,
    pub key: String,
    pub start_ms: u64,
    pub end_ms: u64,
    /// The read succeeded (found or not found).
    pub ok: bool,
    /// It succeeded and found nothing (no value, no tombstone context).
    pub not_found: bool,
    /// The elements it found (set workloads), if it succeeded.
    pub found: Option<BTreeSet<u64>>,
    /// The key's replicas as the coordinator placed the read (the layout can change
    /// during a history), and those it judged dead; `None` if the node never took the
    /// read.
    pub replicas: Option<Placed>,
}

/// A read of a cold key: what it found.
#[derive(Clone, Debug)]
pub struct ColdRead {
    pub key: String,
    pub node: usize,
    pub start_ms: u64,
    pub found: BTreeSet<u64>,
}

#[derive(Default)]
pub struct History {
    /// Cold keys: the one element each was written with, and when it was acknowledged.
    pub cold_acked: BTreeMap<String, (u64, u64)>,
    pub cold_reads: Vec<ColdRead>,
    pub acked: Elements,
    /// When each acknowledged element's write was acknowledged, by key.
    pub acked_at: BTreeMap<String, Vec<(u64, u64)>>,
    pub maybe: Elements,
    pub reads: Vec<ReadRecord>,
    pub ops: u64,
    pub failed_ops: u64,
    /// Last-writer-wins timestamps acknowledged, by coordinating node and incarnation.
    pub lww_stamps: BTreeMap<(usize, u64), Vec<dynakv_crdt::Timestamp>>,
    /// Delete workload: ids written and acknowledged, and ids covered by an
    /// acknowledged delete.
    pub written: BTreeMap<String, BTreeSet<u64>>,
    pub deleted: BTreeMap<String, BTreeSet<u64>>,
}

pub type Shared = Arc<Mutex<History>>;
