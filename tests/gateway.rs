//! The user's own gateway (`gateway.*`, Noslate's `server.js`) as a child the runtime
//! supervises: it gets the FC port and the runtime's places in its environment and serves the
//! port; the runtime's own HTTP listener moves to loopback or is off; a gateway that dies is
//! restarted with back-off and counted; one that cannot start is reported with its stderr tail
//! while the admin socket keeps answering; SIGTERM stops it first, lets a request through it
//! finish, and the runtime exits 0 after it; one that ignores SIGTERM is killed after its grace;
//! its output reaches the runtime's, prefixed; workers stay refused on the admin socket that the
//! gateway uses; with `--port 0` the gateway is given a free port, not 0. The fixture gateways
//! use Node's `http` only.

mod common;

use common::*;
use serde_json::{Value, json};
use std::thread;

/// A TCP port nobody listens on right now (for the FC port the gateway binds).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn gateway_script(name: &str) -> String {
    fixture_dir("gateway")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// The runtime with the echo function and a gateway running `script` under `extra` config
/// keys, on `--port 0`; started once the gateway is (`[gateway] ... listening` on stdout, or `ready` on
/// stderr when given).
fn start(script: &str, extra: Value, ready: Option<&str>) -> Noslate {
    let mut gateway = json!({ "command": "node", "args": [gateway_script(script)] });
    for (key, value) in extra.as_object().expect("an object") {
        gateway[key] = value.clone();
    }
    let ns = Noslate::builder()
        .functions(&json!([profile("echo", "echo")]))
        .config(&json!({ "gateway": gateway, "turf": { "spareWorkers": 0 } }))
        .ready_when(ready.unwrap_or("[gateway pid="))
        .start();
    if ready.is_none() {
        ns.wait_stdout("[gateway] gateway listening on");
    }
    ns
}

/// `noslate stats`' `gateway` object.
fn gateway_stats(ns: &Noslate) -> Value {
    let (ok, out, err) = ns.cli(&["stats"]);
    assert!(ok, "noslate stats: {err}");
    let stats: Value = serde_json::from_str(&out).expect("stats JSON");
    stats["gateway"].clone()
}

/// `GET /env` on the gateway: the environment it was started with.
fn gateway_env(ns: &Noslate) -> Value {
    let resp = ns.send(&Req::new("GET", "/env"));
    assert_eq!(resp.status, 200, "{}", resp.brief());
    resp.json()
}

#[test]
fn the_gateway_gets_its_environment_serves_the_fc_port_and_reaches_functions() {
    let ns = start(
        "server.js",
        json!({ "env": { "GATEWAY_GREETING": "hi", "SERVER_PORT": "7" }, "sdkPath": "/opt/no-sdk-yet" }),
        None,
    );
    // Started with `--port 0`: the gateway is told the free port the runtime picked for it.
    assert_ne!(ns.port(), 0, "the runtime logs the gateway's FC port");
    let env = gateway_env(&ns);
    let port = ns.port().to_string();
    // gateway.env wins over what the runtime sets.
    assert_eq!(env["SERVER_PORT"], "7", "{env}");
    for name in ["PORT", "FC_SERVER_PORT", "FC_CUSTOM_LISTEN_PORT"] {
        assert_eq!(env[name], port.as_str(), "{name}: {env}");
    }
    let work = ns.dir().join("work");
    assert_eq!(env["NOSLATE_PATH"], "/opt/no-sdk-yet");
    assert_eq!(env["NOSLATE_WORKDIR"], work.to_string_lossy().as_ref());
    assert_eq!(
        env["NOSLATE_SOCKET"],
        work.join("noslated.sock").to_string_lossy().as_ref()
    );
    assert_eq!(
        env["NOSLATE_LOGDIR"],
        ns.dir().join("logs").to_string_lossy().as_ref()
    );
    assert_eq!(env["GATEWAY_GREETING"], "hi");
    assert!(env.get("NOSLATE_RUNTIME_PORT").is_none(), "{env}");

    // A request through the gateway reaches the function over the admin socket.
    let resp = ns.send(&Req::new("POST", "/invoke/echo").body(b"through the gateway"));
    assert_eq!(resp.status, 200, "{}", resp.brief());
    assert_eq!(resp.json()["body"], "through the gateway");

    // The runtime's own HTTP listener is off; the gateway's output is the runtime's, prefixed.
    assert_eq!(ns.log_count(&["not listening on HTTP"]), 1);
    assert_eq!(ns.log_count(&["listening on 0.0.0.0"]), 0);
    wait_until(WAIT, "the gateway's stderr line is relayed", || {
        ns.log_count(&["[gateway] gateway stderr hello from"]) == 1
    });
    let stats = gateway_stats(&ns);
    assert_eq!(stats["state"], "running", "{stats}");
    assert_eq!(stats["restarts"], 0, "{stats}");
    assert!(stats["command"].as_str().unwrap().starts_with("node "));
}

#[test]
fn the_runtime_port_moves_the_runtimes_listener_to_loopback() {
    let ns = start(
        "server.js",
        json!({ "runtimePort": 0 }),
        Some("(gateway.runtimePort); the gateway serves the FC port"),
    );
    ns.wait_stdout("[gateway] gateway listening on");
    let line = ns
        .stderr_lines()
        .into_iter()
        .find(|l| l.contains("listening on 127.0.0.1:"))
        .expect("the runtime's listening line");
    let runtime_port: u16 = line
        .split("listening on 127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    assert_ne!(runtime_port, ns.port());
    let env = gateway_env(&ns);
    assert_eq!(env["NOSLATE_RUNTIME_PORT"], runtime_port.to_string());
    // The runtime serves its FC routes there (the gateway's FC port is the gateway's).
    let resp = Client::connect(runtime_port).request(
        &Req::new("POST", "/invoke")
            .header("x-noslate-function", "echo")
            .body(b"direct"),
    );
    assert_eq!(resp.status, 200, "{}", resp.brief());
    assert_eq!(resp.json()["body"], "direct");
    // FC's hooks forwarded by the gateway are honoured: it is not one of the workers, whose
    // hooks the runtime refuses.
    let resp = ns.send(&Req::new("GET", "/runtime/pre-freeze"));
    assert_eq!(resp.status, 200, "{}", resp.brief());
    assert_eq!(resp.json()["status"], "ok", "{}", resp.brief());
    assert_eq!(ns.log_count(&["refusing a lifecycle hook"]), 0);
}

#[test]
fn a_killed_gateway_is_restarted_and_its_restart_counted() {
    let ns = start("server.js", json!({}), None);
    let first = gateway_stats(&ns);
    let pid = i32::try_from(first["pid"].as_i64().expect("a pid")).unwrap();
    signal(pid, libc::SIGKILL);
    let mut stats = Value::Null;
    wait_until(WAIT, "the gateway is restarted", || {
        stats = gateway_stats(&ns);
        stats["restarts"] == 1 && stats["state"] == "running"
    });
    assert_ne!(stats["pid"], first["pid"], "{stats}");
    assert_eq!(stats["lastFailure"]["reason"], "signal SIGKILL", "{stats}");
    assert!(
        ns.log_count(&[
            "[gateway pid=",
            "exited with signal SIGKILL",
            "restarting in"
        ]) >= 1
    );
    // The new one serves the FC port.
    wait_until(WAIT, "the restarted gateway listens", || {
        ns.stdout_lines()
            .iter()
            .filter(|l| l.contains("[gateway] gateway listening on"))
            .count()
            == 2
    });
    let resp = ns.send(&Req::new("POST", "/invoke/echo").body(b"again"));
    assert_eq!(resp.status, 200, "{}", resp.brief());
    assert!(!is_alive(pid), "the killed gateway was reaped");
}

#[test]
fn a_missing_gateway_command_is_reported_and_retried_while_the_admin_socket_answers() {
    let ns = Noslate::builder()
        .functions(&json!([profile("echo", "echo")]))
        .config(&json!({ "gateway": { "command": "/nonexistent/gateway-server" } }))
        .port(free_port())
        .ready_when("not listening on HTTP")
        .start();
    wait_until(WAIT, "a second failed start (a retry)", || {
        ns.log_count(&[
            "[gateway] cannot execute /nonexistent/gateway-server",
            "restarting in",
        ]) >= 2
    });
    let stats = gateway_stats(&ns);
    assert_eq!(stats["state"], "backoff", "{stats}");
    assert_eq!(stats["pid"], Value::Null, "{stats}");
    let reason = stats["lastFailure"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("cannot execute /nonexistent/gateway-server: ")
            && reason.contains("No such file"),
        "{stats}"
    );
    let (ok, out, err) = ns.cli(&["ps", "--json"]);
    assert!(ok, "noslate ps: {err}");
    assert!(out.contains("\"echo\""), "{out}");
}

#[test]
fn a_gateway_that_exits_at_once_is_reported_with_its_stderr_tail() {
    let ns = start("fail_at_once.js", json!({}), Some("[gateway pid="));
    let mut stats = Value::Null;
    wait_until(WAIT, "the gateway was started again after exiting", || {
        stats = gateway_stats(&ns);
        stats["restarts"].as_u64().unwrap_or(0) >= 1 && !stats["lastFailure"].is_null()
    });
    let failure = &stats["lastFailure"];
    assert_eq!(failure["reason"], "exit code 3", "{stats}");
    let tail = failure["stderrTail"].as_str().unwrap_or_default();
    assert!(
        tail.contains("gateway: cannot read /code/settings.json: ENOENT")
            && tail.ends_with("gateway: giving up"),
        "{stats}"
    );
    assert!(
        ns.log_count(&[
            "exited with exit code 3",
            "restarting in",
            "stderr tail: \"gateway: cannot read /code/settings.json"
        ]) >= 1
    );
    let (ok, _, err) = ns.cli(&["ps"]);
    assert!(ok, "noslate ps: {err}");
}

#[test]
fn sigterm_lets_a_request_through_the_gateway_finish_then_the_runtime_exits_zero() {
    let mut ns = start("server.js", json!({}), None);
    let port = ns.port();
    let slow = thread::spawn(move || {
        Client::connect(port).request(
            &Req::new("POST", "/invoke/echo")
                .header("x-echo-delay", "1500")
                .body(b"in flight"),
        )
    });
    ns.wait_stdout("FC Invoke Start");
    let gateway = i32::try_from(gateway_stats(&ns)["pid"].as_i64().expect("a pid")).unwrap();
    signal(ns.pid(), libc::SIGTERM);
    let resp = slow.join().expect("the client thread");
    assert_eq!(resp.status, 200, "{}", resp.brief());
    assert_eq!(resp.json()["body"], "in flight");
    let status = ns.wait_exit();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(!is_alive(gateway), "the gateway is gone");
    let out = ns.stdout_lines();
    let closed = out
        .iter()
        .position(|l| l == "[gateway] gateway closed: exiting");
    assert!(closed.is_some(), "{out:?}");
    let log = ns.stderr_lines();
    let gone = log
        .iter()
        .position(|l| l.contains("[gateway pid=") && l.contains("exited with exit code 0"))
        .expect("the gateway's exit is logged");
    let drained = log
        .iter()
        .position(|l| l.contains("SIGTERM: draining in-flight invocations"))
        .expect("the runtime drains");
    assert!(gone < drained, "the gateway goes first: {log:?}");
}

#[test]
fn a_gateway_ignoring_sigterm_is_killed_after_its_grace_period() {
    let mut ns = start(
        "server.js",
        json!({ "env": { "GATEWAY_IGNORE_SIGTERM": "1" }, "stopGracePeriod": 300 }),
        None,
    );
    let gateway = i32::try_from(gateway_stats(&ns)["pid"].as_i64().expect("a pid")).unwrap();
    signal(ns.pid(), libc::SIGTERM);
    ns.wait_stdout("[gateway] gateway ignoring SIGTERM");
    let status = ns.wait_exit();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(!is_alive(gateway), "the gateway was killed");
    assert_eq!(
        ns.log_count(&[
            "gateway pid=",
            "still running after its grace period",
            "killing"
        ]),
        1
    );
    assert_eq!(
        ns.log_count(&["[gateway pid=", "exited with signal SIGKILL"]),
        1
    );
}

#[test]
fn a_worker_is_refused_the_admin_socket_that_the_gateway_uses() {
    // As root's own user the socket's mode keeps nobody out: only the runtime's check of who
    // connects stands between a worker and the admin routes.
    let ns = Noslate::builder()
        .functions(&json!([
            profile("echo", "echo"),
            profile("probe", "adminprobe")
        ]))
        .config(&json!({
            "gateway": { "command": "node", "args": [gateway_script("server.js")] },
            "turf": { "user": "root", "spareWorkers": 0 },
        }))
        .port(free_port())
        .ready_when("[gateway pid=")
        .start();
    ns.wait_stdout("[gateway] gateway listening on");
    let socket = ns.dir().join("work/noslated.sock");
    let resp = ns.send(
        &Req::new("POST", "/invoke/probe").header("x-admin-socket", socket.to_string_lossy()),
    );
    assert_eq!(resp.status, 200, "through the gateway: {}", resp.brief());
    let report = resp.json();
    let result = report["putFunctions"].as_str().unwrap_or_default();
    assert!(!result.starts_with("ok"), "the worker got in: {report}");
    ns.wait_log_count(&["[admin] refusing a connection from pid"], 1);
    // Both functions are still there, and the gateway still gets through.
    let resp = ns.send(&Req::new("POST", "/invoke/echo").body(b"still here"));
    assert_eq!(resp.status, 200, "{}", resp.brief());
    let (ok, out, _) = ns.cli(&["functions", "get"]);
    assert!(ok && out.contains("\"probe\""), "{out}");
}

/// `start.sh` with `SERVER_PATH` holding `server.js`, the FC port in `FC_SERVER_PORT`, and the
/// rest of its settings in the environment; killed with its group when dropped.
struct StartSh {
    child: std::process::Child,
    /// Removed after the runtime is gone (dropped after `Drop::drop` has killed it).
    _dir: TempDir,
}

impl StartSh {
    fn command(dir: &TempDir, verb: &str, port: u16) -> std::process::Command {
        let server_path = dir.path().join("code");
        std::fs::create_dir_all(&server_path).expect("SERVER_PATH");
        std::fs::copy(
            fixture_dir("gateway").join("server.js"),
            server_path.join("server.js"),
        )
        .expect("server.js");
        let functions = dir.path().join("functions.json");
        std::fs::write(&functions, json!([profile("echo", "echo")]).to_string())
            .expect("functions");
        let mut cmd = std::process::Command::new(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("start.sh"),
        );
        cmd.arg(verb)
            .env("NOSLATE_BIN", binary())
            .env("SERVER_PATH", &server_path)
            .env("NOSLATE_FUNCTIONS", &functions)
            .env("NOSLATE_WORKDIR", dir.path().join("work"))
            .env("FC_SERVER_PORT", port.to_string())
            .env_remove("NOSLATED_CONFIG_PATH")
            .env_remove("FC_CUSTOM_LISTEN_PORT");
        cmd
    }
}

impl Drop for StartSh {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: kill(2) only sends signals, to our own child and its process group.
            unsafe {
                libc::kill(-(self.child.id() as i32), libc::SIGKILL);
            }
            let _ = self.child.wait();
        }
    }
}

#[test]
fn start_sh_runs_server_js_as_the_gateway_of_the_execd_runtime() {
    use std::os::unix::process::CommandExt;
    require_node();
    let dir = TempDir::new();
    let port = free_port();
    let check = StartSh::command(&dir, "check", port)
        .output()
        .expect("start.sh check");
    let said = String::from_utf8_lossy(&check.stderr);
    let script = dir.path().join("code/server.js");
    assert!(check.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "start.sh: gateway: node {} (SERVER_PATH)",
            script.display()
        )),
        "{said}"
    );

    let child = StartSh::command(&dir, "start", port)
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start.sh start");
    let mut run = StartSh { child, _dir: dir };
    let runtime = i32::try_from(run.child.id()).unwrap();
    let mut env = Value::Null;
    wait_until(WAIT, "the gateway serves the FC port", || {
        let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        drop(stream);
        let resp = Client::connect(port).request(&Req::new("GET", "/env"));
        env = resp.json();
        resp.status == 200
    });
    // start.sh exec'd the runtime, which is the gateway's parent.
    let comm = std::fs::read_to_string(format!("/proc/{runtime}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "noslate");
    let gateway = children_of(runtime)
        .into_iter()
        .find(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.contains("server.js"))
        })
        .expect("the gateway is the runtime's child");
    assert!(env["NOSLATE_PATH"].is_string(), "{env}");
    assert_eq!(env["FC_SERVER_PORT"], port.to_string());
    signal(runtime, libc::SIGTERM);
    let mut status = None;
    wait_until(WAIT, "the runtime exits", || {
        status = run.child.try_wait().expect("poll");
        status.is_some()
    });
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    assert!(!is_alive(gateway));
}

/// The runtime with `functions`, and `examples/gateway/server.js` as its gateway on the repo's
/// SDK, with `env`; started once the gateway listens.
fn start_example_gateway(functions: &Value, env: Value) -> Noslate {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let ns = Noslate::builder()
        .functions(functions)
        .config(&json!({
            "gateway": {
                "command": "node",
                "args": [repo.join("examples/gateway/server.js").to_string_lossy()],
                "sdkPath": repo.join("sdk/node").to_string_lossy(),
                "env": env,
            },
            "turf": { "spareWorkers": 0 },
        }))
        .env("NOSLATE_PATH", "")
        .port(free_port())
        .ready_when("[gateway pid=")
        .start();
    ns.wait_stdout("[gateway] gateway listening on");
    ns
}

#[test]
fn the_example_gateway_invokes_functions_through_the_sdk() {
    let ns = start_example_gateway(
        &json!([profile("echo", "echo")]),
        json!({ "GATEWAY_DEFAULT_FUNCTION": "echo" }),
    );
    let resp = ns.send(
        &Req::new("POST", "/invoke/echo")
            .header("x-gateway-test", "passed on")
            .header("x-echo-status", "201")
            .body(b"via the example"),
    );
    assert_eq!(resp.status, 201, "the function's status: {}", resp.brief());
    assert_eq!(resp.header("x-echo"), Some("yes"), "the function's headers");
    assert_eq!(
        resp.header_all("set-cookie").len(),
        2,
        "repeated headers stay"
    );
    let echoed = resp.json();
    assert_eq!(echoed["body"], "via the example");
    assert_eq!(echoed["method"], "POST");
    let headers = echoed["headers"].to_string();
    assert!(
        headers.contains(r#"["x-gateway-test","passed on"]"#),
        "the request's headers reached the function: {headers}"
    );
    // Another path goes to the default function, with its method and URL.
    let resp = ns.send(&Req::new("PUT", "/some/where?x=1").body(b"default"));
    assert_eq!(resp.status, 200, "{}", resp.brief());
    let echoed = resp.json();
    assert_eq!(
        (echoed["method"].as_str(), echoed["url"].as_str()),
        (Some("PUT"), Some("/some/where?x=1")),
        "{echoed}"
    );
    // An unknown function is the runtime's refusal, passed on as a 404 naming it.
    let resp = ns.send(&Req::new("POST", "/invoke/nope").body(b""));
    assert_eq!(resp.status, 404, "{}", resp.brief());
    assert_eq!(
        resp.json()["errorType"],
        "FunctionNotFound",
        "{}",
        resp.brief()
    );
}

#[test]
fn the_seed_pattern_through_the_sdk_streams_both_ways_serves_services_and_drains_on_sigterm() {
    let mut bytes = profile("bytes", "bytes");
    bytes["worker"]["maxActivateRequests"] = json!(4);
    let functions = json!({
        "functions": [profile("echo", "echo"), profile("drip", "drip"), bytes],
        "services": [{"name": "front", "selector": {"functionName": "echo"}}]
    });
    let mut ns = start_example_gateway(&functions, json!({}));

    // 8 MiB up through the gateway and the SDK, piped back by the function as it arrives.
    let size = 8 << 20;
    let mut body = vec![0u8; size];
    Pattern::new(3).fill(&mut body);
    let resp = ns.send(
        &Req::new("POST", "/invoke/bytes")
            .header("x-bytes-mode", "pipe")
            .body(&body),
    );
    assert_eq!(resp.status, 200, "{}", resp.brief());
    let mut check = PatternCheck::new(3);
    check.feed(&resp.body);
    assert_eq!((check.received, check.first_mismatch), (size as u64, None));

    // A service picks its function.
    let resp = ns.send(&Req::new("POST", "/invoke/service/front").body(b"to the service"));
    assert_eq!(resp.status, 200, "{}", resp.brief());
    assert_eq!(resp.json()["body"], "to the service");

    // The function's own error, refused before its head: the SDK's NoslatedError.
    let resp = ns.send(&Req::new("POST", "/invoke/drip").header("x-drip-throw", "1"));
    assert_eq!(resp.status, 502, "{}", resp.brief());
    let err = resp.json();
    assert_eq!(
        (err["errorType"].as_str(), err["code"].as_i64()),
        (Some("NoslatedError"), Some(1))
    );
    assert!(
        err["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("drip was asked to throw"),
        "{err}"
    );

    // SIGTERM while a response streams through the gateway: it is delivered whole, then the
    // gateway, the workers and the runtime leave, and the runtime exits 0.
    use std::io::{Read, Write};
    let mut client = std::net::TcpStream::connect(("127.0.0.1", ns.port())).expect("connect");
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(15)))
        .expect("timeout");
    let req = Req::new("POST", "/invoke/drip")
        .header("x-drip-pieces", "10")
        .header("x-drip-every", "100")
        .header("connection", "close");
    client.write_all(&req.to_bytes()).expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(5).any(|w| w == b"drip\n") {
        let n = client.read(&mut buf).expect("the first piece");
        assert!(n > 0, "closed before the first piece");
        got.extend_from_slice(&buf[..n]);
    }
    signal(ns.pid(), libc::SIGTERM);
    client
        .read_to_end(&mut got)
        .expect("the rest of the stream");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(text.matches("drip\n").count(), 10, "every piece: {text}");
    assert!(
        text.ends_with("0\r\n\r\n"),
        "a complete chunked body: {text}"
    );
    let status = ns.wait_exit();
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn check_reports_the_gateway_and_a_program_that_cannot_be_found() {
    let dir = TempDir::new();
    let functions = dir.path().join("functions.json");
    std::fs::write(&functions, json!([profile("echo", "echo")]).to_string()).expect("write");
    let check = |gateway: &[&str]| {
        let out = std::process::Command::new(binary())
            .arg("check")
            .arg("--functions")
            .arg(&functions)
            .args(["--port", "9123"])
            .args(gateway)
            .env_remove("NOSLATED_CONFIG_PATH")
            .output()
            .expect("noslate check");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = check(&["--gateway", "node", "--gateway-arg", "/code/server.js"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("; gateway: node /code/server.js on port 9123"),
        "{out}"
    );
    let (code, _, err) = check(&["--gateway", "/nonexistent/gateway-server"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("gateway.command: /nonexistent/gateway-server is not an executable file"),
        "{err}"
    );
    let (code, _, err) = check(&["--gateway-arg", "server.js"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--gateway-arg needs --gateway PROGRAM"),
        "{err}"
    );
}
