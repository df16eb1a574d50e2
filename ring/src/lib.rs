//! Cluster topology without I/O.
//!
//! Layout:
//! - [`node_id`]: the validated name of a member.
//! - [`hash`]: ring positions of keys and virtual nodes (blake3).
//! - [`ring`]: virtual-node ring, fixed partitions and preference lists.
//! - [`membership`]: gossip membership table and failure detector, a state machine driven
//!   by ticks and merged tables.
//!
//! The node crate drives [`membership::Membership`] from a timer and sockets and rebuilds
//! the [`ring::Ring`] whenever the member set changes.

pub mod hash;
pub mod membership;
pub mod node_id;
pub mod ring;

pub use membership::{DetectorConfig, Event, GossipEntry, MemberInfo, MemberView, Membership, Status, Tick};
pub use node_id::{InvalidNodeId, NodeId};
pub use ring::{Partition, Ring, RingError};
