//! The simulated cluster: real nodes (the production coordinator, peer handler and
//! background services) on in-memory storage, each behind a [`Gate`], talking over a
//! simulated network that encodes and decodes every message and delays, drops,
//! duplicates and reorders them from a seeded generator; clocks skewed per node; all on
//! one paused tokio runtime, so one seed gives one history.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use dynakv_crdt::{ConflictMode, Context};
use dynakv_http_api::{ApiError, GetOutcome, Key, KvService, QuorumParams};
use dynakv_node::config::{Config, NodeArgs};
use dynakv_node::env::clock::SkewedClock;
use dynakv_node::env::storage::Store;
use dynakv_node::local::Env;
use dynakv_node::serve::node::Node;
use dynakv_node::transport::message::{self, Answer, Request, WireError};
use dynakv_node::transport::{Handler, Reply, RpcError, Traffic, Transport};
use dynakv_ring::Ring;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::disk::{DiskStats, Fault, Mutation, SimDisk};
use crate::gate::{Gate, GatedSpawn};
use crate::history::{Placed, Shared, decode_set, names, union_of};

/// The runtime one history runs on: one thread, time paused (it jumps to the next timer
/// whenever every task waits), so the same seed gives the same history.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime")
}

/// The wall clock's origin for every simulated node (2026-01-01), before skew.
pub const WALL_ORIGIN_MS: u64 = 1_767_225_600_000;

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub nodes: usize,
    pub mode: ConflictMode,
    pub n: usize,
    pub r: usize,
    pub w: usize,
    /// Primary quorums: of the `r` answers (`w` acknowledgements), how many must come
    /// from the key's own replicas.
    pub pr: usize,
    pub pw: usize,
    pub sloppy: bool,
    /// When a read asks the replicas beyond the `r` it asked first (0: all at once).
    pub read_speculate_ms: u64,
    pub gossip_ms: u64,
    pub request_timeout_ms: u64,
    pub anti_entropy_ms: u64,
    pub handoff_ms: u64,
    pub tombstone_grace_ms: u64,
    pub partition_bits: u8,
    pub tokens: u32,
    /// One-way delay of a message, drawn uniformly from this range.
    pub delay_ms: (u64, u64),
    /// Probability that a message is lost, and that it is delivered twice.
    pub loss: f64,
    pub duplicate: f64,
    pub mutation: Mutation,
    /// The first this many nodes are every node's seeds (`None`: all of them).
    pub seeds: Option<usize>,
    /// Nodes started at once (`None`: all); the others can be started later.
    pub boot: Option<usize>,
    /// Nodes join the layout on their own (off: they only gossip, owning nothing).
    pub auto_join: bool,
    /// The last this many nodes never join on their own (they stand by to replace one).
    pub spares: usize,
    /// Pace of partition transfers (0: none).
    pub handoff_bytes_per_sec: u64,
    /// How often a settled node looks for partitions to drop.
    pub drop_sweep_ms: u64,
    /// The kernel's writeback: each node's disk syncs every so often, an interval drawn
    /// per node up to this (see `disk`).
    pub sync_ms: u64,
    /// Most concurrent values a key may hold (mv mode).
    pub max_siblings: usize,
    /// The workload runs in namespace [`NAMESPACE`], created once the cluster formed with
    /// this config's r, w, pr, pw and mode, while the nodes' own settings (the `default`
    /// namespace's) are others: r = w = 1, no primary quorums, the other conflict mode.
    /// A coordinator that ran a request by the wrong settings would lose writes.
    pub namespace: bool,
}

/// The namespace of [`SimConfig::namespace`].
pub const NAMESPACE: &str = "sim";

impl SimConfig {
    /// Swarm testing: the settings one seed draws (every seed its own cluster), before
    /// its scenario adjusts them. R + W > N always (the checkers rely on it).
    pub fn swarm(seed: u64) -> SimConfig {
        let mut r = StdRng::seed_from_u64(seed ^ 0x7377_6172_6d00);
        let n = if r.random_bool(0.25) { 2 } else { 3 };
        let (read, write) = loop {
            let (a, b) = (r.random_range(1..=n), r.random_range(1..=n));
            if a + b > n {
                break (a, b);
            }
        };
        SimConfig {
            n,
            r: read,
            w: write,
            request_timeout_ms: r.random_range(500..=2_000),
            gossip_ms: r.random_range(50..=250),
            anti_entropy_ms: r.random_range(300..=3_000),
            handoff_ms: r.random_range(100..=500),
            // Reads that ask every replica at once, ask r and speculate soon (within
            // the network's delays), or ask r and speculate late.
            read_speculate_ms: [0, 5, 40][r.random_range(0..3)],
            partition_bits: r.random_range(4..=8),
            tokens: r.random_range(8..=32),
            delay_ms: (1, r.random_range(5..=20)),
            sync_ms: r.random_range(200..=2_000),
            max_siblings: [4, 8, 100][r.random_range(0..3)],
            ..SimConfig::default()
        }
    }

    /// Whether every quorum read must see every write acknowledged before it (with
    /// R + W > N, which [`SimConfig::swarm`] keeps): no fallback counts, either because
    /// there are none (strict quorums) or because the primary quorums are the whole
    /// quorums (pr = r, pw = w).
    pub fn strict_quorums(&self) -> bool {
        !self.sloppy || (self.pr >= self.r && self.pw >= self.w)
    }

    /// One line for the trace and failure reports.
    pub fn summary(&self) -> String {
        format!(
            "n={} r={} w={} pr={} pw={} sloppy={} mode={} timeout={}ms gossip={}ms anti-entropy={}ms handoff={}ms \
             speculate={}ms partition-bits={} tokens={} delay={:?}ms sync<={}ms max-siblings={}{}",
            self.n,
            self.r,
            self.w,
            self.pr,
            self.pw,
            self.sloppy,
            self.mode,
            self.request_timeout_ms,
            self.gossip_ms,
            self.anti_entropy_ms,
            self.handoff_ms,
            self.read_speculate_ms,
            self.partition_bits,
            self.tokens,
            self.delay_ms,
            self.sync_ms,
            self.max_siblings,
            if self.namespace { " namespace=sim" } else { "" }
        )
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 5,
            mode: ConflictMode::Mv,
            n: 3,
            r: 2,
            w: 2,
            pr: 0,
            pw: 0,
            sloppy: true,
            read_speculate_ms: 5,
            gossip_ms: 100,
            request_timeout_ms: 1000,
            anti_entropy_ms: 1000,
            handoff_ms: 200,
            tombstone_grace_ms: 2000,
            partition_bits: 6,
            tokens: 16,
            delay_ms: (1, 10),
            loss: 0.0,
            duplicate: 0.0,
            mutation: Mutation::None,
            seeds: None,
            boot: None,
            auto_join: true,
            spares: 0,
            handoff_bytes_per_sec: 0,
            drop_sweep_ms: 30_000,
            sync_ms: 1_000,
            max_siblings: 100,
            namespace: false,
        }
    }
}

pub struct NodeSlot {
    pub disk: Arc<SimDisk>,
    pub clock: Arc<SkewedClock>,
    pub gate: Arc<Gate>,
    pub node: Option<Arc<Node>>,
    /// Bumped on every start: messages to an earlier incarnation are lost.
    pub incarnation: u64,
    stop: Option<watch::Sender<bool>>,
}

/// A replica read (`Get`) one node sent another, as the network saw it.
#[derive(Clone, Debug)]
pub struct GetRecord {
    pub from: usize,
    pub to: usize,
    pub key: String,
    pub sent_ms: u64,
    /// When the answer reached the sender, if it did.
    pub answered_ms: Option<u64>,
}

/// What the network did, for the report.
#[derive(Clone, Debug, Default)]
pub struct NetStats {
    pub sent: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub bytes: u64,
    /// Messages and bytes by verb, requests and answers apart (`true`: answers).
    pub by_verb: BTreeMap<(&'static str, bool), (u64, u64)>,
}

struct Net {
    rng: StdRng,
    /// Pairs of nodes that cannot reach each other (smaller index first).
    cuts: BTreeSet<(usize, usize)>,
    /// `(node, verb)`: messages of that verb (requests and answers) never reach the node.
    deaf: BTreeSet<(usize, &'static str)>,
    loss: f64,
    duplicate: f64,
    stats: NetStats,
    gets: Vec<GetRecord>,
    /// A running digest of every network event: equal digests, equal histories.
    digest: blake3::Hasher,
}

pub struct Inner {
    pub seed: u64,
    pub config: SimConfig,
    origin: Instant,
    pub slots: Vec<Mutex<NodeSlot>>,
    net: Mutex<Net>,
    trace: Mutex<Vec<String>>,
    /// Seeds the choices made outside the network (faults, clients).
    pub rng: Mutex<StdRng>,
    /// Invariants found broken while the history ran.
    violations: Mutex<Vec<String>>,
    /// Each node's clock reading when it last crashed.
    clock_at_crash: Mutex<BTreeMap<usize, dynakv_crdt::Timestamp>>,
    /// Nodes taken out for good (replaced): healing does not restart them.
    retired: Mutex<BTreeSet<usize>>,
    /// Reads a fault schedule makes itself (probes at a chosen moment), checked with the
    /// clients' reads.
    probes: Shared,
}

/// One simulated cluster. Cheap to clone.
#[derive(Clone)]
pub struct World(pub Arc<Inner>);

fn addr(i: usize) -> String {
    format!("n{}:7000", i + 1)
}

impl World {
    /// Starts `config.nodes` nodes and waits until they see each other alive. Must run
    /// inside a paused current-thread runtime.
    pub async fn start(seed: u64, config: SimConfig) -> World {
        let slots = (0..config.nodes)
            .map(|_| {
                Mutex::new(NodeSlot {
                    disk: Arc::new(SimDisk::new(config.mutation)),
                    clock: Arc::new(SkewedClock::new(WALL_ORIGIN_MS, 0)),
                    gate: Arc::new(Gate::default()),
                    node: None,
                    incarnation: 0,
                    stop: None,
                })
            })
            .collect();
        let world = World(Arc::new(Inner {
            seed,
            net: Mutex::new(Net {
                rng: StdRng::seed_from_u64(seed ^ 0x6e65_7477_6f72_6b00),
                cuts: BTreeSet::new(),
                deaf: BTreeSet::new(),
                loss: config.loss,
                duplicate: config.duplicate,
                stats: NetStats::default(),
                gets: Vec::new(),
                digest: blake3::Hasher::new(),
            }),
            config,
            origin: Instant::now(),
            slots,
            trace: Mutex::new(Vec::new()),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            violations: Mutex::new(Vec::new()),
            clock_at_crash: Mutex::new(BTreeMap::new()),
            retired: Mutex::new(BTreeSet::new()),
            probes: Default::default(),
        }));
        // The kernel writes each disk back on its own schedule, whatever the node does.
        for i in 0..world.nodes() {
            let every = world.random(|r| {
                r.random_range(world.0.config.sync_ms / 5..=world.0.config.sync_ms)
                    .max(1)
            });
            let disk = world.0.slots[i].lock().disk.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(every)).await;
                    let _ = disk.sync();
                }
            });
        }
        let boot = world.0.config.boot.unwrap_or(world.0.config.nodes);
        for i in 0..boot {
            // Nodes start at different moments, as real ones do: their gossip rounds are
            // not in step.
            let offset = world.random(|r| r.random_range(0..world.0.config.gossip_ms));
            tokio::time::sleep(Duration::from_millis(offset / boot as u64 + 1)).await;
            world.boot(i).await;
        }
        // Two founders racing for the first layout may wait out a promise (10 s).
        let limit = Duration::from_millis((world.0.config.gossip_ms * 100).max(30_000));
        let formed = world.wait_until(limit, |w| w.all_see_all_alive()).await;
        assert!(formed, "seed {seed}: the cluster did not form");
        if world.0.config.auto_join {
            let laid_out = world.wait_until(limit, |w| w.layout_formed(boot)).await;
            assert!(
                laid_out,
                "seed {seed}: the booted nodes did not all join the layout: {}",
                world.layouts()
            );
        }
        world.trace("cluster formed");
        if world.0.config.namespace {
            world.create_namespace(boot, limit).await;
        }
        world
    }

    /// Creates [`NAMESPACE`] through node 0 with the config's settings, and waits until
    /// the first `boot` nodes all see it active.
    async fn create_namespace(&self, boot: usize, limit: Duration) {
        use dynakv_http_api::AdminService;
        let c = &self.0.config;
        let body = format!(
            r#"{{"n": {}, "r": {}, "w": {}, "pr": {}, "pw": {}, "conflict": "{}"}}"#,
            c.n, c.r, c.w, c.pr, c.pw, c.mode
        );
        let mut created = false;
        for _ in 0..50 {
            let body = body.clone().into_bytes();
            let got = self
                .client(0, move |n| {
                    Box::pin(async move { n.admin.create_namespace(NAMESPACE, &body).await.map(|_| ()) })
                })
                .await;
            if let Some(Ok(())) = got {
                created = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let seed = self.0.seed;
        assert!(created, "seed {seed}: namespace {NAMESPACE} could not be created");
        let active = self
            .wait_until(limit, |w| {
                (0..boot).all(|i| {
                    w.node(i).is_some_and(|n| {
                        let owners: std::collections::BTreeSet<_> =
                            n.local.cluster.view().current().owners.keys().cloned().collect();
                        n.local.catalog.table().state(NAMESPACE, &owners) == Some(dynakv_ring::namespace::State::Active)
                    })
                })
            })
            .await;
        assert!(active, "seed {seed}: namespace {NAMESPACE} did not become active");
        self.trace(format!("namespace {NAMESPACE} active: {body}"));
    }

    /// The namespace the workload's requests name (`None`: `default`).
    fn namespace(&self) -> Option<String> {
        self.0.config.namespace.then(|| NAMESPACE.to_string())
    }

    /// Starts node `i` for the first time.
    pub async fn add(&self, i: usize) {
        self.trace(format!("START n{}", i + 1));
        self.boot(i).await;
    }

    pub fn now_ms(&self) -> u64 {
        self.0.origin.elapsed().as_millis() as u64
    }

    pub fn nodes(&self) -> usize {
        self.0.config.nodes
    }

    pub fn trace(&self, line: impl AsRef<str>) {
        let line = format!("{:>7} ms  {}", self.now_ms(), line.as_ref());
        self.0.net.lock().digest.update(line.as_bytes());
        self.0.trace.lock().push(line);
    }

    /// Records a broken invariant (the run fails at its end, with the trace).
    pub fn violation(&self, what: impl Into<String>) {
        let what = what.into();
        self.trace(format!("VIOLATION {what}"));
        self.0.violations.lock().push(what);
    }

    pub fn violations(&self) -> Vec<String> {
        self.0.violations.lock().clone()
    }

    /// The history of the reads the fault schedule made.
    pub fn probes(&self) -> Shared {
        self.0.probes.clone()
    }

    pub fn trace_lines(&self) -> Vec<String> {
        self.0.trace.lock().clone()
    }

    /// The digest of everything that happened: two runs of one seed must agree.
    pub fn digest(&self) -> String {
        self.0.net.lock().digest.finalize().to_hex().to_string()
    }

    pub fn net_stats(&self) -> NetStats {
        self.0.net.lock().stats.clone()
    }

    pub fn gets(&self) -> Vec<GetRecord> {
        self.0.net.lock().gets.clone()
    }

    pub fn node(&self, i: usize) -> Option<Arc<Node>> {
        self.0.slots[i].lock().node.clone()
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.0.slots[i].lock().node.is_some()
    }

    pub fn is_paused(&self, i: usize) -> bool {
        self.0.slots[i].lock().gate.is_paused()
    }

    pub fn incarnation(&self, i: usize) -> u64 {
        self.0.slots[i].lock().incarnation
    }

    pub fn random<T>(&self, f: impl FnOnce(&mut StdRng) -> T) -> T {
        f(&mut self.0.rng.lock())
    }

    fn node_config(&self, i: usize) -> Config {
        let c = &self.0.config;
        let seeds: Vec<String> = (0..c.seeds.unwrap_or(c.nodes)).map(addr).collect();
        let s = |v: u64| Some(v.to_string());
        // With the workload in a namespace, `default` runs by other settings.
        let (r, w, pr, pw, mode) = if c.namespace {
            let other = match c.mode {
                ConflictMode::Mv => ConflictMode::Lww,
                ConflictMode::Lww => ConflictMode::Mv,
            };
            (1, 1, 0, 0, other)
        } else {
            (c.r, c.w, c.pr, c.pw, c.mode)
        };
        Config::load(NodeArgs {
            id: Some(format!("n{}", i + 1)),
            listen: Some("127.0.0.1:1".into()),
            advertise: Some(addr(i)),
            cluster_advertise: Some(addr(i)),
            // The simulated network carries no handshake; the real one is tested for real.
            insecure: Some("true".into()),
            data_dir: Some(format!("/nonexistent/sim/n{}", i + 1).into()),
            seeds: Some(seeds.join(",")),
            n: s(c.n as u64),
            r: s(r as u64),
            w: s(w as u64),
            pr: s(pr as u64),
            pw: s(pw as u64),
            conflict: Some(mode.to_string()),
            gossip_interval_ms: s(c.gossip_ms),
            request_timeout_ms: s(c.request_timeout_ms),
            tokens: s(c.tokens as u64),
            partition_bits: s(c.partition_bits as u64),
            sloppy_quorum: Some(c.sloppy.to_string()),
            read_speculate_ms: s(c.read_speculate_ms),
            anti_entropy_interval_ms: s(c.anti_entropy_ms),
            handoff_interval_ms: s(c.handoff_ms),
            tombstone_grace_ms: s(c.tombstone_grace_ms),
            auto_join: Some((c.auto_join && i < c.nodes - c.spares).to_string()),
            handoff_bytes_per_sec: s(c.handoff_bytes_per_sec),
            drop_sweep_ms: s(c.drop_sweep_ms),
            max_siblings: s(c.max_siblings as u64),
            ..Default::default()
        })
        .expect("valid simulated node settings")
    }

    /// Starts node `i` (again) on its storage.
    async fn boot(&self, i: usize) {
        let config = self.node_config(i);
        let (store, clock, gate, incarnation) = {
            let mut slot = self.0.slots[i].lock();
            assert!(slot.node.is_none(), "node {i} is running");
            slot.incarnation += 1;
            (
                slot.disk.clone(),
                slot.clock.clone(),
                slot.gate.clone(),
                slot.incarnation,
            )
        };
        if self.0.config.mutation == Mutation::PretendCleanStop
            && let Ok(Some(generation)) = store.get(
                dynakv_node::env::storage::Space::Meta,
                dynakv_node::env::storage::meta::GENERATION,
            )
        {
            store
                .write_synced(vec![dynakv_node::env::storage::Op::Put(
                    dynakv_node::env::storage::Space::Meta,
                    dynakv_node::env::storage::meta::CLEAN_STOP.to_vec(),
                    generation,
                )])
                .expect("the simulated disk takes the record");
        }
        let env = Env {
            transport: Arc::new(SimTransport {
                world: Arc::downgrade(&self.0),
                from: i,
            }),
            clock: clock.clone(),
            spawner: Arc::new(GatedSpawn(gate.clone())),
            seed: self.0.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ ((i as u64) << 32 | incarnation),
            // Merges on the simulated node's own tasks: a real thread would make the
            // history depend on the OS scheduler.
            commit_thread: false,
        };
        let node = Arc::new(Node::open(&config, store, env).await.expect("simulated node opens"));
        // A node's clock never goes back across a restart.
        if let Some(before) = self.0.clock_at_crash.lock().get(&i).copied() {
            let after = node.local.clock_reading();
            if after < before {
                self.violation(format!(
                    "n{}'s clock went back across its restart: {before} before the crash, {after} after",
                    i + 1
                ));
            }
        }
        let (stop, shutdown) = watch::channel(false);
        {
            let node = node.clone();
            gate.spawn(async move { node.run_services(shutdown).await });
        }
        let mut slot = self.0.slots[i].lock();
        slot.node = Some(node);
        slot.stop = Some(stop);
    }

    // ---- faults --------------------------------------------------------------------

    /// Kills node `i`: its tasks stop at once; only what it stored survives.
    pub fn crash(&self, i: usize) -> Option<Arc<Node>> {
        let (node, gate) = {
            let mut slot = self.0.slots[i].lock();
            slot.stop = None;
            (slot.node.take(), slot.gate.clone())
        };
        gate.crash();
        if let Some(node) = &node {
            let reading = node.local.clock_reading();
            self.0.clock_at_crash.lock().insert(i, reading);
            self.trace(format!("CRASH n{} (clock at {reading})", i + 1));
        }
        node
    }

    /// Crashes node `i`'s machine: its process dies and its disk keeps only what was
    /// synced (and a prefix of the rest).
    pub fn machine_crash(&self, i: usize) {
        self.crash(i);
        let disk = self.0.slots[i].lock().disk.clone();
        let (kept, lost) = self.random(|r| disk.machine_crash(r));
        self.trace(format!(
            "MACHINE CRASH n{}: {kept} unsynced batches reached the disk, {lost} lost",
            i + 1
        ));
    }

    /// Injects a storage fault into node `i`'s disk.
    pub fn fail_storage(&self, i: usize, fault: Fault) {
        self.trace(format!("STORAGE FAULT n{}: {fault:?}", i + 1));
        self.0.slots[i].lock().disk.inject(fault);
    }

    /// Every node's disk figures, summed.
    pub fn disk_stats(&self) -> DiskStats {
        let mut total = DiskStats::default();
        for slot in &self.0.slots {
            let d = slot.lock().disk.stats();
            total.syncs += d.syncs;
            total.batches_lost += d.batches_lost;
            total.injected_errors += d.injected_errors;
        }
        total
    }

    /// Stages `changes` through node `i` and commits them as the next layout version
    /// ([`World::commit_layout`]). Returns the version made.
    pub async fn change_layout(&self, i: usize, changes: Vec<dynakv_ring::layout::Change>) -> Option<u64> {
        self.trace(format!("LAYOUT CHANGE through n{}: {changes:?}", i + 1));
        self.stage_changes(i, changes).await?;
        self.commit_layout(i).await
    }

    /// Stages `changes` through node `i`; `None` if it refused them or did not answer.
    pub async fn stage_changes(&self, i: usize, changes: Vec<dynakv_ring::layout::Change>) -> Option<()> {
        let got = self
            .client(i, move |n| {
                Box::pin(async move {
                    for c in changes {
                        n.local.cluster.stage(c).map_err(|e| e.to_string())?;
                    }
                    Ok::<(), String>(())
                })
            })
            .await;
        self.trace(format!("  staged: {got:?}"));
        got?.ok()
    }

    /// Commits what is staged through node `i` as the next layout version (the promise
    /// round can lose messages: a few tries). Returns the version made.
    pub async fn commit_layout(&self, i: usize) -> Option<u64> {
        for _ in 0..5 {
            let got = self
                .client(i, move |n| {
                    Box::pin(async move {
                        let v = n.local.cluster.view().current().version + 1;
                        dynakv_node::roles::services::layout::commit(&n.local, v)
                            .await
                            .map(|l| l.version)
                            .map_err(|e| e.to_string())
                    })
                })
                .await;
            self.trace(format!("  layout change: {got:?}"));
            if let Some(Ok(v)) = got {
                return Some(v);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        None
    }

    pub async fn restart(&self, i: usize) {
        self.trace(format!("RESTART n{}", i + 1));
        self.boot(i).await;
    }

    pub fn pause(&self, i: usize) {
        self.trace(format!("PAUSE n{}", i + 1));
        self.0.slots[i].lock().gate.pause();
    }

    pub fn resume(&self, i: usize) {
        self.trace(format!("RESUME n{}", i + 1));
        self.0.slots[i].lock().gate.resume();
    }

    /// Cuts every link between the two groups.
    pub fn cut(&self, a: &[usize], b: &[usize]) {
        self.trace(format!("CUT {} | {}", names(a), names(b)));
        let mut net = self.0.net.lock();
        for &x in a {
            for &y in b {
                if x != y {
                    net.cuts.insert((x.min(y), x.max(y)));
                }
            }
        }
    }

    /// Cuts node `i` off from every other node.
    pub fn isolate(&self, i: usize) {
        let others: Vec<usize> = (0..self.nodes()).filter(|&j| j != i).collect();
        self.cut(&[i], &others);
    }

    /// Messages of `verb` (requests to node `i` and answers to its requests) no longer
    /// reach node `i`; what it sends still goes out.
    pub fn deafen(&self, i: usize, verb: &'static str) {
        self.trace(format!("DEAFEN n{} to {verb}", i + 1));
        self.0.net.lock().deaf.insert((i, verb));
    }

    pub fn heal_network(&self) {
        self.trace("HEAL network");
        let mut net = self.0.net.lock();
        net.cuts.clear();
        net.deaf.clear();
    }

    pub fn set_loss(&self, loss: f64, duplicate: f64) {
        self.trace(format!("NETWORK loss {loss} duplicate {duplicate}"));
        let mut net = self.0.net.lock();
        net.loss = loss;
        net.duplicate = duplicate;
    }

    pub fn set_skew(&self, i: usize, skew_ms: i64) {
        self.trace(format!("SKEW n{} {skew_ms:+} ms", i + 1));
        self.0.slots[i].lock().clock.set_skew(skew_ms);
    }

    /// Ends every fault: the network heals, storage faults end, paused nodes resume,
    /// crashed ones restart.
    pub async fn heal_all(&self) {
        self.heal_network();
        self.set_loss(0.0, 0.0);
        for slot in &self.0.slots {
            slot.lock().disk.clear_faults();
        }
        for i in 0..self.nodes() {
            if self.is_paused(i) {
                self.resume(i);
            }
            if !self.is_up(i) && !self.0.retired.lock().contains(&i) {
                self.restart(i).await;
            }
        }
    }

    // ---- views ---------------------------------------------------------------------

    /// How many members node `i` sees alive (`None`: it is down).
    pub fn alive_seen_by(&self, i: usize) -> Option<usize> {
        let node = self.node(i)?;
        Some(node.local.cluster.with_membership(|m, now| {
            m.members(now)
                .filter(|v| v.status == dynakv_ring::Status::Alive)
                .count()
        }))
    }

    /// Node `i`'s view of node `of` (`None`: `i` is down or does not know `of`).
    pub fn status_seen_by(&self, i: usize, of: usize) -> Option<dynakv_ring::Status> {
        let node = self.node(i)?;
        let id = dynakv_ring::NodeId::new(format!("n{}", of + 1)).unwrap();
        node.local.cluster.with_membership(|m, _| m.status(&id))
    }

    /// Every running node sees every running node alive.
    pub fn all_see_all_alive(&self) -> bool {
        let up = (0..self.nodes()).filter(|&i| self.is_up(i)).count();
        (0..self.nodes()).all(|i| self.alive_seen_by(i).is_none_or(|n| n == up))
    }

    /// Every running node's layout has the first `count` nodes as owners, and is settled.
    pub fn layout_formed(&self, count: usize) -> bool {
        let want: Vec<String> = (0..count).map(|i| format!("n{}", i + 1)).collect();
        (0..self.nodes()).filter_map(|i| self.node(i)).all(|node| {
            let view = node.local.cluster.view();
            let owners: Vec<String> = view.current().owners.keys().map(|id| id.to_string()).collect();
            let mut want = want.clone();
            want.sort();
            owners == want && view.history.settled() && view.read == view.current().version
        })
    }

    /// Polls `cond` every 50 ms of simulated time, up to `limit`.
    pub async fn wait_until(&self, limit: Duration, mut cond: impl FnMut(&World) -> bool) -> bool {
        let until = Instant::now() + limit;
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The ring of the newest layout any running node has: what every node's view
    /// converges to (a node's own view can lag).
    pub fn ring(&self) -> Ring {
        let c = &self.0.config;
        (0..c.nodes)
            .filter_map(|i| self.node(i))
            .map(|n| n.local.cluster.view())
            .max_by_key(|v| v.current().version)
            .map(|v| v.rings.current().clone())
            .expect("a running node")
    }

    /// Node `i` is out for good: healing leaves it down.
    pub fn retire(&self, i: usize) {
        self.trace(format!("RETIRE n{}", i + 1));
        self.0.retired.lock().insert(i);
    }

    /// Every running node sees node `i` dead.
    pub fn seen_dead_by_all(&self, i: usize) -> bool {
        let id = dynakv_ring::NodeId::new(format!("n{}", i + 1)).unwrap();
        (0..self.nodes()).filter_map(|j| self.node(j)).all(|n| {
            n.local
                .cluster
                .member(&id)
                .is_some_and(|(_, s)| s == dynakv_ring::Status::Dead)
        })
    }

    /// Each running node's layout history, for failure messages.
    pub fn layouts(&self) -> String {
        (0..self.nodes())
            .filter_map(|i| self.node(i).map(|n| (i, n)))
            .map(|(i, n)| format!("\nn{}: {:?}", i + 1, n.local.cluster.view().history))
            .collect()
    }

    /// Every running node has the same settled layout.
    pub fn layouts_agree(&self) -> bool {
        let views: Vec<_> = (0..self.nodes())
            .filter_map(|i| self.node(i))
            .map(|n| n.local.cluster.view())
            .collect();
        views
            .iter()
            .all(|v| v.history.settled() && v.read == v.current().version && v.current() == views[0].current())
    }

    /// For each partition, whether all of its replicas are up and report the same Merkle
    /// root.
    pub fn roots_agree(&self) -> bool {
        if !self.layouts_agree() {
            return false;
        }
        let ring = self.ring();
        ring.partitions().all(|p| {
            let roots: Vec<_> = ring
                .partition_preference(p, self.0.config.n)
                .into_iter()
                .map(|id| self.node(index_of(id)).map(|n| n.local.replicas.forest().root(p.0)))
                .collect();
            roots.iter().all(Option::is_some) && roots.windows(2).all(|w| w[0] == w[1])
        })
    }

    // ---- clients -------------------------------------------------------------------

    /// A client request to node `i`, as the HTTP API would make it. `None`: no answer
    /// (the node was down, paused past the client's patience, or crashed meanwhile).
    pub async fn client<T: Send + 'static>(
        &self,
        i: usize,
        op: impl FnOnce(Arc<Node>) -> BoxFuture<'static, T> + Send + 'static,
    ) -> Option<T> {
        let (node, gate) = {
            let slot = self.0.slots[i].lock();
            (slot.node.clone()?, slot.gate.clone())
        };
        let (tx, rx) = oneshot::channel();
        gate.spawn(async move {
            let _ = tx.send(op(node).await);
        });
        let patience = Duration::from_millis(self.0.config.request_timeout_ms + 500);
        tokio::time::timeout(patience, rx).await.ok()?.ok()
    }

    pub async fn get(&self, i: usize, key: &str) -> Option<Result<GetOutcome, ApiError>> {
        self.get_with(i, key, None).await.map(|(_, got)| got)
    }

    pub async fn get_r(&self, i: usize, key: &str, r: usize) -> Option<Result<GetOutcome, ApiError>> {
        self.get_with(i, key, Some(r)).await.map(|(_, got)| got)
    }

    /// A client read through node `i`, with the key's replicas (indexes) as the
    /// coordinator placed the read. They are read in the same poll as the coordinator
    /// makes its plan (it plans before its first await), so a layout that moves reads
    /// to a newer version meanwhile cannot make them differ. (Taken before the read is
    /// handed to the node's task instead, they were the old layout's replicas now and
    /// then, and the read checker took a new replica's answer for a missing one: seed
    /// 424242033 of `join_receiver_crash`.)
    pub async fn get_placed(&self, i: usize, key: &str) -> Option<(Placed, Result<GetOutcome, ApiError>)> {
        self.get_with(i, key, None).await
    }

    async fn get_with(&self, i: usize, key: &str, r: Option<usize>) -> Option<(Placed, Result<GetOutcome, ApiError>)> {
        let k = Key::new(key.to_string()).unwrap();
        let ns = self.namespace();
        let start = self.now_ms();
        let got = self
            .client(i, move |n| {
                let item = dynakv_ring::item::item(ns.as_deref().unwrap_or("default"), k.as_str()).into_owned();
                let replicas = n.local.cluster.replicas(&item);
                let placed = Placed {
                    replicas: replicas.iter().map(|r| index_of(&r.id)).collect(),
                    judged_dead: replicas
                        .iter()
                        .filter(|r| r.is_dead())
                        .map(|r| index_of(&r.id))
                        .collect(),
                };
                let quorum = QuorumParams {
                    r,
                    ..QuorumParams::default()
                };
                Box::pin(async move { (placed, n.coordinator.get(ns, k, quorum).await) })
            })
            .await;
        let shown = match got.as_ref().map(|(_, g)| g) {
            None => "no answer".to_string(),
            Some(Ok(GetOutcome::Found { values, .. })) => {
                format!("found {} value(s), {} elements", values.len(), union_of(values).len())
            }
            Some(Ok(GetOutcome::NotFound { .. })) => "not found".to_string(),
            Some(Err(e)) => format!("error {}", e.code()),
        };
        self.trace(format!("n{} get {key} (from {start} ms): {shown}", i + 1));
        got
    }

    pub async fn put(
        &self,
        i: usize,
        key: &str,
        value: Option<Bytes>,
        context: Option<Context>,
    ) -> Option<Result<Context, ApiError>> {
        let k = Key::new(key.to_string()).unwrap();
        let ns = self.namespace();
        let start = self.now_ms();
        let what = match &value {
            Some(v) => format!("put {key} ({} elements)", decode_set(v).len()),
            None => format!("delete {key}"),
        };
        let got = self
            .client(i, move |n| {
                Box::pin(async move {
                    n.coordinator
                        .write(ns, k, value, context, QuorumParams::default())
                        .await
                })
            })
            .await;
        let shown = match &got {
            None => "no answer".to_string(),
            Some(Ok(_)) => "ok".to_string(),
            Some(Err(e)) => format!("error {}", e.code()),
        };
        self.trace(format!("n{} {what} (from {start} ms): {shown}", i + 1));
        got
    }
}

/// The index of node `nK`.
fn index_of(id: &dynakv_ring::NodeId) -> usize {
    id.as_str()[1..]
        .parse::<usize>()
        .expect("simulated node ids are n1, n2, ...")
        - 1
}

// ---- the network ---------------------------------------------------------------------

/// What happens to one message on the wire.
struct Fate {
    lost: bool,
    delay: Duration,
    /// Delivered a second time after this delay.
    duplicate: Option<Duration>,
}

impl Inner {
    fn fate(&self, from: usize, to: usize, what: &'static str, answer: bool, bytes: usize) -> Fate {
        let (lo, hi) = self.config.delay_ms;
        let mut net = self.net.lock();
        let cut = net.cuts.contains(&(from.min(to), from.max(to))) || net.deaf.contains(&(to, what));
        let (loss, dup) = (net.loss, net.duplicate);
        let lost = cut || net.rng.random_bool(loss);
        let delay = Duration::from_millis(net.rng.random_range(lo..=hi));
        let duplicate =
            (!lost && net.rng.random_bool(dup)).then(|| Duration::from_millis(net.rng.random_range(lo..=hi * 3)));
        net.stats.sent += 1;
        net.stats.bytes += bytes as u64;
        net.stats.lost += lost as u64;
        net.stats.duplicated += duplicate.is_some() as u64;
        let verb = net.stats.by_verb.entry((what, answer)).or_default();
        verb.0 += 1;
        verb.1 += bytes as u64;
        let event = format!("{from}>{to} {what} {answer} {bytes} {lost} {delay:?} {duplicate:?}");
        net.digest.update(event.as_bytes());
        Fate { lost, delay, duplicate }
    }

    fn is_cut(&self, a: usize, b: usize) -> bool {
        self.net.lock().cuts.contains(&(a.min(b), a.max(b)))
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Carries a request from `from` to `to`, then its answer back into `reply`.
    fn send_request(
        self: &Arc<Self>,
        from: usize,
        to: usize,
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<Reply, RpcError>>,
    ) {
        let req: Request = message::decode(&bytes).expect("requests decode");
        let fate = self.fate(from, to, req.verb(), false, bytes.len());
        if fate.lost {
            return;
        }
        let get_key = match &req {
            // The key without its namespace: a workload runs in one.
            Request::Get(g) => Some(dynakv_ring::item::split(&g.key).1.to_string()),
            _ => None,
        };
        let sent_ms = self.now_ms();
        let sent = bytes.len() as u64;
        let bytes = Arc::new(bytes);
        if let Some(after) = fate.duplicate {
            let (this, bytes) = (self.clone(), bytes.clone());
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                // The copy's answer goes nowhere: its sender had it already or gave up.
                let (dummy, _) = oneshot::channel();
                this.arrive(from, to, &bytes, dummy, None, sent, sent_ms);
            });
        }
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(fate.delay).await;
            this.arrive(from, to, &bytes, reply, get_key, sent, sent_ms);
        });
    }

    /// A request reaching `to`.
    #[allow(clippy::too_many_arguments)]
    fn arrive(
        self: &Arc<Self>,
        from: usize,
        to: usize,
        bytes: &[u8],
        reply: oneshot::Sender<Result<Reply, RpcError>>,
        get_key: Option<String>,
        sent: u64,
        sent_ms: u64,
    ) {
        if self.is_cut(from, to) {
            return;
        }
        let (node, gate, caller_incarnation) = {
            let slot = self.slots[to].lock();
            let caller = self.slots[from].lock().incarnation;
            match &slot.node {
                Some(node) => (node.clone(), slot.gate.clone(), caller),
                None => {
                    // Nobody listens there: the connection is refused.
                    let _ = reply.send(Err(RpcError::Connect {
                        addr: addr(to),
                        detail: "connection refused".into(),
                    }));
                    return;
                }
            }
        };
        let req: Request = message::decode(bytes).expect("requests decode");
        let verb = req.verb();
        let this = self.clone();
        gate.spawn(async move {
            let answer = if req.streamable() {
                node.peer.handle_batch(vec![req]).await.pop().expect("one answer")
            } else {
                node.peer.handle(req).await
            };
            let wire: Result<Answer, WireError> = answer;
            let bytes = message::encode(&wire);
            let fate = this.fate(to, from, verb, true, bytes.len());
            if fate.lost {
                return;
            }
            let this2 = this.clone();
            tokio::spawn(async move {
                tokio::time::sleep(fate.delay).await;
                if this2.is_cut(from, to) || this2.slots[from].lock().incarnation != caller_incarnation {
                    return;
                }
                let answered_ms = this2.now_ms();
                let wire: Result<Answer, WireError> = message::decode(&bytes).expect("answers decode");
                if let Some(key) = get_key {
                    let line = format!(
                        "{:>7} ms  n{} answers n{}'s read of {key}",
                        answered_ms,
                        to + 1,
                        from + 1
                    );
                    this2.trace.lock().push(line);
                    this2.net.lock().gets.push(GetRecord {
                        from,
                        to,
                        key,
                        sent_ms,
                        answered_ms: Some(answered_ms),
                    });
                }
                let result = match wire {
                    Ok(answer) => Ok(Reply {
                        answer,
                        traffic: Traffic {
                            sent,
                            received: bytes.len() as u64,
                        },
                    }),
                    Err(e) => Err(RpcError::Remote {
                        addr: addr(to),
                        error: e,
                    }),
                };
                let _ = reply.send(result);
            });
        });
    }
}

/// A node's end of the simulated network.
struct SimTransport {
    world: Weak<Inner>,
    from: usize,
}

impl Transport for SimTransport {
    fn send(&self, to_addr: &str, req: Request, timeout: Duration) -> BoxFuture<'static, Result<Reply, RpcError>> {
        let to_addr = to_addr.to_string();
        let (world, from) = (self.world.clone(), self.from);
        Box::pin(async move {
            let world = world.upgrade().ok_or_else(|| RpcError::Transport {
                addr: to_addr.clone(),
                detail: "the simulation ended".into(),
            })?;
            let Some(to) = (0..world.config.nodes).find(|&i| addr(i) == to_addr) else {
                return Err(RpcError::Connect {
                    addr: to_addr,
                    detail: "no such host".into(),
                });
            };
            let (tx, rx) = oneshot::channel();
            let req = if world.config.mutation == Mutation::ForgetLayout {
                forget_layout(req)
            } else {
                req
            };
            world.send_request(from, to, message::encode(&req), tx);
            drop(world);
            // A message lost on the way looks like silence, not an error.
            let answer = async {
                match rx.await {
                    Ok(r) => r,
                    Err(_) => futures::future::pending().await,
                }
            };
            match tokio::time::timeout(timeout, answer).await {
                Ok(r) => r,
                Err(_) => Err(RpcError::Timeout { addr: to_addr, timeout }),
            }
        })
    }
}

/// `req` with the layout version it names zeroed (the [`Mutation::ForgetLayout`] wire).
fn forget_layout(mut req: Request) -> Request {
    match &mut req {
        Request::Merge(m) => m.layout = 0,
        Request::MergeHint(m) => m.layout = 0,
        Request::MergeBatch(m) => m.layout = 0,
        Request::Coordinate(m) => m.layout = 0,
        _ => {}
    }
    req
}
