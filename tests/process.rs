//! `runtime: "process"` (src/runtime/process.rs): one command per request, CGI style. Shell
//! scripts stand in for the functions: echo through `cat`, the request metadata and FC context
//! in the environment, the function's own env and cwd, a non-zero exit with the stderr tail, a
//! streamed response, 32 MiB both ways, concurrency, a timeout that kills the command, and a
//! command that is not executable.
//!
//! Conformance cases that this runtime cannot support, by design: the response status and
//! headers set by the function (always 200 `application/octet-stream`), and an initializer
//! (there is no long-lived user code to initialize).

mod common;

use common::{MIB, Noslate, Req, TempDir, WAIT, assert_error_json, is_alive, wait_until};
use serde_json::{Value, json};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Writes `script` as the executable `name` in `dir`.
fn script(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn process_profile(name: &str, code: &Path, file: &str) -> Value {
    json!({
        "name": name,
        "runtime": "process",
        "url": code,
        "sourceFile": file,
        "signature": "v1",
        "environments": [{"key": "GREETING", "value": "hi there"}],
        "resourceLimit": { "memory": 64 << 20 },
        "worker": { "reservationCount": 1, "replicaCountLimit": 1, "maxActivateRequests": 8 }
    })
}

fn env_of(text: &str) -> std::collections::HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn echo_env_cwd_and_metadata() {
    let code = TempDir::new();
    script(code.path(), "echo.sh", "exec cat");
    script(
        code.path(),
        "env.sh",
        "pwd > /dev/null; echo \"CWD=$(pwd)\"; echo \"ARGS=$*\"; env",
    );
    let mut env_profile = process_profile("env", code.path(), "env.sh");
    env_profile["worker"]["execArgv"] = json!(["one", "two words"]);
    let ns = Noslate::start(&json!([
        process_profile("echo", code.path(), "echo.sh"),
        env_profile
    ]));

    let resp = ns.send(&Req::new("POST", "/invoke/echo").body(b"hello process"));
    assert_eq!(resp.status, 200, "{}", resp.brief());
    assert_eq!(resp.body, b"hello process");
    assert_eq!(
        resp.header("content-type"),
        Some("application/octet-stream")
    );
    // No body at all: stdin is empty and the command still runs.
    let resp = ns.send(&Req::new("POST", "/invoke/echo"));
    assert_eq!(resp.status, 200, "{}", resp.brief());
    assert!(resp.body.is_empty());

    let resp = ns.send(
        &Req::new("PUT", "/some/path?x=1&y=2")
            .header("x-noslate-function", "env")
            .header("x-custom", "abc")
            .header("content-type", "text/plain")
            .header("x-fc-request-id", "req-42")
            .header("x-fc-function-name", "fc-env")
            .header("x-fc-region", "cn-hangzhou")
            .body(b"12345"),
    );
    assert_eq!(resp.status, 200, "{}", resp.brief());
    let env = env_of(&resp.text());
    let canonical = std::fs::canonicalize(code.path()).unwrap();
    assert!(
        env["CWD"] == code.path().to_string_lossy() || env["CWD"] == canonical.to_string_lossy(),
        "cwd: {}",
        env["CWD"]
    );
    assert_eq!(env["ARGS"], "one two words");
    assert_eq!(env["GREETING"], "hi there", "the profile's environments");
    assert_eq!(env["REQUEST_METHOD"], "PUT");
    assert_eq!(env["QUERY_STRING"], "x=1&y=2");
    assert_eq!(env["PATH_INFO"], "/some/path");
    assert_eq!(env["REQUEST_URI"], "/some/path?x=1&y=2");
    assert_eq!(env["CONTENT_TYPE"], "text/plain");
    assert_eq!(env["CONTENT_LENGTH"], "5");
    assert_eq!(env["HTTP_X_CUSTOM"], "abc");
    assert_eq!(env["NOSLATE_REQUEST_ID"], "req-42");
    assert_eq!(env["FC_REQUEST_ID"], "req-42");
    assert_eq!(env["NOSLATE_CTX_REQUEST_ID"], "req-42");
    assert_eq!(env["NOSLATE_CTX_FUNCTION_NAME"], "fc-env");
    assert_eq!(env["NOSLATE_CTX_REGION"], "cn-hangzhou");
    assert_eq!(env["NOSLATE_FUNCTION_NAME"], "env");
    assert_eq!(env["NOSLATE_RUNTIME"], "process");
    assert!(env["NOSLATE_TIMEOUT_MS"].parse::<u64>().unwrap() > 0);
    assert!(
        !env.contains_key("NOSLATE_IPC_IN"),
        "the protocol stays private"
    );
    assert!(!env.contains_key("NOSLATE_PROCESS_COMMAND"));
}

#[test]
fn a_non_zero_exit_is_a_function_error_with_the_stderr_tail() {
    let code = TempDir::new();
    script(
        code.path(),
        "fail.sh",
        "i=0; while [ $i -lt 30 ]; do echo \"noise $i\" >&2; i=$((i+1)); done\n\
         echo 'it broke' >&2; exit 7",
    );
    let ns = Noslate::start(&json!([process_profile("fail", code.path(), "fail.sh")]));
    let resp = ns.send(&Req::new("POST", "/invoke/fail").body(b"x"));
    let body = assert_error_json(&resp, 404, Some("ProcessExited"));
    let message = body["errorMessage"].as_str().unwrap();
    assert!(message.contains("fail.sh exited with code 7"), "{message}");
    let trace: Vec<&str> = body["stackTrace"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(trace.len(), 20, "{trace:?}");
    assert_eq!(trace.last(), Some(&"it broke"));
    // The worker survives a failing command.
    let resp = ns.send(&Req::new("POST", "/invoke/fail"));
    assert_error_json(&resp, 404, Some("ProcessExited"));
}

#[test]
fn the_first_chunk_arrives_before_the_command_ends() {
    let code = TempDir::new();
    script(code.path(), "stream.sh", "echo first; sleep 2; echo second");
    let ns = Noslate::start(&json!([process_profile(
        "stream",
        code.path(),
        "stream.sh"
    )]));
    let mut c = ns.client();
    let started = Instant::now();
    c.send(&Req::new("POST", "/invoke/stream").to_bytes());
    let mut first_at = None;
    let mut body = Vec::new();
    let resp = c.read_response_with(false, &mut |chunk| {
        if first_at.is_none() && !chunk.is_empty() {
            first_at = Some(started.elapsed());
        }
        body.extend_from_slice(chunk);
    });
    assert_eq!(resp.status, 200, "{}", resp.brief());
    assert_eq!(body, b"first\nsecond\n");
    let first_at = first_at.unwrap();
    assert!(
        first_at < Duration::from_millis(1500),
        "the first chunk came after {first_at:?}"
    );
    assert!(started.elapsed() >= Duration::from_secs(2));
}

#[test]
fn bodies_of_32_mib_stream_both_ways_through_cat() {
    let code = TempDir::new();
    script(code.path(), "echo.sh", "exec cat");
    let ns = Noslate::start(&json!([process_profile("big", code.path(), "echo.sh")]));
    let body: Vec<u8> = (0..32 * MIB).map(|i| (i % 251) as u8).collect();
    let mut c = ns.client();
    let mut writer = c.stream().try_clone().unwrap();
    let req = Req::new("POST", "/invoke/big").body(&body).to_bytes();
    let sending = std::thread::spawn(move || std::io::Write::write_all(&mut writer, &req));
    let resp = c.read_response();
    sending.join().unwrap().unwrap();
    assert_eq!(resp.status, 200, "{}", resp.brief());
    assert_eq!(resp.body.len(), body.len());
    assert!(resp.body == body, "the echo is byte-exact");
}

#[test]
fn a_timeout_kills_the_command_and_reports_its_stderr() {
    let code = TempDir::new();
    let pidfile = code.path().join("pid");
    script(
        code.path(),
        "slow.sh",
        &format!(
            "echo \"sleeping now\" >&2; sleep 10 & echo $! > {}; wait",
            pidfile.display()
        ),
    );
    let ns = Noslate::start(&json!([process_profile("slow", code.path(), "slow.sh")]));
    let started = Instant::now();
    let resp = ns.send(&Req::new("POST", "/invoke/slow").header("x-fc-function-timeout", "1"));
    let body = assert_error_json(&resp, 404, Some("FunctionTimeout"));
    assert!(started.elapsed() < Duration::from_secs(5));
    // The worker's own deadline comes just before the runtime's (which is the backstop), so
    // its error, with the stderr tail, is the one the client gets.
    let message = body["errorMessage"].as_str().unwrap_or("");
    assert!(message.contains("slow.sh did not finish"), "{message}");
    assert_eq!(body["stackTrace"], json!(["sleeping now"]));
    let mut pid = String::new();
    std::fs::File::open(&pidfile)
        .unwrap()
        .read_to_string(&mut pid)
        .unwrap();
    let pid: i32 = pid.trim().parse().unwrap();
    wait_until(WAIT, "the command's whole group is killed", || {
        !is_alive(pid)
    });
    // The worker keeps serving.
    let resp = ns.send(&Req::new("POST", "/invoke/slow").header("x-fc-function-timeout", "1"));
    assert_error_json(&resp, 404, Some("FunctionTimeout"));
}

#[test]
fn concurrent_requests_run_side_by_side_in_one_worker() {
    let code = TempDir::new();
    script(code.path(), "nap.sh", "sleep 1; cat");
    let ns = Noslate::start(&json!([process_profile("nap", code.path(), "nap.sh")]));
    // Warm the worker first.
    assert_eq!(ns.send(&Req::new("POST", "/invoke/nap")).status, 200);
    let started = Instant::now();
    let port = ns.port();
    let threads: Vec<_> = (0..6)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = common::Client::connect(port);
                let body = format!("request {i}");
                let resp = c.request(&Req::new("POST", "/invoke/nap").body(body.as_bytes()));
                assert_eq!(resp.status, 200, "{}", resp.brief());
                assert_eq!(resp.text(), body);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(3500),
        "six 1 s requests took {took:?}"
    );
    assert_eq!(ns.children().len(), 1, "one worker served them all");
}

#[test]
fn a_command_that_is_not_executable_fails_naming_it() {
    let code = TempDir::new();
    std::fs::write(code.path().join("plain.txt"), "not a program").unwrap();
    script(code.path(), "ok.sh", "echo ok");
    let ns = Noslate::start(&json!([
        process_profile("plain", code.path(), "plain.txt"),
        process_profile("ok", code.path(), "ok.sh")
    ]));
    let resp = ns.send(&Req::new("POST", "/invoke/plain"));
    assert_eq!(resp.status, 404, "{}", resp.brief());
    assert!(
        resp.text().contains("plain.txt") && resp.text().contains("not an executable"),
        "{}",
        resp.brief()
    );
    let resp = ns.send(&Req::new("POST", "/invoke/ok"));
    assert_eq!(resp.text(), "ok\n", "the other function keeps serving");
}

#[test]
fn commands_do_not_inherit_the_protocol_pipes() {
    let code = TempDir::new();
    script(
        code.path(),
        "fds.sh",
        "for fd in 3 4; do [ -e /proc/$$/fd/$fd ] && echo \"leaked $fd\"; done; echo checked",
    );
    let ns = Noslate::start(&json!([process_profile("fds", code.path(), "fds.sh")]));
    let resp = ns.invoke(b"", &[]);
    assert_eq!(resp.status, 200, "{}", resp.brief());
    assert_eq!(resp.text(), "checked\n", "fds 3 and 4 stay with the worker");
}
