//! Byte-level storage behind a small trait, with a RocksDB engine and an in-memory twin.
//!
//! Keys live in named *spaces* (RocksDB column families). Writes are atomic batches;
//! scans walk a key range in byte order. [`suite`] runs one conformance suite against
//! every engine.

mod memory;
pub mod meta;
mod rocks;
#[cfg(test)]
mod suite;

pub use memory::MemoryStore;
pub use rocks::RocksStore;

/// A separate key space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Space {
    /// Replicated objects, keyed by ring position then user key.
    Data,
    /// Node identity and bookkeeping.
    Meta,
    /// Writes held for a replica that was down (hinted handoff), keyed by owner then key.
    Hints,
    /// Keys whose stored version is a tombstone, with when this node first stored it.
    Tombstones,
}

impl Space {
    pub const ALL: [Space; 4] = [Space::Data, Space::Meta, Space::Hints, Space::Tombstones];

    pub fn name(self) -> &'static str {
        match self {
            Space::Data => "data",
            Space::Meta => "meta",
            Space::Hints => "hints",
            Space::Tombstones => "tombstones",
        }
    }
}

/// One change in an atomic batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put(Space, Vec<u8>, Vec<u8>),
    Delete(Space, Vec<u8>),
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("the data directory is in use by another process: {0}")]
    Locked(String),
    #[error("storage engine error: {0}")]
    Engine(String),
    /// The disk is full: writes fail until space is freed (reads still work).
    #[error("no space left for writes: {0}")]
    NoSpace(String),
    #[error("stored record for {what} is corrupt: {detail}")]
    Corrupt { what: String, detail: String },
}

pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Entries of a scan, in key order.
pub type Scan<'a> = Box<dyn Iterator<Item = Result<KeyValue, StorageError>> + 'a>;

/// A storage engine. Implementations must be safe to call from many threads at once.
///
/// Durability: a returned `Ok` from [`Store::write`] means the batch survives a crash of
/// the process; it survives a crash of the machine (power loss, kernel panic) only once
/// synced, by [`Store::write_synced`] or [`Store::sync`] (or always, on an engine opened
/// to sync every write). Batches become durable in the order they were written: a
/// machine crash loses a suffix of the unsynced ones, never one from the middle.
pub trait Store: Send + Sync + 'static {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Applies all ops atomically, in order.
    fn write(&self, ops: Vec<Op>) -> Result<(), StorageError>;

    /// Makes every batch written so far survive a machine crash.
    fn sync(&self) -> Result<(), StorageError>;

    /// [`Store::write`], then durable against a machine crash (with every batch written
    /// before it).
    fn write_synced(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        self.write(ops)?;
        self.sync()
    }

    /// Entries with `from <= key < to` (or to the end when `to` is `None`), in key order.
    fn scan<'a>(&'a self, space: Space, from: &[u8], to: Option<&[u8]>) -> Scan<'a>;

    fn put(&self, space: Space, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.write(vec![Op::Put(space, key.to_vec(), value.to_vec())])
    }

    fn delete(&self, space: Space, key: &[u8]) -> Result<(), StorageError> {
        self.write(vec![Op::Delete(space, key.to_vec())])
    }

    /// The engine's own figures worth watching (name, value), for `/metrics`.
    fn engine_figures(&self) -> Vec<EngineFigure> {
        Vec::new()
    }
}

/// One figure of the storage engine, summed over its column families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineFigure {
    /// The metric's name after `dynakv_rocksdb_`.
    pub name: &'static str,
    pub help: &'static str,
    pub value: u64,
}
