//! Node-to-node client: postcard over HTTP/1.1 with pooled keep-alive connections.

use std::time::Duration;

use bytes::Bytes;
use dynakv_http_api::wire::{self, CONTENT_TYPE, GossipRequest, GossipResponse, ReplicaRequest, ReplicaResponse};
use dynakv_http_api::{ApiError, ErrorBody};
use serde::de::DeserializeOwned;

/// Why a call to a peer did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("peer {addr} did not answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("cannot reach peer {addr}: {detail}")]
    Transport { addr: String, detail: String },
    /// The peer answered with an error.
    #[error("peer {addr} answered: {error}")]
    Remote { addr: String, error: ApiError },
}

#[derive(Clone)]
pub struct Rpc {
    http: reqwest::Client,
}

impl Rpc {
    pub fn new() -> Rpc {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            .no_proxy()
            .build()
            .expect("static client configuration is valid");
        Rpc { http }
    }

    pub async fn replica(
        &self,
        addr: &str,
        req: &ReplicaRequest,
        timeout: Duration,
    ) -> Result<ReplicaResponse, RpcError> {
        self.call(addr, "/internal/replica", wire::encode(req).into(), timeout)
            .await
    }

    /// The same request to many replicas: encode once with [`wire::encode`], send to each.
    pub async fn replica_encoded(
        &self,
        addr: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<ReplicaResponse, RpcError> {
        self.call(addr, "/internal/replica", body, timeout).await
    }

    /// Like [`Rpc::replica_encoded`], also returning the size of the answer in bytes.
    pub async fn replica_measured(
        &self,
        addr: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<(ReplicaResponse, usize), RpcError> {
        self.call_measured(addr, "/internal/replica", body, timeout).await
    }

    pub async fn gossip(&self, addr: &str, req: &GossipRequest, timeout: Duration) -> Result<GossipResponse, RpcError> {
        self.call(addr, "/internal/gossip", wire::encode(req).into(), timeout)
            .await
    }

    async fn call<Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Resp, RpcError> {
        self.call_measured(addr, path, body, timeout).await.map(|(r, _)| r)
    }

    async fn call_measured<Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<(Resp, usize), RpcError> {
        let transport = |detail: String| RpcError::Transport {
            addr: addr.to_string(),
            detail,
        };
        let classify = |e: reqwest::Error| {
            if e.is_timeout() {
                RpcError::Timeout {
                    addr: addr.to_string(),
                    timeout,
                }
            } else {
                // reqwest's Display hides the cause ("error sending request"); keep it.
                let mut detail = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    detail.push_str(": ");
                    detail.push_str(&s.to_string());
                    source = s.source();
                }
                transport(detail)
            }
        };
        let resp = self
            .http
            .post(format!("http://{addr}{path}"))
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(classify)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(classify)?;
        if status.is_success() {
            return wire::decode(&body)
                .map(|r| (r, body.len()))
                .map_err(|e| transport(format!("undecodable answer: {e}")));
        }
        let error = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(b) => ApiError::from_body(status.as_u16(), b),
            Err(_) => ApiError::Upstream {
                status: status.as_u16(),
                code: "peer_error".into(),
                message: String::from_utf8_lossy(&body).chars().take(200).collect(),
            },
        };
        Err(RpcError::Remote {
            addr: addr.to_string(),
            error,
        })
    }
}

impl Default for Rpc {
    fn default() -> Self {
        Self::new()
    }
}
