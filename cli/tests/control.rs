//! Controllers from the outside: `sovra control` runs an episode and exits
//! with its outcome; a node runs episodes of a tenant's installed
//! controller (start, status, telemetry as server-sent events, stop), keeps
//! their summaries in the tenant's own database and counts them in
//! `/metrics`.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use sovra_test_artifacts::{CARTPOLE_PID, HELLO, ROGUE_CONTROLLER};
use support::{fails_with, invoke, sovra, start_node, succeeds, tenant, tenant_with, text};

#[test]
fn sovra_control_runs_an_episode_and_exits_with_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let out = sovra(&[
        "control",
        CARTPOLE_PID,
        "--world",
        "cartpole",
        "--rate",
        "200Hz",
        "--duration",
        "5s",
        "--lockstep",
        "--noise",
        "0.002",
        "--json",
        "--data-dir",
        data,
    ]);
    succeeds(&out);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["stop"]["kind"], "completed", "{summary}");
    assert_eq!(summary["ticks"], 1000);
    // Its init's log line, marked as the controller's.
    assert!(text(&out.stderr).contains("[controller info] PID on cartpole at 200 Hz"));

    let out = sovra(&[
        "control",
        ROGUE_CONTROLLER,
        "--rate",
        "100Hz",
        "--duration",
        "2s",
        "--param",
        "mode=spin",
        "--param",
        "from=5",
        "--allow-model",
        "digits",
        "--data-dir",
        data,
    ]);
    fails_with(&out, 1, "");
    let printed = text(&out.stdout);
    assert!(
        printed.contains("ended: deadline missed on 10 ticks in a row"),
        "{printed}"
    );
    assert!(
        printed.contains("10 missed") && printed.contains("10 safe actions"),
        "{printed}"
    );

    // A controller that needs a model it was not given is refused before
    // it runs; bad arguments name themselves.
    let out = sovra(&["control", ROGUE_CONTROLLER, "--data-dir", data]);
    fails_with(&out, 3, "inference");
    let out = sovra(&[
        "control",
        CARTPOLE_PID,
        "--world",
        "moon",
        "--data-dir",
        data,
    ]);
    fails_with(&out, 2, "no world named `moon`");
    let out = sovra(&[
        "control",
        CARTPOLE_PID,
        "--rate",
        "fast",
        "--data-dir",
        data,
    ]);
    fails_with(&out, 2, "not a rate");
    let out = sovra(&[
        "control",
        CARTPOLE_PID,
        "--limit",
        "force=-99:99",
        "--data-dir",
        data,
    ]);
    fails_with(&out, 2, "exceed");
    let out = sovra(&["control", HELLO, "--data-dir", data]);
    fails_with(&out, 2, "not a controller");
}

#[test]
fn a_node_runs_a_tenants_episodes_streams_their_telemetry_and_keeps_their_summaries() {
    let (_dir, _node, client) = start_node("");
    let acme = tenant_with(
        &client,
        "acme",
        &[
            (CARTPOLE_PID, "cartpole-pid", json!({})),
            (HELLO, "hello", json!({})),
        ],
    );
    let start = |plugin: &str, body: serde_json::Value| {
        client.post(
            &format!("/v1/tenants/acme/installs/{plugin}/episodes"),
            Some(&acme),
            body,
        )
    };
    let started = start(
        "cartpole-pid",
        json!({"world": "cartpole", "rate_hz": 100, "duration_s": 1.0, "telemetry_hz": 20,
               "parameters": {"kd_x": "2.5"}, "sensor_noise": 0.001}),
    );
    assert_eq!(started.status, 201, "{}", started.text);
    let id = started.body["episode_id"].as_str().unwrap().to_owned();

    // Live telemetry: a sample every 5 ticks, then the summary.
    let events = client.get_events(&format!("/v1/tenants/acme/episodes/{id}/telemetry"), &acme);
    let (last, summary) = events.last().unwrap();
    assert_eq!(last, "summary", "{events:?}");
    assert_eq!(summary["stop"]["kind"], "completed", "{summary}");
    assert_eq!(summary["ticks"], 100);
    let samples: Vec<_> = events.iter().filter(|(e, _)| e == "sample").collect();
    assert!(
        samples.len() >= 10 && samples.len() <= 20,
        "{}",
        samples.len()
    );
    for (_, sample) in &samples {
        assert_eq!(sample["tick"].as_u64().unwrap() % 5, 0);
        assert_eq!(sample["observation"].as_array().unwrap().len(), 4);
        assert!(sample["action"][0].as_f64().unwrap().abs() <= 20.0);
    }

    // Its record, from the tenant's own database; replayed telemetry.
    let shown = client.get(&format!("/v1/tenants/acme/episodes/{id}"), Some(&acme));
    assert_eq!(shown.status, 200, "{}", shown.text);
    assert_eq!(shown.body["status"], "ended");
    assert_eq!(shown.body["stop"], "completed");
    assert_eq!(shown.body["summary"]["ticks"], 100);
    // The replay holds every sample; the live stream, those sent after it
    // was opened (the episode may have sampled tick 0 before that).
    let replay = client.get_events(&format!("/v1/tenants/acme/episodes/{id}/telemetry"), &acme);
    assert_eq!(replay.last().unwrap().0, "summary", "{replay:?}");
    let ticks = |events: &[&(String, serde_json::Value)]| -> Vec<u64> {
        events
            .iter()
            .map(|(_, sample)| sample["tick"].as_u64().unwrap())
            .collect()
    };
    let replayed: Vec<_> = replay.iter().filter(|(e, _)| e == "sample").collect();
    assert!(
        ticks(&replayed).ends_with(&ticks(&samples)),
        "live {:?} is not the end of the replay {:?}",
        ticks(&samples),
        ticks(&replayed)
    );
    assert_eq!(ticks(&replayed)[0], 0, "{replay:?}");
    let listed = client.get("/v1/tenants/acme/episodes", Some(&acme));
    assert_eq!(listed.column("episodes", "episode_id"), vec![id.as_str()]);
    // In the tenant's audited history, like an invocation.
    let history = client.get("/v1/tenants/acme/invocations?limit=10", Some(&acme));
    let audited = history.body["invocations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["invocation_id"] == id.as_str())
        .unwrap_or_else(|| panic!("{}", history.text))
        .clone();
    assert_eq!(
        (audited["agent"].as_str(), audited["outcome"].as_str()),
        (Some("cartpole-pid"), Some("ok"))
    );
    let again = client.post(
        &format!("/v1/tenants/acme/episodes/{id}/stop"),
        Some(&acme),
        json!({}),
    );
    assert_eq!((again.status, again.code()), (409, "episode-ended"));

    // A long episode, stopped by the operator.
    let long = start(
        "cartpole-pid",
        json!({"world": "cartpole", "rate_hz": 100, "duration_s": 60.0}),
    );
    assert_eq!(long.status, 201, "{}", long.text);
    let long_id = long.body["episode_id"].as_str().unwrap().to_owned();
    std::thread::sleep(Duration::from_millis(200));
    let running = client.get(&format!("/v1/tenants/acme/episodes/{long_id}"), Some(&acme));
    assert_eq!(running.body["status"], "running", "{}", running.text);
    let stopped = client.post(
        &format!("/v1/tenants/acme/episodes/{long_id}/stop"),
        Some(support::OPERATOR_TOKEN),
        json!({}),
    );
    assert_eq!(stopped.status, 202, "{}", stopped.text);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = client.get(&format!("/v1/tenants/acme/episodes/{long_id}"), Some(&acme));
        if shown.body["status"] == "ended" {
            assert_eq!(shown.body["stop"], "stopped");
            break;
        }
        assert!(Instant::now() < deadline, "{}", shown.text);
        std::thread::sleep(Duration::from_millis(20));
    }

    // Refusals: not a controller, bad specs, a controller is not invoked.
    let refused = start(
        "hello",
        json!({"world": "cartpole", "rate_hz": 100, "duration_s": 1.0}),
    );
    assert_eq!((refused.status, refused.code()), (400, "not-a-controller"));
    for body in [
        json!({"world": "moon", "rate_hz": 100, "duration_s": 1.0}),
        json!({"world": "cartpole", "rate_hz": 100000, "duration_s": 1.0}),
        json!({"world": "cartpole", "rate_hz": 100, "duration_s": -1.0}),
        json!({"world": "cartpole", "rate_hz": 100, "duration_s": 1.0, "limits": {"force": [-50, 50]}}),
        json!({"world": "cartpole", "rate_hz": 100, "duration_s": 1.0, "telemetry_hz": 1000}),
    ] {
        let refused = start("cartpole-pid", body.clone());
        assert_eq!(
            (refused.status, refused.code()),
            (400, "invalid-episode"),
            "{body}: {}",
            refused.text
        );
    }
    let invoked = invoke(&client, "acme", &acme, "cartpole-pid", "");
    assert_eq!(invoked.status, 400, "{}", invoked.text);
    assert!(invoked.message().contains("controller"), "{}", invoked.text);

    // Another tenant sees none of it.
    let globex = tenant(&client, "globex");
    let foreign = client.get(&format!("/v1/tenants/acme/episodes/{id}"), Some(&globex));
    assert_eq!(foreign.status, 403);
    let own = client.get(&format!("/v1/tenants/globex/episodes/{id}"), Some(&globex));
    assert_eq!((own.status, own.code()), (404, "no-such-episode"));

    // Counted node-wide.
    let metrics = client.get("/metrics", None).text;
    assert!(
        metrics.contains("sovra_episodes_total{stop=\"completed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sovra_episodes_total{stop=\"stopped\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sovra_episode_tick_duration_seconds_count"),
        "{metrics}"
    );
}
