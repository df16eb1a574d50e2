//! The admin API's answers as types: what `/cluster/members`, `/cluster/preflist/{key}`,
//! `/admin/replica/{key}`, `/admin/antientropy`, `/admin/layout` (and its plan, stage,
//! revert and commit), `/admin/namespaces` and `/admin/overview` return, and the bodies
//! `/admin/namespaces/{ns}` takes. The node builds them, the handlers
//! serialise them, and the typed client (`dynakv_node::cli::api`) decodes them; the
//! OpenAPI conformance test holds the wire to `openapi.json`.
//!
//! Two fields stay JSON: a staged layout change and a planned partition move are the
//! ring's own types, shown as the ring serialises them (this crate does not depend on
//! the ring).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A member as the serving node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    /// Where clients reach it.
    pub addr: String,
    /// Where other nodes reach it.
    pub cluster_addr: String,
    /// `alive`, `suspect`, `dead` or `left`.
    pub status: String,
    pub generation: u64,
    pub heartbeat: u64,
    /// Milliseconds since this node last heard the member's heartbeat advance.
    pub silent_ms: u64,
    pub tokens: u32,
}

/// `GET /cluster/members`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    /// The node that answered.
    pub node: String,
    pub members: Vec<Member>,
}

/// `GET /cluster/preflist/{key}`: the key's partition and its replicas in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preflist {
    pub key: String,
    /// The key's namespace (`default` when the request named none).
    pub namespace: String,
    pub partition: u32,
    pub nodes: Vec<String>,
}

/// `GET /admin/replica/{key}`: what the answering node itself stores for the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// `lww` or `mv`.
    pub mode: String,
    /// The values, base64.
    pub values: Vec<String>,
    pub tombstone: bool,
    /// The causal context token.
    pub context: String,
}

/// One partition transfer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// The layout version it fetches for.
    pub version: u64,
    pub partition: u32,
    pub from: String,
    pub to: String,
    /// `pending`, `running`, `done`, `failed`, `skipped` (the source is down) or
    /// `not_needed` (enough other sources were fetched from).
    pub state: String,
    pub keys: u64,
    pub bytes: u64,
}

impl Transfer {
    /// Nothing more will happen to it.
    pub fn finished(&self) -> bool {
        matches!(self.state.as_str(), "done" | "skipped" | "not_needed")
    }
}

/// `GET /admin/antientropy`: repair, hints, tombstones and the cluster port.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AntiEntropy {
    pub node: String,
    /// Pause between exchanges; `null` when anti-entropy is off.
    pub interval_ms: Option<u64>,
    pub read_repairs: u64,
    pub hints: Hints,
    pub tombstones: Tombstones,
    /// The last exchange with each peer.
    pub peers: Vec<PeerExchange>,
    /// The partitions this node replicates or holds keys of.
    pub partitions: Vec<PartitionRepair>,
    pub transfers: Vec<Transfer>,
    pub cluster_port: ClusterPort,
}

/// Hints this node holds for others. The scanned figures are `null` when the scan
/// failed (a storage error).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hints {
    pub pending: Option<u64>,
    pub by_owner: Option<BTreeMap<String, u64>>,
    /// Wall-clock ms at which the oldest pending hint was stored.
    pub oldest_ms: Option<u64>,
    pub hinted_writes: u64,
    pub delivered: u64,
    pub discarded_stale: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstones {
    /// `null` when the scan failed.
    pub pending: Option<u64>,
    pub collected: u64,
}

/// The last anti-entropy exchange with one peer, and totals over all of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerExchange {
    pub peer: String,
    pub last_exchange_ms_ago: Option<u64>,
    pub result: String,
    pub shared_partitions: u64,
    pub rounds: u64,
    pub differences: u64,
    pub keys_pushed: u64,
    pub keys_pulled: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub duration_ms: u64,
    pub exchanges: u64,
    pub keys_repaired_total: u64,
}

/// One partition's Merkle root and its last exchange with each other replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRepair {
    pub partition: u32,
    pub replicas: Vec<String>,
    pub replica_here: bool,
    /// The Merkle root, hex.
    pub root: String,
    pub keys: u64,
    pub peers: BTreeMap<String, PartitionPeer>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionPeer {
    pub last_exchange_ms_ago: Option<u64>,
    pub result: String,
    pub repaired: u64,
}

/// Connections to the cluster port: accepted, and refused by reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterPort {
    pub accepted: u64,
    pub refused: BTreeMap<String, u64>,
}

/// `GET /admin/layout`: the layout, what is staged and what is moving.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    pub node: String,
    /// The newest layout version.
    pub version: u64,
    /// The version reads are placed by.
    pub read_version: u64,
    pub active_versions: Vec<u64>,
    pub members: Vec<LayoutMember>,
    pub staged: Vec<Staged>,
    pub transfers: Vec<Transfer>,
    pub moving_partitions: u64,
    /// No partition is moving and every owner has synced the newest version.
    pub settled: bool,
    pub service: LayoutService,
}

/// An owner in some active layout version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutMember {
    pub id: String,
    /// `null` when this node does not know the member's addresses.
    pub addr: Option<String>,
    pub cluster_addr: Option<String>,
    pub tokens: Option<u32>,
    /// `active`, `joining` or `leaving`.
    pub state: String,
    /// Its membership status, `null` when unknown.
    pub status: Option<String>,
    /// The layout versions it has acknowledged, synced, and places reads by.
    pub acked: u64,
    pub synced: u64,
    pub reads: u64,
}

/// A staged change (`change` as the ring writes it: `{"join":ID}`, ...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Staged {
    pub change: serde_json::Value,
    pub by: String,
    pub at_ms: u64,
}

/// What the layout service has done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutService {
    pub rounds: u64,
    pub syncing: bool,
    pub keys_fetched: u64,
    pub bytes_fetched: u64,
    pub partitions_synced: u64,
    pub keys_dropped: u64,
    pub newest_layout_seen: u64,
    pub auto_join_commits: u64,
    pub last_sync: Option<LastSync>,
}

/// The last pass that fetched every partition this node gained.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastSync {
    pub version: u64,
    pub partitions: u64,
    pub keys: u64,
    pub bytes: u64,
    pub ms: u64,
}

/// `GET /admin/layout/plan`: what committing the staged changes would move.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayoutPlan {
    /// The version the commit would make.
    pub version: u64,
    pub owners: Vec<String>,
    /// Partitions whose replicas change.
    pub moves: u64,
    pub partition_copies_to_send: u64,
    /// Estimated from the answering node's own copies.
    pub keys_to_move_estimate: u64,
    /// Partitions each owner holds before and after.
    pub partitions: BTreeMap<String, Shares>,
    /// Each move, as the ring writes it.
    pub changes: Vec<serde_json::Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shares {
    pub before: u32,
    pub after: u32,
}

/// `POST /admin/layout/commit`: the version committed and the layout after it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Committed {
    pub version: u64,
    pub layout: Layout,
}

/// `GET /admin/overview`: what the web view and `dynakv status` show, gathered from
/// every member.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Overview {
    pub node: String,
    pub time_ms: u64,
    pub settings: OverviewSettings,
    pub layout: LayoutSummary,
    /// Each partition's replicas, in preference order.
    pub ring: Vec<Vec<String>>,
    pub members: Vec<Member>,
    /// Each member's live figures, or why they could not be had.
    pub nodes: BTreeMap<String, NodeFigures>,
    /// Per pair of replicas: do their Merkle roots agree?
    pub pairs: Vec<Pair>,
    /// The namespaces this node knows, `default` first.
    pub namespaces: Vec<Namespace>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverviewSettings {
    pub n: u64,
    pub r: u64,
    pub w: u64,
    /// `lww` or `mv`.
    pub conflict: String,
    pub partitions: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutSummary {
    pub version: u64,
    pub read_version: u64,
    pub settled: bool,
    pub moving_partitions: u64,
}

/// One member's figures: reached (`reachable: true`) or not.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NodeFigures {
    Reached(Figures),
    Unreached { reachable: bool, error: String },
}

/// A reached member's last minute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Always `true`.
    pub reachable: bool,
    /// Seconds covered (up to 60).
    pub window_s: u32,
    /// Client requests per second.
    pub rate: f64,
    /// Failed client requests per second.
    pub errors: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Per second, oldest first.
    pub series: Vec<SeriesPoint>,
    pub hints_pending: u64,
    pub hints_oldest_ms: Option<u64>,
    pub transfers: Vec<Transfer>,
    pub antientropy: Vec<Exchange>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// Unix second.
    pub t: u64,
    pub rate: u32,
    pub p99_ms: Option<f64>,
}

/// A member's last anti-entropy exchange with one peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    pub peer: String,
    pub last_exchange_ms_ago: Option<u64>,
    pub result: String,
}

/// Two replicas and how many of the partitions they share have equal Merkle roots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    pub a: String,
    pub b: String,
    pub shared: u64,
    /// Shared partitions both reported a root for.
    pub compared: u64,
    /// `null` when nothing could be compared.
    pub agree: Option<u64>,
    pub last_exchange_ms_ago: Option<u64>,
    pub result: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unreached member decodes as one, and a reached one as figures: the untagged
    /// enum tells them apart by their fields.
    #[test]
    fn node_figures_decode_both_ways() {
        let down: NodeFigures = serde_json::from_str(r#"{"reachable":false,"error":"timed out"}"#).unwrap();
        assert_eq!(
            down,
            NodeFigures::Unreached {
                reachable: false,
                error: "timed out".into()
            }
        );
        let up = NodeFigures::Reached(Figures {
            reachable: true,
            window_s: 3,
            rate: 1.5,
            errors: 0.0,
            p50_ms: Some(0.4),
            p99_ms: None,
            series: vec![SeriesPoint {
                t: 1,
                rate: 2,
                p99_ms: None,
            }],
            hints_pending: 0,
            hints_oldest_ms: None,
            transfers: vec![],
            antientropy: vec![],
        });
        let text = serde_json::to_string(&up).unwrap();
        assert_eq!(serde_json::from_str::<NodeFigures>(&text).unwrap(), up);
    }
}

/// A namespace's definition and state (`GET /admin/namespaces/{ns}`, and each of
/// `GET /admin/namespaces`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub name: String,
    /// Replicas per key (fixed at creation).
    pub n: u8,
    pub r: u8,
    pub w: u8,
    /// Of the R answers (W acknowledgements), how many must come from the key's own
    /// replicas.
    pub pr: u8,
    pub pw: u8,
    /// `mv` or `lww` (fixed at creation).
    pub conflict: String,
    /// A data type (fixed at creation); `null`: registers.
    pub datatype: Option<String>,
    /// Default time to live of a written value, in seconds; `null`: no expiry.
    pub ttl_s: Option<u64>,
    /// `active` once every owner of the current layout holds it, else `pending`.
    pub state: String,
}

/// `GET /admin/namespaces`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespaces {
    pub namespaces: Vec<Namespace>,
}

/// The body of `PUT /admin/namespaces/{ns}`: every field optional (the node's settings
/// fill in the rest).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceSpec {
    #[serde(default)]
    pub n: Option<u8>,
    #[serde(default)]
    pub r: Option<u8>,
    #[serde(default)]
    pub w: Option<u8>,
    #[serde(default)]
    pub pr: Option<u8>,
    #[serde(default)]
    pub pw: Option<u8>,
    #[serde(default)]
    pub conflict: Option<String>,
    #[serde(default)]
    pub datatype: Option<String>,
    #[serde(default)]
    pub ttl_s: Option<u64>,
}

/// The body of `PATCH /admin/namespaces/{ns}`: what to change. `ttl_s: null` removes
/// the expiry (absent: unchanged); `n`, `conflict` and `datatype`, whatever their value
/// (`null` too), are refused (409), being fixed at creation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespacePatch {
    #[serde(default)]
    pub r: Option<u8>,
    #[serde(default)]
    pub w: Option<u8>,
    #[serde(default)]
    pub pr: Option<u8>,
    #[serde(default)]
    pub pw: Option<u8>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub n: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub conflict: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub datatype: Option<serde_json::Value>,
}

/// A field that is present (`null` included) is `Some`.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}
