//! Where the node's own errors meet the HTTP API's: each domain error's [`ApiError`]
//! (its status and code), and the conversions between [`ApiError`] and the wire's
//! [`WireError`] for errors that cross the cluster port (a forwarded client write's
//! error reaches its client unchanged). Nothing below the roles knows `ApiError`: the
//! node's state refuses with [`NotServing`] and [`OtherCluster`], storage fails with
//! [`StorageError`], layouts with [`LayoutError`], commits with [`CommitError`], and
//! the transport carries [`WireError`].

use crate::state::catalog::CatalogError;
use dynakv_http_api::{ApiError, ErrorBody};
use dynakv_ring::layout::{LayoutError, Refusal};
use dynakv_ring::namespace::NamespaceError;
use tracing::error;

use crate::env::storage::StorageError;
use crate::roles::services::layout::{BAD_CHANGE, CommitError, LAYOUT_BUSY, PromiseError};
use crate::state::cluster::{NotServing, OtherCluster};
use crate::transport::message::{QuorumName, WireError};

/// A storage failure as the client sees it: a full disk is 507 (the node takes no
/// writes until space is freed), anything else a logged 500.
pub fn storage_error(e: StorageError) -> ApiError {
    match e {
        // The store logs when the disk fills and when writes work again.
        StorageError::NoSpace(detail) => {
            ApiError::InsufficientStorage(format!("this node's disk is full; it takes no writes: {detail}"))
        }
        e => {
            error!(error = %e, "storage failure");
            ApiError::Internal(format!("storage failure on this node: {e}"))
        }
    }
}

/// The HTTP status of a refused change: 400 when the change is wrong, 409 when the
/// cluster's state forbids it now.
fn layout_status(e: &LayoutError) -> u16 {
    match e.refusal() {
        Refusal::Change => 400,
        Refusal::State => 409,
    }
}

pub fn layout_error(e: LayoutError) -> ApiError {
    ApiError::Layout {
        status: layout_status(&e),
        code: e.code(),
        message: e.to_string(),
    }
}

/// Every error code of the layout routes with its status: [`LayoutError`]'s, a busy
/// cluster's and a body that is no change.
pub fn layout_codes() -> Vec<(&'static str, u16)> {
    let mut codes: Vec<(&'static str, u16)> = LayoutError::examples()
        .iter()
        .map(|e| (e.code(), layout_status(e)))
        .collect();
    codes.push((LAYOUT_BUSY, 409));
    codes.push((BAD_CHANGE, 400));
    codes.sort();
    codes.dedup();
    codes
}

/// The error codes of the namespace routes.
pub const BAD_NAMESPACE: &str = "bad_namespace";
pub const UNKNOWN_NAMESPACE: &str = "unknown_namespace";
pub const NAMESPACE_CONFLICT: &str = "namespace_conflict";
pub const TOO_MANY_NAMESPACES: &str = "too_many_namespaces";
pub const OWNER_REQUIRED: &str = "owner_required";

fn namespace_refusal(status: u16, code: &'static str, message: String) -> ApiError {
    ApiError::Namespace { status, code, message }
}

/// A refused namespace request: a bad name 400, bad values 400 `bad_parameter`, a
/// change to what is fixed 409, an unknown name 404, a full table 409.
pub fn namespace_error(e: CatalogError) -> ApiError {
    match e {
        CatalogError::Refused(e @ NamespaceError::BadName(_)) => namespace_refusal(
            400,
            BAD_NAMESPACE,
            format!("{e}: a name is a lowercase letter or digit, then up to 62 lowercase letters, digits, `_` or `-`"),
        ),
        CatalogError::Refused(NamespaceError::BadValue(m)) => ApiError::BadParameter(m),
        CatalogError::Refused(e @ (NamespaceError::Fixed { .. } | NamespaceError::Exists(_))) => {
            namespace_refusal(409, NAMESPACE_CONFLICT, e.to_string())
        }
        CatalogError::Refused(e @ NamespaceError::Unknown(_)) => {
            namespace_refusal(404, UNKNOWN_NAMESPACE, e.to_string())
        }
        e @ CatalogError::Full => namespace_refusal(409, TOO_MANY_NAMESPACES, e.to_string()),
        CatalogError::Storage(e) => storage_error(e),
    }
}

/// A namespace created on a node that owns no partition: refused, so that a rival
/// creation of the same name can never displace one that became active (see
/// docs/design/namespaces.md).
pub fn owner_required(owners: &std::collections::BTreeSet<dynakv_ring::NodeId>) -> ApiError {
    let names: Vec<&str> = owners.iter().map(|o| o.as_str()).collect();
    namespace_refusal(
        409,
        OWNER_REQUIRED,
        format!(
            "namespaces are created through an owner of the current layout ({}); this node owns no partition",
            if names.is_empty() {
                "none yet".to_string()
            } else {
                names.join(", ")
            }
        ),
    )
}

/// Every error code of the namespace routes with its status.
pub fn namespace_codes() -> Vec<(&'static str, u16)> {
    vec![
        (BAD_NAMESPACE, 400),
        (UNKNOWN_NAMESPACE, 404),
        (NAMESPACE_CONFLICT, 409),
        (TOO_MANY_NAMESPACES, 409),
        (OWNER_REQUIRED, 409),
    ]
}

impl From<CommitError> for ApiError {
    fn from(e: CommitError) -> ApiError {
        match e {
            CommitError::Refused(e) => layout_error(e),
            busy @ CommitError::Busy { .. } => ApiError::Layout {
                status: 409,
                code: LAYOUT_BUSY,
                message: busy.to_string(),
            },
            short @ CommitError::NoMajority { .. } => ApiError::Unavailable(short.to_string()),
        }
    }
}

impl From<PromiseError> for ApiError {
    fn from(e: PromiseError) -> ApiError {
        match e {
            PromiseError::OtherCluster(e) => e.into(),
            PromiseError::Refused(e) => layout_error(e),
        }
    }
}

impl From<NotServing> for ApiError {
    fn from(e: NotServing) -> ApiError {
        ApiError::Unavailable(e.0)
    }
}

impl From<OtherCluster> for ApiError {
    fn from(e: OtherCluster) -> ApiError {
        ApiError::ClusterMismatch(e.0)
    }
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
            quorum: body.quorum.as_deref().and_then(QuorumName::parse),
        }
    }
}

impl From<WireError> for ApiError {
    fn from(w: WireError) -> ApiError {
        ApiError::from_body(
            w.status,
            ErrorBody {
                error: w.code,
                message: w.message,
                required: w.required.map(|v| v as usize),
                succeeded: w.succeeded.map(|v| v as usize),
                quorum: w.quorum.map(|q| q.as_str().to_string()),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error crosses the wire and comes back as the same error, status and code.
    #[test]
    fn api_errors_cross_the_wire_unchanged() {
        for e in [
            ApiError::TooManySiblings { count: 9, limit: 9 },
            ApiError::Unavailable("later".into()),
            ApiError::InsufficientStorage("full".into()),
            layout_error(LayoutError::Conflict { current: 3, asked: 3 }),
        ] {
            let back = ApiError::from(WireError::from(&e));
            assert_eq!((back.status(), back.code()), (e.status(), e.code()), "{e}");
            assert_eq!(back.to_string(), e.to_string());
        }
        // A forwarded write's quorum failure comes back whole: which quorum, and counts.
        for (op, primaries) in [
            (dynakv_http_api::QuorumOp::Write, true),
            (dynakv_http_api::QuorumOp::Write, false),
            (dynakv_http_api::QuorumOp::Read, true),
        ] {
            let e = ApiError::Quorum {
                op,
                required: 3,
                succeeded: 2,
                primaries,
            };
            assert_eq!(ApiError::from(WireError::from(&e)), e);
        }
    }

    /// The transport's own errors read as the HTTP API's of the same code.
    #[test]
    fn the_transports_errors_are_worded_as_the_apis() {
        assert_eq!(
            WireError::bad_request("empty message"),
            WireError::from(&ApiError::BadRequest("empty message".into()))
        );
        assert_eq!(
            WireError::internal("a crash"),
            WireError::from(&ApiError::Internal("a crash".into()))
        );
    }

    #[test]
    fn domain_refusals_get_their_statuses() {
        assert_eq!(ApiError::from(NotServing("behind".into())).code(), "unavailable");
        assert_eq!(ApiError::from(OtherCluster("other".into())).code(), "cluster_mismatch");
        let busy = ApiError::from(CommitError::Busy { active: 5 });
        assert_eq!((busy.status().as_u16(), busy.code()), (409, LAYOUT_BUSY));
        let short = ApiError::from(CommitError::NoMajority {
            promised: 1,
            owners: 3,
            asked: 4,
        });
        assert_eq!(short.code(), "unavailable");
    }
}
