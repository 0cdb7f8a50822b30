//! FC's routes: /initialize, /invoke, /pre-freeze, /pre-stop, /healthz, x-fc-control-path,
//! function selection, the context handed to handlers and the FC log lines on stdout.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{
    Noslate, Req, WAIT, assert_error_json, assert_function_error, assert_invoke_ok, descendants_of,
    is_alive, profile, signal, wait_until,
};
use serde_json::{Value, json};

fn echo_with_init() -> Value {
    let mut p = profile("echo", "echo");
    p["initializer"] = json!("index.init");
    p
}

#[test]
fn healthz_is_answered_by_the_runtime() {
    let ns = Noslate::start(&json!([profile("echo", "echo")]));
    let resp = ns.send(&Req::new("GET", "/healthz"));
    assert_eq!(resp.status, 200, "body: {}", resp.brief());
    let _ = resp.json();
    // The runtime answered by itself: no FC invocation was logged for it.
    assert!(
        !ns.stdout_lines()
            .iter()
            .any(|l| l.contains("FC Invoke Start")),
        "GET /healthz was handed to the function"
    );
}

#[test]
fn initialize_runs_the_initializer_and_logs_fc_lines() {
    let ns = Noslate::start(&json!([echo_with_init()]));
    let resp = ns.send(&Req::new("POST", "/initialize").header("x-fc-request-id", "init-req-1"));
    assert_eq!(resp.status, 200, "body: {}", resp.brief());
    assert_eq!(resp.header("x-fc-status"), Some("200"), "{}", resp.brief());
    let start = ns.wait_stdout("FC Initialize Start RequestId: init-req-1");
    let end = ns.wait_stdout("FC Initialize End RequestId: init-req-1");
    assert!(start < end, "Initialize Start must come before End");

    // The initializer ran (exactly once, in the only worker) before the handler.
    let body = assert_invoke_ok(&ns.invoke(b"x", &[]));
    assert_eq!(body["initCount"], 1, "initializer runs: {body}");
}

#[test]
fn invoke_returns_the_handler_output_and_logs_fc_lines() {
    let ns = Noslate::start(&json!([profile("echo", "echo")]));
    let resp = ns.invoke(b"hello event", &[("x-fc-request-id", "invoke-req-1")]);
    let body = assert_invoke_ok(&resp);
    assert_eq!(body["body"], "hello event");
    assert_eq!(body["method"], "POST");
    let start = ns.wait_stdout("FC Invoke Start RequestId: invoke-req-1");
    let end = ns.wait_stdout("FC Invoke End RequestId: invoke-req-1");
    assert!(start < end, "Invoke Start must come before End");
}

#[test]
fn a_slow_invocations_start_line_is_written_while_it_runs_and_quick_ones_stay_in_order() {
    let ns = Noslate::start(&json!([profile("echo", "echo")]));
    // A call's Start line shows while it runs, not with its End.
    let mut client = common::Client::connect(ns.port());
    client.send(
        &Req::new("POST", "/invoke")
            .header("x-fc-request-id", "slow-1")
            .header("x-echo-delay", "1000")
            .body(b"slow")
            .to_bytes(),
    );
    wait_until(
        Duration::from_millis(500),
        "the Start line of a call that is still running",
        || {
            ns.stdout_lines()
                .iter()
                .any(|l| l == "FC Invoke Start RequestId: slow-1")
        },
    );
    assert!(
        !ns.stdout_lines()
            .iter()
            .any(|l| l.contains("FC Invoke End RequestId: slow-1")),
        "the Start line waited for the call to end"
    );
    assert_invoke_ok(&client.read_response());
    let start = ns.wait_stdout("FC Invoke Start RequestId: slow-1");
    let end = ns.wait_stdout("FC Invoke End RequestId: slow-1");
    assert!(start < end);
    // Quick calls one after another: every Start before its End, and before the next call's.
    for i in 0..20 {
        let id = format!("quick-{i}");
        assert_invoke_ok(
            &client.request(
                &Req::new("POST", "/invoke")
                    .header("x-fc-request-id", &id)
                    .body(b"q"),
            ),
        );
    }
    ns.wait_stdout("FC Invoke End RequestId: quick-19");
    let lines: Vec<String> = ns
        .stdout_lines()
        .into_iter()
        .filter(|l| l.contains("RequestId: quick-"))
        .collect();
    let expected: Vec<String> = (0..20)
        .flat_map(|i| {
            [
                format!("FC Invoke Start RequestId: quick-{i}"),
                format!("FC Invoke End RequestId: quick-{i}"),
            ]
        })
        .collect();
    assert_eq!(lines, expected);
}

#[test]
fn event_invocation_answers_200_whatever_status_the_handler_sets() {
    let ns = Noslate::start(&json!([profile("echo", "echo")]));
    // For an event the handler's status does not reach the caller: success is 200.
    let resp = ns.invoke(b"{}", &[("x-echo-status", "201")]);
    let body = assert_invoke_ok(&resp);
    assert_eq!(body["body"], "{}");
}

#[test]
fn failing_initializer_gives_404_with_error_json() {
    let mut p = profile("initfail", "initfail");
    p["initializer"] = json!("index.init");
    let ns = Noslate::start(&json!([p]));
    let resp = ns.send(&Req::new("POST", "/initialize").header("x-fc-request-id", "init-fail-1"));
    assert_eq!(resp.header("x-fc-status"), Some("404"), "{}", resp.brief());
    let body = assert_function_error(&resp, "RangeError");
    let message = body["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("init failed on purpose"),
        "errorMessage: {message}"
    );
    let trace = &body["stackTrace"];
    let trace_text = match trace {
        Value::Array(lines) => lines
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("\n"),
        Value::String(s) => s.clone(),
        other => panic!("stackTrace is neither an array nor a string: {other}"),
    };
    assert!(
        trace_text.contains("RangeError"),
        "stackTrace: {trace_text}"
    );
    ns.wait_stdout("FC Initialize Start RequestId: init-fail-1");
    ns.wait_stdout("FC Initialize End RequestId: init-fail-1");
}

#[test]
fn pre_freeze_answers_200_and_logs_fc_lines() {
    let ns = Noslate::start(&json!([profile("echo", "echo")]));
    assert_invoke_ok(&ns.invoke(b"warm", &[]));
    let resp = ns.send(&Req::new("GET", "/pre-freeze").header("x-fc-request-id", "freeze-1"));
    assert_eq!(resp.status, 200, "body: {}", resp.brief());
    assert_eq!(resp.header("x-fc-status"), Some("200"), "{}", resp.brief());
    ns.wait_stdout("FC PreFreeze Start RequestId: freeze-1");
    ns.wait_stdout("FC PreFreeze End RequestId: freeze-1");
    // Still serving afterwards.
    assert_invoke_ok(&ns.invoke(b"after freeze", &[]));
}

#[test]
fn pre_stop_drains_stops_workers_and_later_invocations_get_503() {
    let ns = Noslate::start(&json!([profile("faulty", "faulty")]));
    assert_invoke_ok(&ns.invoke(b"", &[]));

    // A request in flight when /pre-stop arrives must still complete.
    let marker = ns.dir().join("slow.pid");
    let mut slow = ns.client();
    slow.send(
        &Req::new("POST", "/invoke")
            .header("x-faulty-mode", "sleep")
            .header("x-faulty-ms", "500")
            .header("x-faulty-marker", marker.to_str().unwrap())
            .to_bytes(),
    );
    let in_flight = thread::spawn(move || slow.read_response());
    wait_until(WAIT, "the slow invocation has reached the handler", || {
        marker.exists()
    });

    let resp = ns.send(&Req::new("GET", "/pre-stop").header("x-fc-request-id", "stop-1"));
    assert_eq!(resp.status, 200, "body: {}", resp.brief());
    assert_eq!(resp.header("x-fc-status"), Some("200"), "{}", resp.brief());
    assert_invoke_ok(&in_flight.join().unwrap());
    let start = ns.wait_stdout("FC PreStop Start RequestId: stop-1");
    let end = ns.wait_stdout("FC PreStop End RequestId: stop-1");
    assert!(start < end, "PreStop Start must come before End");

    // Workers are gone (and reaped: no zombie either).
    wait_until(WAIT, "every worker has exited and been reaped", || {
        descendants_of(ns.pid()).is_empty()
    });

    let resp = ns.invoke(b"", &[]);
    let body = assert_error_json(&resp, 503, Some("RuntimeStopped"));
    assert!(body["errorMessage"].as_str().is_some_and(|m| !m.is_empty()));
    // The runtime itself still answers, and says it is stopped: a runtime that serves no
    // invocation is not healthy.
    let health = ns.send(&Req::new("GET", "/healthz"));
    assert_eq!(health.status, 503, "{}", health.brief());
    assert_eq!(health.json()["lifecycle"], "stopped");
}

#[test]
fn control_path_header_decides_the_kind_of_request() {
    let ns = Noslate::start(&json!([echo_with_init()]));

    // x-fc-control-path: /invoke on another path is an event: 200 whatever the handler's status.
    let resp = ns.send(
        &Req::new("POST", "/some/path")
            .header("x-fc-control-path", "/invoke")
            .header("x-echo-status", "201")
            .body(b"evt"),
    );
    let body = assert_invoke_ok(&resp);
    assert_eq!(body["body"], "evt");

    // x-fc-control-path: /http-invoke on POST /invoke is an HTTP trigger: the status passes through.
    let resp = ns.send(
        &Req::new("POST", "/invoke")
            .header("x-fc-control-path", "/http-invoke")
            .header("x-echo-status", "201")
            .body(b"http"),
    );
    assert_eq!(resp.status, 201, "body: {}", resp.brief());
    let body = resp.json();
    assert_eq!(body["url"], "/invoke");
    assert_eq!(body["body"], "http");

    // The lifecycle hooks too.
    let resp = ns.send(
        &Req::new("POST", "/other")
            .header("x-fc-control-path", "/initialize")
            .header("x-fc-request-id", "cp-init"),
    );
    assert_eq!(resp.status, 200, "body: {}", resp.brief());
    ns.wait_stdout("FC Initialize Start RequestId: cp-init");

    let resp = ns.send(
        &Req::new("GET", "/elsewhere")
            .header("x-fc-control-path", "/pre-freeze")
            .header("x-fc-request-id", "cp-freeze"),
    );
    assert_eq!(resp.status, 200, "body: {}", resp.brief());
    ns.wait_stdout("FC PreFreeze Start RequestId: cp-freeze");

    let resp = ns.send(
        &Req::new("GET", "/anywhere")
            .header("x-fc-control-path", "/pre-stop")
            .header("x-fc-request-id", "cp-stop"),
    );
    assert_eq!(resp.status, 200, "body: {}", resp.brief());
    ns.wait_stdout("FC PreStop Start RequestId: cp-stop");
}

#[test]
fn target_function_is_chosen_by_header_or_path() {
    let mut alpha = profile("alpha", "echo");
    alpha["environments"] = json!([{"key": "LABEL", "value": "alpha"}]);
    let mut beta = profile("beta", "echo");
    beta["environments"] = json!([{"key": "LABEL", "value": "beta"}]);
    let ns = Noslate::start(&json!([alpha, beta]));

    let body = assert_invoke_ok(&ns.invoke(b"1", &[("x-noslate-function", "beta")]));
    assert_eq!(body["label"], "beta");
    let body = assert_invoke_ok(&ns.invoke(b"2", &[("x-noslate-function", "alpha")]));
    assert_eq!(body["label"], "alpha");

    let body = assert_invoke_ok(&ns.send(&Req::new("POST", "/invoke/beta").body(b"3")));
    assert_eq!(body["label"], "beta");
    assert_eq!(body["body"], "3");
    let body = assert_invoke_ok(&ns.send(&Req::new("POST", "/invoke/alpha").body(b"4")));
    assert_eq!(body["label"], "alpha");
    // The name in the path is percent-decoded, as any path segment.
    let body = assert_invoke_ok(&ns.send(&Req::new("POST", "/invoke/%62eta").body(b"5")));
    assert_eq!(body["label"], "beta");

    // HTTP triggers are routed by the header as well.
    let resp = ns.send(&Req::new("GET", "/web/page").header("x-noslate-function", "beta"));
    assert_eq!(resp.status, 200, "body: {}", resp.brief());
    assert_eq!(resp.json()["label"], "beta");
}

#[test]
fn the_only_function_is_the_default_target() {
    let mut p = profile("solo", "echo");
    p["environments"] = json!([{"key": "LABEL", "value": "solo"}]);
    let ns = Noslate::start(&json!([p]));
    assert_eq!(assert_invoke_ok(&ns.invoke(b"", &[]))["label"], "solo");
    let resp = ns.send(&Req::new("GET", "/x"));
    assert_eq!(resp.status, 200, "body: {}", resp.brief());
    assert_eq!(resp.json()["label"], "solo");
}

#[test]
fn handler_context_carries_the_fc_headers() {
    let ns = Noslate::start(&json!([profile("echo", "echo")]));
    let resp = ns.invoke(
        b"",
        &[
            ("x-fc-request-id", "ctx-req-7"),
            ("x-fc-access-key-id", "AK-ctx"),
            ("x-fc-access-key-secret", "SK-ctx"),
            ("x-fc-security-token", "TOKEN-ctx"),
            ("x-fc-function-name", "echo"),
            ("x-fc-function-handler", "index.handler"),
            ("x-fc-function-memory", "512"),
            ("x-fc-function-timeout", "3"),
            ("x-fc-region", "cn-hangzhou"),
            ("x-fc-account-id", "1234567890"),
        ],
    );
    let body = assert_invoke_ok(&resp);
    let ctx = &body["ctx"];
    assert_eq!(ctx["requestId"], "ctx-req-7", "ctx: {ctx}");
    assert_eq!(ctx["credentials"]["accessKeyId"], "AK-ctx", "ctx: {ctx}");
    assert_eq!(
        ctx["credentials"]["accessKeySecret"], "SK-ctx",
        "ctx: {ctx}"
    );
    assert_eq!(
        ctx["credentials"]["securityToken"], "TOKEN-ctx",
        "ctx: {ctx}"
    );
    assert_eq!(ctx["function"]["name"], "echo", "ctx: {ctx}");
    assert_eq!(ctx["function"]["handler"], "index.handler", "ctx: {ctx}");
    assert_eq!(ctx["function"]["memory"], 512, "ctx: {ctx}");
    assert_eq!(ctx["function"]["timeout"], 3, "ctx: {ctx}");
    assert_eq!(ctx["region"], "cn-hangzhou", "ctx: {ctx}");
    assert_eq!(ctx["accountId"], "1234567890", "ctx: {ctx}");
    assert_eq!(ctx["hasLogger"], true, "ctx.logger.info is a function");
    ns.wait_stdout("FC Invoke End RequestId: ctx-req-7");
}

#[test]
fn every_invocation_gets_a_request_id_even_without_the_header() {
    let ns = Noslate::start(&json!([profile("echo", "echo")]));
    let body = assert_invoke_ok(&ns.invoke(b"", &[]));
    let id = body["ctx"]["requestId"]
        .as_str()
        .expect("ctx.requestId is a string")
        .to_string();
    assert!(!id.is_empty(), "generated request id is empty");
    ns.wait_stdout(&format!("FC Invoke End RequestId: {id}"));
}

#[test]
fn invocation_of_a_function_whose_initializer_fails_is_a_function_error() {
    let mut p = profile("initfail", "initfail");
    p["initializer"] = json!("index.init");
    let ns = Noslate::start(&json!([p]));
    let resp = ns.invoke(b"", &[("x-fc-function-timeout", "20")]);
    assert_eq!(resp.status, 404, "body: {}", resp.brief());
    assert_eq!(resp.header("x-fc-status"), Some("404"));
    let body = assert_error_json(&resp, 404, None);
    assert_ne!(
        body["errorType"], "FunctionTimeout",
        "the start error is reported, not waited out"
    );
}

#[test]
fn initializer_that_never_settles_gives_initialization_timeout() {
    let mut p = profile("inithang", "initfail");
    p["initializer"] = json!("index.init");
    p["environments"] = json!([{"key": "INIT_MODE", "value": "hang"}]);
    p["worker"]["initializationTimeout"] = json!(500);
    let ns = Noslate::start(&json!([p]));
    let started = Instant::now();
    let resp = ns.send(&Req::new("POST", "/initialize"));
    assert_function_error(&resp, "InitializationTimeout");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    ns.wait_no_zombies();
}

#[test]
fn unknown_control_path_gives_400_json() {
    let ns = Noslate::start(&json!([profile("echo", "echo")]));
    let resp = ns.send(&Req::new("POST", "/invoke").header("x-fc-control-path", "/bogus"));
    assert_error_json(&resp, 400, None);
    assert_invoke_ok(&ns.invoke(b"", &[]));
}

#[test]
fn a_timeout_header_that_is_not_a_positive_number_of_seconds_gives_400_json() {
    let ns = Noslate::start(&json!([profile("echo", "echo")]));
    // On one kept-alive connection: each refusal names the header and its value, and the
    // connection goes on serving.
    let mut client = ns.client();
    for bad in ["abc", "0", "-3", "3s", "inf"] {
        let resp = client.request(
            &Req::new("POST", "/invoke")
                .header("x-fc-function-timeout", bad)
                .body(b"x"),
        );
        let body = assert_error_json(&resp, 400, Some("InvalidTimeout"));
        assert_eq!(
            body["errorMessage"],
            format!("x-fc-function-timeout: {bad:?} is not a positive number of seconds")
        );
    }
    // An HTTP-trigger invocation reads the same header.
    let resp = client.request(&Req::new("GET", "/any").header("x-fc-function-timeout", "soon"));
    assert_error_json(&resp, 400, Some("InvalidTimeout"));
    let resp = client
        .request(&Req::new("POST", "/initialize").header("x-fc-initialization-timeout", "never"));
    let body = assert_error_json(&resp, 400, Some("InvalidTimeout"));
    // A hook answer: FC reads its `x-fc-status`, which says 200 or 404.
    assert_eq!(resp.header("x-fc-status"), Some("404"), "{body}");
    assert!(
        body["errorMessage"]
            .as_str()
            .is_some_and(|m| m.starts_with("x-fc-initialization-timeout: \"never\"")),
        "{body}"
    );
    let resp = client.request(
        &Req::new("POST", "/invoke")
            .header("x-fc-function-timeout", "0.5")
            .body(b"x"),
    );
    assert_invoke_ok(&resp);
    let resp =
        client.request(&Req::new("POST", "/initialize").header("x-fc-initialization-timeout", "2"));
    assert_eq!(resp.status, 200, "body: {}", resp.brief());
}

#[test]
fn sigterm_drains_and_stops_the_runtime_and_its_workers() {
    let mut ns = Noslate::start(&json!([profile("faulty", "faulty")]));
    let worker = assert_invoke_ok(&ns.invoke(b"", &[]))["pid"]
        .as_i64()
        .unwrap();
    let worker = i32::try_from(worker).unwrap();

    // An invocation in flight when SIGTERM arrives still completes.
    let marker = ns.dir().join("slow.pid");
    let mut slow = ns.client();
    slow.send(
        &Req::new("POST", "/invoke")
            .header("x-faulty-mode", "sleep")
            .header("x-faulty-ms", "300")
            .header("x-faulty-marker", marker.to_str().unwrap())
            .to_bytes(),
    );
    wait_until(WAIT, "the slow invocation has reached the handler", || {
        marker.exists()
    });
    signal(ns.pid(), libc::SIGTERM);
    assert_invoke_ok(&slow.read_response());

    wait_until(WAIT, "the runtime has exited", || !ns.is_running());
    assert!(!is_alive(worker), "worker {worker} outlived the runtime");
}
