//! The edges of a drain: answers given while stopping close their connection, idle keep-alive
//! connections are closed with a FIN (never a reset) when SIGTERM starts the drain, and a
//! request racing the drain on such a connection gets a clean answer or a clean end of stream.

mod common;

use common::*;
use serde_json::json;
use std::io::Write;
use std::time::Duration;

#[test]
fn idle_connections_close_cleanly_at_sigterm_and_racing_requests_are_not_reset() {
    let ns = Noslate::builder()
        .functions(&json!([profile("echo", "echo")]))
        .config(&json!({"turf": {"spareWorkers": 0}}))
        .start();
    // Keep-alive connections, each idle after one answered request.
    let mut idle: Vec<_> = (0..20)
        .map(|_| {
            let mut conn = raw_connect(ns.port(), Duration::from_secs(10));
            conn.write_all(&Req::new("GET", "/healthz").to_bytes())
                .expect("send");
            let mut reader = RawReader::new(conn);
            let resp = reader.next(false).expect("an answer");
            assert_eq!(resp.status, 200);
            reader
        })
        .collect();
    signal(ns.pid(), libc::SIGTERM);
    // Half of them race a request against the drain; all must end with a FIN, never a reset.
    for (i, reader) in idle.iter_mut().enumerate() {
        if i % 2 == 0 {
            // The write may fail if the FIN already came: that is a clean refusal too.
            let _ = reader
                .get_ref()
                .write_all(&Req::new("POST", "/invoke").body(b"late").to_bytes());
        }
    }
    for (i, reader) in idle.iter_mut().enumerate() {
        let mut answers = Vec::new();
        let end = loop {
            match reader.next(false) {
                Ok(resp) => answers.push(resp),
                Err(end) => break end,
            }
        };
        assert_eq!(end, RawEnd::Eof, "connection {i} did not end with a FIN");
        for resp in answers {
            // A request read before the signal was handled is served; one read after it is
            // refused, and the refusal closes the connection.
            if resp.status == 200 {
                continue;
            }
            assert_eq!(resp.status, 503, "connection {i}");
            assert_eq!(resp.header("connection").as_deref(), Some("close"));
            assert_eq!(resp.json().expect("JSON")["errorType"], "RuntimeStopped");
        }
    }
}

#[test]
fn a_new_connection_during_the_drain_is_answered_503_and_closed() {
    let mut slow = profile("faulty", "faulty");
    slow["worker"]["maxActivateRequests"] = json!(2);
    let ns = Noslate::builder()
        .functions(&json!([slow]))
        .config(&json!({"turf": {"spareWorkers": 0}}))
        .start();
    // One request in flight keeps the runtime draining for a while.
    let mut busy = raw_connect(ns.port(), Duration::from_secs(10));
    busy.write_all(
        &Req::new("POST", "/invoke")
            .header("x-faulty-mode", "sleep")
            .header("x-faulty-ms", "1500")
            .to_bytes(),
    )
    .expect("send");
    wait_until(WAIT, "the request to be in flight", || {
        ns.stdout_lines()
            .iter()
            .any(|l| l.contains("FC Invoke Start"))
    });
    signal(ns.pid(), libc::SIGTERM);
    wait_until(WAIT, "the drain to start", || {
        ns.log_count(&["draining"]) > 0
    });
    let mut late = raw_connect(ns.port(), Duration::from_secs(10));
    late.write_all(&Req::new("POST", "/invoke").body(b"late").to_bytes())
        .expect("send");
    let mut reader = RawReader::new(late);
    let resp = reader.next(false).expect("an answer, not a reset");
    assert_eq!(resp.status, 503);
    assert_eq!(resp.header("connection").as_deref(), Some("close"));
    assert_eq!(reader.next(false).err(), Some(RawEnd::Eof));
    let health = {
        let mut conn = raw_connect(ns.port(), Duration::from_secs(10));
        conn.write_all(&Req::new("GET", "/healthz").to_bytes())
            .expect("send");
        RawReader::new(conn).next(false).expect("an answer")
    };
    assert_eq!(health.status, 503, "a draining runtime is not healthy");
    // The request in flight still completes.
    let done = RawReader::new(busy)
        .next(false)
        .expect("the in-flight answer");
    assert_eq!(done.status, 200);
}
