//! The dynakv node: wires the pure crates to sockets, disks and timers.
//!
//! The folders are the layers, lowest first (ARCHITECTURE.md draws them; a module may
//! import its own layer and those below it, and `tests/architecture.rs` holds the crate
//! to that):
//! - [`env`]: time, storage engines, TLS, metrics, the stop signal.
//! - [`config`]: flags, environment and TOML settings, validated.
//! - [`state`]: this node's replica of the data, its Merkle trees, identity, cluster
//!   view, partition transfer.
//! - [`transport`]: every node-to-node message and the cluster port.
//! - [`local`]: what every role shares (identity, settings, cluster, replica, peers,
//!   clocks, the task spawner).
//! - [`roles`]: the coordinator, the peer handler, the background services.
//! - [`admin`]: the operator surface (status views, layout changes, Prometheus).
//! - [`serve`]: the node assembled and served over HTTP.
//! - [`cli`]: `dynakv get/put/...`, `dynakv admin`, `dynakv dev`.
//!
//! The seams through which a node reads time, starts tasks and reaches its peers are
//! [`env::clock::Clock`], [`local::Spawn`] and [`transport::Transport`]: real ones here,
//! simulated ones in the simulator.

pub mod admin;
pub mod cli;
pub mod config;
pub mod env;
pub mod local;
pub mod roles;
pub mod serve;
pub mod state;
pub mod transport;
