//! The HTTP accept loop (HTTP/1.1 with upgrades to the replica stream, and HTTP/2
//! without TLS). Like `axum::serve`,
//! plus a deadline for reading HTTP/1 request headers: a client that opens a connection and trickles a request head (or sits idle
//! between keep-alive requests) longer than the read timeout is disconnected, so slow
//! or stalled clients cannot pin connections and tasks forever. (Stalled bodies are cut
//! by the router's body timeout.)

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tracing::{debug, warn};

/// TCP keep-alive probes on accepted connections: first after a minute of silence, then
/// every 10 s; the kernel closes the connection after 9 unanswered ones.
const KEEPALIVE: socket2::TcpKeepalive = socket2::TcpKeepalive::new()
    .with_time(Duration::from_secs(60))
    .with_interval(Duration::from_secs(10));

/// Serves `app` on `listener` until `shutdown` completes, then lets requests in flight
/// finish (closing idle connections at once) for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    read_timeout: Duration,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1().timer(TokioTimer::new()).header_read_timeout(read_timeout);
    let graceful = GracefulShutdown::new();
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
        // A peer that vanishes without closing (power loss, a partition that lasts) would
        // otherwise hold its replica stream's task and socket here forever.
        let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&KEEPALIVE);
        let conn = http
            .serve_connection_with_upgrades(TokioIo::new(tcp), TowerToHyperService::new(app.clone()))
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        warn!("requests still in flight after {grace:?}; stopping anyway");
    }
}
