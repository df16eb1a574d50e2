//! Layer 5, the roles a node plays: coordinating client reads and writes
//! ([`coordinator`], in the namespace a request names: [`namespace`]), answering other
//! nodes ([`peer`]), and the background services
//! (gossip, anti-entropy, hint delivery, tombstone collection, layout changes:
//! [`services`]).

pub mod coordinator;
pub mod edge;
pub mod namespace;
pub mod peer;
pub mod services;
