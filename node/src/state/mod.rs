//! Layer 2, the node's state: this node's replica of the data ([`replica`], with its
//! Merkle trees in [`forest`] and its writes grouped off the async workers by
//! [`replica_writer`]), who this node is ([`identity`]), the membership and layout
//! history as this node sees them ([`cluster`]), the namespaces it knows ([`catalog`]),
//! and copying a partition from another replica ([`transfer`]).

pub mod catalog;
pub mod cluster;
pub mod forest;
pub mod identity;
pub mod replica;
pub mod replica_writer;
#[cfg(test)]
pub(crate) mod testing;
pub mod transfer;
