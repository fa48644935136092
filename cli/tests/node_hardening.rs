//! A node under hostile or careless clients and crashes: idle and slow
//! sockets, a descriptor limit and thousands of tenants, malformed HTTP,
//! bodies of the wrong shape, bad publisher keys, kill -9 and SIGTERM. Each
//! test drives a real `sovra serve` process over real sockets.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sovra_test_artifacts::{COUNTER, HELLO, SPIN};
use support::{
    Client, Node, OP, install, invoke, publish, publisher, start_node, tenant, tenant_with,
};

/// The open-files limit the tests give the node: the common default.
const OPEN_FILES: u64 = 1024;

/// Raises this test process's own soft open-files limit (it opens more
/// sockets than the node may); returns the limit now in force.
fn raise_own_open_files() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    let _ = setrlimit(Resource::Nofile, raised);
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

fn address(node: &Node) -> String {
    node.url.trim_start_matches("http://").to_owned()
}

/// Sends raw bytes on a fresh connection and reads the answer until the
/// node closes it or `wait` passes.
fn raw_exchange(node: &Node, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(address(node)).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    // The node may answer and close before it has read everything.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status and JSON body of a raw answer; panics unless the body is the
/// node's error JSON.
fn json_error(answer: &str) -> (u16, String) {
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete answer: {answer:?}"));
    let status: u16 = head[9..12].parse().unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let value: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: body {body:?} of {head}"));
    let code = value["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.code in {value}"))
        .to_owned();
    assert!(value["error"]["message"].is_string(), "{value}");
    (status, code)
}

/// A published `hello` and a tenant with it installed: (tenant key).
fn hello_for(client: &Client, tenant_id: &str) -> String {
    tenant_with(client, tenant_id, &[(HELLO, "hello", json!({}))])
}

#[test]
fn idle_sockets_beyond_the_connection_cap_do_not_lock_callers_out() {
    let sockets = 1_100;
    if raise_own_open_files() < sockets + 200 {
        eprintln!("skipped: this process may not open {sockets} sockets");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with_open_files(dir.path(), "", Some(OPEN_FILES));
    let client = node.client();
    let key = hello_for(&client, "acme");

    // More sockets than the node has descriptors, none sending a byte.
    let idle: Vec<TcpStream> = (0..sockets)
        .map(|_| TcpStream::connect(address(&node)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    for _ in 0..3 {
        let started = Instant::now();
        let health = client.get("/healthz", None);
        assert_eq!(health.status, 200, "{}", health.text);
        let greeting = invoke(&client, "acme", &key, "hello", "Bo");
        assert_eq!(greeting.status, 200, "{}", greeting.text);
        assert_eq!(greeting.body["output"], "Hello, Bo!");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "answers took {:?} with {sockets} idle sockets open",
            started.elapsed()
        );
    }
    // The node made room by closing idle sockets, and says how many it keeps.
    let metrics = client.get("/metrics", None).text;
    let max: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sovra_connections_max "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(max < OPEN_FILES as f64, "cap {max} is not below the limit");
    drop(idle);
}

#[test]
fn slow_headers_and_idle_keep_alive_connections_are_closed() {
    let (_dir, node, _) = start_node("[limits]\nheader-timeout = \"500ms\"");
    // Headers that never end.
    let slow = raw_exchange(
        &node,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ",
        Duration::from_secs(5),
    );
    assert!(!slow.contains("200 OK"), "{slow}");
    // A keep-alive connection idle after its answer.
    let mut stream = TcpStream::connect(address(&node)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(4),
        "closed after {waited:?}"
    );
}

#[test]
fn every_error_the_node_sends_is_json() {
    let (_dir, node, _) = start_node("[limits]\nmax-body = \"1KiB\"");
    let wait = Duration::from_secs(10);
    let many_headers: String = (0..300).map(|i| format!("x-h{i}: v\r\n")).collect();
    let huge_header = format!("x-big: {}\r\n", "a".repeat(100 << 10));
    let big_body = "x".repeat(4 << 10);
    let cases: Vec<(String, u16, &str)> = vec![
        (
            "DELETE /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".into(),
            405,
            "method-not-allowed",
        ),
        (
            "GET /v1/tenants/%FF%FE/installs HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
                .into(),
            400,
            "bad-request",
        ),
        (
            "GET /nowhere HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".into(),
            404,
            "no-route",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{many_headers}\r\n"),
            431,
            "headers-too-large",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{huge_header}\r\n"),
            431,
            "headers-too-large",
        ),
        ("NOT HTTP AT ALL\r\n\r\n".into(), 400, "bad-request"),
        (
            format!(
                "POST /v1/tenants HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                 authorization: Bearer {}\r\nconnection: close\r\n\
                 content-length: {}\r\n\r\n{big_body}",
                support::OPERATOR_TOKEN,
                big_body.len()
            ),
            413,
            "too-large",
        ),
    ];
    for (request, status, code) in cases {
        let answer = raw_exchange(&node, request.as_bytes(), wait);
        let first = request.lines().next().unwrap_or_default();
        assert_eq!(
            json_error(&answer),
            (status, code.to_owned()),
            "{first}: {answer}"
        );
        if status == 405 {
            assert!(
                answer.to_ascii_lowercase().contains("allow: get"),
                "{answer}"
            );
        }
    }
    // The node still serves after all that.
    assert_eq!(node.client().get("/healthz", None).status, 200);
}

#[test]
fn bodies_must_be_objects_of_the_documented_fields() {
    let (_dir, _node, client) = start_node("");
    let key = hello_for(&client, "acme");
    let operator = OP;
    let cases: [(&str, &str, Option<&str>, Value); 8] = [
        ("POST", "/v1/tenants", operator, json!(["x"])),
        (
            "POST",
            "/v1/tenants",
            operator,
            json!({"id": "x", "admin": true}),
        ),
        ("POST", "/v1/tenants", operator, json!("x")),
        ("POST", "/v1/tenants/acme/keys", operator, json!(["x"])),
        ("POST", "/v1/publishers", operator, json!(["p", "00"])),
        (
            "PUT",
            "/v1/tenants/acme/installs/hello",
            Some(&key),
            json!({"version": "0.1.0", "grants": [true, true]}),
        ),
        (
            "PUT",
            "/v1/tenants/acme/installs/hello",
            Some(&key),
            json!(["0.1.0"]),
        ),
        (
            "POST",
            "/v1/tenants/acme/installs/hello/invoke",
            Some(&key),
            json!(["Bo"]),
        ),
    ];
    for (method, path, token, body) in cases {
        let reply = client.request(method, path, token, Some(body.clone()));
        assert_eq!(
            (reply.status, reply.code()),
            (422, "bad-json"),
            "{method} {path} {body}: {}",
            reply.text
        );
    }
    assert_eq!(
        client.get("/v1/tenants/x", OP).status,
        404,
        "no tenant was made"
    );
    assert_eq!(
        client.get("/v1/tenants/acme/keys", OP).body["keys"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let install = client.get("/v1/tenants/acme/installs/hello", Some(&key));
    assert_eq!(install.body["install"]["grants"]["kv"], false);
}

#[test]
fn the_operator_naming_a_missing_tenant_gets_404() {
    let (_dir, _node, client) = start_node("");
    hello_for(&client, "acme");
    let body = json!({"version": "0.1.0"});
    for (method, path, body) in [
        ("PUT", "/v1/tenants/nosuch/installs/hello", Some(body)),
        ("GET", "/v1/tenants/nosuch/installs", None),
        ("GET", "/v1/tenants/nosuch/installs/hello", None),
        ("DELETE", "/v1/tenants/nosuch/installs/hello", None),
        ("GET", "/v1/tenants/nosuch/invocations", None),
    ] {
        let reply = client.request(method, path, OP, body);
        assert_eq!(
            (reply.status, reply.code()),
            (404, "no-such-tenant"),
            "{method} {path}: {}",
            reply.text
        );
    }
}

#[test]
fn publisher_keys_that_are_not_valid_ed25519_points_are_refused() {
    let (_dir, _node, client) = start_node("");
    for (name, public_key) in [
        ("all-ones", "ff".repeat(32)),
        ("identity", format!("01{}", "00".repeat(31))),
        ("order-two", format!("ec{}7f", "ff".repeat(30))),
        ("zero", "00".repeat(32)),
    ] {
        let reply = client.post(
            "/v1/publishers",
            OP,
            json!({"name": name, "public_key": public_key}),
        );
        assert_eq!(
            (reply.status, reply.code()),
            (400, "bad-public-key"),
            "{name}: {}",
            reply.text
        );
    }
    assert_eq!(
        client.get("/v1/publishers", OP).body["publishers"],
        json!([])
    );
}

#[test]
fn answered_invocations_are_in_the_history_after_kill_9() {
    let (dir, node, client) = start_node("");
    let key = tenant_with(
        &client,
        "acme",
        &[(COUNTER, "counter", json!({"kv": true}))],
    );

    // Answers from several clients at once, then a crash right after the
    // last one arrives.
    let answered: Vec<String> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..4)
            .map(|_| {
                let (client, key) = (client.clone(), key.clone());
                scope.spawn(move || {
                    (0..25)
                        .map(|_| {
                            let reply = invoke(&client, "acme", &key, "counter", "hits");
                            assert_eq!(reply.status, 200, "{}", reply.text);
                            reply.body["invocation_id"].as_str().unwrap().to_owned()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        calls.into_iter().flat_map(|c| c.join().unwrap()).collect()
    });
    node.crash();

    let node = Node::start(dir.path(), "");
    let history = node
        .client()
        .get("/v1/tenants/acme/invocations?limit=500", Some(&key));
    let recorded = history.column("invocations", "invocation_id");
    let missing: Vec<&String> = answered
        .iter()
        .filter(|id| !recorded.contains(&id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} answered invocations lost: {missing:?}",
        missing.len()
    );
    let count = invoke(&node.client(), "acme", &key, "counter", "hits");
    assert_eq!(count.body["output"], "hits: 101");
}

#[test]
fn while_draining_the_port_stays_open_and_readiness_is_503() {
    let (_dir, node, client) = start_node("");
    let key = tenant_with(
        &client,
        "acme",
        &[
            (HELLO, "hello", json!({})),
            (SPIN, "spin", json!({"timeout_ms": 3000})),
        ],
    );

    let in_flight = {
        let (client, key) = (client.clone(), key.clone());
        std::thread::spawn(move || invoke(&client, "acme", &key, "spin", ""))
    };
    std::thread::sleep(Duration::from_millis(500));
    node.begin_stop();
    std::thread::sleep(Duration::from_millis(300));
    // A fresh connection, as a load balancer's probe makes.
    let ready = node.client().get("/readyz", None);
    assert_eq!(ready.status, 503, "{}", ready.text);
    let refused = invoke(&node.client(), "acme", &key, "hello", "Bo");
    assert_eq!(
        (refused.status, refused.code()),
        (503, "unavailable"),
        "{}",
        refused.text
    );
    let spun = in_flight.join().unwrap();
    assert_eq!(
        (spun.status, spun.code()),
        (504, "timeout"),
        "{}",
        spun.text
    );
    assert!(node.wait().success());
}

#[test]
fn thousands_of_tenants_each_write_kv_under_a_1024_descriptor_limit() {
    let tenants = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with_open_files(dir.path(), "", Some(OPEN_FILES));
    let client = node.client();
    let publisher = publisher(&client, "pub");
    publish(&client, &publisher, COUNTER);
    let failures: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|worker| {
                let client = client.clone();
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    for i in (worker..tenants).step_by(8) {
                        let id = format!("t{i}");
                        let key = tenant(&client, &id);
                        let installed = install(&client, &id, &key, "counter", json!({"kv": true}));
                        assert_eq!(installed.status, 200, "{}", installed.text);
                        let reply = invoke(&client, &id, &key, "counter", "x");
                        if reply.status != 200 || reply.body["output"] != "x: 1" {
                            failures.push(format!("{id}: {} {}", reply.status, reply.text));
                        }
                    }
                    failures
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} failed, first: {:?}",
        failures.len(),
        failures.first()
    );
    // The first tenants' databases were closed to make room; their data is
    // all there when they come back.
    let key = tenant(&client, "late");
    assert!(!key.is_empty());
    for i in [0, 1, 2] {
        let id = format!("t{i}");
        let keys = client.post(&format!("/v1/tenants/{id}/keys"), OP, json!({}));
        let key = keys.body["key"].as_str().unwrap();
        let reply = invoke(&client, &id, key, "counter", "x");
        assert_eq!(reply.body["output"], "x: 2", "{}", reply.text);
    }
}

#[test]
fn refusals_are_audited_in_the_named_tenants_chain_without_the_secret() {
    let (dir, node, client) = start_node("");
    let acme = hello_for(&client, "acme");
    let globex = tenant(&client, "globex");
    let made_up = "sk-made-up-secret-0123456789abcdef";
    assert_eq!(invoke(&client, "acme", made_up, "hello", "x").status, 401);
    assert_eq!(invoke(&client, "acme", &globex, "hello", "x").status, 403);
    assert_eq!(client.get("/v1/tenants", None).status, 401);
    let history = client.get("/v1/tenants/acme/invocations", Some(&acme));
    let outcomes = history.column("invocations", "outcome");
    assert!(outcomes.contains(&"refused-401"), "{outcomes:?}");
    assert!(outcomes.contains(&"refused-403"), "{outcomes:?}");
    node.stop();
    let audit = std::fs::read(dir.path().join("data/runtime/audit.db")).unwrap();
    let audit = String::from_utf8_lossy(&audit);
    for secret in [made_up, globex.as_str()] {
        assert!(
            !audit.contains(secret),
            "a presented secret reached the audit log"
        );
    }
    let verified = support::sovra(&[
        "audit",
        "verify",
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
    ]);
    let report = String::from_utf8_lossy(&verified.stdout);
    assert!(verified.status.success(), "{report}");
    assert!(report.contains("intact  _node"), "{report}");
    assert!(report.contains("intact  acme"), "{report}");
}

/// One grants policy: an agent whose manifest asks for a 700 ms limit gets
/// it under `sovra run` and on a node alike, unless the grant says otherwise.
#[test]
fn run_and_serve_give_the_same_effective_limits() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("local");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sovra"))
        .args(["run", SPIN, "--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap();
    let local = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(4), "{local}");
    assert!(local.contains("700ms"), "{local}");

    let node = Node::start(dir.path(), "");
    let client = node.client();
    let key = tenant(&client, "acme");
    publish(&client, &publisher(&client, "pub"), SPIN);
    assert_eq!(
        install(&client, "acme", &key, "spin", json!({})).status,
        200
    );
    let served = invoke(&client, "acme", &key, "spin", "");
    assert_eq!(served.status, 504, "{}", served.text);
    assert!(served.message().contains("700ms"), "{}", served.text);
    // The grant still decides when it says something.
    assert_eq!(
        install(&client, "acme", &key, "spin", json!({"timeout_ms": 300})).status,
        200
    );
    let granted = invoke(&client, "acme", &key, "spin", "");
    assert!(granted.message().contains("300ms"), "{}", granted.text);
}
