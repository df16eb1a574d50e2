//! The real transport, over peers' cluster ports: small verbs on the replica stream (see
//! [`super::link`]), everything else (anti-entropy, forwarded writes, hint delivery,
//! gossip, partition transfers) one request at a time on pooled connections, so that a
//! long exchange holds up nothing behind it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::io::{AsyncWriteExt, BufReader};

use super::link::Links;
use super::message::Request;
use super::port::{Conn, Dialer};
use super::stream::{FrameError, encode_request, read_answer};
use super::{Reply, RpcError, Traffic, Transport};

/// Idle pooled connections kept per peer.
const MAX_IDLE: usize = 16;
/// A pooled connection unused this long is closed rather than reused.
const IDLE_FOR: Duration = Duration::from_secs(30);

type Pooled = BufReader<Conn>;
/// Idle pooled connections by peer, with when each was last used.
type Idle = Arc<Mutex<HashMap<String, Vec<(Pooled, Instant)>>>>;

#[derive(Clone)]
pub struct NetTransport {
    links: Links,
    dialer: Dialer,
    idle: Idle,
}

impl NetTransport {
    pub fn new(dialer: Dialer) -> NetTransport {
        NetTransport {
            links: Links::new(dialer.clone()),
            dialer,
            idle: Arc::default(),
        }
    }

    fn checkout(&self, addr: &str) -> Option<Pooled> {
        let mut idle = self.idle.lock();
        let conns = idle.get_mut(addr)?;
        while let Some((conn, since)) = conns.pop() {
            if since.elapsed() < IDLE_FOR {
                return Some(conn);
            }
        }
        None
    }

    fn checkin(&self, addr: &str, conn: Pooled) {
        let mut idle = self.idle.lock();
        let conns = idle.entry(addr.to_string()).or_default();
        if conns.len() < MAX_IDLE {
            conns.push((conn, Instant::now()));
        }
    }

    /// One request on a pooled connection (or a new one). A reused connection that fails
    /// before any answer arrives (the peer restarted meanwhile) is retried once on a new
    /// one: every verb sent this way is safe to repeat.
    async fn exchange(&self, addr: &str, req: &Request, timeout: Duration) -> Result<Reply, RpcError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut frame = Vec::new();
        let sizes = encode_request(&mut frame, 1, std::slice::from_ref(req));
        let sent = sizes.first().copied().unwrap_or_default() as u64;
        let mut reused = self.checkout(addr);
        loop {
            let was_reused = reused.is_some();
            let mut conn = match reused.take() {
                Some(c) => c,
                None => match tokio::time::timeout_at(deadline, self.dialer.dial(addr)).await {
                    Ok(Ok((conn, _))) => BufReader::new(conn),
                    Ok(Err(detail)) => {
                        return Err(RpcError::Connect {
                            addr: addr.to_string(),
                            detail,
                        });
                    }
                    Err(_) => {
                        return Err(RpcError::Timeout {
                            addr: addr.to_string(),
                            timeout,
                        });
                    }
                },
            };
            let attempt = async {
                conn.write_all(&frame).await?;
                conn.flush().await?;
                read_answer(&mut conn, self.dialer.max_frame()).await
            };
            let result = match tokio::time::timeout_at(deadline, attempt).await {
                Err(_) => {
                    return Err(RpcError::Timeout {
                        addr: addr.to_string(),
                        timeout,
                    });
                }
                Ok(r) => r,
            };
            let (id, answer) = match result {
                Ok(Some(a)) => a,
                Ok(None) | Err(FrameError::Io(_)) if was_reused => continue,
                Ok(None) => {
                    return Err(RpcError::Transport {
                        addr: addr.to_string(),
                        detail: "the peer closed the connection".into(),
                    });
                }
                Err(e) => {
                    return Err(RpcError::Transport {
                        addr: addr.to_string(),
                        detail: e.to_string(),
                    });
                }
            };
            if id != 1 {
                return Err(RpcError::Transport {
                    addr: addr.to_string(),
                    detail: format!("an answer to unknown frame {id}"),
                });
            }
            self.checkin(addr, conn);
            return match answer {
                Ok(mut items) if items.len() == 1 => {
                    let (answer, received) = items.pop().expect("one item");
                    let traffic = Traffic {
                        sent,
                        received: received as u64,
                    };
                    answer
                        .map(|answer| Reply { answer, traffic })
                        .map_err(|error| RpcError::Remote {
                            addr: addr.to_string(),
                            error,
                        })
                }
                Ok(items) => Err(RpcError::Transport {
                    addr: addr.to_string(),
                    detail: format!("{} answers to one request", items.len()),
                }),
                Err(error) => Err(RpcError::Remote {
                    addr: addr.to_string(),
                    error,
                }),
            };
        }
    }
}

impl Transport for NetTransport {
    fn send(&self, addr: &str, req: Request, timeout: Duration) -> BoxFuture<'static, Result<Reply, RpcError>> {
        let this = self.clone();
        let addr = addr.to_string();
        Box::pin(async move {
            let req = if req.streamable() {
                match this.links.send(&addr, req, timeout).await {
                    Ok(result) => return result,
                    // The link is gone (runtime shutting down): send it on its own.
                    Err(req) => req,
                }
            } else {
                req
            };
            this.exchange(&addr, &req, timeout).await
        })
    }

    fn reachable(&self, addr: &str) {
        self.dialer.forget_failures(addr);
    }

    fn streams_opened(&self) -> Vec<(String, u64)> {
        self.links.opened()
    }
}
