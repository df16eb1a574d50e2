//! The serving side of node-to-node traffic over HTTP: `POST /internal/replica` and
//! `POST /internal/gossip` (postcard bodies in and out; errors as the same JSON as
//! client errors), and `GET /internal/stream`, the upgrade to the replica stream.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request as HttpRequest, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use dynakv_http_api::ApiError;

use super::Handler;
use super::message::{self, CONTENT_TYPE, Request, Route};
use super::stream::{self, STREAM_PATH, Streams};

/// Largest node-to-node message accepted. Senders keep batches to a few MiB; a single
/// item can still be a register with many siblings of the largest value: each of a key's
/// N replicas enforces the sibling cap on its own copy, so while they cannot reach each
/// other they can accept up to N times the cap between them (plus a few concurrent ones).
pub fn body_limit(max_value_bytes: usize, n: usize, max_siblings: usize) -> usize {
    max_value_bytes
        .saturating_mul(max_siblings.saturating_mul(n).saturating_add(16))
        .max(256 << 20)
}

/// The node-to-node routes, served by `handler`. Replica streams opened through them are
/// tracked in `streams`, which stops them at shutdown.
pub fn routes<H: Handler>(handler: Arc<H>, limit: usize, streams: Streams) -> Router {
    let upgrade = move |State(h): State<Arc<H>>, req: HttpRequest| stream::upgrade(h, req, limit, streams.clone());
    Router::new()
        .route(Route::Replica.path(), post(serve::<H, true>))
        .route(Route::Gossip.path(), post(serve::<H, false>))
        .layer(DefaultBodyLimit::max(limit))
        .route(STREAM_PATH, get(upgrade))
        .with_state(handler)
}

/// One request on the route of its kind (`REPLICA`: the replica route, else gossip).
async fn serve<H: Handler, const REPLICA: bool>(
    State(handler): State<Arc<H>>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let raw = raw.map_err(|e| ApiError::BadRequest(format!("cannot read the message: {}", e.body_text())))?;
    let req: Request = message::decode(&raw)?;
    let expected = if REPLICA { Route::Replica } else { Route::Gossip };
    if req.route() != expected {
        return Err(ApiError::BadRequest(format!(
            "a {} request does not belong on {}",
            req.verb(),
            expected.path()
        )));
    }
    let answer = handler.handle(req).await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        message::encode(&answer),
    )
        .into_response())
}
