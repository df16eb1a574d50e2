//! Every way a request can fail, and the one place they become HTTP statuses.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// Which side of a quorum failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuorumOp {
    Read,
    Write,
}

/// A failed request. Expected outcomes (siblings, a missing key) are not errors.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("bad key: {0}")]
    BadKey(String),
    #[error("{0}")]
    BadParameter(String),
    #[error("malformed context: {0}")]
    BadContext(String),
    #[error("the request body stalled: nothing arrived for {ms} ms")]
    BodyTimeout { ms: u64 },
    #[error("the value is larger than the limit of {limit} bytes")]
    ValueTooLarge { limit: usize },
    #[error(
        "the key holds {count} concurrent values (siblings), the limit is {limit}: read it and write \
         with the context of that read to resolve them"
    )]
    TooManySiblings { count: usize, limit: usize },
    #[error("{0}")]
    NotFound(String),
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    /// Too few replicas answered in time; with `primaries`, too few of the key's own
    /// replicas (fallbacks do not count towards `pr` and `pw`).
    #[error("{}", quorum_message(*.op, *.required, *.succeeded, *.primaries))]
    Quorum {
        op: QuorumOp,
        required: usize,
        succeeded: usize,
        primaries: bool,
    },
    /// A namespace request refused: a bad name (400 `bad_namespace`), one that does not
    /// exist (404 `unknown_namespace`), a change to what is fixed at creation (409
    /// `namespace_conflict`), too many (409 `too_many_namespaces`), a creation on a node
    /// that owns no partition (409 `owner_required`).
    #[error("{message}")]
    Namespace {
        status: u16,
        code: &'static str,
        message: String,
    },
    /// A malformed node-to-node message.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A peer belongs to another cluster (name or partitioning differ).
    #[error("{0}")]
    ClusterMismatch(String),
    /// The node is shutting down or not ready.
    #[error("{0}")]
    Unavailable(String),
    /// No valid API token (`Authorization: Bearer <token>`) on a node that requires one.
    #[error("{0}")]
    Unauthenticated(String),
    /// The token is valid but lacks the scope the route needs.
    #[error("{0}")]
    Forbidden(String),
    /// Over the node's limit of connections or of requests in flight on a connection.
    #[error("{0}")]
    Overloaded(String),
    /// Our fault: storage failed or a bug. Logged with details; the client sees a summary.
    #[error("internal error: {0}")]
    Internal(String),
    /// The node's disk is full (or below its reserve): it takes no writes until space is
    /// freed; reads go on.
    #[error("{0}")]
    InsufficientStorage(String),
    /// A refused cluster-layout change (`unknown_node`, `layout_conflict`, ...), with the
    /// status its code calls for.
    #[error("{message}")]
    Layout {
        status: u16,
        code: &'static str,
        message: String,
    },
    /// An error answered by the peer a request was forwarded to, passed on unchanged.
    #[error("{message}")]
    Upstream { status: u16, code: String, message: String },
}

fn quorum_message(op: QuorumOp, required: usize, succeeded: usize, primaries: bool) -> String {
    match (op, primaries) {
        (QuorumOp::Write, false) => format!(
            "write quorum not met: {succeeded} of {required} required replicas acknowledged in time; \
             the write may still have been applied on some replicas"
        ),
        (QuorumOp::Write, true) => format!(
            "primary write quorum (pw) not met: {succeeded} of {required} required primary replicas \
             acknowledged in time (a fallback holding a hint does not count); the write may still have \
             been applied on some replicas"
        ),
        (QuorumOp::Read, false) => {
            format!("read quorum not met: {succeeded} of {required} required replicas answered in time")
        }
        (QuorumOp::Read, true) => format!(
            "primary read quorum (pr) not met: {succeeded} of {required} required primary replicas \
             answered in time (a fallback does not count)"
        ),
    }
}

impl QuorumOp {
    /// The name of the quorum that failed: `r`, `w`, `pr` or `pw`.
    pub fn quorum_name(self, primaries: bool) -> &'static str {
        match (self, primaries) {
            (QuorumOp::Read, false) => "r",
            (QuorumOp::Write, false) => "w",
            (QuorumOp::Read, true) => "pr",
            (QuorumOp::Write, true) => "pw",
        }
    }
}

/// The JSON body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<usize>,
    /// On `quorum_failed`: which quorum was not met (`r`, `w`, `pr` or `pw`; for the
    /// last two, `required` and `succeeded` count primary replicas only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<String>,
}

impl ApiError {
    /// One of each kind with a fixed code (for checking that every code is documented;
    /// `Layout` and `Upstream` carry codes defined elsewhere).
    pub fn examples() -> Vec<ApiError> {
        let all = vec![
            ApiError::BadKey("k".into()),
            ApiError::BadParameter("p".into()),
            ApiError::BadContext("c".into()),
            ApiError::BodyTimeout { ms: 1 },
            ApiError::ValueTooLarge { limit: 1 },
            ApiError::TooManySiblings { count: 2, limit: 1 },
            ApiError::NotFound("n".into()),
            ApiError::MethodNotAllowed {
                method: "POST".into(),
                path: "/".into(),
            },
            ApiError::Quorum {
                op: QuorumOp::Read,
                required: 2,
                succeeded: 1,
                primaries: false,
            },
            ApiError::BadRequest("b".into()),
            ApiError::ClusterMismatch("m".into()),
            ApiError::Unavailable("u".into()),
            ApiError::Unauthenticated("u".into()),
            ApiError::Forbidden("f".into()),
            ApiError::Overloaded("o".into()),
            ApiError::Internal("i".into()),
            ApiError::InsufficientStorage("s".into()),
        ];
        // A new kind fails to compile here until it is listed above (or, like the two
        // below, documented where its codes are defined).
        for e in &all {
            match e {
                ApiError::BadKey(_)
                | ApiError::BadParameter(_)
                | ApiError::BadContext(_)
                | ApiError::BodyTimeout { .. }
                | ApiError::ValueTooLarge { .. }
                | ApiError::TooManySiblings { .. }
                | ApiError::NotFound(_)
                | ApiError::MethodNotAllowed { .. }
                | ApiError::Quorum { .. }
                | ApiError::BadRequest(_)
                | ApiError::ClusterMismatch(_)
                | ApiError::Unavailable(_)
                | ApiError::Unauthenticated(_)
                | ApiError::Forbidden(_)
                | ApiError::Overloaded(_)
                | ApiError::Internal(_)
                | ApiError::InsufficientStorage(_)
                | ApiError::Layout { .. }
                | ApiError::Namespace { .. }
                | ApiError::Upstream { .. } => {}
            }
        }
        all
    }

    /// Stable machine-readable code; clients branch on it.
    pub fn code(&self) -> &str {
        match self {
            ApiError::BadKey(_) => "bad_key",
            ApiError::BadParameter(_) => "bad_parameter",
            ApiError::BadContext(_) => "bad_context",
            ApiError::ValueTooLarge { .. } => "value_too_large",
            ApiError::BodyTimeout { .. } => "body_timeout",
            ApiError::TooManySiblings { .. } => "too_many_siblings",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Quorum { .. } => "quorum_failed",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::ClusterMismatch(_) => "cluster_mismatch",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Overloaded(_) => "overloaded",
            ApiError::Internal(_) => "internal",
            ApiError::InsufficientStorage(_) => "insufficient_storage",
            ApiError::Layout { code, .. } => code,
            ApiError::Namespace { code, .. } => code,
            ApiError::Upstream { code, .. } => code,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadKey(_) | ApiError::BadParameter(_) | ApiError::BadContext(_) | ApiError::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::ValueTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::ClusterMismatch(_) | ApiError::TooManySiblings { .. } => StatusCode::CONFLICT,
            ApiError::Quorum { .. } | ApiError::Unavailable(_) | ApiError::Overloaded(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Layout { status, .. } | ApiError::Namespace { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST)
            }
            ApiError::Upstream { status, .. } => StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
        }
    }

    pub fn body(&self) -> ErrorBody {
        let (required, succeeded, quorum) = match self {
            ApiError::Quorum {
                op,
                required,
                succeeded,
                primaries,
            } => (
                Some(*required),
                Some(*succeeded),
                Some(op.quorum_name(*primaries).to_string()),
            ),
            _ => (None, None, None),
        };
        ErrorBody {
            error: self.code().to_string(),
            message: self.to_string(),
            required,
            succeeded,
            quorum,
        }
    }

    /// Rebuilds an error a peer answered with, so a forwarded request fails the same way
    /// it would have had the client asked that peer directly.
    pub fn from_body(status: u16, body: ErrorBody) -> ApiError {
        match (body.error.as_str(), body.required, body.succeeded) {
            ("quorum_failed", Some(required), Some(succeeded)) => {
                let (op, primaries) = match body.quorum.as_deref() {
                    Some("r") => (QuorumOp::Read, false),
                    Some("w") => (QuorumOp::Write, false),
                    Some("pr") => (QuorumOp::Read, true),
                    Some("pw") => (QuorumOp::Write, true),
                    // A peer that does not say: its message does.
                    _ if body.message.starts_with("read") => (QuorumOp::Read, false),
                    _ => (QuorumOp::Write, false),
                };
                ApiError::Quorum {
                    op,
                    required,
                    succeeded,
                    primaries,
                }
            }
            _ => ApiError::Upstream {
                status,
                code: body.error,
                message: body.message,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status().is_server_error() && !matches!(self, ApiError::Quorum { .. }) {
            tracing::warn!(error = %self, code = self.code(), "request failed");
        }
        let mut resp = (self.status(), Json(self.body())).into_response();
        if matches!(self, ApiError::ValueTooLarge { .. } | ApiError::BodyTimeout { .. }) {
            // The rest of the body was never read, so the connection cannot carry
            // another request: say so, or a client reusing it would find it reset.
            resp.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        if matches!(self, ApiError::Unauthenticated(_)) {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"dynakv\""),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_error_round_trips_through_its_body() {
        for (op, primaries, name) in [
            (QuorumOp::Write, false, "w"),
            (QuorumOp::Write, true, "pw"),
            (QuorumOp::Read, false, "r"),
            (QuorumOp::Read, true, "pr"),
        ] {
            let e = ApiError::Quorum {
                op,
                required: 2,
                succeeded: 1,
                primaries,
            };
            let body = e.body();
            assert_eq!(body.error, "quorum_failed");
            assert_eq!((body.required, body.succeeded), (Some(2), Some(1)));
            assert_eq!(body.quorum.as_deref(), Some(name));
            assert_eq!(body.message.contains("primary"), primaries, "{}", body.message);
            if op == QuorumOp::Write {
                assert!(body.message.contains("may still have been applied"));
            }
            assert_eq!(ApiError::from_body(503, body), e);
        }
    }

    #[test]
    fn other_errors_pass_through_as_upstream() {
        let e = ApiError::from_body(400, ApiError::BadKey("empty".into()).body());
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.code(), "bad_key");
    }
}
