//! The exchange between two in-memory replicas, with no sockets.

use std::collections::BTreeSet;

use proptest::prelude::*;

use crate::exchange::{Compare, CompareResponse, Differing, Driver, GROUP_SIZE, answer};
use crate::memory::MemoryReplica;
use crate::merkle::{Hash, LEAVES_PER_SEGMENT, SEGMENTS, digest};

const BITS: u8 = 6;

fn key(pos: u64, n: u32) -> Vec<u8> {
    let mut k = pos.to_be_bytes().to_vec();
    k.extend_from_slice(format!("key-{n}").as_bytes());
    k
}

fn partition_of(key: &[u8]) -> u32 {
    (u64::from_be_bytes(key[..8].try_into().unwrap()) >> (64 - BITS as u32)) as u32
}

/// Hashes and key digests carried by one round: a proxy for bytes on the wire.
fn cost(req: &Compare, resp: &CompareResponse) -> usize {
    req.nodes.len()
        + resp
            .differing
            .iter()
            .map(|d| match d {
                Differing::Children { children, .. } => children.len(),
                Differing::Keys { keys, .. } => keys.len(),
            })
            .sum::<usize>()
}

/// Runs a whole exchange; returns the differing keys, rounds and cost.
fn exchange(driver: &mut MemoryReplica, receiver: &mut MemoryReplica) -> (BTreeSet<Vec<u8>>, usize, usize) {
    let (mut d, mut req) = Driver::start(driver);
    let mut total = 0;
    loop {
        let resp = answer(receiver, &req);
        total += cost(&req, &resp);
        match d.step(driver, resp) {
            Some(next) => req = next,
            None => break,
        }
    }
    let rounds = d.rounds();
    let keys = d.into_differences().into_iter().map(|k| k.key).collect();
    (keys, rounds, total)
}

fn v(n: u32) -> Option<Hash> {
    Some(digest(&n.to_be_bytes()))
}

proptest! {
    /// The exchange finds every key whose versions differ in the partitions both sides
    /// share, even when one side believes it shares more (ring views differ for a moment),
    /// and never reports a key that does not differ.
    #[test]
    fn finds_exactly_the_differing_keys(
        common in prop::collection::vec((any::<u64>(), 0u32..3), 0..200),
        only_a in prop::collection::vec(any::<u64>(), 0..20),
        only_b in prop::collection::vec(any::<u64>(), 0..20),
        changed in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        shared_a in prop::collection::btree_set(0u32..(1 << BITS), 1..40),
        shared_b_extra in prop::collection::btree_set(0u32..(1 << BITS), 0..4),
    ) {
        let mut a = MemoryReplica::new(BITS);
        let mut b = MemoryReplica::new(BITS);
        for (i, &(pos, ver)) in common.iter().enumerate() {
            a.set(key(pos, i as u32), v(ver));
            b.set(key(pos, i as u32), v(ver));
        }
        for (i, &pos) in only_a.iter().enumerate() {
            a.set(key(pos, 10_000 + i as u32), v(1));
        }
        for (i, &pos) in only_b.iter().enumerate() {
            b.set(key(pos, 20_000 + i as u32), v(1));
        }
        if !common.is_empty() {
            for idx in &changed {
                let i = idx.index(common.len());
                b.set(key(common[i].0, i as u32), v(99));
            }
        }
        a.share(shared_a.iter().copied());
        b.share(shared_a.iter().chain(&shared_b_extra).copied());
        let (found, _, _) = exchange(&mut a, &mut b);
        let all: BTreeSet<Vec<u8>> = a.keys().keys().chain(b.keys().keys()).cloned().collect();
        let differing: BTreeSet<Vec<u8>> = all.into_iter().filter(|k| a.get(k) != b.get(k)).collect();
        let expected: BTreeSet<Vec<u8>> = differing
            .iter()
            .filter(|k| shared_a.contains(&partition_of(k)))
            .cloned()
            .collect();
        prop_assert!(found.is_subset(&differing), "reported keys that do not differ");
        prop_assert!(expected.is_subset(&found), "missed differences");
        if shared_b_extra.is_subset(&shared_a) {
            prop_assert_eq!(found, expected);
        }
    }
}

#[test]
fn equal_replicas_finish_in_one_round_with_one_hash_per_group() {
    let mut a = MemoryReplica::new(BITS);
    for i in 0..5_000u32 {
        a.set(key(u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15), i), v(1));
    }
    a.share(0..(1 << BITS));
    let mut b = a.clone();
    let (found, rounds, cost) = exchange(&mut a, &mut b);
    assert!(found.is_empty());
    assert_eq!(rounds, 1);
    assert_eq!(cost, (1usize << BITS) / GROUP_SIZE as usize);
}

/// What an exchange carries grows with the differences, not with the keys: the same
/// 20 differences cost the same among 2,000 or 20,000 keys (up to the few more keys a
/// differing leaf lists), and cost is within a fixed bound per difference.
#[test]
fn cost_grows_with_differences_not_keys() {
    let run = |keys: u32, diffs: u32| {
        let mut a = MemoryReplica::new(BITS);
        for i in 0..keys {
            a.set(key(u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15), i), v(1));
        }
        a.share(0..(1 << BITS));
        let mut b = a.clone();
        for i in 0..diffs {
            let k = i * (keys / diffs);
            b.set(key(u64::from(k).wrapping_mul(0x9E37_79B9_7F4A_7C15), k), v(2));
        }
        let (found, rounds, cost) = exchange(&mut a, &mut b);
        assert_eq!(found.len(), diffs as usize);
        assert_eq!(rounds, 4, "group, partition, segment, leaf");
        let max_leaf_keys = (keys as usize >> (BITS + 8)) + 8;
        let per_diff = 2 * (GROUP_SIZE as usize + SEGMENTS + LEAVES_PER_SEGMENT + max_leaf_keys);
        assert!(
            cost <= 2 + diffs as usize * per_diff,
            "cost {cost} for {diffs} diffs in {keys} keys"
        );
        cost
    };
    let small = run(2_000, 20);
    let large = run(20_000, 20);
    // 10x the keys: each differing leaf lists about one more key on each side.
    assert!(large < small + 20 * 2 * 4, "{small} vs {large}");
    assert!(run(20_000, 1) * 5 < run(20_000, 100));
}

#[test]
fn malformed_nodes_from_a_peer_are_ignored_not_panicked_on() {
    let mut a = MemoryReplica::new(BITS);
    a.set(key(1, 1), v(1));
    a.share(0..(1 << BITS));
    let bogus = Compare {
        nodes: vec![
            (
                crate::TreeNode::Segment {
                    partition: 0,
                    segment: 200,
                },
                [1; 32],
            ),
            (crate::TreeNode::Partition(u32::MAX), [1; 32]),
            (
                crate::TreeNode::Leaf {
                    partition: u32::MAX,
                    leaf: 255,
                },
                [1; 32],
            ),
        ],
    };
    let resp = answer(&mut a, &bogus);
    assert!(resp.differing.iter().all(|d| !matches!(
        d,
        Differing::Children {
            node: crate::TreeNode::Segment { segment: 200, .. },
            ..
        }
    )));
    // A driver handed an answer about nodes that do not exist ignores them.
    let (mut d, _) = Driver::start(&mut a);
    let reply = CompareResponse {
        differing: vec![Differing::Children {
            node: crate::TreeNode::Segment {
                partition: 0,
                segment: 99,
            },
            children: vec![(crate::TreeNode::Leaf { partition: 0, leaf: 7 }, [2; 32])],
        }],
    };
    assert!(d.step(&mut a, reply).is_none());
    assert!(d.differences().is_empty());
}
