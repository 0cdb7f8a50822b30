//! HTTP-trigger invocations: every request that is not an FC route goes to the function with its
//! method, path, query, headers (order, case, duplicates) and body; the function's status and
//! headers come back.

mod common;

use common::{Noslate, Req, profile};
use serde_json::{Value, json};

fn echo() -> Noslate {
    Noslate::start(&json!([profile("echo", "echo")]))
}

/// The `[name, value]` pairs the echo fixture saw.
fn seen_headers(body: &Value) -> Vec<(String, String)> {
    body["headers"]
        .as_array()
        .expect("headers array")
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn method_path_query_headers_and_body_pass_through() {
    let ns = echo();
    let resp = ns.send(
        &Req::new("PUT", "/some/deep/path?a=1&b=two%20words&a=3")
            .header("X-Custom", "one")
            .header("X-Repeat", "first")
            .header("Mixed-CASE-Header", "Value With Spaces")
            .header("X-Repeat", "second")
            .header("Content-Type", "text/plain")
            .body(b"the request body"),
    );
    assert_eq!(resp.status, 200, "body: {}", resp.brief());
    let body = resp.json();
    assert_eq!(body["method"], "PUT");
    assert_eq!(body["url"], "/some/deep/path?a=1&b=two%20words&a=3");
    assert_eq!(body["body"], "the request body");

    // The client's headers arrive in order, with their case and duplicates.
    let seen = seen_headers(&body);
    let sent = [
        ("X-Custom", "one"),
        ("X-Repeat", "first"),
        ("Mixed-CASE-Header", "Value With Spaces"),
        ("X-Repeat", "second"),
        ("Content-Type", "text/plain"),
    ];
    let mut at = 0;
    for (name, value) in sent {
        let found = seen[at..].iter().position(|(k, v)| k == name && v == value);
        let Some(i) = found else {
            panic!("header {name}: {value} missing or out of order in {seen:?}");
        };
        at += i + 1;
    }
}

#[test]
fn every_method_reaches_the_function() {
    let ns = echo();
    let mut c = ns.client();
    for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let resp = c.request(&Req::new(method, "/m"));
        assert_eq!(resp.status, 200, "{method}: {}", resp.brief());
        assert_eq!(resp.json()["method"], method);
    }
}

#[test]
fn function_status_and_headers_pass_through() {
    let ns = echo();
    let mut c = ns.client();
    for status in [200u16, 201, 302, 404, 418, 500, 503] {
        let resp =
            c.request(&Req::new("GET", "/status").header("x-echo-status", status.to_string()));
        assert_eq!(resp.status, status, "body: {}", resp.brief());
        assert_eq!(
            resp.header("x-echo"),
            Some("yes"),
            "headers {:?}",
            resp.headers
        );
        assert_eq!(resp.header("content-type"), Some("application/json"));
        let cookies = resp.header_all("set-cookie");
        assert_eq!(
            cookies,
            ["a=1", "b=2"],
            "repeated response headers stay separate"
        );
        assert_eq!(resp.json()["url"], "/status");
    }
}

#[test]
fn head_gets_headers_but_no_body() {
    let ns = echo();
    let mut c = ns.client();
    let resp = c.request(&Req::new("HEAD", "/thing"));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-echo"), Some("yes"));
    // Had the server sent a body, its bytes would now be read as the next response's head.
    let resp = c.request(&Req::new("GET", "/thing?after=head"));
    assert_eq!(resp.status, 200, "body: {}", resp.brief());
    assert_eq!(resp.json()["url"], "/thing?after=head");
}

#[test]
fn empty_body_and_root_path() {
    let ns = echo();
    let resp = ns.send(&Req::new("POST", "/").header("Content-Length", "0"));
    assert_eq!(resp.status, 200, "body: {}", resp.brief());
    let body = resp.json();
    assert_eq!(body["url"], "/");
    assert_eq!(body["body"], "");
}

#[test]
fn paths_under_reserved_names_are_not_fc_routes() {
    // Only the exact FC paths are routes; look-alikes are HTTP-trigger requests.
    let ns = echo();
    for path in ["/initialize-me", "/healthzz", "/pre-stopper"] {
        let resp = ns.send(&Req::new("GET", path));
        assert_eq!(resp.status, 200, "{path}: {}", resp.brief());
        assert_eq!(resp.json()["url"], path);
    }
}

#[test]
fn header_bytes_beyond_ascii_reach_the_function_as_one_char_each() {
    // Node's own latin1 view of headers: a byte 0xE9 is "é". The head goes to the Node.js
    // worker in the compact encoding, where such a head is not all ASCII and each string is
    // decoded as UTF-8.
    let ns = echo();
    let mut client = ns.client();
    client.send(b"GET /bytes HTTP/1.1\r\nHost: x\r\nX-Latin: caf\xe9 \xff\r\n\r\n");
    let resp = client.read_response();
    assert_eq!(resp.status, 200, "body: {}", resp.brief());
    let seen = seen_headers(&resp.json());
    let latin = ("X-Latin".to_owned(), "caf\u{e9} \u{ff}".to_owned());
    assert!(seen.contains(&latin), "{seen:?}");
}
