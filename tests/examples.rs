//! The bundled examples (`examples/functions.json`, what `make run` serves): the whole set loads
//! in one runtime within the default memory pool, `/initialize` succeeds, and every function
//! answers its README curl line as documented. A profile added to the file without a check here
//! fails the test.

mod common;

use common::{Noslate, Req, native_worker, require_python};
use serde_json::{Value, json};
use std::path::Path;

/// The example profiles with absolute code directories; native-echo runs the reference worker
/// from where cargo built it (`make build` copies it into examples/native-echo/).
fn example_profiles() -> Vec<Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let text =
        std::fs::read_to_string(dir.join("functions.json")).expect("examples/functions.json");
    let list: Vec<Value> = serde_json::from_str(&text).expect("functions.json is a JSON array");
    list.into_iter()
        .map(|mut p| {
            if p["runtime"] == "native" {
                p["url"] = json!(native_worker().parent().unwrap());
            } else {
                let rel = p["url"].as_str().unwrap().trim_start_matches("file://");
                p["url"] = json!(dir.join(rel));
            }
            p
        })
        .collect()
}

/// A request to `function` as the README's curl line makes it.
fn http(function: &str, method: &str, target: &str, body: &[u8]) -> Req {
    Req::new(method, target)
        .header("x-noslate-function", function)
        .body(body)
}

fn invoke(function: &str, body: &[u8]) -> Req {
    Req::new("POST", &format!("/invoke/{function}")).body(body)
}

#[test]
fn every_example_function_answers_as_documented() {
    require_python();
    let profiles = example_profiles();
    let ns = Noslate::start(&Value::Array(profiles.clone()));
    let init = ns.send(&Req::new("POST", "/initialize"));
    assert_eq!(init.status, 200, "{}", init.brief());

    type Check = fn(&common::Response);
    let cases: Vec<(&str, Req, u16, Check)> = vec![
        ("hello", invoke("hello", b"hello"), 200, |r| {
            assert_eq!(r.text(), "hello")
        }),
        (
            "echo",
            http("echo", "PUT", "/some/path?x=1", b"some body"),
            200,
            |r| {
                let v = r.json();
                assert_eq!(v["method"], "PUT", "{v}");
                assert_eq!(v["body"], "some body", "{v}");
            },
        ),
        ("init", invoke("init", b""), 200, |r| {
            assert!(r.json()["greeting"].is_string(), "{}", r.brief())
        }),
        ("stream", http("stream", "GET", "/", b""), 200, |r| {
            assert_eq!(
                r.header("transfer-encoding"),
                Some("chunked"),
                "{:?}",
                r.headers
            )
        }),
        ("error", invoke("error", b"x"), 404, |r| {
            assert_eq!(r.json()["errorType"], "DemoError", "{}", r.brief())
        }),
        (
            "aworker-hello",
            http("aworker-hello", "POST", "/hello?x=1", b"some body"),
            200,
            |r| assert!(r.text().contains("hello from aworker"), "{}", r.brief()),
        ),
        (
            "fc-event-node",
            invoke("fc-event-node", br#"{"name": "fc"}"#),
            200,
            |r| assert!(r.text().contains("fc"), "{}", r.brief()),
        ),
        (
            "fc-http-node",
            http("fc-http-node", "POST", "/some/path?a=1&a=2", b"some body"),
            200,
            |r| assert!(!r.body.is_empty(), "{}", r.brief()),
        ),
        (
            "python-event",
            invoke("python-event", br#"{"name": "py"}"#),
            200,
            |r| assert!(r.text().contains("python-event"), "{}", r.brief()),
        ),
        (
            "python-wsgi",
            http("python-wsgi", "POST", "/some/path?x=1", b"some body"),
            200,
            |r| assert!(!r.body.is_empty(), "{}", r.brief()),
        ),
        (
            "process-echo",
            http("process-echo", "POST", "/some/path?x=1", b"some body"),
            200,
            |r| {
                let text = r.text();
                assert!(
                    text.starts_with("POST /some/path?x=1 for process-echo (request ")
                        && text.ends_with("some body"),
                    "{text}"
                );
            },
        ),
        (
            "native-echo",
            invoke("native-echo", b"native body"),
            200,
            |r| {
                assert_eq!(r.text(), "native body");
                assert_eq!(r.header("x-method"), Some("POST"));
            },
        ),
    ];
    let mut names: Vec<&str> = profiles.iter().filter_map(|p| p["name"].as_str()).collect();
    let mut checked: Vec<&str> = cases.iter().map(|c| c.0).collect();
    names.sort_unstable();
    checked.sort_unstable();
    assert_eq!(
        names, checked,
        "every example in functions.json has a check here"
    );
    for (name, req, status, check) in &cases {
        let r = ns.send(req);
        assert_eq!(r.status, *status, "{name}: {}", r.brief());
        check(&r);
    }
}
