//! Nodes served inside the test process by `server::run` (the harness's in-process
//! mode: the same flags, ports bound before the node starts, and helpers as for
//! processes): they replicate, stop cleanly, and serve the cluster port only to peers
//! that prove the secret.

mod common;

use std::time::Duration;

use common::{SECRET, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_served_in_the_test_process_replicate_and_stop_cleanly() {
    let mut c = TestCluster::start_in_process(3, &[]).await;
    assert_eq!(c.put(0, "greeting", b"hello", "", None).await.status, 204);
    let got = c.get(2, "greeting", "").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, b"hello");
    for i in 0..3 {
        let stopped = c.stop(i).expect("the node was running");
        assert!(stopped.success(), "node {i}: {stopped:?}");
        assert!(!c.is_running(i));
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
        std::sync::Arc::new(dynakv_node::env::metrics::Metrics::new(true)),
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

    let mut c = TestCluster::start_in_process(1, &["--n", "1", "--r", "1", "--w", "1", "--partition-bits", "4"]).await;
    let (addr, cluster_addr) = (c.nodes[0].addr.clone(), c.nodes[0].cluster_addr.clone());
    let secret = SECRET;
    let http = c.http.clone();
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
    assert!(c.stop(0).expect("running").success(), "the node stops cleanly");
}
