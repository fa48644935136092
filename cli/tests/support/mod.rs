//! A real node for end-to-end tests: the `sovra` binary serving on a
//! loopback port from its own data directory, a small HTTP client, the
//! marketplace steps the tests share, and checks on `sovra` runs.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use sovra_server::signature::PublisherKey;

pub const OPERATOR_TOKEN: &str = "operator-token-for-tests-0123456789";

/// A running `sovra serve`.
pub struct Node {
    pub dir: PathBuf,
    pub url: String,
    child: Option<Child>,
}

/// Writes the node's config into `dir` (once) and returns its path.
pub fn config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("sovra.toml");
    if !path.exists() {
        std::fs::write(dir.join("operator.token"), format!("{OPERATOR_TOKEN}\n")).unwrap();
        std::fs::write(
            &path,
            format!("data-dir = \"data\"\noperator-token-file = \"operator.token\"\n{extra}\n"),
        )
        .unwrap();
    }
    path
}

/// Starts a node over a new temporary directory (its config with `extra`
/// lines) and returns the directory, the node and a client for it. The
/// directory is deleted when it is dropped, after the node: bind it to a
/// name (`_dir` if the test does not use it), never to `_`.
pub fn start_node(extra: &str) -> (tempfile::TempDir, Node, Client) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), extra);
    let client = node.client();
    (dir, node, client)
}

impl Node {
    /// Starts a node over `dir` (creating its config with `extra` lines).
    pub fn start(dir: &Path, extra: &str) -> Node {
        Self::start_with_open_files(dir, extra, None)
    }

    /// [`Node::start`] under an open-files limit (soft and hard), as
    /// `ulimit -n` would set it.
    pub fn start_with_open_files(dir: &Path, extra: &str, open_files: Option<u64>) -> Node {
        let config = config(dir, extra);
        let mut command = Command::new(env!("CARGO_BIN_EXE_sovra"));
        command
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--listen", "127.0.0.1:0"])
            .env("SOVRA_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(limit) = open_files {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs
            // between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let limit = rustix::process::Rlimit {
                        current: Some(limit),
                        maximum: Some(limit),
                    };
                    rustix::process::setrlimit(rustix::process::Resource::Nofile, limit)
                        .map_err(std::io::Error::from)
                });
            }
        }
        let mut child = command.spawn().expect("sovra serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("sovra node listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Node {
            dir: dir.to_owned(),
            url,
            child: Some(child),
        }
    }

    /// Sends SIGTERM and waits for the node to drain and exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.terminate()
    }

    /// Kills the node with SIGKILL, as a crash would, and waits for it.
    pub fn crash(mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Sends SIGTERM without waiting; [`Node::wait`] collects the exit.
    pub fn begin_stop(&self) {
        let child = self.child.as_ref().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
    }

    /// Waits for a node told to stop.
    pub fn wait(mut self) -> std::process::ExitStatus {
        self.child.take().expect("running").wait().unwrap()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().unwrap()
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn client(&self) -> Client {
        Client {
            url: self.url.clone(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(120)))
                .build()
                .into(),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A JSON client for one node.
#[derive(Clone)]
pub struct Client {
    pub url: String,
    agent: ureq::Agent,
}

/// A response: status, JSON body (or `Value::Null`), `Retry-After`.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub retry_after: Option<String>,
}

impl Reply {
    /// The error code of an error reply.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }

    /// The string `field` of each record in the body's array `list`, as in
    /// `history.column("invocations", "outcome")`.
    pub fn column(&self, list: &str, field: &str) -> Vec<&str> {
        self.body[list]
            .as_array()
            .unwrap_or_else(|| panic!("no array {list:?} in {}", self.text))
            .iter()
            .map(|record| record[field].as_str().unwrap())
            .collect()
    }
}

impl Client {
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let url = format!("{}{path}", self.url);
        let mut builder = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let response = match body {
            Some(body) => self.agent.run(
                builder
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .unwrap(),
            ),
            None => self.agent.run(builder.body(()).unwrap()),
        };
        reply(response.expect("the node answers"))
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.request("GET", path, token, None)
    }

    pub fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.request("POST", path, token, Some(body))
    }

    pub fn put(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.request("PUT", path, token, Some(body))
    }

    /// Submits component bytes with a signature header (or none).
    pub fn submit(&self, bytes: &[u8], signature: Option<&str>) -> Reply {
        self.try_submit(bytes, signature).expect("the node answers")
    }

    /// [`Client::submit`], where the node may also cut the upload short.
    pub fn try_submit(&self, bytes: &[u8], signature: Option<&str>) -> Result<Reply, ureq::Error> {
        let mut request = self
            .agent
            .post(format!("{}/v1/plugins", self.url))
            .header("content-type", "application/wasm");
        if let Some(signature) = signature {
            request = request.header("sovra-signature", signature);
        }
        request.send(bytes).map(reply)
    }

    /// A GET whose answer is bytes: its status, content type and body.
    pub fn get_bytes(&self, path: &str, token: &str) -> (u16, String, Vec<u8>) {
        let mut response = self
            .agent
            .get(format!("{}{path}", self.url))
            .header("authorization", format!("Bearer {token}"))
            .call()
            .expect("the node answers");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .unwrap();
        (status, content_type, body)
    }

    /// An invocation streamed as server-sent events: `(event, data)` pairs.
    pub fn invoke_stream(&self, path: &str, token: &str, body: Value) -> Vec<(String, Value)> {
        let mut response = self
            .agent
            .post(format!("{}{path}", self.url))
            .header("authorization", format!("Bearer {token}"))
            .header("accept", "text/event-stream")
            .send_json(body)
            .expect("the node answers");
        assert_eq!(response.status(), 200);
        events(&response.body_mut().read_to_string().unwrap())
    }

    /// A GET answered with server-sent events: `(event, data)` pairs.
    pub fn get_events(&self, path: &str, token: &str) -> Vec<(String, Value)> {
        let mut response = self
            .agent
            .get(format!("{}{path}", self.url))
            .header("authorization", format!("Bearer {token}"))
            .header("accept", "text/event-stream")
            .call()
            .expect("the node answers");
        assert_eq!(response.status(), 200);
        events(&response.body_mut().read_to_string().unwrap())
    }
}

/// The `(event, data)` pairs of an event stream's text.
fn events(text: &str) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    for block in text.split("\n\n") {
        let mut event = None;
        let mut data = String::new();
        for line in block.lines() {
            if let Some(name) = line.strip_prefix("event: ") {
                event = Some(name.to_owned());
            } else if let Some(d) = line.strip_prefix("data: ") {
                data.push_str(d);
            }
        }
        if let Some(event) = event {
            events.push((event, serde_json::from_str(&data).unwrap()));
        }
    }
    events
}

fn reply(mut response: ureq::http::Response<ureq::Body>) -> Reply {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.body_mut().read_to_string().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        body,
        text,
        retry_after,
    }
}

/// Runs the `sovra` binary to completion.
pub fn sovra(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sovra"))
        .args(args)
        .env_remove("SOVRA_LOG")
        .output()
        .expect("sovra runs")
}

/// Output bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that a `sovra` run exited 0; shows its stderr otherwise.
#[track_caller]
pub fn succeeds(out: &Output) {
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// Asserts that a `sovra` run exited with `code` and said `needle` on
/// stderr; shows its stderr otherwise.
#[track_caller]
pub fn fails_with(out: &Output, code: i32, needle: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
}

// Marketplace and tenant steps the node tests share.

pub const OP: Option<&str> = Some(OPERATOR_TOKEN);

/// Creates a tenant and returns one of its API keys.
pub fn tenant(client: &Client, id: &str) -> String {
    let created = client.post("/v1/tenants", OP, json!({"id": id}));
    assert_eq!(created.status, 201, "{}", created.text);
    let key = client.post(&format!("/v1/tenants/{id}/keys"), OP, json!({}));
    assert_eq!(key.status, 201, "{}", key.text);
    key.body["key"].as_str().unwrap().to_owned()
}

/// Registers a new publisher and returns its key.
pub fn publisher(client: &Client, name: &str) -> PublisherKey {
    let key = PublisherKey::generate().unwrap();
    let registered = client.post(
        "/v1/publishers",
        OP,
        json!({"name": name, "public_key": key.public().to_hex()}),
    );
    assert_eq!(registered.status, 201, "{}", registered.text);
    key
}

pub fn embedded_manifest(bytes: &[u8]) -> Vec<u8> {
    sovra_runtime::ComponentInfo::read(bytes)
        .unwrap()
        .manifest_source
        .unwrap()
}

pub fn signature(key: &PublisherKey, bytes: &[u8]) -> String {
    serde_json::to_string(&key.sign(bytes, &embedded_manifest(bytes))).unwrap()
}

/// Submits and approves a component; returns its digest.
pub fn publish(client: &Client, key: &PublisherKey, path: &str) -> String {
    let bytes = std::fs::read(path).unwrap();
    let submitted = client.submit(&bytes, Some(&signature(key, &bytes)));
    assert_eq!(submitted.status, 201, "{}", submitted.text);
    let plugin = &submitted.body["plugin"];
    let approved = client.post(
        &format!(
            "/v1/plugins/{}/{}/approve",
            plugin["name"].as_str().unwrap(),
            plugin["version"].as_str().unwrap()
        ),
        OP,
        json!({}),
    );
    assert_eq!(approved.status, 200, "{}", approved.text);
    plugin["digest"].as_str().unwrap().to_owned()
}

/// A new tenant with plugins installed: each `(path, plugin, grants)`
/// published from `path` (by one new publisher, `pub`) and installed as
/// `plugin` with `grants`. Returns the tenant's key.
pub fn tenant_with(client: &Client, id: &str, plugins: &[(&str, &str, Value)]) -> String {
    let key = tenant(client, id);
    let publisher = publisher(client, "pub");
    for (path, _, _) in plugins {
        publish(client, &publisher, path);
    }
    for (_, plugin, grants) in plugins {
        let installed = install(client, id, &key, plugin, grants.clone());
        assert_eq!(installed.status, 200, "{plugin}: {}", installed.text);
    }
    key
}

/// Installs version 0.1.0 of `plugin` for `tenant` with `grants`.
pub fn install(client: &Client, tenant: &str, key: &str, plugin: &str, grants: Value) -> Reply {
    client.put(
        &format!("/v1/tenants/{tenant}/installs/{plugin}"),
        Some(key),
        json!({"version": "0.1.0", "grants": grants}),
    )
}

pub fn invoke(client: &Client, tenant: &str, key: &str, plugin: &str, input: &str) -> Reply {
    client.post(
        &format!("/v1/tenants/{tenant}/installs/{plugin}/invoke"),
        Some(key),
        json!({"input": input}),
    )
}

/// A connection to one of the databases under `data_dir` (a node's or
/// `sovra run`'s), keyed as someone with disk access and the node key
/// (`<data_dir>/node.key`) would open it.
pub fn keyed_connection(
    data_dir: &std::path::Path,
    db: &std::path::Path,
    label: &str,
) -> rusqlite::Connection {
    use sovra_runtime::sealing::{NodeKey, NodeKeySource, SealedDatabase};
    let key = NodeKey::load(&NodeKeySource::Default, data_dir, || true).expect("node key");
    SealedDatabase::existing(db, &key, label)
        .and_then(|db| db.open_read_write())
        .expect("keyed connection")
}
