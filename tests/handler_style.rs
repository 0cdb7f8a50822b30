//! A handler written for one calling convention but configured with another (`handlerStyle`)
//! fails at once with an error naming the setting, instead of hanging until its timeout; handlers
//! of the configured style that merely return something are not mistaken for it.

mod common;

use common::{Noslate, Req, TempDir, assert_function_error, profile, require_python};
use serde_json::{Value, json};
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

/// Writes `index.<ext>` with `source` into `dir/<name>` and returns its profile.
fn function(dir: &Path, name: &str, runtime: &str, source: &str, style: Option<&str>) -> Value {
    let code = dir.join(name);
    fs::create_dir_all(&code).expect("create the code dir");
    let file = if runtime == "python3" {
        "index.py"
    } else {
        "index.js"
    };
    fs::write(code.join(file), source).expect("write the handler");
    let mut p = profile(name, "echo");
    p["url"] = json!(code);
    p["runtime"] = json!(runtime);
    // Long enough that a hang would be obvious next to the 5 s bound below.
    p["worker"]["invokeTimeout"] = json!(20000);
    // Ten functions fit the default memory pool (1 GiB) only with small limits.
    p["resourceLimit"] = json!({"memory": 64 * common::MIB});
    if let Some(style) = style {
        p["handlerStyle"] = json!(style);
    }
    p
}

fn invoke(ns: &Noslate, name: &str) -> (common::Response, Duration) {
    let start = Instant::now();
    let resp = ns.send(&Req::new("POST", &format!("/invoke/{name}")).body(b"{\"a\":1}"));
    (resp, start.elapsed())
}

#[track_caller]
fn assert_names_style(ns: &Noslate, name: &str, error_type: &str, wanted: &str) {
    let (resp, took) = invoke(ns, name);
    let body = assert_function_error(&resp, error_type);
    let message = body["errorMessage"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("\"handlerStyle\": \"{wanted}\"")),
        "{name}: the message should name the fix `\"handlerStyle\": \"{wanted}\"`: {message}"
    );
    assert!(
        took < Duration::from_secs(5),
        "{name}: failed after {took:?}, not at once"
    );
}

#[track_caller]
fn assert_answers(ns: &Noslate, name: &str, text: &str) {
    let (resp, _) = invoke(ns, name);
    assert_eq!(resp.status, 200, "{name}: {}", resp.brief());
    assert_eq!(resp.text(), text, "{name}");
}

#[test]
fn node_fc_event_handler_left_at_the_noslate_style() {
    let dir = TempDir::new();
    let d = dir.path();
    let fns = json!([
        function(
            d,
            "asyncobj",
            "nodejs",
            "exports.handler = async (event, context) => ({ ok: true });\n",
            None
        ),
        function(
            d,
            "syncstr",
            "nodejs",
            "exports.handler = (event, context) => 'hello';\n",
            None
        ),
        function(
            d,
            "buffer",
            "nodejs",
            "exports.handler = async (event) => Buffer.from('x');\n",
            None
        ),
        // Noslate handlers that return something incidental and answer later.
        function(
            d,
            "late",
            "nodejs",
            "exports.handler = async (ctx, req, res) => {\n  await new Promise((r) => setTimeout(r, 50));\n  res.end('late');\n};\n",
            None
        ),
        function(
            d,
            "chained",
            "nodejs",
            "exports.handler = (ctx, req, res) => req.on('data', () => {}).on('end', () => res.end('chained'));\n",
            None
        ),
        function(
            d,
            "timer",
            "nodejs",
            "exports.handler = (ctx, req, res) => setTimeout(() => res.end('timer'), 20);\n",
            None
        ),
        function(
            d,
            "piped",
            "nodejs",
            "exports.handler = (ctx, req, res) => req.pipe(res);\n",
            None
        ),
        function(
            d,
            "touched",
            "nodejs",
            "exports.handler = (ctx, req, res) => {\n  res.setHeader('x-a', '1');\n  setTimeout(() => res.end('touched'), 20);\n  return { ignored: true };\n};\n",
            None
        ),
        function(
            d,
            "resolved",
            "nodejs",
            "exports.handler = async (ctx, req, res) => {\n  setTimeout(() => res.end('resolved'), 20);\n};\n",
            None
        ),
        // The same FC handler with the right style answers.
        function(
            d,
            "fcevent",
            "nodejs",
            "exports.handler = async (event, context) => ({ ok: true });\n",
            Some("fc-event")
        ),
    ]);
    let ns = Noslate::start(&fns);
    for name in ["asyncobj", "syncstr", "buffer"] {
        assert_names_style(&ns, name, "WrongHandlerStyle", "fc-event");
    }
    assert_answers(&ns, "late", "late");
    assert_answers(&ns, "chained", "chained");
    assert_answers(&ns, "timer", "timer");
    assert_answers(&ns, "piped", "{\"a\":1}");
    assert_answers(&ns, "touched", "touched");
    assert_answers(&ns, "resolved", "resolved");
    assert_answers(&ns, "fcevent", "{\"ok\":true}");
}

#[test]
fn python_styles_swapped() {
    require_python();
    let dir = TempDir::new();
    let d = dir.path();
    let fns = json!([
        // WSGI applications at the python3 default (fc-event), failing on either argument.
        function(
            d,
            "wsgistart",
            "python3",
            "def handler(environ, start_response):\n    start_response('200 OK', [])\n    return [b'x']\n",
            None
        ),
        function(
            d,
            "wsgiindex",
            "python3",
            "def handler(environ, start_response):\n    path = environ['PATH_INFO']\n    start_response('200 OK', [])\n    return [path.encode()]\n",
            None
        ),
        function(
            d,
            "wsgiget",
            "python3",
            "def handler(environ, start_response):\n    method = environ.get('REQUEST_METHOD')\n    start_response('200 OK', [])\n    return [method.encode()]\n",
            None
        ),
        // An event handler configured as a WSGI app.
        function(
            d,
            "eventaswsgi",
            "python3",
            "def handler(event, context):\n    return {'ok': True}\n",
            Some("fc-http")
        ),
        // An unrelated TypeError in an event handler gets no hint.
        function(
            d,
            "plainerror",
            "python3",
            "def handler(event, context):\n    raise TypeError('unrelated')\n",
            None
        ),
        // The WSGI app with the right style answers.
        function(
            d,
            "wsgiok",
            "python3",
            "def handler(environ, start_response):\n    start_response('200 OK', [])\n    return [b'wsgi']\n",
            Some("fc-http")
        ),
    ]);
    let ns = Noslate::start(&fns);
    for name in ["wsgistart", "wsgiindex"] {
        assert_names_style(&ns, name, "TypeError", "fc-http");
    }
    assert_names_style(&ns, "wsgiget", "AttributeError", "fc-http");
    assert_names_style(&ns, "eventaswsgi", "WrongHandlerStyle", "fc-event");
    let (resp, _) = invoke(&ns, "plainerror");
    let body = assert_function_error(&resp, "TypeError");
    assert_eq!(body["errorMessage"], "unrelated", "{body}");
    assert_answers(&ns, "wsgiok", "wsgi");
}
