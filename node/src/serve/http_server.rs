//! The client port's accept loop (HTTP/1.1 and HTTP/2, over TLS when configured). Like
//! `axum::serve`, plus:
//! - a deadline for reading HTTP/1 request heads: a client that trickles a request head
//!   (or sits idle between keep-alive requests) longer than the read timeout is
//!   disconnected (stalled bodies are cut by the router's body timeout);
//! - a cap on connections and on requests in flight per connection, beyond which
//!   requests are answered 503 `overloaded` instead of piling up.

use std::future::Future;
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use dynakv_http_api::ApiError;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::{debug, warn};

/// TCP keep-alive probes on accepted connections: first after a minute of silence, then
/// every 10 s; the kernel closes the connection after 9 unanswered ones.
const KEEPALIVE: socket2::TcpKeepalive = socket2::TcpKeepalive::new()
    .with_time(Duration::from_secs(60))
    .with_interval(Duration::from_secs(10));

/// What one client connection may take.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest pause while a client sends a request head.
    pub read_timeout: Duration,
    /// Connections served at once; one over it gets 503 `overloaded` and is closed.
    pub max_connections: usize,
    /// Requests in flight on one connection (HTTP/2); more get 503 `overloaded`.
    pub max_requests_per_connection: usize,
}

/// Connections over the cap that are still answered `503 overloaded` at once; beyond
/// these, new connections are closed without an answer (a flood cannot pile up tasks).
const OVERFLOW_ANSWERS: usize = 256;

/// Longest a TLS handshake on the client port may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` (over TLS with `tls`) until `shutdown` completes, then lets
/// requests in flight finish (closing idle connections at once) for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = auto::Builder::new(TokioExecutor::new());
    // half_close: a client that shuts its side down once it has sent its request still
    // gets the answer (by default the connection would be dropped at the client's FIN).
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout)
        .half_close(true);
    // Streams over the per-connection cap wait in the client rather than here.
    http.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_requests_per_connection as u32);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let overflow = Arc::new(Semaphore::new(OVERFLOW_ANSWERS));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Replies go out as soon as they are written (no Nagle delay on small responses).
        let _ = tcp.set_nodelay(true);
        let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&KEEPALIVE);
        // Over the cap: answered 503 (while few are), else closed at once.
        let (slot, over) = match slots.clone().try_acquire_owned() {
            Ok(s) => (s, false),
            Err(_) => match overflow.clone().try_acquire_owned() {
                Ok(s) => (s, true),
                Err(_) => continue,
            },
        };
        let in_flight = Arc::new(AtomicUsize::new(0));
        let cap = limits.max_requests_per_connection;
        let app = app.clone();
        let service = hyper::service::service_fn(move |req: axum::extract::Request<hyper::body::Incoming>| {
            let app = app.clone();
            let in_flight = in_flight.clone();
            async move {
                if over {
                    let mut resp = ApiError::Overloaded(
                        "this node serves its maximum number of connections; retry later or elsewhere".into(),
                    )
                    .into_response();
                    resp.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    return Ok::<_, std::convert::Infallible>(resp);
                }
                let guard = InFlight::enter(in_flight);
                if guard.count > cap {
                    return Ok(
                        ApiError::Overloaded(format!("more than {cap} requests in flight on this connection"))
                            .into_response(),
                    );
                }
                let resp = app.oneshot(req.map(axum::body::Body::new)).await;
                drop(guard);
                resp
            }
        });
        let http = http.clone();
        let tls = tls.clone();
        let watch = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            let result = match tls {
                Some(tls) => match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let conn = http.serve_connection(TokioIo::new(stream), service);
                        watch.watch(conn.into_owned()).await
                    }
                    Ok(Err(e)) => return debug!(error = %e, "TLS handshake failed"),
                    Err(_) => return debug!("TLS handshake timed out"),
                },
                None => {
                    let conn = http.serve_connection(TokioIo::new(tcp), service);
                    watch.watch(conn.into_owned()).await
                }
            };
            if let Err(e) = result {
                debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        warn!("requests still in flight after {grace:?}; stopping anyway");
    }
}

/// Counts a request in flight on its connection while it lives.
struct InFlight {
    counter: Arc<AtomicUsize>,
    count: usize,
}

impl InFlight {
    fn enter(counter: Arc<AtomicUsize>) -> InFlight {
        let count = counter.fetch_add(1, Ordering::AcqRel) + 1;
        InFlight { counter, count }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::AcqRel);
    }
}
