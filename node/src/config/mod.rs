//! Node settings: command-line flags, `DYNAKV_*` environment variables and a TOML file,
//! in that order of precedence, over defaults; checked before the node starts.
//!
//! Each setting is declared once, in [`settings`]: its flag, variable, TOML key, default,
//! range and doc. This module resolves them into a checked [`Config`]: the plain range
//! checks come from the table, the checks between settings (R and W against N, the
//! detector's timings, the secret and TLS combinations, the addresses) are written here.
//!
//! Why this file is long: the resolution of 46 settings, with the checks between them,
//! and their tests.

mod settings;

pub use settings::{Allowed, Default, FileConfig, NodeArgs, SETTINGS, Setting, reference_table, setting};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dynakv_crdt::ConflictMode;
use dynakv_ring::NodeId;

/// Checked settings of a node.
#[derive(Clone, Debug)]
pub struct Config {
    /// `None`: use the id stored in the data dir, or make one up on first start.
    pub id: Option<NodeId>,
    pub listen: SocketAddr,
    /// The client address, as listed to clients.
    pub advertise: String,
    pub cluster_listen: SocketAddr,
    /// Inherited listening sockets to serve on instead of binding the addresses.
    pub listen_fd: Option<i32>,
    pub cluster_listen_fd: Option<i32>,
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
    /// Primary quorums: replies (acknowledgements) that must come from the key's own
    /// replicas.
    pub pr: usize,
    pub pw: usize,
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
        setting: String,
        value: String,
        reason: String,
    },
    #[error("invalid setting `config` = {path:?}: {reason}")]
    File { path: PathBuf, reason: String },
}

fn invalid(setting: &str, value: impl ToString, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting: setting.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// `v` if the table's range for `s` allows it, else an error naming the setting.
fn check_range(s: &Setting, v: u64) -> Result<u64, ConfigError> {
    let bad = |reason: String| Err(invalid(&s.name(), v, reason));
    match s.allowed {
        Allowed::Between(lo, hi) if v < lo || v > hi => bad(format!("must be between {lo} and {hi}")),
        Allowed::OffOrBetween(lo, hi) if v != 0 && (v < lo || v > hi) => {
            bad(format!("must be 0 (off) or between {lo} and {hi}"))
        }
        Allowed::AtLeast(lo) if v < lo => bad(format!("must be at least {lo}")),
        _ => Ok(v),
    }
}

/// A whole-number setting: the flag's (or variable's) text if given, else the file's
/// value, else `default`; checked against the table's range.
fn number_or(key: &str, arg: Option<String>, file: Option<u64>, default: u64) -> Result<u64, ConfigError> {
    let s = setting(key);
    let v = match arg {
        Some(text) => text
            .trim()
            .parse::<u64>()
            .map_err(|_| invalid(&s.name(), &text, "expected a whole number"))?,
        None => file.unwrap_or(default),
    };
    check_range(s, v)
}

/// A whole-number setting with no default.
fn optional_number(key: &str, arg: Option<String>, file: Option<u64>) -> Result<Option<u64>, ConfigError> {
    match (arg, file) {
        (None, None) => Ok(None),
        (arg, file) => number_or(key, arg, file, 0).map(Some),
    }
}

/// A whole-number setting whose default is the table's.
fn number(key: &str, arg: Option<String>, file: Option<u64>) -> Result<u64, ConfigError> {
    match setting(key).default {
        Default::Number(d) => number_or(key, arg, file, d),
        other => panic!("setting `{key}` has no numeric default in the table ({other:?})"),
    }
}

/// A true-or-false setting, defaulting to the table's.
fn flag(key: &str, arg: Option<String>, file: Option<bool>) -> Result<bool, ConfigError> {
    let s = setting(key);
    let Default::Flag(default) = s.default else {
        panic!("setting `{key}` has no true/false default in the table")
    };
    match arg {
        Some(text) => text
            .trim()
            .parse()
            .map_err(|_| invalid(&s.name(), &text, "expected true or false")),
        None => Ok(file.unwrap_or(default)),
    }
}

/// A word setting, defaulting to the table's; one of the table's choices when it lists
/// them.
fn word(key: &str, arg: Option<String>, file: Option<String>) -> Result<String, ConfigError> {
    let s = setting(key);
    let Default::Word(default) = s.default else {
        panic!("setting `{key}` has no literal default in the table")
    };
    let v = arg.or(file).unwrap_or_else(|| default.to_string());
    if let Allowed::Choices(choices) = s.allowed
        && !choices.contains(&v.trim())
    {
        return Err(invalid(&s.name(), &v, format!("expected {}", choices.join(" or "))));
    }
    Ok(v)
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
        let listen_raw = word("listen", args.listen, file.listen)?;
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
            .unwrap_or_else(|| match setting("data_dir").default {
                Default::Word(dir) => PathBuf::from(dir),
                other => panic!("data_dir's default is a directory, not {other:?}"),
            });
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
        let n = number("n", args.n, file.n)? as usize;
        let r = number("r", args.r, file.r)? as usize;
        let w = number("w", args.w, file.w)? as usize;
        if r == 0 || r > n {
            return Err(invalid("r", r, format!("must be between 1 and n ({n})")));
        }
        if w == 0 || w > n {
            return Err(invalid("w", w, format!("must be between 1 and n ({n})")));
        }
        let pr = number("pr", args.pr, file.pr)? as usize;
        let pw = number("pw", args.pw, file.pw)? as usize;
        if pr > r {
            return Err(invalid("pr", pr, format!("must be between 0 and r ({r})")));
        }
        if pw > w {
            return Err(invalid("pw", pw, format!("must be between 0 and w ({w})")));
        }
        let conflict_raw = word("conflict", args.conflict, file.conflict)?;
        let conflict: ConflictMode = conflict_raw
            .trim()
            .parse()
            .map_err(|_| invalid("conflict", &conflict_raw, "expected mv or lww"))?;
        let gossip_ms = number("gossip_interval_ms", args.gossip_interval_ms, file.gossip_interval_ms)?;
        let suspect_ms = number_or(
            "suspect_after_ms",
            args.suspect_after_ms,
            file.suspect_after_ms,
            3 * gossip_ms,
        )?;
        let dead_ms = number_or("dead_after_ms", args.dead_after_ms, file.dead_after_ms, 6 * gossip_ms)?;
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
        let timeout_ms = number("request_timeout_ms", args.request_timeout_ms, file.request_timeout_ms)?;
        let read_timeout_ms = number("read_timeout_ms", args.read_timeout_ms, file.read_timeout_ms)?;
        let max_value_bytes = number("max_value_bytes", args.max_value_bytes, file.max_value_bytes)? as usize;
        let max_siblings = number("max_siblings", args.max_siblings, file.max_siblings)? as usize;
        let tokens = number("tokens", args.tokens, file.tokens)? as u32;
        let partition_bits = number("partition_bits", args.partition_bits, file.partition_bits)? as u8;
        let cluster_name = word("cluster_name", args.cluster_name, file.cluster_name)?;
        if cluster_name.trim().is_empty() || cluster_name.len() > 128 {
            return Err(invalid("cluster-name", &cluster_name, "must be 1 to 128 characters"));
        }
        let sync_writes = flag("sync_writes", args.sync_writes, file.sync_writes)?;
        let min_free_mb = number("min_free_mb", args.min_free_mb, file.min_free_mb)?;
        let commit_thread = flag("commit_thread", args.commit_thread, file.commit_thread)?;
        let sloppy_quorum = flag("sloppy_quorum", args.sloppy_quorum, file.sloppy_quorum)?;
        let read_speculate_ms = number("read_speculate_ms", args.read_speculate_ms, file.read_speculate_ms)?;
        let metrics = flag("metrics", args.metrics, file.metrics)?;
        let aae_ms = number(
            "anti_entropy_interval_ms",
            args.anti_entropy_interval_ms,
            file.anti_entropy_interval_ms,
        )?;
        let aae_rate = number(
            "anti_entropy_keys_per_sec",
            args.anti_entropy_keys_per_sec,
            file.anti_entropy_keys_per_sec,
        )? as u32;
        let handoff_ms = number(
            "handoff_interval_ms",
            args.handoff_interval_ms,
            file.handoff_interval_ms,
        )?;
        let grace_ms = number("tombstone_grace_ms", args.tombstone_grace_ms, file.tombstone_grace_ms)?;
        let auto_join = flag("auto_join", args.auto_join, file.auto_join)?;
        let handoff_concurrency = number(
            "handoff_concurrency",
            args.handoff_concurrency,
            file.handoff_concurrency,
        )?;
        let handoff_bytes_per_sec = number(
            "handoff_bytes_per_sec",
            args.handoff_bytes_per_sec,
            file.handoff_bytes_per_sec,
        )?;
        let drop_sweep_ms = number("drop_sweep_ms", args.drop_sweep_ms, file.drop_sweep_ms)?;
        let insecure = flag("insecure", args.insecure, file.insecure)?;
        let descriptor = |key: &str, v: Option<u64>| -> Result<Option<i32>, ConfigError> {
            v.map(|fd| i32::try_from(fd).map_err(|_| invalid(&setting(key).name(), fd, "not a file descriptor")))
                .transpose()
        };
        let listen_fd = descriptor(
            "listen_fd",
            optional_number("listen_fd", args.listen_fd, file.listen_fd)?,
        )?;
        let cluster_listen_fd = descriptor(
            "cluster_listen_fd",
            optional_number("cluster_listen_fd", args.cluster_listen_fd, file.cluster_listen_fd)?,
        )?;
        if listen_fd.is_some() && listen_fd == cluster_listen_fd {
            return Err(invalid(
                "cluster-listen-fd",
                cluster_listen_fd.unwrap_or_default(),
                "must differ from listen-fd (each port needs a socket of its own)",
            ));
        }
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
        let auth_raw = word("cluster_auth", args.cluster_auth, file.cluster_auth)?;
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
        let client_tls = flag("client_tls", args.client_tls, file.client_tls)?;
        if client_tls && certs_dir.is_none() {
            return Err(invalid(
                "client-tls",
                "true",
                "needs certs-dir (its node.crt and node.key)",
            ));
        }
        let client_cert_required = flag(
            "client_cert_required",
            args.client_cert_required,
            file.client_cert_required,
        )?;
        if client_cert_required && !client_tls {
            return Err(invalid("client-cert-required", "true", "needs client-tls"));
        }
        if let Some(dir) = &certs_dir {
            crate::env::tls::Material::load(dir).map_err(|e| invalid("certs-dir", dir.display(), e))?;
        }
        let tokens_file = args.tokens_file.or(file.tokens_file);
        if let Some(path) = &tokens_file {
            dynakv_http_api::auth::Tokens::load(path).map_err(|e| invalid("tokens-file", path.display(), e))?;
        }
        let max_message_bytes = number_or(
            "max_message_bytes",
            args.max_message_bytes,
            file.max_message_bytes,
            message_limit(max_value_bytes, n, max_siblings) as u64,
        )? as usize;
        let max_connections = number("max_connections", args.max_connections, file.max_connections)? as usize;
        let max_requests_per_connection = number(
            "max_requests_per_connection",
            args.max_requests_per_connection,
            file.max_requests_per_connection,
        )? as usize;
        let workers = number_or("workers", args.workers, file.workers, default_workers() as u64)? as usize;
        Ok(Config {
            id,
            listen,
            advertise,
            cluster_listen,
            listen_fd,
            cluster_listen_fd,
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
            pr,
            pw,
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

    const REFERENCE: &str = "../docs/reference/configuration.md";
    const TABLE_START: &str = "<!-- settings table: made from node/src/config/settings.rs -->\n";
    const TABLE_END: &str = "<!-- end of settings table -->";

    /// The reference's table is the settings table's: `DYNAKV_BLESS=1 cargo test -p
    /// dynakv-node --lib config` rewrites it after a change of the table.
    #[test]
    fn the_configuration_reference_is_the_settings_table() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(REFERENCE);
        let text = std::fs::read_to_string(&path).expect("the configuration reference");
        let start = text
            .find(TABLE_START)
            .expect("the reference marks where its table starts")
            + TABLE_START.len();
        let end = start + text[start..].find(TABLE_END).expect("and where it ends");
        let made = reference_table();
        if std::env::var_os("DYNAKV_BLESS").is_some() {
            std::fs::write(&path, format!("{}{made}{}", &text[..start], &text[end..])).unwrap();
            return;
        }
        assert_eq!(
            text[start..end],
            made,
            "docs/reference/configuration.md's table differs from the settings table: \
             rerun with DYNAKV_BLESS=1 to rewrite it"
        );
    }

    /// Every flag of `dynakv node` (but `--config`) is a row of the table with the row's
    /// variable, and the TOML loader knows every row's key.
    #[test]
    fn the_flags_and_the_toml_keys_are_the_tables() {
        use clap::CommandFactory;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: NodeArgs,
        }
        let cmd = Cli::command();
        let mut flags = std::collections::BTreeMap::new();
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if ["config", "help"].contains(&long) {
                continue;
            }
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            flags.insert(format!("--{long}"), (env, help));
        }
        assert!(SETTINGS.len() > 40, "only {} settings", SETTINGS.len());
        assert_eq!(flags.len(), SETTINGS.len(), "one flag per setting");
        for s in SETTINGS {
            let (env, help) = &flags[&s.flag()];
            assert_eq!(env.as_deref(), Some(s.env), "{}: environment variable", s.flag());
            assert!(
                help.starts_with(s.doc.trim()) && help.contains("[default: "),
                "{}: help {help:?}",
                s.flag()
            );
            // The TOML loader knows the key (a wrong type is another error).
            if let Err(e) = toml::from_str::<FileConfig>(&format!("{} = 0", s.key)) {
                assert!(
                    !e.to_string().contains("unknown field"),
                    "{}: TOML key {}: {e}",
                    s.flag(),
                    s.key
                );
            }
        }
        // The check sees a key the loader does not know.
        let e = toml::from_str::<FileConfig>("no_such_setting = 0").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    /// The table's defaults are the loader's: a node given nothing gets each numeric and
    /// true/false default the reference shows, and each range is enforced at its ends.
    #[test]
    fn the_tables_defaults_and_ranges_are_the_loaders() {
        let loaded = Config::load(args()).unwrap();
        let shown = format!("{loaded:?}");
        for s in SETTINGS {
            match (s.default, s.allowed) {
                (Default::Number(_), Allowed::Between(lo, hi)) => {
                    let key = s.key;
                    assert!(number(key, Some(lo.to_string()), None).is_ok(), "{key} = {lo}");
                    assert!(number(key, Some(hi.to_string()), None).is_ok(), "{key} = {hi}");
                    if lo > 0 {
                        let e = number(key, Some((lo - 1).to_string()), None).unwrap_err().to_string();
                        assert!(e.contains(&format!("`{}`", s.name())), "{e}");
                    }
                    let e = number(key, Some((hi + 1).to_string()), None).unwrap_err().to_string();
                    assert!(e.contains(&format!("`{}`", s.name())), "{e}");
                }
                (Default::Flag(b), _) => {
                    assert!(
                        shown.contains(&format!("{}: {b}", s.key)),
                        "{}: default {b} in {shown}",
                        s.key
                    )
                }
                _ => {}
            }
        }
        assert_eq!(loaded.n, 3);
        assert_eq!((loaded.r, loaded.w), (2, 2));
        assert_eq!(loaded.max_connections, 4096);
        assert_eq!(loaded.drop_sweep, Duration::from_millis(30_000));
        assert_eq!(loaded.anti_entropy_interval, Some(Duration::from_millis(30_000)));
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
            (
                NodeArgs {
                    listen_fd: Some("5".into()),
                    cluster_listen_fd: Some("5".into()),
                    ..args()
                },
                "`cluster-listen-fd`",
            ),
            (
                NodeArgs {
                    listen_fd: Some("-1".into()),
                    ..args()
                },
                "`listen-fd`",
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
