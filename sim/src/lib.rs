//! The deterministic cluster simulator: the real coordinator, peer handler and
//! background services of five nodes, on in-memory storage, over a simulated network,
//! with seeded faults; after every history the checkers run (see `workload`).
//!
//! `cargo test` runs each scenario over a fixed set of seeds. Soak and replay:
//!
//! ```text
//! DYNAKV_SIM_SEEDS=1000 DYNAKV_SIM_KEEP_GOING=1 cargo test --release -p dynakv-sim --test sim -- --ignored soak --nocapture
//! DYNAKV_SIM_SCENARIO=minority_partition DYNAKV_SIM_SEED=17 \
//!     cargo test --release -p dynakv-sim --test sim -- --ignored replay --nocapture
//! ```
//!
//! A failing seed prints that replay command and the trace of the events (faults,
//! client operations, violations; `DYNAKV_SIM_TRACE=1` prints the whole trace of a
//! replay, `DYNAKV_SIM_LOG=dynakv_node=debug` the nodes' own log lines). The same seed
//! always gives the same history, settings included (each seed draws its own:
//! [`world::SimConfig::swarm`]): the `deterministic` test checks it. Every scenario has non-vacuity
//! floors ([`run::Floors`]); `scripts/sim-mutants` puts known bugs back and expects the
//! scenarios to catch them.
//!
//! The crate: [`world`] (five real nodes, the simulated network, clocks and processes),
//! [`disk`] (storage that loses unsynced writes at a machine crash and fails on demand),
//! [`gate`] (a node's tasks, paused or dropped as a process would be), [`history`] (what
//! clients did and were told), [`workload`] (the
//! clients and the checkers, behind the [`workload::Workload`] trait, so a new data
//! type's clients and checker plug in) and [`run`] (one history, checked). The
//! scenarios themselves are one table in `tests/sim/main.rs`.

pub mod disk;
pub mod gate;
pub mod history;
pub mod run;
pub mod workload;
pub mod world;
