//! The HTTP surface of a dynakv node.
//!
//! Layout:
//! - [`error`]: [`ApiError`], its stable codes and the single mapping to HTTP statuses.
//! - [`params`]: keys, `r`/`w` query parameters and context tokens, parsed and checked.
//! - [`service`]: the trait a node implements for this layer ([`KvService`]).
//! - `handlers`: the axum handlers of every route.
//!
//! - [`auth`]: optional API tokens and the scope each route needs.
//!
//! [`router`] assembles everything, including JSON answers for unknown routes, wrong
//! methods and panics, so no request ever gets a non-JSON error. Node-to-node traffic
//! has a port of its own (the node's transport) and never reaches this router.

pub mod admin;
pub mod auth;
pub mod error;
mod handlers;
mod idle_body;
pub mod params;
pub mod service;

use std::any::Any;
use std::sync::Arc;

use axum::Router;
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use tower_http::catch_panic::CatchPanicLayer;

pub use error::{ApiError, ErrorBody, QuorumOp};
pub use handlers::CONTEXT_HEADER;
pub use params::{Key, MAX_KEY_BYTES, QuorumParams};
pub use service::NamespaceName;
pub use service::{AdminService, GetOutcome, KvOp, KvService, Observed};

/// One route of the client port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The path as the router matches it (`{*key}`: the rest of the path).
    pub path: &'static str,
    /// The same in OpenAPI's template syntax (`{key}`); `None` for the paths of the
    /// empty key (`/kv`, `/kv/`), which the description does not list: every request to
    /// them is refused (400 `bad_key`, or 405 for a method `/kv/{key}` does not serve).
    pub openapi: Option<&'static str>,
    /// Methods served; any other gets 405 with an `Allow` header naming these.
    pub methods: &'static [&'static str],
}

const fn route(path: &'static str, openapi: &'static str, methods: &'static [&'static str]) -> Route {
    Route {
        path,
        openapi: Some(openapi),
        methods,
    }
}

/// Every route of the client port. The router is built from this table, the OpenAPI
/// description is checked against it, and tests try every method on every route.
pub const ROUTES: &[Route] = &[
    route("/kv/{*key}", "/kv/{key}", &["GET", "PUT", "DELETE"]),
    Route {
        path: "/kv",
        openapi: None,
        methods: &["GET", "PUT", "DELETE"],
    },
    Route {
        path: "/kv/",
        openapi: None,
        methods: &["GET", "PUT", "DELETE"],
    },
    route("/ns/{ns}/kv/{*key}", "/ns/{ns}/kv/{key}", &["GET", "PUT", "DELETE"]),
    Route {
        path: "/ns/{ns}/kv",
        openapi: None,
        methods: &["GET", "PUT", "DELETE"],
    },
    Route {
        path: "/ns/{ns}/kv/",
        openapi: None,
        methods: &["GET", "PUT", "DELETE"],
    },
    route("/cluster/members", "/cluster/members", &["GET"]),
    route("/cluster/preflist/{*key}", "/cluster/preflist/{key}", &["GET"]),
    route("/admin/replica/{*key}", "/admin/replica/{key}", &["GET"]),
    route("/admin/antientropy", "/admin/antientropy", &["GET"]),
    route("/admin/overview", "/admin/overview", &["GET"]),
    route("/admin/layout", "/admin/layout", &["GET"]),
    route("/admin/layout/plan", "/admin/layout/plan", &["GET"]),
    route("/admin/layout/stage", "/admin/layout/stage", &["POST"]),
    route("/admin/layout/revert", "/admin/layout/revert", &["POST"]),
    route("/admin/layout/commit", "/admin/layout/commit", &["POST"]),
    route("/admin/namespaces", "/admin/namespaces", &["GET"]),
    route(
        "/admin/namespaces/{ns}",
        "/admin/namespaces/{ns}",
        &["GET", "PUT", "PATCH"],
    ),
    route("/metrics", "/metrics", &["GET"]),
    route("/openapi.json", "/openapi.json", &["GET"]),
    route("/ui", "/ui", &["GET"]),
    route("/health", "/health", &["GET"]),
];

/// The OpenAPI 3.1 description of every route, as kept in the repository. A node serves
/// it at `/openapi.json` with its own N as the bound of `r` and `w`, and its default R
/// and W as the bounds of `pr` and `pw` ([`openapi_for`]).
pub const OPENAPI: &str = include_str!("../openapi.json");

/// The description a node with replication factor `n` and default quorums `r` and `w`
/// serves: [`OPENAPI`] with `maximum: n` on the `r` and `w` query parameters, and
/// `maximum: r` on `pr` and `maximum: w` on `pw`. Every request the description allows
/// is then one the node accepts, but one with an `r` below the default and a `pr` above
/// it (or likewise `w` and `pw`): `pr` may not exceed the read's `r`, a bound between
/// two parameters that OpenAPI cannot state (their descriptions say it). The bound on
/// `pr` is the one that holds when `r` is not given; a larger `pr` with a larger `r` is
/// accepted too.
pub fn openapi_for(n: usize, r: usize, w: usize) -> String {
    fn bound(v: &mut serde_json::Value, limits: [(&str, usize); 4]) {
        match v {
            serde_json::Value::Object(o) => {
                let query = o.get("in").and_then(|i| i.as_str()) == Some("query");
                let name = o.get("name").and_then(|i| i.as_str()).unwrap_or_default();
                let limit = limits.iter().find(|(q, _)| *q == name).map(|(_, l)| *l);
                if query
                    && let Some(limit) = limit
                    && let Some(schema) = o.get_mut("schema").and_then(|s| s.as_object_mut())
                {
                    schema.insert("maximum".into(), limit.into());
                }
                o.values_mut().for_each(|v| bound(v, limits));
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|v| bound(v, limits)),
            _ => {}
        }
    }
    let mut doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
    bound(&mut doc, [("r", n), ("w", n), ("pr", r), ("pw", w)]);
    serde_json::to_string_pretty(&doc).expect("JSON serialises")
}

/// Whether a path is a data route: `/kv/{key}` or `/ns/{ns}/kv/{key}`.
pub fn is_data_route(path: &str) -> bool {
    path.starts_with("/kv") || path.starts_with("/ns/")
}

/// The web view, served at `/ui`.
pub const UI: &str = include_str!("ui/index.html");

fn kv_route<K: KvService>(path: &str) -> MethodRouter<Arc<K>> {
    match path {
        "/kv/{*key}" | "/ns/{ns}/kv/{*key}" => get(handlers::get_kv::<K>)
            .put(handlers::put_kv::<K>)
            .delete(handlers::delete_kv::<K>),
        "/kv" | "/kv/" | "/ns/{ns}/kv" | "/ns/{ns}/kv/" => get(handlers::empty_key)
            .put(handlers::empty_key)
            .delete(handlers::empty_key),
        _ => unreachable!("{path} is not a /kv route"),
    }
}

fn admin_route<A: AdminService>(path: &str) -> MethodRouter<Arc<A>> {
    match path {
        "/cluster/members" => get(handlers::members::<A>),
        "/cluster/preflist/{*key}" => get(handlers::preflist::<A>),
        "/admin/replica/{*key}" => get(handlers::admin_replica::<A>),
        "/admin/antientropy" => get(handlers::admin_antientropy::<A>),
        "/admin/overview" => get(handlers::admin_overview::<A>),
        "/admin/layout" => get(handlers::admin_layout::<A>),
        "/admin/layout/plan" => get(handlers::admin_layout_plan::<A>),
        "/admin/layout/stage" => post(handlers::admin_layout_stage::<A>),
        "/admin/layout/revert" => post(handlers::admin_layout_revert::<A>),
        "/admin/layout/commit" => post(handlers::admin_layout_commit::<A>),
        "/admin/namespaces" => get(handlers::admin_namespaces::<A>),
        "/admin/namespaces/{ns}" => get(handlers::admin_namespace::<A>)
            .put(handlers::admin_namespace_create::<A>)
            .patch(handlers::admin_namespace_tune::<A>),
        "/metrics" => get(handlers::metrics::<A>),
        "/openapi.json" => unreachable!("served with the node's N: see router"),
        "/ui" => get(handlers::ui),
        "/health" => get(handlers::health::<A>),
        _ => unreachable!("{path} has no handler: add it here"),
    }
}

/// Every route of the client port ([`ROUTES`]): the client API (`kv`) and the admin
/// views (`admin`), with JSON errors for unknown routes, wrong methods and panics, a
/// deadline on stalled request bodies, and, when `tokens` are given, a token with the
/// right scope required on every route but `/health`, `/ui` and `/openapi.json`.
pub fn router<K: KvService, A: AdminService>(kv: Arc<K>, admin: Arc<A>, tokens: Option<Arc<auth::Tokens>>) -> Router {
    let read_timeout = kv.read_timeout();
    let (r, w) = kv.default_quorums();
    let description = axum::body::Bytes::from(openapi_for(kv.n(), r, w));
    let (mut kv_routes, mut admin_routes) = (Router::new(), Router::new());
    for r in ROUTES {
        if r.path == "/openapi.json" {
            let description = description.clone();
            admin_routes = admin_routes.route(r.path, get(move |query| handlers::openapi(query, description.clone())));
        } else if is_data_route(r.path) {
            kv_routes = kv_routes.route(r.path, kv_route::<K>(r.path));
        } else {
            admin_routes = admin_routes.route(r.path, admin_route::<A>(r.path));
        }
    }
    let routes = kv_routes
        .with_state(kv)
        .merge(admin_routes.with_state(admin))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn walk<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
        out.push(v);
        match v {
            Value::Object(o) => o.values().for_each(|v| walk(v, out)),
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }

    #[test]
    fn the_served_description_bounds_r_w_pr_and_pw_by_the_nodes_n() {
        let doc: Value = serde_json::from_str(&openapi_for(5, 3, 2)).unwrap();
        let mut all = Vec::new();
        walk(&doc, &mut all);
        let quorums: Vec<&Value> = all
            .into_iter()
            .filter(|v| v["in"] == "query" && ["r", "w", "pr", "pw"].iter().any(|n| v["name"] == *n))
            .collect();
        assert!(quorums.len() >= 6, "r and pr on GET, w and pw on PUT and DELETE");
        for q in quorums {
            let most = match q["name"].as_str().unwrap() {
                "pr" => 3,
                "pw" => 2,
                _ => 5,
            };
            assert_eq!(q["schema"]["maximum"], most, "{q}");
            let least = if q["name"].as_str().unwrap().starts_with('p') {
                0
            } else {
                1
            };
            assert_eq!(q["schema"]["minimum"], least, "{q}");
        }
        let repo: Value = serde_json::from_str(OPENAPI).unwrap();
        assert_ne!(repo, doc, "the repository's copy has no bound");
    }

    #[test]
    fn every_context_example_in_the_description_decodes() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        let mut all = Vec::new();
        walk(&doc, &mut all);
        let contexts: Vec<&Value> = all
            .into_iter()
            .filter(|v| v["format"] == "dynakv-context" || v["name"] == "X-Dynakv-Context")
            .collect();
        assert!(contexts.len() >= 2, "the write and the delete take a context");
        for c in contexts {
            let schema = if c["schema"].is_object() { &c["schema"] } else { c };
            let example = schema["example"].as_str().unwrap_or_else(|| panic!("no example: {c}"));
            let ctx = params::decode_context(example).unwrap_or_else(|e| panic!("{example}: {e:?}"));
            assert!(
                matches!(ctx, dynakv_crdt::Context::Mv(_)),
                "the example is a multi-value context"
            );
        }
    }
}
