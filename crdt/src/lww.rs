//! Last-writer-wins register ordered by hybrid logical clock timestamp, node tie-break.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::hlc::Timestamp;
use crate::version_vector::Actor;

/// One value (or tombstone, `None`) with the timestamp of the write that produced it.
///
/// Merge keeps the greater `(timestamp, actor)`; the value bytes break the (never
/// expected) case of one actor reusing a timestamp, so merge stays commutative even then.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LwwRegister {
    pub timestamp: Timestamp,
    pub actor: Actor,
    pub value: Option<Bytes>,
}

impl LwwRegister {
    pub fn new(timestamp: Timestamp, actor: Actor, value: Option<Bytes>) -> Self {
        LwwRegister {
            timestamp,
            actor,
            value,
        }
    }

    fn rank(&self) -> (Timestamp, Actor, &Option<Bytes>) {
        (self.timestamp, self.actor, &self.value)
    }

    pub fn merge(&mut self, other: &LwwRegister) {
        if other.rank() > self.rank() {
            *self = other.clone();
        }
    }

    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }
}
