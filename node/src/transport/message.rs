//! Every node-to-node message, in one place.
//!
//! Each verb is a struct with its own answer type ([`Call::Answer`]): a caller gets the
//! answer it asked for, and a peer that answers something else is a protocol error
//! found in one place ([`super::Peers::call`]), not an "unexpected answer" arm at every
//! call site. On the wire the verbs travel in the [`Request`] and [`Answer`] envelopes,
//! whose variants correspond one to one.
//!
//! | protocol | verbs | sent by |
//! |---|---|---|
//! | replica | [`Get`], [`Merge`], [`MergeHint`] | coordinators (reads, writes, read repair) |
//! | coordination | [`Coordinate`] | a node that is not a replica of an mv key |
//! | repair | [`Compare`], [`GetBatch`], [`MergeBatch`] | anti-entropy, hint delivery |
//! | tombstones | [`Digests`] | the tombstone collector |
//! | transfers | [`FetchPartition`] | a member fetching a partition it gains |
//! | membership | [`Gossip`] | the gossip service |
//! | layout | [`PromiseLayout`] | a layout commit (`crate::roles::services::layout`) |
//! | observability | [`Stats`] | the node assembling `/admin/overview` |
//!
//! Bodies are a version byte followed by postcard (compact, serde-derived, no schema
//! files).

use bytes::Bytes;
use dynakv_antientropy::{CompareResponse, Hash};
use dynakv_crdt::{Context, Register};
use dynakv_ring::history::LayoutHistory;
use dynakv_ring::layout::Digest;
use dynakv_ring::namespace::Namespaces;
use dynakv_ring::{GossipEntry, NodeId};

use crate::state::replica::PartitionPage;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Bumped on incompatible changes; a node rejects messages of another version.
/// Version 8: a message's `key` is an item, a key with its namespace
/// (`dynakv_ring::item`), which a node of version 7 would take for a `default` key.
pub const WIRE_VERSION: u8 = 8;

/// A request whose answer has a type of its own.
pub trait Call: Sized + Send + 'static {
    type Answer: Send + 'static;
    const VERB: &'static str;
    fn wrap(self) -> Request;
    /// The answer, if it is the kind this request expects; else the answer back.
    fn unwrap(answer: Answer) -> Result<Self::Answer, Answer>;
}

macro_rules! verbs {
    ($( $(#[$doc:meta])* $verb:ident => $answer:ty ),+ $(,)?) => {
        /// Any node-to-node request.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        pub enum Request {
            $( $(#[$doc])* $verb($verb), )+
        }

        /// The answer to a [`Request`], in the variant of the same name.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        pub enum Answer {
            $( $verb($answer), )+
        }

        $(
            impl Call for $verb {
                type Answer = $answer;
                const VERB: &'static str = stringify!($verb);
                fn wrap(self) -> Request {
                    Request::$verb(self)
                }
                #[allow(unreachable_patterns)]
                fn unwrap(answer: Answer) -> Result<$answer, Answer> {
                    match answer {
                        Answer::$verb(a) => Ok(a),
                        other => Err(other),
                    }
                }
            }
        )+

        impl Request {
            pub fn verb(&self) -> &'static str {
                match self {
                    $( Request::$verb(_) => stringify!($verb), )+
                }
            }
        }

        impl Answer {
            pub fn verb(&self) -> &'static str {
                match self {
                    $( Answer::$verb(_) => stringify!($verb), )+
                }
            }
        }
    };
}

verbs! {
    /// The locally stored state of a key, merged with any hints held for it.
    Get => Option<Register>,
    /// Merge this state into the local one; acknowledged once it is durable.
    Merge => (),
    /// Hold this state for `owner`, a replica that is down (sloppy quorum), and hand it
    /// over when the owner is back.
    MergeHint => (),
    /// Coordinate a multi-value write here: only a replica can mint the new version's dot
    /// (see `dynakv_crdt::mv`). Answers the new version's context.
    Coordinate => Context,
    /// Merge many states (hint delivery, anti-entropy pushes).
    MergeBatch => (),
    /// The stored states of many keys (anti-entropy pulls).
    GetBatch => Vec<Option<Register>>,
    /// Digests of the stored versions of keys (tombstone collection checks).
    Digests => Vec<Option<Hash>>,
    /// One round of a Merkle-tree exchange driven by `from`.
    Compare => CompareResponse,
    /// Push half of a push-pull gossip round; answered with the receiver's table after
    /// merging.
    Gossip => GossipReply,
    /// A promise not to accept another layout for a version (the commit of a layout).
    PromiseLayout => (),
    /// One page of a partition's stored states (see `crate::state::transfer`).
    FetchPartition => PartitionPage,
    /// What the web view shows of a node (`GET /admin/overview`). Last in the list, so
    /// the verbs before it keep their encoding: a node that predates it fails only this.
    Stats => Box<NodeStats>,
}

/// A replica read. It names the layout the reader placed it under, and whether it asks
/// the receiver as one of the key's replicas or as a fallback: a node answers only what
/// it may (`crate::state::cluster::may_serve`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Get {
    pub key: String,
    pub layout: u64,
    pub fallback: bool,
}

impl Get {
    /// A read of `key` as one of its replicas, naming no layout (tests).
    pub fn of(key: impl Into<String>) -> Get {
        Get {
            key: key.into(),
            layout: 0,
            fallback: false,
        }
    }
}

/// Every verb that leaves data on the receiver names the sender's layout version: a
/// receiver that has not heard of that layout yet may be one of its replicas, and must
/// not drop the copy as a partition it no longer needs (see
/// `dynakv_ring::history::LayoutHistory::droppable`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Merge {
    pub key: String,
    pub register: Register,
    pub layout: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MergeHint {
    pub key: String,
    pub register: Register,
    pub owner: NodeId,
    pub layout: u64,
}

/// A client write forwarded to a replica, with what is left of the client's deadline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Coordinate {
    pub key: String,
    /// `None` deletes.
    pub value: Option<Bytes>,
    pub context: Option<Context>,
    pub w: usize,
    /// Acknowledgements that must come from the key's own replicas (0: none).
    pub pw: usize,
    pub timeout_ms: u64,
    pub layout: u64,
}

/// States for many keys, merged as one storage write and synced before the answer
/// (whoever sent them may then delete its own copies: hints handed over).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MergeBatch {
    pub items: Vec<(String, Register)>,
    pub layout: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GetBatch {
    pub keys: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Digests {
    pub keys: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Compare {
    pub from: NodeId,
    pub compare: dynakv_antientropy::Compare,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {}

/// A node's live figures, for the web view.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStats {
    /// Client requests of the last minute.
    pub recent: crate::env::metrics::RecentSummary,
    pub hints_pending: u64,
    /// Age of the oldest hint held.
    pub hints_oldest_ms: Option<u64>,
    /// Incoming partition transfers.
    pub transfers: Vec<TransferStat>,
    /// The last anti-entropy exchange with each peer.
    pub antientropy: Vec<ExchangeStat>,
    /// The first bytes of the Merkle root of each partition the node replicates, read
    /// at most every 10 s.
    pub roots: Vec<(u32, [u8; 8])>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferStat {
    pub version: u64,
    pub partition: u32,
    pub from: String,
    pub to: String,
    pub state: String,
    pub keys: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeStat {
    pub peer: String,
    pub last_exchange_ms_ago: Option<u64>,
    pub result: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchPartition {
    pub partition: u32,
    /// The last storage key the fetcher has; `None` for the first page.
    pub after: Option<Vec<u8>>,
    /// Size the page may reach (the source caps it at `transfer::MAX_PAGE_BYTES`).
    pub max_bytes: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gossip {
    pub cluster: ClusterId,
    pub entries: Vec<GossipEntry>,
    pub layout: LayoutHistory,
    /// The namespace table (`crate::state::catalog`).
    pub namespaces: Namespaces,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipReply {
    pub entries: Vec<GossipEntry>,
    /// Boxed: answers are an enum, and this is by far its largest payload.
    pub layout: Box<LayoutHistory>,
    pub namespaces: Box<Namespaces>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromiseLayout {
    pub cluster: ClusterId,
    pub version: u64,
    pub digest: Digest,
}

impl Request {
    /// The small, quick verbs that travel coalesced on the replica stream. The others
    /// (long-running or large) go on their own, so they never hold up the stream.
    pub fn streamable(&self) -> bool {
        matches!(self, Request::Get(_) | Request::Merge(_) | Request::MergeHint(_))
    }

    /// Rough encoded size, to keep coalesced batches well under the peer's limit.
    pub fn approx_bytes(&self) -> usize {
        let values = |r: &Register| r.values().iter().map(|v| v.len()).sum::<usize>();
        match self {
            Request::Get(g) => g.key.len() + 16,
            Request::Merge(m) => m.key.len() + 64 + values(&m.register),
            Request::MergeHint(m) => m.key.len() + 64 + values(&m.register),
            other => 64 + other.verb().len(),
        }
    }
}

/// An error answer as it crosses the wire: what a peer answers instead of an answer,
/// and what a malformed message gets. The status and code are those the HTTP API gives
/// the same error, so that a forwarded client request's error reaches its client
/// unchanged (the roles map their errors to and from it: `roles::edge`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct WireError {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub required: Option<u64>,
    pub succeeded: Option<u64>,
    /// Which quorum failed, on `quorum_failed`.
    pub quorum: Option<QuorumName>,
}

/// A quorum, as a `quorum_failed` error names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuorumName {
    R,
    W,
    Pr,
    Pw,
}

impl QuorumName {
    pub fn as_str(self) -> &'static str {
        match self {
            QuorumName::R => "r",
            QuorumName::W => "w",
            QuorumName::Pr => "pr",
            QuorumName::Pw => "pw",
        }
    }

    pub fn parse(s: &str) -> Option<QuorumName> {
        [QuorumName::R, QuorumName::W, QuorumName::Pr, QuorumName::Pw]
            .into_iter()
            .find(|q| q.as_str() == s)
    }
}

impl WireError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> WireError {
        WireError {
            status,
            code: code.to_string(),
            message: message.into(),
            required: None,
            succeeded: None,
            quorum: None,
        }
    }

    /// A message that cannot be decoded or makes no sense (worded as the HTTP API words
    /// its `bad_request`).
    pub fn bad_request(message: impl std::fmt::Display) -> WireError {
        WireError::new(400, "bad_request", format!("bad request: {message}"))
    }

    /// The peer's own fault: a crashed handler, an answer too large for a frame (worded
    /// as the HTTP API words its `internal`).
    pub fn internal(message: impl std::fmt::Display) -> WireError {
        WireError::new(500, "internal", format!("internal error: {message}"))
    }

    pub fn code(&self) -> &str {
        &self.code
    }
}

/// What members of one cluster must agree on (defined with the cluster view).
pub use crate::state::cluster::ClusterId;

pub fn encode<T: Serialize + ?Sized>(msg: &T) -> Vec<u8> {
    let mut out = vec![WIRE_VERSION];
    postcard::to_io(msg, &mut out).expect("writing to a Vec cannot fail");
    out
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    match bytes.split_first() {
        Some((&WIRE_VERSION, rest)) => {
            postcard::from_bytes(rest).map_err(|e| WireError::bad_request(format!("undecodable message: {e}")))
        }
        Some((v, _)) => Err(WireError::bad_request(format!(
            "wire version {v} is not supported (this node speaks {WIRE_VERSION})"
        ))),
        None => Err(WireError::bad_request("empty message")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynakv_crdt::{Actor, ConflictMode, LwwRegister, Timestamp};

    #[test]
    fn round_trip_and_version_check() {
        let req = Merge {
            key: "k".into(),
            register: Register::Lww(LwwRegister::new(Timestamp(5), Actor(1), Some(Bytes::from_static(b"v")))),
            layout: 7,
        }
        .wrap();
        let bytes = encode(&req);
        assert_eq!(decode::<Request>(&bytes).unwrap(), req);
        let mut other = bytes.clone();
        other[0] = 99;
        assert_eq!(decode::<Request>(&other).unwrap_err().code(), "bad_request");
        assert_eq!(
            decode::<Request>(&bytes[..bytes.len() - 1]).unwrap_err().code(),
            "bad_request"
        );
        assert_eq!(decode::<Request>(&[]).unwrap_err().code(), "bad_request");
    }

    #[test]
    fn each_request_takes_only_its_own_answer() {
        assert_eq!(Get::unwrap(Answer::Get(None)), Ok(None));
        assert_eq!(Get::unwrap(Answer::Merge(())), Err(Answer::Merge(())));
        assert_eq!(Digests::unwrap(Answer::Digests(vec![None])), Ok(vec![None]));
        assert!(
            Merge::unwrap(Answer::MergeHint(())).is_err(),
            "same payload, other verb"
        );
        assert_eq!(Get::of("k").wrap().verb(), Get::VERB);
    }

    #[test]
    fn only_small_verbs_travel_on_the_stream_and_gossip_has_its_route() {
        let get = Get::of("k").wrap();
        let batch = GetBatch { keys: vec![] }.wrap();
        let gossip = Gossip {
            cluster: ClusterId {
                name: "c".into(),
                partition_bits: 4,
                n: 3,
                conflict: ConflictMode::Mv,
            },
            entries: vec![],
            layout: LayoutHistory::new(),
            namespaces: Namespaces::default(),
        }
        .wrap();
        assert!(get.streamable() && !batch.streamable() && !gossip.streamable());
    }
}
