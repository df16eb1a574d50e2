//! The client side of the replica stream (see [`super::stream`]): one link per peer,
//! opened on first use and again whenever it breaks.
//!
//! Requests are *coalesced*: each peer has a queue, and its link sends whatever has
//! queued up as one frame while the previous frame awaits its answer
//! ([`MAX_IN_FLIGHT`]). An idle node sends each request on its own at once (no added
//! latency); a busy one sends fewer, larger frames.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tracing::debug;

use super::message::Request;
use super::port::{Conn, ConnRead, Dialer};
use super::stream::{encode_request, read_answer};
use super::{Reply, RpcError, Traffic};

/// Frames awaiting their answer per peer at once. One: the peer handles a stream's
/// frames one after another anyway, and while a frame is out the requests that come in
/// wait here and join the next one. Measured on 3 local nodes (YCSB A, 64 clients): 34.0k
/// ops/s with one, 28.3k with two; open loop at 14k/s, p99 5.8-15 ms with one, 27-35 ms
/// with two (fewer, larger frames cost less CPU).
pub const MAX_IN_FLIGHT: usize = 1;
/// Requests per frame at most.
pub const MAX_BATCH: usize = 128;
/// Bytes of values per frame, roughly (a single larger request still goes, alone).
pub const MAX_BATCH_BYTES: usize = 4 << 20;
/// Requests waiting for one peer at most. Beyond it a request fails at once (the peer is
/// not keeping up, or is hanging) instead of piling up in memory.
pub const MAX_QUEUED: usize = 4096;
/// How often a link checks for answers overdue past their deadline.
const OVERDUE_CHECK: Duration = Duration::from_millis(250);

type ReplyTo = oneshot::Sender<Result<Reply, RpcError>>;

/// A request waiting in a peer's queue.
struct Queued {
    req: Request,
    /// Rough encoded size, to keep frames well under the peer's body limit.
    bytes: usize,
    deadline: Instant,
    reply: ReplyTo,
}

/// Every peer's link, by address.
#[derive(Clone)]
pub struct Links {
    queues: Arc<Mutex<HashMap<String, mpsc::Sender<Queued>>>>,
    dialer: Dialer,
    /// Streams opened per peer: the first, then one per reconnect.
    opened: Opened,
}

type Opened = Arc<Mutex<HashMap<String, u64>>>;

impl Links {
    pub fn new(dialer: Dialer) -> Links {
        Links {
            queues: Arc::default(),
            dialer,
            opened: Arc::default(),
        }
    }

    /// Streams opened so far, by peer.
    pub fn opened(&self) -> Vec<(String, u64)> {
        self.opened.lock().iter().map(|(a, n)| (a.clone(), *n)).collect()
    }

    /// Queues `req` for `addr` and waits for its answer. `Err(req)` when the link cannot
    /// take it (the runtime is shutting down): the caller may send it another way.
    pub async fn send(&self, addr: &str, req: Request, timeout: Duration) -> Result<Result<Reply, RpcError>, Request> {
        let deadline = Instant::now() + timeout;
        let (reply, answer) = oneshot::channel();
        let queued = Queued {
            bytes: req.approx_bytes(),
            req,
            deadline,
            reply,
        };
        let sent = {
            let mut queues = self.queues.lock();
            let tx = queues.entry(addr.to_string()).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(MAX_QUEUED);
                tokio::spawn(link(addr.to_string(), rx, self.dialer.clone(), self.opened.clone()));
                tx
            });
            tx.try_send(queued)
        };
        match sent {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(q)) => return Err(q.req),
            Err(mpsc::error::TrySendError::Full(_)) => {
                // Never sent: the caller may count it as a failed replica at once.
                return Ok(Err(RpcError::Connect {
                    addr: addr.to_string(),
                    detail: format!("{MAX_QUEUED} requests already wait for this peer"),
                }));
            }
        }
        Ok(match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RpcError::Transport {
                addr: addr.to_string(),
                detail: "request dropped".into(),
            }),
            Err(_) => Err(RpcError::Timeout {
                addr: addr.to_string(),
                timeout,
            }),
        })
    }
}

/// One peer's link: a replica stream opened on first use and again whenever it breaks.
async fn link(addr: String, mut rx: mpsc::Receiver<Queued>, dialer: Dialer, opened: Opened) {
    let mut next_id = 0u64;
    while let Some(first) = rx.recv().await {
        match dialer.dial(&addr).await {
            Ok((conn, _)) => {
                *opened.lock().entry(addr.clone()).or_default() += 1;
                session(&addr, conn, dialer.max_frame(), first, &mut rx, &mut next_id).await
            }
            Err(detail) => {
                // Nothing was sent: what waits now fails as "cannot connect" (a caller
                // may then try elsewhere); later requests try to connect again.
                debug!(peer = %addr, %detail, "cannot open the replica stream");
                let e = RpcError::Connect {
                    addr: addr.clone(),
                    detail,
                };
                let _ = first.reply.send(Err(e.clone()));
                while let Ok(q) = rx.try_recv() {
                    let _ = q.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// A frame sent and not yet answered.
struct Outstanding {
    /// Per request: where its answer goes, and its encoded size.
    replies: Vec<(ReplyTo, usize)>,
    /// The latest deadline among its requests: past it, nobody waits for the answer.
    deadline: Instant,
}

type Pending = Arc<Mutex<HashMap<u64, Outstanding>>>;

fn fail_all(pending: &Pending, e: &RpcError) {
    for (_, o) in pending.lock().drain() {
        for (reply, _) in o.replies {
            let _ = reply.send(Err(e.clone()));
        }
    }
}

/// Runs one stream until it breaks or the link is dropped. Requests left in `rx` wait
/// for the next one.
async fn session(
    addr: &str,
    conn: Conn,
    max_frame: usize,
    first: Queued,
    rx: &mut mpsc::Receiver<Queued>,
    next_id: &mut u64,
) {
    let (r, mut w) = conn.into_split();
    let pending: Pending = Arc::default();
    let answered = Arc::new(Notify::new());
    let (dead_tx, mut dead) = oneshot::channel::<()>();
    let reader = tokio::spawn(read_answers(
        addr.to_string(),
        r,
        max_frame,
        pending.clone(),
        answered.clone(),
        dead_tx,
    ));
    let teardown = |e: RpcError| {
        reader.abort();
        fail_all(&pending, &e);
    };
    let overdue = || {
        let now = Instant::now();
        pending.lock().values().any(|o| o.deadline <= now)
    };
    let mut check = tokio::time::interval(OVERDUE_CHECK);
    let mut carry = Some(first);
    let mut out = Vec::new();
    loop {
        // The first request of the session is there already (and nothing is out yet).
        let first = match carry.take() {
            Some(q) => q,
            None => {
                // With a frame out, requests queue up meanwhile and go out together
                // when its answer comes.
                let room = pending.lock().len() < MAX_IN_FLIGHT;
                tokio::select! {
                    q = rx.recv(), if room => match q {
                        Some(q) => q,
                        None => return teardown(RpcError::Transport { addr: addr.to_string(), detail: "shutting down".into() }),
                    },
                    () = answered.notified(), if !room => continue,
                    _ = &mut dead => return,
                    _ = check.tick() => {
                        if overdue() {
                            // The peer stopped answering (paused, partitioned): start afresh.
                            return teardown(RpcError::Timeout { addr: addr.to_string(), timeout: OVERDUE_CHECK });
                        }
                        continue;
                    }
                }
            }
        };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        // Whatever queued up, within a count and a size (a request over the size goes
        // alone, as the first of its frame).
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(q) => {
                    bytes += q.bytes;
                    batch.push(q);
                }
                Err(_) => break,
            }
        }
        let now = Instant::now();
        batch.retain(|q| q.deadline > now && !q.reply.is_closed());
        let Some(deadline) = batch.iter().map(|q| q.deadline).max() else {
            continue;
        };
        let (reqs, replies): (Vec<Request>, Vec<ReplyTo>) = batch.into_iter().map(|q| (q.req, q.reply)).unzip();
        *next_id += 1;
        out.clear();
        let sizes = encode_request(&mut out, *next_id, &reqs);
        let replies = replies.into_iter().zip(sizes).collect();
        pending.lock().insert(*next_id, Outstanding { replies, deadline });
        let write = async {
            w.write_all(&out).await?;
            w.flush().await
        };
        match tokio::time::timeout_at(deadline, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return teardown(RpcError::Transport {
                    addr: addr.to_string(),
                    detail: e.to_string(),
                });
            }
            Err(_) => {
                return teardown(RpcError::Timeout {
                    addr: addr.to_string(),
                    timeout: deadline.saturating_duration_since(now),
                });
            }
        }
    }
}

/// Hands each answer to the requests of its frame; when the stream ends or breaks,
/// fails whatever is still waiting and tells the writer.
async fn read_answers(
    addr: String,
    r: ConnRead,
    max_frame: usize,
    pending: Pending,
    answered: Arc<Notify>,
    dead: oneshot::Sender<()>,
) {
    let mut r = BufReader::with_capacity(64 << 10, r);
    let detail = loop {
        match read_answer(&mut r, max_frame).await {
            Ok(Some((id, answer))) => {
                let Some(o) = pending.lock().remove(&id) else {
                    break format!("an answer to unknown frame {id}");
                };
                answered.notify_one();
                match answer {
                    Ok(items) if items.len() == o.replies.len() => {
                        for ((reply, sent), (answer, received)) in o.replies.into_iter().zip(items) {
                            let traffic = Traffic {
                                sent: sent as u64,
                                received: received as u64,
                            };
                            let result =
                                answer
                                    .map(|answer| Reply { answer, traffic })
                                    .map_err(|error| RpcError::Remote {
                                        addr: addr.clone(),
                                        error,
                                    });
                            let _ = reply.send(result);
                        }
                    }
                    Ok(items) => {
                        let e = RpcError::Transport {
                            addr: addr.clone(),
                            detail: format!("{} answers to a frame of {} requests", items.len(), o.replies.len()),
                        };
                        for (reply, _) in o.replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                    Err(error) => {
                        let e = RpcError::Remote {
                            addr: addr.clone(),
                            error,
                        };
                        for (reply, _) in o.replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
            }
            Ok(None) => break "the peer closed the replica stream".to_string(),
            Err(e) => break e.to_string(),
        }
    };
    fail_all(&pending, &RpcError::Transport { addr, detail });
    let _ = dead.send(());
}
