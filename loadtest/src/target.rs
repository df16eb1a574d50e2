//! The stores a run can drive, behind one small interface: dynakv (its HTTP API), etcd
//! (its v3 JSON gateway: linearizable reads, quorum writes), Redis (RESP), and a bare
//! HTTP server that answers 204 to everything (the HTTP ceiling of the machine).

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::json;
use tokio::net::TcpStream;

use crate::http1;

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

/// Longest a connection may sit unused and still be reused: half of dynakv's default read
/// timeout.
const MAX_IDLE: Duration = Duration::from_secs(5);

/// A connection idle for longer than this is checked for having been closed before it
/// is reused (busier ones are not: the check costs a system call).
const IDLE_CHECK: Duration = Duration::from_millis(100);

/// Settings shared by every worker of a run.
#[derive(Clone)]
pub struct TargetConfig {
    pub kind: Kind,
    /// host:port of each node (etcd members, the Redis server, the bare server).
    pub nodes: Vec<String>,
    pub r: Option<usize>,
    pub w: Option<usize>,
    pub timeout: Duration,
    /// HTTPS, trusting this CA (a dynakv client port with `--client-tls`).
    pub tls: Option<tokio_rustls::TlsConnector>,
    /// `Authorization: Bearer` on every request (a dynakv node with API tokens).
    pub token: Option<String>,
}

/// A TLS client configuration trusting the CA certificate(s) in `ca` (PEM).
pub fn tls_connector(ca: &std::path::Path) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)))
}

/// One worker's connection(s) to the target.
pub enum Client {
    /// One HTTP/1.1 keep-alive connection per node, owned by this worker: no pool, no
    /// locks, no connection task (see [`http1`]), so the generator spends as little CPU
    /// as possible (it shares the machine with the store under test).
    Http {
        cfg: TargetConfig,
        /// Each connection with when it was last used.
        conns: Vec<Option<(http1::Conn, Instant)>>,
    },
    Redis {
        conn: redis::aio::MultiplexedConnection,
    },
}

/// "503 quorum_failed" from a dynakv JSON error; "503" for anything else.
fn error_class(status: u16, body: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) if v["error"].is_string() => format!("{status} {}", v["error"].as_str().unwrap()),
        _ => status.to_string(),
    }
}

impl Client {
    pub async fn connect(cfg: &TargetConfig) -> anyhow::Result<Client> {
        Ok(match cfg.kind {
            Kind::Redis => {
                let client = redis::Client::open(format!("redis://{}/", cfg.nodes[0]))?;
                Client::Redis {
                    conn: client.get_multiplexed_async_connection().await?,
                }
            }
            _ => Client::Http {
                cfg: cfg.clone(),
                conns: cfg.nodes.iter().map(|_| None).collect(),
            },
        })
    }

    /// Opens this worker's connection to every node now, so the first requests of a run
    /// do not pay for (and measure) connection set-up.
    pub async fn warm_up(&mut self) {
        if let Client::Http { cfg, .. } = self {
            for node in 0..cfg.nodes.len() {
                let _ = self.http(node, "GET", "/health", Bytes::new(), None).await;
            }
        }
    }

    /// One request to node `node` over this worker's connection to it (made on first use,
    /// and again after an error).
    async fn http(
        &mut self,
        node: usize,
        method: &str,
        path: &str,
        body: Bytes,
        context: Option<&str>,
    ) -> Result<http1::Response, String> {
        let Client::Http { cfg, conns } = self else {
            unreachable!("http on a redis client")
        };
        let node = node % cfg.nodes.len();
        let timeout = cfg.timeout;
        let addr = cfg.nodes[node].clone();
        let exchange = async {
            // A server closes connections idle for its own timeout (dynakv: its read
            // timeout, 10 s by default), and one that closes just as a request is sent
            // fails that request. Connections idle for longer than this are replaced
            // instead of reused. (Not much shorter: an open-loop run that stalls wakes
            // hundreds of idle clients at once, and reconnecting them all overflows
            // listen queues, costing a second per dropped SYN.) One idle for a moment is
            // checked first: a server that closed it (a restart, say) would otherwise
            // fail the request sent on it.
            if let Some((c, used)) = &mut conns[node] {
                let idle = used.elapsed();
                if !c.is_reusable() || idle >= MAX_IDLE || (idle > IDLE_CHECK && c.closed_while_idle()) {
                    conns[node] = None;
                }
            }
            let conn = match &mut conns[node] {
                Some((c, _)) => c,
                slot => {
                    let stream = TcpStream::connect(&addr).await.map_err(|_| "connect".to_string())?;
                    let _ = stream.set_nodelay(true);
                    let io: Box<dyn http1::Io> = match &cfg.tls {
                        Some(tls) => {
                            let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
                            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                                .map_err(|_| "connect".to_string())?;
                            Box::new(tls.connect(name, stream).await.map_err(|_| "tls".to_string())?)
                        }
                        None => Box::new(stream),
                    };
                    &mut slot.insert((http1::Conn::new(io), Instant::now())).0
                }
            };
            let bearer;
            let mut headers = Vec::with_capacity(3);
            if let Some(t) = &cfg.token {
                bearer = format!("Bearer {t}");
                headers.push(("authorization", bearer.as_str()));
            }
            if let Some(c) = context {
                headers.push(("x-dynakv-context", c));
            }
            if !body.is_empty() {
                headers.push(("content-type", "application/octet-stream"));
            }
            conn.request(method, path, &addr, &headers, &body)
                .await
                .map_err(|_| "transport".to_string())
        };
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err("timeout".to_string()),
        };
        match (&result, &mut conns[node]) {
            (Ok(_), Some((_, used))) => *used = Instant::now(),
            // Start afresh on the next request: the connection may be in any state.
            _ => conns[node] = None,
        }
        result
    }

    fn kind(&self) -> Kind {
        match self {
            Client::Http { cfg, .. } => cfg.kind,
            Client::Redis { .. } => Kind::Redis,
        }
    }

    fn quorum(&self, which: char) -> String {
        let Client::Http { cfg, .. } = self else {
            return String::new();
        };
        match (which, cfg.r, cfg.w) {
            ('r', Some(r), _) => format!("?r={r}"),
            ('w', _, Some(w)) => format!("?w={w}"),
            _ => String::new(),
        }
    }

    pub async fn read(&mut self, node: usize, key: &str) -> Outcome {
        match self.kind() {
            Kind::Dynakv | Kind::Bare => {
                let path = format!("/kv/{key}{}", self.quorum('r'));
                let reply = match self.http(node, "GET", &path, Bytes::new(), None).await {
                    Ok(r) => r,
                    Err(e) => return Outcome::error(e),
                };
                let http1::Response { status, context, body } = reply;
                match status {
                    200 => Outcome {
                        values: vec![body],
                        context,
                        ..Default::default()
                    },
                    204 if self.kind() == Kind::Bare => Outcome::default(),
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
            Kind::Etcd => match self.etcd(node, "range", json!({ "key": STANDARD.encode(key) })).await {
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
            },
            Kind::Redis => {
                let Client::Redis { conn } = self else { unreachable!() };
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
        match self.kind() {
            Kind::Dynakv | Kind::Bare => {
                let path = format!("/kv/{key}{}", self.quorum('w'));
                dynakv_ack(self.http(node, "PUT", &path, value, context).await)
            }
            Kind::Etcd => {
                let body = json!({ "key": STANDARD.encode(key), "value": STANDARD.encode(&value) });
                match self.etcd(node, "put", body).await {
                    Ok(_) => Outcome::default(),
                    Err(e) => Outcome::error(e),
                }
            }
            Kind::Redis => {
                let Client::Redis { conn } = self else { unreachable!() };
                let r: redis::RedisResult<()> = redis::cmd("SET").arg(key).arg(&value[..]).query_async(conn).await;
                match r {
                    Ok(()) => Outcome::default(),
                    Err(e) => Outcome::error(format!("redis {:?}", e.kind())),
                }
            }
        }
    }

    pub async fn delete(&mut self, node: usize, key: &str) -> Outcome {
        match self.kind() {
            Kind::Dynakv | Kind::Bare => {
                let path = format!("/kv/{key}{}", self.quorum('w'));
                dynakv_ack(self.http(node, "DELETE", &path, Bytes::new(), None).await)
            }
            Kind::Etcd => match self
                .etcd(node, "deleterange", json!({ "key": STANDARD.encode(key) }))
                .await
            {
                Ok(_) => Outcome::default(),
                Err(e) => Outcome::error(e),
            },
            Kind::Redis => {
                let Client::Redis { conn } = self else { unreachable!() };
                let r: redis::RedisResult<i64> = redis::cmd("DEL").arg(key).query_async(conn).await;
                match r {
                    Ok(_) => Outcome::default(),
                    Err(e) => Outcome::error(format!("redis {:?}", e.kind())),
                }
            }
        }
    }

    /// One call to etcd's v3 JSON gateway (`POST /v3/kv/{verb}`).
    async fn etcd(&mut self, node: usize, verb: &str, body: serde_json::Value) -> Result<serde_json::Value, String> {
        let reply = self
            .http(node, "POST", &format!("/v3/kv/{verb}"), body.to_string().into(), None)
            .await?;
        if reply.status != 200 {
            return Err(format!("{} etcd", reply.status));
        }
        serde_json::from_slice(&reply.body).map_err(|_| "etcd bad json".to_string())
    }
}

fn dynakv_ack(reply: Result<http1::Response, String>) -> Outcome {
    match reply {
        Ok(r) if r.status == 204 => Outcome {
            context: r.context,
            ..Default::default()
        },
        Ok(r) => Outcome::error(error_class(r.status, &r.body)),
        Err(e) => Outcome::error(e),
    }
}
