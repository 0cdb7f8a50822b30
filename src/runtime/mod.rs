//! Worker runtimes: how to exec a worker for a function profile. The worker bootstraps (Node.js
//! for `nodejs` and `aworker`, Python for `python3`) are embedded in the binary and written to the
//! work directory at start-up, so the single binary is all a container needs besides the
//! interpreters themselves.

use crate::config::{FunctionProfile, RESERVED_ENV_PREFIXES, Runtime, SystemConfig};
use crate::turf::privilege;
use crate::turf::spawn::{self, Credentials};
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub mod process;

/// The Node.js worker bootstrap (docs/PROTOCOL.md): Noslate's `handler(ctx, req, res)`, FC's
/// event and HTTP handlers, and aworker's `fetch` events.
pub const NODE_BOOTSTRAP: &str = include_str!("node/bootstrap.js");
/// The Python worker bootstrap (docs/PROTOCOL.md): FC's event handlers and WSGI apps.
pub const PYTHON_BOOTSTRAP: &str = include_str!("python/bootstrap.py");

/// `PATH` a worker gets unless its profile sets one.
pub const DEFAULT_WORKER_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// `HOME` a worker gets unless its profile sets one.
pub const DEFAULT_WORKER_HOME: &str = "/tmp";
/// Share of the memory limit given to V8's old space, as Noslate does (`floor(MiB × 0.8)`).
const NODE_HEAP_SHARE: f64 = 0.8;
/// V8's young generation is sized with a semi-space of `memory limit / 32`, from 1 to 16 MiB
/// (16 MiB: what V8 itself picks on a machine with a few GiB of memory).
///
/// Left to V8, the semi-space follows the old space: `--max-old-space-size=409` (a 512 MiB
/// function) gives about 3 MiB. A worker serving many invocations at once has every in-flight
/// request's objects alive at each young-generation collection; with a small semi-space these
/// collections come often enough that those objects survive two of them and are promoted, and
/// the worker then pays for old-to-new pointers and old-space marking on every request. Under a
/// c=64 load of requests carrying FC's headers, a worker with V8's choice ran at 6 to 7 µs of
/// CPU per request for a few seconds and then at 13 to 16; with 8 or 16 MiB it stayed at 6 to
/// 6.5. The young generation grows to its maximum only under such load: at most three
/// semi-spaces, which with the old space's 80 % stays under the limit.
const NODE_SEMI_SPACE_SHARE: u64 = 32;
/// The largest semi-space the runtime picks (MiB).
const NODE_SEMI_SPACE_MAX_MIB: u64 = 16;
/// V8 flags every Node.js worker starts with, before the profile's `execArgv` (where a later
/// flag wins, so a function can turn one back on).
///
/// Allocation-site pretenuring: V8 watches how many objects from each allocation site survive
/// a young-generation collection, and once enough do, allocates that site's objects in the old
/// generation. A worker serving many invocations at once always has each in-flight request's
/// objects alive at a collection, so the request objects look long-lived when they die a few
/// milliseconds later. Whether a worker's sites tip over is decided by its first collections:
/// the same worker served a small-invocation load at about 8 or about 15 µs of CPU per request
/// from start to end, at random (one slow worker spent 42 % of its time in the collector).
/// Without pretenuring, 22 fresh workers in a row all ran at 7 to 10.5 µs.
const NODE_V8_FLAGS: [&str; 1] = ["--no-allocation-site-pretenuring"];
/// The oldest Python the bootstrap runs on: the one place the minimum is stated and enforced
/// (when an interpreter is resolved, at start-up, for a new profile set and by `noslate check`).
/// 3.9 for `socket.send_fds`/`recv_fds`, which the warm seed's fork path needs; on 3.8 cold
/// workers run but every seed dies at its first message.
pub const MIN_PYTHON: (u32, u32) = (3, 9);

/// Why `wanted` cannot run Python workers, as the runtime and `noslate check` report it.
fn python_unusable(wanted: &str, why: &str) -> String {
    format!(
        "Python {}.{}+ ({wanted:?}) is not usable: {why}; install python3 or set \
         starter.python3.bin",
        MIN_PYTHON.0, MIN_PYTHON.1
    )
}

/// Why Node.js workers cannot start: `wanted` is not on `PATH`.
fn node_missing(wanted: &str) -> String {
    format!(
        "Node.js ({wanted:?}) was not found on PATH; install Node.js 18+ or set starter.nodejs.bin"
    )
}

/// The interpreters `functions` need that cannot be used here, one message each, resolved as the
/// runtime resolves them (for the worker user, the Python version checked).
pub fn interpreter_problems(config: &SystemConfig, functions: &[FunctionProfile]) -> Vec<String> {
    let worker = privilege::current_worker_credentials(&config.turf.user);
    let uses = |r: &[Runtime]| functions.iter().any(|f| r.contains(&f.runtime));
    let mut problems = Vec::new();
    if uses(&[Runtime::Nodejs, Runtime::Aworker]) {
        let wanted = config.starter.nodejs_bin.as_deref().unwrap_or("node");
        if spawn::find_on_path_for(wanted, worker).is_none() {
            problems.push(node_missing(wanted));
        }
    }
    if uses(&[Runtime::Python3]) {
        let wanted = config.starter.python3_bin.as_deref().unwrap_or("python3");
        if let Err(why) = resolve_python_for(wanted, worker) {
            problems.push(python_unusable(wanted, &why));
        }
    }
    problems
}

/// How to exec one worker.
#[derive(Debug)]
pub struct LaunchSpec {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Its complete environment.
    pub env: Vec<(String, String)>,
}

/// The runtimes available to this server. Interpreters are resolved when a function first needs
/// them; one that is missing is kept as an error that fails that function's workers (and so its
/// requests) with a message naming it, while the other functions keep serving.
#[derive(Debug)]
pub struct Runtimes {
    node_wanted: String,
    python_wanted: String,
    node: Option<Result<PathBuf, String>>,
    node_bootstrap: PathBuf,
    python: Option<Result<PathBuf, String>>,
    python_bootstrap: PathBuf,
    /// `starter.aworker.defaultEnvirons`, minus reserved names.
    aworker_environs: Vec<(String, String)>,
    /// This executable, which is also the worker of `process` functions.
    self_exe: Result<PathBuf, String>,
    /// The user workers run as (`turf.user`, when the runtime can switch to it): interpreters
    /// are chosen among those it can execute.
    worker: Option<Credentials>,
}

impl Runtimes {
    /// Writes the bootstraps into `workdir` and resolves the interpreters the configured
    /// functions need. Fails only for what no configuration can fix: an unsupported runtime, or
    /// a work directory that cannot be written.
    pub fn prepare(
        workdir: &Path,
        config: &SystemConfig,
        functions: &[FunctionProfile],
    ) -> Result<Runtimes, String> {
        let node_dir = workdir.join("runtime").join("node");
        let node_bootstrap = node_dir.join("bootstrap.js");
        write_if_changed(&node_dir, &node_bootstrap, NODE_BOOTSTRAP)?;
        let python_dir = workdir.join("runtime").join("python");
        let python_bootstrap = python_dir.join("bootstrap.py");
        write_if_changed(&python_dir, &python_bootstrap, PYTHON_BOOTSTRAP)?;
        let aworker_environs = config
            .starter
            .aworker_default_environs
            .iter()
            .filter(|(k, _)| !RESERVED_ENV_PREFIXES.iter().any(|p| k.starts_with(p)))
            .cloned()
            .collect();
        let mut runtimes = Runtimes {
            node_wanted: config
                .starter
                .nodejs_bin
                .clone()
                .unwrap_or_else(|| "node".into()),
            python_wanted: config
                .starter
                .python3_bin
                .clone()
                .unwrap_or_else(|| "python3".into()),
            node: None,
            node_bootstrap,
            python: None,
            python_bootstrap,
            aworker_environs,
            self_exe: std::env::current_exe()
                .map_err(|e| format!("cannot find the noslate executable: {e}")),
            worker: privilege::current_worker_credentials(&config.turf.user),
        };
        runtimes.ensure(functions)?;
        Ok(runtimes)
    }

    /// Resolves the interpreters `functions` need and have not been resolved yet (at start-up,
    /// and for a new profile set). Missing ones are logged and kept as errors.
    pub fn ensure(&mut self, functions: &[FunctionProfile]) -> Result<(), String> {
        for f in functions {
            match f.runtime {
                Runtime::Nodejs | Runtime::Aworker => {
                    if self.node.is_none() {
                        let wanted = &self.node_wanted;
                        let found = spawn::find_on_path_for(wanted, self.worker)
                            .ok_or_else(|| node_missing(wanted));
                        if let Err(why) = &found {
                            log::error!("function {} cannot start workers: {why}", f.name);
                        }
                        self.node = Some(found);
                    }
                }
                Runtime::Python3 => {
                    if self.python.is_none() {
                        let found = resolve_python_for(&self.python_wanted, self.worker)
                            .map_err(|why| python_unusable(&self.python_wanted, &why));
                        if let Err(why) = &found {
                            log::error!("function {} cannot start workers: {why}", f.name);
                        }
                        self.python = Some(found);
                    }
                }
                Runtime::Native | Runtime::Process => {}
            }
        }
        Ok(())
    }

    /// The program, arguments and environment of `profile`'s warm seed (`turf::seed`): the
    /// Python bootstrap in seed mode, with exactly the environment its workers get. `None` for
    /// runtimes that have no seed.
    pub fn seed_launch_spec(
        &self,
        profile: &FunctionProfile,
        seed_id: &str,
    ) -> Option<Result<LaunchSpec, String>> {
        if profile.runtime != Runtime::Python3 {
            return None;
        }
        Some(self.launch_spec(profile, seed_id).map(|mut spec| {
            spec.args.push(crate::turf::seed::SEED_ARG.into());
            spec
        }))
    }

    /// The environment of a spare Node.js process (`turf::spare`): only what any worker gets
    /// regardless of its function; the rest comes with INIT.
    pub fn spare_env(worker_id: &str) -> Vec<(String, String)> {
        vec![
            ("PATH".into(), DEFAULT_WORKER_PATH.into()),
            ("HOME".into(), DEFAULT_WORKER_HOME.into()),
            (
                "NOSLATE_IPC_IN".into(),
                crate::sys::WORKER_FD_IN.to_string(),
            ),
            (
                "NOSLATE_IPC_OUT".into(),
                crate::sys::WORKER_FD_OUT.to_string(),
            ),
            ("NOSLATE_WORKER_ID".into(), worker_id.to_owned()),
            (crate::turf::spare::SPARE_ENV.into(), "1".into()),
        ]
    }

    /// The working directory of a spare before it is taken: the Node.js bootstrap's own.
    pub fn spare_cwd(&self) -> &Path {
        self.node_bootstrap.parent().unwrap_or(Path::new("/"))
    }

    /// The program, arguments and environment of a worker for `profile`.
    pub fn launch_spec(
        &self,
        profile: &FunctionProfile,
        worker_id: &str,
    ) -> Result<LaunchSpec, String> {
        let resolved = |slot: &Option<Result<PathBuf, String>>, what: &str| match slot {
            Some(Ok(path)) => Ok(path.clone()),
            Some(Err(why)) => Err(why.clone()),
            None => Err(format!("{what} was not resolved for this function")),
        };
        match profile.runtime {
            Runtime::Nodejs | Runtime::Aworker => {
                let program = resolved(&self.node, "Node.js")?;
                let heap_mib =
                    ((profile.resource_limit.memory >> 20) as f64 * NODE_HEAP_SHARE) as u64;
                let mut args: Vec<OsString> = NODE_V8_FLAGS.iter().map(OsString::from).collect();
                if heap_mib > 0 {
                    args.push(format!("--max-old-space-size={heap_mib}").into());
                    let semi_mib = ((profile.resource_limit.memory >> 20) / NODE_SEMI_SPACE_SHARE)
                        .clamp(1, NODE_SEMI_SPACE_MAX_MIB);
                    args.push(format!("--max-semi-space-size={semi_mib}").into());
                }
                args.extend(profile.worker.exec_argv.iter().map(OsString::from));
                args.push(self.node_bootstrap.clone().into_os_string());
                let mut env = worker_env(profile, worker_id);
                if profile.runtime == Runtime::Aworker {
                    // The starter's defaults come first, so the profile's own values win.
                    let defaults = self
                        .aworker_environs
                        .iter()
                        .filter(|(k, _)| !profile.environments.iter().any(|(pk, _)| pk == k));
                    env.splice(0..0, defaults.cloned());
                }
                Ok(LaunchSpec { program, args, env })
            }
            Runtime::Python3 => {
                let program = resolved(&self.python, "Python")?;
                let mut args: Vec<OsString> = Vec::new();
                args.extend(profile.worker.exec_argv.iter().map(OsString::from));
                args.push(self.python_bootstrap.clone().into_os_string());
                Ok(LaunchSpec {
                    program,
                    args,
                    env: worker_env(profile, worker_id),
                })
            }
            Runtime::Native => {
                // Any executable that speaks docs/PROTOCOL.md: `sourceFile` (else `handler`),
                // relative to the code directory.
                let Some(file) = profile.source_file.as_ref().or(profile.handler.as_ref()) else {
                    return Err(format!(
                        "function {}: runtime native needs sourceFile, the executable to run",
                        profile.name
                    ));
                };
                let program = profile.code_dir.join(file);
                if !spawn::is_executable(&program) {
                    return Err(format!(
                        "function {}: {} is not an executable file",
                        profile.name,
                        program.display()
                    ));
                }
                Ok(LaunchSpec {
                    program,
                    args: profile
                        .worker
                        .exec_argv
                        .iter()
                        .map(OsString::from)
                        .collect(),
                    env: worker_env(profile, worker_id),
                })
            }
            Runtime::Process => {
                // This binary in its hidden worker mode runs `sourceFile` (relative to the code
                // directory) once per request, with `worker.execArgv` as its arguments; the
                // worker checks that it is executable and reports INIT_ERROR if not.
                let Some(file) = profile.source_file.as_ref() else {
                    return Err(format!(
                        "function {}: runtime process needs sourceFile, the command to run",
                        profile.name
                    ));
                };
                let program = self.self_exe.clone()?;
                let mut env = worker_env(profile, worker_id);
                env.push((
                    process::COMMAND_ENV.into(),
                    profile.code_dir.join(file).to_string_lossy().into_owned(),
                ));
                env.push((
                    process::ARGS_ENV.into(),
                    serde_json::to_string(&profile.worker.exec_argv).unwrap_or_default(),
                ));
                Ok(LaunchSpec {
                    program,
                    args: vec![process::WORKER_ARG.into()],
                    env,
                })
            }
        }
    }
}

/// What `noslate check --load` found for one function.
#[derive(Debug, PartialEq, Eq)]
pub enum LoadCheck {
    /// The handler (and initializer) load and are functions.
    Loaded,
    /// Not checked, and why.
    Skipped(String),
    /// The code does not load: the error a worker's INIT would report.
    Failed(String),
}

/// The line a bootstrap in check mode writes on stderr before the error's JSON.
const CHECK_LOAD_MARK: &str = "NOSLATE_CHECK_LOAD ";

impl Runtimes {
    /// Loads `profile`'s handler and initializer (without running the initializer) in a
    /// throw-away worker process: the function's interpreter, bootstrap, environment, code
    /// directory and worker user, the bootstrap in its check mode (no protocol pipes). Whatever
    /// the import started is killed with it; past `timeout` the load counts as failed.
    pub fn check_load(&self, profile: &FunctionProfile, timeout: Duration) -> LoadCheck {
        if !matches!(profile.runtime, Runtime::Nodejs | Runtime::Python3) {
            return LoadCheck::Skipped(format!(
                "runtime {} has no load check",
                runtime_name(profile.runtime)
            ));
        }
        let spec = match self.launch_spec(profile, "check") {
            Ok(spec) => spec,
            Err(why) => return LoadCheck::Failed(why),
        };
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env("NOSLATE_CHECK_LOAD", "1")
            .current_dir(&profile.code_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(c) = self.worker {
            cmd.uid(c.uid).gid(c.gid);
        }
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(err) => {
                let user = match self.worker {
                    Some(c) => format!(" as uid {}", c.uid),
                    None => String::new(),
                };
                return LoadCheck::Failed(format!(
                    "cannot start {} in {}{user}: {err}",
                    spec.program.display(),
                    profile.code_dir.display()
                ));
            }
        };
        // Read on a thread: a chatty import must not block on a full pipe while we wait.
        let stderr = child.stderr.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = stderr {
                let _ = pipe.read_to_end(&mut text);
            }
            let _ = tx.send(String::from_utf8_lossy(&text).into_owned());
        });
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => break None,
            }
        };
        if let Ok(pgid) = i32::try_from(child.id()) {
            let _ = crate::sys::kill_group(pgid, libc::SIGKILL);
        }
        let Some(status) = status else {
            let _ = child.wait();
            return LoadCheck::Failed(format!(
                "loading did not finish within {} ms (worker.initializationTimeout)",
                timeout.as_millis()
            ));
        };
        let text = rx.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
        if status.success() {
            return LoadCheck::Loaded;
        }
        let reported = text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(CHECK_LOAD_MARK))
            .and_then(|json| serde_json::from_str::<serde_json::Value>(json).ok());
        LoadCheck::Failed(match reported {
            Some(err) => format!(
                "{}: {}",
                err["errorType"].as_str().unwrap_or("Error"),
                err["errorMessage"].as_str().unwrap_or_default()
            ),
            None => {
                let tail: Vec<&str> = text.lines().rev().take(5).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("the worker exited with {status}: {}", tail.join(" | "))
            }
        })
    }
}

/// The name of a runtime in `NOSLATE_RUNTIME`.
fn runtime_name(runtime: Runtime) -> &'static str {
    match runtime {
        Runtime::Nodejs => "nodejs",
        Runtime::Aworker => "aworker",
        Runtime::Python3 => "python3",
        Runtime::Native => "native",
        Runtime::Process => "process",
    }
}

/// Finds `wanted` (a name on `PATH` or a path) and asks it for the interpreter it really is
/// (`sys.executable`): version managers put shell-script shims on `PATH` that would cost every
/// worker start a shell and need the server's environment, which workers do not get.
#[cfg(test)]
fn resolve_python(wanted: &str) -> Result<PathBuf, String> {
    resolve_python_for(wanted, None)
}

/// [`resolve_python`], preferring an interpreter that `worker` (the user workers run as) can
/// execute: a Python under root's home (pyenv, for one) is out of a worker's reach.
fn resolve_python_for(wanted: &str, worker: Option<Credentials>) -> Result<PathBuf, String> {
    let candidates = spawn::candidates_on_path(wanted, worker);
    let mut first: Option<Result<PathBuf, String>> = None;
    for found in candidates {
        let result = check_python(found);
        if let (Ok(exe), Some(c)) = (&result, worker)
            && !privilege::executable_by(exe, c)
        {
            first.get_or_insert(result);
            continue;
        }
        if result.is_ok() {
            return result;
        }
        first.get_or_insert(result);
    }
    first.unwrap_or_else(|| Err(format!("{wanted:?} was not found on PATH")))
}

/// Runs `found` to check that it is Python [`MIN_PYTHON`] or newer and to learn its real
/// executable.
fn check_python(found: PathBuf) -> Result<PathBuf, String> {
    let out = Command::new(&found)
        .args([
            "-c",
            "import sys; print(sys.version_info[0], sys.version_info[1]); print(sys.executable)",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", found.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let version: Option<(u32, u32)> = lines.next().and_then(|l| {
        let mut parts = l.split_whitespace().map(|n| n.parse().ok());
        Some((parts.next()??, parts.next()??))
    });
    let executable = lines.next().map(str::trim).filter(|l| !l.is_empty());
    let (Some(version), true) = (version, out.status.success()) else {
        return Err(format!(
            "{} did not run as a Python interpreter ({})",
            found.display(),
            out.status
        ));
    };
    if version < MIN_PYTHON {
        return Err(format!(
            "{} is Python {}.{}",
            found.display(),
            version.0,
            version.1
        ));
    }
    Ok(executable
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && p.is_file())
        .unwrap_or(found))
}

/// A worker's environment: the profile's `environments`, then the documented runtime
/// variables. Nothing of the server's own environment leaks in.
pub fn worker_env(profile: &FunctionProfile, worker_id: &str) -> Vec<(String, String)> {
    let mut env = profile.environments.clone();
    let has = |env: &[(String, String)], key: &str| env.iter().any(|(k, _)| k == key);
    if !has(&env, "PATH") {
        env.push(("PATH".into(), DEFAULT_WORKER_PATH.into()));
    }
    if !has(&env, "HOME") {
        env.push(("HOME".into(), DEFAULT_WORKER_HOME.into()));
    }
    env.push((
        "NOSLATE_IPC_IN".into(),
        crate::sys::WORKER_FD_IN.to_string(),
    ));
    env.push((
        "NOSLATE_IPC_OUT".into(),
        crate::sys::WORKER_FD_OUT.to_string(),
    ));
    env.push(("NOSLATE_FUNCTION_NAME".into(), profile.name.clone()));
    env.push(("NOSLATE_WORKER_ID".into(), worker_id.to_owned()));
    env.push((
        "NOSLATE_CODE_DIR".into(),
        profile.code_dir.to_string_lossy().into_owned(),
    ));
    if let Some(handler) = &profile.handler {
        env.push(("NOSLATE_HANDLER".into(), handler.clone()));
    }
    if let Some(initializer) = &profile.initializer {
        env.push(("NOSLATE_INITIALIZER".into(), initializer.clone()));
    }
    env.push((
        "NOSLATE_RUNTIME".into(),
        runtime_name(profile.runtime).into(),
    ));
    match profile.runtime {
        Runtime::Nodejs | Runtime::Python3 => env.push((
            "NOSLATE_HANDLER_STYLE".into(),
            profile.handler_style.as_str().into(),
        )),
        _ => {}
    }
    if let Some(source_file) = &profile.source_file {
        env.push(("NOSLATE_SOURCE_FILE".into(), source_file.clone()));
    }
    env
}

/// Writes `contents` to `path` atomically (temp file + rename), skipping the write when the file
/// already holds exactly that, so concurrent runtimes sharing a work dir never see a torn file.
fn write_if_changed(dir: &Path, path: &Path, contents: &str) -> Result<(), String> {
    if std::fs::read(path).is_ok_and(|old| old == contents.as_bytes()) {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let tmp = dir.join(format!(".bootstrap.{}.tmp", std::process::id()));
    std::fs::write(&tmp, contents).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_functions;

    /// Runtimes with these interpreters resolved (`None`: not resolved), the bootstraps under
    /// `/w/runtime` and this binary at `/usr/bin/noslate`.
    fn runtimes(node: Option<&str>, python: Option<&str>) -> Runtimes {
        Runtimes {
            node_wanted: "node".into(),
            python_wanted: "python3".into(),
            node: node.map(|path| Ok(PathBuf::from(path))),
            node_bootstrap: PathBuf::from("/w/runtime/node/bootstrap.js"),
            python: python.map(|path| Ok(PathBuf::from(path))),
            python_bootstrap: PathBuf::from("/w/runtime/python/bootstrap.py"),
            aworker_environs: Vec::new(),
            self_exe: Ok(PathBuf::from("/usr/bin/noslate")),
            worker: None,
        }
    }

    /// Parses `json` against a throw-away code directory `code` holding `main.js`.
    fn profiles(json: &str) -> Vec<FunctionProfile> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("noslate-runtime-ut-{}-{n}", std::process::id()));
        std::fs::create_dir_all(dir.join("code")).unwrap();
        std::fs::write(dir.join("code").join("main.js"), "").unwrap();
        let set = parse_functions(json, &dir, &SystemConfig::default());
        let _ = std::fs::remove_dir_all(&dir);
        set.unwrap().functions
    }

    fn get<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
        env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    #[test]
    fn env_names_the_runtime_style_and_source_file() {
        let fs = profiles(
            r#"[
              {"name": "n", "runtime": "nodejs", "url": "code", "handler": "index.h",
               "signature": "s", "handlerStyle": "fc-http"},
              {"name": "p", "runtime": "python3", "url": "code", "handler": "index.h",
               "signature": "s"},
              {"name": "a", "runtime": "aworker", "url": "code", "sourceFile": "main.js",
               "signature": "s"}
            ]"#,
        );
        let n = worker_env(&fs[0], "n-1");
        assert_eq!(get(&n, "NOSLATE_RUNTIME"), Some("nodejs"));
        assert_eq!(get(&n, "NOSLATE_HANDLER_STYLE"), Some("fc-http"));
        assert_eq!(get(&n, "NOSLATE_SOURCE_FILE"), None);
        let p = worker_env(&fs[1], "p-1");
        assert_eq!(get(&p, "NOSLATE_RUNTIME"), Some("python3"));
        assert_eq!(
            get(&p, "NOSLATE_HANDLER_STYLE"),
            Some("fc-event"),
            "python's default"
        );
        let a = worker_env(&fs[2], "a-1");
        assert_eq!(get(&a, "NOSLATE_RUNTIME"), Some("aworker"));
        assert_eq!(get(&a, "NOSLATE_HANDLER_STYLE"), None);
        assert_eq!(get(&a, "NOSLATE_SOURCE_FILE"), Some("main.js"));
        assert_eq!(get(&a, "NOSLATE_HANDLER"), None);
    }

    #[test]
    fn aworker_gets_the_starter_environs_below_its_own() {
        let fs = profiles(
            r#"[{"name": "a", "runtime": "aworker", "url": "code", "sourceFile": "main.js",
                 "signature": "s", "environments": [{"key": "B", "value": "profile"}]}]"#,
        );
        let mut runtimes = runtimes(Some("/usr/bin/node"), None);
        runtimes.aworker_environs = vec![
            ("A".into(), "starter".into()),
            ("B".into(), "starter".into()),
        ];
        let spec = runtimes.launch_spec(&fs[0], "a-1").unwrap();
        assert_eq!(get(&spec.env, "A"), Some("starter"));
        assert_eq!(get(&spec.env, "B"), Some("profile"));
        assert_eq!(spec.env.iter().filter(|(k, _)| k == "B").count(), 1);
        assert_eq!(
            spec.args.last().map(|a| a.to_string_lossy().into_owned()),
            Some("/w/runtime/node/bootstrap.js".to_owned())
        );
    }

    #[test]
    fn a_missing_interpreter_fails_its_functions_with_a_message_naming_it() {
        let fs = profiles(
            r#"[{"name": "n", "runtime": "nodejs", "url": "code", "handler": "index.h",
                 "signature": "s"}]"#,
        );
        let mut runtimes = runtimes(None, None);
        runtimes.node_wanted = "/nonexistent/node".into();
        runtimes
            .ensure(&fs)
            .expect("a missing interpreter is not fatal");
        let err = runtimes.launch_spec(&fs[0], "n-1").unwrap_err();
        assert!(err.contains("/nonexistent/node"), "{err}");
    }

    #[test]
    fn node_launch_turns_pretenuring_off_before_the_heap_sizes_and_the_profiles_own_flags() {
        let fs = profiles(
            r#"[{"name": "n", "runtime": "nodejs", "url": "code", "handler": "index.h",
                 "signature": "s", "resourceLimit": {"memory": 536870912},
                 "worker": {"execArgv": ["--allocation-site-pretenuring"]}}]"#,
        );
        let runtimes = runtimes(Some("/usr/bin/node"), None);
        let spec = runtimes.launch_spec(&fs[0], "n-1").unwrap();
        let args: Vec<String> = spec
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        // The profile's flag comes later, so it wins.
        assert_eq!(
            args,
            [
                "--no-allocation-site-pretenuring",
                "--max-old-space-size=409",
                "--max-semi-space-size=16",
                "--allocation-site-pretenuring",
                "/w/runtime/node/bootstrap.js"
            ]
        );
    }

    #[test]
    fn node_young_generation_follows_the_memory_limit_within_bounds() {
        let runtimes = runtimes(Some("/usr/bin/node"), None);
        for (memory_mib, heap) in [
            (
                16u64,
                ["--max-old-space-size=12", "--max-semi-space-size=1"],
            ),
            (128, ["--max-old-space-size=102", "--max-semi-space-size=4"]),
            (256, ["--max-old-space-size=204", "--max-semi-space-size=8"]),
            (
                1024,
                ["--max-old-space-size=819", "--max-semi-space-size=16"],
            ),
        ] {
            let fs = profiles(&format!(
                r#"[{{"name": "n", "runtime": "nodejs", "url": "code", "handler": "index.h",
                     "signature": "s", "resourceLimit": {{"memory": {}}}}}]"#,
                memory_mib << 20
            ));
            let spec = runtimes.launch_spec(&fs[0], "n-1").unwrap();
            let args: Vec<String> = (spec.args.iter())
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            assert_eq!(args[1..3], heap, "{memory_mib} MiB");
        }
    }

    #[test]
    fn python_launch_runs_the_python_bootstrap_with_exec_argv() {
        let fs = profiles(
            r#"[{"name": "p", "runtime": "python3", "url": "code", "handler": "index.h",
                 "signature": "s", "worker": {"execArgv": ["-X", "dev"]}}]"#,
        );
        let runtimes = runtimes(None, Some("/usr/bin/python3"));
        let spec = runtimes.launch_spec(&fs[0], "p-1").unwrap();
        assert_eq!(spec.program, PathBuf::from("/usr/bin/python3"));
        let args: Vec<String> = spec
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args, ["-X", "dev", "/w/runtime/python/bootstrap.py"]);
    }

    #[test]
    fn process_launch_reexecutes_this_binary_with_the_command_in_env() {
        let fs = profiles(
            r#"[{"name": "c", "runtime": "process", "url": "code", "sourceFile": "main.js",
                 "signature": "s", "worker": {"execArgv": ["-x", "y z"]}}]"#,
        );
        let mut runtimes = runtimes(None, None);
        runtimes.ensure(&fs).unwrap();
        let spec = runtimes.launch_spec(&fs[0], "c-1").unwrap();
        assert_eq!(spec.program, PathBuf::from("/usr/bin/noslate"));
        assert_eq!(spec.args, [OsString::from(process::WORKER_ARG)]);
        let command = get(&spec.env, process::COMMAND_ENV).unwrap();
        assert!(command.ends_with("/code/main.js"), "{command}");
        assert_eq!(get(&spec.env, process::ARGS_ENV), Some(r#"["-x","y z"]"#));
        assert_eq!(get(&spec.env, "NOSLATE_RUNTIME"), Some("process"));
    }

    #[test]
    fn a_missing_python_is_named() {
        let err = resolve_python("/nonexistent/python3").unwrap_err();
        assert!(err.contains("/nonexistent/python3"), "{err}");
        // Something that runs but is not Python.
        let err = resolve_python("/bin/true").unwrap_err();
        assert!(err.contains("did not run as a Python interpreter"), "{err}");
    }
}
