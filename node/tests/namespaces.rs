//! Namespaces against real `dynakv node` processes: created through one node, active
//! once every owner holds it, tuned through another, kept across a restart; every bad
//! request refused with its code; `dynakv ns` on the command line; and their data
//! routes: independent values under each namespace's own quorums and conflict mode,
//! pending while an owner has not heard of them, and `--ns` on the command line.

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

/// A data request to node `i`: `method` on `path` with `body`.
async fn data(c: &TestCluster, i: usize, method: Method, path: &str, body: &str) -> common::Resp {
    c.raw(method, i, path, body.as_bytes().to_vec(), &[]).await
}

/// Waits until every running node among `nodes` shows `name` active.
async fn active_on(c: &TestCluster, nodes: &[usize], name: &str) -> bool {
    c.eventually(Duration::from_secs(15), || async {
        let mut all = true;
        for &i in nodes {
            all &= shown(c, i, name).await["state"] == "active";
        }
        all
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespaces_keys_are_values_of_their_own_with_the_namespaces_settings() {
    let mut c = TestCluster::start(3, &[]).await;
    // The cluster is in mv mode with r = w = 2; `carts` takes the last write, r = 1, w = 3.
    let (status, ns) = call(
        &c,
        0,
        Method::PUT,
        "/admin/namespaces/carts",
        Some(json!({"conflict": "lww", "r": 1, "w": 3})),
    )
    .await;
    assert_eq!(status, 201, "{ns}");
    assert!(active_on(&c, &[0, 1, 2], "carts").await);

    // The same key in two namespaces: two values; `/ns/default/kv/k` is `/kv/k`.
    assert_eq!(data(&c, 0, Method::PUT, "/kv/k", "plain").await.status, 204);
    assert_eq!(data(&c, 1, Method::PUT, "/ns/carts/kv/k", "cart").await.status, 204);
    for i in 0..3 {
        assert_eq!(data(&c, i, Method::GET, "/kv/k", "").await.text(), "plain");
        assert_eq!(data(&c, i, Method::GET, "/ns/default/kv/k", "").await.text(), "plain");
        assert_eq!(data(&c, i, Method::GET, "/ns/carts/kv/k", "").await.text(), "cart");
    }
    // Every replica holds the namespace's value under the namespace, written with w = 3.
    for i in 0..3 {
        let r = data(&c, i, Method::GET, "/admin/replica/k?ns=carts", "").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            (&r.json()["mode"], &r.json()["values"]),
            (&json!("lww"), &json!(["Y2FydA=="]))
        );
        assert_eq!(
            data(&c, i, Method::GET, "/admin/replica/k", "").await.json()["mode"],
            "mv"
        );
    }

    // The namespace's conflict mode: two blind writes leave one value there, siblings in
    // default.
    for v in ["a", "b"] {
        assert_eq!(data(&c, 0, Method::PUT, "/ns/carts/kv/c", v).await.status, 204);
        assert_eq!(data(&c, 0, Method::PUT, "/kv/c", v).await.status, 204);
    }
    let last = data(&c, 2, Method::GET, "/ns/carts/kv/c", "").await;
    assert_eq!((last.status, last.text().as_str()), (200, "b"));
    assert_eq!(
        data(&c, 2, Method::GET, "/kv/c", "").await.status,
        300,
        "siblings in mv"
    );
    // A context from the other mode is refused, and nothing is written.
    let mv_ctx = data(&c, 0, Method::GET, "/kv/c", "").await.context().unwrap();
    let r = c
        .raw(
            Method::PUT,
            0,
            "/ns/carts/kv/c",
            b"x".to_vec(),
            &[("x-dynakv-context", &mv_ctx)],
        )
        .await;
    r.assert_error(400, "bad_context");
    assert_eq!(data(&c, 0, Method::GET, "/ns/carts/kv/c", "").await.text(), "b");

    // Expiry is not served yet: a write asking for one is refused, and nothing stored.
    for path in ["/kv/ttl", "/ns/carts/kv/ttl"] {
        c.raw(Method::PUT, 0, path, b"v".to_vec(), &[("x-dynakv-ttl", "60")])
            .await
            .assert_error(400, "bad_parameter");
        data(&c, 0, Method::GET, path, "").await.assert_error(404, "not_found");
    }

    // The preference list by namespace: the namespace is hashed with the key.
    let pl = data(&c, 0, Method::GET, "/cluster/preflist/k?ns=carts", "")
        .await
        .json();
    assert_eq!(
        (&pl["namespace"], pl["nodes"].as_array().unwrap().len()),
        (&json!("carts"), 3)
    );
    let plain = data(&c, 0, Method::GET, "/cluster/preflist/k", "").await.json();
    assert_eq!(plain["namespace"], "default");

    // Bad and unknown namespaces, on every route that takes one.
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        data(&c, 0, method.clone(), "/ns/nothing/kv/k", "v")
            .await
            .assert_error(404, "unknown_namespace");
        data(&c, 0, method.clone(), "/ns/Bad/kv/k", "v")
            .await
            .assert_error(400, "bad_namespace");
        data(&c, 0, method.clone(), "/ns/carts/kv/", "v")
            .await
            .assert_error(400, "bad_key");
    }
    for path in ["/cluster/preflist/k", "/admin/replica/k"] {
        data(&c, 0, Method::GET, &format!("{path}?ns=nothing"), "")
            .await
            .assert_error(404, "unknown_namespace");
        data(&c, 0, Method::GET, &format!("{path}?ns=a%20b"), "")
            .await
            .assert_error(400, "bad_namespace");
        data(&c, 0, Method::GET, &format!("{path}?x=1"), "")
            .await
            .assert_error(400, "bad_parameter");
    }
    data(&c, 0, Method::GET, "/ns/carts/kv/k?r=4", "")
        .await
        .assert_error(400, "bad_parameter");

    // A namespace with another n is in the table but serves no data yet.
    let (status, _) = call(&c, 0, Method::PUT, "/admin/namespaces/pairs", Some(json!({"n": 2}))).await;
    assert_eq!(status, 201);
    assert!(active_on(&c, &[0, 1, 2], "pairs").await);
    data(&c, 0, Method::PUT, "/ns/pairs/kv/k", "v")
        .await
        .assert_error(409, "namespace_unsupported");
    let pl = data(&c, 0, Method::GET, "/cluster/preflist/k?ns=pairs", "")
        .await
        .json();
    assert_eq!(pl["nodes"].as_array().unwrap().len(), 2, "{pl}");

    // A delete in the namespace leaves default's value alone.
    assert_eq!(data(&c, 0, Method::DELETE, "/ns/carts/kv/k", "").await.status, 204);
    data(&c, 1, Method::GET, "/ns/carts/kv/k", "")
        .await
        .assert_error(404, "not_found");
    assert_eq!(data(&c, 1, Method::GET, "/kv/k", "").await.text(), "plain");

    // With a replica down: carts' w = 3 cannot be met (no fallback in a 3-node cluster),
    // default's w = 2 can; carts' r = 1 reads.
    c.kill9(2);
    data(&c, 0, Method::PUT, "/ns/carts/kv/y", "v")
        .await
        .assert_error(503, "quorum_failed");
    assert_eq!(data(&c, 0, Method::PUT, "/ns/carts/kv/y?w=2", "v").await.status, 204);
    assert_eq!(data(&c, 0, Method::PUT, "/kv/y", "v").await.status, 204);
    assert_eq!(data(&c, 1, Method::GET, "/ns/carts/kv/c", "").await.text(), "b");

    // A new name needs every owner's answer first (so no rival creation exists): with
    // an owner down it is refused, and nothing is created.
    let (status, e) = call(&c, 0, Method::PUT, "/admin/namespaces/late", Some(json!({}))).await;
    assert_eq!((status, &e["error"]), (503, &json!("unavailable")), "{e}");
    assert!(e["message"].as_str().unwrap().contains(c.id(2)), "names the owner: {e}");
    let (status, _) = call(&c, 0, Method::GET, "/admin/namespaces/late", None).await;
    assert_eq!(status, 404);
    c.restart(2).await;
    assert!(
        c.eventually(Duration::from_secs(10), || async {
            call(&c, 0, Method::PUT, "/admin/namespaces/late", Some(json!({})))
                .await
                .0
                == 201
        })
        .await
    );
    // Until every owner holds it, its data routes answer 503 namespace_pending (or, on
    // a node that has not heard of it, 404 unknown_namespace); then they serve.
    let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
    assert!(
        c.eventually(Duration::from_secs(10), || async {
            let r = data(&c, 1, Method::PUT, "/ns/late/kv/k", "v").await;
            if r.status != 204 {
                let code = r.json()["error"].as_str().unwrap_or_default().to_string();
                seen.lock().unwrap().insert((r.status, code));
            }
            r.status == 204
        })
        .await
    );
    let allowed = [
        (503, "namespace_pending".to_string()),
        (404, "unknown_namespace".to_string()),
    ];
    let seen = seen.into_inner().unwrap();
    assert!(seen.iter().all(|s| allowed.contains(s)), "{seen:?}");
    assert!(active_on(&c, &[0, 1, 2], "late").await);
    assert_eq!(data(&c, 2, Method::GET, "/ns/late/kv/k", "").await.text(), "v");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynakv_get_put_and_delete_take_a_namespace() {
    let c = TestCluster::start(3, &[]).await;
    let (status, _) = call(&c, 0, Method::PUT, "/admin/namespaces/carts", Some(json!({}))).await;
    assert_eq!(status, 201);
    assert!(active_on(&c, &[0, 1, 2], "carts").await);
    let addr = c.nodes[0].addr.clone();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dynakv"))
            .args(args)
            .args(["--addr", &addr])
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    assert_eq!(run(&["put", "--ns", "carts", "k", "in-carts"]).0, Some(0));
    assert_eq!(run(&["get", "--ns", "carts", "k"]), (Some(0), "in-carts".to_string()));
    assert_eq!(run(&["get", "k"]).0, Some(3), "default holds nothing for k");
    assert!(run(&["preflist", "--ns", "carts", "k"]).1.contains("partition"));
    assert_eq!(run(&["delete", "--ns", "carts", "k"]).0, Some(0));
    assert_eq!(run(&["get", "--ns", "carts", "k"]).0, Some(3));
    assert_eq!(run(&["get", "--ns", "nothing", "k"]).0, Some(1), "unknown namespace");

    // Node 0 coordinated them: its requests by namespace, and no series for a name that
    // does not exist.
    let text = c
        .http
        .get(c.url(0, "/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |labels: &str| -> u64 {
        let head = format!("dynakv_namespace_requests_total{{{labels}}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(head.as_str()))
            .map_or(0, |v| v.parse().unwrap())
    };
    assert_eq!(count(r#"namespace="carts",op="put",outcome="ok""#), 1, "{text}");
    assert_eq!(count(r#"namespace="carts",op="delete",outcome="ok""#), 1);
    assert_eq!(
        count(r#"namespace="carts",op="get",outcome="ok""#),
        2,
        "found, then not found"
    );
    assert_eq!(count(r#"namespace="default",op="get",outcome="ok""#), 1);
    assert!(!text.contains(r#"namespace="nothing""#), "{text}");
}
