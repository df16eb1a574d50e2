//! The dynakv node: wires the pure crates to sockets, disks and timers.
//!
//! Layout:
//! - [`config`]: flags, environment and TOML settings, validated.
//! - [`storage`]: the byte-level [`storage::Store`] trait, RocksDB and in-memory engines.
//! - [`replica`]: this node's replica of the data (registers, per-key read-merge-write),
//!   kept in step with its Merkle trees ([`forest`]) and tombstone index; hints.
//! - [`identity`]: node id, actor id and generation kept in the data directory.
//! - [`cluster`]: membership state machine plus the ring derived from it.
//! - [`gossip`]: the timer and HTTP exchanges that drive membership.
//! - [`rpc`]: the node-to-node client.
//! - [`quorum`]: counting replica answers.
//! - [`coordinator`]: the [`coordinator::Node`]: quorum reads (with read repair) and
//!   writes (with sloppy quorum) for clients, replica operations for peers.
//! - [`antientropy`]: Merkle-tree exchanges with co-replicas on a timer.
//! - [`handoff`]: delivering hints to their owners.
//! - [`tombstones`]: collecting tombstones once every replica has them.
//! - [`server`]: start-up and shutdown.
//! - [`dev`]: `dynakv dev`, a local cluster of child processes.

pub mod antientropy;
pub mod cluster;
pub mod config;
pub mod coordinator;
pub mod dev;
pub mod forest;
pub mod gossip;
pub mod handoff;
pub mod http_server;
pub mod identity;
pub mod quorum;
pub mod replica;
pub mod rpc;
pub mod server;
pub mod storage;
pub mod tombstones;

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
