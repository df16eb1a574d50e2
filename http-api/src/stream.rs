//! The replica stream: one long-lived connection per pair of nodes carrying replica
//! requests as length-prefixed frames, pipelined, instead of one HTTP exchange each.
//!
//! A node opens it with `GET /internal/stream` and `Upgrade: dynakv-rpc/1`; after the
//! `101 Switching Protocols` both sides speak frames:
//!
//! - request: `u32` length of what follows, `u64` request id, a [`ReplicaRequest`] as
//!   [`wire::encode`]s it;
//! - answer: `u32` length of what follows, `u64` the request's id, a `u8` (0: a
//!   [`ReplicaResponse`], 1: a [`WireError`]), the message as [`wire::encode`]s it.
//!
//! The serving side handles a connection's requests one after another and answers in
//! order, writing the answers together once no further whole request has arrived. Per request, that saves the HTTP parsing and routing, most system calls and the
//! hand-offs between tasks of an HTTP exchange, which at moderate load was most of a
//! node's CPU (each client request fans out to two or three peers).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{Notify, watch};
use tracing::debug;

use crate::error::ApiError;
use crate::service::InternalService;
use crate::wire::{self, ReplicaRequest, ReplicaResponse, WireError};

pub const STREAM_PATH: &str = "/internal/stream";
/// The `Upgrade` protocol name; a new frame format gets a new name.
pub const STREAM_PROTOCOL: &str = "dynakv-rpc/1";

/// The replica streams a node serves, so that it can stop them when it shuts down:
/// [`Streams::close`] makes each stop reading requests once it has answered what it
/// has, and waits for them to end. Cheap to clone.
#[derive(Clone)]
pub struct Streams {
    stop: Arc<watch::Sender<bool>>,
    active: Arc<AtomicUsize>,
    ended: Arc<Notify>,
}

impl Default for Streams {
    fn default() -> Self {
        Streams {
            stop: Arc::new(watch::channel(false).0),
            active: Arc::default(),
            ended: Arc::default(),
        }
    }
}

/// Counts a stream as active while it lives.
struct Active(Streams);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
        self.0.ended.notify_waiters();
    }
}

impl Streams {
    fn enter(&self) -> Active {
        self.active.fetch_add(1, Ordering::AcqRel);
        Active(self.clone())
    }

    /// Streams being served now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Stops every stream (and any opened later) after the request it is handling, and
    /// waits up to `grace` for them to end. Returns how many were still running then.
    pub async fn close(&self, grace: std::time::Duration) -> usize {
        let _ = self.stop.send(true);
        let all_ended = async {
            loop {
                let ended = self.ended.notified();
                if self.active() == 0 {
                    return;
                }
                ended.await;
            }
        };
        let _ = tokio::time::timeout(grace, all_ended).await;
        self.active()
    }
}

/// Largest frame the length prefix can describe.
const MAX_FRAME: usize = u32::MAX as usize;

/// Answer kinds.
const ANSWER_OK: u8 = 0;
const ANSWER_ERR: u8 = 1;

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("a frame of {len} bytes is over the limit of {limit}")]
    TooLarge { len: usize, limit: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Appends a request frame to `out`.
pub fn encode_request(out: &mut Vec<u8>, id: u64, req: &ReplicaRequest) {
    let msg = wire::encode(req);
    out.extend_from_slice(&((8 + msg.len()) as u32).to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&msg);
}

/// Appends an answer frame to `out`.
pub fn encode_answer(out: &mut Vec<u8>, id: u64, answer: &Result<ReplicaResponse, ApiError>) {
    let (mut kind, mut msg) = match answer {
        Ok(resp) => (ANSWER_OK, wire::encode(resp)),
        Err(e) => (ANSWER_ERR, wire::encode(&WireError::from(e))),
    };
    if msg.len() > MAX_FRAME - 9 {
        // A frame's length must fit its u32 prefix: refuse the answer rather than wrap.
        let e = ApiError::Internal(format!("an answer of {} bytes is too large for one frame", msg.len()));
        (kind, msg) = (ANSWER_ERR, wire::encode(&WireError::from(&e)));
    }
    out.extend_from_slice(&((9 + msg.len()) as u32).to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.push(kind);
    out.extend_from_slice(&msg);
}

/// Reads one frame: its id and the rest. `None` at a clean end of the stream.
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, limit: usize) -> Result<Option<(u64, Vec<u8>)>, FrameError> {
    let len = match r.read_u32().await {
        Ok(len) => len as usize,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if len < 8 {
        return Err(FrameError::Malformed(format!("a frame of {len} bytes has no id")));
    }
    if len > limit {
        return Err(FrameError::TooLarge { len, limit });
    }
    let id = r.read_u64().await?;
    let mut body = vec![0; len - 8];
    r.read_exact(&mut body).await?;
    Ok(Some((id, body)))
}

/// Reads one request frame. `None` at a clean end of the stream.
pub async fn read_request<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: usize,
) -> Result<Option<(u64, Result<ReplicaRequest, ApiError>)>, FrameError> {
    Ok(read_frame(r, limit)
        .await?
        .map(|(id, body)| (id, wire::decode::<ReplicaRequest>(&body))))
}

/// Reads one answer frame. `None` at a clean end of the stream.
pub async fn read_answer<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: usize,
) -> Result<Option<(u64, Result<ReplicaResponse, ApiError>)>, FrameError> {
    let Some((id, body)) = read_frame(r, limit).await? else {
        return Ok(None);
    };
    let Some((&kind, msg)) = body.split_first() else {
        return Err(FrameError::Malformed("an answer without a kind".into()));
    };
    let answer = match kind {
        ANSWER_OK => Ok(wire::decode::<ReplicaResponse>(msg).map_err(|e| FrameError::Malformed(e.to_string()))?),
        ANSWER_ERR => Err(wire::decode::<WireError>(msg)
            .map_err(|e| FrameError::Malformed(e.to_string()))?
            .into()),
        other => return Err(FrameError::Malformed(format!("unknown answer kind {other}"))),
    };
    Ok(Some((id, answer)))
}

/// Serves one stream until the peer closes it or it breaks: requests in order, answers
/// in order, written together whenever no more requests are waiting.
pub async fn serve<S, IO>(svc: Arc<S>, io: IO, limit: usize, streams: Streams) -> Result<(), FrameError>
where
    S: InternalService,
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let _active = streams.enter();
    let mut stop = streams.stop.subscribe();
    let (r, mut w) = tokio::io::split(io);
    let mut r = BufReader::with_capacity(64 << 10, r);
    let mut out = Vec::new();
    loop {
        // Shutting down: answer what has been handled, then close. The peer fails what
        // it sent after that as a broken stream and reconnects elsewhere or later.
        if *stop.borrow_and_update() {
            w.write_all(&out).await?;
            w.shutdown().await?;
            return Ok(());
        }
        let next = tokio::select! {
            next = read_request(&mut r, limit) => next?,
            _ = stop.changed() => continue,
        };
        let Some((id, req)) = next else {
            return Ok(());
        };
        let answer = match req {
            // A handler that panics fails its request, as the HTTP routes do, instead of
            // ending the stream and every request queued behind it.
            Ok(req) => AssertUnwindSafe(svc.replica(req))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    tracing::error!("replica request handler panicked");
                    Err(ApiError::Internal("the request handler crashed; this is a bug".into()))
                }),
            Err(e) => Err(e),
        };
        encode_answer(&mut out, id, &answer);
        if !holds_a_frame(r.buffer()) {
            w.write_all(&out).await?;
            out.clear();
        }
    }
}

/// Whether `buf` starts with a whole frame (answering it can go out with the answers so
/// far; waiting for the rest of a partial one could hold them up).
fn holds_a_frame(buf: &[u8]) -> bool {
    buf.len() >= 4 && buf.len() - 4 >= u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize
}

/// `GET /internal/stream`: switches the connection to the replica stream.
pub(crate) async fn upgrade<S: InternalService>(
    svc: Arc<S>,
    mut req: Request,
    limit: usize,
    streams: Streams,
) -> Result<Response, ApiError> {
    let wanted = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(STREAM_PROTOCOL));
    if !wanted {
        return Err(ApiError::BadRequest(format!(
            "{STREAM_PATH} needs `Connection: upgrade` and `Upgrade: {STREAM_PROTOCOL}`"
        )));
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                if let Err(e) = serve(svc, TokioIo::new(upgraded), limit, streams).await {
                    debug!(error = %e, "replica stream ended");
                }
            }
            Err(e) => debug!(error = %e, "replica stream upgrade failed"),
        }
    });
    Ok((
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, HeaderValue::from_static("upgrade")),
            (header::UPGRADE, HeaderValue::from_static(STREAM_PROTOCOL)),
        ],
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{BatchAnswer, BatchItem, GossipRequest, GossipResponse};

    /// Answers a batch of gets with "not found" per key, fails anything else.
    struct Fake;

    impl InternalService for Fake {
        async fn replica(&self, req: ReplicaRequest) -> Result<ReplicaResponse, ApiError> {
            match req {
                ReplicaRequest::Batch(items) => Ok(ReplicaResponse::Batch(
                    items
                        .iter()
                        .map(|i| match i {
                            BatchItem::Get { .. } => Ok(BatchAnswer::State(None)),
                            _ => Err(WireError::from(&ApiError::BadRequest("only gets".into()))),
                        })
                        .collect(),
                )),
                ReplicaRequest::GetBatch { .. } => panic!("a bug in a handler"),
                _ => Err(ApiError::BadRequest("only batches".into())),
            }
        }

        fn gossip(&self, _: GossipRequest) -> Result<GossipResponse, ApiError> {
            Err(ApiError::BadRequest("no gossip here".into()))
        }
    }

    type Served = tokio::task::JoinHandle<Result<(), FrameError>>;

    /// A stream served by `Fake` with frames up to `limit`: the client's end and the server.
    fn start(limit: usize, streams: Streams) -> (tokio::io::DuplexStream, Served) {
        let (client, server) = tokio::io::duplex(1 << 16);
        (client, tokio::spawn(serve(Arc::new(Fake), server, limit, streams)))
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order_with_their_ids() {
        let (client, served) = start(1 << 20, Streams::default());
        let (mut r, mut w) = tokio::io::split(client);
        let mut out = Vec::new();
        for id in [7u64, 3, 99] {
            let items = (0..id % 4 + 1)
                .map(|k| BatchItem::Get { key: format!("k{k}") })
                .collect();
            encode_request(&mut out, id, &ReplicaRequest::Batch(items));
        }
        encode_request(&mut out, 5, &ReplicaRequest::Digests { keys: vec![] });
        w.write_all(&out).await.unwrap();
        for (id, n) in [(7u64, 4usize), (3, 4), (99, 4)] {
            let (got, answer) = read_answer(&mut r, 1 << 20).await.unwrap().unwrap();
            assert_eq!(got, id);
            match answer.unwrap() {
                ReplicaResponse::Batch(a) => assert_eq!(a.len(), n),
                other => panic!("{other:?}"),
            }
        }
        let (got, answer) = read_answer(&mut r, 1 << 20).await.unwrap().unwrap();
        assert_eq!(got, 5);
        assert_eq!(answer.unwrap_err().code(), "bad_request");
        // A handler that panics fails its own request; the stream goes on.
        let mut out = Vec::new();
        encode_request(&mut out, 6, &ReplicaRequest::GetBatch { keys: vec![] });
        encode_request(
            &mut out,
            8,
            &ReplicaRequest::Batch(vec![BatchItem::Get { key: "z".into() }]),
        );
        w.write_all(&out).await.unwrap();
        let (got, answer) = read_answer(&mut r, 1 << 20).await.unwrap().unwrap();
        assert_eq!(
            (got, answer.unwrap_err().code().to_string()),
            (6, "internal".to_string())
        );
        assert_eq!(read_answer(&mut r, 1 << 20).await.unwrap().unwrap().0, 8);
        drop(w);
        drop(r);
        served.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn an_answer_is_not_held_back_by_a_partly_arrived_next_request() {
        let (client, served) = start(1 << 20, Streams::default());
        let (mut r, mut w) = tokio::io::split(client);
        let mut out = Vec::new();
        encode_request(
            &mut out,
            1,
            &ReplicaRequest::Batch(vec![BatchItem::Get { key: "a".into() }]),
        );
        let first = out.len();
        encode_request(
            &mut out,
            2,
            &ReplicaRequest::Batch(vec![BatchItem::Get { key: "b".into() }]),
        );
        w.write_all(&out[..first + 6]).await.unwrap();
        let answer = tokio::time::timeout(std::time::Duration::from_secs(5), read_answer(&mut r, 1 << 20)).await;
        assert_eq!(answer.expect("answered before the rest arrived").unwrap().unwrap().0, 1);
        w.write_all(&out[first + 6..]).await.unwrap();
        assert_eq!(read_answer(&mut r, 1 << 20).await.unwrap().unwrap().0, 2);
        drop(w);
        drop(r);
        served.await.unwrap().unwrap();
        assert!(!holds_a_frame(&[0, 0, 0]));
        assert!(!holds_a_frame(&[0, 0, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8]));
        assert!(holds_a_frame(&[0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]));
    }

    #[tokio::test]
    async fn close_ends_streams_after_their_answers_and_waits_for_them() {
        let streams = Streams::default();
        let (client, served) = start(1 << 20, streams.clone());
        let (mut r, mut w) = tokio::io::split(client);
        let mut out = Vec::new();
        encode_request(
            &mut out,
            1,
            &ReplicaRequest::Batch(vec![BatchItem::Get { key: "a".into() }]),
        );
        w.write_all(&out).await.unwrap();
        assert_eq!(read_answer(&mut r, 1 << 20).await.unwrap().unwrap().0, 1);
        assert_eq!(streams.active(), 1);
        assert_eq!(streams.close(std::time::Duration::from_secs(5)).await, 0);
        assert!(
            read_answer(&mut r, 1 << 20).await.unwrap().is_none(),
            "closed after its answers"
        );
        served.await.unwrap().unwrap();
        // A stream opened after the close ends at once.
        let (_client, server) = tokio::io::duplex(1 << 16);
        serve(Arc::new(Fake), server, 1 << 20, streams.clone()).await.unwrap();
        assert_eq!(streams.active(), 0);
    }

    #[tokio::test]
    async fn oversized_and_malformed_frames_end_the_stream_with_an_error() {
        let (mut client, served) = start(1024, Streams::default());
        client.write_all(&5000u32.to_be_bytes()).await.unwrap();
        assert!(matches!(
            served.await.unwrap(),
            Err(FrameError::TooLarge { len: 5000, limit: 1024 })
        ));

        let (mut client, served) = start(1024, Streams::default());
        client.write_all(&3u32.to_be_bytes()).await.unwrap();
        assert!(matches!(served.await.unwrap(), Err(FrameError::Malformed(_))));

        // An undecodable request inside a well-formed frame is answered, not fatal.
        let (client, served) = start(1024, Streams::default());
        let (mut r, mut w) = tokio::io::split(client);
        let mut out = Vec::new();
        out.extend_from_slice(&11u32.to_be_bytes());
        out.extend_from_slice(&42u64.to_be_bytes());
        out.extend_from_slice(&[0xff, 1, 2]);
        w.write_all(&out).await.unwrap();
        let (id, answer) = read_answer(&mut r, 1024).await.unwrap().unwrap();
        assert_eq!(id, 42);
        assert_eq!(answer.unwrap_err().code(), "bad_request");
        drop(w);
        drop(r);
        served.await.unwrap().unwrap();
    }
}
