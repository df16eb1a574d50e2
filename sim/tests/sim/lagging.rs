//! A member behind on layouts, step by step: the window in which a node that has not
//! heard of a new layout takes writes placed under it (for partitions it gains there)
//! while its sweep drops the partitions it no longer replicates.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use dynakv_crdt::{ConflictMode, LwwRegister, Register};
use dynakv_http_api::GetOutcome;
use dynakv_ring::NodeId;
use dynakv_ring::layout::Change;

use dynakv_sim::disk::Mutation;
use dynakv_sim::history::{encode_set, union_of};
use dynakv_sim::world::{self, SimConfig, World};

/// Longer than the drop sweep's period (30 s): a sweep runs in between.
const PAST_A_SWEEP: Duration = Duration::from_secs(35);

fn id(i: usize) -> NodeId {
    NodeId::new(format!("n{}", i + 1)).unwrap()
}

/// Stores `key` on node `i` directly, as a copy left over from an older layout would be.
fn plant(w: &World, i: usize, key: &str) {
    let node = w.node(i).unwrap();
    let ts = node.local.timestamp(None).unwrap();
    let reg = Register::Lww(LwwRegister::new(
        ts,
        node.local.identity.actor,
        Some(Bytes::from_static(b"left over")),
    ));
    node.local.replicas.merge(key, &reg).unwrap();
}

fn holds(w: &World, i: usize, key: &str) -> bool {
    w.node(i).unwrap().local.replicas.get(key).unwrap().is_some()
}

/// The first keys (of `{prefix}0`, `{prefix}1`, ...) for which `want(old replicas, new
/// replicas)` holds, by node `at`'s rings of layouts `old` and `new`.
fn keys_where(
    w: &World,
    at: usize,
    (old, new): (u64, u64),
    (prefix, count): (&str, usize),
    want: impl Fn(&[&NodeId], &[&NodeId]) -> bool,
) -> Vec<String> {
    let view = w.node(at).unwrap().local.cluster.view();
    let (old_ring, new_ring) = (view.rings.version(old).unwrap(), view.rings.version(new).unwrap());
    (0..10_000)
        .map(|i| format!("{prefix}{i}"))
        .filter(|k| {
            let p = new_ring.partition_of_key(k.as_bytes());
            want(
                &old_ring.partition_preference(p, 3),
                &new_ring.partition_preference(p, 3),
            )
        })
        .take(count)
        .collect()
}

/// Five nodes; n3 hears no gossip (so nothing of the layout in which n4 leaves) while n1
/// coordinates writes under that layout, some to n3 as a replica it gains there. n3's
/// sweep must keep them: it drops nothing while a write has named a layout it does not
/// know. Once n3 hears the layout, the move completes, n3 keeps what it gained and
/// drops what it never replicated.
#[test]
fn a_member_behind_on_layouts_keeps_what_a_newer_layout_wrote() {
    assert_eq!(walk(Mutation::None), Ok(()));
}

/// The walk has teeth: when writes name no layout version, n3's sweep drops the copies
/// it gains.
#[test]
fn writes_that_name_no_layout_let_a_member_behind_drop_what_it_gains() {
    assert_eq!(walk(Mutation::ForgetLayout), Err("n3 dropped copies it gains"));
}

/// The walk above; `Err` if n3 drops a copy it gains while it is behind (every other
/// departure from the expected course panics).
fn walk(mutation: Mutation) -> Result<(), &'static str> {
    world::runtime().block_on(async {
        let config = SimConfig {
            mode: ConflictMode::Lww,
            mutation,
            ..SimConfig::default()
        };
        let w = World::start(11, config).await;
        let (lagging, n3) = (2, id(2));
        let old = w.node(0).unwrap().local.cluster.view().current().version;

        // The sweep runs: a copy n3 does not replicate goes within a period.
        let never_n3 = |o: &[&NodeId], n: &[&NodeId]| !o.contains(&&n3) && !n.contains(&&n3);
        let orphan = keys_where(&w, 0, (old, old), ("o", 1), never_n3).remove(0);
        plant(&w, lagging, &orphan);
        tokio::time::sleep(PAST_A_SWEEP).await;
        assert!(!holds(&w, lagging, &orphan), "the sweep did not run");

        // n3 falls behind: n4 leaves in a layout only the others hear of.
        w.deafen(lagging, "Gossip");
        let new = w
            .change_layout(0, vec![Change::Leave(id(3))])
            .await
            .expect("layout committed");
        let heard = w
            .wait_until(Duration::from_secs(5), |w| {
                [0, 1, 3, 4]
                    .iter()
                    .all(|&i| w.node(i).unwrap().local.cluster.view().current().version == new)
            })
            .await;
        assert!(heard, "n1, n2, n4 and n5 did not all hear of v{new}");

        // n1 writes keys whose partitions n3 gains in the new layout: n3 is written to
        // as one of their replicas there.
        let gained = keys_where(&w, 0, (old, new), ("k", 8), |o, n| {
            !o.contains(&&n3) && n.contains(&&n3)
        });
        assert_eq!(gained.len(), 8);
        for (i, k) in gained.iter().enumerate() {
            let value = encode_set(&BTreeSet::from([i as u64]));
            let got = w.put(0, k, Some(value), None).await;
            assert!(matches!(got, Some(Ok(_))), "write of {k}: {got:?}");
        }
        let delivered = w
            .wait_until(Duration::from_secs(2), |w| gained.iter().all(|k| holds(w, lagging, k)))
            .await;
        assert!(delivered, "n3 did not get its copies");
        let node = w.node(lagging).unwrap();
        let cluster = &node.local.cluster;
        let named = if mutation == Mutation::ForgetLayout { 0 } else { new };
        assert_eq!(cluster.layout_seen(), named);

        // A period later n3 still knows only the old layout, and has dropped nothing:
        // neither what it gains nor (until it knows what it gains) a copy it never
        // replicated.
        let orphan = keys_where(&w, 0, (old, new), ("p", 1), never_n3).remove(0);
        // (Watched every 50 ms: anti-entropy from a node that knows the new layout
        // would bring a dropped copy back within a second or so.)
        plant(&w, lagging, &orphan);
        let gap = w
            .wait_until(PAST_A_SWEEP, |w| gained.iter().any(|k| !holds(w, lagging, k)))
            .await;
        if gap {
            return Err("n3 dropped copies it gains");
        }
        assert_eq!(cluster.view().current().version, old, "n3 heard of the new layout");
        assert!(cluster.view().history.settled());
        assert!(holds(&w, lagging, &orphan));

        // n3 hears again: the move completes; n3 keeps what it gained and drops the rest.
        w.heal_network();
        let settled = w.wait_until(Duration::from_secs(30), |w| w.layouts_agree()).await;
        assert!(settled, "the layouts did not settle: {}", w.layouts());
        assert_eq!(cluster.view().current().version, new);
        let swept = w
            .wait_until(Duration::from_secs(5), |w| !holds(w, lagging, &orphan))
            .await;
        assert!(swept, "n3 kept a copy it does not replicate");
        for (i, k) in gained.iter().enumerate() {
            assert!(holds(&w, lagging, k), "n3 lost {k}");
            match w.get(1, k).await {
                Some(Ok(GetOutcome::Found { values, .. })) => {
                    assert_eq!(union_of(&values), BTreeSet::from([i as u64]), "{k}");
                }
                other => panic!("read of {k}: {other:?}"),
            }
        }
        Ok(())
    })
}
