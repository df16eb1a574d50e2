//! Background services: work a node does on its own, in rounds.
//!
//! - [`gossip`]: membership and failure detection (push-pull exchanges of the member
//!   table).
//! - [`antientropy`]: Merkle-tree exchanges with each co-replica, repairing what differs.
//! - [`handoff`]: delivering hints to replicas that are back.
//! - [`tombstones`]: collecting tombstones once no replica can need them.
//! - [`layout`]: joining, and moving partitions through layout changes.
//!
//! Each is a [`Service`]: a name, a pause between rounds and a round; it keeps its own
//! counters. [`run`] drives them all the same way: a round after each pause (gossip also
//! at start), until shutdown (a round in progress is dropped at shutdown).

pub mod antientropy;
pub mod gossip;
pub mod handoff;
pub mod layout;
pub mod stats;
pub mod tombstones;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{oneshot, watch};

use crate::local::Local;

/// A node's background services.
#[derive(Clone)]
pub struct Services {
    pub gossip: Arc<gossip::Gossip>,
    pub antientropy: Arc<antientropy::AntiEntropy>,
    pub handoff: Arc<handoff::Handoff>,
    pub tombstones: Arc<tombstones::Tombstones>,
    pub layout: Arc<layout::LayoutService>,
    /// The node's live figures, shared by `/admin/overview` and the `Stats` verb.
    pub stats: Arc<stats::StatsCache>,
}

impl Services {
    pub fn all(&self) -> Vec<Arc<dyn Service>> {
        vec![
            self.gossip.clone(),
            self.antientropy.clone(),
            self.handoff.clone(),
            self.tombstones.clone(),
            self.layout.clone(),
        ]
    }
}

pub trait Service: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// The pause before each round; `None` when the service is turned off.
    fn interval(&self) -> Option<Duration>;
    /// Whether the first round runs at start rather than after the first pause.
    fn starts_at_once(&self) -> bool {
        false
    }
    /// One round; it may start tasks of its own (it holds itself in an `Arc`).
    fn round(self: Arc<Self>) -> BoxFuture<'static, ()>;
}

/// Runs every service until `shutdown` flips (or its sender is dropped); returns once
/// they have all stopped.
pub async fn run(local: &Local, services: Vec<Arc<dyn Service>>, shutdown: watch::Receiver<bool>) {
    let mut stopped = Vec::new();
    for svc in services {
        let (done, wait) = oneshot::channel::<()>();
        let shutdown = shutdown.clone();
        local.spawn(async move {
            drive(svc, shutdown).await;
            let _ = done.send(());
        });
        stopped.push(wait);
    }
    for wait in stopped {
        let _ = wait.await;
    }
}

async fn drive(svc: Arc<dyn Service>, mut shutdown: watch::Receiver<bool>) {
    let Some(interval) = svc.interval() else {
        tracing::debug!(service = svc.name(), "turned off");
        return;
    };
    let mut pause = !svc.starts_at_once();
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if pause {
            tokio::select! {
                biased;
                changed = shutdown.changed() => if changed.is_err() { return } else { continue },
                () = tokio::time::sleep(interval) => {}
            }
        }
        pause = true;
        tokio::select! {
            biased;
            changed = shutdown.changed() => if changed.is_err() { return } else { continue },
            () = svc.clone().round() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    struct Counter {
        rounds: AtomicU32,
        interval: Option<Duration>,
        at_once: bool,
    }

    impl Service for Counter {
        fn name(&self) -> &'static str {
            "counter"
        }
        fn interval(&self) -> Option<Duration> {
            self.interval
        }
        fn starts_at_once(&self) -> bool {
            self.at_once
        }
        fn round(self: Arc<Self>) -> BoxFuture<'static, ()> {
            Box::pin(async move {
                self.rounds.fetch_add(1, Ordering::Relaxed);
                // A round that takes a while: shutdown must not wait for it.
                tokio::time::sleep(Duration::from_millis(30)).await;
            })
        }
    }

    fn counter(interval: Option<u64>, at_once: bool) -> Arc<Counter> {
        Arc::new(Counter {
            rounds: AtomicU32::new(0),
            interval: interval.map(Duration::from_millis),
            at_once,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_round_after_each_pause_or_also_at_start_until_shutdown() {
        let (at_once, later, off) = (counter(Some(100), true), counter(Some(100), false), counter(None, true));
        let (stop, shutdown) = watch::channel(false);
        let mut tasks = Vec::new();
        for svc in [at_once.clone(), later.clone(), off.clone()] {
            tasks.push(tokio::spawn(drive(svc, shutdown.clone())));
        }
        // At once: rounds start at 0, 130, 260, 390 ms (30 ms each, then a 100 ms pause);
        // after a pause first: at 100, 230, 360 ms.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(at_once.rounds.load(Ordering::Relaxed), 4);
        assert_eq!(later.rounds.load(Ordering::Relaxed), 3);
        stop.send(true).unwrap();
        for t in tasks {
            tokio::time::timeout(Duration::from_millis(1), t)
                .await
                .unwrap()
                .unwrap();
        }
        assert_eq!(
            off.rounds.load(Ordering::Relaxed),
            0,
            "a service without interval never runs"
        );
    }
}
