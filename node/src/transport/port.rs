//! The cluster port: where nodes reach each other, apart from the client API. Every
//! connection is TCP, then TLS when the node has certificates (mutual: both sides show a
//! node certificate signed by the cluster CA), then the [`handshake`], then frames of the
//! replica stream ([`super::stream`]). Nothing is decoded before the handshake succeeds.
//!
//! - [`Dialer`]: opens authenticated connections to peers, backing off (jittered,
//!   exponential) from addresses that failed.
//! - [`serve`]: the accept loop, with a cap on concurrent connections; refusals are
//!   counted by reason and logged once per address per minute, not per attempt.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::Handler;
use super::handshake::{self, HandshakeError, Peer, Policy};
use super::stream::{self, Streams};
use crate::env::tls::ClusterTls;

/// A connection, whatever it runs over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An authenticated connection: plain TCP (split into its two directions without a lock,
/// as the replica stream reads and writes at once), or TLS.
pub enum Conn {
    Tcp(TcpStream),
    Tls(Box<dyn Io>),
}

pub type ConnRead = Box<dyn AsyncRead + Send + Unpin>;
pub type ConnWrite = Box<dyn AsyncWrite + Send + Unpin>;

impl Conn {
    pub fn into_split(self) -> (ConnRead, ConnWrite) {
        match self {
            Conn::Tcp(t) => {
                let (r, w) = t.into_split();
                (Box::new(r), Box::new(w))
            }
            Conn::Tls(t) => {
                let (r, w) = tokio::io::split(t);
                (Box::new(r), Box::new(w))
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(t) => Pin::new(t).poll_read(cx, buf),
            Conn::Tls(t) => Pin::new(t).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(t) => Pin::new(t).poll_write(cx, buf),
            Conn::Tls(t) => Pin::new(t).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(t) => Pin::new(t).poll_flush(cx),
            Conn::Tls(t) => Pin::new(t).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(t) => Pin::new(t).poll_shutdown(cx),
            Conn::Tls(t) => Pin::new(t).poll_shutdown(cx),
        }
    }
}

/// Longest wait for a peer to accept a connection and finish the handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnect backoff: the first retry after about this, doubling per failure...
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// ... up to this (each delay is drawn between half of it and all of it).
const BACKOFF_MAX: Duration = Duration::from_secs(3);
/// One log line per refused address at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// TCP keep-alive probes on cluster connections: a peer that vanishes without closing
/// (power loss, a partition that lasts) does not hold a task and a socket forever.
const KEEPALIVE: socket2::TcpKeepalive = socket2::TcpKeepalive::new()
    .with_time(Duration::from_secs(60))
    .with_interval(Duration::from_secs(10));

/// Who this node is on the cluster port and how it proves it.
#[derive(Clone)]
pub struct Identity {
    pub cluster: String,
    pub id: String,
    pub policy: Policy,
    pub tls: Option<Arc<ClusterTls>>,
    /// Largest frame accepted from a peer, either way.
    pub max_frame: usize,
}

/// Opens connections to peers' cluster ports. Cheap to clone.
#[derive(Clone)]
pub struct Dialer {
    me: Arc<Identity>,
    /// This node's id, once known (a node may load it from storage after the dialer is made).
    id: Arc<std::sync::OnceLock<String>>,
    backoff: Arc<Mutex<HashMap<String, Backoff>>>,
}

#[derive(Clone, Copy, Debug)]
struct Backoff {
    failures: u32,
    until: Instant,
}

/// The delay before the next attempt after `failures` failures in a row.
pub fn backoff_delay(failures: u32, rng: &mut impl Rng) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let cap = exp.min(BACKOFF_MAX);
    cap.mul_f64(rng.random_range(0.5..=1.0))
}

impl Dialer {
    /// A dialer for `me`; an empty `me.id` is set later with [`Dialer::set_id`].
    pub fn new(me: Identity) -> Dialer {
        let id = std::sync::OnceLock::new();
        if !me.id.is_empty() {
            let _ = id.set(me.id.clone());
        }
        Dialer {
            me: Arc::new(me),
            id: Arc::new(id),
            backoff: Arc::default(),
        }
    }

    /// Drops the backoff from `addr`'s past failures.
    pub fn forget_failures(&self, addr: &str) {
        self.backoff.lock().remove(addr);
    }

    pub fn set_id(&self, id: String) {
        let _ = self.id.set(id);
    }

    pub fn max_frame(&self) -> usize {
        self.me.max_frame
    }

    /// Connects to `addr` and runs the handshake; fails at once while backing off from
    /// an address that failed recently.
    pub async fn dial(&self, addr: &str) -> Result<(Conn, Peer), String> {
        if let Some(b) = self.backoff.lock().get(addr)
            && Instant::now() < b.until
        {
            return Err(format!(
                "backing off after {} failed attempts ({:?} left)",
                b.failures,
                b.until.saturating_duration_since(Instant::now())
            ));
        }
        let result = match tokio::time::timeout(CONNECT_TIMEOUT, self.open(addr)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no connection and handshake within {CONNECT_TIMEOUT:?}")),
        };
        let mut backoff = self.backoff.lock();
        match &result {
            Ok(_) => {
                backoff.remove(addr);
            }
            Err(_) => {
                let b = backoff.entry(addr.to_string()).or_insert(Backoff {
                    failures: 0,
                    until: Instant::now(),
                });
                b.failures = b.failures.saturating_add(1);
                b.until = Instant::now() + backoff_delay(b.failures, &mut rand::rng());
            }
        }
        result
    }

    async fn open(&self, addr: &str) -> Result<(Conn, Peer), String> {
        let my_id = self.id.get().ok_or("this node's id is not known yet")?;
        let tcp = connect(addr).await?;
        match (&self.me.tls, &self.me.policy) {
            (None, _) => self.plain(tcp, my_id).await,
            // Transitional: TLS where the peer speaks it, else (a peer without
            // certificates yet) the handshake alone, on a new connection.
            (Some(tls), Policy::Transitional(_)) => match tls.connect(tcp).await {
                Ok(s) => self.finish_tls(tls, s, my_id).await,
                Err(e) => {
                    debug!(peer = addr, error = %e, "no TLS with this peer; trying without (transitional)");
                    self.plain(connect(addr).await?, my_id).await
                }
            },
            (Some(tls), _) => {
                let s = tls.connect(tcp).await.map_err(|e| format!("TLS: {e}"))?;
                self.finish_tls(tls, s, my_id).await
            }
        }
    }

    /// The handshake on a connection without TLS.
    async fn plain(&self, mut tcp: TcpStream, my_id: &str) -> Result<(Conn, Peer), String> {
        let me = &self.me;
        let peer = handshake::client(&mut tcp, &me.policy, &me.cluster, my_id)
            .await
            .map_err(|e| e.to_string())?;
        Ok((Conn::Tcp(tcp), peer))
    }

    /// The handshake inside TLS, and the peer's certificate checked against its id.
    async fn finish_tls(
        &self,
        tls: &ClusterTls,
        mut s: tokio_rustls::client::TlsStream<TcpStream>,
        my_id: &str,
    ) -> Result<(Conn, Peer), String> {
        let me = &self.me;
        let peer = handshake::client(&mut s, &me.policy, &me.cluster, my_id)
            .await
            .map_err(|e| e.to_string())?;
        tls.check_id(s.get_ref().1.peer_certificates(), &peer.id)?;
        Ok((Conn::Tls(Box::new(s)), peer))
    }
}

/// A TCP connection to a peer, with no delay on small writes and keep-alive probes.
async fn connect(addr: &str) -> Result<TcpStream, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&KEEPALIVE);
    Ok(tcp)
}

/// Why connections were refused, by reason, for the admin view.
#[derive(Default)]
pub struct Refusals {
    counts: Mutex<HashMap<&'static str, u64>>,
    logged: Mutex<HashMap<IpAddr, Instant>>,
    accepted: AtomicU64,
}

impl Refusals {
    fn refuse(&self, ip: IpAddr, reason: &'static str, detail: &dyn std::fmt::Display) {
        *self.counts.lock().entry(reason).or_default() += 1;
        let now = Instant::now();
        let mut logged = self.logged.lock();
        // Forget old entries so a scan from many addresses cannot grow the map forever.
        if logged.len() > 4096 {
            logged.retain(|_, t| now.duration_since(*t) < LOG_EVERY);
        }
        let due = logged.get(&ip).is_none_or(|t| now.duration_since(*t) >= LOG_EVERY);
        if due {
            logged.insert(ip, now);
            warn!(peer = %ip, reason, %detail, "refused a cluster connection (logged once a minute per address)");
        }
    }

    /// Refusals so far, by reason.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        self.counts.lock().iter().map(|(k, v)| (*k, *v)).collect()
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// `{"accepted": n, "refused": {reason: n}}`.
    pub fn view(&self) -> dynakv_http_api::admin::ClusterPort {
        dynakv_http_api::admin::ClusterPort {
            accepted: self.accepted.load(Ordering::Relaxed),
            refused: self.counts.lock().iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }
}

/// Serves the cluster port until `shutdown` resolves: at most `max_connections` at once
/// (more are closed as they come), each authenticated before its frames are read.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    me: Identity,
    max_connections: usize,
    streams: Streams,
    refusals: Arc<Refusals>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let me = Arc::new(me);
    if matches!(me.policy, Policy::Closed) {
        warn!(
            "no cluster secret and no --insecure: this node accepts no peer on its cluster port \
             (a cluster of one)"
        );
    } else {
        info!(
            auth = me.policy.name(),
            tls = me.tls.is_some(),
            addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            "cluster port serving"
        );
    }
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, from) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "cannot accept a cluster connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refusals.refuse(from.ip(), "too_many_connections", &max_connections);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&KEEPALIVE);
        let (handler, me, streams, refusals) = (handler.clone(), me.clone(), streams.clone(), refusals.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let conn = match accept(tcp, &me).await {
                Ok((conn, peer)) => {
                    refusals.accepted.fetch_add(1, Ordering::Relaxed);
                    debug!(peer = %peer.id, proven = peer.proven, "cluster connection");
                    conn
                }
                Err((reason, detail)) => return refusals.refuse(from.ip(), reason, &detail),
            };
            let (r, w) = conn.into_split();
            if let Err(e) = stream::serve_split(handler, r, w, me.max_frame, streams).await {
                debug!(error = %e, "cluster connection ended");
            }
        });
    }
}

/// TLS (if configured) and the handshake on an accepted connection.
async fn accept(tcp: TcpStream, me: &Identity) -> Result<(Conn, Peer), (&'static str, String)> {
    let shake = |e: HandshakeError| (e.kind(), e.to_string());
    let work = async {
        let tls = match (&me.tls, &me.policy) {
            // Transitional: TLS from peers that open with it (a TLS record starts with
            // 0x16, the handshake with `D`), the handshake alone from the others.
            (Some(tls), Policy::Transitional(_)) => {
                let mut first = [0u8; 1];
                tcp.peek(&mut first).await.map_err(|e| ("io", e.to_string()))?;
                (first[0] == 0x16).then_some(tls)
            }
            (tls, _) => tls.as_ref(),
        };
        match tls {
            Some(tls) => {
                let mut s = tls.accept(tcp).await.map_err(|e| ("tls", e.to_string()))?;
                let peer = handshake::server(&mut s, &me.policy, &me.cluster, &me.id)
                    .await
                    .map_err(shake)?;
                tls.check_id(s.get_ref().1.peer_certificates(), &peer.id)
                    .map_err(|e| ("certificate_id", e))?;
                Ok((Conn::Tls(Box::new(s)), peer))
            }
            None => {
                let mut s = tcp;
                let peer = handshake::server(&mut s, &me.policy, &me.cluster, &me.id)
                    .await
                    .map_err(shake)?;
                Ok((Conn::Tcp(s), peer))
            }
        }
    };
    tokio::time::timeout(handshake::HANDSHAKE_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            Err((
                "timeout",
                format!("no handshake within {:?}", handshake::HANDSHAKE_TIMEOUT),
            ))
        })
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_a_cap() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for f in 1..40 {
            let d = backoff_delay(f, &mut rng);
            let exp = BACKOFF_BASE.saturating_mul(1 << (f - 1).min(16)).min(BACKOFF_MAX);
            assert!(d >= exp / 2 && d <= exp, "{f}: {d:?} vs {exp:?}");
        }
        assert!(backoff_delay(30, &mut rng) <= BACKOFF_MAX);
    }

    #[tokio::test]
    async fn a_failed_address_is_not_dialled_again_until_its_backoff_passes() {
        // A port nobody listens on: bind, note, drop.
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let dialer = Dialer::new(Identity {
            cluster: "c".into(),
            id: "a".into(),
            policy: Policy::Insecure,
            tls: None,
            max_frame: 1 << 20,
        });
        let first = dialer.dial(&addr).await.err().unwrap();
        assert!(!first.contains("backing off"), "{first}");
        let second = dialer.dial(&addr).await.err().unwrap();
        assert!(second.contains("backing off after 1"), "{second}");
    }
}
