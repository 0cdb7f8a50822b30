//! A hostile function against the promises the runtime makes by default (no `turf.isolation`):
//! when the runtime is root, a worker runs as `turf.user` without capabilities, so it cannot
//! read the runtime's `/proc` environment or descriptors, cannot talk to the admin socket,
//! cannot signal the runtime, cannot write another function's code (a directory, or a package
//! unpacked into the runtime's cache), cannot plant an entry in that cache, and cannot read
//! another function's logs. The fixture (`tests/fixtures/hostile`) tries each and reports what
//! worked.

mod common;

use common::{Noslate, Req, WAIT, binary, fixture_dir, profile, wait_until};
use serde_json::{Value, json};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// `noslate serve --probe` for this runtime's directories and profiles.
fn probe(ns: &Noslate, functions: &Value) -> Value {
    let file = ns.dir().join("probe-functions.json");
    std::fs::write(&file, functions.to_string()).unwrap();
    let out = std::process::Command::new(binary())
        .args(["serve", "--probe", "--functions"])
        .arg(&file)
        .env("NOSLATE_WORKDIR", ns.dir().join("work"))
        .env("NOSLATE_LOGDIR", ns.dir().join("logs"))
        .output()
        .expect("run noslate serve --probe");
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).expect("the probe prints JSON")
}

/// The hostile function, a victim served from a directory and one served from `package`, a
/// zip (see [`talk_package`]).
fn functions(hostile_reservation: u32, package: &Path) -> Value {
    let mut hostile = profile("hostile", "hostile");
    hostile["worker"]["reservationCount"] = json!(hostile_reservation);
    let mut packaged = profile("packaged", "talk");
    packaged["url"] = json!(format!("file://{}", package.display()));
    json!([hostile, profile("victim", "talk"), packaged])
}

/// Zips the `talk` fixture into `dir` (python's `zipfile`); returns the zip's path.
fn talk_package(dir: &Path) -> PathBuf {
    common::require_python();
    let zip = dir.join("talk.zip");
    let source = fixture_dir("talk").join("index.js");
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import zipfile\nwith zipfile.ZipFile({:?}, 'w', zipfile.ZIP_DEFLATED) as z:\n    \
             z.write({:?}, 'index.js')\n",
            zip.display().to_string(),
            source.display().to_string()
        ))
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    zip
}

/// The directory the packaged victim's code was unpacked into, in the runtime's cache.
fn unpacked_package(ns: &Noslate) -> PathBuf {
    let cache = ns.dir().join("work/bundles");
    let entries: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(entries.len(), 1, "one package in the cache: {entries:?}");
    entries[0].join("code")
}

/// Has the victim write a line into its log file, then the hostile function attack; returns
/// its report.
fn attack(ns: &Noslate) -> Value {
    let said = ns.invoke(
        b"",
        &[("x-noslate-function", "victim"), ("x-say", "victim-secret")],
    );
    assert_eq!(said.status, 200, "{}", said.brief());
    let packaged = ns.invoke(b"", &[("x-noslate-function", "packaged"), ("x-say", "hi")]);
    assert_eq!(packaged.status, 200, "{}", packaged.brief());
    let logs = ns.dir().join("logs").join("victim");
    let log = logs.join("victim-1").join("stdout");
    wait_until(WAIT, "the victim's line reaches its log file", || {
        std::fs::read_to_string(&log).is_ok_and(|s| s.contains("victim-secret"))
    });
    let resp = ns.send(
        &Req::new("POST", "/invoke")
            .header("x-noslate-function", "hostile")
            .header(
                "x-admin-socket",
                ns.dir().join("work/noslated.sock").to_string_lossy(),
            )
            .header("x-victim-code", fixture_dir("talk").to_string_lossy())
            .header("x-victim-log", log.to_string_lossy())
            .header("x-victim-logs", logs.to_string_lossy())
            .header("x-victim-package", unpacked_package(ns).to_string_lossy())
            .header(
                "x-cache-root",
                ns.dir().join("work/bundles").to_string_lossy(),
            ),
    );
    assert_eq!(resp.status, 200, "{}", resp.brief());
    resp.json()
}

fn assert_every_attempt_failed(ns: &mut Noslate, report: &Value) {
    assert_eq!(
        report["ppid"],
        ns.pid(),
        "the runtime is the parent: {report}"
    );
    assert_ne!(
        report["uid"], 0,
        "the worker does not run as root: {report}"
    );
    for attempt in [
        "readEnviron",
        "listFds",
        "signalProbe",
        "putFunctions",
        "putEnv",
        "writeCode",
        "writePackage",
        "changePackage",
        "plantPackage",
        "readLog",
        "listLogs",
        "sigterm",
    ] {
        let result = report[attempt].as_str().unwrap_or_default();
        assert!(!result.starts_with("ok"), "{attempt} succeeded: {report}");
        assert!(!result.is_empty(), "{attempt} was not tried: {report}");
    }
    assert_eq!(report["sigterm"], "EPERM", "{report}");
    assert_eq!(report["readEnviron"], "EACCES", "{report}");
    assert_eq!(report["putFunctions"], "EACCES", "{report}");
    assert!(!fixture_dir("talk").join("pwned.js").exists());
    let package = unpacked_package(ns);
    assert!(!package.join("pwned.js").exists());
    let code = std::fs::read_to_string(package.join("index.js")).unwrap();
    assert_eq!(
        code,
        std::fs::read_to_string(fixture_dir("talk").join("index.js")).unwrap(),
        "the unpacked package is unchanged"
    );

    // The runtime is alive, still serves both functions, and kept its configuration.
    assert!(ns.is_running(), "the runtime survived");
    let said = ns.invoke(b"", &[("x-noslate-function", "victim"), ("x-say", "again")]);
    assert_eq!(said.status, 200, "{}", said.brief());
    let (ok, out, err) = ns.cli(&["ps", "--json"]);
    assert!(ok, "the admin socket still answers its owner: {err}");
    let workers: Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = workers
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["function"].as_str())
        .collect();
    assert!(
        names.contains(&"victim") && names.contains(&"hostile"),
        "{workers}"
    );
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn a_hostile_function_breaks_none_of_the_default_promises() {
    let tmp = common::TempDir::new();
    let profiles = functions(1, &talk_package(tmp.path()));
    let mut ns = Noslate::start(&profiles);
    let caps = probe(&ns, &profiles);
    if caps["setuid"]["available"] != true {
        // Not root: the promises cannot hold, and start-up says which and why.
        eprintln!("setuid unavailable here: {}", caps["setuid"]);
        assert!(ns.log_count(&["worker uid differs: not enforced"]) > 0);
        return;
    }
    let report = attack(&ns);
    eprintln!("hostile report: {report}");
    assert_every_attempt_failed(&mut ns, &report);

    // What makes it so, on disk: private logs, a 0600 socket, no world-writable directory.
    let logs = ns.dir().join("logs");
    assert_eq!(mode(&logs.join("victim/victim-1")), 0o700);
    assert_eq!(mode(&logs.join("victim/victim-1/stdout")), 0o600);
    assert_eq!(mode(&logs.join("resource_usage.log")), 0o600);
    let socket = ns.dir().join("work/noslated.sock");
    assert_eq!(mode(&socket), 0o600);
    assert_eq!(
        std::fs::metadata(&socket).unwrap().uid(),
        std::fs::metadata(ns.dir().join("work")).unwrap().uid()
    );
    for dir in [ns.dir().join("work"), logs] {
        assert_eq!(
            mode(&dir) & 0o022,
            0,
            "{} is not writable by others",
            dir.display()
        );
    }

    // The probe agrees, guarantee by guarantee.
    let guarantees = &caps["guarantees"];
    for name in [
        "workerUidDiffers",
        "capsDropped",
        "adminSocketUnreachable",
        "runtimeProcUnreadable",
        "cannotSignalRuntime",
        "logsPrivate",
        "codeNotWritable",
    ] {
        let g = &guarantees[name];
        assert!(g["reason"].is_string(), "{name}: {guarantees}");
        if name == "capsDropped" && caps["bounding"]["available"] != true {
            continue;
        }
        assert_eq!(g["enforced"], true, "{name}: {guarantees}");
    }
    assert_eq!(guarantees["workerUid"], report["uid"], "{guarantees}");
    assert_eq!(ns.log_count(&["not enforced"]), 0, "no start-up warning");
}

#[test]
fn a_hostile_function_started_from_a_spare_worker_is_as_powerless() {
    let tmp = common::TempDir::new();
    let profiles = functions(0, &talk_package(tmp.path()));
    let mut ns = Noslate::builder()
        .functions(&profiles)
        .config(&json!({ "turf": { "spareWorkers": 1 } }))
        .start();
    if probe(&ns, &profiles)["setuid"]["available"] != true {
        eprintln!("setuid unavailable here");
        return;
    }
    wait_until(WAIT, "a spare worker is ready", || {
        ns.log_count(&["spare=", "ready after"]) > 0
    });
    let report = attack(&ns);
    eprintln!("hostile report: {report}");
    assert_every_attempt_failed(&mut ns, &report);
    let (_, out, _) = ns.cli(&["ps", "--json"]);
    let workers: Value = serde_json::from_str(&out).unwrap();
    let hostile = workers
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["function"] == "hostile")
        .cloned()
        .unwrap_or_default();
    eprintln!("hostile worker: {hostile}");
    assert_eq!(hostile["enforcement"]["user"], "applied", "{hostile}");
}

#[test]
fn naming_the_runtime_user_keeps_workers_privileged_and_says_so() {
    let tmp = common::TempDir::new();
    let profiles = functions(1, &talk_package(tmp.path()));
    let ns = Noslate::builder()
        .functions(&profiles)
        .config(&json!({ "turf": { "user": "root" } }))
        .start();
    if ns.log_count(&["workers run as uid"]) > 0 {
        panic!("workers must not switch to root's uid");
    }
    assert!(
        ns.log_count(&["workers run as the runtime's own user"]) > 0
            && ns.log_count(&["worker uid differs: not enforced"]) > 0,
        "{:?}",
        ns.stderr_lines()
    );
}

const PY_HOSTILE: &str = r#"
import os

def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as e:
        return os.strerror(e.errno)

def handler(event, context):
    ppid = os.getppid()
    status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
    return {
        "uid": os.getuid(), "ppid": ppid, "groups": os.getgroups(),
        "capEff": status["CapEff"].strip(), "capBnd": status["CapBnd"].strip(),
        "noNewPrivs": status["NoNewPrivs"].strip(),
        "signal": attempt(lambda: os.kill(ppid, 0)),
        "environ": attempt(lambda: open("/proc/%d/environ" % ppid, "rb").read()),
    }
"#;

#[test]
fn a_worker_forked_by_a_python_seed_is_as_powerless() {
    common::require_python();
    let code = common::TempDir::new();
    std::fs::set_permissions(code.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(code.path().join("index.py"), PY_HOSTILE).unwrap();
    let profiles = json!([{
        "name": "py", "runtime": "python3", "url": code.path(),
        "handler": "index.handler", "signature": "v1", "environments": [],
        "worker": {"reservationCount": 0, "replicaCountLimit": 1},
    }]);
    let ns = Noslate::start(&profiles);
    if probe(&ns, &profiles)["setuid"]["available"] != true {
        eprintln!("setuid unavailable here");
        return;
    }
    wait_until(WAIT, "the seed is ready", || {
        ns.log_count(&["[turf seed=", "] ready after "]) > 0
    });
    let resp = ns.invoke(b"{}", &[("x-noslate-function", "py")]);
    assert_eq!(resp.status, 200, "{}", resp.brief());
    let report = resp.json();
    eprintln!("python report: {report}");
    let (_, out, _) = ns.cli(&["ps", "--json"]);
    let workers: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(workers[0]["start"], "forked", "{workers}");
    assert_eq!(
        report["ppid"],
        ns.pid(),
        "reparented to the runtime: {report}"
    );
    assert_ne!(report["uid"], 0, "{report}");
    assert_eq!(report["groups"], json!([]), "{report}");
    assert_eq!(report["capEff"], "0000000000000000", "{report}");
    assert_eq!(report["noNewPrivs"], "1", "{report}");
    assert_ne!(report["signal"], "ok", "{report}");
    assert_ne!(report["environ"], "ok", "{report}");
}
