//! The worker sandbox (turf): what the probe reports, limits enforced by cgroups where the
//! machine allows (the fallback otherwise), a contained fork bomb, grandchildren that die with
//! their worker, no inherited descriptors, opt-in isolation, and cgroups that never outlive
//! their runtime.

mod common;

use common::{Noslate, Req, WAIT, binary, is_alive, profile, signal, wait_until};
use serde_json::{Value, json};
use std::path::Path;

fn probe() -> Value {
    let out = std::process::Command::new(binary())
        .args(["serve", "--probe"])
        .output()
        .expect("run noslate serve --probe");
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).expect("the probe prints JSON")
}

fn ask(ns: &Noslate, what: &str) -> Value {
    let resp = ns.send(&Req::new("POST", "/invoke").header("x-probe", what));
    assert_eq!(resp.status, 200, "{}", resp.brief());
    resp.json()
}

fn enforcement(ns: &Noslate) -> Value {
    let socket = ns.dir().join("work").join("noslated.sock");
    let out = std::process::Command::new(binary())
        .args(["ps", "--json", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    let workers: Value = serde_json::from_slice(&out.stdout).unwrap();
    workers[0]["enforcement"].clone()
}

#[test]
fn the_probe_reports_each_feature_with_a_reason_when_missing() {
    let caps = probe();
    for feature in ["namespaces", "seccomp", "setuid"] {
        let f = &caps[feature];
        assert!(f["available"].is_boolean(), "{feature}: {caps}");
        if f["available"] == false {
            assert!(
                f["reason"].is_string(),
                "{feature} says why it is missing: {caps}"
            );
        }
    }
    for controller in ["memory", "cpu", "pids"] {
        assert!(
            caps["cgroup"][controller]["available"].is_boolean(),
            "{caps}"
        );
    }
}

#[test]
fn turf_worker_channel_pipe_gives_workers_pipes() {
    let ns = Noslate::builder()
        .functions(&json!([profile("fds", "sandbox")]))
        .config(&json!({ "turf": { "workerChannel": "pipe" } }))
        .start();
    let me = ask(&ns, "whoami");
    let kinds: Vec<&str> = (me["fds"].as_array().unwrap().iter())
        .filter(|p| p[0] == 3 || p[0] == 4)
        .filter_map(|p| p[1].as_str())
        .collect();
    assert_eq!(kinds.len(), 2, "{me}");
    assert!(kinds.iter().all(|k| k.starts_with("pipe:")), "{kinds:?}");
}

#[test]
fn a_worker_inherits_no_descriptor_of_the_runtime() {
    let ns = Noslate::start(&json!([profile("fds", "sandbox")]));
    let me = ask(&ns, "whoami");
    for pair in me["fds"].as_array().unwrap() {
        let target = pair[1].as_str().unwrap_or_default();
        // Its protocol channels (fds 3 and 4) are sockets of its own; nothing else is.
        assert!(
            !target.starts_with("socket:") || pair[0] == 3 || pair[0] == 4,
            "a worker holds none of the runtime's sockets: {pair}"
        );
        assert!(
            !target.contains("resource_usage.log") && !target.ends_with("noslated.sock"),
            "{pair}"
        );
    }
    let fd = |n: i64| {
        me["fds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p[0] == n)
            .map(|p| p[1].as_str().unwrap_or_default().to_owned())
    };
    let (fd3, fd4) = (fd(3).unwrap(), fd(4).unwrap());
    assert!(
        fd3.starts_with("socket:"),
        "fd 3 is the request channel: {fd3}"
    );
    assert!(
        fd4.starts_with("socket:"),
        "fd 4 is the response channel: {fd4}"
    );
    assert_ne!(fd3, fd4, "one channel each way");
    assert!(
        fd(1).unwrap().ends_with("/stdout"),
        "stdout goes to its log file"
    );
}

#[test]
fn a_fork_bomb_is_contained_by_the_pids_limit() {
    let mut p = profile("bomb", "sandbox");
    p["resourceLimit"] = json!({ "pids": 24 });
    let ns = Noslate::start(&json!([p]));
    let result = ask(&ns, "forkbomb");
    let mechanism = enforcement(&ns)["pids"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if mechanism == "cgroup" {
        assert!(
            result["started"].as_u64().unwrap() < 24 && !result["failed"].is_null(),
            "the cgroup stops the fork loop: {result}"
        );
    } else {
        // Root without a pids cgroup: RLIMIT_NPROC does not bind root, and ps says so.
        assert_eq!(mechanism, "none", "{result}");
        eprintln!("pids cgroup unavailable here; the fallback is reported as {mechanism}");
    }
    // The runtime is unharmed and keeps serving.
    assert_eq!(ns.send(&Req::new("GET", "/healthz")).status, 200);
}

#[test]
fn grandchildren_die_when_their_worker_stops() {
    let ns = Noslate::start(&json!([profile("family", "sandbox")]));
    let grandchild = ask(&ns, "grandchild")["pid"].as_i64().unwrap();
    let grandchild = i32::try_from(grandchild).unwrap();
    assert!(is_alive(grandchild));
    assert_eq!(ns.send(&Req::new("GET", "/pre-stop")).status, 200);
    wait_until(WAIT, "the grandchild is gone", || !is_alive(grandchild));
}

#[test]
fn memory_is_enforced_by_a_cgroup_where_the_machine_allows() {
    let caps = probe();
    let ns = Noslate::start(&json!([profile("mem", "sandbox")]));
    let e = enforcement(&ns);
    let expected = if caps["cgroup"]["memory"]["available"] == true {
        "cgroup"
    } else {
        "poll"
    };
    assert_eq!(e["memory"], expected, "{e}");
    assert_eq!(e["nofile"], "rlimit", "{e}");
}

#[test]
fn isolation_runs_workers_as_nobody_in_their_own_namespaces_behind_seccomp() {
    let caps = probe();
    let ns = Noslate::builder()
        .functions(&json!([profile("jail", "sandbox")]))
        .config(&json!({ "turf": { "isolation": true, "user": "nobody" } }))
        .start();
    let e = enforcement(&ns);
    let me = ask(&ns, "whoami");
    if caps["setuid"]["available"] == true {
        assert_eq!(me["uid"], 65534, "runs as nobody: {me}");
    } else {
        assert!(
            e["user"]
                .as_str()
                .unwrap_or_default()
                .starts_with("skipped"),
            "{e}"
        );
    }
    if caps["namespaces"]["available"] == true {
        assert_eq!(me["pid"], 1, "first process of its own pid namespace: {me}");
        let writes = ask(&ns, "write");
        assert_ne!(
            writes["code"], "ok",
            "the code directory is read-only: {writes}"
        );
        assert_eq!(writes["tmp"], "ok", "a private writable /tmp: {writes}");
    } else {
        assert!(
            e["namespaces"]
                .as_str()
                .unwrap_or_default()
                .starts_with("skipped"),
            "{e}"
        );
    }
    if caps["seccomp"]["available"] == true {
        let denied = ask(&ns, "unshare");
        assert_ne!(
            denied["status"], 0,
            "unshare is denied by the filter: {denied}"
        );
        assert_eq!(e["seccomp"], "applied", "{e}");
    }
}

#[test]
fn cgroups_are_removed_with_their_runtime_and_after_a_crash() {
    let caps = probe();
    let Some(memory_path) = caps["cgroup"]["memory"]["path"].as_str().map(str::to_owned) else {
        eprintln!("no memory cgroup here: nothing to leave behind");
        return;
    };
    // A leftover of a runtime that crashed (a pid that is not a live noslate).
    let parent = Path::new(&memory_path).parent().unwrap().to_path_buf();
    let stale = parent.join("rt-2147483000");
    let _ = std::fs::create_dir_all(&stale);
    let mut ns = Noslate::start(&json!([profile("cg", "sandbox")]));
    wait_until(WAIT, "the stale cgroup is cleaned at start-up", || {
        !stale.exists()
    });
    let pid = ns.pid();
    let own = parent.join(format!("rt-{pid}"));
    wait_until(WAIT, "the runtime's workers have a cgroup", || own.exists());
    signal(pid, libc::SIGTERM);
    wait_until(WAIT, "the runtime exits", || !ns.is_running());
    assert!(
        !own.exists(),
        "no cgroup outlives its runtime: {}",
        own.display()
    );
}
