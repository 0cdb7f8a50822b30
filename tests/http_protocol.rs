//! HTTP/1.1 handling of the front end: keep-alive, pipelining, Connection: close,
//! Expect: 100-continue, absolute-form targets, and the JSON errors for malformed, oversized and
//! bad-chunk requests.

mod common;

use std::fmt::Write as _;
use std::thread;
use std::time::Duration;

use common::{Noslate, Req, assert_error_json, assert_invoke_ok, profile};
use serde_json::json;

fn echo() -> Noslate {
    Noslate::start(&json!([profile("echo", "echo")]))
}

#[test]
fn keep_alive_serves_1000_invocations_on_one_connection() {
    let ns = echo();
    let mut c = ns.client();
    for i in 0..1000 {
        let payload = format!("request {i}");
        let resp = c.request(&Req::new("POST", "/invoke").body(payload.as_bytes()));
        let body = assert_invoke_ok(&resp);
        assert_eq!(body["body"], payload.as_str());
    }
}

#[test]
fn idle_keep_alive_connection_stays_open() {
    let ns = echo();
    let mut c = ns.client();
    assert_invoke_ok(&c.request(&Req::new("POST", "/invoke").body(b"before")));
    // Deliberately idle (this is what is under test, not a synchronisation): FC keeps
    // connections open for minutes, the runtime must not time them out.
    thread::sleep(Duration::from_secs(2));
    let body = assert_invoke_ok(&c.request(&Req::new("POST", "/invoke").body(b"after")));
    assert_eq!(body["body"], "after");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let ns = echo();
    let mut c = ns.client();
    // The first request is the slowest, so out-of-order answers would show.
    let mut batch = Vec::new();
    batch.extend(
        Req::new("POST", "/invoke")
            .header("x-echo-delay", "200")
            .body(b"p0")
            .to_bytes(),
    );
    batch.extend(Req::new("GET", "/healthz").to_bytes());
    for i in 1..8 {
        batch.extend(
            Req::new("POST", "/invoke")
                .body(format!("p{i}").as_bytes())
                .to_bytes(),
        );
        batch.extend(Req::new("GET", &format!("/web?i={i}")).to_bytes());
    }
    c.send(&batch);

    let body = assert_invoke_ok(&c.read_response());
    assert_eq!(body["body"], "p0");
    let health = c.read_response();
    assert_eq!(health.status, 200);
    for i in 1..8 {
        let body = assert_invoke_ok(&c.read_response());
        assert_eq!(body["body"], format!("p{i}"));
        let resp = c.read_response();
        assert_eq!(resp.status, 200, "body: {}", resp.brief());
        assert_eq!(resp.json()["url"], format!("/web?i={i}"));
    }
}

#[test]
fn connection_close_closes_after_the_response() {
    let ns = echo();
    let mut c = ns.client();
    let resp = c.request(
        &Req::new("POST", "/invoke")
            .header("Connection", "close")
            .body(b"last"),
    );
    assert_eq!(assert_invoke_ok(&resp)["body"], "last");
    c.expect_closed();

    // Also for runtime-answered routes.
    let mut c = ns.client();
    let resp = c.request(&Req::new("GET", "/healthz").header("Connection", "close"));
    assert_eq!(resp.status, 200);
    c.expect_closed();
}

#[test]
fn expect_100_continue_gets_an_interim_response_first() {
    let ns = echo();
    let mut c = ns.client();
    let head = Req::new("POST", "/invoke")
        .header("Expect", "100-continue")
        .header("Content-Length", "9")
        .head_bytes();
    c.send(&head);
    c.set_read_timeout(Duration::from_secs(10));
    let interim = c.read_response();
    assert_eq!(
        interim.status, 100,
        "expected `HTTP/1.1 100 Continue` before the body was sent"
    );
    c.send(b"continued");
    let body = assert_invoke_ok(&c.read_response());
    assert_eq!(body["body"], "continued");
    // The connection is still usable.
    assert_invoke_ok(&c.request(&Req::new("POST", "/invoke").body(b"next")));
}

#[test]
fn malformed_requests_get_400_json() {
    let ns = echo();
    let cases: [&[u8]; 5] = [
        b"THIS IS NOT HTTP\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nno colon in this header line\r\n\r\n",
        b"POST /invoke HTTP/1.1\r\nHost: a\r\nContent-Length: twelve\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nBad Name: v\r\n\r\n",
        b"POST /invoke HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 0\r\n\r\n",
    ];
    for raw in cases {
        let mut c = ns.client();
        c.send(raw);
        let resp = c.read_response();
        let what = String::from_utf8_lossy(raw);
        assert_eq!(resp.status, 400, "for {what:?}: {}", resp.brief());
        assert_error_json(&resp, 400, None);
    }
    // The runtime survived all of them.
    assert_invoke_ok(&ns.invoke(b"still alive", &[]));
}

#[test]
fn an_absolute_form_target_is_routed_by_its_path() {
    let ns = echo();
    let mut c = ns.client();
    c.send(b"POST http://fc.example/invoke?x=1 HTTP/1.1\r\nHost: fc.example\r\nContent-Length: 2\r\n\r\nhi");
    let body = assert_invoke_ok(&c.read_response());
    assert_eq!(body["body"], "hi");
    // The function sees the target as it was sent, as Node's own server would give it.
    assert_eq!(body["url"], "http://fc.example/invoke?x=1");
}

#[test]
fn header_section_over_16_kib_gets_431_json() {
    let ns = echo();
    let resp = ns.send(&Req::new("GET", "/big").header("X-Big", "a".repeat(17 * 1024)));
    assert_error_json(&resp, 431, None);

    // Under the limit is fine.
    let resp = ns.send(&Req::new("GET", "/big").header("X-Big", "b".repeat(12 * 1024)));
    assert_eq!(resp.status, 200, "12 KiB header section: {}", resp.brief());
}

#[test]
fn unterminated_header_section_over_16_kib_gets_431_json() {
    // The head never ends: the runtime must answer once its limit is passed, not wait forever.
    let ns = echo();
    let mut c = ns.client();
    let mut head = String::from("GET /x HTTP/1.1\r\nHost: a\r\n");
    for i in 0..400 {
        let _ = write!(head, "X-Filler-{i}: {}\r\n", "f".repeat(40));
    }
    assert!(head.len() > 16 * 1024);
    c.send_lossy(head.as_bytes());
    let resp = c.read_response();
    assert_error_json(&resp, 431, None);
}

#[test]
fn more_than_100_headers_get_431_json() {
    let ns = echo();
    // Host plus 100 more: 101 headers.
    let mut req = Req::new("GET", "/many");
    for i in 0..100 {
        req = req.header(&format!("X-H{i}"), "v");
    }
    let resp = ns.send(&req);
    assert_error_json(&resp, 431, None);

    // Host plus 99: exactly 100 headers are allowed.
    let mut req = Req::new("GET", "/many");
    for i in 0..99 {
        req = req.header(&format!("X-H{i}"), "v");
    }
    let resp = ns.send(&req);
    assert_eq!(resp.status, 200, "100 headers: {}", resp.brief());
}

#[test]
fn body_over_the_configured_limit_gets_413_json() {
    let ns = Noslate::builder()
        .functions(&json!([profile("echo", "echo")]))
        .config(&json!({"http": {"maxRequestBodySize": 1024}}))
        .start();

    // Announced by Content-Length: refused without the body being sent.
    let mut c = ns.client();
    c.send(
        &Req::new("POST", "/invoke")
            .header("Content-Length", "1025")
            .head_bytes(),
    );
    assert_error_json(&c.read_response(), 413, None);

    // Chunked: refused once the limit is passed.
    let mut c = ns.client();
    let mut raw = Req::new("POST", "/invoke")
        .header("Transfer-Encoding", "chunked")
        .head_bytes();
    for _ in 0..4 {
        raw.extend_from_slice(b"200\r\n");
        raw.extend_from_slice(&[b'x'; 0x200]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    c.send_lossy(&raw);
    assert_error_json(&c.read_response(), 413, None);

    // Exactly at the limit is accepted.
    let body = vec![b'y'; 1024];
    let resp = ns.send(&Req::new("POST", "/invoke").body(&body));
    assert_eq!(
        assert_invoke_ok(&resp)["body"].as_str().map(str::len),
        Some(1024)
    );
}

#[test]
fn body_over_32_mib_gets_413_by_default() {
    let ns = echo();
    let mut c = ns.client();
    let over = (32 << 20) + 1;
    c.send(
        &Req::new("POST", "/invoke")
            .header("Content-Length", over.to_string())
            .head_bytes(),
    );
    assert_error_json(&c.read_response(), 413, None);
}

#[test]
fn bad_chunk_size_gets_400_json() {
    let ns = echo();
    for bad in ["zz", "-1", "fffffffffffffffffffff"] {
        let mut c = ns.client();
        let mut raw = Req::new("POST", "/invoke")
            .header("Transfer-Encoding", "chunked")
            .head_bytes();
        raw.extend_from_slice(b"3\r\nabc\r\n");
        raw.extend_from_slice(format!("{bad}\r\nabc\r\n0\r\n\r\n").as_bytes());
        c.send_lossy(&raw);
        let resp = c.read_response();
        assert_eq!(resp.status, 400, "chunk size {bad:?}: {}", resp.brief());
        assert_error_json(&resp, 400, None);
    }
}

#[test]
fn a_head_that_never_completes_gets_408_after_the_header_timeout() {
    let ns = Noslate::builder()
        .functions(&json!([profile("echo", "echo")]))
        .config(&json!({"http": {"headerTimeoutMs": 300}, "turf": {"spareWorkers": 0}}))
        .start();
    // An idle keep-alive connection is not timed...
    let idle = common::raw_connect(ns.port(), std::time::Duration::from_secs(5));
    // ...but one whose head has started is.
    let mut slow = common::raw_connect(ns.port(), std::time::Duration::from_secs(5));
    std::io::Write::write_all(&mut slow, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").expect("send");
    let mut reader = common::RawReader::new(slow);
    let resp = reader.next(false).expect("a 408 answer");
    assert_eq!(resp.status, 408);
    assert_eq!(resp.json().expect("JSON")["errorType"], "RequestTimeout");
    assert_eq!(reader.next(false).err(), Some(common::RawEnd::Eof));
    let mut idle = common::RawReader::new(idle);
    std::io::Write::write_all(&mut idle.get_ref(), &Req::new("GET", "/healthz").to_bytes())
        .expect("send on the idle connection");
    assert_eq!(idle.next(false).expect("an answer").status, 200);
}
