//! Namespaces as cluster metadata: each namespace's definition, the table every node
//! gossips, and its merge, a semilattice (idempotent, commutative, associative: checked
//! by property tests), so that any order of gossip leaves every node with the same table.
//!
//! A definition has two parts. What decides where a namespace's keys live and how their
//! values merge ([`Fixed`]: N, the conflict mode, the data type) is set once, at
//! creation, and never changes. The quorums and the expiry ([`Tunables`]) may be set
//! again; the latest setting wins. Two nodes can create the same name at once with
//! different fixed parts (neither had heard of the other's): the earlier creation wins
//! everywhere, and the later one is forgotten. A namespace serves data only once it is
//! *active*: every owner of the current layout holds the winning creation
//! ([`Namespaces::state`]), so no two owners ever place or merge a namespace's keys by
//! different definitions.
//!
//! Pure logic: no I/O, no clocks (the caller stamps).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::NodeId;
use crate::layout::Stamp;

/// The namespace every cluster has, holding `/kv/{key}`; its definition is the node's
/// settings.
pub const DEFAULT: &str = "default";

/// Longest name.
pub const MAX_NAME_LEN: usize = 63;

/// Checks a name: a lowercase letter or digit, then up to 62 lowercase letters, digits,
/// `_` or `-`.
pub fn check_name(name: &str) -> Result<(), NamespaceError> {
    let bad = |why: &str| NamespaceError::BadName(format!("{name:?}: {why}"));
    let mut chars = name.chars();
    match chars.next() {
        None => return Err(bad("empty")),
        Some(c) if !(c.is_ascii_lowercase() || c.is_ascii_digit()) => {
            return Err(bad("must start with a lowercase letter or a digit"));
        }
        Some(_) => {}
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad("longer than 63 characters"));
    }
    if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-') {
        return Err(bad("only lowercase letters, digits, `_` and `-` are allowed"));
    }
    Ok(())
}

/// How a namespace's concurrent writes merge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Conflict {
    /// Concurrent writes are kept as siblings, with a causal context.
    Mv,
    /// The write with the latest timestamp wins.
    Lww,
}

/// What is set at creation and never changes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Fixed {
    /// Replicas per key.
    pub n: u8,
    pub conflict: Conflict,
    /// A data type that merges itself; `None`: registers.
    pub datatype: Option<String>,
}

/// What may be set again.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Tunables {
    pub r: u8,
    pub w: u8,
    /// Primary quorums: how many of the replies (acknowledgements) must come from
    /// primaries, not fallbacks; 0: no such requirement.
    pub pr: u8,
    pub pw: u8,
    /// Default time to live of a written value, in seconds; `None`: values do not expire.
    pub ttl_s: Option<u64>,
}

/// Why a namespace request is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NamespaceError {
    #[error("bad namespace name {0}")]
    BadName(String),
    #[error("{0}")]
    BadValue(String),
    #[error("namespace {name:?} exists with another {what}: {what} is fixed at creation")]
    Fixed { name: String, what: &'static str },
    #[error("no namespace {0:?}")]
    Unknown(String),
    #[error("namespace {0:?} exists with other quorums or expiry; change them with PATCH")]
    Exists(String),
}

/// Checks a definition against itself and the number of owners of the current layout
/// (a namespace cannot keep more replicas than there are owners).
pub fn check(fixed: &Fixed, t: &Tunables, owners: usize) -> Result<(), NamespaceError> {
    let bad = |m: String| Err(NamespaceError::BadValue(m));
    let n = fixed.n;
    if n == 0 {
        return bad("n must be at least 1".into());
    }
    if usize::from(n) > owners {
        return bad(format!(
            "n = {n} is more than the {owners} owners of the current layout"
        ));
    }
    for (name, v) in [("r", t.r), ("w", t.w)] {
        if v == 0 || v > n {
            return bad(format!("{name} = {v} must be between 1 and n ({n})"));
        }
    }
    for (name, v, of, q) in [("pr", t.pr, "r", t.r), ("pw", t.pw, "w", t.w)] {
        if v > q {
            return bad(format!("{name} = {v} must be at most {of} ({q})"));
        }
    }
    if t.ttl_s == Some(0) {
        return bad("ttl_s must be at least 1 (or null: no expiry)".into());
    }
    if let Some(d) = &fixed.datatype {
        return bad(format!("datatype {d:?}: no data types yet (null only)"));
    }
    Ok(())
}

/// One namespace as the cluster knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub fixed: Fixed,
    /// When and where it was created: of two different creations, the earlier wins.
    pub created: Stamp,
    pub tunables: Tunables,
    /// When the tunables were last set: the later setting wins.
    pub tuned: Stamp,
    /// Nodes that hold this creation.
    pub holders: BTreeSet<NodeId>,
}

impl Entry {
    /// The winner of two entries of one name.
    fn merge(&mut self, other: &Entry) {
        let mine = (&self.created, &self.fixed);
        let theirs = (&other.created, &other.fixed);
        if theirs < mine {
            *self = other.clone();
            return;
        }
        if theirs > mine {
            return;
        }
        // One creation: the holders add up, the latest tuning wins.
        self.holders.extend(other.holders.iter().cloned());
        if (&other.tuned, &other.tunables) > (&self.tuned, &self.tunables) {
            self.tuned = other.tuned.clone();
            self.tunables = other.tunables.clone();
        }
    }
}

/// Whether a namespace serves data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Some owner of the current layout does not hold it yet.
    Pending,
    /// Every owner holds it.
    Active,
}

/// What [`Namespaces::create`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    New,
    /// The same definition exists already.
    Exists,
}

/// The namespaces a node knows of (`default` aside: its definition is the settings).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespaces {
    entries: BTreeMap<String, Entry>,
}

impl Namespaces {
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.entries.iter()
    }

    /// Creates `name` here (checked by [`check_name`] and [`check`] beforehand by the
    /// caller, who knows the owners). A name that exists with the same definition is
    /// left as it is; with other fixed parts, or other tunables, it is refused (the
    /// tunables change with [`Namespaces::tune`]).
    pub fn create(
        &mut self,
        name: &str,
        fixed: Fixed,
        tunables: Tunables,
        stamp: Stamp,
    ) -> Result<Created, NamespaceError> {
        check_name(name)?;
        if name == DEFAULT {
            return Err(NamespaceError::Fixed {
                name: name.into(),
                what: "definition (the default namespace's is the nodes' settings)",
            });
        }
        if let Some(e) = self.entries.get(name) {
            let differs = [
                ("n", e.fixed.n != fixed.n),
                ("conflict", e.fixed.conflict != fixed.conflict),
                ("datatype", e.fixed.datatype != fixed.datatype),
            ];
            if let Some((what, _)) = differs.iter().find(|(_, d)| *d) {
                return Err(NamespaceError::Fixed {
                    name: name.into(),
                    what,
                });
            }
            if e.tunables != tunables {
                return Err(NamespaceError::Exists(name.into()));
            }
            return Ok(Created::Exists);
        }
        let by = stamp.by.clone();
        self.entries.insert(
            name.to_string(),
            Entry {
                fixed,
                created: stamp.clone(),
                tunables,
                tuned: stamp,
                holders: BTreeSet::from([by]),
            },
        );
        Ok(Created::New)
    }

    /// Sets `name`'s tunables (checked by the caller), stamped `stamp`; an older stamp
    /// than the last setting's changes nothing.
    pub fn tune(&mut self, name: &str, tunables: Tunables, stamp: Stamp) -> Result<(), NamespaceError> {
        let e = self
            .entries
            .get_mut(name)
            .ok_or_else(|| NamespaceError::Unknown(name.into()))?;
        if (&stamp, &tunables) > (&e.tuned, &e.tunables) {
            e.tuned = stamp;
            e.tunables = tunables;
        }
        Ok(())
    }

    /// Records that `me` holds every namespace it knows, as they are now (a node calls
    /// it after each merge). Returns whether that changed anything.
    pub fn hold_all(&mut self, me: &NodeId) -> bool {
        let mut changed = false;
        for e in self.entries.values_mut() {
            changed |= e.holders.insert(me.clone());
        }
        changed
    }

    /// Merges a peer's table into ours.
    pub fn merge(&mut self, other: &Namespaces) {
        for (name, theirs) in &other.entries {
            match self.entries.get_mut(name) {
                Some(mine) => mine.merge(theirs),
                None => {
                    self.entries.insert(name.clone(), theirs.clone());
                }
            }
        }
    }

    /// `name`'s state given the owners of the current layout; `None` if unknown.
    pub fn state<'a>(&self, name: &str, owners: impl IntoIterator<Item = &'a NodeId>) -> Option<State> {
        let e = self.entries.get(name)?;
        Some(if owners.into_iter().all(|o| e.holders.contains(o)) {
            State::Active
        } else {
            State::Pending
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::laws::semilattice;
    use proptest::prelude::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn stamp(at_ms: u64, by: &str) -> Stamp {
        Stamp { at_ms, by: id(by) }
    }

    fn fixed(n: u8) -> Fixed {
        Fixed {
            n,
            conflict: Conflict::Mv,
            datatype: None,
        }
    }

    fn quorums(r: u8, w: u8) -> Tunables {
        Tunables {
            r,
            w,
            pr: 0,
            pw: 0,
            ttl_s: None,
        }
    }

    #[test]
    fn names_follow_the_pattern() {
        for good in ["a", "0", "carts", "session-cache_2", &"x".repeat(63)] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in ["", "-a", "_a", "A", "carts!", "ca rts", "é", &"x".repeat(64)] {
            assert!(matches!(check_name(bad), Err(NamespaceError::BadName(_))), "{bad}");
        }
    }

    #[test]
    fn definitions_are_checked_against_n_and_the_owners() {
        let ok = |f: Fixed, t: Tunables, owners| check(&f, &t, owners).is_ok();
        assert!(ok(fixed(3), quorums(2, 2), 3));
        assert!(ok(fixed(2), quorums(1, 2), 3));
        assert!(!ok(fixed(4), quorums(2, 2), 3), "more replicas than owners");
        assert!(!ok(fixed(0), quorums(1, 1), 3));
        assert!(!ok(fixed(3), quorums(0, 2), 3));
        assert!(!ok(fixed(3), quorums(2, 4), 3));
        let primary = |pr, pw| Tunables {
            pr,
            pw,
            ..quorums(2, 2)
        };
        assert!(ok(fixed(3), primary(2, 2), 3));
        assert!(!ok(fixed(3), primary(3, 0), 3), "pr above r");
        assert!(!ok(fixed(3), primary(0, 3), 3), "pw above w");
        let expiring = |ttl_s| Tunables { ttl_s, ..quorums(2, 2) };
        assert!(ok(fixed(3), expiring(Some(1)), 3));
        assert!(!ok(fixed(3), expiring(Some(0)), 3));
        let typed = Fixed {
            datatype: Some("counter".into()),
            ..fixed(3)
        };
        assert!(!ok(typed, quorums(2, 2), 3), "no data types yet");
    }

    #[test]
    fn a_second_creation_is_the_same_or_refused() {
        let mut t = Namespaces::default();
        let s = stamp(10, "n1");
        assert_eq!(t.create("carts", fixed(3), quorums(2, 2), s.clone()), Ok(Created::New));
        assert_eq!(
            t.create("carts", fixed(3), quorums(2, 2), s.clone()),
            Ok(Created::Exists)
        );
        assert!(matches!(
            t.create("carts", fixed(2), quorums(2, 2), s.clone()),
            Err(NamespaceError::Fixed { what: "n", .. })
        ));
        let lww = Fixed {
            conflict: Conflict::Lww,
            ..fixed(3)
        };
        assert!(matches!(
            t.create("carts", lww, quorums(2, 2), s.clone()),
            Err(NamespaceError::Fixed { what: "conflict", .. })
        ));
        assert!(matches!(
            t.create("carts", fixed(3), quorums(1, 1), s.clone()),
            Err(NamespaceError::Exists(_))
        ));
        assert!(t.create(DEFAULT, fixed(3), quorums(2, 2), s).is_err());
    }

    #[test]
    fn the_earlier_creation_wins_and_the_later_tuning_wins() {
        let mut a = Namespaces::default();
        let mut b = Namespaces::default();
        a.create("cache", fixed(2), quorums(1, 1), stamp(5, "n1")).unwrap();
        b.create("cache", fixed(3), quorums(2, 2), stamp(7, "n2")).unwrap();
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, ba);
        assert_eq!(ab.get("cache").unwrap().fixed.n, 2, "the earlier creation");
        // Tuning the winner: the later stamp wins, whatever order it arrives in.
        let mut c = ab.clone();
        c.tune("cache", quorums(2, 2), stamp(20, "n3")).unwrap();
        let mut d = ab.clone();
        d.tune("cache", quorums(1, 2), stamp(15, "n1")).unwrap();
        let (mut cd, mut dc) = (c.clone(), d.clone());
        cd.merge(&d);
        dc.merge(&c);
        assert_eq!(cd, dc);
        assert_eq!(cd.get("cache").unwrap().tunables, quorums(2, 2));
        assert!(matches!(
            c.tune("nothing", quorums(1, 1), stamp(1, "n1")),
            Err(NamespaceError::Unknown(_))
        ));
    }

    #[test]
    fn a_namespace_is_active_once_every_owner_holds_its_winning_creation() {
        let owners: BTreeSet<NodeId> = ["n1", "n2", "n3"].iter().map(|s| id(s)).collect();
        let mut n1 = Namespaces::default();
        n1.create("carts", fixed(3), quorums(2, 2), stamp(5, "n1")).unwrap();
        assert_eq!(n1.state("carts", &owners), Some(State::Pending));
        assert_eq!(n1.state("nothing", &owners), None);
        let mut n2 = Namespaces::default();
        n2.merge(&n1);
        assert!(n2.hold_all(&id("n2")));
        assert!(!n2.hold_all(&id("n2")), "holding again changes nothing");
        let mut n3 = Namespaces::default();
        n3.merge(&n2);
        n3.hold_all(&id("n3"));
        assert_eq!(n3.state("carts", &owners), Some(State::Active));
        n1.merge(&n3);
        assert_eq!(n1.state("carts", &owners), Some(State::Active));
        // A rival creation that wins resets who holds it: the namespace is pending
        // again until every owner holds the winner.
        let mut rival = Namespaces::default();
        rival.create("carts", fixed(2), quorums(1, 1), stamp(1, "n3")).unwrap();
        n1.merge(&rival);
        assert_eq!(n1.get("carts").unwrap().fixed.n, 2);
        assert_eq!(n1.state("carts", &owners), Some(State::Pending));
    }

    fn arb_table() -> impl Strategy<Value = Namespaces> {
        // Few names, stamps and values, so that tables often share a name, a creation or
        // a tuning stamp (with other contents too: the merge orders entries by stamp,
        // then by content, so it stays a semilattice even then).
        let name = prop::sample::select(vec!["a", "b"]);
        let creation = (1u64..3, prop::sample::select(vec!["n1", "n2"]), 1u8..3, any::<bool>());
        let tuning = (0u64..2, prop::sample::select(vec!["n1", "n2"]), 1u8..3, 1u8..3);
        let holders = prop::collection::btree_set(prop::sample::select(vec!["n1", "n2", "n3"]), 0..3);
        prop::collection::vec((name, creation, tuning, holders), 0..4).prop_map(|rows| {
            let mut t = Namespaces::default();
            for (name, (at, by, n, lww), (tat, tby, r, w), holders) in rows {
                let entry = Entry {
                    fixed: Fixed {
                        n,
                        conflict: if lww { Conflict::Lww } else { Conflict::Mv },
                        datatype: None,
                    },
                    created: stamp(at, by),
                    tunables: quorums(r, w),
                    tuned: stamp(tat, tby),
                    holders: holders.into_iter().map(id).collect(),
                };
                let mut one = Namespaces::default();
                one.entries.insert(name.to_string(), entry);
                t.merge(&one);
            }
            t
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]
        /// Gossip in any order and any number of times leaves the same table.
        #[test]
        fn the_merge_is_a_semilattice(a in arb_table(), b in arb_table(), c in arb_table()) {
            semilattice(&a, &b, &c, |x, y| x.merge(y))?;
        }
    }
}
