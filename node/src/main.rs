//! `dynakv`: run a node or a local development cluster, or administer a cluster.

/// glibc's allocator spent ~12% of a node's CPU under load (malloc_consolidate,
/// unlink_chunk in perf profiles); mimalloc's thread-local pages avoid that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dynakv_node::cli::dev::DevArgs;
use dynakv_node::config::{Config, NodeArgs};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "dynakv",
    version,
    about = "A Dynamo-style, eventually consistent key-value store"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one node.
    Node(Box<NodeArgs>),
    /// Start a local cluster of nodes on loopback; Ctrl-C stops them all.
    Dev(DevArgs),
    /// Cluster layout: stage, plan, commit and follow membership changes.
    Admin(dynakv_node::cli::admin::AdminArgs),
    /// Make the cluster CA, node and client certificates, and cluster secrets.
    Certs {
        #[command(subcommand)]
        cmd: dynakv_node::env::tls::CertsCommand,
    },
    #[command(flatten)]
    Client(dynakv_node::cli::client::ClientCmd),
    /// Exit 0 if the node at --addr answers GET /health with 200 (for container health checks).
    Health {
        /// host:port of the node.
        #[arg(long, default_value = "127.0.0.1:7000")]
        addr: String,
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // A node's settings say how many workers to start, so they are read first.
    let node_config = match &cli.cmd {
        Cmd::Node(args) => match Config::load((**args).clone()) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("dynakv: {e}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    let workers = node_config
        .as_ref()
        .map_or_else(dynakv_node::config::default_workers, |c| c.workers);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("dynakv-worker")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dynakv: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.cmd {
        Cmd::Node(_) => {
            let config = node_config.expect("loaded above for the node command");
            let serve = async {
                // The data directory is checked before the port is taken, so that a bad
                // directory is reported as such whatever else is wrong.
                config.check_data_dir()?;
                let listeners = dynakv_node::serve::server::bind(&config).await?;
                dynakv_node::serve::server::run(config, listeners, dynakv_node::env::shutdown_signal()).await
            };
            match runtime.block_on(serve) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("dynakv: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Certs { cmd } => match dynakv_node::env::tls::run_certs(cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dynakv: {e:#}");
                ExitCode::FAILURE
            }
        },
        Cmd::Health { addr, timeout_ms } => {
            let probe = async {
                let http = reqwest::Client::builder()
                    .no_proxy()
                    .timeout(std::time::Duration::from_millis(timeout_ms))
                    .build()?;
                http.get(format!("http://{addr}/health"))
                    .send()
                    .await?
                    .error_for_status()?;
                anyhow::Ok(())
            };
            match runtime.block_on(probe) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("dynakv: node at {addr} is not healthy: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Admin(args) => match runtime.block_on(dynakv_node::cli::admin::run(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dynakv: {e:#}");
                ExitCode::FAILURE
            }
        },
        Cmd::Client(cmd) => match runtime.block_on(dynakv_node::cli::client::run(cmd)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dynakv: {e}");
                ExitCode::from(e.exit_code())
            }
        },
        Cmd::Dev(args) => match runtime.block_on(dynakv_node::cli::dev::run(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dynakv: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
