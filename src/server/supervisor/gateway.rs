//! The user's gateway on the supervisor (`gateway.*`, `turf::gateway`): starting it outside the
//! worker sandbox, relaying its output with a `[gateway] ` prefix, restarting it with back-off
//! when it dies, and stopping it first when the runtime stops. The loop lends its registry,
//! timers and console for each call.

use super::Supervisor;
use crate::server::{Child, Lent, Timer};
use crate::turf::child::ChildProc;
use crate::turf::child::tail_text;
use crate::turf::gateway::{AfterExit, Gateway, GatewayFailure};
use crate::turf::spawn::OutputPipes;
use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The prefix of every line of the gateway's output on the runtime's console.
pub(in crate::server) const OUTPUT_PREFIX: &str = "[gateway] ";

/// How to start the gateway: decided once, when the runtime has bound its sockets.
#[derive(Debug, Clone)]
pub(in crate::server) struct GatewayLaunch {
    /// The program (a path, or a name looked up in `PATH`).
    pub(in crate::server) program: String,
    /// Its arguments.
    pub(in crate::server) args: Vec<String>,
    /// Its complete environment.
    pub(in crate::server) env: Vec<(String, String)>,
    /// Its working directory; `None` is the runtime's.
    pub(in crate::server) cwd: Option<PathBuf>,
    /// `gateway.command` with its arguments, for logs and stats.
    pub(in crate::server) command_line: String,
    /// SIGTERM to SIGKILL when the runtime stops.
    pub(in crate::server) grace: Duration,
    /// `gateway.stderrTailBytes`.
    pub(in crate::server) stderr_tail_bytes: usize,
    /// The FC port the gateway is told to serve.
    pub(in crate::server) fc_port: u16,
}

/// Where the runtime is, as the gateway's environment tells it.
#[derive(Debug, Clone, Copy)]
pub(in crate::server) struct RuntimePlaces<'a> {
    /// The FC port, which the gateway serves.
    pub(in crate::server) fc_port: u16,
    /// The runtime's own HTTP listener, when `gateway.runtimePort` is on.
    pub(in crate::server) runtime_addr: Option<std::net::SocketAddr>,
    /// `NOSLATE_WORKDIR`.
    pub(in crate::server) workdir: &'a std::path::Path,
    /// `NOSLATE_LOGDIR`.
    pub(in crate::server) logdir: &'a std::path::Path,
    /// The admin socket, which Noslate's SDK connects to.
    pub(in crate::server) admin_socket: &'a std::path::Path,
}

/// The variables that name the FC port for a server, all set to it: whichever one the user's
/// code reads (FC's, FC's emulator's, the seed image's, Knative's), it finds the port FC calls.
pub(in crate::server) const PORT_VARIABLES: [&str; 4] = [
    "FC_CUSTOM_LISTEN_PORT",
    "FC_SERVER_PORT",
    "SERVER_PORT",
    "PORT",
];

impl GatewayLaunch {
    /// How to start the gateway of `gateway` with the runtime at `places`: the runtime's own
    /// environment `inherited`, then the SDK's directory (`NOSLATE_PATH`), the work and log
    /// directories, the admin socket (`NOSLATE_SOCKET`), the FC port under each of
    /// [`PORT_VARIABLES`] and, when on, the runtime's own port (`NOSLATE_RUNTIME_PORT`); then
    /// `gateway.env`, which wins.
    pub(in crate::server) fn new(
        gateway: &crate::config::GatewayConfig,
        default_grace_ms: u64,
        places: RuntimePlaces<'_>,
        inherited: impl Iterator<Item = (String, String)>,
    ) -> GatewayLaunch {
        let mut env: Vec<(String, String)> = inherited.collect();
        let mut put = |key: &str, value: String| {
            env.retain(|(k, _)| k != key);
            env.push((key.to_owned(), value));
        };
        put(
            crate::config::GATEWAY_SDK_PATH_ENV,
            gateway.sdk_path.clone(),
        );
        put("NOSLATE_WORKDIR", places.workdir.display().to_string());
        put("NOSLATE_LOGDIR", places.logdir.display().to_string());
        put("NOSLATE_SOCKET", places.admin_socket.display().to_string());
        for name in PORT_VARIABLES {
            put(name, places.fc_port.to_string());
        }
        if let Some(addr) = places.runtime_addr {
            put("NOSLATE_RUNTIME_PORT", addr.port().to_string());
        }
        for (key, value) in &gateway.env {
            put(key, value.clone());
        }
        GatewayLaunch {
            program: gateway.command.clone(),
            args: gateway.args.clone(),
            env,
            cwd: gateway.cwd.as_ref().map(PathBuf::from),
            command_line: gateway.command_line(),
            grace: Duration::from_millis(gateway.stop_grace_period_ms.unwrap_or(default_grace_ms)),
            stderr_tail_bytes: gateway.stderr_tail_bytes,
            fc_port: places.fc_port,
        }
    }
}

/// The FC port a gateway is told to serve when the runtime is asked for `addr`: its port, or
/// with port 0 ("any free port", as tests and local runs ask) one the kernel has just handed
/// out on that address. The gateway binds it itself, so it must be a real number: a gateway
/// told `0` would listen somewhere nobody knows.
pub(in crate::server) fn fc_port_for(addr: std::net::SocketAddr) -> io::Result<u16> {
    if addr.port() != 0 {
        return Ok(addr.port());
    }
    let probe = std::net::TcpListener::bind(addr)?;
    Ok(probe.local_addr()?.port())
}

impl Supervisor {
    /// From now on the supervisor keeps a gateway started as `launch` says.
    pub(in crate::server) fn configure_gateway(&mut self, launch: GatewayLaunch) {
        self.gateway = Some((Gateway::default(), launch));
    }

    /// The gateway and how it is started, when one is configured.
    pub(in crate::server) fn gateway(&self) -> Option<(&Gateway, &GatewayLaunch)> {
        self.gateway.as_ref().map(|(g, l)| (g, l))
    }

    /// Starts the gateway if it is due: not running, not backing off, the runtime not
    /// stopping. A start that fails is a death like any other: logged with its reason, kept
    /// for `noslate stats`, retried after the back-off.
    pub(in crate::server) fn start_gateway_if_due(&mut self, lp: &mut Lent<'_>) {
        let Some((gateway, launch)) = self.gateway.as_mut() else {
            return;
        };
        if !gateway.may_start() {
            return;
        }
        match spawn_gateway(launch) {
            Ok((pid, pipes)) => {
                let relay = lp
                    .console
                    .attach_labelled(lp.registry, pipes, OUTPUT_PREFIX);
                if let Some(key) = relay {
                    lp.console.keep_tail(key, launch.stderr_tail_bytes);
                }
                gateway.started(ChildProc::new("gateway".into(), pid), relay);
                log::info!(
                    "[gateway pid={pid}] started: {} (restarts: {})",
                    launch.command_line,
                    gateway.restarts()
                );
                self.children.insert(pid, Child::Gateway);
            }
            Err(err) => {
                let failure = GatewayFailure {
                    reason: format!("cannot execute {}: {err}", launch.program),
                    stderr_tail: String::new(),
                    uptime_ms: 0,
                };
                let after = gateway.ended(failure.clone(), Duration::ZERO);
                report_end(None, &failure, after, launch);
                arm_retry(after, lp);
            }
        }
    }

    /// The gateway's process was reaped: its stderr tail is read, and it is restarted after
    /// the back-off unless the runtime is stopping it.
    pub(in crate::server) fn gateway_reaped(
        &mut self,
        exit: &crate::sys::ExitKind,
        lp: &mut Lent<'_>,
    ) {
        let Some((gateway, launch)) = self.gateway.as_mut() else {
            return;
        };
        let Some(process) = gateway.process.take() else {
            return;
        };
        let uptime = process.started_at.elapsed();
        let tail = match gateway.stderr_relay {
            Some(key) => lp.console.take_tail(lp.registry, key),
            None => Vec::new(),
        };
        let failure = GatewayFailure {
            reason: exit.to_string(),
            stderr_tail: tail_text(&tail, tail.len() < launch.stderr_tail_bytes),
            uptime_ms: u64::try_from(uptime.as_millis()).unwrap_or(u64::MAX),
        };
        let pid = process.pid;
        let after = gateway.ended(failure.clone(), uptime);
        report_end(Some(pid), &failure, after, launch);
        arm_retry(after, lp);
        self.release_process(process, lp.timers, &lp.config.worker);
    }

    /// The gateway's restart back-off is over: start it again.
    pub(in crate::server) fn gateway_retry_due(&mut self, lp: &mut Lent<'_>) {
        if let Some((gateway, _)) = self.gateway.as_mut() {
            gateway.retry_due();
        }
        self.start_gateway_if_due(lp);
    }

    /// The runtime is stopping: SIGTERM to the gateway's process group (SIGKILL after its
    /// grace period) and no restart. Whether there is a process to wait for.
    pub(in crate::server) fn stop_gateway(&mut self, lp: &mut Lent<'_>) -> bool {
        let Some((gateway, launch)) = self.gateway.as_mut() else {
            return false;
        };
        if !gateway.stop() {
            return false;
        }
        let grace = launch.grace;
        if let Some(process) = &gateway.process {
            log::info!(
                "[gateway pid={}] stopping: SIGTERM, SIGKILL after {} ms",
                process.pid,
                grace.as_millis()
            );
        }
        self.terminate(Child::Gateway, grace, lp.timers);
        true
    }

    /// Whether the runtime may go on with its own drain: no gateway, or it is gone for good.
    pub(in crate::server) fn gateway_stopped(&self) -> bool {
        self.gateway.as_ref().is_none_or(|(g, _)| g.is_stopped())
    }

    /// The gateway's pid, while it runs: it and what it starts may use the admin socket and
    /// send lifecycle hooks, which the runtime refuses to its workers.
    pub(in crate::server) fn gateway_pid(&self) -> Option<i32> {
        self.gateway
            .as_ref()
            .and_then(|(g, _)| g.process.as_ref())
            .map(|p| p.pid)
    }

    /// The gateway's process record, while it runs.
    pub(super) fn gateway_process_mut(&mut self) -> Option<&mut ChildProc> {
        self.gateway.as_mut().and_then(|(g, _)| g.process.as_mut())
    }
}

/// Logs the end of a gateway process (or of a start that failed): a warning with its stderr
/// tail when it ended on its own, a plain line when the runtime stopped it.
fn report_end(
    pid: Option<i32>,
    failure: &GatewayFailure,
    after: AfterExit,
    launch: &GatewayLaunch,
) {
    let who = pid.map_or_else(|| "gateway".to_owned(), |pid| format!("gateway pid={pid}"));
    match after {
        AfterExit::Done => log::info!("[{who}] exited with {}", failure.reason),
        AfterExit::RestartIn(delay) => log::warn!(
            "[{who}] {}{} after {} ms; restarting in {} ms; command: {}; stderr tail: {:?}",
            if pid.is_some() { "exited with " } else { "" },
            failure.reason,
            failure.uptime_ms,
            delay.as_millis(),
            launch.command_line,
            failure.stderr_tail
        ),
    }
}

/// Schedules the gateway's restart, when there is one.
fn arm_retry(after: AfterExit, lp: &mut Lent<'_>) {
    if let AfterExit::RestartIn(delay) = after {
        lp.timers
            .schedule(Instant::now() + delay, Timer::GatewayRetry);
    }
}

/// Starts the gateway's process: in its own session, killed if the runtime dies, with its
/// stdout and stderr on pipes the console relays, stdin on `/dev/null`, and nothing else
/// inherited (every descriptor of the runtime is close-on-exec).
fn spawn_gateway(launch: &GatewayLaunch) -> io::Result<(i32, OutputPipes)> {
    let (out_writer, stdout) = mio::unix::pipe::new()?;
    let (err_writer, stderr) = mio::unix::pipe::new()?;
    out_writer.set_nonblocking(false)?;
    err_writer.set_nonblocking(false)?;
    let mut command = Command::new(&launch.program);
    command
        .args(launch.args.iter().map(OsString::from))
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(OwnedFd::from(out_writer)))
        .stderr(Stdio::from(OwnedFd::from(err_writer)));
    if let Some(cwd) = &launch.cwd {
        command.current_dir(cwd);
    }
    crate::sys::sandbox::prepare_unsandboxed_command(&mut command);
    let child = command.spawn()?;
    // Dropping std's handle neither waits nor kills: the loop reaps the pid with the others.
    let pid = i32::try_from(child.id()).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    drop(command);
    Ok((pid, OutputPipes { stdout, stderr }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GatewayConfig, RuntimePort};
    use std::path::Path;

    #[test]
    fn a_gateway_asked_for_port_0_is_given_a_free_port_and_any_other_port_as_is() {
        let fixed = fc_port_for("127.0.0.1:9000".parse().expect("addr")).expect("no bind");
        assert_eq!(fixed, 9000);
        let picked = fc_port_for("127.0.0.1:0".parse().expect("addr")).expect("a free port");
        assert_ne!(picked, 0);
        // Released again: the gateway binds it.
        std::net::TcpListener::bind(("127.0.0.1", picked)).expect("the port is free");
    }

    fn env_of(launch: &GatewayLaunch, key: &str) -> Option<String> {
        let found: Vec<&String> = (launch.env.iter())
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v)
            .collect();
        assert!(found.len() <= 1, "{key} is set once: {found:?}");
        found.first().map(|v| (*v).clone())
    }

    #[test]
    fn the_launch_sets_the_places_over_the_runtimes_environment_and_gateway_env_wins() {
        let mut gateway = GatewayConfig::new("node".into());
        gateway.args = vec!["/code/server.js".into()];
        gateway.env = vec![("NOSLATE_LOGDIR".into(), "/mine".into())];
        gateway.runtime_port = RuntimePort::Loopback(0);
        let places = RuntimePlaces {
            fc_port: 9000,
            runtime_addr: Some("127.0.0.1:41234".parse().expect("addr")),
            workdir: Path::new("/w"),
            logdir: Path::new("/l"),
            admin_socket: Path::new("/w/noslated.sock"),
        };
        let inherited = [
            ("PATH", "/usr/bin"),
            ("PORT", "8080"),
            ("FC_CUSTOM_LISTEN_PORT", "9000"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let launch = GatewayLaunch::new(&gateway, 3000, places, inherited.into_iter());
        assert_eq!(env_of(&launch, "PATH").as_deref(), Some("/usr/bin"));
        for name in PORT_VARIABLES {
            assert_eq!(env_of(&launch, name).as_deref(), Some("9000"), "{name}");
        }
        assert_eq!(
            env_of(&launch, "NOSLATE_PATH").as_deref(),
            Some(crate::config::DEFAULT_GATEWAY_SDK_PATH)
        );
        assert_eq!(env_of(&launch, "NOSLATE_WORKDIR").as_deref(), Some("/w"));
        assert_eq!(
            env_of(&launch, "NOSLATE_SOCKET").as_deref(),
            Some("/w/noslated.sock")
        );
        assert_eq!(env_of(&launch, "NOSLATE_LOGDIR").as_deref(), Some("/mine"));
        assert_eq!(
            env_of(&launch, "NOSLATE_RUNTIME_PORT").as_deref(),
            Some("41234")
        );
        assert_eq!(launch.command_line, "node /code/server.js");
        assert_eq!(launch.grace, Duration::from_millis(3000));
        gateway.stop_grace_period_ms = Some(10);
        let launch = GatewayLaunch::new(&gateway, 3000, places, std::iter::empty());
        assert_eq!(launch.grace, Duration::from_millis(10));
    }
}
