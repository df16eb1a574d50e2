//! A lean HTTP/1.1 client connection for the load tool: the request is written and the
//! answer read by the task that sends it, with no connection task to hand each request
//! to and each answer back from (what a general client like hyper's does). On a machine
//! the tool shares with the store it measures, those hand-offs and the wake-ups they
//! cost are CPU taken from the store.
//!
//! Enough of HTTP/1.1 for the stores the tool drives: keep-alive, bodies framed by
//! `Content-Length` or chunked, or ending with the connection; no pipelining, no
//! upgrades, no trailers kept.

use bytes::{Buf, Bytes, BytesMut};
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Headers an answer may carry (more is an error).
const MAX_HEADERS: usize = 64;
/// Largest head (status line and headers) read.
const MAX_HEAD: usize = 64 << 10;
/// Largest body read: the tool reads small values, this bounds a broken server.
const MAX_BODY: usize = 64 << 20;

/// A connection's byte stream: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Why an exchange failed. The connection is not to be used again after any of them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server closed the connection before answering in full")]
    Closed,
    #[error("malformed answer: {0}")]
    Malformed(String),
    #[error("answer over the size limit")]
    TooLarge,
}

/// A finished exchange.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The `X-Dynakv-Context` header, where there was one.
    pub context: Option<String>,
    pub body: Bytes,
}

/// One keep-alive connection: one request at a time.
pub struct Conn {
    io: Box<dyn Io>,
    /// Bytes read and not yet used.
    buf: BytesMut,
    /// The request being written (kept to reuse its allocation).
    out: Vec<u8>,
    /// False once the server said it will close, or an exchange failed.
    reusable: bool,
}

/// How an answer's body ends.
enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

impl Conn {
    pub fn new(io: Box<dyn Io>) -> Conn {
        Conn {
            io,
            buf: BytesMut::with_capacity(8 << 10),
            out: Vec::with_capacity(512),
            reusable: true,
        }
    }

    /// Whether another request may be sent on this connection.
    pub fn is_reusable(&self) -> bool {
        self.reusable
    }

    /// Whether the server has closed this idle connection (or sent something unasked),
    /// seen without waiting: a read that would block means it is still open. Costs a
    /// system call, so callers check only connections that sat idle for a while.
    pub fn closed_while_idle(&mut self) -> bool {
        if !self.reusable {
            return true;
        }
        match self.io.read_buf(&mut self.buf).now_or_never() {
            // Nothing to read: still open.
            None => false,
            // The end of the stream, bytes nobody asked for, or an error.
            Some(_) => {
                self.reusable = false;
                true
            }
        }
    }

    /// Sends one request and reads its answer. `headers` are sent as given, after `Host`
    /// and before `Content-Length`.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        host: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, Error> {
        if !self.reusable {
            return Err(Error::Closed);
        }
        // Not reusable until the whole answer has been read.
        self.reusable = false;
        self.out.clear();
        for part in [method, " ", path, " HTTP/1.1\r\nhost: ", host, "\r\n"] {
            self.out.extend_from_slice(part.as_bytes());
        }
        for (name, value) in headers {
            for part in [*name, ": ", *value, "\r\n"] {
                self.out.extend_from_slice(part.as_bytes());
            }
        }
        if !body.is_empty() || !matches!(method, "GET" | "HEAD" | "DELETE") {
            self.out
                .extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
        }
        self.out.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(body);
        self.io.write_all(&self.out).await?;
        // TLS may hold the last record back until flushed (plain TCP does nothing here).
        self.io.flush().await?;
        loop {
            let (status, context, framing, close) = self.read_head(method == "HEAD").await?;
            // An interim answer (100 Continue and the like): the real one follows.
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            let body = self.read_body(framing).await?;
            if !self.buf.is_empty() {
                // Bytes beyond the answer: the framing was misread or the server is broken.
                return Err(Error::Malformed("bytes after the answer".into()));
            }
            // After 101 the bytes are another protocol's (the tool never asks for one).
            self.reusable = !close && status != 101;
            return Ok(Response { status, context, body });
        }
    }

    /// Reads more bytes into the buffer; `Closed` at the end of the stream.
    async fn fill(&mut self) -> Result<(), Error> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(8 << 10);
        }
        match self.io.read_buf(&mut self.buf).await? {
            0 => Err(Error::Closed),
            _ => Ok(()),
        }
    }

    /// Reads more bytes while the buffer, still short of what is wanted, holds at most
    /// `limit`: a head, a chunk-size line or trailers that long is a broken server.
    async fn fill_within(&mut self, limit: usize) -> Result<(), Error> {
        if self.buf.len() > limit {
            return Err(Error::TooLarge);
        }
        self.fill().await
    }

    /// Reads the status line and headers: status, context header, how the body is
    /// framed, and whether the server will close the connection after it.
    async fn read_head(&mut self, head_request: bool) -> Result<(u16, Option<String>, Framing, bool), Error> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = resp.code.unwrap_or(0);
                    let mut context = None;
                    let mut length = None;
                    let mut chunked = false;
                    let mut close = resp.version == Some(0);
                    for h in resp.headers.iter() {
                        let value = std::str::from_utf8(h.value)
                            .map_err(|_| Error::Malformed(format!("header {} is not text", h.name)))?
                            .trim();
                        if h.name.eq_ignore_ascii_case("content-length") {
                            let n: usize = value
                                .parse()
                                .map_err(|_| Error::Malformed(format!("content-length {value:?}")))?;
                            if length.is_some_and(|l| l != n) {
                                return Err(Error::Malformed("two different content-lengths".into()));
                            }
                            length = Some(n);
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked = value
                                .rsplit(',')
                                .next()
                                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            let mut tokens = value.split(',').map(str::trim);
                            if tokens.clone().any(|t| t.eq_ignore_ascii_case("close")) {
                                close = true;
                            } else if tokens.any(|t| t.eq_ignore_ascii_case("keep-alive")) {
                                close = false;
                            }
                        } else if h.name.eq_ignore_ascii_case("x-dynakv-context") {
                            context = Some(value.to_string());
                        }
                    }
                    let framing = if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
                        Framing::None
                    } else if chunked {
                        Framing::Chunked
                    } else if let Some(n) = length {
                        if n > MAX_BODY {
                            return Err(Error::TooLarge);
                        }
                        Framing::Length(n)
                    } else {
                        close = true;
                        Framing::UntilClose
                    };
                    self.buf.advance(len);
                    return Ok((status, context, framing, close));
                }
                Ok(httparse::Status::Partial) => self.fill_within(MAX_HEAD).await?,
                Err(e) => return Err(Error::Malformed(e.to_string())),
            }
        }
    }

    async fn read_body(&mut self, framing: Framing) -> Result<Bytes, Error> {
        match framing {
            Framing::None => Ok(Bytes::new()),
            Framing::Length(n) => {
                while self.buf.len() < n {
                    self.fill().await?;
                }
                Ok(self.buf.split_to(n).freeze())
            }
            Framing::UntilClose => {
                loop {
                    if self.buf.len() > MAX_BODY {
                        return Err(Error::TooLarge);
                    }
                    match self.fill().await {
                        Ok(()) => {}
                        Err(Error::Closed) => break,
                        Err(e) => return Err(e),
                    }
                }
                Ok(self.buf.split().freeze())
            }
            Framing::Chunked => self.read_chunked().await,
        }
    }

    /// A chunked body: chunks until the empty one, then any trailers (not kept).
    async fn read_chunked(&mut self) -> Result<Bytes, Error> {
        let mut body = BytesMut::new();
        loop {
            let size = self.chunk_size().await?;
            if size == 0 {
                self.skip_trailers().await?;
                return Ok(body.freeze());
            }
            if body.len() + size > MAX_BODY {
                return Err(Error::TooLarge);
            }
            while self.buf.len() < size + 2 {
                self.fill().await?;
            }
            body.extend_from_slice(&self.buf[..size]);
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err(Error::Malformed("a chunk not ended by CRLF".into()));
            }
            self.buf.advance(size + 2);
        }
    }

    /// The next chunk-size line, read and consumed.
    async fn chunk_size(&mut self) -> Result<usize, Error> {
        loop {
            match httparse::parse_chunk_size(&self.buf) {
                Ok(httparse::Status::Complete((len, size))) => {
                    self.buf.advance(len);
                    return usize::try_from(size).map_err(|_| Error::TooLarge);
                }
                Ok(httparse::Status::Partial) => self.fill_within(MAX_HEAD).await?,
                Err(_) => return Err(Error::Malformed("a bad chunk size".into())),
            }
        }
    }

    /// Trailer lines, if any, up to the empty line that ends a chunked body.
    async fn skip_trailers(&mut self) -> Result<(), Error> {
        loop {
            match find_line(&self.buf) {
                Some(0) => {
                    self.buf.advance(2);
                    return Ok(());
                }
                Some(len) => self.buf.advance(len + 2),
                None => self.fill_within(MAX_HEAD).await?,
            }
        }
    }
}

/// The length of the first line in `buf` (without its CRLF), if a whole one is there.
fn find_line(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}
