//! Arbitrary bytes into everything that reads from the cluster port: the frame readers,
//! the handshake (both sides) and the message decoders. Nothing may panic, and no input
//! may make the reader allocate much more than the input itself, whatever lengths and
//! counts it claims: this binary counts every allocation to check that.
//!
//! One test function runs every case in turn, so that the allocation peak it measures
//! is its own.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use dynakv_node::transport::handshake::{self, Key, Policy};
use dynakv_node::transport::message::{self, Answer, Call, Get, GetBatch, Merge, Request, WireError};
use dynakv_node::transport::stream::{encode_request, read_answer, read_request};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tokio::io::AsyncWriteExt;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            grew(new_size - layout.size());
        } else {
            CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns how far allocations rose above where they started.
fn peak_of(f: impl FnOnce()) -> usize {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    f();
    PEAK.load(Ordering::Relaxed).saturating_sub(base)
}

/// The frame limit the readers are given: far above any input here, as a node's is
/// (256 MiB by default), so only the readers' own care keeps memory down.
const LIMIT: usize = 256 << 20;
/// What one case may allocate beyond a small multiple of its input.
const SLACK: usize = 2 << 20;

fn valid_requests() -> Vec<Vec<u8>> {
    let reqs = vec![
        Get::of("k").wrap(),
        GetBatch {
            keys: vec!["a".into(), "b".into()],
        }
        .wrap(),
        Merge {
            key: "m".into(),
            register: dynakv_crdt::Register::Mv(Default::default()),
            layout: 3,
        }
        .wrap(),
    ];
    let mut out = vec![message::encode(&reqs[0]), message::encode(&reqs)];
    let mut frame = Vec::new();
    encode_request(&mut frame, 7, &reqs);
    out.push(frame);
    out
}

/// Bytes: wholly random, or a valid encoding with a few bytes changed (which reaches
/// deeper into the decoders than noise does).
fn inputs() -> impl Strategy<Value = Vec<u8>> {
    let valid = valid_requests();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2048),
        (
            0..valid.len(),
            proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)
        )
            .prop_map(move |(i, edits)| {
                let mut v = valid[i].clone();
                for (at, b) in edits {
                    let at = at % v.len();
                    v[at] = b;
                }
                v
            }),
        // A frame header claiming far more than follows.
        (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..256)).prop_map(|(len, rest)| {
            let mut v = len.to_be_bytes().to_vec();
            v.extend(rest);
            v
        }),
    ]
}

#[test]
fn arbitrary_bytes_neither_panic_nor_allocate_beyond_their_size() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 3000,
        ..Config::default()
    });
    let worst = std::cell::Cell::new((0usize, 0usize));
    let cases = std::cell::Cell::new(0usize);
    runner
        .run(&inputs(), |bytes| {
            cases.set(cases.get() + 1);
            let bound = SLACK + 16 * bytes.len();
            let check = |what: &str, peak: usize| {
                if peak > worst.get().0 {
                    worst.set((peak, bytes.len()));
                }
                prop_assert!(peak <= bound, "{what}: {peak} bytes for an input of {}", bytes.len());
                Ok(())
            };
            check(
                "read_request",
                peak_of(|| {
                    let _ = rt.block_on(read_request(&mut &bytes[..], LIMIT));
                }),
            )?;
            check(
                "read_answer",
                peak_of(|| {
                    let _ = rt.block_on(read_answer(&mut &bytes[..], LIMIT));
                }),
            )?;
            check(
                "decoders",
                peak_of(|| {
                    let _ = message::decode::<Request>(&bytes);
                    let _ = message::decode::<Answer>(&bytes);
                    let _ = message::decode::<Vec<Request>>(&bytes);
                    let _ = message::decode::<Vec<Result<Answer, WireError>>>(&bytes);
                    let _ = message::decode::<WireError>(&bytes);
                }),
            )?;
            // Both sides of the handshake, given these bytes by the other side.
            for server_side in [true, false] {
                let peak = peak_of(|| {
                    rt.block_on(async {
                        let (mut ours, mut theirs) = tokio::io::duplex(64 << 10);
                        let _ = theirs.write_all(&bytes).await;
                        drop(theirs);
                        let policy = Policy::Strict(Key::from_secret(b"fuzzing-secret-0123"));
                        let result = if server_side {
                            handshake::server(&mut ours, &policy, "dynakv", "n1").await
                        } else {
                            handshake::client(&mut ours, &policy, "dynakv", "n1").await
                        };
                        // Without the secret's proofs, arbitrary bytes never get in.
                        assert!(result.is_err(), "{bytes:?} passed the handshake");
                    })
                });
                check("handshake", peak)?;
            }
            Ok(())
        })
        .unwrap();
    let (peak, len) = worst.get();
    assert!(cases.get() >= 3000, "{} cases ran", cases.get());
    eprintln!(
        "{} cases; largest allocation peak: {peak} bytes (for an input of {len} bytes)",
        cases.get()
    );
}

/// A forged length far over the limit is refused before anything is read or allocated;
/// one under it but not followed by its bytes allocates only what arrived.
#[test]
fn a_forged_length_allocates_only_what_arrives() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut lie = (200u32 << 20).to_be_bytes().to_vec();
    lie.extend_from_slice(&7u64.to_be_bytes());
    lie.extend_from_slice(&[0; 100]);
    let peak = peak_of(|| {
        let r = rt.block_on(read_request(&mut &lie[..], LIMIT));
        assert!(r.is_err(), "a truncated frame is an error");
    });
    assert!(peak < 256 << 10, "{peak} bytes for a frame claiming 200 MiB");
    let peak = peak_of(|| {
        let r = rt.block_on(read_request(&mut &lie[..], 1 << 20));
        assert!(r.is_err(), "over the limit");
    });
    assert!(peak < 64 << 10, "{peak}");
}
