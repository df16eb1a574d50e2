//! The cluster layout: which members own partitions, with what capacity, at which
//! version; and the staged changes that will make the next version.
//!
//! Gossip tells who is out there ([`crate::membership`]); the layout says who *owns*
//! data. A node that starts and gossips owns nothing until a committed layout names it,
//! and an owner stops owning only when a committed layout leaves it out, so ownership
//! never changes by accident (a crash, a partition, a slow heartbeat).
//!
//! ```text
//!   stage(change)  ──► Staging (one entry per member, last writer wins; gossiped)
//!   plan           ──► what the staged changes would move, partition by partition
//!   commit(v)      ──► Layout v = current + 1, validated again; the staging empties
//! ```
//! Changes (the JSON an operator sends is the serde form of [`Change`]):
//! - `{"join":"ID"}`: a live member that owns nothing becomes an owner, with the tokens
//!   it asks for in gossip;
//! - `{"leave":"ID"}`: a live owner hands its partitions off, then owns nothing;
//! - `{"remove":"ID"}`: a dead owner is dropped; its partitions are rebuilt from the
//!   surviving replicas;
//! - `{"replace":{"old":"ID","new":"ID"}}`: `new` takes `old`'s seat on the ring (its
//!   token positions), so it gets exactly `old`'s partitions and nothing else moves;
//! - `{"capacity":{"id":"ID","tokens":N}}`: an owner's share changes.
//!
//! A change that takes the cluster below N owners (or to none) is refused, as is one that
//! names an unknown member, leaves a dead one (remove it) or removes a live one (stop it,
//! or let it leave). Growing a cluster that still has fewer than N owners is allowed: that
//! is how a new cluster forms. No I/O: the caller passes in what gossip knows of each
//! member and the time.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::membership::Status;
use crate::node_id::NodeId;
use crate::ring::{MAX_TOKENS, Partition, Ring, RingError};

/// A member that owns partitions in a layout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Virtual nodes on the ring (relative capacity).
    pub tokens: u32,
    /// Whose token positions this owner takes: its own id, or the id of the member it
    /// replaced (see [`Ring::with_seats`]).
    pub seat: NodeId,
}

/// The owners of the ring at one version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub version: u64,
    pub owners: BTreeMap<NodeId, Owner>,
    /// Members the change that made this layout declared gone for good (removed or
    /// replaced by an operator, as opposed to leaving): no layout change waits for their
    /// acks any more (see `LayoutHistory::holders`). Missing from layouts stored before
    /// it was recorded (none gone). Always written: the wire's encoding cannot skip it.
    #[serde(default)]
    pub gone: BTreeSet<NodeId>,
}

/// A content hash of a layout: two layouts with the same version and digest are the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Digest(#[serde(with = "hex32")] pub [u8; 32]);

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        s.serialize_str(&hex)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let hex = String::deserialize(d)?;
        let bad = || serde::de::Error::custom("a digest is 64 hex digits");
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(out)
    }
}

impl Layout {
    /// The layout of a cluster no one has joined yet: version 0, no owners.
    pub fn genesis() -> Layout {
        Layout {
            version: 0,
            owners: BTreeMap::new(),
            gone: BTreeSet::new(),
        }
    }

    pub fn owns(&self, id: &NodeId) -> bool {
        self.owners.contains_key(id)
    }

    /// The ring this layout places keys on.
    pub fn ring(&self, partition_bits: u8) -> Result<Ring, RingError> {
        Ring::with_seats(
            partition_bits,
            self.owners.iter().map(|(id, o)| (id.clone(), o.seat.clone(), o.tokens)),
        )
    }

    pub fn digest(&self) -> Digest {
        let mut h = blake3::Hasher::new_derive_key("dynakv layout v1");
        h.update(&self.version.to_be_bytes());
        h.update(&(self.owners.len() as u64).to_be_bytes());
        for (id, o) in &self.owners {
            for s in [id.as_str(), o.seat.as_str()] {
                h.update(&(s.len() as u64).to_be_bytes());
                h.update(s.as_bytes());
            }
            h.update(&o.tokens.to_be_bytes());
        }
        // Only when there are any: a layout without them keeps the digest it had before
        // they were recorded.
        if !self.gone.is_empty() {
            h.update(b"gone");
            h.update(&(self.gone.len() as u64).to_be_bytes());
            for id in &self.gone {
                h.update(&(id.as_str().len() as u64).to_be_bytes());
                h.update(id.as_str().as_bytes());
            }
        }
        Digest(*h.finalize().as_bytes())
    }

    /// The layout after `changes`, checked against what gossip knows of each member
    /// (`known`: status and the tokens it asks for) and the replication factor `n`. The
    /// result has version `self.version + 1`. Changes apply in the order given (staged
    /// ones in member order), each checked against the owners the previous left.
    pub fn apply(&self, changes: &[Change], known: &BTreeMap<NodeId, Known>, n: usize) -> Result<Layout, LayoutError> {
        self.apply_with(changes, known, n, &BTreeSet::new())
    }

    /// [`Layout::apply`], where `former` are members that own nothing here but still own
    /// partitions in an older layout in use (they left, and the move is not over): such
    /// a member may be removed too, which only records it as gone (a member that left
    /// and died before the move finished would otherwise hold it up for good).
    pub fn apply_with(
        &self,
        changes: &[Change],
        known: &BTreeMap<NodeId, Known>,
        n: usize,
        former: &BTreeSet<NodeId>,
    ) -> Result<Layout, LayoutError> {
        if changes.is_empty() {
            return Err(LayoutError::NothingStaged);
        }
        let mut owners = self.owners.clone();
        let mut gone = BTreeSet::new();
        let mut touched = BTreeSet::new();
        for change in changes {
            if let Change::Replace { old, new } = change
                && old == new
            {
                return Err(LayoutError::ReplaceSelf(old.clone()));
            }
            for id in change.members() {
                if !touched.insert(id.clone()) {
                    return Err(LayoutError::TwoChanges(id.clone()));
                }
            }
            match change {
                Change::Remove(id) if !owners.contains_key(id) && former.contains(id) => {
                    if let Some(status @ (Status::Alive | Status::Suspect)) = status_of(known, id) {
                        return Err(LayoutError::RemoveLive { id: id.clone(), status });
                    }
                }
                _ => apply_one(&mut owners, change, known)?,
            }
            match change {
                Change::Remove(id) | Change::Replace { old: id, .. } => {
                    gone.insert(id.clone());
                }
                _ => {}
            }
        }
        if owners.is_empty() {
            return Err(LayoutError::NoOwners);
        }
        if owners.len() < n && owners.len() < self.owners.len() {
            return Err(LayoutError::BelowN {
                owners: owners.len(),
                n,
            });
        }
        Ok(Layout {
            version: self.version + 1,
            owners,
            gone,
        })
    }
}

/// What gossip knows of a member, as layout changes need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Known {
    pub status: Status,
    /// The tokens the member asks for.
    pub tokens: u32,
}

fn status_of(known: &BTreeMap<NodeId, Known>, id: &NodeId) -> Option<Status> {
    known.get(id).map(|k| k.status)
}

fn must_own(owners: &BTreeMap<NodeId, Owner>, known: &BTreeMap<NodeId, Known>, id: &NodeId) -> Result<(), LayoutError> {
    if owners.contains_key(id) {
        Ok(())
    } else if known.contains_key(id) {
        Err(LayoutError::NotOwner(id.clone()))
    } else {
        Err(LayoutError::UnknownNode(id.clone()))
    }
}

/// A member that may become an owner: known, alive, owning nothing.
fn must_be_candidate(
    owners: &BTreeMap<NodeId, Owner>,
    known: &BTreeMap<NodeId, Known>,
    id: &NodeId,
) -> Result<u32, LayoutError> {
    let Some(k) = known.get(id) else {
        return Err(LayoutError::UnknownNode(id.clone()));
    };
    if owners.contains_key(id) {
        return Err(LayoutError::AlreadyOwner(id.clone()));
    }
    if k.status != Status::Alive {
        return Err(LayoutError::NotAlive {
            id: id.clone(),
            status: k.status,
        });
    }
    Ok(k.tokens)
}

fn apply_one(
    owners: &mut BTreeMap<NodeId, Owner>,
    change: &Change,
    known: &BTreeMap<NodeId, Known>,
) -> Result<(), LayoutError> {
    match change {
        Change::Join(id) => {
            let tokens = must_be_candidate(owners, known, id)?;
            if let Some((holder, _)) = owners.iter().find(|(_, o)| o.seat == *id) {
                // Its seat is held by the member that replaced it.
                return Err(LayoutError::SeatTaken {
                    id: id.clone(),
                    holder: holder.clone(),
                });
            }
            owners.insert(
                id.clone(),
                Owner {
                    tokens: tokens.clamp(1, MAX_TOKENS),
                    seat: id.clone(),
                },
            );
        }
        Change::Leave(id) => {
            must_own(owners, known, id)?;
            match status_of(known, id) {
                Some(Status::Dead) | None => return Err(LayoutError::LeaveDead(id.clone())),
                _ => {}
            }
            owners.remove(id);
        }
        Change::Remove(id) => {
            must_own(owners, known, id)?;
            if let Some(status @ (Status::Alive | Status::Suspect)) = status_of(known, id) {
                return Err(LayoutError::RemoveLive { id: id.clone(), status });
            }
            owners.remove(id);
        }
        Change::Replace { old, new } => {
            must_own(owners, known, old)?;
            must_be_candidate(owners, known, new)?;
            let seat = owners.remove(old).expect("checked above");
            owners.insert(new.clone(), seat);
        }
        Change::Capacity { id, tokens } => {
            must_own(owners, known, id)?;
            if *tokens == 0 || *tokens > MAX_TOKENS {
                return Err(LayoutError::Tokens {
                    id: id.clone(),
                    tokens: *tokens,
                });
            }
            owners.get_mut(id).expect("checked above").tokens = *tokens;
        }
    }
    Ok(())
}

/// One staged change. Its serde form is what an operator posts.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Change {
    Join(NodeId),
    Leave(NodeId),
    Remove(NodeId),
    Replace { old: NodeId, new: NodeId },
    Capacity { id: NodeId, tokens: u32 },
}

impl Change {
    /// The members this change is about; the first is the one it is staged under.
    pub fn members(&self) -> Vec<&NodeId> {
        match self {
            Change::Join(id) | Change::Leave(id) | Change::Remove(id) => vec![id],
            Change::Capacity { id, .. } => vec![id],
            Change::Replace { old, new } => vec![old, new],
        }
    }

    fn key(&self) -> &NodeId {
        self.members()[0]
    }
}

/// Why a layout change was refused. Each has a stable code and a [`Refusal`] kind.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("no member {0} is known to this node (is it started, and does it gossip with the cluster?)")]
    UnknownNode(NodeId),
    #[error("{0} owns no partitions in the current layout")]
    NotOwner(NodeId),
    #[error("{0} already owns partitions")]
    AlreadyOwner(NodeId),
    #[error("{id} is {}; only a live member can take partitions", .status.as_str())]
    NotAlive { id: NodeId, status: Status },
    #[error("{id} was replaced by a member that still holds its place on the ring; it can rejoin under a new id")]
    SeatTaken { id: NodeId, holder: NodeId },
    #[error("{0} is dead and cannot hand its data off: remove it instead")]
    LeaveDead(NodeId),
    #[error("{id} is {}: stop it first, or let it leave", .status.as_str())]
    RemoveLive { id: NodeId, status: Status },
    #[error("a member cannot replace itself ({0})")]
    ReplaceSelf(NodeId),
    #[error("{id}: {tokens} tokens; must be between 1 and {MAX_TOKENS}")]
    Tokens { id: NodeId, tokens: u32 },
    #[error("two staged changes name {0}; revert and stage them again as one")]
    TwoChanges(NodeId),
    #[error("the change would leave {owners} owners, fewer than N = {n}: every key needs N")]
    BelowN { owners: usize, n: usize },
    #[error("the change would leave no owners")]
    NoOwners,
    #[error("nothing is staged")]
    NothingStaged,
    #[error("the layout is at version {current}; a commit must name version {}, not {asked}", .current + 1)]
    Conflict { current: u64, asked: u64 },
}

impl LayoutError {
    /// One of each kind (for checking that every code is documented).
    pub fn examples() -> Vec<LayoutError> {
        let id = NodeId::new("n1").expect("a valid id");
        let all = vec![
            LayoutError::UnknownNode(id.clone()),
            LayoutError::NotOwner(id.clone()),
            LayoutError::AlreadyOwner(id.clone()),
            LayoutError::NotAlive {
                id: id.clone(),
                status: Status::Dead,
            },
            LayoutError::SeatTaken {
                id: id.clone(),
                holder: id.clone(),
            },
            LayoutError::LeaveDead(id.clone()),
            LayoutError::RemoveLive {
                id: id.clone(),
                status: Status::Alive,
            },
            LayoutError::ReplaceSelf(id.clone()),
            LayoutError::Tokens {
                id: id.clone(),
                tokens: 0,
            },
            LayoutError::TwoChanges(id),
            LayoutError::BelowN { owners: 1, n: 3 },
            LayoutError::NoOwners,
            LayoutError::NothingStaged,
            LayoutError::Conflict { current: 1, asked: 5 },
        ];
        // A new kind fails to compile here until it has an example above.
        for e in &all {
            match e {
                LayoutError::UnknownNode(_)
                | LayoutError::NotOwner(_)
                | LayoutError::AlreadyOwner(_)
                | LayoutError::NotAlive { .. }
                | LayoutError::SeatTaken { .. }
                | LayoutError::LeaveDead(_)
                | LayoutError::RemoveLive { .. }
                | LayoutError::ReplaceSelf(_)
                | LayoutError::Tokens { .. }
                | LayoutError::TwoChanges(_)
                | LayoutError::BelowN { .. }
                | LayoutError::NoOwners
                | LayoutError::NothingStaged
                | LayoutError::Conflict { .. } => {}
            }
        }
        all
    }

    /// The stable code of the JSON error.
    pub fn code(&self) -> &'static str {
        match self {
            LayoutError::UnknownNode(_) => "unknown_node",
            LayoutError::NotOwner(_) => "not_owner",
            LayoutError::AlreadyOwner(_) => "already_owner",
            LayoutError::NotAlive { .. } => "node_not_alive",
            LayoutError::SeatTaken { .. } => "seat_taken",
            LayoutError::LeaveDead(_) => "node_dead",
            LayoutError::RemoveLive { .. } => "node_alive",
            LayoutError::ReplaceSelf(_) | LayoutError::Tokens { .. } | LayoutError::TwoChanges(_) => "bad_change",
            LayoutError::BelowN { .. } | LayoutError::NoOwners => "too_few_owners",
            LayoutError::NothingStaged => "nothing_staged",
            LayoutError::Conflict { .. } => "layout_conflict",
        }
    }

    /// Whether the change itself is wrong, or the cluster's state forbids it now.
    pub fn refusal(&self) -> Refusal {
        match self {
            LayoutError::LeaveDead(_)
            | LayoutError::RemoveLive { .. }
            | LayoutError::NotAlive { .. }
            | LayoutError::Conflict { .. } => Refusal::State,
            _ => Refusal::Change,
        }
    }
}

/// The two kinds of refused layout change (the HTTP edge answers them 400 and 409).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The change is wrong as given (it names no member, a member that owns nothing,
    /// leaves too few owners, ...): staging it again will not help.
    Change,
    /// The change is fine but the cluster's state forbids it now (a member is dead or
    /// alive when it should not be; another commit took the version).
    State,
}

/// When a change was staged, and by whom: the later stamp wins.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Stamp {
    /// Wall-clock milliseconds at the staging node.
    pub at_ms: u64,
    pub by: NodeId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedEntry {
    pub stamp: Stamp,
    pub change: Change,
}

/// The changes staged on top of layout version `base`, one per member, last writer wins
/// per member, and a revert watermark: a revert drops every change staged at or before
/// it, including those staged elsewhere that have not reached this node yet. A
/// join-semilattice: merging is idempotent, commutative and associative, so staging
/// spreads by gossip and two operators staging changes for different members at the
/// same time both keep theirs. A commit moves the layout past `base`, which empties the
/// staging everywhere it spreads.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Staging {
    pub base: u64,
    pub entries: BTreeMap<NodeId, StagedEntry>,
    pub reverted: Option<Stamp>,
}

impl Staging {
    pub fn new(base: u64) -> Staging {
        Staging {
            base,
            entries: BTreeMap::new(),
            reverted: None,
        }
    }

    /// The staged changes, in member order.
    pub fn changes(&self) -> Vec<Change> {
        self.entries.values().map(|e| e.change.clone()).collect()
    }

    pub fn stage(&mut self, change: Change, stamp: Stamp) {
        let key = change.key().clone();
        self.put(key, StagedEntry { stamp, change });
    }

    /// Drops every change staged at or before `stamp`, here or anywhere.
    pub fn revert(&mut self, stamp: Stamp) {
        if self.reverted.as_ref().is_none_or(|r| *r < stamp) {
            self.reverted = Some(stamp);
        }
        let floor = self.reverted.clone();
        self.entries.retain(|_, e| floor.as_ref().is_none_or(|r| e.stamp > *r));
    }

    /// Last writer wins; equal stamps (one node staging twice in a millisecond) are
    /// ordered by the change itself, so every node keeps the same one. A change at or
    /// before the revert watermark is dropped.
    fn put(&mut self, key: NodeId, entry: StagedEntry) {
        if self.reverted.as_ref().is_some_and(|r| entry.stamp <= *r) {
            return;
        }
        match self.entries.get(&key) {
            Some(e) if (&e.stamp, &e.change) >= (&entry.stamp, &entry.change) => {}
            _ => {
                self.entries.insert(key, entry);
            }
        }
    }

    pub fn merge(&mut self, other: &Staging) {
        if other.base > self.base {
            *self = other.clone();
            return;
        }
        if other.base < self.base {
            return;
        }
        if let Some(r) = &other.reverted {
            self.revert(r.clone());
        }
        for (key, e) in &other.entries {
            self.put(key.clone(), e.clone());
        }
    }
}

/// How a partition's replicas change from one layout to the next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub partition: Partition,
    /// Replicas before, in preference order.
    pub before: Vec<NodeId>,
    /// Replicas after, in preference order.
    pub after: Vec<NodeId>,
}

impl Move {
    /// Members that must receive the partition.
    pub fn gaining(&self) -> Vec<&NodeId> {
        self.after.iter().filter(|id| !self.before.contains(id)).collect()
    }

    /// Members that stop holding the partition once the move settles.
    pub fn losing(&self) -> Vec<&NodeId> {
        self.before.iter().filter(|id| !self.after.contains(id)).collect()
    }
}

/// What going from one layout to another moves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Partitions whose replica set changes (a change of order alone moves no data and
    /// is not listed).
    pub moves: Vec<Move>,
    /// Partitions each member replicates, before and after (members of either layout).
    pub partitions: BTreeMap<NodeId, (u32, u32)>,
}

impl Plan {
    pub fn between(before: &Layout, after: &Layout, partition_bits: u8, n: usize) -> Result<Plan, RingError> {
        let (old, new) = (before.ring(partition_bits)?, after.ring(partition_bits)?);
        let mut partitions: BTreeMap<NodeId, (u32, u32)> = BTreeMap::new();
        let mut moves = Vec::new();
        for p in new.partitions() {
            let b: Vec<NodeId> = old.partition_preference(p, n).into_iter().cloned().collect();
            let a: Vec<NodeId> = new.partition_preference(p, n).into_iter().cloned().collect();
            for id in &b {
                partitions.entry(id.clone()).or_default().0 += 1;
            }
            for id in &a {
                partitions.entry(id.clone()).or_default().1 += 1;
            }
            let (sb, sa): (BTreeSet<&NodeId>, BTreeSet<&NodeId>) = (b.iter().collect(), a.iter().collect());
            if sb != sa {
                moves.push(Move {
                    partition: p,
                    before: b,
                    after: a,
                });
            }
        }
        for id in before.owners.keys().chain(after.owners.keys()) {
            partitions.entry(id.clone()).or_default();
        }
        Ok(Plan { moves, partitions })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BITS: u8 = 8;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn layout(owners: &[&str]) -> Layout {
        Layout {
            version: 3,
            owners: owners
                .iter()
                .map(|o| {
                    (
                        id(o),
                        Owner {
                            tokens: 32,
                            seat: id(o),
                        },
                    )
                })
                .collect(),
            gone: BTreeSet::new(),
        }
    }

    fn known(entries: &[(&str, Status)]) -> BTreeMap<NodeId, Known> {
        entries
            .iter()
            .map(|(n, status)| {
                (
                    id(n),
                    Known {
                        status: *status,
                        tokens: 32,
                    },
                )
            })
            .collect()
    }

    fn three_plus_d() -> (Layout, BTreeMap<NodeId, Known>) {
        let l = layout(&["a", "b", "c"]);
        let k = known(&[
            ("a", Status::Alive),
            ("b", Status::Alive),
            ("c", Status::Dead),
            ("d", Status::Alive),
            ("e", Status::Suspect),
        ]);
        (l, k)
    }

    #[test]
    fn the_json_an_operator_posts() {
        let cases = [
            (r#"{"join":"d"}"#, Change::Join(id("d"))),
            (r#"{"leave":"a"}"#, Change::Leave(id("a"))),
            (r#"{"remove":"c"}"#, Change::Remove(id("c"))),
            (
                r#"{"replace":{"old":"c","new":"d"}}"#,
                Change::Replace {
                    old: id("c"),
                    new: id("d"),
                },
            ),
            (
                r#"{"capacity":{"id":"a","tokens":64}}"#,
                Change::Capacity {
                    id: id("a"),
                    tokens: 64,
                },
            ),
        ];
        for (json, change) in cases {
            assert_eq!(serde_json::from_str::<Change>(json).unwrap(), change, "{json}");
            assert_eq!(serde_json::to_string(&change).unwrap(), json);
        }
        for bad in [
            r#"{"join":"bad id!"}"#,
            r#"{"jump":"a"}"#,
            r#"{"replace":{"old":"a"}}"#,
            r#"{"capacity":{"id":"a","tokens":-1}}"#,
            r#"{"join":"a","leave":"b"}"#,
        ] {
            assert!(serde_json::from_str::<Change>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn changes_that_are_refused() {
        let (l, k) = three_plus_d();
        let cases: Vec<(Vec<Change>, LayoutError)> = vec![
            (vec![], LayoutError::NothingStaged),
            (vec![Change::Join(id("zz"))], LayoutError::UnknownNode(id("zz"))),
            (vec![Change::Join(id("a"))], LayoutError::AlreadyOwner(id("a"))),
            (
                vec![Change::Join(id("e"))],
                LayoutError::NotAlive {
                    id: id("e"),
                    status: Status::Suspect,
                },
            ),
            (vec![Change::Leave(id("d"))], LayoutError::NotOwner(id("d"))),
            (vec![Change::Leave(id("zz"))], LayoutError::UnknownNode(id("zz"))),
            (
                vec![Change::Join(id("d")), Change::Leave(id("c"))],
                LayoutError::LeaveDead(id("c")),
            ),
            (
                vec![Change::Join(id("d")), Change::Remove(id("a"))],
                LayoutError::RemoveLive {
                    id: id("a"),
                    status: Status::Alive,
                },
            ),
            (vec![Change::Leave(id("a"))], LayoutError::BelowN { owners: 2, n: 3 }),
            (vec![Change::Remove(id("c"))], LayoutError::BelowN { owners: 2, n: 3 }),
            (
                vec![Change::Replace {
                    old: id("a"),
                    new: id("a"),
                }],
                LayoutError::ReplaceSelf(id("a")),
            ),
            (
                vec![Change::Replace {
                    old: id("a"),
                    new: id("b"),
                }],
                LayoutError::AlreadyOwner(id("b")),
            ),
            (
                vec![Change::Replace {
                    old: id("d"),
                    new: id("e"),
                }],
                LayoutError::NotOwner(id("d")),
            ),
            (
                vec![Change::Capacity { id: id("a"), tokens: 0 }],
                LayoutError::Tokens { id: id("a"), tokens: 0 },
            ),
            (
                vec![Change::Capacity {
                    id: id("a"),
                    tokens: MAX_TOKENS + 1,
                }],
                LayoutError::Tokens {
                    id: id("a"),
                    tokens: MAX_TOKENS + 1,
                },
            ),
            (
                vec![
                    Change::Join(id("d")),
                    Change::Replace {
                        old: id("c"),
                        new: id("d"),
                    },
                ],
                LayoutError::TwoChanges(id("d")),
            ),
        ];
        for (changes, want) in cases {
            assert_eq!(l.apply(&changes, &k, 3), Err(want.clone()), "{changes:?}");
            assert!(!want.code().is_empty());
        }
        // Removing the last owner of a one-member cluster.
        let one = layout(&["a"]);
        let k = known(&[("a", Status::Dead)]);
        assert_eq!(one.apply(&[Change::Remove(id("a"))], &k, 1), Err(LayoutError::NoOwners));
    }

    #[test]
    fn errors_carry_the_status_the_api_answers_with() {
        assert_eq!(LayoutError::LeaveDead(id("a")).refusal(), Refusal::State);
        assert_eq!(LayoutError::Conflict { current: 1, asked: 1 }.refusal(), Refusal::State);
        assert_eq!(LayoutError::Conflict { current: 1, asked: 1 }.code(), "layout_conflict");
        assert_eq!(LayoutError::UnknownNode(id("a")).refusal(), Refusal::Change);
        assert_eq!(LayoutError::BelowN { owners: 1, n: 3 }.refusal(), Refusal::Change);
    }

    #[test]
    fn changes_that_are_accepted() {
        let (l, k) = three_plus_d();
        let grown = l.apply(&[Change::Join(id("d"))], &k, 3).unwrap();
        assert_eq!(grown.version, 4);
        assert_eq!(
            grown.owners.keys().map(|i| i.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c", "d"]
        );
        // Dead c out and live d in, in one version: still three owners.
        let swapped = l
            .apply(&[Change::Remove(id("c")), Change::Join(id("d"))], &k, 3)
            .unwrap();
        assert_eq!(
            swapped.owners.keys().map(|i| i.as_str()).collect::<Vec<_>>(),
            ["a", "b", "d"]
        );
        // From four, a live owner may leave.
        let shrunk = grown.apply(&[Change::Leave(id("a"))], &k, 3).unwrap();
        assert_eq!(shrunk.owners.len(), 3);
        // A replacement sits in the old member's seat.
        let replaced = l
            .apply(
                &[Change::Replace {
                    old: id("c"),
                    new: id("d"),
                }],
                &k,
                3,
            )
            .unwrap();
        assert_eq!(replaced.owners[&id("d")].seat, id("c"));
        // c cannot come back under its own id while d holds its seat.
        let k2 = known(&[
            ("a", Status::Alive),
            ("b", Status::Alive),
            ("c", Status::Alive),
            ("d", Status::Alive),
        ]);
        assert_eq!(
            replaced.apply(&[Change::Join(id("c"))], &k2, 3),
            Err(LayoutError::SeatTaken {
                id: id("c"),
                holder: id("d")
            })
        );
        let weighted = l
            .apply(
                &[Change::Capacity {
                    id: id("a"),
                    tokens: 64,
                }],
                &k,
                3,
            )
            .unwrap();
        assert_eq!(weighted.owners[&id("a")].tokens, 64);
        // A new cluster forms below N: a first owner, then a second.
        let k = known(&[("a", Status::Alive), ("b", Status::Alive)]);
        let first = Layout::genesis().apply(&[Change::Join(id("a"))], &k, 3).unwrap();
        let second = first.apply(&[Change::Join(id("b"))], &k, 3).unwrap();
        assert_eq!((first.version, second.version, second.owners.len()), (1, 2, 2));
    }

    #[test]
    fn a_replacement_moves_exactly_the_old_members_partitions_to_it() {
        let (l, k) = three_plus_d();
        let l = l.apply(&[Change::Join(id("d"))], &k, 3).unwrap();
        let mut k = k;
        k.get_mut(&id("e")).unwrap().status = Status::Alive;
        let r = l
            .apply(
                &[Change::Replace {
                    old: id("c"),
                    new: id("e"),
                }],
                &k,
                3,
            )
            .unwrap();
        let plan = Plan::between(&l, &r, BITS, 3).unwrap();
        assert!(!plan.moves.is_empty());
        for m in &plan.moves {
            assert_eq!(m.gaining(), vec![&id("e")]);
            assert_eq!(m.losing(), vec![&id("c")]);
        }
        assert_eq!(plan.partitions[&id("c")].0, plan.partitions[&id("e")].1);
        assert_eq!(plan.partitions[&id("c")].1, 0);
        assert_eq!(plan.moves.len() as u32, plan.partitions[&id("c")].0);
    }

    #[test]
    fn digest_tells_layouts_apart() {
        let (l, k) = three_plus_d();
        let same = l.clone();
        assert_eq!(l.digest(), same.digest());
        let mut other_version = l.clone();
        other_version.version += 1;
        let weighted = l
            .apply(
                &[Change::Capacity {
                    id: id("a"),
                    tokens: 33,
                }],
                &k,
                3,
            )
            .unwrap();
        let mut weighted_same_version = weighted.clone();
        weighted_same_version.version = l.version;
        assert_ne!(l.digest(), other_version.digest());
        assert_ne!(l.digest(), weighted_same_version.digest());
        let json = serde_json::to_string(&l.digest()).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), l.digest());
        assert!(serde_json::from_str::<Digest>("\"00\"").is_err());
    }

    fn stamp(at_ms: u64, by: &str) -> Stamp {
        Stamp { at_ms, by: id(by) }
    }

    #[test]
    fn staging_keeps_the_last_change_per_member_and_reverts() {
        let mut s = Staging::new(3);
        s.stage(Change::Join(id("d")), stamp(10, "a"));
        s.stage(Change::Leave(id("b")), stamp(11, "b"));
        // An older stamp loses, a newer one wins.
        s.stage(Change::Capacity { id: id("d"), tokens: 9 }, stamp(9, "c"));
        assert_eq!(s.changes(), vec![Change::Leave(id("b")), Change::Join(id("d"))]);
        s.stage(Change::Leave(id("b")), stamp(12, "b"));
        let mut other = Staging::new(3);
        other.stage(Change::Remove(id("c")), stamp(5, "c"));
        s.merge(&other);
        assert_eq!(s.changes().len(), 3);
        s.revert(stamp(20, "a"));
        assert!(s.changes().is_empty());
        // A revert beats an older stage that arrives later, even for a member this node
        // had not seen staged, and loses to a newer one.
        let mut late = Staging::new(3);
        late.stage(Change::Join(id("d")), stamp(15, "d"));
        late.stage(Change::Join(id("f")), stamp(16, "f"));
        late.stage(Change::Join(id("e")), stamp(25, "e"));
        s.merge(&late);
        assert_eq!(s.changes(), vec![Change::Join(id("e"))]);
        // The other way round: the node that staged f late learns of the revert.
        late.merge(&s);
        assert_eq!(late, s);
        // A staging on a newer base replaces an older one; an older one is ignored.
        let newer = Staging::new(4);
        s.merge(&newer);
        assert_eq!(s, newer);
        s.merge(&late);
        assert_eq!(s, newer);
    }

    fn arb_change() -> impl Strategy<Value = Change> {
        let ids = prop::sample::select(vec!["a", "b", "c", "d", "e"]);
        (0u8..5, ids.clone(), ids, 1u32..100).prop_map(|(kind, x, y, tokens)| match kind {
            0 => Change::Join(id(x)),
            1 => Change::Leave(id(x)),
            2 => Change::Remove(id(x)),
            3 => Change::Replace { old: id(x), new: id(y) },
            _ => Change::Capacity { id: id(x), tokens },
        })
    }

    fn arb_staging() -> impl Strategy<Value = Staging> {
        (
            0u64..3,
            prop::collection::vec(
                (
                    prop::option::weighted(0.8, arb_change()),
                    0u64..6,
                    prop::sample::select(vec!["a", "b", "c"]),
                ),
                0..6,
            ),
        )
            .prop_map(|(base, ops)| {
                let mut s = Staging::new(base);
                for (change, at, by) in ops {
                    match change {
                        Some(c) => s.stage(c, stamp(at, by)),
                        None => s.revert(stamp(at, by)),
                    }
                }
                s
            })
    }

    proptest! {
        #[test]
        fn staging_merge_is_a_semilattice(a in arb_staging(), b in arb_staging(), c in arb_staging()) {
            crate::laws::semilattice(&a, &b, &c, Staging::merge)?;
        }

        /// Whatever is staged, an accepted layout keeps N owners once it had them, names
        /// only members gossip knows, gives each owner a distinct seat, and a plan to it
        /// moves data only to members that gain a partition.
        #[test]
        fn accepted_layouts_are_sound(
            changes in prop::collection::vec(arb_change(), 1..4),
            statuses in prop::collection::vec(0u8..3, 5),
        ) {
            let l = layout(&["a", "b", "c"]);
            let k: BTreeMap<NodeId, Known> = ["a", "b", "c", "d", "e"].iter().zip(&statuses)
                .map(|(n, s)| (id(n), Known {
                    status: [Status::Alive, Status::Suspect, Status::Dead][*s as usize],
                    tokens: 32,
                }))
                .collect();
            if let Ok(next) = l.apply(&changes, &k, 3) {
                prop_assert_eq!(next.version, l.version + 1);
                prop_assert!(next.owners.len() >= 3);
                prop_assert!(next.owners.keys().all(|o| k.contains_key(o)));
                let seats: BTreeSet<&NodeId> = next.owners.values().map(|o| &o.seat).collect();
                prop_assert_eq!(seats.len(), next.owners.len());
                let plan = Plan::between(&l, &next, BITS, 3).unwrap();
                for m in &plan.moves {
                    prop_assert_eq!(m.after.len(), 3);
                    prop_assert!(!m.gaining().is_empty());
                    for g in m.gaining() {
                        prop_assert!(next.owns(g));
                    }
                }
                let before: u32 = plan.partitions.values().map(|c| c.0).sum();
                let after: u32 = plan.partitions.values().map(|c| c.1).sum();
                prop_assert_eq!(before, after);
            }
        }
    }
}
