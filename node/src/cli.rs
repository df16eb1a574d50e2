//! The client side of the command line: `dynakv get|put|delete|members|preflist|status`,
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
//! Why this file is long: six commands, each with text and JSON output and its exit
//! codes, decode the admin API's JSON by hand; a typed admin client would take that
//! decoding out (ARCHITECTURE.md).

use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, Subcommand};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

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
        /// Replicas that must answer (default: the cluster's R).
        #[arg(long)]
        r: Option<usize>,
    },
    /// Write a key. The value is the argument, or --file, or standard input.
    Put {
        #[command(flatten)]
        target: Target,
        key: String,
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
    },
    /// Delete a key (a tombstone; reads then answer "not found").
    Delete {
        #[command(flatten)]
        target: Target,
        key: String,
        #[arg(long)]
        context: Option<String>,
        #[arg(long)]
        w: Option<usize>,
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
    },
    /// One screen: members, ring shares, request rates and latency, hints, anti-entropy,
    /// moving partitions.
    Status {
        #[command(flatten)]
        target: Target,
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
            | ClientCmd::Status { target } => target,
        }
    }
}

/// Why a command failed, and its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Unreachable(String),
    /// A write reached a node and no answer came back.
    #[error("{0}")]
    OutcomeUnknown(String),
    #[error("{status} {code}: {message}")]
    Api { status: u16, code: String, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Usage(String),
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Api { .. } | CliError::Other(_) => 1,
            CliError::Usage(_) => 2,
            CliError::NotFound(_) => 3,
            CliError::Unreachable(_) => 4,
            CliError::OutcomeUnknown(_) => 5,
        }
    }
}

/// An answer from a node.
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
    /// The node that answered.
    pub addr: String,
}

impl Answer {
    fn json(&self) -> Result<Value, CliError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            CliError::Other(anyhow::anyhow!(
                "{} answered {} without JSON: {e}",
                self.addr,
                self.status
            ))
        })
    }

    /// The error the answer carries, if it is one.
    fn error(&self) -> CliError {
        let v: Value = serde_json::from_slice(&self.body).unwrap_or(Value::Null);
        CliError::Api {
            status: self.status,
            code: v["error"].as_str().unwrap_or("error").to_string(),
            message: v["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned()),
        }
    }
}

/// An HTTP client over a list of nodes.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    token: Option<String>,
    addrs: Vec<String>,
}

impl Client {
    pub fn new(addrs: &str, token: Option<String>, timeout: Duration) -> Result<Client, CliError> {
        let addrs: Vec<String> = addrs
            .split(',')
            .map(|a| a.trim().trim_start_matches("http://").trim_end_matches('/').to_string())
            .filter(|a| !a.is_empty())
            .collect();
        if addrs.is_empty() {
            return Err(CliError::Usage("--addr names no node".into()));
        }
        if let Some(a) = addrs.iter().find(|a| a.starts_with("https://")) {
            return Err(CliError::Usage(format!(
                "{a}: this command speaks plain HTTP only; reach a node with --client-tls through curl --cacert"
            )));
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .build()
            .map_err(|e| CliError::Other(e.into()))?;
        Ok(Client { http, token, addrs })
    }

    /// The same client, asking only `addr`.
    pub fn at(&self, addr: &str) -> Client {
        Client {
            addrs: vec![addr.to_string()],
            ..self.clone()
        }
    }

    /// Sends a request to the first node that can be reached. `retry_sent`: also move on
    /// when a node took the request but did not answer (safe for reads only).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: HeaderMap,
        body: Option<Vec<u8>>,
        retry_sent: bool,
    ) -> Result<Answer, CliError> {
        let mut failures = Vec::new();
        for addr in &self.addrs {
            let mut req = self
                .http
                .request(method.clone(), format!("http://{addr}{path}"))
                .headers(headers.clone());
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) if e.is_connect() || retry_sent => {
                    failures.push(format!("{addr}: {}", root_cause(&e)));
                    continue;
                }
                Err(e) => {
                    return Err(CliError::OutcomeUnknown(format!(
                        "{addr} took the request but did not answer ({}); it may have been applied: read \
                         the key before retrying",
                        root_cause(&e)
                    )));
                }
            };
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            match resp.bytes().await {
                Ok(body) => {
                    return Ok(Answer {
                        status,
                        headers,
                        body,
                        addr: addr.clone(),
                    });
                }
                Err(e) if retry_sent => failures.push(format!("{addr}: {}", root_cause(&e))),
                Err(e) => {
                    return Err(CliError::OutcomeUnknown(format!(
                        "{addr} answered {status} but its answer broke off ({}); the request may have been \
                         applied",
                        root_cause(&e)
                    )));
                }
            }
        }
        Err(CliError::Unreachable(format!(
            "no node answered: {}",
            failures.join("; ")
        )))
    }

    /// A JSON request; an error answer becomes [`CliError::Api`].
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, CliError> {
        let mut headers = HeaderMap::new();
        let read = method == Method::GET;
        let body = match body {
            Some(b) => {
                headers.insert(
                    reqwest::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Some(serde_json::to_vec(&b).map_err(|e| CliError::Other(e.into()))?)
            }
            None => None,
        };
        let a = self.send(method, path, headers, body, read).await?;
        if !(200..300).contains(&a.status) {
            return Err(a.error());
        }
        a.json()
    }

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value, CliError> {
        self.call(Method::POST, path, Some(body)).await
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A key as a path segment: every byte but unreserved ones percent-encoded.
fn key_path(prefix: &str, key: &str) -> Result<String, CliError> {
    if key.is_empty() {
        return Err(CliError::Usage("the key is empty".into()));
    }
    let mut out = String::from(prefix);
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
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

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// A read's outcome.
enum ReadOutcome {
    Value(Vec<u8>, Option<String>),
    Siblings(Vec<Vec<u8>>, String),
    Missing(Option<String>),
}

async fn read(client: &Client, key: &str, r: Option<usize>) -> Result<ReadOutcome, CliError> {
    let path = format!("{}{}", key_path("/kv/", key)?, query(&[("r", r)]));
    let a = client.send(Method::GET, &path, HeaderMap::new(), None, true).await?;
    let context = a.headers.get(CONTEXT).and_then(|v| v.to_str().ok()).map(str::to_string);
    match a.status {
        200 => Ok(ReadOutcome::Value(a.body.to_vec(), context)),
        300 => {
            let v = a.json()?;
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
    key: &str,
    value: Option<Vec<u8>>,
    context: Option<&str>,
    w: Option<usize>,
) -> Result<String, CliError> {
    let path = format!("{}{}", key_path("/kv/", key)?, query(&[("w", w)]));
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
        ClientCmd::Get { key, r, .. } => match read(&client, &key, r).await? {
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
            value,
            file,
            context,
            resolve,
            w,
            ..
        } => {
            let value = read_input(value, file)?;
            let (context, replaced) = if resolve {
                match read(&client, &key, None).await? {
                    ReadOutcome::Value(_, ctx) => (ctx, 1),
                    ReadOutcome::Siblings(vs, ctx) => (Some(ctx), vs.len()),
                    ReadOutcome::Missing(ctx) => (ctx, 0),
                }
            } else {
                (context, 0)
            };
            let new = write(&client, &key, Some(value), context.as_deref(), w).await?;
            if json {
                print_json(&json!({"key": key, "context": new, "replaced": replaced}));
            } else if resolve {
                println!("wrote {key}, replacing {replaced} value(s) the read returned; context: {new}");
            } else {
                println!("wrote {key}; context: {new}");
            }
        }
        ClientCmd::Delete { key, context, w, .. } => {
            let new = write(&client, &key, None, context.as_deref(), w).await?;
            if json {
                print_json(&json!({"key": key, "context": new}));
            } else {
                println!("deleted {key}; context: {new}");
            }
        }
        ClientCmd::Members { .. } => {
            let v = client.get("/cluster/members").await?;
            if json {
                print_json(&v);
            } else {
                print!("{}", describe_members(&v));
            }
        }
        ClientCmd::Preflist { key, .. } => {
            let v = client.get(&key_path("/cluster/preflist/", &key)?).await?;
            if json {
                print_json(&v);
            } else {
                let nodes: Vec<&str> = v["nodes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                if nodes.is_empty() {
                    println!(
                        "{key}: partition {}, no replicas yet (the cluster's first layout is still forming)",
                        v["partition"]
                    );
                    return Ok(());
                }
                println!(
                    "{key}: partition {}, replicas {}",
                    v["partition"],
                    nodes
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
        ClientCmd::Status { .. } => {
            let v = client.get("/admin/overview").await?;
            if json {
                print_json(&v);
            } else {
                print!("{}", describe_status(&v));
            }
        }
    }
    Ok(())
}

/// A JSON value as text for a table cell ("-" when absent): `Value`'s own `Display`
/// ignores widths.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn describe_members(v: &Value) -> String {
    let mut out = format!(
        "as seen by {}\n{:<16} {:<22} {:<8} {:>5} {:>9} {:>6}\n",
        v["node"].as_str().unwrap_or("?"),
        "ID",
        "ADDR",
        "STATUS",
        "GEN",
        "SILENT_S",
        "TOKENS"
    );
    for m in v["members"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<16} {:<22} {:<8} {:>5} {:>9.1} {:>6}\n",
            m["id"].as_str().unwrap_or("?"),
            m["addr"].as_str().unwrap_or("-"),
            m["status"].as_str().unwrap_or("?"),
            cell(&m["generation"]),
            m["silent_ms"].as_f64().unwrap_or(0.0) / 1000.0,
            cell(&m["tokens"]),
        ));
    }
    out
}

fn opt_ms(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |x| format!("{x:.1}"))
}

/// `dynakv status`, from `/admin/overview`.
pub fn describe_status(v: &Value) -> String {
    let s = &v["settings"];
    let l = &v["layout"];
    let mut out = format!(
        "cluster seen by {} · N={} R={} W={} {} · {} partitions · layout v{} (reads v{}) {}\n\n",
        v["node"].as_str().unwrap_or("?"),
        cell(&s["n"]),
        cell(&s["r"]),
        cell(&s["w"]),
        s["conflict"].as_str().unwrap_or("?"),
        cell(&s["partitions"]),
        cell(&l["version"]),
        cell(&l["read_version"]),
        if l["settled"] == true {
            "settled".to_string()
        } else {
            format!("{} partitions moving", l["moving_partitions"])
        }
    );
    // Ring shares: partitions each member is the primary of, and a replica of.
    let ring = v["ring"].as_array().cloned().unwrap_or_default();
    let share = |id: &str| {
        let primary = ring.iter().filter(|r| r[0].as_str() == Some(id)).count();
        let replica = ring
            .iter()
            .filter(|r| r.as_array().into_iter().flatten().any(|x| x.as_str() == Some(id)))
            .count();
        (primary, replica)
    };
    out.push_str(&format!(
        "{:<12} {:<8} {:>4} {:>8} {:>8} {:>9} {:>7} {:>7} {:>7} {:>6}\n",
        "MEMBER", "STATUS", "GEN", "PRIMARY", "REPLICA", "REQ/S", "P50_MS", "P99_MS", "ERR/S", "HINTS"
    ));
    for m in v["members"].as_array().into_iter().flatten() {
        let id = m["id"].as_str().unwrap_or("?");
        let (primary, replica) = share(id);
        let n = &v["nodes"][id];
        let pct = |x: usize| {
            if ring.is_empty() {
                "-".to_string()
            } else {
                format!("{:.0}%", 100.0 * x as f64 / ring.len() as f64)
            }
        };
        if n["reachable"] == true {
            out.push_str(&format!(
                "{:<12} {:<8} {:>4} {:>8} {:>8} {:>9.1} {:>7} {:>7} {:>7.1} {:>6}\n",
                id,
                m["status"].as_str().unwrap_or("?"),
                cell(&m["generation"]),
                pct(primary),
                pct(replica),
                n["rate"].as_f64().unwrap_or(0.0),
                opt_ms(&n["p50_ms"]),
                opt_ms(&n["p99_ms"]),
                n["errors"].as_f64().unwrap_or(0.0),
                cell(&n["hints_pending"]),
            ));
        } else {
            out.push_str(&format!(
                "{:<12} {:<8} {:>4} {:>8} {:>8}   unreachable: {}\n",
                id,
                m["status"].as_str().unwrap_or("?"),
                cell(&m["generation"]),
                pct(primary),
                pct(replica),
                n["error"].as_str().unwrap_or("no answer"),
            ));
        }
    }
    out.push_str("\nanti-entropy (Merkle roots equal now / partitions shared, last exchange):\n");
    for p in v["pairs"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:<12} {:<12} {:>9} {:>10}  {}\n",
            p["a"].as_str().unwrap_or("?"),
            p["b"].as_str().unwrap_or("?"),
            format!(
                "{}/{}",
                p["agree"].as_u64().map_or("?".into(), |x| x.to_string()),
                cell(&p["shared"])
            ),
            p["last_exchange_ms_ago"]
                .as_f64()
                .map_or("never".into(), |ms| format!("{:.0} s ago", ms / 1000.0)),
            p["result"].as_str().unwrap_or(""),
        ));
    }
    let moving: Vec<&Value> = v["nodes"]
        .as_object()
        .into_iter()
        .flat_map(|o| o.values())
        .flat_map(|n| n["transfers"].as_array().into_iter().flatten())
        .filter(|t| !matches!(t["state"].as_str(), Some("done" | "not_needed" | "skipped")))
        .collect();
    if moving.is_empty() {
        out.push_str("\nno partitions moving\n");
    } else {
        out.push_str(&format!("\n{} partition transfers under way:\n", moving.len()));
        for t in moving.iter().take(20) {
            out.push_str(&format!(
                "  partition {:>5} {} -> {} {} ({} keys)\n",
                cell(&t["partition"]),
                t["from"].as_str().unwrap_or("?"),
                t["to"].as_str().unwrap_or("?"),
                t["state"].as_str().unwrap_or("?"),
                t["keys"]
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_encoded_whole() {
        assert_eq!(key_path("/kv/", "a/b c%").unwrap(), "/kv/a%2Fb%20c%25");
        assert_eq!(key_path("/kv/", "é").unwrap(), "/kv/%C3%A9");
        assert!(matches!(key_path("/kv/", ""), Err(CliError::Usage(_))));
    }

    #[test]
    fn addresses_are_a_comma_separated_list() {
        let c = Client::new(" a:1, http://b:2/ ,", None, Duration::from_secs(1)).unwrap();
        assert_eq!(c.addrs, vec!["a:1", "b:2"]);
        assert!(matches!(
            Client::new(" , ", None, Duration::from_secs(1)),
            Err(CliError::Usage(_))
        ));
        assert_eq!(CliError::Unreachable("x".into()).exit_code(), 4);
        assert_eq!(CliError::NotFound("x".into()).exit_code(), 3);
    }

    #[test]
    fn status_shows_shares_rates_and_unreachable_members() {
        let v = json!({
            "node": "n1",
            "settings": {"n": 2, "r": 1, "w": 1, "conflict": "mv", "partitions": 4},
            "layout": {"version": 2, "read_version": 2, "settled": true, "moving_partitions": 0},
            "ring": [["n1","n2"],["n2","n1"],["n1","n2"],["n1","n2"]],
            "members": [{"id":"n1","status":"alive","generation":1},{"id":"n2","status":"dead","generation":3}],
            "nodes": {"n1": {"reachable": true, "rate": 12.5, "p50_ms": 0.5, "p99_ms": 3.0, "errors": 0.0, "hints_pending": 7},
                      "n2": {"reachable": false, "error": "peer did not answer"}},
            "pairs": [{"a":"n1","b":"n2","shared":4,"agree":null,"last_exchange_ms_ago":4000,"result":"ok"}]
        });
        let s = describe_status(&v);
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
