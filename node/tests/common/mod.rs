//! Real-process test harness: `dynakv node` processes on loopback, each with its own
//! temporary data directory and log file. The harness binds each node's two ports itself
//! (free ones below the kernel's ephemeral range) and hands the listening sockets to the node
//! (`--listen-fd`, `--cluster-listen-fd`), so no other process can take a port between
//! its choice and the node's start; it closes its own copies once the node runs, so a
//! stopped node's ports refuse connections as a dead node's would. A restarted node gets
//! its ports bound again before it starts.

#![allow(dead_code)]

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dynakv_http_api::admin::{AntiEntropy, Layout};
use dynakv_node::cli::api::Client;
use dynakv_node::serve::server::listen_std;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_dynakv");

/// A free loopback port below the kernel's ephemeral range (32768 and up on Linux): a
/// port from that range can be taken by any outgoing connection (the nodes make many)
/// before a node binds it, or binds it again at a restart. The harness binds its nodes'
/// ports from these and keeps them bound until the node has them; a test that starts a
/// process of its own gets one already released, which another may take first.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Each test process walks its own stretch, starting where its pid says.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id() % 12_000;
    loop {
        let k = NEXT.fetch_add(1, Ordering::SeqCst);
        let p = 20_000 + ((start + k) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

pub struct TestNode {
    pub id: String,
    /// The node's two ports, bound and not yet handed to it.
    ports: Option<Ports>,
    /// The client port.
    pub addr: String,
    /// The cluster port.
    pub cluster_addr: String,
    /// Flags for this node only, after the cluster's.
    pub extra: Vec<String>,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    /// The node, when the cluster runs its nodes inside the test process.
    task: Option<InProcess>,
}

/// A node served by `server::run` on a task of the test's runtime.
struct InProcess {
    stop: tokio::sync::watch::Sender<bool>,
    served: tokio::task::JoinHandle<Result<(), dynakv_node::serve::server::StartError>>,
}

pub struct TestCluster {
    pub nodes: Vec<TestNode>,
    seeds: String,
    args: Vec<String>,
    pub http: reqwest::Client,
    /// The typed client (one connection pool), asked of one node at a time with `at`.
    api: Client,
    dir: tempfile::TempDir,
    /// The nodes run inside the test process ([`TestCluster::start_in_process`]).
    in_process: bool,
}

/// A node's client and cluster ports, listening, before the node takes them.
struct Ports {
    client: std::net::TcpListener,
    cluster: std::net::TcpListener,
}

impl Ports {
    /// Binds two free loopback ports, below the kernel's ephemeral range (see
    /// [`free_port`]): a port from that range could be the source port of some outgoing
    /// connection by the time a stopped node is restarted on it.
    fn free() -> Ports {
        let bind = || loop {
            if let Ok(l) = listen_std(([127, 0, 0, 1], free_port()).into()) {
                return l;
            }
        };
        Ports {
            client: bind(),
            cluster: bind(),
        }
    }

    /// Binds `client` and `cluster` again (a restart).
    fn at(client: &str, cluster: &str) -> Ports {
        let bind = |a: &str| {
            listen_std(a.parse().unwrap()).unwrap_or_else(|e| panic!("rebinding {a} for a restarted node: {e}"))
        };
        Ports {
            client: bind(client),
            cluster: bind(cluster),
        }
    }

    fn addrs(&self) -> (String, String) {
        (
            self.client.local_addr().unwrap().to_string(),
            self.cluster.local_addr().unwrap().to_string(),
        )
    }
}

/// The descriptors the node finds its ports on.
const CLIENT_FD: i32 = 3;
const CLUSTER_FD: i32 = 4;

/// The cluster secret every harness cluster shares (unless a test gives its nodes
/// `--insecure` or a secret of their own).
pub const SECRET: &str = "test-cluster-secret-0123456789";

/// Settings that make failure detection fast enough for tests.
pub const FAST: &[&str] = &["--gossip-interval-ms", "100", "--request-timeout-ms", "1000"];

impl TestCluster {
    /// Starts `n` nodes with `args` (plus [`FAST`]) and waits until every node sees every
    /// other as alive.
    pub async fn start(n: usize, args: &[&str]) -> TestCluster {
        let mut c = TestCluster::prepare(n, args);
        c.launch().await;
        c
    }

    /// [`TestCluster::start`] with the nodes served inside the test process, on tasks of
    /// its runtime (which must be multi-threaded): the same settings, ports, waits and
    /// helpers, but a node can only be stopped cleanly and restarted, not killed or
    /// paused, and its log goes nowhere.
    pub async fn start_in_process(n: usize, args: &[&str]) -> TestCluster {
        let mut c = TestCluster::prepare(n, args);
        c.in_process = true;
        c.launch().await;
        c
    }

    /// [`TestCluster::start`] in two steps: `prepare` sets the cluster up without
    /// starting a node (so a test can give nodes flags of their own, in `extra`),
    /// `launch` starts them all and waits.
    pub fn prepare(n: usize, args: &[&str]) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<Ports> = (0..n).map(|_| Ports::free()).collect();
        let seeds = ports.iter().map(|p| p.addrs().1).collect::<Vec<_>>().join(",");
        std::fs::write(dir.path().join("cluster.secret"), format!("{SECRET}\n")).unwrap();
        let nodes = ports
            .into_iter()
            .enumerate()
            .map(|(i, ports)| {
                let id = format!("n{}", i + 1);
                let (addr, cluster_addr) = ports.addrs();
                TestNode {
                    data_dir: dir.path().join(&id),
                    log: dir.path().join(format!("{id}.log")),
                    addr,
                    cluster_addr,
                    extra: vec![],
                    id,
                    ports: Some(ports),
                    child: None,
                    task: None,
                }
            })
            .collect();
        let mut all_args: Vec<String> = FAST.iter().map(|s| s.to_string()).collect();
        all_args.extend(args.iter().map(|s| s.to_string()));
        TestCluster {
            nodes,
            seeds,
            args: all_args,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            api: Client::new("127.0.0.1:1", None, Duration::from_secs(10)).expect("a client"),
            dir,
            in_process: false,
        }
    }

    pub async fn launch(&mut self) {
        let n = self.nodes.len();
        for i in 0..n {
            self.spawn(i);
        }
        for i in 0..n {
            self.wait_healthy(i).await;
        }
        self.wait_all_see_all_alive().await;
        let ids: Vec<String> = self.nodes.iter().map(|n| n.id.clone()).collect();
        self.wait_layout(&ids, Duration::from_secs(30)).await;
    }

    /// Starts one more node (seeded with the first nodes) and waits until it serves;
    /// returns its index. With auto-join (the default) it joins the layout on its own.
    pub async fn add_node(&mut self, extra: &[&str]) -> usize {
        let i = self.nodes.len();
        let id = format!("n{}", i + 1);
        let ports = Ports::free();
        let (addr, cluster_addr) = ports.addrs();
        self.nodes.push(TestNode {
            data_dir: self.dir.path().join(&id),
            log: self.dir.path().join(format!("{id}.log")),
            addr,
            cluster_addr,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            id,
            ports: Some(ports),
            child: None,
            task: None,
        });
        self.spawn(i);
        self.wait_healthy(i).await;
        i
    }

    /// The temporary directory the nodes' data and logs live in.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The cluster secret every node gets unless its flags choose otherwise.
    pub fn secret_file(&self) -> PathBuf {
        self.dir.path().join("cluster.secret")
    }

    pub fn id(&self, i: usize) -> &str {
        &self.nodes[i].id
    }

    /// The typed client, asking node `i` only (every wait gives up after 10 s).
    pub fn client(&self, i: usize) -> Client {
        self.api.at(&self.nodes[i].addr)
    }

    /// `GET /admin/layout` on node `i`.
    pub async fn layout(&self, i: usize) -> Option<Layout> {
        self.client(i).layout().await.ok()
    }

    /// Waits until every running node has a settled layout whose owners are `owners`,
    /// reading from it.
    pub async fn wait_layout(&self, owners: &[String], timeout: Duration) {
        let mut want: Vec<String> = owners.to_vec();
        want.sort();
        let running: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.is_running(i)).collect();
        let ok = self
            .eventually(timeout, || async {
                for &i in &running {
                    let Some(l) = self.layout(i).await else {
                        return false;
                    };
                    let mut have: Vec<String> = l.members.iter().map(|m| m.id.clone()).collect();
                    have.sort();
                    if have != want || !l.settled || l.read_version != l.version {
                        return false;
                    }
                }
                true
            })
            .await;
        let mut layouts = String::new();
        for &i in &running {
            layouts.push_str(&format!(
                "{}: {}\n",
                self.nodes[i].id,
                self.layout(i)
                    .await
                    .map(|l| serde_json::to_string(&l).unwrap())
                    .unwrap_or_default()
            ));
        }
        assert!(ok, "the layout did not settle with owners {want:?}:\n{layouts}");
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let mut args: Vec<String> = self.args.iter().chain(&node.extra).cloned().collect();
        let chose = |flag: &str| args.iter().any(|a| a == flag);
        if !chose("--insecure") && !chose("--cluster-secret-file") {
            args.push("--cluster-secret-file".into());
            args.push(self.dir.path().join("cluster.secret").display().to_string());
        }
        let ports = node
            .ports
            .take()
            .unwrap_or_else(|| Ports::at(&node.addr, &node.cluster_addr));
        if self.in_process {
            node.task = Some(serve_in_process(node, &self.seeds, &args, ports));
            return;
        }
        let (client_fd, cluster_fd) = (ports.client.as_raw_fd(), ports.cluster.as_raw_fd());
        let mut cmd = Command::new(BIN);
        cmd.args(["node", "--id", &node.id, "--listen", &node.addr])
            .args(["--cluster-listen", &node.cluster_addr, "--seeds", &self.seeds])
            .args(["--listen-fd", &CLIENT_FD.to_string()])
            .args(["--cluster-listen-fd", &CLUSTER_FD.to_string()])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(&args)
            .env("RUST_LOG", "info,dynakv_node=debug")
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: between fork and exec the child only calls fcntl and dup2, which are
        // async-signal-safe. The listeners are copied above any descriptor the child may
        // hold, then onto 3 and 4 (dup2 clears close-on-exec there, so only the node
        // inherits them, not the other children this test process starts).
        unsafe {
            cmd.pre_exec(move || {
                let client = libc::fcntl(client_fd, libc::F_DUPFD_CLOEXEC, 100);
                let cluster = libc::fcntl(cluster_fd, libc::F_DUPFD_CLOEXEC, 100);
                if client < 0 || cluster < 0 || libc::dup2(client, CLIENT_FD) < 0 || libc::dup2(cluster, CLUSTER_FD) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        // The node holds the ports now; this process lets go of them.
        drop(ports);
        node.child = Some(child);
    }

    pub fn url(&self, i: usize, path: &str) -> String {
        format!("http://{}{}", self.nodes[i].addr, path)
    }

    pub async fn wait_healthy(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(node) = &self.nodes[i].task {
                assert!(
                    !node.served.is_finished(),
                    "node {} (in process) stopped while starting: its settings or storage were refused",
                    self.nodes[i].id
                );
            }
            if let Ok(r) = self.http.get(self.url(i, "/health")).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {} never became healthy; log:\n{}",
                self.nodes[i].id,
                self.log(i)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    /// Status of member `of` as node `at` reports it.
    pub async fn status(&self, at: usize, of: usize) -> Option<String> {
        let v = self.client(at).members().await.ok()?;
        v.members
            .into_iter()
            .find(|m| m.id == self.nodes[of].id)
            .map(|m| m.status)
    }

    /// Polls until `cond` holds or `timeout` passes; returns whether it held.
    pub async fn eventually<F, Fut>(&self, timeout: Duration, mut cond: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if cond().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cond().await
    }

    pub async fn wait_all_see_all_alive(&self) {
        let n = self.nodes.len();
        let running: Vec<usize> = (0..n).filter(|&i| self.is_running(i)).collect();
        let ok = self
            .eventually(Duration::from_secs(20), || async {
                for &a in &running {
                    for &b in &running {
                        if self.status(a, b).await.as_deref() != Some("alive") {
                            return false;
                        }
                    }
                }
                true
            })
            .await;
        assert!(ok, "members did not all become alive; log of n1:\n{}", self.log(0));
    }

    /// SIGSTOP: the node holds its connections but answers nothing until [`Self::resume`].
    pub fn pause(&self, i: usize) {
        self.signal(i, libc::SIGSTOP);
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self, i: usize) {
        self.signal(i, libc::SIGCONT);
    }

    fn signal(&self, i: usize, signal: i32) {
        assert!(
            !self.in_process,
            "a node inside the test process cannot be paused or killed"
        );
        let child = self.nodes[i].child.as_ref().expect("node is running");
        unsafe {
            libc::kill(child.id() as i32, signal);
        }
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill9(&mut self, i: usize) {
        assert!(
            !self.in_process,
            "a node inside the test process cannot be paused or killed"
        );
        if let Some(mut c) = self.nodes[i].child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait for the node to exit; returns how it exited (`None` if it was not
    /// running).
    pub fn stop(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        if let Some(node) = self.nodes[i].task.take() {
            // The stop signal, then wait for `server::run` to return: it stops gossip,
            // drains requests and closes storage first.
            let _ = node.stop.send(true);
            let served = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(tokio::time::timeout(Duration::from_secs(15), node.served))
            });
            let id = &self.nodes[i].id;
            match served {
                Ok(Ok(Ok(()))) => return Some(std::os::unix::process::ExitStatusExt::from_raw(0)),
                Ok(Ok(Err(e))) => panic!("node {id} stopped with an error: {e}"),
                Ok(Err(e)) => panic!("node {id}'s task failed: {e}"),
                Err(_) => panic!("node {id} did not stop within 15 s"),
            }
        }
        if let Some(mut c) = self.nodes[i].child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(status) = c.try_wait().unwrap() {
                    return Some(status);
                }
                if Instant::now() > deadline {
                    c.kill().unwrap();
                    c.wait().unwrap();
                    panic!("node {} ignored SIGTERM", self.nodes[i].id);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        None
    }

    pub async fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_healthy(i).await;
    }

    // ---- client helpers ----

    pub async fn put(&self, i: usize, key: &str, value: &[u8], query: &str, ctx: Option<&str>) -> Resp {
        let mut req = self
            .http
            .put(self.url(i, &format!("/kv/{key}{query}")))
            .body(value.to_vec());
        if let Some(c) = ctx {
            req = req.header("x-dynakv-context", c);
        }
        Resp::from(req.send().await.unwrap()).await
    }

    pub async fn get(&self, i: usize, key: &str, query: &str) -> Resp {
        Resp::from(
            self.http
                .get(self.url(i, &format!("/kv/{key}{query}")))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn delete(&self, i: usize, key: &str, query: &str, ctx: Option<&str>) -> Resp {
        let mut req = self.http.delete(self.url(i, &format!("/kv/{key}{query}")));
        if let Some(c) = ctx {
            req = req.header("x-dynakv-context", c);
        }
        Resp::from(req.send().await.unwrap()).await
    }

    pub async fn replica(&self, i: usize, key: &str) -> Resp {
        Resp::from(
            self.http
                .get(self.url(i, &format!("/admin/replica/{key}")))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn raw(
        &self,
        method: reqwest::Method,
        i: usize,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = self.http.request(method, self.url(i, path)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Resp::from(req.send().await.unwrap()).await
    }
}

/// Starts `node` on a task: the flags a process would get, parsed the same way.
fn serve_in_process(node: &TestNode, seeds: &str, args: &[String], ports: Ports) -> InProcess {
    use clap::Parser;
    use dynakv_node::config::{Config, NodeArgs};
    use dynakv_node::serve::server::{self, Listeners};
    #[derive(Parser)]
    struct Node {
        #[command(flatten)]
        args: NodeArgs,
    }
    let data_dir = node.data_dir.display().to_string();
    let mut argv: Vec<&str> = vec!["node", "--id", &node.id, "--listen", &node.addr];
    argv.extend([
        "--cluster-listen",
        &node.cluster_addr,
        "--seeds",
        seeds,
        "--data-dir",
        &data_dir,
    ]);
    argv.extend(args.iter().map(String::as_str));
    let parsed = Node::try_parse_from(argv).unwrap_or_else(|e| panic!("node {}'s flags: {e}", node.id));
    let config = Config::load(parsed.args).unwrap_or_else(|e| panic!("node {}'s settings: {e}", node.id));
    let listeners = Listeners {
        client: tokio::net::TcpListener::from_std(ports.client).unwrap(),
        cluster: tokio::net::TcpListener::from_std(ports.cluster).unwrap(),
    };
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let served = tokio::spawn(server::run(config, listeners, async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    InProcess { stop, served }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            if let Some(node) = n.task.take() {
                // Stop it and, where the runtime allows waiting, let it close its
                // storage before the data directory is deleted.
                let _ = node.stop.send(true);
                if let Ok(handle) = tokio::runtime::Handle::try_current()
                    && handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
                {
                    let _ = tokio::task::block_in_place(|| {
                        handle.block_on(tokio::time::timeout(Duration::from_secs(10), node.served))
                    });
                }
            }
        }
        if std::thread::panicking() {
            // Keep the logs of a failed test where a developer can read them.
            let keep = std::env::temp_dir().join(format!("dynakv-failed-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&keep);
            for n in &self.nodes {
                let _ = std::fs::copy(&n.log, keep.join(format!("{}.log", n.id)));
            }
            eprintln!("node logs kept in {}", keep.display());
        }
        let _ = &self.dir;
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    async fn from(r: reqwest::Response) -> Resp {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.bytes().await.unwrap().to_vec();
        Resp { status, headers, body }
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn context(&self) -> Option<String> {
        self.headers
            .get("x-dynakv-context")
            .map(|v| v.to_str().unwrap().to_string())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts a JSON error with this status and code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.text());
        let v = self.json();
        assert_eq!(v["error"], code, "body: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "body: {v}");
    }
}

trait JsonValue {
    async fn json_value(self) -> Option<Value>;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> Option<Value> {
        serde_json::from_slice(&self.bytes().await.ok()?).ok()
    }
}

// ---- anti-entropy views ----

impl TestCluster {
    pub async fn antientropy(&self, i: usize) -> Option<AntiEntropy> {
        self.client(i).antientropy().await.ok()
    }

    /// Pending hints on node `i`.
    pub async fn hints_pending(&self, i: usize) -> Option<u64> {
        self.antientropy(i).await?.hints.pending
    }

    /// Whether every partition's replicas (among the running nodes) report the same Merkle
    /// root, and how many partitions were compared.
    pub async fn roots_agree(&self) -> (bool, usize) {
        let mut by_partition: std::collections::BTreeMap<u32, Vec<String>> = Default::default();
        for i in 0..self.nodes.len() {
            if !self.is_running(i) {
                continue;
            }
            let Some(v) = self.antientropy(i).await else {
                return (false, 0);
            };
            for p in v.partitions {
                if p.replica_here {
                    by_partition.entry(p.partition).or_default().push(p.root);
                }
            }
        }
        let agree = by_partition
            .values()
            .all(|roots| roots.windows(2).all(|w| w[0] == w[1]));
        (agree, by_partition.len())
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some() || self.nodes[i].task.is_some()
    }

    /// Preference list of a key, as node 0 sees it.
    pub async fn preflist(&self, key: &str) -> Vec<String> {
        self.client(0).preflist(None, key).await.unwrap().nodes
    }

    pub fn index_of(&self, id: &str) -> usize {
        self.nodes.iter().position(|n| n.id == id).unwrap()
    }
}
