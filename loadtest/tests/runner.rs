//! The runner against a real HTTP server (the bare one) over loopback.

use std::sync::Arc;
use std::time::Duration;

use dynakv_loadtest::runner::{RunConfig, run};
use dynakv_loadtest::target::{Kind, TargetConfig};
use dynakv_loadtest::workload::{Distribution, KeyChooser, Mix};

async fn bare_server() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    tokio::spawn(dynakv_loadtest::bare::serve(addr));
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return addr.to_string();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("bare server did not start");
}

fn config(rate: Option<f64>) -> RunConfig {
    RunConfig {
        mix: Mix::ycsb("a").unwrap().0,
        value_size: "100".parse().unwrap(),
        concurrency: 4,
        rate,
        duration: Some(Duration::from_millis(600)),
        operations: None,
        pin: false,
        progress: false,
    }
}

fn target(addr: String) -> TargetConfig {
    TargetConfig {
        kind: Kind::Bare,
        nodes: vec![addr],
        r: None,
        w: None,
        timeout: Duration::from_secs(2),
        tls: None,
        token: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_records_every_operation() {
    let addr = bare_server().await;
    let keys = Arc::new(KeyChooser::new(Distribution::Zipfian, 1000));
    let (elapsed, rec) = run(&target(addr), keys, config(None)).await.unwrap();
    let s = rec.summary(elapsed);
    assert!(s.total.count > 100, "{} operations", s.total.count);
    assert_eq!(s.total.errors, 0);
    let (reads, updates) = (s.operations["read"].count as f64, s.operations["update"].count as f64);
    assert!(
        (reads / (reads + updates) - 0.5).abs() < 0.1,
        "YCSB A is half reads: {reads} / {updates}"
    );
    assert!(s.total.latency_us.p50 > 0 && s.total.latency_us.p50 <= s.total.latency_us.p99);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_keeps_to_the_rate() {
    let addr = bare_server().await;
    let keys = Arc::new(KeyChooser::new(Distribution::Uniform, 1000));
    let (elapsed, rec) = run(&target(addr), keys, config(Some(500.0))).await.unwrap();
    let s = rec.summary(elapsed);
    // 500/s for 0.6 s: about 300 requests, whatever the server could have done.
    assert!((250..=320).contains(&s.total.count), "{} operations", s.total.count);
    assert_eq!(s.total.errors, 0);
    // How late the tool started each request is reported, once per request.
    let lag = s.dispatch_lag_us.expect("an open loop reports its dispatch lag");
    assert!(lag.p50 <= lag.p99 && lag.p99 <= lag.max, "{lag:?}");
    let closed = run(
        &target(bare_server().await),
        Arc::new(KeyChooser::new(Distribution::Uniform, 10)),
        config(None),
    )
    .await
    .unwrap();
    assert!(
        closed.1.summary(closed.0).dispatch_lag_us.is_none(),
        "closed loops have no schedule"
    );
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_says_how_the_machine_spent_its_time_and_each_second() {
    let addr = bare_server().await;
    let keys = Arc::new(KeyChooser::new(Distribution::Uniform, 1000));
    let cfg = RunConfig {
        duration: Some(Duration::from_millis(1500)),
        ..config(None)
    };
    let (elapsed, rec) = run(&target(addr), keys, cfg).await.unwrap();
    let s = rec.summary(elapsed);
    let whole = s.machine_cpu.expect("the whole run's machine time");
    let sum = |m: &dynakv_loadtest::stats::MachineCpu| m.user + m.system + m.irq + m.iowait + m.idle + m.steal;
    assert!((sum(&whole) - 1.0).abs() < 1e-9, "{whole:?}");
    // A closed loop against a local server keeps this machine busy.
    assert!(whole.user + whole.system + whole.irq > 0.1, "{whole:?}");
    // The first whole second has its own figures; the partial last one may not.
    let first = s.timeseries[0].machine.expect("second 0's machine time");
    assert!((sum(&first) - 1.0).abs() < 1e-9, "{first:?}");
    assert!(first.user + first.system + first.irq > 0.1, "{first:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_nodes_are_counted_as_errors_not_hangs() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let keys = Arc::new(KeyChooser::new(Distribution::Uniform, 10));
    let mut cfg = config(None);
    cfg.duration = Some(Duration::from_millis(200));
    let (elapsed, rec) = run(&target(closed), keys, cfg).await.unwrap();
    let s = rec.summary(elapsed);
    assert_eq!(s.total.count, 0);
    assert!(s.total.errors > 0);
    assert!(
        s.operations
            .values()
            .all(|o| o.errors_by_class.keys().all(|k| k == "connect")),
        "{:?}",
        s.operations
    );
}
