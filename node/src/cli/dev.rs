//! `dynakv dev`: a local cluster of `dynakv node` child processes on loopback.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::cli::api::Client;

#[derive(clap::Args, Debug, Clone)]
pub struct DevArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Client port of the first node; the others follow. Cluster ports are 1000 higher.
    #[arg(long, default_value_t = 7001)]
    pub base_port: u16,
    /// Parent directory of the nodes' data directories.
    #[arg(long, default_value = "./dev-data")]
    pub data_dir: PathBuf,
    /// Mutual TLS between the nodes, with certificates made once in DATA_DIR/certs.
    #[arg(long)]
    pub tls: bool,
    /// Extra flags for every node, after `--` (e.g. `-- --conflict lww`).
    #[arg(last = true)]
    pub node_args: Vec<String>,
}

const MAX_NODES: usize = 32;
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    // Installed first, so Ctrl-C during start-up still stops the children cleanly.
    let shutdown = crate::env::shutdown_signal();
    tokio::pin!(shutdown);
    if args.nodes == 0 || args.nodes > MAX_NODES {
        bail!(
            "invalid setting `nodes` = {}: must be between 1 and {MAX_NODES}",
            args.nodes
        );
    }
    if args.base_port as usize + args.nodes + 1000 > u16::MAX as usize {
        bail!(
            "invalid setting `base-port` = {}: the nodes' ports would pass 65535",
            args.base_port
        );
    }
    let exe = std::env::current_exe().context("cannot find the dynakv executable")?;
    let addrs: Vec<String> = (0..args.nodes)
        .map(|i| format!("127.0.0.1:{}", args.base_port as usize + i))
        .collect();
    let cluster_addrs: Vec<String> = (0..args.nodes)
        .map(|i| format!("127.0.0.1:{}", args.base_port as usize + 1000 + i))
        .collect();
    let seeds = cluster_addrs.join(",");
    // Fewer nodes than the default N=3: shrink N so writes can succeed.
    let mut extra = args.node_args.clone();
    // Nodes prove a shared secret to each other, made once for the dev cluster.
    let chose = |flag: &str| extra.iter().any(|a| a == flag || a.starts_with(&format!("{flag}=")));
    if !chose("--insecure") && !chose("--cluster-secret-file") {
        let secret = args.data_dir.join("cluster.secret");
        if !secret.exists() {
            std::fs::create_dir_all(&args.data_dir)
                .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
            crate::env::tls::run_certs(crate::env::tls::CertsCommand::Secret { out: secret.clone() })?;
        }
        extra.extend(["--cluster-secret-file".into(), secret.display().to_string()]);
    }
    if args.nodes < 3 && !extra.iter().any(|a| a == "--n" || a.starts_with("--n=")) {
        let q = args.nodes.min(2).to_string();
        extra.extend([
            "--n".into(),
            args.nodes.to_string(),
            "--r".into(),
            q.clone(),
            "--w".into(),
            q,
        ]);
    }

    let ids: Vec<String> = (1..=args.nodes).map(|i| format!("n{i}")).collect();
    let certs = args.data_dir.join("certs");
    if args.tls {
        std::fs::create_dir_all(&args.data_dir)
            .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
        crate::env::tls::run_certs(crate::env::tls::CertsCommand::Cluster {
            dir: certs.clone(),
            ids: ids.clone(),
        })?;
    }
    let mut children: Vec<(String, Child)> = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let id = ids[i].clone();
        let dir = args.data_dir.join(&id);
        let mut tls_args: Vec<String> = Vec::new();
        if args.tls {
            tls_args.extend(["--certs-dir".into(), certs.join(&id).display().to_string()]);
        }
        let mut child = Command::new(&exe)
            .arg("node")
            .args(["--id", &id, "--listen", addr, "--cluster-listen", &cluster_addrs[i]])
            .args(["--seeds", &seeds])
            .arg("--data-dir")
            .arg(&dir)
            .args(&tls_args)
            .args(&extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start node {id}"))?;
        prefix_output(&id, &mut child);
        children.push((id, child));
    }

    println!("dynakv dev cluster: {} nodes", args.nodes);
    for ((id, _), addr) in children.iter().zip(&addrs) {
        println!("  {id}  http://{addr}   data {}", args.data_dir.join(id).display());
    }
    let ready = tokio::select! {
        _ = &mut shutdown => None,
        ready = wait_ready(&addrs, &mut children) => Some(ready),
    };
    match ready {
        Some(Ok(())) => {}
        Some(Err(e)) => {
            stop(&mut children).await;
            return Err(e);
        }
        None => {
            stop(&mut children).await;
            println!("all nodes stopped");
            return Ok(());
        }
    }
    println!("ready. try:");
    println!(
        "  dynakv put greeting hello            (the dynakv binary is in {})",
        exe.parent().map_or_else(String::new, |d| d.display().to_string())
    );
    println!("  dynakv get greeting");
    println!("  dynakv status");
    println!("  http://{}/ui                 (the cluster in a browser)", addrs[0]);
    println!("A node that stops (e.g. kill its pid) leaves the others running; Ctrl-C stops every node.");

    // Nodes that exit are reported; the rest serve on (a newcomer may stop one to see
    // the cluster cope) until Ctrl-C or until none is left.
    loop {
        let exited = tokio::select! {
            _ = &mut shutdown => break,
            exited = any_exit(&mut children) => exited,
        };
        let (id, status) = exited;
        children.retain(|(other, _)| *other != id);
        eprintln!("node {id} exited ({status}); {} still running", children.len());
        if children.is_empty() {
            bail!("every node exited");
        }
    }
    stop(&mut children).await;
    println!("all nodes stopped");
    Ok(())
}

/// Copies a child's output to ours, each line tagged with the node id.
fn prefix_output(id: &str, child: &mut Child) {
    if let Some(out) = child.stdout.take() {
        let tag = id.to_string();
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                println!("[{tag}] {line}");
            }
        });
    }
    if let Some(err) = child.stderr.take() {
        let tag = id.to_string();
        tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[{tag}] {line}");
            }
        });
    }
}

/// Ready means every node serves and sees every other one alive (gossip has formed the
/// cluster), so the first request after "ready" finds its replicas.
async fn wait_ready(addrs: &[String], children: &mut [(String, Child)]) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    // One client (one connection pool) for every poll; each gives up after 500 ms.
    let client = Client::new(&addrs.join(","), None, Duration::from_millis(500))?;
    for addr in addrs {
        let node = client.at(addr);
        loop {
            for (id, child) in children.iter_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("node {id} exited during start-up ({status})");
                }
            }
            if sees_all_alive(&node, addrs.len()).await && layout_has_all(&node, addrs.len()).await {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "node at {addr} did not serve, see all {} nodes alive and have them all in a settled layout \
                     within {READY_TIMEOUT:?}",
                    addrs.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Whether the node `node` asks serves and lists `nodes` members, all alive.
async fn sees_all_alive(node: &Client, nodes: usize) -> bool {
    node.members()
        .await
        .is_ok_and(|m| m.members.len() == nodes && m.members.iter().all(|m| m.status == "alive"))
}

/// Whether the node `node` asks has a settled layout with `nodes` owners, reading from it.
async fn layout_has_all(node: &Client, nodes: usize) -> bool {
    node.layout()
        .await
        .is_ok_and(|l| l.settled && l.read_version == l.version && l.members.len() == nodes)
}

async fn any_exit(children: &mut [(String, Child)]) -> (String, std::process::ExitStatus) {
    loop {
        for (id, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return (id.clone(), status);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// SIGTERM every child, wait for a clean exit, SIGKILL what is left.
async fn stop(children: &mut [(String, Child)]) {
    for (_, child) in children.iter() {
        if let Some(pid) = child.id() {
            // SAFETY: plain signal to a child process we spawned and still own.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }
    for (id, child) in children.iter_mut() {
        match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!("node {id} did not stop within {STOP_TIMEOUT:?}; killing it");
                let _ = child.kill().await;
            }
        }
    }
}
