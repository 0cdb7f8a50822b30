//! Full invocations on the admin socket: what the function sees (method, url, headers,
//! baggage, request id) travels in `x-noslate-*` headers; status, headers and body come back
//! streamed; the runtime's own answers carry `x-noslate-error`; a timeout set there covers the
//! response head, not the stream; a client that leaves cancels the invocation; and
//! `noslate invoke` streams stdin in and the body out. Split, byte-by-byte, stalled and
//! half-closed deliveries of an admin invocation are in tests/split_requests.rs.

mod common;

use common::{Noslate, Pattern, RawReader, RawResponse, Req, profile, wait_until};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

fn start() -> Noslate {
    let mut drip = profile("drip", "drip");
    drip["worker"]["maxActivateRequests"] = json!(4);
    let mut bytes = profile("bytes", "bytes");
    bytes["worker"]["maxActivateRequests"] = json!(4);
    Noslate::builder()
        .functions(&json!([profile("echo", "echo"), drip, bytes]))
        .config(&json!({"turf": {"spareWorkers": 0}}))
        .start()
}

fn admin(ns: &Noslate) -> UnixStream {
    let sock = UnixStream::connect(ns.admin_socket()).expect("connect to the admin socket");
    sock.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("set a read timeout");
    sock
}

/// Sends `req` on a fresh admin connection and reads the whole answer.
fn exchange(ns: &Noslate, req: &Req) -> RawResponse {
    let mut sock = admin(ns);
    sock.write_all(&req.to_bytes()).expect("send the request");
    RawReader::new(&mut sock)
        .next(false)
        .expect("an answer from the runtime")
}

fn stats(ns: &Noslate) -> Value {
    let (ok, out, err) = ns.cli(&["stats"]);
    assert!(ok, "noslate stats failed: {err}");
    serde_json::from_str(&out).expect("stats are JSON")
}

#[test]
fn the_function_sees_the_method_url_headers_baggage_and_request_id_sent() {
    let ns = start();
    let resp = exchange(
        &ns,
        &Req::new("POST", "/v1/invoke/echo")
            .header("x-noslate-method", "PUT")
            .header("x-noslate-url", "/orders/7?full=1")
            .header(
                "x-noslate-headers",
                r#"[["Host","shop.example"],["x-echo-status","201"],["x-a","1"],["x-a","caf\u00e9"]]"#,
            )
            .header("x-noslate-baggage", r#"[["tenant","t1"],["trace","abc"]]"#)
            .header("x-noslate-request-id", "order-7")
            .body(b"{\"qty\":2}"),
    );
    assert_eq!(resp.status, 201, "the function's status passes through");
    assert_eq!(resp.header("x-echo").as_deref(), Some("yes"));
    assert_eq!(resp.header("x-noslate-error"), None);
    let seen = resp.json().expect("the echo is JSON");
    assert_eq!(seen["method"], "PUT");
    assert_eq!(seen["url"], "/orders/7?full=1");
    assert_eq!(
        seen["headers"],
        json!([
            ["Host", "shop.example"],
            ["x-echo-status", "201"],
            ["x-a", "1"],
            ["x-a", "café"]
        ]),
        "exactly the headers given, in order, none of the admin request's own"
    );
    assert_eq!(seen["baggage"], json!({"tenant": "t1", "trace": "abc"}));
    assert_eq!(seen["ctx"]["requestId"], "order-7");
    assert_eq!(seen["body"], "{\"qty\":2}");

    // Without metadata it is an event, with the admin request's own headers less its framing.
    let event = exchange(
        &ns,
        &Req::new("POST", "/v1/invoke/echo")
            .header("x-b", "2")
            .body(b"ev"),
    );
    assert_eq!(event.status, 200);
    assert_eq!(event.header("x-fc-status").as_deref(), Some("200"));
    let seen = event.json().expect("the echo is JSON");
    assert_eq!(seen["headers"], json!([["x-b", "2"]]));
    assert_eq!(seen["body"], "ev");
}

#[test]
fn the_runtimes_own_answers_are_marked_and_the_functions_are_not() {
    let ns = start();
    let missing = exchange(&ns, &Req::new("POST", "/v1/invoke/nosuch").body(b"x"));
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.header("x-noslate-error").as_deref(),
        Some("FunctionNotFound")
    );
    let own_404 = exchange(
        &ns,
        &Req::new("POST", "/v1/invoke/echo")
            .header("x-noslate-url", "/")
            .header("x-noslate-headers", r#"[["x-echo-status","404"]]"#),
    );
    assert_eq!(own_404.status, 404);
    assert_eq!(
        own_404.header("x-noslate-error"),
        None,
        "the function's own 404"
    );
    let thrown = exchange(
        &ns,
        &Req::new("POST", "/v1/invoke/drip")
            .header("x-noslate-url", "/")
            .header("x-noslate-headers", r#"[["x-drip-throw","1"]]"#),
    );
    assert_eq!(
        thrown.header("x-noslate-error").as_deref(),
        Some("TypeError")
    );
    let body = thrown.json().expect("the error is JSON");
    assert_eq!(body["errorMessage"], "drip was asked to throw");

    for (name, value, names) in [
        ("x-noslate-method", "GE T", "x-noslate-method"),
        ("x-noslate-headers", "{\"a\":1}", "x-noslate-headers"),
        ("x-noslate-headers", "[[\"a\"]]", "x-noslate-headers"),
        ("x-noslate-baggage", "not json", "x-noslate-baggage"),
        ("x-noslate-timeout", "soon", "x-noslate-timeout"),
        ("x-noslate-request-id", "has space", "x-noslate-request-id"),
    ] {
        let bad = exchange(
            &ns,
            &Req::new("POST", "/v1/invoke/echo").header(name, value),
        );
        assert_eq!(bad.status, 400, "{name}: {value}");
        assert_eq!(
            bad.header("x-noslate-error").as_deref(),
            Some("InvalidInvokeMetadata")
        );
        let body = bad.json().expect("the error is JSON");
        let message = body["errorMessage"].as_str().unwrap_or_default();
        assert!(message.starts_with(names), "{message}");
    }
    // Refused by the HTTP layer before any route: marked too, as the runtime's own.
    let too_large = exchange(
        &ns,
        &Req::new("POST", "/v1/invoke/echo")
            .header("x-noslate-url", format!("/{}", "a".repeat(64 * 1024))),
    );
    assert_eq!(too_large.status, 431);
    assert_eq!(
        too_large.header("x-noslate-error").as_deref(),
        Some("RequestHeaderFieldsTooLarge")
    );
    let mut sock = admin(&ns);
    sock.write_all(b"POST /v1/invoke/echo HTTP/1.1\r\nbad header line\r\n\r\n")
        .expect("send a malformed head");
    let malformed = RawReader::new(&mut sock)
        .next(false)
        .expect("an answer to a malformed head");
    assert_eq!(malformed.status, 400);
    assert_eq!(
        malformed.header("x-noslate-error").as_deref(),
        Some("MalformedRequest")
    );
    // The runtime serves on after all of them.
    let ok = exchange(&ns, &Req::new("POST", "/v1/invoke/echo").body(b"ok"));
    assert_eq!(ok.status, 200);
}

#[test]
fn a_timeout_set_on_the_admin_socket_covers_the_head_not_the_stream() {
    let ns = start();
    // The head is due within 400 ms; the body takes about 1.2 s after it, and is not cut.
    let slow_body = exchange(
        &ns,
        &Req::new("POST", "/v1/invoke/drip")
            .header("x-noslate-url", "/")
            .header("x-noslate-timeout", "400")
            .header(
                "x-noslate-headers",
                r#"[["x-drip-pieces","6"],["x-drip-every","200"]]"#,
            ),
    );
    assert_eq!(slow_body.status, 200);
    assert_eq!(slow_body.body, b"drip\n".repeat(6));
    // A head later than the timeout is the runtime's timeout error.
    let late_head = exchange(
        &ns,
        &Req::new("POST", "/v1/invoke/drip")
            .header("x-noslate-url", "/")
            .header("x-noslate-timeout", "300")
            .header("x-noslate-headers", r#"[["x-drip-head-delay","3000"]]"#),
    );
    assert_eq!(late_head.status, 404);
    assert_eq!(
        late_head.header("x-noslate-error").as_deref(),
        Some("FunctionTimeout")
    );
}

#[test]
fn a_client_that_leaves_mid_stream_cancels_the_invocation() {
    let ns = start();
    let mut sock = admin(&ns);
    let req = Req::new("POST", "/v1/invoke/drip")
        .header("x-noslate-url", "/")
        .header(
            "x-noslate-headers",
            r#"[["x-drip-pieces","600"],["x-drip-every","50"]]"#,
        );
    sock.write_all(&req.to_bytes()).expect("send");
    let mut first = [0u8; 256];
    let n = sock.read(&mut first).expect("the head and a first piece");
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    drop(sock);
    wait_until(
        Duration::from_secs(5),
        "the stream is cancelled and nothing is in flight",
        || stats(&ns)["inflight"] == 0,
    );
    // The worker counts the stream when its response closes, a tick after the CANCEL: a count
    // request read in the same batch as the CANCEL runs first, so the count is polled.
    wait_until(
        Duration::from_secs(5),
        "the worker counted one cancelled stream",
        || {
            let count = exchange(
                &ns,
                &Req::new("POST", "/v1/invoke/drip")
                    .header("x-noslate-url", "/")
                    .header("x-noslate-headers", r#"[["x-drip-count","1"]]"#),
            );
            let cancelled = count.json().expect("JSON")["cancelled"].clone();
            assert!(cancelled == 0 || cancelled == 1, "cancelled: {cancelled}");
            cancelled == 1
        },
    );
}

#[test]
fn noslate_invoke_streams_stdin_in_and_the_body_out() {
    let ns = start();
    let (ok, out, err) = ns.cli(&[
        "invoke", "echo", "--method", "DELETE", "--url", "/x?y=1", "-H", "x-a: 1", "--data", "hi",
    ]);
    assert!(ok, "{err}");
    let seen: Value = serde_json::from_str(&out).expect("the echo is JSON");
    assert_eq!(
        (&seen["method"], &seen["url"], &seen["body"]),
        (&json!("DELETE"), &json!("/x?y=1"), &json!("hi"))
    );
    assert_eq!(seen["headers"], json!([["x-a", "1"]]));

    // 24 MiB through stdin and back out, both streamed: neither side holds it whole.
    let size = 24 << 20;
    let mut child = Command::new(common::binary())
        .args(["invoke", "bytes", "--url", "/", "-H", "x-bytes-mode: pipe"])
        .args(["--data", "@-", "--socket"])
        .arg(ns.admin_socket())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run noslate invoke");
    let mut stdin = child.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || {
        let crc = Pattern::new(7).write_to(&mut stdin, size);
        drop(stdin);
        crc
    });
    let mut stdout = child.stdout.take().expect("stdout");
    let mut check = common::PatternCheck::new(7);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = stdout.read(&mut buf).expect("read the answer");
        if n == 0 {
            break;
        }
        check.feed(&buf[..n]);
    }
    let status = child.wait().expect("noslate invoke exits");
    assert!(status.success());
    assert!(feeder.join().expect("feeder").is_ok());
    assert_eq!(check.first_mismatch, None);
    assert_eq!(check.received, size as u64);

    let (ok, _out, err) = ns.cli(&["invoke", "nosuch"]);
    assert!(!ok);
    assert!(err.contains("FunctionNotFound"), "{err}");
}
