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
