//! Helpers for this crate's unit tests.

use bytes::Bytes;
use dynakv_crdt::{Actor, CausalContext, MvRegister, Register};
use dynakv_ring::{NodeId, Status};

use crate::state::cluster::Replica;

/// A multi-value register holding one value written by `actor`.
pub fn mv(actor: u64, value: &str) -> Register {
    let mut r = MvRegister::new();
    r.write(
        Actor(actor),
        &CausalContext::new(),
        Some(Bytes::copy_from_slice(value.as_bytes())),
    );
    Register::Mv(r)
}

/// A replica named `id` (`me` is this node) in `status`.
pub fn replica(id: &str, status: Status) -> Replica {
    Replica {
        id: NodeId::new(id).unwrap(),
        addr: format!("{id}:1"),
        status,
        is_self: id == "me",
    }
}
