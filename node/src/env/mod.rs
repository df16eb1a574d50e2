//! Layer 0, the environment: what a node reads from and does to the world below the
//! protocol. Wall and monotonic time ([`clock`]), the byte-level store with its RocksDB
//! and in-memory engines ([`storage`]), TLS configuration and certificates ([`tls`]), the
//! metrics registry every layer records into ([`metrics`]), and the stop signal.

pub mod clock;
pub mod metrics;
pub mod storage;
pub mod tls;

/// A future that resolves on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed when
/// this is called, not when the future is first polled, so a signal that arrives while
/// the caller is still starting up is not lost (nor does it kill the process).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
}
