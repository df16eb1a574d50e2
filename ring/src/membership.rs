//! Gossip membership and failure detection as a pure state machine.
//!
//! Each member gossips, every interval, its whole table to one random live peer and
//! merges the table that comes back (push-pull anti-entropy of the member table). The
//! table lists, per member, its address, its *generation* (bumped on every restart) and
//! its *heartbeat* (bumped by the member itself every tick). A member is alive while its
//! `(generation, heartbeat)` keeps advancing, however that news reached us: directly, or
//! relayed by other members together with its *age* (how long ago the relaying member
//! saw it advance), so relayed news is never mistaken for fresh.
//!
//! Liveness is a local judgement (as in Scuttlebutt/Cassandra), not gossiped: a member
//! whose heartbeat has not advanced for `suspect_after` is [`Status::Suspect`], after
//! `dead_after` [`Status::Dead`], both a round longer for each doubling of the cluster
//! beyond three members ([`DetectorConfig::scaled`]). A restarted member comes back with a higher generation
//! and is alive at once. Only leaving is gossiped, as a flag the member sets itself.
//!
//! ```text
//!   tick(now, rng) ──► own heartbeat += 1, statuses refreshed ──► Tick { events, targets }
//!   gossip(now)    ──► the table to send (entries with ages)
//!   merge(table)   ──► newer entries adopted, statuses refreshed ──► events
//! ```
//! Time is milliseconds on the local monotonic clock, passed in by the caller; randomness
//! comes from the caller's RNG. No I/O.

use std::collections::BTreeMap;

use rand::Rng;
use rand::seq::IndexedRandom;
use serde::{Deserialize, Serialize};

use crate::node_id::NodeId;

/// What a member says about itself; relayed unchanged by everyone else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: NodeId,
    /// Where other members reach it (its cluster port), as `host:port`.
    pub addr: String,
    /// Where clients reach it (its client port), as `host:port`.
    pub api: String,
    /// Incremented each time the member starts.
    pub generation: u64,
    /// Incremented by the member every gossip tick.
    pub heartbeat: u64,
    /// Virtual nodes the member asks for on the ring (its relative capacity).
    pub tokens: u32,
    /// The member has left the cluster for good.
    pub left: bool,
    /// Wall-clock ms at which the oldest write the member holds for another (hinted
    /// handoff) was stored; `None` when it holds none. Tombstones older than any pending
    /// hint must not be collected (the hint could bring the deleted value back).
    pub oldest_hint_ms: Option<u64>,
}

impl MemberInfo {
    fn version(&self) -> (u64, u64) {
        (self.generation, self.heartbeat)
    }
}

/// One row of a gossiped table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipEntry {
    pub info: MemberInfo,
    /// Milliseconds since the sender last saw this member's version advance.
    pub age_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Alive,
    Suspect,
    Dead,
    Left,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Alive => "alive",
            Status::Suspect => "suspect",
            Status::Dead => "dead",
            Status::Left => "left",
        }
    }
}

/// Failure-detector timeouts.
///
/// A heartbeat reaches every member only after a number of gossip rounds that grows
/// with the logarithm of the cluster's size (each member talks to one other per round),
/// so the silence a live member shows is longer in a larger cluster. Measured in the
/// simulator (`sim/tests/sim/study.rs`), the share of views in which a live member had
/// been silent for 3 rounds or more was 0 with 4 members, 0.09% with 6, 1.3% with 11, 13%
/// with 31 and 43% with 101: with fixed timeouts of 3 and 6 rounds, 6 members made 246
/// false suspicions an hour without any message loss and 101 members 14 million (every
/// live member suspected all the time). So both timeouts grow by one gossip round for
/// each doubling of the cluster beyond three members ([`DetectorConfig::scaled`]): 18, 0
/// and 0 false suspicions an hour with 6, 11 and 101 members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DetectorConfig {
    /// Silence after which a member is suspect, in a cluster of up to three members.
    pub suspect_after_ms: u64,
    /// Silence after which a member is dead (and skipped by request routing), in a
    /// cluster of up to three members.
    pub dead_after_ms: u64,
    /// Time between gossip rounds.
    pub gossip_interval_ms: u64,
}

impl DetectorConfig {
    /// The suspect and dead timeouts in a cluster of `members`.
    pub fn scaled(&self, members: usize) -> (u64, u64) {
        let doublings = if members <= 3 {
            0
        } else {
            (members as f64 / 3.0).log2().ceil() as u64
        };
        let extra = doublings * self.gossip_interval_ms;
        (self.suspect_after_ms + extra, self.dead_after_ms + extra)
    }
}

/// Something worth logging or reacting to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A member we did not know of.
    Discovered {
        id: NodeId,
        addr: String,
    },
    /// A known member restarted (higher generation), possibly at a new address.
    Restarted {
        id: NodeId,
        generation: u64,
        addr: String,
    },
    StatusChanged {
        id: NodeId,
        from: Status,
        to: Status,
    },
    /// Another process gossips our id with a newer generation than ours: two nodes share
    /// an id, or our persisted generation was lost. We move past it.
    IdentityConflict {
        remote_generation: u64,
    },
}

/// Result of a tick: what changed and whom to gossip with (addresses).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tick {
    pub events: Vec<Event>,
    pub targets: Vec<String>,
}

/// A member as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView<'a> {
    pub info: &'a MemberInfo,
    pub status: Status,
    /// Milliseconds since its version last advanced (0 for ourselves).
    pub silent_ms: u64,
}

#[derive(Clone, Debug)]
struct Entry {
    info: MemberInfo,
    status: Status,
    /// Local time at which the version was last seen to advance (possibly relayed).
    advanced_at_ms: u64,
}

#[derive(Clone, Debug)]
pub struct Membership {
    me: NodeId,
    entries: BTreeMap<NodeId, Entry>,
    /// Addresses to contact when we know no live peer, and now and then otherwise, so
    /// split groups find each other again.
    seeds: Vec<String>,
    detector: DetectorConfig,
}

impl Membership {
    pub fn new(me: MemberInfo, seeds: Vec<String>, detector: DetectorConfig, now_ms: u64) -> Self {
        let id = me.id.clone();
        let seeds = seeds.into_iter().filter(|s| *s != me.addr).collect();
        let mut entries = BTreeMap::new();
        entries.insert(
            id.clone(),
            Entry {
                info: me,
                status: Status::Alive,
                advanced_at_ms: now_ms,
            },
        );
        Membership {
            me: id,
            entries,
            seeds,
            detector,
        }
    }

    pub fn me(&self) -> &NodeId {
        &self.me
    }

    fn my_entry(&mut self) -> &mut Entry {
        self.entries.get_mut(&self.me).expect("own entry always present")
    }

    pub fn my_info(&self) -> &MemberInfo {
        &self.entries[&self.me].info
    }

    /// Advances our heartbeat, refreshes statuses and picks gossip targets.
    pub fn tick<R: Rng + ?Sized>(&mut self, now_ms: u64, rng: &mut R) -> Tick {
        let me = self.my_entry();
        me.info.heartbeat += 1;
        me.advanced_at_ms = now_ms;
        let events = self.refresh(now_ms);
        let targets = self.pick_targets(rng);
        Tick { events, targets }
    }

    /// Publishes how old our oldest pending hint is; spreads with the next heartbeat.
    pub fn set_oldest_hint(&mut self, oldest_hint_ms: Option<u64>) {
        self.my_entry().info.oldest_hint_ms = oldest_hint_ms;
    }

    /// `id` answered a request of ours just now: it is alive, whatever its heartbeat
    /// last said (a member judged dead while the network was cut is seen at its first
    /// answer after a heal, not a gossip round later). Its version does not change, so
    /// nothing here spreads but through the age we relay for it.
    pub fn heard_from(&mut self, id: &NodeId, now_ms: u64) -> Vec<Event> {
        match self.entries.get_mut(id) {
            Some(e) if *id != self.me && !e.info.left => e.advanced_at_ms = e.advanced_at_ms.max(now_ms),
            _ => return Vec::new(),
        }
        self.refresh(now_ms)
    }

    /// Marks ourselves as leaving; the flag spreads with the next gossip.
    pub fn leave(&mut self) {
        let me = self.my_entry();
        me.info.left = true;
        me.info.heartbeat += 1;
        me.status = Status::Left;
    }

    /// Our table, to send to a peer.
    pub fn gossip(&self, now_ms: u64) -> Vec<GossipEntry> {
        self.entries
            .values()
            .map(|e| GossipEntry {
                info: e.info.clone(),
                age_ms: now_ms.saturating_sub(e.advanced_at_ms),
            })
            .collect()
    }

    /// Adopts every entry newer than ours.
    pub fn merge(&mut self, table: &[GossipEntry], now_ms: u64) -> Vec<Event> {
        let mut events = Vec::new();
        for remote in table {
            let id = &remote.info.id;
            let advanced_at = now_ms.saturating_sub(remote.age_ms);
            if *id == self.me {
                let mine = &mut self.my_entry().info;
                if remote.info.version() > mine.version() {
                    // Someone has our id with a newer version: leapfrog it so our own
                    // entry wins again, and tell the operator.
                    mine.generation = remote.info.generation + 1;
                    mine.heartbeat = 0;
                    events.push(Event::IdentityConflict {
                        remote_generation: remote.info.generation,
                    });
                }
                continue;
            }
            match self.entries.get_mut(id) {
                None => {
                    events.push(Event::Discovered {
                        id: id.clone(),
                        addr: remote.info.addr.clone(),
                    });
                    self.entries.insert(
                        id.clone(),
                        Entry {
                            info: remote.info.clone(),
                            // Judged below by refresh, from the relayed age.
                            status: Status::Alive,
                            advanced_at_ms: advanced_at,
                        },
                    );
                }
                Some(local) if remote.info.version() > local.info.version() => {
                    if remote.info.generation > local.info.generation {
                        events.push(Event::Restarted {
                            id: id.clone(),
                            generation: remote.info.generation,
                            addr: remote.info.addr.clone(),
                        });
                    }
                    local.info = remote.info.clone();
                    local.advanced_at_ms = local.advanced_at_ms.max(advanced_at);
                }
                Some(_) => {}
            }
        }
        events.extend(self.refresh(now_ms));
        events
    }

    /// Recomputes every other member's status from how long it has been silent.
    fn refresh(&mut self, now_ms: u64) -> Vec<Event> {
        let members = self.entries.values().filter(|e| !e.info.left).count();
        let (suspect_after_ms, dead_after_ms) = self.detector.scaled(members);
        let mut events = Vec::new();
        for (id, e) in self.entries.iter_mut() {
            let status = if e.info.left {
                Status::Left
            } else if *id == self.me {
                Status::Alive
            } else {
                let silent = now_ms.saturating_sub(e.advanced_at_ms);
                if silent >= dead_after_ms {
                    Status::Dead
                } else if silent >= suspect_after_ms {
                    Status::Suspect
                } else {
                    Status::Alive
                }
            };
            if status != e.status {
                events.push(Event::StatusChanged {
                    id: id.clone(),
                    from: e.status,
                    to: status,
                });
                e.status = status;
            }
        }
        events
    }

    /// One random live (or suspect) peer; now and then a dead one, so a member that comes
    /// back is noticed even before it reaches out; and a seed when we know no live peer,
    /// or now and then, so partitioned groups merge again.
    fn pick_targets<R: Rng + ?Sized>(&self, rng: &mut R) -> Vec<String> {
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for (id, e) in &self.entries {
            if *id == self.me {
                continue;
            }
            match e.status {
                Status::Alive | Status::Suspect => live.push(e.info.addr.as_str()),
                Status::Dead => dead.push(e.info.addr.as_str()),
                Status::Left => {}
            }
        }
        let mut targets: Vec<String> = Vec::new();
        if let Some(a) = live.choose(rng) {
            targets.push(a.to_string());
        }
        let odds = 1.0 / (live.len() as f64 + 1.0);
        if !dead.is_empty() && rng.random_bool((dead.len() as f64 * odds).min(1.0)) {
            targets.push(dead.choose(rng).expect("non-empty").to_string());
        }
        if live.is_empty() {
            targets.extend(self.seeds.iter().cloned());
        } else if rng.random_bool(odds)
            && let Some(s) = self.seeds.choose(rng)
        {
            targets.push(s.clone());
        }
        targets.sort();
        targets.dedup();
        targets
    }

    pub fn status(&self, id: &NodeId) -> Option<Status> {
        self.entries.get(id).map(|e| e.status)
    }

    pub fn info(&self, id: &NodeId) -> Option<&MemberInfo> {
        self.entries.get(id).map(|e| &e.info)
    }

    /// Every known member, ordered by id.
    pub fn members(&self, now_ms: u64) -> impl Iterator<Item = MemberView<'_>> {
        self.entries.iter().map(move |(id, e)| MemberView {
            info: &e.info,
            status: e.status,
            silent_ms: if *id == self.me {
                0
            } else {
                now_ms.saturating_sub(e.advanced_at_ms)
            },
        })
    }

    /// The members that own ring positions, with their token counts: everyone who has not
    /// left. Dead members keep their place: failures are transient until an operator says
    /// otherwise (as in Dynamo), and requests route around them.
    pub fn ring_members(&self) -> Vec<(NodeId, u32)> {
        self.entries
            .values()
            .filter(|e| !e.info.left)
            .map(|e| (e.info.id.clone(), e.info.tokens))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const DETECTOR: DetectorConfig = DetectorConfig {
        suspect_after_ms: 300,
        dead_after_ms: 600,
        gossip_interval_ms: 100,
    };
    const INTERVAL: u64 = 100;

    fn info(id: &str, generation: u64) -> MemberInfo {
        MemberInfo {
            id: NodeId::new(id).unwrap(),
            addr: format!("{id}:7000"),
            api: format!("{id}:8000"),
            generation,
            heartbeat: 0,
            tokens: 16,
            left: false,
            oldest_hint_ms: None,
        }
    }

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    /// An in-memory network of membership state machines: each tick, every running node
    /// ticks and does a push-pull exchange with each target that is running and reachable.
    struct Net {
        nodes: BTreeMap<String, Membership>,
        down: Vec<String>,
        cut: Vec<(String, String)>,
        now: u64,
        rng: StdRng,
    }

    impl Net {
        fn new(names: &[&str], seeds: &[&str]) -> Net {
            let seeds: Vec<String> = seeds.iter().map(|s| format!("{s}:7000")).collect();
            let nodes = names
                .iter()
                .map(|n| {
                    (
                        format!("{n}:7000"),
                        Membership::new(info(n, 1), seeds.clone(), DETECTOR, 0),
                    )
                })
                .collect();
            Net {
                nodes,
                down: vec![],
                cut: vec![],
                now: 0,
                rng: StdRng::seed_from_u64(7),
            }
        }

        fn reachable(&self, a: &str, b: &str) -> bool {
            !self.down.iter().any(|d| d == b) && !self.cut.iter().any(|(x, y)| (x == a && y == b) || (x == b && y == a))
        }

        fn step(&mut self) {
            self.now += INTERVAL;
            let addrs: Vec<String> = self.nodes.keys().cloned().collect();
            for a in addrs {
                if self.down.contains(&a) {
                    continue;
                }
                let tick = self.nodes.get_mut(&a).unwrap().tick(self.now, &mut self.rng);
                for t in tick.targets {
                    if !self.nodes.contains_key(&t) || !self.reachable(&a, &t) {
                        continue;
                    }
                    let push = self.nodes[&a].gossip(self.now);
                    self.nodes.get_mut(&t).unwrap().merge(&push, self.now);
                    let pull = self.nodes[&t].gossip(self.now);
                    self.nodes.get_mut(&a).unwrap().merge(&pull, self.now);
                }
            }
        }

        fn run(&mut self, steps: usize) {
            for _ in 0..steps {
                self.step();
            }
        }

        fn view(&self, at: &str, of: &str) -> Option<Status> {
            self.nodes[&format!("{at}:7000")].status(&id(of))
        }

        fn restart(&mut self, name: &str, generation: u64, seeds: &[&str]) {
            let seeds = seeds.iter().map(|s| format!("{s}:7000")).collect();
            let addr = format!("{name}:7000");
            self.nodes.insert(
                addr.clone(),
                Membership::new(info(name, generation), seeds, DETECTOR, self.now),
            );
            self.down.retain(|d| *d != addr);
        }
    }

    #[test]
    fn an_answer_from_a_member_judged_dead_makes_it_alive_at_once() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let det = DetectorConfig {
            suspect_after_ms: 300,
            dead_after_ms: 600,
            gossip_interval_ms: 100,
        };
        let mut a = Membership::new(info("a", 1), vec![], det, 0);
        let b = info("b", 1);
        a.merge(
            &[GossipEntry {
                info: b.clone(),
                age_ms: 0,
            }],
            0,
        );
        a.tick(700, &mut rng);
        assert_eq!(a.status(&b.id), Some(Status::Dead));
        let events = a.heard_from(&b.id, 800);
        assert_eq!(a.status(&b.id), Some(Status::Alive));
        assert!(events.contains(&Event::StatusChanged {
            id: b.id.clone(),
            from: Status::Dead,
            to: Status::Alive
        }));
        // Silent again for as long: dead again.
        a.tick(1_400, &mut rng);
        assert_eq!(a.status(&b.id), Some(Status::Dead));
        // Unknown members and ourselves are left alone.
        assert!(a.heard_from(&NodeId::new("z").unwrap(), 1_500).is_empty());
        assert!(a.heard_from(&NodeId::new("a").unwrap(), 1_500).is_empty());
    }

    #[test]
    fn tick_advances_own_heartbeat_and_gossips_to_seeds_when_alone() {
        let mut m = Membership::new(info("a", 1), vec!["b:7000".into(), "a:7000".into()], DETECTOR, 0);
        let mut rng = StdRng::seed_from_u64(1);
        let t = m.tick(100, &mut rng);
        assert_eq!(t.targets, vec!["b:7000".to_string()], "own address is not a seed");
        assert_eq!(m.my_info().heartbeat, 1);
        assert_eq!(m.gossip(150)[0].age_ms, 50);
    }

    #[test]
    fn merge_adopts_newer_and_ignores_older() {
        let mut m = Membership::new(info("a", 1), vec![], DETECTOR, 0);
        let mut b = info("b", 1);
        b.heartbeat = 5;
        let ev = m.merge(
            &[GossipEntry {
                info: b.clone(),
                age_ms: 0,
            }],
            1000,
        );
        assert_eq!(
            ev,
            vec![Event::Discovered {
                id: id("b"),
                addr: "b:7000".into()
            }]
        );
        let mut older = b.clone();
        older.heartbeat = 3;
        older.addr = "elsewhere:1".into();
        m.merge(&[GossipEntry { info: older, age_ms: 0 }], 1000);
        assert_eq!(m.info(&id("b")).unwrap().addr, "b:7000");
        let mut restarted = info("b", 2);
        restarted.addr = "b:7100".into();
        let ev = m.merge(
            &[GossipEntry {
                info: restarted,
                age_ms: 0,
            }],
            1000,
        );
        assert!(ev.contains(&Event::Restarted {
            id: id("b"),
            generation: 2,
            addr: "b:7100".into()
        }));
        assert_eq!(m.info(&id("b")).unwrap().addr, "b:7100");
    }

    #[test]
    fn relayed_stale_news_is_judged_by_its_age() {
        let mut m = Membership::new(info("a", 1), vec![], DETECTOR, 0);
        // "c" was last heard of 10 s ago by whoever relays it: dead on arrival.
        let ev = m.merge(
            &[GossipEntry {
                info: info("c", 1),
                age_ms: 10_000,
            }],
            20_000,
        );
        assert!(ev.contains(&Event::StatusChanged {
            id: id("c"),
            from: Status::Alive,
            to: Status::Dead
        }));
        // Relaying the same version again, even with a small age, does not revive it.
        m.merge(
            &[GossipEntry {
                info: info("c", 1),
                age_ms: 0,
            }],
            20_100,
        );
        assert_eq!(m.status(&id("c")), Some(Status::Dead));
    }

    #[test]
    fn silence_makes_suspect_then_dead() {
        let mut m = Membership::new(info("a", 1), vec![], DETECTOR, 0);
        let mut rng = StdRng::seed_from_u64(1);
        m.merge(
            &[GossipEntry {
                info: info("b", 1),
                age_ms: 0,
            }],
            0,
        );
        assert!(m.tick(299, &mut rng).events.is_empty());
        assert_eq!(
            m.tick(300, &mut rng).events,
            vec![Event::StatusChanged {
                id: id("b"),
                from: Status::Alive,
                to: Status::Suspect
            }]
        );
        assert_eq!(
            m.tick(600, &mut rng).events,
            vec![Event::StatusChanged {
                id: id("b"),
                from: Status::Suspect,
                to: Status::Dead
            }]
        );
        // Fresh news brings it back at once.
        let mut b = info("b", 1);
        b.heartbeat = 9;
        let ev = m.merge(&[GossipEntry { info: b, age_ms: 0 }], 700);
        assert_eq!(
            ev,
            vec![Event::StatusChanged {
                id: id("b"),
                from: Status::Dead,
                to: Status::Alive
            }]
        );
    }

    #[test]
    fn timeouts_grow_by_a_round_per_doubling_beyond_three_members() {
        let cases = [
            (1, 0),
            (3, 0),
            (4, 1),
            (6, 1),
            (7, 2),
            (12, 2),
            (13, 3),
            (100, 6),
            (1000, 9),
        ];
        for (members, rounds) in cases {
            let extra = rounds * DETECTOR.gossip_interval_ms;
            assert_eq!(
                DETECTOR.scaled(members),
                (300 + extra, 600 + extra),
                "{members} members"
            );
        }
    }

    #[test]
    fn a_larger_cluster_waits_longer_before_suspecting() {
        // Seven members: two more rounds of silence are tolerated than with three.
        let mut m = Membership::new(info("a", 1), vec![], DETECTOR, 0);
        let mut rng = StdRng::seed_from_u64(1);
        let others: Vec<GossipEntry> = ["b", "c", "d", "e", "f", "g"]
            .iter()
            .map(|id| GossipEntry {
                info: info(id, 1),
                age_ms: 0,
            })
            .collect();
        m.merge(&others, 0);
        assert!(m.tick(499, &mut rng).events.is_empty());
        assert_eq!(
            m.tick(500, &mut rng).events.len(),
            6,
            "all six suspect at 300 + 2 x 100 ms"
        );
        assert_eq!(m.status(&id("b")), Some(Status::Suspect));
    }

    #[test]
    fn identity_conflict_leapfrogs() {
        let mut m = Membership::new(info("a", 3), vec![], DETECTOR, 0);
        let ev = m.merge(
            &[GossipEntry {
                info: info("a", 7),
                age_ms: 0,
            }],
            10,
        );
        assert_eq!(ev, vec![Event::IdentityConflict { remote_generation: 7 }]);
        assert_eq!(m.my_info().generation, 8);
    }

    #[test]
    fn cluster_converges_from_one_seed() {
        let names = ["a", "b", "c", "d", "e"];
        let mut net = Net::new(&names, &["a"]);
        net.run(20);
        for at in names {
            for of in names {
                assert_eq!(net.view(at, of), Some(Status::Alive), "{at} sees {of}");
            }
            let ring: Vec<_> = net.nodes[&format!("{at}:7000")].ring_members();
            assert_eq!(ring.len(), 5);
        }
    }

    #[test]
    fn stopped_member_goes_suspect_then_dead_everywhere_and_comes_back() {
        let names = ["a", "b", "c"];
        let mut net = Net::new(&names, &["a", "b", "c"]);
        net.run(10);
        net.down.push("c:7000".into());
        // Suspect within 3 intervals of silence, plus up to a couple of intervals of
        // gossip lag before the silence began to count.
        net.run(4);
        for at in ["a", "b"] {
            assert!(
                matches!(net.view(at, "c"), Some(Status::Suspect | Status::Dead)),
                "{at}"
            );
        }
        net.run(4);
        for at in ["a", "b"] {
            assert_eq!(net.view(at, "c"), Some(Status::Dead), "{at}");
        }
        net.restart("c", 2, &["a"]);
        net.run(3);
        for at in ["a", "b", "c"] {
            for of in names {
                assert_eq!(net.view(at, of), Some(Status::Alive), "{at} sees {of}");
            }
        }
    }

    #[test]
    fn partition_heals_through_seeds() {
        let names = ["a", "b", "c", "d"];
        let mut net = Net::new(&names, &["a", "c"]);
        net.run(10);
        for (x, y) in [("a", "c"), ("a", "d"), ("b", "c"), ("b", "d")] {
            net.cut.push((format!("{x}:7000"), format!("{y}:7000")));
        }
        net.run(10);
        assert_eq!(net.view("a", "c"), Some(Status::Dead));
        assert_eq!(net.view("c", "a"), Some(Status::Dead));
        assert_eq!(net.view("a", "b"), Some(Status::Alive));
        net.cut.clear();
        net.run(15);
        for at in names {
            for of in names {
                assert_eq!(net.view(at, of), Some(Status::Alive), "{at} sees {of}");
            }
        }
    }

    #[test]
    fn hint_age_spreads_with_the_heartbeat() {
        let names = ["a", "b", "c"];
        let mut net = Net::new(&names, &["a"]);
        net.run(10);
        net.nodes.get_mut("c:7000").unwrap().set_oldest_hint(Some(1234));
        net.run(5);
        for at in ["a", "b"] {
            assert_eq!(
                net.nodes[&format!("{at}:7000")].info(&id("c")).unwrap().oldest_hint_ms,
                Some(1234)
            );
        }
        net.nodes.get_mut("c:7000").unwrap().set_oldest_hint(None);
        net.run(5);
        assert_eq!(net.nodes["a:7000"].info(&id("c")).unwrap().oldest_hint_ms, None);
    }

    #[test]
    fn leaving_member_is_left_everywhere_and_off_the_ring() {
        let names = ["a", "b", "c"];
        let mut net = Net::new(&names, &["a"]);
        net.run(10);
        net.nodes.get_mut("c:7000").unwrap().leave();
        net.run(5);
        for at in ["a", "b"] {
            assert_eq!(net.view(at, "c"), Some(Status::Left));
            let ring = net.nodes[&format!("{at}:7000")].ring_members();
            assert!(ring.iter().all(|(m, _)| *m != id("c")));
        }
    }
}
