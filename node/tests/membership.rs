//! Elastic membership over real processes, in the style of Riak's `verify_build_cluster`:
//! keys written to three nodes stay readable, and end up exactly on their replicas,
//! through a join of two nodes, their leave, a replace, and the removal of a killed node
//! together with the join of a new one.

mod common;

use std::time::Duration;

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
    let version = c.layout(at).await.unwrap()["version"].as_u64().unwrap();
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
    c.kill9(1);
    let dead = c
        .eventually(Duration::from_secs(20), || async {
            c.status(0, 1).await.as_deref() == Some("dead")
        })
        .await;
    assert!(dead, "n2 was not seen dead");
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
    post(&c, 0, "/admin/layout/stage", json!({"join": "nobody"}))
        .await
        .assert_error(400, "unknown_node");
    post(&c, 0, "/admin/layout/stage", json!({"leave": "n1"}))
        .await
        .assert_error(400, "too_few_owners");
    post(&c, 0, "/admin/layout/stage", json!({"remove": "n2"}))
        .await
        .assert_error(409, "node_alive");
    post(&c, 0, "/admin/layout/stage", json!({"dance": "n2"}))
        .await
        .assert_error(400, "bad_change");
    post(&c, 0, "/admin/layout/stage", json!({"join": "n1"}))
        .await
        .assert_error(400, "already_owner");
    let v = before["version"].as_u64().unwrap();
    post(&c, 0, "/admin/layout/commit", json!({"version": v}))
        .await
        .assert_error(409, "layout_conflict");
    post(&c, 0, "/admin/layout/commit", json!({"version": v + 1}))
        .await
        .assert_error(400, "nothing_staged");
    post(&c, 0, "/admin/layout/commit", json!({"v": 1}))
        .await
        .assert_error(400, "bad_parameter");
    let after = c.layout(0).await.unwrap();
    assert_eq!(after["version"], before["version"]);
    assert_eq!(after["members"], before["members"]);
    assert_eq!(after["staged"], json!([]));
}
