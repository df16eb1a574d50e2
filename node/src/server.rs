//! Starting and stopping a node: open storage, load identity, bind, gossip, serve.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dynakv_http_api::wire::ClusterId;
use dynakv_ring::{DetectorConfig, MemberInfo, Membership};
use tokio::net::TcpListener;
use tracing::info;

use crate::antientropy::AntiEntropy;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::coordinator::{Node, Settings};
use crate::identity;
use crate::replica::ReplicaStore;
use crate::rpc::Rpc;
use crate::storage::{RocksStore, StorageError, Store};

/// Longest wait at start for the wall clock to catch up with recorded timestamps (the
/// clock's recording block, plus a margin).
const MAX_CLOCK_WAIT_MS: u64 = 2_000;

/// Errors that stop a node from starting; each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error("invalid setting `data-dir` = {dir:?}: {source}")]
    Storage { dir: String, source: StorageError },
    #[error("invalid setting `listen` = \"{addr}\": cannot bind: {source}")]
    Bind { addr: String, source: std::io::Error },
}

/// Runs a node until `shutdown` resolves, then stops gossip, drains in-flight requests
/// and closes storage.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), StartError> {
    config.check_data_dir()?;
    let db_path = config.data_dir.join("db");
    let store: Arc<dyn Store> =
        Arc::new(
            RocksStore::open(&db_path, config.sync_writes).map_err(|source| StartError::Storage {
                dir: config.data_dir.display().to_string(),
                source,
            })?,
        );
    let me = identity::load_or_create(&*store, config.id.as_ref())?;
    let ceilings = identity::Ceilings::load(store.clone())?;
    // Timestamps issued before a quick restart may be ahead of the wall clock: wait a
    // moment for it to pass them rather than start the clock ahead of it.
    let lead_ms = ceilings.clock.recorded_ms().saturating_sub(crate::replica::wall_ms());
    if lead_ms > MAX_CLOCK_WAIT_MS {
        tracing::warn!(
            lead_ms,
            "the wall clock is behind timestamps this node issued before it restarted; \
             last-writer-wins timestamps continue past them"
        );
    } else if lead_ms > 0 {
        info!(
            lead_ms,
            "waiting for the wall clock to pass timestamps issued before the restart"
        );
        tokio::time::sleep(Duration::from_millis(lead_ms + 1)).await;
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen.to_string(),
            source,
        })?;

    let membership = Membership::new(
        MemberInfo {
            id: me.id.clone(),
            addr: config.advertise.clone(),
            generation: me.generation,
            heartbeat: 0,
            tokens: config.tokens,
            left: false,
            oldest_hint_ms: None,
        },
        config.seeds.clone(),
        DetectorConfig {
            suspect_after_ms: config.suspect_after.as_millis() as u64,
            dead_after_ms: config.dead_after.as_millis() as u64,
        },
        0,
    );
    let cluster = Cluster::new(
        ClusterId {
            name: config.cluster_name.clone(),
            partition_bits: config.partition_bits,
            n: config.n as u32,
            conflict: config.conflict,
        },
        config.n,
        membership,
    );
    let settings = Settings {
        n: config.n,
        r: config.r,
        w: config.w,
        mode: config.conflict,
        request_timeout: config.request_timeout,
        max_value_bytes: config.max_value_bytes,
        max_siblings: config.max_siblings,
        read_timeout: config.read_timeout,
        sloppy_quorum: config.sloppy_quorum,
    };
    let replicas = ReplicaStore::open(store, config.partition_bits).map_err(|source| StartError::Storage {
        dir: config.data_dir.display().to_string(),
        source,
    })?;
    let antientropy = AntiEntropy::new(config.anti_entropy_interval, config.anti_entropy_keys_per_sec);
    let node = Node::new(
        me.clone(),
        settings,
        replicas,
        cluster,
        Rpc::new(),
        antientropy,
        ceilings,
    );

    info!(
        id = %me.id,
        listen = %config.listen,
        advertise = %config.advertise,
        data_dir = %config.data_dir.display(),
        generation = me.generation,
        n = config.n, r = config.r, w = config.w,
        conflict = %config.conflict,
        "dynakv node serving"
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks = [
        tokio::spawn(crate::gossip::run(
            node.clone(),
            config.gossip_interval,
            stop_rx.clone(),
        )),
        tokio::spawn(crate::antientropy::run(node.clone(), stop_rx.clone())),
        tokio::spawn(crate::handoff::run(
            node.clone(),
            config.handoff_interval,
            stop_rx.clone(),
        )),
        tokio::spawn(crate::tombstones::run(node.clone(), config.tombstone_grace, stop_rx)),
    ];
    let streams = dynakv_http_api::stream::Streams::default();
    let app = dynakv_http_api::router(node.clone(), streams.clone());
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
    for t in tasks {
        let _ = t.await;
    }
    if let Err(e) = node.settle_clock() {
        tracing::warn!(error = %e, "cannot record the clock's bound; the next start may wait up to a second");
    }
    info!("stopped");
    Ok(())
}
