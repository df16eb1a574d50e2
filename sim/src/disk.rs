//! A simulated node's disk: what its process sees (the page cache), what a crash of the
//! machine would leave (what was synced), and injected storage errors.
//!
//! A process crash loses nothing written: the next incarnation reads what the last one
//! wrote, as a real node reads RocksDB's write-ahead log from the page cache. A machine
//! crash loses the batches written since the last sync, all but a prefix of them (the
//! log is written in order, and the kernel may have written some of it back): the next
//! incarnation reads what was synced. The kernel's writeback is a sync every
//! `sync_every` (per node), besides the syncs the node asks for.

use parking_lot::Mutex;
use rand::Rng;
use rand::rngs::StdRng;
use tokio::time::Instant;

use dynakv_node::env::storage::{MemoryStore, Op, Scan, Space, StorageError, Store};

/// A fault the harness injects into a node's storage: the mutation checks that show the
/// checkers can fail. Only the simulator has them; production code has no such switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    None,
    /// Hints are acknowledged but never kept: a fallback loses what it promised to hand
    /// off.
    DropHints,
    /// The clock's recorded bound is never written: a restarted node forgets how far its
    /// clock got.
    ForgetClock,
    /// Writes between nodes name no layout version (the network zeroes it): a node behind
    /// on layouts cannot tell a copy it gains in a newer one from one it no longer needs.
    /// Applied to the messages, not to storage.
    ForgetLayout,
    /// Every restart looks like one after a clean stop (the simulator records one on the
    /// disk before the node opens it): a node back from a machine crash keeps minting
    /// versions under its old actor id, after its newest ones were lost from its disk.
    PretendCleanStop,
}

/// What an injected storage fault makes fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fails {
    Writes,
    Reads,
    Both,
}

/// An injected storage fault: every write or read (or both) of one key, or of
/// everything, fails until `until`.
#[derive(Clone, Debug)]
pub struct Fault {
    pub fails: Fails,
    /// A user key: the fault hits the records of that key in every space (its data,
    /// its hints, its tombstone entry). `None`: everything.
    pub key: Option<String>,
    pub until: Instant,
}

impl Fault {
    fn hits_key(&self, stored: &[u8]) -> bool {
        self.key.as_ref().is_none_or(|k| stored.ends_with(k.as_bytes()))
    }
}

/// What the disk saw, for the report and the non-vacuity floors.
#[derive(Clone, Copy, Debug, Default)]
pub struct DiskStats {
    pub syncs: u64,
    /// Unsynced batches lost in machine crashes.
    pub batches_lost: u64,
    /// Calls failed by an injected fault.
    pub injected_errors: u64,
}

struct State {
    /// What the process sees.
    live: MemoryStore,
    /// What survives a machine crash.
    durable: MemoryStore,
    /// Batches written since the last sync, oldest first.
    unsynced: Vec<Vec<Op>>,
    faults: Vec<Fault>,
    stats: DiskStats,
}

pub struct SimDisk {
    state: Mutex<State>,
    mutation: Mutation,
}

impl SimDisk {
    pub fn new(mutation: Mutation) -> SimDisk {
        SimDisk {
            state: Mutex::new(State {
                live: MemoryStore::new(),
                durable: MemoryStore::new(),
                unsynced: Vec::new(),
                faults: Vec::new(),
                stats: DiskStats::default(),
            }),
            mutation,
        }
    }

    pub fn stats(&self) -> DiskStats {
        self.state.lock().stats
    }

    /// Batches written since the last sync.
    pub fn unsynced(&self) -> usize {
        self.state.lock().unsynced.len()
    }

    pub fn inject(&self, fault: Fault) {
        self.state.lock().faults.push(fault);
    }

    pub fn clear_faults(&self) {
        self.state.lock().faults.clear();
    }

    /// The machine crashed: of the unsynced batches, a random prefix reached the disk,
    /// never the last one; the page cache is gone. Returns (batches kept, batches lost).
    pub fn machine_crash(&self, rng: &mut StdRng) -> (usize, usize) {
        let mut s = self.state.lock();
        let unsynced = std::mem::take(&mut s.unsynced);
        let kept = rng.random_range(0..unsynced.len().max(1));
        let lost = unsynced.len() - kept;
        for batch in unsynced.into_iter().take(kept) {
            s.durable.write(batch).expect("memory writes succeed");
        }
        s.live = s.durable.snapshot();
        s.stats.batches_lost += lost as u64;
        (kept, lost)
    }

    /// The error an active fault gives a call on `key` (`None`: a scan or a whole
    /// batch's check by its ops), if any.
    fn fault(s: &mut State, write: bool, keys: &[&[u8]]) -> Result<(), StorageError> {
        let now = Instant::now();
        s.faults.retain(|f| f.until > now);
        let hit = s.faults.iter().any(|f| {
            let kind = match f.fails {
                Fails::Both => true,
                Fails::Writes => write,
                Fails::Reads => !write,
            };
            kind && (f.key.is_none() || keys.iter().any(|k| f.hits_key(k)))
        });
        if hit {
            s.stats.injected_errors += 1;
            return Err(StorageError::Engine(format!(
                "injected {} failure",
                if write { "write" } else { "read" }
            )));
        }
        Ok(())
    }
}

impl Store for SimDisk {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let mut s = self.state.lock();
        // The node's own records are read at start only; a fault there would just keep
        // the node from starting.
        if space != Space::Meta {
            Self::fault(&mut s, false, &[key])?;
        }
        s.live.get(space, key)
    }

    fn write(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        let ops: Vec<Op> = ops
            .into_iter()
            .filter(|op| match (self.mutation, op) {
                (Mutation::DropHints, Op::Put(Space::Hints, _, _)) => false,
                (Mutation::ForgetClock, Op::Put(Space::Meta, k, _)) => k.as_slice() != b"clock_ceiling",
                _ => true,
            })
            .collect();
        let mut s = self.state.lock();
        let keys: Vec<&[u8]> = ops
            .iter()
            .map(|op| match op {
                Op::Put(_, k, _) | Op::Delete(_, k) => k.as_slice(),
            })
            .collect();
        Self::fault(&mut s, true, &keys)?;
        s.live.write(ops.clone())?;
        s.unsynced.push(ops);
        Ok(())
    }

    fn sync(&self) -> Result<(), StorageError> {
        let mut s = self.state.lock();
        let unsynced = std::mem::take(&mut s.unsynced);
        for batch in unsynced {
            s.durable.write(batch)?;
        }
        s.stats.syncs += 1;
        Ok(())
    }

    fn scan<'a>(&'a self, space: Space, from: &[u8], to: Option<&[u8]>) -> Scan<'a> {
        let mut s = self.state.lock();
        if space != Space::Meta
            && let Err(e) = Self::fault(&mut s, false, &[])
        {
            return Box::new(std::iter::once(Err(e)));
        }
        let items: Vec<_> = s.live.scan(space, from, to).collect();
        Box::new(items.into_iter())
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn put(k: &str) -> Vec<Op> {
        vec![Op::Put(Space::Data, k.as_bytes().to_vec(), b"v".to_vec())]
    }

    fn keys(d: &SimDisk) -> Vec<String> {
        d.scan(Space::Data, &[], None)
            .map(|kv| String::from_utf8(kv.unwrap().0).unwrap())
            .collect()
    }

    #[test]
    fn a_machine_crash_keeps_what_was_synced_and_a_prefix_of_the_rest() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..20 {
            let d = SimDisk::new(Mutation::None);
            d.write(put("a")).unwrap();
            d.sync().unwrap();
            for k in ["b", "c", "d"] {
                d.write(put(k)).unwrap();
            }
            assert_eq!(keys(&d), ["a", "b", "c", "d"], "the process sees every write");
            let (kept, lost) = d.machine_crash(&mut rng);
            assert_eq!(kept + lost, 3);
            assert!(lost >= 1, "the last unsynced batch never reaches the disk");
            let expected: Vec<&str> = ["a", "b", "c", "d"][..1 + kept].to_vec();
            assert_eq!(keys(&d), expected);
            assert_eq!(d.stats().batches_lost, lost as u64);
        }
        let d = SimDisk::new(Mutation::None);
        d.write_synced(put("x")).unwrap();
        d.machine_crash(&mut rng);
        assert_eq!(keys(&d), ["x"], "a synced write survives");
    }

    #[tokio::test(start_paused = true)]
    async fn injected_faults_fail_their_key_or_everything_until_they_end() {
        let d = SimDisk::new(Mutation::None);
        let until = Instant::now() + std::time::Duration::from_millis(100);
        d.inject(Fault {
            fails: Fails::Writes,
            key: Some("k1".into()),
            until,
        });
        assert!(d.write(put("k1")).is_err());
        d.write(put("k2")).unwrap();
        d.inject(Fault {
            fails: Fails::Reads,
            key: None,
            until,
        });
        assert!(d.get(Space::Data, b"k2").is_err());
        assert!(d.scan(Space::Data, &[], None).next().unwrap().is_err());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        d.write(put("k1")).unwrap();
        assert_eq!(keys(&d), ["k1", "k2"]);
        assert_eq!(d.stats().injected_errors, 3);
    }
}
