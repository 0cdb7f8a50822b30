//! `runtime: "native"` with the reference worker (examples/native_worker.rs, which frames with
//! `noslate::wire` as docs/PROTOCOL.md describes): echo with metadata, 32 MiB both ways, one
//! direction at a time, function errors; then 1,000 spawn/stop cycles that leave no zombie, no runtime descriptor and no cgroup
//! behind; and a missing interpreter or code directory that fails only its own function, naming
//! the path.

mod common;

use common::{Noslate, Req, WAIT, assert_error_json, binary, native_worker, profile, wait_until};
use serde_json::{Value, json};
use std::path::Path;

fn native_profile(name: &str) -> Value {
    let worker = native_worker();
    json!({
        "name": name,
        "runtime": "native",
        "url": worker.parent().unwrap(),
        "sourceFile": "native_worker",
        "signature": "v1",
        "resourceLimit": { "memory": 64 << 20 },
        "worker": { "reservationCount": 1, "replicaCountLimit": 1 }
    })
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn the_reference_worker_echoes_with_metadata_and_reports_errors() {
    let ns = Noslate::start(&json!([native_profile("native")]));
    let resp = ns.send(&Req::new("PUT", "/some/path?q=1").body(b"hello native"));
    assert_eq!(resp.status, 200, "{}", resp.brief());
    assert_eq!(resp.body, b"hello native");
    assert_eq!(resp.header("x-method"), Some("PUT"));
    assert_eq!(resp.header("x-url"), Some("/some/path?q=1"));
    let resp = ns.invoke(b"", &[("x-native-error", "1")]);
    let body = assert_error_json(&resp, 404, Some("NativeError"));
    assert!(body["stackTrace"].is_array());
}

#[test]
fn the_reference_worker_measures_one_direction_at_a_time() {
    let ns = Noslate::start(&json!([native_profile("oneway")]));
    // Upload: 3 MiB read and dropped (more than any credit window), answered with its length.
    let body = vec![7u8; 3 << 20];
    let resp = ns.send(&Req::new("POST", "/upload").body(&body));
    assert_eq!(resp.status, 200, "{}", resp.brief());
    assert_eq!(resp.body, (3u32 << 20).to_string().as_bytes());
    // Download: exactly the bytes asked for, with their Content-Length; and none.
    let resp = ns.send(&Req::new("GET", "/download?bytes=5000000"));
    assert_eq!(resp.status, 200, "{}", resp.brief());
    assert_eq!(resp.header("content-length"), Some("5000000"));
    assert_eq!(resp.body.len(), 5_000_000);
    assert!(resp.body.iter().all(|&b| b == b'a'));
    let resp = ns.send(&Req::new("GET", "/download?bytes=0"));
    assert_eq!((resp.status, resp.body.len()), (200, 0), "{}", resp.brief());
    // A download that is sent a body drops it, whatever its size.
    let resp = ns.send(&Req::new("POST", "/download?bytes=10").body(&body));
    assert_eq!(
        (resp.status, resp.body.as_slice()),
        (200, &b"aaaaaaaaaa"[..])
    );
}

#[test]
fn the_reference_worker_streams_32_mib_both_ways() {
    let ns = Noslate::start(&json!([native_profile("big")]));
    let body: Vec<u8> = (0..32 << 20).map(|i: u32| (i % 251) as u8).collect();
    // This worker echoes as it reads, within credit both ways: the client must read while it
    // writes, or backpressure rightly stops both directions.
    let mut c = ns.client();
    let mut writer = c.stream().try_clone().unwrap();
    let req = Req::new("POST", "/invoke").body(&body).to_bytes();
    let sending = std::thread::spawn(move || std::io::Write::write_all(&mut writer, &req));
    let resp = c.read_response();
    sending.join().unwrap().unwrap();
    assert_eq!(resp.status, 200, "{}", resp.brief());
    assert_eq!(resp.body.len(), body.len());
    assert!(resp.body == body, "the echo is byte-exact");
}

#[test]
fn a_thousand_spawn_stop_cycles_leave_nothing_behind() {
    let mut p = native_profile("cycle");
    p["worker"] = json!({ "reservationCount": 0, "replicaCountLimit": 1, "disposable": true });
    let ns = Noslate::start(&json!([p]));
    assert_eq!(ns.invoke(b"warm", &[]).status, 200);
    wait_until(WAIT, "the first disposable worker is gone", || {
        ns.children().is_empty()
    });
    let baseline = open_fds(ns.pid());
    let mut c = ns.client();
    for i in 0..1000 {
        let resp = c.request(&Req::new("POST", "/invoke").body(b"x"));
        assert_eq!(resp.status, 200, "cycle {i}: {}", resp.brief());
    }
    // The baseline was taken without this connection.
    drop(c);
    wait_until(WAIT, "every worker is reaped", || ns.children().is_empty());
    ns.wait_no_zombies();
    wait_until(
        WAIT,
        "the runtime holds no more descriptors than before",
        || open_fds(ns.pid()) <= baseline,
    );
    let caps: Value = serde_json::from_slice(
        &std::process::Command::new(binary())
            .args(["serve", "--probe"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    if let Some(path) = caps["cgroup"]["memory"]["path"].as_str() {
        let own = Path::new(path)
            .parent()
            .unwrap()
            .join(format!("rt-{}", ns.pid()));
        wait_until(WAIT, "no worker cgroup is left", || {
            std::fs::read_dir(&own).map_or(true, |d| {
                !d.flatten().any(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            })
        });
    }
}

#[test]
fn a_missing_interpreter_fails_only_its_own_function_naming_it() {
    let ns = Noslate::builder()
        .functions(&json!([
            profile("nodeless", "echo"),
            native_profile("native")
        ]))
        .config(&json!({ "starter": { "nodejs": { "bin": "/nonexistent/bin/node" } } }))
        .start();
    let resp = ns.send(&Req::new("POST", "/invoke/nodeless"));
    let body = assert_error_json(&resp, 404, Some("WorkerStartFailed"));
    let message = body["errorMessage"].as_str().unwrap();
    assert!(message.contains("/nonexistent/bin/node"), "{message}");
    let resp = ns.send(&Req::new("POST", "/invoke/native").body(b"still here"));
    assert_eq!(resp.body, b"still here", "the other function keeps serving");
}

#[test]
fn a_code_directory_that_disappears_fails_its_requests_naming_it() {
    let code = std::env::temp_dir().join(format!("noslate-native-gone-{}", std::process::id()));
    std::fs::create_dir_all(&code).unwrap();
    std::fs::copy(native_worker(), code.join("native_worker")).unwrap();
    let mut p = native_profile("gone");
    p["url"] = json!(code);
    p["worker"] = json!({ "reservationCount": 0, "replicaCountLimit": 1, "disposable": true });
    let ns = Noslate::start(&json!([p]));
    assert_eq!(ns.invoke(b"x", &[]).status, 200);
    std::fs::remove_dir_all(&code).unwrap();
    wait_until(WAIT, "the next start fails naming the directory", || {
        let resp = ns.invoke(b"x", &[]);
        resp.status == 404 && resp.text().contains(&*code.to_string_lossy())
    });
}
