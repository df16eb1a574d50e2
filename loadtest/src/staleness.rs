//! How stale eventually consistent reads really are: the "probabilistically bounded
//! staleness" of Bailis et al., measured rather than modelled.
//!
//! Each experiment writes an *old* value to a fresh key with `w=N` (every replica holds
//! it), then a *new* value with the `w` under test, and once that write is acknowledged
//! waits a delay and reads the key through a *different* node with the `r` under test. The
//! read is stale if it does not return the new value (neither as the value nor among
//! siblings). Every (delay, trial) pair is its own key, so the read repair of one read
//! cannot help another.

use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::target::{Client, Kind, TargetConfig};

#[derive(Clone, Debug)]
pub struct Config {
    pub nodes: Vec<String>,
    pub n: usize,
    pub r: usize,
    pub w: usize,
    pub trials: usize,
    pub delays_ms: Vec<u64>,
    /// Experiments in flight at once.
    pub parallel: usize,
    pub timeout: Duration,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Row {
    pub delay_ms: u64,
    pub reads: u64,
    pub stale: u64,
    /// Experiments that could not be completed (a write or the read failed).
    pub errors: u64,
    pub stale_fraction: f64,
}

/// One experiment: `true` if the read was stale, `None` if something failed.
async fn experiment(cfg: &Config, run: u64, trial: usize, delay: u64) -> Option<bool> {
    let writer = trial % cfg.nodes.len();
    let reader = (trial + 1) % cfg.nodes.len();
    let key = format!("pbs-{run:x}-{trial}-{delay}");
    let target = |r: usize, w: usize| TargetConfig {
        kind: Kind::Dynakv,
        nodes: cfg.nodes.clone(),
        r: Some(r),
        w: Some(w),
        timeout: cfg.timeout,
        tls: None,
        token: None,
    };
    let mut settle = Client::connect(&target(cfg.n, cfg.n)).await.ok()?;
    let old = settle.write(writer, &key, "old".into(), None).await;
    if old.error.is_some() {
        return None;
    }
    let mut measured = Client::connect(&target(cfg.r, cfg.w)).await.ok()?;
    let new = measured.write(writer, &key, "new".into(), old.context.as_deref()).await;
    if new.error.is_some() {
        return None;
    }
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let read = measured.read(reader, &key).await;
    if read.error.is_some() {
        return None;
    }
    Some(!read.values.iter().any(|v| v.as_ref() == b"new"))
}

pub async fn measure(cfg: Config) -> Vec<Row> {
    let run: u64 = rand::random();
    let mut plan: Vec<(usize, u64)> = (0..cfg.trials)
        .flat_map(|t| cfg.delays_ms.iter().map(move |&d| (t, d)))
        .collect();
    plan.shuffle(&mut rand::rng());
    let slots = Arc::new(Semaphore::new(cfg.parallel.max(1)));
    let cfg = Arc::new(cfg);
    let mut tasks = Vec::new();
    for (trial, delay) in plan {
        let (cfg, slots) = (cfg.clone(), slots.clone());
        tasks.push(tokio::spawn(async move {
            let _slot = slots.acquire_owned().await.expect("semaphore never closed");
            (delay, experiment(&cfg, run, trial, delay).await)
        }));
    }
    let mut rows: Vec<Row> = cfg
        .delays_ms
        .iter()
        .map(|&d| Row {
            delay_ms: d,
            ..Default::default()
        })
        .collect();
    for t in tasks {
        let Ok((delay, result)) = t.await else { continue };
        let row = rows.iter_mut().find(|r| r.delay_ms == delay).expect("planned delay");
        match result {
            Some(stale) => {
                row.reads += 1;
                row.stale += u64::from(stale);
            }
            None => row.errors += 1,
        }
    }
    for row in &mut rows {
        row.stale_fraction = if row.reads == 0 {
            0.0
        } else {
            row.stale as f64 / row.reads as f64
        };
    }
    rows
}
