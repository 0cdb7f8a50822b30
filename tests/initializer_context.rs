//! The initializer's context: FC's environment variables before any call, the latest
//! credentials a platform call brought afterwards (never ones a worker sent), and, for a worker
//! initialized in answer to `/initialize`, that call's request id and its
//! `x-fc-initialization-timeout`. Every hook answer carries `x-fc-status`.

mod common;

use std::thread;

use common::{
    Noslate, RawReader, Req, WAIT, assert_function_error, assert_invoke_ok, fixture_dir, profile,
    require_python, signal, wait_until,
};
use serde_json::{Value, json};

fn initctx(runtime: &str) -> Value {
    let fixture = if runtime == "nodejs" {
        "initctx"
    } else {
        "initctx-python"
    };
    let mut p = profile("initctx", fixture);
    p["runtime"] = json!(runtime);
    p["handlerStyle"] = json!("fc-event");
    p["initializer"] = json!("index.initializer");
    p
}

/// A platform call: FC's request id and the instance's credentials.
fn platform_call(ns: &Noslate, request_id: &str, access_key: &str) -> Value {
    assert_invoke_ok(&ns.invoke(
        b"",
        &[
            ("x-fc-request-id", request_id),
            ("x-fc-access-key-id", access_key),
            ("x-fc-access-key-secret", "secret"),
            ("x-fc-security-token", "token"),
            ("x-fc-region", "cn-hangzhou"),
            ("x-fc-account-id", "1234"),
        ],
    ))
}

/// The same platform call as a gateway forwards it on the admin socket, FC's headers among the
/// function's.
fn forwarded_platform_call(ns: &Noslate, request_id: &str, access_key: &str) -> Value {
    use std::io::Write;
    let headers = json!([
        ["x-fc-request-id", request_id],
        ["x-fc-access-key-id", access_key],
        ["x-fc-access-key-secret", "secret"],
        ["x-fc-security-token", "token"],
        ["x-fc-region", "cn-beijing"],
        ["x-fc-account-id", "1234"],
    ]);
    let req =
        Req::new("POST", "/v1/invoke/initctx").header("x-noslate-headers", headers.to_string());
    let mut sock =
        std::os::unix::net::UnixStream::connect(ns.admin_socket()).expect("admin socket");
    sock.set_read_timeout(Some(WAIT)).expect("timeout");
    sock.write_all(&req.to_bytes()).expect("send");
    let resp = RawReader::new(&mut sock).next(false).expect("an answer");
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    resp.json().expect("the handler answers JSON")
}

/// A call that is not the platform's (no FC request id): it changes nothing the runtime keeps.
fn plain_call(ns: &Noslate) -> Value {
    assert_invoke_ok(&ns.invoke(b"", &[]))
}

/// Kills the worker that answered `answer`, and waits until a call is served by another.
fn replace_worker(ns: &Noslate, answer: &Value) -> Value {
    let pid = answer["pid"].as_i64().expect("the handler says its pid") as i32;
    signal(pid, libc::SIGKILL);
    let mut next = Value::Null;
    wait_until(WAIT, "a new worker serves", || {
        let resp = ns.invoke(b"", &[]);
        if resp.status != 200 {
            return false;
        }
        next = resp.json();
        next["pid"].as_i64() != Some(i64::from(pid))
    });
    next
}

fn assert_env_context_before_any_call(runtime: &str) {
    let ns = Noslate::builder()
        .functions(&json!([initctx(runtime)]))
        .env("FC_REGION", "cn-shenzhen")
        .env("FC_ACCOUNT_ID", "987")
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", "AK-ENV")
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "SK-ENV")
        .env("ALIBABA_CLOUD_SECURITY_TOKEN", "TOKEN-ENV")
        .start();
    let body = plain_call(&ns);
    let init = &body["init"];
    assert_eq!(init["region"], "cn-shenzhen", "{body}");
    assert_eq!(init["accountId"], "987", "{body}");
    assert_eq!(init["credentials"]["accessKeyId"], "AK-ENV", "{body}");
    assert_eq!(init["credentials"]["accessKeySecret"], "SK-ENV", "{body}");
    assert_eq!(init["credentials"]["securityToken"], "TOKEN-ENV", "{body}");
    assert!(
        init["requestId"].as_str().is_some_and(|id| !id.is_empty()),
        "{body}"
    );
}

#[test]
fn node_initializer_context_comes_from_fc_environment_before_any_call() {
    assert_env_context_before_any_call("nodejs");
}

#[test]
fn python_initializer_context_comes_from_fc_environment_before_any_call() {
    require_python();
    assert_env_context_before_any_call("python3");
}

fn assert_rotating_credentials(runtime: &str) {
    let mut p = initctx(runtime);
    // No reserved worker: the first one starts for the first call.
    p["worker"]["reservationCount"] = json!(0);
    let ns = Noslate::start(&json!([p]));

    let first = platform_call(&ns, "call-1", "AK-1");
    assert_eq!(first["invoke"]["credentials"]["accessKeyId"], "AK-1");
    assert_eq!(
        first["init"]["credentials"]["accessKeyId"], "AK-1",
        "{first}"
    );
    assert_eq!(first["init"]["region"], "cn-hangzhou", "{first}");

    // FC rotated the credentials: the call carries the new ones, the initializer ran earlier.
    let second = platform_call(&ns, "call-2", "AK-2");
    assert_eq!(
        second["invoke"]["credentials"]["accessKeyId"], "AK-2",
        "{second}"
    );
    assert_eq!(
        second["init"]["credentials"]["accessKeyId"], "AK-1",
        "{second}"
    );

    // A worker started after them, for a call that is not the platform's, initializes with the
    // latest the platform sent.
    let third = replace_worker(&ns, &second);
    assert_eq!(
        third["init"]["credentials"]["accessKeyId"], "AK-2",
        "{third}"
    );
    assert!(
        third["invoke"]["credentials"]["accessKeyId"].is_null(),
        "{third}"
    );
}

#[test]
fn node_credentials_rotate_between_invocations_and_reach_new_initializers() {
    assert_rotating_credentials("nodejs");
}

#[test]
fn python_credentials_rotate_between_invocations_and_reach_new_initializers() {
    require_python();
    assert_rotating_credentials("python3");
}

#[test]
fn credentials_forwarded_by_a_gateway_reach_new_initializers() {
    let mut p = initctx("nodejs");
    p["worker"]["reservationCount"] = json!(0);
    let ns = Noslate::start(&json!([p]));
    let first = forwarded_platform_call(&ns, "gw-call-1", "AK-GW-1");
    assert_eq!(first["invoke"]["requestId"], "gw-call-1", "{first}");
    assert_eq!(
        first["init"]["credentials"]["accessKeyId"], "AK-GW-1",
        "{first}"
    );
    assert_eq!(first["init"]["region"], "cn-beijing", "{first}");
    let second = forwarded_platform_call(&ns, "gw-call-2", "AK-GW-2");
    assert_eq!(
        second["invoke"]["credentials"]["accessKeyId"], "AK-GW-2",
        "{second}"
    );
    let third = replace_worker(&ns, &second);
    assert_eq!(
        third["init"]["credentials"]["accessKeyId"], "AK-GW-2",
        "{third}"
    );
}

#[test]
fn a_function_cannot_plant_credentials_for_later_initializers() {
    let ns = Noslate::start(&json!([initctx("nodejs")]));
    let genuine = platform_call(&ns, "call-1", "AK-REAL");
    // The function calls the FC port with FC's headers and credentials of its choosing, as an
    // invocation and as a hook.
    let planted = assert_invoke_ok(&ns.invoke(
        json!({"plant": ns.port()}).to_string().as_bytes(),
        &[
            ("x-fc-request-id", "call-2"),
            ("x-fc-access-key-id", "AK-REAL"),
        ],
    ));
    assert!(planted["planted"].is_number(), "{planted}");
    let fresh = replace_worker(&ns, &genuine);
    assert_eq!(
        fresh["init"]["credentials"]["accessKeyId"], "AK-REAL",
        "{fresh}"
    );
    ns.wait_log_count(
        &["ignoring FC credentials sent by the runtime's own workers"],
        1,
    );
}

/// A runtime with one reserved Node.js worker held before its bootstrap until a gate file
/// exists, so that the test decides when the worker becomes ready.
struct Gated {
    ns: Noslate,
    gate: std::path::PathBuf,
}

impl Gated {
    /// `slow_init_ms`: how long the initializer takes once the worker runs.
    fn start(tag: &str, slow_init_ms: u64) -> Gated {
        let gate = std::env::temp_dir().join(format!("noslate-gate-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_file(&gate);
        let mut p = initctx("nodejs");
        let gate_js = fixture_dir("initctx").join("gate.js");
        p["environments"] = json!([
            {"key": "NODE_OPTIONS", "value": format!("--require {}", gate_js.display())},
            {"key": "GATE_FILE", "value": gate.display().to_string()},
            {"key": "SLOW_INIT_MS", "value": slow_init_ms.to_string()},
        ]);
        Gated {
            ns: Noslate::start(&json!([p])),
            gate,
        }
    }

    /// Sends `/initialize` with `headers` (its request id first), opens the gate once the
    /// runtime has taken the call, and returns the answer: the worker is initialized in answer
    /// to that call.
    fn initialize(&self, headers: &[(&str, &str)]) -> common::Response {
        let port = self.ns.port();
        let mut req = Req::new("POST", "/initialize");
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let initialize = thread::spawn(move || common::Client::connect(port).request(&req));
        let request_id = headers.first().map_or("", |(_, v)| *v);
        self.ns
            .wait_stdout(&format!("FC Initialize Start RequestId: {request_id}"));
        std::fs::write(&self.gate, b"go").expect("open the gate");
        initialize.join().expect("initialize thread")
    }
}

impl Drop for Gated {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.gate);
    }
}

#[test]
fn a_worker_initialized_in_answer_to_initialize_runs_in_its_name() {
    let gated = Gated::start("initialize", 0);
    let resp = gated.initialize(&[
        ("x-fc-request-id", "init-42"),
        ("x-fc-access-key-id", "AK-INIT"),
        ("x-fc-region", "cn-qingdao"),
    ]);
    assert_eq!(resp.status, 200, "{}", resp.brief());
    assert_eq!(resp.header("x-fc-status"), Some("200"));
    let body = plain_call(&gated.ns);
    let init = &body["init"];
    assert_eq!(init["requestId"], "init-42", "{body}");
    assert_eq!(init["credentials"]["accessKeyId"], "AK-INIT", "{body}");
    assert_eq!(init["region"], "cn-qingdao", "{body}");
}

#[test]
fn x_fc_initialization_timeout_bounds_the_initializer() {
    // The initializer takes 8 s; the profile allows 10 s, FC 1 s.
    let gated = Gated::start("timeout", 8000);
    let resp = gated.initialize(&[
        ("x-fc-request-id", "init-short"),
        ("x-fc-initialization-timeout", "1"),
    ]);
    assert_eq!(resp.header("x-fc-status"), Some("404"), "{}", resp.brief());
    let body = assert_function_error(&resp, "InitializationTimeout");
    let message = body["errorMessage"].as_str().unwrap_or_default();
    assert!(
        message.contains("x-fc-initialization-timeout (1000 ms)"),
        "{message}"
    );
}
