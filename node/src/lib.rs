//! The dynakv node: wires the pure crates to sockets, disks and timers.
//!
//! Layout:
//! - [`config`]: flags, environment and TOML settings, validated.
//! - [`clock`], [`local::Spawn`], [`transport::Transport`]: the seams through which a
//!   node reads time, starts tasks and reaches its peers; real ones here, simulated ones
//!   in the simulator (`tests/sim`).
//! - [`storage`]: the byte-level [`storage::Store`] trait, RocksDB and in-memory engines.
//! - [`replica`]: this node's replica of the data (registers, per-key read-merge-write),
//!   kept in step with its Merkle trees ([`forest`]) and tombstone index; hints.
//!   [`replica_writer`]: the write paths' merges on a thread of their own, in groups.
//! - [`transfer`]: copying a whole partition from another replica, paced and resumable.
//! - [`identity`]: node id, actor id, generation and clock records in the data directory.
//! - [`cluster`]: membership state machine plus the layout history and its rings.
//! - [`local`]: what every role shares (identity, settings, cluster, replica, peers,
//!   clocks).
//! - The roles: [`coordinator`] (client reads and writes, as pure rounds driven by one
//!   fan-out), [`peer`] (answers to other nodes), [`admin`] (status views), [`services`]
//!   (gossip, anti-entropy, hint delivery, tombstone collection, layout changes).
//! - [`node`]: the roles assembled; [`server`]: serving it over HTTP, start to stop;
//!   [`http_server`]: the accept loop.
//! - [`dev`]: `dynakv dev`, a local cluster of child processes; [`admin_cli`]:
//!   `dynakv admin`, layout changes from the command line.

pub mod admin;
pub mod admin_cli;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod coordinator;
pub mod dev;
pub mod forest;
pub mod http_server;
pub mod identity;
pub mod local;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod replica;
pub mod replica_writer;
pub mod server;
pub mod services;
pub mod storage;
#[cfg(test)]
mod testing;
pub mod tls;
pub mod transfer;
pub mod transport;

/// A future that resolves on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed when
/// this is called, not when the future is first polled, so a signal that arrives while
/// the caller is still starting up is not lost (nor does it kill the process).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
}
