//! The handshake every connection to a cluster port starts with, before any message is
//! handled: each side names its cluster and node id and sends a fresh random nonce; when
//! both hold the cluster secret, each proves it with a keyed blake3 hash over everything
//! said so far (both names, both ids, both nonces) under a label of its role. A proof
//! cannot be replayed (the other side's nonce is new each time), reflected (the roles'
//! labels differ) or moved to other ids or another cluster (they are inside it).
//!
//! ```text
//! client                                   server
//!   hello: magic, flags, cluster, id, nonce ─►
//!                                          ◄─ hello: magic, flags, status, id, nonce, [proof]
//!   finish: kind, [proof] ─────────────────►
//!                                          ◄─ verdict: status
//! ```
//!
//! [`Policy`] decides who is let in. `Strict` (a secret, the default once one is given)
//! talks only to peers that prove the secret; `Transitional` (a secret, while a cluster
//! switches authentication on) proves it to peers that can check it, and also accepts
//! and talks to peers that have none; `Insecure` (no secret, `--insecure`) accepts
//! anyone of its cluster. A node with neither a secret nor `--insecure` refuses every
//! peer. The secret authenticates the connection; without TLS what follows is not
//! encrypted or protected against an attacker on the path.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// First bytes of every handshake message; a new format gets a new magic.
pub const MAGIC: &[u8; 4] = b"DKV1";
const NONCE: usize = 32;
/// Longest a handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest cluster name or node id carried (both fit in a length byte).
const MAX_NAME: usize = 255;

const FLAG_SECRET: u8 = 1;
/// The client's finish when the server's proof did not verify (the secrets differ).
const FINISH_YOUR_PROOF_FAILED: u8 = 2;

/// What a server says in its hello and its verdict.
const OK: u8 = 0;
const REFUSED_CLUSTER: u8 = 1;
const REFUSED_NEEDS_SECRET: u8 = 2;
const REFUSED_PROOF: u8 = 3;
const REFUSED_CLOSED: u8 = 4;

/// Who a node lets in, and how it connects out.
#[derive(Clone)]
pub enum Policy {
    /// Only peers that prove the secret.
    Strict(Key),
    /// Proves the secret to peers that hold it; also accepts and connects to peers that
    /// have none (switching a running cluster over without an outage).
    Transitional(Key),
    /// No secret: accepts any peer of the cluster (trusted networks, `--insecure`).
    Insecure,
    /// No secret and not `--insecure`: no peer gets in and none is connected to.
    Closed,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl From<&crate::config::ClusterAccess> for Policy {
    fn from(access: &crate::config::ClusterAccess) -> Policy {
        use crate::config::ClusterAccess;
        match access {
            ClusterAccess::Strict(s) => Policy::Strict(Key::from_secret(&s.0)),
            ClusterAccess::Transitional(s) => Policy::Transitional(Key::from_secret(&s.0)),
            ClusterAccess::Insecure => Policy::Insecure,
            ClusterAccess::Closed => Policy::Closed,
        }
    }
}

impl Policy {
    pub fn name(&self) -> &'static str {
        match self {
            Policy::Strict(_) => "strict",
            Policy::Transitional(_) => "transitional",
            Policy::Insecure => "insecure",
            Policy::Closed => "closed",
        }
    }

    fn key(&self) -> Option<&Key> {
        match self {
            Policy::Strict(k) | Policy::Transitional(k) => Some(k),
            Policy::Insecure | Policy::Closed => None,
        }
    }

    /// Whether a peer without the secret may be talked to.
    fn accepts_unproven(&self) -> bool {
        matches!(self, Policy::Transitional(_) | Policy::Insecure)
    }
}

/// The key both proofs are made with, derived from the cluster secret.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl Key {
    pub fn from_secret(secret: &[u8]) -> Key {
        Key(blake3::derive_key("dynakv 2026-12 cluster secret handshake", secret))
    }
}

/// Who the other side is, once the handshake succeeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub id: String,
    /// It proved the cluster secret (false only under `Transitional` or `Insecure`).
    pub proven: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a dynakv cluster handshake")]
    NotHandshake,
    #[error("malformed handshake: {0}")]
    Malformed(&'static str),
    #[error("the peer belongs to cluster {0:?}")]
    WrongCluster(String),
    #[error("the peer does not prove the cluster secret")]
    Unproven,
    #[error("the peer's proof of the cluster secret is wrong")]
    BadProof,
    #[error("the peer refused the connection: {0}")]
    Refused(&'static str),
    #[error("this node has no cluster secret and was not started with --insecure")]
    Closed,
}

impl HandshakeError {
    /// A stable name for counting refusals.
    pub fn kind(&self) -> &'static str {
        match self {
            HandshakeError::Io(_) => "io",
            HandshakeError::NotHandshake | HandshakeError::Malformed(_) => "malformed",
            HandshakeError::WrongCluster(_) => "wrong_cluster",
            HandshakeError::Unproven => "no_secret",
            HandshakeError::BadProof => "bad_proof",
            HandshakeError::Refused(_) => "refused_by_peer",
            HandshakeError::Closed => "closed",
        }
    }
}

fn refusal(status: u8) -> &'static str {
    match status {
        REFUSED_CLUSTER => "it belongs to another cluster",
        REFUSED_NEEDS_SECRET => "it needs the cluster secret",
        REFUSED_PROOF => "our proof of the cluster secret is wrong",
        REFUSED_CLOSED => "it has no cluster secret and is not --insecure",
        _ => "unknown reason",
    }
}

/// The transcript both proofs cover.
fn proof(key: &Key, label: &[u8], cluster: &str, client: &str, server: &str, cn: &[u8], sn: &[u8]) -> blake3::Hash {
    let mut h = blake3::Hasher::new_keyed(&key.0);
    h.update(label);
    for part in [cluster.as_bytes(), client.as_bytes(), server.as_bytes(), cn, sn] {
        h.update(&(part.len() as u32).to_be_bytes());
        h.update(part);
    }
    h.finalize()
}

fn put_name(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(MAX_NAME)];
    out.push(b.len() as u8);
    out.extend_from_slice(b);
}

async fn read_name<R: AsyncRead + Unpin>(r: &mut R) -> Result<String, HandshakeError> {
    let len = r.read_u8().await? as usize;
    let mut b = vec![0; len];
    r.read_exact(&mut b).await?;
    String::from_utf8(b).map_err(|_| HandshakeError::Malformed("a name that is not UTF-8"))
}

async fn read_magic<R: AsyncRead + Unpin>(r: &mut R) -> Result<(), HandshakeError> {
    let mut m = [0u8; 4];
    r.read_exact(&mut m).await?;
    if &m != MAGIC {
        return Err(HandshakeError::NotHandshake);
    }
    Ok(())
}

async fn read_array<R: AsyncRead + Unpin>(r: &mut R) -> Result<[u8; 32], HandshakeError> {
    let mut b = [0u8; 32];
    r.read_exact(&mut b).await?;
    Ok(b)
}

/// Runs the client side on a fresh connection.
pub async fn client<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
    policy: &Policy,
    cluster: &str,
    me: &str,
) -> Result<Peer, HandshakeError> {
    if matches!(policy, Policy::Closed) {
        return Err(HandshakeError::Closed);
    }
    let nonce: [u8; NONCE] = rand::random();
    let mut hello = MAGIC.to_vec();
    hello.push(if policy.key().is_some() { FLAG_SECRET } else { 0 });
    put_name(&mut hello, cluster);
    put_name(&mut hello, me);
    hello.extend_from_slice(&nonce);
    io.write_all(&hello).await?;
    io.flush().await?;

    read_magic(io).await?;
    let flags = io.read_u8().await?;
    let status = io.read_u8().await?;
    if status != OK {
        return Err(HandshakeError::Refused(refusal(status)));
    }
    let server = read_name(io).await?;
    let server_nonce = read_array(io).await?;
    let both = policy.key().filter(|_| flags & FLAG_SECRET != 0);
    let proven = match both {
        Some(key) => {
            let theirs = blake3::Hash::from_bytes(read_array(io).await?);
            // blake3::Hash compares in constant time.
            if theirs != proof(key, b"server", cluster, me, &server, &nonce, &server_nonce) {
                // Tell it, so that its operator sees a peer with another secret too.
                let _ = io.write_all(&[FINISH_YOUR_PROOF_FAILED]).await;
                return Err(HandshakeError::BadProof);
            }
            let mine = proof(key, b"client", cluster, me, &server, &nonce, &server_nonce);
            let mut finish = vec![1];
            finish.extend_from_slice(mine.as_bytes());
            io.write_all(&finish).await?;
            true
        }
        None => {
            if !policy.accepts_unproven() {
                return Err(HandshakeError::Unproven);
            }
            io.write_all(&[0]).await?;
            false
        }
    };
    io.flush().await?;
    match io.read_u8().await? {
        OK => Ok(Peer { id: server, proven }),
        status => Err(HandshakeError::Refused(refusal(status))),
    }
}

/// Runs the server side on an accepted connection. On an error, the peer has been told
/// why (where the handshake got that far) and nothing else.
pub async fn server<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
    policy: &Policy,
    cluster: &str,
    me: &str,
) -> Result<Peer, HandshakeError> {
    read_magic(io).await?;
    let flags = io.read_u8().await?;
    let their_cluster = read_name(io).await?;
    let client = read_name(io).await?;
    let client_nonce = read_array(io).await?;
    let refuse = |status: u8| {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[0, status]);
        out
    };
    if matches!(policy, Policy::Closed) {
        let _ = io.write_all(&refuse(REFUSED_CLOSED)).await;
        return Err(HandshakeError::Closed);
    }
    if their_cluster != cluster {
        let _ = io.write_all(&refuse(REFUSED_CLUSTER)).await;
        return Err(HandshakeError::WrongCluster(their_cluster));
    }
    let both = policy.key().filter(|_| flags & FLAG_SECRET != 0);
    if both.is_none() && !policy.accepts_unproven() {
        let _ = io.write_all(&refuse(REFUSED_NEEDS_SECRET)).await;
        return Err(HandshakeError::Unproven);
    }
    let nonce: [u8; NONCE] = rand::random();
    let mut hello = MAGIC.to_vec();
    hello.push(if policy.key().is_some() { FLAG_SECRET } else { 0 });
    hello.push(OK);
    put_name(&mut hello, me);
    hello.extend_from_slice(&nonce);
    if let Some(key) = both {
        hello.extend_from_slice(proof(key, b"server", cluster, &client, me, &client_nonce, &nonce).as_bytes());
    }
    io.write_all(&hello).await?;
    io.flush().await?;
    let kind = io.read_u8().await?;
    let proven = match (both, kind) {
        (Some(key), 1) => {
            let theirs = blake3::Hash::from_bytes(read_array(io).await?);
            if theirs != proof(key, b"client", cluster, &client, me, &client_nonce, &nonce) {
                let _ = io.write_all(&[REFUSED_PROOF]).await;
                return Err(HandshakeError::BadProof);
            }
            true
        }
        (None, 0) => false,
        (_, FINISH_YOUR_PROOF_FAILED) => return Err(HandshakeError::BadProof),
        (Some(_), 0) => {
            // It saw our flag but would not prove itself.
            if !policy.accepts_unproven() {
                let _ = io.write_all(&[REFUSED_NEEDS_SECRET]).await;
                return Err(HandshakeError::Unproven);
            }
            false
        }
        _ => return Err(HandshakeError::Malformed("an unknown finish")),
    };
    io.write_all(&[OK]).await?;
    io.flush().await?;
    Ok(Peer { id: client, proven })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict(s: &str) -> Policy {
        Policy::Strict(Key::from_secret(s.as_bytes()))
    }

    fn transitional(s: &str) -> Policy {
        Policy::Transitional(Key::from_secret(s.as_bytes()))
    }

    /// Runs both sides over an in-memory pipe.
    async fn pair(
        client_policy: Policy,
        client_cluster: &str,
        server_policy: Policy,
    ) -> (Result<Peer, HandshakeError>, Result<Peer, HandshakeError>) {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let c = async move {
            let r = client(&mut a, &client_policy, client_cluster, "c1").await;
            drop(a);
            r
        };
        let s = async move {
            let r = server(&mut b, &server_policy, "prod", "s1").await;
            drop(b);
            r
        };
        tokio::join!(c, s)
    }

    #[tokio::test]
    async fn who_gets_in_under_each_pair_of_policies() {
        use Policy::*;
        // (client, server, both sides succeed, proven)
        let table: Vec<(Policy, Policy, bool, bool)> = vec![
            (strict("s"), strict("s"), true, true),
            (strict("s"), transitional("s"), true, true),
            (transitional("s"), strict("s"), true, true),
            (transitional("s"), transitional("s"), true, true),
            (strict("s"), strict("other"), false, false),
            (transitional("s"), transitional("other"), false, false),
            (Insecure, strict("s"), false, false),
            (Insecure, transitional("s"), true, false),
            (Insecure, Insecure, true, false),
            (strict("s"), Insecure, false, false),
            (transitional("s"), Insecure, true, false),
            (Insecure, Closed, false, false),
            (strict("s"), Closed, false, false),
            (Closed, Insecure, false, false),
        ];
        for (i, (cp, sp, ok, proven)) in table.into_iter().enumerate() {
            let names = (cp.name(), sp.name());
            let (c, s) = pair(cp, "prod", sp).await;
            assert_eq!(c.is_ok() && s.is_ok(), ok, "row {i} {names:?}: {c:?} / {s:?}");
            if ok {
                assert_eq!(
                    c.unwrap(),
                    Peer {
                        id: "s1".into(),
                        proven
                    }
                );
                assert_eq!(
                    s.unwrap(),
                    Peer {
                        id: "c1".into(),
                        proven
                    }
                );
            }
        }
    }

    #[tokio::test]
    async fn another_cluster_is_refused_and_told_why() {
        let (c, s) = pair(strict("s"), "staging", strict("s")).await;
        assert!(matches!(s, Err(HandshakeError::WrongCluster(ref n)) if n == "staging"));
        assert!(matches!(c, Err(HandshakeError::Refused(r)) if r.contains("another cluster")));
    }

    /// Records what a real client sends, then sends the same bytes again on a new
    /// connection: the server's fresh nonce makes the recorded proof worthless.
    #[tokio::test]
    async fn a_replayed_handshake_fails() {
        let key = strict("s");
        let (mut a, b) = tokio::io::duplex(4096);
        let (mut b_read, mut b_write) = tokio::io::split(b);
        let recorder = tokio::spawn(async move {
            // A man in the middle that relays to a real server and keeps the client's bytes.
            let (mut srv_a, mut srv_b) = tokio::io::duplex(4096);
            let server_side = tokio::spawn(async move { server(&mut srv_b, &strict("s"), "prod", "s1").await });
            let mut recorded = Vec::new();
            let (mut sr, mut sw) = tokio::io::split(&mut srv_a);
            let mut buf = [0u8; 4096];
            // client hello (4 + 1 + 1+4 + 1+2 + 32)
            let mut hello = vec![0u8; 4 + 1 + 5 + 3 + 32];
            b_read.read_exact(&mut hello).await.unwrap();
            recorded.extend_from_slice(&hello);
            sw.write_all(&hello).await.unwrap();
            // server hello: 4 + 1 + 1 + 3 + 32 + 32
            let mut sh = vec![0u8; 4 + 2 + 3 + 32 + 32];
            sr.read_exact(&mut sh).await.unwrap();
            b_write.write_all(&sh).await.unwrap();
            let n = b_read.read(&mut buf).await.unwrap();
            recorded.extend_from_slice(&buf[..n]);
            sw.write_all(&buf[..n]).await.unwrap();
            let v = sr.read_u8().await.unwrap();
            b_write.write_all(&[v]).await.unwrap();
            assert!(server_side.await.unwrap().is_ok());
            recorded
        });
        assert!(client(&mut a, &key, "prod", "c1").await.unwrap().proven);
        let recorded = recorder.await.unwrap();
        // The replay, against a fresh server.
        let (mut x, mut y) = tokio::io::duplex(4096);
        let srv = tokio::spawn(async move { server(&mut y, &strict("s"), "prod", "s1").await });
        x.write_all(&recorded).await.unwrap();
        assert!(matches!(srv.await.unwrap(), Err(HandshakeError::BadProof)));
    }

    /// A server's own proof sent back as a client's (reflection) does not verify.
    #[tokio::test]
    async fn a_reflected_proof_fails() {
        let key = Key::from_secret(b"s");
        let (cn, sn) = ([1u8; 32], [2u8; 32]);
        let server_proof = proof(&key, b"server", "prod", "c1", "s1", &cn, &sn);
        assert_ne!(server_proof, proof(&key, b"client", "prod", "c1", "s1", &cn, &sn));
        // Swapping the ids (the same node on both ends of a reflected connection) changes it too.
        assert_ne!(server_proof, proof(&key, b"server", "prod", "s1", "c1", &cn, &sn));
    }

    #[tokio::test]
    async fn garbage_and_silence_fail_without_panicking() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        a.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(matches!(
            server(&mut b, &strict("s"), "prod", "s1").await,
            Err(HandshakeError::NotHandshake)
        ));
        // Silence: the server waits (the accept loop bounds it with HANDSHAKE_TIMEOUT).
        let (_a, mut b) = tokio::io::duplex(4096);
        tokio::time::pause();
        let silent = tokio::time::timeout(HANDSHAKE_TIMEOUT, server(&mut b, &strict("s"), "prod", "s1")).await;
        assert!(silent.is_err(), "{silent:?}");
    }
}
