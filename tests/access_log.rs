//! The access log: one JSON line per invocation and per hook in `NOSLATE_LOGDIR/access.log` by
//! default (or on stdout, or none), with the request's outcome, bytes and timings; an unknown
//! destination is a configuration error that names its field.

mod common;

use common::{Noslate, Req, WAIT, profile, wait_until};
use serde_json::{Value, json};
use std::path::Path;
use std::thread;

/// The lines of `access.log` in `logs`, parsed.
fn access_lines(logs: &Path) -> Vec<Value> {
    std::fs::read_to_string(logs.join("access.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The line of request `id`, once it is written.
fn line_of(logs: &Path, id: &str) -> Value {
    let mut found = None;
    wait_until(WAIT, &format!("the access-log line of {id}"), || {
        found = access_lines(logs)
            .into_iter()
            .find(|l| l["requestId"] == id);
        found.is_some()
    });
    found.unwrap_or_default()
}

fn number(line: &Value, field: &str) -> f64 {
    line[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is a number: {line}"))
}

#[test]
fn every_invocation_and_hook_is_one_line_with_its_outcome_and_timings() {
    let mut echo = profile("echo", "echo");
    // No worker before the first call, and one request at a time: the first call waits for a
    // cold start, and a second call waits in the queue.
    echo["worker"]["reservationCount"] = json!(0);
    echo["worker"]["replicaCountLimit"] = json!(1);
    echo["worker"]["maxActivateRequests"] = json!(1);
    let ns = Noslate::start(&json!([echo, profile("faulty", "faulty")]));
    let logs = ns.dir().join("logs");
    let invoke = |function: &str, id: &str, extra: &[(&str, &str)]| {
        let mut req = Req::new("POST", &format!("/invoke/{function}"))
            .header("x-fc-request-id", id)
            .body(b"hello");
        for (k, v) in extra {
            req = req.header(k, v);
        }
        ns.send(&req)
    };

    assert_eq!(invoke("echo", "cold", &[]).status, 200);
    let cold = line_of(&logs, "cold");
    assert_eq!(cold["kind"], "invoke", "{cold}");
    assert_eq!(cold["function"], "echo", "{cold}");
    assert_eq!(cold["method"], "POST", "{cold}");
    assert_eq!(cold["path"], "/invoke/echo", "{cold}");
    assert_eq!(cold["status"], 200, "{cold}");
    assert_eq!(cold["errorType"], Value::Null, "{cold}");
    assert_eq!(cold["bytesIn"], 5, "{cold}");
    assert!(number(&cold, "bytesOut") > 5.0, "{cold}");
    assert!(
        cold["worker"]
            .as_str()
            .is_some_and(|w| w.starts_with("echo-")),
        "{cold}"
    );
    assert!(
        cold["client"]
            .as_str()
            .is_some_and(|c| c.starts_with("127.0.0.1:")),
        "{cold}"
    );
    assert!(number(&cold, "time") > 1.7e12, "epoch milliseconds: {cold}");
    let (queue, start) = (number(&cold, "queueMs"), number(&cold, "coldStartMs"));
    let (head, total) = (number(&cold, "headMs"), number(&cold, "totalMs"));
    assert!(queue > 0.0 && start > 0.0, "it waited for a start: {cold}");
    assert!(start <= queue && queue <= head && head <= total, "{cold}");

    // Two at once on one slot: the second waits for the first (which takes 300 ms).
    thread::scope(|s| {
        let first = s.spawn(|| invoke("echo", "slow", &[("x-echo-delay", "300")]));
        wait_until(WAIT, "the slow call to reach its worker", || {
            let (_, stats, _) = ns.cli(&["stats"]);
            stats.contains("\"inflight\":1") || stats.contains("\"inflight\": 1")
        });
        assert_eq!(invoke("echo", "queued", &[]).status, 200);
        assert_eq!(first.join().expect("first call").status, 200);
    });
    let queued = line_of(&logs, "queued");
    assert!(number(&queued, "queueMs") >= 50.0, "{queued}");
    assert_eq!(
        queued["coldStartMs"],
        Value::Null,
        "a warm worker took it: {queued}"
    );

    let thrown = invoke("faulty", "thrown", &[("x-faulty-mode", "throw")]);
    assert_eq!(thrown.status, 404);
    let thrown = line_of(&logs, "thrown");
    assert_eq!(thrown["status"], 404, "{thrown}");
    assert_eq!(
        thrown["errorType"], "Error",
        "the function's own error type: {thrown}"
    );

    assert_eq!(invoke("nobody", "missing", &[]).status, 404);
    let missing = line_of(&logs, "missing");
    assert_eq!(missing["errorType"], "FunctionNotFound", "{missing}");
    assert_eq!(missing["function"], Value::Null, "{missing}");
    assert_eq!(missing["queueMs"], Value::Null, "{missing}");

    let hook = ns.send(&Req::new("GET", "/pre-freeze").header("x-fc-request-id", "freeze"));
    assert_eq!(hook.status, 200);
    let freeze = line_of(&logs, "freeze");
    assert_eq!(freeze["kind"], "pre-freeze", "{freeze}");
    assert_eq!(freeze["status"], 200, "{freeze}");

    // The runtime's own routes are not invocations.
    assert_eq!(ns.send(&Req::new("GET", "/healthz")).status, 200);
    let lines = access_lines(&logs);
    assert_eq!(
        lines.len(),
        6,
        "one line per invocation and hook: {lines:#?}"
    );

    let (ok, metrics, err) = ns.cli(&["metrics"]);
    assert!(ok, "{err}");
    assert!(
        metrics.contains("\nnoslate_access_log_lines_total 6\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nnoslate_access_log_dropped_lines_total 0\n"),
        "{metrics}"
    );
}

#[test]
fn the_console_destination_writes_to_stdout_and_off_writes_nothing() {
    let ns = Noslate::builder()
        .functions(&json!([profile("echo", "echo")]))
        .config(&json!({"logger": {"accessLog": "console"}}))
        .start();
    assert_eq!(
        ns.invoke(b"x", &[("x-fc-request-id", "on-stdout")]).status,
        200
    );
    ns.wait_stdout("\"requestId\":\"on-stdout\"");
    assert!(!ns.dir().join("logs/access.log").exists());

    let ns = Noslate::builder()
        .functions(&json!([profile("echo", "echo")]))
        .config(&json!({"logger": {"accessLog": "off"}}))
        .start();
    assert_eq!(
        ns.invoke(b"x", &[("x-fc-request-id", "nowhere")]).status,
        200
    );
    ns.wait_stdout("FC Invoke End RequestId: nowhere");
    assert!(!ns.dir().join("logs/access.log").exists());
    assert_eq!(ns.log_count(&["\"requestId\":\"nowhere\""]), 0);
}

#[test]
fn an_unknown_destination_is_a_config_error_naming_the_field() {
    let exited = Noslate::builder()
        .functions(&json!([profile("echo", "echo")]))
        .config(&json!({"logger": {"accessLog": "syslog"}}))
        .run_to_exit();
    assert!(!exited.status.success(), "{exited:?}");
    assert!(
        exited
            .stderr
            .contains(r#"logger.accessLog: expected "off", "file" or "console", got "syslog""#),
        "{}",
        exited.stderr
    );
}
