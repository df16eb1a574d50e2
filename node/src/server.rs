//! Serving a node for real: RocksDB in the data directory, the network transport, the
//! system clock, HTTP on an already-bound listener; and stopping it cleanly.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::info;

use crate::clock::SystemClock;
use crate::config::Config;
use crate::local::{Env, TokioSpawn};
use crate::node::Node;
pub use crate::node::StartError;
use crate::storage::{RocksStore, Store};
use crate::transport::net::NetTransport;
use crate::transport::stream::Streams;

/// Binds the configured listen address (a separate step, so that callers that must
/// know the port first, such as tests, can bind themselves and call [`run`]).
pub async fn bind(config: &Config) -> Result<TcpListener, StartError> {
    TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen.to_string(),
            source,
        })
}

/// Runs a node serving on `listener` until `shutdown` resolves, then stops gossip,
/// drains in-flight requests and closes storage.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    config.check_data_dir()?;
    let db_path = config.data_dir.join("db");
    let store: Arc<dyn Store> =
        Arc::new(
            RocksStore::open(&db_path, config.sync_writes).map_err(|source| StartError::Storage {
                dir: config.data_dir.display().to_string(),
                source,
            })?,
        );
    let env = Env {
        transport: Arc::new(NetTransport::new()),
        clock: Arc::new(SystemClock::new()),
        spawner: Arc::new(TokioSpawn),
        seed: rand::random(),
    };
    let node = Arc::new(Node::open(&config, store, env).await?);
    let local = &node.local;
    info!(
        id = %local.id(),
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        advertise = %config.advertise,
        data_dir = %config.data_dir.display(),
        generation = local.identity.generation,
        n = config.n, r = config.r, w = config.w,
        conflict = %config.conflict,
        "dynakv node serving"
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let services = {
        let node = node.clone();
        tokio::spawn(async move { node.run_services(stop_rx).await })
    };
    let streams = Streams::default();
    let limit = crate::transport::http::body_limit(config.max_value_bytes, config.n, config.max_siblings);
    let internal = crate::transport::http::routes(node.peer.clone(), limit, streams.clone());
    let app = dynakv_http_api::router(node.coordinator.clone(), node.admin.clone(), internal);
    // Requests in flight at shutdown may finish: each is bounded by the request timeout
    // (and its body by the read timeout).
    let grace = config.request_timeout.max(Duration::from_secs(5));
    crate::http_server::serve(listener, app, config.read_timeout, grace, async move {
        shutdown.await;
        info!("shutting down");
    })
    .await;
    // Upgraded connections (replica streams) are no longer requests the HTTP server waits
    // for: stop them too, so that nothing is merged after the clock's bound is settled.
    let left = streams.close(grace).await;
    if left > 0 {
        tracing::warn!("{left} replica streams still running after {grace:?}; stopping anyway");
    }
    let _ = stop_tx.send(true);
    let _ = services.await;
    if let Err(e) = node.local.settle_clock() {
        tracing::warn!(error = %e, "cannot record the clock's bound; the next start may wait up to a second");
    }
    info!("stopped");
    Ok(())
}
