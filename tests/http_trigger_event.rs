//! FC 3.0's HTTP-trigger event: an FC event handler (`fc-event`) reached through an HTTP trigger
//! gets the request as an event JSON, and its result becomes the HTTP response; through /invoke
//! it still gets the raw body. Node.js and Python alike.

mod common;

use common::{Noslate, Req, assert_function_error, profile, require_python};
use serde_json::json;

fn start(runtime: &str) -> Noslate {
    let fixture = if runtime == "python3" {
        require_python();
        "trigger-python"
    } else {
        "trigger-node"
    };
    let mut p = profile("trigger", fixture);
    p["runtime"] = json!(runtime);
    p["handlerStyle"] = json!("fc-event");
    Noslate::start(&json!([p]))
}

fn get_with_query(runtime: &str) {
    let ns = start(runtime);
    let resp = ns.send(
        &Req::new("GET", "/event?a=1&b=two%20words&a=3")
            .header("Host", "fn-abc.cn-hangzhou.fcapp.run")
            .header("User-Agent", "probe/1")
            .header("X-Custom", "v")
            .header("x-fc-client-ip", "198.51.100.4")
            .header("x-fc-request-id", "trig-1")
            .header("x-fc-account-id", "1234"),
    );
    assert_eq!(resp.status, 200, "body: {}", resp.brief());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let e = resp.json();
    assert_eq!(e["version"], "v1", "{e}");
    assert_eq!(e["rawPath"], "/event");
    assert_eq!(e["queryParameters"], json!({"a": "1,3", "b": "two words"}));
    assert_eq!(e["headers"]["X-Custom"], "v", "{e}");
    assert_eq!(e["body"], "");
    assert_eq!(e["isBase64Encoded"], false);
    let rc = &e["requestContext"];
    assert_eq!(rc["requestId"], "trig-1");
    assert_eq!(rc["accountId"], "1234");
    assert_eq!(rc["domainName"], "fn-abc.cn-hangzhou.fcapp.run");
    assert_eq!(rc["domainPrefix"], "fn-abc");
    assert_eq!(
        rc["http"],
        json!({"method": "GET", "path": "/event", "protocol": "HTTP/1.1",
               "sourceIp": "198.51.100.4", "userAgent": "probe/1"})
    );
    assert!(
        rc["timeEpoch"].as_str().unwrap().parse::<u64>().is_ok(),
        "{rc}"
    );
    assert!(rc["time"].as_str().unwrap().ends_with('Z'), "{rc}");
}

fn post_json_and_control_path(runtime: &str) {
    let ns = start(runtime);
    let body = br#"{"k": "v"}"#;
    let resp = ns.send(
        &Req::new("POST", "/event")
            .header("content-type", "application/json")
            .body(body),
    );
    assert_eq!(resp.status, 200, "body: {}", resp.brief());
    let e = resp.json();
    assert_eq!(e["body"], r#"{"k": "v"}"#);
    assert_eq!(e["isBase64Encoded"], false);
    assert_eq!(e["requestContext"]["http"]["method"], "POST");
    // FC's own control path marks an HTTP trigger too.
    let resp = ns.send(
        &Req::new("POST", "/event")
            .header("x-fc-control-path", "/http-invoke")
            .header("content-type", "text/plain")
            .body(b"hi"),
    );
    assert_eq!(resp.json()["body"], "hi", "{}", resp.brief());
    // /invoke is an ordinary event: the raw body.
    let resp = ns.invoke(b"payload", &[]);
    assert_eq!(resp.status, 200, "body: {}", resp.brief());
    assert_eq!(resp.text(), "raw:payload");
}

fn binary_body_round_trips_in_base64(runtime: &str) {
    let ns = start(runtime);
    let bytes: Vec<u8> = (0..=255u8).rev().collect();
    let resp = ns.send(
        &Req::new("POST", "/echo-binary")
            .header("content-type", "application/octet-stream")
            .body(&bytes),
    );
    assert_eq!(resp.status, 200, "body: {}", resp.brief());
    assert_eq!(
        resp.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(resp.body, bytes);
}

fn result_shapes(runtime: &str) {
    let ns = start(runtime);
    let resp = ns.send(&Req::new("GET", "/shaped"));
    assert_eq!(resp.status, 201, "body: {}", resp.brief());
    assert_eq!(resp.header("x-shape"), Some("yes"));
    assert_eq!(resp.text(), "created");
    let resp = ns.send(&Req::new("GET", "/string"));
    assert_eq!((resp.status, resp.text().as_str()), (200, "plain text"));
    let resp = ns.send(&Req::new("GET", "/array"));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json(), json!([1, "two"]));
    let resp = ns.send(&Req::new("GET", "/buffer"));
    assert_eq!((resp.status, resp.body.clone()), (200, vec![0, 1, 2, 255]));
    let resp = ns.send(&Req::new("GET", "/nothing"));
    assert_eq!((resp.status, resp.body.len()), (200, 0));
}

fn invalid_results_are_function_errors_and_the_worker_keeps_serving(runtime: &str) {
    let ns = start(runtime);
    for (path, says) in [
        ("/bad-status", "statusCode must be an integer HTTP status"),
        ("/bad-base64", "not base64"),
        ("/bad-body", "body must be a base64 string"),
    ] {
        let resp = ns.send(&Req::new("GET", path));
        assert_eq!(
            resp.header("x-fc-status"),
            Some("404"),
            "{path}: {}",
            resp.brief()
        );
        let body = assert_function_error(&resp, "InvalidResponse");
        let message = body["errorMessage"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{path}: {message}");
        let good = ns.send(&Req::new("GET", "/string"));
        assert_eq!((good.status, good.text().as_str()), (200, "plain text"));
    }
}

macro_rules! for_runtimes {
    ($($name:ident),*) => {
        mod node {
            $(#[test] fn $name() { super::$name("nodejs"); })*
        }
        mod python {
            $(#[test] fn $name() { super::$name("python3"); })*
        }
    };
}

for_runtimes!(
    get_with_query,
    post_json_and_control_path,
    binary_body_round_trips_in_base64,
    result_shapes,
    invalid_results_are_function_errors_and_the_worker_keeps_serving
);
