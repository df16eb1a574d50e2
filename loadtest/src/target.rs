//! The stores a run can drive, behind one small interface: dynakv (its HTTP API), etcd
//! (its v3 JSON gateway: linearizable reads, quorum writes), Redis (RESP), and a bare
//! HTTP server that answers 204 to everything (the HTTP ceiling of the machine).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::json;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Dynakv,
    Etcd,
    Redis,
    Bare,
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dynakv" => Ok(Kind::Dynakv),
            "etcd" => Ok(Kind::Etcd),
            "redis" => Ok(Kind::Redis),
            "bare" => Ok(Kind::Bare),
            other => Err(format!("unknown target {other:?} (dynakv, etcd, redis, bare)")),
        }
    }
}

/// What came back from one request.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// `None` on success; otherwise a short class for the error table ("503 quorum_failed",
    /// "timeout", "connect").
    pub error: Option<String>,
    /// The values read (several for siblings); empty when the key is absent.
    pub values: Vec<Bytes>,
    /// The causal context a dynakv read or write returned.
    pub context: Option<String>,
}

impl Outcome {
    fn error(class: impl Into<String>) -> Outcome {
        Outcome {
            error: Some(class.into()),
            ..Default::default()
        }
    }
}

/// Settings shared by every worker of a run.
#[derive(Clone, Debug)]
pub struct TargetConfig {
    pub kind: Kind,
    /// host:port of each node (etcd members, the Redis server, the bare server).
    pub nodes: Vec<String>,
    pub r: Option<usize>,
    pub w: Option<usize>,
    pub timeout: Duration,
}

/// One worker's connection(s) to the target.
pub enum Client {
    Http { cfg: TargetConfig, http: reqwest::Client },
    Redis { conn: redis::aio::MultiplexedConnection },
}

fn classify(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

/// "503 quorum_failed" from a dynakv JSON error; "503" for anything else.
fn error_class(status: u16, body: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) if v["error"].is_string() => format!("{status} {}", v["error"].as_str().unwrap()),
        _ => status.to_string(),
    }
}

/// A shared HTTP client for `concurrency` workers: one pooled keep-alive connection each.
pub fn http_client(concurrency: usize, timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(concurrency.max(1))
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .timeout(timeout)
        .build()
        .expect("static client configuration")
}

impl Client {
    pub async fn connect(cfg: &TargetConfig, http: &reqwest::Client) -> anyhow::Result<Client> {
        Ok(match cfg.kind {
            Kind::Redis => {
                let client = redis::Client::open(format!("redis://{}/", cfg.nodes[0]))?;
                Client::Redis {
                    conn: client.get_multiplexed_async_connection().await?,
                }
            }
            _ => Client::Http {
                cfg: cfg.clone(),
                http: http.clone(),
            },
        })
    }

    pub async fn read(&mut self, node: usize, key: &str) -> Outcome {
        match self {
            Client::Http { cfg, http } => {
                let base = &cfg.nodes[node % cfg.nodes.len()];
                match cfg.kind {
                    Kind::Dynakv | Kind::Bare => {
                        let q = cfg.r.map(|r| format!("?r={r}")).unwrap_or_default();
                        let resp = match http.get(format!("http://{base}/kv/{key}{q}")).send().await {
                            Ok(r) => r,
                            Err(e) => return Outcome::error(classify(&e)),
                        };
                        let status = resp.status().as_u16();
                        let context = resp
                            .headers()
                            .get("x-dynakv-context")
                            .and_then(|v| v.to_str().ok())
                            .map(String::from);
                        let body = match resp.bytes().await {
                            Ok(b) => b,
                            Err(e) => return Outcome::error(classify(&e)),
                        };
                        match status {
                            200 => Outcome {
                                values: vec![body],
                                context,
                                ..Default::default()
                            },
                            204 if cfg.kind == Kind::Bare => Outcome::default(),
                            300 => {
                                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                                let values = v["siblings"]
                                    .as_array()
                                    .into_iter()
                                    .flatten()
                                    .filter_map(|s| STANDARD.decode(s.as_str()?).ok().map(Bytes::from))
                                    .collect();
                                Outcome {
                                    values,
                                    context,
                                    ..Default::default()
                                }
                            }
                            404 => Outcome {
                                context,
                                ..Default::default()
                            },
                            s => Outcome::error(error_class(s, &body)),
                        }
                    }
                    Kind::Etcd => {
                        let body = json!({ "key": STANDARD.encode(key) });
                        match etcd_call(http, base, "range", body).await {
                            Ok(v) => Outcome {
                                values: v["kvs"]
                                    .as_array()
                                    .into_iter()
                                    .flatten()
                                    .filter_map(|kv| STANDARD.decode(kv["value"].as_str()?).ok().map(Bytes::from))
                                    .collect(),
                                ..Default::default()
                            },
                            Err(e) => Outcome::error(e),
                        }
                    }
                    Kind::Redis => unreachable!("redis uses its own client"),
                }
            }
            Client::Redis { conn } => {
                let r: redis::RedisResult<Option<Vec<u8>>> = redis::cmd("GET").arg(key).query_async(conn).await;
                match r {
                    Ok(v) => Outcome {
                        values: v.into_iter().map(Bytes::from).collect(),
                        ..Default::default()
                    },
                    Err(e) => Outcome::error(format!("redis {:?}", e.kind())),
                }
            }
        }
    }

    /// Writes `value`; a dynakv write carries `context` when given.
    pub async fn write(&mut self, node: usize, key: &str, value: Bytes, context: Option<&str>) -> Outcome {
        match self {
            Client::Http { cfg, http } => {
                let base = &cfg.nodes[node % cfg.nodes.len()];
                match cfg.kind {
                    Kind::Dynakv | Kind::Bare => {
                        let q = cfg.w.map(|w| format!("?w={w}")).unwrap_or_default();
                        let mut req = http.put(format!("http://{base}/kv/{key}{q}")).body(value);
                        if let Some(c) = context {
                            req = req.header("x-dynakv-context", c);
                        }
                        dynakv_ack(req).await
                    }
                    Kind::Etcd => {
                        let body = json!({ "key": STANDARD.encode(key), "value": STANDARD.encode(&value) });
                        match etcd_call(http, base, "put", body).await {
                            Ok(_) => Outcome::default(),
                            Err(e) => Outcome::error(e),
                        }
                    }
                    Kind::Redis => unreachable!("redis uses its own client"),
                }
            }
            Client::Redis { conn } => {
                let r: redis::RedisResult<()> = redis::cmd("SET").arg(key).arg(&value[..]).query_async(conn).await;
                match r {
                    Ok(()) => Outcome::default(),
                    Err(e) => Outcome::error(format!("redis {:?}", e.kind())),
                }
            }
        }
    }

    pub async fn delete(&mut self, node: usize, key: &str) -> Outcome {
        match self {
            Client::Http { cfg, http } => {
                let base = &cfg.nodes[node % cfg.nodes.len()];
                match cfg.kind {
                    Kind::Dynakv | Kind::Bare => {
                        let q = cfg.w.map(|w| format!("?w={w}")).unwrap_or_default();
                        dynakv_ack(http.delete(format!("http://{base}/kv/{key}{q}"))).await
                    }
                    Kind::Etcd => {
                        match etcd_call(http, base, "deleterange", json!({ "key": STANDARD.encode(key) })).await {
                            Ok(_) => Outcome::default(),
                            Err(e) => Outcome::error(e),
                        }
                    }
                    Kind::Redis => unreachable!("redis uses its own client"),
                }
            }
            Client::Redis { conn } => {
                let r: redis::RedisResult<i64> = redis::cmd("DEL").arg(key).query_async(conn).await;
                match r {
                    Ok(_) => Outcome::default(),
                    Err(e) => Outcome::error(format!("redis {:?}", e.kind())),
                }
            }
        }
    }
}

async fn dynakv_ack(req: reqwest::RequestBuilder) -> Outcome {
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let context = resp
                .headers()
                .get("x-dynakv-context")
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            if status == 204 {
                let _ = resp.bytes().await;
                Outcome {
                    context,
                    ..Default::default()
                }
            } else {
                let body = resp.bytes().await.unwrap_or_default();
                Outcome::error(error_class(status, &body))
            }
        }
        Err(e) => Outcome::error(classify(&e)),
    }
}

/// One call to etcd's v3 JSON gateway (`POST /v3/kv/{verb}`).
async fn etcd_call(
    http: &reqwest::Client,
    base: &str,
    verb: &str,
    body: serde_json::Value,
) -> Result<serde_json::Value, String> {
    let resp = http
        .post(format!("http://{base}/v3/kv/{verb}"))
        .body(body.to_string())
        .header("content-type", "application/json")
        .send()
        .await
        .map_err(|e| classify(&e))?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.map_err(|e| classify(&e))?;
    if status != 200 {
        return Err(format!("{status} etcd"));
    }
    serde_json::from_slice(&bytes).map_err(|_| "etcd bad json".to_string())
}
