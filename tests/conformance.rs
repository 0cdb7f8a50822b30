//! One conformance suite for every worker runtime and handler style.
//!
//! The same cases run against each style, through the real binary and real workers:
//!
//! | style | runtime | calling convention | fixture |
//! |---|---|---|---|
//! | `node_noslate` | `nodejs` | Noslate's `handler(ctx, req, res)` | `conformance/node-noslate` |
//! | `node_fc_event` | `nodejs` | FC's `handler(event, context[, callback])` | `conformance/node-fc-event` |
//! | `node_fc_http` | `nodejs` | FC's `handler(req, resp, context)` | `conformance/node-fc-http` |
//! | `aworker` | `aworker` | `addEventListener('fetch', ...)` | `conformance/aworker` |
//! | `python_event` | `python3` | FC's `handler(event, context)` | `conformance/python-event` |
//! | `python_wsgi` | `python3` | WSGI `handler(environ, start_response)` | `conformance/python-wsgi` |
//!
//! Every case is a test in every style's module (`node_noslate::echo`, `python_wsgi::stream`,
//! ...), generated from one list, so no pair can go missing. Each style runs the list twice: with
//! cold workers, and with workers from its runtime's fast path (`python_event_seed::echo`: forked
//! from the function's warm seed; `node_noslate_spare::echo`: taken from a spare Node.js
//! process), the runtime's log then showing that the fast path was taken. A style that cannot support a case
//! says so in [`SKIPS`], with the reason; its test then checks that limitation instead (for
//! example that an event handler's answer is always 200, sent whole), and
//! `skips_are_exactly_the_documented_limitations` asserts the list itself. The fixtures'
//! contract is in tests/fixtures/conformance/README.md.
//!
//! The last section drives the bootstraps directly over their pipes, one byte per write, to
//! check the framing under partial reads and the credit windows in both directions.

mod common;

use std::fs::{self, File};
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    Client, Framing, LogLines, MIB, Noslate, Pattern, PatternCheck, Req, Response,
    assert_function_error, fixture_dir, require_node, require_python,
};
use noslate::http::HeaderList;
use noslate::wire::{self, Direction, FrameDecoder, Kind, RequestHead, ResponseHead};
use serde_json::{Value, json};
use std::cell::RefCell;

// ---------------------------------------------------------------------------------------------
// Styles and cases

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    NodeNoslate,
    NodeFcEvent,
    NodeFcHttp,
    Aworker,
    PythonEvent,
    PythonWsgi,
}

const STYLES: [Style; 6] = [
    Style::NodeNoslate,
    Style::NodeFcEvent,
    Style::NodeFcHttp,
    Style::Aworker,
    Style::PythonEvent,
    Style::PythonWsgi,
];

impl Style {
    /// The style's name, also its fixture directory under `tests/fixtures/conformance`.
    fn name(self) -> &'static str {
        match self {
            Style::NodeNoslate => "node-noslate",
            Style::NodeFcEvent => "node-fc-event",
            Style::NodeFcHttp => "node-fc-http",
            Style::Aworker => "aworker",
            Style::PythonEvent => "python-event",
            Style::PythonWsgi => "python-wsgi",
        }
    }

    fn runtime(self) -> &'static str {
        match self {
            Style::NodeNoslate | Style::NodeFcEvent | Style::NodeFcHttp => "nodejs",
            Style::Aworker => "aworker",
            Style::PythonEvent | Style::PythonWsgi => "python3",
        }
    }

    /// `handlerStyle` in the profile (aworker has none).
    fn handler_style(self) -> Option<&'static str> {
        match self {
            Style::NodeNoslate => Some("noslate"),
            Style::NodeFcEvent | Style::PythonEvent => Some("fc-event"),
            Style::NodeFcHttp | Style::PythonWsgi => Some("fc-http"),
            Style::Aworker => None,
        }
    }

    /// FC event functions are called with `POST /invoke/NAME`; the others with HTTP-trigger
    /// requests.
    fn is_event(self) -> bool {
        matches!(self, Style::NodeFcEvent | Style::PythonEvent)
    }

    fn is_python(self) -> bool {
        matches!(self, Style::PythonEvent | Style::PythonWsgi)
    }

    /// The fixture file user frames of a stack trace are in.
    fn main_file(self) -> &'static str {
        match self {
            Style::Aworker => "main.js",
            Style::PythonEvent | Style::PythonWsgi => "index.py",
            _ => "index.js",
        }
    }

    fn ext(self) -> &'static str {
        if self.is_python() { "py" } else { "js" }
    }

    /// Where the broken code of the bad-input cases lives.
    fn bad_dir(self) -> &'static str {
        match self {
            Style::Aworker => "aworker-bad",
            Style::PythonEvent | Style::PythonWsgi => "python-bad",
            _ => "node-bad",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Echo,
    Status,
    Init,
    Error,
    Stream,
    BigBody,
    Concurrency,
    Env,
    Timeout,
    SyntaxError,
    MissingFile,
    NotAFunction,
    ImportError,
}

const CASES: [Case; 13] = [
    Case::Echo,
    Case::Status,
    Case::Init,
    Case::Error,
    Case::Stream,
    Case::BigBody,
    Case::Concurrency,
    Case::Env,
    Case::Timeout,
    Case::SyntaxError,
    Case::MissingFile,
    Case::NotAFunction,
    Case::ImportError,
];

impl Case {
    /// The case's name: the fixture export (and `CONF_CASE` for aworker).
    fn name(self) -> &'static str {
        match self {
            Case::Echo => "echo",
            Case::Status => "status",
            Case::Init => "init",
            Case::Error => "error",
            Case::Stream => "stream",
            Case::BigBody => "bigbody",
            Case::Concurrency => "concurrency",
            Case::Env => "env",
            Case::Timeout => "timeout",
            Case::SyntaxError => "syntax_error",
            Case::MissingFile => "missing_file",
            Case::NotAFunction => "not_a_function",
            Case::ImportError => "import_error",
        }
    }
}

const EVENT_STATUS: &str = "an FC event handler returns only a body: the invocation answers 200 \
    with x-fc-status: 200, and there is no status or header for the function to set";
const EVENT_STREAM: &str = "an FC event handler's result is one value: the response goes out \
    whole, with a Content-Length, when the handler has returned";
const AWORKER_MISSING: &str = "an aworker function's sourceFile is checked when the profiles \
    load: the runtime refuses to start (exit status 2) and names the file";

/// The (style, case) pairs that cannot run, and why. Each one's test checks the limitation.
const SKIPS: &[(Style, Case, &str)] = &[
    (Style::NodeFcEvent, Case::Status, EVENT_STATUS),
    (Style::PythonEvent, Case::Status, EVENT_STATUS),
    (Style::NodeFcEvent, Case::Stream, EVENT_STREAM),
    (Style::PythonEvent, Case::Stream, EVENT_STREAM),
    (Style::Aworker, Case::MissingFile, AWORKER_MISSING),
];

fn skip_reason(style: Style, case: Case) -> Option<&'static str> {
    SKIPS
        .iter()
        .find(|(s, c, _)| *s == style && *c == case)
        .map(|(_, _, why)| *why)
}

#[test]
fn skips_are_exactly_the_documented_limitations() {
    // Exactly these pairs are skipped: the event styles have no status, headers or streaming,
    // and aworker's missing source file never reaches a worker. Everything else must run.
    let expected = [
        ("node-fc-event", "status"),
        ("python-event", "status"),
        ("node-fc-event", "stream"),
        ("python-event", "stream"),
        ("aworker", "missing_file"),
    ];
    let mut listed: Vec<(&str, &str)> =
        SKIPS.iter().map(|(s, c, _)| (s.name(), c.name())).collect();
    let mut want = expected.to_vec();
    listed.sort_unstable();
    want.sort_unstable();
    assert_eq!(listed, want, "the skip list changed");
    for (style, case, why) in SKIPS {
        assert!(
            why.len() > 20,
            "{}/{}: a skip needs a reason",
            style.name(),
            case.name()
        );
    }
    // The matrix, for the log.
    let mut table = String::from("style           ");
    for case in CASES {
        table.push_str(&format!(" {:>14}", case.name()));
    }
    for style in STYLES {
        table.push_str(&format!("\n{:<16}", style.name()));
        for case in CASES {
            let mark = if skip_reason(style, case).is_some() {
                "skip"
            } else {
                "run"
            };
            table.push_str(&format!(" {mark:>14}"));
        }
    }
    eprintln!("{table}");
    let runnable = STYLES.len() * CASES.len() - SKIPS.len();
    assert_eq!(runnable, 73);
}

/// Runs one cell of the matrix.
fn run(style: Style, case: Case) {
    if style.is_python() {
        require_python();
    }
    if let Some(why) = skip_reason(style, case) {
        eprintln!(
            "SKIP {}/{}: {why}; checking that limitation instead",
            style.name(),
            case.name()
        );
        check_limitation(style, case);
        return;
    }
    match case {
        Case::Echo => echo(style),
        Case::Status => status(style),
        Case::Init => init(style),
        Case::Error => error(style),
        Case::Stream => stream(style),
        Case::BigBody => big_body(style),
        Case::Concurrency => concurrency(style),
        Case::Env => env(style),
        Case::Timeout => timeout(style),
        Case::SyntaxError => bad_input(style, case, "bad_syntax", "handler", &[":4"]),
        Case::ImportError => bad_input(style, case, "bad_import", "handler", &[":4"]),
        Case::MissingFile => bad_input(style, case, "nonexistent", "handler", &[]),
        Case::NotAFunction => match style {
            Style::Aworker => bad_input(style, case, "no_listener", "", &["fetch"]),
            _ if style.is_python() => {
                bad_input(style, case, "index", "not_a_function", &["not_a_function"])
            }
            _ => bad_input(style, case, "index", "notAFunction", &["notAFunction"]),
        },
    }
}

macro_rules! style_tests {
    ($module:ident, $style:expr, $run:ident) => {
        mod $module {
            use super::*;

            #[test]
            fn echo() {
                $run($style, Case::Echo);
            }
            #[test]
            fn status() {
                $run($style, Case::Status);
            }
            #[test]
            fn init() {
                $run($style, Case::Init);
            }
            #[test]
            fn error() {
                $run($style, Case::Error);
            }
            #[test]
            fn stream() {
                $run($style, Case::Stream);
            }
            #[test]
            fn bigbody() {
                $run($style, Case::BigBody);
            }
            #[test]
            fn concurrency() {
                $run($style, Case::Concurrency);
            }
            #[test]
            fn env() {
                $run($style, Case::Env);
            }
            #[test]
            fn timeout() {
                $run($style, Case::Timeout);
            }
            #[test]
            fn syntax_error() {
                $run($style, Case::SyntaxError);
            }
            #[test]
            fn missing_file() {
                $run($style, Case::MissingFile);
            }
            #[test]
            fn not_a_function() {
                $run($style, Case::NotAFunction);
            }
            #[test]
            fn import_error() {
                $run($style, Case::ImportError);
            }
        }
    };
}

style_tests!(node_noslate, Style::NodeNoslate, run);
style_tests!(node_fc_event, Style::NodeFcEvent, run);
style_tests!(node_fc_http, Style::NodeFcHttp, run);
style_tests!(aworker, Style::Aworker, run);
style_tests!(python_event, Style::PythonEvent, run);
style_tests!(python_wsgi, Style::PythonWsgi, run);
// The same cases again, each worker started through its runtime's fast path.
style_tests!(node_noslate_spare, Style::NodeNoslate, run_fast);
style_tests!(node_fc_event_spare, Style::NodeFcEvent, run_fast);
style_tests!(node_fc_http_spare, Style::NodeFcHttp, run_fast);
style_tests!(aworker_spare, Style::Aworker, run_fast);
style_tests!(python_event_seed, Style::PythonEvent, run_fast);
style_tests!(python_wsgi_seed, Style::PythonWsgi, run_fast);

// ---------------------------------------------------------------------------------------------
// Profiles and requests

fn fn_name(style: Style, case: Case) -> String {
    format!("{}-{}", style.name(), case.name().replace('_', "-"))
}

/// The case's function: the style's fixture, export `index.<case>` (aworker: `main.js` with
/// `CONF_CASE`), the fixture initializer, one worker taking up to 4 requests at once.
fn profile(style: Style, case: Case) -> Value {
    let mut p = json!({
        "name": fn_name(style, case),
        "runtime": style.runtime(),
        "url": fixture_dir(&format!("conformance/{}", style.name())),
        "signature": "conformance",
        "environments": [
            {"key": "CONF_ENV", "value": "conf-value"},
            {"key": "CONF_CASE", "value": case.name()}
        ],
        "worker": {
            "reservationCount": 1,
            "replicaCountLimit": 1,
            "maxActivateRequests": 4,
            "initializationTimeout": 10000
        },
        // Room for a 32 MiB body held whole (event styles), while several functions fit the
        // default memory pool (1 GiB).
        "resourceLimit": {"memory": 256 << 20}
    });
    if let Some(handler_style) = style.handler_style() {
        p["handlerStyle"] = json!(handler_style);
    }
    if style == Style::Aworker {
        p["sourceFile"] = json!("main.js");
    } else {
        p["handler"] = json!(format!("index.{}", case.name()));
        p["initializer"] = json!("index.initializer");
    }
    p
}

fn start(style: Style, case: Case) -> Noslate {
    launch(style, vec![profile(style, case)])
}

thread_local! {
    /// Set by [`run_fast`]: the test's workers start through their runtime's fast path (forked
    /// from a warm seed, taken from a spare process) instead of cold, and the logs of the
    /// runtimes it started are kept here for the check afterwards.
    static FAST: RefCell<Option<Vec<LogLines>>> = const { RefCell::new(None) };
}

/// Starts a runtime with `profiles`. On the fast path the functions reserve no worker, and
/// the runtime is returned once every seed has imported (or failed to) and a spare is ready,
/// so that the first request's worker comes from them.
fn launch(style: Style, mut profiles: Vec<Value>) -> Noslate {
    let fast = FAST.with(|f| f.borrow().is_some());
    if !fast {
        return Noslate::start(&Value::Array(profiles));
    }
    for p in &mut profiles {
        p["worker"]["reservationCount"] = json!(0);
    }
    let n = profiles.len();
    let ns = Noslate::start(&Value::Array(profiles));
    let count = |needles: &[&str]| ns.log_count(needles);
    common::wait_until(common::WAIT, "the fast path is ready", || {
        if style.is_python() {
            count(&["[turf seed=", "] ready after "])
                + count(&["[turf seed=", "importing the function failed"])
                >= n
        } else {
            count(&["[turf spare=", "] ready after "]) >= 1
        }
    });
    FAST.with(|f| {
        if let Some(logs) = f.borrow_mut().as_mut() {
            logs.push(ns.stderr_handle());
        }
    });
    ns
}

/// [`run`] with the workers started through the runtime's fast path: Python workers forked
/// from the function's warm seed, Node.js workers taken from a spare process. Checks in the
/// runtime's log that the fast path was taken: the same function code must behave the same
/// whichever way its worker started.
fn run_fast(style: Style, case: Case) {
    FAST.with(|f| *f.borrow_mut() = Some(Vec::new()));
    run(style, case);
    let logs = FAST.with(|f| f.borrow_mut().take()).unwrap_or_default();
    if skip_reason(style, case).is_some() {
        return;
    }
    let lines: Vec<String> = logs.iter().flat_map(LogLines::lines).collect();
    let bad_code = matches!(
        case,
        Case::SyntaxError | Case::ImportError | Case::MissingFile | Case::NotAFunction
    );
    let wanted = match (style.is_python(), bad_code) {
        // The seed cannot import broken code: workers start cold and report it.
        (true, true) => "importing the function failed",
        (true, false) => "] forked from its seed",
        (false, _) => "taken from spare-",
    };
    assert!(
        lines.iter().any(|l| l.contains(wanted)),
        "{}/{}: no {wanted:?} in the runtime's log:\n{}",
        style.name(),
        case.name(),
        lines.join("\n")
    );
}

/// A request to the case's function as its style is called: `POST /invoke/NAME` for the event
/// styles (whatever `method`), otherwise an HTTP-trigger request to `/conf/path?q=1&q=2`.
fn request(style: Style, case: Case, method: &str, body: &[u8]) -> Req {
    let name = fn_name(style, case);
    if style.is_event() {
        Req::new("POST", &format!("/invoke/{name}")).body(body)
    } else {
        Req::new(method, "/conf/path?q=1&q=2")
            .header("x-noslate-function", &name)
            .body(body)
    }
}

/// A successful answer: 200, and for event invocations `x-fc-status: 200`.
#[track_caller]
fn assert_ok(style: Style, resp: &Response) {
    assert_eq!(resp.status, 200, "status; body: {}", resp.brief());
    if style.is_event() {
        assert_eq!(
            resp.header("x-fc-status"),
            Some("200"),
            "{:?}",
            resp.headers
        );
    }
}

fn stack_text(body: &Value) -> String {
    body["stackTrace"]
        .as_array()
        .unwrap_or_else(|| panic!("stackTrace is not an array in {body}"))
        .iter()
        .map(|l| l.as_str().expect("stackTrace lines are strings"))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------------
// The cases

fn echo(style: Style) {
    let case = Case::Echo;
    let ns = start(style, case);
    let req = request(style, case, "POST", b"hello conformance")
        .header("x-conf", "abc")
        .header("x-fc-request-id", "conf-request-1");
    let resp = ns.send(&req);
    assert_ok(style, &resp);
    let v = resp.json();
    assert_eq!(v["body"], "hello conformance", "{v}");
    assert_eq!(v["requestId"], "conf-request-1", "{v}");
    assert_eq!(v["functionName"], fn_name(style, case), "{v}");
    if style.is_event() {
        // An event handler sees the body and the context, no HTTP request.
        for key in ["method", "path", "query", "header"] {
            assert!(v[key].is_null(), "{key} in {v}");
        }
    } else {
        assert_eq!(v["method"], "POST", "{v}");
        assert_eq!(v["path"], "/conf/path", "{v}");
        assert_eq!(v["query"], "q=1&q=2", "{v}");
        assert_eq!(v["header"], "abc", "{v}");
    }
    if style == Style::NodeFcHttp {
        assert_eq!(v["queries"], json!({"q": ["1", "2"]}), "{v}");
    }
}

fn status(style: Style) {
    let case = Case::Status;
    let ns = start(style, case);
    let resp = ns.send(&request(style, case, "GET", b""));
    assert_eq!(resp.status, 201, "body: {}", resp.brief());
    assert_eq!(
        resp.header("x-conf-status"),
        Some("set"),
        "{:?}",
        resp.headers
    );
    assert_eq!(
        resp.header_all("set-cookie"),
        ["a=1", "b=2"],
        "{:?}",
        resp.headers
    );
    assert_eq!(resp.text(), "created");
    if style == Style::NodeFcHttp {
        assert_eq!(resp.header("x-conf-deleted"), None, "deleteHeader");
    }
}

fn init(style: Style) {
    let case = Case::Init;
    let ns = start(style, case);
    for _ in 0..2 {
        let resp = ns.send(&request(style, case, "POST", b"x"));
        assert_ok(style, &resp);
        assert_eq!(
            resp.json(),
            json!({"initCount": 1}),
            "the initializer ran once, first"
        );
    }
}

fn error(style: Style) {
    let case = Case::Error;
    let ns = start(style, case);
    for _ in 0..2 {
        // Twice: a function error leaves the worker serving.
        let resp = ns.send(&request(style, case, "POST", b"x"));
        let body = assert_function_error(&resp, "ConfError");
        let message = body["errorMessage"].as_str().unwrap();
        assert!(message.contains("conf boom"), "errorMessage {message:?}");
        let stack = stack_text(&body);
        let thrower = if style.is_python() {
            "conf_fail"
        } else {
            "confFail"
        };
        assert!(
            stack.contains(style.main_file()) && stack.contains(thrower),
            "the stack names {} and {thrower}:\n{stack}",
            style.main_file()
        );
        assert!(
            !stack.contains("bootstrap."),
            "the stack shows the bootstrap's own frames:\n{stack}"
        );
    }
}

fn stream(style: Style) {
    let case = Case::Stream;
    let ns = start(style, case);
    let marker = ns.dir().join("stream-marker");
    let req = request(style, case, "GET", b"").header("x-conf-marker", marker.to_str().unwrap());
    let mut c = ns.client();
    c.send(&req.to_bytes());
    // The function writes `first`, then waits for the marker before it writes `second` and ends.
    // The marker is only created once `first` has arrived here: the first chunk must reach the
    // client while the function is still running.
    let mut seen = Vec::new();
    let mut marked = false;
    let resp = c.read_response_with(false, &mut |piece| {
        seen.extend_from_slice(piece);
        if !marked && seen.starts_with(b"first\n") {
            fs::write(&marker, b"go").unwrap();
            marked = true;
        }
    });
    assert_eq!(resp.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&seen),
        "first\nsecond\n",
        "the function saw the marker only after the client got the first chunk"
    );
    assert_eq!(resp.framing, Framing::Chunked, "{:?}", resp.headers);
}

fn big_body(style: Style) {
    let case = Case::BigBody;
    let ns = start(style, case);
    let len = 32 * MIB;
    let seed = 0x5eed_0032;
    let mut c = ns.client();
    let head = request(style, case, "POST", b"")
        .header("Content-Length", len.to_string())
        .head_bytes();
    c.send(&head);
    let mut w = c.stream().try_clone().unwrap();
    let writer = thread::spawn(move || Pattern::new(seed).write_to(&mut w, len).unwrap());
    let mut check = PatternCheck::new(seed);
    let started = Instant::now();
    let resp = c.read_response_with(false, &mut |b| check.feed(b));
    writer.join().unwrap();
    assert_ok(style, &resp);
    assert_eq!(check.received, u64::try_from(len).unwrap(), "bytes echoed");
    assert_eq!(check.first_mismatch, None, "first wrong byte of the echo");
    eprintln!(
        "{}: 32 MiB up and back in {:?}",
        style.name(),
        started.elapsed()
    );
}

fn concurrency(style: Style) {
    let case = Case::Concurrency;
    let ns = start(style, case);
    let port = ns.port();
    // Four requests at once; each waits in the function until all four have arrived in the
    // same process. They can only all succeed if one worker runs them concurrently.
    let calls: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                let mut c = Client::connect(port);
                c.request(&request(style, case, "POST", b"x"))
            })
        })
        .collect();
    let answers: Vec<Value> = calls
        .into_iter()
        .map(|t| {
            let resp = t.join().unwrap();
            assert_ok(style, &resp);
            resp.json()
        })
        .collect();
    for a in &answers {
        assert_eq!(
            a["reached"], true,
            "all four were in the function at once: {a}"
        );
        assert_eq!(a["pid"], answers[0]["pid"], "one worker: {answers:?}");
    }
}

fn env(style: Style) {
    let case = Case::Env;
    let ns = start(style, case);
    let resp = ns.send(&request(style, case, "POST", b"x"));
    assert_ok(style, &resp);
    let v = resp.json();
    assert_eq!(v["env"], "conf-value", "{v}");
    let cwd = PathBuf::from(v["cwd"].as_str().unwrap());
    let code_dir = fixture_dir(&format!("conformance/{}", style.name()));
    assert_eq!(
        cwd.canonicalize().unwrap(),
        code_dir.canonicalize().unwrap(),
        "the worker's cwd is its code directory"
    );
}

fn timeout(style: Style) {
    let case = Case::Timeout;
    let ns = start(style, case);
    let started = Instant::now();
    let resp =
        ns.send(&request(style, case, "POST", b"sleep").header("x-fc-function-timeout", "1"));
    let took = started.elapsed();
    assert_function_error(&resp, "FunctionTimeout");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "the deadline of 1 s was kept: {took:?}"
    );
    // The function keeps serving.
    let resp = ns.send(&request(style, case, "POST", b"quick"));
    assert_ok(style, &resp);
    assert_eq!(resp.text(), "quick");
}

/// Broken code: every request fails with a function error whose message names the file (and
/// each of `needles`, e.g. the line), and the runtime keeps serving its other functions.
fn bad_input(style: Style, case: Case, file: &str, export: &str, needles: &[&str]) {
    let mut bad = profile(style, case);
    bad["url"] = json!(fixture_dir(&format!("conformance/{}", style.bad_dir())));
    let filename = format!("{file}.{}", style.ext());
    if style == Style::Aworker {
        bad["sourceFile"] = json!(filename);
    } else {
        bad["handler"] = json!(format!("{file}.{export}"));
        bad.as_object_mut().unwrap().remove("initializer");
    }
    let good = profile(style, Case::Echo);
    let ns = launch(style, vec![bad, good]);
    for _ in 0..2 {
        let resp = ns.send(&request(style, case, "POST", b"x"));
        assert_eq!(resp.status, 404, "body: {}", resp.brief());
        assert_eq!(resp.header("x-fc-status"), Some("404"));
        let body = resp.json();
        let message = body["errorMessage"].as_str().unwrap_or_default();
        let wanted_file = if case == Case::MissingFile {
            file.to_owned()
        } else {
            filename.clone()
        };
        assert!(
            message.contains(&wanted_file),
            "the error names {wanted_file}: {body}"
        );
        for needle in needles {
            let needle = if needle.starts_with(':') {
                format!("{filename}{needle}")
            } else {
                (*needle).to_owned()
            };
            assert!(
                message.contains(&needle),
                "the error names {needle}: {body}"
            );
        }
    }
    let resp = ns.send(&request(style, Case::Echo, "POST", b"still here"));
    assert_ok(style, &resp);
    assert_eq!(resp.json()["body"], "still here");
}

/// What a skipped pair checks instead: that the limitation is real and behaves as documented.
fn check_limitation(style: Style, case: Case) {
    match (style, case) {
        (Style::NodeFcEvent | Style::PythonEvent, Case::Status) => {
            let ns = start(style, Case::Echo);
            let resp = ns.send(&request(style, Case::Echo, "POST", b"x"));
            assert_ok(style, &resp);
        }
        (Style::NodeFcEvent | Style::PythonEvent, Case::Stream) => {
            let ns = start(style, Case::Stream);
            let resp = ns.send(&request(style, Case::Stream, "POST", b""));
            assert_ok(style, &resp);
            assert_eq!(resp.text(), "first\nsecond\n");
            assert_eq!(resp.framing, Framing::Length(13), "sent whole");
        }
        (Style::Aworker, Case::MissingFile) => {
            let mut p = profile(style, case);
            p["sourceFile"] = json!("nonexistent.js");
            let exited = Noslate::builder().functions(&json!([p])).run_to_exit();
            assert_eq!(exited.status.code(), Some(2), "stderr: {}", exited.stderr);
            assert!(
                exited.stderr.contains("nonexistent.js"),
                "names the file: {}",
                exited.stderr
            );
        }
        _ => panic!("no limitation check for {style:?}/{case:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Style-specific behaviour beyond the shared cases

fn aworker_fixture(dir: &Path, source: &str) -> Value {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("main.js"), source).unwrap();
    json!({
        "name": "aw",
        "runtime": "aworker",
        "url": dir,
        "sourceFile": "main.js",
        "signature": "t",
        "worker": {"reservationCount": 1, "replicaCountLimit": 1, "maxActivateRequests": 4},
        "resourceLimit": {"memory": 128 << 20}
    })
}

#[test]
fn aworker_uncaught_exception_fails_open_requests_with_its_stack() {
    let dir = common::TempDir::new();
    let p = aworker_fixture(
        dir.path(),
        r"
        function explode() { throw new RangeError('uncaught on purpose'); }
        addEventListener('fetch', (event) => {
          if (event.request.url.endsWith('/boom')) {
            setTimeout(explode, 10); // escapes every handler
            event.respondWith(new Promise(() => {}));
            return;
          }
          event.respondWith(new Response('pid ' + process.pid));
        });
        ",
    );
    let ns = Noslate::start(&json!([p]));
    let resp = ns.send(&Req::new("GET", "/boom").header("x-noslate-function", "aw"));
    let body = assert_function_error(&resp, "RangeError");
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("uncaught on purpose"),
        "{body}"
    );
    assert!(stack_text(&body).contains("explode"), "{body}");
    // The worker exits after reporting; once the runtime has seen that, it starts another.
    common::wait_until(Duration::from_secs(10), "the worker exited", || {
        ns.stderr_lines()
            .iter()
            .any(|l| l.contains("w=aw-1") && l.contains("exited"))
    });
    let resp = ns.send(&Req::new("GET", "/ok").header("x-noslate-function", "aw"));
    assert_eq!(resp.status, 200, "{}", resp.brief());
}

#[test]
fn aworker_without_respond_with_is_a_function_error() {
    let dir = common::TempDir::new();
    let p = aworker_fixture(dir.path(), "addEventListener('fetch', () => {});");
    let ns = Noslate::start(&json!([p]));
    let resp = ns.send(&Req::new("GET", "/").header("x-noslate-function", "aw"));
    let body = assert_function_error(&resp, "Error");
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("respondWith"),
        "{body}"
    );
}

#[test]
fn aworker_request_signal_aborts_on_timeout_and_wait_until_runs_on() {
    let dir = common::TempDir::new();
    let marker = dir.path().join("aborted");
    let after = dir.path().join("after");
    let source = format!(
        r"
        const fs = require('fs');
        addEventListener('fetch', (event) => {{
          const request = event.request;
          if (request.url.endsWith('/hang')) {{
            request.signal.addEventListener('abort', () => fs.writeFileSync({marker:?}, 'x'));
            event.respondWith(new Promise(() => {{}}));
            return;
          }}
          event.waitUntil(new Promise((resolve) => setTimeout(resolve, 100))
            .then(() => fs.writeFileSync({after:?}, 'x')));
          event.respondWith(new Response('now'));
        }});
        "
    );
    let p = aworker_fixture(&dir.path().join("code"), &source);
    let ns = Noslate::start(&json!([p]));
    let resp = ns.send(
        &Req::new("GET", "/hang")
            .header("x-noslate-function", "aw")
            .header("x-fc-function-timeout", "1"),
    );
    assert_function_error(&resp, "FunctionTimeout");
    common::wait_until(Duration::from_secs(5), "request.signal aborted", || {
        marker.exists()
    });
    let resp = ns.send(&Req::new("GET", "/bg").header("x-noslate-function", "aw"));
    assert_eq!(resp.text(), "now");
    assert!(!after.exists(), "waitUntil work runs after the response");
    common::wait_until(Duration::from_secs(5), "waitUntil work done", || {
        after.exists()
    });
}

#[test]
fn fc_event_callback_error_and_thrown_string_are_function_errors() {
    let dir = common::TempDir::new();
    fs::write(
        dir.path().join("index.js"),
        r"
        exports.cb = (event, context, callback) => callback(new TypeError('via callback'));
        exports.str = async () => { throw 'just a string'; };
        exports.buf = (event, context, callback) => callback(null, Buffer.from([0, 1, 2, 255]));
        ",
    )
    .unwrap();
    let mk = |name: &str| {
        json!({
            "name": name, "runtime": "nodejs", "handlerStyle": "fc-event", "url": dir.path(),
            "handler": format!("index.{name}"), "signature": "t",
            "worker": {"reservationCount": 0, "replicaCountLimit": 1},
            "resourceLimit": {"memory": 128 << 20}
        })
    };
    let ns = Noslate::start(&json!([mk("cb"), mk("str"), mk("buf")]));
    let resp = ns.send(&Req::new("POST", "/invoke/cb").body(b"x"));
    assert_function_error(&resp, "TypeError");
    let resp = ns.send(&Req::new("POST", "/invoke/str").body(b"x"));
    let body = assert_function_error(&resp, "Error");
    assert_eq!(body["errorMessage"], "just a string");
    let resp = ns.send(&Req::new("POST", "/invoke/buf").body(b"x"));
    assert_eq!(resp.body, [0, 1, 2, 255]);
}

#[test]
fn python_wsgi_environ_and_input_follow_pep_3333() {
    require_python();
    let dir = common::TempDir::new();
    fs::write(
        dir.path().join("app.py"),
        r#"
import json

def handler(environ, start_response):
    inp = environ["wsgi.input"]
    first = inp.readline()
    rest = [line for line in inp]
    keys = sorted(k for k in environ if k.startswith("HTTP_") or k in ("CONTENT_TYPE", "CONTENT_LENGTH"))
    start_response("202 Accepted", [("Content-Type", "application/json")])
    return [json.dumps({
        "first": first.decode(), "rest": [l.decode() for l in rest], "keys": keys,
        "multi": environ.get("HTTP_X_MULTI"), "path": environ["PATH_INFO"],
        "version": list(environ["wsgi.version"]), "uri": environ["fc.request_uri"],
        "server": [environ["SERVER_NAME"], environ["SERVER_PORT"]],
    }).encode()]
"#,
    )
    .unwrap();
    let p = json!({
        "name": "wsgi", "runtime": "python3", "handlerStyle": "fc-http", "url": dir.path(),
        "handler": "app.handler", "signature": "t",
        "worker": {"reservationCount": 1, "replicaCountLimit": 1},
        "resourceLimit": {"memory": 128 << 20}
    });
    let ns = Noslate::start(&json!([p]));
    let resp = ns.send(
        &Req::new("PUT", "/a%20b/c?x=1")
            .header("x-noslate-function", "wsgi")
            .header("Host", "example.com:8080")
            .header("Content-Type", "text/plain")
            .header("X-Multi", "1")
            .header("X-Multi", "2")
            .body(b"line one\nline two\nline three"),
    );
    assert_eq!(resp.status, 202, "{}", resp.brief());
    let v = resp.json();
    assert_eq!(v["first"], "line one\n");
    assert_eq!(v["rest"], json!(["line two\n", "line three"]));
    assert_eq!(v["multi"], "1,2");
    assert_eq!(v["path"], "/a b/c");
    assert_eq!(v["version"], json!([1, 0]));
    assert_eq!(v["uri"], "/a%20b/c?x=1");
    assert_eq!(v["server"], json!(["example.com", "8080"]));
    let keys: Vec<&str> = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert!(
        keys.contains(&"CONTENT_TYPE") && keys.contains(&"CONTENT_LENGTH"),
        "{keys:?}"
    );
    assert!(!keys.contains(&"HTTP_CONTENT_TYPE"), "{keys:?}");
}

#[test]
fn python_runaway_handler_is_interrupted_on_timeout() {
    require_python();
    let dir = common::TempDir::new();
    fs::write(
        dir.path().join("index.py"),
        r#"
import os, time
state = {"spins": 0}

def handler(event, context):
    if event == b"spin":
        while True:          # never yields, never reads: only an interruption stops it
            state["spins"] += 1
    return {"pid": os.getpid(), "threads": __import__("threading").active_count()}
"#,
    )
    .unwrap();
    let p = json!({
        "name": "spin", "runtime": "python3", "url": dir.path(), "handler": "index.handler",
        "signature": "t", "worker": {"reservationCount": 1, "replicaCountLimit": 1},
        "resourceLimit": {"memory": 128 << 20}
    });
    let ns = Noslate::start(&json!([p]));
    let resp = ns.send(
        &Req::new("POST", "/invoke/spin")
            .header("x-fc-function-timeout", "1")
            .body(b"spin"),
    );
    assert_function_error(&resp, "FunctionTimeout");
    let resp = ns.send(&Req::new("POST", "/invoke/spin").body(b"ok"));
    assert_eq!(resp.status, 200, "{}", resp.brief());
    let first = resp.json();
    // The spinning thread stopped: the worker's CPU time stops growing.
    let pid = first["pid"].as_i64().unwrap();
    let cpu = |pid: i64| -> u64 {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    let before = cpu(pid);
    thread::sleep(Duration::from_millis(500));
    let after = cpu(pid);
    assert!(
        after - before < 20,
        "the worker still burns CPU after the timeout ({} ticks in 0.5 s)",
        after - before
    );
}

// ---------------------------------------------------------------------------------------------
// The bootstraps on their own: partial reads and writes, credit

/// The credit each stream direction starts with.
const WINDOW: usize = wire::INITIAL_WINDOW as usize;

/// A frame the worker sent.
#[derive(Debug)]
struct Frame {
    kind: Kind,
    stream: u32,
    end: bool,
    payload: Vec<u8>,
}

/// A bootstrap started by hand, as the runtime would: pipes on fds 3 and 4, the code directory
/// as cwd, only the documented environment.
struct Bare {
    child: Child,
    to: File,
    frames: mpsc::Receiver<Frame>,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array we own; we take ownership of both.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Bare {
    fn start(program: &str, script: &str, code_dir: &Path, env: &[(&str, &str)]) -> Bare {
        use std::os::fd::AsRawFd;
        let (worker_in, to) = pipe();
        let (from, worker_out) = pipe();
        let (in_fd, out_fd) = (worker_in.as_raw_fd(), worker_out.as_raw_fd());
        let mut cmd = Command::new(program);
        cmd.arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("src/runtime")
                .join(script),
        )
        .current_dir(code_dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NOSLATE_IPC_IN", "3")
        .env("NOSLATE_IPC_OUT", "4")
        .env("NOSLATE_WORKER_ID", "bare-1")
        .env("NOSLATE_CODE_DIR", code_dir)
        .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec. The pipe
        // ends are first moved above fd 9 (either may be 3 or 4 itself), then dup2 puts them on
        // 3 and 4 without FD_CLOEXEC, so exactly those survive the exec.
        unsafe {
            cmd.pre_exec(move || {
                let high_in = libc::fcntl(in_fd, libc::F_DUPFD_CLOEXEC, 10);
                let high_out = libc::fcntl(out_fd, libc::F_DUPFD_CLOEXEC, 10);
                if high_in < 0
                    || high_out < 0
                    || libc::dup2(high_in, 3) < 0
                    || libc::dup2(high_out, 4) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn the bootstrap");
        drop(worker_in);
        drop(worker_out);
        let (tx, frames) = mpsc::channel();
        let mut from = File::from(from);
        thread::spawn(move || {
            let mut decoder = FrameDecoder::new(Direction::ToRuntime);
            while matches!(decoder.read_from(&mut from), Ok(n) if n > 0) {
                loop {
                    let f = match decoder.next_frame() {
                        Ok(Some(f)) => Frame {
                            kind: f.header.kind,
                            stream: f.header.stream,
                            end: f.is_end(),
                            payload: f.payload.to_vec(),
                        },
                        Ok(None) => break,
                        Err(err) => {
                            eprintln!("the worker broke the framing: {err}");
                            return;
                        }
                    };
                    if tx.send(f).is_err() {
                        return;
                    }
                }
            }
        });
        Bare {
            child,
            to: File::from(to),
            frames,
        }
    }

    /// Writes `bytes` one byte per write, pausing now and then so the worker really reads
    /// partial headers and payloads.
    fn trickle(&mut self, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            self.to.write_all(std::slice::from_ref(b)).unwrap();
            if i % 7 == 3 {
                thread::sleep(Duration::from_micros(300));
            }
        }
    }

    fn next(&self) -> Frame {
        self.frames
            .recv_timeout(Duration::from_secs(10))
            .expect("a frame from the worker within 10 s")
    }

    /// The next frame within `wait`, if any.
    fn maybe_next(&self, wait: Duration) -> Option<Frame> {
        self.frames.recv_timeout(wait).ok()
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An INIT frame.
/// INIT; with `response_window`, the response-body credit it grants each stream.
fn init_frame(handler: &str, code_dir: &Path, response_window: Option<u32>) -> Vec<u8> {
    let mut init = json!({
        "function": {"name": "bare", "handler": handler, "codeDir": code_dir,
                     "memory": 536870912, "timeoutMs": 10000},
        "requestId": "init-1",
        "context": {"requestId": "init-1", "function": {"name": "bare"}},
        "timeoutMs": 10000
    });
    if let Some(window) = response_window {
        init["responseWindow"] = json!(window);
    }
    let mut out = Vec::new();
    wire::put_init(&mut out, &init).unwrap();
    out
}

/// A REQUEST_HEAD frame opening `stream`, with a body to follow.
fn head_frame(stream: u32, request_id: &str) -> Vec<u8> {
    let head = RequestHead {
        kind: "event".into(),
        method: "POST".into(),
        url: "/invoke".into(),
        headers: HeaderList::from_iter([("x-a", "1")]).into(),
        request_id: request_id.into(),
        deadline: Some(0),
        timeout_ms: Some(10000),
        context: json!({"requestId": request_id, "function": {"name": "bare"}}),
        ..RequestHead::default()
    };
    let mut out = Vec::new();
    wire::put_request_head(&mut out, stream, false, &head).unwrap();
    out
}

/// A REQUEST_BODY frame.
fn body_frame(stream: u32, end: bool, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    wire::put_request_body(&mut out, stream, end, data);
    out
}

/// READY, INIT (trickled) and INIT_DONE. `handler` is `index.<case>`; aworker gets
/// `main.js` with the case in `CONF_CASE`.
fn bare_ready(program: &str, script: &str, style: Style, handler: &str) -> Bare {
    bare_ready_with_windows(program, script, style, handler, None).0
}

/// [`bare_ready`] with INIT granting `response_window`; also returns the request window the
/// worker's INIT_DONE announced.
fn bare_ready_with_windows(
    program: &str,
    script: &str,
    style: Style,
    handler: &str,
    response_window: Option<u32>,
) -> (Bare, u32) {
    let code_dir = fixture_dir(&format!("conformance/{}", style.name()));
    let mut env = vec![("NOSLATE_HANDLER", handler)];
    env.push(("NOSLATE_RUNTIME", style.runtime()));
    if let Some(s) = style.handler_style() {
        env.push(("NOSLATE_HANDLER_STYLE", s));
    }
    if style == Style::Aworker {
        env.push(("NOSLATE_SOURCE_FILE", "main.js"));
        env.push(("CONF_CASE", handler.trim_start_matches("index.")));
    }
    let mut w = Bare::start(program, script, &code_dir, &env);
    let ready = w.next();
    assert_eq!(ready.kind, Kind::Ready, "{ready:?}");
    w.trickle(&init_frame(handler, &code_dir, response_window));
    let done = w.next();
    assert_eq!(
        done.kind,
        Kind::InitDone,
        "{done:?}: {}",
        String::from_utf8_lossy(&done.payload)
    );
    let announced = wire::InitDone::parse(&done.payload)
        .unwrap_or_else(|e| panic!("INIT_DONE {}: {e}", String::from_utf8_lossy(&done.payload)));
    (w, announced.request_window)
}

/// The head a RESPONSE_HEAD or COMPACT_RESPONSE_HEAD frame carries; `None` for other kinds.
fn response_head(f: &Frame) -> Option<ResponseHead> {
    let parsed = match f.kind {
        Kind::ResponseHead => ResponseHead::parse(&f.payload),
        Kind::CompactResponseHead => ResponseHead::parse_compact(&f.payload),
        _ => return None,
    };
    Some(parsed.unwrap_or_else(|e| panic!("{:?}: {e}", f.kind)))
}

/// Two interleaved streams, every byte in its own write: both echo answers come back whole.
fn trickled_streams(program: &str, script: &str, style: Style) {
    let mut w = bare_ready(program, script, style, "index.echo");
    let mut bytes = head_frame(1, "r-1");
    bytes.extend(head_frame(2, "r-2"));
    bytes.extend(body_frame(1, false, b"one, "));
    bytes.extend(body_frame(2, false, b"two, "));
    bytes.extend(body_frame(2, true, b"end two"));
    bytes.extend(body_frame(1, true, b"end one"));
    w.trickle(&bytes);
    let mut bodies = [Vec::new(), Vec::new()];
    let mut ended = [false, false];
    while !(ended[0] && ended[1]) {
        let f = w.next();
        let i = usize::try_from(f.stream).unwrap() - 1;
        match f.kind {
            Kind::ResponseHead | Kind::CompactResponseHead => {
                let head = response_head(&f).unwrap();
                assert_eq!(head.status, 200, "{head:?}");
            }
            Kind::ResponseBody => bodies[i].extend_from_slice(&f.payload),
            other => panic!("unexpected frame kind {other:?}: {f:?}"),
        }
        ended[i] |= f.end;
    }
    for (i, want) in ["one, end one", "two, end two"].iter().enumerate() {
        let v: Value = serde_json::from_slice(&bodies[i]).unwrap();
        assert_eq!(v["body"], *want, "{v}");
        assert_eq!(v["requestId"], format!("r-{}", i + 1), "{v}");
    }
}

/// The worker announces the request window it grants (`request_window`), takes at most that
/// much request body before it returns credit as it reads, and sends at most the credit we
/// gave it of response body: INIT's `responseWindow` (`response_window`, the default
/// without), then a default window per WINDOW frame. An echo of 3 MiB comes back intact.
fn credit_both_ways(
    program: &str,
    script: &str,
    style: Style,
    response_window: Option<u32>,
    request_window: u32,
) {
    let (mut w, announced) =
        bare_ready_with_windows(program, script, style, "index.bigbody", response_window);
    assert_eq!(announced, request_window, "the announced request window");
    let request_window = request_window as usize;
    let len = 3 * MIB + 1234;
    let mut body = vec![0u8; len];
    Pattern::new(7).fill(&mut body);
    w.trickle(&head_frame(1, "c-1"));
    let mut credit = request_window; // request body we may still send
    // Response body the worker may send in all.
    let mut granted = response_window.map_or(WINDOW, |w| w as usize);
    let mut sent = 0;
    let mut received = Vec::new();
    let mut head_seen = false;
    let mut ended = false;
    while !ended {
        if sent < len && credit > 0 {
            let n = credit.min(len - sent).min(64 * 1024);
            let end = sent + n == len;
            w.to.write_all(&body_frame(1, end, &body[sent..sent + n]))
                .unwrap();
            sent += n;
            credit -= n;
            continue;
        }
        if received.len() == granted {
            // The worker used up its response credit: it must wait for this.
            let mut window = Vec::new();
            wire::put_window(&mut window, 1, wire::INITIAL_WINDOW);
            w.to.write_all(&window).unwrap();
            granted += WINDOW;
        }
        let Some(f) = w.maybe_next(Duration::from_secs(2)) else {
            panic!(
                "the worker went quiet with response credit left ({} of {granted} sent; \
                 {sent} of {len} request bytes sent, {credit} request credit left)",
                received.len()
            );
        };
        match f.kind {
            Kind::WindowToRuntime => {
                credit += wire::window_credit(&f.payload).unwrap() as usize;
                assert!(
                    sent + credit <= len + request_window,
                    "more request credit than body"
                );
            }
            Kind::ResponseHead | Kind::CompactResponseHead => head_seen = true,
            Kind::ResponseBody => {
                received.extend_from_slice(&f.payload);
                assert!(
                    received.len() <= granted,
                    "the worker sent {} bytes with {granted} of credit",
                    received.len()
                );
                ended = f.end;
            }
            other => panic!("unexpected frame kind {other:?}: {f:?}"),
        }
    }
    assert!(head_seen);
    assert_eq!(sent, len);
    assert_eq!(received.len(), len);
    assert!(received == body, "the echoed body differs");
}

#[test]
fn python_bootstrap_reassembles_frames_from_single_byte_writes() {
    require_python();
    trickled_streams("python3", "python/bootstrap.py", Style::PythonEvent);
}

#[test]
fn node_bootstrap_reassembles_frames_from_single_byte_writes() {
    require_node();
    trickled_streams("node", "node/bootstrap.js", Style::NodeFcEvent);
}

/// A context as the runtime's COMPACT_HEAD carries it, written here by hand from
/// docs/PROTOCOL.md "compact head": the function, credentials (bit 0), region (bit 9) and a
/// traceparent (bit 14).
struct HandWrittenContext;

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

impl wire::CompactContext for HandWrittenContext {
    fn put_compact(&self, out: &mut wire::CompactWriter<'_>) {
        out.u32((1 << 0) | (1 << 9) | (1 << 14));
        out.f64(512.0);
        out.f64(10.0);
        out.f64(0.0);
        out.u32(1);
        out.str("bare");
        out.str("index.dump");
        out.str("AK");
        out.str("cn-hangzhou");
        out.str(TRACEPARENT);
    }
}

/// The same head (request id included) twice, on streams `json_stream` and `json_stream + 1`:
/// as REQUEST_HEAD and as COMPACT_HEAD, with `value` as one header's value.
fn head_both_ways(json_stream: u32, value: &str) -> Vec<u8> {
    let headers = vec![
        ("Host".to_owned(), "fc".to_owned()),
        ("X-Value".to_owned(), value.to_owned()),
        ("x-dup".to_owned(), "1".to_owned()),
        ("x-dup".to_owned(), "2".to_owned()),
    ];
    let baggage = vec![("tenant".to_owned(), format!("t-{value}"))];
    let request_id = format!("r-{json_stream}");
    let json_head = RequestHead {
        kind: "http".into(),
        method: "PUT".into(),
        url: "/p/q?x=1".into(),
        headers: HeaderList::from_iter(headers.clone()).into(),
        baggage: Some(baggage.clone().into()),
        request_id: request_id.clone().into(),
        deadline: Some(1_764_371_234_567),
        timeout_ms: Some(10000),
        client_ip: Some("10.1.2.3".into()),
        context: json!({
            "requestId": request_id,
            "credentials": {"accessKeyId": "AK"},
            "function": {"name": "bare", "handler": "index.dump", "memory": 512, "timeout": 10},
            "region": "cn-hangzhou",
            "retryCount": 1,
            "tracing": {"traceparent": TRACEPARENT},
        }),
    };
    let compact_head = RequestHead {
        kind: json_head.kind.clone(),
        method: json_head.method.clone(),
        url: json_head.url.clone(),
        headers: HeaderList::from_iter(headers).into(),
        baggage: Some(baggage.into()),
        request_id: request_id.into(),
        deadline: json_head.deadline,
        timeout_ms: json_head.timeout_ms,
        client_ip: json_head.client_ip.clone(),
        context: HandWrittenContext,
    };
    let mut out = Vec::new();
    wire::put_request_head(&mut out, json_stream, true, &json_head).unwrap();
    wire::put_compact_head(&mut out, json_stream + 1, true, &compact_head).unwrap();
    out
}

/// A Node.js bootstrap started bare on `dir`'s `index.js`, handler `index.<export>` in the
/// Noslate style, and initialized: the worker, and what its READY announced.
fn bare_node_ready(dir: &Path, export: &str) -> (Bare, wire::Ready) {
    let handler = format!("index.{export}");
    let env = [
        ("NOSLATE_HANDLER", handler.as_str()),
        ("NOSLATE_RUNTIME", "nodejs"),
        ("NOSLATE_HANDLER_STYLE", "noslate"),
    ];
    let mut w = Bare::start("node", "node/bootstrap.js", dir, &env);
    let ready = w.next();
    assert_eq!(ready.kind, Kind::Ready, "{ready:?}");
    let announced = wire::Ready::parse(&ready.payload).unwrap();
    w.trickle(&init_frame(&handler, dir, None));
    assert_eq!(w.next().kind, Kind::InitDone);
    (w, announced)
}

#[test]
fn node_bootstrap_asks_for_compact_heads_and_hands_handlers_what_the_json_head_gives() {
    require_node();
    let dir = common::TempDir::new();
    fs::write(
        dir.path().join("index.js"),
        r#"exports.dump = (ctx, req, res) => {
  req.resume();
  const { logger, ...context } = ctx;
  res.end(JSON.stringify({ method: req.method, url: req.url, rawHeaders: req.rawHeaders,
    headers: req.headers, baggage: req.baggage, context }));
};"#,
    )
    .unwrap();
    let (mut w, announced) = bare_node_ready(dir.path(), "dump");
    assert_eq!(announced.compact_head, Some(true), "{announced:?}");
    // "café" (a latin1 byte in a header) makes the second pair's strings not all ASCII.
    let mut bytes = head_both_ways(1, "plain");
    bytes.extend(head_both_ways(3, "caf\u{e9}"));
    w.trickle(&bytes);
    let mut bodies: [Vec<u8>; 4] = Default::default();
    let mut ended = 0;
    while ended < 4 {
        let f = w.next();
        let i = usize::try_from(f.stream).unwrap() - 1;
        match f.kind {
            Kind::ResponseHead | Kind::CompactResponseHead => {}
            Kind::ResponseBody => bodies[i].extend_from_slice(&f.payload),
            other => panic!("{other:?}: {}", String::from_utf8_lossy(&f.payload)),
        }
        ended += usize::from(f.end);
    }
    let seen: Vec<Value> = bodies
        .iter()
        .map(|b| serde_json::from_slice(b).unwrap())
        .collect();
    for (json_view, compact_view, value) in [
        (&seen[0], &seen[1], "plain"),
        (&seen[2], &seen[3], "caf\u{e9}"),
    ] {
        assert_eq!(json_view, compact_view);
        assert_eq!(json_view["headers"]["x-value"], value);
        assert_eq!(json_view["baggage"]["tenant"], format!("t-{value}"));
    }
    let view = &seen[1];
    assert_eq!(view["context"]["requestId"], "r-1");
    assert_eq!(view["method"], "PUT");
    assert_eq!(view["url"], "/p/q?x=1");
    assert_eq!(view["headers"]["x-dup"], "1, 2");
    assert_eq!(view["context"]["credentials"]["accessKeyId"], "AK");
    assert_eq!(view["context"]["credentials"]["securityToken"], Value::Null);
    assert_eq!(view["context"]["function"]["memory"], 512);
    assert_eq!(view["context"]["region"], "cn-hangzhou");
    assert_eq!(view["context"]["retryCount"], 1);
    assert_eq!(view["context"]["tracing"]["traceparent"], TRACEPARENT);
    assert_eq!(view["context"]["clientIP"], "10.1.2.3");
}

/// The Node.js bootstrap sends response heads compact: the status and every field the handler
/// set, in order, names as written, latin1 values byte for byte and repeated values as
/// repeated fields; a head with no fields at all as well. A value that is no longer latin1
/// when the head goes out (its String() changed since it was checked) goes as JSON instead.
#[test]
fn node_bootstrap_sends_response_heads_compact_with_every_field_the_handler_set() {
    require_node();
    let dir = common::TempDir::new();
    fs::write(
        dir.path().join("index.js"),
        r#"exports.head = (ctx, req, res) => {
  req.resume();
  if (req.url === '/bare') { res.statusCode = 204; res.end(); return; }
  if (req.url === '/shifty') {
    let calls = 0;
    res.setHeader('x-shifty', { toString: () => (calls++ === 0 ? 'ok' : '\u0101') });
    res.end();
    return;
  }
  res.setHeader('X-Multi', ['a', 'b']);
  res.writeHead(201, { 'Content-Type': 'text/plain', 'x-latin1': 'caf\u00e9' });
  res.end('body');
};"#,
    )
    .unwrap();
    let (mut w, _) = bare_node_ready(dir.path(), "head");
    let mut bytes = Vec::new();
    for (stream, url) in [(1, "/fields"), (2, "/bare"), (3, "/shifty")] {
        let head = RequestHead {
            kind: "http".into(),
            method: "GET".into(),
            url: url.into(),
            request_id: format!("r-{stream}").into(),
            context: json!({"requestId": format!("r-{stream}"), "function": {"name": "bare"}}),
            ..RequestHead::default()
        };
        wire::put_request_head(&mut bytes, stream, true, &head).unwrap();
    }
    w.trickle(&bytes);
    let mut heads = [None, None, None];
    let mut ended = 0;
    while ended < 3 {
        let f = w.next();
        let i = usize::try_from(f.stream).unwrap() - 1;
        match f.kind {
            Kind::CompactResponseHead if i < 2 => heads[i] = response_head(&f),
            Kind::ResponseHead if i == 2 => heads[i] = response_head(&f),
            Kind::ResponseBody => {}
            other => panic!("{other:?}: {}", String::from_utf8_lossy(&f.payload)),
        }
        ended += usize::from(f.end);
    }
    let fields = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    };
    let [with_fields, bare, shifty] = heads.map(Option::unwrap);
    assert_eq!(with_fields.status, 201);
    assert_eq!(
        with_fields.headers,
        fields(&[
            ("X-Multi", "a"),
            ("X-Multi", "b"),
            ("Content-Type", "text/plain"),
            ("x-latin1", "caf\u{e9}"),
            ("content-length", "4"),
        ])
    );
    assert_eq!(bare.status, 204);
    assert_eq!(bare.headers, fields(&[]));
    assert_eq!(shifty.headers, fields(&[("x-shifty", "\u{101}")]));
}

#[test]
fn node_bootstrap_stops_on_a_compact_head_whose_fields_overrun_or_fall_short_of_it() {
    require_node();
    let dir = common::TempDir::new();
    fs::write(dir.path().join("index.js"), "exports.h = () => {};").unwrap();
    let both = head_both_ways(1, "plain");
    let json_len = wire::HEADER_LEN + u32::from_le_bytes(both[..4].try_into().unwrap()) as usize;
    let good = &both[json_len..];
    // One byte short (the last string runs past the end), and one byte too many.
    let short = {
        let mut frame = good[..good.len() - 1].to_vec();
        let len = u32::try_from(frame.len() - wire::HEADER_LEN).unwrap();
        frame[..4].copy_from_slice(&len.to_le_bytes());
        frame
    };
    let long = {
        let mut frame = good.to_vec();
        frame.push(0);
        let len = u32::try_from(frame.len() - wire::HEADER_LEN).unwrap();
        frame[..4].copy_from_slice(&len.to_le_bytes());
        frame
    };
    // A header count no payload of this size could hold.
    let counted = {
        let mut frame = good.to_vec();
        frame[wire::HEADER_LEN + 4..wire::HEADER_LEN + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        frame
    };
    for bad in [short, long, counted] {
        let (mut w, _) = bare_node_ready(dir.path(), "h");
        w.to.write_all(&bad).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = w.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the worker still runs");
            thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(status.code(), Some(1));
    }
}

#[test]
fn python_bootstrap_keeps_the_credit_windows() {
    require_python();
    // It announces no request window (the default) and honours a granted response window.
    credit_both_ways(
        "python3",
        "python/bootstrap.py",
        Style::PythonWsgi,
        None,
        wire::INITIAL_WINDOW,
    );
    credit_both_ways(
        "python3",
        "python/bootstrap.py",
        Style::PythonWsgi,
        Some(512 * 1024),
        wire::INITIAL_WINDOW,
    );
}

#[test]
fn node_bootstrap_keeps_the_credit_windows_in_every_style() {
    require_node();
    // It announces a 1 MiB request window, and honours the default and a granted response
    // window.
    let node = |style, response_window| {
        credit_both_ways("node", "node/bootstrap.js", style, response_window, 1 << 20);
    };
    node(Style::NodeNoslate, None);
    node(Style::NodeNoslate, Some(512 * 1024));
    node(Style::NodeFcHttp, Some(512 * 1024));
    node(Style::Aworker, Some(512 * 1024));
}
