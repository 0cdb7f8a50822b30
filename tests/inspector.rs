//! The inspector (`PUT /v1/inspector/NAME`, `noslate inspect NAME`): while it is on, a Node.js
//! function's invocations go to one inspect worker whose debugger listens on 127.0.0.1 only;
//! turned off, the inspect worker drains and goes and the ordinary workers serve again. Python
//! functions are refused, bad admin bodies get a 400 naming the problem, and functions that
//! try to open a debugger of their own on every address are refused.

mod common;

use common::{Noslate, Req, WAIT, is_alive, profile, require_node, wait_until};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// What the `inspect` fixture answers: the pid that served, the debugger URL it sees, and the
/// outcome of its attempts to open a debugger of its own.
fn call(ns: &Noslate, body: &str) -> Value {
    let resp = ns.send(&Req::new("POST", "/invoke/dbg").body(body.as_bytes()));
    assert_eq!(resp.status, 200, "{}", resp.brief());
    resp.json()
}

/// A Node.js function `dbg` (one reserved worker, room for three) on the `inspect` fixture.
fn start() -> Noslate {
    require_node();
    let mut dbg = profile("dbg", "inspect");
    dbg["worker"]["replicaCountLimit"] = json!(3);
    dbg["worker"]["maxActivateRequests"] = json!(1);
    dbg["resourceLimit"] = json!({ "memory": 128 << 20 });
    let ns = Noslate::start(&json!([dbg]));
    assert_eq!(ns.send(&Req::new("POST", "/initialize")).status, 200);
    ns
}

/// One admin request written in `pieces` (each flushed on its own), with the write side shut
/// down after the last when `half_close`; the status and the JSON body of the answer.
fn admin_exchange(ns: &Noslate, pieces: &[&[u8]], half_close: bool) -> (u16, Value) {
    let mut stream = UnixStream::connect(ns.admin_socket()).expect("admin socket");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    for piece in pieces {
        stream.write_all(piece).expect("write");
        stream.flush().expect("flush");
    }
    if half_close {
        stream
            .shutdown(std::net::Shutdown::Write)
            .expect("half-close");
    }
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let mut reader = common::RawReader::new(&raw[..]);
    let answer = reader.next(false).expect("an answer");
    let body = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    (answer.status, body)
}

/// `PUT /v1/inspector/NAME` with `body`, `Connection: close`, as bytes.
fn put_bytes(name: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = format!(
        "PUT /v1/inspector/{name} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn put(ns: &Noslate, name: &str, body: &[u8]) -> (u16, Value) {
    admin_exchange(ns, &[&put_bytes(name, body)], false)
}

fn get(ns: &Noslate, path: &str) -> Value {
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    let (status, body) = admin_exchange(ns, &[request.as_bytes()], false);
    assert_eq!(status, 200, "{body}");
    body
}

/// The inspect workers `GET /v1/inspector/dbg` lists.
fn inspect_workers(ns: &Noslate) -> Vec<Value> {
    get(ns, "/v1/inspector/dbg")["workers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The TCP sockets `pid` listens on, as (address, port), from its descriptors and
/// `/proc/net/tcp` and `tcp6` (addresses as the kernel writes them: hex, little-endian).
fn listening(pid: i64) -> Vec<(String, u16)> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|link| {
                    let link = link.to_string_lossy().into_owned();
                    let inode = link.strip_prefix("socket:[")?.strip_suffix(']')?;
                    Some(inode.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            if *state != "0A" || !inodes.iter().any(|i| i == inode) {
                continue;
            }
            let (address, port) = local.split_once(':').expect("address:port");
            found.push((
                address.to_owned(),
                u16::from_str_radix(port, 16).expect("hex port"),
            ));
        }
    }
    found
}

/// The arguments `pid` was started with.
fn cmdline(pid: i64) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// 127.0.0.1 as `/proc/net/tcp` writes it.
const LOOPBACK_HEX: &str = "0100007F";

/// This machine's address on its default route, if it has one (no packet is sent).
fn non_loopback_address() -> Option<Ipv4Addr> {
    let probe = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    probe.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    match probe.local_addr().ok()? {
        SocketAddr::V4(v4) if !v4.ip().is_loopback() && !v4.ip().is_unspecified() => Some(*v4.ip()),
        _ => None,
    }
}

/// `GET /json/list` on the debugger's port: the raw answer.
fn json_list(port: u16) -> String {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("debugger port");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let request = format!("GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("write");
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    // Until the list's closing bracket: the debugger may keep the connection open.
    while !String::from_utf8_lossy(&answer).trim_end().ends_with(']') {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// Every attempt in `attempts` (nested objects included) was refused.
fn all_refused(attempts: &Value) {
    let object = attempts.as_object().expect("attempts");
    assert!(!object.is_empty(), "the fixture tried nothing");
    for (name, outcome) in object {
        match outcome {
            Value::String(text) => assert!(
                text.starts_with("refused: the inspector is opened by the runtime only"),
                "{name}: {text}"
            ),
            nested => all_refused(nested),
        }
    }
}

#[test]
fn the_inspect_worker_serves_while_on_listens_on_loopback_only_and_goes_when_off() {
    let ns = start();
    let normal = call(&ns, "hi");
    let normal_pid = normal["pid"].as_i64().expect("pid");
    assert_eq!(
        normal["url"],
        Value::Null,
        "ordinary workers run no debugger"
    );
    assert!(
        get(&ns, "/v1/inspector")["functions"]
            .as_array()
            .expect("list")
            .is_empty()
    );

    // A spare is ready: an ordinary scale-up would take it; the inspect worker must not.
    wait_until(WAIT, "a spare is ready", || {
        ns.log_count(&["[turf spare=", "] ready after "]) >= 1
    });

    // On: the CLI waits for the inspect worker and prints its URLs.
    let (ok, stdout, stderr) = ns.cli(&["inspect", "dbg"]);
    assert!(ok, "noslate inspect failed: {stderr}");
    let listed = get(&ns, "/v1/inspector");
    let functions = listed["functions"].as_array().expect("list");
    assert_eq!(functions.len(), 1, "{listed}");
    assert_eq!(functions[0]["function"], "dbg");
    assert_eq!(functions[0]["use"], true);
    let workers = functions[0]["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 1, "{listed}");
    let inspect = &workers[0];
    let port = u16::try_from(inspect["port"].as_u64().expect("port")).expect("u16");
    let inspect_pid = inspect["pid"].as_i64().expect("pid");
    assert_ne!(inspect_pid, normal_pid);
    assert_eq!(inspect["host"], "127.0.0.1");
    let ws = inspect["webSocketDebuggerUrl"].as_str().expect("ws url");
    let prefix = format!("ws://127.0.0.1:{port}/");
    assert!(ws.starts_with(&prefix), "{ws}");
    let target = ws.trim_start_matches("ws://");
    let devtools =
        format!("devtools://devtools/bundled/js_app.html?experiments=true&v8only=true&ws={target}");
    assert_eq!(inspect["devtoolsFrontendUrl"], devtools.as_str());
    assert!(
        stdout.contains(&format!("DevTools: {devtools}")),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("WebSocket: {ws}")), "{stdout}");
    assert_eq!(
        inspect["memoryLimitBytes"],
        100 * (128u64 << 20),
        "the inspect worker's memory limit is relaxed a hundred-fold"
    );

    // A fresh process, with the debugger flag; the ordinary worker has none.
    let row = get(&ns, "/v1/workers");
    let row = (row.as_array().expect("workers").iter())
        .find(|w| w["pid"].as_i64() == Some(inspect_pid))
        .cloned()
        .expect("the inspect worker in ps");
    assert_eq!(
        (&row["inspector"], &row["start"]),
        (&json!(true), &json!("cold")),
        "{row}"
    );
    assert_eq!(get(&ns, "/v1/stats")["spares"]["taken"], 0);
    assert!(cmdline(inspect_pid).contains(&"--inspect=127.0.0.1:0".to_owned()));
    let ordinary = cmdline(normal_pid);
    assert!(
        !ordinary.iter().any(|a| a.starts_with("--inspect")),
        "{ordinary:?}"
    );

    // Invocations go to the inspect worker, which sees its own debugger.
    let served = call(&ns, "hi");
    assert_eq!(served["pid"].as_i64(), Some(inspect_pid), "{served}");
    assert_eq!(served["url"], ws);

    // Its debugger listens on 127.0.0.1 only, and answers there.
    let sockets = listening(inspect_pid);
    assert!(
        sockets.contains(&(LOOPBACK_HEX.to_owned(), port)),
        "{sockets:?}"
    );
    for (address, listen_port) in &sockets {
        assert_eq!(
            address, LOOPBACK_HEX,
            "port {listen_port} is not on loopback"
        );
    }
    let list = json_list(port);
    assert!(list.contains("\"webSocketDebuggerUrl\""), "{list}");
    assert!(list.contains(target), "{list}");
    if let Some(address) = non_loopback_address() {
        let outside = SocketAddr::from((address, port));
        assert!(
            TcpStream::connect_timeout(&outside, Duration::from_secs(2)).is_err(),
            "the debugger answers on {outside}"
        );
    }

    // The function tries to open a debugger on every address from the inspect worker: refused,
    // and nothing new listens.
    let tried = call(&ns, "open");
    assert_eq!(tried["pid"].as_i64(), Some(inspect_pid));
    all_refused(&tried["attempts"]);
    assert_eq!(listening(inspect_pid), sockets);

    // At most one inspect worker: a burst of requests (one at a time per worker) and a second
    // `inspect` are all served by the same one.
    let burst: Vec<_> = (0..6)
        .map(|_| {
            let port = ns.port();
            std::thread::spawn(move || {
                let mut client = common::Client::connect(port);
                client
                    .request(&Req::new("POST", "/invoke/dbg").body(b"hi"))
                    .json()
            })
        })
        .collect();
    for handle in burst {
        assert_eq!(
            handle.join().expect("burst")["pid"].as_i64(),
            Some(inspect_pid)
        );
    }
    let (ok, again, stderr) = ns.cli(&["inspect", "dbg"]);
    assert!(ok, "{stderr}");
    assert!(again.contains(&format!("pid {inspect_pid}")), "{again}");
    assert_eq!(inspect_workers(&ns).len(), 1);
    let workers = get(&ns, "/v1/workers");
    let inspecting = workers.as_array().expect("workers").iter();
    assert_eq!(inspecting.filter(|w| w["inspector"] == true).count(), 1);

    // Off: traffic goes back to the ordinary workers and the inspect worker goes.
    let (ok, off, stderr) = ns.cli(&["inspect", "dbg", "--off"]);
    assert!(ok, "{stderr}");
    assert!(off.contains("off"), "{off}");
    let back = call(&ns, "hi");
    assert_ne!(back["pid"].as_i64(), Some(inspect_pid), "{back}");
    assert_eq!(back["url"], Value::Null);
    wait_until(WAIT, "the inspect worker is gone", || {
        inspect_workers(&ns).is_empty() && !is_alive(i32::try_from(inspect_pid).unwrap_or(0))
    });
    // (Its port is free again: other tests running beside this one may be given it, so
    // whether something answers there now says nothing about this runtime.)
    let view = get(&ns, "/v1/inspector/dbg");
    assert_eq!(view["use"], false, "{view}");
    assert!(
        get(&ns, "/v1/inspector")["functions"]
            .as_array()
            .expect("list")
            .is_empty()
    );
}

#[test]
fn the_inspect_worker_listens_on_loopback_inside_the_sandbox() {
    require_node();
    let mut dbg = profile("dbg", "inspect");
    dbg["resourceLimit"] = json!({ "memory": 128 << 20 });
    let ns = Noslate::builder()
        .functions(&json!([dbg]))
        .config(&json!({ "turf": { "isolation": true, "user": "nobody" } }))
        .start();
    assert_eq!(ns.send(&Req::new("POST", "/initialize")).status, 200);
    let (ok, stdout, stderr) = ns.cli(&["inspect", "dbg"]);
    assert!(ok, "noslate inspect under turf.isolation failed: {stderr}");
    let workers = inspect_workers(&ns);
    let port = u16::try_from(workers[0]["port"].as_u64().expect("port")).expect("u16");
    let pid = workers[0]["pid"].as_i64().expect("pid");
    assert!(
        stdout.contains(&format!("ws://127.0.0.1:{port}/")),
        "{stdout}"
    );
    assert!(json_list(port).contains("\"webSocketDebuggerUrl\""));
    let tried = call(&ns, "open");
    assert_eq!(tried["worker"], workers[0]["id"], "{tried}");
    all_refused(&tried["attempts"]);
    let sockets = listening(pid);
    assert_eq!(sockets, [(LOOPBACK_HEX.to_owned(), port)], "{sockets:?}");
    // Ordinary workers in the same sandbox run no debugger.
    let (ok, _, stderr) = ns.cli(&["inspect", "dbg", "--off"]);
    assert!(ok, "{stderr}");
    assert_eq!(call(&ns, "hi")["url"], Value::Null);
}

#[test]
fn debugger_flags_in_the_configuration_are_refused() {
    require_node();
    // In a profile: the set is refused, naming each key.
    let mut flagged = profile("dbg", "inspect");
    flagged["worker"]["execArgv"] = json!(["--inspect=0.0.0.0:0"]);
    flagged["environments"] = json!([{"key": "NODE_OPTIONS", "value": "--inspect-brk"}]);
    let exited = Noslate::builder()
        .functions(&json!([flagged]))
        .run_to_exit();
    assert_eq!(exited.status.code(), Some(2), "{}", exited.stderr);
    for key in ["worker.execArgv[0]", "environments[0].value"] {
        assert!(
            exited.stderr.contains(&format!("{key}: "))
                && exited.stderr.contains("opens a debugger"),
            "{key}: {}",
            exited.stderr
        );
    }
    // In the platform environment: refused. Inherited from the runtime's: not passed on.
    let ns = Noslate::builder()
        .functions(&json!([profile("dbg", "inspect")]))
        .config(&json!({ "turf": { "inheritEnv": ["NODE_OPTIONS"] } }))
        .env("NODE_OPTIONS", "--inspect=0.0.0.0:0")
        .start();
    assert_eq!(ns.send(&Req::new("POST", "/initialize")).status, 200);
    assert_eq!(call(&ns, "hi")["url"], Value::Null);
    assert_eq!(
        ns.log_count(&["workers do not inherit NODE_OPTIONS", "opens a debugger"]),
        1
    );
    let env = b"PUT /v1/env HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 42\r\n\r\n\
                {\"NODE_OPTIONS\": \"--inspect=0.0.0.0:9229\"}";
    let (status, answer) = admin_exchange(&ns, &[env], false);
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("opens a debugger")
    );
}

#[test]
fn a_worker_whose_debugger_opened_anyway_is_refused() {
    require_node();
    // A Node.js that opens a debugger on every address before the bootstrap runs: what no
    // configuration key can ask for any more, and what the runtime checks at READY.
    let tmp = common::TempDir::new();
    let node = std::process::Command::new("sh")
        .args(["-c", "command -v node"])
        .output()
        .expect("find node");
    let node = String::from_utf8_lossy(&node.stdout).trim().to_owned();
    let wrapper = tmp.path().join("node-with-debugger");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec {node} --inspect=0.0.0.0:0 \"$@\"\n"),
    )
    .expect("wrapper");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let ns = Noslate::builder()
        .functions(&json!([profile("dbg", "inspect")]))
        .config(&json!({ "starter": { "nodejs": { "bin": wrapper } } }))
        .start();
    let init = ns.send(&Req::new("POST", "/initialize"));
    assert_ne!(init.status, 200, "{}", init.brief());
    assert!(
        init.text().contains("only an inspect worker may have one"),
        "{}",
        init.brief()
    );
    wait_until(WAIT, "a spare with a debugger is refused too", || {
        ns.log_count(&["[turf spare=", "a debugger is open on ws://0.0.0.0:"]) >= 1
    });
    // None of them is left listening anywhere.
    wait_until(WAIT, "no child listens", || {
        ns.children()
            .iter()
            .all(|&pid| !is_alive(pid) || listening(i64::from(pid)).is_empty())
    });
}

#[test]
fn an_ordinary_worker_cannot_open_a_debugger_of_its_own() {
    let ns = start();
    let tried = call(&ns, "open");
    all_refused(&tried["attempts"]);
    assert_eq!(tried["url"], Value::Null);
    let pid = tried["pid"].as_i64().expect("pid");
    let sockets = listening(pid);
    assert!(
        sockets.is_empty(),
        "an ordinary worker listens: {sockets:?}"
    );
    let signalled = call(&ns, "usr1");
    assert_eq!(signalled["pid"].as_i64(), Some(pid));
    assert_eq!(signalled["url"], Value::Null, "SIGUSR1 started a debugger");
    assert!(listening(pid).is_empty());
}

#[test]
fn python_functions_run_without_a_debugger() {
    common::require_python();
    let mut py = profile("py", "envdump-python");
    py["runtime"] = json!("python3");
    py["worker"]["reservationCount"] = json!(0);
    let ns = Noslate::start(&json!([py]));
    let (status, body) = put(&ns, "py", br#"{"use": true}"#);
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["errorType"], "InspectorUnsupported");
    let message = body["errorMessage"].as_str().expect("message");
    assert!(
        message.contains("inspector is supported for Node.js functions only")
            && message.contains("Python functions run without a debugger"),
        "{message}"
    );
    let (ok, _, stderr) = ns.cli(&["inspect", "py"]);
    assert!(!ok);
    assert!(
        stderr.contains("Python functions run without a debugger"),
        "{stderr}"
    );
    assert_eq!(get(&ns, "/v1/inspector/py")["use"], false);
    // Off is what it is already.
    let (status, body) = put(&ns, "py", br#"{"use": false}"#);
    assert_eq!((status, &body["changed"]), (200, &json!(false)), "{body}");
}

#[test]
fn bad_inspector_requests_get_an_answer_naming_the_problem() {
    let ns = start();
    let cases: [(&[u8], &str); 6] = [
        (b"{\"use\": tru", "not JSON"),
        (b"", "not JSON"),
        (b"[true]", "JSON object"),
        (b"{}", "missing field \"use\""),
        (br#"{"use": "yes"}"#, "must be true or false, got \"yes\""),
        (br#"{"use": true, "port": 9229}"#, "unknown field \"port\""),
    ];
    for (body, problem) in cases {
        let whole = put_bytes("dbg", body);
        // Whole, byte by byte, and byte by byte followed by a half-close.
        let bytes: Vec<&[u8]> = whole.chunks(1).collect();
        for (pieces, half_close) in [
            (vec![&whole[..]], false),
            (bytes.clone(), false),
            (bytes, true),
        ] {
            let (status, answer) = admin_exchange(&ns, &pieces, half_close);
            assert_eq!(status, 400, "{answer}");
            assert_eq!(answer["errorType"], "InvalidInspectorRequest");
            let message = answer["errorMessage"].as_str().expect("message");
            assert!(message.contains(problem), "{problem}: {message}");
        }
    }
    // Split at random points, with a pause after each piece (pacing the delivery under test),
    // and once with a longer stall in the middle of the body: the same answers.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |below: usize| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        usize::try_from(seed >> 33).unwrap_or(0) % below.max(1)
    };
    for round in 0..24 {
        let (body, expected): (&[u8], u16) = if round % 2 == 0 {
            (br#"{"use": 0}"#, 400)
        } else {
            (br#"{"use": false}"#, 200)
        };
        let whole = put_bytes("dbg", body);
        let mut cuts: Vec<usize> = (0..1 + next(4))
            .map(|_| 1 + next(whole.len() - 1))
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut stream = UnixStream::connect(ns.admin_socket()).expect("admin socket");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut from = 0;
        for &to in cuts.iter().chain([whole.len()].iter()) {
            stream.write_all(&whole[from..to]).expect("write");
            from = to;
            let pause = if round == 5 { 300 } else { 5 };
            std::thread::sleep(Duration::from_millis(pause));
        }
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        let answer = common::RawReader::new(&raw[..])
            .next(false)
            .expect("answer");
        assert_eq!(
            answer.status,
            expected,
            "cuts {cuts:?}: {:?}",
            String::from_utf8_lossy(&raw)
        );
    }

    let (status, answer) = put(&ns, "nope", br#"{"use": true}"#);
    assert_eq!(
        (status, &answer["errorType"]),
        (404, &json!("FunctionNotFound"))
    );
    let request = b"DELETE /v1/inspector/dbg HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    let (status, _) = admin_exchange(&ns, &[request], false);
    assert_eq!(status, 405);
    let request = b"GET /v1/inspector/nope HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    assert_eq!(admin_exchange(&ns, &[request], false).0, 404);
    // None of it turned the inspector on; a good body, split and half-closed, does.
    assert_eq!(get(&ns, "/v1/inspector/dbg")["use"], false);
    let good = put_bytes("dbg", br#"{"use": true}"#);
    let (head, body) = good.split_at(good.len() - 5);
    let (status, answer) = admin_exchange(&ns, &[head, body], true);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"function": "dbg", "use": true, "changed": true})
    );
    let (status, answer) = put(&ns, "dbg", br#"{"use": true}"#);
    assert_eq!((status, &answer["changed"]), (200, &json!(false)));
    wait_until(WAIT, "the inspect worker is ready", || {
        inspect_workers(&ns).iter().any(|w| w["state"] == "ready")
    });
}
