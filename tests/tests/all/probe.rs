//! Escape attempts and capability probes through the `probe` guest.

use sovra_runtime::{AgentErrorKind, Capability, Grants, InvokeError};
use sovra_test_artifacts::PROBE;

use crate::support::{agent_error, grants, runtime};

/// Everything the probe imports: kv, sql and one model.
fn all_grants() -> Grants {
    grants(true, true, &["allowed-model"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_files_cannot_be_read_listed_or_written() {
    let test = runtime();
    let probe = test.caller(PROBE, "mallory", all_grants());

    let (_, message) = agent_error(probe.failure("read-file:/etc/passwd").await);
    assert!(!message.contains("root:"), "{message}");
    let data_file = test.dir.path().join("audit.db");
    let read = format!("read-file:{}", data_file.display());
    let (_, message) = agent_error(probe.failure(&read).await);
    assert!(message.starts_with("read "), "{message}");
    agent_error(probe.failure("list-dir:/").await);
    agent_error(probe.failure("list-dir:.").await);

    let target = test.dir.path().join("pwned");
    agent_error(
        probe
            .failure(&format!("write-file:{}", target.display()))
            .await,
    );
    assert!(!target.exists(), "the guest wrote a host file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_and_arguments_are_empty() {
    let test = runtime();
    let probe = test.caller(PROBE, "mallory", all_grants());
    assert!(
        std::env::var_os("PATH").is_some(),
        "the host has an environment"
    );
    assert_eq!(probe.output("env:").await, "");
    assert_eq!(probe.output("args:").await, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_escapes_are_refused_and_audited() {
    let test = runtime();
    let probe = test.caller(PROBE, "mallory", all_grants());
    let outside = test.dir.path().join("outside.db");
    let attempts = [
        (
            format!("sql-exec:ATTACH DATABASE '{}' AS evil", outside.display()),
            "ATTACH",
        ),
        (
            "sql-exec:PRAGMA journal_mode = DELETE".to_owned(),
            "PRAGMA journal_mode",
        ),
        (
            "sql-exec:PRAGMA writable_schema = ON".to_owned(),
            "PRAGMA writable_schema",
        ),
        (
            "sql-query:SELECT key, value FROM _sovra_kv".to_owned(),
            "reserved for the host",
        ),
        (
            "sql-exec:DROP TABLE _sovra_kv".to_owned(),
            "reserved for the host",
        ),
        (
            "sql-query:SELECT load_extension('x')".to_owned(),
            "load_extension",
        ),
    ];
    for (input, needle) in &attempts {
        let (kind, message) = agent_error(probe.failure(input).await);
        assert_eq!(kind, AgentErrorKind::AccessDenied, "{input}: {message}");
        assert!(message.contains(needle), "{input}: {message}");
    }
    assert!(!outside.exists());
    let audit = test.runtime.audit().recent("mallory", 10).unwrap();
    assert!(
        audit
            .iter()
            .any(|r| r.denials == ["sql: ATTACH is not allowed"]),
        "{audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_sql_and_kv_work() {
    let test = runtime();
    let probe = test.caller(PROBE, "acme", all_grants());
    assert_eq!(
        probe
            .output("sql-exec:CREATE TABLE t (a INTEGER, b TEXT)")
            .await,
        "0"
    );
    assert_eq!(
        probe
            .output("sql-exec:INSERT INTO t VALUES (1, 'one'), (2, NULL)")
            .await,
        "2"
    );
    assert_eq!(
        probe
            .output("sql-query:SELECT a, b FROM t ORDER BY a")
            .await,
        "1|one\n2|NULL"
    );
    assert_eq!(probe.output("kv-set:color=blue").await, "ok");
    assert_eq!(probe.output("kv-get:color").await, "blue");
    assert_eq!(probe.output("kv-list:co").await, "color");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ungranted_interface_is_refused_by_name() {
    let test = runtime();
    let probe = test.caller(PROBE, "acme", all_grants());
    let cases = [
        (
            grants(true, false, &["allowed-model"]),
            Capability::Sql,
            "sovra:agent/sql@",
        ),
        (
            grants(false, true, &["allowed-model"]),
            Capability::Kv,
            "sovra:agent/kv@",
        ),
        (
            grants(true, true, &[]),
            Capability::Inference,
            "sovra:agent/inference@",
        ),
    ];
    for (grants, expected, prefix) in cases {
        match probe.with_grants(grants).failure("env:").await {
            InvokeError::NotGranted {
                interface,
                capability,
            } => {
                assert_eq!(capability, expected);
                assert!(interface.starts_with(prefix), "{interface}");
            }
            other => panic!("expected NotGranted, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_off_the_allowlist_are_denied_without_revealing_them() {
    let test = runtime();
    let probe = test.caller(PROBE, "acme", all_grants());
    for call in ["generate", "stream", "embed", "tensor"] {
        let (kind, message) = agent_error(probe.failure(&format!("{call}:secret-model")).await);
        assert_eq!(kind, AgentErrorKind::AccessDenied, "{call}: {message}");
        assert!(message.contains("secret-model"), "{message}");
    }
    let audit = test.runtime.audit().recent("acme", 1).unwrap();
    assert_eq!(audit[0].denials, ["model: secret-model"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_models_answers_not_found() {
    let test = runtime();
    let probe = test.caller(PROBE, "acme", all_grants());
    assert_eq!(probe.output("list-models:").await, "");
    for call in ["generate", "stream", "embed", "tensor", "bad-sampling"] {
        let (kind, message) = agent_error(probe.failure(&format!("{call}:allowed-model")).await);
        assert_eq!(kind, AgentErrorKind::NotFound, "{call}: {message}");
        assert!(message.contains("allowed-model"), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_host_call_arguments_are_refused() {
    let test = runtime();
    let probe = test.caller(PROBE, "mallory", all_grants());
    assert_eq!(
        probe.failure("big-hostcall:").await,
        InvokeError::HostCallDataLimit {
            limit: sovra_runtime::limits::MAX_HOSTCALL_BYTES
        }
    );
    // Nothing was stored.
    assert_eq!(probe.output("kv-get:big").await, "<none>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_panic_is_a_trap_not_a_host_failure() {
    let test = runtime();
    let probe = test.caller(PROBE, "acme", all_grants());
    let error = probe.failure("panic:").await;
    assert!(matches!(error, InvokeError::Trap { .. }), "{error:?}");
    // The same agent serves the next call.
    assert_eq!(probe.output("env:").await, "");
}

/// Text that would clear a terminal, forge a log line of another tenant and
/// reverse what follows it.
const INJECTION: &str = "\u{1b}[2J\nlevel=ERROR tenant=other msg=\"forged\"\r\u{202e}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_log_lines_and_error_messages_carry_no_control_characters() {
    let test = runtime();
    let probe = test.caller(PROBE, "acme", all_grants());
    let report = probe.report(&format!("log:{INJECTION}")).await;
    assert!(report.result.is_ok(), "{:?}", report.result);
    let line = &report.logs[0];
    let texts = [&line.message, &line.fields[0].0, &line.fields[0].1];
    for text in texts {
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert!(text.contains("\\x1b[2J\\nlevel=ERROR"), "{text:?}");
        assert!(!text.contains('\u{202e}'), "{text:?}");
    }
    let (_, message) = agent_error(probe.failure(&format!("fail:{INJECTION}")).await);
    assert!(!message.chars().any(char::is_control), "{message:?}");
}

/// A guest sleeping in a host call runs no code and holds no execution slot:
/// one tenant with more sleepers than the node has cores does not hold up
/// another tenant's calls for the length of the sleep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_guests_do_not_hold_the_execution_slots() {
    let test = runtime();
    let sleepy = test.caller(PROBE, "sleepy", all_grants());
    let awake = test.caller(sovra_test_artifacts::HELLO, "awake", Grants::none());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut sleepers = Vec::new();
    for _ in 0..cores * 2 {
        let sleepy = sleepy.clone();
        sleepers.push(tokio::spawn(async move {
            sleepy.report("sleep:3000").await.result
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    assert_eq!(awake.output("Bo").await, "Hello, Bo!");
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1500),
        "waited {:?} behind sleeping guests",
        started.elapsed()
    );
    for sleeper in sleepers {
        assert_eq!(sleeper.await.unwrap().unwrap().output, "slept 3000ms");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_wasi_results_and_handle_floods_are_limits_not_traps() {
    let test = runtime();
    let probe = test.caller(PROBE, "acme", all_grants());
    assert_eq!(probe.output("random:4096").await, "4096");
    let big = probe.failure(&format!("random:{}", 64 << 20)).await;
    assert!(
        matches!(big, InvokeError::HostCallResultLimit { requested, .. } if requested == 64 << 20),
        "{big:?}"
    );
    assert!(big.is_limit());
    let flood = probe.failure("handles:100000").await;
    assert!(
        matches!(flood, InvokeError::ResourceLimit { .. }),
        "{flood:?}"
    );
    assert!(flood.is_limit());
}
