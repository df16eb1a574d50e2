//! `dynakv admin`: the layout operations of `/admin/layout` from the command line, and a
//! live view of a change while its partitions move.

use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::cli::{Client, Target};

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
    let show = |v: &Value, human: fn(&Value) -> String| {
        if json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        } else {
            print!("{}", human(v));
        }
    };
    match &args.cmd {
        AdminCmd::Layout => show(&client.get("/admin/layout").await?, describe_layout),
        AdminCmd::Stage { change } => show(
            &client.post("/admin/layout/stage", change.body()).await?,
            describe_layout,
        ),
        AdminCmd::Revert => show(&client.post("/admin/layout/revert", json!({})).await?, describe_layout),
        AdminCmd::Plan => show(&client.get("/admin/layout/plan").await?, describe_plan),
        AdminCmd::Commit { version, no_wait } => {
            let version = match version {
                Some(v) => *v,
                None => client.get("/admin/layout").await?["version"].as_u64().unwrap_or(0) + 1,
            };
            let v = client
                .post("/admin/layout/commit", json!({ "version": version }))
                .await?;
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

fn describe_layout(v: &Value) -> String {
    let mut out = format!(
        "layout version {} (reads use {}), {}\n",
        v["version"],
        v["read_version"],
        if v["settled"] == true {
            "settled"
        } else {
            "partitions moving"
        }
    );
    out.push_str(&format!(
        "{:<16} {:<22} {:>6}  {:<8} {}\n",
        "ID", "ADDR", "TOKENS", "STATE", "STATUS"
    ));
    for m in v["members"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<16} {:<22} {:>6}  {:<8} {}\n",
            m["id"].as_str().unwrap_or("?"),
            m["addr"].as_str().unwrap_or("-"),
            m["tokens"],
            m["state"].as_str().unwrap_or("?"),
            m["status"].as_str().unwrap_or("unknown"),
        ));
    }
    let staged = v["staged"].as_array().cloned().unwrap_or_default();
    if staged.is_empty() {
        out.push_str("nothing staged\n");
    } else {
        out.push_str("staged:\n");
        for s in staged {
            out.push_str(&format!("  {}\n", s["change"]));
        }
    }
    out
}

fn describe_plan(v: &Value) -> String {
    let mut out = format!(
        "committing would create layout version {} with owners {}\n{} partitions change replicas; {} partition copies to send, about {} keys\n",
        v["version"], v["owners"], v["moves"], v["partition_copies_to_send"], v["keys_to_move_estimate"],
    );
    out.push_str(&format!("{:<16} {:>8} {:>8}\n", "ID", "BEFORE", "AFTER"));
    if let Some(ps) = v["partitions"].as_object() {
        for (id, p) in ps {
            out.push_str(&format!("{:<16} {:>8} {:>8}\n", id, p["before"], p["after"]));
        }
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
    let layout = client.get("/admin/layout").await?;
    let mut t = Totals {
        settled: layout["settled"] == true && layout["read_version"] == layout["version"],
        done: 0,
        all: 0,
        keys: 0,
        bytes: 0,
    };
    for m in layout["members"].as_array().into_iter().flatten() {
        let Some(addr) = m["addr"].as_str() else { continue };
        let other = client.at(addr);
        // A member that does not answer (down) shows no transfers.
        let Ok(theirs) = other.get("/admin/layout").await else {
            continue;
        };
        t.settled &= theirs["settled"] == true;
        for tr in theirs["transfers"].as_array().into_iter().flatten() {
            if tr["version"] != layout["version"] && tr["state"] == "done" {
                continue;
            }
            t.all += 1;
            if matches!(tr["state"].as_str(), Some("done" | "skipped" | "not_needed")) {
                t.done += 1;
            }
            t.keys += tr["keys"].as_u64().unwrap_or(0);
            t.bytes += tr["bytes"].as_u64().unwrap_or(0);
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
