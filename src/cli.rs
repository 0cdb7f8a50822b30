//! The command line: `noslate [serve] [options]`, `noslate check`, `--help`, `--version`.
//!
//! Hand-rolled (no clap in the dependency budget). Every flag has an environment variable, and
//! the flag wins. Exit codes: 0 success, 1 runtime failure, 2 bad usage or configuration.

use crate::config::{self, Problem, SystemConfig};
use crate::server::{Server, ServerOptions};
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The port FC calls when nothing else is configured.
pub const DEFAULT_PORT: u16 = 9000;

/// Environment variables that name the port, in priority order.
pub const PORT_ENV: [&str; 4] = [
    "FC_CUSTOM_LISTEN_PORT",
    "FC_SERVER_PORT",
    "SERVER_PORT",
    "PORT",
];

const USAGE: &str = "\
noslate: a single-binary serverless runtime for Function Compute custom containers

USAGE:
    noslate [serve] [OPTIONS]     run the FC server (the default command)
    noslate check [--load] [OPTIONS]
                                  validate the function profiles and system config, and that
                                  the interpreters they need are usable, then exit; with
                                  --load, also load each function's handler and initializer
                                  (not run) in a throw-away worker and report each failure
    noslate ps [--json]           list the running runtime's workers (over its admin socket)
    noslate stats                 the running runtime's counters, as JSON
    noslate metrics               the running runtime's metrics, in Prometheus' text format
    noslate top [--once]          a live view: per function rps, p50/p99, in-flight, queued,
                                  workers, errors; --once prints one frame
    noslate functions get|set FILE   read or replace the running function profile set
    noslate services get|set FILE    read or replace the running service profiles
    noslate env get|set FILE         read or replace the platform environment (a JSON object)
    noslate invoke NAME [--service] [--method M] [--url U] [--data TEXT|@FILE|@-]
                   [--header K:V]... [--timeout MS]
                                  invoke a function (or service) through the admin socket and
                                  stream its body to stdout; --method or --url makes it an
                                  HTTP-trigger request (an event otherwise); @- streams stdin
    noslate inspect NAME [--timeout MS]
                                  turn a Node.js function's inspector on: its invocations go
                                  to one inspect worker whose debugger listens on 127.0.0.1
                                  only; waits for it (default 30000 ms) and prints the
                                  DevTools and ws:// URLs
    noslate inspect NAME --off    turn it off: the inspect worker drains and stops, and
                                  invocations go back to the function's workers
    noslate --help | --version

OPTIONS:
    --port N            port to listen on, on 0.0.0.0 (0 picks a free port)
                        env: FC_CUSTOM_LISTEN_PORT, then FC_SERVER_PORT, then SERVER_PORT,
                        then PORT (Knative's); default 9000
    --gateway PROGRAM   run the user's gateway (e.g. node) on the FC port, beside the workers
                        (system config gateway.command; the rest of gateway.* applies)
    --gateway-arg ARG   one argument of the gateway, repeatable (gateway.args), e.g.
                        --gateway node --gateway-arg /code/server.js
    --functions FILE    function profiles: a JSON array of Noslate function profiles, or
                        {\"functions\": [...], \"services\": [...]}       env: NOSLATE_FUNCTIONS
    --config FILE       system config in Noslate's format (unknown keys are errors)
                                                               env: NOSLATED_CONFIG_PATH
    --workdir DIR       work directory (bootstraps, sockets)   env: NOSLATE_WORKDIR
                        default: $TMPDIR/noslate
    --logdir DIR        log directory (worker stdout/stderr under <function>/<worker>/)
                                                               env: NOSLATE_LOGDIR
                        default: <workdir>/logs
    --socket PATH       (ps, stats, metrics, top) the admin socket; default <workdir>/noslated.sock
    --json              (ps) print JSON instead of a table
    --probe             (serve) print what the sandbox can enforce on this machine and, under
                        guarantees: what a worker is kept from (signalling the runtime,
                        reading its /proc, the admin socket, other logs, code), as JSON,
                        and exit; honours --config, --workdir, --logdir and --functions

ENVIRONMENT:
    RUST_LOG                  log filter for the runtime's own log on stderr (default: info,
                              or logger.level / NOSLATED_LOG_LEVEL)
    NOSLATED_MAX_ACTIVATE_REQUESTS, NOSLATED_REPLICA_COUNT_LIMIT_PER_FUNCTION,
    NOSLATED_RESERVATION_WORKER_COUNT_PER_FUNCTION, NOSLATED_VIRTUAL_MEMORY_POOL_SIZE,
    NOSLATED_DEFAULT_SHRINK_STRATEGY, NOSLATED_LOG_LEVEL
                              override the matching system config keys, as in Noslate

SIGNALS:
    SIGTERM, SIGINT           stop the gateway (if any; SIGTERM, then SIGKILL after its grace
                              period), drain in-flight invocations (like GET /pre-stop), stop
                              the workers, exit 0; a second signal exits at once

See README.md for the routes and the configuration reference.
";

/// What the command line asks for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Command {
    /// Run the server.
    #[default]
    Serve,
    /// Validate the configuration.
    Check,
    /// List workers.
    Ps,
    /// Print counters.
    Stats,
    /// Print the metrics in Prometheus' text format.
    Metrics,
    /// A live view of the runtime, refreshed every second.
    Top,
    /// `functions|services|env get|set`.
    Config,
    /// `invoke NAME`.
    Invoke,
    /// `inspect NAME [--off]`.
    Inspect,
}

/// Parsed command line.
#[derive(Debug, Default, PartialEq, Eq)]
struct Args {
    command: Command,
    json: bool,
    probe: bool,
    /// `check --load`: also load each function's code in a throw-away worker.
    load: bool,
    /// `top --once`: print one frame and exit.
    once: bool,
    /// Positional words after the command (`functions set FILE`, `invoke NAME`).
    words: Vec<String>,
    /// `--data TEXT|@FILE`.
    data: Option<String>,
    /// `--header K:V`, repeated.
    headers: Vec<String>,
    /// `--service`: `invoke` names a service.
    service: bool,
    /// `invoke --method M`: the method the function sees.
    method: Option<String>,
    /// `invoke --url U`: the url the function sees.
    url: Option<String>,
    /// `--timeout MS`: for `invoke`, how long the response head may take; for `inspect`, how
    /// long to wait for the inspect worker.
    timeout_ms: Option<u64>,
    /// `inspect --off`.
    off: bool,
    socket: Option<PathBuf>,
    port: Option<String>,
    /// `--gateway PROGRAM`: run the user's gateway (overrides `gateway.command`).
    gateway: Option<String>,
    /// `--gateway-arg ARG`, repeated (overrides `gateway.args`).
    gateway_args: Vec<String>,
    functions: Option<PathBuf>,
    config: Option<PathBuf>,
    workdir: Option<PathBuf>,
    logdir: Option<PathBuf>,
}

enum Parsed {
    Run(Box<Args>),
    Help,
    Version,
}

fn parse_args(raw: Vec<OsString>) -> Result<Parsed, String> {
    let mut args = Args::default();
    let mut it = raw.into_iter().peekable();
    let command = match it.peek().and_then(|a| a.to_str()) {
        Some("serve") => Some(Command::Serve),
        Some("check") => Some(Command::Check),
        Some("ps") => Some(Command::Ps),
        Some("stats") => Some(Command::Stats),
        Some("metrics") => Some(Command::Metrics),
        Some("top") => Some(Command::Top),
        Some("functions" | "services" | "env") => Some(Command::Config),
        Some("invoke") => Some(Command::Invoke),
        Some("inspect") => Some(Command::Inspect),
        _ => None,
    };
    if let Some(command) = command {
        args.command = command;
        // `functions|services|env` keep their word: it says which configuration.
        let word = it.next().and_then(|w| w.into_string().ok());
        if command == Command::Config
            && let Some(word) = word
        {
            args.words.push(word);
        }
    }
    while let Some(arg) = it.next() {
        let arg = arg
            .into_string()
            .map_err(|a| format!("argument {a:?} is not valid UTF-8"))?;
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(OsString::from(v))),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<OsString, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" | "help" => return Ok(Parsed::Help),
            "-V" | "--version" => return Ok(Parsed::Version),
            "--port" => {
                args.port = Some(
                    value("--port")?
                        .into_string()
                        .map_err(|_| "--port must be a number".to_owned())?,
                );
            }
            "--gateway" => {
                args.gateway = Some(
                    value("--gateway")?
                        .into_string()
                        .map_err(|_| "--gateway must be UTF-8".to_owned())?,
                );
            }
            "--gateway-arg" => args.gateway_args.push(
                value("--gateway-arg")?
                    .into_string()
                    .map_err(|_| "--gateway-arg must be UTF-8".to_owned())?,
            ),
            "--functions" => args.functions = Some(value("--functions")?.into()),
            "--config" => args.config = Some(value("--config")?.into()),
            "--workdir" => args.workdir = Some(value("--workdir")?.into()),
            "--logdir" => args.logdir = Some(value("--logdir")?.into()),
            "--socket" => args.socket = Some(value("--socket")?.into()),
            "--json" => args.json = true,
            "--probe" => args.probe = true,
            "--load" => args.load = true,
            "--once" => args.once = true,
            "--service" => args.service = true,
            "--off" => args.off = true,
            "--data" | "-d" => {
                args.data =
                    Some(value("--data")?.into_string().map_err(|_| {
                        "--data must be UTF-8; use --data @FILE for bytes".to_owned()
                    })?);
            }
            "--method" | "-X" => {
                args.method = Some(
                    value("--method")?
                        .into_string()
                        .map_err(|_| "--method must be UTF-8".to_owned())?,
                );
            }
            "--url" => {
                args.url = Some(
                    value("--url")?
                        .into_string()
                        .map_err(|_| "--url must be UTF-8".to_owned())?,
                );
            }
            "--timeout" => {
                args.timeout_ms = Some(
                    value("--timeout")?
                        .to_str()
                        .and_then(|v| v.parse().ok())
                        .ok_or("--timeout must be a number of milliseconds")?,
                );
            }
            "--header" | "-H" => args.headers.push(
                value("--header")?
                    .into_string()
                    .map_err(|_| "--header must be UTF-8".to_owned())?,
            ),
            word if matches!(
                args.command,
                Command::Config | Command::Invoke | Command::Inspect
            ) && !word.starts_with('-') =>
            {
                args.words.push(word.to_owned());
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok(Parsed::Run(Box::new(args)))
}

/// Resolves the port from the flag or the environment.
fn resolve_port(flag: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> Result<u16, String> {
    if let Some(value) = flag {
        return value
            .trim()
            .parse()
            .map_err(|_| format!("--port {value:?} is not a port number (0-65535)"));
    }
    for name in PORT_ENV {
        if let Some(value) = env(name).filter(|v| !v.trim().is_empty()) {
            return value
                .trim()
                .parse()
                .map_err(|_| format!("{name}={value:?} is not a port number (0-65535)"));
        }
    }
    Ok(DEFAULT_PORT)
}

/// Writes to stdout; a closed pipe (`noslate ps | head`) is not an error worth a panic.
fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn print_problems(what: &str, problems: &[Problem]) {
    eprintln!("noslate: invalid {what}:");
    for p in problems {
        eprintln!("  {p}");
    }
}

/// Runs the command line; returns the process exit code.
pub fn main(raw: Vec<OsString>) -> ExitCode {
    // Hidden: the worker of a `process` function (docs/PROTOCOL.md, "Runtimes").
    if raw
        .first()
        .is_some_and(|a| a == crate::runtime::process::WORKER_ARG)
    {
        return crate::runtime::process::main();
    }
    let args = match parse_args(raw) {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Help) => {
            out(USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            out(&(format!("noslate {}", env!("CARGO_PKG_VERSION")) + "\n"));
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("noslate: {msg}");
            return ExitCode::from(2);
        }
    };
    if matches!(args.command, Command::Ps | Command::Stats) {
        return admin_command(&args);
    }
    if args.command == Command::Metrics {
        return metrics_command(&args);
    }
    if args.command == Command::Top {
        return top_command(&args);
    }
    if args.command == Command::Config {
        return config_command(&args);
    }
    if args.command == Command::Invoke {
        return invoke_command(&args);
    }
    if args.command == Command::Inspect {
        return inspect_command(&args);
    }
    if args.probe {
        return probe_command(&args);
    }

    let Some(mut config) = load_config(&args) else {
        return ExitCode::from(2);
    };
    if let Err(msg) = apply_gateway_flags(&args, &mut config, &env_var) {
        eprintln!("noslate: {msg}");
        return ExitCode::from(2);
    }
    init_logging(&config);
    log::info!("{}", pool_size_line(&config));
    log::info!("{}", scaler_line(&config));
    for key in &config.ignored_keys {
        log::info!(
            "system config key {key} is accepted for Noslate compatibility and has no effect here"
        );
    }

    let Some(functions_file) = args
        .functions
        .clone()
        .or_else(|| env_var("NOSLATE_FUNCTIONS").map(PathBuf::from))
    else {
        eprintln!("noslate: no function profiles: pass --functions FILE or set NOSLATE_FUNCTIONS");
        return ExitCode::from(2);
    };
    let profiles = match config::load_functions(&functions_file, &config) {
        Ok(p) => p,
        Err(problems) => {
            print_problems(
                &format!("function profiles in {}", functions_file.display()),
                &problems,
            );
            return ExitCode::from(2);
        }
    };
    // The profiles as written, for GET /v1/functions (the file parsed above, so it is JSON).
    let raw: (Vec<serde_json::Value>, Vec<serde_json::Value>) = match std::fs::read(&functions_file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
    {
        Some(serde_json::Value::Array(items)) => (items, Vec::new()),
        Some(serde_json::Value::Object(mut map)) => {
            let take = |v: Option<serde_json::Value>| match v {
                Some(serde_json::Value::Array(items)) => items,
                _ => Vec::new(),
            };
            (take(map.remove("functions")), take(map.remove("services")))
        }
        _ => (Vec::new(), Vec::new()),
    };
    if profiles.functions.is_empty() {
        eprintln!("noslate: {} defines no functions", functions_file.display());
        return ExitCode::from(2);
    }
    let port = match resolve_port(args.port.as_deref(), &env_var) {
        Ok(p) => p,
        Err(msg) => {
            eprintln!("noslate: {msg}");
            return ExitCode::from(2);
        }
    };
    if args.command == Command::Check {
        let mut problems = crate::runtime::interpreter_problems(&config, &profiles.functions);
        problems.extend(gateway_problem(&config));
        for problem in &problems {
            eprintln!("noslate: {problem}");
        }
        if args.load && !check_load(&args, &config, &profiles.functions) {
            return ExitCode::from(2);
        }
        if !problems.is_empty() {
            return ExitCode::from(2);
        }
        let gateway = config.gateway.as_ref().map_or_else(String::new, |g| {
            format!("; gateway: {} on port {port}", g.command_line())
        });
        out(&format!(
            "noslate: configuration OK: {} function(s), {} service(s), port {port}; {}; {}{gateway}\n",
            profiles.functions.len(),
            profiles.services.len(),
            pool_size_line(&config),
            scaler_line(&config)
        ));
        return ExitCode::SUCCESS;
    }

    let workdir = resolve_workdir(args.workdir.clone());
    let logdir = resolve_logdir(args.logdir.clone(), &workdir);
    for dir in [&workdir, &logdir] {
        if let Err(err) = std::fs::create_dir_all(dir) {
            eprintln!("noslate: cannot create {}: {err}", dir.display());
            return ExitCode::from(2);
        }
    }

    let options = ServerOptions {
        addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
        config,
        functions: profiles.functions,
        services: profiles.services,
        raw_functions: raw.0,
        raw_services: raw.1,
        functions_base: config::profile_base_dir(&functions_file).to_path_buf(),
        workdir,
        logdir,
    };
    let server = match Server::bind(options) {
        Ok(s) => s,
        Err(err) => {
            log::error!("{err}");
            eprintln!("noslate: {err}");
            return ExitCode::from(1);
        }
    };
    let gateway_port = server.gateway_fc_port();
    match (server.local_addr(), gateway_port) {
        (Some(addr), None) => log::info!("listening on {addr}"),
        (Some(addr), Some(port)) => log::info!(
            "listening on {addr} (gateway.runtimePort); the gateway serves the FC port {port}"
        ),
        (None, _) => log::info!(
            "not listening on HTTP (gateway.runtimePort is off): the gateway serves the FC port \
             {}, the runtime its admin socket",
            gateway_port.unwrap_or_default()
        ),
    }
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            log::error!("{err}");
            ExitCode::from(1)
        }
    }
}

/// `--gateway PROGRAM` and `--gateway-arg ARG`: the gateway's command line over the system
/// config's (its other `gateway.*` keys stay). Arguments without a program are an error unless
/// the config names one.
fn apply_gateway_flags(
    args: &Args,
    config: &mut SystemConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), String> {
    match (&args.gateway, config.gateway.as_mut()) {
        (Some(program), Some(gateway)) => {
            program.clone_into(&mut gateway.command);
            gateway.args.clone_from(&args.gateway_args);
        }
        (Some(program), None) => {
            let mut gateway = config::GatewayConfig::new(program.clone());
            gateway.args.clone_from(&args.gateway_args);
            if let Some(sdk) = env(config::GATEWAY_SDK_PATH_ENV).filter(|v| !v.is_empty()) {
                gateway.sdk_path = sdk;
            }
            config.gateway = Some(gateway);
        }
        (None, Some(gateway)) if !args.gateway_args.is_empty() => {
            gateway.args.clone_from(&args.gateway_args);
        }
        (None, None) if !args.gateway_args.is_empty() => {
            return Err("--gateway-arg needs --gateway PROGRAM (or gateway.command)".into());
        }
        (None, _) => {}
    }
    if config
        .gateway
        .as_ref()
        .is_some_and(|g| g.command.is_empty())
    {
        return Err("--gateway must not be empty".into());
    }
    Ok(())
}

/// `noslate check`: the gateway's program, when one is configured, must be found (on `PATH`,
/// or relative to `gateway.cwd`). `serve` starts anyway and keeps retrying: the program may
/// appear later.
fn gateway_problem(config: &SystemConfig) -> Option<String> {
    let gateway = config.gateway.as_ref()?;
    let program = match &gateway.cwd {
        Some(cwd) if gateway.command.contains('/') => PathBuf::from(cwd).join(&gateway.command),
        _ => PathBuf::from(&gateway.command),
    };
    let found = crate::turf::spawn::find_on_path(&program.to_string_lossy()).is_some();
    (!found).then(|| {
        format!(
            "gateway.command: {} is not an executable file or on PATH",
            gateway.command
        )
    })
}

/// The system config `serve`, `check` and `--probe` use: the file (`--config`, else
/// `NOSLATED_CONFIG_PATH`), the environment's overrides, and the pool sized from the instance
/// when not configured. `None` once its problems are printed.
fn load_config(args: &Args) -> Option<SystemConfig> {
    let config_file = args
        .config
        .clone()
        .or_else(|| env_var("NOSLATED_CONFIG_PATH").map(PathBuf::from));
    let mut config = match config::load_system_config(config_file.as_deref(), &env_var) {
        Ok(c) => c,
        Err(problems) => {
            print_problems("system config", &problems);
            return None;
        }
    };
    config::size_pool_from_instance(&mut config, &env_var, config::HostMemory::read());
    Some(config)
}

/// `virtualMemoryPoolSize` and where it came from, for the start-up log and `noslate check`.
fn pool_size_line(config: &SystemConfig) -> String {
    format!(
        "virtualMemoryPoolSize {} MiB (from {})",
        config.virtual_memory_pool_size >> 20,
        config.pool_size_source.describe()
    )
}

/// The scaler (`controlPlane.scaler`) and what drives it, for the start-up log and
/// `noslate check`.
fn scaler_line(config: &SystemConfig) -> String {
    let cp = &config.control_plane;
    let name = cp.scaler.as_str();
    let every = cp.worker_traffic_stats_pulling_ms;
    match cp.scaler {
        config::ScalerKind::Idle => {
            format!("scaler {name}: workers idle for worker.idleTimeout are drained")
        }
        config::ScalerKind::WaterLevel => format!(
            "scaler {name}: polled every {every} ms, grows at 80 % busy towards \
             capacityScalingStage {}, shrinks after {} polls at or below 60 %",
            cp.capacity_scaling_stage, cp.worker_redundant_victim_spare_times
        ),
        config::ScalerKind::Ema => format!("scaler {name}: polled every {every} ms"),
    }
}

/// `noslate serve --probe`: the capability probe, and each worker guarantee checked for real
/// with the system config, work and log directories and (when given) function profiles that
/// `serve` would use.
fn probe_command(args: &Args) -> ExitCode {
    let Some(config) = load_config(args) else {
        return ExitCode::from(2);
    };
    let code_dirs: Vec<PathBuf> = args
        .functions
        .clone()
        .or_else(|| env_var("NOSLATE_FUNCTIONS").map(PathBuf::from))
        .and_then(|file| config::load_functions(&file, &config).ok())
        .map(|p| {
            let dirs = p.functions.into_iter().filter(|f| f.package.is_none());
            dirs.map(|f| f.code_dir).collect()
        })
        .unwrap_or_default();
    let workdir = resolve_workdir(args.workdir.clone());
    let logdir = resolve_logdir(args.logdir.clone(), &workdir);
    for dir in [&workdir, &logdir] {
        if let Err(err) = std::fs::create_dir_all(dir) {
            eprintln!("noslate: cannot create {}: {err}", dir.display());
            return ExitCode::from(2);
        }
    }
    let caps = crate::turf::probe::probe(&crate::turf::cgroup::instance_name());
    let guarantees = crate::turf::privilege::report(&caps, &config, &workdir, &logdir, &code_dirs);
    let mut json = serde_json::to_value(&caps).unwrap_or_default();
    if let Some(map) = json.as_object_mut() {
        map.insert(
            "guarantees".into(),
            serde_json::to_value(&guarantees).unwrap_or_default(),
        );
        map.insert(
            "virtualMemoryPoolSize".into(),
            serde_json::json!({
                "bytes": config.virtual_memory_pool_size,
                "source": config.pool_size_source.describe(),
            }),
        );
    }
    out(&(serde_json::to_string_pretty(&json).unwrap_or_default() + "\n"));
    ExitCode::SUCCESS
}

/// The work directory: the flag, `NOSLATE_WORKDIR`, or `$TMPDIR/noslate`.
/// `noslate check --load`: loads every function's code as a worker would, one line per function
/// (`ok`, `skipped` or `FAILED` with the error). Returns whether none failed.
fn check_load(args: &Args, config: &SystemConfig, functions: &[config::FunctionProfile]) -> bool {
    // The bootstraps are written where `serve` writes them.
    let workdir = resolve_workdir(args.workdir.clone());
    let runtimes = std::fs::create_dir_all(&workdir)
        .map_err(|e| format!("cannot create {}: {e}", workdir.display()))
        .and_then(|()| crate::runtime::Runtimes::prepare(&workdir, config, functions));
    let runtimes = match runtimes {
        Ok(r) => r,
        Err(err) => {
            eprintln!("noslate: check --load: {err}");
            return false;
        }
    };
    let mut ok = true;
    for f in functions {
        let timeout = std::time::Duration::from_millis(f.worker.initialization_timeout_ms);
        match runtimes.check_load(f, timeout) {
            crate::runtime::LoadCheck::Loaded => {
                out(&format!("noslate: function {}: ok\n", f.name))
            }
            crate::runtime::LoadCheck::Skipped(why) => {
                out(&format!("noslate: function {}: skipped ({why})\n", f.name));
            }
            crate::runtime::LoadCheck::Failed(why) => {
                ok = false;
                eprintln!("noslate: function {}: FAILED: {why}", f.name);
            }
        }
    }
    ok
}

/// The work directory: `--workdir`, else `NOSLATE_WORKDIR`, else `$TMPDIR/noslate`; made
/// absolute, because workers run in their code directories and are handed paths inside it
/// (their bootstraps), which a relative path would resolve against the wrong directory.
fn resolve_workdir(flag: Option<PathBuf>) -> PathBuf {
    let dir = flag
        .or_else(|| env_var("NOSLATE_WORKDIR").map(PathBuf::from))
        .unwrap_or_else(|| std::env::temp_dir().join("noslate"));
    absolute(dir)
}

/// The log directory: `--logdir`, else `NOSLATE_LOGDIR`, else `logs` in the work directory;
/// absolute, like the work directory.
fn resolve_logdir(flag: Option<PathBuf>, workdir: &Path) -> PathBuf {
    let dir = flag
        .or_else(|| env_var("NOSLATE_LOGDIR").map(PathBuf::from))
        .unwrap_or_else(|| workdir.join("logs"));
    absolute(dir)
}

/// `path` joined to the current directory when it is relative (as it is, if that cannot be
/// read: the directory creation that follows then reports the problem).
fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

/// `noslate ps` and `noslate stats`: one request on the admin socket.
fn admin_command(args: &Args) -> ExitCode {
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(|| crate::admin::socket_path(&resolve_workdir(args.workdir.clone())));
    let path = match args.command {
        Command::Ps => "/v1/workers",
        _ => "/v1/stats",
    };
    match crate::admin::client::request(&socket, "GET", path) {
        Ok((200, body)) => {
            if args.command == Command::Ps && !args.json {
                out(&crate::admin::client::ps_table(&body));
            } else {
                out(&(serde_json::to_string_pretty(&body).unwrap_or_default() + "\n"));
            }
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!("noslate: the runtime answered {status}: {body}");
            ExitCode::from(1)
        }
        Err(msg) => {
            eprintln!("noslate: {msg}");
            ExitCode::from(1)
        }
    }
}

/// `noslate metrics`: the runtime's metrics, as Prometheus scrapes them.
fn metrics_command(args: &Args) -> ExitCode {
    match crate::admin::client::request_raw(&admin_socket(args), "GET", "/v1/metrics", &[], &[]) {
        Ok(answer) if answer.status == 200 => {
            out(&String::from_utf8_lossy(&answer.body));
            ExitCode::SUCCESS
        }
        Ok(answer) => {
            let body = String::from_utf8_lossy(&answer.body);
            eprintln!("noslate: the runtime answered {}: {body}", answer.status);
            ExitCode::from(1)
        }
        Err(msg) => {
            eprintln!("noslate: {msg}");
            ExitCode::from(1)
        }
    }
}

/// One scrape of the runtime's metrics.
fn scrape(socket: &std::path::Path) -> Result<crate::admin::top::Scrape, String> {
    let answer = crate::admin::client::request_raw(socket, "GET", "/v1/metrics", &[], &[])?;
    if answer.status != 200 {
        let body = String::from_utf8_lossy(&answer.body);
        return Err(format!("the runtime answered {}: {body}", answer.status));
    }
    Ok(crate::admin::top::Scrape::parse(&String::from_utf8_lossy(
        &answer.body,
    )))
}

/// `noslate top [--once]`: per function, requests per second, p50/p99 latency, in-flight,
/// queued, workers by state and errors over the last second, and a header for the runtime.
/// A terminal gets the frame redrawn in place every second; anything else (and `--once`) gets
/// plain text frames.
fn top_command(args: &Args) -> ExitCode {
    use std::io::IsTerminal;
    let socket = admin_socket(args);
    let interval = std::time::Duration::from_secs(1);
    let redraw = !args.once && std::io::stdout().is_terminal();
    let mut before = match scrape(&socket) {
        Ok(s) => s,
        Err(msg) => {
            eprintln!("noslate: {msg}");
            return ExitCode::from(1);
        }
    };
    loop {
        let taken = std::time::Instant::now();
        std::thread::sleep(interval);
        let after = match scrape(&socket) {
            Ok(s) => s,
            Err(msg) => {
                eprintln!("noslate: {msg}");
                return ExitCode::from(1);
            }
        };
        let rows = crate::admin::top::rows(&before, &after, taken.elapsed());
        let frame = crate::admin::top::render(&after, &rows);
        if redraw {
            // Home and clear, then the frame: plain ANSI, no terminal library.
            out(&format!("\x1b[H\x1b[2J{frame}"));
        } else {
            out(&(frame + "\n"));
        }
        if args.once {
            return ExitCode::SUCCESS;
        }
        before = after;
    }
}

fn admin_socket(args: &Args) -> PathBuf {
    args.socket
        .clone()
        .unwrap_or_else(|| crate::admin::socket_path(&resolve_workdir(args.workdir.clone())))
}

/// `noslate functions|services|env get|set [FILE]`.
fn config_command(args: &Args) -> ExitCode {
    let (what, verb, file) = (
        args.words.first().map(String::as_str).unwrap_or_default(),
        args.words.get(1).map(String::as_str).unwrap_or_default(),
        args.words.get(2),
    );
    let path = match what {
        "functions" => "/v1/functions",
        "services" => "/v1/services",
        _ => "/v1/env",
    };
    let socket = admin_socket(args);
    let result = match (verb, file) {
        ("get", None) => crate::admin::client::request(&socket, "GET", path),
        ("set", Some(file)) => {
            let body = match std::fs::read(file) {
                Ok(body) => body,
                Err(err) => {
                    eprintln!("noslate: cannot read {file}: {err}");
                    return ExitCode::from(2);
                }
            };
            // Relative code urls resolve against the file's directory, as at start-up.
            let dir = std::path::absolute(file)
                .ok()
                .and_then(|p| p.parent().map(|d| d.to_string_lossy().into_owned()))
                .unwrap_or_default();
            let headers = vec![("x-noslate-base-dir".to_owned(), dir)];
            crate::admin::client::request_json(&socket, "PUT", path, &headers, &body)
        }
        _ => {
            eprintln!("noslate: usage: noslate {what} get | noslate {what} set FILE");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok((200, body)) => {
            out(&(serde_json::to_string_pretty(&body).unwrap_or_default() + "\n"));
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            let message = body["errorMessage"]
                .as_str()
                .map_or_else(|| body.to_string(), str::to_owned);
            eprintln!("noslate: the runtime refused it ({status}): {message}");
            if let Some(lines) = body["stackTrace"].as_array() {
                for line in lines {
                    eprintln!("  {}", line.as_str().unwrap_or_default());
                }
            }
            ExitCode::from(1)
        }
        Err(msg) => {
            eprintln!("noslate: {msg}");
            ExitCode::from(1)
        }
    }
}

/// How long `noslate inspect` waits for the inspect worker when `--timeout` is not given.
const INSPECT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
/// How often `noslate inspect` asks whether the inspect worker is ready.
const INSPECT_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// `noslate inspect NAME [--off] [--timeout MS]`.
fn inspect_command(args: &Args) -> ExitCode {
    let (Some(name), None) = (args.words.first(), args.words.get(1)) else {
        eprintln!("noslate: usage: noslate inspect NAME [--off] [--timeout MS]");
        return ExitCode::from(2);
    };
    let wait = args
        .timeout_ms
        .map_or(INSPECT_WAIT, std::time::Duration::from_millis);
    let socket = admin_socket(args);
    let path = format!("/v1/inspector/{name}");
    let body = serde_json::json!({ "use": !args.off }).to_string();
    match crate::admin::client::request_json(&socket, "PUT", &path, &[], body.as_bytes()) {
        Ok((200, _)) => {}
        Ok((status, answer)) => {
            let message =
                (answer["errorMessage"].as_str()).map_or(answer.to_string(), str::to_owned);
            eprintln!("noslate: inspect {name}: {message} ({status})");
            return ExitCode::from(1);
        }
        Err(msg) => {
            eprintln!("noslate: {msg}");
            return ExitCode::from(1);
        }
    }
    if args.off {
        out(&format!(
            "inspector of {name} is off: its inspect worker drains and stops; invocations go \
             to its workers\n"
        ));
        return ExitCode::SUCCESS;
    }
    let deadline = std::time::Instant::now() + wait;
    let worker = loop {
        match crate::admin::client::request(&socket, "GET", &path) {
            Ok((200, view)) if view["use"] == serde_json::Value::Bool(false) => {
                eprintln!("noslate: inspect {name}: the inspector was turned off meanwhile");
                return ExitCode::from(1);
            }
            Ok((200, view)) => {
                let workers = view["workers"].as_array().cloned().unwrap_or_default();
                let ready = workers
                    .into_iter()
                    .find(|w| w["state"] == "ready" && w["port"].is_u64());
                if let Some(worker) = ready {
                    break worker;
                }
            }
            Ok((status, answer)) => {
                eprintln!("noslate: inspect {name}: the runtime answered {status}: {answer}");
                return ExitCode::from(1);
            }
            Err(msg) => {
                eprintln!("noslate: {msg}");
                return ExitCode::from(1);
            }
        }
        if std::time::Instant::now() >= deadline {
            eprintln!(
                "noslate: inspect {name}: no inspect worker was ready within {:.1} s; the \
                 inspector stays on (see noslate ps, the worker's log, or noslate inspect {name} \
                 --off)",
                wait.as_secs_f64()
            );
            return ExitCode::from(1);
        }
        std::thread::sleep(INSPECT_POLL);
    };
    let port = worker["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(0);
    let id = worker["id"].as_str().unwrap_or("-");
    let pid = &worker["pid"];
    // The target list is what DevTools itself reads; the runtime's own URL is the fallback.
    let ws = match crate::admin::client::debugger_targets(port) {
        Ok(list) => list
            .as_array()
            .and_then(|l| l.iter().find_map(|t| t["webSocketDebuggerUrl"].as_str()))
            .map(str::to_owned),
        Err(why) => {
            eprintln!("noslate: inspect {name}: {why}; using the address the worker reported");
            None
        }
    }
    .or_else(|| worker["webSocketDebuggerUrl"].as_str().map(str::to_owned));
    let endpoint = ws.as_deref().map(crate::inspector::Endpoint::parse);
    match endpoint {
        Some(Ok(endpoint)) => {
            out(&format!(
                "function {name}: inspect worker {id} (pid {pid}), debugger on 127.0.0.1:{port}\n\
                 DevTools: {}\n\
                 WebSocket: {}\n",
                endpoint.devtools_url(),
                endpoint.ws_url()
            ));
            ExitCode::SUCCESS
        }
        Some(Err(why)) => {
            eprintln!("noslate: inspect {name}: {why}");
            ExitCode::from(1)
        }
        None => {
            eprintln!("noslate: inspect {name}: the debugger on port {port} lists no target");
            ExitCode::from(1)
        }
    }
}

/// `noslate invoke NAME [--service] [--method M] [--url U] [--data TEXT|@FILE|@-]
/// [--header K:V]... [--timeout MS]`: streams the body to stdout; exits 1 when the invocation
/// failed (an error from the runtime, or a status of 400 or more from the function).
fn invoke_command(args: &Args) -> ExitCode {
    use crate::admin::invocation;
    let Some(name) = args.words.first() else {
        eprintln!(
            "noslate: usage: noslate invoke NAME [--service] [--method M] [--url U] \
             [--data TEXT|@FILE|@-] [--header K:V] [--timeout MS]"
        );
        return ExitCode::from(2);
    };
    let body: Box<dyn std::io::Read + Send> = match args.data.as_deref() {
        Some("@-") => Box::new(std::io::stdin()),
        Some(data) if data.starts_with('@') => match std::fs::File::open(&data[1..]) {
            Ok(file) => Box::new(file),
            Err(err) => {
                eprintln!("noslate: cannot read {}: {err}", &data[1..]);
                return ExitCode::from(2);
            }
        },
        Some(data) => Box::new(std::io::Cursor::new(data.as_bytes().to_vec())),
        None => Box::new(std::io::empty()),
    };
    let mut function_headers = Vec::new();
    for header in &args.headers {
        let Some((k, v)) = header.split_once(':') else {
            eprintln!("noslate: --header {header:?} must be NAME:VALUE");
            return ExitCode::from(2);
        };
        function_headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let mut headers = vec![(
        invocation::HEADERS.to_owned(),
        invocation::encode_pairs(&function_headers),
    )];
    if let Some(method) = &args.method {
        headers.push((invocation::METHOD.to_owned(), method.clone()));
    }
    if let Some(url) = &args.url {
        headers.push((invocation::URL.to_owned(), url.clone()));
    }
    if let Some(ms) = args.timeout_ms {
        headers.push((invocation::TIMEOUT.to_owned(), ms.to_string()));
    }
    let path = if args.service {
        format!("/v1/invoke/service/{name}")
    } else {
        format!("/v1/invoke/{name}")
    };
    let mut stdout = std::io::stdout().lock();
    let answer = crate::admin::client::invoke_streaming(
        &admin_socket(args),
        &path,
        &headers,
        body,
        &mut stdout,
    );
    match answer {
        Ok(head) => {
            let error = head.header(invocation::ERROR);
            match error {
                Some(error_type) => {
                    eprintln!(
                        "\nnoslate: the invocation failed: {} {error_type}",
                        head.status
                    );
                    ExitCode::from(1)
                }
                None if head.status >= 400 => {
                    eprintln!("\nnoslate: the function answered {}", head.status);
                    ExitCode::from(1)
                }
                None => ExitCode::SUCCESS,
            }
        }
        Err(msg) => {
            eprintln!("noslate: {msg}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(config: &SystemConfig) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(config.logger.level_filter());
    if let Ok(filter) = std::env::var("RUST_LOG") {
        builder.parse_filters(&filter);
    }
    builder.target(env_logger::Target::Stderr);
    // Tests may initialise twice in one process; the second call is harmless.
    let _ = builder.try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Parsed, String> {
        parse_args(list.iter().map(OsString::from).collect())
    }

    #[test]
    fn work_and_log_directories_given_relative_are_made_absolute() {
        let here = std::env::current_dir().unwrap();
        let work = resolve_workdir(Some(PathBuf::from("w")));
        assert_eq!(work, here.join("w"));
        assert_eq!(
            resolve_logdir(Some(PathBuf::from("l/x")), &work),
            here.join("l/x")
        );
        assert_eq!(
            resolve_logdir(Some(PathBuf::from("/abs")), &work),
            PathBuf::from("/abs")
        );
    }

    #[test]
    fn serve_is_the_default_command() {
        let Ok(Parsed::Run(a)) = args(&["--port", "8080"]) else {
            panic!("expected run");
        };
        let Ok(Parsed::Run(b)) = args(&["serve", "--port=8080"]) else {
            panic!("expected run");
        };
        assert_eq!(a, b);
        assert_eq!(a.port.as_deref(), Some("8080"));
        assert_eq!(a.command, Command::Serve);
    }

    #[test]
    fn rejects_unknown_and_incomplete_arguments() {
        assert!(args(&["--bogus"]).is_err());
        assert!(args(&["--functions"]).is_err());
        assert!(matches!(args(&["--help"]), Ok(Parsed::Help)));
        assert!(matches!(
            args(&["check"]),
            Ok(Parsed::Run(a)) if a.command == Command::Check
        ));
        let Ok(Parsed::Run(set)) = args(&["functions", "set", "f.json"]) else {
            panic!("expected functions set");
        };
        assert_eq!(set.command, Command::Config);
        assert_eq!(set.words, ["functions", "set", "f.json"]);
        let Ok(Parsed::Run(inv)) = args(&["invoke", "hello", "-d", "x", "-H", "a:b", "--service"])
        else {
            panic!("expected invoke");
        };
        assert_eq!(inv.words, ["hello"]);
        assert_eq!(inv.data.as_deref(), Some("x"));
        assert_eq!(inv.headers, ["a:b"]);
        assert!(inv.service);
        let Ok(Parsed::Run(ps)) = args(&["ps", "--json", "--socket", "/s"]) else {
            panic!("expected ps");
        };
        assert_eq!(ps.command, Command::Ps);
        assert!(ps.json);
        assert_eq!(ps.socket, Some(PathBuf::from("/s")));
        let Ok(Parsed::Run(inspect)) = args(&["inspect", "hello", "--off", "--timeout", "5000"])
        else {
            panic!("expected inspect");
        };
        assert_eq!(inspect.command, Command::Inspect);
        assert_eq!(inspect.words, ["hello"]);
        assert!(inspect.off);
        assert_eq!(inspect.timeout_ms, Some(5000));
        assert!(args(&["inspect", "hello", "--timeout"]).is_err());
    }

    #[test]
    fn port_precedence_is_flag_then_fc_variables_then_default() {
        let env = |name: &str| match name {
            "FC_SERVER_PORT" => Some("7000".to_owned()),
            "SERVER_PORT" => Some("6000".to_owned()),
            _ => None,
        };
        assert_eq!(resolve_port(Some("8000"), &env), Ok(8000));
        assert_eq!(resolve_port(None, &env), Ok(7000));
        assert_eq!(resolve_port(None, &|_| None), Ok(DEFAULT_PORT));
        // Knative's PORT comes last: the same image runs there without a manifest change.
        let knative = |name: &str| (name == "PORT").then(|| "8080".to_owned());
        assert_eq!(resolve_port(None, &knative), Ok(8080));
        let both = |name: &str| match name {
            "SERVER_PORT" => Some("6000".to_owned()),
            "PORT" => Some("8080".to_owned()),
            _ => None,
        };
        assert_eq!(resolve_port(None, &both), Ok(6000));
        let bad = |name: &str| (name == "FC_CUSTOM_LISTEN_PORT").then(|| "http".to_owned());
        let err = resolve_port(None, &bad).unwrap_err();
        assert!(err.contains("FC_CUSTOM_LISTEN_PORT"), "{err}");
    }
}
