//! The load tool's HTTP client against servers that check what it sends and answer as
//! told: each framing of an answer, split across reads anywhere; broken answers; TLS
//! with an API token; a server closing its keep-alive connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dynakv_loadtest::http1::{Conn, Error};
use dynakv_loadtest::target::{Client, Kind, TargetConfig, tls_connector};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn target(addr: String, tls: Option<tokio_rustls::TlsConnector>, token: Option<&str>) -> TargetConfig {
    TargetConfig {
        kind: Kind::Dynakv,
        nodes: vec![addr],
        r: None,
        w: Some(2),
        timeout: Duration::from_secs(5),
        tls,
        token: token.map(String::from),
    }
}

/// Reads one request (head and a content-length body) from `s`; `None` at the end.
async fn read_request<S: AsyncRead + Unpin>(s: &mut S) -> Option<String> {
    let mut req = Vec::new();
    loop {
        let mut b = [0u8; 4096];
        let n = s.read(&mut b).await.ok()?;
        if n == 0 {
            return None;
        }
        req.extend_from_slice(&b[..n]);
        let text = String::from_utf8_lossy(&req).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.parse::<usize>().unwrap());
            if req.len() >= end + 4 + len {
                return Some(text);
            }
        }
    }
}

/// A server for one connection that answers each request it reads with the next of
/// `answers`, written in pieces of `piece` bytes (to split heads, chunk sizes and bodies
/// across reads), and returns the requests it saw.
async fn server(answers: Vec<&'static str>, piece: usize) -> (String, tokio::task::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        for answer in answers {
            let Some(req) = read_request(&mut s).await else {
                return seen;
            };
            seen.push(req);
            for part in answer.as_bytes().chunks(piece) {
                s.write_all(part).await.unwrap();
                s.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
        }
        seen
    });
    (addr, task)
}

/// What a test server saw, once it has ended (it must, within seconds).
async fn requests_seen(server: tokio::task::JoinHandle<Vec<String>>) -> Vec<String> {
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server ended")
        .expect("the server did not panic")
}

async fn conn(addr: &str) -> Conn {
    Conn::new(Box::new(TcpStream::connect(addr).await.unwrap()))
}

#[tokio::test]
async fn exchanges_requests_on_one_connection_whatever_the_framing() {
    for piece in [1, 7, 4096] {
        let (addr, server) = server(
            vec![
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-dynakv-context: abc\r\n\r\nhello",
                "HTTP/1.1 204 No Content\r\nx-dynakv-context: def\r\n\r\n",
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nfoo\r\n4;ext=1\r\nbarz\r\n0\r\nx-trailer: 1\r\n\r\n",
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}",
                "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 3\r\nconnection: close\r\n\r\nbye",
            ],
            piece,
        )
        .await;
        let mut c = conn(&addr).await;
        let r = c.request("GET", "/kv/a?r=2", "h", &[], b"").await.unwrap();
        assert_eq!(
            (r.status, r.context.as_deref(), &r.body[..]),
            (200, Some("abc"), &b"hello"[..])
        );
        let r = c
            .request("PUT", "/kv/a", "h", &[("x-dynakv-context", "abc")], b"value")
            .await
            .unwrap();
        assert_eq!((r.status, r.context.as_deref(), r.body.len()), (204, Some("def"), 0));
        let r = c.request("GET", "/chunked", "h", &[], b"").await.unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"foobarz"[..]));
        let r = c.request("DELETE", "/kv/a", "h", &[], b"").await.unwrap();
        assert_eq!((r.status, &r.body[..]), (404, &b"{}"[..]));
        assert!(c.is_reusable());
        let r = c.request("GET", "/last", "h", &[], b"").await.unwrap();
        assert_eq!((r.status, &r.body[..]), (503, &b"bye"[..]));
        assert!(!c.is_reusable(), "the server said it would close");
        assert!(matches!(c.request("GET", "/", "h", &[], b"").await, Err(Error::Closed)));
        let seen = requests_seen(server).await;
        assert_eq!(seen.len(), 5);
        assert_eq!(seen[0], "GET /kv/a?r=2 HTTP/1.1\r\nhost: h\r\n\r\n");
        assert_eq!(
            seen[1],
            "PUT /kv/a HTTP/1.1\r\nhost: h\r\nx-dynakv-context: abc\r\ncontent-length: 5\r\n\r\nvalue"
        );
    }
}

#[tokio::test]
async fn a_body_without_a_length_ends_with_the_connection() {
    let (addr, _server) = server(vec!["HTTP/1.0 200 OK\r\n\r\nall of it"], 3).await;
    let mut c = conn(&addr).await;
    let r = c.request("GET", "/", "h", &[], b"").await.unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &b"all of it"[..]));
    assert!(!c.is_reusable());
}

#[tokio::test]
async fn broken_answers_are_errors_and_end_the_connection() {
    for (answer, what) in [
        ("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", "closed mid-body"),
        ("HTTP/1.1 200 OK\r\ncontent-le", "closed mid-head"),
        ("NOT HTTP AT ALL\r\n\r\n", "no status line"),
        ("HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n", "bad length"),
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
            "two lengths",
        ),
        (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            "bad chunk size",
        ),
        (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabcd\r\n0\r\n\r\n",
            "chunk overrun",
        ),
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nab",
            "bytes after the answer",
        ),
        ("HTTP/1.1 200 OK\r\ncontent-length: 99999999999\r\n\r\n", "too large"),
    ] {
        let (addr, server) = server(vec![answer], 4096).await;
        let mut c = conn(&addr).await;
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), c.request("GET", "/", "h", &[], b""))
            .await
            .unwrap_or_else(|_| panic!("{what}: hung"));
        assert!(r.is_err(), "{what}: {r:?}");
        assert!(!c.is_reusable(), "{what}");
        server.abort();
    }
}

/// Answers every request on `s` with `answer` until the client closes; returns the
/// requests.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, answer: &str) -> Vec<String> {
    let mut seen = Vec::new();
    while let Some(req) = read_request(&mut s).await {
        seen.push(req);
        s.write_all(answer.as_bytes()).await.unwrap();
    }
    seen
}

#[tokio::test]
async fn requests_go_over_tls_with_the_token_and_the_value() {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.unwrap();
        serve(tls, "HTTP/1.1 204 No Content\r\nx-dynakv-context: ctx1\r\n\r\n").await
    });
    let cfg = target(addr, Some(tls_connector(&ca).unwrap()), Some("s3cret"));
    let mut client = Client::connect(&cfg).await.unwrap();
    let first = client.write(0, "user1", Bytes::from_static(b"hello"), None).await;
    assert_eq!((first.error, first.context.as_deref()), (None, Some("ctx1")));
    let second = client
        .write(0, "user1", Bytes::from_static(b"again"), Some("ctx1"))
        .await;
    assert_eq!(second.error, None);
    drop(client);
    let seen = requests_seen(server).await;
    assert_eq!(seen.len(), 2, "both on one connection: {seen:?}");
    assert!(seen[0].starts_with("PUT /kv/user1?w=2 HTTP/1.1\r\n"), "{}", seen[0]);
    assert!(seen[0].contains("\r\nauthorization: Bearer s3cret\r\n"), "{}", seen[0]);
    assert!(seen[0].ends_with("\r\n\r\nhello"), "{}", seen[0]);
    assert!(seen[1].contains("\r\nx-dynakv-context: ctx1\r\n"), "{}", seen[1]);
}

#[tokio::test]
async fn a_connection_the_server_closes_is_replaced_on_the_next_request() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        let mut all = Vec::new();
        // Each connection gets one answer that says it will close, then is closed.
        for _ in 0..2 {
            let (tcp, _) = listener.accept().await.unwrap();
            all.extend(
                serve(
                    tcp,
                    "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await,
            );
        }
        all
    });
    let mut client = Client::connect(&target(addr, None, None)).await.unwrap();
    for _ in 0..2 {
        let r = client.read(0, "absent").await;
        assert_eq!(
            (r.error, r.values.len()),
            (None, 0),
            "404 is an absent key, not an error"
        );
    }
    drop(client);
    let seen = requests_seen(server).await;
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter().all(|r| r.starts_with("GET /kv/absent HTTP/1.1\r\n")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn an_idle_connection_the_server_dropped_is_replaced_before_it_fails_a_request() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let answer = "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
    let server = tokio::spawn(async move {
        // The first connection: one keep-alive answer, then closed without a word (a
        // restart, an idle timeout).
        let (mut first, _) = listener.accept().await.unwrap();
        let seen = read_request(&mut first).await.unwrap();
        first.write_all(answer.as_bytes()).await.unwrap();
        drop(first);
        let (second, _) = listener.accept().await.unwrap();
        let mut all = vec![seen];
        all.extend(serve(second, answer).await);
        all
    });
    let mut client = Client::connect(&target(addr, None, None)).await.unwrap();
    assert_eq!(client.read(0, "a").await.error, None);
    // Idle long enough to be checked before reuse.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(client.read(0, "b").await.error, None, "sent on a fresh connection");
    drop(client);
    let seen = requests_seen(server).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
}
