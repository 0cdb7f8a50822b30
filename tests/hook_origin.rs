//! Lifecycle hooks are honoured only from the platform: a function that calls `/pre-stop` or
//! `/initialize` on the FC port over loopback (itself, through a detached grandchild, or by
//! sending and hanging up at once) is refused, and the runtime keeps serving. A stopped runtime
//! reports itself unhealthy.

mod common;

use common::*;
use serde_json::{Value, json};

fn hostile_runtime() -> Noslate {
    require_node();
    let mut probe = profile("probe", "hookprobe");
    probe["worker"]["maxActivateRequests"] = json!(4);
    Noslate::start(&json!([probe, profile("echo", "echo")]))
}

/// Invokes the probe, which tries `path` on the FC port the way `how` says.
fn attempt(ns: &Noslate, path: &str, how: &str) -> Value {
    let body = json!({"port": ns.port(), "path": path, "how": how}).to_string();
    let resp = ns.invoke(body.as_bytes(), &[("x-noslate-function", "probe")]);
    assert_eq!(
        resp.status,
        200,
        "the probe itself failed: {}",
        resp.brief()
    );
    resp.json()
}

#[track_caller]
fn assert_still_serving(ns: &Noslate) {
    let health = ns.send(&Req::new("GET", "/healthz"));
    assert_eq!(health.status, 200, "healthz: {}", health.brief());
    assert_eq!(health.json()["lifecycle"], "running");
    let resp = ns.invoke(b"still here", &[("x-noslate-function", "echo")]);
    assert_eq!(
        resp.status,
        200,
        "an invocation after the attempt: {}",
        resp.brief()
    );
}

#[test]
fn a_function_cannot_stop_the_runtime_through_the_fc_port() {
    let ns = hostile_runtime();
    for path in ["/pre-stop", "/pre-freeze", "/initialize"] {
        let result = attempt(&ns, path, "direct");
        assert_eq!(result["status"], 403, "{path} from a worker: {result}");
        let body: Value = serde_json::from_str(result["body"].as_str().unwrap_or("{}"))
            .expect("a JSON error body");
        assert_eq!(body["errorType"], "HookForbidden", "{path}: {body}");
    }
    assert_still_serving(&ns);
    ns.wait_log_count(&["refusing a lifecycle hook"], 3);
}

#[test]
fn a_detached_grandchild_of_a_worker_is_refused_too() {
    let ns = hostile_runtime();
    let result = attempt(&ns, "/pre-stop", "detached");
    assert_eq!(result["status"], 403, "{result}");
    assert_still_serving(&ns);
}

#[test]
fn a_hook_sent_and_abandoned_at_once_does_not_stop_the_runtime() {
    let ns = hostile_runtime();
    for _ in 0..5 {
        attempt(&ns, "/pre-stop", "hangup");
    }
    assert_still_serving(&ns);
}

#[test]
fn the_platform_still_stops_the_runtime_and_then_it_is_unhealthy() {
    let ns = hostile_runtime();
    let stop = ns.send(&Req::new("GET", "/pre-stop"));
    assert_eq!(stop.status, 200, "{}", stop.brief());
    let health = ns.send(&Req::new("GET", "/healthz"));
    assert_eq!(health.status, 503, "a stopped runtime must not say healthy");
    assert_eq!(health.json()["lifecycle"], "stopped");
    let resp = ns.invoke(b"x", &[("x-noslate-function", "echo")]);
    assert_error_json(&resp, 503, Some("RuntimeStopped"));
    assert_eq!(
        resp.header("connection"),
        Some("close"),
        "answers of a stopping runtime close their connection"
    );
}
