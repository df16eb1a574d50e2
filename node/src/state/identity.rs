//! Who this node is, kept in the data directory: its id, its actor id (the name under
//! which it mints versions) and its generation (bumped on every start).
//!
//! These records, and the ceilings below, are written synced (fsynced) whatever
//! `--sync-writes` says: they are few and small, and a node that lost one in a crash of
//! its machine could reuse a version name or a timestamp it had already handed out.
//!
//! The actor id survives a restart only after a clean stop, or when every write is
//! synced. After a crash with unsynced writes, the node's newest versions may be gone
//! from its disk while other replicas hold them: minting the next version of such a key
//! under the same actor would reuse a dot those replicas hold with another value, and
//! one of the two acknowledged writes would silently replace the other on merge. So the
//! node mints under a fresh actor id from then on (as Riak's vnodes take a new epoch);
//! the cost is one more entry in the version vectors of the keys it writes next.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dynakv_crdt::Actor;
use dynakv_ring::NodeId;
use parking_lot::Mutex;
use rand::Rng;

use crate::env::storage::meta::{ACTOR, CLEAN_STOP, CLOCK_CEILING, GENERATION, MINT_CEILING, NODE_ID};
use crate::env::storage::{Op, Space, StorageError, Store};

/// Counters reserved at a time, so the ceiling is written once in a great while.
const MINT_BLOCK: u64 = 1 << 20;
/// Milliseconds of timestamps recorded at a time: about two small writes a second under
/// steady load, and after a quick restart the clock runs at most this far ahead.
const CLOCK_BLOCK_MS: u64 = 1000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub id: NodeId,
    pub actor: Actor,
    pub generation: u64,
    /// The actor id is new at this start because the last stop was not clean.
    pub actor_renewed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("invalid setting `id` = {given:?}: the data directory belongs to node {stored:?}")]
    Mismatch { given: String, stored: String },
    #[error("the data directory's identity records are corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Storage(#[from] crate::env::storage::StorageError),
}

fn read_u64(store: &dyn Store, key: &[u8]) -> Result<Option<u64>, IdentityError> {
    match store.get(Space::Meta, key)? {
        None => Ok(None),
        Some(b) => Ok(Some(u64::from_be_bytes(b.as_slice().try_into().map_err(|_| {
            IdentityError::Corrupt(format!("{} is {} bytes", String::from_utf8_lossy(key), b.len()))
        })?))),
    }
}

/// Loads the identity stored in `store`, or creates one on first start (with `wanted` as
/// the id, or a random one drawn from `rng`), and records a new generation. The actor
/// is new too unless the last stop was clean or `sync_writes` is on (see the module's
/// documentation); `Identity::actor_renewed` says which.
pub fn load_or_create(
    store: &dyn Store,
    wanted: Option<&NodeId>,
    sync_writes: bool,
    rng: &mut impl Rng,
) -> Result<Identity, IdentityError> {
    let stored_id = store
        .get(Space::Meta, NODE_ID)?
        .map(|b| {
            String::from_utf8(b)
                .ok()
                .and_then(|s| NodeId::new(s).ok())
                .ok_or_else(|| IdentityError::Corrupt("node id".into()))
        })
        .transpose()?;
    let id = match (stored_id, wanted) {
        (Some(stored), Some(given)) if stored != *given => {
            return Err(IdentityError::Mismatch {
                given: given.to_string(),
                stored: stored.to_string(),
            });
        }
        (Some(stored), _) => stored,
        (None, Some(given)) => given.clone(),
        (None, None) => NodeId::new(format!("n-{:08x}", rng.random::<u32>())).expect("valid generated id"),
    };
    let last = read_u64(store, GENERATION)?.unwrap_or(0);
    let clean = read_u64(store, CLEAN_STOP)?.is_some_and(|g| g == last);
    let (actor, actor_renewed) = match read_u64(store, ACTOR)? {
        Some(a) if clean || sync_writes => (Actor(a), false),
        Some(_) => (Actor(rng.random()), true),
        None => (Actor(rng.random()), false),
    };
    let generation = last + 1;
    store.write_synced(vec![
        Op::Put(Space::Meta, NODE_ID.to_vec(), id.as_str().as_bytes().to_vec()),
        Op::Put(Space::Meta, ACTOR.to_vec(), actor.0.to_be_bytes().to_vec()),
        Op::Put(Space::Meta, GENERATION.to_vec(), generation.to_be_bytes().to_vec()),
        Op::Delete(Space::Meta, CLEAN_STOP.to_vec()),
    ])?;
    Ok(Identity {
        id,
        actor,
        generation,
        actor_renewed,
    })
}

/// Records a clean stop of `generation`, once everything it wrote is synced: the next
/// start keeps the actor id.
pub fn record_clean_stop(store: &dyn Store, generation: u64) -> Result<(), StorageError> {
    store.sync()?;
    store.write_synced(vec![Op::Put(
        Space::Meta,
        CLEAN_STOP.to_vec(),
        generation.to_be_bytes().to_vec(),
    )])
}

/// A number recorded in the data directory ahead of use: once [`Ceiling::cover`] returns,
/// the recorded value is at least what it was given, even after a crash. It writes only
/// when a value comes within half a block of the recorded one, recording a block ahead.
/// A caller whose value is still below the recorded one never waits for that write (a
/// storage write can stall for milliseconds during a flush); only one past it does.
struct Ceiling {
    store: Arc<dyn Store>,
    key: &'static [u8],
    block: u64,
    recorded: AtomicU64,
    /// Held while recording.
    writing: Mutex<()>,
}

impl Ceiling {
    fn load(store: Arc<dyn Store>, key: &'static [u8], block: u64) -> Result<Ceiling, IdentityError> {
        let recorded = read_u64(&*store, key)?.unwrap_or(0);
        Ok(Ceiling {
            store,
            key,
            block,
            recorded: AtomicU64::new(recorded),
            writing: Mutex::new(()),
        })
    }

    fn recorded(&self) -> u64 {
        self.recorded.load(Ordering::Acquire)
    }

    fn record(&self, value: u64) -> Result<(), StorageError> {
        self.store.write_synced(vec![Op::Put(
            Space::Meta,
            self.key.to_vec(),
            value.to_be_bytes().to_vec(),
        )])?;
        self.recorded.store(value, Ordering::Release);
        Ok(())
    }

    /// Records exactly `value`, which must be at least every value used so far (callers
    /// hold whatever stops new ones from being used meanwhile).
    fn settle(&self, value: u64) -> Result<(), StorageError> {
        let _writing = self.writing.lock();
        self.record(value)
    }

    fn cover(&self, value: u64) -> Result<(), StorageError> {
        if value.saturating_add(self.block / 2) <= self.recorded() {
            return Ok(());
        }
        let _writing = if value <= self.recorded() {
            // Covered already: extend ahead if nobody else is, but do not wait.
            match self.writing.try_lock() {
                Some(guard) => guard,
                None => return Ok(()),
            }
        } else {
            self.writing.lock()
        };
        if value.saturating_add(self.block / 2) > self.recorded() {
            self.record(value.saturating_add(self.block))?;
        }
        Ok(())
    }
}

/// A floor for the dot counters this node mints on keys it holds nothing for: at least
/// every counter it has ever minted, across restarts (see
/// `dynakv_crdt::MvRegister::start_after`). Counters are reserved in blocks recorded in the
/// data directory before they are used; after a restart the floor starts at the recorded
/// ceiling.
pub struct MintFloor {
    /// Highest counter minted (or the ceiling loaded at start).
    max: AtomicU64,
    /// Every counter ever minted is at most this.
    ceiling: Ceiling,
}

impl MintFloor {
    pub fn load(store: Arc<dyn Store>) -> Result<MintFloor, IdentityError> {
        let ceiling = Ceiling::load(store, MINT_CEILING, MINT_BLOCK)?;
        Ok(MintFloor {
            max: AtomicU64::new(ceiling.recorded()),
            ceiling,
        })
    }

    /// The current floor, with room recorded for the counters about to be minted (each
    /// is at most the floor plus one, plus whatever is minted concurrently).
    pub fn reserve(&self) -> Result<u64, StorageError> {
        let floor = self.max.load(Ordering::Acquire);
        self.ceiling.cover(floor)?;
        Ok(floor)
    }

    /// Records a counter just minted.
    pub fn minted(&self, counter: u64) {
        self.max.fetch_max(counter, Ordering::AcqRel);
    }
}

/// What a node records ahead of use so that a restart never reuses a version name or
/// goes back in time.
pub struct Ceilings {
    pub mint: MintFloor,
    pub clock: ClockCeiling,
}

impl Ceilings {
    pub fn load(store: Arc<dyn Store>) -> Result<Ceilings, IdentityError> {
        Ok(Ceilings {
            mint: MintFloor::load(store.clone())?,
            clock: ClockCeiling::load(store)?,
        })
    }
}

/// The highest wall-clock millisecond this node's last-writer-wins timestamps may carry,
/// recorded before a timestamp is used. A restarted node resumes its clock past it, so
/// its new writes order after its earlier ones even if the wall clock went back (or the
/// clock had been running ahead of it on timestamps seen from other nodes).
pub struct ClockCeiling(Ceiling);

impl ClockCeiling {
    pub fn load(store: Arc<dyn Store>) -> Result<ClockCeiling, IdentityError> {
        Ceiling::load(store, CLOCK_CEILING, CLOCK_BLOCK_MS).map(ClockCeiling)
    }

    /// Every timestamp issued before the last restart has at most this many milliseconds.
    pub fn recorded_ms(&self) -> u64 {
        self.0.recorded()
    }

    /// Records that timestamps up to `physical_ms` may now be issued.
    pub fn cover(&self, physical_ms: u64) -> Result<(), StorageError> {
        self.0.cover(physical_ms)
    }

    /// At shutdown: records the exact bound, `last_ms` being the newest timestamp's
    /// millisecond, so a quick restart does not start up to a block ahead.
    pub fn settle(&self, last_ms: u64) -> Result<(), StorageError> {
        self.0.settle(last_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::storage::MemoryStore;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(5)
    }

    #[test]
    fn identity_persists_and_generation_grows() {
        let s = MemoryStore::new();
        let n1 = NodeId::new("n1").unwrap();
        let first = load_or_create(&s, Some(&n1), false, &mut rng()).unwrap();
        assert_eq!(first.generation, 1);
        record_clean_stop(&s, first.generation).unwrap();
        let second = load_or_create(&s, None, false, &mut rng()).unwrap();
        assert_eq!(
            (second.id.clone(), second.actor, second.generation),
            (n1.clone(), first.actor, 2)
        );
        let err = load_or_create(&s, Some(&NodeId::new("n2").unwrap()), false, &mut rng()).unwrap_err();
        assert!(err.to_string().contains("belongs to node \"n1\""), "{err}");
    }

    #[test]
    fn the_actor_is_kept_after_a_clean_stop_or_with_synced_writes_and_renewed_otherwise() {
        let s = MemoryStore::new();
        let mut rng = rng();
        let first = load_or_create(&s, None, false, &mut rng).unwrap();
        assert!(!first.actor_renewed, "a fresh directory has nothing to renew");
        // A crash: no clean stop recorded.
        let second = load_or_create(&s, None, false, &mut rng).unwrap();
        assert!(second.actor_renewed);
        assert_ne!(second.actor, first.actor);
        // A clean stop of that generation keeps it.
        record_clean_stop(&s, second.generation).unwrap();
        let third = load_or_create(&s, None, false, &mut rng).unwrap();
        assert_eq!((third.actor, third.actor_renewed), (second.actor, false));
        // The marker is gone once read: a crash after it renews again...
        let fourth = load_or_create(&s, None, false, &mut rng).unwrap();
        assert!(fourth.actor_renewed);
        // ...unless every write is synced, when a crash loses nothing acknowledged.
        let fifth = load_or_create(&s, None, true, &mut rng).unwrap();
        assert_eq!((fifth.actor, fifth.actor_renewed), (fourth.actor, false));
        // A marker left by an older generation (a clean stop, then a crash) is no clean
        // stop of the last one.
        record_clean_stop(&s, fifth.generation - 1).unwrap();
        assert!(load_or_create(&s, None, false, &mut rng).unwrap().actor_renewed);
    }

    #[test]
    fn mint_floor_never_goes_back_across_restarts() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let f = MintFloor::load(store.clone()).unwrap();
        assert_eq!(f.reserve().unwrap(), 0);
        f.minted(7);
        f.minted(3);
        assert_eq!(f.reserve().unwrap(), 7);
        // After a restart the floor is past everything minted before it.
        let again = MintFloor::load(store).unwrap();
        assert!(again.reserve().unwrap() >= 7);
    }

    fn store_again(c: &ClockCeiling) -> Arc<dyn Store> {
        c.0.store.clone()
    }

    #[test]
    fn clock_resumes_past_every_timestamp_issued_before_a_restart_even_if_the_wall_clock_went_back() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let ceiling = ClockCeiling::load(store.clone()).unwrap();
        let mut hlc = dynakv_crdt::Hlc::new(60_000);
        let mut issued = Vec::new();
        for wall in [10_000, 10_400, 10_900, 12_345] {
            let t = hlc.now(wall);
            ceiling.cover(t.physical_ms()).unwrap();
            issued.push(t);
        }
        // Restart with the wall clock five seconds behind.
        let ceiling = ClockCeiling::load(store).unwrap();
        let mut hlc = dynakv_crdt::Hlc::new(60_000);
        hlc.resume_after(ceiling.recorded_ms());
        let next = hlc.now(7_345);
        assert!(issued.iter().all(|&t| next > t), "{next} after {issued:?}");
        // Without the ceiling, the restarted clock would have gone back.
        assert!(dynakv_crdt::Hlc::new(60_000).now(7_345) < issued[3]);
        // A clean shutdown records the exact bound rather than the block ahead.
        let ceiling = ClockCeiling::load(store_again(&ceiling)).unwrap();
        assert!(ceiling.recorded_ms() >= 12_345 + 500);
        ceiling.settle(12_345).unwrap();
        assert_eq!(ClockCeiling::load(store_again(&ceiling)).unwrap().recorded_ms(), 12_345);
    }

    #[test]
    fn fresh_directories_get_distinct_actors() {
        let mut rng = rng();
        let a = load_or_create(&MemoryStore::new(), None, false, &mut rng).unwrap();
        let b = load_or_create(&MemoryStore::new(), None, false, &mut rng).unwrap();
        assert_ne!(a.actor, b.actor);
        assert_ne!(a.id, b.id);
    }
}
