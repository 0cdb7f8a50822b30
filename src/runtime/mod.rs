//! Worker runtimes: how to exec a worker for a function profile. The Node.js bootstrap is
//! embedded in the binary and written to the work directory at start-up, so the single binary is
//! all a container needs besides `node` itself.

use crate::config::{FunctionProfile, Runtime, SystemConfig};
use crate::turf::spawn;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The Node.js worker bootstrap (docs/PROTOCOL.md, Noslate's `handler(ctx, req, res)`).
pub const NODE_BOOTSTRAP: &str = include_str!("node/bootstrap.js");

/// `PATH` a worker gets unless its profile sets one.
pub const DEFAULT_WORKER_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// `HOME` a worker gets unless its profile sets one.
pub const DEFAULT_WORKER_HOME: &str = "/tmp";
/// Share of the memory limit given to V8's old space, as Noslate does (`floor(MiB × 0.8)`).
const NODE_HEAP_SHARE: f64 = 0.8;

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

/// The runtimes available to this server, resolved once at start-up.
#[derive(Debug)]
pub struct Runtimes {
    node: Option<PathBuf>,
    node_bootstrap: PathBuf,
}

impl Runtimes {
    /// Writes the bootstraps into `workdir` and resolves the runtime binaries the configured
    /// functions need. Fails with a message naming what is missing.
    pub fn prepare(
        workdir: &Path,
        config: &SystemConfig,
        functions: &[FunctionProfile],
    ) -> Result<Runtimes, String> {
        let mut node = None;
        for f in functions {
            match f.runtime {
                Runtime::Nodejs => {
                    if node.is_none() {
                        let wanted = config.starter.nodejs_bin.as_deref().unwrap_or("node");
                        node = Some(spawn::find_on_path(wanted).ok_or_else(|| {
                            format!(
                                "function {} needs Node.js, but {wanted:?} was not found on PATH \
                                 (install Node.js 18+ or set starter.nodejs.bin)",
                                f.name
                            )
                        })?);
                    }
                }
                ref other => {
                    return Err(format!(
                        "function {}: runtime {other:?} is not supported by this build yet \
                         (supported: nodejs)",
                        f.name
                    ));
                }
            }
        }
        let dir = workdir.join("runtime").join("node");
        let node_bootstrap = dir.join("bootstrap.js");
        write_if_changed(&dir, &node_bootstrap, NODE_BOOTSTRAP)?;
        Ok(Runtimes {
            node,
            node_bootstrap,
        })
    }

    /// The program, arguments and environment of a worker for `profile`.
    pub fn launch_spec(
        &self,
        profile: &FunctionProfile,
        worker_id: &str,
    ) -> Result<LaunchSpec, String> {
        match profile.runtime {
            Runtime::Nodejs => {
                let program = self
                    .node
                    .clone()
                    .ok_or_else(|| "Node.js was not resolved at start-up".to_owned())?;
                let heap_mib =
                    ((profile.resource_limit.memory >> 20) as f64 * NODE_HEAP_SHARE) as u64;
                let mut args: Vec<OsString> = Vec::new();
                if heap_mib > 0 {
                    args.push(format!("--max-old-space-size={heap_mib}").into());
                }
                args.extend(profile.worker.exec_argv.iter().map(OsString::from));
                args.push(self.node_bootstrap.clone().into_os_string());
                Ok(LaunchSpec {
                    program,
                    args,
                    env: worker_env(profile, worker_id),
                })
            }
            ref other => Err(format!(
                "runtime {other:?} is not supported by this build yet"
            )),
        }
    }
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
