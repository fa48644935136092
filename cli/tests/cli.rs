//! The `sovra` binary as an agent author uses it: real processes, real
//! components, exit codes and messages.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use sovra_test_artifacts::{COUNTER, ECHO_TOOL, HELLO, NOTES, SPIN, TOOL_CALLER};
use support::{fails_with, succeeds, text};

fn sovra(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sovra"))
        .args(args)
        .env("SOVRA_DATA_DIR", data_dir)
        .env_remove("SOVRA_LOG")
        .output()
        .expect("sovra runs")
}

#[test]
fn run_prints_the_response_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let out = sovra(dir.path(), &["run", HELLO, "--input", "Ada"]);
    succeeds(&out);
    assert_eq!(text(&out.stdout), "Hello, Ada!\n");
}

#[test]
fn counter_state_survives_between_runs_and_logs_go_to_stderr() {
    let dir = tempfile::tempdir().unwrap();
    for expected in ["apples: 1\n", "apples: 2\n"] {
        let out = sovra(
            dir.path(),
            &["run", COUNTER, "--grant", "kv", "--input", "apples"],
        );
        succeeds(&out);
        assert_eq!(text(&out.stdout), expected);
        assert!(
            text(&out.stderr).contains("[agent info] counted key=apples"),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn input_can_come_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.txt");
    std::fs::write(&input, "add from a file").unwrap();
    let out = sovra(
        dir.path(),
        &[
            "run",
            NOTES,
            "--grant",
            "sql",
            "--input-file",
            input.to_str().unwrap(),
        ],
    );
    assert_eq!(
        text(&out.stdout),
        "added note #1\n",
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn exit_codes_say_how_it_failed() {
    let dir = tempfile::tempdir().unwrap();
    let denied = sovra(dir.path(), &["run", COUNTER, "--input", "x"]);
    fails_with(&denied, 3, "has not granted `kv`");

    let agent_error = sovra(
        dir.path(),
        &["run", NOTES, "--grant", "sql", "--input", "nonsense"],
    );
    fails_with(&agent_error, 1, "invalid-input");

    let timeout = sovra(dir.path(), &["run", SPIN, "--timeout", "300ms"]);
    fails_with(&timeout, 4, "timed out");

    let unknown_grant = sovra(dir.path(), &["run", HELLO, "--grant", "root"]);
    fails_with(&unknown_grant, 2, "unknown capability `root`");
}

#[test]
fn bad_files_are_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = sovra(dir.path(), &["run", "/nonexistent/x.wasm"]);
    fails_with(&missing, 2, "/nonexistent/x.wasm");

    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"definitely not wasm").unwrap();
    let out = sovra(dir.path(), &["run", garbage.to_str().unwrap()]);
    fails_with(&out, 2, "not a WebAssembly file");

    let bad_tenant = sovra(dir.path(), &["run", HELLO, "--tenant", "../../etc"]);
    fails_with(&bad_tenant, 2, "invalid tenant id");
}

#[test]
fn inspect_shows_world_capabilities_and_digest() {
    let dir = tempfile::tempdir().unwrap();
    let out = sovra(dir.path(), &["inspect", COUNTER]);
    succeeds(&out);
    let shown = text(&out.stdout);
    for needle in [
        "world:   sovra:agent/agent",
        "agent:   counter 0.1.0",
        "requests: kv",
        "sovra:agent/kv@0.1.0  (needs grant `kv`)",
        "sha256:",
    ] {
        assert!(shown.contains(needle), "missing {needle:?} in:\n{shown}");
    }
    let json = sovra(dir.path(), &["inspect", "--json", HELLO]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["manifest"]["name"], "hello");
    assert_eq!(value["world"], "agent");
}

#[test]
fn publishers_sign_and_anyone_can_verify() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("acme");
    let keygen = sovra(
        dir.path(),
        &["plugin", "keygen", "--out", prefix.to_str().unwrap()],
    );
    succeeds(&keygen);
    let component = dir.path().join("counter.wasm");
    std::fs::copy(COUNTER, &component).unwrap();
    let component = component.to_str().unwrap();
    let key = format!("{}.key", prefix.display());
    let public = format!("{}.pub", prefix.display());

    let sign = sovra(dir.path(), &["plugin", "sign", component, "--key", &key]);
    succeeds(&sign);
    let verify = sovra(
        dir.path(),
        &["plugin", "verify", component, "--publisher", &public],
    );
    succeeds(&verify);
    assert!(text(&verify.stdout).starts_with("verified: sha256:"));

    // Another publisher's key, or a changed component, is refused.
    let other = dir.path().join("mallory");
    sovra(
        dir.path(),
        &["plugin", "keygen", "--out", other.to_str().unwrap()],
    );
    let wrong = sovra(
        dir.path(),
        &[
            "plugin",
            "verify",
            component,
            "--publisher",
            &format!("{}.pub", other.display()),
        ],
    );
    fails_with(&wrong, 3, "not");
    let mut bytes = std::fs::read(component).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    std::fs::write(component, bytes).unwrap();
    let tampered = sovra(
        dir.path(),
        &["plugin", "verify", component, "--publisher", &public],
    );
    fails_with(&tampered, 3, "component digest does not match");
}

#[test]
fn asking_for_a_gpu_where_there_is_none_is_a_clear_error() {
    if sovra_gpu::cuda::probe().usable(0) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../host-gpu/tests/reference/tiny/llama-spm.gguf")
        .canonicalize()
        .unwrap();
    let models = dir.path().join("models.toml");
    std::fs::write(
        &models,
        format!(
            "[[model]]\nname = \"tiny\"\npath = {:?}\nkind = \"text-generation\"\ntenants = \"all\"\n",
            model.to_str().unwrap()
        ),
    )
    .unwrap();
    let models = models.to_str().unwrap();
    let out = sovra(
        dir.path(),
        &[
            "run", HELLO, "--models", models, "--device", "cuda", "--input", "x",
        ],
    );
    fails_with(&out, 2, "cannot use cuda:0");
    // auto falls back to the CPU and runs.
    let out = sovra(
        dir.path(),
        &[
            "run", HELLO, "--models", models, "--device", "auto", "--input", "x",
        ],
    );
    succeeds(&out);
    let out = sovra(dir.path(), &["run", HELLO, "--device", "tpu"]);
    fails_with(&out, 2, "`tpu` is not a device");
}

#[test]
fn run_never_prints_the_agents_control_characters_to_the_terminal_streams() {
    let dir = tempfile::tempdir().unwrap();
    let injection = "\u{1b}[2J\nlevel=ERROR tenant=other msg=\"forged\"\r";
    for input in [
        format!("log:{injection}"),
        format!("print:{injection}"),
        format!("fail:{injection}"),
    ] {
        let out = sovra(
            dir.path(),
            &[
                "run",
                sovra_test_artifacts::PROBE,
                "--grant",
                "kv,sql",
                "--allow-model",
                "any",
                "--input",
                &input,
            ],
        );
        let stderr = text(&out.stderr);
        assert!(
            !stderr.contains('\u{1b}') && !stderr.contains('\r'),
            "{input:?}: {stderr:?}"
        );
        assert!(
            !stderr.lines().any(|line| line.starts_with("level=ERROR")),
            "{input:?}: a forged line: {stderr:?}"
        );
        assert!(stderr.contains("\\x1b[2J"), "{input:?}: {stderr:?}");
    }
}

#[test]
fn run_compiles_in_a_worker_under_the_compile_limits() {
    let dir = tempfile::tempdir().unwrap();
    for limit in [
        &["--compile-timeout", "1ms"][..],
        &["--compile-max-memory", "8MiB"],
    ] {
        let mut args = vec!["run", HELLO, "--input", "Ada"];
        args.extend_from_slice(limit);
        let out = sovra(dir.path(), &args);
        assert_eq!(
            out.status.code(),
            Some(4),
            "{limit:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("compil"),
            "{}",
            text(&out.stderr)
        );
    }
    // Within the limits it compiles once, in the worker, and runs.
    let out = sovra(dir.path(), &["run", HELLO, "--input", "Ada"]);
    succeeds(&out);
    assert_eq!(text(&out.stdout), "Hello, Ada!\n");
}

#[test]
fn audit_verify_prints_each_chain_head_and_names_tampered_records() {
    let dir = tempfile::tempdir().unwrap();
    for tenant in ["acme", "acme", "globex"] {
        let out = sovra(
            dir.path(),
            &["run", HELLO, "--tenant", tenant, "--input", "Ada"],
        );
        succeeds(&out);
    }
    let data = dir.path().to_str().unwrap();
    let out = sovra(dir.path(), &["audit", "verify", "--data-dir", data]);
    succeeds(&out);
    let report = text(&out.stdout);
    assert!(
        report.contains("intact  acme  2 records  head "),
        "{report}"
    );
    assert!(
        report.contains("intact  globex  1 records  head "),
        "{report}"
    );

    let conn = support::keyed_connection(dir.path(), &dir.path().join("audit.db"), "audit");
    conn.execute(
        "UPDATE invocations SET outcome = 'trap' WHERE id = (SELECT min(id) FROM invocations)",
        [],
    )
    .unwrap();
    drop(conn);
    let out = sovra(dir.path(), &["audit", "verify", "--data-dir", data]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("BROKEN  acme"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stdout).contains("was altered"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("tampered"),
        "{}",
        text(&out.stderr)
    );
    let globex = sovra(
        dir.path(),
        &["audit", "verify", "--data-dir", data, "--tenant", "globex"],
    );
    assert_eq!(globex.status.code(), Some(0));
}

#[test]
fn run_gives_an_agent_the_tools_it_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let call = |extra: &[&str]| {
        let mut args = vec!["run", TOOL_CALLER, "--input", r#"call echo-tool {"a":1}"#];
        args.extend_from_slice(extra);
        sovra(dir.path(), &args)
    };
    let out = call(&["--tool", ECHO_TOOL, "--allow-tool", "echo-tool"]);
    succeeds(&out);
    assert_eq!(text(&out.stdout).trim(), r#"{"a":1}"#);
    // Given but not allowed: the agent imports tools and none is granted.
    fails_with(&call(&["--tool", ECHO_TOOL]), 3, "`tools`");
    // Allowed but not given: not found, as the agent reports it.
    let out = call(&["--allow-tool", "echo-tool"]);
    succeeds(&out);
    assert!(
        text(&out.stdout).starts_with("error not-found:"),
        "{}",
        text(&out.stdout)
    );
    fails_with(
        &call(&["--tool", HELLO, "--allow-tool", "echo-tool"]),
        2,
        "is not a tool",
    );
}

/// `tenant`'s database under a `sovra run` data directory.
fn tenant_db(dir: &Path, tenant: &str) -> std::path::PathBuf {
    dir.join("tenants").join(tenant).join("tenant.db")
}

/// Leaves `tenant`'s database as a node from before encryption at rest
/// would have: the same tables and rows in a plain SQLite file, no key file.
fn make_plain(dir: &Path, tenant: &str) {
    let db = tenant_db(dir, tenant);
    let plain = db.with_file_name("plain.db");
    let conn = support::keyed_connection(dir, &db, &format!("tenant/{tenant}"));
    conn.execute(
        "ATTACH DATABASE ?1 AS plain KEY ''",
        [plain.to_str().unwrap()],
    )
    .unwrap();
    conn.query_row("SELECT sqlcipher_export('plain')", [], |_| Ok(()))
        .unwrap();
    conn.execute_batch("DETACH DATABASE plain").unwrap();
    drop(conn);
    for leftover in ["tenant.db-wal", "tenant.db-shm", "tenant.db.key"] {
        let _ = std::fs::remove_file(db.with_file_name(leftover));
    }
    std::fs::rename(&plain, &db).unwrap();
    let header = std::fs::read(&db).unwrap();
    assert!(header.starts_with(b"SQLite format 3\0"));
}

/// `sovra tenant rekey` of tenant `dev` under `dir`, run to its end.
fn rekey(dir: &Path) -> Output {
    let data_dir = dir.to_str().unwrap();
    sovra(dir, &["tenant", "rekey", "--data-dir", data_dir, "dev"])
}

/// Runs `sovra tenant rekey` and kills it (SIGKILL) `after` its start.
fn rekey_killed_after(dir: &Path, after: std::time::Duration) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sovra"))
        .args([
            "tenant",
            "rekey",
            "--data-dir",
            dir.to_str().unwrap(),
            "dev",
        ])
        .env_remove("SOVRA_NODE_KEY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    let _ = child.kill();
    child.wait().unwrap();
}

#[test]
fn encryption_and_rekey_killed_at_any_moment_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let count = |expected: u32| {
        let out = sovra(
            dir.path(),
            &["run", COUNTER, "--grant", "kv", "--input", "apples"],
        );
        succeeds(&out);
        assert_eq!(text(&out.stdout), format!("apples: {expected}\n"));
    };
    count(1);
    let mut expected = 2;
    // Encrypting a plain database in place, killed at moments spread over
    // the process's life (it ends within a few tens of milliseconds).
    for step in 0..12u64 {
        make_plain(dir.path(), "dev");
        rekey_killed_after(dir.path(), std::time::Duration::from_millis(step * 3));
        count(expected);
        expected += 1;
    }
    assert!(
        !std::fs::read(tenant_db(dir.path(), "dev"))
            .unwrap()
            .starts_with(b"SQLite format 3\0")
    );
    // Changing the key, likewise.
    for step in 0..12u64 {
        rekey_killed_after(dir.path(), std::time::Duration::from_millis(step * 3));
        count(expected);
        expected += 1;
    }
    // And uninterrupted: the old key file no longer opens the database.
    let key_file = tenant_db(dir.path(), "dev").with_file_name("tenant.db.key");
    let before = std::fs::read(&key_file).unwrap();
    let out = rekey(dir.path());
    succeeds(&out);
    assert_ne!(std::fs::read(&key_file).unwrap(), before);
    count(expected);
}

#[test]
fn rekey_refuses_while_a_runtime_has_the_data_directory_open() {
    let dir = tempfile::tempdir().unwrap();
    succeeds(&sovra(
        dir.path(),
        &["run", COUNTER, "--grant", "kv", "--input", "pears"],
    ));
    // A runtime holding the directory: `sovra run` of an agent that spins
    // until its time limit.
    let mut running = Command::new(env!("CARGO_BIN_EXE_sovra"))
        .args(["run", SPIN, "--timeout", "5s"])
        .env("SOVRA_DATA_DIR", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let out = rekey(dir.path());
    let _ = running.kill();
    running.wait().unwrap();
    fails_with(&out, 2, "stop the node or `sovra run` using it first");
}

/// A process that ends while another of its threads still writes a sealed
/// database (here the audit log of a runtime dropped on a worker thread)
/// exits with its own status, never by a signal from OpenSSL's exit-time
/// cleanup. The race depends on timing: before the fix, 3 of 87 such runs
/// in a shell loop died of SIGSEGV (core: `OPENSSL_cleanup` on the main
/// thread, `RAND_bytes` for a page's IV on the audit writer); under this
/// test's pipes it shows less often, so it repeats the run.
#[test]
fn exiting_while_a_thread_writes_a_sealed_database_never_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    for run in 0..200 {
        let out = sovra(dir.path(), &["control", HELLO, "--data-dir", data]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "run {run}: {:?} {}",
            out.status,
            text(&out.stderr)
        );
    }
}
