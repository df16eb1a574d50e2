//! The HTTP surface of a dynakv node.
//!
//! Layout:
//! - [`error`]: [`ApiError`], its stable codes and the single mapping to HTTP statuses.
//! - [`params`]: keys, `r`/`w` query parameters and context tokens, parsed and checked.
//! - [`service`]: the traits a node implements for this layer ([`KvService`] for clients,
//!   [`InternalService`] for peers).
//! - `client` and `internal`: the axum handlers.
//! - [`wire`]: node-to-node messages and their encoding.
//!
//! [`router`] assembles everything, including JSON answers for unknown routes, wrong
//! methods and panics, so no request ever gets a non-JSON error.

mod client;
pub mod error;
mod idle_body;
mod internal;
pub mod params;
pub mod service;
pub mod stream;
pub mod wire;

use std::any::Any;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;

pub use client::CONTEXT_HEADER;
pub use error::{ApiError, ErrorBody, QuorumOp};
pub use params::{Key, MAX_KEY_BYTES};
pub use service::{GetOutcome, InternalService, KvService, MemberJson};

/// Largest node-to-node message accepted. Senders keep batches to a few MiB; a single
/// item can still be a register with many siblings of the largest value: each of a key's
/// N replicas enforces the sibling cap on its own copy, so while they cannot reach each
/// other they can accept up to N times the cap between them (plus a few concurrent ones).
fn internal_body_limit(max_value_bytes: usize, max_siblings: usize) -> usize {
    max_value_bytes
        .saturating_mul(max_siblings.saturating_add(16))
        .max(256 << 20)
}

/// Every route a node serves.
/// Replica streams opened through it are tracked in `streams`, which stops them at shutdown.
pub fn router<S: KvService + InternalService>(svc: Arc<S>, streams: stream::Streams) -> Router {
    let internal_limit = internal_body_limit(svc.max_value_bytes(), svc.max_siblings().saturating_mul(svc.n()));
    let read_timeout = svc.read_timeout();
    let internal = Router::new()
        .route("/internal/replica", post(internal::replica::<S>))
        .route("/internal/gossip", post(internal::gossip::<S>))
        .layer(DefaultBodyLimit::max(internal_limit));
    let stream = Router::new().route(
        stream::STREAM_PATH,
        get(
            move |axum::extract::State(svc): axum::extract::State<Arc<S>>, req: axum::extract::Request| {
                stream::upgrade(svc, req, internal_limit, streams.clone())
            },
        ),
    );
    Router::new()
        .route(
            "/kv/{*key}",
            get(client::get_kv::<S>)
                .put(client::put_kv::<S>)
                .delete(client::delete_kv::<S>),
        )
        .route("/kv", axum::routing::any(client::empty_key))
        .route("/kv/", axum::routing::any(client::empty_key))
        .route("/cluster/members", get(client::members::<S>))
        .route("/cluster/preflist/{*key}", get(client::preflist::<S>))
        .route("/admin/replica/{*key}", get(client::admin_replica::<S>))
        .route("/admin/antientropy", get(client::admin_antientropy::<S>))
        .route("/health", get(client::health::<S>))
        .merge(internal)
        .merge(stream)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // A body that stalls mid-way fails its read instead of holding the request open.
        .layer(axum::middleware::map_request(
            move |req: axum::extract::Request| async move {
                req.map(|body| axum::body::Body::new(idle_body::IdleTimeoutBody::new(body, read_timeout)))
            },
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(svc)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

fn panic_response(err: Box<dyn Any + Send + 'static>) -> Response {
    let detail = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = detail, "handler panicked");
    ApiError::Internal("the request handler crashed; this is a bug".into()).into_response()
}
