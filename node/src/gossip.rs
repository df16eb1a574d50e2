//! Drives the membership state machine: a timer, and push-pull exchanges over HTTP.

use std::sync::Arc;
use std::time::Duration;

use dynakv_http_api::wire::GossipRequest;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tracing::{debug, warn};

use crate::coordinator::{Node, log_events};
use crate::rpc::RpcError;

/// Ticks every `interval` until `shutdown` flips, gossiping with the targets each tick
/// names. Exchanges run concurrently so one slow peer never delays the heartbeat.
pub async fn run(node: Arc<Node>, interval: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut rng = StdRng::from_os_rng();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        let tick = node.cluster().tick(&mut rng);
        log_events(&tick.events);
        for addr in tick.targets {
            let node = node.clone();
            tokio::spawn(async move { exchange(&node, &addr).await });
        }
    }
}

async fn exchange(node: &Node, addr: &str) {
    let req = GossipRequest {
        cluster: node.cluster().id().clone(),
        entries: node.cluster().gossip_table(),
    };
    match node.rpc().gossip(addr, &req, node.settings().request_timeout).await {
        Ok(resp) => log_events(&node.cluster().merge(&resp.entries)),
        Err(RpcError::Remote { error, .. }) if error.code() == "cluster_mismatch" => {
            warn!(peer = addr, %error, "peer belongs to another cluster; check --cluster-name, --n, --conflict, --partition-bits")
        }
        Err(e) => debug!(peer = addr, error = %e, "gossip exchange failed"),
    }
}
