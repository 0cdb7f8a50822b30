//! Spare Node.js workers (`turf::spare`, `server/spares.rs`, `turf.spareWorkers`): pre-started
//! bootstrap processes without a function, taken by the next Node.js scale-up. A taken spare
//! gets the function's environment, cwd, log directory and its own cgroup, serves that one
//! function only, and is replaced in the background. Functions that set start-up variables of
//! Node.js start cold; a dead spare is restarted; stopping the runtime stops the spares.

mod common;

use common::{Noslate, TempDir, WAIT, is_alive, signal, wait_until};
use serde_json::{Value, json};
use std::path::Path;

const MODULE: &str = r#"'use strict';
const fs = require('fs');
exports.handler = (ctx, req, res) => {
  req.resume();
  console.log('stdout of ' + process.env.NOSLATE_WORKER_ID);
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({
    pid: process.pid, ppid: process.ppid, env: process.env, cwd: process.cwd(),
    cgroups: fs.readFileSync('/proc/self/cgroup', 'utf8'),
  }));
};
"#;

fn code_dir() -> TempDir {
    let dir = TempDir::new();
    std::fs::write(dir.path().join("index.js"), MODULE).unwrap();
    dir
}

fn profile(name: &str, code: &Path, worker: Value) -> Value {
    json!({
        "name": name, "runtime": "nodejs", "url": code, "handler": "index.handler",
        "signature": "v1", "resourceLimit": {"memory": 128 << 20},
        "environments": [{"key": "GREETING", "value": format!("hello from {name}")}],
        "worker": worker,
    })
}

fn on_demand() -> Value {
    json!({"reservationCount": 0, "replicaCountLimit": 1, "maxActivateRequests": 4})
}

fn wait_spares_ready(n: &Noslate, count: usize) {
    wait_until(WAIT, "a spare is ready", || {
        n.log_count(&["[turf spare=", "] ready after "]) >= count
    });
}

/// The pid of `[turf spare=<id> pid=<pid>] started`.
fn spare_pid(n: &Noslate, id: &str) -> i32 {
    let needle = format!("[turf spare={id} pid=");
    let lines = n.stderr_lines();
    let line = lines
        .iter()
        .find(|l| l.contains(&needle) && l.ends_with("] started"))
        .unwrap_or_else(|| panic!("no start line for {id}"));
    let at = line.find(&needle).unwrap() + needle.len();
    line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

fn invoke(n: &Noslate, function: &str) -> Value {
    let r = n.invoke(b"", &[("x-noslate-function", function)]);
    assert_eq!(r.status, 200, "{}", r.brief());
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.brief()))
}

#[test]
fn a_spare_becomes_the_functions_worker_with_its_env_cwd_logs_and_cgroup() {
    let code = code_dir();
    let n = Noslate::start(&json!([profile("alpha", code.path(), on_demand())]));
    wait_spares_ready(&n, 1);
    let spare = spare_pid(&n, "spare-1");
    let a = invoke(&n, "alpha");
    assert_eq!(a["pid"], json!(spare), "the spare served: {a}");
    assert_eq!(a["ppid"], json!(n.pid()));
    assert_eq!(a["cwd"], json!(code.path()));
    let env = a["env"].as_object().unwrap();
    assert_eq!(env["GREETING"], "hello from alpha");
    assert_eq!(env["NOSLATE_FUNCTION_NAME"], "alpha");
    assert_eq!(env["NOSLATE_WORKER_ID"], "alpha-1");
    assert!(!env.contains_key("NOSLATE_SPARE"), "{a}");
    assert_eq!(
        n.wait_log_count(&["[turf w=alpha-1 ", "taken from spare-1"], 1),
        1
    );
    // Its log directory moved under the function's.
    let stdout = n
        .dir()
        .join("logs")
        .join("alpha")
        .join("alpha-1")
        .join("stdout");
    wait_until(WAIT, "the worker's stdout is written", || {
        std::fs::read_to_string(&stdout).is_ok_and(|t| t.contains("stdout of alpha-1"))
    });
    // In a cgroup of its own, when the runtime uses cgroups here.
    let cgroups = a["cgroups"].as_str().unwrap();
    if cgroups.contains("/noslate/") {
        let memory = cgroups
            .lines()
            .find(|l| l.contains("memory"))
            .unwrap_or_default();
        assert!(memory.ends_with("/spare-1"), "{cgroups}");
    }
    // A replacement is started in the background.
    wait_spares_ready(&n, 2);
    let second = spare_pid(&n, "spare-2");
    assert!(is_alive(second));
    let (ok, stats, err) = n.cli(&["stats"]);
    assert!(ok, "{err}");
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["spares"]["taken"], 1, "{stats}");
    assert_eq!(
        stats["spares"]["processes"][0]["pid"],
        json!(second),
        "{stats}"
    );
    assert_eq!(stats["spares"]["processes"][0]["state"], "ready", "{stats}");
}

#[test]
fn a_spare_serves_one_function_only() {
    let code = code_dir();
    let n = Noslate::start(&json!([
        profile("alpha", code.path(), on_demand()),
        profile("beta", code.path(), on_demand()),
    ]));
    wait_spares_ready(&n, 1);
    let a = invoke(&n, "alpha");
    wait_spares_ready(&n, 2);
    let b = invoke(&n, "beta");
    assert_ne!(a["pid"], b["pid"]);
    assert_eq!(b["env"]["GREETING"], "hello from beta");
    for _ in 0..3 {
        assert_eq!(invoke(&n, "alpha")["pid"], a["pid"]);
        assert_eq!(invoke(&n, "beta")["pid"], b["pid"]);
    }
    let (ok, ps, err) = n.cli(&["ps", "--json"]);
    assert!(ok, "{err}");
    let ps: Value = serde_json::from_str(&ps).unwrap();
    for w in ps.as_array().unwrap() {
        assert_eq!(w["start"], "spare", "{ps}");
    }
}

#[test]
fn functions_that_set_node_startup_variables_start_cold() {
    let code = code_dir();
    let mut p = profile("opts", code.path(), on_demand());
    p["environments"] = json!([{"key": "NODE_OPTIONS", "value": "--max-http-header-size=16384"}]);
    let n = Noslate::start(&json!([p]));
    let a = invoke(&n, "opts");
    assert_eq!(a["env"]["NODE_OPTIONS"], "--max-http-header-size=16384");
    assert_eq!(n.log_count(&["taken from spare-"]), 0);
    // No Node.js function can use a spare: none is kept.
    assert_eq!(n.log_count(&["[turf spare="]), 0);
}

#[test]
fn spare_workers_zero_turns_spares_off() {
    let code = code_dir();
    let n = Noslate::builder()
        .functions(&json!([profile("alpha", code.path(), on_demand())]))
        .config(&json!({"turf": {"spareWorkers": 0}}))
        .start();
    let a = invoke(&n, "alpha");
    assert_eq!(a["env"]["GREETING"], "hello from alpha");
    assert_eq!(n.log_count(&["[turf spare="]), 0);
}

#[test]
fn a_dead_spare_is_replaced_and_stopping_stops_the_spare() {
    let code = code_dir();
    let n = Noslate::start(&json!([profile("alpha", code.path(), on_demand())]));
    wait_spares_ready(&n, 1);
    let first = spare_pid(&n, "spare-1");
    signal(first, libc::SIGKILL);
    wait_until(WAIT, "the dead spare is noticed", || {
        n.log_count(&["[turf spare=spare-1 ", "exited unexpectedly"]) == 1
    });
    wait_spares_ready(&n, 2);
    let second = spare_pid(&n, "spare-2");
    let stop = n.send(&common::Req::new("GET", "/pre-stop"));
    assert_eq!(stop.status, 200, "{}", stop.brief());
    assert!(!is_alive(second), "the spare outlived /pre-stop");
    n.wait_no_zombies();
}
