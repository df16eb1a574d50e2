//! The one typed client of a dynakv cluster: every command of the command line, `dynakv
//! dev` and the test harness reach nodes through it. It asks a list of nodes in turn
//! (skipping those that cannot be reached), turns an error answer into a [`CliError`]
//! with the answer's `error` code, and decodes the admin API's answers into the types of
//! [`dynakv_http_api::admin`].

use std::time::Duration;

use dynakv_http_api::admin::{
    AntiEntropy, Committed, Layout, LayoutPlan, Members, Namespace, NamespacePatch, NamespaceSpec, Namespaces,
    Overview, Preflist, Replica,
};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a command failed, and its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Unreachable(String),
    /// A write reached a node and no answer came back.
    #[error("{0}")]
    OutcomeUnknown(String),
    #[error("{status} {code}: {message}")]
    Api { status: u16, code: String, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Usage(String),
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Api { .. } | CliError::Other(_) => 1,
            CliError::Usage(_) => 2,
            CliError::NotFound(_) => 3,
            CliError::Unreachable(_) => 4,
            CliError::OutcomeUnknown(_) => 5,
        }
    }
}

/// An answer from a node.
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
    /// The node that answered.
    pub addr: String,
}

impl Answer {
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, CliError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            CliError::Other(anyhow::anyhow!(
                "{} answered {} without the JSON expected: {e}",
                self.addr,
                self.status
            ))
        })
    }

    /// The error the answer carries, if it is one.
    pub fn error(&self) -> CliError {
        let v: Value = serde_json::from_slice(&self.body).unwrap_or(Value::Null);
        CliError::Api {
            status: self.status,
            code: v["error"].as_str().unwrap_or("error").to_string(),
            message: v["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned()),
        }
    }
}

/// An HTTP client over a list of nodes.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    token: Option<String>,
    addrs: Vec<String>,
}

impl Client {
    pub fn new(addrs: &str, token: Option<String>, timeout: Duration) -> Result<Client, CliError> {
        let addrs: Vec<String> = addrs
            .split(',')
            .map(|a| a.trim().trim_start_matches("http://").trim_end_matches('/').to_string())
            .filter(|a| !a.is_empty())
            .collect();
        if addrs.is_empty() {
            return Err(CliError::Usage("--addr names no node".into()));
        }
        if let Some(a) = addrs.iter().find(|a| a.starts_with("https://")) {
            return Err(CliError::Usage(format!(
                "{a}: this command speaks plain HTTP only; reach a node with --client-tls through curl --cacert"
            )));
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .build()
            .map_err(|e| CliError::Other(e.into()))?;
        Ok(Client { http, token, addrs })
    }

    /// The nodes it asks, in order.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// The same client, asking only `addr`.
    pub fn at(&self, addr: &str) -> Client {
        Client {
            addrs: vec![addr.to_string()],
            ..self.clone()
        }
    }

    /// Sends a request to the first node that can be reached. `retry_sent`: also move on
    /// when a node took the request but did not answer (safe for reads only).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: HeaderMap,
        body: Option<Vec<u8>>,
        retry_sent: bool,
    ) -> Result<Answer, CliError> {
        let mut failures = Vec::new();
        for addr in &self.addrs {
            let mut req = self
                .http
                .request(method.clone(), format!("http://{addr}{path}"))
                .headers(headers.clone());
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) if e.is_connect() || retry_sent => {
                    failures.push(format!("{addr}: {}", root_cause(&e)));
                    continue;
                }
                Err(e) => {
                    return Err(CliError::OutcomeUnknown(format!(
                        "{addr} took the request but did not answer ({}); it may have been applied: read \
                         the key before retrying",
                        root_cause(&e)
                    )));
                }
            };
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            match resp.bytes().await {
                Ok(body) => {
                    return Ok(Answer {
                        status,
                        headers,
                        body,
                        addr: addr.clone(),
                    });
                }
                Err(e) if retry_sent => failures.push(format!("{addr}: {}", root_cause(&e))),
                Err(e) => {
                    return Err(CliError::OutcomeUnknown(format!(
                        "{addr} answered {status} but its answer broke off ({}); the request may have been \
                         applied",
                        root_cause(&e)
                    )));
                }
            }
        }
        Err(CliError::Unreachable(format!(
            "no node answered: {}",
            failures.join("; ")
        )))
    }

    /// A JSON request; an error answer becomes [`CliError::Api`].
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, CliError> {
        let mut headers = HeaderMap::new();
        let read = method == Method::GET;
        let body = match body {
            Some(b) => {
                headers.insert(
                    reqwest::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Some(serde_json::to_vec(&b).map_err(|e| CliError::Other(e.into()))?)
            }
            None => None,
        };
        let a = self.send(method, path, headers, body, read).await?;
        if !(200..300).contains(&a.status) {
            return Err(a.error());
        }
        a.json()
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: Value) -> Result<T, CliError> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// `GET /cluster/members`.
    pub async fn members(&self) -> Result<Members, CliError> {
        self.get("/cluster/members").await
    }

    /// `GET /cluster/preflist/{key}`.
    /// `GET /cluster/preflist/{key}?ns=`.
    pub async fn preflist(&self, ns: Option<&str>, key: &str) -> Result<Preflist, CliError> {
        let ns = ns.map(|ns| format!("?ns={}", encode(ns))).unwrap_or_default();
        self.get(&format!("{}{ns}", key_path("/cluster/preflist/", key)?)).await
    }

    /// `GET /admin/replica/{key}`: what the first node reached stores for the key
    /// (`None`: nothing).
    pub async fn replica(&self, key: &str) -> Result<Option<Replica>, CliError> {
        match self.get(&key_path("/admin/replica/", key)?).await {
            Ok(r) => Ok(Some(r)),
            Err(CliError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /admin/antientropy`.
    pub async fn antientropy(&self) -> Result<AntiEntropy, CliError> {
        self.get("/admin/antientropy").await
    }

    /// `GET /admin/layout`.
    pub async fn layout(&self) -> Result<Layout, CliError> {
        self.get("/admin/layout").await
    }

    /// `GET /admin/layout/plan`.
    pub async fn layout_plan(&self) -> Result<LayoutPlan, CliError> {
        self.get("/admin/layout/plan").await
    }

    /// `POST /admin/layout/stage` with one change (`{"join": ID}`, ...).
    pub async fn stage(&self, change: Value) -> Result<Layout, CliError> {
        self.post("/admin/layout/stage", change).await
    }

    /// `POST /admin/layout/revert`.
    pub async fn revert(&self) -> Result<Layout, CliError> {
        self.post("/admin/layout/revert", serde_json::json!({})).await
    }

    /// `POST /admin/layout/commit`: commits the staged changes as `version`.
    pub async fn commit(&self, version: u64) -> Result<Committed, CliError> {
        self.post("/admin/layout/commit", serde_json::json!({ "version": version }))
            .await
    }

    /// `GET /admin/namespaces`.
    pub async fn namespaces(&self) -> Result<Namespaces, CliError> {
        self.get("/admin/namespaces").await
    }

    /// `GET /admin/namespaces/{ns}`.
    pub async fn namespace(&self, name: &str) -> Result<Namespace, CliError> {
        self.get(&key_path("/admin/namespaces/", name)?).await
    }

    /// `PUT /admin/namespaces/{ns}`: creates it (or finds it defined the same way).
    pub async fn create_namespace(&self, name: &str, spec: &NamespaceSpec) -> Result<Namespace, CliError> {
        let body = serde_json::to_value(spec).map_err(|e| CliError::Other(e.into()))?;
        self.call(Method::PUT, &key_path("/admin/namespaces/", name)?, Some(body))
            .await
    }

    /// `PATCH /admin/namespaces/{ns}`.
    pub async fn tune_namespace(&self, name: &str, patch: &NamespacePatch) -> Result<Namespace, CliError> {
        let body = serde_json::to_value(patch).map_err(|e| CliError::Other(e.into()))?;
        self.call(Method::PATCH, &key_path("/admin/namespaces/", name)?, Some(body))
            .await
    }

    /// `GET /admin/overview`.
    pub async fn overview(&self) -> Result<Overview, CliError> {
        self.get("/admin/overview").await
    }
}

/// Prints `v` as indented JSON on stdout.
pub fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// A key as a path segment: every byte but unreserved ones percent-encoded.
pub fn key_path(prefix: &str, key: &str) -> Result<String, CliError> {
    if key.is_empty() {
        return Err(CliError::Usage("the key is empty".into()));
    }
    Ok(format!("{prefix}{}", encode(key)))
}

/// The data route of `key` in namespace `ns` (`None`: `/kv/{key}`, the `default`
/// namespace).
pub fn data_path(ns: Option<&str>, key: &str) -> Result<String, CliError> {
    match ns {
        None => key_path("/kv/", key),
        Some(ns) => key_path(&format!("/ns/{}/kv/", encode(ns)), key),
    }
}

/// Percent-encodes everything but unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
