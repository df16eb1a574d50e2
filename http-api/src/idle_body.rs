//! A request body that fails once no data has arrived for a while, so a client that
//! declares a body and stops sending cannot hold its request open.
//!
//! Unlike a timer started for every frame, this touches the timer only when the body is
//! actually waiting for the network: a body that is already buffered (nearly every
//! request) costs nothing extra.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::Sleep;

/// The error a stalled body ends with.
#[derive(Debug, thiserror::Error)]
#[error("no part of the request body arrived for {0:?}")]
pub struct BodyStalled(pub Duration);

pub struct IdleTimeoutBody {
    inner: Body,
    timeout: Duration,
    /// Armed while the body waits for data; dropped whenever a frame arrives.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl IdleTimeoutBody {
    pub fn new(inner: Body, timeout: Duration) -> Self {
        IdleTimeoutBody {
            inner,
            timeout,
            sleep: None,
        }
    }
}

impl http_body::Body for IdleTimeoutBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.sleep = None;
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyStalled(timeout))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn caused_by_stall(e: &axum::Error) -> bool {
        std::error::Error::source(e).is_some_and(|s| s.is::<BodyStalled>())
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_arriving_fails_after_the_timeout() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
        let stream = tokio_stream_from(rx);
        let body = IdleTimeoutBody::new(Body::new(stream), Duration::from_secs(5));
        tx.send(Ok(Frame::data(Bytes::from_static(b"abc")))).await.unwrap();
        let sender = tokio::spawn(async move {
            // Progress every 4 s keeps the body alive; then it stalls with `tx` still open.
            tokio::time::sleep(Duration::from_secs(4)).await;
            tx.send(Ok(Frame::data(Bytes::from_static(b"def")))).await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(tx);
        });
        let start = tokio::time::Instant::now();
        let err = body.collect().await.unwrap_err();
        assert!(caused_by_stall(&err), "{err}");
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(9),
            "4 s of progress, then 5 s of silence"
        );
        sender.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_complete_body_is_read_whole() {
        let body = IdleTimeoutBody::new(Body::from("hello"), Duration::from_millis(1));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
    }

    /// A body fed from a channel, without pulling in a streams crate.
    fn tokio_stream_from(
        rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>,
    ) -> impl http_body::Body<Data = Bytes, Error = std::io::Error> + Send + 'static {
        struct Chan(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>);
        impl http_body::Body for Chan {
            type Data = Bytes;
            type Error = std::io::Error;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
                self.0.poll_recv(cx)
            }
        }
        Chan(rx)
    }
}
