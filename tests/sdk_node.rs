//! The Node.js SDK (`sdk/node`, `require(process.env.NOSLATE_PATH).NoslatedClient`) against the
//! real runtime: each test starts noslate, runs one script of `tests/sdk/` with Node.js, and
//! expects every check in it to pass (the script prints `ok NAME` per check, `FAIL NAME: ...` and
//! exits 1 on the first failure).

mod common;

use common::{Noslate, TempDir, fixture_dir, profile};
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long one script may run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/node")
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(name)
}

/// Starts `tests/sdk/<name>` against the admin socket at `socket`.
fn spawn_script(name: &str, socket: &Path) -> Child {
    Command::new("node")
        .arg(script(name))
        .env("NOSLATE_PATH", sdk_dir())
        .env("NOSLATE_WORKDIR", socket.parent().unwrap_or(Path::new("/")))
        .env("FIXTURES", fixture_dir(""))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node")
}

/// Lines of the script's stdout, as they come.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Reads the script's lines until it exits; every check must pass. `on_line` may act on a
/// line (answering the script on its stdin).
fn finish(
    mut child: Child,
    lines: &mpsc::Receiver<String>,
    mut on_line: impl FnMut(&str, &mut Child),
) {
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let mut seen = Vec::new();
    loop {
        match lines.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                on_line(&line, &mut child);
                seen.push(line);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().expect("wait for node");
                let mut err = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
                }
                assert!(
                    status.success() && !seen.iter().any(|l| l.starts_with("FAIL")),
                    "the script failed ({status}):\n{}\nstderr:\n{err}",
                    seen.join("\n")
                );
                assert!(seen.iter().any(|l| l.starts_with("ok ")), "no check ran");
                eprintln!("{}", seen.join("\n"));
                return;
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the script did not finish within {SCRIPT_TIMEOUT:?}:\n{}",
                seen.join("\n")
            );
        }
    }
}

fn run_script(name: &str, ns: &Noslate) {
    let mut child = spawn_script(name, &ns.admin_socket());
    let lines = lines_of(&mut child);
    finish(child, &lines, |_, _| {});
}

fn quiet() -> serde_json::Value {
    json!({"turf": {"spareWorkers": 0}, "systemCircuitBreaker": {"systemLoad1Limit": 1000}})
}

#[test]
fn invoke_streams_both_ways_and_reports_errors_as_noslate_does() {
    let mut drip = profile("drip", "drip");
    drip["worker"]["maxActivateRequests"] = json!(8);
    let mut bytes = profile("bytes", "bytes");
    bytes["worker"]["maxActivateRequests"] = json!(8);
    let mut echo = profile("echo", "echo");
    echo["worker"]["maxActivateRequests"] = json!(64);
    let ns = Noslate::builder()
        .functions(&json!({
            "functions": [echo, drip, bytes],
            "services": [{"name": "front", "selector": {"functionName": "echo"}}]
        }))
        .config(&quiet())
        .start();
    run_script("invoke.js", &ns);
}

#[test]
fn profiles_services_and_environment_follow_noslates_semantics() {
    let ns = Noslate::builder()
        .functions(&json!([profile("echo", "echo")]))
        .config(&quiet())
        .start();
    run_script("config.js", &ns);
}

#[test]
fn health_follows_the_breaker_and_a_missing_runtime_is_reported() {
    let mut drip = profile("drip", "drip");
    drip["worker"]["maxActivateRequests"] = json!(8);
    let ns = Noslate::builder()
        .functions(&json!([drip]))
        .config(&json!({
            "turf": {"spareWorkers": 0},
            "systemCircuitBreaker": {"requestCountLimit": 2, "systemLoad1Limit": 1000}
        }))
        .start();
    run_script("health.js", &ns);
}

#[test]
fn the_event_loop_spins_briefly_for_heads_and_never_for_a_slow_function() {
    let ns = Noslate::builder()
        .functions(&json!([profile("drip", "drip")]))
        .config(&quiet())
        .start();
    run_script("busy_poll.js", &ns);
}

#[test]
fn the_sdks_http_client_survives_answers_split_stalled_cut_and_garbled() {
    // No runtime: the script serves a fake one on the admin socket's path.
    let dir = TempDir::new();
    let mut child = spawn_script("wire.js", &dir.path().join("noslated.sock"));
    let lines = lines_of(&mut child);
    finish(child, &lines, |_, _| {});
}

#[test]
fn a_restarted_runtime_gets_back_what_the_client_had_set() {
    let start = || {
        Noslate::builder()
            .functions(&json!([profile("echo", "echo")]))
            .config(&quiet())
            .start()
    };
    // The client's socket path stays; the runtime behind it changes.
    let link_dir = TempDir::new();
    let link = link_dir.path().join("noslated.sock");
    let first = start();
    std::os::unix::fs::symlink(first.admin_socket(), &link).expect("link the socket");
    let mut child = spawn_script("restart.js", &link);
    let lines = lines_of(&mut child);
    let mut runtimes = vec![first];
    finish(child, &lines, |line, child| {
        if line == "restart now" {
            runtimes.clear();
            let second = start();
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(second.admin_socket(), &link).expect("relink the socket");
            runtimes.push(second);
            let stdin = child.stdin.as_mut().expect("stdin");
            stdin.write_all(b"restarted\n").expect("tell the script");
        }
    });
}
