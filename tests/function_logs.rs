//! Function log lines: inside an invocation (or the initializer), console.* (Node.js) and print /
//! sys.stderr / logging (Python) lines read `<ISO time> <requestId> [LEVEL] message`, with the
//! right id even when invocations interleave in one worker; lines outside any have no id. Also
//! FC's x-fc-client-ip as the Node.js context's clientIP and the WSGI environ's REMOTE_ADDR, and
//! the initializer's context having the invocation context's shape.

mod common;

use std::thread;

use common::{Noslate, Req, assert_invoke_ok, profile, require_python};
use serde_json::{Value, json};

const CONCURRENT: usize = 4;

fn console_output() -> Value {
    json!({"logger": {"workerOutput": "console"}})
}

fn start(p: Value) -> Noslate {
    Noslate::builder()
        .functions(&json!([p]))
        .config(&console_output())
        .start()
}

/// Sends CONCURRENT invocations at once, tagged `tag-<i>` with request id `req-<i>`.
fn invoke_concurrently(ns: &Noslate) {
    thread::scope(|s| {
        for i in 0..CONCURRENT {
            s.spawn(move || {
                let id = format!("req-{i}");
                let resp = ns.invoke(format!("tag-{i}").as_bytes(), &[("x-fc-request-id", &id)]);
                let body = assert_invoke_ok(&resp);
                assert_eq!(body["requestId"], id.as_str(), "{body}");
            });
        }
    });
}

/// `<ISO time> <id> [<level>] <message>`: the line's parts, or None.
fn record(line: &str) -> Option<(&str, &str, &str)> {
    let (time, rest) = line.split_once(' ')?;
    let (id, rest) = rest.split_once(' ')?;
    let (level, message) = rest.strip_prefix('[')?.split_once("] ")?;
    let iso = time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T';
    iso.then_some((id, level, message))
}

/// Asserts that `<id> [<level>] <message>` is a record of exactly one line among `lines`, and
/// returns its index.
#[track_caller]
fn assert_record(lines: &[String], id: &str, level: &str, message: &str) -> usize {
    let found: Vec<usize> = (0..lines.len())
        .filter(|&i| record(&lines[i]) == Some((id, level, message)))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one `{id} [{level}] {message}` record in:\n{}",
        lines.join("\n")
    );
    found[0]
}

/// The initializer ran with the id of the /initialize request (or one the runtime made up), as
/// an INFO record; code outside any invocation (the module's `module_line`) wrote as it is.
#[track_caller]
fn assert_initializer_and_module_output(out: &[String], module_line: &str) {
    let init = out
        .iter()
        .filter_map(|l| record(l))
        .find(|r| r.2 == "initializer ran")
        .unwrap_or_else(|| panic!("no initializer record in:\n{}", out.join("\n")));
    assert_eq!(init.1, "INFO");
    assert!(!init.0.is_empty());
    assert!(
        out.iter().any(|l| l == module_line),
        "module-level output changed:\n{}",
        out.join("\n")
    );
}

/// Waits until `needle` shows up in stdout or stderr (bounded).
fn wait_either(ns: &Noslate, needle: &str) {
    common::wait_until(common::WAIT, needle, || {
        ns.stdout_lines().iter().any(|l| l.contains(needle))
            || ns.stderr_lines().iter().any(|l| l.contains(needle))
    });
}

#[test]
fn node_console_lines_carry_the_request_id_of_their_invocation() {
    let mut p = profile("logs", "logs-node");
    p["handlerStyle"] = json!("fc-event");
    p["initializer"] = json!("index.initializer");
    let ns = start(p);
    let resp = ns.send(&Req::new("POST", "/initialize").header("x-fc-request-id", "init-1"));
    assert_eq!(resp.status, 200, "body: {}", resp.brief());
    invoke_concurrently(&ns);
    // stdout and stderr are two streams: wait for the last record of each invocation on both.
    for i in 0..CONCURRENT {
        wait_either(&ns, &format!("logger tag-{i}"));
        wait_either(&ns, &format!("second line tag-{i}"));
    }
    let out = ns.stdout_lines();
    let err = ns.stderr_lines();
    for i in 0..CONCURRENT {
        let (id, tag) = (format!("req-{i}"), format!("tag-{i}"));
        assert_record(&out, &id, "INFO", &format!("first {tag}"));
        assert_record(&out, &id, "INFO", &format!("info {tag}"));
        assert_record(&out, &id, "DEBUG", &format!("debug {tag}"));
        assert_record(&out, &id, "INFO", &format!("logger {tag}"));
        assert_record(&err, &id, "WARN", &format!("warn {tag}"));
        // A multi-line message is one record: its continuation follows it at once.
        let at = assert_record(&err, &id, "ERROR", &format!("error {tag}"));
        assert_eq!(err[at + 1], format!("second line {tag}"));
    }
    assert_initializer_and_module_output(&out, "outside any invocation");
}

#[test]
fn a_functions_lines_sit_between_the_start_and_end_lines_of_its_invocation() {
    let mut p = profile("logs", "logs-node");
    p["handlerStyle"] = json!("fc-event");
    let ns = start(p);
    for i in 0..5 {
        let id = format!("seq-{i}");
        let resp = ns.invoke(format!("order-{i}").as_bytes(), &[("x-fc-request-id", &id)]);
        assert_invoke_ok(&resp);
        let start = ns.wait_stdout(&format!("FC Invoke Start RequestId: {id}"));
        let first = ns.wait_stdout(&format!("first order-{i}"));
        let last = ns.wait_stdout(&format!("logger order-{i}"));
        let end = ns.wait_stdout(&format!("FC Invoke End RequestId: {id}"));
        assert!(
            start < first && first < last && last < end,
            "{id}: Start {start}, first {first}, last {last}, End {end}"
        );
    }
}

#[test]
fn python_print_and_logging_lines_carry_the_request_id_of_their_invocation() {
    require_python();
    let mut p = profile("logs", "logs-python");
    p["runtime"] = json!("python3");
    p["handlerStyle"] = json!("fc-event");
    p["initializer"] = json!("index.initializer");
    let ns = start(p);
    let resp = ns.send(&Req::new("POST", "/initialize").header("x-fc-request-id", "init-1"));
    assert_eq!(resp.status, 200, "body: {}", resp.brief());
    invoke_concurrently(&ns);
    // Each call's last record is written as the call ends, after its answer. stdout and
    // stderr are two streams: a record on one may arrive before an earlier one on the other.
    for i in 0..CONCURRENT {
        wait_either(&ns, &format!("unfinished tag-{i}"));
        wait_either(&ns, &format!("error tag-{i}"));
    }
    let out = ns.stdout_lines();
    let err = ns.stderr_lines();
    for i in 0..CONCURRENT {
        let (id, tag) = (format!("req-{i}"), format!("tag-{i}"));
        assert_record(&out, &id, "INFO", &format!("first {tag}"));
        assert_record(&err, &id, "ERROR", &format!("error {tag}"));
        assert_record(&out, &id, "WARNING", &format!("logging {tag}"));
        let at = assert_record(&out, &id, "INFO", &format!("multi {tag}"));
        assert_eq!(out[at + 1], format!("second line {tag}"));
        // Text without a final newline is the call's record when the call ends.
        assert_record(&out, &id, "INFO", &format!("unfinished {tag}"));
    }
    assert_initializer_and_module_output(&out, "module loaded");
}

#[test]
fn node_context_client_ip_is_fc_client_ip() {
    let mut p = profile("logs", "logs-node");
    p["handlerStyle"] = json!("fc-event");
    let ns = start(p);
    let resp = ns.invoke(b"ip", &[("x-fc-client-ip", "203.0.113.7")]);
    let body = assert_invoke_ok(&resp);
    assert_eq!(body["clientIP"], "203.0.113.7", "{body}");
    let body = assert_invoke_ok(&ns.invoke(b"ip", &[]));
    assert_eq!(body["clientIP"], Value::Null, "{body}");
}

/// Without FC's header, the client's address comes from the first X-Forwarded-For's first hop,
/// else the first X-Real-IP, whatever the names' case, and an empty x-fc-client-ip does not
/// count. A head with a byte past ASCII (decoded another way in the worker) finds the same.
#[test]
fn node_context_client_ip_falls_back_to_forwarding_headers() {
    let mut p = profile("logs", "logs-node");
    p["handlerStyle"] = json!("fc-event");
    let ns = start(p);
    let cases: [(&[(&str, &str)], Value); 6] = [
        (
            &[
                ("X-Real-IP", "192.0.2.9"),
                ("X-Forwarded-For", " 198.51.100.1 , 10.0.0.1"),
                ("x-forwarded-for", "198.51.100.2"),
            ],
            json!("198.51.100.1"),
        ),
        (
            &[("x-real-ip", "192.0.2.9"), ("X-REAL-IP", "192.0.2.10")],
            json!("192.0.2.9"),
        ),
        (
            &[
                ("x-fc-client-ip", ""),
                ("x-forwarded-for", "198.51.100.3"),
                ("X-Fc-Client-Ip", "203.0.113.8"),
            ],
            json!("203.0.113.8"),
        ),
        (
            &[("x-forwarded-for", ""), ("x-real-ip", "192.0.2.11")],
            json!("192.0.2.11"),
        ),
        (
            &[("x-other", "198.51.100.4"), ("x-real-i", "1")],
            Value::Null,
        ),
        (
            &[("x-note", "caf\u{e9}"), ("X-Forwarded-For", "198.51.100.5")],
            json!("198.51.100.5"),
        ),
    ];
    for (headers, want) in cases {
        let body = assert_invoke_ok(&ns.invoke(b"ip", headers));
        assert_eq!(body["clientIP"], want, "{headers:?}: {body}");
    }
}

#[test]
fn python_wsgi_remote_addr_is_fc_client_ip() {
    require_python();
    let mut p = profile("logs", "logs-python");
    p["runtime"] = json!("python3");
    p["handlerStyle"] = json!("fc-http");
    p["handler"] = json!("index.app");
    let ns = start(p);
    let resp = ns.send(&Req::new("GET", "/ip").header("x-fc-client-ip", "203.0.113.9"));
    assert_eq!(resp.status, 200, "body: {}", resp.brief());
    assert_eq!(resp.text(), "203.0.113.9");
}

/// The initializer's context has the same members, nested ones included, as an invocation's,
/// even though the INIT carries none of FC's headers.
fn assert_initializer_context_has_the_invocation_shape(runtime: &str, fixture: &str) {
    let mut p = profile("logs", fixture);
    p["runtime"] = json!(runtime);
    p["handlerStyle"] = json!("fc-event");
    p["initializer"] = json!("index.initializer");
    let ns = start(p);
    let resp = ns.invoke(
        b"shape",
        &[
            ("x-fc-access-key-id", "ak"),
            ("x-fc-region", "cn-hangzhou"),
            ("x-fc-service-name", "svc"),
        ],
    );
    let body = assert_invoke_ok(&resp);
    assert!(body["init"].is_object(), "{body}");
    assert_eq!(body["init"], body["invoke"], "{body}");
    for key in ["credentials", "function", "service"] {
        assert!(body["init"][key].is_array(), "{key} missing: {body}");
    }
}

#[test]
fn node_initializer_context_has_the_invocation_shape() {
    assert_initializer_context_has_the_invocation_shape("nodejs", "logs-node");
}

#[test]
fn python_initializer_context_has_the_invocation_shape() {
    require_python();
    assert_initializer_context_has_the_invocation_shape("python3", "logs-python");
}
