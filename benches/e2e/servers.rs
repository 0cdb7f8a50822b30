//! The servers behind the targets: noslate with the `hello` function, Node.js `http` direct,
//! and the round set-up that starts them and fills in each target's address and request.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;
use crate::config::Config;
use crate::rounds::{NTARGETS, Target};

pub const BODY: &[u8] = b"hello";

/// One line out of a start-up error: the line that says a runtime is not supported, else the
/// first line with the last line of the process's output tail.
pub fn why(e: &str) -> String {
    let clean = |l: &str| l.trim_start_matches("    | ").trim().to_string();
    if let Some(l) = e.lines().rev().find(|l| l.contains("not supported")) {
        return clean(l);
    }
    let first = clean(e.lines().next().unwrap_or_default());
    let rest: Vec<&str> = e.lines().skip(1).collect();
    match rest.iter().rev().map(|l| clean(l)).find(|l| !l.is_empty()) {
        Some(last) => format!("{first}: {last}"),
        None => first,
    }
}

/// The `hello` function's profile with these `worker` settings (and any other top-level keys
/// in `extra`, such as `resourceLimit` or `rateLimit`).
pub fn hello_profile(worker: Value, extra: Value) -> Value {
    let mut f = json!({
        "name": "hello",
        "runtime": "nodejs",
        "url": function_dir(),
        "handler": "index.handler",
        "signature": "bench",
        "worker": worker,
    });
    if let (Some(f), Value::Object(extra)) = (f.as_object_mut(), extra) {
        f.extend(extra);
    }
    f
}

/// Starts noslate with one function whose worker pool is `reservation` idle workers.
pub fn start_noslate(tmp: &Path, tag: &str, reservation: u32) -> Result<(Proc, u16), String> {
    let worker = json!({
        "reservationCount": reservation,
        "replicaCountLimit": reservation,
        "maxActivateRequests": 64
    });
    let functions = json!([hello_profile(worker, json!({}))]);
    // BENCH_CONFIG: a system config for this runtime, to measure what a setting costs.
    let config = std::env::var("BENCH_CONFIG")
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok());
    start_noslate_with(tmp, tag, &functions, config.as_ref(), true)
}

/// The `enforcement` of the first worker `noslate ps --json` lists for the runtime started
/// under `tag`: which mechanism enforces each limit.
pub fn enforcement(tmp: &Path, tag: &str) -> Option<Value> {
    ps_json(&workdir(tmp, tag))?
        .first()?
        .get("enforcement")
        .cloned()
}

/// `memory=cgroup cpu=none pids=cgroup` from an `enforcement` object.
pub fn fmt_enforcement(e: Option<&Value>) -> String {
    let Some(e) = e else {
        return "unknown (noslate ps --json gave nothing)".into();
    };
    ["memory", "cpu", "pids"]
        .iter()
        .map(|k| format!("{k}={}", e.get(k).and_then(Value::as_str).unwrap_or("?")))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn start_node_direct() -> Result<(Proc, u16), String> {
    start_node_serving(&function_dir(), "node_direct")
}

/// `benches/node_direct.js` serving the handler in `code_dir`.
pub fn start_node_serving(code_dir: &Path, name: &str) -> Result<(Proc, u16), String> {
    let mut cmd = Command::new("node");
    cmd.arg(Path::new(MANIFEST_DIR).join("benches/node_direct.js"))
        .arg("0")
        .env("HELLO_DIR", code_dir);
    let (mut p, rx) = Proc::spawn(name, cmd, bare_port)?;
    let port = p.wait_port(&rx, Duration::from_secs(20))?;
    Ok((p, port))
}

/// The function's code directory: `examples/hello` unless `BENCH_FUNCTION_DIR` says otherwise.
pub fn function_dir() -> PathBuf {
    match std::env::var_os("BENCH_FUNCTION_DIR") {
        Some(d) if !d.is_empty() => fs::canonicalize(&d).unwrap_or_else(|_| PathBuf::from(d)),
        _ => Path::new(MANIFEST_DIR).join("examples/hello"),
    }
}

/// Whether the function exists; waits up to `BENCH_EXAMPLE_WAIT` seconds (default 0) for it.
pub fn wait_for_example() -> bool {
    let f = function_dir().join("index.js");
    let end = Instant::now() + Duration::from_secs(env_num("BENCH_EXAMPLE_WAIT", 0u64));
    loop {
        if f.exists() {
            return true;
        }
        if Instant::now() >= end {
            eprintln!("bench: {} is missing", f.display());
            return false;
        }
        thread::sleep(Duration::from_secs(2));
    }
}

/// The servers behind the round targets; dropping it stops them all.
pub struct Servers {
    /// The runtime of (a) and (b).
    pub main: Option<Proc>,
    /// Node direct (c) and the runtimes of (d) and (e).
    pub others: Vec<Proc>,
    /// Which mechanism enforces each limit in (b)'s and (d)'s workers (`noslate ps --json`).
    pub enforcement_on: Option<Value>,
    pub enforcement_off: Option<Value>,
}

/// The profile of (b), (d) and (e): one worker, reserved and initialized.
pub fn one_worker() -> Value {
    json!({"reservationCount": 1, "replicaCountLimit": 1, "maxActivateRequests": 64})
}

/// Starts the servers of round `round` and fills in each target's address and request. A
/// target that fails keeps its note (the first failure) for the report.
pub fn setup_targets(
    cfg: &Config,
    tmp: &Path,
    have_example: bool,
    targets: &mut [Target; NTARGETS],
    round: usize,
) -> Servers {
    let mut servers = Servers {
        main: None,
        others: Vec::new(),
        enforcement_on: None,
        enforcement_off: None,
    };
    let first_line = |e: &str| Some(e.lines().next().unwrap_or_default().to_string());
    let missing = || Err::<(Proc, u16), String>("examples/hello/index.js missing".into());
    let tag = |name: &str| format!("{name}-r{}", round + 1);
    for t in targets.iter_mut() {
        t.addr = None;
    }
    if cfg.targets.contains(['a', 'b']) {
        match if have_example {
            start_noslate(tmp, &tag("main"), 1)
        } else {
            missing()
        } {
            Ok((p, port)) => {
                targets[0].set(&p, port, "GET", "/healthz", b"", None);
                targets[1].set(&p, port, "POST", "/invoke", BODY, Some(BODY));
                servers.main = Some(p);
                servers.enforcement_on = enforcement(tmp, &tag("main"));
            }
            Err(e) => {
                eprintln!("bench: noslate: {e}");
                targets[0]
                    .note
                    .get_or_insert_with(|| first_line(&e).unwrap_or_default());
                targets[1]
                    .note
                    .get_or_insert_with(|| first_line(&e).unwrap_or_default());
            }
        }
    }
    // (c) node direct, (d) limits off, (e) full scheduling, (f) metrics off, (w) two workers,
    // (x) and (y) FC-shaped requests to noslate and to node direct: one server each.
    for t in targets.iter_mut().skip(2) {
        if !cfg.targets.contains(t.key) {
            continue;
        }
        let started = if !have_example {
            missing()
        } else if t.key == 'c' || t.key == 'y' {
            start_node_direct()
        } else if t.key == 'x' {
            let functions = json!([hello_profile(one_worker(), json!({}))]);
            start_noslate_with(tmp, &tag("fc"), &functions, None, true)
        } else if t.key == 'd' {
            let functions = json!([hello_profile(one_worker(), json!({}))]);
            let config = json!({"turf": {"enforceLimits": false}});
            start_noslate_with(tmp, &tag("nolimits"), &functions, Some(&config), true)
        } else if t.key == 'w' {
            let two =
                json!({"reservationCount": 2, "replicaCountLimit": 2, "maxActivateRequests": 64});
            let functions = json!([hello_profile(two, json!({}))]);
            start_noslate_with(tmp, &tag("two"), &functions, None, true)
        } else if t.key == 'f' {
            let functions = json!([hello_profile(one_worker(), json!({}))]);
            let config = json!({"metrics": {"enabled": false}});
            start_noslate_with(tmp, &tag("nometrics"), &functions, Some(&config), true)
        } else {
            let rate = json!({"rateLimit": {
                "maxTokenCount": 100_000_000u64,
                "tokensPerFill": 100_000_000u64,
                "fillInterval": 1000
            }});
            let functions = json!([hello_profile(one_worker(), rate)]);
            let config = json!({"controlPlane": {"useEmaScaling": true}});
            start_noslate_with(tmp, &tag("sched"), &functions, Some(&config), true)
        };
        match started {
            Ok((p, port)) => {
                t.set(&p, port, "POST", "/invoke", BODY, Some(BODY));
                if t.key == 'x' || t.key == 'y' {
                    t.req = fc_request_bytes("POST", "/invoke", port, BODY);
                }
                servers.others.push(p);
                if t.key == 'd' {
                    servers.enforcement_off = enforcement(tmp, &tag("nolimits"));
                }
            }
            Err(e) => {
                eprintln!("bench: {}: {e}", t.label);
                t.note
                    .get_or_insert_with(|| first_line(&e).unwrap_or_default());
            }
        }
    }
    for t in targets.iter_mut() {
        if !cfg.targets.contains(t.key) {
            t.addr = None;
            t.note = Some("not selected (BENCH_TARGETS)".into());
        }
        t.probe();
    }
    servers
}
