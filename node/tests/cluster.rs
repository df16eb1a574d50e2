//! Quorum reads and writes against real `dynakv node` processes on loopback: replication,
//! deletes, quorum failures, siblings and contexts, the sibling cap, stalled requests,
//! last-writer-wins, bad input, crashes and restarts, failure detection, and how many
//! replicas a read asks.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::TestCluster;
use reqwest::Method;

fn siblings(resp: &common::Resp) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = resp.json()["siblings"]
        .as_array()
        .expect("siblings array")
        .iter()
        .map(|s| STANDARD.decode(s.as_str().unwrap()).unwrap())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_through_one_node_is_read_through_every_other() {
    let c = TestCluster::start(3, &[]).await;
    let put = c.put(0, "greeting", b"hello", "", None).await;
    assert_eq!(put.status, 204, "{}", put.text());
    assert!(put.context().is_some());
    for i in 0..3 {
        let got = c.get(i, "greeting", "").await;
        assert_eq!(got.status, 200, "node {i}: {}", got.text());
        assert_eq!(got.body, b"hello");
        assert!(got.context().is_some());
    }
    // Keys with reserved characters travel percent-encoded.
    let key = "a%2Fb%20c%3F%C3%A9";
    assert_eq!(c.put(1, key, b"odd", "", None).await.status, 204);
    assert_eq!(c.get(2, key, "").await.body, b"odd");
    let pl = c
        .http
        .get(c.url(0, &format!("/cluster/preflist/{key}")))
        .send()
        .await
        .unwrap();
    let pl: serde_json::Value = serde_json::from_slice(&pl.bytes().await.unwrap()).unwrap();
    assert_eq!(pl["key"], "a/b c?é");
    assert_eq!(pl["nodes"].as_array().unwrap().len(), 3);
    // With N = 3 on 3 nodes every node holds a copy once the write settles.
    assert!(
        c.eventually(Duration::from_secs(5), || async {
            let mut all = true;
            for i in 0..3 {
                all &= c.replica(i, "greeting").await.status == 200;
            }
            all
        })
        .await
    );
    let rep = c.replica(1, "greeting").await.json();
    assert_eq!(rep["values"][0], STANDARD.encode("hello"));
    assert_eq!(rep["tombstone"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_writes_a_tombstone_and_later_reads_miss() {
    let c = TestCluster::start(3, &[]).await;
    assert_eq!(c.put(0, "doomed", b"x", "", None).await.status, 204);
    let del = c.delete(1, "doomed", "", None).await;
    assert_eq!(del.status, 204, "{}", del.text());
    for i in 0..3 {
        let got = c.get(i, "doomed", "").await;
        got.assert_error(404, "not_found");
        assert!(got.context().is_some(), "a tombstone's 404 carries its context");
    }
    let rep = c.replica(0, "doomed").await.json();
    assert_eq!(rep["tombstone"], true);
    assert_eq!(rep["values"].as_array().unwrap().len(), 0);
    // A key that never existed is a plain 404, and admin shows nothing.
    c.get(0, "never", "").await.assert_error(404, "not_found");
    c.replica(0, "never").await.assert_error(404, "not_found");
    // Writing again after the delete brings the key back.
    assert_eq!(c.put(2, "doomed", b"again", "", None).await.status, 204);
    assert_eq!(c.get(0, "doomed", "").await.body, b"again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_failures_answer_503_within_the_timeout_and_w1_still_succeeds() {
    let mut c = TestCluster::start(3, &[]).await;
    c.kill9(1);
    c.kill9(2);
    // Before the failure detector has noticed: the request waits, but not past the timeout.
    let t = Instant::now();
    let r = c.put(0, "k", b"v", "?w=2", None).await;
    let waited = t.elapsed();
    r.assert_error(503, "quorum_failed");
    let body = r.json();
    assert_eq!(body["required"], 2);
    assert_eq!(body["succeeded"], 1);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("may still have been applied")
    );
    assert!(waited < Duration::from_millis(1000 + 500), "took {waited:?}");
    // The failed write was applied on the one live replica, as the message warns.
    let seen = c.get(0, "k", "?r=1").await;
    assert_eq!(seen.body, b"v");
    let w1 = c.put(0, "k", b"v1", "?w=1", Some(&seen.context().unwrap())).await;
    assert_eq!(w1.status, 204, "{}", w1.text());
    assert_eq!(c.get(0, "k", "?r=1").await.body, b"v1");
    c.get(0, "k", "?r=2").await.assert_error(503, "quorum_failed");
    // Once the others are known dead, requests skip them and fail fast.
    assert!(
        c.eventually(Duration::from_secs(10), || async {
            c.status(0, 1).await.as_deref() == Some("dead") && c.status(0, 2).await.as_deref() == Some("dead")
        })
        .await
    );
    let t = Instant::now();
    c.put(0, "k", b"v", "?w=2", None)
        .await
        .assert_error(503, "quorum_failed");
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "dead replicas should be skipped: {:?}",
        t.elapsed()
    );
}

/// Primary quorums with a replica of the key down: a fallback's hint counts towards W
/// and, holding the write, its answer towards R, but never towards PW or PR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pr_and_pw_count_only_the_keys_own_replicas_never_a_fallback() {
    let mut c = TestCluster::start(4, &[]).await;
    let replicas = c.preflist("primary").await;
    assert_eq!(replicas.len(), 3);
    let coordinator = c.index_of(&replicas[0]);
    let down = c.index_of(&replicas[2]);
    c.kill9(down);
    assert!(
        c.eventually(Duration::from_secs(10), || async {
            c.status(coordinator, down).await.as_deref() == Some("dead")
        })
        .await,
        "the coordinator judges the stopped replica dead"
    );

    // w = 3: the two live replicas and a fallback holding a hint.
    let put = c.put(coordinator, "primary", b"v1", "?w=3", None).await;
    assert_eq!(put.status, 204, "{}", put.text());
    // pw = 3: only two primaries can acknowledge.
    let ctx = put.context().unwrap();
    let put = c.put(coordinator, "primary", b"v2", "?w=3&pw=3", Some(&ctx)).await;
    put.assert_error(503, "quorum_failed");
    let body = put.json();
    assert_eq!(
        (&body["quorum"], &body["required"], &body["succeeded"]),
        (&"pw".into(), &3.into(), &2.into()),
        "{body}"
    );
    assert!(body["message"].as_str().unwrap().contains("primary"), "{body}");
    // The failed write was applied where it went, as the message warns: v2 replaced v1.
    let seen = c.get(coordinator, "primary", "").await;
    assert_eq!(
        (seen.status, seen.body.as_slice()),
        (200, &b"v2"[..]),
        "{}",
        seen.text()
    );
    let ctx = seen.context().unwrap();
    let put = c.put(coordinator, "primary", b"v3", "?w=3&pw=2", Some(&ctx)).await;
    assert_eq!(put.status, 204, "two primaries and a hint: {}", put.text());

    // r = 3: the fallback holds the hint, so its answer counts; with pr = 3 it does not.
    let got = c.get(coordinator, "primary", "?r=3").await;
    assert_eq!(got.status, 200, "{}", got.text());
    let got = c.get(coordinator, "primary", "?r=3&pr=3").await;
    got.assert_error(503, "quorum_failed");
    let body = got.json();
    assert_eq!(
        (&body["quorum"], &body["required"], &body["succeeded"]),
        (&"pr".into(), &3.into(), &2.into()),
        "{body}"
    );
    let got = c.get(coordinator, "primary", "?r=2&pr=2").await;
    assert_eq!((got.status, got.body.as_slice()), (200, &b"v3"[..]), "{}", got.text());

    // A primary part larger than its quorum is refused, and writes nothing.
    c.get(coordinator, "primary", "?r=1&pr=2")
        .await
        .assert_error(400, "bad_parameter");
    c.put(coordinator, "primary", b"never", "?w=1&pw=2", None)
        .await
        .assert_error(400, "bad_parameter");
    c.put(coordinator, "primary", b"never", "?pw=4", None)
        .await
        .assert_error(400, "bad_parameter");
    let got = c.get(coordinator, "primary", "").await;
    assert_eq!(got.body, b"v3", "the refused writes stored nothing");

    // Back up, the replica gets its hint: three primaries again.
    c.restart(down).await;
    assert!(
        c.eventually(Duration::from_secs(15), || async {
            c.put(coordinator, "primary", b"v4", "?w=3&pw=3", None).await.status == 204
        })
        .await,
        "pw = 3 met once the replica is back"
    );
    let got = c.get(coordinator, "primary", "?r=3&pr=3").await;
    assert!(got.status == 200 || got.status == 300, "{}", got.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_become_siblings_and_a_write_with_context_resolves_them() {
    let c = TestCluster::start(3, &[]).await;
    assert_eq!(c.put(0, "cart", b"apple", "", None).await.status, 204);
    assert_eq!(c.put(1, "cart", b"pear", "", None).await.status, 204);
    let got = c.get(2, "cart", "").await;
    assert_eq!(got.status, 300, "{}", got.text());
    assert_eq!(got.headers["content-type"], "application/json");
    assert_eq!(siblings(&got), vec![b"apple".to_vec(), b"pear".to_vec()]);
    let ctx = got.context().unwrap();
    assert_eq!(got.json()["context"], ctx.as_str());
    // Resolve through a third node with the context of the read.
    let put = c.put(2, "cart", b"apple+pear", "", Some(&ctx)).await;
    assert_eq!(put.status, 204, "{}", put.text());
    for i in 0..3 {
        let got = c.get(i, "cart", "").await;
        assert_eq!(got.status, 200, "node {i}: {}", got.text());
        assert_eq!(got.body, b"apple+pear");
    }
    // A write with the context its own PUT returned replaces only its own version:
    // a concurrent blind write made meanwhile survives as a sibling.
    let mine = c
        .put(
            0,
            "cart",
            b"mine",
            "",
            Some(&c.get(0, "cart", "").await.context().unwrap()),
        )
        .await;
    assert_eq!(c.put(1, "cart", b"theirs", "", None).await.status, 204);
    assert_eq!(
        c.put(0, "cart", b"mine-2", "", Some(&mine.context().unwrap()))
            .await
            .status,
        204
    );
    assert_eq!(
        siblings(&c.get(2, "cart", "").await),
        vec![b"mine-2".to_vec(), b"theirs".to_vec()]
    );
    // A delete with the read context removes every sibling.
    let ctx = c.get(2, "cart", "").await.context().unwrap();
    assert_eq!(c.delete(1, "cart", "", Some(&ctx)).await.status, 204);
    c.get(0, "cart", "").await.assert_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blind_writes_past_the_sibling_cap_are_refused_and_a_resolving_write_is_not() {
    let c = TestCluster::start(4, &["--max-siblings", "3"]).await;
    let replicas = c.preflist("pile").await;
    let outsider = (0..4).find(|&i| !replicas.contains(&c.nodes[i].id)).unwrap();
    let replica = c.index_of(&replicas[0]);
    // w=3: every replica holds all three before the fourth arrives (the cap is checked on
    // the coordinating replica's own copy).
    for (i, v) in [b"a", b"b", b"c"].iter().enumerate() {
        let put = c.put(i, "pile", *v, "?w=3", None).await;
        assert_eq!(put.status, 204, "write {i}: {}", put.text());
    }
    // A fourth concurrent value, through a replica and through a node that forwards.
    for via in [replica, outsider] {
        let refused = c.put(via, "pile", b"d", "", None).await;
        refused.assert_error(409, "too_many_siblings");
        assert!(refused.text().contains("limit is 3"), "{}", refused.text());
    }
    let got = c.get(outsider, "pile", "?r=3").await;
    assert_eq!(siblings(&got), vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    // Writing with a context that covers some siblings replaces them: allowed at the cap.
    let ctx = got.context().unwrap();
    let put = c.put(outsider, "pile", b"abc", "", Some(&ctx)).await;
    assert_eq!(put.status, 204, "{}", put.text());
    let got = c.get(replica, "pile", "?r=3").await;
    assert_eq!((got.status, got.body.as_slice()), (200, &b"abc"[..]), "{}", got.text());
    // Deletes add no sibling and are never refused.
    assert_eq!(c.put(1, "pile", b"x", "?w=3", None).await.status, 204);
    assert_eq!(c.put(2, "pile", b"y", "?w=3", None).await.status, 204);
    assert_eq!(c.delete(outsider, "pile", "?w=3", None).await.status, 204);
    c.get(replica, "pile", "").await.assert_error(404, "not_found");
}

/// Sends `bytes` on a fresh connection and returns what comes back until the node closes
/// it (or 10 s pass), and how long that took.
async fn send_and_wait_for_close(addr: &str, bytes: &[u8]) -> (String, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the node kept a stalled connection open for 10 s");
    (String::from_utf8_lossy(&got).into_owned(), start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_requests_are_cut_off_by_the_read_timeout_and_store_nothing() {
    let c = TestCluster::start(3, &["--read-timeout-ms", "1000"]).await;
    let addr = &c.nodes[0].addr;
    // A body that stops short of its declared length: 408 with a JSON error, then close.
    let (reply, took) = send_and_wait_for_close(
        addr,
        b"PUT /kv/stalled HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains(r#""error":"body_timeout""#), "{reply}");
    assert!(
        took >= Duration::from_millis(900),
        "cut after {took:?}, before the timeout"
    );
    // Headers that never finish: the connection is closed without an answer.
    let (reply, took) = send_and_wait_for_close(addr, b"GET /health HTTP/1.1\r\nHost: x\r\n").await;
    assert_eq!(reply, "");
    assert!(
        took >= Duration::from_millis(900),
        "closed after {took:?}, before the timeout"
    );
    // Nothing of the stalled write was stored, and the node still serves.
    for i in 0..3 {
        c.get(i, "stalled", "?r=3").await.assert_error(404, "not_found");
    }
    assert_eq!(c.put(0, "stalled", b"complete", "", None).await.status, 204);
    assert_eq!(c.get(1, "stalled", "").await.body, b"complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lww_mode_keeps_the_later_write() {
    let c = TestCluster::start(3, &["--conflict", "lww"]).await;
    assert_eq!(c.put(0, "k", b"first", "", None).await.status, 204);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(c.put(1, "k", b"second", "", None).await.status, 204);
    for i in 0..3 {
        let got = c.get(i, "k", "").await;
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(got.body, b"second");
    }
    // A write carrying the read's context is ordered after it whatever the clocks say.
    let ctx = c.get(2, "k", "").await.context().unwrap();
    assert_eq!(c.put(2, "k", b"third", "", Some(&ctx)).await.status, 204);
    assert_eq!(c.get(0, "k", "").await.body, b"third");
    // An mv context is refused in lww mode.
    let mv_cluster_ctx = "AQAAAA"; // version 1, an mv context with nothing in it
    c.put(0, "k", b"x", "", Some(mv_cluster_ctx))
        .await
        .assert_error(400, "bad_context");
    assert_eq!(c.delete(0, "k", "", None).await.status, 204);
    c.get(1, "k", "").await.assert_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_json_error_and_loses_nothing() {
    let c = TestCluster::start(3, &["--max-value-bytes", "1000"]).await;
    assert_eq!(c.put(0, "safe", b"kept", "", None).await.status, 204);
    let long_key = "k".repeat(1025);
    // (method, path, body, headers, expected status, expected error code)
    type Case = (
        Method,
        String,
        Vec<u8>,
        Vec<(&'static str, &'static str)>,
        u16,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (Method::GET, "/kv/".into(), vec![], vec![], 400, "bad_key"),
        (Method::PUT, "/kv/".into(), b"v".to_vec(), vec![], 400, "bad_key"),
        (Method::GET, "/kv".into(), vec![], vec![], 400, "bad_key"),
        (Method::GET, "/kv/%FF%FE".into(), vec![], vec![], 400, "bad_key"),
        (Method::GET, format!("/kv/{long_key}"), vec![], vec![], 400, "bad_key"),
        (Method::GET, "/kv/safe?r=0".into(), vec![], vec![], 400, "bad_parameter"),
        (Method::GET, "/kv/safe?r=4".into(), vec![], vec![], 400, "bad_parameter"),
        (
            Method::GET,
            "/kv/safe?r=two".into(),
            vec![],
            vec![],
            400,
            "bad_parameter",
        ),
        (Method::GET, "/kv/safe?R=1".into(), vec![], vec![], 400, "bad_parameter"),
        (
            Method::PUT,
            "/kv/safe?w=0".into(),
            b"bad".to_vec(),
            vec![],
            400,
            "bad_parameter",
        ),
        (
            Method::PUT,
            "/kv/safe?w=9".into(),
            b"bad".to_vec(),
            vec![],
            400,
            "bad_parameter",
        ),
        (
            Method::PUT,
            "/kv/safe?w=-1".into(),
            b"bad".to_vec(),
            vec![],
            400,
            "bad_parameter",
        ),
        (
            Method::DELETE,
            "/kv/safe?w=0".into(),
            vec![],
            vec![],
            400,
            "bad_parameter",
        ),
        (
            Method::PUT,
            "/kv/safe".into(),
            b"bad".to_vec(),
            vec![("x-dynakv-context", "not a token!")],
            400,
            "bad_context",
        ),
        (
            Method::PUT,
            "/kv/safe".into(),
            b"bad".to_vec(),
            vec![("x-dynakv-context", "AQID")],
            400,
            "bad_context",
        ),
        (
            Method::DELETE,
            "/kv/safe".into(),
            vec![],
            vec![("x-dynakv-context", "%%%")],
            400,
            "bad_context",
        ),
        (
            Method::PUT,
            "/kv/safe".into(),
            vec![b'x'; 1001],
            vec![],
            413,
            "value_too_large",
        ),
        (Method::GET, "/nowhere".into(), vec![], vec![], 404, "not_found"),
        (Method::GET, "/kv/absent".into(), vec![], vec![], 404, "not_found"),
        (
            Method::POST,
            "/kv/safe".into(),
            b"bad".to_vec(),
            vec![],
            405,
            "method_not_allowed",
        ),
        (
            Method::PATCH,
            "/health".into(),
            vec![],
            vec![],
            405,
            "method_not_allowed",
        ),
        (
            Method::GET,
            "/cluster/members?x=1".into(),
            vec![],
            vec![],
            400,
            "bad_parameter",
        ),
        // Node-to-node traffic has a port of its own.
        (
            Method::POST,
            "/internal/replica".into(),
            b"garbage".to_vec(),
            vec![],
            404,
            "not_found",
        ),
        (
            Method::GET,
            "/internal/stream".into(),
            vec![],
            vec![("connection", "upgrade"), ("upgrade", "dynakv-rpc/2")],
            404,
            "not_found",
        ),
    ];
    for (method, path, body, headers, status, code) in cases {
        let r = c.raw(method.clone(), 0, &path, body, &headers).await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        let v = r.json();
        assert_eq!(v["error"], code, "{method} {path}: {v}");
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{method} {path}: {v}"
        );
    }
    // On the cluster port, after a genuine handshake: an undecodable request in a
    // well-formed frame gets an error answer with its id; a frame claiming 4 GiB ends the
    // connection. Neither harms the node.
    {
        use dynakv_node::transport::handshake::{self, Key, Policy};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let secret = std::fs::read(c.secret_file()).unwrap();
        let policy = Policy::Strict(Key::from_secret(secret.trim_ascii()));
        let mut tcp = tokio::net::TcpStream::connect(&c.nodes[0].cluster_addr).await.unwrap();
        handshake::client(&mut tcp, &policy, "dynakv", "tester").await.unwrap();
        let mut garbage = vec![dynakv_node::transport::message::WIRE_VERSION, 1];
        for _ in 0..100_000 {
            garbage.extend_from_slice(&[8, 1]);
        }
        for (id, body) in [
            (77u64, vec![dynakv_node::transport::message::WIRE_VERSION, 0xff, 0xff]),
            (78, garbage),
        ] {
            let mut frame = ((body.len() + 8) as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(&id.to_be_bytes());
            frame.extend_from_slice(&body);
            tcp.write_all(&frame).await.unwrap();
            let len = tcp.read_u32().await.unwrap() as usize;
            assert_eq!(tcp.read_u64().await.unwrap(), id);
            let mut rest = vec![0; len - 8];
            tcp.read_exact(&mut rest).await.unwrap();
            assert_eq!(rest[0], 1, "an error answer for the whole frame");
        }
        tcp.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let mut buf = [0u8; 16];
        let closed = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    }
    // A value of exactly the limit is fine; an empty value too.
    assert_eq!(c.put(0, "edge", &[b'y'; 1000], "", None).await.status, 204);
    assert_eq!(c.put(0, "empty", b"", "", None).await.status, 204);
    assert_eq!(c.get(1, "empty", "").await.status, 200);
    // A body streamed without Content-Length is cut off at the limit too.
    let stream = futures::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(vec![b'z'; 100])));
    let r = c
        .http
        .put(c.url(0, "/kv/streamed"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.headers()["connection"],
        "close",
        "the unread body makes the connection unusable"
    );
    // Nothing above disturbed the stored value.
    for i in 0..3 {
        assert_eq!(c.get(i, "safe", "").await.body, b"kept");
    }
    c.get(0, "streamed", "").await.assert_error(404, "not_found");
    // The node is still healthy.
    assert_eq!(c.raw(Method::GET, 0, "/health", vec![], &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_kill_9_and_restart_of_every_node() {
    let mut c = TestCluster::start(3, &[]).await;
    let keys: Vec<String> = (0..60).map(|i| format!("durable-{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        let r = c.put(i % 3, k, format!("value-{i}").as_bytes(), "?w=2", None).await;
        assert_eq!(r.status, 204, "{}", r.text());
    }
    for i in 0..3 {
        c.kill9(i);
    }
    for i in 0..3 {
        c.restart(i).await;
    }
    c.wait_all_see_all_alive().await;
    for (i, k) in keys.iter().enumerate() {
        let got = c.get((i + 1) % 3, k, "?r=2").await;
        assert_eq!(got.status, 200, "{k}: {}", got.text());
        assert_eq!(got.body, format!("value-{i}").as_bytes());
    }
    // The restarted nodes kept their identity: generation went up, ids unchanged.
    let members = c.http.get(c.url(0, "/cluster/members")).send().await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&members.bytes().await.unwrap()).unwrap();
    for m in v["members"].as_array().unwrap() {
        assert_eq!(m["generation"], 2, "{m}");
    }
}

/// Node `node`'s own replica holds `keys[i]` = "value-{i}".
async fn holds_all(c: &TestCluster, node: usize, keys: &[String]) {
    for (i, k) in keys.iter().enumerate() {
        let rep = c.replica(node, k).await;
        assert_eq!(rep.status, 200, "n{} {k}: {}", node + 1, rep.text());
        assert_eq!(rep.json()["values"][0], STANDARD.encode(format!("value-{i}")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_commit_thread_writes_reach_every_replica_survive_kill_9_and_nodes_stop_cleanly() {
    let mut c = TestCluster::start(3, &["--conflict", "lww", "--commit-thread", "true"]).await;
    let keys: Vec<String> = (0..40).map(|i| format!("committed-{i}")).collect();
    // w=3: each write is acknowledged once the coordinator's own copy and both other
    // replicas' merges went through their commit threads.
    for (i, k) in keys.iter().enumerate() {
        let r = c.put(i % 3, k, format!("value-{i}").as_bytes(), "?w=3", None).await;
        assert_eq!(r.status, 204, "{}", r.text());
    }
    for node in 0..3 {
        holds_all(&c, node, &keys).await;
    }
    c.kill9(0);
    c.restart(0).await;
    holds_all(&c, 0, &keys).await;
    // A clean stop closes the storage engine before the process exits (RocksDB aborts
    // when the commit thread still holds it then).
    for node in 0..3 {
        let status = c.stop(node).expect("running");
        assert!(status.success(), "n{} exited {status}: {}", node + 1, c.log(node));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_node_is_suspect_then_dead_and_alive_after_restart() {
    let mut c = TestCluster::start(3, &[]).await;
    c.stop(2);
    let t = Instant::now();
    let saw_suspect = c
        .eventually(Duration::from_secs(5), || async {
            matches!(c.status(0, 2).await.as_deref(), Some("suspect" | "dead"))
        })
        .await;
    assert!(saw_suspect, "n3 never suspected");
    let dead = c
        .eventually(Duration::from_secs(5), || async {
            c.status(0, 2).await.as_deref() == Some("dead") && c.status(1, 2).await.as_deref() == Some("dead")
        })
        .await;
    assert!(dead, "n3 not dead everywhere; n1 log:\n{}", c.log(0));
    // Dead after 6 gossip intervals (600 ms here) of silence, plus gossip lag.
    let detected = t.elapsed();
    assert!(detected < Duration::from_secs(3), "took {detected:?}");
    c.restart(2).await;
    c.wait_all_see_all_alive().await;
}

/// Replica reads node `i` has sent (`Get` calls to every peer, answered or not).
async fn replica_reads_sent(c: &TestCluster, i: usize) -> f64 {
    let r = c.http.get(c.url(i, "/metrics")).send().await.unwrap();
    let text = r.text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("dynakv_rpc_duration_seconds_count{") && l.contains(r#"verb="Get""#))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .sum()
}

/// Reads ask R replicas (the coordinator's own copy first) and the others only when one
/// fails or is slow: at N = 3, R = 2 a read through a replica sends one replica read
/// instead of two, and a replica that stops answering (SIGSTOP) costs a read the
/// speculation delay rather than failing it. `--read-speculate-ms 0` asks all three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_ask_r_replicas_and_the_others_only_when_one_is_slow() {
    // (Requests time out after a second here.)
    let args = ["--anti-entropy-interval-ms", "0"];
    let c = TestCluster::start(3, &[&args[..], &["--read-speculate-ms", "300"]].concat()).await;
    let keys: Vec<String> = (0..20).map(|k| format!("spec-{k}")).collect();
    for k in &keys {
        let r = c.put(0, k, k.as_bytes(), "?w=3", None).await;
        assert_eq!(r.status, 204, "{}", r.text());
    }
    let before = replica_reads_sent(&c, 0).await;
    for k in &keys {
        let got = c.get(0, k, "?r=2").await;
        assert_eq!((got.status, &got.body[..]), (200, k.as_bytes()), "{}", got.text());
    }
    let sent = replica_reads_sent(&c, 0).await - before;
    // One each; a few more if a peer took over 300 ms on a busy machine.
    assert!((20.0..=25.0).contains(&sent), "20 reads sent {sent} replica reads");

    // A key whose preference list puts n3 before n2: n1 asks itself and n3 first.
    let mut slow_first = None;
    for k in &keys {
        let pl = c.preflist(k).await;
        let pos = |id: &str| pl.iter().position(|p| p == id).unwrap();
        if pos(c.id(2)) < pos(c.id(1)) {
            slow_first = Some(k.clone());
            break;
        }
    }
    let key = slow_first.expect("some key prefers n3 to n2");
    c.pause(2);
    let got = c.get(0, &key, "?r=2").await;
    c.resume(2);
    // Without speculation the read would wait on n3 until its deadline and fail (503).
    assert_eq!((got.status, &got.body[..]), (200, key.as_bytes()), "{}", got.text());
    drop(c);

    let c = TestCluster::start(3, &[&args[..], &["--read-speculate-ms", "0"]].concat()).await;
    for k in &keys {
        let r = c.put(0, k, k.as_bytes(), "?w=3", None).await;
        assert_eq!(r.status, 204, "{}", r.text());
    }
    let before = replica_reads_sent(&c, 0).await;
    for k in &keys {
        assert_eq!(c.get(0, k, "?r=2").await.status, 200);
    }
    // The third answer may come after the client's.
    let all = c
        .eventually(Duration::from_secs(5), || async {
            replica_reads_sent(&c, 0).await - before == 40.0
        })
        .await;
    assert!(
        all,
        "20 reads asking all sent {}",
        replica_reads_sent(&c, 0).await - before
    );
}
