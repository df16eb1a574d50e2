//! The frames nodes exchange on the cluster port (after TLS and the handshake, see
//! [`super::port`]), and the serving side; [`super::link`] and [`super::net`] are the
//! client sides.
//!
//! - request: `u32` length of what follows, `u64` frame id, then the requests as
//!   [`message::encode`] encodes a `Vec<Request>`;
//! - answer: `u32` length of what follows, `u64` the frame's id, a `u8` kind, then
//!   (kind 0) one `Result<Answer, WireError>` per request, in order, encoded the same
//!   way, or (kind 1) one [`WireError`] for the whole frame (it could not be decoded).
//!
//! A length over the node's frame limit ends the connection before anything is
//! allocated for it, and a frame's buffer grows only as its bytes arrive.
//!
//! The serving side handles a connection's frames one after another and answers in
//! order, writing the answers together once no further whole frame has arrived. The
//! replica stream (one long-lived connection per pair of nodes) pipelines batches of
//! small requests this way; larger ones go one per pooled connection.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::FutureExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{Notify, watch};

use super::Handler;
use super::message::{self, Answer, Request, WIRE_VERSION, WireError};

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

    /// Stops every stream (and any opened later) after the frame it is handling, and
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
/// A frame's body is read into a buffer of at most this much to begin with.
const READ_CHUNK: usize = 64 << 10;

/// Answer kinds.
const ANSWER_ITEMS: u8 = 0;
const ANSWER_FRAME_ERROR: u8 = 1;

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

/// Writes `items` as [`message::encode`] would write the whole `Vec`, returning each
/// item's encoded size (postcard encodes a sequence as its length, then the items).
fn encode_items<T: Serialize>(out: &mut Vec<u8>, items: &[T]) -> Vec<usize> {
    out.push(WIRE_VERSION);
    postcard::to_io(&items.len(), &mut *out).expect("writing to a Vec cannot fail");
    items
        .iter()
        .map(|item| {
            let before = out.len();
            postcard::to_io(item, &mut *out).expect("writing to a Vec cannot fail");
            out.len() - before
        })
        .collect()
}

/// Reads what [`encode_items`] wrote: each item and its encoded size.
fn decode_items<T: DeserializeOwned>(bytes: &[u8]) -> Result<Vec<(T, usize)>, WireError> {
    let undecodable = |e: postcard::Error| WireError::bad_request(format!("undecodable message: {e}"));
    let rest = match bytes.split_first() {
        Some((&WIRE_VERSION, rest)) => rest,
        Some((v, _)) => {
            return Err(WireError::bad_request(format!(
                "wire version {v} is not supported (this node speaks {WIRE_VERSION})"
            )));
        }
        None => return Err(WireError::bad_request("empty message")),
    };
    let (count, mut rest) = postcard::take_from_bytes::<usize>(rest).map_err(undecodable)?;
    // Each item takes at least a byte: a count beyond that is a lie, not an allocation.
    if count > rest.len() {
        return Err(WireError::bad_request(format!(
            "a frame claims {count} items in {} bytes",
            rest.len()
        )));
    }
    let mut items = Vec::with_capacity(count);
    for _ in 0..count {
        let (item, after) = postcard::take_from_bytes::<T>(rest).map_err(undecodable)?;
        items.push((item, rest.len() - after.len()));
        rest = after;
    }
    if !rest.is_empty() {
        return Err(WireError::bad_request(format!(
            "{} bytes after the last item",
            rest.len()
        )));
    }
    Ok(items)
}

/// Appends a request frame carrying `reqs` to `out`; returns each request's encoded size.
pub fn encode_request(out: &mut Vec<u8>, id: u64, reqs: &[Request]) -> Vec<usize> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&id.to_be_bytes());
    let sizes = encode_items(out, reqs);
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    sizes
}

/// Appends an answer frame to `out`.
pub fn encode_answer(out: &mut Vec<u8>, id: u64, answer: &Result<Vec<Result<Answer, WireError>>, WireError>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&id.to_be_bytes());
    match answer {
        Ok(items) => {
            out.push(ANSWER_ITEMS);
            encode_items(out, items);
        }
        Err(e) => {
            out.push(ANSWER_FRAME_ERROR);
            out.extend_from_slice(&message::encode(e));
        }
    }
    if out.len() - start - 4 > MAX_FRAME {
        // A frame's length must fit its u32 prefix: refuse the answer rather than wrap.
        out.truncate(start);
        let e = WireError::internal("an answer too large for one frame");
        return encode_answer(out, id, &Err(e));
    }
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
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
    // Memory grows with the bytes that actually arrive, not with what the prefix claims.
    let want = len - 8;
    if want <= READ_CHUNK {
        // Most frames: one exact buffer.
        let mut body = vec![0; want];
        r.read_exact(&mut body).await?;
        return Ok(Some((id, body)));
    }
    let mut body = Vec::with_capacity(READ_CHUNK);
    let got = (&mut *r).take(want as u64).read_to_end(&mut body).await?;
    if got < want {
        return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(Some((id, body)))
}

/// A request frame as read: its id, and its requests (or why they could not be decoded).
pub type RequestFrame = (u64, Result<Vec<Request>, WireError>);

/// Reads one request frame. `None` at a clean end of the stream.
pub async fn read_request<R: AsyncRead + Unpin>(r: &mut R, limit: usize) -> Result<Option<RequestFrame>, FrameError> {
    Ok(read_frame(r, limit).await?.map(|(id, body)| {
        let reqs = decode_items::<Request>(&body).map(|items| items.into_iter().map(|(r, _)| r).collect());
        (id, reqs)
    }))
}

/// One request's answer as read, with its encoded size.
pub type AnswerItem = (Result<Answer, WireError>, usize);

/// Reads one answer frame. `None` at a clean end of the stream.
pub async fn read_answer<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: usize,
) -> Result<Option<(u64, Result<Vec<AnswerItem>, WireError>)>, FrameError> {
    let Some((id, body)) = read_frame(r, limit).await? else {
        return Ok(None);
    };
    let Some((&kind, msg)) = body.split_first() else {
        return Err(FrameError::Malformed("an answer without a kind".into()));
    };
    let answer = match kind {
        ANSWER_ITEMS => {
            Ok(decode_items::<Result<Answer, WireError>>(msg).map_err(|e| FrameError::Malformed(e.to_string()))?)
        }
        ANSWER_FRAME_ERROR => Err(message::decode::<WireError>(msg).map_err(|e| FrameError::Malformed(e.to_string()))?),
        other => return Err(FrameError::Malformed(format!("unknown answer kind {other}"))),
    };
    Ok(Some((id, answer)))
}

/// Serves one stream until the peer closes it or it breaks: frames in order, answers
/// in order, written together whenever no more frames are waiting.
pub async fn serve<H, IO>(handler: Arc<H>, io: IO, limit: usize, streams: Streams) -> Result<(), FrameError>
where
    H: Handler,
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (r, w) = tokio::io::split(io);
    serve_split(handler, r, w, limit, streams).await
}

/// [`serve`] on a connection already split into its two directions.
pub async fn serve_split<H, R, W>(
    handler: Arc<H>,
    r: R,
    mut w: W,
    limit: usize,
    streams: Streams,
) -> Result<(), FrameError>
where
    H: Handler,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let _active = streams.enter();
    let mut stop = streams.stop.subscribe();
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
            biased;
            _ = stop.changed() => continue,
            next = read_request(&mut r, limit) => next?,
        };
        let Some((id, reqs)) = next else {
            return Ok(());
        };
        let answer = match reqs {
            // A handler that panics fails its frame, as the HTTP routes fail their
            // request, instead of ending the stream and every frame queued behind it.
            Ok(reqs) => AssertUnwindSafe(handler.handle_batch(reqs))
                .catch_unwind()
                .await
                .map_err(|_| {
                    tracing::error!("replica request handler panicked");
                    WireError::internal("the request handler crashed; this is a bug")
                }),
            Err(e) => Err(e),
        };
        encode_answer(&mut out, id, &answer);
        if !holds_a_frame(r.buffer()) {
            w.write_all(&out).await?;
            w.flush().await?;
            out.clear();
        }
    }
}

/// Whether `buf` starts with a whole frame (answering it can go out with the answers so
/// far; waiting for the rest of a partial one could hold them up).
fn holds_a_frame(buf: &[u8]) -> bool {
    buf.len() >= 4 && buf.len() - 4 >= u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize
}

#[cfg(test)]
mod tests {
    use super::super::message::Call;
    use super::super::message::{Get, GetBatch, Merge};
    use super::*;

    /// Answers gets with "not found", panics on a batch read, refuses anything else.
    struct Fake;

    impl Handler for Fake {
        async fn handle(&self, req: Request) -> Result<Answer, WireError> {
            match req {
                Request::Get(_) => Ok(Answer::Get(None)),
                Request::GetBatch(_) => panic!("a bug in a handler"),
                _ => Err(WireError::bad_request("only gets")),
            }
        }

        async fn handle_batch(&self, reqs: Vec<Request>) -> Vec<Result<Answer, WireError>> {
            let mut out = Vec::new();
            for r in reqs {
                out.push(self.handle(r).await);
            }
            out
        }
    }

    type Served = tokio::task::JoinHandle<Result<(), FrameError>>;

    /// A stream served by `Fake` with frames up to `limit`: the client's end and the server.
    fn start(limit: usize, streams: Streams) -> (tokio::io::DuplexStream, Served) {
        let (client, server) = tokio::io::duplex(1 << 16);
        (client, tokio::spawn(serve(Arc::new(Fake), server, limit, streams)))
    }

    fn gets(n: usize) -> Vec<Request> {
        (0..n).map(|k| Get::of(format!("k{k}")).wrap()).collect()
    }

    #[test]
    fn items_are_encoded_as_the_whole_vec_would_be_and_sizes_add_up() {
        let reqs = gets(3);
        let mut out = Vec::new();
        let sizes = encode_items(&mut out, &reqs);
        assert_eq!(out, message::encode(&reqs));
        let back = decode_items::<Request>(&out).unwrap();
        assert_eq!(back.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>(), reqs);
        assert_eq!(back.iter().map(|(_, s)| *s).collect::<Vec<_>>(), sizes);
        // A count no body could hold is refused before anything is allocated for it.
        let mut lie = vec![WIRE_VERSION];
        postcard::to_io(&(1usize << 40), &mut lie).unwrap();
        assert_eq!(decode_items::<Request>(&lie).unwrap_err().code(), "bad_request");
        // Trailing bytes are an error, not ignored.
        out.push(0);
        assert_eq!(decode_items::<Request>(&out).unwrap_err().code(), "bad_request");
    }

    #[tokio::test]
    async fn pipelined_frames_are_answered_in_order_with_their_ids() {
        let (client, served) = start(1 << 20, Streams::default());
        let (mut r, mut w) = tokio::io::split(client);
        let mut out = Vec::new();
        for id in [7u64, 3, 99] {
            encode_request(&mut out, id, &gets(id as usize % 4 + 1));
        }
        encode_request(&mut out, 5, &gets(1));
        w.write_all(&out).await.unwrap();
        for (id, n) in [(7u64, 4usize), (3, 4), (99, 4), (5, 1)] {
            let (got, answer) = read_answer(&mut r, 1 << 20).await.unwrap().unwrap();
            assert_eq!(got, id);
            let items = answer.unwrap();
            assert_eq!(items.len(), n);
            assert!(items.iter().all(|(a, size)| *a == Ok(Answer::Get(None)) && *size > 0));
        }
        // A request the handler refuses fails alone; one whose handler panics fails its
        // frame; the stream goes on either way.
        let mut out = Vec::new();
        let merge = Merge {
            key: "k".into(),
            register: dynakv_crdt::Register::Mv(Default::default()),
            layout: 1,
        };
        encode_request(&mut out, 6, &[Get::of("a").wrap(), merge.wrap()]);
        encode_request(&mut out, 8, &[GetBatch { keys: vec![] }.wrap()]);
        encode_request(&mut out, 9, &gets(1));
        w.write_all(&out).await.unwrap();
        let (got, answer) = read_answer(&mut r, 1 << 20).await.unwrap().unwrap();
        let items = answer.unwrap();
        assert_eq!((got, items.len()), (6, 2));
        assert_eq!(items[0].0, Ok(Answer::Get(None)));
        assert_eq!(items[1].0.as_ref().unwrap_err().code, "bad_request");
        let (got, answer) = read_answer(&mut r, 1 << 20).await.unwrap().unwrap();
        assert_eq!((got, answer.unwrap_err().code()), (8, "internal"));
        assert_eq!(read_answer(&mut r, 1 << 20).await.unwrap().unwrap().0, 9);
        drop(w);
        drop(r);
        served.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn an_answer_is_not_held_back_by_a_partly_arrived_next_frame() {
        let (client, served) = start(1 << 20, Streams::default());
        let (mut r, mut w) = tokio::io::split(client);
        let mut out = Vec::new();
        encode_request(&mut out, 1, &gets(1));
        let first = out.len();
        encode_request(&mut out, 2, &gets(1));
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
        encode_request(&mut out, 1, &gets(1));
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

        // An undecodable frame is answered with an error for the whole frame, not fatal.
        let (client, served) = start(1024, Streams::default());
        let (mut r, mut w) = tokio::io::split(client);
        let mut out = Vec::new();
        out.extend_from_slice(&11u32.to_be_bytes());
        out.extend_from_slice(&42u64.to_be_bytes());
        out.extend_from_slice(&[WIRE_VERSION, 0xff, 1]);
        w.write_all(&out).await.unwrap();
        let (id, answer) = read_answer(&mut r, 1024).await.unwrap().unwrap();
        assert_eq!(id, 42);
        assert_eq!(answer.unwrap_err().code(), "bad_request");
        drop(w);
        drop(r);
        served.await.unwrap().unwrap();
    }
}
