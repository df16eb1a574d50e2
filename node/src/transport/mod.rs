//! Node-to-node messaging behind one small trait.
//!
//! - [`message`]: every request and its typed answer, and their encoding.
//! - [`Transport`]: sends one [`message::Request`] to a peer and waits for its answer.
//!   [`net::NetTransport`] is the real one (over peers' cluster ports: the replica
//!   stream for small verbs, pooled connections for the rest); the simulator brings an in-memory one that encodes, delays, drops,
//!   duplicates and reorders every message.
//! - [`Handler`]: the receiving side; the node's [`crate::roles::peer::PeerHandler`]
//!   implements it, whatever carried the request.
//! - [`Peers`]: the typed front end callers use (`peers.call(addr, Get { .. })`).
//! - [`port`], [`handshake`], [`stream`], [`link`], [`net`]: the real wire: the
//!   cluster port and who may use it, the frames, and the client sides.

pub mod handshake;
pub mod link;
pub mod message;
pub mod net;
pub mod port;
pub mod stream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::env::metrics::Metrics;
use message::{Answer, Call, Request, WireError};

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
    Remote { addr: String, error: WireError },
    /// The peer answered a different verb than the one asked (a bug, or mixed versions).
    #[error("peer {addr} answered {answered} to a {asked} request")]
    Protocol {
        addr: String,
        asked: &'static str,
        answered: &'static str,
    },
}

impl RpcError {
    /// A label for the kind of failure.
    pub fn kind(&self) -> &'static str {
        match self {
            RpcError::Timeout { .. } => "timeout",
            RpcError::Connect { .. } => "connect",
            RpcError::Transport { .. } => "transport",
            RpcError::Remote { .. } => "remote",
            RpcError::Protocol { .. } => "protocol",
        }
    }
}

/// An answer and how many bytes the exchange moved each way (as encoded on the wire).
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub answer: Answer,
    pub traffic: Traffic,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub sent: u64,
    pub received: u64,
}

/// Carries requests to peers, named by address.
pub trait Transport: Send + Sync + 'static {
    /// Sends `req` to the node at `addr` and waits up to `timeout` for the answer.
    fn send(&self, addr: &str, req: Request, timeout: Duration) -> BoxFuture<'static, Result<Reply, RpcError>>;

    /// The node at `addr` is known to be up again (its gossip arrived): connect to it at
    /// the next request rather than wait out a backoff from when it was down.
    fn reachable(&self, _addr: &str) {}

    /// Replica streams opened so far, by peer address (the first and every reconnect).
    fn streams_opened(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
}

/// The receiving side of node-to-node requests.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: Request) -> impl Future<Output = Result<Answer, WireError>> + Send;

    /// Several requests that arrived together, answered in order. The node stores the
    /// merges among them as one storage write.
    fn handle_batch(&self, reqs: Vec<Request>) -> impl Future<Output = Vec<Result<Answer, WireError>>> + Send;
}

/// Typed calls over a [`Transport`], each timed in the node's metrics. Cheap to clone.
#[derive(Clone)]
pub struct Peers {
    transport: Arc<dyn Transport>,
    metrics: Arc<Metrics>,
}

impl Peers {
    pub fn new(transport: Arc<dyn Transport>, metrics: Arc<Metrics>) -> Peers {
        Peers { transport, metrics }
    }

    /// See [`Transport::reachable`].
    pub fn reachable(&self, addr: &str) {
        self.transport.reachable(addr)
    }

    /// See [`Transport::streams_opened`].
    pub fn streams_opened(&self) -> Vec<(String, u64)> {
        self.transport.streams_opened()
    }

    /// Sends `req` and returns its answer.
    pub async fn call<C: Call>(&self, addr: &str, req: C, timeout: Duration) -> Result<C::Answer, RpcError> {
        self.call_measured(addr, req, timeout).await.map(|(a, _)| a)
    }

    /// Sends `req` and returns its answer and the bytes moved.
    pub async fn call_measured<C: Call>(
        &self,
        addr: &str,
        req: C,
        timeout: Duration,
    ) -> Result<(C::Answer, Traffic), RpcError> {
        let started = std::time::Instant::now();
        let reply = self.transport.send(addr, req.wrap(), timeout).await;
        let result = reply.and_then(|reply| match C::unwrap(reply.answer) {
            Ok(answer) => Ok((answer, reply.traffic)),
            Err(other) => Err(RpcError::Protocol {
                addr: addr.to_string(),
                asked: C::VERB,
                answered: other.verb(),
            }),
        });
        let failed = result.as_ref().err().map(RpcError::kind);
        self.metrics.rpc(addr, C::VERB, started.elapsed(), failed);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::message::{Get, Merge};
    use super::*;

    /// Answers every request with an empty `Get` answer.
    struct AlwaysGet;

    impl Transport for AlwaysGet {
        fn send(&self, _: &str, _: Request, _: Duration) -> BoxFuture<'static, Result<Reply, RpcError>> {
            Box::pin(async {
                Ok(Reply {
                    answer: Answer::Get(None),
                    traffic: Traffic { sent: 3, received: 4 },
                })
            })
        }
    }

    #[tokio::test]
    async fn a_mismatched_answer_is_a_protocol_error_naming_both_verbs() {
        let peers = Peers::new(Arc::new(AlwaysGet), Arc::new(Metrics::new(true)));
        let t = Duration::from_secs(1);
        assert_eq!(peers.call("a", Get::of("k"), t).await.unwrap(), None);
        let (_, traffic) = peers.call_measured("a", Get::of("k"), t).await.unwrap();
        assert_eq!(traffic, Traffic { sent: 3, received: 4 });
        let merge = Merge {
            key: "k".into(),
            register: dynakv_crdt::Register::Mv(Default::default()),
            layout: 1,
        };
        match peers.call("a", merge, t).await {
            Err(RpcError::Protocol { asked, answered, .. }) => assert_eq!((asked, answered), ("Merge", "Get")),
            other => panic!("{other:?}"),
        }
    }
}
