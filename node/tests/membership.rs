//! Elastic membership over real processes, in the style of Riak's `verify_build_cluster`:
//! keys written to three nodes stay readable, and end up exactly on their replicas,
//! through a join of two nodes, their leave, a replace, and the removal of a killed node
//! together with the join of a new one.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use common::TestCluster;
use serde_json::{Value, json};

const KEYS: usize = 1000;
const SETTLE: Duration = Duration::from_secs(90);

fn key(i: usize) -> String {
    format!("member-key-{i:04}")
}

fn value(i: usize) -> Vec<u8> {
    format!("value-{i}").into_bytes()
}

async fn post(c: &TestCluster, i: usize, path: &str, body: Value) -> common::Resp {
    c.raw(
        reqwest::Method::POST,
        i,
        path,
        serde_json::to_vec(&body).unwrap(),
        &[("content-type", "application/json")],
    )
    .await
}

/// Stages `changes` on node `at` and commits them as the next version.
async fn change(c: &TestCluster, at: usize, changes: &[Value]) {
    for ch in changes {
        let r = post(c, at, "/admin/layout/stage", ch.clone()).await;
        assert_eq!(r.status, 200, "staging {ch}: {}", r.text());
    }
    let version = c.layout(at).await.unwrap().version;
    let r = post(c, at, "/admin/layout/commit", json!({ "version": version + 1 })).await;
    assert_eq!(r.status, 200, "commit: {}", r.text());
}

/// Every key reads back through every running node with R=2, is held by each of its
/// replicas under the settled layout, and by no other running node.
async fn check(c: &TestCluster, running: &[usize], step: &str) {
    for i in 0..KEYS {
        let k = key(i);
        for &at in running {
            let r = c.get(at, &k, "?r=2").await;
            assert_eq!(r.status, 200, "{step}: {k} through {}: {}", c.id(at), r.text());
            assert_eq!(r.body, value(i), "{step}: {k} through {}", c.id(at));
        }
        let replicas = c.preflist(&k).await;
        assert_eq!(replicas.len(), 3, "{step}: {k} has replicas {replicas:?}");
        for &at in running {
            let owner = replicas.iter().any(|id| id == c.id(at));
            // A settled node drops what it no longer replicates in its next round.
            let right = c
                .eventually(Duration::from_secs(10), || async {
                    (c.replica(at, &k).await.status == 200) == owner
                })
                .await;
            assert!(
                right,
                "{step}: {k}: {} {} a copy; its replicas are {replicas:?}",
                c.id(at),
                if owner { "lacks" } else { "still holds" }
            );
        }
    }
}

/// Kills node `i` and waits until n1 sees it dead.
async fn kill_until_dead(c: &mut TestCluster, i: usize) {
    c.kill9(i);
    let dead = c
        .eventually(Duration::from_secs(20), || async {
            c.status(0, i).await.as_deref() == Some("dead")
        })
        .await;
    assert!(dead, "{} was not seen dead", c.id(i));
}

fn ids(c: &TestCluster, idx: &[usize]) -> Vec<String> {
    idx.iter().map(|&i| c.id(i).to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_survive_join_leave_replace_and_remove() {
    let mut c = TestCluster::start(3, &["--conflict", "lww"]).await;
    for i in 0..KEYS {
        let r = c.put(i % 3, &key(i), &value(i), "?w=2", None).await;
        assert_eq!(r.status, 204, "{}", r.text());
    }

    // Join two nodes (auto-join): 3 -> 5.
    let n4 = c.add_node(&[]).await;
    let n5 = c.add_node(&[]).await;
    c.wait_layout(&ids(&c, &[0, 1, 2, n4, n5]), SETTLE).await;
    check(&c, &[0, 1, 2, n4, n5], "after the join of n4 and n5").await;

    // Both leave: 5 -> 3; they keep running, owning (and holding) nothing.
    change(&c, 0, &[json!({"leave": c.id(n4)}), json!({"leave": c.id(n5)})]).await;
    c.wait_layout(&ids(&c, &[0, 1, 2]), SETTLE).await;
    check(&c, &[0, 1, 2, n4, n5], "after n4 and n5 left").await;

    // n6 replaces n3.
    let n6 = c.add_node(&["--auto-join", "false"]).await;
    c.wait_all_see_all_alive().await;
    change(&c, 1, &[json!({"replace": {"old": c.id(2), "new": c.id(n6)}})]).await;
    c.wait_layout(&ids(&c, &[0, 1, n6]), SETTLE).await;
    check(&c, &[0, 1, 2, n4, n5, n6], "after n6 replaced n3").await;

    // n2 is killed; it is removed and n7 joins in the same change (removing it alone
    // would leave fewer than N = 3 owners, which is refused).
    let n7 = c.add_node(&["--auto-join", "false"]).await;
    c.wait_all_see_all_alive().await;
    kill_until_dead(&mut c, 1).await;
    post(&c, 0, "/admin/layout/stage", json!({"remove": c.id(1)}))
        .await
        .assert_error(400, "too_few_owners");
    change(&c, 0, &[json!({"join": c.id(n7)}), json!({"remove": c.id(1)})]).await;
    c.wait_layout(&ids(&c, &[0, n6, n7]), SETTLE).await;
    check(&c, &[0, 2, n4, n5, n6, n7], "after n2 was removed and n7 joined").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_layout_changes_get_json_errors_and_change_nothing() {
    let c = TestCluster::start(3, &[]).await;
    let before = c.layout(0).await.unwrap();
    let v = before.version;
    let refused = [
        ("stage", json!({"join": "nobody"}), 400, "unknown_node"),
        ("stage", json!({"leave": "n1"}), 400, "too_few_owners"),
        ("stage", json!({"remove": "n2"}), 409, "node_alive"),
        ("stage", json!({"dance": "n2"}), 400, "bad_change"),
        ("stage", json!({"join": "n1"}), 400, "already_owner"),
        ("commit", json!({"version": v}), 409, "layout_conflict"),
        ("commit", json!({"version": v + 1}), 400, "nothing_staged"),
        ("commit", json!({"v": 1}), 400, "bad_parameter"),
    ];
    for (op, body, status, code) in refused {
        post(&c, 0, &format!("/admin/layout/{op}"), body)
            .await
            .assert_error(status, code);
    }
    let after = c.layout(0).await.unwrap();
    assert_eq!(after.version, before.version);
    assert_eq!(after.members, before.members);
    assert!(after.staged.is_empty());
}

/// What the clients under load saw in one step of the sequence.
#[derive(Debug, Default, Clone)]
struct Tally {
    writes: u64,
    write_errors: u64,
    reads: u64,
    read_errors: u64,
    /// Reads that returned less than a value acknowledged before they started.
    stale: u64,
}

struct Load {
    /// Base URLs the clients may use (the test driver keeps it to running nodes).
    targets: Arc<Mutex<Vec<String>>>,
    /// Per key, the highest value acknowledged.
    acked: Arc<Mutex<BTreeMap<String, u64>>>,
    tally: Arc<Mutex<Tally>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Keys the writer keeps updating.
const LOAD_KEYS: usize = 20;
/// Keys written once before the changes and only read after: a node that gains their
/// partition holds them only if the transfer brought them.
const COLD_KEYS: usize = 300;

/// The largest counter among a read's values (siblings included) and its context;
/// `Ok(None)` when the key does not exist yet.
async fn read_counter(http: &reqwest::Client, base: &str, key: &str) -> Result<Option<(u64, String)>, ()> {
    let r = http
        .get(format!("{base}/kv/{key}?r=2"))
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .map_err(|_| ())?;
    let status = r.status().as_u16();
    let ctx = r
        .headers()
        .get("x-dynakv-context")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = r.bytes().await.map_err(|_| ())?;
    match status {
        200 => {
            let v = std::str::from_utf8(&body).ok().and_then(|s| s.parse().ok()).ok_or(())?;
            Ok(Some((v, ctx.ok_or(())?)))
        }
        300 => {
            let j: Value = serde_json::from_slice(&body).map_err(|_| ())?;
            let max = j["siblings"]
                .as_array()
                .ok_or(())?
                .iter()
                .filter_map(|s| {
                    let raw = base64::engine::general_purpose::STANDARD.decode(s.as_str()?).ok()?;
                    String::from_utf8(raw).ok()?.parse::<u64>().ok()
                })
                .max()
                .ok_or(())?;
            Ok(Some((max, j["context"].as_str().ok_or(())?.to_string())))
        }
        404 => Ok(None),
        _ => Err(()),
    }
}

impl Load {
    /// One writer (read-modify-write of counters, with the read's context, W=2) and two
    /// readers (R=2, checking each read against what was acknowledged before it began).
    async fn start(c: &TestCluster, targets: Vec<String>) -> Load {
        let mut cold = BTreeMap::new();
        for i in 0..COLD_KEYS {
            let key = format!("cold-{i}");
            let r = c.put(i % 3, &key, b"1", "?w=2", None).await;
            assert_eq!(r.status, 204, "{}", r.text());
            cold.insert(key, 1);
        }
        let targets = Arc::new(Mutex::new(targets));
        let acked = Arc::new(Mutex::new(cold));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        let pick = |targets: &Arc<Mutex<Vec<String>>>, n: usize| {
            let t = targets.lock().unwrap();
            t[n % t.len()].clone()
        };
        let handles = || {
            (
                c.http.clone(),
                targets.clone(),
                acked.clone(),
                tally.clone(),
                stop.clone(),
            )
        };
        {
            let (http, targets, acked, tally, stop) = handles();
            tasks.push(tokio::spawn(async move {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let key = n % LOAD_KEYS;
                    let base = pick(&targets, n);
                    let name = format!("load-{key}");
                    let ok = match read_counter(&http, &base, &name).await {
                        Err(()) => false,
                        Ok(found) => {
                            let (v, ctx) = found.map_or((0, None), |(v, c)| (v, Some(c)));
                            let mut req = http
                                .put(format!("{base}/kv/{name}?w=2"))
                                .timeout(Duration::from_secs(3))
                                .body((v + 1).to_string());
                            if let Some(c) = ctx {
                                req = req.header("x-dynakv-context", c);
                            }
                            match req.send().await {
                                Ok(r) if r.status().as_u16() == 204 => {
                                    let mut a = acked.lock().unwrap();
                                    let e = a.entry(name).or_insert(0);
                                    *e = (*e).max(v + 1);
                                    true
                                }
                                _ => false,
                            }
                        }
                    };
                    let mut t = tally.lock().unwrap();
                    t.writes += 1;
                    t.write_errors += u64::from(!ok);
                }
            }));
        }
        for reader in 0..2 {
            let (http, targets, acked, tally, stop) = handles();
            tasks.push(tokio::spawn(async move {
                let mut n = reader * 7;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let name = if n % 2 == 0 {
                        format!("load-{}", (n * 3) % LOAD_KEYS)
                    } else {
                        format!("cold-{}", (n * 7) % COLD_KEYS)
                    };
                    let base = pick(&targets, n);
                    let floor = acked.lock().unwrap().get(&name).copied().unwrap_or(0);
                    let got = read_counter(&http, &base, &name).await;
                    let mut t = tally.lock().unwrap();
                    t.reads += 1;
                    match got {
                        Err(()) => t.read_errors += 1,
                        Ok(found) => {
                            if found.map_or(0, |(v, _)| v) < floor {
                                t.stale += 1;
                            }
                        }
                    }
                }
            }));
        }
        Load {
            targets,
            acked,
            tally,
            stop,
            tasks,
        }
    }

    /// The tally since the last call.
    fn take(&self) -> Tally {
        std::mem::take(&mut *self.tally.lock().unwrap())
    }

    fn set_targets(&self, c: &TestCluster, nodes: &[usize]) {
        *self.targets.lock().unwrap() = nodes.iter().map(|&i| c.url(i, "")).collect();
    }

    async fn stop(self) -> BTreeMap<String, u64> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        self.acked.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_under_load_lose_no_acknowledged_write_and_reads_see_them() {
    let mut c = TestCluster::start(3, &[]).await;
    let load = Load::start(&c, (0..3).map(|i| c.url(i, "")).collect()).await;
    let mut report = Vec::new();
    tokio::time::sleep(Duration::from_secs(1)).await;
    report.push(("before any change", load.take()));

    let n4 = c.add_node(&[]).await;
    let n5 = c.add_node(&[]).await;
    c.wait_layout(&ids(&c, &[0, 1, 2, n4, n5]), SETTLE).await;
    load.set_targets(&c, &[0, 1, 2, n4, n5]);
    report.push(("join n4, n5", load.take()));

    change(&c, 0, &[json!({"leave": c.id(n4)}), json!({"leave": c.id(n5)})]).await;
    c.wait_layout(&ids(&c, &[0, 1, 2]), SETTLE).await;
    report.push(("leave n4, n5", load.take()));

    let n6 = c.add_node(&["--auto-join", "false"]).await;
    c.wait_all_see_all_alive().await;
    change(&c, 1, &[json!({"replace": {"old": c.id(2), "new": c.id(n6)}})]).await;
    c.wait_layout(&ids(&c, &[0, 1, n6]), SETTLE).await;
    report.push(("replace n3 by n6", load.take()));

    let n7 = c.add_node(&["--auto-join", "false"]).await;
    c.wait_all_see_all_alive().await;
    load.set_targets(&c, &[0, n6, n7]);
    kill_until_dead(&mut c, 1).await;
    change(&c, 0, &[json!({"join": c.id(n7)}), json!({"remove": c.id(1)})]).await;
    c.wait_layout(&ids(&c, &[0, n6, n7]), SETTLE).await;
    report.push(("kill n2; remove it and join n7", load.take()));

    let acked = load.stop().await;
    for (step, t) in &report {
        println!(
            "{step}: {} read-modify-writes ({} failed, {:.1}%), {} reads ({} failed, {:.1}%), {} stale",
            t.writes,
            t.write_errors,
            100.0 * t.write_errors as f64 / t.writes.max(1) as f64,
            t.reads,
            t.read_errors,
            100.0 * t.read_errors as f64 / t.reads.max(1) as f64,
            t.stale
        );
    }
    let total: Tally = report.iter().fold(Tally::default(), |mut a, (_, t)| {
        a.writes += t.writes;
        a.reads += t.reads;
        a.stale += t.stale;
        a
    });
    assert!(total.writes > 100 && total.reads > 100, "too little load: {total:?}");
    assert_eq!(total.stale, 0, "reads missed acknowledged writes: {report:?}");
    let http = c.http.clone();
    for (key, want) in acked {
        for at in [0, n6, n7] {
            let got = read_counter(&http, &c.url(at, ""), &key).await;
            let have = got.ok().flatten().map_or(0, |(v, _)| v);
            assert!(
                have >= want,
                "{key}: {have} through {}, {want} was acknowledged",
                c.id(at)
            );
        }
    }
}
