//! At the process's fd limit (below `http.maxConnections`), a client over the limit is answered
//! 503 TooManyConnections instead of hanging in the backlog, the loop does not spin, and the
//! runtime serves again once connections close. A limit below what the configuration needs is
//! warned about at start-up.

mod common;

use common::*;
use serde_json::json;
use std::io::Write;
use std::process::Command;
use std::time::Duration;

/// Lowers the running runtime's fd limit (soft and hard) to `limit`.
fn set_nofile(pid: i32, limit: usize) {
    let status = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .expect("run prlimit (util-linux)");
    assert!(status.success(), "prlimit failed");
}

#[test]
fn clients_past_the_fd_limit_get_503_and_the_loop_stays_idle() {
    let ns = Noslate::builder()
        .functions(&json!([profile("echo", "echo")]))
        .config(&json!({"turf": {"spareWorkers": 0}}))
        .start();
    let healthy = ns.send(&Req::new("GET", "/healthz"));
    assert_eq!(healthy.status, 200);
    let open = proc_fd_count(ns.pid()).expect("the runtime's fds");
    set_nofile(ns.pid(), open + 8);

    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..40 {
        let mut conn = raw_connect(ns.port(), Duration::from_secs(5));
        conn.write_all(&Req::new("GET", "/healthz").to_bytes())
            .expect("send");
        let mut reader = RawReader::new(conn);
        match reader.next(false) {
            Ok(resp) if resp.status == 200 => held.push(reader),
            Ok(resp) => {
                assert_eq!(resp.status, 503, "{}", String::from_utf8_lossy(&resp.bytes));
                let body = resp.json().expect("a JSON error");
                assert_eq!(body["errorType"], "TooManyConnections");
                assert!(
                    body["errorMessage"]
                        .as_str()
                        .is_some_and(|m| m.contains("RLIMIT_NOFILE")),
                    "{body}"
                );
                refused += 1;
            }
            Err(end) => panic!("a client past the limit got {end:?} instead of an answer"),
        }
    }
    assert!(refused > 0, "no client was refused at the fd limit");
    assert!(!held.is_empty(), "no client was served below the limit");
    let busy = cpu_ticks_over(ns.pid(), Duration::from_secs(1));
    assert!(
        busy < 50,
        "the loop spins at the fd limit: {busy} ticks in 1 s"
    );

    drop(held);
    wait_until(WAIT, "connections to close", || {
        proc_fd_count(ns.pid()).is_some_and(|n| n <= open + 1)
    });
    let resp = ns.invoke(b"back", &[("x-noslate-function", "echo")]);
    assert_eq!(resp.status, 200, "after the clients left: {}", resp.brief());
}

#[test]
fn a_fd_limit_below_max_connections_is_warned_about() {
    let ns = Noslate::builder()
        .functions(&json!([profile("echo", "echo")]))
        .config(&json!({"http": {"maxConnections": 100_000_000}}))
        .start();
    assert_eq!(
        ns.log_count(&["RLIMIT_NOFILE", "http.maxConnections"]),
        1,
        "{:?}",
        ns.stderr_lines()
    );
}
