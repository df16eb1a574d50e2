//! Partition transfer: copying a whole partition from another replica, page by page (a
//! range scan on the source, [`ReplicaStore::partition_page`]; a batch merge here),
//! paced to a byte rate and resumable from the last page merged.
//!
//! This is how a member that gains a partition in a new layout will fetch it (see
//! `dynakv_ring::history`): merging, never overwriting, so a copy that races new writes
//! (which reach the gaining member directly) loses nothing, and a page fetched twice
//! after a resume changes nothing the second time. Tombstones travel like any state.
//! Hints are not part of a partition: they follow their owner (hinted handoff). The
//! other half of a move, deleting a partition a member no longer replicates, is
//! [`ReplicaStore::drop_partition`].

use std::future::Future;
use std::time::{Duration, Instant};

use dynakv_crdt::Register;
use dynakv_http_api::Key;

use crate::env::storage::StorageError;
use crate::state::replica::{PartitionPage, ReplicaStore};

/// Bytes a page asks for.
pub const PAGE_BYTES: usize = 256 * 1024;
/// The most a source answers in one page, whatever is asked.
pub const MAX_PAGE_BYTES: usize = 4 << 20;

/// How far a partition's transfer from one source has come; kept by the caller so a
/// transfer cut short (a failed page, a restart of either side) resumes where it was.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// The last storage key merged; `None` before the first page.
    pub cursor: Option<Vec<u8>>,
    pub keys: u64,
    pub bytes: u64,
    pub done: bool,
}

/// Keeps a transfer under `bytes_per_sec` on average since its first page (0: no
/// limit), across resumes.
#[derive(Clone, Debug)]
pub struct Pace {
    bytes_per_sec: u64,
    bytes: u64,
    started: Option<Instant>,
}

impl Pace {
    pub fn new(bytes_per_sec: u64) -> Pace {
        Pace {
            bytes_per_sec,
            bytes: 0,
            started: None,
        }
    }

    /// Records `bytes` more, sent by `now`; returns how long to wait before the next
    /// page.
    pub fn after(&mut self, bytes: u64, now: Instant) -> Duration {
        let started = *self.started.get_or_insert(now);
        self.bytes += bytes;
        if self.bytes_per_sec == 0 {
            return Duration::ZERO;
        }
        let due = Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_sec as f64);
        due.saturating_sub(now.saturating_duration_since(started))
    }
}

/// What a page item weighs for pacing: its key and values, and a fixed share for its
/// causal context and framing (so tombstones are paced too).
fn weight(key: &str, register: &Register) -> u64 {
    (key.len() + register.values().iter().map(|v| v.len()).sum::<usize>() + 64) as u64
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError<E> {
    /// Asking the source for a page failed; the progress so far is kept.
    #[error("fetching a page failed: {0}")]
    Fetch(E),
    /// The source sent a bad key, a key of another partition, keys out of order, or an
    /// empty page that is not the last.
    #[error("the source answered a bad page: {0}")]
    BadPage(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Fetches `partition` into `replicas` from where `progress` says, one page at a time:
/// `page(cursor)` asks the source for the page after `cursor`; each page is merged,
/// its timestamps shown to `observe` first, and `progress` (with the new cursor) handed
/// to `save` before the next page is asked for. Waits between pages as `pace` says, on
/// `sleep`. Ends when the source has no more, or at the first failure (with the
/// progress saved up to the last merged page).
#[allow(clippy::too_many_arguments)]
pub async fn fetch<E, P, PF, S, SF>(
    replicas: &ReplicaStore,
    partition: u32,
    progress: &mut Progress,
    pace: &mut Pace,
    observe: impl Fn(&Register),
    mut page: P,
    mut save: impl FnMut(&Progress),
    sleep: S,
) -> Result<(), TransferError<E>>
where
    P: FnMut(Option<Vec<u8>>) -> PF,
    PF: Future<Output = Result<PartitionPage, E>>,
    S: Fn(Duration) -> SF,
    SF: Future<Output = ()>,
{
    while !progress.done {
        let got = page(progress.cursor.clone()).await.map_err(TransferError::Fetch)?;
        let forest = replicas.forest();
        let mut bytes = 0u64;
        let mut last: Option<Vec<u8>> = None;
        // The whole page is checked before anything of it is used.
        for (key, register) in &got.items {
            Key::new(key.as_str()).map_err(|e| TransferError::BadPage(e.to_string()))?;
            let skey = crate::state::replica::storage_key(key);
            if forest.partition_of(&skey) != partition {
                return Err(TransferError::BadPage(format!(
                    "key {key:?} is not in partition {partition}"
                )));
            }
            // Past the previous key of this page, or of the last page merged.
            if last
                .as_ref()
                .or(progress.cursor.as_ref())
                .is_some_and(|prev| skey <= *prev)
            {
                return Err(TransferError::BadPage("keys out of order".into()));
            }
            bytes += weight(key, register);
            last = Some(skey);
        }
        // The next page starts after the last key merged here: the source's cursor only
        // says whether there is one.
        let more = match (got.next.is_some(), last) {
            (false, _) => None,
            (true, Some(last)) => Some(last),
            (true, None) => return Err(TransferError::BadPage("an empty page that is not the last".into())),
        };
        for (_, register) in &got.items {
            observe(register);
        }
        progress.keys += got.items.len() as u64;
        progress.bytes += bytes;
        replicas.merge_many(got.items)?;
        match more {
            Some(last) => progress.cursor = Some(last),
            None => progress.done = true,
        }
        save(progress);
        let wait = pace.after(bytes, Instant::now());
        if !progress.done && !wait.is_zero() {
            sleep(wait).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::sync::Arc;

    use bytes::Bytes;
    use dynakv_crdt::{Actor, CausalContext, LwwRegister, MvRegister, Timestamp};

    use super::*;
    use crate::env::clock::ManualClock;
    use crate::env::storage::MemoryStore;
    use crate::state::replica::PageError;
    use crate::state::testing::mv;

    const BITS: u8 = 4;

    fn store() -> ReplicaStore {
        ReplicaStore::open(Arc::new(MemoryStore::new()), BITS, Arc::new(ManualClock::new(1_000))).unwrap()
    }

    /// A source holding `n` keys of both kinds and some tombstones, over every partition.
    fn source(n: usize) -> ReplicaStore {
        let r = store();
        for i in 0..n {
            let key = format!("key-{i}");
            let reg = match i % 3 {
                0 => mv(i as u64 % 5 + 1, &format!("value {i}")),
                1 => Register::Lww(LwwRegister::new(
                    Timestamp(i as u64 + 1),
                    Actor(1),
                    Some(Bytes::from(vec![b'x'; i % 200])),
                )),
                _ => {
                    let mut dead = MvRegister::new();
                    dead.write(Actor(2), &CausalContext::new(), Some(Bytes::from_static(b"gone")));
                    let ctx = dead.context().clone();
                    dead.write(Actor(2), &ctx, None);
                    Register::Mv(dead)
                }
            };
            r.merge(&key, &reg).unwrap();
        }
        r
    }

    fn keys_of(r: &ReplicaStore, partition: u32) -> Vec<(String, Register)> {
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = r.partition_page(partition, after.as_deref(), usize::MAX).unwrap();
            out.extend(page.items);
            match page.next {
                Some(n) => after = Some(n),
                None => return out,
            }
        }
    }

    #[test]
    fn pages_cover_a_partition_once_in_order_and_nothing_else() {
        let src = source(600);
        let mut total = 0;
        for p in 0..1u32 << BITS {
            let whole = keys_of(&src, p);
            total += whole.len();
            // Small pages: the same keys, in the same order.
            let mut paged = Vec::new();
            let mut after: Option<Vec<u8>> = None;
            let mut pages = 0;
            loop {
                let page = src.partition_page(p, after.as_deref(), 300).unwrap();
                assert!(!page.items.is_empty() || page.next.is_none());
                pages += 1;
                paged.extend(page.items);
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            assert_eq!(paged, whole, "partition {p}");
            assert!(pages > 1, "300-byte pages split partition {p}");
            for (k, _) in &whole {
                assert_eq!(src.forest().partition_of(&crate::state::replica::storage_key(k)), p);
            }
        }
        assert_eq!(total, 600, "every key in exactly one partition");
        assert!(matches!(
            src.partition_page(1 << BITS, None, 10),
            Err(PageError::Partition(_))
        ));
        let foreign = crate::state::replica::storage_key(&keys_of(&src, 1)[0].0);
        assert!(matches!(
            src.partition_page(0, Some(&foreign), 10),
            Err(PageError::Cursor(0))
        ));
    }

    /// Fetches partition `p` of `src` into `dst` through pages of `page_bytes`, failing
    /// every `fail_every`-th page request and resuming from the saved progress each
    /// time. Returns the final progress and how many times it was cut short.
    fn fetch_with_failures(
        src: &ReplicaStore,
        dst: &ReplicaStore,
        p: u32,
        page_bytes: usize,
        fail_every: u32,
    ) -> (Progress, u32) {
        let calls = Cell::new(0u32);
        let saved = RefCell::new(Progress::default());
        let mut failures = 0;
        let mut pace = Pace::new(0);
        loop {
            let mut progress = saved.borrow().clone();
            let result = futures::executor::block_on(fetch(
                dst,
                p,
                &mut progress,
                &mut pace,
                |_| {},
                |after: Option<Vec<u8>>| {
                    calls.set(calls.get() + 1);
                    let fail = calls.get().is_multiple_of(fail_every);
                    let page = src.partition_page(p, after.as_deref(), page_bytes);
                    async move {
                        if fail {
                            Err("connection reset")
                        } else {
                            Ok(page.unwrap())
                        }
                    }
                },
                |p: &Progress| *saved.borrow_mut() = p.clone(),
                |_| async {},
            ));
            match result {
                Ok(()) => return (saved.into_inner(), failures),
                Err(TransferError::Fetch(_)) => failures += 1,
                Err(e) => panic!("{e}"),
            }
            assert!(failures < 1000);
        }
    }

    #[test]
    fn a_transfer_cut_short_resumes_and_ends_with_the_sources_partition() {
        let src = source(900);
        let dst = store();
        let p = 3;
        let (done, failures) = fetch_with_failures(&src, &dst, p, 512, 4);
        assert!(failures > 0, "the test cut the transfer short");
        assert!(done.done);
        let want = keys_of(&src, p);
        assert_eq!(done.keys, want.len() as u64, "each key fetched once across resumes");
        assert_eq!(keys_of(&dst, p), want);
        assert_eq!(dst.forest().root(p), src.forest().root(p), "the Merkle tree follows");
        for other in (0..1u32 << BITS).filter(|&q| q != p) {
            assert!(keys_of(&dst, other).is_empty(), "nothing of partition {other}");
        }
    }

    #[test]
    fn a_transfer_merges_with_what_is_here() {
        let src = source(300);
        let dst = store();
        let p = 7;
        let (key, theirs) = keys_of(&src, p).into_iter().next().unwrap();
        dst.merge(&key, &mv(9, "written here meanwhile")).unwrap();
        let (done, _) = fetch_with_failures(&src, &dst, p, usize::MAX, u32::MAX);
        assert!(done.done);
        let mut want = theirs;
        want.merge(&mv(9, "written here meanwhile"));
        assert_eq!(dst.get(&key).unwrap(), Some(want));
    }

    #[test]
    fn a_dropped_partition_leaves_nothing_behind_and_the_others_untouched() {
        let r = source(600);
        let roots: Vec<_> = (0..1u32 << BITS).map(|p| r.forest().root(p)).collect();
        let empty = store().forest().root(0);
        let tombstones = r.tombstone_count().unwrap();
        let p = 5;
        let held = keys_of(&r, p);
        let dead_here = held.iter().filter(|(_, reg)| reg.is_tombstone()).count() as u64;
        assert!(dead_here > 0, "the partition holds tombstones too");
        assert_eq!(
            r.drop_partition(p, || false).unwrap(),
            0,
            "a drop called off drops nothing"
        );
        assert_eq!(r.drop_partition(p, || true).unwrap(), held.len() as u64);
        assert!(keys_of(&r, p).is_empty());
        assert_eq!(r.forest().root(p), empty, "its Merkle tree is empty");
        assert_eq!(
            r.tombstone_count().unwrap(),
            tombstones - dead_here,
            "its tombstones left the index"
        );
        for q in (0..1u32 << BITS).filter(|&q| q != p) {
            assert_eq!(r.forest().root(q), roots[q as usize], "partition {q} untouched");
        }
        assert_eq!(r.drop_partition(p, || true).unwrap(), 0, "dropping again finds nothing");
        assert!(matches!(
            r.drop_partition(1 << BITS, || true),
            Err(PageError::Partition(_))
        ));
    }

    #[test]
    fn a_bad_page_is_refused_before_anything_is_merged() {
        let src = source(200);
        let dst = store();
        let wrong = src.partition_page(5, None, usize::MAX).unwrap();
        let mut progress = Progress::default();
        let result = futures::executor::block_on(fetch(
            &dst,
            6,
            &mut progress,
            &mut Pace::new(0),
            |_| {},
            |_| {
                let page = wrong.clone();
                async move { Ok::<_, ()>(page) }
            },
            |_| {},
            |_| async {},
        ));
        assert!(matches!(result, Err(TransferError::BadPage(_))));
        assert_eq!(progress, Progress::default());
        assert!(keys_of(&dst, 5).is_empty());
    }

    #[test]
    fn pace_spreads_bytes_over_time_from_the_first_page() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut pace = Pace::new(1000);
        assert_eq!(pace.after(500, at(0)), Duration::from_millis(500));
        assert_eq!(pace.after(500, at(400)), Duration::from_millis(600));
        // A resume keeps the clock of the first page: 2,000 bytes are due by 2 s, and
        // 1 s has passed (a clock restarted at the resume would say 2 s).
        assert_eq!(pace.after(1000, at(1000)), Duration::from_millis(1000));
        assert_eq!(pace.after(100, at(5000)), Duration::ZERO, "behind: no wait");
        assert_eq!(Pace::new(0).after(1 << 30, at(0)), Duration::ZERO);
    }

    #[test]
    fn a_page_whose_cursor_would_skip_keys_is_not_trusted() {
        let src = source(400);
        let dst = store();
        let p = 2;
        let want = keys_of(&src, p);
        assert!(want.len() > 4);
        // A source that always claims the next page starts at the partition's last key:
        // the fetcher continues after the last key it merged instead.
        let end = crate::state::replica::storage_key(&want.last().unwrap().0);
        let mut progress = Progress::default();
        futures::executor::block_on(fetch(
            &dst,
            p,
            &mut progress,
            &mut Pace::new(0),
            |_| {},
            |after: Option<Vec<u8>>| {
                let mut page = src.partition_page(p, after.as_deref(), 200).unwrap();
                if page.next.is_some() {
                    page.next = Some(end.clone());
                }
                async move { Ok::<_, ()>(page) }
            },
            |_| {},
            |_| async {},
        ))
        .unwrap();
        assert_eq!(keys_of(&dst, p), want);
    }
}
