//! Warm fork for Python (`turf::seed`, `server/seeds.rs`): a seed per function imports the
//! module once and forks workers on demand. Forked workers are the runtime's own children, run
//! their own initializer, draw fresh random numbers, write their own log files, sit in their own
//! cgroup, and are stopped and reaped like cold ones. A dead seed is restarted; an import error
//! falls back to cold starts that report it; `worker.disableSeed` opts out.

mod common;

use common::{Noslate, TempDir, WAIT, binary, is_alive, require_python, signal, wait_until};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::Path;

/// A module that records, per process, what the tests check.
const MODULE: &str = r#"
import json, decimal, email, os, random
R = random.Random()
AT_IMPORT = random.random()
IMPORT_PID = os.getpid()
INIT_PID = None

def initializer(context):
    global INIT_PID
    INIT_PID = os.getpid()

def handler(event, context):
    print("stdout of", os.environ.get("NOSLATE_WORKER_ID"), flush=True)
    with open("/proc/self/cgroup") as f:
        cgroups = f.read()
    return {
        "pid": os.getpid(), "ppid": os.getppid(), "init_pid": INIT_PID,
        "import_pid": IMPORT_PID, "at_import": AT_IMPORT,
        "r": random.random(), "R": R.random(),
        "wid": os.environ.get("NOSLATE_WORKER_ID"), "cwd": os.getcwd(),
        "greeting": os.environ.get("GREETING"), "cgroups": cgroups,
    }
"#;

fn code_dir(module: &str) -> TempDir {
    let dir = TempDir::new();
    std::fs::write(dir.path().join("index.py"), module).unwrap();
    dir
}

fn profile(code: &Path, worker: Value) -> Value {
    json!({
        "name": "py", "runtime": "python3", "url": code,
        "handler": "index.handler", "initializer": "index.initializer", "signature": "v1",
        "environments": [{"key": "GREETING", "value": "hello"}],
        "resourceLimit": {"memory": 128 << 20},
        "worker": worker,
    })
}

fn disposable(extra: Value) -> Value {
    let mut w = json!({"reservationCount": 0, "replicaCountLimit": 2, "disposable": true});
    if let (Some(w), Some(extra)) = (w.as_object_mut(), extra.as_object()) {
        w.extend(extra.clone());
    }
    w
}

fn wait_seed_ready(n: &Noslate, count: usize) {
    wait_until(WAIT, "the seed is ready", || {
        n.log_count(&["[turf seed=", "] ready after "]) >= count
    });
}

/// The pid in the `[turf seed=<id> pid=<pid>] started` line number `index`.
fn seed_pid(n: &Noslate, index: usize) -> i32 {
    let lines: Vec<String> = n
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("[turf seed=") && l.ends_with("] started"))
        .collect();
    let line = &lines[index];
    let at = line.find(" pid=").expect("pid in the seed line") + 5;
    line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("a pid")
}

fn invoke_json(n: &Noslate) -> Value {
    let r = n.invoke(b"{}", &[("x-fc-function-name", "py")]);
    assert_eq!(r.status, 200, "{}", r.brief());
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.brief()))
}

#[test]
fn forked_workers_are_the_runtimes_children_with_their_own_init_randomness_logs_and_cgroup() {
    require_python();
    let code = code_dir(MODULE);
    let n = Noslate::start(&json!([profile(code.path(), disposable(json!({})))]));
    wait_seed_ready(&n, 1);
    let seed = seed_pid(&n, 0);
    let answers: Vec<Value> = (0..4).map(|_| invoke_json(&n)).collect();
    let mut pids = HashSet::new();
    let mut draws = HashSet::new();
    for a in &answers {
        let pid = a["pid"].as_i64().unwrap();
        assert!(pids.insert(pid), "a worker served twice: {answers:?}");
        // Forked from the seed: the module was imported there, once.
        assert_eq!(a["import_pid"], json!(seed), "{a}");
        assert_eq!(a["at_import"], answers[0]["at_import"], "{a}");
        // Reparented to the runtime, which reaps it.
        assert_eq!(a["ppid"], json!(n.pid()), "{a}");
        // The initializer ran in the worker itself.
        assert_eq!(a["init_pid"], json!(pid), "{a}");
        assert!(
            draws.insert(a["r"].to_string()),
            "random repeated: {answers:?}"
        );
        assert!(
            draws.insert(a["R"].to_string()),
            "Random() repeated: {answers:?}"
        );
        assert_eq!(a["greeting"], "hello");
        assert_eq!(a["cwd"], json!(code.path()));
        let wid = a["wid"].as_str().unwrap();
        // Its own log files.
        let stdout = n.dir().join("logs").join("py").join(wid).join("stdout");
        wait_until(WAIT, "the forked worker's stdout is written", || {
            std::fs::read_to_string(&stdout).is_ok_and(|t| t.contains(&format!("stdout of {wid}")))
        });
        // Its own cgroup, when the runtime uses cgroups here.
        let cgroups = a["cgroups"].as_str().unwrap();
        if cgroups.contains("/noslate/") {
            let memory = cgroups
                .lines()
                .find(|l| l.contains("memory"))
                .unwrap_or_default();
            assert!(memory.contains(wid), "not in its own cgroup: {cgroups}");
        }
    }
    assert_eq!(n.wait_log_count(&["] forked from its seed"], 4), 4);
    // Every worker was reaped by the runtime (each was disposable).
    wait_until(WAIT, "the forked workers are reaped", || {
        pids.iter().all(|&p| !is_alive(p as i32))
    });
    n.wait_no_zombies();
    assert!(is_alive(seed));
    let (ok, stats, err) = n.cli(&["stats"]);
    assert!(ok, "{err}");
    let stats: Value = serde_json::from_str(&stats).unwrap();
    let view = &stats["functions"]["py"]["seed"];
    assert_eq!(view["state"], "ready", "{stats}");
    assert_eq!(view["pid"], json!(seed), "{stats}");
    assert_eq!(view["forks"], 4, "{stats}");
}

#[test]
fn a_killed_seed_is_restarted_and_workers_cold_start_meanwhile() {
    require_python();
    let code = code_dir(MODULE);
    let n = Noslate::start(&json!([profile(code.path(), disposable(json!({})))]));
    wait_seed_ready(&n, 1);
    let first = seed_pid(&n, 0);
    signal(first, libc::SIGKILL);
    wait_until(WAIT, "the seed is restarted", || {
        n.log_count(&["[turf seed=", "] started"]) >= 2
    });
    // Served whatever the seed is doing: forked or cold.
    let a = invoke_json(&n);
    assert_eq!(a["init_pid"], a["pid"]);
    wait_seed_ready(&n, 2);
    let second = seed_pid(&n, 1);
    assert_ne!(first, second);
    let b = invoke_json(&n);
    assert_eq!(b["import_pid"], json!(second), "{b}");
    assert_eq!(b["ppid"], json!(n.pid()), "{b}");
}

#[test]
fn an_import_error_falls_back_to_cold_starts_that_name_the_file_and_line() {
    require_python();
    let code = code_dir("import os\n\ndef handler(event, context):\n    return 1 +\n");
    let mut p = profile(code.path(), disposable(json!({})));
    p["initializer"] = Value::Null;
    let n = Noslate::start(&json!([p]));
    wait_until(WAIT, "the seed reports the import error", || {
        n.log_count(&["[turf seed=", "importing the function failed"]) >= 1
    });
    let r = n.invoke(b"{}", &[("x-fc-function-name", "py")]);
    assert_eq!(r.status, 404, "{}", r.brief());
    let text = r.text();
    assert!(text.contains("index.py") && text.contains(":4"), "{text}");
    // Not retried for the same code: one seed only.
    assert_eq!(n.log_count(&["[turf seed=", "] started"]), 1);
    assert_eq!(n.log_count(&["] forked from its seed"]), 0);
}

#[test]
fn disable_seed_starts_every_worker_cold() {
    require_python();
    let code = code_dir(MODULE);
    let n = Noslate::start(&json!([profile(
        code.path(),
        disposable(json!({"disableSeed": true}))
    )]));
    for _ in 0..2 {
        let a = invoke_json(&n);
        assert_eq!(a["import_pid"], a["pid"], "{a}");
    }
    assert_eq!(n.log_count(&["[turf seed="]), 0);
}

#[test]
fn stopping_the_runtime_stops_the_seed_and_its_workers() {
    require_python();
    let code = code_dir(MODULE);
    let n = Noslate::start(&json!([profile(
        code.path(),
        json!({"reservationCount": 0, "replicaCountLimit": 2})
    )]));
    wait_seed_ready(&n, 1);
    let seed = seed_pid(&n, 0);
    let worker = invoke_json(&n)["pid"].as_i64().unwrap() as i32;
    assert_eq!(n.wait_log_count(&["] forked from its seed"], 1), 1);
    let stop = n.send(&common::Req::new("GET", "/pre-stop"));
    assert_eq!(stop.status, 200, "{}", stop.brief());
    assert!(!is_alive(seed), "the seed outlived /pre-stop");
    assert!(!is_alive(worker), "the forked worker outlived /pre-stop");
    n.wait_no_zombies();
}

#[test]
fn new_code_or_environment_replaces_the_seed_and_removal_stops_it() {
    require_python();
    let code = code_dir(&MODULE.replace(
        "\"greeting\": os.environ.get(\"GREETING\"),",
        "\"greeting\": os.environ.get(\"GREETING\"), \"region\": os.environ.get(\"REGION_TAG\"),",
    ));
    let n = Noslate::start(&json!([profile(code.path(), disposable(json!({})))]));
    wait_seed_ready(&n, 1);
    let first = seed_pid(&n, 0);
    let env = n.dir().join("env.json");
    std::fs::write(&env, json!({"REGION_TAG": "east"}).to_string()).unwrap();
    let (ok, _, err) = n.cli(&["env", "set", env.to_str().unwrap()]);
    assert!(ok, "{err}");
    wait_seed_ready(&n, 2);
    let second = seed_pid(&n, 1);
    wait_until(WAIT, "the old seed is gone", || !is_alive(first));
    let a = invoke_json(&n);
    assert_eq!(a["region"], "east", "{a}");
    assert_eq!(a["import_pid"], json!(second), "{a}");
    // Removing the function stops its seed.
    let other = TempDir::new();
    std::fs::write(other.path().join("index.py"), MODULE).unwrap();
    let mut p = profile(other.path(), disposable(json!({"disableSeed": true})));
    p["name"] = json!("other");
    let set = n.dir().join("set.json");
    std::fs::write(&set, json!([p]).to_string()).unwrap();
    let (ok, _, err) = n.cli(&["functions", "set", set.to_str().unwrap()]);
    assert!(ok, "{err}");
    wait_until(WAIT, "the removed function's seed is gone", || {
        !is_alive(second)
    });
}

#[test]
fn isolation_with_pid_namespaces_turns_warm_fork_off_and_says_why() {
    require_python();
    let out = std::process::Command::new(binary())
        .args(["serve", "--probe"])
        .output()
        .expect("run noslate serve --probe");
    let caps: Value = serde_json::from_slice(&out.stdout).expect("the probe prints JSON");
    let code = code_dir(MODULE);
    let n = Noslate::builder()
        .functions(&json!([profile(code.path(), disposable(json!({})))]))
        // As root: the Python interpreter may live where `nobody` cannot run it (pyenv in /root).
        .config(&json!({"turf": {"isolation": true, "user": "root"}}))
        .start();
    let a = invoke_json(&n);
    assert_eq!(a["init_pid"], a["pid"], "{a}");
    if caps["namespaces"]["available"] == true {
        assert_eq!(n.log_count(&["warm fork is off", "PID namespace"]), 1);
        assert_eq!(n.log_count(&["[turf seed="]), 0);
    } else {
        // No namespaces here: seeds work under the rest of the isolation (user, seccomp).
        wait_seed_ready(&n, 1);
        let b = invoke_json(&n);
        assert_eq!(b["import_pid"], json!(seed_pid(&n, 0)), "{b}");
    }
}
