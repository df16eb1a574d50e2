//! The HTTP surface of a dynakv node.
//!
//! Layout:
//! - [`error`]: [`ApiError`], its stable codes and the single mapping to HTTP statuses.
//! - [`params`]: keys, `r`/`w` query parameters and context tokens, parsed and checked.
//! - [`service`]: the trait a node implements for this layer ([`KvService`]).
//! - `client`: the axum handlers.
//!
//! - [`auth`]: optional API tokens and the scope each route needs.
//!
//! [`router`] assembles everything, including JSON answers for unknown routes, wrong
//! methods and panics, so no request ever gets a non-JSON error. Node-to-node traffic
//! has a port of its own (the node's transport) and never reaches this router.

pub mod auth;
mod client;
pub mod error;
mod idle_body;
pub mod params;
pub mod service;

use std::any::Any;
use std::sync::Arc;

use axum::Router;
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;

pub use client::CONTEXT_HEADER;
pub use error::{ApiError, ErrorBody, QuorumOp};
pub use params::{Key, MAX_KEY_BYTES};
pub use service::{AdminService, GetOutcome, KvService, MemberJson};

/// Every route of the client port: the client API (`kv`) and the admin views (`admin`),
/// with JSON errors for unknown routes, wrong methods and panics, a deadline on stalled
/// request bodies, and, when `tokens` are given, a token with the right scope required
/// on every route but `/health`.
pub fn router<K: KvService, A: AdminService>(kv: Arc<K>, admin: Arc<A>, tokens: Option<Arc<auth::Tokens>>) -> Router {
    let read_timeout = kv.read_timeout();
    let admin = Router::new()
        .route("/cluster/members", get(client::members::<A>))
        .route("/cluster/preflist/{*key}", get(client::preflist::<A>))
        .route("/admin/replica/{*key}", get(client::admin_replica::<A>))
        .route("/admin/antientropy", get(client::admin_antientropy::<A>))
        .route("/admin/layout", get(client::admin_layout::<A>))
        .route("/admin/layout/plan", get(client::admin_layout_plan::<A>))
        .route("/admin/layout/stage", post(client::admin_layout_stage::<A>))
        .route("/admin/layout/revert", post(client::admin_layout_revert::<A>))
        .route("/admin/layout/commit", post(client::admin_layout_commit::<A>))
        .route("/health", get(client::health::<A>))
        .with_state(admin);
    let routes = Router::new()
        .route(
            "/kv/{*key}",
            get(client::get_kv::<K>)
                .put(client::put_kv::<K>)
                .delete(client::delete_kv::<K>),
        )
        .route("/kv", axum::routing::any(client::empty_key))
        .route("/kv/", axum::routing::any(client::empty_key))
        .with_state(kv)
        .merge(admin)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    // Only with tokens: a middleware costs every request an allocation or two.
    let routes = match tokens {
        Some(tokens) => routes.layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let tokens = tokens.clone();
                async move {
                    if let Some(needed) = auth::Scope::needed(req.method(), req.uri().path())
                        && let Err(e) = tokens.check(req.headers(), needed)
                    {
                        return e.into_response();
                    }
                    next.run(req).await
                }
            },
        )),
        None => routes,
    };
    routes
        // A body that stalls mid-way fails its read instead of holding the request open.
        .layer(axum::middleware::map_request(
            move |req: axum::extract::Request| async move {
                req.map(|body| axum::body::Body::new(idle_body::IdleTimeoutBody::new(body, read_timeout)))
            },
        ))
        .layer(CatchPanicLayer::custom(panic_response))
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
