//! Node-to-node routes under `/internal/`: postcard bodies in, postcard bodies out;
//! errors as the same JSON as client errors.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::service::InternalService;
use crate::wire::{self, CONTENT_TYPE};

fn reply(bytes: Vec<u8>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        bytes,
    )
        .into_response()
}

/// The body, or the reason it could not be read, as a JSON error like every other.
fn body(raw: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    raw.map_err(|e| ApiError::BadRequest(format!("cannot read the message: {}", e.body_text())))
}

pub(crate) async fn replica<S: InternalService>(
    State(svc): State<Arc<S>>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req = wire::decode(&body(raw)?)?;
    let resp = svc.replica(req).await?;
    Ok(reply(wire::encode(&resp)))
}

pub(crate) async fn gossip<S: InternalService>(
    State(svc): State<Arc<S>>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req = wire::decode(&body(raw)?)?;
    let resp = svc.gossip(req)?;
    Ok(reply(wire::encode(&resp)))
}
