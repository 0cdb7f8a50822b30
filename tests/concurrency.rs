//! Many simultaneous clients.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;

use common::{Noslate, Req, assert_invoke_ok, profile};
use serde_json::json;

#[test]
fn hundred_concurrent_invocations_over_hundred_connections_all_succeed() {
    let mut p = profile("echo", "echo");
    p["worker"]["replicaCountLimit"] = json!(2);
    let ns = Noslate::start(&json!([p]));
    let port = ns.port();
    let barrier = Arc::new(Barrier::new(100));
    let clients: Vec<_> = (0..100)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                let mut c = common::Client::connect(port);
                let req = Req::new("POST", "/invoke")
                    .header("x-echo-delay", "20")
                    .body(format!("client {i}").as_bytes());
                barrier.wait();
                let body = assert_invoke_ok(&c.request(&req));
                assert_eq!(body["body"], format!("client {i}"));
            })
        })
        .collect();
    for (i, client) in clients.into_iter().enumerate() {
        assert!(
            client.join().is_ok(),
            "client {i} failed (see its panic above)"
        );
    }
}

#[test]
fn concurrent_http_trigger_requests_on_both_workers() {
    let mut p = profile("echo", "echo");
    p["worker"]["reservationCount"] = json!(2);
    p["worker"]["replicaCountLimit"] = json!(2);
    p["worker"]["maxActivateRequests"] = json!(1);
    let ns = Noslate::start(&json!([p]));
    let port = ns.port();
    let clients: Vec<_> = (0..20)
        .map(|i| {
            thread::spawn(move || {
                let mut c = common::Client::connect(port);
                let resp =
                    c.request(&Req::new("GET", &format!("/c/{i}")).header("x-echo-delay", "30"));
                assert_eq!(resp.status, 200, "body: {}", resp.brief());
                let body = resp.json();
                assert_eq!(body["url"], format!("/c/{i}"));
                body["pid"].as_i64().unwrap()
            })
        })
        .collect();
    let pids: std::collections::HashSet<i64> = clients
        .into_iter()
        .map(|c| c.join().expect("a client failed"))
        .collect();
    // One request at a time per worker and 20 overlapping requests: both reserved workers served.
    assert_eq!(pids.len(), 2, "worker pids that answered: {pids:?}");
}

#[test]
fn full_queue_gets_429_too_many_requests() {
    // One worker taking one request at a time, and room for one request in the queue.
    let mut p = profile("faulty", "faulty");
    p["worker"]["maxActivateRequests"] = json!(1);
    let ns = Noslate::builder()
        .functions(&json!([p]))
        .config(&json!({"dataPlane": {"requestQueueLimit": 1}}))
        .start();

    // A occupies the worker...
    let marker = ns.dir().join("a.pid");
    let mut a = ns.client();
    a.send(
        &Req::new("POST", "/invoke")
            .header("x-fc-function-timeout", "60")
            .header("x-faulty-mode", "hang")
            .header("x-faulty-marker", marker.to_str().unwrap())
            .to_bytes(),
    );
    common::wait_until(common::WAIT, "A has reached the handler", || {
        marker.exists()
    });
    // ...B fills the queue (the runtime logs Invoke Start when it accepts a request)...
    let mut b = ns.client();
    b.send(
        &Req::new("POST", "/invoke")
            .header("x-fc-function-timeout", "60")
            .header("x-fc-request-id", "queued-b")
            .to_bytes(),
    );
    ns.wait_stdout("FC Invoke Start RequestId: queued-b");
    // ...so C is refused.
    let resp = ns.invoke(b"", &[("x-fc-function-timeout", "60")]);
    common::assert_error_json(&resp, 429, Some("TooManyRequests"));
}
