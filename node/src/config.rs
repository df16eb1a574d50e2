//! Node settings: command-line flags, `DYNAKV_*` environment variables and a TOML file,
//! in that order of precedence, over defaults; checked before the node starts.
//!
//! Why this file is long: each of the node's 40-odd settings is declared three times (a
//! flag, a TOML key, the resolved value) with its check. One table per setting from which
//! all three come is the planned cure (ARCHITECTURE.md).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use dynakv_crdt::ConflictMode;
use dynakv_ring::NodeId;
use dynakv_ring::ring::{DEFAULT_PARTITION_BITS, DEFAULT_TOKENS, MAX_PARTITION_BITS, MAX_TOKENS};
use serde::Deserialize;

/// Flags of `dynakv node`. Each also reads an environment variable; values given neither
/// way come from `--config` or the defaults.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct NodeArgs {
    /// TOML file with any of the settings below (snake_case keys).
    #[arg(long, env = "DYNAKV_CONFIG")]
    pub config: Option<PathBuf>,
    /// Node name [default: the one stored in the data dir, else n-<random>].
    #[arg(long, env = "DYNAKV_ID")]
    pub id: Option<String>,
    /// Address to serve on [default: 127.0.0.1:7001].
    #[arg(long, env = "DYNAKV_LISTEN")]
    pub listen: Option<String>,
    /// Address clients use to reach this one, host:port, as listed to them
    /// [default: the listen address; with a wildcard listen address, the cluster
    /// advertise host with the client port].
    #[arg(long, env = "DYNAKV_ADVERTISE")]
    pub advertise: Option<String>,
    /// Address of the cluster port, where nodes talk to each other [default: the listen
    /// address with its port + 1000].
    #[arg(long, env = "DYNAKV_CLUSTER_LISTEN")]
    pub cluster_listen: Option<String>,
    /// Address other nodes use to reach this one's cluster port, host:port [default: the
    /// cluster listen address; with a wildcard one, the advertise host with the cluster port].
    #[arg(long, env = "DYNAKV_CLUSTER_ADVERTISE")]
    pub cluster_advertise: Option<String>,
    /// File holding the cluster secret (at least 16 bytes; `dynakv certs secret` makes
    /// one): peers must prove they hold it before anything they send is handled.
    #[arg(long, env = "DYNAKV_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// strict (only peers that prove the secret) or transitional (prove it where the
    /// peer can check it, but also accept and reach peers without one, while a running
    /// cluster switches over) [default: strict].
    #[arg(long, env = "DYNAKV_CLUSTER_AUTH")]
    pub cluster_auth: Option<String>,
    /// Run without a cluster secret: any host that reaches the cluster port can read and
    /// write every replica. Only for trusted networks [default: false].
    #[arg(long, env = "DYNAKV_INSECURE", num_args = 0..=1, default_missing_value = "true")]
    pub insecure: Option<String>,
    /// Directory with ca.crt, node.crt and node.key (`dynakv certs`): turns on mutual TLS
    /// on the cluster port.
    #[arg(long, env = "DYNAKV_CERTS_DIR")]
    pub certs_dir: Option<PathBuf>,
    /// Serve the client port over TLS too, with the node certificate of certs-dir [default: false].
    #[arg(long, env = "DYNAKV_CLIENT_TLS")]
    pub client_tls: Option<String>,
    /// With client-tls: clients must show a certificate signed by the cluster CA
    /// (`dynakv certs client`) [default: false].
    #[arg(long, env = "DYNAKV_CLIENT_CERT_REQUIRED")]
    pub client_cert_required: Option<String>,
    /// File of API tokens with their scopes (read, write, admin); when given, every
    /// client request but /health needs `Authorization: Bearer <token>`.
    #[arg(long, env = "DYNAKV_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Largest message accepted from a peer, in bytes [default: max-value-bytes ×
    /// (max-siblings × n + 16), at least 256 MiB].
    #[arg(long, env = "DYNAKV_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<String>,
    /// Client connections served at once; more are answered 503 `overloaded` [default: 4096].
    #[arg(long, env = "DYNAKV_MAX_CONNECTIONS")]
    pub max_connections: Option<String>,
    /// Requests in flight on one client connection (HTTP/2); more are answered 503
    /// `overloaded` [default: 256].
    #[arg(long, env = "DYNAKV_MAX_REQUESTS_PER_CONNECTION")]
    pub max_requests_per_connection: Option<String>,
    /// Threads that serve requests (the async runtime's workers) [default: one per core].
    #[arg(long, env = "DYNAKV_WORKERS")]
    pub workers: Option<String>,
    /// Where RocksDB and the node's identity live [default: ./data].
    #[arg(long, env = "DYNAKV_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Comma-separated cluster addresses (host:port of cluster ports) of nodes to join
    /// through (may include this node).
    #[arg(long, env = "DYNAKV_SEEDS")]
    pub seeds: Option<String>,
    /// Replicas per key [default: 3].
    #[arg(long, env = "DYNAKV_N")]
    pub n: Option<String>,
    /// Replies a read waits for [default: 2].
    #[arg(long, env = "DYNAKV_R")]
    pub r: Option<String>,
    /// Acknowledgements a write waits for [default: 2].
    #[arg(long, env = "DYNAKV_W")]
    pub w: Option<String>,
    /// mv (keep concurrent writes as siblings) or lww (last writer wins) [default: mv].
    #[arg(long, env = "DYNAKV_CONFLICT")]
    pub conflict: Option<String>,
    /// Milliseconds between gossip rounds [default: 1000].
    #[arg(long, env = "DYNAKV_GOSSIP_INTERVAL_MS")]
    pub gossip_interval_ms: Option<String>,
    /// Silence before a member is suspect, in a cluster of up to 3 members; one gossip
    /// interval more per doubling of the cluster beyond [default: 3 gossip intervals].
    #[arg(long, env = "DYNAKV_SUSPECT_AFTER_MS")]
    pub suspect_after_ms: Option<String>,
    /// Silence before a member is dead and skipped by requests, scaled like
    /// suspect-after-ms [default: 6 gossip intervals].
    #[arg(long, env = "DYNAKV_DEAD_AFTER_MS")]
    pub dead_after_ms: Option<String>,
    /// Milliseconds a client request may take before it fails [default: 2000].
    #[arg(long, env = "DYNAKV_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<String>,
    /// Longest pause, in ms, while a client sends a request's headers or body: a stalled
    /// body is answered 408 `body_timeout`, stalled headers close the connection [default: 10000].
    #[arg(long, env = "DYNAKV_READ_TIMEOUT_MS")]
    pub read_timeout_ms: Option<String>,
    /// Largest value accepted, in bytes [default: 1048576].
    #[arg(long, env = "DYNAKV_MAX_VALUE_BYTES")]
    pub max_value_bytes: Option<String>,
    /// Most concurrent values (siblings) a key may hold in mv mode; a blind write that
    /// would add one more is refused with 409 `too_many_siblings` [default: 100].
    #[arg(long, env = "DYNAKV_MAX_SIBLINGS")]
    pub max_siblings: Option<String>,
    /// Virtual nodes of this node on the ring (its relative capacity) [default: 128].
    #[arg(long, env = "DYNAKV_TOKENS")]
    pub tokens: Option<String>,
    /// The ring has 2^bits partitions; the same on every node [default: 10].
    #[arg(long, env = "DYNAKV_PARTITION_BITS")]
    pub partition_bits: Option<String>,
    /// Name of the cluster; nodes of different clusters refuse each other's gossip [default: dynakv].
    #[arg(long, env = "DYNAKV_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// fsync the write-ahead log before acknowledging each write (survives power loss, slower) [default: false].
    #[arg(long, env = "DYNAKV_SYNC_WRITES")]
    pub sync_writes: Option<String>,
    /// Megabytes of the data directory's disk kept free: below them, writes of data and
    /// hints are refused with 507 insufficient_storage (reads go on) until space is freed; 0: no reserve [default: 128].
    #[arg(long, env = "DYNAKV_MIN_FREE_MB")]
    pub min_free_mb: Option<String>,
    /// Replica writes on a thread of their own, committed in groups, instead of on the
    /// request threads; isolates requests from RocksDB write stalls at the cost of a
    /// thread hand-off per write [default: false].
    #[arg(long, env = "DYNAKV_COMMIT_THREAD")]
    pub commit_thread: Option<String>,
    /// Let the next live nodes on the ring stand in for dead or silent replicas, holding hints [default: true].
    #[arg(long, env = "DYNAKV_SLOPPY_QUORUM")]
    pub sloppy_quorum: Option<String>,
    /// A read asks only R replicas (this node first when it holds the key) and the
    /// others when one fails or after this many milliseconds without a quorum; 0 asks
    /// every replica at once, so read repair checks them all, at the cost of one more
    /// replica read per read [default: 5].
    #[arg(long, env = "DYNAKV_READ_SPECULATE_MS")]
    pub read_speculate_ms: Option<String>,
    /// Record request and replica-call metrics for GET /metrics and the web view; false leaves only the figures read at scrape time [default: true].
    #[arg(long, env = "DYNAKV_METRICS")]
    pub metrics: Option<String>,
    /// Milliseconds between Merkle-tree exchanges with each co-replica; 0 turns them off [default: 30000].
    #[arg(long, env = "DYNAKV_ANTI_ENTROPY_INTERVAL_MS")]
    pub anti_entropy_interval_ms: Option<String>,
    /// Keys anti-entropy may repair per second, so a long outage's backlog does not starve clients [default: 5000].
    #[arg(long, env = "DYNAKV_ANTI_ENTROPY_KEYS_PER_SEC")]
    pub anti_entropy_keys_per_sec: Option<String>,
    /// Milliseconds between attempts to hand hints over to their owners [default: 1000].
    #[arg(long, env = "DYNAKV_HANDOFF_INTERVAL_MS")]
    pub handoff_interval_ms: Option<String>,
    /// How long a node keeps a tombstone before it may collect it (once every replica has it) [default: 3600000].
    #[arg(long, env = "DYNAKV_TOMBSTONE_GRACE_MS")]
    pub tombstone_grace_ms: Option<String>,
    /// A fresh node stages and commits its own join to the cluster's layout [default: true].
    #[arg(long, env = "DYNAKV_AUTO_JOIN")]
    pub auto_join: Option<String>,
    /// Partitions this node fetches at once when it gains partitions in a new layout [default: 2].
    #[arg(long, env = "DYNAKV_HANDOFF_CONCURRENCY")]
    pub handoff_concurrency: Option<String>,
    /// Bytes per second this node fetches, over all its partition transfers; 0: no limit [default: 0].
    #[arg(long, env = "DYNAKV_HANDOFF_BYTES_PER_SEC")]
    pub handoff_bytes_per_sec: Option<String>,
    /// How often a node with a settled layout looks again for partitions it no longer replicates, to delete its copies (at once after each layout change) [default: 30000].
    #[arg(long, env = "DYNAKV_DROP_SWEEP_MS")]
    pub drop_sweep_ms: Option<String>,
}

/// The same settings in a TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    id: Option<String>,
    listen: Option<String>,
    advertise: Option<String>,
    cluster_listen: Option<String>,
    cluster_advertise: Option<String>,
    cluster_secret_file: Option<PathBuf>,
    cluster_auth: Option<String>,
    insecure: Option<bool>,
    certs_dir: Option<PathBuf>,
    client_tls: Option<bool>,
    client_cert_required: Option<bool>,
    tokens_file: Option<PathBuf>,
    max_message_bytes: Option<u64>,
    max_connections: Option<u64>,
    max_requests_per_connection: Option<u64>,
    workers: Option<u64>,
    data_dir: Option<PathBuf>,
    seeds: Option<Vec<String>>,
    n: Option<u64>,
    r: Option<u64>,
    w: Option<u64>,
    conflict: Option<String>,
    gossip_interval_ms: Option<u64>,
    suspect_after_ms: Option<u64>,
    dead_after_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    read_timeout_ms: Option<u64>,
    max_value_bytes: Option<u64>,
    max_siblings: Option<u64>,
    tokens: Option<u64>,
    partition_bits: Option<u64>,
    cluster_name: Option<String>,
    sync_writes: Option<bool>,
    min_free_mb: Option<u64>,
    commit_thread: Option<bool>,
    sloppy_quorum: Option<bool>,
    read_speculate_ms: Option<u64>,
    metrics: Option<bool>,
    anti_entropy_interval_ms: Option<u64>,
    anti_entropy_keys_per_sec: Option<u64>,
    handoff_interval_ms: Option<u64>,
    tombstone_grace_ms: Option<u64>,
    auto_join: Option<bool>,
    handoff_concurrency: Option<u64>,
    handoff_bytes_per_sec: Option<u64>,
    drop_sweep_ms: Option<u64>,
}

/// Checked settings of a node.
#[derive(Clone, Debug)]
pub struct Config {
    /// `None`: use the id stored in the data dir, or make one up on first start.
    pub id: Option<NodeId>,
    pub listen: SocketAddr,
    /// The client address, as listed to clients.
    pub advertise: String,
    pub cluster_listen: SocketAddr,
    /// The cluster address: this node's address as other nodes know it.
    pub cluster_advertise: String,
    /// `None` with `insecure`: no secret.
    pub cluster_secret: Option<Secret>,
    pub cluster_auth: ClusterAuth,
    pub insecure: bool,
    pub certs_dir: Option<PathBuf>,
    pub client_tls: bool,
    pub client_cert_required: bool,
    pub tokens_file: Option<PathBuf>,
    pub max_message_bytes: usize,
    pub max_connections: usize,
    pub max_requests_per_connection: usize,
    pub workers: usize,
    pub data_dir: PathBuf,
    pub seeds: Vec<String>,
    pub n: usize,
    pub r: usize,
    pub w: usize,
    pub conflict: ConflictMode,
    pub gossip_interval: Duration,
    pub suspect_after: Duration,
    pub dead_after: Duration,
    pub request_timeout: Duration,
    pub read_timeout: Duration,
    pub max_value_bytes: usize,
    pub max_siblings: usize,
    pub tokens: u32,
    pub partition_bits: u8,
    pub cluster_name: String,
    pub sync_writes: bool,
    /// Bytes of the data directory's disk kept free.
    pub min_free_bytes: u64,
    pub commit_thread: bool,
    pub sloppy_quorum: bool,
    pub read_speculate: Duration,
    pub metrics: bool,
    /// `None`: anti-entropy exchanges are off.
    pub anti_entropy_interval: Option<Duration>,
    pub anti_entropy_keys_per_sec: u32,
    pub handoff_interval: Duration,
    pub tombstone_grace: Duration,
    pub auto_join: bool,
    pub handoff_concurrency: usize,
    pub handoff_bytes_per_sec: u64,
    pub drop_sweep: Duration,
}

/// The cluster secret's bytes; never printed.
#[derive(Clone)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// How a node with a cluster secret treats peers without one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterAuth {
    Strict,
    Transitional,
}

/// Shortest cluster secret accepted.
pub const MIN_SECRET_BYTES: usize = 16;

/// Largest replication factor accepted.
pub const MAX_N: usize = 16;
/// Largest value limit accepted.
pub const MAX_VALUE_LIMIT: usize = 64 << 20;
/// Shortest read timeout accepted.
pub const MIN_READ_TIMEOUT_MS: u64 = 1000;
/// Largest sibling cap accepted.
pub const MAX_SIBLINGS_LIMIT: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid setting `{setting}` = {value:?}: {reason}")]
    Invalid {
        setting: &'static str,
        value: String,
        reason: String,
    },
    #[error("invalid setting `config` = {path:?}: {reason}")]
    File { path: PathBuf, reason: String },
}

/// `value` if it lies in `lo..=hi`, else an error naming `setting` and the range.
fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    setting: &'static str,
    value: T,
    lo: T,
    hi: T,
) -> Result<T, ConfigError> {
    if value < lo || value > hi {
        return Err(invalid(setting, value, format!("must be between {lo} and {hi}")));
    }
    Ok(value)
}

fn invalid(setting: &'static str, value: impl ToString, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Flag/env value if given, else the file's, else `default`; strings parsed as `T`.
fn pick<T: FromStr>(setting: &'static str, arg: Option<String>, file: Option<T>, default: T) -> Result<T, ConfigError> {
    match arg {
        Some(s) => s.trim().parse().map_err(|_| {
            let expected = if std::any::type_name::<T>() == "bool" {
                "expected true or false"
            } else {
                "expected a whole number"
            };
            invalid(setting, &s, expected)
        }),
        None => Ok(file.unwrap_or(default)),
    }
}

fn narrow<T: TryFrom<u64>>(setting: &'static str, v: Option<u64>) -> Result<Option<T>, ConfigError> {
    v.map(|v| T::try_from(v).map_err(|_| invalid(setting, v, "out of range")))
        .transpose()
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::File {
        path: path.to_path_buf(),
        reason: e.message().replace('\n', " "),
    })
}

impl Config {
    /// Resolves flags, environment, file and defaults into checked settings. Does not
    /// touch the data directory; see [`Config::check_data_dir`].
    pub fn load(args: NodeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(p) => load_file(p)?,
            None => FileConfig::default(),
        };
        let id = match args.id.or(file.id) {
            Some(s) => Some(NodeId::new(s.trim()).map_err(|e| invalid("id", &s, e.to_string()))?),
            None => None,
        };
        let listen_raw = args.listen.or(file.listen).unwrap_or_else(|| "127.0.0.1:7001".into());
        let listen: SocketAddr = listen_raw
            .trim()
            .parse()
            .map_err(|_| invalid("listen", &listen_raw, "expected ip:port, e.g. 127.0.0.1:7001"))?;
        let cluster_listen = match args.cluster_listen.or(file.cluster_listen) {
            Some(raw) => raw
                .trim()
                .parse::<SocketAddr>()
                .map_err(|_| invalid("cluster-listen", &raw, "expected ip:port, e.g. 127.0.0.1:8001"))?,
            None => {
                let port = listen
                    .port()
                    .checked_add(1000)
                    .filter(|_| listen.port() != 0)
                    .ok_or_else(|| {
                        invalid(
                            "cluster-listen",
                            "",
                            format!("required: the listen port {} + 1000 is not a port", listen.port()),
                        )
                    })?;
                SocketAddr::new(listen.ip(), port)
            }
        };
        if cluster_listen == listen {
            return Err(invalid(
                "cluster-listen",
                cluster_listen,
                "must differ from the listen address (clients and nodes use separate ports)",
            ));
        }
        let given_advertise = args.advertise.or(file.advertise);
        let given_cluster_advertise = args.cluster_advertise.or(file.cluster_advertise);
        for (setting, v) in [
            ("advertise", &given_advertise),
            ("cluster-advertise", &given_cluster_advertise),
        ] {
            if let Some(a) = v {
                check_host_port(a).map_err(|r| invalid(setting, a, r))?;
            }
        }
        let host_of = |a: &str| {
            a.trim()
                .rsplit_once(':')
                .map(|(h, _)| h.to_string())
                .unwrap_or_default()
        };
        let cluster_advertise = match (&given_cluster_advertise, &given_advertise) {
            (Some(c), _) => c.trim().to_string(),
            (None, _) if !cluster_listen.ip().is_unspecified() => cluster_listen.to_string(),
            (None, Some(a)) => format!("{}:{}", host_of(a), cluster_listen.port()),
            (None, None) => {
                return Err(invalid(
                    "cluster-advertise",
                    "",
                    format!(
                        "required when the cluster port listens on {cluster_listen}: other nodes need an address they can reach"
                    ),
                ));
            }
        };
        let advertise = match given_advertise {
            Some(a) => a.trim().to_string(),
            None if listen.ip().is_unspecified() => format!("{}:{}", host_of(&cluster_advertise), listen.port()),
            None => listen.to_string(),
        };
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./data"));
        let seeds: Vec<String> = match args.seeds {
            Some(s) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            None => file.seeds.unwrap_or_default(),
        };
        for s in &seeds {
            check_host_port(s).map_err(|r| invalid("seeds", s, r))?;
        }
        let n: usize = pick("n", args.n, narrow("n", file.n)?, 3)?;
        let r: usize = pick("r", args.r, narrow("r", file.r)?, 2)?;
        let w: usize = pick("w", args.w, narrow("w", file.w)?, 2)?;
        in_range("n", n, 1, MAX_N)?;
        if r == 0 || r > n {
            return Err(invalid("r", r, format!("must be between 1 and n ({n})")));
        }
        if w == 0 || w > n {
            return Err(invalid("w", w, format!("must be between 1 and n ({n})")));
        }
        let conflict_raw = args.conflict.or(file.conflict).unwrap_or_else(|| "mv".into());
        let conflict: ConflictMode = conflict_raw
            .trim()
            .parse()
            .map_err(|_| invalid("conflict", &conflict_raw, "expected mv or lww"))?;
        let gossip_ms: u64 = pick(
            "gossip-interval-ms",
            args.gossip_interval_ms,
            file.gossip_interval_ms,
            1000,
        )?;
        in_range("gossip-interval-ms", gossip_ms, 10, 60_000)?;
        let suspect_ms: u64 = pick(
            "suspect-after-ms",
            args.suspect_after_ms,
            file.suspect_after_ms,
            3 * gossip_ms,
        )?;
        let dead_ms: u64 = pick("dead-after-ms", args.dead_after_ms, file.dead_after_ms, 6 * gossip_ms)?;
        if suspect_ms < gossip_ms {
            return Err(invalid(
                "suspect-after-ms",
                suspect_ms,
                format!("must be at least the gossip interval ({gossip_ms} ms)"),
            ));
        }
        if dead_ms <= suspect_ms {
            return Err(invalid(
                "dead-after-ms",
                dead_ms,
                format!("must be greater than suspect-after-ms ({suspect_ms})"),
            ));
        }
        let timeout_ms: u64 = pick(
            "request-timeout-ms",
            args.request_timeout_ms,
            file.request_timeout_ms,
            2000,
        )?;
        in_range("request-timeout-ms", timeout_ms, 1, 600_000)?;
        let read_timeout_ms: u64 = pick("read-timeout-ms", args.read_timeout_ms, file.read_timeout_ms, 10_000)?;
        in_range("read-timeout-ms", read_timeout_ms, MIN_READ_TIMEOUT_MS, 600_000)?;
        let max_value_bytes: usize = pick(
            "max-value-bytes",
            args.max_value_bytes,
            narrow("max-value-bytes", file.max_value_bytes)?,
            1 << 20,
        )?;
        in_range("max-value-bytes", max_value_bytes, 1, MAX_VALUE_LIMIT)?;
        let max_siblings: usize = pick(
            "max-siblings",
            args.max_siblings,
            narrow("max-siblings", file.max_siblings)?,
            100,
        )?;
        in_range("max-siblings", max_siblings, 1, MAX_SIBLINGS_LIMIT)?;
        let tokens: u32 = pick("tokens", args.tokens, narrow("tokens", file.tokens)?, DEFAULT_TOKENS)?;
        in_range("tokens", tokens, 1, MAX_TOKENS)?;
        let partition_bits: u8 = pick(
            "partition-bits",
            args.partition_bits,
            narrow("partition-bits", file.partition_bits)?,
            DEFAULT_PARTITION_BITS,
        )?;
        in_range("partition-bits", partition_bits, 1, MAX_PARTITION_BITS)?;
        let cluster_name = args
            .cluster_name
            .or(file.cluster_name)
            .unwrap_or_else(|| "dynakv".into());
        if cluster_name.trim().is_empty() || cluster_name.len() > 128 {
            return Err(invalid("cluster-name", &cluster_name, "must be 1 to 128 characters"));
        }
        let sync_writes: bool = pick("sync-writes", args.sync_writes, file.sync_writes, false)?;
        let min_free_mb: u64 = pick("min-free-mb", args.min_free_mb, file.min_free_mb, 128)?;
        in_range("min-free-mb", min_free_mb, 0, 1 << 30)?;
        let commit_thread: bool = pick("commit-thread", args.commit_thread, file.commit_thread, false)?;
        let sloppy_quorum: bool = pick("sloppy-quorum", args.sloppy_quorum, file.sloppy_quorum, true)?;
        let read_speculate_ms: u64 = pick("read-speculate-ms", args.read_speculate_ms, file.read_speculate_ms, 5)?;
        in_range("read-speculate-ms", read_speculate_ms, 0, 600_000)?;
        let metrics: bool = pick("metrics", args.metrics, file.metrics, true)?;
        let aae_ms: u64 = pick(
            "anti-entropy-interval-ms",
            args.anti_entropy_interval_ms,
            file.anti_entropy_interval_ms,
            30_000,
        )?;
        if aae_ms != 0 && !(100..=86_400_000).contains(&aae_ms) {
            return Err(invalid(
                "anti-entropy-interval-ms",
                aae_ms,
                "must be 0 (off) or between 100 and 86400000",
            ));
        }
        let aae_rate: u32 = pick(
            "anti-entropy-keys-per-sec",
            args.anti_entropy_keys_per_sec,
            narrow("anti-entropy-keys-per-sec", file.anti_entropy_keys_per_sec)?,
            5_000,
        )?;
        if aae_rate == 0 {
            return Err(invalid("anti-entropy-keys-per-sec", aae_rate, "must be at least 1"));
        }
        let handoff_ms: u64 = pick(
            "handoff-interval-ms",
            args.handoff_interval_ms,
            file.handoff_interval_ms,
            1_000,
        )?;
        in_range("handoff-interval-ms", handoff_ms, 10, 3_600_000)?;
        let grace_ms: u64 = pick(
            "tombstone-grace-ms",
            args.tombstone_grace_ms,
            file.tombstone_grace_ms,
            3_600_000,
        )?;
        if grace_ms < 100 {
            return Err(invalid("tombstone-grace-ms", grace_ms, "must be at least 100"));
        }
        let auto_join: bool = pick("auto-join", args.auto_join, file.auto_join, true)?;
        let handoff_concurrency: u64 = pick(
            "handoff-concurrency",
            args.handoff_concurrency,
            file.handoff_concurrency,
            2,
        )?;
        in_range("handoff-concurrency", handoff_concurrency, 1, 64)?;
        let handoff_bytes_per_sec: u64 = pick(
            "handoff-bytes-per-sec",
            args.handoff_bytes_per_sec,
            file.handoff_bytes_per_sec,
            0,
        )?;
        let drop_sweep_ms: u64 = pick("drop-sweep-ms", args.drop_sweep_ms, file.drop_sweep_ms, 30_000)?;
        in_range("drop-sweep-ms", drop_sweep_ms, 100, 86_400_000)?;
        let insecure: bool = pick("insecure", args.insecure, file.insecure, false)?;
        let secret_file = args.cluster_secret_file.or(file.cluster_secret_file);
        let cluster_secret = match &secret_file {
            Some(path) => {
                let bad = |reason: String| invalid("cluster-secret-file", path.display(), reason);
                let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
                let secret = bytes.trim_ascii().to_vec();
                if secret.len() < MIN_SECRET_BYTES {
                    return Err(bad(format!(
                        "the secret is {} bytes; use at least {MIN_SECRET_BYTES} (dynakv certs secret --out FILE makes one)",
                        secret.len()
                    )));
                }
                Some(Secret(secret))
            }
            None => None,
        };
        if insecure && cluster_secret.is_some() {
            return Err(invalid(
                "insecure",
                "true",
                "cannot be combined with cluster-secret-file: drop one",
            ));
        }
        let auth_raw = args
            .cluster_auth
            .or(file.cluster_auth)
            .unwrap_or_else(|| "strict".into());
        let cluster_auth = match auth_raw.trim() {
            "strict" => ClusterAuth::Strict,
            "transitional" => ClusterAuth::Transitional,
            _ => return Err(invalid("cluster-auth", &auth_raw, "expected strict or transitional")),
        };
        if cluster_auth == ClusterAuth::Transitional && cluster_secret.is_none() {
            return Err(invalid(
                "cluster-auth",
                "transitional",
                "needs cluster-secret-file (the secret it proves to peers that hold it)",
            ));
        }
        if cluster_secret.is_none() && !insecure && seeds.iter().any(|s| s.trim() != cluster_advertise) {
            return Err(invalid(
                "cluster-secret-file",
                "",
                "required to join other nodes (seeds): without it anyone who reaches the cluster port \
                 could read and write every replica. Make one with `dynakv certs secret --out FILE`, \
                 or pass --insecure on a trusted network",
            ));
        }
        let certs_dir = args.certs_dir.or(file.certs_dir);
        let client_tls: bool = pick("client-tls", args.client_tls, file.client_tls, false)?;
        if client_tls && certs_dir.is_none() {
            return Err(invalid(
                "client-tls",
                "true",
                "needs certs-dir (its node.crt and node.key)",
            ));
        }
        let client_cert_required: bool = pick(
            "client-cert-required",
            args.client_cert_required,
            file.client_cert_required,
            false,
        )?;
        if client_cert_required && !client_tls {
            return Err(invalid("client-cert-required", "true", "needs client-tls"));
        }
        if let Some(dir) = &certs_dir {
            crate::tls::Material::load(dir).map_err(|e| invalid("certs-dir", dir.display(), e))?;
        }
        let tokens_file = args.tokens_file.or(file.tokens_file);
        if let Some(path) = &tokens_file {
            dynakv_http_api::auth::Tokens::load(path).map_err(|e| invalid("tokens-file", path.display(), e))?;
        }
        let max_message_bytes: usize = pick(
            "max-message-bytes",
            args.max_message_bytes,
            narrow("max-message-bytes", file.max_message_bytes)?,
            message_limit(max_value_bytes, n, max_siblings),
        )?;
        in_range("max-message-bytes", max_message_bytes, 1 << 20, u32::MAX as usize)?;
        let max_connections: usize = pick(
            "max-connections",
            args.max_connections,
            narrow("max-connections", file.max_connections)?,
            4096,
        )?;
        in_range("max-connections", max_connections, 1, 1 << 20)?;
        let max_requests_per_connection: usize = pick(
            "max-requests-per-connection",
            args.max_requests_per_connection,
            narrow("max-requests-per-connection", file.max_requests_per_connection)?,
            256,
        )?;
        in_range("max-requests-per-connection", max_requests_per_connection, 1, 65_536)?;
        let workers: usize = pick(
            "workers",
            args.workers,
            narrow("workers", file.workers)?,
            default_workers(),
        )?;
        in_range("workers", workers, 1, 1024)?;
        Ok(Config {
            id,
            listen,
            advertise,
            cluster_listen,
            cluster_advertise,
            cluster_secret,
            cluster_auth,
            insecure,
            certs_dir,
            client_tls,
            client_cert_required,
            tokens_file,
            max_message_bytes,
            max_connections,
            max_requests_per_connection,
            workers,
            data_dir,
            seeds,
            n,
            r,
            w,
            conflict,
            gossip_interval: Duration::from_millis(gossip_ms),
            suspect_after: Duration::from_millis(suspect_ms),
            dead_after: Duration::from_millis(dead_ms),
            request_timeout: Duration::from_millis(timeout_ms),
            read_timeout: Duration::from_millis(read_timeout_ms),
            max_value_bytes,
            max_siblings,
            tokens,
            partition_bits,
            cluster_name: cluster_name.trim().to_string(),
            sync_writes,
            min_free_bytes: min_free_mb << 20,
            commit_thread,
            sloppy_quorum,
            read_speculate: Duration::from_millis(read_speculate_ms),
            metrics,
            anti_entropy_interval: (aae_ms > 0).then(|| Duration::from_millis(aae_ms)),
            anti_entropy_keys_per_sec: aae_rate,
            handoff_interval: Duration::from_millis(handoff_ms),
            tombstone_grace: Duration::from_millis(grace_ms),
            auto_join,
            handoff_concurrency: handoff_concurrency as usize,
            handoff_bytes_per_sec,
            drop_sweep: Duration::from_millis(drop_sweep_ms),
        })
    }

    /// Creates the data directory if needed and proves it writable.
    pub fn check_data_dir(&self) -> Result<(), ConfigError> {
        let fail = |e: std::io::Error| invalid("data-dir", self.data_dir.display(), format!("not writable: {e}"));
        std::fs::create_dir_all(&self.data_dir).map_err(fail)?;
        let probe = self.data_dir.join(".dynakv-write-check");
        std::fs::write(&probe, b"ok").map_err(fail)?;
        std::fs::remove_file(&probe).map_err(fail)?;
        Ok(())
    }
}

/// Largest node-to-node message accepted by default. Senders keep batches to a few MiB;
/// a single item can still be a register with many siblings of the largest value: each
/// of a key's N replicas enforces the sibling cap on its own copy, so while they cannot
/// reach each other they can accept up to N times the cap between them (plus a few
/// concurrent ones).
/// Async workers when `workers` is not set: one per core. More workers than cores only
/// add threads competing for the same cores (measured: see docs/benchmarks/2026-11-26-to-12-04-tail-targets.md).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

pub fn message_limit(max_value_bytes: usize, n: usize, max_siblings: usize) -> usize {
    max_value_bytes
        .saturating_mul(max_siblings.saturating_mul(n).saturating_add(16))
        .clamp(256 << 20, u32::MAX as usize)
}

/// Who this node lets in on its cluster port, and how it connects out, as the settings
/// say; the transport makes its handshake policy of it.
#[derive(Clone, Debug)]
pub enum ClusterAccess {
    /// Only peers that prove the secret.
    Strict(Secret),
    /// Peers that prove the secret, and peers that have none.
    Transitional(Secret),
    /// No secret, `--insecure`: any peer of the cluster.
    Insecure,
    /// No secret and not `--insecure`: nobody.
    Closed,
}

impl ClusterAccess {
    pub fn name(&self) -> &'static str {
        match self {
            ClusterAccess::Strict(_) => "strict",
            ClusterAccess::Transitional(_) => "transitional",
            ClusterAccess::Insecure => "insecure",
            ClusterAccess::Closed => "closed",
        }
    }
}

impl Config {
    /// Who this node lets in on its cluster port, and how it connects out.
    pub fn cluster_access(&self) -> ClusterAccess {
        match (&self.cluster_secret, self.cluster_auth) {
            (Some(s), ClusterAuth::Strict) => ClusterAccess::Strict(s.clone()),
            (Some(s), ClusterAuth::Transitional) => ClusterAccess::Transitional(s.clone()),
            (None, _) if self.insecure => ClusterAccess::Insecure,
            (None, _) => ClusterAccess::Closed,
        }
    }
}

/// `host:port` with a non-empty host and a numeric port.
fn check_host_port(s: &str) -> Result<(), String> {
    let s = s.trim();
    let (host, port) = s.rsplit_once(':').ok_or("expected host:port")?;
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    port.parse::<u16>().map_err(|_| format!("bad port {port:?}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of the configuration reference (docs/reference/configuration.md): the
    /// flags, environment variables and TOML keys each names (`--n` `--r` `--w` is three
    /// settings; `DYNAKV_N` `_R` `_W` abbreviates the same prefix).
    fn documented_settings() -> Vec<(String, String, String)> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/reference/configuration.md");
        let text = std::fs::read_to_string(&path).expect("the configuration reference");
        let mut out = Vec::new();
        for line in text.lines().filter(|l| l.starts_with("| `--")) {
            let cells: Vec<&str> = line.split(" | ").collect();
            let ticks =
                |cell: &str| -> Vec<String> { cell.split('`').skip(1).step_by(2).map(str::to_string).collect() };
            let flags = ticks(cells[0].trim_start_matches("| "));
            let mut envs = ticks(cells[1]);
            for i in 1..envs.len() {
                if envs[i].starts_with('_') {
                    let prefix = envs[0].rsplit_once('_').expect("DYNAKV_X").0.to_string();
                    envs[i] = format!("{prefix}{}", envs[i]);
                }
            }
            let keys = ticks(cells[2]);
            assert!(
                flags.len() == envs.len() && envs.len() == keys.len(),
                "a row names as many flags, variables and keys: {line}"
            );
            for ((f, e), k) in flags.into_iter().zip(envs).zip(keys) {
                out.push((f, e, k));
            }
        }
        out
    }

    #[test]
    fn the_configuration_reference_lists_every_flag_with_its_variable_and_key() {
        use clap::CommandFactory;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: NodeArgs,
        }
        let documented = documented_settings();
        assert!(documented.len() > 30, "only {} rows read", documented.len());
        let cmd = Cli::command();
        let mut flags = std::collections::BTreeMap::new();
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if ["config", "help"].contains(&long) {
                continue;
            }
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            flags.insert(format!("--{long}"), env);
        }
        let in_docs: std::collections::BTreeSet<&String> = documented.iter().map(|(f, _, _)| f).collect();
        let in_code: std::collections::BTreeSet<&String> = flags.keys().collect();
        assert_eq!(in_docs, in_code, "flags of `dynakv node` against the reference's rows");
        for (flag, env, key) in &documented {
            assert_eq!(
                flags[flag].as_deref(),
                Some(env.as_str()),
                "{flag}: environment variable"
            );
            // The TOML loader knows the key (a wrong type is another error).
            if let Err(e) = toml::from_str::<FileConfig>(&format!("{key} = 0")) {
                assert!(!e.to_string().contains("unknown field"), "{flag}: TOML key {key}: {e}");
            }
        }
        // The check sees a key the loader does not know.
        let e = toml::from_str::<FileConfig>("no_such_setting = 0").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    fn args() -> NodeArgs {
        NodeArgs::default()
    }

    fn err(a: NodeArgs) -> String {
        Config::load(a).unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        let c = Config::load(args()).unwrap();
        assert_eq!((c.n, c.r, c.w, c.conflict), (3, 2, 2, ConflictMode::Mv));
        assert_eq!(c.advertise, "127.0.0.1:7001");
        assert_eq!(c.suspect_after, Duration::from_millis(3000));
        assert_eq!(c.dead_after, Duration::from_millis(6000));
        assert!(c.seeds.is_empty());
        assert_eq!((c.max_value_bytes, c.max_siblings), (1 << 20, 100));
        assert_eq!(c.cluster_listen.to_string(), "127.0.0.1:8001");
        assert_eq!(c.cluster_advertise, "127.0.0.1:8001");
        // No secret, not --insecure, no seeds: a cluster of one whose cluster port lets nobody in.
        assert_eq!(c.cluster_access().name(), "closed");
        assert_eq!(c.max_message_bytes, (1 << 20) * (100 * 3 + 16));
    }

    #[test]
    fn addresses_fill_each_other_in_behind_a_wildcard() {
        let c = Config::load(NodeArgs {
            listen: Some("0.0.0.0:7000".into()),
            cluster_advertise: Some("n1-cluster:8000".into()),
            ..args()
        })
        .unwrap();
        assert_eq!(c.cluster_listen.to_string(), "0.0.0.0:8000");
        assert_eq!(c.advertise, "n1-cluster:7000");
        let c = Config::load(NodeArgs {
            listen: Some("0.0.0.0:7000".into()),
            advertise: Some("db1:7000".into()),
            cluster_listen: Some("0.0.0.0:9000".into()),
            ..args()
        })
        .unwrap();
        assert_eq!(
            (c.advertise.as_str(), c.cluster_advertise.as_str()),
            ("db1:7000", "db1:9000")
        );
    }

    #[test]
    fn the_secret_file_sets_the_policy_and_is_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "  sixteen-bytes-or-more\n").unwrap();
        let c = Config::load(NodeArgs {
            cluster_secret_file: Some(path.clone()),
            seeds: Some("10.0.0.2:8001".into()),
            ..args()
        })
        .unwrap();
        assert_eq!(c.cluster_secret.as_ref().unwrap().0, b"sixteen-bytes-or-more");
        assert_eq!(c.cluster_access().name(), "strict");
        assert!(!format!("{c:?}").contains("sixteen"), "the secret leaks into Debug");
        let c = Config::load(NodeArgs {
            cluster_secret_file: Some(path),
            cluster_auth: Some("transitional".into()),
            ..args()
        })
        .unwrap();
        assert_eq!(c.cluster_access().name(), "transitional");
        let c = Config::load(NodeArgs {
            insecure: Some("true".into()),
            seeds: Some("10.0.0.2:8001".into()),
            ..args()
        })
        .unwrap();
        assert_eq!(c.cluster_access().name(), "insecure");
    }

    #[test]
    fn invalid_settings_name_the_setting() {
        let cases: Vec<(NodeArgs, &str)> = vec![
            (
                NodeArgs {
                    r: Some("4".into()),
                    ..args()
                },
                "`r`",
            ),
            (
                NodeArgs {
                    w: Some("0".into()),
                    ..args()
                },
                "`w`",
            ),
            (
                NodeArgs {
                    n: Some("0".into()),
                    ..args()
                },
                "`n`",
            ),
            (
                NodeArgs {
                    n: Some("x".into()),
                    ..args()
                },
                "`n`",
            ),
            (
                NodeArgs {
                    conflict: Some("crdt".into()),
                    ..args()
                },
                "`conflict`",
            ),
            (
                NodeArgs {
                    listen: Some("nowhere".into()),
                    ..args()
                },
                "`listen`",
            ),
            (
                NodeArgs {
                    listen: Some("0.0.0.0:7000".into()),
                    ..args()
                },
                "`cluster-advertise`",
            ),
            (
                NodeArgs {
                    seeds: Some("a:1,b".into()),
                    ..args()
                },
                "`seeds`",
            ),
            (
                NodeArgs {
                    id: Some("bad id".into()),
                    ..args()
                },
                "`id`",
            ),
            (
                NodeArgs {
                    tokens: Some("0".into()),
                    ..args()
                },
                "`tokens`",
            ),
            (
                NodeArgs {
                    read_timeout_ms: Some("999".into()),
                    ..args()
                },
                "`read-timeout-ms`",
            ),
            (
                NodeArgs {
                    max_siblings: Some("0".into()),
                    ..args()
                },
                "`max-siblings`",
            ),
            (
                NodeArgs {
                    dead_after_ms: Some("100".into()),
                    ..args()
                },
                "`dead-after-ms`",
            ),
            (
                NodeArgs {
                    config: Some("/nonexistent.toml".into()),
                    ..args()
                },
                "`config`",
            ),
        ];
        for (a, setting) in cases {
            let e = err(a);
            assert!(e.contains(setting), "{e:?} should name {setting}");
            assert!(!e.contains('\n'), "one line: {e:?}");
        }
    }

    #[test]
    fn file_is_overridden_by_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "n = 5\nr = 3\nconflict = \"lww\"\nseeds = [\"a:1\", \"b:2\"]\ninsecure = true\n",
        )
        .unwrap();
        let c = Config::load(NodeArgs {
            config: Some(path.clone()),
            r: Some("1".into()),
            ..args()
        })
        .unwrap();
        assert_eq!((c.n, c.r, c.conflict), (5, 1, ConflictMode::Lww));
        assert_eq!(c.seeds, vec!["a:1".to_string(), "b:2".to_string()]);
        std::fs::write(&path, "unknown_key = 1\n").unwrap();
        let e = err(NodeArgs {
            config: Some(path.clone()),
            ..args()
        });
        assert!(e.contains("unknown_key") && !e.contains('\n'), "{e}");
        std::fs::write(&path, "n = \"three\"\n").unwrap();
        assert!(
            err(NodeArgs {
                config: Some(path),
                ..args()
            })
            .contains("`config`")
        );
    }

    #[test]
    fn unwritable_data_dir_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let c = Config::load(NodeArgs {
            data_dir: Some(file.join("sub")),
            ..args()
        })
        .unwrap();
        let e = c.check_data_dir().unwrap_err().to_string();
        assert!(e.contains("`data-dir`"), "{e}");
    }
}
