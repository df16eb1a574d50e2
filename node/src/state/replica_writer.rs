//! Replica writes off the async workers, committed in groups.
//!
//! A RocksDB write blocks the thread that makes it, now and then for tens of
//! milliseconds (a memtable switch while a flush runs, a write slowdown). On an async
//! worker that stalls every task queued behind it: reads, answers to other nodes,
//! gossip. [`ReplicaWriter::thread`] runs the merges on a thread of their own instead: the
//! async side awaits a completion, and the writes that arrive while one is being
//! committed go to storage together, as one batch and one write-ahead-log append
//! (group commit).
//!
//! [`ReplicaWriter::inline`] merges on the calling thread: the simulator uses it, so that a
//! simulated history does not depend on when a real thread gets to run, and so does a
//! node unless `--commit-thread` is set (on a 2-core machine the hand-off cost more CPU
//! per request than the isolation saved; see docs/benchmarks/2026-11-26-to-12-04-tail-targets.md).
//!
//! The paths that go through it: merges sent by other nodes (one at a time or batched),
//! a hint addressed to this node, and a last-writer-wins coordinator's own copy. A
//! multi-value coordinator's own write (a read-modify-write that mints a dot) and the
//! background services write directly.

use std::sync::Arc;
use std::sync::mpsc;

use dynakv_crdt::Register;
use tokio::sync::oneshot;
use tracing::warn;

use crate::env::storage::StorageError;
use crate::state::replica::ReplicaStore;

/// Most keys merged in one group (the replica store splits it into lock-sized chunks).
const MAX_GROUP_KEYS: usize = 512;

struct Job {
    items: Vec<(String, Register)>,
    done: oneshot::Sender<Result<(), StorageError>>,
}

pub struct ReplicaWriter(Mode);

enum Mode {
    Inline(Arc<ReplicaStore>),
    /// `None` only while being dropped.
    Thread(Option<mpsc::Sender<Job>>, Option<std::thread::JoinHandle<()>>),
}

impl ReplicaWriter {
    /// Merges on the calling thread.
    pub fn inline(replicas: Arc<ReplicaStore>) -> ReplicaWriter {
        ReplicaWriter(Mode::Inline(replicas))
    }

    /// A commit thread for `replicas`; it ends when the replica_writer is dropped.
    pub fn thread(replicas: Arc<ReplicaStore>) -> std::io::Result<ReplicaWriter> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("dynakv-commit".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut keys = first.items.len();
                    let mut jobs = vec![first];
                    while keys < MAX_GROUP_KEYS {
                        let Ok(job) = rx.try_recv() else { break };
                        keys += job.items.len();
                        jobs.push(job);
                    }
                    commit(&replicas, jobs);
                }
            })?;
        Ok(ReplicaWriter(Mode::Thread(Some(tx), Some(thread))))
    }

    /// Merges `items` into this node's replica (as [`ReplicaStore::merge_many`]).
    pub async fn merge_many(&self, items: Vec<(String, Register)>) -> Result<(), StorageError> {
        match &self.0 {
            Mode::Inline(replicas) => replicas.merge_many(items),
            Mode::Thread(tx, _) => {
                let (done, answer) = oneshot::channel();
                tx.as_ref()
                    .expect("set until dropped")
                    .send(Job { items, done })
                    .map_err(|_| StorageError::Engine("the commit thread has stopped".into()))?;
                answer
                    .await
                    .unwrap_or_else(|_| Err(StorageError::Engine("the commit thread has stopped".into())))
            }
        }
    }

    /// Merges one key's state (inline: the replica's single-key path, which takes one
    /// lock stripe and skips the batch bookkeeping of [`ReplicaStore::merge_many`]).
    pub async fn merge(&self, key: &str, register: Register) -> Result<(), StorageError> {
        match &self.0 {
            Mode::Inline(replicas) => replicas.merge(key, &register).map(|_| ()),
            Mode::Thread(..) => self.merge_many(vec![(key.to_string(), register)]).await,
        }
    }
}

impl Drop for ReplicaWriter {
    /// Waits for the commit thread to finish what it was given and let go of the
    /// replica: the storage engine must be closed before the process exits (RocksDB
    /// aborts when its background threads outlive the process's static state).
    fn drop(&mut self) {
        if let Mode::Thread(tx, thread) = &mut self.0 {
            drop(tx.take());
            if let Some(thread) = thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// Commits `jobs` as one write. If that fails, each job is retried on its own, so that
/// one job's failure (a corrupt stored record, say) is reported to it alone.
fn commit(replicas: &ReplicaStore, mut jobs: Vec<Job>) {
    if jobs.len() == 1 {
        let job = jobs.pop().expect("one job");
        let _ = job.done.send(replicas.merge_many(job.items));
        return;
    }
    let items: Vec<(String, Register)> = jobs.iter().flat_map(|j| j.items.iter().cloned()).collect();
    match replicas.merge_many(items) {
        Ok(()) => {
            for job in jobs {
                let _ = job.done.send(Ok(()));
            }
        }
        Err(e) => {
            warn!(error = %e, jobs = jobs.len(), "a group commit failed; committing its writes one by one");
            for job in jobs {
                let _ = job.done.send(replicas.merge_many(job.items));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::clock::ManualClock;
    use crate::env::storage::{MemoryStore, Space, Store};
    use crate::state::replica::storage_key;
    use crate::state::testing::mv;

    fn replicas() -> (Arc<dyn Store>, Arc<ReplicaStore>) {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let r = ReplicaStore::open(store.clone(), 4, Arc::new(ManualClock::new(1_000))).unwrap();
        (store, Arc::new(r))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn thread_commits_every_merge_from_many_tasks() {
        let (_, r) = replicas();
        let c = Arc::new(ReplicaWriter::thread(r.clone()).unwrap());
        let mut tasks = Vec::new();
        for i in 0..200u64 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                c.merge(&format!("k{}", i % 50), mv(i, &format!("v{i}"))).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        // Four writers per key, all concurrent: every one of them is a sibling.
        for k in 0..50 {
            assert_eq!(r.get(&format!("k{k}")).unwrap().unwrap().values().len(), 4, "k{k}");
        }
        // The Merkle trees followed every write: the same as one built from the data.
        let (_, fresh) = replicas();
        for k in 0..50 {
            let key = format!("k{k}");
            fresh.merge(&key, &r.get(&key).unwrap().unwrap()).unwrap();
        }
        for p in 0..r.forest().partition_count() {
            assert_eq!(r.forest().root(p), fresh.forest().root(p), "partition {p}");
        }
    }

    #[test]
    fn a_failing_group_is_retried_job_by_job() {
        let (store, r) = replicas();
        // A corrupt stored record for "bad": merging into it fails.
        store.put(Space::Data, &storage_key("bad"), b"not a register").unwrap();
        let mut answers = Vec::new();
        let mut jobs = Vec::new();
        for key in ["a", "bad", "b"] {
            let (done, answer) = oneshot::channel();
            jobs.push(Job {
                items: vec![(key.to_string(), mv(1, key))],
                done,
            });
            answers.push(answer);
        }
        commit(&r, jobs);
        let results: Vec<bool> = answers.into_iter().map(|mut a| a.try_recv().unwrap().is_ok()).collect();
        assert_eq!(results, [true, false, true]);
        assert!(r.get("a").unwrap().is_some() && r.get("b").unwrap().is_some());
    }

    #[tokio::test]
    async fn dropping_the_committer_lets_go_of_the_replica() {
        let (_, r) = replicas();
        let c = ReplicaWriter::thread(r.clone()).unwrap();
        c.merge("k", mv(1, "x")).await.unwrap();
        assert_eq!(Arc::strong_count(&r), 2);
        drop(c);
        // The thread has ended and dropped its handle: the store can close now.
        assert_eq!(Arc::strong_count(&r), 1);
    }

    #[tokio::test]
    async fn inline_merges_on_the_caller() {
        let (_, r) = replicas();
        let c = ReplicaWriter::inline(r.clone());
        c.merge("k", mv(1, "x")).await.unwrap();
        c.merge_many(vec![("k".into(), mv(2, "y")), ("j".into(), mv(2, "z"))])
            .await
            .unwrap();
        assert_eq!(r.get("k").unwrap().unwrap().values().len(), 2);
        assert!(r.get("j").unwrap().is_some());
    }
}
