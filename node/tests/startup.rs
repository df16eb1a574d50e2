//! Starting nodes: settings from the environment and a file, refusals of bad settings,
//! and `dynakv dev`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, free_port};

/// Runs `f` with an HTTP client on a runtime of its own (these tests are synchronous).
fn with_http<T>(f: impl AsyncFnOnce(reqwest::Client) -> T) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    rt.block_on(f(http))
}

/// Polls `url` until it answers 2xx or `timeout` passes.
fn wait_http_ok(url: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    with_http(async |http| {
        while Instant::now() < deadline {
            if let Ok(r) = http.get(url).send().await
                && r.status().is_success()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    })
}

/// Waits until the node at `base` owns partitions in a settled layout (a node without
/// seeds founds its own cluster as it starts).
fn wait_owner(base: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    with_http(async |http| {
        while Instant::now() < deadline {
            if let Ok(r) = http.get(format!("{base}/admin/layout")).send().await
                && let Ok(body) = r.bytes().await
                && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
                && v["settled"] == true
                && v["members"].as_array().is_some_and(|m| !m.is_empty())
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    })
}

fn send(method: &str, url: &str, body: &[u8]) -> (u16, String) {
    with_http(async |http| {
        let r = http
            .request(method.parse().unwrap(), url)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

struct Killed(std::process::Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn single_node_configured_by_environment_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("dynakv.toml");
    // The file says n = 1 and r = 1; the environment overrides w; no seeds: a cluster of one.
    std::fs::write(&config, "n = 1\nr = 1\nw = 2\nmax_value_bytes = 10\n").unwrap();
    let child = Command::new(BIN)
        .arg("node")
        .env("DYNAKV_CONFIG", &config)
        .env("DYNAKV_ID", "solo")
        .env("DYNAKV_LISTEN", format!("127.0.0.1:{port}"))
        .env("DYNAKV_CLUSTER_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("DYNAKV_DATA_DIR", dir.path().join("data"))
        .env("DYNAKV_W", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = Killed(child);
    let base = format!("http://127.0.0.1:{port}");
    assert!(wait_http_ok(&format!("{base}/health"), Duration::from_secs(20)));
    assert!(
        wait_owner(&base, Duration::from_secs(20)),
        "the node did not found its cluster"
    );
    assert_eq!(
        send("PUT", &format!("{base}/kv/k"), b"v").0,
        204,
        "w = 1 from the environment"
    );
    assert_eq!(send("GET", &format!("{base}/kv/k"), b"").0, 200);
    // n = 1 from the file bounds per-request quorums; the file's value limit applies.
    assert_eq!(send("GET", &format!("{base}/kv/k?r=2"), b"").0, 400);
    assert_eq!(send("PUT", &format!("{base}/kv/k"), &[b'x'; 11]).0, 413);
    let (_, members) = send("GET", &format!("{base}/cluster/members"), b"");
    assert!(members.contains("\"id\":\"solo\""), "{members}");
}

#[test]
fn invalid_settings_stop_the_node_with_one_line_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d").display().to_string();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let bad_dir = not_a_dir.join("sub").display().to_string();
    let short_secret = dir.path().join("short").display().to_string();
    std::fs::write(&short_secret, "tiny\n").unwrap();
    let good_secret = dir.path().join("good").display().to_string();
    std::fs::write(&good_secret, "a-long-enough-secret-0123456789\n").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--r", "4"], "`r`"),
        (vec!["--w", "0"], "`w`"),
        (vec!["--n", "0"], "`n`"),
        (vec!["--conflict", "crdt"], "`conflict`"),
        (vec!["--data-dir", &bad_dir], "`data-dir`"),
        (vec!["--listen", "127.0.0.1:notaport"], "`listen`"),
        (vec!["--cluster-listen", "127.0.0.1:7001"], "`cluster-listen`"),
        (vec!["--cluster-auth", "maybe"], "`cluster-auth`"),
        (vec!["--cluster-auth", "transitional"], "`cluster-auth`"),
        // Joining other nodes without a secret, unless --insecure says so.
        (vec!["--seeds", "127.0.0.1:9"], "`cluster-secret-file`"),
        (
            vec!["--cluster-secret-file", "/nonexistent/secret"],
            "`cluster-secret-file`",
        ),
        (vec!["--cluster-secret-file", &short_secret], "`cluster-secret-file`"),
        (vec!["--insecure", "--cluster-secret-file", &good_secret], "`insecure`"),
        (vec!["--client-tls", "true"], "`client-tls`"),
        (vec!["--certs-dir", "/nonexistent/certs"], "`certs-dir`"),
        (vec!["--tokens-file", "/nonexistent/tokens"], "`tokens-file`"),
        (vec!["--max-message-bytes", "10"], "`max-message-bytes`"),
        (vec!["--max-connections", "0"], "`max-connections`"),
    ];
    for (args, setting) in cases {
        let mut cmd = Command::new(BIN);
        cmd.arg("node").args(&args);
        if !args.contains(&"--data-dir") {
            cmd.args(["--data-dir", &data]);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(setting), "{args:?}: {err}");
    }
    // An address already in use is reported as a problem of the setting that names it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let free = format!("127.0.0.1:{}", free_port());
    for (args, setting) in [
        (
            ["--listen", addr.as_str(), "--cluster-listen", free.as_str()],
            "`listen`",
        ),
        (
            ["--listen", free.as_str(), "--cluster-listen", addr.as_str()],
            "`cluster-listen`",
        ),
    ] {
        let out = Command::new(BIN)
            .args(["node", "--data-dir", &data])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(setting), "{setting}: {err}");
    }
}

/// `dynakv dev` starts a cluster that serves, and SIGINT stops every node.
#[test]
fn dev_starts_a_cluster_and_ctrl_c_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    // Three consecutive free ports.
    let base = loop {
        let p = free_port();
        // ... and their cluster ports, 1000 higher.
        if p < 64000
            && (1..3).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok())
            && (0..3).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + 1000 + i)).is_ok())
        {
            break p;
        }
    };
    let child = Command::new(BIN)
        .args(["dev", "--nodes", "3", "--base-port", &base.to_string()])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--", "--gossip-interval-ms", "100"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = Killed(child);
    // dev prints "ready." once every node serves and sees the others alive: the first
    // write after it finds its replicas.
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = guard.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut out = String::new();
    let ready_by = Instant::now() + Duration::from_secs(30);
    while !out.contains("ready.") {
        let left = ready_by.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => out.push_str(&(line + "\n")),
            Err(_) => panic!("dev did not say it is ready: {out}"),
        }
    }
    for i in 0..3 {
        assert!(wait_http_ok(
            &format!("http://127.0.0.1:{}/health", base + i),
            Duration::from_secs(1)
        ));
    }
    assert_eq!(send("PUT", &format!("http://127.0.0.1:{base}/kv/x"), b"1").0, 204);
    assert_eq!(send("GET", &format!("http://127.0.0.1:{}/kv/x", base + 2), b"").0, 200);
    unsafe {
        libc::kill(guard.0.id() as i32, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while guard.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "dev did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(guard.0.wait().unwrap().success());
    reader.join().unwrap();
    out.extend(lines.try_iter().map(|l| l + "\n"));
    assert!(out.contains("dynakv dev cluster: 3 nodes"), "{out}");
    assert!(out.contains("all nodes stopped"), "{out}");
    for i in 0..3 {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", base + i)).is_err(),
            "node on port {} still running",
            base + i
        );
    }
}
