//! Namespaces as cluster metadata, against real `dynakv node` processes: created through
//! one node, active once every owner holds it, tuned through another, kept across a
//! restart; every bad request refused with its code; and `dynakv ns` on the command line.

mod common;

use std::time::Duration;

use common::TestCluster;
use reqwest::Method;
use serde_json::{Value, json};

/// A JSON request to node `i`: (status, body).
async fn call(c: &TestCluster, i: usize, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = c.http.request(method, c.url(i, path));
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    let v = serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("{status}: not JSON: {bytes:?}"));
    (status, v)
}

/// The namespace as node `i` shows it.
async fn shown(c: &TestCluster, i: usize, name: &str) -> Value {
    call(c, i, Method::GET, &format!("/admin/namespaces/{name}"), None)
        .await
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_created_through_one_node_becomes_active_everywhere_and_survives_a_restart() {
    let mut c = TestCluster::start(3, &[]).await;
    let (status, list) = call(&c, 0, Method::GET, "/admin/namespaces", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        list["namespaces"],
        json!([{"name": "default", "n": 3, "r": 2, "w": 2, "pr": 0, "pw": 0, "conflict": "mv",
                "datatype": null, "ttl_s": null, "state": "active"}]),
        "default is the nodes' settings"
    );

    let spec = json!({"n": 2, "r": 1, "pw": 1, "conflict": "lww", "ttl_s": 3600});
    let (status, ns) = call(&c, 0, Method::PUT, "/admin/namespaces/sessions", Some(spec.clone())).await;
    assert_eq!(status, 201, "{ns}");
    assert_eq!(
        (
            &ns["n"],
            &ns["r"],
            &ns["w"],
            &ns["pr"],
            &ns["pw"],
            &ns["conflict"],
            &ns["ttl_s"]
        ),
        (
            &json!(2),
            &json!(1),
            &json!(2),
            &json!(0),
            &json!(1),
            &json!("lww"),
            &json!(3600)
        ),
        "what is not given comes from the settings, within n: {ns}"
    );
    assert!(
        c.eventually(Duration::from_secs(10), || async {
            let mut all = true;
            for i in 0..3 {
                all &= shown(&c, i, "sessions").await["state"] == "active";
            }
            all
        })
        .await,
        "every owner holds it: active on every node"
    );
    // The same definition again: 200, nothing changes; another: 409.
    let (status, again) = call(&c, 1, Method::PUT, "/admin/namespaces/sessions", Some(spec)).await;
    assert_eq!((status, &again["state"]), (200, &json!("active")), "{again}");
    for other in [
        json!({"n": 3, "r": 1, "pw": 1, "conflict": "lww", "ttl_s": 3600}),
        json!({"conflict": "mv"}),
    ] {
        let (status, e) = call(&c, 1, Method::PUT, "/admin/namespaces/sessions", Some(other)).await;
        assert_eq!((status, &e["error"]), (409, &json!("namespace_conflict")), "{e}");
    }

    // Tuned through another node; the latest setting reaches every node.
    let (status, ns) = call(
        &c,
        2,
        Method::PATCH,
        "/admin/namespaces/sessions",
        Some(json!({"r": 2, "ttl_s": null})),
    )
    .await;
    assert_eq!((status, &ns["r"], &ns["ttl_s"]), (200, &json!(2), &Value::Null), "{ns}");
    assert!(
        c.eventually(Duration::from_secs(10), || async {
            let mut all = true;
            for i in 0..3 {
                let ns = shown(&c, i, "sessions").await;
                all &= ns["r"] == 2 && ns["ttl_s"].is_null();
            }
            all
        })
        .await
    );

    // Kept across a restart (stored before it was used).
    c.stop(1);
    c.restart(1).await;
    let ns = shown(&c, 1, "sessions").await;
    assert_eq!((&ns["n"], &ns["r"]), (&json!(2), &json!(2)), "{ns}");
    let (_, list) = call(&c, 1, Method::GET, "/admin/namespaces", None).await;
    let names: Vec<&str> = list["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "sessions"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_namespace_requests_get_their_codes_and_change_nothing() {
    let c = TestCluster::start(3, &[]).await;
    let put = |name: &str, body: &str| {
        let req = c
            .http
            .put(c.url(0, &format!("/admin/namespaces/{name}")))
            .body(body.to_string());
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
            (status, v["error"].as_str().unwrap_or_default().to_string())
        }
    };
    let cases: &[(&str, &str, u16, &str)] = &[
        ("Carts", "{}", 400, "bad_namespace"),
        ("-carts", "{}", 400, "bad_namespace"),
        ("ca%20rts", "{}", 400, "bad_namespace"),
        (&"x".repeat(64), "{}", 400, "bad_namespace"),
        ("carts", "{\"n\": 4}", 400, "bad_parameter"),
        ("carts", "{\"n\": 0}", 400, "bad_parameter"),
        ("carts", "{\"n\": 2, \"r\": 3}", 400, "bad_parameter"),
        ("carts", "{\"r\": 2, \"pr\": 3}", 400, "bad_parameter"),
        ("carts", "{\"w\": 1, \"pw\": 2}", 400, "bad_parameter"),
        ("carts", "{\"ttl_s\": 0}", 400, "bad_parameter"),
        ("carts", "{\"datatype\": \"counter\"}", 400, "bad_parameter"),
        ("carts", "{\"conflict\": \"last\"}", 400, "bad_parameter"),
        ("carts", "{\"n\": 300}", 400, "bad_parameter"),
        ("carts", "{\"bogus\": 1}", 400, "bad_parameter"),
        ("carts", "not json", 400, "bad_parameter"),
        ("carts", "[3, 2]", 400, "bad_parameter"),
        ("carts", "null", 400, "bad_parameter"),
        ("default", "{\"n\": 2}", 409, "namespace_conflict"),
    ];
    for (name, body, status, code) in cases {
        assert_eq!(put(name, body).await, (*status, code.to_string()), "PUT {name} {body}");
    }
    // None of them created anything.
    let (_, list) = call(&c, 0, Method::GET, "/admin/namespaces", None).await;
    assert_eq!(list["namespaces"].as_array().unwrap().len(), 1, "{list}");
    // default with its own definition is found; an empty body takes every default.
    assert_eq!(put("default", "").await, (200, String::new()));
    assert_eq!(put("carts", "").await, (201, String::new()));

    let (status, e) = call(&c, 0, Method::GET, "/admin/namespaces/nothing", None).await;
    assert_eq!((status, &e["error"]), (404, &json!("unknown_namespace")));
    let (status, e) = call(&c, 0, Method::PATCH, "/admin/namespaces/nothing", Some(json!({"r": 1}))).await;
    assert_eq!((status, &e["error"]), (404, &json!("unknown_namespace")));
    for fixed in [json!({"n": 2}), json!({"conflict": "lww"}), json!({"datatype": null})] {
        let (status, e) = call(&c, 0, Method::PATCH, "/admin/namespaces/carts", Some(fixed.clone())).await;
        assert_eq!((status, &e["error"]), (409, &json!("namespace_conflict")), "{fixed}");
    }
    let (status, e) = call(
        &c,
        0,
        Method::PATCH,
        "/admin/namespaces/carts",
        Some(json!([null, null])),
    )
    .await;
    assert_eq!(
        (status, &e["error"]),
        (400, &json!("bad_parameter")),
        "an array is no change: {e}"
    );
    let (status, e) = call(&c, 0, Method::PATCH, "/admin/namespaces/default", Some(json!({"r": 1}))).await;
    assert_eq!((status, &e["error"]), (409, &json!("namespace_conflict")));
    let (status, e) = call(
        &c,
        0,
        Method::PATCH,
        "/admin/namespaces/carts",
        Some(json!({"r": 1, "pr": 2})),
    )
    .await;
    assert_eq!((status, &e["error"]), (400, &json!("bad_parameter")), "{e}");
    let (status, e) = call(&c, 0, Method::GET, "/admin/namespaces?x=1", None).await;
    assert_eq!((status, &e["error"]), (400, &json!("bad_parameter")));
    assert_eq!(
        shown(&c, 0, "carts").await["r"],
        2,
        "the refused changes changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_owns_nothing_refuses_to_create_a_namespace_but_shows_and_tunes_them() {
    let mut c = TestCluster::start(3, &[]).await;
    let spare = c.add_node(&["--auto-join", "false"]).await;
    assert!(
        c.eventually(Duration::from_secs(10), || async {
            call(&c, spare, Method::GET, "/admin/layout", None).await.1["version"] != 0
        })
        .await
    );
    let (status, e) = call(&c, spare, Method::PUT, "/admin/namespaces/carts", Some(json!({}))).await;
    assert_eq!((status, &e["error"]), (409, &json!("owner_required")), "{e}");
    assert!(
        e["message"].as_str().unwrap().contains(c.id(0)),
        "names the owners: {e}"
    );
    let (status, _) = call(&c, 0, Method::PUT, "/admin/namespaces/carts", Some(json!({}))).await;
    assert_eq!(status, 201);
    assert!(
        c.eventually(Duration::from_secs(10), || async {
            shown(&c, spare, "carts").await["state"] == "active"
        })
        .await,
        "the spare hears of it; every owner holds it"
    );
    let (status, ns) = call(
        &c,
        spare,
        Method::PATCH,
        "/admin/namespaces/carts",
        Some(json!({"w": 3})),
    )
    .await;
    assert_eq!((status, &ns["w"]), (200, &json!(3)), "{ns}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynakv_ns_creates_lists_shows_and_sets() {
    let c = TestCluster::start(3, &[]).await;
    let addr = c.nodes[0].addr.clone();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dynakv"))
            .args(args)
            .args(["--addr", &addr, "--json"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&[
        "ns",
        "create",
        "carts",
        "--n",
        "2",
        "--conflict",
        "lww",
        "--ttl-s",
        "60",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&v["name"], &v["n"], &v["conflict"], &v["ttl_s"]),
        (&json!("carts"), &json!(2), &json!("lww"), &json!(60))
    );
    let (code, out, err) = run(&["ns", "set", "carts", "--no-ttl", "--r", "1"]);
    assert_eq!(code, Some(0), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((&v["r"], &v["ttl_s"]), (&json!(1), &Value::Null));
    let (code, out, _) = run(&["ns", "list"]);
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["namespaces"].as_array().unwrap().len(), 2);
    let (code, _, err) = run(&["ns", "show", "nothing"]);
    assert_eq!(code, Some(1), "the cluster answered with an error");
    assert!(err.contains("unknown_namespace"), "{err}");
    let (code, _, err) = run(&["ns", "create", "carts", "--n", "3"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("namespace_conflict"), "{err}");
}
