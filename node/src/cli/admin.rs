//! `dynakv admin`: the layout operations of `/admin/layout` from the command line, and a
//! live view of a change while its partitions move.

use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use dynakv_http_api::admin::{Layout, LayoutPlan};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::{Value, json};

use crate::cli::api::Client;
use crate::cli::client::Target;

#[derive(Args, Debug)]
pub struct AdminArgs {
    /// Nodes to ask (the next when one is down), the token (with the `admin` scope) and
    /// `--json` for the nodes' answers as they are.
    #[command(flatten)]
    pub target: Target,
    #[command(subcommand)]
    pub cmd: AdminCmd,
}

#[derive(Subcommand, Debug)]
pub enum AdminCmd {
    /// The current layout: owners, their state, what is staged and what is moving.
    Layout,
    /// Stage a change (nothing moves until `commit`).
    Stage {
        #[command(subcommand)]
        change: StageCmd,
    },
    /// What committing the staged changes would move.
    Plan,
    /// Commit the staged changes as the next layout version.
    Commit {
        /// The version the commit creates (the current one + 1); by default the one the
        /// node shows now. A commit naming a stale version fails with layout_conflict.
        #[arg(long)]
        version: Option<u64>,
        /// Return at once rather than follow the transfers until the layout settles.
        #[arg(long)]
        no_wait: bool,
    },
    /// Drop the staged changes.
    Revert,
    /// Follow the transfers with a progress bar until the layout settles.
    Status {
        /// Give up after this many seconds (0: wait as long as it takes).
        #[arg(long, default_value_t = 0)]
        timeout_s: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum StageCmd {
    /// A started node that gossips with the cluster takes partitions.
    Join { id: String },
    /// A live owner hands its partitions off, then owns nothing.
    Leave { id: String },
    /// A dead owner's partitions are rebuilt from the other replicas.
    Remove { id: String },
    /// NEW takes over exactly OLD's partitions.
    Replace { old: String, new: String },
    /// Change an owner's share of the ring.
    Capacity { id: String, tokens: u32 },
}

impl StageCmd {
    fn body(&self) -> Value {
        match self {
            StageCmd::Join { id } => json!({ "join": id }),
            StageCmd::Leave { id } => json!({ "leave": id }),
            StageCmd::Remove { id } => json!({ "remove": id }),
            StageCmd::Replace { old, new } => json!({"replace": {"old": old, "new": new}}),
            StageCmd::Capacity { id, tokens } => json!({"capacity": {"id": id, "tokens": tokens}}),
        }
    }
}

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let client = Client::new(
        &args.target.addr,
        args.target.token.clone(),
        Duration::from_millis(args.target.timeout_ms.max(30_000)),
    )?;
    let json = args.target.json;
    fn show<T: Serialize>(json: bool, v: &T, human: fn(&T) -> String) {
        if json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        } else {
            print!("{}", human(v));
        }
    }
    match &args.cmd {
        AdminCmd::Layout => show(json, &client.layout().await?, describe_layout),
        AdminCmd::Stage { change } => show(json, &client.stage(change.body()).await?, describe_layout),
        AdminCmd::Revert => show(json, &client.revert().await?, describe_layout),
        AdminCmd::Plan => show(json, &client.layout_plan().await?, describe_plan),
        AdminCmd::Commit { version, no_wait } => {
            let version = match version {
                Some(v) => *v,
                None => client.layout().await?.version + 1,
            };
            let v = client.commit(version).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                println!("committed layout version {version}");
            }
            if !no_wait {
                follow(&client, 0, json).await?;
            }
        }
        AdminCmd::Status { timeout_s } => follow(&client, *timeout_s, json).await?,
    }
    Ok(())
}

fn describe_layout(v: &Layout) -> String {
    let mut out = format!(
        "layout version {} (reads use {}), {}\n",
        v.version,
        v.read_version,
        if v.settled { "settled" } else { "partitions moving" }
    );
    out.push_str(&format!(
        "{:<16} {:<22} {:>6}  {:<8} {}\n",
        "ID", "ADDR", "TOKENS", "STATE", "STATUS"
    ));
    for m in &v.members {
        out.push_str(&format!(
            "{:<16} {:<22} {:>6}  {:<8} {}\n",
            m.id,
            m.addr.as_deref().unwrap_or("-"),
            m.tokens.map_or("null".to_string(), |t| t.to_string()),
            m.state,
            m.status.as_deref().unwrap_or("unknown"),
        ));
    }
    if v.staged.is_empty() {
        out.push_str("nothing staged\n");
    } else {
        out.push_str("staged:\n");
        for s in &v.staged {
            out.push_str(&format!("  {}\n", s.change));
        }
    }
    out
}

fn describe_plan(v: &LayoutPlan) -> String {
    let mut out = format!(
        "committing would create layout version {} with owners {}\n{} partitions change replicas; {} partition copies to send, about {} keys\n",
        v.version,
        serde_json::to_string(&v.owners).unwrap_or_default(),
        v.moves,
        v.partition_copies_to_send,
        v.keys_to_move_estimate,
    );
    out.push_str(&format!("{:<16} {:>8} {:>8}\n", "ID", "BEFORE", "AFTER"));
    for (id, p) in &v.partitions {
        out.push_str(&format!("{:<16} {:>8} {:>8}\n", id, p.before, p.after));
    }
    out
}

/// What the cluster's transfers add up to, asked of every member.
struct Totals {
    settled: bool,
    done: u64,
    all: u64,
    keys: u64,
    bytes: u64,
}

async fn totals(client: &Client) -> anyhow::Result<Totals> {
    let layout = client.layout().await?;
    let mut t = Totals {
        settled: layout.settled && layout.read_version == layout.version,
        done: 0,
        all: 0,
        keys: 0,
        bytes: 0,
    };
    for m in &layout.members {
        let Some(addr) = &m.addr else { continue };
        // A member that does not answer (down) shows no transfers.
        let Ok(theirs) = client.at(addr).layout().await else {
            continue;
        };
        t.settled &= theirs.settled;
        for tr in &theirs.transfers {
            if tr.version != layout.version && tr.state == "done" {
                continue;
            }
            t.all += 1;
            if tr.finished() {
                t.done += 1;
            }
            t.keys += tr.keys;
            t.bytes += tr.bytes;
        }
    }
    Ok(t)
}

/// Shows the transfers until every member is settled.
async fn follow(client: &Client, timeout_s: u64, quiet: bool) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} partition transfers {msg}")
            .expect("a valid template"),
    );
    loop {
        let t = totals(client).await?;
        bar.set_length(t.all);
        bar.set_position(t.done);
        bar.set_message(format!("{} keys, {:.1} MB", t.keys, t.bytes as f64 / 1e6));
        if t.settled {
            bar.finish_with_message(format!(
                "{} keys, {:.1} MB: settled in {:.1} s",
                t.keys,
                t.bytes as f64 / 1e6,
                started.elapsed().as_secs_f64()
            ));
            return Ok(());
        }
        if timeout_s > 0 && started.elapsed() > Duration::from_secs(timeout_s) {
            bar.abandon();
            bail!("the layout did not settle within {timeout_s} s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
