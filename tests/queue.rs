//! The per-function request queue: its bound (`dataPlane.requestQueueLimit` → 429), the
//! deadline of a request that waits in it, and that requests which leave it (client gone,
//! deadline passed) free their place at once.

mod common;

use common::{
    Client, Noslate, Req, WAIT, assert_error_json, assert_function_error, profile, wait_until,
};
use serde_json::json;

/// One worker that takes one request at a time, and a queue of one.
fn single_slot() -> (Noslate, common::TempDir) {
    let mut p = profile("slot", "faulty");
    p["worker"]["maxActivateRequests"] = json!(1);
    let ns = Noslate::builder()
        .functions(&json!([p]))
        .config(&json!({ "dataPlane": { "requestQueueLimit": 1 } }))
        .start();
    (ns, common::TempDir::new())
}

/// Occupies the only worker slot with a request that never answers; returns its connection.
fn occupy(ns: &Noslate, dir: &common::TempDir) -> Client {
    let marker = dir.path().join("busy");
    let mut busy = ns.client();
    let req = Req::new("POST", "/invoke")
        .header("x-faulty-mode", "hang")
        .header("x-faulty-marker", marker.to_string_lossy())
        .header("x-fc-function-timeout", "30");
    busy.send(&req.to_bytes());
    wait_until(WAIT, "the hanging request reaches the handler", || {
        marker.exists()
    });
    busy
}

fn queued_request(timeout_secs: &str) -> Req {
    Req::new("POST", "/invoke").header("x-fc-function-timeout", timeout_secs)
}

#[test]
fn a_full_queue_answers_429_too_many_requests() {
    let (ns, dir) = single_slot();
    let _busy = occupy(&ns, &dir);
    let mut waiting = ns.client();
    waiting.send(&queued_request("30").to_bytes());
    // The queue (limit 1) now holds `waiting`; poll until the runtime has taken it in. A poll
    // that got queued itself times out after a second and the loop tries again.
    wait_until(WAIT, "the second request is queued", || {
        ns.send(&queued_request("1")).status == 429
    });
    let resp = ns.send(&queued_request("30"));
    let body = assert_error_json(&resp, 429, Some("TooManyRequests"));
    let message = body["errorMessage"].as_str().unwrap_or_default();
    assert!(
        message.contains("dataPlane.requestQueueLimit"),
        "the error names the limit: {message}"
    );
}

#[test]
fn a_queued_request_times_out_with_a_waiting_message_and_frees_its_place() {
    let (ns, dir) = single_slot();
    let _busy = occupy(&ns, &dir);
    let resp = ns.send(&queued_request("1"));
    let body = assert_function_error(&resp, "FunctionTimeout");
    let message = body["errorMessage"].as_str().unwrap_or_default();
    assert!(message.contains("waiting for a worker"), "{message}");
    // Its place was freed: the next request is queued (and times out), not refused with 429.
    let resp = ns.send(&queued_request("1"));
    assert_function_error(&resp, "FunctionTimeout");
}

#[test]
fn a_client_that_leaves_the_queue_frees_its_place() {
    let (ns, dir) = single_slot();
    let _busy = occupy(&ns, &dir);
    let mut leaving = ns.client();
    leaving.send(&queued_request("30").to_bytes());
    wait_until(WAIT, "the leaving request is queued", || {
        ns.send(&queued_request("1")).status == 429
    });
    // A reset, not a close: a FIN after a complete request is a half-close from a client that
    // may still read, and its request stays queued to be answered.
    leaving.reset();
    // Once the runtime has seen the reset, a new request takes the freed place instead of 429.
    wait_until(WAIT, "the freed place is reused", || {
        let resp = ns.send(&queued_request("1"));
        resp.status == 404 && resp.header("x-fc-status") == Some("404")
    });
}
