//! Node-to-node client: postcard over HTTP/1.1 with pooled keep-alive connections.
//!
//! Replica reads and writes to one peer are *coalesced*: each peer has a queue and a
//! dispatcher that sends whatever has queued up as one [`ReplicaRequest::Batch`] while at
//! most [`MAX_IN_FLIGHT`] batches are outstanding. An idle node sends each request on its
//! own at once (no added latency); a busy one sends fewer, larger messages. Under load
//! this cuts the HTTP exchanges between nodes several-fold, and with them most of the
//! kernel and HTTP overhead that dominated a node's CPU profile.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dynakv_http_api::wire::{
    self, BatchItem, CONTENT_TYPE, GossipRequest, GossipResponse, ReplicaRequest, ReplicaResponse,
};
use dynakv_http_api::{ApiError, ErrorBody};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

/// Batches outstanding per peer at once.
pub const MAX_IN_FLIGHT: usize = 2;
/// Requests per batch at most.
pub const MAX_BATCH: usize = 128;
/// Bytes of values per batch, roughly (a single larger item still goes, alone).
pub const MAX_BATCH_BYTES: usize = 4 << 20;

/// Rough encoded size of an item: its values plus some overhead.
fn item_bytes(item: &BatchItem) -> usize {
    match item {
        BatchItem::Get { key } => key.len() + 16,
        BatchItem::Merge { key, register } | BatchItem::MergeHint { key, register, .. } => {
            key.len() + 64 + register.values().iter().map(|v| v.len()).sum::<usize>()
        }
    }
}

/// Why a call to a peer did not produce an answer.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RpcError {
    #[error("peer {addr} did not answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    /// The connection could not be made: the peer never saw the request.
    #[error("cannot connect to peer {addr}: {detail}")]
    Connect { addr: String, detail: String },
    /// Something failed after the request may have been sent.
    #[error("exchange with peer {addr} failed: {detail}")]
    Transport { addr: String, detail: String },
    /// The peer answered with an error.
    #[error("peer {addr} answered: {error}")]
    Remote { addr: String, error: ApiError },
}

/// A request waiting in a peer's queue.
struct Queued {
    item: BatchItem,
    /// Rough encoded size, to keep batches well under the peer's body limit.
    bytes: usize,
    deadline: Instant,
    reply: oneshot::Sender<Result<ReplicaResponse, RpcError>>,
}

#[derive(Clone)]
pub struct Rpc {
    http: reqwest::Client,
    queues: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Queued>>>>,
}

impl Rpc {
    pub fn new() -> Rpc {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            // Peers close connections idle for their read timeout (at least
            // MIN_READ_TIMEOUT_MS, whatever each is configured with): drop pooled ones well
            // before, so a request is never sent on one the peer is closing that moment.
            .pool_idle_timeout(Duration::from_millis(crate::config::MIN_READ_TIMEOUT_MS / 2))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            .no_proxy()
            .build()
            .expect("static client configuration is valid");
        Rpc {
            http,
            queues: Arc::default(),
        }
    }

    /// Sends one replica request, coalesced with others to the same peer.
    pub async fn replica(
        &self,
        addr: &str,
        req: &ReplicaRequest,
        timeout: Duration,
    ) -> Result<ReplicaResponse, RpcError> {
        let Ok(item) = BatchItem::try_from(req) else {
            // Long-running or large verbs go on their own.
            return self
                .call(addr, "/internal/replica", wire::encode(req).into(), timeout)
                .await;
        };
        let deadline = Instant::now() + timeout;
        let (reply, answer) = oneshot::channel();
        let bytes = item_bytes(&item);
        let queued = Queued {
            item,
            bytes,
            deadline,
            reply,
        };
        let sent = {
            let mut queues = self.queues.lock();
            let tx = queues.entry(addr.to_string()).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(dispatch(self.clone(), addr.to_string(), rx));
                tx
            });
            tx.send(queued)
        };
        if let Err(mpsc::error::SendError(q)) = sent {
            // The dispatcher is gone (runtime shutting down); send directly.
            let req = ReplicaRequest::from(q.item);
            return self
                .call(addr, "/internal/replica", wire::encode(&req).into(), timeout)
                .await;
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RpcError::Transport {
                addr: addr.to_string(),
                detail: "request dropped".into(),
            }),
            Err(_) => Err(RpcError::Timeout {
                addr: addr.to_string(),
                timeout,
            }),
        }
    }

    /// Sends one request on its own, also returning the size of the answer in bytes.
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
            // reqwest's Display hides the cause ("error sending request"); keep it.
            let mut detail = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                detail.push_str(": ");
                detail.push_str(&s.to_string());
                source = s.source();
            }
            if e.is_timeout() {
                RpcError::Timeout {
                    addr: addr.to_string(),
                    timeout,
                }
            } else if e.is_connect() {
                RpcError::Connect {
                    addr: addr.to_string(),
                    detail,
                }
            } else {
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

/// One peer's dispatcher: takes what has queued up, sends it as one batch.
async fn dispatch(rpc: Rpc, addr: String, mut rx: mpsc::UnboundedReceiver<Queued>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Waiting for a slot lets more requests queue up behind `first`.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        // Whatever queued up, within a count and a size (an item over the size goes
        // alone, as the first of its batch).
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(q) => {
                    bytes += q.bytes;
                    batch.push(q);
                }
                Err(_) => break,
            }
        }
        let (rpc, addr) = (rpc.clone(), addr.clone());
        tokio::spawn(async move {
            send(&rpc, &addr, batch).await;
            drop(slot);
        });
    }
}

async fn send(rpc: &Rpc, addr: &str, mut batch: Vec<Queued>) {
    let now = Instant::now();
    batch.retain(|q| q.deadline > now && !q.reply.is_closed());
    let Some(last) = batch.iter().map(|q| q.deadline).max() else {
        return;
    };
    let timeout = last.saturating_duration_since(now);
    if batch.len() == 1 {
        let q = batch.pop().expect("one request");
        let req = ReplicaRequest::from(q.item);
        let result = rpc
            .call(addr, "/internal/replica", wire::encode(&req).into(), timeout)
            .await;
        let _ = q.reply.send(result);
        return;
    }
    let (items, replies): (Vec<BatchItem>, Vec<_>) = batch.into_iter().map(|q| (q.item, q.reply)).unzip();
    let n = items.len();
    let body = wire::encode(&ReplicaRequest::Batch(items));
    match rpc
        .call::<ReplicaResponse>(addr, "/internal/replica", body.into(), timeout)
        .await
    {
        Ok(ReplicaResponse::Batch(answers)) if answers.len() == n => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let result = answer.map(ReplicaResponse::from).map_err(|e| RpcError::Remote {
                    addr: addr.to_string(),
                    error: e.into(),
                });
                let _ = reply.send(result);
            }
        }
        Ok(other) => {
            let e = RpcError::Transport {
                addr: addr.to_string(),
                detail: format!("unexpected answer to a batch: {other:?}"),
            };
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
