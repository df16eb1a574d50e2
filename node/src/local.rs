//! What every role of a node shares: who it is, its settings, its view of the cluster,
//! its replica of the data, its peers, its clocks, and how it starts work that outlives
//! a request. The coordinator, the peer handler, the admin views and the background
//! services each hold an `Arc<Local>`; none of them holds another role.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dynakv_crdt::{ConflictMode, Hlc, Register, Timestamp};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::time::Instant;
use tracing::warn;

use crate::env::clock::Clock;
use crate::env::metrics::Metrics;
use crate::env::storage::StorageError;
use crate::state::catalog::Catalog;
use crate::state::cluster::Cluster;
use crate::state::identity::{ClockCeiling, Identity};
use crate::state::replica::ReplicaStore;
use crate::state::replica_writer::ReplicaWriter;
use crate::transport::{Peers, Transport};

/// Remote timestamps further ahead of our wall clock than this are not adopted by the HLC.
pub const MAX_CLOCK_DRIFT_MS: u64 = 60_000;

/// Request-level settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub n: usize,
    pub r: usize,
    pub w: usize,
    /// Default primary quorums (see `coordinator::read` and `coordinator::write`).
    pub pr: usize,
    pub pw: usize,
    pub mode: ConflictMode,
    pub request_timeout: Duration,
    pub max_value_bytes: usize,
    /// Longest pause allowed while a client sends a request body.
    pub read_timeout: Duration,
    /// Most siblings a blind write may leave on the coordinating replica (mv mode).
    pub max_siblings: usize,
    /// Let live fallbacks stand in for dead or silent replicas.
    pub sloppy_quorum: bool,
    /// How long a read waits on the `r` replicas it asked before it asks the others
    /// (zero: it asks every replica at once).
    pub read_speculate: Duration,
    /// Record event metrics (`--metrics`).
    pub metrics: bool,
}

/// Starts a task that belongs to this node.
pub trait Spawn: Send + Sync + 'static {
    fn spawn(&self, task: BoxFuture<'static, ()>);
}

/// Tasks on the tokio runtime the node runs on.
pub struct TokioSpawn;

impl Spawn for TokioSpawn {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        tokio::spawn(task);
    }
}

/// Where a node's effects go: the real world, or the simulator's.
#[derive(Clone)]
pub struct Env {
    pub transport: Arc<dyn Transport>,
    pub clock: Arc<dyn Clock>,
    pub spawner: Arc<dyn Spawn>,
    /// Seeds every random choice the node makes (gossip targets, generated ids).
    pub seed: u64,
    /// Replica writes on a commit thread of their own ([`ReplicaWriter::thread`]) rather
    /// than on the calling task's thread.
    pub commit_thread: bool,
}

pub struct Local {
    pub identity: Identity,
    pub settings: Settings,
    pub cluster: Cluster,
    /// The namespaces this node knows.
    pub catalog: Catalog,
    pub replicas: Arc<ReplicaStore>,
    /// Where the write paths' merges go (see [`crate::state::replica_writer`]).
    pub commits: ReplicaWriter,
    pub peers: Peers,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    spawner: Arc<dyn Spawn>,
    seed: u64,
    hlc: Mutex<Hlc>,
    /// Recorded bound on the timestamps `hlc` issues, so a restart resumes past them.
    clock_ceiling: ClockCeiling,
}

impl Local {
    pub fn new(
        identity: Identity,
        settings: Settings,
        (cluster, catalog): (Cluster, Catalog),
        replicas: ReplicaStore,
        clock_ceiling: ClockCeiling,
        env: Env,
    ) -> std::io::Result<Local> {
        let mut hlc = Hlc::new(MAX_CLOCK_DRIFT_MS);
        hlc.resume_after(clock_ceiling.recorded_ms());
        let metrics = Arc::new(Metrics::new(settings.metrics));
        let replicas = Arc::new(replicas);
        let commits = if env.commit_thread {
            ReplicaWriter::thread(replicas.clone())?
        } else {
            ReplicaWriter::inline(replicas.clone())
        };
        Ok(Local {
            identity,
            settings,
            cluster,
            catalog,
            replicas,
            commits,
            peers: Peers::new(env.transport, metrics.clone()),
            metrics,
            clock: env.clock,
            spawner: env.spawner,
            seed: env.seed,
            hlc: Mutex::new(hlc),
            clock_ceiling,
        })
    }

    pub fn id(&self) -> &dynakv_ring::NodeId {
        &self.identity.id
    }

    /// Starts `task` on this node (the simulator stops it when the node crashes).
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.spawner.spawn(Box::pin(task));
    }

    /// A random number generator for one purpose, seeded from the node's seed.
    pub fn rng(&self, purpose: &str) -> StdRng {
        let salt = blake3::hash(purpose.as_bytes());
        let salt = u64::from_le_bytes(salt.as_bytes()[..8].try_into().expect("8 bytes"));
        StdRng::seed_from_u64(self.seed ^ salt)
    }

    /// When a request started now must be answered.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.settings.request_timeout
    }

    /// Takes the timestamp of a version seen from elsewhere into account, and records
    /// it like one of ours: after a restart the clock resumes past everything it had
    /// seen, not only past what it had issued.
    pub fn observe(&self, reg: &Register) {
        let Register::Lww(l) = reg else { return };
        let adopted = {
            let mut hlc = self.hlc.lock();
            if let Err(drift) = hlc.observe(l.timestamp, self.clock.wall_ms()) {
                warn!(%drift, "not adopting a timestamp from the future");
                return;
            }
            hlc.last()
        };
        if let Err(e) = self.clock_ceiling.cover(adopted.physical_ms()) {
            warn!(error = %e, "cannot record the clock's bound");
        }
    }

    /// A last-writer-wins timestamp for a new write, ordered after `after` (the version
    /// the client read) even if our clock is behind the clock that stamped it, and
    /// recorded so that a restart never issues one below it.
    pub fn timestamp(&self, after: Option<Timestamp>) -> Result<Timestamp, StorageError> {
        let timestamp = {
            let mut hlc = self.hlc.lock();
            let wall = self.clock.wall_ms();
            let now = hlc.now(wall);
            match after {
                Some(t) if t >= now => {
                    let ts = t.successor();
                    let _ = hlc.observe(ts, wall);
                    ts
                }
                _ => now,
            }
        };
        self.clock_ceiling.cover(timestamp.physical_ms())?;
        Ok(timestamp)
    }

    /// The newest timestamp this node's clock has issued or adopted.
    pub fn clock_reading(&self) -> Timestamp {
        self.hlc.lock().last()
    }

    /// At shutdown, after serving stopped: records exactly how far this node's clock got.
    pub fn settle_clock(&self) -> Result<(), StorageError> {
        // Under the clock's lock: no timestamp can be issued past what is recorded.
        let hlc = self.hlc.lock();
        self.clock_ceiling.settle(hlc.last().physical_ms())
    }

    /// At shutdown, last: everything written is synced and the stop recorded as clean,
    /// so the next start keeps this node's actor id (see `identity`).
    pub fn record_clean_stop(&self) -> Result<(), StorageError> {
        crate::state::identity::record_clean_stop(&**self.replicas.store(), self.identity.generation)
    }
}
