//! Anti-entropy costs at scale, in one process over two real RocksDB replicas:
//! how long rebuilding the Merkle trees takes at start-up, and the bytes and time an
//! exchange needs to find and repair 1, 100 and 10,000 differing keys among N keys.
//!
//! `cargo run --release -p dynakv-node --example aae_bench -- [keys] [value_bytes]`
//! (defaults: 1,000,000 keys of 100 bytes). Bytes are the exact encoded sizes of the
//! messages the node sends (`/internal/replica` bodies); time is in-process, without
//! network latency (an exchange takes 4 comparison round trips plus one per transfer
//! batch, each one network round trip on a real cluster).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use dynakv_antientropy::{Driver, KeyDiff};
use dynakv_crdt::{Actor, CausalContext, MvRegister, Register};
use dynakv_node::env::clock::SystemClock;
use dynakv_node::env::storage::{RocksStore, Store};
use dynakv_node::state::replica::{LocalView, ReplicaStore, user_key};
use dynakv_node::transport::message::{self as wire, Answer, Call, GetBatch, MergeBatch};
use dynakv_ring::NodeId;

const PARTITION_BITS: u8 = 10;

fn register(actor: u64, value: &[u8]) -> Register {
    let mut r = MvRegister::new();
    r.write(Actor(actor), &CausalContext::new(), Some(Bytes::copy_from_slice(value)));
    Register::Mv(r)
}

fn open(dir: &std::path::Path) -> ReplicaStore {
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir, false, 0).unwrap());
    ReplicaStore::open(store, PARTITION_BITS, Arc::new(SystemClock::new())).unwrap()
}

struct Cost {
    rounds: usize,
    differences: usize,
    bytes_sent: usize,
    bytes_received: usize,
    compare_ms: f64,
    transfer_ms: f64,
}

/// One exchange driven by `a` against `b`, then the transfer both ways, exactly as the
/// node does it, counting encoded bytes.
fn exchange(a: &ReplicaStore, b: &ReplicaStore, shared: &[u32]) -> Cost {
    let (mut sent, mut received) = (0, 0);
    let t = Instant::now();
    let (mut driver, mut compare) = Driver::start(&mut LocalView::new(a, shared.to_vec()));
    loop {
        let req = wire::Compare {
            from: NodeId::new("a").unwrap(),
            compare: compare.clone(),
        };
        sent += wire::encode(&req.wrap()).len();
        let resp = dynakv_antientropy::answer(&mut LocalView::new(b, shared.to_vec()), &compare);
        received += wire::encode(&Answer::Compare(resp.clone())).len();
        match driver.step(&mut LocalView::new(a, shared.to_vec()), resp) {
            Some(next) => compare = next,
            None => break,
        }
    }
    let compare_ms = t.elapsed().as_secs_f64() * 1000.0;
    let rounds = driver.rounds();
    let diffs: Vec<KeyDiff> = driver.into_differences();
    let t = Instant::now();
    for batch in diffs
        .iter()
        .filter(|d| d.remote.is_some())
        .collect::<Vec<_>>()
        .chunks(64)
    {
        let keys: Vec<String> = batch.iter().map(|d| user_key(&d.key).unwrap().to_string()).collect();
        sent += wire::encode(&GetBatch { keys: keys.clone() }.wrap()).len();
        let states: Vec<Option<Register>> = keys.iter().map(|k| b.get(k).unwrap()).collect();
        received += wire::encode(&Answer::GetBatch(states.clone())).len();
        for (k, s) in keys.iter().zip(states) {
            if let Some(r) = s {
                a.merge(k, &r).unwrap();
            }
        }
    }
    let mut items = Vec::new();
    for d in diffs.iter().filter(|d| d.local.is_some()) {
        let k = user_key(&d.key).unwrap();
        items.push((k.to_string(), a.get(&k).unwrap().unwrap()));
    }
    for chunk in items.chunks(4096) {
        sent += wire::encode(
            &MergeBatch {
                items: chunk.to_vec(),
                layout: 1,
            }
            .wrap(),
        )
        .len();
        received += wire::encode(&Answer::MergeBatch(())).len();
        for (k, r) in chunk {
            b.merge(k, r).unwrap();
        }
    }
    Cost {
        rounds,
        differences: diffs.len(),
        bytes_sent: sent,
        bytes_received: received,
        compare_ms,
        transfer_ms: t.elapsed().as_secs_f64() * 1000.0,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let keys: usize = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(1_000_000);
    let value_bytes: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    let value = vec![b'x'; value_bytes];

    println!("anti-entropy benchmark: {keys} keys of {value_bytes} bytes, 2^{PARTITION_BITS} partitions");
    let t = Instant::now();
    {
        let a = open(&dir.path().join("a"));
        let b = open(&dir.path().join("b"));
        for i in 0..keys {
            let reg = register(1, &value);
            let k = format!("key-{i:08}");
            a.merge(&k, &reg).unwrap();
            b.merge(&k, &reg).unwrap();
        }
    }
    println!("loaded both replicas in {:.1} s", t.elapsed().as_secs_f64());

    let t = Instant::now();
    let a = open(&dir.path().join("a"));
    let rebuild = t.elapsed();
    let b = open(&dir.path().join("b"));
    println!(
        "merkle trees rebuilt at start-up from {keys} keys in {:.2} s",
        rebuild.as_secs_f64()
    );

    let shared: Vec<u32> = (0..1u32 << PARTITION_BITS).collect();
    let roots_equal =
        |a: &ReplicaStore, b: &ReplicaStore| shared.iter().all(|&p| a.forest().root(p) == b.forest().root(p));
    assert!(roots_equal(&a, &b));
    let cost = exchange(&a, &b, &shared);
    println!();
    println!(
        "| differing keys | rounds | differences found | bytes sent | bytes received | compare ms | transfer ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let row = |d: usize, c: &Cost| {
        println!(
            "| {d} | {} | {} | {} | {} | {:.1} | {:.1} |",
            c.rounds, c.differences, c.bytes_sent, c.bytes_received, c.compare_ms, c.transfer_ms
        )
    };
    row(0, &cost);
    for (version, d) in (2..).zip([1usize, 100, 10_000]) {
        // `d` keys spread over the key space get a new version on b only.
        for j in 0..d {
            let i = j * (keys / d);
            b.merge(&format!("key-{i:08}"), &register(version, b"changed")).unwrap();
        }
        let cost = exchange(&a, &b, &shared);
        assert_eq!(
            cost.differences, d,
            "exchange found {} of {d} differences",
            cost.differences
        );
        assert!(roots_equal(&a, &b), "replicas differ after the exchange");
        row(d, &cost);
    }
}
