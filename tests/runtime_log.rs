//! Failed invocations (timeout, function error, worker crash) are each one warn line in the
//! runtime's own log, with the request id, function, errorType and message; not only in the
//! worker's files. Every line of the runtime's own about one invocation carries its id.

mod common;

use common::{Noslate, Req, TempDir, assert_function_error, profile, wait_until};
use serde_json::{Value, json};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

fn function(dir: &Path, name: &str, source: &str) -> Value {
    let code = dir.join(name);
    fs::create_dir_all(&code).expect("create the code dir");
    fs::write(code.join("index.js"), source).expect("write the handler");
    let mut p = profile(name, "echo");
    p["url"] = json!(code);
    p["worker"]["invokeTimeout"] = json!(300);
    p["resourceLimit"] = json!({"memory": 128 * common::MIB});
    p
}

#[track_caller]
fn assert_logged(ns: &Noslate, id: &str, function: &str, error_type: &str, message: &str) {
    let wanted = [
        "WARN",
        &format!("[dp req={id}] function {function} failed: {error_type}: "),
        message,
    ];
    wait_until(Duration::from_secs(5), "the failure's log line", || {
        ns.log_count(&wanted) == 1
    });
}

#[test]
fn timeouts_function_errors_and_crashes_are_logged() {
    let dir = TempDir::new();
    let d = dir.path();
    let fns = json!([
        function(d, "hangs", "exports.handler = (ctx, req, res) => {};\n"),
        function(
            d,
            "throws",
            "exports.handler = () => { throw new Error('bad input\\nsecond line'); };\n"
        ),
        function(
            d,
            "dies",
            "exports.handler = () => { process.kill(process.pid, 'SIGKILL'); };\n"
        ),
        function(
            d,
            "breaks",
            "exports.handler = (ctx, req, res) => { res.writeHead(200); res.write('x'); \
             setTimeout(() => process.kill(process.pid, 'SIGKILL'), 20); };\n"
        ),
        function(
            d,
            "works",
            "exports.handler = (ctx, req, res) => res.end('ok');\n"
        ),
    ]);
    let ns = Noslate::start(&fns);
    let invoke = |name: &str, id: &str| {
        ns.send(
            &Req::new("POST", &format!("/invoke/{name}"))
                .header("x-fc-request-id", id)
                .body(b"x"),
        )
    };

    assert_function_error(&invoke("hangs", "r-timeout"), "FunctionTimeout");
    assert_logged(&ns, "r-timeout", "hangs", "FunctionTimeout", "300 ms");

    assert_function_error(&invoke("throws", "r-error"), "Error");
    // One line, the message's own line break escaped.
    assert_logged(&ns, "r-error", "throws", "Error", "bad input\\nsecond line");

    assert_function_error(&invoke("dies", "r-crash"), "WorkerCrashed");
    assert_logged(&ns, "r-crash", "dies", "WorkerCrashed", "");

    // Cut after its head: the client gets a truncated body, and the log names the request.
    let mut raw = common::raw_connect(ns.port(), Duration::from_secs(10));
    raw.write_all(
        b"POST /invoke/breaks HTTP/1.1\r\nhost: x\r\nx-fc-request-id: r-cut\r\n\
          content-length: 1\r\n\r\nx",
    )
    .expect("send");
    let (_, cut) = common::RawReader::new(raw).read_to_end();
    assert!(cut.starts_with(b"HTTP/1.1 200"), "{cut:?}");
    wait_until(Duration::from_secs(5), "the abort's log line", || {
        ns.log_count(&["req=r-cut] aborting response"]) == 1
    });

    let ok = invoke("works", "r-ok");
    assert_eq!(ok.status, 200, "{}", ok.brief());
    assert_eq!(ns.log_count(&["r-ok"]), 0, "a success is not logged");
}
