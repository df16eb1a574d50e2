//! Observing and operating real node processes: `/metrics` moves with what the
//! cluster does, the OpenAPI description matches every route and every answer of the
//! real server, the Grafana dashboard only names metrics that exist, and the `dynakv`
//! command line works as a newcomer would use it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use common::{BIN, TestCluster};
use serde_json::Value;

// ---- metrics ----------------------------------------------------------------------------

async fn metrics(c: &TestCluster, i: usize) -> String {
    let r = c.http.get(c.url(i, "/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    r.text().await.unwrap()
}

/// The value of the sample `series` (name and labels exactly as exposed), 0 if absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// The metric family names a text defines (`# TYPE name kind`).
fn families(text: &str) -> BTreeSet<String> {
    family_types(text).into_keys().collect()
}

/// Each family's type.
fn family_types(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_writes_reads_and_read_repairs() {
    let mut c = TestCluster::start(3, &["--anti-entropy-interval-ms", "0"]).await;
    let before = metrics(&c, 0).await;
    let put_204 = r#"dynakv_request_duration_seconds_count{op="put",status="204"}"#;
    let get_200 = r#"dynakv_request_duration_seconds_count{op="get",status="200"}"#;
    let get_404 = r#"dynakv_request_duration_seconds_count{op="get",status="404"}"#;
    for k in 0..5 {
        let r = c.put(0, &format!("m{k}"), b"0123456789", "", None).await;
        assert_eq!(r.status, 204, "{}", r.text());
    }
    assert_eq!(c.get(0, "m0", "").await.status, 200);
    assert_eq!(c.get(0, "nothing", "").await.status, 404);
    let after = metrics(&c, 0).await;
    assert_eq!(sample(&after, put_204) - sample(&before, put_204), 5.0, "{after}");
    assert_eq!(sample(&after, get_200) - sample(&before, get_200), 1.0);
    assert_eq!(sample(&after, get_404) - sample(&before, get_404), 1.0);
    // Only the coordinator counts the client's requests.
    assert_eq!(sample(&metrics(&c, 1).await, put_204), 0.0);
    // Values written: 5 of 10 bytes, in the 16-byte bucket.
    assert_eq!(
        sample(&after, r#"dynakv_value_size_bytes_bucket{le="16.0",op="put"}"#)
            + sample(&after, r#"dynakv_value_size_bytes_bucket{op="put",le="16.0"}"#),
        5.0,
        "{after}"
    );
    // Replica calls to both peers were timed (the slower replica's answer may come after
    // the client's).
    let merges = |text: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("dynakv_rpc_duration_seconds_count{") && l.contains("verb=\"Merge\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let timed = c
        .eventually(Duration::from_secs(5), || async {
            merges(&metrics(&c, 0).await) >= 10.0
        })
        .await;
    assert!(
        timed,
        "5 writes to 2 peers: {} merges timed",
        merges(&metrics(&c, 0).await)
    );
    for name in [
        "dynakv_member_status",
        "dynakv_layout_version",
        "dynakv_rocksdb_memtable_bytes",
        "dynakv_rocksdb_pending_compaction_bytes",
        "process_resident_memory_bytes",
        "process_open_fds",
        "tokio_worker_busy_seconds",
        "tokio_global_queue_depth",
    ] {
        assert!(families(&after).contains(name), "{name} missing:\n{after}");
    }
    assert_eq!(
        sample(&after, r#"dynakv_member_status{member="n2",status="alive"}"#),
        1.0
    );
    assert!(sample(&after, "process_resident_memory_bytes") > 1e6);

    // A stale replica repaired by a read counts on the coordinator of the read.
    c.stop(2);
    assert_eq!(c.put(0, "lag", b"v1", "?w=2", None).await.status, 204);
    let quorum_before = sample(&metrics(&c, 0).await, r#"dynakv_quorum_failures_total{op="write"}"#);
    c.put(0, "lag2", b"v", "?w=3", None)
        .await
        .assert_error(503, "quorum_failed");
    let m = metrics(&c, 0).await;
    assert_eq!(
        sample(&m, r#"dynakv_quorum_failures_total{op="write"}"#) - quorum_before,
        1.0
    );
    assert_eq!(
        sample(&m, r#"dynakv_request_duration_seconds_count{op="put",status="503"}"#),
        1.0
    );
    // The web view's last minute counts it as an error (once its second is complete).
    let counted = c
        .eventually(Duration::from_secs(5), || async {
            let r = c.http.get(c.url(0, "/admin/overview")).send().await.unwrap();
            let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            v["nodes"]["n1"]["errors"].as_f64().unwrap_or(0.0) > 0.0
        })
        .await;
    assert!(counted, "the overview shows no errors after a 503");
    c.restart(2).await;
    c.wait_all_see_all_alive().await;
    let repairs_before = sample(&metrics(&c, 0).await, "dynakv_read_repairs_total");
    assert_eq!(c.get(0, "lag", "?r=3").await.status, 200);
    let repaired = c
        .eventually(Duration::from_secs(10), || async {
            sample(&metrics(&c, 0).await, "dynakv_read_repairs_total") > repairs_before
        })
        .await;
    assert!(repaired, "{}", metrics(&c, 0).await);
    // The metrics route needs no query, and says so.
    let r = c.raw(reqwest::Method::GET, 0, "/metrics?x=1", vec![], &[]).await;
    r.assert_error(400, "bad_parameter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_names_only_metrics_that_exist() {
    let c = TestCluster::start(3, &["--anti-entropy-interval-ms", "300"]).await;
    c.put(0, "k", b"v", "", None).await;
    c.get(0, "k", "").await;
    // Some series exist only once their first event happened: an exchange here.
    let exchanged = c
        .eventually(Duration::from_secs(10), || async {
            metrics(&c, 0)
                .await
                .contains("dynakv_antientropy_last_exchange_age_seconds{")
        })
        .await;
    assert!(exchanged, "no anti-entropy exchange within 10 s");
    let types = family_types(&metrics(&c, 0).await);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/dynakv.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("valid JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "only {} queries", exprs.len());
    let mut used = BTreeSet::new();
    for e in &exprs {
        for name in metric_names(e) {
            used.insert(name);
        }
    }
    assert!(used.len() >= 10, "{used:?}");
    for name in &used {
        // Series carry suffixes their family's name does not: a histogram's
        // _bucket/_count/_sum, a counter's _total. A bare family name of those types
        // selects nothing in Prometheus.
        let suffixed = [
            ("_bucket", "histogram"),
            ("_count", "histogram"),
            ("_sum", "histogram"),
            ("_total", "counter"),
        ]
        .iter()
        .any(|(suffix, kind)| {
            name.strip_suffix(suffix)
                .is_some_and(|f| types.get(f).map(String::as_str) == Some(*kind))
        });
        let kind = types.get(name.as_str()).map(String::as_str);
        assert!(
            suffixed || kind == Some("gauge"),
            "the dashboard queries {name}, which no node exposes as a series (family type {kind:?})"
        );
    }
    let scrape = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/prometheus.yml")).unwrap();
    assert!(scrape.contains("/metrics") && scrape.contains("job_name"), "{scrape}");
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// Names in a PromQL expression that look like ours (`dynakv_*`, `process_*`).
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &expr[i..];
        let starts = rest.starts_with("dynakv_") || rest.starts_with("process_");
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts && boundary {
            let end = rest
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                .unwrap_or(rest.len());
            out.push(rest[..end].to_string());
            i += end;
        } else {
            i += 1;
        }
    }
    out
}

// ---- OpenAPI ----------------------------------------------------------------------------

fn spec() -> Value {
    serde_json::from_str(dynakv_http_api::OPENAPI).expect("openapi.json is JSON")
}

const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "PATCH"];

/// The description lists exactly the router's routes and methods, and every error code
/// the server can answer with the statuses it comes with.
#[test]
fn the_openapi_description_lists_every_route_and_error_code() {
    let spec = spec();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let paths = spec["paths"].as_object().unwrap();
    let routed: BTreeMap<&str, &dynakv_http_api::Route> = dynakv_http_api::ROUTES
        .iter()
        .filter_map(|r| Some((r.openapi?, r)))
        .collect();
    let described: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
    assert_eq!(routed.keys().copied().collect::<BTreeSet<_>>(), described);
    for (path, route) in &routed {
        let ops: BTreeSet<String> = paths[*path]
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| METHODS.contains(&k.to_uppercase().as_str()))
            .map(|k| k.to_uppercase())
            .collect();
        let served: BTreeSet<String> = route.methods.iter().map(|m| m.to_string()).collect();
        assert_eq!(ops, served, "{path}");
    }
    let codes: BTreeSet<&str> = spec["components"]["schemas"]["Error"]["properties"]["error"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let statuses = &spec["x-error-statuses"];
    let mut expected: Vec<(String, u16)> = dynakv_http_api::ApiError::examples()
        .iter()
        .map(|e| (e.code().to_string(), e.status().as_u16()))
        .collect();
    expected.extend(
        dynakv_node::roles::edge::layout_codes()
            .into_iter()
            .chain(dynakv_node::roles::edge::namespace_codes())
            .chain(dynakv_node::roles::namespace::data_codes())
            .map(|(c, s)| (c.to_string(), s)),
    );
    for (code, status) in &expected {
        assert!(
            codes.contains(code.as_str()),
            "error code {code} is not in the description"
        );
        let listed: Vec<u64> = statuses[code]
            .as_array()
            .unwrap_or_else(|| panic!("x-error-statuses has no {code}"))
            .iter()
            .filter_map(Value::as_u64)
            .collect();
        assert!(
            listed.contains(&(*status as u64)),
            "{code} is answered with {status}, described as {listed:?}"
        );
    }
    let known: BTreeSet<&str> = expected.iter().map(|(c, _)| c.as_str()).collect();
    for c in &codes {
        assert!(known.contains(c), "the description lists {c}, which no error has");
    }
}

/// Checks `v` against a schema of the subset the description uses.
fn validate(spec: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r
            .strip_prefix("#/components/schemas/")
            .ok_or(format!("{at}: odd $ref {r}"))?;
        return validate(spec, &spec["components"]["schemas"][name], v, at);
    }
    if let Some(types) = match &schema["type"] {
        Value::String(t) => Some(vec![t.as_str()]),
        Value::Array(ts) => Some(ts.iter().filter_map(Value::as_str).collect()),
        _ => None,
    } {
        let ok = types.iter().any(|t| match *t {
            "null" => v.is_null(),
            "boolean" => v.is_boolean(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "string" => v.is_string(),
            "array" => v.is_array(),
            "object" => v.is_object(),
            _ => false,
        });
        if !ok {
            return Err(format!("{at}: {v} is not {types:?}"));
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(v)
    {
        return Err(format!("{at}: {v} is not one of {allowed:?}"));
    }
    if let Some(obj) = v.as_object() {
        for req in schema["required"].as_array().into_iter().flatten() {
            let k = req.as_str().unwrap();
            if !obj.contains_key(k) {
                return Err(format!("{at}: missing required {k} in {v}"));
            }
        }
        let props = schema["properties"].as_object();
        for (k, val) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate(spec, s, val, &format!("{at}.{k}"))?,
                None => match &schema["additionalProperties"] {
                    Value::Bool(false) => return Err(format!("{at}: unexpected property {k}")),
                    s @ Value::Object(_) => validate(spec, s, val, &format!("{at}.{k}"))?,
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            validate(spec, items, x, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// The described path template a real path falls under.
fn template_of<'a>(spec: &'a Value, path: &str) -> Option<&'a str> {
    let path = path.split('?').next().unwrap();
    spec["paths"]
        .as_object()?
        .keys()
        .map(String::as_str)
        .find(|t| match t.split_once("{key}") {
            Some((prefix, "")) => path.len() > prefix.len() && path.starts_with(prefix),
            _ => *t == path,
        })
}

/// Checks a real answer against the description: the operation exists (or a 405 says it
/// does not), the status is listed, the content type is one described, and a JSON body
/// matches its schema. Unknown routes must answer the `Error` schema.
fn check_answer(spec: &Value, method: &str, path: &str, status: u16, content_type: &str, allow: &str, body: &[u8]) {
    let what = format!("{method} {path} -> {status}");
    if status == 405 {
        // The methods the route serves, as the router's table says.
        let path = path.split('?').next().unwrap();
        let route = dynakv_http_api::ROUTES
            .iter()
            .find(|r| match r.path.split_once("{*") {
                Some((prefix, _)) => path.starts_with(prefix) && path.len() > prefix.len(),
                None => r.path == path,
            })
            .unwrap_or_else(|| panic!("{what}: no route"));
        let mut allowed: Vec<&str> = allow.split(',').map(str::trim).filter(|m| *m != "HEAD").collect();
        allowed.sort_unstable();
        let mut served = route.methods.to_vec();
        served.sort_unstable();
        assert_eq!(allowed, served, "{what}: the Allow header names the methods served");
    }
    if dynakv_http_api::ROUTES
        .iter()
        .any(|r| r.openapi.is_none() && r.path == path)
    {
        // The empty key: served, never described, always refused.
        let v: Value = serde_json::from_slice(body).unwrap();
        let expected = if status == 405 { "method_not_allowed" } else { "bad_key" };
        assert_eq!(v["error"], expected, "{what}");
        assert!(status == 400 || status == 405, "{what}");
        return;
    }
    let Some(template) = template_of(spec, path) else {
        assert_eq!(
            status, 404,
            "{what}: a path the description does not list must be unknown"
        );
        let v: Value = serde_json::from_slice(body).unwrap();
        validate(
            spec,
            &serde_json::json!({"$ref": "#/components/schemas/Error"}),
            &v,
            &what,
        )
        .unwrap();
        return;
    };
    let op = &spec["paths"][template][method.to_lowercase()];
    if op.is_null() {
        assert_eq!(
            status, 405,
            "{what}: the method is not described, so the server must refuse it"
        );
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["error"], "method_not_allowed", "{what}");
        return;
    }
    let resp = &op["responses"][status.to_string()];
    assert!(!resp.is_null(), "{what}: status not described for {template}");
    let mime = content_type.split(';').next().unwrap().trim();
    let content = &resp["content"];
    if content.is_null() {
        assert!(
            body.is_empty(),
            "{what}: described without a body, answered {:?}",
            String::from_utf8_lossy(body)
        );
        return;
    }
    let described = content
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.split(';').next().unwrap().trim() == mime);
    let (_, media) = described.unwrap_or_else(|| panic!("{what}: content type {content_type} not described"));
    if mime == "application/json" {
        let v: Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
        if let Err(e) = validate(spec, &media["schema"], &v, &what) {
            panic!("{e}");
        }
    }
}

/// A request: method, path, body, headers.
type Req = (&'static str, String, Vec<u8>, Vec<(&'static str, &'static str)>);

/// Sends each request to the first node and checks its answer; returns the statuses.
async fn send_all(spec: &Value, c: &TestCluster, requests: Vec<Req>) -> Vec<u16> {
    let mut statuses = Vec::new();
    for (method, path, body, headers) in requests {
        let mut req = c
            .http
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), c.url(0, &path))
            .body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let allow = resp
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = resp.bytes().await.unwrap();
        check_answer(spec, method, &path, status, &ct, &allow, &body);
        statuses.push(status);
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_of_a_real_server_matches_the_openapi_description() {
    let mut c = TestCluster::start(
        3,
        &[
            "--max-value-bytes",
            "1024",
            "--max-siblings",
            "2",
            "--anti-entropy-interval-ms",
            "500",
        ],
    )
    .await;
    let spec = spec();
    let served = c
        .http
        .get(c.url(0, "/openapi.json"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let served: Value = serde_json::from_slice(&served).unwrap();
    let with_n: Value = serde_json::from_str(&dynakv_http_api::openapi_for(3, 2, 2)).unwrap();
    assert_eq!(
        served, with_n,
        "/openapi.json serves the description in the repository, r and w bounded by N, pr and pw by R and W"
    );
    let big = vec![b'x'; 2048];
    let ctx_header: &[(&'static str, &'static str)] = &[("x-dynakv-context", "!!not-a-context!!")];
    // (method, path, body, headers)
    let mut requests: Vec<Req> = vec![
        ("PUT", "/kv/a".into(), b"1".to_vec(), vec![]),
        ("GET", "/kv/a".into(), vec![], vec![]),
        ("GET", "/kv/a?r=1".into(), vec![], vec![]),
        ("GET", "/kv/missing".into(), vec![], vec![]),
        ("PUT", "/kv/s".into(), b"x".to_vec(), vec![]),
        ("PUT", "/kv/s".into(), b"y".to_vec(), vec![]),
        ("GET", "/kv/s".into(), vec![], vec![]),
        ("PUT", "/kv/s".into(), b"z".to_vec(), vec![]),
        ("PUT", "/kv/a?w=9".into(), b"1".to_vec(), vec![]),
        ("GET", "/kv/a?x=1".into(), vec![], vec![]),
        ("PUT", "/kv/a".into(), b"1".to_vec(), ctx_header.to_vec()),
        ("PUT", "/kv/big".into(), big, vec![]),
        ("POST", "/kv/a".into(), vec![], vec![]),
        ("PATCH", "/kv/a".into(), vec![], vec![]),
        ("GET", "/kv".into(), vec![], vec![]),
        ("PUT", "/kv".into(), b"1".to_vec(), vec![]),
        ("DELETE", "/kv/a".into(), vec![], vec![]),
        ("GET", "/kv/a".into(), vec![], vec![]),
        ("GET", "/cluster/members".into(), vec![], vec![]),
        ("GET", "/cluster/members?x".into(), vec![], vec![]),
        ("POST", "/cluster/members".into(), vec![], vec![]),
        ("GET", "/cluster/preflist/a/b".into(), vec![], vec![]),
        ("GET", "/admin/replica/s".into(), vec![], vec![]),
        ("GET", "/admin/replica/none".into(), vec![], vec![]),
        ("GET", "/admin/antientropy".into(), vec![], vec![]),
        ("GET", "/admin/overview".into(), vec![], vec![]),
        ("GET", "/admin/layout".into(), vec![], vec![]),
        ("GET", "/admin/layout/plan".into(), vec![], vec![]),
        ("POST", "/admin/layout/stage".into(), b"nonsense".to_vec(), vec![]),
        (
            "POST",
            "/admin/layout/stage".into(),
            br#"{"join":"nobody"}"#.to_vec(),
            vec![],
        ),
        ("POST", "/admin/layout/stage".into(), vec![b' '; 100_000], vec![]),
        ("POST", "/admin/layout/revert".into(), vec![], vec![]),
        (
            "POST",
            "/admin/layout/commit".into(),
            br#"{"version":99}"#.to_vec(),
            vec![],
        ),
        ("POST", "/admin/layout/commit".into(), b"[]".to_vec(), vec![]),
        ("GET", "/admin/layout/commit".into(), vec![], vec![]),
        ("GET", "/metrics".into(), vec![], vec![]),
        ("GET", "/openapi.json".into(), vec![], vec![]),
        ("GET", "/ui".into(), vec![], vec![]),
        ("GET", "/health".into(), vec![], vec![]),
        ("GET", "/no/such/route".into(), vec![], vec![]),
    ];
    // Every method on every route: what is not served must be a described 405.
    requests.push(("TRACE", "/kv/a".into(), vec![], vec![]));
    requests.push(("TRACE", "/kv".into(), vec![], vec![]));
    for r in dynakv_http_api::ROUTES.iter().filter(|r| !r.methods.is_empty()) {
        let path = r.path.replace("{*key}", "k");
        for m in METHODS {
            if !r.methods.contains(&m) {
                requests.push((m, path.clone(), vec![], vec![]));
            }
        }
    }
    let mut seen = BTreeMap::<u16, usize>::new();
    for s in send_all(&spec, &c, requests).await {
        *seen.entry(s).or_default() += 1;
    }
    // A quorum that cannot be met.
    c.stop(2);
    for s in send_all(&spec, &c, vec![("PUT", "/kv/q?w=3".into(), b"1".to_vec(), vec![])]).await {
        *seen.entry(s).or_default() += 1;
    }
    for status in [200, 204, 300, 400, 404, 405, 409, 413, 503] {
        assert!(seen.contains_key(&status), "no request was answered {status}: {seen:?}");
    }
}

// ---- the command line ---------------------------------------------------------------------

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn dynakv(addr: &str, args: &[&str]) -> Out {
    let out = Command::new(BIN)
        .args(args)
        .env("DYNAKV_ADDR", addr)
        .env_remove("DYNAKV_TOKEN")
        .output()
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_session_with_the_command_line() {
    let mut c = TestCluster::start(3, &["--suspect-after-ms", "500", "--dead-after-ms", "1500"]).await;
    let (n1, n2) = (c.nodes[0].addr.clone(), c.nodes[1].addr.clone());
    let all = c.nodes.iter().map(|n| n.addr.clone()).collect::<Vec<_>>().join(",");
    // Two writes without a context, through two nodes: siblings.
    let o = dynakv(&n1, &["put", "cart", "apple"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.starts_with("wrote cart; context: "), "{}", o.stdout);
    assert_eq!(dynakv(&n2, &["put", "cart", "pear"]).code, 0);
    let o = dynakv(&all, &["get", "cart"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("2 siblings"), "{}", o.stdout);
    assert!(
        o.stdout.contains("apple") && o.stdout.contains("pear") && o.stdout.contains("context: "),
        "{}",
        o.stdout
    );
    let o = dynakv(&all, &["get", "cart", "--json"]);
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["siblings"], true);
    assert_eq!(v["values"].as_array().unwrap().len(), 2);
    // Resolve: read, then write with that read's context.
    let o = dynakv(&all, &["put", "cart", "apple,pear", "--resolve"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("replacing 2 value(s)"), "{}", o.stdout);
    let o = dynakv(&all, &["get", "cart"]);
    assert_eq!((o.code, o.stdout.trim()), (0, "apple,pear"));
    // A value from standard input, and binary output kept as is.
    let mut child = Command::new(BIN)
        .args(["put", "bin", "--file", "-"])
        .env("DYNAKV_ADDR", &all)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&[0, 1, 2, 255]).unwrap();
    assert!(child.wait().unwrap().success());
    let raw = Command::new(BIN)
        .args(["get", "bin"])
        .env("DYNAKV_ADDR", &all)
        .output()
        .unwrap();
    assert_eq!(raw.stdout, vec![0, 1, 2, 255]);
    // Missing keys, bad input, and nodes that are down: distinct exit codes.
    assert_eq!(dynakv(&all, &["get", "nothing-here"]).code, 3);
    let o = dynakv(&all, &["get"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    let o = dynakv(&all, &["put", "k", "v", "--w", "9"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("bad_parameter"), "{}", o.stderr);
    let dead = format!("127.0.0.1:{}", common::free_port());
    let o = dynakv(&dead, &["members"]);
    assert_eq!(o.code, 4, "{}", o.stderr);
    assert!(o.stderr.contains("no node answered"), "{}", o.stderr);
    // The first node down: the next one answers.
    let o = dynakv(&format!("{dead},{n1}"), &["members"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    for id in ["n1", "n2", "n3"] {
        assert!(o.stdout.contains(id), "{}", o.stdout);
    }
    let o = dynakv(&all, &["preflist", "cart"]);
    assert!(
        o.stdout.contains("partition") && o.stdout.contains("(primary)"),
        "{}",
        o.stdout
    );
    let o = dynakv(&all, &["status"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("N=3 R=2 W=2 mv"), "{}", o.stdout);
    // Stop a node and watch it in `status`.
    c.stop(2);
    let seen_dead = c
        .eventually(Duration::from_secs(15), || async {
            let o = dynakv(&n1, &["status"]);
            o.stdout
                .lines()
                .any(|l| l.starts_with("n3 ") && l.contains("dead") && l.contains("unreachable"))
        })
        .await;
    assert!(seen_dead, "{}", dynakv(&n1, &["status"]).stdout);
    let o = dynakv(&all, &["delete", "cart"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(dynakv(&all, &["get", "cart"]).code, 3);
}
