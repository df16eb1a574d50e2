//! Node-to-node messages and their encoding.
//!
//! Bodies are a version byte followed by postcard (compact, serde-derived, no schema
//! files). Every internal route takes one request enum and answers one response enum, so
//! adding a verb is adding a variant.

use bytes::Bytes;
use dynakv_antientropy::{Compare, CompareResponse, Hash};
use dynakv_crdt::{ConflictMode, Context, Register};
use dynakv_ring::{GossipEntry, NodeId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Bumped on incompatible changes; a node rejects messages of another version.
pub const WIRE_VERSION: u8 = 1;
pub const CONTENT_TYPE: &str = "application/x-dynakv";

/// Requests between replicas (`POST /internal/replica`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ReplicaRequest {
    /// Return the locally stored state of a key (merged with any hints held for it).
    Get { key: String },
    /// Merge this state into the locally stored one; acknowledge once it is durable.
    Merge { key: String, register: Register },
    /// Hold this state for `owner`, a replica that is down (sloppy quorum), and hand it
    /// over when the owner is back.
    MergeHint {
        key: String,
        register: Register,
        owner: NodeId,
    },
    /// Coordinate a multi-value write here. Sent by a node that is not a replica of the
    /// key: only a replica can mint the new version's dot (see `dynakv_crdt::mv`).
    Coordinate(CoordinateWrite),
    /// Merge many states (hint delivery, anti-entropy pushes).
    MergeBatch { items: Vec<(String, Register)> },
    /// Return the stored states of many keys (anti-entropy pulls).
    GetBatch { keys: Vec<String> },
    /// Return the digests of the stored versions of keys (tombstone collection checks).
    Digests { keys: Vec<String> },
    /// One round of a Merkle-tree exchange driven by `from`.
    Compare { from: NodeId, compare: Compare },
    /// Several requests in one message, answered in order. A busy node coalesces what
    /// it sends to each peer: one HTTP exchange carries many replica reads and writes.
    /// Items cannot be batches themselves, so decoding cannot recurse.
    Batch(Vec<BatchItem>),
}

/// A request that may travel in a [`ReplicaRequest::Batch`]: the small, frequent ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum BatchItem {
    Get {
        key: String,
    },
    Merge {
        key: String,
        register: Register,
    },
    MergeHint {
        key: String,
        register: Register,
        owner: NodeId,
    },
}

impl From<BatchItem> for ReplicaRequest {
    fn from(item: BatchItem) -> ReplicaRequest {
        match item {
            BatchItem::Get { key } => ReplicaRequest::Get { key },
            BatchItem::Merge { key, register } => ReplicaRequest::Merge { key, register },
            BatchItem::MergeHint { key, register, owner } => ReplicaRequest::MergeHint { key, register, owner },
        }
    }
}

impl TryFrom<&ReplicaRequest> for BatchItem {
    type Error = ();
    /// The request as a batch item, if it is one of the kinds that batch.
    fn try_from(req: &ReplicaRequest) -> Result<BatchItem, ()> {
        Ok(match req {
            ReplicaRequest::Get { key } => BatchItem::Get { key: key.clone() },
            ReplicaRequest::Merge { key, register } => BatchItem::Merge {
                key: key.clone(),
                register: register.clone(),
            },
            ReplicaRequest::MergeHint { key, register, owner } => BatchItem::MergeHint {
                key: key.clone(),
                register: register.clone(),
                owner: owner.clone(),
            },
            _ => return Err(()),
        })
    }
}

/// The answer to one [`BatchItem`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum BatchAnswer {
    State(Option<Register>),
    Merged,
}

impl From<BatchAnswer> for ReplicaResponse {
    fn from(a: BatchAnswer) -> ReplicaResponse {
        match a {
            BatchAnswer::State(s) => ReplicaResponse::State(s),
            BatchAnswer::Merged => ReplicaResponse::Merged,
        }
    }
}

/// A client write forwarded to a replica, with what is left of the client's deadline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CoordinateWrite {
    pub key: String,
    /// `None` deletes.
    pub value: Option<Bytes>,
    pub context: Option<Context>,
    pub w: usize,
    pub timeout_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ReplicaResponse {
    State(Option<Register>),
    Merged,
    Written {
        context: Context,
    },
    States(Vec<Option<Register>>),
    Digests(Vec<Option<Hash>>),
    Compared(CompareResponse),
    /// One answer per item of a [`ReplicaRequest::Batch`], in order.
    Batch(Vec<Result<BatchAnswer, WireError>>),
}

/// An [`ApiError`] inside a batch answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub required: Option<u64>,
    pub succeeded: Option<u64>,
}

impl From<&ApiError> for WireError {
    fn from(e: &ApiError) -> WireError {
        let body = e.body();
        WireError {
            status: e.status().as_u16(),
            code: body.error,
            message: body.message,
            required: body.required.map(|v| v as u64),
            succeeded: body.succeeded.map(|v| v as u64),
        }
    }
}

impl From<WireError> for ApiError {
    fn from(w: WireError) -> ApiError {
        ApiError::from_body(
            w.status,
            crate::error::ErrorBody {
                error: w.code,
                message: w.message,
                required: w.required.map(|v| v as usize),
                succeeded: w.succeeded.map(|v| v as usize),
            },
        )
    }
}

/// What members of one cluster must agree on; gossip from a node that differs is
/// refused, so a misconfigured node cannot join and disagree about placement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterId {
    pub name: String,
    pub partition_bits: u8,
    /// Replication factor: replicas of a partition must agree on who they are.
    pub n: u32,
    pub conflict: ConflictMode,
}

/// Push half of a push-pull gossip round (`POST /internal/gossip`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipRequest {
    pub cluster: ClusterId,
    pub entries: Vec<GossipEntry>,
}

/// Pull half: the receiver's table after merging the pushed one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipResponse {
    pub entries: Vec<GossipEntry>,
}

pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = vec![WIRE_VERSION];
    postcard::to_io(msg, &mut out).expect("writing to a Vec cannot fail");
    out
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.split_first() {
        Some((&WIRE_VERSION, rest)) => {
            postcard::from_bytes(rest).map_err(|e| ApiError::BadRequest(format!("undecodable message: {e}")))
        }
        Some((v, _)) => Err(ApiError::BadRequest(format!(
            "wire version {v} is not supported (this node speaks {WIRE_VERSION})"
        ))),
        None => Err(ApiError::BadRequest("empty message".into())),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn deeply_nested_garbage_is_rejected_not_recursed_into() {
        // Variant tags that would nest batches if batches could hold batches: decoding
        // must fail fast instead of recursing (a stack overflow would abort the node).
        let mut bytes = vec![WIRE_VERSION];
        for _ in 0..100_000 {
            bytes.extend_from_slice(&[8, 1]);
        }
        assert_eq!(decode::<ReplicaRequest>(&bytes).unwrap_err().code(), "bad_request");
    }

    use super::*;
    use dynakv_crdt::{Actor, LwwRegister, Timestamp};

    #[test]
    fn round_trip_and_version_check() {
        let req = ReplicaRequest::Merge {
            key: "k".into(),
            register: Register::Lww(LwwRegister::new(Timestamp(5), Actor(1), Some(Bytes::from_static(b"v")))),
        };
        let bytes = encode(&req);
        assert_eq!(decode::<ReplicaRequest>(&bytes).unwrap(), req);
        let mut other = bytes.clone();
        other[0] = 99;
        assert_eq!(decode::<ReplicaRequest>(&other).unwrap_err().code(), "bad_request");
        assert_eq!(
            decode::<ReplicaRequest>(&bytes[..bytes.len() - 1]).unwrap_err().code(),
            "bad_request"
        );
        assert_eq!(decode::<ReplicaRequest>(&[]).unwrap_err().code(), "bad_request");
    }
}
