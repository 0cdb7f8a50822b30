//! Resource limits on workers: a worker over its memory limit has its process group killed,
//! its request fails naming the limit, and the exit is accounted as `mem_overload`.

mod common;

use common::{Noslate, WAIT, assert_function_error, profile, wait_until};
use serde_json::{Value, json};

fn usage_lines(ns: &Noslate) -> Vec<Value> {
    std::fs::read_to_string(ns.dir().join("logs").join("resource_usage.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn a_worker_over_its_memory_limit_is_killed_and_accounted() {
    let mut p = profile("hog", "hog");
    p["resourceLimit"] = json!({ "memory": 96 << 20 });
    let ns = Noslate::start(&json!([p]));
    let first = ns.invoke(b"", &[]);
    let before = first.json()["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("{}", first.brief()));

    let resp = ns.invoke(b"", &[("x-hog-mib", "400"), ("x-fc-request-id", "hog-1")]);
    let body = assert_function_error(&resp, "MemoryLimitExceeded");
    let message = body["errorMessage"].as_str().unwrap_or_default();
    assert!(message.contains("mem_overload"), "{message}");

    wait_until(WAIT, "the kill is accounted", || {
        !usage_lines(&ns).is_empty()
    });
    let line = &usage_lines(&ns)[0];
    assert_eq!(line["reason"], "mem_overload", "{line}");
    assert_eq!(line["pid"], before);
    assert_eq!(line["requestId"], "hog-1");

    // The function keeps serving with a fresh worker.
    wait_until(WAIT, "a replacement serves", || {
        ns.invoke(b"", &[]).status == 200
    });
    ns.wait_no_zombies();
}
