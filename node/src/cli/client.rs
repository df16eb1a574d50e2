//! The client side of the command line: `dynakv get|put|delete|members|preflist|status|ns`,
//! and the HTTP client `dynakv admin` shares with them.
//!
//! Every command takes `--addr` (or `DYNAKV_ADDR`): one or more nodes, comma-separated.
//! A node that cannot be reached is skipped for the next; a request that reached a node
//! is never sent again elsewhere, unless it is a read (a write sent twice without a
//! context would make two siblings).
//!
//! Exit codes: 0 done; 1 the cluster answered with an error; 2 bad usage; 3 the key has
//! no value (`get`); 4 no node could be reached (nothing was sent); 5 a node took a
//! write but its answer was lost (it may have been applied: read before retrying).
//!
//! Requests go through the typed client of [`super::api`].

use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, Subcommand};
use dynakv_http_api::admin::{Members, NodeFigures, Overview};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

pub use super::api::{Answer, CliError, Client};
use super::api::{data_path, print_json};

/// The context header of the client API.
const CONTEXT: &str = "x-dynakv-context";

/// Where and how to reach the cluster (shared by every client command).
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Nodes to ask, comma-separated host:port; the next is tried when one is down.
    #[arg(
        long,
        env = "DYNAKV_ADDR",
        default_value = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003",
        global = true
    )]
    pub addr: String,
    /// An API token, when the cluster requires them.
    #[arg(long, env = "DYNAKV_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Machine-readable output (JSON on stdout).
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up on a node after this many milliseconds.
    #[arg(long, default_value_t = 10_000, global = true)]
    pub timeout_ms: u64,
}

#[derive(Subcommand, Debug)]
pub enum ClientCmd {
    /// Read a key: its value, or every sibling and the context that resolves them.
    Get {
        #[command(flatten)]
        target: Target,
        key: String,
        /// The key's namespace (default: `default`, the `/kv` routes).
        #[arg(long)]
        ns: Option<String>,
        /// Replicas that must answer (default: the cluster's R).
        #[arg(long)]
        r: Option<usize>,
        /// Of those, how many must be the key's own replicas, not fallbacks (default:
        /// the cluster's PR).
        #[arg(long)]
        pr: Option<usize>,
    },
    /// Write a key. The value is the argument, or --file, or standard input.
    Put {
        #[command(flatten)]
        target: Target,
        key: String,
        /// The key's namespace (default: `default`, the `/kv` routes).
        #[arg(long)]
        ns: Option<String>,
        value: Option<String>,
        /// Read the value from this file ("-": standard input).
        #[arg(long, conflicts_with = "value")]
        file: Option<std::path::PathBuf>,
        /// The context of an earlier read: the write replaces what that read saw.
        #[arg(long, conflicts_with = "resolve")]
        context: Option<String>,
        /// Read the key first and write with that read's context, replacing every
        /// sibling it returned (read-merge-write with your value as the merge).
        #[arg(long)]
        resolve: bool,
        /// Replicas that must acknowledge (default: the cluster's W).
        #[arg(long)]
        w: Option<usize>,
        /// Of those, how many must be the key's own replicas, not fallbacks holding a
        /// hint (default: the cluster's PW).
        #[arg(long)]
        pw: Option<usize>,
    },
    /// Delete a key (a tombstone; reads then answer "not found").
    Delete {
        #[command(flatten)]
        target: Target,
        key: String,
        /// The key's namespace (default: `default`, the `/kv` routes).
        #[arg(long)]
        ns: Option<String>,
        #[arg(long)]
        context: Option<String>,
        /// Replicas that must acknowledge (default: the cluster's W).
        #[arg(long)]
        w: Option<usize>,
        /// Of those, how many must be the key's own replicas (default: the cluster's PW).
        #[arg(long)]
        pw: Option<usize>,
    },
    /// The members as the node asked sees them.
    Members {
        #[command(flatten)]
        target: Target,
    },
    /// The replicas of a key, in preference order.
    Preflist {
        #[command(flatten)]
        target: Target,
        key: String,
        /// The key's namespace (default: `default`, the `/kv` routes).
        #[arg(long)]
        ns: Option<String>,
    },
    /// One screen: members, ring shares, request rates and latency, hints, anti-entropy,
    /// moving partitions.
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Namespaces: list, show, create, set.
    Ns {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        cmd: super::ns::NsCmd,
    },
}

impl ClientCmd {
    fn target(&self) -> &Target {
        match self {
            ClientCmd::Get { target, .. }
            | ClientCmd::Put { target, .. }
            | ClientCmd::Delete { target, .. }
            | ClientCmd::Members { target }
            | ClientCmd::Preflist { target, .. }
            | ClientCmd::Status { target }
            | ClientCmd::Ns { target, .. } => target,
        }
    }
}

fn query(pairs: &[(&str, Option<usize>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// A value for a terminal: its text if it is printable UTF-8, else base64.
fn shown(v: &[u8]) -> String {
    match std::str::from_utf8(v) {
        Ok(s) if !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') => s.to_string(),
        _ => format!("(binary, base64) {}", STANDARD.encode(v)),
    }
}

fn value_json(v: &[u8]) -> Value {
    match std::str::from_utf8(v) {
        Ok(s) => json!({"utf8": s}),
        Err(_) => json!({"base64": STANDARD.encode(v)}),
    }
}

/// A read's outcome.
enum ReadOutcome {
    Value(Vec<u8>, Option<String>),
    Siblings(Vec<Vec<u8>>, String),
    Missing(Option<String>),
}

/// Read quorum overrides: `r` and `pr`.
type ReadQuorum = (Option<usize>, Option<usize>);

async fn read(client: &Client, ns: Option<&str>, key: &str, (r, pr): ReadQuorum) -> Result<ReadOutcome, CliError> {
    let path = format!("{}{}", data_path(ns, key)?, query(&[("r", r), ("pr", pr)]));
    let a = client.send(Method::GET, &path, HeaderMap::new(), None, true).await?;
    let context = a.headers.get(CONTEXT).and_then(|v| v.to_str().ok()).map(str::to_string);
    match a.status {
        200 => Ok(ReadOutcome::Value(a.body.to_vec(), context)),
        300 => {
            let v: Value = a.json()?;
            let siblings = v["siblings"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| STANDARD.decode(s.as_str().unwrap_or_default()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| CliError::Other(anyhow::anyhow!("a sibling is not base64: {e}")))?;
            let ctx = v["context"]
                .as_str()
                .map(str::to_string)
                .or(context)
                .unwrap_or_default();
            Ok(ReadOutcome::Siblings(siblings, ctx))
        }
        404 if a.code().as_deref() == Some("not_found") => Ok(ReadOutcome::Missing(context)),
        _ => Err(a.error()),
    }
}

impl Answer {
    /// The `error` code of an error answer.
    fn code(&self) -> Option<String> {
        let v: Value = serde_json::from_slice(&self.body).ok()?;
        v["error"].as_str().map(str::to_string)
    }
}

fn read_input(value: Option<String>, file: Option<std::path::PathBuf>) -> Result<Vec<u8>, CliError> {
    match (value, file) {
        (Some(v), _) => Ok(v.into_bytes()),
        (None, Some(f)) if f.as_os_str() == "-" => read_stdin(),
        (None, Some(f)) => std::fs::read(&f).map_err(|e| CliError::Usage(format!("cannot read {}: {e}", f.display()))),
        (None, None) if std::io::stdin().is_terminal() => Err(CliError::Usage(
            "no value: give it as an argument, with --file, or on standard input".into(),
        )),
        (None, None) => {
            // An empty input is far more often a mistake (a script with nothing piped in)
            // than an empty value; `--file -` or '' say it is meant.
            let v = read_stdin()?;
            if v.is_empty() {
                return Err(CliError::Usage(
                    "standard input was empty: to write an empty value, give '' or --file -".into(),
                ));
            }
            Ok(v)
        }
    }
}

fn read_stdin() -> Result<Vec<u8>, CliError> {
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .map_err(|e| CliError::Usage(format!("cannot read standard input: {e}")))?;
    Ok(buf)
}

async fn write(
    client: &Client,
    ns: Option<&str>,
    key: &str,
    value: Option<Vec<u8>>,
    context: Option<&str>,
    (w, pw): (Option<usize>, Option<usize>),
) -> Result<String, CliError> {
    let path = format!("{}{}", data_path(ns, key)?, query(&[("w", w), ("pw", pw)]));
    let mut headers = HeaderMap::new();
    if let Some(c) = context {
        let v =
            HeaderValue::from_str(c.trim()).map_err(|_| CliError::Usage("the context is not a valid token".into()))?;
        headers.insert(CONTEXT, v);
    }
    let method = if value.is_some() { Method::PUT } else { Method::DELETE };
    let a = client.send(method, &path, headers, value, false).await?;
    if a.status != 204 {
        return Err(a.error());
    }
    Ok(a.headers
        .get(CONTEXT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string())
}

pub async fn run(cmd: ClientCmd) -> Result<(), CliError> {
    let target = cmd.target();
    let client = Client::new(
        &target.addr,
        target.token.clone(),
        Duration::from_millis(target.timeout_ms),
    )?;
    let json = target.json;
    match cmd {
        ClientCmd::Get { key, ns, r, pr, .. } => match read(&client, ns.as_deref(), &key, (r, pr)).await? {
            ReadOutcome::Value(v, ctx) => {
                if json {
                    print_json(&json!({"key": key, "values": [value_json(&v)], "context": ctx, "siblings": false}));
                } else {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(&v);
                    if std::io::stdout().is_terminal() && !v.ends_with(b"\n") {
                        let _ = out.write_all(b"\n");
                    }
                }
            }
            ReadOutcome::Siblings(vs, ctx) => {
                if json {
                    let values: Vec<Value> = vs.iter().map(|v| value_json(v)).collect();
                    print_json(&json!({"key": key, "values": values, "context": ctx, "siblings": true}));
                } else {
                    println!("{} siblings (concurrent values) for {key}:", vs.len());
                    for (i, v) in vs.iter().enumerate() {
                        println!("  [{}] {}", i + 1, shown(v));
                    }
                    println!("context: {ctx}");
                    println!("resolve: dynakv put {key} VALUE --resolve   (or --context {ctx})");
                }
            }
            ReadOutcome::Missing(ctx) => {
                if json {
                    print_json(&json!({"key": key, "values": [], "context": ctx, "siblings": false}));
                }
                return Err(CliError::NotFound(format!("{key}: no value")));
            }
        },
        ClientCmd::Put {
            key,
            ns,
            value,
            file,
            context,
            resolve,
            w,
            pw,
            ..
        } => {
            let value = read_input(value, file)?;
            let (context, replaced) = if resolve {
                match read(&client, ns.as_deref(), &key, (None, None)).await? {
                    ReadOutcome::Value(_, ctx) => (ctx, 1),
                    ReadOutcome::Siblings(vs, ctx) => (Some(ctx), vs.len()),
                    ReadOutcome::Missing(ctx) => (ctx, 0),
                }
            } else {
                (context, 0)
            };
            let new = write(&client, ns.as_deref(), &key, Some(value), context.as_deref(), (w, pw)).await?;
            if json {
                print_json(&json!({"key": key, "context": new, "replaced": replaced}));
            } else if resolve {
                println!("wrote {key}, replacing {replaced} value(s) the read returned; context: {new}");
            } else {
                println!("wrote {key}; context: {new}");
            }
        }
        ClientCmd::Delete {
            key,
            ns,
            context,
            w,
            pw,
            ..
        } => {
            let new = write(&client, ns.as_deref(), &key, None, context.as_deref(), (w, pw)).await?;
            if json {
                print_json(&json!({"key": key, "context": new}));
            } else {
                println!("deleted {key}; context: {new}");
            }
        }
        ClientCmd::Members { .. } => {
            let v = client.members().await?;
            if json {
                print_json(&v);
            } else {
                print!("{}", describe_members(&v));
            }
        }
        ClientCmd::Preflist { key, ns, .. } => {
            let v = client.preflist(ns.as_deref(), &key).await?;
            if json {
                print_json(&v);
            } else if v.nodes.is_empty() {
                println!(
                    "{key}: partition {}, no replicas yet (the cluster's first layout is still forming)",
                    v.partition
                );
            } else {
                println!(
                    "{key}: partition {}, replicas {}",
                    v.partition,
                    v.nodes
                        .iter()
                        .enumerate()
                        .map(|(i, n)| if i == 0 {
                            format!("{n} (primary)")
                        } else {
                            n.to_string()
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        ClientCmd::Ns { cmd, .. } => super::ns::run(&client, cmd, json).await?,
        ClientCmd::Status { .. } => {
            let v = client.overview().await?;
            if json {
                print_json(&v);
            } else {
                print!("{}", describe_status(&v));
            }
        }
    }
    Ok(())
}

fn describe_members(v: &Members) -> String {
    let mut out = format!(
        "as seen by {}\n{:<16} {:<22} {:<8} {:>5} {:>9} {:>6}\n",
        v.node, "ID", "ADDR", "STATUS", "GEN", "SILENT_S", "TOKENS"
    );
    for m in &v.members {
        out.push_str(&format!(
            "{:<16} {:<22} {:<8} {:>5} {:>9.1} {:>6}\n",
            m.id,
            m.addr,
            m.status,
            m.generation,
            m.silent_ms as f64 / 1000.0,
            m.tokens,
        ));
    }
    out
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.1}"))
}

/// `dynakv status`, from `/admin/overview`.
pub fn describe_status(v: &Overview) -> String {
    let s = &v.settings;
    let l = &v.layout;
    let mut out = format!(
        "cluster seen by {} · N={} R={} W={} {} · {} partitions · layout v{} (reads v{}) {}\n\n",
        v.node,
        s.n,
        s.r,
        s.w,
        s.conflict,
        s.partitions,
        l.version,
        l.read_version,
        if l.settled {
            "settled".to_string()
        } else {
            format!("{} partitions moving", l.moving_partitions)
        }
    );
    // Ring shares: partitions each member is the primary of, and a replica of.
    let ring = &v.ring;
    let share = |id: &str| {
        let primary = ring
            .iter()
            .filter(|r| r.first().map(String::as_str) == Some(id))
            .count();
        let replica = ring.iter().filter(|r| r.iter().any(|x| x == id)).count();
        (primary, replica)
    };
    out.push_str(&format!(
        "{:<12} {:<8} {:>4} {:>8} {:>8} {:>9} {:>7} {:>7} {:>7} {:>6}\n",
        "MEMBER", "STATUS", "GEN", "PRIMARY", "REPLICA", "REQ/S", "P50_MS", "P99_MS", "ERR/S", "HINTS"
    ));
    for m in &v.members {
        let (primary, replica) = share(&m.id);
        let pct = |x: usize| {
            if ring.is_empty() {
                "-".to_string()
            } else {
                format!("{:.0}%", 100.0 * x as f64 / ring.len() as f64)
            }
        };
        match v.nodes.get(&m.id) {
            Some(NodeFigures::Reached(n)) => out.push_str(&format!(
                "{:<12} {:<8} {:>4} {:>8} {:>8} {:>9.1} {:>7} {:>7} {:>7.1} {:>6}\n",
                m.id,
                m.status,
                m.generation,
                pct(primary),
                pct(replica),
                n.rate,
                opt_ms(n.p50_ms),
                opt_ms(n.p99_ms),
                n.errors,
                n.hints_pending,
            )),
            unreached => out.push_str(&format!(
                "{:<12} {:<8} {:>4} {:>8} {:>8}   unreachable: {}\n",
                m.id,
                m.status,
                m.generation,
                pct(primary),
                pct(replica),
                match unreached {
                    Some(NodeFigures::Unreached { error, .. }) => error.as_str(),
                    _ => "no answer",
                },
            )),
        }
    }
    out.push_str("\nanti-entropy (Merkle roots equal now / partitions shared, last exchange):\n");
    for p in &v.pairs {
        out.push_str(&format!(
            "  {:<12} {:<12} {:>9} {:>10}  {}\n",
            p.a,
            p.b,
            format!("{}/{}", p.agree.map_or("?".into(), |x| x.to_string()), p.shared),
            p.last_exchange_ms_ago
                .map_or("never".into(), |ms| format!("{:.0} s ago", ms as f64 / 1000.0)),
            p.result.as_deref().unwrap_or(""),
        ));
    }
    let named: Vec<String> = v
        .namespaces
        .iter()
        .filter(|ns| ns.name != "default")
        .map(|ns| {
            format!(
                "{} (n={} r={} w={} {}, {})",
                ns.name, ns.n, ns.r, ns.w, ns.conflict, ns.state
            )
        })
        .collect();
    if !named.is_empty() {
        out.push_str(&format!("\nnamespaces: {}\n", named.join(", ")));
    }
    let moving: Vec<_> = v
        .nodes
        .values()
        .filter_map(|n| match n {
            NodeFigures::Reached(f) => Some(f),
            NodeFigures::Unreached { .. } => None,
        })
        .flat_map(|f| f.transfers.iter())
        .filter(|t| !t.finished())
        .collect();
    if moving.is_empty() {
        out.push_str("\nno partitions moving\n");
    } else {
        out.push_str(&format!("\n{} partition transfers under way:\n", moving.len()));
        for t in moving.iter().take(20) {
            out.push_str(&format!(
                "  partition {:>5} {} -> {} {} ({} keys)\n",
                t.partition, t.from, t.to, t.state, t.keys
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::api::key_path;
    use dynakv_http_api::admin::{Figures, LayoutSummary, Member, OverviewSettings, Pair};

    #[test]
    fn keys_are_percent_encoded_whole() {
        assert_eq!(key_path("/kv/", "a/b c%").unwrap(), "/kv/a%2Fb%20c%25");
        assert_eq!(key_path("/kv/", "é").unwrap(), "/kv/%C3%A9");
        assert!(matches!(key_path("/kv/", ""), Err(CliError::Usage(_))));
        assert_eq!(data_path(None, "a/b").unwrap(), "/kv/a%2Fb");
        assert_eq!(data_path(Some("carts"), "a/b").unwrap(), "/ns/carts/kv/a%2Fb");
        assert_eq!(
            data_path(Some("a b"), "k").unwrap(),
            "/ns/a%20b/kv/k",
            "the node refuses the name"
        );
    }

    #[test]
    fn addresses_are_a_comma_separated_list() {
        let c = Client::new(" a:1, http://b:2/ ,", None, Duration::from_secs(1)).unwrap();
        assert_eq!(c.addrs(), ["a:1", "b:2"]);
        assert!(matches!(
            Client::new(" , ", None, Duration::from_secs(1)),
            Err(CliError::Usage(_))
        ));
        assert_eq!(CliError::Unreachable("x".into()).exit_code(), 4);
        assert_eq!(CliError::NotFound("x".into()).exit_code(), 3);
    }

    #[test]
    fn status_shows_shares_rates_and_unreachable_members() {
        let member = |id: &str, status: &str, generation: u64| Member {
            id: id.into(),
            addr: "-".into(),
            cluster_addr: "-".into(),
            status: status.into(),
            generation,
            heartbeat: 0,
            silent_ms: 0,
            tokens: 16,
        };
        let v = Overview {
            node: "n1".into(),
            time_ms: 0,
            settings: OverviewSettings {
                n: 2,
                r: 1,
                w: 1,
                conflict: "mv".into(),
                partitions: 4,
            },
            layout: LayoutSummary {
                version: 2,
                read_version: 2,
                settled: true,
                moving_partitions: 0,
            },
            ring: [["n1", "n2"], ["n2", "n1"], ["n1", "n2"], ["n1", "n2"]]
                .iter()
                .map(|r| r.iter().map(|s| s.to_string()).collect())
                .collect(),
            members: vec![member("n1", "alive", 1), member("n2", "dead", 3)],
            nodes: [
                (
                    "n1".to_string(),
                    NodeFigures::Reached(Figures {
                        reachable: true,
                        window_s: 60,
                        rate: 12.5,
                        errors: 0.0,
                        p50_ms: Some(0.5),
                        p99_ms: Some(3.0),
                        series: vec![],
                        hints_pending: 7,
                        hints_oldest_ms: None,
                        transfers: vec![],
                        antientropy: vec![],
                    }),
                ),
                (
                    "n2".to_string(),
                    NodeFigures::Unreached {
                        reachable: false,
                        error: "peer did not answer".into(),
                    },
                ),
            ]
            .into_iter()
            .collect(),
            pairs: vec![Pair {
                a: "n1".into(),
                b: "n2".into(),
                shared: 4,
                compared: 0,
                agree: None,
                last_exchange_ms_ago: Some(4000),
                result: Some("ok".into()),
            }],
            namespaces: vec![dynakv_http_api::admin::Namespace {
                name: "carts".into(),
                n: 2,
                r: 1,
                w: 1,
                pr: 0,
                pw: 0,
                conflict: "lww".into(),
                datatype: None,
                ttl_s: None,
                state: "pending".into(),
            }],
        };
        let s = describe_status(&v);
        assert!(s.contains("namespaces: carts (n=2 r=1 w=1 lww, pending)"), "{s}");
        assert!(s.contains("N=2 R=1 W=1 mv"), "{s}");
        let n1 = s.lines().find(|l| l.starts_with("n1 ")).unwrap();
        assert!(
            n1.contains("75%") && n1.contains("100%") && n1.contains("12.5") && n1.contains(" 7"),
            "{n1}"
        );
        let n2 = s.lines().find(|l| l.starts_with("n2 ")).unwrap();
        assert!(
            n2.contains("dead") && n2.contains("unreachable: peer did not answer"),
            "{n2}"
        );
        assert!(s.contains("?/4") && s.contains("4 s ago"), "{s}");
        assert!(s.contains("no partitions moving"));
    }
}
