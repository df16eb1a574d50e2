//! A node whose disk fills, on a small tmpfs: its writes answer 507
//! `insufficient_storage` and count as failed replicas, its reads and gossip go on, and
//! it takes writes again by itself once space is freed, with no acknowledged write lost.
//!
//! Mounting a tmpfs needs root (or CAP_SYS_ADMIN); without it the tests say they are
//! skipped and pass.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::TestCluster;

/// A tmpfs of its own, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(mb: u64) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Writes `mb` megabytes of random bytes to `path` (tmpfs pages are allocated as written).
fn ballast(path: &Path, mb: usize) {
    let chunk: Vec<u8> = (0..1 << 20).map(|_| rand::random::<u8>()).collect();
    let mut all = Vec::with_capacity(mb << 20);
    for _ in 0..mb {
        all.extend_from_slice(&chunk);
    }
    std::fs::write(path, all).unwrap();
}

/// Incompressible values (RocksDB compresses with LZ4).
fn value(i: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..200 << 10).map(|_| rand::random::<u8>()).collect();
    v[..8].copy_from_slice(&(i as u64).to_be_bytes());
    v
}

/// Three nodes (N = 3, W = 2); n3's data directory is on a tmpfs of `mb` megabytes that
/// also holds a ballast file of `ballast_mb`; n3 keeps `reserve_mb` free.
async fn cluster(fs: &Tmpfs, mb: u64, ballast_mb: usize, reserve_mb: u64) -> (TestCluster, PathBuf) {
    let _ = mb;
    let ballast_file = fs.path().join("ballast");
    ballast(&ballast_file, ballast_mb);
    let mut c = TestCluster::prepare(3, &["--n", "3", "--r", "2", "--w", "2"]);
    c.nodes[2].data_dir = fs.path().join("n3");
    c.nodes[2].extra = vec!["--min-free-mb".into(), reserve_mb.to_string()];
    c.launch().await;
    (c, ballast_file)
}

/// Writes through n3 (which coordinates and stores its own copy first) until it
/// answers 507; every write before is acknowledged. Returns the keys acknowledged and
/// the 507's message.
async fn fill_through_n3(c: &TestCluster) -> (Vec<String>, String) {
    let mut acked = Vec::new();
    for i in 0..2_000 {
        let key = format!("fill-{i}");
        let r = c.put(2, &key, &value(i), "", None).await;
        match r.status {
            204 => acked.push(key),
            507 => {
                let body = r.json();
                assert_eq!(body["error"], "insufficient_storage", "{body}");
                return (acked, body["message"].as_str().unwrap().to_string());
            }
            s => panic!("write {i} through n3 answered {s}: {}", r.text()),
        }
    }
    panic!("n3's disk never filled");
}

async fn full_disk(reserve_mb: u64) {
    let mb = 160;
    let fs = match Tmpfs::mount(mb) {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("skipped: a small disk is a tmpfs of the test's own, and {e} (run as root)");
            return;
        }
    };
    let (c, ballast_file) = cluster(&fs, mb, 40, reserve_mb).await;
    let (acked, refusal) = fill_through_n3(&c).await;
    assert!(acked.len() > 20, "only {} writes before the disk filled", acked.len());
    println!(
        "reserve {reserve_mb} MiB: n3's disk full after {} writes of 200 KiB: {refusal}",
        acked.len()
    );
    if reserve_mb > 0 {
        assert!(refusal.contains("below the reserve"), "{refusal}");
    } else {
        assert!(refusal.to_lowercase().contains("no space"), "{refusal}");
    }

    // Reads go on at n3, from its own copy and the others'.
    for key in acked.iter().step_by(acked.len() / 5) {
        let r = c.get(2, key, "?r=1").await;
        assert_eq!(r.status, 200, "{key} through n3: {}", r.text());
    }
    // n3 counts as a failed replica: W = 2 through n1 works, W = 3 cannot.
    let r = c.put(0, "while-full-w2", b"two of three", "?w=2", None).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = c.put(0, "while-full-w3", b"all three", "?w=3", None).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "quorum_failed");
    // It stays up and gossiping.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(c.status(0, 2).await.as_deref(), Some("alive"));
    assert_eq!(c.status(2, 0).await.as_deref(), Some("alive"));

    // Space freed: n3 takes writes again by itself.
    std::fs::remove_file(&ballast_file).unwrap();
    let freed = Instant::now();
    let deadline = freed + Duration::from_secs(45);
    loop {
        let r = c.put(2, "after-free", b"back", "", None).await;
        if r.status == 204 {
            break;
        }
        assert_eq!(r.status, 507, "{}", r.text());
        assert!(
            Instant::now() < deadline,
            "n3 still refuses writes 45 s after space was freed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "reserve {reserve_mb} MiB: n3 takes writes again {:?} after 40 MiB were freed",
        freed.elapsed()
    );
    // Nothing acknowledged is lost: every key reads back from all three replicas.
    for (i, key) in acked.iter().enumerate() {
        let r = c.get(0, key, "?r=3").await;
        assert_eq!(r.status, 200, "{key}: {}", r.text());
        assert_eq!(&r.body[..8], &(i as u64).to_be_bytes(), "{key}");
    }
    for key in ["while-full-w2", "after-free"] {
        assert_eq!(c.get(1, key, "?r=3").await.status, 200, "{key}");
    }
    drop(c);
}

/// The reserve keeps RocksDB from meeting a full disk: writes are refused while less
/// than 48 MiB are free (RocksDB needs room for a flush and a new log, about 2 x 16
/// MiB), and taken again once more is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_reserve_a_node_refuses_writes_keeps_reading_and_resumes_once_space_is_freed() {
    full_disk(48).await;
}

/// Without a reserve RocksDB meets the full disk itself (ENOSPC appending to its log)
/// and stops taking writes; once space is freed the node resumes it (RocksDB's own
/// recovery, or a reopen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_engine_met_a_full_disk_resumes_once_space_is_freed() {
    full_disk(0).await;
}
