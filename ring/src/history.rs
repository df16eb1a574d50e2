//! The layouts a cluster still uses while partitions move, and how far each member has
//! come in moving to the newest one.
//!
//! A committed layout does not replace the previous one at once: until the members that
//! gain a partition hold its data, the members that had it must keep serving it. So the
//! cluster keeps a short history of *active* layouts (as Garage does) and three
//! per-member trackers, each only ever growing:
//!
//! 1. **ack**: the newest version a member has adopted. From then on the writes it
//!    coordinates go to a quorum in *every* active layout ([`LayoutHistory::write_sets`]),
//!    so a write reaches W of the old owners and W of the new.
//! 2. **sync**: the newest version whose partitions a member holds. A member that gains
//!    a partition starts fetching it only once every tracked member has acked the
//!    version (before that, a coordinator that has not heard of it writes to the old
//!    owners alone, and the newcomer could miss that write); it fetches from every other
//!    replica in the active layouts ([`LayoutHistory::gains`]), then marks itself
//!    synced. A member that gains nothing is synced as soon as it acks.
//! 3. **sync_ack**: the version a member reads from: the newest one whose owners have all
//!    synced ([`LayoutHistory::read_version`]).
//!
//! An old layout is retired once every tracked member reads from a newer one; only then
//! may a member that no active layout names as a replica drop its copy of a partition,
//! and only while it knows every layout a write it received was placed under
//! ([`LayoutHistory::droppable`]). "Tracked" is decided by the caller: the members that
//! could coordinate a request: live members, and every owner of an active layout whether
//! alive or not ([`LayoutHistory::holders`]), but those an operator declared gone, so a
//! dead owner (or a member that left and died before the move finished) holds the move
//! up until it is removed.
//!
//! Everything here merges as a join-semilattice (idempotent, commutative, associative):
//! layouts by version, trackers by maximum, the retirement watermark by maximum, staging
//! by its own rules ([`Staging::merge`]). Two different layouts committed under the same
//! version (which the commit protocol prevents, see [`LayoutHistory::promise`]) would
//! still converge: the one with the larger digest wins, and the merge reports it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::layout::{Change, Digest, Known, Layout, LayoutError, Move, Plan, Staging, Stamp};
use crate::node_id::NodeId;
use crate::ring::{Partition, Ring, RingError};

/// How long a promise for a version blocks proposals of another layout for it: a
/// proposer that stalls (or crashed) after collecting promises must not block layout
/// changes for long.
pub const PROMISE_TTL_MS: u64 = 10_000;

/// How far a member has come, as a tracker keeps it: a layout version and the digest of
/// the layout it had under that version. Two different layouts committed as one version
/// (which the commit protocol prevents, but a merge still resolves: the larger digest
/// wins) are told apart: a member that acked the losing one has not acked the winner.
/// Marks order by version, then digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Mark {
    pub version: u64,
    pub digest: Digest,
}

impl Mark {
    /// Nothing reached yet.
    pub const NONE: Mark = Mark {
        version: 0,
        digest: Digest([0; 32]),
    };
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Trackers {
    pub ack: BTreeMap<NodeId, Mark>,
    pub sync: BTreeMap<NodeId, Mark>,
    pub sync_ack: BTreeMap<NodeId, Mark>,
}

fn raise(map: &mut BTreeMap<NodeId, Mark>, id: &NodeId, to: Mark) -> bool {
    let v = map.entry(id.clone()).or_insert(Mark::NONE);
    if *v < to {
        *v = to;
        true
    } else {
        false
    }
}

fn merge_max(into: &mut BTreeMap<NodeId, Mark>, from: &BTreeMap<NodeId, Mark>) {
    for (id, &v) in from {
        raise(into, id, v);
    }
}

fn get(map: &BTreeMap<NodeId, Mark>, id: &NodeId) -> Mark {
    map.get(id).copied().unwrap_or(Mark::NONE)
}

/// What the cluster gossips about its layouts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutHistory {
    /// Active layouts, oldest first; the last is the current one. Never empty.
    versions: Vec<Layout>,
    /// Every version below this one is retired.
    retired: u64,
    pub trackers: Trackers,
    pub staging: Staging,
}

/// A promise not to accept another layout for `version` (see [`LayoutHistory::promise`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Promise {
    pub version: u64,
    pub digest: Digest,
    pub at_ms: u64,
}

/// What a merge changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Merged {
    /// The current layout changed.
    pub new_current: bool,
    /// Versions for which two different layouts met (the larger digest was kept).
    pub conflicts: Vec<u64>,
}

/// A partition a member must fetch, and from whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gain {
    pub partition: Partition,
    /// Its replicas in the active layouts (the member itself left out).
    pub sources: Vec<NodeId>,
}

/// Whether a gained partition is fetched in full: in each replica set of an older layout
/// that held it, enough members were fetched from that every acknowledged write (which
/// reached `w` members of the set) is among them. Members declared `gone` (removed or
/// replaced) cannot be fetched from: a write whose `w` copies include `g` gone members
/// survives on `w - g` of the others, so of the set's `s` survivors `s - (w - g) + 1` are
/// needed, and all of them once `g >= w` (what only gone members held is lost: the
/// operator said so). Without gone members that is the usual `|set| - w + 1`.
pub fn fetched_enough(sets: &[Vec<NodeId>], gone: &BTreeSet<NodeId>, fetched: &BTreeSet<NodeId>, w: usize) -> bool {
    sets.iter().all(|set| {
        let survivors: Vec<&NodeId> = set.iter().filter(|id| !gone.contains(*id)).collect();
        if survivors.is_empty() {
            return true;
        }
        let lost = set.len() - survivors.len();
        let on_survivors = w.saturating_sub(lost).max(1);
        let need = (survivors.len() + 1).saturating_sub(on_survivors).max(1);
        survivors.iter().filter(|id| fetched.contains(**id)).count() >= need
    })
}

/// The rings of a history's active layouts, built once per layout change.
#[derive(Clone, Debug)]
pub struct Rings {
    /// `(version, ring)`, oldest first, as in the history.
    rings: Vec<(u64, Ring)>,
}

impl Rings {
    pub fn of(history: &LayoutHistory, partition_bits: u8) -> Result<Rings, RingError> {
        let rings = history
            .versions
            .iter()
            .map(|l| Ok((l.version, l.ring(partition_bits)?)))
            .collect::<Result<_, RingError>>()?;
        Ok(Rings { rings })
    }

    pub fn current(&self) -> &Ring {
        &self.rings.last().expect("never empty").1
    }

    pub fn version(&self, version: u64) -> Option<&Ring> {
        self.rings.iter().find(|(v, _)| *v == version).map(|(_, r)| r)
    }

    pub fn all(&self) -> impl Iterator<Item = (u64, &Ring)> {
        self.rings.iter().map(|(v, r)| (*v, r))
    }
}

impl Default for LayoutHistory {
    fn default() -> Self {
        LayoutHistory::new()
    }
}

impl LayoutHistory {
    /// A cluster no one has joined: the empty layout at version 0.
    pub fn new() -> LayoutHistory {
        LayoutHistory {
            versions: vec![Layout::genesis()],
            retired: 0,
            trackers: Trackers::default(),
            staging: Staging::new(0),
        }
    }

    pub fn current(&self) -> &Layout {
        self.versions.last().expect("never empty")
    }

    /// Active layouts, oldest first.
    pub fn versions(&self) -> &[Layout] {
        &self.versions
    }

    /// No partition is moving and no older layout is in use.
    pub fn settled(&self) -> bool {
        self.versions.len() == 1
    }

    /// Stages a change, checked against the current layout together with what is already
    /// staged (a change for the same member replaces the staged one).
    pub fn stage(
        &mut self,
        change: Change,
        stamp: Stamp,
        known: &BTreeMap<NodeId, Known>,
        n: usize,
    ) -> Result<(), LayoutError> {
        self.refresh_staging();
        let mut trial = self.staging.clone();
        trial.stage(change.clone(), stamp.clone());
        self.current().apply_with(&trial.changes(), known, n, &self.former())?;
        self.staging.stage(change, stamp);
        Ok(())
    }

    pub fn revert(&mut self, stamp: Stamp) {
        self.refresh_staging();
        self.staging.revert(stamp);
    }

    /// What committing the staged changes would make (version current + 1), or why not.
    pub fn proposal(&self, known: &BTreeMap<NodeId, Known>, n: usize) -> Result<Layout, LayoutError> {
        let changes = if self.staging.base == self.current().version {
            self.staging.changes()
        } else {
            Vec::new()
        };
        self.current().apply_with(&changes, known, n, &self.former())
    }

    /// Members that own partitions in an older active layout but not in the current one
    /// (they left, or were removed or replaced, and the move is not over).
    fn former(&self) -> BTreeSet<NodeId> {
        self.owners_but(|id| self.current().owns(id))
    }

    /// The owners of every active layout, but those `skip` says.
    fn owners_but(&self, skip: impl Fn(&NodeId) -> bool) -> BTreeSet<NodeId> {
        self.versions
            .iter()
            .flat_map(|l| l.owners.keys())
            .filter(|id| !skip(id))
            .cloned()
            .collect()
    }

    /// Members an operator declared gone in some active layout (removed or replaced).
    pub fn gone(&self) -> BTreeSet<NodeId> {
        self.versions.iter().flat_map(|l| l.gone.iter().cloned()).collect()
    }

    /// The members every layout change waits for, alive or not: the owners of every
    /// active layout, but those an operator declared gone (removed or replaced). A
    /// member that left still holds the move up until it has acked the layout without
    /// it: cut off from the others, it may still be coordinating writes under the old
    /// layout, and those must reach the new owners (through the old layout's fetches)
    /// before the old owners drop their copies. A member that left and died for good
    /// holds it up until it is removed (`Change::Remove` takes a member that left too).
    pub fn holders(&self) -> BTreeSet<NodeId> {
        let gone = self.gone();
        self.owners_but(|id| gone.contains(id))
    }

    /// The plan from the current layout to the proposal.
    pub fn plan(&self, known: &BTreeMap<NodeId, Known>, n: usize, partition_bits: u8) -> Result<Plan, LayoutError> {
        let next = self.proposal(known, n)?;
        Ok(Plan::between(self.current(), &next, partition_bits, n).expect("validated layouts build rings"))
    }

    /// Checks that a commit names the version it would create.
    pub fn check_version(&self, asked: u64) -> Result<(), LayoutError> {
        let current = self.current().version;
        if asked != current + 1 {
            return Err(LayoutError::Conflict { current, asked });
        }
        Ok(())
    }

    /// Makes `next` (a proposal for version current + 1) the current layout. The staging
    /// empties. Acking it is the caller's move ([`ack`](Self::ack)).
    pub fn install(&mut self, next: Layout) -> Result<(), LayoutError> {
        self.check_version(next.version)?;
        self.staging = Staging::new(next.version);
        self.versions.push(next);
        Ok(())
    }

    /// The proposal for version `asked`, checked and installed (without the promise
    /// round: that is the caller's, see [`promise`](Self::promise)).
    pub fn commit(&mut self, asked: u64, known: &BTreeMap<NodeId, Known>, n: usize) -> Result<Layout, LayoutError> {
        self.check_version(asked)?;
        let next = self.proposal(known, n)?;
        self.install(next.clone())?;
        Ok(next)
    }

    /// An acceptor's half of a commit: before a proposer installs layout `version` with
    /// `digest`, a majority of the current owners must promise not to accept another
    /// layout for that version. A member promises if it has no layout at that version
    /// yet and has not promised another digest for it in the last [`PROMISE_TTL_MS`].
    /// Two operators committing at once cannot both get a majority; the loser gets
    /// `layout_conflict`. (A proposer that stalls past the TTL after its promises and then
    /// installs anyway can still race a later one; the merge then keeps the layout with
    /// the larger digest and reports the conflict.)
    pub fn promise(
        &self,
        held: &mut Option<Promise>,
        version: u64,
        digest: Digest,
        now_ms: u64,
    ) -> Result<(), LayoutError> {
        let current = self.current();
        let conflict = Err(LayoutError::Conflict {
            current: current.version,
            asked: version,
        });
        if current.version >= version {
            // Already installed: a retry of the same layout is fine, another is not.
            return if current.version == version && current.digest() == digest {
                Ok(())
            } else {
                conflict
            };
        }
        // Beyond the next version, the proposer knows layouts we have not seen: gossip
        // will bring them.
        let promised_another = held
            .as_ref()
            .is_some_and(|p| p.version == version && p.digest != digest && now_ms < p.at_ms + PROMISE_TTL_MS);
        if version != current.version + 1 || promised_another {
            return conflict;
        }
        *held = Some(Promise {
            version,
            digest,
            at_ms: now_ms,
        });
        Ok(())
    }

    /// `me` uses the current layout for the requests it coordinates. The caller acks
    /// only once the writes it started under older layouts have finished: a write still
    /// on its way to the old owners alone could otherwise land after a newcomer fetched
    /// the partition (Garage holds its ack back the same way).
    ///
    /// `version` is the layout the caller checked against (the current one when it
    /// looked): a newer layout installed meanwhile is not acked by accident.
    pub fn ack(&mut self, me: &NodeId, version: u64) -> bool {
        let v = version.min(self.current().version);
        let mark = self.mark(v);
        raise(&mut self.trackers.ack, me, mark)
    }

    /// The mark of layout version `v` as this history has it (no digest if it has no
    /// such layout: a retired one).
    fn mark(&self, v: u64) -> Mark {
        Mark {
            version: v,
            digest: self
                .versions
                .iter()
                .find(|l| l.version == v)
                .map_or(Mark::NONE.digest, Layout::digest),
        }
    }

    /// The version `id` has reached in `map`: its mark's version, or the one before when
    /// it marked another layout than ours under that version (one that lost, or that we
    /// have not merged yet if its digest is the larger: then it counts).
    fn reached(&self, map: &BTreeMap<NodeId, Mark>, id: &NodeId) -> u64 {
        let m = get(map, id);
        match self.versions.iter().find(|l| l.version == m.version) {
            Some(l) if m.digest < l.digest() => m.version.saturating_sub(1),
            _ => m.version,
        }
    }

    /// The newest layout `id` has acked (it coordinates writes by it).
    pub fn acked(&self, id: &NodeId) -> u64 {
        self.reached(&self.trackers.ack, id)
    }

    /// The newest layout whose partitions `id` holds.
    pub fn synced(&self, id: &NodeId) -> u64 {
        self.reached(&self.trackers.sync, id)
    }

    /// The layout `id` reads from.
    pub fn reads(&self, id: &NodeId) -> u64 {
        self.reached(&self.trackers.sync_ack, id)
    }

    /// Every tracked member has acked the current layout: the members that gain
    /// partitions in it may fetch them.
    pub fn all_acked(&self, tracked: &BTreeSet<NodeId>) -> bool {
        let v = self.current().version;
        tracked.iter().all(|id| self.acked(id) >= v)
    }

    /// The partitions `me` must fetch: those it replicates in some active layout but not
    /// in an older active one, with the replicas of every active layout that does not
    /// have `me` replicate it as sources. Covering every active layout, not only the current one, is what lets a
    /// sync mark ([`mark_synced`](Self::mark_synced)) vouch for all of them: a member
    /// that gained a partition in one layout and lost it again in the next still holds
    /// it for readers of the middle one.
    pub fn gains(&self, me: &NodeId, rings: &Rings, n: usize) -> Vec<Gain> {
        let lists =
            |p: Partition| -> Vec<Vec<&NodeId>> { rings.all().map(|(_, r)| r.partition_preference(p, n)).collect() };
        let mut gains = Vec::new();
        for p in rings.current().partitions() {
            let pls = lists(p);
            let gained =
                (1..pls.len()).any(|j| pls[j].contains(&me) && pls[..j].iter().any(|older| !older.contains(&me)));
            if gained {
                // The data is with the replicas of the layouts that do not have `me`
                // replicate the partition: writes acknowledged before every member
                // acked reached W of them, and later ones reach `me` directly. (Those
                // gaining it alongside `me` hold nothing more; a partition gained from
                // a layout with no owners has no data at all.)
                let sources: BTreeSet<NodeId> = pls
                    .iter()
                    .filter(|pl| !pl.contains(&me))
                    .flatten()
                    .map(|id| (*id).clone())
                    .collect();
                gains.push(Gain {
                    partition: p,
                    sources: sources.into_iter().collect(),
                });
            }
        }
        gains
    }

    /// `me` holds every partition it replicates in the active layouts up to `version`:
    /// it fetched the [`gains`](Self::gains) computed when `version` was current. A fetch
    /// takes a while; a layout installed meanwhile brings gains of its own, so the mark
    /// never goes past the version the gains were computed for.
    pub fn mark_synced(&mut self, me: &NodeId, version: u64) -> bool {
        let v = version.min(self.current().version);
        let mark = self.mark(v);
        raise(&mut self.trackers.sync, me, mark)
    }

    /// The layout reads use: the newest active one whose owners have all synced it.
    pub fn read_version(&self) -> u64 {
        self.versions
            .iter()
            .rev()
            .find(|l| l.owners.keys().all(|o| self.synced(o) >= l.version))
            .unwrap_or(&self.versions[0])
            .version
    }

    /// `me` reads from [`read_version`](Self::read_version); it says so.
    pub fn ack_sync(&mut self, me: &NodeId) -> bool {
        let mark = self.mark(self.read_version());
        raise(&mut self.trackers.sync_ack, me, mark)
    }

    /// Retires the layouts older than the one every tracked member reads from. Returns
    /// whether any was retired.
    pub fn retire(&mut self, tracked: &BTreeSet<NodeId>) -> bool {
        let floor = tracked.iter().map(|id| self.reads(id)).min().unwrap_or(0);
        if floor > self.retired {
            self.retired = floor;
        }
        self.trim()
    }

    fn trim(&mut self) -> bool {
        let before = self.versions.len();
        let current = self.current().version;
        let floor = self.retired.min(current);
        self.versions.retain(|l| l.version >= floor);
        self.versions.len() != before
    }

    /// The write quorums a key of `partition` needs: one replica set per active layout
    /// (identical sets once), each to reach W.
    pub fn write_sets<'r>(&self, rings: &'r Rings, partition: Partition, n: usize) -> Vec<Vec<&'r NodeId>> {
        let mut sets: Vec<Vec<&NodeId>> = Vec::new();
        for (_, ring) in rings.all() {
            let pl = ring.partition_preference(partition, n);
            let as_set: BTreeSet<&NodeId> = pl.iter().copied().collect();
            if !sets
                .iter()
                .any(|s| s.iter().copied().collect::<BTreeSet<_>>() == as_set)
            {
                sets.push(pl);
            }
        }
        sets
    }

    /// Whether every drop waits: `newest_seen` is the newest layout version `me` has seen
    /// named by a write it received (replica writes carry their coordinator's version).
    /// While it is newer than our current layout, nothing is droppable: a coordinator
    /// that knows a layout we have not heard of yet may have written to us as a replica
    /// of that layout, and counted our copy towards its quorum there; only once we know
    /// that layout can we tell a copy we gain from one we no longer need.
    pub fn drops_held_back(&self, newest_seen: u64) -> bool {
        newest_seen > self.current().version
    }

    /// Partitions of `held` that no active layout has `me` replicate: once the older
    /// layouts are retired, `me` may delete its copies (unless
    /// [`drops_held_back`](Self::drops_held_back) by `newest_seen`).
    pub fn droppable(
        &self,
        me: &NodeId,
        rings: &Rings,
        n: usize,
        held: impl IntoIterator<Item = Partition>,
        newest_seen: u64,
    ) -> Vec<Partition> {
        if self.drops_held_back(newest_seen) {
            return Vec::new();
        }
        held.into_iter()
            .filter(|&p| rings.all().all(|(_, r)| !r.partition_preference(p, n).contains(&me)))
            .collect()
    }

    /// The moves between the oldest active layout and the current one.
    pub fn moving(&self, partition_bits: u8, n: usize) -> Vec<Move> {
        if self.settled() {
            return Vec::new();
        }
        Plan::between(&self.versions[0], self.current(), partition_bits, n)
            .map(|p| p.moves)
            .unwrap_or_default()
    }

    /// Merges another member's history into ours.
    pub fn merge(&mut self, other: &LayoutHistory) -> Merged {
        let before = (self.current().version, self.current().digest());
        let mut out = Merged::default();
        let mut by_version: BTreeMap<u64, Layout> = self.versions.drain(..).map(|l| (l.version, l)).collect();
        for l in &other.versions {
            match by_version.get(&l.version) {
                None => {
                    by_version.insert(l.version, l.clone());
                }
                Some(mine) if mine == l => {}
                Some(mine) => {
                    out.conflicts.push(l.version);
                    if l.digest() > mine.digest() {
                        by_version.insert(l.version, l.clone());
                    }
                }
            }
        }
        self.versions = by_version.into_values().collect();
        self.retired = self.retired.max(other.retired);
        self.trim();
        merge_max(&mut self.trackers.ack, &other.trackers.ack);
        merge_max(&mut self.trackers.sync, &other.trackers.sync);
        merge_max(&mut self.trackers.sync_ack, &other.trackers.sync_ack);
        self.staging.merge(&other.staging);
        self.refresh_staging();
        out.new_current = before != (self.current().version, self.current().digest());
        out
    }

    /// Staged changes made on an older layout are void.
    fn refresh_staging(&mut self) {
        let v = self.current().version;
        if self.staging.base < v {
            self.staging = Staging::new(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::Status;
    use proptest::prelude::*;

    const BITS: u8 = 6;
    const N: usize = 3;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn known(names: &[&str]) -> BTreeMap<NodeId, Known> {
        names
            .iter()
            .map(|n| {
                (
                    id(n),
                    Known {
                        status: Status::Alive,
                        tokens: 16,
                    },
                )
            })
            .collect()
    }

    fn stamp(at_ms: u64, by: &str) -> Stamp {
        Stamp { at_ms, by: id(by) }
    }

    fn set(names: &[&str]) -> BTreeSet<NodeId> {
        names.iter().map(|n| id(n)).collect()
    }

    /// A settled cluster of a, b, c at version 3 (each joined alone).
    fn abc() -> LayoutHistory {
        let k = known(&["a", "b", "c"]);
        let mut h = LayoutHistory::new();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            h.stage(Change::Join(id(name)), stamp(i as u64, "a"), &k, N).unwrap();
            h.commit(i as u64 + 1, &k, N).unwrap();
        }
        settle(&mut h, &["a", "b", "c"]);
        h
    }

    /// Every member acks, syncs and reads the current layout; old ones retire.
    fn settle(h: &mut LayoutHistory, members: &[&str]) {
        for m in members {
            h.ack(&id(m), h.current().version);
        }
        for m in members {
            h.mark_synced(&id(m), h.current().version);
        }
        for m in members {
            h.ack_sync(&id(m));
        }
        h.retire(&set(members));
    }

    #[test]
    fn a_member_that_left_holds_the_move_until_it_acks_or_is_removed_and_a_removed_one_does_not() {
        let mut h = abc();
        let k = known(&["a", "b", "c", "d"]);
        h.stage(Change::Join(id("d")), stamp(10, "a"), &k, N).unwrap();
        h.commit(4, &k, N).unwrap();
        settle(&mut h, &["a", "b", "c", "d"]);
        // c leaves; while the move is on, c holds it whether alive or not.
        h.stage(Change::Leave(id("c")), stamp(11, "a"), &k, N).unwrap();
        h.commit(5, &k, N).unwrap();
        assert_eq!(h.holders(), set(&["a", "b", "c", "d"]));
        // The others ack, sync and read v5; c, cut off, does not: v4 stays.
        for m in ["a", "b", "d"] {
            h.ack(&id(m), 5);
            h.mark_synced(&id(m), 5);
        }
        for m in ["a", "b", "d"] {
            h.ack_sync(&id(m));
        }
        h.retire(&h.holders());
        assert_eq!(h.versions().len(), 2, "v4 retires only once c read v5");
        // c died for good: the operator removes it, which only records it gone.
        let dead = {
            let mut k = k.clone();
            k.get_mut(&id("c")).unwrap().status = Status::Dead;
            k
        };
        h.stage(Change::Remove(id("c")), stamp(12, "a"), &dead, N).unwrap();
        let v6 = h.commit(6, &dead, N).unwrap();
        assert_eq!(v6.owners, h.versions()[1].owners, "no partition moves");
        assert_eq!(v6.gone, set(&["c"]));
        assert_eq!(h.holders(), set(&["a", "b", "d"]));
        settle(&mut h, &["a", "b", "d"]);
        assert!(h.settled());
        // A member that left and is alive cannot be removed: it can ack.
        let alive_c = known(&["a", "b", "c"]);
        let mut h3 = abc();
        h3.stage(Change::Join(id("d")), stamp(10, "a"), &k, N).unwrap();
        h3.commit(4, &k, N).unwrap();
        h3.stage(Change::Leave(id("c")), stamp(11, "a"), &k, N).unwrap();
        h3.commit(5, &k, N).unwrap();
        assert!(matches!(
            h3.stage(Change::Remove(id("c")), stamp(12, "a"), &alive_c, N),
            Err(LayoutError::RemoveLive { .. })
        ));
    }

    #[test]
    fn a_replaced_member_is_gone_and_holds_nothing_up() {
        let mut h = abc();
        let k = known(&["a", "b", "c", "d"]);
        let mut dead_c = k.clone();
        dead_c.get_mut(&id("c")).unwrap().status = Status::Dead;
        h.stage(
            Change::Replace {
                old: id("c"),
                new: id("d"),
            },
            stamp(10, "a"),
            &dead_c,
            N,
        )
        .unwrap();
        let v4 = h.commit(4, &dead_c, N).unwrap();
        assert_eq!(v4.gone, set(&["c"]));
        assert_eq!(h.holders(), set(&["a", "b", "d"]));
        assert_eq!(h.gone(), set(&["c"]));
    }

    #[test]
    fn an_ack_of_a_layout_that_lost_a_conflict_is_no_ack_of_the_winner() {
        let k = known(&["a", "b", "c", "d", "e"]);
        let base = abc();
        // Two version-4 layouts: d joins in one, e in the other.
        let (mut with_d, mut with_e) = (base.clone(), base.clone());
        with_d.stage(Change::Join(id("d")), stamp(10, "a"), &k, N).unwrap();
        with_d.commit(4, &k, N).unwrap();
        with_e.stage(Change::Join(id("e")), stamp(10, "b"), &k, N).unwrap();
        with_e.commit(4, &k, N).unwrap();
        let (mut loser, winner) = if with_d.current().digest() < with_e.current().digest() {
            (with_d, with_e)
        } else {
            (with_e, with_d)
        };
        // a acked the one that loses; then the winner arrives.
        loser.ack(&id("a"), 4);
        assert_eq!(loser.acked(&id("a")), 4);
        let mut merged = loser.clone();
        let conflicts = merged.merge(&winner).conflicts;
        assert_eq!(conflicts, vec![4]);
        assert_eq!(merged.current(), winner.current());
        assert_eq!(merged.acked(&id("a")), 3, "a acked another layout 4");
        assert!(!merged.all_acked(&set(&["a"])));
        merged.ack(&id("a"), 4);
        assert_eq!(merged.acked(&id("a")), 4);
        assert!(merged.all_acked(&set(&["a"])));
        // A member whose view has the loser counts an ack of the winner (which it will
        // adopt) as an ack of version 4.
        let mut behind = loser.clone();
        behind.trackers.ack.insert(id("b"), merged.trackers.ack[&id("a")]);
        assert_eq!(behind.acked(&id("b")), 4);
    }

    #[test]
    fn a_gain_is_complete_once_every_acknowledged_write_is_among_the_fetched() {
        let abc = vec![id("a"), id("b"), id("c")];
        // (sets, gone, fetched, w, complete)
        type Case<'a> = (Vec<Vec<NodeId>>, &'a [&'a str], &'a [&'a str], usize, bool);
        let cases: Vec<Case> = vec![
            (vec![abc.clone()], &[], &["a", "b"], 2, true),
            (vec![abc.clone()], &[], &["a"], 2, false),
            (vec![abc.clone()], &[], &["a", "b"], 1, false),
            (vec![abc.clone()], &[], &["a", "b", "c"], 1, true),
            (vec![abc.clone()], &[], &["c"], 3, true),
            // c declared gone: writes on two of three are on a or b, or on both.
            (vec![abc.clone()], &["c"], &["a"], 2, false),
            (vec![abc.clone()], &["c"], &["a", "b"], 2, true),
            // w = 1 with c gone: what c alone held is lost; a and b both needed.
            (vec![abc.clone()], &["c"], &["a", "b"], 1, true),
            (vec![abc.clone()], &["c"], &["b"], 1, false),
            // w = 3 with c gone: every write is on a and b; either will do.
            (vec![abc.clone()], &["c"], &["b"], 3, true),
            // Every set must be covered.
            (
                vec![abc.clone(), vec![id("d"), id("e"), id("f")]],
                &[],
                &["a", "b", "d"],
                2,
                false,
            ),
            (
                vec![abc.clone(), vec![id("d"), id("e"), id("f")]],
                &[],
                &["a", "b", "d", "f"],
                2,
                true,
            ),
            // A set of gone members only has nothing left to fetch.
            (vec![vec![id("c")]], &["c"], &[], 2, true),
        ];
        for (sets, gone, fetched, w, complete) in cases {
            let gone = set(gone);
            let fetched = set(fetched);
            assert_eq!(
                fetched_enough(&sets, &gone, &fetched, w),
                complete,
                "sets {sets:?}, gone {gone:?}, fetched {fetched:?}, w {w}"
            );
        }
    }

    #[test]
    fn a_commit_must_name_the_next_version() {
        let mut h = abc();
        let k = known(&["a", "b", "c", "d"]);
        h.stage(Change::Join(id("d")), stamp(10, "a"), &k, N).unwrap();
        for asked in [0, 3, 5] {
            assert_eq!(h.commit(asked, &k, N), Err(LayoutError::Conflict { current: 3, asked }));
        }
        assert_eq!(h.current().version, 3, "a refused commit changes nothing");
        assert_eq!(h.staging.changes().len(), 1);
        h.commit(4, &k, N).unwrap();
        assert_eq!(h.current().version, 4);
        assert!(h.staging.changes().is_empty());
        assert_eq!(h.commit(5, &k, N), Err(LayoutError::NothingStaged));
    }

    #[test]
    fn staging_checks_the_change_with_what_is_staged() {
        let mut h = abc();
        let k = known(&["a", "b", "c", "d"]);
        assert_eq!(
            h.stage(Change::Leave(id("a")), stamp(1, "a"), &k, N),
            Err(LayoutError::BelowN { owners: 2, n: 3 })
        );
        assert!(h.staging.changes().is_empty(), "a refused change is not staged");
        h.stage(Change::Join(id("d")), stamp(2, "a"), &k, N).unwrap();
        h.stage(Change::Leave(id("a")), stamp(3, "a"), &k, N).unwrap();
        let plan = h.plan(&k, N, BITS).unwrap();
        assert!(!plan.moves.is_empty());
        assert_eq!(plan.partitions[&id("a")].1, 0);
        h.revert(stamp(4, "b"));
        assert_eq!(h.proposal(&k, N), Err(LayoutError::NothingStaged));
    }

    #[test]
    fn promises_let_one_of_two_racing_proposals_through() {
        let h = abc();
        let k = known(&["a", "b", "c", "d", "e"]);
        let mut x = h.clone();
        x.stage(Change::Join(id("d")), stamp(1, "a"), &k, N).unwrap();
        let mut y = h.clone();
        y.stage(Change::Join(id("e")), stamp(1, "b"), &k, N).unwrap();
        let (px, py) = (x.proposal(&k, N).unwrap(), y.proposal(&k, N).unwrap());
        let mut held = None;
        h.promise(&mut held, 4, px.digest(), 100).unwrap();
        // The same proposal again is fine; another one is refused while the promise holds.
        h.promise(&mut held, 4, px.digest(), 150).unwrap();
        assert!(matches!(
            h.promise(&mut held, 4, py.digest(), 200),
            Err(LayoutError::Conflict { .. })
        ));
        // A stalled proposer blocks the version only for a while.
        h.promise(&mut held, 4, py.digest(), 150 + PROMISE_TTL_MS).unwrap();
        // Versions already committed, or beyond the next, are refused.
        assert!(h.promise(&mut None, 3, px.digest(), 0).is_err());
        assert!(h.promise(&mut None, 5, px.digest(), 0).is_err());
        // Once installed, the same layout is promised again (a retry), another is not.
        let mut done = h.clone();
        done.install(px.clone()).unwrap();
        assert!(done.promise(&mut None, 4, px.digest(), 0).is_ok());
        assert!(done.promise(&mut None, 4, py.digest(), 0).is_err());
    }

    /// a, b and c settled, and d's join committed as version 4; everyone tracked.
    fn abc_joining_d() -> (LayoutHistory, BTreeSet<NodeId>) {
        let mut h = abc();
        let k = known(&["a", "b", "c", "d"]);
        h.stage(Change::Join(id("d")), stamp(1, "a"), &k, N).unwrap();
        h.commit(4, &k, N).unwrap();
        (h, set(&["a", "b", "c", "d"]))
    }

    /// A join goes through every phase: writes to both layouts, fetching only after every
    /// member acked, reads moving over only when the newcomer holds its partitions, the
    /// old layout retired only when everyone reads the new one, and only then copies
    /// dropped.
    #[test]
    fn a_join_from_commit_to_settled() {
        let (mut h, tracked) = abc_joining_d();
        let rings = Rings::of(&h, BITS).unwrap();
        assert!(!h.settled());
        assert_eq!(h.versions().len(), 2);

        // Writes need W in both layouts where they differ.
        let moving = h.moving(BITS, N);
        assert!(!moving.is_empty());
        let p = moving[0].partition;
        let sets = h.write_sets(&rings, p, N);
        assert_eq!(sets.len(), 2);
        assert!(!sets[0].contains(&&id("d")) && sets[1].contains(&&id("d")));
        let still = (0..1u32 << BITS)
            .map(Partition)
            .find(|p| moving.iter().all(|m| m.partition != *p))
            .unwrap();
        assert_eq!(h.write_sets(&rings, still, N).len(), 1);

        // d must not fetch before everyone writes to it.
        assert!(!h.all_acked(&tracked));
        for m in ["a", "b", "c", "d"] {
            h.ack(&id(m), h.current().version);
        }
        assert!(h.all_acked(&tracked));
        let gains = h.gains(&id("d"), &rings, N);
        assert_eq!(gains.len(), moving.len());
        for g in &gains {
            assert_eq!(g.sources.len(), 3, "d fetches from every old replica");
        }
        assert!(h.gains(&id("a"), &rings, N).is_empty(), "a gains nothing on a join");

        // The old owners are synced at once; reads stay on version 3 until d is.
        for m in ["a", "b", "c"] {
            h.mark_synced(&id(m), h.current().version);
        }
        assert_eq!(h.read_version(), 3);
        for m in ["a", "b", "c"] {
            h.ack_sync(&id(m));
        }
        assert!(!h.retire(&tracked));
        h.mark_synced(&id("d"), h.current().version);
        assert_eq!(h.read_version(), 4);

        // Retired only once every tracked member reads version 4.
        for m in ["a", "b", "c"] {
            h.ack_sync(&id(m));
        }
        assert!(!h.retire(&tracked));
        let all: Vec<Partition> = (0..1u32 << BITS).map(Partition).collect();
        assert!(h.droppable(&id("a"), &rings, N, all.clone(), 0).is_empty());
        h.ack_sync(&id("d"));
        assert!(h.retire(&tracked));
        assert!(h.settled());
        let rings = Rings::of(&h, BITS).unwrap();
        let dropped = h.droppable(&id("a"), &rings, N, all.clone(), 4);
        let lost_by_a = moving.iter().filter(|m| m.losing().contains(&&id("a"))).count();
        assert_eq!(dropped.len(), lost_by_a);
        // a has had a write from a coordinator on version 5, which a has not heard of:
        // it may replicate any partition there, so it keeps them all.
        assert!(h.droppable(&id("a"), &rings, N, all, 5).is_empty());
        assert!(h.moving(BITS, N).is_empty());
    }

    #[test]
    fn a_sync_for_an_older_layout_does_not_vouch_for_a_newer_one() {
        let (mut h, _) = abc_joining_d();
        let k = known(&["a", "b", "c", "d", "e"]);
        // d computes its gains at version 4 and fetches; meanwhile e's join commits.
        h.stage(Change::Join(id("e")), stamp(2, "a"), &k, N).unwrap();
        h.commit(5, &k, N).unwrap();
        for m in ["a", "b", "c", "d", "e"] {
            h.ack(&id(m), 5);
        }
        for m in ["a", "b", "c", "e"] {
            h.mark_synced(&id(m), 5);
        }
        h.mark_synced(&id("d"), 4);
        assert_eq!(h.synced(&id("d")), 4);
        assert_eq!(h.read_version(), 4, "reads stay where d's fetch vouches for");
        // A mark or an ack never runs ahead of the current layout either.
        h.mark_synced(&id("d"), 9);
        h.ack(&id("d"), 9);
        assert_eq!((h.synced(&id("d")), h.acked(&id("d"))), (5, 5));
        assert_eq!(h.read_version(), 5);
    }

    #[test]
    fn a_dead_owner_of_the_current_layout_holds_the_move_up() {
        // c is dead: the caller still tracks it, as an owner of the current layout.
        let (mut h, tracked) = abc_joining_d();
        for m in ["a", "b", "d"] {
            h.ack(&id(m), h.current().version);
        }
        assert!(!h.all_acked(&tracked));
    }

    fn arb_history() -> impl Strategy<Value = LayoutHistory> {
        let names = ["a", "b", "c", "d", "e"];
        (
            prop::collection::vec((0usize..5, 0u8..4), 0..12),
            prop::collection::vec((0usize..5, 0u8..3), 0..10),
        )
            .prop_map(move |(changes, marks)| {
                let k = known(&names);
                let mut h = LayoutHistory::new();
                for (who, kind) in changes {
                    let change = match kind {
                        0 | 1 => Change::Join(id(names[who])),
                        2 => Change::Leave(id(names[who])),
                        _ => Change::Capacity {
                            id: id(names[who]),
                            tokens: 8 + who as u32,
                        },
                    };
                    if h.stage(change, stamp(1, "a"), &k, N).is_ok() {
                        let v = h.current().version + 1;
                        h.commit(v, &k, N).unwrap();
                    }
                }
                for (who, kind) in marks {
                    let me = id(names[who]);
                    match kind {
                        0 => {
                            let v = h.current().version;
                            h.ack(&me, v);
                        }
                        1 => {
                            let v = h.current().version;
                            h.mark_synced(&me, v);
                        }
                        _ => {
                            h.ack_sync(&me);
                            h.retire(&set(&names));
                        }
                    }
                }
                h
            })
    }

    proptest! {
        #[test]
        fn history_merge_is_a_semilattice(a in arb_history(), b in arb_history(), c in arb_history()) {
            crate::laws::semilattice(&a, &b, &c, |x, y| {
                x.merge(y);
            })?;
        }

        /// Whatever the history, the replica set reads use is one of the sets every
        /// write must reach W in, so R + W > N intersects within it.
        #[test]
        fn reads_use_a_layout_writes_reach(h in arb_history(), p in 0u32..(1 << BITS)) {
            let rings = Rings::of(&h, BITS).unwrap();
            let read = h.read_version();
            prop_assert!(rings.version(read).is_some(), "the read layout is active");
            let read_set = rings.version(read).unwrap().partition_preference(Partition(p), N);
            let sets = h.write_sets(&rings, Partition(p), N);
            let read_as_set: BTreeSet<&NodeId> = read_set.iter().copied().collect();
            prop_assert!(sets.iter().any(|s| s.iter().copied().collect::<BTreeSet<_>>() == read_as_set));
        }
    }
}
