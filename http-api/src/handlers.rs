//! Client routes: `/kv`, `/ns/{ns}/kv`, `/cluster`, `/admin`, `/health`.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use dynakv_crdt::{Context, Register};
use http_body_util::BodyExt;
use serde::Serialize;

use crate::admin::{Members, Preflist, Replica};
use crate::error::ApiError;
use crate::idle_body::BodyStalled;
use crate::params::{Key, decode_context, encode_context, parse_namespace_param, parse_quorum_params};
use crate::service::{AdminService, GetOutcome, KvOp, KvService, NamespaceName, Observed};
use std::time::Instant;

/// Request and response header carrying the causal context token.
pub const CONTEXT_HEADER: &str = "x-dynakv-context";
/// Request header asking for a written value's expiry (not served yet: refused).
pub const TTL_HEADER: &str = "x-dynakv-ttl";

/// The key in a path `"{prefix}{percent-encoded key}"`.
fn key_from_uri(uri: &Uri, prefix: &str) -> Result<Key, ApiError> {
    let raw = uri.path().strip_prefix(prefix).unwrap_or("");
    Key::from_path(raw)
}

/// The namespace and key a data route names: `/kv/{key}` (the `default` namespace) or
/// `/ns/{ns}/kv/{key}`.
fn target_from_uri(uri: &Uri) -> Result<(NamespaceName, Key), ApiError> {
    let path = uri.path();
    if let Some(rest) = path.strip_prefix("/ns/") {
        let (ns, rest) = rest.split_once('/').unwrap_or((rest, ""));
        let ns = percent_encoding::percent_decode_str(ns)
            .decode_utf8_lossy()
            .into_owned();
        let key = Key::from_path(rest.strip_prefix("kv/").unwrap_or(""))?;
        return Ok((Some(ns), key));
    }
    Ok((None, key_from_uri(uri, "/kv/")?))
}

fn context_from_headers(headers: &HeaderMap) -> Result<Option<Context>, ApiError> {
    match headers.get(CONTEXT_HEADER) {
        None => Ok(None),
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| ApiError::BadContext("header is not ASCII".into()))?;
            decode_context(s).map(Some)
        }
    }
}

fn context_header(ctx: &Context) -> (header::HeaderName, HeaderValue) {
    let value = HeaderValue::from_str(&encode_context(ctx)).expect("base64url is a valid header value");
    (header::HeaderName::from_static(CONTEXT_HEADER), value)
}

#[derive(Serialize)]
struct SiblingsBody {
    context: String,
    siblings: Vec<String>,
}

/// Tells the service how a `/kv` request went: once it is answered, or, when the
/// client goes away first (the handler is dropped mid-way, typically while waiting for
/// replicas), as abandoned with status 499, so the slowest requests are not the ones
/// missing from the figures.
struct Observer<S: KvService> {
    svc: Arc<S>,
    op: KvOp,
    started: Instant,
    answered: bool,
}

impl<S: KvService> Observer<S> {
    fn start(svc: &Arc<S>, op: KvOp) -> Observer<S> {
        Observer {
            svc: svc.clone(),
            op,
            started: Instant::now(),
            answered: false,
        }
    }

    fn finish(mut self, result: Result<Response, ApiError>) -> Response {
        let quorum_failed = matches!(result, Err(ApiError::Quorum { .. }));
        let resp = result.unwrap_or_else(IntoResponse::into_response);
        self.answered = true;
        self.svc.observe(Observed {
            op: self.op,
            status: resp.status().as_u16(),
            quorum_failed,
            elapsed: self.started.elapsed(),
        });
        resp
    }
}

impl<S: KvService> Drop for Observer<S> {
    fn drop(&mut self) {
        if !self.answered {
            self.svc.observe(Observed {
                op: self.op,
                status: 499,
                quorum_failed: false,
                elapsed: self.started.elapsed(),
            });
        }
    }
}

pub(crate) async fn get_kv<S: KvService>(State(svc): State<Arc<S>>, uri: Uri, RawQuery(query): RawQuery) -> Response {
    let observer = Observer::start(&svc, KvOp::Get);
    observer.finish(get_kv_inner(&*svc, uri, query).await)
}

async fn get_kv_inner<S: KvService>(svc: &S, uri: Uri, query: Option<String>) -> Result<Response, ApiError> {
    let (ns, key) = target_from_uri(&uri)?;
    let params = parse_quorum_params(query.as_deref(), svc.n(), &["r", "pr"])?;
    Ok(match svc.get(ns, key, params).await? {
        GetOutcome::Found { mut values, context } if values.len() == 1 => (
            StatusCode::OK,
            [
                context_header(&context),
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                ),
            ],
            values.pop().expect("one value"),
        )
            .into_response(),
        GetOutcome::Found { values, context } => (
            StatusCode::MULTIPLE_CHOICES,
            [context_header(&context)],
            Json(SiblingsBody {
                context: encode_context(&context),
                siblings: values.iter().map(|v| STANDARD.encode(v)).collect(),
            }),
        )
            .into_response(),
        GetOutcome::NotFound { context } => {
            let mut resp = ApiError::NotFound("the key has no live value".into()).into_response();
            if let Some(ctx) = context {
                let (name, value) = context_header(&ctx);
                resp.headers_mut().insert(name, value);
            }
            resp
        }
    })
}

/// Whether `e` or anything it was caused by is a `T`.
fn caused_by<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<T>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Bytes of an oversized body read and thrown away before the 413 is sent, so that a
/// client still sending gets the answer rather than a reset connection.
const DRAIN_BYTES: usize = 64 << 20;
/// Longest time spent on that.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads the body, refusing more than `limit` bytes without buffering them, and one that
/// stalls for `read_timeout`.
async fn read_value(
    headers: &HeaderMap,
    mut body: Body,
    limit: usize,
    read_timeout: std::time::Duration,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        // A client that waits for `100 Continue` sends nothing more: nothing to drain.
        let waits = headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if !waits {
            drain(body).await;
        }
        return Err(ApiError::ValueTooLarge { limit });
    }
    // A body in one piece (the usual case) is kept as it arrived, without a copy.
    let (mut first, mut joined): (Option<Bytes>, Option<bytes::BytesMut>) = (None, None);
    let mut total = 0usize;
    loop {
        match body.frame().await {
            None => return Ok(joined.map(bytes::BytesMut::freeze).or(first).unwrap_or_default()),
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else { continue };
                total += data.len();
                if total > limit {
                    drain(body).await;
                    return Err(ApiError::ValueTooLarge { limit });
                }
                match (&first, &mut joined) {
                    (None, _) => first = Some(data),
                    (Some(f), None) => {
                        let mut all = bytes::BytesMut::with_capacity(declared.map_or(total, |d| d as usize));
                        all.extend_from_slice(f);
                        all.extend_from_slice(&data);
                        joined = Some(all);
                    }
                    (Some(_), Some(all)) => all.extend_from_slice(&data),
                }
            }
            Some(Err(e)) if caused_by::<BodyStalled>(&e) => {
                return Err(ApiError::BodyTimeout {
                    ms: read_timeout.as_millis() as u64,
                });
            }
            Some(Err(e)) => return Err(ApiError::BadParameter(format!("could not read the request body: {e}"))),
        }
    }
}

/// Reads and discards the rest of `body`, up to [`DRAIN_BYTES`] and [`DRAIN_TIME`].
async fn drain(mut body: Body) {
    let discard = async {
        let mut seen = 0usize;
        while seen < DRAIN_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |d| d.len()),
                _ => return,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, discard).await;
}

pub(crate) async fn put_kv<S: KvService>(
    State(svc): State<Arc<S>>,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let observer = Observer::start(&svc, KvOp::Put);
    observer.finish(write_kv(&*svc, uri, query, headers, Some(body)).await)
}

pub(crate) async fn delete_kv<S: KvService>(
    State(svc): State<Arc<S>>,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let observer = Observer::start(&svc, KvOp::Delete);
    observer.finish(write_kv(&*svc, uri, query, headers, None).await)
}

/// A put (the body is the value) or, without a body, a delete.
async fn write_kv<S: KvService>(
    svc: &S,
    uri: Uri,
    query: Option<String>,
    headers: HeaderMap,
    body: Option<Body>,
) -> Result<Response, ApiError> {
    let (ns, key) = target_from_uri(&uri)?;
    let params = parse_quorum_params(query.as_deref(), svc.n(), &["w", "pw"])?;
    if headers.contains_key(TTL_HEADER) {
        // Refused rather than ignored: a value kept past the expiry its writer asked for
        // would break the write's promise.
        return Err(ApiError::BadParameter(format!(
            "{TTL_HEADER}: values do not expire yet in this build; nothing was written"
        )));
    }
    let context = context_from_headers(&headers)?;
    let value = match body {
        Some(body) => Some(read_value(&headers, body, svc.max_value_bytes(), svc.read_timeout()).await?),
        None => None,
    };
    let ctx = svc.write(ns, key, value, context, params).await?;
    Ok((StatusCode::NO_CONTENT, [context_header(&ctx)]).into_response())
}

/// `/kv/` with nothing after it.
/// Admin routes take no query parameters: any is an error.
fn no_params(query: Option<&str>) -> Result<(), ApiError> {
    parse_quorum_params(query, 0, &[]).map(|_| ())
}

pub(crate) async fn empty_key() -> ApiError {
    ApiError::BadKey("the key is empty".into())
}

pub(crate) async fn members<S: AdminService>(
    State(svc): State<Arc<S>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    no_params(query.as_deref())?;
    Ok(Json(Members {
        node: svc.node_id().to_string(),
        members: svc.members(),
    })
    .into_response())
}

pub(crate) async fn preflist<S: AdminService>(
    State(svc): State<Arc<S>>,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let key = key_from_uri(&uri, "/cluster/preflist/")?;
    let ns = parse_namespace_param(query.as_deref())?;
    let namespace = ns.clone().unwrap_or_else(|| "default".into());
    let (partition, nodes) = svc.preference_list(ns, &key)?;
    Ok(Json(Preflist {
        key: key.into_string(),
        namespace,
        partition,
        nodes,
    })
    .into_response())
}

pub(crate) async fn admin_replica<S: AdminService>(
    State(svc): State<Arc<S>>,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let key = key_from_uri(&uri, "/admin/replica/")?;
    let ns = parse_namespace_param(query.as_deref())?;
    match svc.local_replica(ns, &key)? {
        None => Err(ApiError::NotFound("this node stores nothing for the key".into())),
        Some(reg) => Ok(Json(replica_body(&reg)).into_response()),
    }
}

fn replica_body(reg: &Register) -> Replica {
    Replica {
        mode: reg.mode().to_string(),
        values: reg.values().iter().map(|v| STANDARD.encode(v)).collect(),
        tombstone: reg.is_tombstone(),
        context: encode_context(&reg.context()),
    }
}

pub(crate) async fn admin_antientropy<S: AdminService>(
    State(svc): State<Arc<S>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    no_params(query.as_deref())?;
    Ok(Json(svc.antientropy_status()).into_response())
}

pub(crate) async fn admin_overview<S: AdminService>(
    State(svc): State<Arc<S>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    no_params(query.as_deref())?;
    Ok(Json(svc.overview().await).into_response())
}

pub(crate) async fn metrics<S: AdminService>(
    State(svc): State<Arc<S>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    no_params(query.as_deref())?;
    let (content_type, text) = svc.metrics();
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], text).into_response())
}

pub(crate) async fn openapi(RawQuery(query): RawQuery, description: axum::body::Bytes) -> Result<Response, ApiError> {
    no_params(query.as_deref())?;
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        description,
    )
        .into_response())
}

pub(crate) async fn ui() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        crate::UI,
    )
        .into_response()
}

/// The raw (not percent-decoded) name after `/admin/namespaces/`: a valid name needs no
/// escape, so one with `%` is refused by the name check.
fn namespace_from_uri(uri: &Uri) -> &str {
    uri.path().strip_prefix("/admin/namespaces/").unwrap_or_default()
}

pub(crate) async fn admin_namespaces<S: AdminService>(
    State(svc): State<Arc<S>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    no_params(query.as_deref())?;
    Ok(Json(svc.namespaces()).into_response())
}

pub(crate) async fn admin_namespace<S: AdminService>(
    State(svc): State<Arc<S>>,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    no_params(query.as_deref())?;
    Ok(Json(svc.namespace(namespace_from_uri(&uri))?).into_response())
}

pub(crate) async fn admin_namespace_create<S: AdminService>(
    State(svc): State<Arc<S>>,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    no_params(query.as_deref())?;
    let body = read_value(&headers, body, MAX_ADMIN_BODY, svc.read_timeout()).await?;
    let (created, ns) = svc.create_namespace(namespace_from_uri(&uri), &body).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(ns)).into_response())
}

pub(crate) async fn admin_namespace_tune<S: AdminService>(
    State(svc): State<Arc<S>>,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    no_params(query.as_deref())?;
    let body = read_value(&headers, body, MAX_ADMIN_BODY, svc.read_timeout()).await?;
    Ok(Json(svc.tune_namespace(namespace_from_uri(&uri), &body)?).into_response())
}

pub(crate) async fn admin_layout<S: AdminService>(
    State(svc): State<Arc<S>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    no_params(query.as_deref())?;
    Ok(Json(svc.layout()).into_response())
}

pub(crate) async fn admin_layout_plan<S: AdminService>(
    State(svc): State<Arc<S>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    no_params(query.as_deref())?;
    Ok(Json(svc.layout_plan()?).into_response())
}

/// Largest body an admin route reads (a layout change is a few hundred bytes).
const MAX_ADMIN_BODY: usize = 64 * 1024;

pub(crate) async fn admin_layout_stage<S: AdminService>(
    State(svc): State<Arc<S>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    no_params(query.as_deref())?;
    let body = read_value(&headers, body, MAX_ADMIN_BODY, svc.read_timeout()).await?;
    Ok(Json(svc.layout_stage(&body)?).into_response())
}

pub(crate) async fn admin_layout_revert<S: AdminService>(
    State(svc): State<Arc<S>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    no_params(query.as_deref())?;
    Ok(Json(svc.layout_revert()).into_response())
}

pub(crate) async fn admin_layout_commit<S: AdminService>(
    State(svc): State<Arc<S>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    no_params(query.as_deref())?;
    let body = read_value(&headers, body, MAX_ADMIN_BODY, svc.read_timeout()).await?;
    Ok(Json(svc.layout_commit(&body).await?).into_response())
}

#[derive(Serialize)]
struct HealthBody {
    status: &'static str,
    node: String,
}

pub(crate) async fn health<S: AdminService>(State(svc): State<Arc<S>>) -> Response {
    Json(HealthBody {
        status: "ok",
        node: svc.node_id().to_string(),
    })
    .into_response()
}
