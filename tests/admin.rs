//! The admin socket and exit accounting: `noslate ps` (table and JSON) and `noslate stats`
//! against a running runtime, the socket's mode, and one `resource_usage.log` line per worker
//! exit with its reason.

mod common;

use common::{Noslate, WAIT, binary, profile, signal, wait_until};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn usage_lines(ns: &Noslate) -> Vec<Value> {
    std::fs::read_to_string(ns.dir().join("logs").join("resource_usage.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn ps_lists_every_worker_as_a_table_and_as_json() {
    // Three workers: small ones, since Noslate's default pool holds two of 512 MiB.
    let mut two = profile("pair", "faulty");
    two["worker"]["reservationCount"] = json!(2);
    two["worker"]["replicaCountLimit"] = json!(2);
    two["resourceLimit"] = json!({ "memory": 128 << 20 });
    let mut solo = profile("solo", "echo");
    solo["resourceLimit"] = json!({ "memory": 128 << 20 });
    let ns = Noslate::start(&json!([two, solo]));
    assert_eq!(
        ns.send(&common::Req::new("POST", "/initialize")).status,
        200
    );

    let socket = ns.dir().join("work").join("noslated.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the admin socket is private");

    let (ok, table, err) = ns.cli(&["ps"]);
    assert!(ok, "ps failed: {err}");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "header + 3 workers:\n{table}");
    for column in [
        "ID", "FUNCTION", "PID", "STATE", "START", "INFLIGHT", "RSS", "CPU", "AGE", "LIMITS",
    ] {
        assert!(lines[0].contains(column), "missing {column}: {}", lines[0]);
    }
    assert!(lines.iter().filter(|l| l.starts_with("pair-")).count() == 2);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("solo-1") && l.contains("ready"))
    );

    let (ok, json_text, err) = ns.cli(&["ps", "--json"]);
    assert!(ok, "ps --json failed: {err}");
    let workers: Value = serde_json::from_str(&json_text).unwrap();
    let workers = workers.as_array().unwrap();
    assert_eq!(workers.len(), 3);
    for w in workers {
        let pid = w["pid"].as_i64().unwrap();
        assert!(ns.children().contains(&i32::try_from(pid).unwrap()), "{w}");
        assert_eq!(w["state"], "ready");
        assert!(w["rssBytes"].as_u64().unwrap() > 0, "{w}");
        assert!(w["ageMs"].is_u64(), "{w}");
        assert_eq!(w["inflight"], 0);
    }
}

#[test]
fn ps_without_a_runtime_says_how_to_reach_one() {
    let out = Command::new(binary())
        .args(["ps", "--socket", "/nonexistent/noslated.sock"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/noslated.sock"), "{err}");
}

#[test]
fn every_exit_is_accounted_with_its_reason() {
    let ns = Noslate::start(&json!([profile("acct", "faulty")]));
    let first = ns.invoke(b"", &[]).json()["pid"].as_i64().unwrap();
    // A crash mid-request: the in-flight request id is recorded.
    let resp = ns.invoke(
        b"",
        &[
            ("x-faulty-mode", "exit"),
            ("x-fc-request-id", "req-crash-1"),
        ],
    );
    assert_eq!(resp.status, 404);
    wait_until(WAIT, "the crash is accounted", || {
        !usage_lines(&ns).is_empty()
    });
    let lines = usage_lines(&ns);
    let crash = &lines[0];
    assert_eq!(crash["pid"], first);
    assert_eq!(crash["reason"], "crashed");
    assert_eq!(crash["requestId"], "req-crash-1");
    assert_eq!(crash["function"], "acct");
    assert!(crash["maxRssKib"].as_u64().unwrap() > 0);

    // A kill from outside while idle.
    let second = loop {
        let resp = ns.invoke(b"", &[]);
        if resp.status == 200 {
            break resp.json()["pid"].as_i64().unwrap();
        }
    };
    signal(i32::try_from(second).unwrap(), libc::SIGKILL);
    wait_until(WAIT, "the kill is accounted", || {
        usage_lines(&ns).len() >= 2
    });
    assert_eq!(usage_lines(&ns)[1]["signal"], "SIGKILL");
    assert_eq!(usage_lines(&ns)[1]["reason"], "crashed");

    // A stop by the runtime, once the replacement (started after a back-off, since two early
    // deaths look like a crash loop) serves.
    wait_until(WAIT, "a replacement serves", || {
        ns.invoke(b"", &[]).status == 200
    });
    assert_eq!(ns.send(&common::Req::new("GET", "/pre-stop")).status, 200);
    wait_until(WAIT, "the stop is accounted", || {
        usage_lines(&ns).len() >= 3
    });
    assert_eq!(
        usage_lines(&ns)[2]["reason"],
        "stopped",
        "{:#?}",
        usage_lines(&ns)
    );

    let (ok, stats, err) = ns.cli(&["stats"]);
    assert!(ok, "{err}");
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["exits"]["crashed"], 2);
    assert_eq!(stats["exits"]["stopped"], 1);
}
