//! A worker that dies while serving fails only the requests it had in flight: requests sent
//! after it (queued or new) wait for a replacement and succeed. Start-up back-off and
//! failing the queue with the start error are kept for workers that fail to start.

mod common;

use std::time::{Duration, Instant};

use common::{Noslate, Req, assert_error_json, assert_invoke_ok, profile};
use serde_json::{Value, json};

/// The `crashy` fixture (dies on "boom" and "exit", echoes anything else) with a 96 MiB memory
/// limit and `max_active` concurrent requests on its only worker.
fn crashy(max_active: u64) -> Noslate {
    let mut p = profile("crashy", "crashy");
    p["resourceLimit"] = json!({ "memory": 96 << 20 });
    p["worker"]["maxActivateRequests"] = json!(max_active);
    Noslate::start(&json!([p]))
}

/// The error a request that killed its worker gets: 404 with the worker's own reason.
#[track_caller]
fn assert_killed_its_worker(resp: &common::Response, expected: &[&str]) -> Value {
    let body = assert_error_json(resp, 404, None);
    let error_type = body["errorType"].as_str().unwrap_or_default();
    assert!(
        expected.contains(&error_type),
        "errorType {error_type}, expected one of {expected:?}: {body}"
    );
    body
}

#[track_caller]
fn assert_echo(resp: &common::Response, body: &str) -> i64 {
    let answer = assert_invoke_ok(resp);
    assert_eq!(answer["echo"], body, "{answer}");
    answer["pid"].as_i64().expect("the fixture answers its pid")
}

/// `trigger` kills the worker; it is sent twice in a row (a caller retrying it), and every
/// valid request sent right after must succeed, round after round: a function that dies on some
/// inputs is not a function that cannot start.
fn each_crash_fails_only_its_own_request(trigger: &str, expected: &[&str]) {
    let ns = crashy(10);
    for round in 0..3 {
        let started = Instant::now();
        assert_killed_its_worker(&ns.invoke(trigger.as_bytes(), &[]), expected);
        let resp = ns.invoke(trigger.as_bytes(), &[]);
        let body = assert_killed_its_worker(&resp, expected);
        for i in 0..3 {
            let text = format!("round {round} request {i}");
            let resp = ns.invoke(text.as_bytes(), &[]);
            assert_eq!(
                resp.status,
                200,
                "after {trigger:?} ({body}), a valid request failed: {}",
                resp.brief()
            );
            assert_echo(&resp, &text);
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "round {round} took {:?}: the replacement was held back",
            started.elapsed()
        );
    }
    ns.wait_no_zombies();
}

#[test]
fn out_of_memory_request_fails_alone_and_the_next_requests_succeed() {
    each_crash_fails_only_its_own_request("boom", &["MemoryLimitExceeded", "WorkerCrashed"]);
}

#[test]
fn exit_mid_request_fails_alone_and_the_next_requests_succeed() {
    each_crash_fails_only_its_own_request("exit", &["WorkerCrashed"]);
}

#[test]
fn stopping_itself_mid_request_fails_alone_and_the_next_requests_succeed() {
    // A stopped worker is alive and serves nothing: it is killed when it stops, not found out
    // when its requests time out.
    each_crash_fails_only_its_own_request("stop", &["WorkerCrashed"]);
}

#[test]
fn requests_queued_behind_a_crashing_one_wait_for_the_replacement() {
    // One slot: two "boom"s and then the valid requests queue; each "boom" kills the worker
    // that takes it, and the valid ones must be served by the next replacement, not failed with
    // boom's error.
    let ns = crashy(1);
    let first = assert_echo(&ns.invoke(b"warm", &[]), "warm");
    let mut booms: Vec<_> = (0..2)
        .map(|_| {
            let mut c = ns.client();
            c.send(&Req::new("POST", "/invoke").body(b"boom").to_bytes());
            c
        })
        .collect();
    let mut waiting: Vec<_> = (0..3)
        .map(|i| {
            let mut c = ns.client();
            c.send(
                &Req::new("POST", "/invoke")
                    .body(format!("queued {i}").as_bytes())
                    .to_bytes(),
            );
            c
        })
        .collect();
    for boom in &mut booms {
        assert_killed_its_worker(
            &boom.read_response(),
            &["MemoryLimitExceeded", "WorkerCrashed"],
        );
    }
    for (i, c) in waiting.iter_mut().enumerate() {
        let pid = assert_echo(&c.read_response(), &format!("queued {i}"));
        assert_ne!(pid, first, "the killed worker answered");
    }
    ns.wait_no_zombies();
}

#[test]
fn a_worker_that_keeps_dying_on_its_own_is_respawned_with_back_off() {
    // Every worker exits 30 ms after loading, serving or not: nothing but back-off bounds the
    // respawns. Unbounded, ~25 ms starts would give over a hundred in 4 s.
    let mut p = profile("crashy", "crashy");
    p["environments"] = json!([{"key": "CRASHY_EXIT_AFTER_MS", "value": "30"}]);
    let ns = Noslate::start(&json!([p]));
    std::thread::sleep(Duration::from_secs(4));
    // Cold or taken from a spare, every start ends in this line.
    let started = ns.log_count(&["[turf w=crashy-", "] ready to serve"]);
    assert!(
        (2..=20).contains(&started),
        "{started} workers started in 4 s"
    );
}

#[test]
fn a_worker_that_cannot_start_is_backed_off_and_requests_get_its_start_error() {
    // Node refuses an unknown flag and exits 9 before it loads anything: every start fails
    // the same way, before the worker is ready.
    let mut p = profile("crashy", "crashy");
    p["worker"]["execArgv"] = json!(["--no-such-flag"]);
    let ns = Noslate::start(&json!([p]));
    let failed = ["[turf w=crashy-", "exited with exit code 9"];
    ns.wait_log_count(&failed, 1);
    let first_failure_seen = Instant::now();
    // A request answers at once with the start error, rather than waiting for its deadline.
    let resp = ns.send(&Req::new("POST", "/invoke").body(b"hi"));
    let body = assert_error_json(&resp, 404, Some("WorkerStartFailed"));
    let message = body["errorMessage"].as_str().unwrap_or_default();
    assert!(message.contains("exit code 9"), "{body}");
    // What node said, from the worker's stderr file: the cause, not only its exit code.
    assert!(message.contains("bad option: --no-such-flag"), "{body}");
    // Each failed start doubles the wait before the next: 100, 200 then 400 ms before the
    // fourth. Unbounded, four starts took a few milliseconds.
    ns.wait_log_count(&failed, 4);
    let waited = first_failure_seen.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "four failed starts within {waited:?}"
    );
}

#[test]
fn a_start_failure_quotes_the_end_of_the_workers_stderr_relayed_to_the_console() {
    let mut p = profile("crashy", "crashy");
    p["worker"]["execArgv"] = json!(["--no-such-flag"]);
    let ns = Noslate::builder()
        .functions(&json!([p]))
        .config(&json!({"logger": {"workerOutput": "console"}}))
        .start();
    let resp = ns.send(&Req::new("POST", "/initialize"));
    let body = assert_error_json(&resp, 404, Some("WorkerStartFailed"));
    let message = body["errorMessage"].as_str().unwrap_or_default();
    assert!(message.contains("bad option: --no-such-flag"), "{body}");
    // The runtime's log says it too, once per failed start.
    ns.wait_log_count(&["failed to start: worker crashy-", "--no-such-flag"], 1);
}

#[test]
fn a_starting_worker_that_closes_its_channels_and_lives_on_is_killed_and_reported() {
    // A native worker that closes fds 3 and 4 at once and sleeps on: it will never be ready,
    // and nothing it does ends it.
    let dir = common::TempDir::new();
    let script = dir.path().join("closer.sh");
    std::fs::write(&script, "#!/bin/sh\nexec 3<&- 4>&-\nexec sleep 600\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let p = json!({
        "name": "closer", "runtime": "native", "url": dir.path(), "sourceFile": "closer.sh",
        "signature": "t", "worker": {"reservationCount": 1}
    });
    let mut ns = Noslate::start(&json!([p]));
    let killed = ["[turf w=closer-", "exited with signal SIGKILL"];
    ns.wait_log_count(&killed, 2);
    let resp = ns.send(&Req::new("POST", "/invoke").body(b"hi"));
    let body = assert_error_json(&resp, 404, Some("WorkerStartFailed"));
    assert!(
        body["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("closed its protocol channel and did not exit")),
        "{body}"
    );
    // Each is killed once reported: at most the one being started is alive.
    let sleepers = common::descendants_of(ns.pid())
        .into_iter()
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with(b"sleep\x00600"))
        })
        .count();
    assert!(
        sleepers <= 1,
        "{sleepers} workers live on without their channels"
    );
    // And the runtime stops at once, leaving none.
    common::signal(ns.pid(), libc::SIGTERM);
    assert!(ns.wait_exit().success());
}
