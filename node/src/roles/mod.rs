//! Layer 5, the roles a node plays: coordinating client reads and writes
//! ([`coordinator`]), answering other nodes ([`peer`]), and the background services
//! (gossip, anti-entropy, hint delivery, tombstone collection, layout changes:
//! [`services`]).

pub mod coordinator;
pub mod edge;
pub mod peer;
pub mod services;
