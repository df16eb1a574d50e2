//! Measures load spread and movement on join over many random clusters, the figures
//! quoted in the ring's property tests: `cargo run --release --example spread -p dynakv-ring`.

use std::collections::BTreeMap;

use dynakv_ring::NodeId;
use dynakv_ring::ring::{DEFAULT_PARTITION_BITS, DEFAULT_TOKENS, Ring};

fn ring(members: &[NodeId]) -> Ring {
    Ring::new(
        DEFAULT_PARTITION_BITS,
        members.iter().map(|m| (m.clone(), DEFAULT_TOKENS)),
    )
    .unwrap()
}

/// Largest relative deviation from a fair share of the first `n` replicas.
fn worst_deviation(r: &Ring, n: usize) -> f64 {
    let mut count: BTreeMap<&NodeId, f64> = BTreeMap::new();
    for p in r.partitions() {
        for id in r.partition_preference(p, n) {
            *count.entry(id).or_default() += 1.0;
        }
    }
    let fair = n as f64 * r.partition_count() as f64 / r.members().len() as f64;
    count.values().map(|c| (c / fair - 1.0).abs()).fold(0.0, f64::max)
}

fn main() {
    let (mut primary, mut replica) = (0f64, 0f64);
    let (mut moved_lo, mut moved_hi) = (f64::MAX, 0f64);
    for salt in 0..2000u32 {
        let members = 3 + (salt as usize % 17);
        let ids: Vec<NodeId> = (0..=members)
            .map(|i| NodeId::new(format!("node-{salt}-{i}")).unwrap())
            .collect();
        let (old, new) = (ring(&ids[..members]), ring(&ids));
        primary = primary.max(worst_deviation(&old, 1));
        replica = replica.max(worst_deviation(&old, 3));
        let moved = old
            .partitions()
            .filter(|&p| old.partition_preference(p, 1) != new.partition_preference(p, 1))
            .count() as f64
            / old.partition_count() as f64;
        let ratio = moved * (members as f64 + 1.0);
        moved_lo = moved_lo.min(ratio);
        moved_hi = moved_hi.max(ratio);
    }
    println!("2000 clusters of 3..19 members, {DEFAULT_TOKENS} tokens, 2^{DEFAULT_PARTITION_BITS} partitions");
    println!(
        "worst deviation from fair share: primaries ±{:.0}%, N=3 replicas ±{:.0}%",
        primary * 100.0,
        replica * 100.0
    );
    println!("partitions moved on join, as a multiple of 1/(n+1): {moved_lo:.2}..{moved_hi:.2}");
}
