//! Function and worker failures: thrown errors, rejected promises, a worker killed or exiting
//! mid-request (error, replacement, no zombie), and deadlines.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::{
    Noslate, Req, WAIT, assert_function_error, assert_invoke_ok, descendants_of, proc_state,
    profile, signal, wait_until,
};
use serde_json::{Value, json};

fn faulty(invoke_timeout_ms: Option<u64>) -> Noslate {
    let mut p = profile("faulty", "faulty");
    if let Some(ms) = invoke_timeout_ms {
        p["worker"]["invokeTimeout"] = json!(ms);
    }
    Noslate::start(&json!([p]))
}

fn assert_stack_trace(body: &Value, needle: &str) {
    let text = match &body["stackTrace"] {
        Value::Array(lines) => lines
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("\n"),
        Value::String(s) => s.clone(),
        other => panic!("stackTrace is neither an array nor a string: {other}"),
    };
    assert!(text.contains(needle), "stackTrace lacks {needle:?}: {text}");
}

fn pid_of(resp: &common::Response) -> i64 {
    assert_invoke_ok(resp)["pid"]
        .as_i64()
        .expect("the fixture answers its pid")
}

#[test]
fn thrown_error_gives_404_error_json_and_the_worker_keeps_serving() {
    let ns = faulty(None);
    let before = pid_of(&ns.invoke(b"", &[]));
    let resp = ns.invoke(b"", &[("x-faulty-mode", "throw")]);
    let body = assert_function_error(&resp, "Error");
    assert_eq!(body["errorMessage"], "boom on purpose");
    assert_stack_trace(&body, "boom on purpose");
    let after = pid_of(&ns.invoke(b"", &[]));
    assert_eq!(before, after, "a thrown error must not cost the worker");
}

#[test]
fn rejected_promise_gives_404_error_json() {
    let ns = faulty(None);
    let resp = ns.invoke(b"", &[("x-faulty-mode", "reject")]);
    let body = assert_function_error(&resp, "TypeError");
    assert_eq!(body["errorMessage"], "rejected on purpose");
    assert_stack_trace(&body, "TypeError");
    assert_invoke_ok(&ns.invoke(b"", &[]));
}

#[test]
fn thrown_error_in_an_http_trigger_is_a_function_error_too() {
    let ns = faulty(None);
    let resp = ns.send(&Req::new("GET", "/page").header("x-faulty-mode", "throw"));
    let body = assert_function_error(&resp, "Error");
    assert_eq!(body["errorMessage"], "boom on purpose");
}

#[test]
fn worker_killed_mid_request_is_reported_replaced_and_reaped() {
    let ns = faulty(None);
    let marker = ns.dir().join("hang.pid");
    let mut c = ns.client();
    c.send(
        &Req::new("POST", "/invoke")
            .header("x-faulty-mode", "hang")
            .header("x-faulty-marker", marker.to_str().unwrap())
            .to_bytes(),
    );
    wait_until(WAIT, "the handler has written its pid", || marker.exists());
    let pid: i32 = fs::read_to_string(&marker).unwrap().trim().parse().unwrap();
    assert!(
        descendants_of(ns.pid()).contains(&pid),
        "worker {pid} is not forked by noslate"
    );

    signal(pid, libc::SIGKILL);
    let resp = c.read_response();
    let body = assert_function_error(&resp, "WorkerCrashed");
    assert!(body["errorMessage"].as_str().is_some_and(|m| !m.is_empty()));

    // A replacement serves the next request.
    let new_pid = pid_of(&ns.invoke(b"", &[]));
    assert_ne!(new_pid, i64::from(pid), "the killed worker answered");
    // The dead worker was reaped: it neither runs nor lingers as a zombie.
    wait_until(WAIT, "the killed worker is reaped", || {
        proc_state(pid).is_none()
    });
    ns.wait_no_zombies();
}

#[test]
fn worker_exiting_mid_request_is_reported_and_replaced() {
    let ns = faulty(None);
    let old = pid_of(&ns.invoke(b"", &[]));
    let resp = ns.invoke(b"", &[("x-faulty-mode", "exit")]);
    assert_function_error(&resp, "WorkerCrashed");
    let new = pid_of(&ns.invoke(b"", &[]));
    assert_ne!(old, new);
    ns.wait_no_zombies();
}

#[test]
fn other_requests_on_a_crashed_worker_fail_and_the_runtime_recovers() {
    // Two requests on the same worker when it dies: both fail, neither hangs.
    let ns = faulty(None);
    let marker = ns.dir().join("hang.pid");
    let mut first = ns.client();
    first.send(
        &Req::new("POST", "/invoke")
            .header("x-faulty-mode", "hang")
            .header("x-faulty-marker", marker.to_str().unwrap())
            .to_bytes(),
    );
    wait_until(WAIT, "the first handler has written its pid", || {
        marker.exists()
    });
    let pid: i32 = fs::read_to_string(&marker).unwrap().trim().parse().unwrap();
    let second_marker = ns.dir().join("second.pid");
    let mut second = ns.client();
    second.send(
        &Req::new("POST", "/invoke")
            .header("x-faulty-mode", "sleep")
            .header("x-faulty-ms", "20000")
            .header("x-faulty-marker", second_marker.to_str().unwrap())
            .to_bytes(),
    );
    wait_until(WAIT, "the second handler has started", || {
        second_marker.exists()
    });
    let second_pid: i32 = fs::read_to_string(&second_marker)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, second_pid, "one worker only: both requests share it");
    signal(pid, libc::SIGKILL);
    assert_function_error(&first.read_response(), "WorkerCrashed");
    assert_function_error(&second.read_response(), "WorkerCrashed");
    assert_invoke_ok(&ns.invoke(b"", &[]));
    ns.wait_no_zombies();
}

/// A function that writes frames of its own to the protocol pipe cannot take the runtime down:
/// a frame that breaks the wire protocol stops its worker, the request in flight fails, the
/// runtime says why, and a new worker serves the next request.
#[test]
fn a_function_that_breaks_the_wire_protocol_loses_its_worker_and_nothing_else() {
    let ns = faulty(None);
    let frame = |kind: u8, flags: u8, payload: &[u8]| {
        let mut bytes = u32::try_from(payload.len()).unwrap().to_le_bytes().to_vec();
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&[kind, flags, 0, 0]);
        bytes.extend_from_slice(payload);
        bytes
    };
    let mut compact_overrun = vec![200, 0, 0, 0, 1, 0, 0, 0];
    compact_overrun
        .extend_from_slice(&[4, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f, b'n', b'a', b'm', b'e']);
    let mut impossible_count = vec![200, 0, 0, 0];
    impossible_count.extend_from_slice(&u32::MAX.to_le_bytes());
    let cases = [
        (
            "compact head, a value past the end",
            frame(0x88, 0, &compact_overrun),
        ),
        (
            "compact head, an impossible count",
            frame(0x88, 0, &impossible_count),
        ),
        (
            "compact head, bytes left over",
            frame(0x88, 0, &[200, 0, 0, 0, 0, 0, 0, 0, 9]),
        ),
        (
            "JSON head that does not parse",
            frame(0x84, 0, b"{\"status\": "),
        ),
        ("a kind the runtime never reads", frame(0x06, 0, b"")),
        ("unknown flags", frame(0x85, 0x40, b"x")),
    ];
    let mut pid = pid_of(&ns.invoke(b"", &[]));
    for (n, (what, bytes)) in cases.iter().enumerate() {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let resp = ns.invoke(b"", &[("x-faulty-mode", "forge"), ("x-faulty-frame", &hex)]);
        assert_function_error(&resp, "WorkerCrashed");
        wait_until(
            WAIT,
            "the runtime says the worker broke the protocol",
            || ns.log_count(&["[turf] worker faulty-", "broke the wire protocol"]) == n + 1,
        );
        let next = pid_of(&ns.invoke(b"", &[]));
        assert_ne!(next, pid, "{what}: a new worker serves");
        pid = next;
    }
    ns.wait_no_zombies();
}

#[test]
fn deadline_from_the_timeout_header_gives_function_timeout() {
    let ns = faulty(None);
    let started = Instant::now();
    let resp = ns.invoke(
        b"",
        &[
            ("x-fc-function-timeout", "1"),
            ("x-faulty-mode", "sleep"),
            ("x-faulty-ms", "20000"),
        ],
    );
    let took = started.elapsed();
    assert_function_error(&resp, "FunctionTimeout");
    assert!(
        took >= Duration::from_millis(900),
        "answered after {took:?}, before the deadline"
    );
    assert!(
        took < Duration::from_secs(10),
        "answered after {took:?}, long after the 1 s deadline"
    );
    // Still serving.
    assert_invoke_ok(&ns.invoke(b"", &[]));
    ns.wait_no_zombies();
}

#[test]
fn deadline_from_the_profile_gives_function_timeout() {
    let ns = faulty(Some(500));
    let started = Instant::now();
    let resp = ns.invoke(b"", &[("x-faulty-mode", "sleep"), ("x-faulty-ms", "20000")]);
    let took = started.elapsed();
    assert_function_error(&resp, "FunctionTimeout");
    assert!(
        took >= Duration::from_millis(400),
        "answered after {took:?}, before the deadline"
    );
    assert!(
        took < Duration::from_secs(10),
        "answered after {took:?}, long after the deadline"
    );
    // A request that fits the budget succeeds.
    let resp = ns.invoke(b"", &[("x-faulty-mode", "sleep"), ("x-faulty-ms", "10")]);
    assert_invoke_ok(&resp);
}

#[test]
fn timed_out_http_trigger_is_a_function_timeout() {
    let ns = faulty(None);
    let resp = ns.send(
        &Req::new("GET", "/slow")
            .header("x-fc-function-timeout", "1")
            .header("x-faulty-mode", "sleep")
            .header("x-faulty-ms", "20000"),
    );
    assert_function_error(&resp, "FunctionTimeout");
    let resp = ns.send(&Req::new("GET", "/fast"));
    assert_eq!(resp.status, 200, "body: {}", resp.brief());
}

#[test]
fn killed_idle_worker_is_replaced() {
    let ns = faulty(None);
    let old = pid_of(&ns.invoke(b"", &[]));
    signal(i32::try_from(old).unwrap(), libc::SIGKILL);
    // Reaped by the runtime (the /proc entry is gone), not merely a zombie: a multi-threaded
    // worker shows its leader as a zombie while its other threads still hold the pipes open,
    // and until then the runtime cannot know the worker is dead.
    wait_until(WAIT, "the killed idle worker is reaped", || {
        proc_state(i32::try_from(old).unwrap()).is_none()
    });
    let new = pid_of(&ns.invoke(b"", &[]));
    assert_ne!(old, new);
    ns.wait_no_zombies();
}

/// Starts a request that hangs in the handler, closes its connection (`how`), then checks that
/// the only slot comes back: the next request must run within 5 s although the hung one's own
/// deadline is a minute away.
/// A client that leaves before its request is complete (`how` closes or resets), or that resets
/// the connection after a complete one, cancels it: the worker's slot is free again at once.
/// A plain close after a complete request is a half-close as far as TCP can tell, and that
/// request is answered (tests/split_requests.rs), so the close case leaves its body unfinished.
fn client_going_away_frees_the_slot(how: fn(common::Client), complete: bool) {
    let mut p = profile("faulty", "faulty");
    p["worker"]["maxActivateRequests"] = json!(1);
    p["worker"]["invokeTimeout"] = json!(60_000);
    let ns = Noslate::start(&json!([p]));
    let before = pid_of(&ns.invoke(b"", &[]));
    for round in 0..2 {
        let marker = ns.dir().join(format!("gone-{round}.pid"));
        let mut c = ns.client();
        let req = Req::new("POST", "/invoke")
            .header("x-faulty-mode", "hang")
            .header("x-faulty-marker", marker.to_str().unwrap());
        if complete {
            c.send(&req.to_bytes());
        } else {
            let mut head = req.header("content-length", "10").to_bytes();
            head.extend_from_slice(b"abc");
            c.send(&head);
        }
        wait_until(WAIT, "the handler has started", || marker.exists());
        how(c);
        let resp = ns.invoke(b"", &[("x-fc-function-timeout", "5")]);
        assert_eq!(
            resp.status,
            200,
            "round {round}: the abandoned request still holds the slot: {}",
            resp.brief()
        );
        // The worker survives the cancellation.
        assert_eq!(
            before,
            pid_of(&resp),
            "the worker was replaced after a cancellation"
        );
    }
}

#[test]
fn client_closing_mid_request_cancels_it_and_frees_the_slot() {
    client_going_away_frees_the_slot(drop, false);
}

#[test]
fn client_resetting_mid_request_cancels_it_and_frees_the_slot() {
    client_going_away_frees_the_slot(common::Client::reset, false);
}

#[test]
fn client_resetting_after_a_complete_request_cancels_it_and_frees_the_slot() {
    client_going_away_frees_the_slot(common::Client::reset, true);
}
