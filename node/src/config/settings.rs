//! Every setting of `dynakv node`, declared once: its name (the flag is `--` and the name
//! in kebab case, the TOML key is the name), its environment variable, its default, the
//! values it takes and one line of doc. From this table come the flags ([`NodeArgs`],
//! with each flag's help), the TOML loader ([`FileConfig`]), the checks of
//! [`super::Config::load`] (which name the setting in their errors), and the table of
//! docs/reference/configuration.md (`reference_table`; a test fails when the page and
//! the table differ).

use std::fmt;
use std::path::PathBuf;

use dynakv_ring::ring::{DEFAULT_PARTITION_BITS, DEFAULT_TOKENS, MAX_PARTITION_BITS, MAX_TOKENS};

use super::{MAX_N, MAX_SIBLINGS_LIMIT, MAX_VALUE_LIMIT, MIN_READ_TIMEOUT_MS};

/// One setting.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    /// The TOML key; the flag is `--` and this in kebab case.
    pub key: &'static str,
    pub env: &'static str,
    pub default: Default,
    pub allowed: Allowed,
    /// One line: what it does.
    pub doc: &'static str,
}

impl Setting {
    /// The name errors and the flag use: `read-timeout-ms`.
    pub fn name(&self) -> String {
        self.key.replace('_', "-")
    }

    pub fn flag(&self) -> String {
        format!("--{}", self.name())
    }
}

/// A setting's default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Default {
    /// No value: the setting is off or absent.
    Unset(&'static str),
    Number(u64),
    Flag(bool),
    /// A literal value: `mv`, `./data`.
    Word(&'static str),
    /// Worked out from other settings or from the machine, as described.
    Derived(&'static str),
}

impl fmt::Display for Default {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Default::Unset(what) => f.write_str(what),
            Default::Number(n) => write!(f, "{n}"),
            Default::Flag(b) => write!(f, "{b}"),
            Default::Word(w) => write!(f, "`{w}`"),
            Default::Derived(d) => f.write_str(d),
        }
    }
}

/// The values a setting takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allowed {
    /// A whole number from `lo` to `hi`.
    Between(u64, u64),
    /// 0 (off) or a whole number from `lo` to `hi`.
    OffOrBetween(u64, u64),
    /// A whole number of at least `lo`.
    AtLeast(u64),
    /// One of these words.
    Choices(&'static [&'static str]),
    /// true or false.
    Bool,
    /// Whatever this describes (checked by the loader's own code).
    Rule(&'static str),
}

impl fmt::Display for Allowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Allowed::Between(lo, hi) => write!(f, "{lo} to {hi}"),
            Allowed::OffOrBetween(lo, hi) => write!(f, "0 (off), or {lo} to {hi}"),
            Allowed::AtLeast(lo) => write!(f, "at least {lo}"),
            Allowed::Choices(words) => {
                let shown: Vec<String> = words.iter().map(|w| format!("`{w}`")).collect();
                f.write_str(&shown.join(", "))
            }
            Allowed::Bool => f.write_str("true, false"),
            Allowed::Rule(r) => f.write_str(r),
        }
    }
}

/// The table: each row makes a flag (with its environment variable), a TOML key of the
/// given type, and an entry of [`SETTINGS`].
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])+
        $key:ident: $arg:ty, $file:ty, $env:literal, $default:expr, $allowed:expr $(, [$($extra:tt)*])?;
    )+) => {
        /// Flags of `dynakv node`. Each also reads an environment variable; values given
        /// neither way come from `--config` or the defaults.
        #[derive(clap::Args, Debug, Default, Clone)]
        #[command(mut_args(with_help))]
        pub struct NodeArgs {
            /// TOML file with any of the settings below (snake_case keys).
            #[arg(long, env = "DYNAKV_CONFIG")]
            pub config: Option<PathBuf>,
            $(
                #[arg(long, env = $env $(, $($extra)*)?)]
                pub $key: Option<$arg>,
            )+
        }

        /// The same settings in a TOML file.
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct FileConfig {
            $(pub $key: Option<$file>,)+
        }

        /// Every setting, in the order of the reference.
        pub const SETTINGS: &[Setting] = &[$(
            Setting {
                key: stringify!($key),
                env: $env,
                default: $default,
                allowed: $allowed,
                doc: concat!($($doc),+),
            },
        )+];
    };
}

/// Each flag's help: the setting's doc and its default, from the table.
fn with_help(arg: clap::Arg) -> clap::Arg {
    match SETTINGS.iter().find(|s| s.key == arg.get_id().as_str()) {
        Some(s) => {
            let default = s.default.to_string().replace('`', "");
            arg.help(format!("{} [default: {default}]", s.doc.trim()))
        }
        None => arg,
    }
}

use self::Allowed::{AtLeast, Between, Bool, Choices, OffOrBetween, Rule};
use self::Default::{Derived, Flag, Number, Unset, Word};

settings! {
    /// node name; kept in the data dir, a different one is refused
    id: String, String, "DYNAKV_ID", Derived("the stored id, else `n-<random>`"), Rule("letters, digits, `-`, `_`, `.`");
    /// client port: the client and admin API
    listen: String, String, "DYNAKV_LISTEN", Word("127.0.0.1:7001"), Rule("`ip:port`");
    /// client `host:port` listed to clients (behind `0.0.0.0`: the cluster advertise host with the client port)
    advertise: String, String, "DYNAKV_ADVERTISE", Derived("the listen address"), Rule("`host:port`");
    /// cluster port: where other nodes connect (gossip, replicas, hints, anti-entropy, transfers)
    cluster_listen: String, String, "DYNAKV_CLUSTER_LISTEN", Derived("the listen port + 1000"), Rule("`ip:port`, not the listen address");
    /// cluster `host:port` other nodes use (behind `0.0.0.0`: the advertise host with the cluster port; one of the two is required then)
    cluster_advertise: String, String, "DYNAKV_CLUSTER_ADVERTISE", Derived("the cluster listen address"), Rule("`host:port`");
    /// an inherited socket, already listening on the listen address, to serve the client port on (a supervisor or test harness binds it before the node starts)
    listen_fd: String, u64, "DYNAKV_LISTEN_FD", Unset("none: the node binds the listen address"), Rule("an open descriptor of a TCP socket listening on the listen address");
    /// the same for the cluster port, listening on the cluster listen address
    cluster_listen_fd: String, u64, "DYNAKV_CLUSTER_LISTEN_FD", Unset("none: the node binds the cluster listen address"), Rule("an open descriptor of a TCP socket listening on the cluster listen address");
    /// file with the cluster secret (surrounding whitespace ignored; `dynakv certs secret` makes one); required to join other nodes unless `--insecure`
    cluster_secret_file: PathBuf, PathBuf, "DYNAKV_CLUSTER_SECRET_FILE", Unset("none"), Rule("a readable file of at least 16 bytes");
    /// `strict`: only peers proving the secret; `transitional`: also peers without one (while a running cluster switches over)
    cluster_auth: String, String, "DYNAKV_CLUSTER_AUTH", Word("strict"), Choices(&["strict", "transitional"]);
    /// no secret: any host that reaches the cluster port can read and write every replica; only for trusted networks
    insecure: String, bool, "DYNAKV_INSECURE", Flag(false), Bool, [num_args = 0..=1, default_missing_value = "true"];
    /// `ca.crt`, `node.crt`, `node.key` (`dynakv certs`): mutual TLS on the cluster port
    certs_dir: PathBuf, PathBuf, "DYNAKV_CERTS_DIR", Unset("none"), Rule("a directory with the three files");
    /// serve the client port over TLS with the node certificate (needs `--certs-dir`)
    client_tls: String, bool, "DYNAKV_CLIENT_TLS", Flag(false), Bool;
    /// with `--client-tls`: clients must show a certificate of the cluster CA (`dynakv certs client`)
    client_cert_required: String, bool, "DYNAKV_CLIENT_CERT_REQUIRED", Flag(false), Bool;
    /// API tokens with scopes (read, write, admin); when given, every client request but `/health`, `/ui` and `/openapi.json` needs one
    tokens_file: PathBuf, PathBuf, "DYNAKV_TOKENS_FILE", Unset("none"), Rule("a tokens file");
    /// record request and node-to-node call metrics (`/metrics`, the web view's rates); false leaves only what is read at scrape time
    metrics: String, bool, "DYNAKV_METRICS", Flag(true), Bool;
    /// largest node-to-node message taken from a peer, in bytes
    max_message_bytes: String, u64, "DYNAKV_MAX_MESSAGE_BYTES", Derived("max-value-bytes × (max-siblings × n + 16), at least 256 MiB"), Between(1 << 20, u32::MAX as u64);
    /// client connections served at once; more get `503 overloaded`
    max_connections: String, u64, "DYNAKV_MAX_CONNECTIONS", Number(4096), Between(1, 1 << 20);
    /// HTTP/2 streams per client connection (advertised to the client); more get `503 overloaded`
    max_requests_per_connection: String, u64, "DYNAKV_MAX_REQUESTS_PER_CONNECTION", Number(256), Between(1, 65_536);
    /// threads that serve requests (the async runtime's workers); where several nodes share a machine, give them about one core's worth each
    workers: String, u64, "DYNAKV_WORKERS", Derived("one per core"), Between(1, 1024);
    /// RocksDB and the node's identity
    data_dir: PathBuf, PathBuf, "DYNAKV_DATA_DIR", Word("./data"), Rule("a writable directory (made if missing)");
    /// cluster ports (`host:port,...`) of nodes to join through; may include this node; none: a single node
    seeds: String, Vec<String>, "DYNAKV_SEEDS", Unset("none"), Rule("comma-separated `host:port` (a list in TOML)");
    /// replicas per key; the same on every node
    n: String, u64, "DYNAKV_N", Number(3), Between(1, MAX_N as u64);
    /// replies a read waits for
    r: String, u64, "DYNAKV_R", Number(2), Rule("1 to n");
    /// acknowledgements a write waits for
    w: String, u64, "DYNAKV_W", Number(2), Rule("1 to n");
    /// of a read's r replies, how many must come from the key's own replicas, not fallbacks (`pr`); 0: no such need
    pr: String, u64, "DYNAKV_PR", Number(0), Rule("0 to r");
    /// of a write's w acknowledgements, how many must come from the key's own replicas, not fallbacks holding hints (`pw`); 0: no such need
    pw: String, u64, "DYNAKV_PW", Number(0), Rule("0 to w");
    /// `mv` keeps concurrent writes as siblings; `lww`: the last writer wins
    conflict: String, String, "DYNAKV_CONFLICT", Word("mv"), Choices(&["mv", "lww"]);
    /// milliseconds between gossip rounds
    gossip_interval_ms: String, u64, "DYNAKV_GOSSIP_INTERVAL_MS", Number(1000), Between(10, 60_000);
    /// silence before a member is `suspect`, in a cluster of up to 3 members; one gossip interval more per doubling beyond
    suspect_after_ms: String, u64, "DYNAKV_SUSPECT_AFTER_MS", Derived("3 gossip intervals"), Rule("at least the gossip interval");
    /// silence before a member is `dead` and skipped by requests, scaled like suspect-after-ms
    dead_after_ms: String, u64, "DYNAKV_DEAD_AFTER_MS", Derived("6 gossip intervals"), Rule("more than suspect-after-ms");
    /// milliseconds a client request may take before it fails
    request_timeout_ms: String, u64, "DYNAKV_REQUEST_TIMEOUT_MS", Number(2000), Between(1, 600_000);
    /// longest pause, in ms, while a client sends a request's head or body (a stalled body gets 408 `body_timeout`), and how long an idle keep-alive connection stays open
    read_timeout_ms: String, u64, "DYNAKV_READ_TIMEOUT_MS", Number(10_000), Between(MIN_READ_TIMEOUT_MS, 600_000);
    /// largest value accepted, in bytes
    max_value_bytes: String, u64, "DYNAKV_MAX_VALUE_BYTES", Number(1 << 20), Between(1, MAX_VALUE_LIMIT as u64);
    /// mv mode: most concurrent values (siblings) a key may hold; a blind write that would add one more is refused with 409 `too_many_siblings`
    max_siblings: String, u64, "DYNAKV_MAX_SIBLINGS", Number(100), Between(1, MAX_SIBLINGS_LIMIT as u64);
    /// virtual nodes of this node on the ring (its relative capacity)
    tokens: String, u64, "DYNAKV_TOKENS", Number(DEFAULT_TOKENS as u64), Between(1, MAX_TOKENS as u64);
    /// the ring has 2^bits partitions; the same on every node
    partition_bits: String, u64, "DYNAKV_PARTITION_BITS", Number(DEFAULT_PARTITION_BITS as u64), Between(1, MAX_PARTITION_BITS as u64);
    /// name of the cluster; nodes of other clusters are refused
    cluster_name: String, String, "DYNAKV_CLUSTER_NAME", Word("dynakv"), Rule("1 to 128 characters");
    /// fsync the write-ahead log before acknowledging each write (survives power loss, slower)
    sync_writes: String, bool, "DYNAKV_SYNC_WRITES", Flag(false), Bool;
    /// megabytes of the data directory's disk kept free: below them, writes of data and hints answer 507 `insufficient_storage` (reads go on) until space is freed; 0: no reserve
    min_free_mb: String, u64, "DYNAKV_MIN_FREE_MB", Number(128), Between(0, 1 << 30);
    /// replica writes on a thread of their own, committed in groups, so a RocksDB write stall does not hold up a request thread; costs a thread hand-off per write
    commit_thread: String, bool, "DYNAKV_COMMIT_THREAD", Flag(false), Bool;
    /// the next live nodes on the ring stand in for dead or silent replicas, holding hints (false: strict quorums)
    sloppy_quorum: String, bool, "DYNAKV_SLOPPY_QUORUM", Flag(true), Bool;
    /// a read asks R replicas (its own copy first) and the rest after this many ms without a quorum, or at once when one fails; 0: ask all N at once (read repair then checks every replica)
    read_speculate_ms: String, u64, "DYNAKV_READ_SPECULATE_MS", Number(5), Between(0, 600_000);
    /// milliseconds between rounds of Merkle-tree exchanges (one with each co-replica); 0: off
    anti_entropy_interval_ms: String, u64, "DYNAKV_ANTI_ENTROPY_INTERVAL_MS", Number(30_000), OffOrBetween(100, 86_400_000);
    /// keys anti-entropy may repair per second, so a long outage's backlog does not starve clients
    anti_entropy_keys_per_sec: String, u64, "DYNAKV_ANTI_ENTROPY_KEYS_PER_SEC", Number(5000), Between(1, u32::MAX as u64);
    /// milliseconds between attempts to hand hints over to their owners
    handoff_interval_ms: String, u64, "DYNAKV_HANDOFF_INTERVAL_MS", Number(1000), Between(10, 3_600_000);
    /// how long, in ms, a node keeps a tombstone before it may collect it (once every replica has it)
    tombstone_grace_ms: String, u64, "DYNAKV_TOMBSTONE_GRACE_MS", Number(3_600_000), AtLeast(100);
    /// a fresh node stages and commits its own join; false: an operator stages it
    auto_join: String, bool, "DYNAKV_AUTO_JOIN", Flag(true), Bool;
    /// partitions a node fetches at once when it gains partitions in a new layout
    handoff_concurrency: String, u64, "DYNAKV_HANDOFF_CONCURRENCY", Number(2), Between(1, 64);
    /// bytes per second a node fetches over all its partition transfers; 0: no limit
    handoff_bytes_per_sec: String, u64, "DYNAKV_HANDOFF_BYTES_PER_SEC", Number(0), AtLeast(0);
    /// how often, in ms, a node with a settled layout looks again for partitions it no longer replicates and deletes its copies (at once after each layout change)
    drop_sweep_ms: String, u64, "DYNAKV_DROP_SWEEP_MS", Number(30_000), Between(100, 86_400_000);
}

/// The row of `key`.
pub fn setting(key: &str) -> &'static Setting {
    SETTINGS
        .iter()
        .find(|s| s.key == key)
        .unwrap_or_else(|| panic!("no setting `{key}` in the table"))
}

/// The Markdown table of docs/reference/configuration.md, one row per setting.
pub fn reference_table() -> String {
    let mut out =
        String::from("| Flag | Environment | TOML key | Default | Values | Meaning |\n|---|---|---|---|---|---|\n");
    for s in SETTINGS {
        out.push_str(&format!(
            "| `{}` | `{}` | `{}` | {} | {} | {} |\n",
            s.flag(),
            s.env,
            s.key,
            s.default,
            s.allowed,
            s.doc.trim()
        ));
    }
    out
}
