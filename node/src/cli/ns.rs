//! `dynakv ns list|show|create|set`: the cluster's namespaces, each with its own N, R, W,
//! PR, PW, conflict mode and expiry (`/admin/namespaces`; the admin scope when the
//! cluster requires API tokens).

use clap::{Args, Subcommand};
use dynakv_http_api::admin::{Namespace, NamespacePatch, NamespaceSpec, Namespaces};

use super::api::{CliError, Client, print_json};

#[derive(Subcommand, Debug)]
pub enum NsCmd {
    /// Every namespace, `default` (the nodes' own settings) first.
    List,
    /// One namespace.
    Show { name: String },
    /// Create a namespace; what is not given comes from the cluster's settings. A name
    /// is a lowercase letter or digit, then up to 62 lowercase letters, digits, `_` or
    /// `-`. It serves data once every owner of the layout has it (`state: active`).
    Create {
        name: String,
        /// Replicas per key (fixed at creation).
        #[arg(long)]
        n: Option<u8>,
        #[command(flatten)]
        quorums: Quorums,
        /// `mv` (siblings) or `lww` (fixed at creation).
        #[arg(long)]
        conflict: Option<String>,
        /// Default time to live of a written value, in seconds.
        #[arg(long)]
        ttl_s: Option<u64>,
    },
    /// Change a namespace's quorums or expiry (N and the conflict mode are fixed).
    Set {
        name: String,
        #[command(flatten)]
        quorums: Quorums,
        /// New default time to live, in seconds.
        #[arg(long, conflicts_with = "no_ttl")]
        ttl_s: Option<u64>,
        /// Values written from now on do not expire by default.
        #[arg(long)]
        no_ttl: bool,
    },
}

/// The quorums `create` and `set` take (absent: the cluster's, or unchanged).
#[derive(Args, Debug)]
pub struct Quorums {
    /// Replies a read waits for.
    #[arg(long)]
    r: Option<u8>,
    /// Acknowledgements a write waits for.
    #[arg(long)]
    w: Option<u8>,
    /// Of the R answers, how many must come from the key's own replicas.
    #[arg(long)]
    pr: Option<u8>,
    /// Of the W acknowledgements, how many must come from the key's own replicas.
    #[arg(long)]
    pw: Option<u8>,
}

fn table(namespaces: &[Namespace]) -> String {
    let mut out = format!(
        "{:<24} {:>2} {:>2} {:>2} {:>2} {:>2} {:<8} {:>8} {:<8}\n",
        "NAME", "N", "R", "W", "PR", "PW", "CONFLICT", "TTL_S", "STATE"
    );
    for n in namespaces {
        out.push_str(&format!(
            "{:<24} {:>2} {:>2} {:>2} {:>2} {:>2} {:<8} {:>8} {:<8}\n",
            n.name,
            n.n,
            n.r,
            n.w,
            n.pr,
            n.pw,
            n.conflict,
            n.ttl_s.map_or("-".to_string(), |t| t.to_string()),
            n.state
        ));
    }
    out
}

/// Runs one `dynakv ns` command; `json`: print the answer as JSON.
pub async fn run(client: &Client, cmd: NsCmd, json: bool) -> Result<(), CliError> {
    let show = |v: &Namespace| {
        if json {
            print_json(v);
        } else {
            print!("{}", table(std::slice::from_ref(v)));
        }
    };
    match cmd {
        NsCmd::List => {
            let v: Namespaces = client.namespaces().await?;
            if json {
                print_json(&v);
            } else {
                print!("{}", table(&v.namespaces));
            }
        }
        NsCmd::Show { name } => show(&client.namespace(&name).await?),
        NsCmd::Create {
            name,
            n,
            quorums: Quorums { r, w, pr, pw },
            conflict,
            ttl_s,
        } => {
            let spec = NamespaceSpec {
                n,
                r,
                w,
                pr,
                pw,
                conflict,
                datatype: None,
                ttl_s,
            };
            show(&client.create_namespace(&name, &spec).await?);
        }
        NsCmd::Set {
            name,
            quorums: Quorums { r, w, pr, pw },
            ttl_s,
            no_ttl,
        } => {
            let patch = NamespacePatch {
                r,
                w,
                pr,
                pw,
                ttl_s: if no_ttl { Some(None) } else { ttl_s.map(Some) },
                ..NamespacePatch::default()
            };
            show(&client.tune_namespace(&name, &patch).await?);
        }
    }
    Ok(())
}
