//! The web view (`/ui`) in a real headless browser (Chromium, installed by
//! `scripts/deps`): it loads on a running 3-node cluster, shows every member alive,
//! then shows a stopped member as suspect and dead within seconds. Screenshots are kept
//! in `test-artifacts/ui/`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::TestCluster;

fn chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("DYNAKV_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH")?
                .to_str()?
                .split(':')
                .map(|d| Path::new(d).join(name))
                .find(|p| p.is_file())
        })
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../test-artifacts/ui");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the browser on `url` for `budget_ms` of page time (timers run fast, network
/// waits are real) and returns the DOM, or takes a screenshot to `shot`.
fn browse(browser: &Path, url: &str, budget_ms: u64, shot: Option<&Path>) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        "--window-size=1280,1100",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(format!("--virtual-time-budget={budget_ms}"));
    match shot {
        Some(p) => cmd.arg(format!("--screenshot={}", p.display())),
        None => cmd.arg("--dump-dom"),
    };
    cmd.arg(url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("the browser starts");
    // Read its output on threads, so a full pipe cannot block it.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut v);
        v
    });
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the browser did not finish within {BROWSER_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(
        status.success(),
        "the browser failed: {}",
        String::from_utf8_lossy(&err)
    );
    String::from_utf8_lossy(&out).into_owned()
}

/// Longest one browser run may take (a cold start on a loaded machine takes seconds).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

/// The status the page shows for `member`, from its `data-member` row.
fn shown_status(dom: &str, member: &str) -> Option<String> {
    let tag = format!("data-member=\"{member}\"");
    let at = dom.find(&tag)?;
    let row_start = dom[..at].rfind('<')?;
    let row = &dom[row_start..row_start + dom[row_start..].find('>')?];
    let s = row.split("data-status=\"").nth(1)?;
    Some(s[..s.find('"')?].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_view_shows_a_stopped_node_going_suspect_then_dead() {
    let Some(browser) = chromium() else {
        if std::env::var("DYNAKV_SKIP_BROWSER").as_deref() == Ok("1") {
            eprintln!("SKIPPED: no Chromium and DYNAKV_SKIP_BROWSER=1");
            return;
        }
        panic!(
            "no Chromium found (scripts/deps installs it; DYNAKV_CHROMIUM names another; DYNAKV_SKIP_BROWSER=1 skips)"
        );
    };
    let mut c = TestCluster::start(
        3,
        &[
            "--suspect-after-ms",
            "1500",
            // Dead 15 s after the last heartbeat: a window wide enough for several
            // browser runs on a loaded machine to see the suspect state first.
            "--dead-after-ms",
            "15000",
            "--anti-entropy-interval-ms",
            "1000",
        ],
    )
    .await;
    let created = c
        .raw(reqwest::Method::PUT, 0, "/admin/namespaces/carts", b"{}".to_vec(), &[])
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    for k in 0..50 {
        c.put(k % 3, &format!("k{k}"), b"value", "", None).await;
        c.get((k + 1) % 3, &format!("k{k}"), "").await;
    }
    // Rates cover complete seconds: let one pass.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let url = c.url(0, "/ui");
    let dir = artifacts();
    let browser2 = browser.clone();
    let url2 = url.clone();
    let dom = tokio::task::spawn_blocking(move || browse(&browser2, &url2, 2500, None))
        .await
        .unwrap();
    assert!(dom.contains("data-ready=\"1\""), "the page never rendered:\n{dom}");
    for id in ["n1", "n2", "n3"] {
        assert_eq!(shown_status(&dom, id).as_deref(), Some("alive"), "{id}:\n{dom}");
    }
    assert!(dom.contains("data-partition="), "no ring drawn");
    assert!(dom.contains("data-pair=\"n1-n2\""), "no anti-entropy pairs");
    assert!(
        dom.contains("data-namespace=\"default\" data-state=\"active\""),
        "no default namespace:\n{dom}"
    );
    assert!(dom.contains("data-namespace=\"carts\""), "no namespaces panel:\n{dom}");
    let (b, u, shot) = (browser.clone(), url.clone(), dir.join("cluster-healthy.png"));
    tokio::task::spawn_blocking(move || browse(&b, &u, 2500, Some(&shot)))
        .await
        .unwrap();

    c.stop(2);
    let stopped = Instant::now();
    let mut suspect_at = None;
    let mut dead_at = None;
    while dead_at.is_none() && stopped.elapsed() < Duration::from_secs(60) {
        let (b, u) = (browser.clone(), url.clone());
        let dom = tokio::task::spawn_blocking(move || browse(&b, &u, 1500, None))
            .await
            .unwrap();
        match shown_status(&dom, "n3").as_deref() {
            Some("suspect") if suspect_at.is_none() => suspect_at = Some(stopped.elapsed()),
            Some("dead") => {
                dead_at = Some(stopped.elapsed());
                assert!(
                    dom.contains("unreachable"),
                    "a dead node's figures are shown as unreachable"
                );
            }
            _ => {}
        }
        if suspect_at.is_some() && dead_at.is_none() {
            let (b, u, shot) = (browser.clone(), url.clone(), dir.join("node-suspect.png"));
            tokio::task::spawn_blocking(move || browse(&b, &u, 1500, Some(&shot)))
                .await
                .unwrap();
        }
    }
    let suspect_at = suspect_at.expect("the page never showed n3 as suspect");
    let dead_at = dead_at.expect("the page never showed n3 as dead");
    eprintln!("n3 stopped: shown suspect after {suspect_at:?}, dead after {dead_at:?}");
    // Within seconds of what the node itself decides (1.5 s and 15 s after the last
    // heartbeat), given a browser run of a few seconds per look.
    assert!(suspect_at < Duration::from_secs(12), "{suspect_at:?}");
    assert!(dead_at < Duration::from_secs(30), "{dead_at:?}");
    let (b, u, shot) = (browser.clone(), url.clone(), dir.join("node-dead.png"));
    tokio::task::spawn_blocking(move || browse(&b, &u, 1500, Some(&shot)))
        .await
        .unwrap();
    for f in ["cluster-healthy.png", "node-dead.png"] {
        let len = std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 10_000, "{f}: {len} bytes");
    }
}
