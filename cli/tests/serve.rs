//! `sovra serve` end to end: a real node process on loopback, a real HTTP
//! client, real signed plugins compiled by the node's worker process.

mod support;

use serde_json::{Value, json};
use sovra_server::signature::PublisherKey;
use sovra_test_artifacts::{COUNTER, HELLO, HTTP_FETCH, NOTES, SPIN};
use support::{
    Node, OP, OPERATOR_TOKEN, fails_with, install, invoke, publish, publisher, signature, sovra,
    start_node, succeeds, tenant, tenant_with, text,
};

#[test]
fn publish_review_install_invoke_and_find_it_all_after_a_restart() {
    let (dir, node, client) = start_node("");
    assert_eq!(client.get("/healthz", None).status, 200);
    assert_eq!(client.get("/readyz", None).status, 200);
    let acme = tenant(&client, "acme");

    // The publisher's side, through the CLI: keygen, sign, submit.
    let prefix = dir.path().join("publisher");
    let out = sovra(&["plugin", "keygen", "--out", prefix.to_str().unwrap()]);
    succeeds(&out);
    let public = std::fs::read_to_string(dir.path().join("publisher.pub")).unwrap();
    let registered = client.post(
        "/v1/publishers",
        OP,
        json!({"name": "greeters", "public_key": public.trim()}),
    );
    assert_eq!(registered.status, 201, "{}", registered.text);
    let hello = dir.path().join("hello.wasm");
    std::fs::copy(HELLO, &hello).unwrap();
    let key_file = dir.path().join("publisher.key");
    let out = sovra(&[
        "plugin",
        "sign",
        hello.to_str().unwrap(),
        "--key",
        key_file.to_str().unwrap(),
    ]);
    succeeds(&out);
    let out = sovra(&[
        "plugin",
        "submit",
        hello.to_str().unwrap(),
        "--node",
        &node.url,
    ]);
    succeeds(&out);
    assert!(text(&out.stdout).contains("submitted hello@0.1.0"));

    // Pending: invisible to tenants, not installable.
    let listed = client.get("/v1/plugins", Some(&acme));
    assert_eq!(listed.body["plugins"], json!([]));
    let early = install(&client, "acme", &acme, "hello", json!({}));
    assert_eq!(early.status, 404, "{}", early.text);
    let approved = client.post("/v1/plugins/hello/0.1.0/approve", OP, json!({}));
    assert_eq!(approved.status, 200, "{}", approved.text);
    let listed = client.get("/v1/plugins", Some(&acme));
    assert_eq!(listed.body["plugins"][0]["name"], "hello");

    let installed = install(&client, "acme", &acme, "hello", json!({}));
    assert_eq!(installed.status, 200, "{}", installed.text);
    let reply = invoke(&client, "acme", &acme, "hello", "Ada");
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["output"], "Hello, Ada!");

    // A stateful agent, streamed: its log line arrives as an event, then
    // the result.
    let publisher = publisher(&client, "counters");
    publish(&client, &publisher, COUNTER);
    let installed = install(&client, "acme", &acme, "counter", json!({"kv": true}));
    assert_eq!(installed.status, 200, "{}", installed.text);
    let events = client.invoke_stream(
        "/v1/tenants/acme/installs/counter/invoke",
        &acme,
        json!({"input": "apples"}),
    );
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["log", "result"], "{events:?}");
    assert_eq!(events[0].1["message"], "counted");
    assert_eq!(events[0].1["fields"]["key"], "apples");
    assert_eq!(events[1].1["output"], "apples: 1");

    let history = client.get("/v1/tenants/acme/invocations", Some(&acme));
    assert_eq!(history.status, 200);
    let records = history.body["invocations"].as_array().unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["agent"], "counter");
    assert_eq!(records[0]["outcome"], "ok");
    // Anyone may scrape node-wide figures; only the operator sees tenants.
    let metrics = client.get("/metrics", None).text;
    assert!(
        metrics.contains("sovra_invocations_total{outcome=\"ok\"} 2"),
        "{metrics}"
    );
    assert!(!metrics.contains("acme"), "{metrics}");
    assert_eq!(client.get("/metrics/tenants", None).status, 401);
    assert_eq!(client.get("/metrics/tenants", Some(&acme)).status, 403);
    let metrics = client.get("/metrics/tenants", OP).text;
    assert!(
        metrics.contains("sovra_tenant_invocations_total{tenant=\"acme\",outcome=\"ok\"} 2"),
        "{metrics}"
    );

    // Restart: keys, installs, tenant data and history are all still there.
    assert!(node.stop().success());
    let node = Node::start(dir.path(), "");
    let client = node.client();
    let reply = invoke(&client, "acme", &acme, "counter", "apples");
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["output"], "apples: 2");
    let history = client.get("/v1/tenants/acme/invocations?limit=10", Some(&acme));
    assert_eq!(history.body["invocations"].as_array().unwrap().len(), 3);
    let log = client.get("/v1/log", OP);
    assert_eq!(log.body["intact"], true, "{}", log.text);
    let data = node.data();
    drop(node);

    // The publisher log verifies offline, and tampering is caught.
    let verify_log = [
        "plugin",
        "log",
        "--data-dir",
        data.to_str().unwrap(),
        "--verify",
    ];
    let out = sovra(&verify_log);
    succeeds(&out);
    let shown = text(&out.stdout);
    assert!(
        shown.contains("approved") && shown.contains("verified: 6 entries"),
        "{shown}"
    );
    let db = rusqlite_connection(&data);
    db.execute(
        "UPDATE publisher_log SET subject = 'hello@9.9.9' WHERE action = 'approved'",
        [],
    )
    .unwrap();
    drop(db);
    let out = sovra(&verify_log);
    fails_with(&out, 3, "tampered");
}

/// The node database, opened the way an attacker with disk access and the
/// node key would.
fn rusqlite_connection(data: &std::path::Path) -> rusqlite::Connection {
    support::keyed_connection(data, &data.join("node.db"), "node")
}

#[test]
fn every_bad_submission_is_refused_by_name_and_leaves_nothing_behind() {
    let (_dir, node, client) = start_node("[limits]\nmax-plugin = \"4MiB\"");
    let key = publisher(&client, "acme-labs");
    let hello = std::fs::read(HELLO).unwrap();
    let sign = |bytes: &[u8]| signature(&key, bytes);

    let check = |reply: support::Reply, status: u16, code: &str, needle: &str| {
        assert_eq!(reply.status, status, "{code}: {}", reply.text);
        assert_eq!(reply.code(), code, "{}", reply.text);
        assert!(
            reply.message().contains(needle),
            "{code}: {:?} lacks {needle:?}",
            reply.message()
        );
    };
    let fake_signature = serde_json::to_string(&key.sign(b"x", b"y")).unwrap();
    check(
        client.submit(b"this is not wasm", Some(&fake_signature)),
        422,
        "not-wasm",
        "not a WebAssembly file",
    );
    check(
        client.submit(b"\0asm\x01\0\0\0", Some(&fake_signature)),
        422,
        "core-module",
        "core WebAssembly module",
    );
    // An empty component: well formed, but no sovra world.
    check(
        client.submit(b"\0asm\x0d\0\x01\0", Some(&fake_signature)),
        422,
        "wrong-world",
        "sovra",
    );
    let http = std::fs::read(HTTP_FETCH).unwrap();
    check(
        client.submit(&http, Some(&sign(&http))),
        422,
        "forbidden-import",
        "wasi:http",
    );
    // A manifest edited after the build: its version is no longer semver.
    // (The custom section comes last; the data segment holds a copy too.)
    let mut bad_manifest = hello.clone();
    let at = rfind(&bad_manifest, b"version = \"0.1.0\"").expect("the manifest is embedded");
    bad_manifest[at + 15] = b'x';
    check(
        client.submit(&bad_manifest, Some(&fake_signature)),
        422,
        "bad-manifest",
        "version",
    );
    check(
        client.submit(&hello, None),
        400,
        "missing-signature",
        "Sovra-Signature",
    );
    check(
        client.submit(&hello, Some("{not json")),
        400,
        "bad-signature",
        "not a sovra signature",
    );
    let stranger = PublisherKey::generate().unwrap();
    check(
        client.submit(&hello, Some(&signature(&stranger, &hello))),
        403,
        "unknown-publisher",
        "not registered",
    );
    // A registered key's signature over other bytes.
    check(
        client.submit(&hello, Some(&sign(&std::fs::read(COUNTER).unwrap()))),
        403,
        "bad-signature",
        "digest",
    );
    let huge = vec![0u8; 5 << 20];
    // The node answers 413 from the declared length without reading the
    // body, so the client may see the answer or a cut upload.
    match client.try_submit(&huge, Some(&fake_signature)) {
        Ok(too_large) => {
            assert_eq!(too_large.status, 413, "{}", too_large.text);
            assert_eq!(too_large.code(), "too-large");
        }
        Err(ureq::Error::Io(e)) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "{e}"
        ),
        Err(e) => panic!("{e}"),
    }
    // The node closes a connection whose body it refused to read; go on on
    // a fresh one.
    let client = node.client();

    // Nothing above was stored.
    assert_eq!(client.get("/v1/plugins", OP).body["plugins"], json!([]));
    let artifacts = node.data().join("artifacts/sha256");
    assert_eq!(std::fs::read_dir(&artifacts).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_dir(node.data().join("staging"))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );

    // The good one goes in once; the same version again is a conflict, and
    // another publisher cannot take the name.
    let accepted = client.submit(&hello, Some(&sign(&hello)));
    assert_eq!(accepted.status, 201, "{}", accepted.text);
    assert_eq!(accepted.body["plugin"]["state"], "pending");
    check(
        client.submit(&hello, Some(&sign(&hello))),
        409,
        "duplicate-version",
        "immutable",
    );
    let rival = publisher(&client, "rival");
    check(
        client.submit(&hello, Some(&signature(&rival, &hello))),
        403,
        "name-taken",
        "acme-labs",
    );
    assert_eq!(std::fs::read_dir(&artifacts).unwrap().count(), 1);
    let log = client.get("/v1/log", OP);
    let actions = log.column("entries", "action");
    assert_eq!(
        actions,
        ["publisher-registered", "submitted", "publisher-registered"]
    );
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

#[test]
fn tenants_cannot_reach_each_other_and_yanked_versions_stay_out() {
    let (_dir, _node, client) = start_node("");
    let acme = tenant(&client, "acme");
    let globex = tenant(&client, "globex");
    let key = publisher(&client, "pub");
    publish(&client, &key, HELLO);
    let installed = install(&client, "acme", &acme, "hello", json!({}));
    assert_eq!(installed.status, 200, "{}", installed.text);

    // Another tenant's key: 403 on every acme route; no key or a made-up
    // key: 401.
    let routes: [(&str, &str, Option<Value>); 5] = [
        ("GET", "/v1/tenants/acme/installs", None),
        ("GET", "/v1/tenants/acme/installs/hello", None),
        (
            "PUT",
            "/v1/tenants/acme/installs/hello",
            Some(json!({"version": "0.1.0"})),
        ),
        (
            "POST",
            "/v1/tenants/acme/installs/hello/invoke",
            Some(json!({"input": "x"})),
        ),
        ("GET", "/v1/tenants/acme/invocations", None),
    ];
    for (method, path, body) in &routes {
        let reply = client.request(method, path, Some(&globex), body.clone());
        assert_eq!(reply.status, 403, "{method} {path}: {}", reply.text);
        assert_eq!(reply.code(), "wrong-tenant");
        for token in [None, Some("sovra_sk_0000"), Some("")] {
            let reply = client.request(method, path, token, body.clone());
            assert_eq!(
                reply.status, 401,
                "{method} {path} {token:?}: {}",
                reply.text
            );
        }
    }
    // Tenants cannot use operator endpoints, and the operator cannot act
    // as a tenant in its sandbox.
    assert_eq!(client.get("/v1/tenants", Some(&acme)).status, 403);
    assert_eq!(
        client
            .post("/v1/plugins/hello/0.1.0/yank", Some(&acme), json!({}))
            .status,
        403
    );
    assert_eq!(
        invoke(&client, "acme", OPERATOR_TOKEN, "hello", "x").status,
        403
    );
    // globex sees none of acme's history.
    invoke(&client, "acme", &acme, "hello", "private");
    let history = client.get("/v1/tenants/globex/invocations", Some(&globex));
    assert_eq!(history.body["invocations"], json!([]));

    // Yanked: no new installs; the existing one keeps working.
    let yanked = client.post("/v1/plugins/hello/0.1.0/yank", OP, json!({}));
    assert_eq!(yanked.status, 200, "{}", yanked.text);
    let refused = install(&client, "globex", &globex, "hello", json!({}));
    assert_eq!(refused.status, 409, "{}", refused.text);
    assert_eq!(refused.code(), "yanked");
    assert_eq!(invoke(&client, "acme", &acme, "hello", "still").status, 200);
    let again = client.post("/v1/plugins/hello/0.1.0/approve", OP, json!({}));
    assert_eq!(again.status, 409, "{}", again.text);

    // Grants above what the plugin asks or the node allows are refused.
    publish(&client, &key, COUNTER);
    let too_much = install(
        &client,
        "globex",
        &globex,
        "counter",
        json!({"kv": true, "sql": true}),
    );
    assert_eq!(too_much.status, 422, "{}", too_much.text);
    assert_eq!(too_much.code(), "not-requested");
    let slow = install(
        &client,
        "globex",
        &globex,
        "counter",
        json!({"kv": true, "timeout_ms": 3_600_000}),
    );
    assert_eq!(slow.status, 403, "{}", slow.text);
    assert_eq!(slow.code(), "above-ceiling");
    // An install without the kv grant runs, and is denied at the import.
    let bare = install(&client, "globex", &globex, "counter", json!({}));
    assert_eq!(bare.status, 200, "{}", bare.text);
    let denied = invoke(&client, "globex", &globex, "counter", "x");
    assert_eq!(denied.status, 403, "{}", denied.text);
    assert_eq!(denied.code(), "not-granted");

    // A disabled tenant's key stops working; a revoked key too.
    assert_eq!(
        client
            .post("/v1/tenants/globex/disable", OP, json!({}))
            .status,
        200
    );
    let disabled = client.get("/v1/tenants/globex/installs", Some(&globex));
    assert_eq!((disabled.status, disabled.code()), (403, "tenant-disabled"));
    let keys = client.get("/v1/tenants/acme/keys", OP);
    let id = keys.body["keys"][0]["id"].as_str().unwrap().to_owned();
    assert!(!keys.text.contains(&acme), "the secret is never listed");
    let revoked = client.request("DELETE", &format!("/v1/tenants/acme/keys/{id}"), OP, None);
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    assert_eq!(invoke(&client, "acme", &acme, "hello", "x").status, 401);
}

#[test]
fn hostile_agents_fail_alone_and_the_node_drains_on_shutdown() {
    let (_dir, node, client) =
        start_node("[limits]\ntenant-rate = 1000\ntenant-burst = 1000\nmax-body = \"16KiB\"");
    let acme = tenant_with(
        &client,
        "acme",
        &[
            (HELLO, "hello", json!({})),
            (SPIN, "spin", json!({"timeout_ms": 1000})),
        ],
    );
    let spun = invoke(&client, "acme", &acme, "spin", "");
    assert_eq!(spun.status, 504, "{}", spun.text);
    assert_eq!(spun.code(), "timeout");
    assert!(spun.body["invocation_id"].is_string());
    assert_eq!(
        invoke(&client, "acme", &acme, "hello", "Bo").body["output"],
        "Hello, Bo!"
    );

    // Oversized JSON is refused before it is parsed.
    let big = "x".repeat(32 << 10);
    let reply = invoke(&client, "acme", &acme, "hello", &big);
    assert_eq!(reply.status, 413, "{}", reply.text);
    assert_eq!(reply.code(), "too-large");
    let client = node.client();

    // Shutdown while a call is in flight: the call still gets its answer.
    let in_flight = {
        let client = client.clone();
        let acme = acme.clone();
        std::thread::spawn(move || invoke(&client, "acme", &acme, "spin", ""))
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let status = node.stop();
    assert!(status.success(), "{status:?}");
    let reply = in_flight.join().unwrap();
    assert_eq!(reply.status, 504, "{}", reply.text);
    assert_eq!(reply.code(), "timeout");
}

#[test]
fn a_tenant_over_its_rate_gets_429_with_retry_after() {
    let (_dir, _node, client) = start_node("[limits]\ntenant-rate = 1\ntenant-burst = 3");
    let acme = tenant(&client, "acme");
    let globex = tenant(&client, "globex");
    let key = publisher(&client, "pub");
    publish(&client, &key, HELLO);
    for (tenant, api_key) in [("acme", &acme), ("globex", &globex)] {
        let reply = install(&client, tenant, api_key, "hello", json!({}));
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let statuses: Vec<u16> = (0..5)
        .map(|_| invoke(&client, "acme", &acme, "hello", "x").status)
        .collect();
    assert_eq!(&statuses[..3], [200, 200, 200]);
    let limited = invoke(&client, "acme", &acme, "hello", "x");
    assert_eq!(limited.status, 429, "{}", limited.text);
    assert_eq!(limited.code(), "rate-limited");
    assert_eq!(limited.retry_after.as_deref(), Some("1"));
    // The other tenant is not affected.
    assert_eq!(invoke(&client, "globex", &globex, "hello", "x").status, 200);
    let metrics = client.get("/metrics", None).text;
    assert!(metrics.contains("sovra_invocations_refused_total{reason=\"rate\"}"));
    let per_tenant = client.get("/metrics/tenants", OP).text;
    assert!(
        per_tenant
            .contains("sovra_tenant_invocations_refused_total{tenant=\"acme\",reason=\"rate\"}")
    );
}

#[test]
fn a_submission_that_exhausts_the_compile_worker_is_refused_and_the_node_lives_on() {
    for (limits, needle) in [
        ("max-memory = \"64MiB\"", "limits"),
        ("timeout = \"1ms\"", "longer than"),
    ] {
        let (_dir, _node, client) = start_node(&format!("[compile]\n{limits}"));
        let key = publisher(&client, "pub");
        let hello = std::fs::read(HELLO).unwrap();
        let refused = client.submit(&hello, Some(&signature(&key, &hello)));
        assert_eq!(refused.status, 422, "{limits}: {}", refused.text);
        assert_eq!(refused.code(), "compile-failed");
        assert!(
            refused.message().contains(needle),
            "{limits}: {}",
            refused.message()
        );
        assert_eq!(client.get("/v1/plugins", OP).body["plugins"], json!([]));
        assert_eq!(client.get("/readyz", None).status, 200);
    }
}

/// The repository's models file, when the model files have been fetched
/// (`SOVRA_REQUIRE_MODELS` makes their absence a failure).
fn models_file() -> Option<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let gguf = root.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !gguf.exists() {
        assert!(
            std::env::var_os("SOVRA_REQUIRE_MODELS").is_none(),
            "SOVRA_REQUIRE_MODELS is set but {} is missing; run scripts/fetch-models",
            gguf.display()
        );
        eprintln!(
            "skipped: {} is missing (scripts/fetch-models)",
            gguf.display()
        );
        return None;
    }
    Some(root.join("models.toml").canonicalize().unwrap())
}

#[test]
fn a_chat_agent_streams_the_tokens_smollm2_generates_for_it() {
    let Some(models) = models_file() else { return };
    let (_dir, _node, client) = start_node(&format!("models = {:?}", models.to_str().unwrap()));
    let acme = tenant(&client, "acme");
    let models = client.get("/v1/models", Some(&acme));
    assert!(models.text.contains("\"smollm2\""), "{}", models.text);
    let listed: serde_json::Value = serde_json::from_str(&models.text).unwrap();
    assert_eq!(listed["object"], "list");
    let device = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "smollm2")
        .map(|m| m["device"].as_str().unwrap().to_owned())
        .unwrap();
    assert!(device == "cpu" || device.starts_with("cuda:"), "{device}");
    let key = publisher(&client, "pub");
    publish(&client, &key, sovra_test_artifacts::CHAT);
    let not_allowed = install(
        &client,
        "acme",
        &acme,
        "chat",
        json!({"kv": true, "models": ["llama-70b"]}),
    );
    assert_eq!(not_allowed.status, 403, "{}", not_allowed.text);
    assert_eq!(not_allowed.code(), "model-not-allowed");
    let installed = install(
        &client,
        "acme",
        &acme,
        "chat",
        json!({"kv": true, "models": ["smollm2"], "timeout_ms": 30000}),
    );
    assert_eq!(installed.status, 200, "{}", installed.text);
    let events = client.invoke_stream(
        "/v1/tenants/acme/installs/chat/invoke",
        &acme,
        json!({"input": "What is the capital of France?"}),
    );
    let tokens: String = events
        .iter()
        .filter(|(e, _)| e == "token")
        .map(|(_, d)| {
            assert_eq!(d["model"], "smollm2");
            d["text"].as_str().unwrap().to_owned()
        })
        .collect();
    let (last, result) = events.last().unwrap();
    assert_eq!(last, "result", "{events:?}");
    assert!(tokens.contains("Paris"), "{tokens}");
    assert!(
        result["output"].as_str().unwrap().contains(tokens.trim()),
        "{result}"
    );
    assert!(result["generated_tokens"].as_u64().unwrap() > 0);
    let metrics = client.get("/metrics/tenants", OP).text;
    assert!(
        metrics.contains("sovra_tenant_generated_tokens_total{tenant=\"acme\"}"),
        "{metrics}"
    );
    // The tokens are kept: the tenant and the operator see them per day.
    for token in [Some(acme.as_str()), OP] {
        let usage = client.get("/v1/tenants/acme/usage?days=7", token);
        assert_eq!(usage.status, 200, "{}", usage.text);
        let day = &usage.body["usage"][0];
        assert_eq!(day["model"], "smollm2", "{}", usage.text);
        assert!(day["prompt_tokens"].as_u64().unwrap() > 0, "{}", usage.text);
        assert_eq!(
            usage.body["total"]["generated_tokens"], result["generated_tokens"],
            "{}",
            usage.text
        );
    }
    let metrics = client.get("/metrics", None).text;
    // The finished generation gave its cache back; the budget is the default.
    assert!(
        metrics.contains("sovra_model_kv_cache_bytes{model=\"smollm2\",state=\"in_use\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "sovra_model_info{{model=\"smollm2\",device=\"{device}\"}} 1"
        )),
        "{metrics}"
    );
}

#[test]
fn ceilings_lowered_after_an_install_apply_to_it_and_hung_up_calls_finish_before_exit() {
    let (dir, node, client) = start_node("");
    let acme = tenant_with(
        &client,
        "acme",
        &[
            (COUNTER, "counter", json!({"kv": true})),
            (SPIN, "spin", json!({"timeout_ms": 1500})),
        ],
    );
    assert_eq!(invoke(&client, "acme", &acme, "counter", "x").status, 200);

    // A caller that hangs up, then the node is told to stop: the call still
    // runs to its end and is audited before the node exits (the history
    // after the restart shows its timeout; a call cut short leaves no record).
    let hung_up: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_millis(500)))
        .build()
        .into();
    let gone = hung_up
        .post(format!("{}/v1/tenants/acme/installs/spin/invoke", node.url))
        .header("authorization", format!("Bearer {acme}"))
        .send_json(json!({"input": ""}));
    assert!(gone.is_err(), "the caller gave up");
    assert!(node.stop().success());

    // The operator drops kv from the ceilings: the existing install loses it.
    let config = dir.path().join("sovra.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[ceilings]\ncapabilities = [\"sql\"]\n"),
    )
    .unwrap();
    let node = Node::start(dir.path(), "");
    let client = node.client();
    let denied = invoke(&client, "acme", &acme, "counter", "x");
    assert_eq!(denied.status, 403, "{}", denied.text);
    assert_eq!(denied.code(), "not-granted");
    let history = client.get("/v1/tenants/acme/invocations", Some(&acme));
    let outcomes = history.column("invocations", "outcome");
    assert_eq!(
        outcomes,
        ["not-granted", "timeout", "ok"],
        "{}",
        history.text
    );
}

/// Tenant `acme` with `counter` (kv) and `notes` (sql) installed; its key.
fn acme_with_counter_and_notes(client: &support::Client) -> String {
    tenant_with(
        client,
        "acme",
        &[
            (COUNTER, "counter", json!({"kv": true})),
            (NOTES, "notes", json!({"sql": true})),
        ],
    )
}

/// Every file under `dir`, read whole.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                files.push((path, bytes));
            }
        }
    }
    files
}

/// Asserts no file under `data` holds any of `secrets`.
fn no_plaintext(data: &std::path::Path, secrets: &[&str]) {
    let files = files_under(data);
    assert!(files.len() > 5, "{files:?}");
    for (path, bytes) in files {
        for secret in secrets {
            assert!(
                rfind(&bytes, secret.as_bytes()).is_none(),
                "{} holds {secret:?} in plaintext",
                path.display()
            );
        }
    }
}

#[test]
fn nothing_a_tenant_stores_is_on_the_disk_in_plaintext() {
    let (dir, node, client) = start_node("");
    let key = acme_with_counter_and_notes(&client);
    let kv_key = "kv-key-marker-5d1e";
    let row = "sql-row-marker-9b27";
    assert_eq!(invoke(&client, "acme", &key, "counter", kv_key).status, 200);
    let added = invoke(&client, "acme", &key, "notes", &format!("add {row}"));
    assert_eq!(added.status, 200, "{}", added.text);
    let data = dir.path().join("data");
    // Running (pages in the write-ahead log) and stopped (checkpointed).
    no_plaintext(&data, &[kv_key, row, &key]);
    node.stop();
    no_plaintext(&data, &[kv_key, row, &key]);

    // The node reads it all back after a restart.
    let node = Node::start(dir.path(), "");
    let listed = invoke(&node.client(), "acme", &key, "notes", "list");
    assert!(listed.text.contains(row), "{}", listed.text);
    node.stop();
}

#[test]
fn a_node_started_with_another_node_key_refuses_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("node.key");
    let write_key = |hex: &str| {
        std::fs::write(&key_file, hex).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    write_key(&"1f".repeat(32));
    let node = Node::start(dir.path(), "node-key-file = \"node.key\"");
    tenant(&node.client(), "acme");
    node.stop();
    assert!(
        !dir.path().join("data/node.key").exists(),
        "the named key is used"
    );

    write_key(&"2e".repeat(32));
    let config = dir.path().join("sovra.toml");
    let out = sovra(&["serve", "--config", config.to_str().unwrap()]);
    fails_with(&out, 2, "wrong node key");

    write_key("not a key");
    let out = sovra(&["serve", "--config", config.to_str().unwrap()]);
    fails_with(&out, 2, "64 hex digits");
}

/// How the database whose key file is `key_file` is named in its seals.
fn label_of(data: &std::path::Path, key_file: &std::path::Path) -> String {
    let relative = key_file.strip_prefix(data).unwrap().to_str().unwrap();
    match relative {
        "node.db.key" => "node".into(),
        "runtime/audit.db.key" => "audit".into(),
        other => {
            let tenant = other
                .strip_prefix("runtime/tenants/")
                .and_then(|t| t.strip_suffix("/tenant.db.key"))
                .unwrap_or_else(|| panic!("unexpected key file {other}"));
            format!("tenant/{tenant}")
        }
    }
}

#[test]
fn an_erased_tenant_is_unreadable_everywhere_and_other_tenants_keep_everything() {
    use sovra_runtime::sealing::{NodeKey, NodeKeySource, SealedDatabase, SealingError};
    let (dir, node, client) = start_node("");
    let acme = tenant_with(
        &client,
        "acme",
        &[(COUNTER, "counter", json!({"kv": true}))],
    );
    let globex = tenant(&client, "globex");
    let installed = install(&client, "globex", &globex, "counter", json!({"kv": true}));
    assert_eq!(installed.status, 200, "{}", installed.text);
    let secret = "erase-marker-61f0";
    assert_eq!(
        invoke(&client, "acme", &acme, "counter", secret).status,
        200
    );
    assert_eq!(
        invoke(&client, "globex", &globex, "counter", "kept").status,
        200
    );
    let data = dir.path().join("data");
    // A copy of acme's database taken before the erasure: a backup.
    let backup = dir.path().join("backup.db");
    std::fs::copy(data.join("runtime/tenants/acme/tenant.db"), &backup).unwrap();

    let refused = client.request("DELETE", "/v1/tenants/acme", Some(&acme), None);
    assert_eq!(refused.status, 403, "{}", refused.text);
    let erased = client.request("DELETE", "/v1/tenants/acme", OP, None);
    assert_eq!(erased.status, 200, "{}", erased.text);
    assert!(!data.join("runtime/tenants/acme").exists());
    assert_eq!(client.get("/v1/tenants/acme", OP).status, 404);
    assert_eq!(
        invoke(&client, "acme", &acme, "counter", secret).status,
        401
    );
    let kept = invoke(&client, "globex", &globex, "counter", "kept");
    assert_eq!(kept.body["output"], "kept: 2", "{}", kept.text);
    let again = client.request("DELETE", "/v1/tenants/acme", OP, None);
    assert_eq!(again.status, 404, "{}", again.text);
    // Created anew, the name starts empty.
    let acme = tenant(&client, "acme");
    let installed = install(&client, "acme", &acme, "counter", json!({"kv": true}));
    assert_eq!(installed.status, 200, "{}", installed.text);
    let fresh = invoke(&client, "acme", &acme, "counter", secret);
    assert_eq!(
        fresh.body["output"],
        format!("{secret}: 1"),
        "{}",
        fresh.text
    );
    node.stop();

    // No key the node holds opens the backup.
    let node_key = NodeKey::load(&NodeKeySource::Default, &data, || true).unwrap();
    let key_files: Vec<_> = files_under(&data)
        .into_iter()
        .map(|(path, _)| path)
        .filter(|path| path.to_string_lossy().ends_with(".db.key"))
        .collect();
    assert!(key_files.len() >= 4, "{key_files:?}");
    for key_file in key_files {
        std::fs::copy(&key_file, dir.path().join("backup.db.key")).unwrap();
        let opened = SealedDatabase::existing(&backup, &node_key, &label_of(&data, &key_file))
            .and_then(|db| db.open_read_write());
        assert!(
            matches!(opened, Err(SealingError::NoKeyOpens { .. })),
            "{} opens the erased tenant's backup: {opened:?}",
            key_file.display()
        );
    }
    // The erasure is on the publisher log and ends acme's audit chain.
    let log = sovra(&[
        "plugin",
        "log",
        "--data-dir",
        data.to_str().unwrap(),
        "--verify",
    ]);
    succeeds(&log);
    assert!(
        text(&log.stdout).contains("tenant-erased"),
        "{}",
        text(&log.stdout)
    );
    let audit = sovra(&["audit", "verify", "--data-dir", data.to_str().unwrap()]);
    succeeds(&audit);
}

/// The files of an export archive, unpacked.
fn unpack(archive: &[u8]) -> std::collections::BTreeMap<String, String> {
    use std::io::Read;
    let mut tar = tar::Archive::new(zstd::Decoder::new(archive).unwrap());
    tar.entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            (name, String::from_utf8_lossy(&bytes).into_owned())
        })
        .collect()
}

#[test]
fn a_tenant_export_is_signed_complete_and_checked_offline() {
    let (dir, node, client) = start_node("");
    let acme = acme_with_counter_and_notes(&client);
    let globex = tenant(&client, "globex");
    assert_eq!(
        invoke(&client, "acme", &acme, "counter", "exported-kv-3f1c").status,
        200
    );
    let added = invoke(&client, "acme", &acme, "notes", "add exported-row-8d2e");
    assert_eq!(added.status, 200, "{}", added.text);

    let (status, _, _) = client.get_bytes("/v1/tenants/acme/export", &globex);
    assert_eq!(status, 403, "another tenant's key");
    let (status, content_type, archive) = client.get_bytes("/v1/tenants/acme/export", &acme);
    assert_eq!((status, content_type.as_str()), (200, "application/zstd"));
    let files = unpack(&archive);
    assert!(
        files["kv.jsonl"].contains("count/exported-kv-3f1c"),
        "{}",
        files["kv.jsonl"]
    );
    assert!(
        files["sql.jsonl"].contains("exported-row-8d2e"),
        "{}",
        files["sql.jsonl"]
    );
    assert!(
        files["installs.json"].contains("notes"),
        "{}",
        files["installs.json"]
    );
    // Two invocations, and globex's refused attempt on acme's export.
    let audit = &files["audit.jsonl"];
    assert_eq!(audit.lines().count(), 3, "{audit}");
    assert!(audit.contains("refused-403"), "{audit}");
    assert!(
        files["tenant.db"].starts_with("SQLite format 3"),
        "plain SQLite"
    );

    // The same export offline (beside the running node) names the node's key.
    let data = dir.path().join("data");
    let offline = dir.path().join("offline.tar.zst");
    let out = sovra(&[
        "tenant",
        "export",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        offline.to_str().unwrap(),
        "acme",
    ]);
    succeeds(&out);
    let node_key = text(&out.stdout)
        .rsplit(' ')
        .next()
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(node_key.len(), 64, "{}", text(&out.stdout));
    node.stop();

    let saved = dir.path().join("acme.tar.zst");
    std::fs::write(&saved, &archive).unwrap();
    let verify = |path: &std::path::Path, key: &str| {
        sovra(&[
            "tenant",
            "verify-export",
            path.to_str().unwrap(),
            "--node-public-key",
            key,
        ])
    };
    let out = verify(&saved, &node_key);
    succeeds(&out);
    assert!(
        text(&out.stdout).contains("verified: tenant acme, 7 files"),
        "{}",
        text(&out.stdout)
    );
    succeeds(&verify(&offline, &node_key));
    fails_with(&verify(&saved, &"ab".repeat(32)), 3, "signed by node key");

    // Any byte changed: refused, never verified.
    let mut tampered = archive.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x40;
    std::fs::write(&saved, &tampered).unwrap();
    let out = verify(&saved, &node_key);
    assert!(
        matches!(out.status.code(), Some(2 | 3)),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_tenant_over_its_daily_quota_is_refused_until_tomorrow_even_after_a_restart() {
    let (dir, node, client) = start_node("");
    let acme = tenant_with(
        &client,
        "acme",
        &[(COUNTER, "counter", json!({"kv": true}))],
    );
    let quotas = json!({"invocations_per_day": 2, "storage_bytes": 1 << 20});
    let refused = client.put("/v1/tenants/acme/quotas", Some(&acme), quotas.clone());
    assert_eq!(refused.status, 403, "a tenant cannot set its own quotas");
    let bad = client.put("/v1/tenants/acme/quotas", OP, json!({"storage_bytes": 1}));
    assert_eq!(
        (bad.status, bad.code()),
        (422, "bad-quotas"),
        "{}",
        bad.text
    );
    let unknown = client.put("/v1/tenants/acme/quotas", OP, json!({"tokens": 1}));
    assert_eq!(unknown.status, 422, "{}", unknown.text);
    let set = client.put("/v1/tenants/acme/quotas", OP, quotas.clone());
    assert_eq!(set.status, 200, "{}", set.text);

    for _ in 0..2 {
        assert_eq!(
            invoke(&client, "acme", &acme, "counter", "apples").status,
            200
        );
    }
    let over = invoke(&client, "acme", &acme, "counter", "apples");
    assert_eq!(
        (over.status, over.code()),
        (429, "quota-exceeded"),
        "{}",
        over.text
    );
    let retry: u64 = over.retry_after.as_deref().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry), "{retry}");
    let usage = client.get("/v1/tenants/acme/usage", Some(&acme));
    assert_eq!(usage.body["quotas"], quotas, "{}", usage.text);
    assert_eq!(usage.body["used"]["invocations_today"], 2, "{}", usage.text);
    assert!(usage.body["used"]["storage_bytes"].as_u64().unwrap() > 0);
    let metrics = client.get("/metrics/tenants", OP).text;
    for line in [
        "sovra_tenant_quota{tenant=\"acme\",quota=\"invocations_per_day\"} 2",
        "sovra_tenant_quota_used{tenant=\"acme\",quota=\"invocations_per_day\"} 2",
        "sovra_tenant_invocations_refused_total{tenant=\"acme\",reason=\"quota\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    node.stop();

    // Kept across a restart, with what was used today.
    let node = Node::start(dir.path(), "");
    let client = node.client();
    let over = invoke(&client, "acme", &acme, "counter", "apples");
    assert_eq!(
        (over.status, over.code()),
        (429, "quota-exceeded"),
        "{}",
        over.text
    );
    // Lifted, the tenant runs again.
    assert_eq!(
        client.put("/v1/tenants/acme/quotas", OP, json!({})).status,
        200
    );
    let again = invoke(&client, "acme", &acme, "counter", "apples");
    assert_eq!(again.body["output"], "apples: 3", "{}", again.text);
    node.stop();
}

#[test]
fn a_generation_that_crosses_the_token_quota_stops_for_length_and_the_next_is_refused() {
    let Some(models) = models_file() else { return };
    let (_dir, _node, client) = start_node(&format!("models = {:?}", models.to_str().unwrap()));
    let chat = json!({"kv": true, "models": ["smollm2"], "timeout_ms": 30000});
    let acme = tenant_with(
        &client,
        "acme",
        &[(sovra_test_artifacts::CHAT, "chat", chat)],
    );
    // Fewer tokens than the prompt alone: the first step crosses it.
    let quotas = json!({"tokens_per_day": {"smollm2": 8}});
    let set = client.put("/v1/tenants/acme/quotas", OP, quotas);
    assert_eq!(set.status, 200, "{}", set.text);

    let ask = json!({"model": "smollm2", "max_tokens": 40,
                     "messages": [{"role": "user", "content": "Count from one to twenty."}]});
    let first = client.post("/v1/chat/completions", Some(&acme), ask.clone());
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(
        first.body["choices"][0]["finish_reason"], "length",
        "{}",
        first.text
    );
    let generated = first.body["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(
        generated < 40,
        "stopped by the quota, not max_tokens: {}",
        first.text
    );
    let prompt = first.body["usage"]["prompt_tokens"].as_u64().unwrap();

    let second = client.post("/v1/chat/completions", Some(&acme), ask);
    assert_eq!(
        (second.status, second.code()),
        (429, "quota-exceeded"),
        "{}",
        second.text
    );
    // An agent's generation is refused inside its sandbox, by name.
    let invoked = invoke(&client, "acme", &acme, "chat", "Hello");
    assert!(invoked.text.contains("quota-exceeded"), "{}", invoked.text);
    let usage = client.get("/v1/tenants/acme/usage", Some(&acme));
    assert_eq!(
        usage.body["used"]["tokens_today"]["smollm2"].as_u64(),
        Some(prompt + generated),
        "{}",
        usage.text
    );
}
