//! RocksDB engine: one database per node, one column family per [`Space`], WAL on.

use std::path::Path;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, DBCompressionType, Direction, Env, IteratorMode, Options,
    ReadOptions, WriteBatch, WriteOptions,
};

use super::{Op, Scan, Space, StorageError, Store};

/// Shared block cache for all column families.
const BLOCK_CACHE_BYTES: usize = 128 << 20;
/// Memtable size per column family.
const WRITE_BUFFER_BYTES: usize = 16 << 20;
/// Write-ahead log kept before column families holding old entries are flushed.
const MAX_TOTAL_WAL_BYTES: u64 = 64 << 20;

pub struct RocksStore {
    db: DB,
    /// `sync = false`: a write is in the WAL (the OS page cache) before it is
    /// acknowledged, which survives a crash of the process (`kill -9`) but not of the
    /// machine. `sync = true` fsyncs the WAL on every write batch.
    write_opts: WriteOptions,
}

fn engine_err(e: rocksdb::Error) -> StorageError {
    StorageError::Engine(e.into_string())
}

impl RocksStore {
    pub fn open(path: &Path, sync_writes: bool) -> Result<RocksStore, StorageError> {
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
        let db = DB::open_cf_descriptors(&db_opts, path, cfs).map_err(|e| {
            let msg = e.into_string();
            if msg.contains("lock") || msg.contains("LOCK") {
                StorageError::Locked(msg)
            } else {
                StorageError::Engine(msg)
            }
        })?;
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(sync_writes);
        Ok(RocksStore { db, write_opts })
    }

    fn cf(&self, space: Space) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(space.name())
            .expect("every space's column family is created at open")
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
                    .filter_map(|s| self.db.property_int_value_cf(self.cf(*s), *property).ok().flatten());
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
        self.db.get_cf(self.cf(space), key).map_err(engine_err)
    }

    fn write(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        for op in ops {
            match op {
                Op::Put(s, k, v) => batch.put_cf(self.cf(s), k, v),
                Op::Delete(s, k) => batch.delete_cf(self.cf(s), k),
            }
        }
        self.db.write_opt(batch, &self.write_opts).map_err(engine_err)
    }

    fn scan<'a>(&'a self, space: Space, from: &[u8], to: Option<&[u8]>) -> Scan<'a> {
        let mut opts = ReadOptions::default();
        if let Some(to) = to {
            opts.set_iterate_upper_bound(to.to_vec());
        }
        // Long scans (anti-entropy rebuilds) should not evict the hot set.
        opts.fill_cache(false);
        let iter = self
            .db
            .iterator_cf_opt(self.cf(space), opts, IteratorMode::From(from, Direction::Forward));
        Box::new(iter.map(|r| r.map(|(k, v)| (k.into_vec(), v.into_vec())).map_err(engine_err)))
    }
}
