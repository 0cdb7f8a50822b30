//! Code packages: a function's `url` naming a zip, local (`file://x.zip`) or served over HTTP,
//! is fetched and unpacked once per `(url, signature)` into `NOSLATE_WORKDIR/bundles/`, and
//! workers run from it. A package that cannot be fetched or unpacked fails only its function,
//! with `CodeFetchFailed` naming the cause; entries no profile uses are removed.

mod common;

use common::{Noslate, Req, WAIT, assert_function_error, profile, wait_until};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The handler every package holds: answers with its version and working directory.
fn handler(version: &str) -> String {
    format!(
        "exports.handler = (ctx, req, res) => {{ req.resume(); res.end(JSON.stringify({{ version: {version:?}, cwd: process.cwd() }})); }};\n"
    )
}

/// Runs a python3 script that writes a zip `z` to `path` (python's `zipfile`, no `zip` CLI).
fn python_zip(path: &Path, script: &str) {
    let program = format!(
        "import zipfile\nz = zipfile.ZipFile({:?}, 'w', zipfile.ZIP_DEFLATED)\n{script}\nz.close()\n",
        path.display().to_string()
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(program)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A package with `index.js` answering `version` (in a sub-directory too, as zips often do).
fn package(dir: &Path, name: &str, version: &str) -> PathBuf {
    let path = dir.join(name);
    let script = format!(
        "z.writestr('index.js', {:?})\nz.writestr('lib/', b'')\nz.writestr('lib/util.js', 'module.exports = 1;')",
        handler(version)
    );
    python_zip(&path, &script);
    path
}

/// What the test server answers for a path.
#[derive(Clone)]
enum Serve {
    Bytes(Vec<u8>),
    /// The answer written in random small pieces, with pauses between some.
    Split(Vec<u8>),
    /// The bytes with no length declared: the body ends at the close.
    Unsized(Vec<u8>),
    /// The bytes after a pause of 700 ms (a fetch that takes a while).
    Late(Vec<u8>),
    /// A head promising 100000 bytes, 10 of them, then nothing until the test ends.
    Stall,
    /// A head promising 100000 bytes, 10 of them, then a close.
    CutShort,
}

/// A tiny HTTP/1.0 file server on an ephemeral port, on threads of the test.
struct FileServer {
    port: u16,
    routes: Arc<Mutex<HashMap<String, Serve>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    stop: Arc<AtomicBool>,
}

impl FileServer {
    fn start() -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let routes: Arc<Mutex<HashMap<String, Serve>>> = Arc::default();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let server = FileServer {
            port,
            routes: Arc::clone(&routes),
            hits: Arc::clone(&hits),
            stop: Arc::clone(&stop),
        };
        listener.set_nonblocking(true).unwrap();
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (routes, hits, stop) =
                            (Arc::clone(&routes), Arc::clone(&hits), Arc::clone(&stop));
                        thread::spawn(move || serve(stream, &routes, &hits, &stop));
                    }
                    Err(_) => thread::park_timeout(Duration::from_millis(10)),
                }
            }
        });
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn set(&self, path: &str, serve: Serve) {
        self.routes.lock().unwrap().insert(path.into(), serve);
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    mut stream: TcpStream,
    routes: &Mutex<HashMap<String, Serve>>,
    hits: &Mutex<HashMap<String, usize>>,
    stop: &AtomicBool,
) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
    *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let serve = routes.lock().unwrap().get(&path).cloned();
    let promise = b"HTTP/1.0 200 OK\r\nContent-Length: 100000\r\n\r\n0123456789";
    let _ = match serve {
        None => stream.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found"),
        Some(Serve::Bytes(bytes)) => {
            let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", bytes.len());
            stream
                .write_all(head.as_bytes())
                .and_then(|()| stream.write_all(&bytes))
        }
        Some(Serve::Split(bytes)) => {
            let mut answer =
                format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", bytes.len()).into_bytes();
            answer.extend_from_slice(&bytes);
            stream.set_nodelay(true).unwrap();
            let mut seed = answer.len() as u64 | 1;
            let mut at = 0;
            let mut result = Ok(());
            while at < answer.len() && result.is_ok() {
                // xorshift: piece sizes 1..=64 in the head, up to 4 KiB after it.
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let most = if at < 64 { 64 } else { 4096 };
                let end = (at + 1 + (seed % most) as usize).min(answer.len());
                result = stream
                    .write_all(&answer[at..end])
                    .and_then(|()| stream.flush());
                if seed.is_multiple_of(4) {
                    thread::park_timeout(Duration::from_millis(1));
                }
                at = end;
            }
            result
        }
        Some(Serve::Unsized(bytes)) => stream
            .write_all(b"HTTP/1.0 200 OK\r\n\r\n")
            .and_then(|()| stream.write_all(&bytes)),
        Some(Serve::Late(bytes)) => {
            let until = Instant::now() + Duration::from_millis(700);
            while Instant::now() < until {
                thread::park_timeout(until - Instant::now());
            }
            let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", bytes.len());
            stream
                .write_all(head.as_bytes())
                .and_then(|()| stream.write_all(&bytes))
        }
        Some(Serve::CutShort) => stream.write_all(promise),
        Some(Serve::Stall) => {
            let _ = stream.write_all(promise);
            let until = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                thread::park_timeout(Duration::from_millis(50));
            }
            Ok(())
        }
    };
}

fn packaged(name: &str, url: &str, signature: &str) -> Value {
    let mut p = profile(name, "echo");
    p["url"] = json!(url);
    p["signature"] = json!(signature);
    p
}

/// Invokes `function` (a long deadline: a fetch is part of its cold start).
fn invoke(ns: &Noslate, function: &str) -> common::Response {
    ns.send(&Req::new("POST", &format!("/invoke/{function}")).header("x-fc-function-timeout", "60"))
}

fn version(ns: &Noslate, function: &str) -> String {
    let resp = invoke(ns, function);
    assert_eq!(resp.status, 200, "{function}: {}", resp.brief());
    resp.json()["version"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The cache's entries (without builds in progress).
fn entries(ns: &Noslate) -> Vec<String> {
    entries_in(&ns.dir().join("work/bundles"))
}

/// The entries of the cache at `root` (without builds in progress).
fn entries_in(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .map(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| !name.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn set_functions(ns: &Noslate, set: &Value) -> Value {
    let path = ns.dir().join(format!("set-{}.json", rand_suffix()));
    std::fs::write(&path, set.to_string()).unwrap();
    let (ok, out, err) = ns.cli(&["functions", "set", &path.to_string_lossy()]);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[test]
fn local_and_http_zips_serve_a_new_signature_serves_new_code_and_unused_entries_go() {
    let scratch = common::TempDir::new();
    let local = package(scratch.path(), "local.zip", "local-v1");
    let remote_v1 = package(scratch.path(), "remote-v1.zip", "remote-v1");
    let remote_v2 = package(scratch.path(), "remote-v2.zip", "remote-v2");
    let server = FileServer::start();
    server.set("/app.zip", Serve::Bytes(std::fs::read(&remote_v1).unwrap()));
    let url = server.url("/app.zip");

    let ns = Noslate::start(&json!([
        packaged("local", &format!("file://{}", local.display()), "l1"),
        packaged("remote", &url, "r1"),
        packaged("twin", &url, "r1"),
    ]));
    assert_eq!(version(&ns, "local"), "local-v1");
    assert_eq!(version(&ns, "remote"), "remote-v1");
    assert_eq!(version(&ns, "twin"), "remote-v1");
    assert_eq!(server.hits("/app.zip"), 1, "one fetch per (url, signature)");
    let local_key = entry_of(&ns, "local");
    let old_key = entry_of(&ns, "remote");
    assert_eq!(entry_of(&ns, "twin"), old_key);
    assert_eq!(
        entries(&ns),
        sorted(vec![local_key.clone(), old_key.clone()])
    );
    let marker = ns
        .dir()
        .join("work/bundles")
        .join(&old_key)
        .join(".integrity");
    let text = std::fs::read_to_string(&marker).unwrap();
    assert!(text.contains(&url) && text.contains("r1"), "{text}");

    // Same url, new content and a new signature: the new code (fetched again), not the old
    // download. `local` is removed, `twin` stays on the old package.
    // Served in random pieces this time: the download does not depend on how bytes arrive.
    server.set("/app.zip", Serve::Split(std::fs::read(&remote_v2).unwrap()));
    let answer = set_functions(
        &ns,
        &json!([packaged("remote", &url, "r2"), packaged("twin", &url, "r1")]),
    );
    assert_eq!(answer["restarted"], json!(["remote"]), "{answer}");
    wait_until(WAIT, "the new code serves", || {
        version(&ns, "remote") == "remote-v2"
    });
    assert_eq!(version(&ns, "twin"), "remote-v1");
    assert_eq!(server.hits("/app.zip"), 2);
    assert_eq!(invoke(&ns, "local").status, 404);
    let new_key = entry_of(&ns, "remote");
    assert_ne!(new_key, old_key);

    // The removed function's entry goes once its worker is gone; the two in use stay.
    let in_use = sorted(vec![old_key.clone(), new_key.clone()]);
    wait_until(WAIT, "the removed function's package is removed", || {
        entries(&ns) == in_use
    });

    // Dropping twin leaves only remote's entry.
    set_functions(&ns, &json!([packaged("remote", &url, "r2")]));
    wait_until(WAIT, "twin's package is removed", || {
        entries(&ns) == vec![new_key.clone()]
    });
    assert_eq!(version(&ns, "remote"), "remote-v2");
}

#[test]
fn a_restarted_runtime_reuses_complete_entries_and_removes_the_rest() {
    let scratch = common::TempDir::new();
    let kept_zip = package(scratch.path(), "kept.zip", "kept-v1");
    let cut_zip = package(scratch.path(), "cut.zip", "cut-v1");
    let server = FileServer::start();
    server.set("/kept.zip", Serve::Bytes(std::fs::read(&kept_zip).unwrap()));
    server.set("/cut.zip", Serve::Bytes(std::fs::read(&cut_zip).unwrap()));
    let functions = json!([
        packaged("kept", &server.url("/kept.zip"), "k1"),
        packaged("cut", &server.url("/cut.zip"), "c1"),
    ]);
    // Both runtimes share one work directory, as a container's restarts do.
    let work = scratch.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let start = || {
        Noslate::builder()
            .functions(&functions)
            .env("NOSLATE_WORKDIR", &work.to_string_lossy())
            .start()
    };
    let root = work.join("bundles");

    let first = start();
    assert_eq!(version(&first, "kept"), "kept-v1");
    assert_eq!(version(&first, "cut"), "cut-v1");
    let kept_key = entry_of(&first, "kept");
    let cut_key = entry_of(&first, "cut");
    drop(first);

    // What a runtime killed mid-work leaves: an entry whose marker was never written, a build
    // directory, and an entry of a function that is gone.
    std::fs::remove_file(root.join(&cut_key).join(".integrity")).unwrap();
    let leftover_build = root.join(format!(".tmp-{cut_key}-1-0"));
    std::fs::create_dir_all(leftover_build.join("code")).unwrap();
    let gone = root.join("0123456789abcdef");
    std::fs::create_dir_all(gone.join("code")).unwrap();
    std::fs::write(
        gone.join(".integrity"),
        r#"{"url":"file:///old.zip","signature":"x"}"#,
    )
    .unwrap();

    let second = start();
    wait_until(
        WAIT,
        "the unused entry and the leftover build are removed",
        || !gone.exists() && !leftover_build.exists(),
    );
    assert_eq!(version(&second, "kept"), "kept-v1");
    assert_eq!(version(&second, "cut"), "cut-v1");
    assert_eq!(server.hits("/kept.zip"), 1, "a complete entry is reused");
    assert_eq!(
        server.hits("/cut.zip"),
        2,
        "an entry without its marker is fetched again"
    );
    assert_eq!(entry_of(&second, "kept"), kept_key);
    assert_eq!(entry_of(&second, "cut"), cut_key);
    assert!(root.join(&cut_key).join(".integrity").exists());
    assert_eq!(entries_in(&root), sorted(vec![kept_key, cut_key]));
    assert_eq!(second.wait_log_count(&["removed and rebuilt"], 1), 1);
}

/// The cache entry `function`'s worker runs from (`bundles/<entry>/code`).
fn entry_of(ns: &Noslate, function: &str) -> String {
    let resp = invoke(ns, function);
    assert_eq!(resp.status, 200, "{function}: {}", resp.brief());
    let cwd = resp.json()["cwd"].as_str().unwrap().to_owned();
    let code = Path::new(&cwd);
    assert_eq!(code.file_name().unwrap(), "code", "{cwd}");
    let entry = code.parent().unwrap();
    assert!(entry.parent().unwrap().ends_with("work/bundles"), "{cwd}");
    entry.file_name().unwrap().to_string_lossy().into_owned()
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

#[test]
fn bad_packages_fail_their_function_clearly_and_others_keep_working() {
    let scratch = common::TempDir::new();
    let slip = scratch.path().join("slip.zip");
    python_zip(
        &slip,
        &format!(
            "z.writestr('index.js', {:?})\nz.writestr('../../escape.js', 'x')",
            handler("slip")
        ),
    );
    let bomb = scratch.path().join("bomb.zip");
    python_zip(
        &bomb,
        &format!(
            "z.writestr('index.js', {:?})\nz.writestr('zeros', b'\\0' * (4 << 20))",
            handler("bomb")
        ),
    );
    let many = scratch.path().join("many.zip");
    python_zip(
        &many,
        &format!(
            "z.writestr('index.js', {:?})\nfor i in range(40): z.writestr('f%d' % i, '')",
            handler("many")
        ),
    );
    let big = scratch.path().join("big.zip");
    python_zip(
        &big,
        &format!(
            "import os\nz.writestr('index.js', {:?})\nz.writestr('noise', os.urandom(400000), compress_type=zipfile.ZIP_STORED)",
            handler("big")
        ),
    );
    let server = FileServer::start();
    server.set("/big.zip", Serve::Bytes(std::fs::read(&big).unwrap()));
    server.set("/unsized.zip", Serve::Unsized(std::fs::read(&big).unwrap()));
    server.set("/slip.zip", Serve::Bytes(std::fs::read(&slip).unwrap()));
    server.set("/bomb.zip", Serve::Bytes(std::fs::read(&bomb).unwrap()));
    server.set("/garbage.zip", Serve::Bytes(b"this is not a zip".to_vec()));
    let on_demand = |name: &str, url: &str| {
        let mut p = packaged(name, url, "s");
        p["worker"]["reservationCount"] = json!(0);
        p
    };
    let ns = Noslate::builder()
        .config(&json!({ "controlPlane": {
            "codePackageMaxBytes": 300_000,
            "codePackageMaxUnpackedBytes": 1 << 20,
            "codePackageMaxEntries": 20
        }}))
        .functions(&json!([
            profile("good", "echo"),
            on_demand("missing", &server.url("/missing.zip")),
            on_demand("slip", &server.url("/slip.zip")),
            on_demand("bomb", &server.url("/bomb.zip")),
            on_demand("garbage", &server.url("/garbage.zip")),
            on_demand("many", &format!("file://{}", many.display())),
            on_demand("big", &server.url("/big.zip")),
            on_demand("unsized", &server.url("/unsized.zip")),
            on_demand("big-local", &format!("file://{}", big.display())),
        ]))
        .start();
    for (function, cause) in [
        ("missing", "curl exited with 22"),
        ("slip", "zip entry ../../escape.js escapes the package"),
        (
            "bomb",
            "the archive unpacks to more than the limit of 1048576 bytes",
        ),
        ("garbage", "not a zip archive"),
        (
            "many",
            "the archive has 41 entries, more than the limit of 20",
        ),
    ] {
        let body = assert_function_error(&invoke(&ns, function), "CodeFetchFailed");
        let message = body["errorMessage"].as_str().unwrap();
        assert!(
            message.contains(cause) && message.contains(function),
            "{function}: {message}"
        );
        assert_eq!(invoke(&ns, "good").status, 200, "good keeps working");
    }
    let body = assert_function_error(&invoke(&ns, "missing"), "CodeFetchFailed");
    assert!(
        body["errorMessage"].as_str().unwrap().contains("404"),
        "curl's stderr names the status: {body}"
    );
    ns.wait_log_count(&["Failed to ensure (or download) code of function slip"], 1);
    // Nothing escaped, and no half-built entry is left behind.
    assert!(!ns.dir().join("work/escape.js").exists());
    assert!(!ns.dir().join("escape.js").exists());
    assert!(entries(&ns).is_empty(), "{:?}", entries(&ns));

    // A failure is not memoised: fixed on the server, the next start (after the back-off)
    // fetches again and serves.
    let fixed = package(scratch.path(), "fixed.zip", "fixed");
    server.set("/missing.zip", Serve::Bytes(std::fs::read(&fixed).unwrap()));
    wait_until(WAIT, "the fixed package serves", || {
        let resp = invoke(&ns, "missing");
        resp.status == 200 && resp.json()["version"] == "fixed"
    });
}

#[test]
fn a_stalled_or_cut_download_fails_within_the_fetch_timeout() {
    let server = FileServer::start();
    server.set("/stall.zip", Serve::Stall);
    server.set("/cut.zip", Serve::CutShort);
    let timeout_ms = 1500;
    let ns = Noslate::builder()
        .config(&json!({ "controlPlane": { "codePackageFetchTimeoutMs": timeout_ms } }))
        .functions(&json!([
            profile("good", "echo"),
            packaged("stall", &server.url("/stall.zip"), "s"),
            packaged("cut", &server.url("/cut.zip"), "s"),
        ]))
        .start();
    for (function, cause) in [
        ("stall", "curl exited with 28"),
        ("cut", "curl exited with 18"),
    ] {
        let started = Instant::now();
        let body = assert_function_error(&invoke(&ns, function), "CodeFetchFailed");
        let message = body["errorMessage"].as_str().unwrap();
        assert!(message.contains(cause), "{function}: {message}");
        // Bounded: the fetch timeout plus the start back-off, far below the request's 60 s.
        assert!(
            started.elapsed() < Duration::from_millis(timeout_ms) + Duration::from_secs(20),
            "{function} took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(invoke(&ns, "good").status, 200);
    // The profile set is answered at once while a fetch stalls.
    let answer = set_functions(
        &ns,
        &json!([
            profile("good", "echo"),
            packaged("stall", &server.url("/stall.zip"), "s2"),
        ]),
    );
    assert_eq!(answer["restarted"], json!(["stall"]), "{answer}");
    assert_eq!(invoke(&ns, "good").status, 200);
}

/// A directory of links to every program on `PATH` but curl.
fn path_without_curl(dir: &Path) -> PathBuf {
    let farm = dir.join("bin-without-curl");
    std::fs::create_dir_all(&farm).unwrap();
    let path = std::env::var_os("PATH").unwrap();
    for bin in std::env::split_paths(&path) {
        for entry in std::fs::read_dir(&bin).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let link = farm.join(&name);
            if name != "curl" && !link.exists() {
                let _ = std::os::unix::fs::symlink(entry.path(), link);
            }
        }
    }
    farm
}

#[test]
fn without_curl_remote_functions_fail_clearly_and_check_says_so() {
    let scratch = common::TempDir::new();
    let farm = path_without_curl(scratch.path());
    let local = package(scratch.path(), "local.zip", "local");
    let remote = packaged("remote", "http://127.0.0.1:9/app.zip", "s");
    let functions = json!([
        packaged("local", &format!("file://{}", local.display()), "s"),
        remote,
    ]);
    let ns = Noslate::builder()
        .env("PATH", &farm.to_string_lossy())
        .functions(&functions)
        .start();
    let body = assert_function_error(&invoke(&ns, "remote"), "CodeFetchFailed");
    let message = body["errorMessage"].as_str().unwrap();
    assert!(message.contains("curl is not installed"), "{message}");
    assert_eq!(version(&ns, "local"), "local");
    assert!(ns.log_count(&["curl=no (no executable curl on PATH"]) == 1);
    assert!(ns.log_count(&["functions [\"remote\"] have http(s):// code urls"]) == 1);

    // start.sh check names the missing curl.
    let file = scratch.path().join("functions.json");
    std::fs::write(&file, functions.to_string()).unwrap();
    let start_sh = Path::new(env!("CARGO_MANIFEST_DIR")).join("start.sh");
    let out = Command::new("sh")
        .arg(&start_sh)
        .arg("check")
        .arg("--functions")
        .arg(&file)
        .env("PATH", &farm)
        .env("NOSLATE_BIN", common::binary())
        .env("NOSLATE_WORKDIR", scratch.path().join("work"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("curl was not found"), "{stderr}");
}

#[test]
fn a_python_function_and_its_warm_seed_run_from_a_package() {
    let scratch = common::TempDir::new();
    let py_zip = |name: &str, version: &str| {
        let zip = scratch.path().join(name);
        let code = format!(
            "import json, os\ndef handler(event, context):\n    return json.dumps({{'version': '{version}', 'cwd': os.getcwd()}})\n"
        );
        python_zip(&zip, &format!("z.writestr('index.py', {code:?})"));
        std::fs::read(zip).unwrap()
    };
    let server = FileServer::start();
    server.set("/py.zip", Serve::Bytes(py_zip("v1.zip", "py-v1")));
    let python = |signature: &str| {
        let mut p = packaged("py", &server.url("/py.zip"), signature);
        p["runtime"] = json!("python3");
        p
    };
    let ns = Noslate::start(&json!([python("s1")]));
    assert_eq!(version(&ns, "py"), "py-v1");
    wait_until(WAIT, "the warm seed is ready", || {
        ns.log_count(&["[turf seed=", "] ready after "]) == 1
    });

    // A new signature whose package takes a while: the new seed waits for it, and starts
    // once, from the new code.
    server.set("/py.zip", Serve::Late(py_zip("v2.zip", "py-v2")));
    set_functions(&ns, &json!([python("s2")]));
    wait_until(WAIT, "the new code serves", || {
        version(&ns, "py") == "py-v2"
    });
    wait_until(WAIT, "the new seed is ready", || {
        ns.log_count(&["[turf seed=", "] ready after "]) == 2
    });
    assert_eq!(
        ns.log_count(&["[turf seed=", "] started"]),
        2,
        "no failed seed start"
    );
    assert_eq!(ns.log_count(&["cannot start seed"]), 0);
    assert_eq!(server.hits("/py.zip"), 2);
}

#[test]
fn a_download_in_flight_dies_with_the_runtime() {
    let server = FileServer::start();
    server.set("/stall.zip", Serve::Stall);
    let mut ns = Noslate::builder()
        .config(&json!({ "controlPlane": { "codePackageFetchTimeoutMs": 60_000 } }))
        .functions(&json!([packaged("stall", &server.url("/stall.zip"), "s")]))
        .start();
    let is_curl = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "curl")
    };
    let mut curl = None;
    wait_until(WAIT, "curl downloads the package", || {
        curl = common::children_of(ns.pid())
            .into_iter()
            .find(|&p| is_curl(p));
        curl.is_some()
    });
    let curl = curl.unwrap();
    // The runtime alone is killed (not its process group): curl must not outlive it.
    common::signal(ns.pid(), libc::SIGKILL);
    wait_until(WAIT, "the runtime is gone", || !ns.is_running());
    wait_until(WAIT, "curl is gone", || {
        !common::is_alive(curl) || !is_curl(curl)
    });
}
