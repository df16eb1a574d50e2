//! Serving a node for real: RocksDB in the data directory, the network transport, the
//! system clock, HTTP on an already-bound listener; and stopping it cleanly.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::info;

use crate::config::Config;
use crate::env::clock::SystemClock;
use crate::env::storage::{RocksStore, Store};
use crate::env::tls::{ClusterTls, Material};
use crate::local::{Env, TokioSpawn};
use crate::serve::node::Node;
pub use crate::serve::node::StartError;
use crate::transport::net::NetTransport;
use crate::transport::port::{Dialer, Identity};
use crate::transport::stream::Streams;

/// Peers' connections served at once on the cluster port (a link and a few pooled
/// connections per peer).
pub const MAX_CLUSTER_CONNECTIONS: usize = 4096;

/// The two ports a node serves: the client API, and the cluster port for other nodes.
pub struct Listeners {
    pub client: TcpListener,
    pub cluster: TcpListener,
}

/// Connections the kernel holds for a listener until it accepts them. The standard
/// library's (and tokio's) 128 is too few for a burst of clients connecting at once (a
/// pool reconnecting after its connections idled out, or every client after a restart):
/// the kernel drops the SYNs over the queue, and each dropped SYN costs its client a
/// second before it tries again. The kernel caps this at `net.core.somaxconn` (4096 on
/// Linux since 5.4).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a TCP listener on `addr` with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as
/// `TcpListener::bind` sets it, so a restarted node rebinds its port at once).
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::from_std(listen_std(addr)?)
}

/// [`listen`] outside a runtime: for a harness that binds a node's ports before the node
/// starts and hands them over (`--listen-fd`).
pub fn listen_std(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG as i32)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Takes over the listening socket `fd` (inherited from whoever started the node), which
/// must be listening on `addr`. It is checked before the node takes ownership, so a
/// descriptor that is refused (a standard stream, a file) is left as it was.
fn adopt(setting: &'static str, fd: i32, addr: std::net::SocketAddr) -> Result<TcpListener, StartError> {
    use std::os::fd::{BorrowedFd, FromRawFd};
    let bad = |reason: String| StartError::Bind {
        setting,
        addr: fd.to_string(),
        source: std::io::Error::other(reason),
    };
    if fd <= 2 {
        return Err(bad(
            "descriptors 0, 1 and 2 are the standard streams, not sockets".into()
        ));
    }
    // SAFETY: fcntl(F_GETFD) only reads the descriptor's flags; it tells whether `fd` is
    // open before anything borrows it.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(bad("not an open file descriptor".into()));
    }
    // SAFETY: `fd` is open (checked above) and stays open while borrowed here: nothing
    // closes it until the node owns it below.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let socket = socket2::SockRef::from(&borrowed);
    if !socket.is_listener().unwrap_or(false) {
        return Err(bad("not a listening socket".into()));
    }
    let local = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| bad("not a TCP socket".into()))?;
    if local != addr {
        return Err(bad(format!("it listens on {local}, not on {addr}")));
    }
    socket.set_nonblocking(true).map_err(|e| bad(e.to_string()))?;
    // SAFETY: the descriptor was handed to this process for this use and passed every
    // check; from here the listener owns (and closes) it.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    TcpListener::from_std(listener).map_err(|e| bad(e.to_string()))
}

/// Binds the configured listen addresses, or takes over the inherited sockets the
/// settings name (a separate step, so that callers that must know the ports first, such
/// as tests, can bind themselves and call [`run`]).
pub async fn bind(config: &Config) -> Result<Listeners, StartError> {
    let bind = |setting: &'static str, addr: std::net::SocketAddr| async move {
        listen(addr).map_err(|source| StartError::Bind {
            setting,
            addr: addr.to_string(),
            source,
        })
    };
    let client = match config.listen_fd {
        Some(fd) => adopt("listen-fd", fd, config.listen)?,
        None => bind("listen", config.listen).await?,
    };
    let cluster = match config.cluster_listen_fd {
        Some(fd) => adopt("cluster-listen-fd", fd, config.cluster_listen)?,
        None => bind("cluster-listen", config.cluster_listen).await?,
    };
    Ok(Listeners { client, cluster })
}

/// Runs a node serving on `listeners` until `shutdown` resolves, then stops gossip,
/// drains in-flight requests and closes storage.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    config.check_data_dir()?;
    let tls_error = |e: String| StartError::Security(format!("certs-dir: {e}"));
    let material = match &config.certs_dir {
        Some(dir) => Some(Material::load(dir).map_err(tls_error)?),
        None => None,
    };
    let cluster_tls = match &material {
        Some(m) => Some(Arc::new(ClusterTls::new(m).map_err(tls_error)?)),
        None => None,
    };
    let client_tls = match &material {
        Some(m) if config.client_tls => {
            Some(crate::env::tls::client_port_acceptor(m, config.client_cert_required).map_err(tls_error)?)
        }
        _ => None,
    };
    let tokens = match &config.tokens_file {
        Some(path) => {
            Some(Arc::new(dynakv_http_api::auth::Tokens::load(path).map_err(|e| {
                StartError::Security(format!("tokens-file {}: {e}", path.display()))
            })?))
        }
        None => None,
    };
    let db_path = config.data_dir.join("db");
    let store: Arc<dyn Store> = Arc::new(
        RocksStore::open(&db_path, config.sync_writes, config.min_free_bytes).map_err(|source| {
            StartError::Storage {
                dir: config.data_dir.display().to_string(),
                source,
            }
        })?,
    );
    let identity = |id: String| Identity {
        cluster: config.cluster_name.clone(),
        id,
        policy: crate::transport::handshake::Policy::from(&config.cluster_access()),
        tls: cluster_tls.clone(),
        max_frame: config.max_message_bytes,
    };
    // The node's id is known once its identity is loaded (it may be stored, not given).
    let dialer = Dialer::new(identity(String::new()));
    let env = Env {
        transport: Arc::new(NetTransport::new(dialer.clone())),
        clock: Arc::new(SystemClock::new()),
        spawner: Arc::new(TokioSpawn),
        seed: rand::random(),
        commit_thread: config.commit_thread,
    };
    let node = Arc::new(Node::open(&config, store, env).await?);
    dialer.set_id(node.local.id().to_string());
    let local = &node.local;
    info!(
        id = %local.id(),
        listen = %listeners.client.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        advertise = %config.advertise,
        cluster_listen = %listeners.cluster.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        cluster_advertise = %config.cluster_advertise,
        cluster_auth = config.cluster_access().name(),
        cluster_tls = cluster_tls.is_some(),
        client_tls = client_tls.is_some(),
        tokens = tokens.is_some(),
        data_dir = %config.data_dir.display(),
        generation = local.identity.generation,
        n = config.n, r = config.r, w = config.w,
        conflict = %config.conflict,
        "dynakv node serving"
    );
    if config.insecure {
        tracing::warn!(
            "--insecure: the cluster port accepts any host that reaches it; anyone there can read and write every replica"
        );
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let services = {
        let node = node.clone();
        tokio::spawn(async move { node.run_services(stop_rx).await })
    };
    let streams = Streams::default();
    let (cluster_stop_tx, mut cluster_stop) = tokio::sync::watch::channel(false);
    let cluster_port = tokio::spawn(crate::transport::port::serve(
        listeners.cluster,
        node.peer.clone(),
        identity(local.id().to_string()),
        MAX_CLUSTER_CONNECTIONS,
        streams.clone(),
        node.admin.refusals.clone(),
        async move {
            let _ = cluster_stop.wait_for(|s| *s).await;
        },
    ));
    let app = dynakv_http_api::router(node.coordinator.clone(), node.admin.clone(), tokens);
    // Requests in flight at shutdown may finish: each is bounded by the request timeout
    // (and its body by the read timeout).
    let grace = config.request_timeout.max(Duration::from_secs(5));
    let limits = crate::serve::http_server::Limits {
        read_timeout: config.read_timeout,
        max_connections: config.max_connections,
        max_requests_per_connection: config.max_requests_per_connection,
    };
    crate::serve::http_server::serve(listeners.client, app, client_tls, limits, grace, async move {
        shutdown.await;
        info!("shutting down");
    })
    .await;
    // Peers' connections are not requests the HTTP server waits for: stop them too, so
    // that nothing is merged after the clock's bound is settled.
    let _ = cluster_stop_tx.send(true);
    let _ = cluster_port.await;
    let left = streams.close(grace).await;
    if left > 0 {
        tracing::warn!("{left} cluster connections still running after {grace:?}; stopping anyway");
    }
    let _ = stop_tx.send(true);
    let _ = services.await;
    if let Err(e) = node.local.settle_clock() {
        tracing::warn!(error = %e, "cannot record the clock's bound; the next start may wait up to a second");
    }
    if let Err(e) = node.local.record_clean_stop() {
        tracing::warn!(error = %e, "cannot record a clean stop; the next start takes a new actor id");
    }
    info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;
    use std::time::Duration;

    use super::*;

    /// An inherited descriptor is taken only when it is a socket listening on the
    /// address the settings name; one refused is left open, as it was.
    #[tokio::test]
    async fn only_a_socket_listening_on_the_address_is_adopted() {
        use std::os::fd::{AsRawFd, IntoRawFd};
        let addr: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let refused = |r: Result<TcpListener, StartError>| match r {
            Err(e) => e.to_string(),
            Ok(_) => panic!("adopted"),
        };
        assert!(refused(adopt("listen-fd", 1, addr)).contains("standard streams"));
        let file = tempfile::tempfile().unwrap();
        let e = refused(adopt("listen-fd", file.as_raw_fd(), addr));
        assert!(e.contains("listen-fd") && e.contains("not a listening socket"), "{e}");
        // SAFETY: F_GETFD only reads the flags of the descriptor `file` still owns.
        assert_ne!(
            unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFD) },
            -1,
            "the file is still open"
        );
        let other = listen_std(addr).unwrap();
        let bound = other.local_addr().unwrap();
        let e = refused(adopt("listen-fd", other.as_raw_fd(), "127.0.0.1:1".parse().unwrap()));
        assert!(e.contains(&format!("listens on {bound}")), "{e}");
        let fd = other.into_raw_fd();
        let adopted = adopt("listen-fd", fd, bound).expect("a listening socket on the address");
        assert_eq!(adopted.local_addr().unwrap(), bound);
        let client = tokio::net::TcpStream::connect(bound).await.unwrap();
        let (_, peer) = adopted.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
    }

    /// A burst of clients connecting before the node accepts any of them all get
    /// through the handshake at once: none waits out a dropped SYN. (With the default
    /// backlog of 128 the kernel drops the SYNs beyond it, and those connects time out.)
    #[tokio::test]
    async fn a_burst_of_connects_is_queued_not_dropped() {
        // The kernel caps every backlog at net.core.somaxconn: where that is below the
        // burst, no listener can queue it, and there is nothing here to check.
        let cap = std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok();
        if let Some(cap) = cap.and_then(|c| c.trim().parse::<u32>().ok())
            && cap < 301
        {
            eprintln!("skipped: net.core.somaxconn is {cap}, below the 300 connects tried");
            return;
        }
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut held = Vec::new();
        for i in 0..300 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                Ok(stream) => held.push(stream),
                Err(e) => panic!("connect {i} of 300 with none accepted yet: {e}"),
            }
        }
        assert_eq!(held.len(), 300);
        drop(listener);
    }
}
