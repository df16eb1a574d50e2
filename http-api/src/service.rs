//! What the HTTP layer needs from a node: its coordinator ([`KvService`]) and its admin
//! views ([`AdminService`]). The node crate implements them; tests can implement them
//! with fakes.

use std::future::Future;

use bytes::Bytes;
use dynakv_crdt::{Context, Register};

use crate::admin::{AntiEntropy, Committed, Layout, LayoutPlan, Member, Namespace, Namespaces, Overview};
use crate::error::ApiError;
use crate::params::{Key, QuorumParams};

/// The namespace a data route names: `None` for `/kv/{key}`, the `default` namespace
/// (the name is checked by the service).
pub type NamespaceName = Option<String>;

/// Result of a coordinated read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GetOutcome {
    /// One value, or several concurrent siblings.
    Found { values: Vec<Bytes>, context: Context },
    /// No live value. The context is there when a tombstone was found, so a client can
    /// write after the delete.
    NotFound { context: Option<Context> },
}

/// A client operation on a data route (`/kv`, `/ns/{ns}/kv`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvOp {
    Get,
    Put,
    Delete,
}

impl KvOp {
    pub fn as_str(self) -> &'static str {
        match self {
            KvOp::Get => "get",
            KvOp::Put => "put",
            KvOp::Delete => "delete",
        }
    }
}

/// A finished `/kv` request, for the node's metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    pub op: KvOp,
    pub status: u16,
    /// It failed for want of R or W replicas.
    pub quorum_failed: bool,
    /// From the handler's start (the request head parsed) to its answer.
    pub elapsed: std::time::Duration,
}

/// The client-facing operations a node coordinates (`/kv`).
pub trait KvService: Send + Sync + 'static {
    /// Replication factor, the bound for per-request `r` and `w`.
    fn n(&self) -> usize;
    /// The default `r` and `w`: the bounds of `pr` and `pw` when the request gives no
    /// `r` or `w` (the served description states them).
    fn default_quorums(&self) -> (usize, usize);
    fn max_value_bytes(&self) -> usize;
    /// Longest pause allowed between two parts of a request body.
    fn read_timeout(&self) -> std::time::Duration;

    /// Reads `key` of namespace `ns` with the request's `r` and `pr` (the rest of
    /// `quorum` is empty).
    fn get(
        &self,
        ns: NamespaceName,
        key: Key,
        quorum: QuorumParams,
    ) -> impl Future<Output = Result<GetOutcome, ApiError>> + Send;
    /// Writes `value` (or deletes, with `None`) to `key` of namespace `ns` with the
    /// request's `w` and `pw`, and returns the new version's context.
    fn write(
        &self,
        ns: NamespaceName,
        key: Key,
        value: Option<Bytes>,
        context: Option<Context>,
        quorum: QuorumParams,
    ) -> impl Future<Output = Result<Context, ApiError>> + Send;

    /// Every `/kv` request once answered, or with status 499 when the client went away
    /// before the answer; by default not recorded.
    fn observe(&self, _request: Observed) {}
}

/// What an operator can see of a node (`/cluster`, `/admin`, `/health`).
pub trait AdminService: Send + Sync + 'static {
    fn node_id(&self) -> &str;
    /// Longest pause allowed between two parts of a request body.
    fn read_timeout(&self) -> std::time::Duration;
    fn members(&self) -> Vec<Member>;
    /// The partition of `key` of namespace `ns` and its replicas in preference order.
    fn preference_list(&self, ns: NamespaceName, key: &Key) -> Result<(u32, Vec<String>), ApiError>;
    /// What this node itself stores for `key` of namespace `ns`.
    fn local_replica(&self, ns: NamespaceName, key: &Key) -> Result<Option<Register>, ApiError>;
    /// Anti-entropy, hint and tombstone state, for `GET /admin/antientropy`.
    fn antientropy_status(&self) -> AntiEntropy;
    /// `GET /admin/layout`: the cluster layout, what is staged and what is moving.
    fn layout(&self) -> Layout;
    /// `GET /admin/layout/plan`: what committing the staged changes would move.
    fn layout_plan(&self) -> Result<LayoutPlan, ApiError>;
    /// `GET /admin/namespaces`.
    fn namespaces(&self) -> Namespaces;
    /// `GET /admin/namespaces/{ns}`.
    fn namespace(&self, name: &str) -> Result<Namespace, ApiError>;
    /// `PUT /admin/namespaces/{ns}` (the body is a `NamespaceSpec`): the namespace, and
    /// whether this request created it.
    fn create_namespace(
        &self,
        name: &str,
        body: &[u8],
    ) -> impl Future<Output = Result<(bool, Namespace), ApiError>> + Send;
    /// `PATCH /admin/namespaces/{ns}` (the body is a `NamespacePatch`).
    fn tune_namespace(&self, name: &str, body: &[u8]) -> Result<Namespace, ApiError>;
    /// `POST /admin/layout/stage`: stages one change (its JSON is the body).
    fn layout_stage(&self, body: &[u8]) -> Result<Layout, ApiError>;
    /// `POST /admin/layout/revert`: drops the staged changes.
    fn layout_revert(&self) -> Layout;
    /// `POST /admin/layout/commit` with `{"version": V}`.
    fn layout_commit(&self, body: &[u8]) -> impl Future<Output = Result<Committed, ApiError>> + Send;
    /// `GET /metrics`: the content type and the text.
    fn metrics(&self) -> (&'static str, String);
    /// `GET /admin/overview`: what the web view shows, gathered from every member.
    fn overview(&self) -> impl Future<Output = Overview> + Send;
}
