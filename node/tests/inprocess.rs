//! Nodes served inside the test process by `server::run`, each on listeners the test
//! bound itself to port 0: the ports are known before the node starts, with no window in
//! which another process could take them.

use std::time::Duration;

use dynakv_node::config::{Config, NodeArgs};
use dynakv_node::server::{self, Listeners};
use tokio::sync::watch;

async fn listeners() -> Listeners {
    let local = "127.0.0.1:0".parse().unwrap();
    Listeners {
        client: server::listen(local).unwrap(),
        cluster: server::listen(local).unwrap(),
    }
}

fn addrs_of(l: &Listeners) -> (String, String) {
    (
        l.client.local_addr().unwrap().to_string(),
        l.cluster.local_addr().unwrap().to_string(),
    )
}

fn secret_file(dir: &std::path::Path, secret: &str) -> String {
    let path = dir.join(format!("secret-{secret}"));
    std::fs::write(&path, secret).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_served_on_bound_listeners_replicate_and_stop_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut all = Vec::new();
    for _ in 0..3 {
        all.push(listeners().await);
    }
    let (addrs, cluster_addrs): (Vec<String>, Vec<String>) = all.iter().map(addrs_of).unzip();
    let secret = secret_file(dir.path(), "in-process-secret-0123456789");
    let (stop, stopped) = watch::channel(false);
    let mut nodes = Vec::new();
    for (i, listener) in all.into_iter().enumerate() {
        let config = Config::load(NodeArgs {
            id: Some(format!("n{}", i + 1)),
            listen: Some(addrs[i].clone()),
            cluster_listen: Some(cluster_addrs[i].clone()),
            cluster_secret_file: Some(secret.clone().into()),
            data_dir: Some(dir.path().join(format!("n{}", i + 1))),
            seeds: Some(cluster_addrs.join(",")),
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

/// A peer of the cluster named `dynakv` as this test process: `secret` `None` for one
/// without a secret.
fn peer(secret: Option<&str>, id: &str) -> dynakv_node::transport::Peers {
    use dynakv_node::transport::handshake::{Key, Policy};
    use dynakv_node::transport::port::{Dialer, Identity};
    let policy = match secret {
        Some(s) => Policy::Strict(Key::from_secret(s.as_bytes())),
        None => Policy::Insecure,
    };
    let dialer = Dialer::new(Identity {
        cluster: "dynakv".into(),
        id: id.into(),
        policy,
        tls: None,
        max_frame: 1 << 20,
    });
    dynakv_node::transport::Peers::new(
        std::sync::Arc::new(dynakv_node::transport::net::NetTransport::new(dialer)),
        std::sync::Arc::new(dynakv_node::metrics::Metrics::new(true)),
    )
}

/// A served node pages out a whole partition over its cluster port to a peer that proves
/// the secret: every key it holds in the partition once, in storage order, across small
/// pages; bad requests are refused with a clear error. A peer without the secret, or
/// with another one, gets nothing, and bytes that are no handshake at all leave the
/// node serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_pages_out_a_partition_only_to_a_peer_with_the_secret() {
    use dynakv_node::transport::RpcError;
    use dynakv_node::transport::message::FetchPartition;
    use dynakv_ring::hash::key_position;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let listener = listeners().await;
    let (addr, cluster_addr) = addrs_of(&listener);
    let secret = "solo-secret-0123456789";
    let config = Config::load(NodeArgs {
        id: Some("solo".into()),
        listen: Some(addr.clone()),
        cluster_listen: Some(cluster_addr.clone()),
        cluster_secret_file: Some(secret_file(dir.path(), secret).into()),
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
    let t = Duration::from_secs(5);
    let with_secret = peer(Some(secret), "tester");
    let fetch = |req: FetchPartition| with_secret.call(&cluster_addr, req, t);
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
        let page = fetch(FetchPartition {
            partition,
            after: after.clone(),
            max_bytes: 64,
        })
        .await
        .unwrap();
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
        match fetch(bad).await {
            Err(RpcError::Remote { error, .. }) => assert_eq!(error.code(), "bad_request", "{error}"),
            other => panic!("{other:?}"),
        }
    }
    // Without the secret, with another one, or with garbage instead of a handshake: no
    // answer, and the node goes on serving.
    let whole = FetchPartition {
        partition,
        after: None,
        max_bytes: 1 << 20,
    };
    for (who, intruder) in [
        ("no secret", peer(None, "intruder")),
        ("another secret", peer(Some("not-the-secret-0123456789"), "intruder")),
    ] {
        match intruder.call(&cluster_addr, whole.clone(), t).await {
            Err(RpcError::Connect { detail, .. }) => assert!(
                detail.contains("refused") || detail.contains("proof"),
                "{who}: {detail}"
            ),
            other => panic!("{who}: {other:?}"),
        }
    }
    for garbage in [
        &b"GET /kv/key-1 HTTP/1.1\r\n\r\n"[..],
        &[0xffu8; 64][..],
        &u32::MAX.to_be_bytes()[..],
    ] {
        let mut tcp = tokio::net::TcpStream::connect(&cluster_addr).await.unwrap();
        tcp.write_all(garbage).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(t, tcp.read_to_end(&mut answer)).await;
        assert!(
            !answer.windows(7).any(|w| w == b"value 1"),
            "garbage got data back: {answer:?}"
        );
    }
    let page = fetch(whole).await.unwrap();
    assert_eq!(page.items.len(), want.len(), "still serving peers with the secret");
    let refused = http
        .get(format!("http://{addr}/admin/antientropy"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let refused: serde_json::Value = serde_json::from_slice(&refused).unwrap();
    let r = &refused["cluster_port"]["refused"];
    assert!(
        r["no_secret"].as_u64() >= Some(1) && r["bad_proof"].as_u64() >= Some(1),
        "{refused}"
    );
    // The client port no longer serves node-to-node routes.
    for path in ["/internal/replica", "/internal/gossip", "/internal/stream"] {
        let resp = http.post(format!("http://{addr}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
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
