//! Who may talk to a node, with real processes: the cluster secret, mutual TLS with node
//! certificates, API tokens on the client port, and switching a running cluster from
//! insecure to authenticated without losing a write.

mod common;

use std::pin::Pin;
use std::process::{Command, Stdio};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::{BIN, TestCluster, free_port};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Runs `dynakv certs ARGS DIR` and checks it succeeded.
fn make_certs(args: &[&str], dir: &std::path::Path) {
    let out = Command::new(BIN).arg("certs").args(args).arg(dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Keys `key` written through node `at`: 204 expected.
async fn put_ok(c: &TestCluster, at: usize, key: &str, value: &str) {
    let r = c.put(at, key, value.as_bytes(), "", None).await;
    assert_eq!(r.status, 204, "{key} via {}: {}", c.id(at), r.text());
}

async fn refused(c: &TestCluster, i: usize) -> Value {
    c.antientropy(i)
        .await
        .map(|v| serde_json::to_value(v.cluster_port.refused).unwrap())
        .unwrap_or_default()
}

/// Nodes with the wrong secret or none: they never become members, cannot write into
/// the cluster or read from it, and nothing they send is stored. The cluster counts the
/// refusals and logs them once per address, not per attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_without_the_secret_cannot_join_read_write_or_gossip() {
    let mut c = TestCluster::start(3, &[]).await;
    put_ok(&c, 0, "private", "cluster data").await;
    let wrong = c.dir().join("wrong.secret");
    std::fs::write(&wrong, "not-the-cluster-secret-42").unwrap();
    let wrong = wrong.display().to_string();
    let intruders = [
        c.add_node(&["--cluster-secret-file", &wrong]).await,
        c.add_node(&["--insecure"]).await,
    ];
    // Give them time to gossip, auto-join and retry (with backoff) many times.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for &x in &intruders {
        // Their writes and reads go nowhere: they never hear from a member.
        let w = c.put(x, &format!("from-{}", c.id(x)), b"planted", "", None).await;
        assert_eq!(w.status, 503, "{}: {}", c.id(x), w.text());
        let r = c.get(x, "private", "").await;
        assert_ne!(r.status, 200, "{} read cluster data: {}", c.id(x), r.text());
        assert!(!r.text().contains("cluster data"));
    }
    for i in 0..3 {
        let members = c
            .raw(reqwest::Method::GET, i, "/cluster/members", vec![], &[])
            .await
            .json();
        let ids: Vec<&str> = members["members"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["id"].as_str())
            .collect();
        assert_eq!(ids.len(), 3, "{} lists {ids:?}", c.id(i));
        for &x in &intruders {
            let planted = c.replica(i, &format!("from-{}", c.id(x))).await;
            assert_eq!(planted.status, 404, "stored on {}: {}", c.id(i), planted.text());
        }
    }
    // The members' own traffic is untouched.
    put_ok(&c, 1, "after", "still works").await;
    assert_eq!(c.get(2, "after", "").await.text(), "still works");
    // Refused and counted by reason; logged once per address (all of them come from
    // 127.0.0.1 here) and minute on each node, however often they retry.
    let mut by_reason = std::collections::BTreeMap::<String, u64>::new();
    let mut log_lines = 0;
    for i in 0..3 {
        for (reason, n) in refused(&c, i).await.as_object().cloned().unwrap_or_default() {
            *by_reason.entry(reason).or_default() += n.as_u64().unwrap_or(0);
        }
        log_lines += c.log(i).matches("refused a cluster connection").count() as u64;
    }
    assert!(by_reason.get("bad_proof") >= Some(&1), "{by_reason:?}");
    assert!(by_reason.get("no_secret") >= Some(&1), "{by_reason:?}");
    let refusals: u64 = by_reason.values().sum();
    assert!(
        (1..=3).contains(&log_lines),
        "one line per address and node: {log_lines}"
    );
    assert!(refusals > log_lines, "{refusals} refusals, {log_lines} log lines");
}

/// A stream that keeps a copy of what is written to it.
struct Recorder<T> {
    inner: T,
    written: Vec<u8>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Recorder<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Recorder<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        self.written.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The bytes of a real, successful handshake, sent again on a new connection and
/// followed by a write: the node's fresh nonce makes them worthless, and the write is
/// neither answered nor stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_handshake_gets_nothing_and_stores_nothing() {
    use dynakv_crdt::{Actor, LwwRegister, Register, Timestamp};
    use dynakv_node::transport::handshake::{self, Key, Policy};
    use dynakv_node::transport::message::{Call, Merge};
    use dynakv_node::transport::stream::{encode_request, read_answer};

    let c = TestCluster::start(3, &["--conflict", "lww"]).await;
    let secret = std::fs::read(c.secret_file()).unwrap();
    let policy = Policy::Strict(Key::from_secret(secret.trim_ascii()));
    let target = &c.nodes[0].cluster_addr;
    let merge = |key: &str| {
        let register = Register::Lww(LwwRegister::new(
            Timestamp::new(1, 0),
            Actor(9),
            Some(bytes::Bytes::from_static(b"forged")),
        ));
        Merge {
            key: key.into(),
            register,
            layout: 1,
        }
        .wrap()
    };
    // The genuine exchange, recorded: it works, and a write on it is answered.
    let tcp = tokio::net::TcpStream::connect(target).await.unwrap();
    let mut rec = Recorder {
        inner: tcp,
        written: Vec::new(),
    };
    let peer = handshake::client(&mut rec, &policy, "dynakv", "n9").await.unwrap();
    assert!(peer.proven);
    let mut frame = Vec::new();
    encode_request(&mut frame, 1, &[merge("genuine")]);
    rec.write_all(&frame).await.unwrap();
    let (id, answer) = read_answer(&mut rec, 1 << 20).await.unwrap().unwrap();
    assert_eq!(id, 1);
    assert!(answer.is_ok(), "{answer:?}");
    let recorded = rec.written[..rec.written.len() - frame.len()].to_vec();

    // The replay, with a forged write behind it.
    let mut tcp = tokio::net::TcpStream::connect(target).await.unwrap();
    let mut replay = recorded.clone();
    let mut forged = Vec::new();
    encode_request(&mut forged, 1, &[merge("forged")]);
    replay.extend_from_slice(&forged);
    tcp.write_all(&replay).await.unwrap();
    let mut back = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut back)).await;
    // What came back is the server's hello and a refusal, never an answer frame: the
    // last byte is the verdict, not OK.
    assert_ne!(back.last(), Some(&0), "accepted a replayed handshake: {back:?}");
    let stored = c.replica(0, "forged").await;
    assert_eq!(stored.status, 404, "{}", stored.text());
    assert_eq!(c.replica(0, "genuine").await.status, 200);
    assert!(refused(&c, 0).await["bad_proof"].as_u64() >= Some(1));
}

/// Mutual TLS on the cluster port with certificates from `dynakv certs`: the cluster
/// works, and a node showing another node's certificate is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_works_and_a_certificate_for_another_node_id_is_refused() {
    let mut c = TestCluster::prepare(3, &[]);
    let certs = c.dir().join("certs");
    make_certs(&["cluster", "--ids", "n1,n2,n3,n4", "--dir"], &certs);
    for i in 0..3 {
        let dir = certs.join(format!("n{}", i + 1));
        c.nodes[i].extra = vec!["--certs-dir".into(), dir.display().to_string()];
    }
    c.launch().await;
    put_ok(&c, 0, "over-tls", "yes").await;
    assert_eq!(c.get(2, "over-tls", "").await.text(), "yes");

    // n4 with n2's certificate: TLS succeeds (the CA signed it) but the id does not match.
    let stolen = certs.join("n2").display().to_string();
    let x = c.add_node(&["--certs-dir", &stolen]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let w = c.put(x, "from-n4", b"planted", "", None).await;
    assert_eq!(w.status, 503, "{}", w.text());
    for i in 0..3 {
        assert_eq!(c.replica(i, "from-n4").await.status, 404);
    }
    let r = refused(&c, 0).await;
    assert!(r["certificate_id"].as_u64() >= Some(1), "{r}");
    // Without TLS at all, a node with the right secret cannot talk to TLS nodes either.
    let plain = c.add_node(&[]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(c.put(plain, "from-plain", b"x", "", None).await.status, 503);
    assert!(refused(&c, 0).await["tls"].as_u64() >= Some(1));
}

/// API tokens on the client port: scopes per route, JSON errors, /health open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tokens_enforce_their_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        r#"
[[token]]
name = "reader"
secret = "reader-token-0123456789"
scopes = ["read"]

[[token]]
name = "app"
secret = "app-token-0123456789"
scopes = ["read", "write"]

[[token]]
name = "ops"
secret = "ops-token-0123456789"
scopes = ["admin"]
"#,
    )
    .unwrap();
    let tokens = tokens.display().to_string();
    let (addr, _guard) = solo(dir.path(), &["--tokens-file", &tokens]).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://{addr}");
    let call = |method: reqwest::Method, path: &str, token: Option<&str>| {
        let mut req = http.request(method, format!("{base}{path}")).body("v");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let auth = r.headers().get("www-authenticate").is_some();
            let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null);
            (status, body, auth)
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    // Open to all, even before the node is ready.
    loop {
        if let Ok(r) = http.get(format!("{base}/health")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "never healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Wait until the single node owns its ring (admin scope needed to look).
    loop {
        let (s, v, _) = call(reqwest::Method::GET, "/admin/layout", Some("ops-token-0123456789")).await;
        if s == 200 && v["settled"] == true && v["members"].as_array().is_some_and(|m| !m.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "no layout: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    use reqwest::Method as M;
    let app = Some("app-token-0123456789");
    let reader = Some("reader-token-0123456789");
    let ops = Some("ops-token-0123456789");
    let table: Vec<(M, &str, Option<&str>, u16, &str)> = vec![
        (M::PUT, "/kv/k", None, 401, "unauthenticated"),
        (M::PUT, "/kv/k", Some("wrong-token-0123456789"), 401, "unauthenticated"),
        (M::PUT, "/kv/k", reader, 403, "forbidden"),
        (M::PUT, "/kv/k", ops, 403, "forbidden"),
        (M::PUT, "/kv/k", app, 204, ""),
        (M::GET, "/kv/k", None, 401, "unauthenticated"),
        (M::GET, "/kv/k", ops, 403, "forbidden"),
        (M::GET, "/kv/k", reader, 200, ""),
        (M::GET, "/cluster/members", reader, 200, ""),
        (M::GET, "/admin/antientropy", app, 403, "forbidden"),
        (M::GET, "/admin/antientropy", ops, 200, ""),
        (M::POST, "/admin/layout/revert", reader, 403, "forbidden"),
        (M::DELETE, "/kv/k", reader, 403, "forbidden"),
        (M::DELETE, "/kv/k", app, 204, ""),
        (M::GET, "/nowhere", None, 401, "unauthenticated"),
        (M::GET, "/health", None, 200, ""),
    ];
    for (method, path, token, status, code) in table {
        let (s, body, www) = call(method.clone(), path, token).await;
        assert_eq!(s, status, "{method} {path} with {token:?}: {body}");
        if !code.is_empty() {
            assert_eq!(body["error"], code, "{method} {path}: {body}");
            assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
            assert_eq!(www, status == 401, "WWW-Authenticate on 401 only");
        }
    }
}

/// A running cluster switched from insecure to authenticated and encrypted (the secret
/// and mutual TLS), one node at a time, first to transitional and then to strict, with a
/// writer running all along: every write that was acknowledged can be read back at the
/// end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_from_insecure_to_authenticated_loses_no_acknowledged_write() {
    let mut c = TestCluster::prepare(3, &[]);
    for n in &mut c.nodes {
        n.extra = vec!["--insecure".into()];
    }
    c.launch().await;
    let secret = c.secret_file().display().to_string();
    let certs = c.dir().join("certs");
    make_certs(&["cluster", "--ids", "n1,n2,n3", "--dir"], &certs);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let http = c.http.clone();
        let urls: Vec<String> = c.nodes.iter().map(|n| format!("http://{}", n.addr)).collect();
        tokio::spawn(async move {
            let (mut acked, mut failed) = (Vec::new(), 0u64);
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 100_000 {
                let key = format!("roll-{i}");
                let url = format!("{}/kv/{key}", urls[(i % 3) as usize]);
                match http
                    .put(url)
                    .body(format!("v{i}"))
                    .timeout(Duration::from_secs(3))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 204 => acked.push(i),
                    _ => failed += 1,
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (acked, failed)
        })
    };
    for auth in ["transitional", "strict"] {
        for i in 0..3 {
            c.stop(i);
            let dir = certs.join(c.id(i)).display().to_string();
            c.nodes[i].extra = vec![
                "--cluster-secret-file".into(),
                secret.clone(),
                "--cluster-auth".into(),
                auth.into(),
                "--certs-dir".into(),
                dir,
            ];
            c.restart(i).await;
            c.wait_all_see_all_alive().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // Every connection is authenticated and over TLS now: nothing was refused since the
    // last restarts, and the nodes accepted connections.
    for i in 0..3 {
        let port = c.antientropy(i).await.unwrap().cluster_port;
        assert!(port.accepted >= 2, "{port:?}");
    }
    // All strict now: an insecure node is refused.
    let x = c.add_node(&["--insecure"]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(c.put(x, "late", b"x", "", None).await.status, 503);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, failed) = writer.await.unwrap();
    assert!(
        acked.len() > 200,
        "the writer made progress: {} acked, {failed} failed",
        acked.len()
    );
    let mut lost = Vec::new();
    for &i in &acked {
        let r = c.get((i % 3) as usize, &format!("roll-{i}"), "?r=2").await;
        if r.status != 200 || r.text() != format!("v{i}") {
            lost.push((i, r.status));
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {lost:?}",
        lost.len(),
        acked.len()
    );
    eprintln!(
        "rolling: {} writes acknowledged, {failed} failed during restarts, none lost",
        acked.len()
    );
}

/// A single node started with `args` on free ports: its client address and the guard
/// that stops it.
async fn solo(dir: &std::path::Path, args: &[&str]) -> (String, impl Drop + use<>) {
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(BIN)
        .args(["node", "--id", "solo", "--n", "1", "--r", "1", "--w", "1"])
        .args(["--listen", &addr])
        .args(["--cluster-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("node.log")).unwrap())
        .spawn()
        .unwrap();
    let guard = Kill(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (addr, guard)
}

/// `GET /health` on an open connection: the start of the answer.
async fn health(tcp: &mut tokio::net::TcpStream) -> String {
    tcp.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).to_string()
}

/// Over the connection cap a client gets a JSON 503 `overloaded` (and its connection is
/// closed); once others close, it is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_connection_cap_a_client_gets_503_overloaded() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _guard) = solo(dir.path(), &["--max-connections", "2"]).await;
    // Two connections held open (the start-up probe's slot may take a moment to free).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut held = Vec::new();
    while held.len() < 2 {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        if health(&mut tcp).await.starts_with("HTTP/1.1 200") {
            held.push(tcp);
        }
        assert!(Instant::now() < deadline, "no two connections served");
    }
    let mut third = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let answer = health(&mut third).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"error\":\"overloaded\""), "{answer}");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = tokio::net::TcpStream::connect(&addr).await.unwrap();
        if health(&mut again).await.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "the slots were never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client that sends a body over the value limit while the node has already decided
/// to refuse it still reads the JSON 413, instead of a reset connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_still_gets_its_json_413() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _guard) = solo(dir.path(), &["--max-value-bytes", "1024"]).await;
    for declared in [true, false] {
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let (mut r, mut w) = tcp.into_split();
        let size = 8 << 20;
        let head = if declared {
            format!("PUT /kv/big HTTP/1.1\r\nhost: x\r\ncontent-length: {size}\r\n\r\n")
        } else {
            "PUT /kv/big HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n".to_string()
        };
        let sender = tokio::spawn(async move {
            w.write_all(head.as_bytes()).await?;
            let chunk = vec![b'x'; 64 << 10];
            for _ in 0..(size / chunk.len()) {
                if declared {
                    w.write_all(&chunk).await?;
                } else {
                    w.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await?;
                    w.write_all(&chunk).await?;
                    w.write_all(b"\r\n").await?;
                }
            }
            if !declared {
                w.write_all(b"0\r\n\r\n").await?;
            }
            std::io::Result::Ok(())
        });
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), r.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "no answer in time");
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with("HTTP/1.1 413"),
            "declared {declared}: {:?}; log:\n{}",
            read.unwrap(),
            std::fs::read_to_string(dir.path().join("node.log")).unwrap_or_default()
        );
        assert!(text.contains("\"error\":\"value_too_large\""), "{text}");
        sender.await.unwrap().expect("the whole body was taken");
    }
}

/// `--client-tls`: the client port serves HTTPS with the node certificate, which a client
/// trusting the cluster CA accepts for the node's host names; with
/// `--client-cert-required`, only clients showing a certificate of the CA get answers.
/// Plain HTTP gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_port_serves_tls_with_the_node_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    make_certs(&["cluster", "--ids", "solo", "--dir"], &certs);
    make_certs(&["client", "--name", "app", "--dir"], &certs);
    let node_certs = certs.join("solo").display().to_string();
    let (addr, _guard) = solo(
        dir.path(),
        &[
            "--certs-dir",
            &node_certs,
            "--client-tls",
            "true",
            "--client-cert-required",
            "true",
        ],
    )
    .await;
    let client_cert = (certs.join("client.app.crt"), certs.join("client.app.key"));
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        dynakv_node::env::tls::client_config(&certs.join("ca.crt"), Some((&client_cert.0, &client_cert.1))).unwrap(),
    ));
    let request = |path: &str, method: &str, body: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let https = |req: String| {
        let (tls, addr) = (tls.clone(), addr.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut s = tls.connect(name, tcp).await.unwrap();
            s.write_all(req.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            let _ = s.read_to_end(&mut answer).await;
            String::from_utf8_lossy(&answer).to_string()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let layout = https(request("/admin/layout", "GET", "")).await;
        if layout.contains("\"settled\":true") && layout.contains("\"state\":\"active\"") {
            break;
        }
        assert!(Instant::now() < deadline, "no layout: {layout}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        https(request("/kv/k", "PUT", "secret value"))
            .await
            .starts_with("HTTP/1.1 204")
    );
    let got = https(request("/kv/k", "GET", "")).await;
    assert!(
        got.starts_with("HTTP/1.1 200") && got.ends_with("secret value"),
        "{got}"
    );
    // Plain HTTP on the TLS port: no answer in the clear.
    let mut plain = tokio::net::TcpStream::connect(&addr).await.unwrap();
    plain.write_all(request("/kv/k", "GET", "").as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
    assert!(!String::from_utf8_lossy(&answer).contains("secret value"));
    // A client without a certificate gets no answer.
    let anonymous = tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        dynakv_node::env::tls::client_config(&certs.join("ca.crt"), None).unwrap(),
    ));
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    if let Ok(mut s) = anonymous.connect(name, tcp).await {
        // TLS 1.3: the server refuses the missing certificate after the client's side
        // of the handshake is done; the refusal arrives instead of an answer.
        let _ = s.write_all(request("/kv/k", "GET", "").as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
        assert!(
            !String::from_utf8_lossy(&answer).contains("secret value"),
            "answered without a certificate"
        );
        assert!(answer.is_empty(), "{answer:?}");
    }
    // A client that does not trust this CA refuses the node.
    let other = tempfile::tempdir().unwrap();
    make_certs(&["ca", "--dir"], other.path());
    let stranger = tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        dynakv_node::env::tls::client_config(&other.path().join("ca.crt"), None).unwrap(),
    ));
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    assert!(stranger.connect(name, tcp).await.is_err());
}
