//! The peer handler: this node's answers to other nodes, one method per verb, whatever
//! carried the request (the cluster port's replica stream or pooled connections, or the
//! simulator's network).

use std::sync::Arc;

use dynakv_antientropy::CompareResponse;
use dynakv_antientropy::merkle::Hash;
use dynakv_crdt::{Context, Register};
use dynakv_http_api::ApiError;

use crate::env::storage::StorageError;
use crate::local::Local;
use crate::roles::coordinator::Coordinator;
use crate::roles::edge::storage_error;
use crate::roles::namespace::check_item;
use crate::roles::services;
use crate::state::cluster::Serving;
use crate::state::replica::{PageError, PartitionPage, ReplicaStore};
use crate::state::transfer;
use crate::transport::Handler;
use crate::transport::message::{self, Answer, Request, WireError};

pub struct PeerHandler {
    local: Arc<Local>,
    /// For writes forwarded here by nodes that are not replicas of their key.
    coordinator: Arc<Coordinator>,
    /// For the figures `Stats` answers.
    services: services::Services,
}

impl PeerHandler {
    pub fn new(local: Arc<Local>, coordinator: Arc<Coordinator>, services: services::Services) -> PeerHandler {
        PeerHandler {
            local,
            coordinator,
            services,
        }
    }

    fn get(&self, req: message::Get) -> Result<Option<Register>, ApiError> {
        let key = check_item(&req.key)?;
        let serving = if req.fallback {
            Serving::Fallback
        } else {
            Serving::Replica
        };
        self.local.cluster.check_serves(key, serving, req.layout)?;
        let replicas = &self.local.replicas;
        // A fallback answers with the hints it holds for the key's replicas; only a
        // node holding hints needs to know who those are.
        let owners = if replicas.has_hints() {
            self.local.cluster.plan(key).primary_ids()
        } else {
            Vec::new()
        };
        replicas.get_with_hints(key, &owners).map_err(storage_error)
    }

    async fn merge(&self, req: message::Merge) -> Result<(), ApiError> {
        let key = check_item(&req.key)?;
        self.local.cluster.check_serves(key, Serving::Replica, req.layout)?;
        self.saw_layout(req.layout)?;
        self.local.observe(&req.register);
        self.local.commits.merge(key, req.register).await.map_err(storage_error)
    }

    async fn merge_hint(&self, req: message::MergeHint) -> Result<(), ApiError> {
        let key = check_item(&req.key)?;
        let serving = if req.owner == *self.local.id() {
            Serving::Replica
        } else {
            Serving::Fallback
        };
        self.local.cluster.check_serves(key, serving, req.layout)?;
        self.saw_layout(req.layout)?;
        self.local.observe(&req.register);
        if req.owner == *self.local.id() {
            // Never hold a hint for ourselves: it is simply a write.
            self.local
                .commits
                .merge(key, req.register)
                .await
                .map_err(storage_error)?;
        } else {
            self.local
                .replicas
                .store_hint(&req.owner, key, &req.register)
                .map_err(storage_error)?;
        }
        Ok(())
    }

    /// Checks every key and observes every timestamp before storing any. The batch is
    /// synced before it is answered: its sender may then delete its own copy (a hint
    /// handed over), and a crash of this machine must not lose what it took over.
    fn merge_batch(&self, req: message::MergeBatch) -> Result<(), ApiError> {
        for (key, register) in &req.items {
            check_item(key)?;
            self.local.cluster.check_serves(key, Serving::Replica, req.layout)?;
            self.local.observe(register);
        }
        self.saw_layout(req.layout)?;
        let replicas = &self.local.replicas;
        replicas.merge_many(req.items).map_err(storage_error)?;
        replicas.store().sync().map_err(storage_error)
    }

    /// A write placed under layout `version` is about to be stored here: until we know
    /// that layout we drop no partition (we may be its replica there).
    fn saw_layout(&self, version: u64) -> Result<(), ApiError> {
        self.local.cluster.saw_layout(version).map_err(storage_error)
    }

    /// `read` of each of `keys`, in order; the first bad key or failure fails them all.
    fn each_key<T>(
        &self,
        keys: Vec<String>,
        read: impl Fn(&ReplicaStore, &str) -> Result<T, StorageError>,
    ) -> Result<Vec<T>, ApiError> {
        keys.into_iter()
            .map(|key| read(&self.local.replicas, check_item(&key)?).map_err(storage_error))
            .collect()
    }

    fn get_batch(&self, req: message::GetBatch) -> Result<Vec<Option<Register>>, ApiError> {
        self.each_key(req.keys, ReplicaStore::get)
    }

    fn digests(&self, req: message::Digests) -> Result<Vec<Option<Hash>>, ApiError> {
        self.each_key(req.keys, ReplicaStore::digest)
    }

    fn compare(&self, req: message::Compare) -> CompareResponse {
        services::antientropy::answer(&self.local, &req.from, &req.compare)
    }

    async fn coordinate(&self, req: message::Coordinate) -> Result<Context, ApiError> {
        check_item(&req.key)?;
        self.local
            .cluster
            .check_serves(&req.key, Serving::Replica, req.layout)?;
        self.saw_layout(req.layout)?;
        self.coordinator.coordinate_forwarded(req).await
    }

    fn gossip(&self, req: message::Gossip) -> Result<message::GossipReply, ApiError> {
        Ok(services::gossip::answer(&self.local, req)?)
    }

    /// One page of a partition, at most [`transfer::MAX_PAGE_BYTES`] whatever is asked.
    fn fetch_partition(&self, req: message::FetchPartition) -> Result<PartitionPage, ApiError> {
        let max = (req.max_bytes as usize).clamp(1, transfer::MAX_PAGE_BYTES);
        self.local
            .replicas
            .partition_page(req.partition, req.after.as_deref(), max)
            .map_err(|e| match e {
                PageError::Storage(e) => storage_error(e),
                bad => ApiError::BadRequest(bad.to_string()),
            })
    }
}

/// The answers, with the node's errors as the HTTP edge names them; [`Handler`] puts
/// them on the wire.
impl PeerHandler {
    async fn answer(&self, req: Request) -> Result<Answer, ApiError> {
        Ok(match req {
            Request::Get(r) => Answer::Get(self.get(r)?),
            Request::Merge(r) => Answer::Merge(self.merge(r).await?),
            Request::MergeHint(r) => Answer::MergeHint(self.merge_hint(r).await?),
            Request::Coordinate(r) => Answer::Coordinate(self.coordinate(r).await?),
            Request::MergeBatch(r) => Answer::MergeBatch(self.merge_batch(r)?),
            Request::GetBatch(r) => Answer::GetBatch(self.get_batch(r)?),
            Request::Digests(r) => Answer::Digests(self.digests(r)?),
            Request::Compare(r) => Answer::Compare(self.compare(r)),
            Request::Gossip(r) => Answer::Gossip(self.gossip(r)?),
            Request::PromiseLayout(r) => Answer::PromiseLayout(services::layout::promise(&self.local, r)?),
            Request::FetchPartition(r) => Answer::FetchPartition(self.fetch_partition(r)?),
            Request::Stats(_) => Answer::Stats(Box::new(self.services.stats.get(&self.local, &self.services))),
        })
    }

    /// The merges among `reqs` go to storage as one write (one write-ahead-log append);
    /// the rest are handled one by one, in order.
    async fn answer_batch(&self, reqs: Vec<Request>) -> Vec<Result<Answer, ApiError>> {
        let mut answers: Vec<Option<Result<Answer, ApiError>>> = Vec::with_capacity(reqs.len());
        let mut merges = Vec::new();
        let mut merge_slots = Vec::new();
        let mut layout = 0;
        for req in reqs {
            match req {
                Request::Merge(m) => match check_item(&m.key).and_then(|key| {
                    self.local
                        .cluster
                        .check_serves(key, Serving::Replica, m.layout)
                        .map_err(ApiError::from)
                }) {
                    Ok(()) => {
                        layout = layout.max(m.layout);
                        self.local.observe(&m.register);
                        merges.push((m.key, m.register));
                        merge_slots.push(answers.len());
                        answers.push(None);
                    }
                    Err(e) => answers.push(Some(Err(e))),
                },
                other => answers.push(Some(self.answer(other).await)),
            }
        }
        if !merges.is_empty() {
            let merged = async {
                self.saw_layout(layout)?;
                self.local.commits.merge_many(merges).await.map_err(storage_error)
            }
            .await
            .map(Answer::Merge);
            for slot in merge_slots {
                answers[slot] = Some(merged.clone());
            }
        }
        answers
            .into_iter()
            .map(|a| a.expect("every request answered"))
            .collect()
    }
}

impl Handler for PeerHandler {
    async fn handle(&self, req: Request) -> Result<Answer, WireError> {
        self.answer(req).await.map_err(|e| WireError::from(&e))
    }

    async fn handle_batch(&self, reqs: Vec<Request>) -> Vec<Result<Answer, WireError>> {
        self.answer_batch(reqs)
            .await
            .into_iter()
            .map(|a| a.map_err(|e| WireError::from(&e)))
            .collect()
    }
}
