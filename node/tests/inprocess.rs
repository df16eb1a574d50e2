//! Nodes served inside the test process by `server::run`, each on a listener the test
//! bound itself to port 0: the port is known before the node starts, with no window in
//! which another process could take it.

use std::time::Duration;

use dynakv_node::config::{Config, NodeArgs};
use dynakv_node::server;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_served_on_bound_listeners_replicate_and_stop_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addrs: Vec<String> = listeners.iter().map(|l| l.local_addr().unwrap().to_string()).collect();
    let (stop, stopped) = watch::channel(false);
    let mut nodes = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let config = Config::load(NodeArgs {
            id: Some(format!("n{}", i + 1)),
            listen: Some(addrs[i].clone()),
            data_dir: Some(dir.path().join(format!("n{}", i + 1))),
            seeds: Some(addrs.join(",")),
            gossip_interval_ms: Some("100".into()),
            request_timeout_ms: Some("1000".into()),
            ..Default::default()
        })
        .unwrap();
        let mut stopped = stopped.clone();
        nodes.push(tokio::spawn(server::run(config, listener, async move {
            let _ = stopped.wait_for(|s| *s).await;
        })));
    }
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let all_alive = async {
        loop {
            let mut alive = 0;
            for a in &addrs {
                if let Ok(r) = http.get(format!("http://{a}/cluster/members")).send().await
                    && let Ok(body) = r.bytes().await
                    && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
                {
                    alive += v["members"]
                        .as_array()
                        .map_or(0, |m| m.iter().filter(|m| m["status"] == "alive").count());
                }
            }
            if alive == 9 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), all_alive)
        .await
        .expect("every node sees every node alive");
    wait_layout(&http, &addrs).await;
    let put = http
        .put(format!("http://{}/kv/greeting", addrs[0]))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204);
    let got = http
        .get(format!("http://{}/kv/greeting", addrs[2]))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.text().await.unwrap(), "hello");
    stop.send(true).unwrap();
    for node in nodes {
        tokio::time::timeout(Duration::from_secs(15), node)
            .await
            .expect("the node stops")
            .unwrap()
            .expect("the node ran without error");
    }
}

/// A served node pages out a whole partition over its internal route: every key it holds
/// in the partition once, in storage order, across small pages; bad requests are refused
/// with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_pages_out_a_partition_over_its_internal_route() {
    use dynakv_node::transport::message::{self, Answer, FetchPartition, Request};
    use dynakv_ring::hash::key_position;

    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config = Config::load(NodeArgs {
        id: Some("solo".into()),
        listen: Some(addr.clone()),
        data_dir: Some(dir.path().join("solo")),
        n: Some("1".into()),
        r: Some("1".into()),
        w: Some("1".into()),
        partition_bits: Some("4".into()),
        ..Default::default()
    })
    .unwrap();
    let (stop, mut stopped) = watch::channel(false);
    let node = tokio::spawn(server::run(config, listener, async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    wait_layout(&http, std::slice::from_ref(&addr)).await;
    let mut written = Vec::new();
    for i in 0..400 {
        let key = format!("key-{i}");
        let put = http
            .put(format!("http://{addr}/kv/{key}"))
            .body(format!("value {i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 204);
        written.push(key);
    }
    let fetch = |req: FetchPartition| {
        let (http, addr) = (http.clone(), addr.clone());
        async move {
            let resp = http
                .post(format!("http://{addr}/internal/replica"))
                .header("content-type", message::CONTENT_TYPE)
                .body(message::encode(&Request::FetchPartition(req)))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.bytes().await.unwrap())
        }
    };
    let partition = 9u32;
    let mut want: Vec<(u64, String)> = written
        .iter()
        .map(|k| (key_position(k.as_bytes()), k.clone()))
        .filter(|(pos, _)| (pos >> 60) as u32 == partition)
        .collect();
    want.sort();
    let want: Vec<String> = want.into_iter().map(|(_, k)| k).collect();
    assert!(want.len() > 5, "the partition holds a few keys");
    let (mut got, mut after, mut pages) = (Vec::new(), None, 0);
    loop {
        let (status, body) = fetch(FetchPartition {
            partition,
            after: after.clone(),
            max_bytes: 64,
        })
        .await;
        assert_eq!(status, 200);
        let Answer::FetchPartition(page) = message::decode::<Answer>(&body).unwrap() else {
            panic!("another answer")
        };
        pages += 1;
        got.extend(page.items.into_iter().map(|(k, _)| k));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(got, want);
    assert!(pages > 2, "64-byte pages: {pages}");
    // A partition that does not exist, and a cursor from another partition.
    for bad in [
        FetchPartition {
            partition: 16,
            after: None,
            max_bytes: 64,
        },
        FetchPartition {
            partition: 3,
            after: Some(vec![0xff; 9]),
            max_bytes: 64,
        },
    ] {
        let (status, body) = fetch(bad).await;
        assert_eq!(status, 400);
        let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(err["error"], "bad_request", "{err}");
    }
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(15), node)
        .await
        .expect("the node stops")
        .unwrap()
        .expect("the node ran without error");
}

/// Waits until every node at `addrs` has all of them in a settled layout (they join on
/// their own).
async fn wait_layout(http: &reqwest::Client, addrs: &[String]) {
    let formed = async {
        loop {
            let mut ready = 0;
            for a in addrs {
                if let Ok(r) = http.get(format!("http://{a}/admin/layout")).send().await
                    && let Ok(body) = r.bytes().await
                    && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
                    && v["settled"] == true
                    && v["members"].as_array().is_some_and(|m| m.len() == addrs.len())
                {
                    ready += 1;
                }
            }
            if ready == addrs.len() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), formed)
        .await
        .expect("the nodes form a settled layout");
}
