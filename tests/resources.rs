//! Nothing leaks: after normal, malformed, abandoned, failing and timed-out requests, and a
//! crashed worker, the runtime holds the same file descriptors as before, one live worker, and
//! no zombie.

mod common;

use common::{Noslate, Req, WAIT, profile, wait_until};
use serde_json::json;
use std::io::Write;
use std::net::TcpStream;

fn open_fds(pid: i32) -> usize {
    fd_targets(pid).len()
}

/// The runtime's descriptors and what they point at, for a readable failure.
fn fd_targets(pid: i32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut fds: Vec<String> = dir
        .flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            format!(
                "{} -> {}",
                e.file_name().to_string_lossy(),
                target.display()
            )
        })
        .collect();
    fds.sort();
    fds
}

#[test]
fn bad_and_abandoned_requests_leak_no_fd_worker_or_zombie() {
    let mut p = profile("leaky", "faulty");
    p["worker"]["maxActivateRequests"] = json!(4);
    let ns = Noslate::start(&json!([p]));
    // Warm up: one request so that every lazily created fd exists.
    assert_eq!(ns.invoke(b"", &[]).status, 200);
    let baseline = open_fds(ns.pid());
    let baseline_fds = fd_targets(ns.pid());

    for round in 0..20 {
        // A normal request on a fresh connection.
        assert_eq!(ns.invoke(b"x", &[]).status, 200, "round {round}");
        // Garbage: 400, connection closed by the runtime.
        let mut c = ns.client();
        c.send_lossy(b"NOT HTTP AT ALL\r\n\r\n");
        assert_eq!(c.read_response().status, 400);
        // A client that announces a body and leaves halfway through it.
        let mut s = TcpStream::connect(("127.0.0.1", ns.port())).unwrap();
        let _ = s.write_all(b"POST /invoke HTTP/1.1\r\nContent-Length: 1000\r\n\r\nonly part");
        drop(s);
        // A client that leaves while its handler hangs (the stream is cancelled).
        let mut c = ns.client();
        c.send(
            &Req::new("POST", "/invoke")
                .header("x-faulty-mode", "hang")
                .to_bytes(),
        );
        drop(c);
        // A function error and a deadline.
        assert_eq!(ns.invoke(b"", &[("x-faulty-mode", "throw")]).status, 404);
        let resp = ns.invoke(
            b"",
            &[("x-faulty-mode", "hang"), ("x-fc-function-timeout", "0.05")],
        );
        assert_eq!(resp.header("x-fc-status"), Some("404"));
    }
    // A worker that dies mid-request is replaced.
    let resp = ns.invoke(b"", &[("x-faulty-mode", "exit")]);
    assert_eq!(resp.status, 404);
    wait_until(WAIT, "a replacement worker serves", || {
        ns.invoke(b"", &[]).status == 200
    });

    let back = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while open_fds(ns.pid()) > baseline && std::time::Instant::now() < back {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let now = fd_targets(ns.pid());
    assert!(
        now.len() <= baseline,
        "fds leaked: before {baseline_fds:#?}\nafter {now:#?}"
    );
    ns.wait_no_zombies();
    let live: Vec<i32> = ns
        .children()
        .into_iter()
        .filter(|&pid| common::is_alive(pid))
        .collect();
    assert_eq!(live.len(), 1, "exactly one worker remains: {live:?}");
}
