//! RocksDB engine: one database per node, one column family per [`Space`], WAL on.
//!
//! A full disk is handled in two steps:
//! - **a reserve**: a batch that puts anything outside the meta space is refused
//!   ([`StorageError::NoSpace`]) while the disk's free space is below the reserve
//!   (`--min-free-mb`), so RocksDB itself rarely meets a full disk; deletes and the
//!   node's own small records still go through. Free space is looked up at most every
//!   [`SPACE_CHECK`], and writes resume by themselves once it is back above the reserve.
//! - **an engine that met a full disk anyway** (another process filled it): RocksDB stops
//!   all writes and resumes by itself once enough space is free, except when the disk
//!   filled while it switched write-ahead logs, which it treats as fatal. A store whose
//!   writes still fail for lack of space [`STUCK_AFTER`] after the free space came back
//!   above the reserve closes and reopens the database ([`refuse`] and [`stuck`] decide,
//!   without I/O).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, DBCompressionType, Direction, Env, IteratorMode, Options,
    ReadOptions, WriteBatch, WriteOptions,
};
use tracing::{error, info, warn};

use super::{KeyValue, Op, Scan, Space, StorageError, Store};

/// Shared block cache for all column families.
const BLOCK_CACHE_BYTES: usize = 128 << 20;
/// Memtable size per column family.
const WRITE_BUFFER_BYTES: usize = 16 << 20;
/// Write-ahead log kept before column families holding old entries are flushed.
const MAX_TOTAL_WAL_BYTES: u64 = 64 << 20;
/// How old a reading of the disk's free space may be.
pub const SPACE_CHECK: Duration = Duration::from_millis(250);
/// How long writes may keep failing for lack of space, with the free space back above
/// the reserve, before the database is reopened. RocksDB's own recovery looks every 5 s.
pub const STUCK_AFTER: Duration = Duration::from_secs(12);
/// Entries (and bytes) a scan reads from the engine at a time; the database handle is
/// held only while a chunk is read, so a reopen never waits for a long scan.
const SCAN_CHUNK: usize = 256;
const SCAN_CHUNK_BYTES: usize = 4 << 20;

/// Whether the space reserve refuses `ops`, with `free` bytes free and `reserve` kept:
/// batches that put data, hints or tombstones are refused below the reserve; deletes
/// (which free space) and the node's own records (layout, clocks: a few bytes, and the
/// node cannot work without them) are not.
pub fn refuse(ops: &[Op], free: u64, reserve: u64) -> bool {
    free < reserve
        && ops
            .iter()
            .any(|op| matches!(op, Op::Put(space, _, _) if *space != Space::Meta))
}

/// Whether an engine whose writes have failed for lack of space since `failing_since`
/// is stuck (RocksDB will not resume it by itself): the free space has been back above
/// the reserve since `space_back_since`, for [`STUCK_AFTER`], at `now`.
pub fn stuck(failing_since: Instant, space_back_since: Option<Instant>, now: Instant) -> bool {
    space_back_since.is_some_and(|back| now.saturating_duration_since(back.max(failing_since)) >= STUCK_AFTER)
}

pub struct RocksStore {
    path: PathBuf,
    /// `None` only while a reopen failed (tried again at the next call).
    db: RwLock<Option<Arc<DB>>>,
    /// `sync = false`: a write is in the WAL (the OS page cache) before it is
    /// acknowledged, which survives a crash of the process (`kill -9`) but not of the
    /// machine. `sync = true` fsyncs the WAL on every write batch.
    write_opts: WriteOptions,
    synced_opts: WriteOptions,
    /// Free bytes to keep on the disk (see the module's documentation).
    reserve: u64,
    space: Mutex<SpaceState>,
    /// Whether writes are failing for lack of space (`SpaceState::failing_since` is set),
    /// so a write that succeeds while none fail takes no lock afterwards.
    failing: AtomicBool,
}

#[derive(Default)]
struct SpaceState {
    /// The last reading of the free space, and when.
    read: Option<(Instant, u64)>,
    /// Since when writes fail for lack of space in the engine itself.
    failing_since: Option<Instant>,
    /// Since when the free space is back above the reserve (while writes fail).
    back_since: Option<Instant>,
    /// The last reopen tried (at most one every [`STUCK_AFTER`]).
    reopened: Option<Instant>,
}

fn engine_err(e: rocksdb::Error) -> StorageError {
    let msg = e.into_string();
    if is_no_space(&msg) {
        StorageError::NoSpace(msg)
    } else {
        StorageError::Engine(msg)
    }
}

/// RocksDB's message for an `ENOSPC` (or the stopped state it left the engine in).
fn is_no_space(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    m.contains("no space left") || m.contains("nospace")
}

/// Free bytes for an unprivileged writer on the file system holding `path`.
fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid, writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

fn open_db(path: &Path) -> Result<DB, StorageError> {
    let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&cache);
    // Point reads of missing keys (new keys, replicas that lag) skip the disk.
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);

    let mut cf_opts = Options::default();
    cf_opts.set_block_based_table_factory(&table);
    cf_opts.set_compression_type(DBCompressionType::Lz4);
    // Smaller memtables flush in shorter bursts: a 64 MB flush took 200-400 ms of a
    // core and showed as 100+ ms p99.9 spikes on a busy 2-core machine. More of them
    // may wait, so a slow flush does not stall writes.
    cf_opts.set_write_buffer_size(WRITE_BUFFER_BYTES);
    cf_opts.set_max_write_buffer_number(4);
    // A read checks the memtables before the files; a bloom filter on each memtable
    // lets it skip those that do not hold the key.
    cf_opts.set_memtable_whole_key_filtering(true);
    cf_opts.set_memtable_prefix_bloom_ratio(0.1);

    // Flushes and compactions run at a lower CPU priority than request handling: they
    // can wait a few milliseconds, clients should not.
    let mut env = Env::new().map_err(engine_err)?;
    env.lower_thread_pool_cpu_priority();
    env.lower_high_priority_thread_pool_cpu_priority();

    let mut db_opts = cf_opts.clone();
    db_opts.set_env(&env);
    db_opts.create_if_missing(true);
    db_opts.create_missing_column_families(true);
    db_opts.increase_parallelism(2);
    // Deleting obsolete files after a flush happens on a background thread, not on
    // whichever request thread drops the last reference to them (latency spikes).
    db_opts.set_avoid_unnecessary_blocking_io(true);
    // Reuse write-ahead log files instead of creating one per memtable switch, which
    // the switching write waits for.
    db_opts.set_recycle_log_file_num(4);
    // A write-ahead log file can only go once every column family has flushed what it
    // holds; the small ones (meta, hints, tombstones) rarely fill a memtable, so without
    // a cap their few entries would pin every log file written since (seen: 100+ MB of
    // logs behind 1M keys). Past this size the stale families are flushed.
    db_opts.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);
    db_opts.set_max_background_jobs(2);

    let cfs = Space::ALL
        .iter()
        .map(|s| ColumnFamilyDescriptor::new(s.name(), cf_opts.clone()));
    DB::open_cf_descriptors(&db_opts, path, cfs).map_err(|e| {
        let msg = e.into_string();
        if msg.contains("lock") || msg.contains("LOCK") {
            StorageError::Locked(msg)
        } else if is_no_space(&msg) {
            StorageError::NoSpace(msg)
        } else {
            StorageError::Engine(msg)
        }
    })
}

fn cf(db: &DB, space: Space) -> &rocksdb::ColumnFamily {
    db.cf_handle(space.name())
        .expect("every space's column family is created at open")
}

impl RocksStore {
    /// Opens (or creates) the database at `path`; `reserve_bytes` of the disk are kept
    /// free (0: none).
    pub fn open(path: &Path, sync_writes: bool, reserve_bytes: u64) -> Result<RocksStore, StorageError> {
        let db = open_db(path)?;
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(sync_writes);
        let mut synced_opts = WriteOptions::default();
        synced_opts.set_sync(true);
        Ok(RocksStore {
            path: path.to_path_buf(),
            db: RwLock::new(Some(Arc::new(db))),
            write_opts,
            synced_opts,
            reserve: reserve_bytes,
            space: Mutex::new(SpaceState::default()),
            failing: AtomicBool::new(false),
        })
    }

    /// The open database; after a failed reopen, another try.
    fn db(&self) -> Result<Arc<DB>, StorageError> {
        if let Some(db) = self.db.read().as_ref() {
            return Ok(db.clone());
        }
        let mut slot = self.db.write();
        if let Some(db) = slot.as_ref() {
            return Ok(db.clone());
        }
        let db = Arc::new(open_db(&self.path)?);
        info!(path = %self.path.display(), "storage reopened");
        *slot = Some(db.clone());
        Ok(db)
    }

    /// The free space, read again if the last reading is older than [`SPACE_CHECK`].
    fn free(&self, state: &mut SpaceState, now: Instant) -> u64 {
        match state.read {
            Some((at, free)) if now.duration_since(at) < SPACE_CHECK => free,
            _ => {
                // Unreadable: assume room, and let the engine say otherwise.
                let free = free_bytes(&self.path).unwrap_or(u64::MAX);
                state.read = Some((now, free));
                free
            }
        }
    }

    fn write_with(&self, ops: Vec<Op>, opts: &WriteOptions) -> Result<(), StorageError> {
        if self.reserve > 0 {
            let mut state = self.space.lock();
            let free = self.free(&mut state, Instant::now());
            if refuse(&ops, free, self.reserve) {
                return Err(StorageError::NoSpace(format!(
                    "{free} bytes free on the data directory's disk, below the reserve of {} bytes \
                     (--min-free-mb); writes resume once space is freed",
                    self.reserve
                )));
            }
        }
        let db = self.db()?;
        let mut batch = WriteBatch::default();
        for op in ops {
            match op {
                Op::Put(s, k, v) => batch.put_cf(cf(&db, s), k, v),
                Op::Delete(s, k) => batch.delete_cf(cf(&db, s), k),
            }
        }
        let result = db.write_opt(batch, opts).map_err(engine_err);
        drop(db);
        self.after_write(&result);
        result
    }

    /// Keeps track of writes failing for lack of space, and reopens a stuck engine.
    fn after_write(&self, result: &Result<(), StorageError>) {
        let no_space = matches!(result, Err(StorageError::NoSpace(_)));
        if !no_space && !self.failing.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        let mut state = self.space.lock();
        if !no_space {
            if state.failing_since.take().is_some() {
                self.failing.store(false, Ordering::Release);
                info!("storage writes work again");
            }
            state.back_since = None;
            return;
        }
        let failing_since = *state.failing_since.get_or_insert_with(|| {
            self.failing.store(true, Ordering::Release);
            warn!("the disk is full: writes fail until space is freed; reads go on");
            now
        });
        let free = self.free(&mut state, now);
        if free >= self.reserve.max(1) {
            state.back_since.get_or_insert(now);
        } else {
            state.back_since = None;
        }
        let recent = state.reopened.is_some_and(|at| now.duration_since(at) < STUCK_AFTER);
        if recent || !stuck(failing_since, state.back_since, now) {
            return;
        }
        state.reopened = Some(now);
        drop(state);
        warn!("writes still fail for lack of space although space was freed: reopening the storage engine");
        if let Err(e) = self.reopen() {
            error!(error = %e, "reopening the storage engine failed; will try again");
        }
    }

    /// Closes the database and opens it again (RocksDB does not resume from every
    /// out-of-space error by itself).
    fn reopen(&self) -> Result<(), StorageError> {
        let mut slot = self.db.write();
        // Calls in progress hold the old handle for one read, write or scan chunk.
        let deadline = Instant::now() + Duration::from_secs(5);
        while slot.as_ref().is_some_and(|db| Arc::strong_count(db) > 1) {
            if Instant::now() >= deadline {
                return Err(StorageError::Engine(
                    "the storage engine stayed in use; not reopened".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // The old database must be closed first: it holds the directory's lock.
        *slot = None;
        let db = open_db(&self.path)?;
        *slot = Some(Arc::new(db));
        info!(path = %self.path.display(), "storage engine reopened");
        Ok(())
    }
}

/// A scan that reads the engine a chunk at a time.
struct Chunked<'a> {
    store: &'a RocksStore,
    space: Space,
    /// Where the next chunk starts (inclusive); `None`: the scan is over.
    from: Option<Vec<u8>>,
    to: Option<Vec<u8>>,
    buffered: VecDeque<Result<KeyValue, StorageError>>,
}

impl Chunked<'_> {
    fn fill(&mut self) {
        let Some(from) = self.from.take() else { return };
        let db = match self.store.db() {
            Ok(db) => db,
            Err(e) => {
                self.buffered.push_back(Err(e));
                return;
            }
        };
        let mut opts = ReadOptions::default();
        if let Some(to) = &self.to {
            opts.set_iterate_upper_bound(to.clone());
        }
        // Long scans (anti-entropy rebuilds) should not evict the hot set.
        opts.fill_cache(false);
        let iter = db.iterator_cf_opt(cf(&db, self.space), opts, IteratorMode::From(&from, Direction::Forward));
        let (mut count, mut bytes) = (0, 0);
        for item in iter {
            match item {
                Ok((k, v)) => {
                    count += 1;
                    bytes += k.len() + v.len();
                    if count >= SCAN_CHUNK || bytes >= SCAN_CHUNK_BYTES {
                        // The smallest key after this one.
                        let mut next = k.to_vec();
                        next.push(0);
                        self.from = Some(next);
                        self.buffered.push_back(Ok((k.into_vec(), v.into_vec())));
                        return;
                    }
                    self.buffered.push_back(Ok((k.into_vec(), v.into_vec())));
                }
                Err(e) => {
                    self.buffered.push_back(Err(engine_err(e)));
                    return;
                }
            }
        }
    }
}

impl Iterator for Chunked<'_> {
    type Item = Result<KeyValue, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buffered.is_empty() {
            self.fill();
        }
        self.buffered.pop_front()
    }
}

/// RocksDB properties exported as metrics: (property, metric name, help).
const PROPERTIES: [(&str, &str, &str); 10] = [
    (
        "rocksdb.cur-size-all-mem-tables",
        "memtable_bytes",
        "Bytes in active and unflushed immutable memtables",
    ),
    (
        "rocksdb.num-immutable-mem-table",
        "immutable_memtables",
        "Memtables waiting to be flushed",
    ),
    (
        "rocksdb.estimate-pending-compaction-bytes",
        "pending_compaction_bytes",
        "Bytes compaction must rewrite to bring every level under its target size",
    ),
    (
        "rocksdb.num-running-compactions",
        "running_compactions",
        "Compactions running now",
    ),
    (
        "rocksdb.num-running-flushes",
        "running_flushes",
        "Memtable flushes running now",
    ),
    (
        "rocksdb.actual-delayed-write-rate",
        "delayed_write_rate_bytes_per_second",
        "Write rate RocksDB throttles writes to (bytes/s); 0 when writes are not slowed down",
    ),
    (
        "rocksdb.is-write-stopped",
        "write_stopped",
        "1 while RocksDB stops writes (too many memtables or level-0 files)",
    ),
    ("rocksdb.total-sst-files-size", "sst_bytes", "Bytes of all SST files"),
    (
        "rocksdb.estimate-num-keys",
        "estimated_keys",
        "Estimated keys stored (all column families)",
    ),
    (
        "rocksdb.block-cache-usage",
        "block_cache_bytes",
        "Bytes in the block cache",
    ),
];

impl Store for RocksStore {
    fn engine_figures(&self) -> Vec<super::EngineFigure> {
        let Ok(db) = self.db() else { return Vec::new() };
        PROPERTIES
            .iter()
            .map(|(property, name, help)| {
                // DB-wide figures read the same through every family: not summed.
                let db_wide = matches!(
                    *property,
                    "rocksdb.actual-delayed-write-rate"
                        | "rocksdb.is-write-stopped"
                        | "rocksdb.block-cache-usage"
                        | "rocksdb.num-running-compactions"
                        | "rocksdb.num-running-flushes"
                );
                let values = Space::ALL
                    .iter()
                    .filter_map(|s| db.property_int_value_cf(cf(&db, *s), *property).ok().flatten());
                let value = if db_wide {
                    values.max().unwrap_or(0)
                } else {
                    values.sum()
                };
                super::EngineFigure { name, help, value }
            })
            .collect()
    }

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let db = self.db()?;
        db.get_cf(cf(&db, space), key).map_err(engine_err)
    }

    fn write(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        self.write_with(ops, &self.write_opts)
    }

    fn write_synced(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        self.write_with(ops, &self.synced_opts)
    }

    /// fsyncs the write-ahead log: every batch written before is durable.
    fn sync(&self) -> Result<(), StorageError> {
        self.db()?.flush_wal(true).map_err(engine_err)
    }

    fn scan<'a>(&'a self, space: Space, from: &[u8], to: Option<&[u8]>) -> Scan<'a> {
        Box::new(Chunked {
            store: self,
            space,
            from: Some(from.to_vec()),
            to: to.map(<[u8]>::to_vec),
            buffered: VecDeque::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(space: Space) -> Op {
        Op::Put(space, b"k".to_vec(), b"v".to_vec())
    }

    #[test]
    fn the_reserve_refuses_data_but_not_deletes_or_the_nodes_own_records() {
        let del = Op::Delete(Space::Data, b"k".to_vec());
        // (ops, free, reserve, refused)
        let cases: Vec<(Vec<Op>, u64, u64, bool)> = vec![
            (vec![put(Space::Data)], 10, 100, true),
            (vec![put(Space::Hints)], 10, 100, true),
            (vec![put(Space::Tombstones), put(Space::Data)], 10, 100, true),
            (vec![put(Space::Data)], 100, 100, false),
            (vec![put(Space::Data)], 0, 0, false),
            (vec![del.clone()], 0, 100, false),
            (vec![put(Space::Meta)], 0, 100, false),
            (vec![put(Space::Meta), del], 0, 100, false),
        ];
        for (ops, free, reserve, refused) in cases {
            assert_eq!(
                refuse(&ops, free, reserve),
                refused,
                "{ops:?} with {free} free of {reserve}"
            );
        }
    }

    #[test]
    fn an_engine_is_stuck_once_space_has_been_back_for_a_while() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(
            !stuck(t0, None, at(100)),
            "no space back: RocksDB cannot resume, nor can a reopen"
        );
        assert!(!stuck(t0, Some(at(1)), at(1) + STUCK_AFTER - Duration::from_millis(1)));
        assert!(stuck(t0, Some(at(1)), at(1) + STUCK_AFTER));
        // Space back before the failures started counts from the failures.
        assert!(!stuck(
            at(10),
            Some(at(0)),
            at(10) + STUCK_AFTER - Duration::from_millis(1)
        ));
    }

    #[test]
    fn scans_cross_chunk_boundaries_without_losing_or_repeating_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path(), false, 0).unwrap();
        let keys: Vec<Vec<u8>> = (0..(SCAN_CHUNK * 2 + 7) as u32)
            .map(|i| i.to_be_bytes().to_vec())
            .collect();
        store
            .write(keys.iter().map(|k| Op::Put(Space::Data, k.clone(), vec![1])).collect())
            .unwrap();
        let got: Vec<Vec<u8>> = store.scan(Space::Data, &[], None).map(|kv| kv.unwrap().0).collect();
        assert_eq!(got, keys);
        let upper = (SCAN_CHUNK as u32 + 3).to_be_bytes();
        let got = store.scan(Space::Data, &3u32.to_be_bytes(), Some(&upper)).count();
        assert_eq!(got, SCAN_CHUNK);
    }
}
