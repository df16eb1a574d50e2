//! A node assembled from its roles: the shared [`Local`] context, the client
//! [`Coordinator`], the [`PeerHandler`], the [`Admin`] views and the background
//! services. [`Node::open`] builds one over any storage engine and any [`Env`] (the real
//! network and clocks, or the simulator's); [`crate::serve::server`] serves the coordinator and
//! the admin views over HTTP, and the peer handler over the node-to-node transport.

use std::sync::Arc;
use std::time::Duration;

use dynakv_ring::{DetectorConfig, MemberInfo, Membership};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::watch;
use tracing::info;

use crate::admin::Admin;
use crate::config::Config;
use crate::env::storage::{StorageError, Store};
use crate::local::{Env, Local, Settings};
use crate::roles::coordinator::Coordinator;
use crate::roles::peer::PeerHandler;
use crate::roles::services::antientropy::AntiEntropy;
use crate::roles::services::gossip::Gossip;
use crate::roles::services::handoff::Handoff;
use crate::roles::services::layout::{LayoutService, LayoutSettings};
use crate::roles::services::tombstones::Tombstones;
use crate::roles::services::{self, Services};
use crate::state::catalog::Catalog;
use crate::state::cluster::{Cluster, ClusterId};
use crate::state::identity::{self, Ceilings};
use crate::state::replica::ReplicaStore;

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
    #[error("the stored cluster layout does not fit this node's settings ({0}); check --partition-bits and --tokens")]
    Layout(String),
    #[error("invalid setting `{setting}` = \"{addr}\": cannot bind: {source}")]
    Bind {
        setting: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("invalid setting {0}")]
    Security(String),
    #[error("cannot start the storage commit thread: {0}")]
    CommitThread(std::io::Error),
}

pub struct Node {
    pub local: Arc<Local>,
    pub coordinator: Arc<Coordinator>,
    pub peer: Arc<PeerHandler>,
    pub admin: Arc<Admin>,
    pub services: Services,
}

impl Node {
    /// Opens a node over `store`: loads (or creates) its identity and clock records,
    /// rebuilds its Merkle trees, and joins the cluster's view through `config`'s seeds.
    /// Nothing runs until [`Node::run_services`] and a server start.
    pub async fn open(config: &Config, store: Arc<dyn Store>, env: Env) -> Result<Node, StartError> {
        let storage_error = |source| StartError::Storage {
            dir: config.data_dir.display().to_string(),
            source,
        };
        let mut rng = StdRng::seed_from_u64(env.seed);
        let me = identity::load_or_create(&*store, config.id.as_ref(), config.sync_writes, &mut rng)?;
        if me.actor_renewed {
            tracing::warn!(
                generation = me.generation,
                "the last stop was not clean and writes are not synced (--sync-writes): this node mints versions under \
                 a new actor id, so that none it handed out before can be reused"
            );
        }
        let Ceilings { mint, clock: ceiling } = Ceilings::load(store.clone())?;
        // Timestamps issued before a quick restart may be ahead of the wall clock: wait a
        // moment for it to pass them rather than start the clock ahead of it.
        let lead_ms = ceiling.recorded_ms().saturating_sub(env.clock.wall_ms());
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
        let membership = Membership::new(
            MemberInfo {
                id: me.id.clone(),
                addr: config.cluster_advertise.clone(),
                api: config.advertise.clone(),
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
                gossip_interval_ms: config.gossip_interval.as_millis() as u64,
            },
            env.clock.monotonic_ms(),
        );
        let history = crate::state::cluster::load_layout(&*store).map_err(storage_error)?;
        let seen = crate::state::cluster::load_seen(&*store).map_err(storage_error)?;
        let cluster = Cluster::new(
            ClusterId {
                name: config.cluster_name.clone(),
                partition_bits: config.partition_bits,
                n: config.n as u32,
                conflict: config.conflict,
            },
            config.n,
            membership,
            history,
            seen,
            store.clone(),
            env.clock.clone(),
        )
        .map_err(|e| StartError::Layout(e.to_string()))?;
        let settings = Settings {
            n: config.n,
            r: config.r,
            w: config.w,
            pr: config.pr,
            pw: config.pw,
            mode: config.conflict,
            request_timeout: config.request_timeout,
            max_value_bytes: config.max_value_bytes,
            max_siblings: config.max_siblings,
            read_timeout: config.read_timeout,
            sloppy_quorum: config.sloppy_quorum,
            read_speculate: config.read_speculate,
            metrics: config.metrics,
        };
        let catalog = Catalog::load(me.id.clone(), store.clone()).map_err(storage_error)?;
        let replicas = ReplicaStore::open(store, config.partition_bits, env.clock.clone()).map_err(storage_error)?;
        let local = Arc::new(
            Local::new(me, settings, (cluster, catalog), replicas, ceiling, env).map_err(StartError::CommitThread)?,
        );
        let coordinator = Arc::new(Coordinator::new(local.clone(), mint));
        let services = Services {
            gossip: Arc::new(Gossip::new(local.clone(), config.gossip_interval)),
            antientropy: Arc::new(AntiEntropy::new(
                local.clone(),
                config.anti_entropy_interval,
                config.anti_entropy_keys_per_sec,
            )),
            handoff: Arc::new(Handoff::new(
                local.clone(),
                config.handoff_interval,
                config.tombstone_grace,
            )),
            tombstones: Arc::new(Tombstones::new(local.clone(), config.tombstone_grace)),
            layout: Arc::new(LayoutService::new(
                local.clone(),
                LayoutSettings {
                    interval: config.gossip_interval,
                    auto_join: config.auto_join,
                    seeded: config.seeds.iter().any(|s| *s != config.cluster_advertise),
                    concurrency: config.handoff_concurrency,
                    bytes_per_sec: config.handoff_bytes_per_sec,
                    drop_sweep: config.drop_sweep,
                },
            )),
            stats: Arc::default(),
        };
        let peer = Arc::new(PeerHandler::new(local.clone(), coordinator.clone(), services.clone()));
        let admin = Arc::new(Admin {
            local: local.clone(),
            coordinator: coordinator.clone(),
            services: services.clone(),
            refusals: Arc::default(),
        });
        Ok(Node {
            local,
            coordinator,
            peer,
            admin,
            services,
        })
    }

    /// Runs gossip, anti-entropy, hint delivery and tombstone collection until
    /// `shutdown` flips.
    pub async fn run_services(&self, shutdown: watch::Receiver<bool>) {
        services::run(&self.local, self.services.all(), shutdown).await;
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use dynakv_crdt::{Actor, LwwRegister, Register, Timestamp};
    use futures::future::BoxFuture;

    use super::*;
    use crate::config::NodeArgs;
    use crate::env::clock::ManualClock;
    use crate::env::storage::MemoryStore;
    use crate::local::TokioSpawn;
    use crate::transport::message::Request;
    use crate::transport::{Reply, RpcError, Transport};

    /// A network where nobody answers.
    struct Nowhere;

    impl Transport for Nowhere {
        fn send(&self, addr: &str, _: Request, _: Duration) -> BoxFuture<'static, Result<Reply, RpcError>> {
            let addr = addr.to_string();
            Box::pin(async move {
                Err(RpcError::Connect {
                    addr,
                    detail: "nowhere".into(),
                })
            })
        }
    }

    async fn open(store: Arc<dyn Store>, clock: Arc<ManualClock>) -> Node {
        let config = Config::load(NodeArgs {
            id: Some("n1".into()),
            conflict: Some("lww".into()),
            ..Default::default()
        })
        .unwrap();
        let env = Env {
            transport: Arc::new(Nowhere),
            clock,
            spawner: Arc::new(TokioSpawn),
            seed: 1,
            commit_thread: false,
        };
        Node::open(&config, store, env).await.unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_crash_the_clock_resumes_past_timestamps_it_had_only_seen() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let clock = Arc::new(ManualClock::new(1_000_000));
        let node = open(store.clone(), clock.clone()).await;
        // A version stamped 10 s ahead of this node's clock arrives from a peer; this node
        // issues nothing after it and crashes (nothing is settled).
        let ahead = Timestamp::new(1_010_000, 0);
        node.local.observe(&Register::Lww(LwwRegister::new(
            ahead,
            Actor(9),
            Some(Bytes::from_static(b"v")),
        )));
        assert!(node.local.clock_reading() >= ahead);
        drop(node);
        let again = open(store, clock).await;
        assert!(again.local.clock_reading() >= ahead, "{}", again.local.clock_reading());
        assert!(again.local.timestamp(None).unwrap() > ahead);
    }
}
