//! Registers that merge without coordination.
//!
//! Layout:
//! - [`version_vector`]: actors, dots and version vectors, ordered by set inclusion.
//! - [`causal_context`]: a version vector plus a dot cloud, the exact causal past of a
//!   register or of one write.
//! - [`hlc`]: hybrid logical clock timestamps for last-writer-wins.
//! - [`lww`]: the last-writer-wins register.
//! - [`mv`]: the multi-value register (siblings with dots, DVVSet style).
//! - [`register`]: the per-key state in either mode, its merge laws and the client
//!   context.
//!
//! Nothing here does I/O or reads a clock: time and actor ids are arguments.

pub mod causal_context;
pub mod hlc;
pub mod lww;
pub mod mv;
pub mod register;
pub mod version_vector;

pub use causal_context::CausalContext;
pub use hlc::{Hlc, Timestamp};
pub use lww::LwwRegister;
pub use mv::{MvRegister, Sibling};
pub use register::{ConflictMode, Context, Register};
pub use version_vector::{Actor, Dot, VersionVector};
