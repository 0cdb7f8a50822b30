//! Function profiles in Noslate's format, and the profile file that holds them together with
//! service profiles.

use std::fs;
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use super::Problem;
use super::problems::{
    Fields, Problems, ROOT_PATH, array, describe, in_unit_interval, index, join, one_of, quote,
    read_json_file, set, string,
};
use super::service::{ServiceProfile, parse_services};
use super::system::{
    CONCURRENCY_STATS_MODES, ConcurrencyStatsMode, EmaSettings, SHRINK_STRATEGIES, ShrinkStrategy,
    SystemConfig, check_ema, read_ema,
};

/// Default `resourceLimit.memory`, in bytes (512 MiB, Noslate's `spec.template.json`).
pub const DEFAULT_MEMORY_LIMIT_BYTES: u64 = 512 << 20;
/// Smallest accepted `resourceLimit.memory` (and `virtualMemoryPoolSize`), in bytes (16 MiB).
pub const MIN_MEMORY_LIMIT_BYTES: u64 = 16 << 20;
/// Longest function or service name, in characters. A function name becomes a directory name.
pub const MAX_NAME_CHARS: usize = 64;
/// Default `worker.dispatchMode`.
pub const DEFAULT_DISPATCH_MODE: DispatchMode = DispatchMode::LeastRequestCount;
/// Default `worker.fastFailRequestsOnStarting` (Noslate's docs say true, its code says false).
pub const DEFAULT_FAST_FAIL_REQUESTS_ON_STARTING: bool = false;
/// Default `worker.disableRequestQueue`.
pub const DEFAULT_DISABLE_REQUEST_QUEUE: bool = false;
/// Default `worker.disableSeed`.
pub const DEFAULT_DISABLE_SEED: bool = false;
/// Default `worker.disposable`.
pub const DEFAULT_DISPOSABLE: bool = false;
/// Prefixes of environment variable names that the runtime sets, so a profile may not.
pub const RESERVED_ENV_PREFIXES: &[&str] = &["NOSLATE_", "NOSLATED_", "FC_"];

/// The language runtime of a function. Which ones can actually run is the runtime's business;
/// the configuration only parses the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// `nodejs`, or any name starting with it (`nodejs-v16`), as Noslate's launcher accepts.
    Nodejs,
    /// `aworker`, or any name starting with it; needs `sourceFile`.
    Aworker,
    /// `python3`.
    Python3,
    /// `native`: a compiled program.
    Native,
    /// `process`: an arbitrary command.
    Process,
}

/// The runtime names, for messages.
const RUNTIME_NAMES: &[(&str, ())] = &[
    ("nodejs", ()),
    ("aworker", ()),
    ("python3", ()),
    ("native", ()),
    ("process", ()),
];

/// `handlerStyle` (ours): which calling convention the function's code uses. It is chosen in
/// the profile, never guessed from the handler's arity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlerStyle {
    /// Noslate's `handler(ctx, req, res)` (Node.js; the default there).
    Noslate,
    /// FC's event handler: `handler(event, context[, callback])` (the default for Python).
    FcEvent,
    /// FC's HTTP handler: `handler(req, resp, context)` in Node.js, WSGI in Python.
    FcHttp,
}

impl HandlerStyle {
    /// The name in profiles and in the worker protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            HandlerStyle::Noslate => "noslate",
            HandlerStyle::FcEvent => "fc-event",
            HandlerStyle::FcHttp => "fc-http",
        }
    }
}

const HANDLER_STYLES: &[(&str, HandlerStyle)] = &[
    ("noslate", HandlerStyle::Noslate),
    ("fc-event", HandlerStyle::FcEvent),
    ("fc-http", HandlerStyle::FcHttp),
];

/// Default `resourceLimit.pids`: tasks (processes and threads) a worker may have.
pub const DEFAULT_PIDS_LIMIT: u64 = 1024;
/// Default `resourceLimit.nofile`: open files per worker process (capped by the runtime's own
/// hard limit when it is not root).
pub const DEFAULT_NOFILE_LIMIT: u64 = 65_536;

/// How requests are spread over a function's workers (ignored when `disposable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispatchMode {
    /// `least-request-count`: the worker with the fewest active requests.
    LeastRequestCount,
    /// `round-robin`: workers in turn.
    RoundRobin,
}

/// The JSON names of [`DispatchMode`].
const DISPATCH_MODES: &[(&str, DispatchMode)] = &[
    ("least-request-count", DispatchMode::LeastRequestCount),
    ("round-robin", DispatchMode::RoundRobin),
];

/// `rateLimit`: a token bucket per function. Present (even as `{}`) means the function is
/// rate limited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// `maxTokenCount`: bucket size, and its content at start; `None` means unlimited.
    pub max_token_count: Option<u64>,
    /// `tokensPerFill`: tokens added each `fill_interval_ms`; `None` means refill to the top.
    pub tokens_per_fill: Option<u64>,
    /// `fillInterval`, in milliseconds; `None` means the bucket never refills.
    pub fill_interval_ms: Option<u64>,
}

/// `resourceLimit`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceLimit {
    /// `memory`, in bytes: at least [`MIN_MEMORY_LIMIT_BYTES`] and at most the system's
    /// `virtualMemoryPoolSize`.
    pub memory: u64,
    /// `cpu`: share of one CPU in (0, 1]; `None` means no CPU limit.
    pub cpu: Option<f64>,
    /// `pids` (ours): most tasks (processes and threads) of one worker.
    pub pids: u64,
    /// `nofile` (ours): `RLIMIT_NOFILE` of a worker.
    pub nofile: u64,
}

/// `worker`: how the function's workers are run and scaled, with the system defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerProfile {
    /// `reservationCount`: warm workers kept; never above `replica_count_limit`.
    pub reservation_count: u32,
    /// `replicaCountLimit`: most starting + active workers.
    pub replica_count_limit: u32,
    /// `maxActivateRequests`: concurrent requests per worker; 1 when `disposable`.
    pub max_activate_requests: u32,
    /// `initializationTimeout`, in milliseconds: deadline of the initializer.
    pub initialization_timeout_ms: u64,
    /// `invokeTimeout` (ours), in milliseconds: deadline of a request that has no
    /// `x-fc-function-timeout` header.
    pub invoke_timeout_ms: u64,
    /// `idleTimeout` (ours), in milliseconds: under the idle scaler (`controlPlane.scaler`), a
    /// worker idle this long is drained and stopped, never below `reservationCount`.
    pub idle_timeout_ms: u64,
    /// `shrinkStrategy`.
    pub shrink_strategy: ShrinkStrategy,
    /// `fastFailRequestsOnStarting`: fail queued requests when a worker fails to start.
    pub fast_fail_requests_on_starting: bool,
    /// `disableRequestQueue`: reject instead of queueing when no worker is free.
    pub disable_request_queue: bool,
    /// `v8Options` (deprecated) followed by `execArgv`: extra runtime arguments.
    pub exec_argv: Vec<String>,
    /// `disableSeed`: do not fork workers from a warm seed.
    pub disable_seed: bool,
    /// `disposable`: one request per worker, then the worker is destroyed.
    pub disposable: bool,
    /// `dispatchMode`.
    pub dispatch_mode: DispatchMode,
    /// `concurrencyStatsMode`.
    pub concurrency_stats_mode: ConcurrencyStatsMode,
    /// The EMA scaler settings (`concurrencySlidingWindowSize` and friends).
    pub ema: EmaSettings,
}

/// One function, with every default applied and every field checked.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionProfile {
    /// `name`: unique in its set; 1 to [`MAX_NAME_CHARS`] characters of `[A-Za-z0-9_.-]`.
    pub name: String,
    /// `runtime`.
    pub runtime: Runtime,
    /// `url`, as written.
    pub url: String,
    /// The absolute code directory workers run in: the one `url` points to (it existed when
    /// the profile was loaded), or, for a code package, its place in the package cache, set
    /// by the runtime that owns the cache ([`CodePackage::key`]; empty until then).
    pub code_dir: PathBuf,
    /// `url` when it names a zip package (`file://PATH.zip`, `http(s)://…`): what is fetched
    /// and unpacked before a worker can start.
    pub package: Option<CodePackage>,
    /// `signature`: part of the code's identity; a change means new code.
    pub signature: String,
    /// `handler`: `file.export`. Always `Some` for [`Runtime::Nodejs`], never for
    /// [`Runtime::Aworker`].
    pub handler: Option<String>,
    /// `initializer`: `file.export`. Never `Some` for [`Runtime::Aworker`].
    pub initializer: Option<String>,
    /// `sourceFile`: entry script relative to `code_dir`. Always `Some` for
    /// [`Runtime::Aworker`], never for [`Runtime::Nodejs`].
    pub source_file: Option<String>,
    /// `environments`: extra worker environment, in file order, names unique.
    pub environments: Vec<(String, String)>,
    /// `namespace`: shared resource namespace; `None` (also for `""`) means the function's own.
    pub namespace: Option<String>,
    /// `rateLimit`.
    pub rate_limit: Option<RateLimit>,
    /// `resourceLimit`.
    pub resource_limit: ResourceLimit,
    /// `worker`.
    pub worker: WorkerProfile,
    /// `handlerStyle` (ours).
    pub handler_style: HandlerStyle,
}

/// Where a code package's zip comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageLocation {
    /// A zip file on this machine (absolute).
    File(PathBuf),
    /// An `http://` or `https://` url, downloaded.
    Remote(String),
}

/// A function's code as a zip package, fetched and unpacked once per `(url, signature)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodePackage {
    /// Where the zip is.
    pub location: PackageLocation,
    /// Its name in the package cache, from the url and the signature: a new signature for the
    /// same url is a new package.
    pub key: String,
}

impl CodePackage {
    fn new(location: PackageLocation, url: &str, signature: &str) -> CodePackage {
        CodePackage {
            location,
            key: format!("{:016x}-{:016x}", fnv1a64(url), fnv1a64(signature)),
        }
    }
}

/// FNV-1a, 64 bits: a stable short name for cache entries. Not a defence against chosen
/// collisions; the cache's marker records the url and signature it was built for and an
/// entry whose marker names others is rebuilt.
fn fnv1a64(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The content of a profile file: functions and the services that route to them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfileSet {
    /// Function profiles, in file order.
    pub functions: Vec<FunctionProfile>,
    /// Service profiles, in file order; each targets functions of this set.
    pub services: Vec<ServiceProfile>,
}

impl ProfileSet {
    /// The function named `name`.
    pub fn function(&self, name: &str) -> Option<&FunctionProfile> {
        self.functions.iter().find(|f| f.name == name)
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceProfile> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// Parses a profile document: a JSON array of function profiles, or an object
/// `{"functions": [...], "services": [...]}` (both keys optional). Relative code urls resolve
/// against `base_dir`; defaults come from `sys`. Every problem found is returned, with paths
/// such as `functions[1].worker.maxActivateRequests` for both shapes.
pub fn parse_functions(
    json: &str,
    base_dir: &Path,
    sys: &SystemConfig,
) -> Result<ProfileSet, Vec<Problem>> {
    match serde_json::from_str::<Value>(json) {
        Ok(root) => parse_profile_set(&root, base_dir, sys),
        Err(e) => Err(vec![Problem::new(ROOT_PATH, format!("invalid JSON: {e}"))]),
    }
}

/// Loads a profile file (see [`parse_functions`]); relative code urls resolve against the
/// file's directory. A file that cannot be read or parsed is one problem naming the file.
pub fn load_functions(file: &Path, sys: &SystemConfig) -> Result<ProfileSet, Vec<Problem>> {
    let root = read_json_file(file).map_err(|problem| vec![problem])?;
    parse_profile_set(&root, profile_base_dir(file), sys)
}

/// The directory a profile file's relative code urls resolve against: its own.
pub fn profile_base_dir(file: &Path) -> &Path {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Checks a function or service name; records a problem at `path` and returns false if bad.
pub(super) fn check_name(name: &str, path: &str, p: &mut Problems) -> bool {
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name != "."
        && name != "..";
    if !ok {
        p.add(
            path,
            format!(
                "must be 1 to {MAX_NAME_CHARS} characters of [A-Za-z0-9_.-], not \".\" or \
                 \"..\", got {}",
                quote(name)
            ),
        );
    }
    ok
}

/// Whether `name` is a portable environment variable name, `[A-Za-z_][A-Za-z0-9_]*`.
pub(super) fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The `name` of each item (if it is a string), reporting names used twice.
pub(super) fn item_names<'a>(
    items: &'a [Value],
    path: &str,
    what: &str,
    p: &mut Problems,
) -> Vec<Option<&'a str>> {
    let names: Vec<Option<&str>> = items
        .iter()
        .map(|item| item.get("name").and_then(Value::as_str))
        .collect();
    for (i, name) in names.iter().enumerate() {
        let Some(name) = name else { continue };
        if let Some(first) = names.iter().take(i).position(|n| *n == Some(*name)) {
            p.add(
                join(&index(path, i), "name"),
                format!(
                    "duplicate {what} name {} (first at {})",
                    quote(name),
                    index(path, first)
                ),
            );
        }
    }
    names
}

/// Parses either document shape.
fn parse_profile_set(
    root: &Value,
    base_dir: &Path,
    sys: &SystemConfig,
) -> Result<ProfileSet, Vec<Problem>> {
    let mut p = Problems::default();
    let (functions, services) = match root {
        Value::Array(_) => (Some(root), None),
        Value::Object(_) => match Fields::new(root, "", &mut p) {
            Some(mut f) => {
                let functions = f.get("functions").map(|(v, _)| v);
                let services = f.get("services").map(|(v, _)| v);
                f.finish(&mut p);
                (functions, services)
            }
            None => (None, None),
        },
        _ => {
            p.add(
                ROOT_PATH,
                format!(
                    "expected an array of function profiles or an object with \"functions\" \
                     and \"services\", got {}",
                    describe(root)
                ),
            );
            (None, None)
        }
    };

    const FUNCTIONS: &str = "functions";
    let items = functions
        .and_then(|v| array(v, FUNCTIONS, "an array of function profiles", &mut p))
        .unwrap_or_default();
    let names = item_names(items, FUNCTIONS, "function", &mut p);
    let mut profiles = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if let Some(profile) = parse_function(item, &index(FUNCTIONS, i), base_dir, sys, &mut p) {
            profiles.push(profile);
        }
    }
    // Services may target a function whose profile has other problems: those are reported
    // once, at the function.
    let known: Vec<&str> = names.into_iter().flatten().collect();
    let services = services
        .map(|v| parse_services(v, "services", &known, &mut p))
        .unwrap_or_default();
    p.finish(ProfileSet {
        functions: profiles,
        services,
    })
}

/// Parses one function profile at `path`.
fn parse_function(
    value: &Value,
    path: &str,
    base_dir: &Path,
    sys: &SystemConfig,
    p: &mut Problems,
) -> Option<FunctionProfile> {
    let mut f = Fields::new(value, path, p)?;
    let name = f
        .required_string("name", p)
        .filter(|name| check_name(name, &f.child("name"), p));
    let runtime = f
        .required("runtime", p)
        .and_then(|(v, at)| parse_runtime(v, &at, p));
    let url = f.required_string("url", p);
    let code = url
        .as_deref()
        .and_then(|url| resolve_code(url, &f.child("url"), base_dir, p));
    let signature = f.required_string("signature", p);
    let (code_dir, package) = match (code, &url, &signature) {
        (Some(Code::Dir(dir)), _, _) => (Some(dir), None),
        (Some(Code::Package(location)), Some(url), Some(signature)) => (
            Some(PathBuf::new()),
            Some(CodePackage::new(location, url, signature)),
        ),
        _ => (None, None),
    };
    // A package's files are only known once it is unpacked: `sourceFile` is then checked
    // when a worker starts.
    let listed_dir = code_dir.as_deref().filter(|_| package.is_none());

    let handler = f.get("handler");
    let initializer = f.get("initializer");
    let source_file = f.get("sourceFile");
    match runtime {
        Some(Runtime::Nodejs) => {
            if handler.is_none() {
                p.add(f.child("handler"), "missing (required for runtime nodejs)");
            }
            if source_file.is_some() {
                p.add(f.child("sourceFile"), "not used by runtime nodejs");
            }
        }
        Some(Runtime::Aworker) => {
            if source_file.is_none() {
                p.add(
                    f.child("sourceFile"),
                    "missing (required for runtime aworker)",
                );
            }
            for (given, key) in [(&handler, "handler"), (&initializer, "initializer")] {
                if given.is_some() {
                    p.add(f.child(key), "not used by runtime aworker");
                }
            }
        }
        _ => {}
    }
    let handler = handler.and_then(|(v, at)| export_name(v, &at, p));
    let initializer = initializer.and_then(|(v, at)| export_name(v, &at, p));
    let source_file = source_file.and_then(|(v, at)| {
        let file = string(v, &at, p)?;
        check_source_file(&file, &at, listed_dir, p).then_some(file)
    });

    // Node.js functions' debugger flags are refused: only the runtime opens a debugger.
    let node = matches!(runtime, Some(Runtime::Nodejs | Runtime::Aworker));
    let environments = f
        .get("environments")
        .map(|(v, at)| parse_environments(v, &at, node, p))
        .unwrap_or_default();
    let namespace = f.string("namespace", p).filter(|ns| !ns.is_empty());
    let rate_limit = f
        .get("rateLimit")
        .and_then(|(v, at)| parse_rate_limit(v, &at, p));
    let resource_limit_path = f.child("resourceLimit");
    let resource_limit = parse_resource_limit(f.get("resourceLimit"), &resource_limit_path, sys, p);
    let worker_path = f.child("worker");
    let worker = parse_worker(f.get("worker"), &worker_path, sys, node, p);
    let style_path = f.child("handlerStyle");
    let handler_style = f.choice("handlerStyle", HANDLER_STYLES, p);
    let handler_style = match (runtime, handler_style) {
        (Some(Runtime::Aworker | Runtime::Native | Runtime::Process), Some(_)) => {
            p.add(
                &style_path,
                "only runtimes nodejs and python3 have handler styles",
            );
            None
        }
        (Some(Runtime::Python3), Some(HandlerStyle::Noslate)) => {
            p.add(
                &style_path,
                "\"noslate\" is a Node.js signature; python3 takes \"fc-event\" or \"fc-http\"",
            );
            None
        }
        (_, Some(style)) => Some(style),
        (Some(Runtime::Python3), None) => Some(HandlerStyle::FcEvent),
        (_, None) => Some(HandlerStyle::Noslate),
    };
    f.finish(p);

    Some(FunctionProfile {
        name: name?,
        runtime: runtime?,
        url: url?,
        code_dir: code_dir?,
        package,
        signature: signature?,
        handler,
        initializer,
        source_file,
        environments,
        namespace,
        rate_limit,
        resource_limit,
        worker,
        handler_style: handler_style?,
    })
}

/// A `runtime` name.
fn parse_runtime(value: &Value, path: &str, p: &mut Problems) -> Option<Runtime> {
    let runtime = value.as_str().and_then(|name| match name {
        "python3" => Some(Runtime::Python3),
        "native" => Some(Runtime::Native),
        "process" => Some(Runtime::Process),
        _ if name.starts_with("nodejs") => Some(Runtime::Nodejs),
        _ if name.starts_with("aworker") => Some(Runtime::Aworker),
        _ => None,
    });
    if runtime.is_none() {
        p.add(
            path,
            format!(
                "expected {}, got {}",
                one_of(RUNTIME_NAMES),
                describe(value)
            ),
        );
    }
    runtime
}

/// What a code `url` names.
enum Code {
    /// An existing directory.
    Dir(PathBuf),
    /// A zip package.
    Package(PackageLocation),
}

/// Resolves a code `url`: an existing directory, an existing `.zip` file, or an
/// `http(s)://` url of a zip.
fn resolve_code(url: &str, path: &str, base_dir: &Path, p: &mut Problems) -> Option<Code> {
    const FILE_SCHEME: &str = "file://";
    let lower = url.to_ascii_lowercase();
    let location = if lower.starts_with(FILE_SCHEME) {
        url.get(FILE_SCHEME.len()..).unwrap_or_default()
    } else if lower.starts_with("http://") || lower.starts_with("https://") {
        let host = url.split_once("://").map_or("", |(_, rest)| rest);
        if host.is_empty() || host.starts_with('/') {
            p.add(path, format!("expected a host in {}", quote(url)));
            return None;
        }
        if url.chars().any(|c| c.is_control() || c == ' ') {
            p.add(path, "a url may not contain spaces or control characters");
            return None;
        }
        return Some(Code::Package(PackageLocation::Remote(url.to_owned())));
    } else if let Some((scheme, _)) = url.split_once("://") {
        p.add(
            path,
            format!(
                "unsupported url scheme {}, expected file://, http://, https:// or a plain path",
                quote(scheme)
            ),
        );
        return None;
    } else {
        url
    };
    if location.is_empty() {
        p.add(
            path,
            format!(
                "expected a code directory or zip (file:///abs, file://./rel or a path), got {}",
                quote(url)
            ),
        );
        return None;
    }
    let joined = base_dir.join(location);
    let target = std::path::absolute(&joined).unwrap_or(joined);
    let is_zip = location.to_ascii_lowercase().ends_with(".zip");
    match fs::metadata(&target) {
        Ok(meta) if meta.is_dir() => Some(Code::Dir(target)),
        Ok(meta) if meta.is_file() && is_zip => Some(Code::Package(PackageLocation::File(target))),
        Ok(_) => {
            p.add(
                path,
                format!("{} is not a directory or a .zip file", target.display()),
            );
            None
        }
        Err(e) => {
            p.add(
                path,
                format!("code {} is not accessible: {e}", target.display()),
            );
            None
        }
    }
}

/// A `handler` or `initializer`: `file.export` with exactly one dot (Noslate's
/// `^[^.]+\.[^.]+$`).
fn export_name(value: &Value, path: &str, p: &mut Problems) -> Option<String> {
    let name = string(value, path, p)?;
    let ok = matches!(name.split_once('.'),
        Some((file, export)) if !file.is_empty() && !export.is_empty() && !export.contains('.'));
    if !ok {
        p.add(
            path,
            format!(
                "must be \"file.export\" with exactly one dot, got {}",
                quote(&name)
            ),
        );
    }
    ok.then_some(name)
}

/// Checks that `sourceFile` is a file inside the code directory.
fn check_source_file(file: &str, path: &str, code_dir: Option<&Path>, p: &mut Problems) -> bool {
    let relative = Path::new(file);
    if file.is_empty()
        || relative.is_absolute()
        || relative.components().any(|c| c == Component::ParentDir)
    {
        p.add(
            path,
            format!(
                "must be a relative path inside the code directory, got {}",
                quote(file)
            ),
        );
        return false;
    }
    let Some(dir) = code_dir else {
        return true;
    };
    let full = dir.join(relative);
    let is_file = full.is_file();
    if !is_file {
        p.add(path, format!("{} is not a file", full.display()));
    }
    is_file
}

/// `environments`: `[{"key": ..., "value": ...}]`.
fn parse_environments(
    value: &Value,
    path: &str,
    node: bool,
    p: &mut Problems,
) -> Vec<(String, String)> {
    let Some(items) = array(value, path, "an array of {\"key\", \"value\"} objects", p) else {
        return Vec::new();
    };
    let mut pairs = Vec::with_capacity(items.len());
    let mut seen: Vec<(String, usize)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = index(path, i);
        let Some(mut f) = Fields::new(item, &at, p) else {
            continue;
        };
        let key_path = f.child("key");
        let key = f
            .required_string("key", p)
            .filter(|key| check_env_key(key, &key_path, p));
        let value_path = f.child("value");
        let value = f.required_string("value", p).filter(|value| {
            let ok = !value.contains('\0');
            if !ok {
                p.add(&value_path, "must not contain a NUL character");
            }
            ok
        });
        if node
            && key.as_deref() == Some("NODE_OPTIONS")
            && let Some(flag) = value
                .as_deref()
                .and_then(crate::inspector::debugger_flag_in)
        {
            p.add(&value_path, crate::inspector::debugger_flag_problem(flag));
        }
        f.finish(p);
        let Some(key) = key else { continue };
        if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key) {
            p.add(
                &key_path,
                format!(
                    "duplicate key {} (first at {})",
                    quote(&key),
                    index(path, *first)
                ),
            );
            continue;
        }
        seen.push((key.clone(), i));
        if let Some(value) = value {
            pairs.push((key, value));
        }
    }
    pairs
}

/// Checks an `environments[].key`.
fn check_env_key(key: &str, path: &str, p: &mut Problems) -> bool {
    if !is_env_name(key) {
        p.add(
            path,
            format!(
                "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*), got {}",
                quote(key)
            ),
        );
        return false;
    }
    if let Some(prefix) = RESERVED_ENV_PREFIXES
        .iter()
        .find(|pre| key.starts_with(*pre))
    {
        p.add(
            path,
            format!(
                "{} is reserved: names starting with {prefix} are set by the runtime",
                quote(key)
            ),
        );
        return false;
    }
    true
}

/// `rateLimit`.
fn parse_rate_limit(value: &Value, path: &str, p: &mut Problems) -> Option<RateLimit> {
    let mut f = Fields::new(value, path, p)?;
    let limit = RateLimit {
        max_token_count: f.int("maxTokenCount", 0, p),
        tokens_per_fill: f.int("tokensPerFill", 1, p),
        fill_interval_ms: f.int("fillInterval", 1, p),
    };
    if limit.tokens_per_fill.is_some() && !f.has("fillInterval") {
        p.add(
            f.child("tokensPerFill"),
            "has no effect without rateLimit.fillInterval",
        );
    }
    f.finish(p);
    Some(limit)
}

/// `resourceLimit` at `path`, checked against the system's memory pool.
fn parse_resource_limit(
    given: Option<(&Value, String)>,
    path: &str,
    sys: &SystemConfig,
    p: &mut Problems,
) -> ResourceLimit {
    let mut limit = ResourceLimit {
        memory: DEFAULT_MEMORY_LIMIT_BYTES,
        cpu: None,
        pids: DEFAULT_PIDS_LIMIT,
        nofile: DEFAULT_NOFILE_LIMIT,
    };
    if let Some(mut f) = given.and_then(|(v, at)| Fields::new(v, &at, p)) {
        set(
            &mut limit.memory,
            f.byte_size("memory", MIN_MEMORY_LIMIT_BYTES, p),
        );
        limit.cpu = f.number("cpu", "a number in (0, 1]", in_unit_interval, p);
        // A worker needs a few tasks (Node.js runs several threads) and descriptors (its pipes,
        // stdio, the runtime's own files) just to start.
        set(&mut limit.pids, f.int("pids", 8, p));
        set(&mut limit.nofile, f.int("nofile", 16, p));
        f.finish(p);
    }
    if limit.memory > sys.virtual_memory_pool_size {
        p.add(
            join(path, "memory"),
            format!(
                "{} bytes is more than virtualMemoryPoolSize ({} bytes), so no worker could start",
                limit.memory, sys.virtual_memory_pool_size
            ),
        );
    }
    limit
}

/// `worker` at `path`, over the system's worker defaults; `node` when its runtime is Node.js.
fn parse_worker(
    given: Option<(&Value, String)>,
    path: &str,
    sys: &SystemConfig,
    node: bool,
    p: &mut Problems,
) -> WorkerProfile {
    let d = &sys.worker;
    let mut w = WorkerProfile {
        reservation_count: d.reservation_count_per_function,
        replica_count_limit: d.replica_count_limit,
        max_activate_requests: d.max_activate_requests,
        initialization_timeout_ms: d.default_initializer_timeout_ms,
        invoke_timeout_ms: d.default_invoke_timeout_ms,
        idle_timeout_ms: d.default_idle_timeout_ms,
        shrink_strategy: d.default_shrink_strategy,
        fast_fail_requests_on_starting: DEFAULT_FAST_FAIL_REQUESTS_ON_STARTING,
        disable_request_queue: DEFAULT_DISABLE_REQUEST_QUEUE,
        exec_argv: Vec::new(),
        disable_seed: DEFAULT_DISABLE_SEED,
        disposable: DEFAULT_DISPOSABLE,
        dispatch_mode: DEFAULT_DISPATCH_MODE,
        concurrency_stats_mode: d.concurrency_stats_mode,
        ema: d.ema.clone(),
    };
    if let Some(mut f) = given.and_then(|(v, at)| Fields::new(v, &at, p)) {
        set(&mut w.reservation_count, f.int("reservationCount", 0, p));
        set(&mut w.replica_count_limit, f.int("replicaCountLimit", 1, p));
        set(
            &mut w.max_activate_requests,
            f.int("maxActivateRequests", 1, p),
        );
        set(
            &mut w.initialization_timeout_ms,
            f.int("initializationTimeout", 1, p),
        );
        set(&mut w.invoke_timeout_ms, f.int("invokeTimeout", 1, p));
        set(&mut w.idle_timeout_ms, f.int("idleTimeout", 1, p));
        set(
            &mut w.shrink_strategy,
            f.choice("shrinkStrategy", SHRINK_STRATEGIES, p),
        );
        set(
            &mut w.fast_fail_requests_on_starting,
            f.boolean("fastFailRequestsOnStarting", p),
        );
        set(
            &mut w.disable_request_queue,
            f.boolean("disableRequestQueue", p),
        );
        let v8_options = f.strings("v8Options", p).unwrap_or_default();
        let exec_argv = f.strings("execArgv", p).unwrap_or_default();
        let node_args = [("v8Options", &v8_options), ("execArgv", &exec_argv)];
        for (key, args) in node_args.into_iter().filter(|_| node) {
            for (i, arg) in args.iter().enumerate() {
                if let Some(flag) = crate::inspector::debugger_flag_in(arg) {
                    p.add(
                        index(&f.child(key), i),
                        crate::inspector::debugger_flag_problem(flag),
                    );
                }
            }
        }
        w.exec_argv = v8_options.into_iter().chain(exec_argv).collect();
        set(&mut w.disable_seed, f.boolean("disableSeed", p));
        set(&mut w.disposable, f.boolean("disposable", p));
        set(
            &mut w.dispatch_mode,
            f.choice("dispatchMode", DISPATCH_MODES, p),
        );
        set(
            &mut w.concurrency_stats_mode,
            f.choice("concurrencyStatsMode", CONCURRENCY_STATS_MODES, p),
        );
        read_ema(&mut f, &mut w.ema, p);
        f.finish(p);
    }
    if w.reservation_count > w.replica_count_limit {
        p.add(
            join(path, "reservationCount"),
            format!(
                "must be <= replicaCountLimit ({}), got {}",
                w.replica_count_limit, w.reservation_count
            ),
        );
    }
    check_ema(&w.ema, path, p);
    if w.disposable {
        w.max_activate_requests = 1;
    }
    w
}

#[cfg(test)]
mod tests {
    use super::super::service::ServiceKind;
    use super::super::test_support::TempDir;
    use super::*;

    /// A fresh directory holding `code/` (with `index.js` and `main.js`) and `other/`.
    fn fixture(test: &str) -> TempDir {
        let dir = TempDir::new(&format!("profile-{test}"));
        fs::create_dir_all(dir.join("code")).unwrap();
        fs::create_dir_all(dir.join("other")).unwrap();
        fs::write(dir.join("code/index.js"), "").unwrap();
        fs::write(dir.join("code/main.js"), "").unwrap();
        dir
    }

    fn shown(problems: &[Problem]) -> Vec<String> {
        problems.iter().map(ToString::to_string).collect()
    }

    fn parse(json: &str, base: &Path) -> Result<ProfileSet, Vec<Problem>> {
        parse_functions(json, base, &SystemConfig::default())
    }

    const HELLO: &str = r#"{"name": "hello", "runtime": "nodejs", "url": "file://./code", "signature": "md5:1", "handler": "index.handler"}"#;

    #[test]
    fn defaults_come_from_the_system_config() {
        let tmp = fixture("defaults");
        let base: &Path = &tmp;
        let set = parse(&format!("[{HELLO}]"), base).unwrap();
        assert!(set.services.is_empty());
        let f = &set.functions[0];
        assert_eq!(f.name, "hello");
        assert_eq!(f.runtime, Runtime::Nodejs);
        assert_eq!(f.url, "file://./code");
        assert_eq!(f.code_dir, base.join("code"));
        assert!(f.code_dir.is_absolute());
        assert_eq!(f.signature, "md5:1");
        assert_eq!(f.handler.as_deref(), Some("index.handler"));
        assert_eq!(f.initializer, None);
        assert_eq!(f.source_file, None);
        assert!(f.environments.is_empty());
        assert_eq!(f.namespace, None);
        assert_eq!(f.rate_limit, None);
        assert_eq!(
            f.resource_limit,
            ResourceLimit {
                memory: 536_870_912,
                cpu: None,
                pids: DEFAULT_PIDS_LIMIT,
                nofile: DEFAULT_NOFILE_LIMIT,
            }
        );
        assert_eq!(f.handler_style, HandlerStyle::Noslate);
        let w = &f.worker;
        assert_eq!(w.reservation_count, 0);
        assert_eq!(w.replica_count_limit, 10);
        assert_eq!(w.max_activate_requests, 10);
        assert_eq!(w.initialization_timeout_ms, 10_000);
        assert_eq!(w.invoke_timeout_ms, 10_000);
        assert_eq!(w.shrink_strategy, ShrinkStrategy::Lcc);
        assert!(!w.fast_fail_requests_on_starting);
        assert!(!w.disable_request_queue);
        assert!(w.exec_argv.is_empty());
        assert!(!w.disable_seed);
        assert!(!w.disposable);
        assert_eq!(w.dispatch_mode, DispatchMode::LeastRequestCount);
        assert_eq!(w.concurrency_stats_mode, ConcurrencyStatsMode::Instant);
        assert_eq!(w.ema, EmaSettings::default());

        let mut sys = SystemConfig::default();
        sys.worker.max_activate_requests = 3;
        sys.worker.default_invoke_timeout_ms = 60_000;
        sys.worker.default_shrink_strategy = ShrinkStrategy::Fifo;
        sys.worker.ema.scale_factor = 0.9;
        let set = parse_functions(&format!("[{HELLO}]"), base, &sys).unwrap();
        let w = &set.functions[0].worker;
        assert_eq!(w.max_activate_requests, 3);
        assert_eq!(w.invoke_timeout_ms, 60_000);
        assert_eq!(w.shrink_strategy, ShrinkStrategy::Fifo);
        assert_eq!(w.ema.scale_factor, 0.9);
    }

    #[test]
    fn every_field_can_be_set() {
        let tmp = fixture("full");
        let base: &Path = &tmp;
        let json = r#"[{
            "name": "full_fn-1.0", "runtime": "nodejs-v16", "url": "code", "signature": "s",
            "handler": "lib/index.handler", "initializer": "index.init",
            "environments": [{"key": "B", "value": "2"}, {"key": "A_1", "value": ""}],
            "namespace": "shared",
            "rateLimit": {"maxTokenCount": 5, "tokensPerFill": 1, "fillInterval": 1000},
            "resourceLimit": {"memory": "256mb", "cpu": 0.5},
            "worker": {
                "reservationCount": 1, "replicaCountLimit": 4, "maxActivateRequests": 2,
                "initializationTimeout": 3000, "invokeTimeout": 4000, "shrinkStrategy": "FILO",
                "fastFailRequestsOnStarting": true, "disableRequestQueue": true,
                "v8Options": ["--max-old-space-size=100"], "execArgv": ["--enable-source-maps"],
                "disableSeed": true, "dispatchMode": "round-robin",
                "concurrencyStatsMode": "periodic_avg", "concurrencySlidingWindowSize": 30000,
                "concurrencySlidingBucketCount": 3, "emaConcurrencyAlpha": 1,
                "concurrencyExpandThreshold": 0.8, "concurrencyShrinkThreshold": 0.2,
                "expandCooldown": 0, "shrinkCooldown": 5000, "scaleFactor": 0.6,
                "precisionZeroThreshold": 0, "shrinkCooldownOnStartup": false
            }
        }]"#;
        let f = parse(json, base).unwrap().functions.remove(0);
        assert_eq!(f.runtime, Runtime::Nodejs);
        assert_eq!(f.code_dir, base.join("code"));
        assert_eq!(f.initializer.as_deref(), Some("index.init"));
        assert_eq!(
            f.environments,
            [
                ("B".to_owned(), "2".to_owned()),
                ("A_1".to_owned(), String::new())
            ]
        );
        assert_eq!(f.namespace.as_deref(), Some("shared"));
        assert_eq!(
            f.rate_limit,
            Some(RateLimit {
                max_token_count: Some(5),
                tokens_per_fill: Some(1),
                fill_interval_ms: Some(1000)
            })
        );
        assert_eq!(f.resource_limit.memory, 256 << 20);
        assert_eq!(f.resource_limit.cpu, Some(0.5));
        let w = f.worker;
        assert_eq!(
            (
                w.reservation_count,
                w.replica_count_limit,
                w.max_activate_requests
            ),
            (1, 4, 2)
        );
        assert_eq!(
            (w.initialization_timeout_ms, w.invoke_timeout_ms),
            (3000, 4000)
        );
        assert_eq!(w.shrink_strategy, ShrinkStrategy::Filo);
        assert!(w.fast_fail_requests_on_starting && w.disable_request_queue && w.disable_seed);
        assert_eq!(
            w.exec_argv,
            ["--max-old-space-size=100", "--enable-source-maps"]
        );
        assert_eq!(w.dispatch_mode, DispatchMode::RoundRobin);
        assert_eq!(w.concurrency_stats_mode, ConcurrencyStatsMode::PeriodicAvg);
        assert_eq!(
            w.ema,
            EmaSettings {
                concurrency_sliding_window_size_ms: 30_000,
                concurrency_sliding_bucket_count: 3,
                ema_concurrency_alpha: 1.0,
                concurrency_expand_threshold: 0.8,
                concurrency_shrink_threshold: 0.2,
                expand_cooldown_ms: 0,
                shrink_cooldown_ms: 5000,
                scale_factor: 0.6,
                precision_zero_threshold: 0.0,
                shrink_cooldown_on_startup: false,
            }
        );
    }

    #[test]
    fn disposable_forces_one_request_per_worker() {
        let tmp = fixture("disposable");
        let base: &Path = &tmp;
        let json = HELLO.replace(
            "}",
            r#", "worker": {"disposable": true, "maxActivateRequests": 8}}"#,
        );
        let w = &parse(&format!("[{json}]"), base).unwrap().functions[0].worker;
        assert!(w.disposable);
        assert_eq!(w.max_activate_requests, 1);
    }

    #[test]
    fn zip_and_http_urls_are_packages_keyed_by_url_and_signature() {
        let tmp = fixture("packages");
        let base: &Path = &tmp;
        fs::write(base.join("code.zip"), b"PK").unwrap();
        let with = |url: &str, signature: &str| {
            let json = HELLO
                .replace("file://./code", url)
                .replace("md5:1", signature);
            let set = parse(&format!("[{json}]"), base).unwrap();
            set.functions[0].package.clone().unwrap()
        };
        let local = with("file://./code.zip", "s1");
        assert_eq!(local.location, PackageLocation::File(base.join("code.zip")));
        let remote = with("https://oss.example/a.zip?x=1", "s1");
        assert_eq!(
            remote.location,
            PackageLocation::Remote("https://oss.example/a.zip?x=1".into())
        );
        assert_ne!(remote.key, with("https://oss.example/a.zip?x=1", "s2").key);
        assert_eq!(remote.key, with("https://oss.example/a.zip?x=1", "s1").key);
        assert_ne!(local.key, remote.key);
        assert!(
            remote
                .key
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b'-')
        );
        assert!(
            parse(&format!("[{HELLO}]"), base).unwrap().functions[0]
                .package
                .is_none()
        );
    }

    #[test]
    fn urls_resolve_against_the_base_dir() {
        let tmp = fixture("urls");
        let base: &Path = &tmp;
        let abs = base.join("other");
        let code = base.join("code");
        for (url, expected) in [
            (format!("file://{}", abs.display()), abs.clone()),
            (abs.display().to_string(), abs.clone()),
            ("file://./code".to_owned(), code.clone()),
            ("FILE://code".to_owned(), code.clone()),
            ("./code/".to_owned(), code.clone()),
            ("code".to_owned(), code.clone()),
        ] {
            let json = HELLO.replace("file://./code", &url);
            let set = parse(&format!("[{json}]"), base).unwrap();
            let got = set.functions[0].code_dir.canonicalize().unwrap();
            assert_eq!(got, expected.canonicalize().unwrap(), "{url}");
        }
        for (url, reason) in [
            (
                "https://",
                "expected a host in \"https://\"".to_owned(),
            ),
            (
                "http://x/a b.zip",
                "a url may not contain spaces or control characters".to_owned(),
            ),
            (
                "ftp://x/a",
                "unsupported url scheme \"ftp\", expected file://, http://, https:// or a plain path"
                    .to_owned(),
            ),
            (
                "file://",
                "expected a code directory or zip (file:///abs, file://./rel or a path), got \"file://\""
                    .to_owned(),
            ),
            (
                "file://./code/index.js",
                format!(
                    "{} is not a directory or a .zip file",
                    base.join("code/index.js").display()
                ),
            ),
        ] {
            let json = HELLO.replace("file://./code", url);
            let problems = parse(&format!("[{json}]"), base).unwrap_err();
            assert_eq!(
                shown(&problems),
                [format!("functions[0].url: {reason}")],
                "{url}"
            );
        }
        let json = HELLO.replace("file://./code", "missing");
        let problems = parse(&format!("[{json}]"), base).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].reason.starts_with(&format!(
                "code {} is not accessible: ",
                base.join("missing").display()
            )),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn load_functions_resolves_against_the_file_directory() {
        let tmp = fixture("load");
        let base: &Path = &tmp;
        let file = base.join("functions.json");
        fs::write(
            &file,
            format!(
                r#"{{"functions": [{HELLO}],
                    "services": [{{"name": "svc", "selector": {{"functionName": "hello"}}}}]}}"#
            ),
        )
        .unwrap();
        let set = load_functions(&file, &SystemConfig::default()).unwrap();
        assert_eq!(set.functions[0].code_dir, base.join("code"));
        assert_eq!(
            set.function("hello").map(|f| f.name.as_str()),
            Some("hello")
        );
        assert!(set.function("nope").is_none());
        assert_eq!(
            set.service("svc").map(|s| &s.kind),
            Some(&ServiceKind::Default {
                function: "hello".to_owned()
            })
        );

        let missing = base.join("nope.json");
        let problems = load_functions(&missing, &SystemConfig::default()).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, missing.display().to_string());
    }

    #[test]
    fn document_shapes() {
        let tmp = fixture("shapes");
        let base: &Path = &tmp;
        assert_eq!(parse("[]", base).unwrap(), ProfileSet::default());
        assert_eq!(parse("{}", base).unwrap(), ProfileSet::default());
        assert_eq!(
            parse(&format!(r#"{{"functions": [{HELLO}]}}"#), base)
                .unwrap()
                .functions
                .len(),
            1
        );
        let problems = parse(r#"{"functions": {}, "service": [], "extra": 1}"#, base).unwrap_err();
        assert_eq!(
            shown(&problems),
            [
                "extra: unknown key",
                "service: unknown key (did you mean \"services\"?)",
                "functions: expected an array of function profiles, got an object",
            ]
        );
        let problems = parse("5", base).unwrap_err();
        assert_eq!(
            shown(&problems),
            [
                "(root): expected an array of function profiles or an object with \"functions\" \
              and \"services\", got 5"
            ]
        );
        let problems = parse("[", base).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0]
                .to_string()
                .starts_with("(root): invalid JSON: ")
        );
    }

    #[test]
    fn all_problems_are_reported_together() {
        let tmp = fixture("problems");
        let base: &Path = &tmp;
        let json = r#"[
            {"name": "ok", "runtime": "nodejs", "url": "code", "signature": "s", "handler": "index"},
            {"name": "bad", "runtime": "nodejs", "url": "code", "signature": "s",
             "handler": "a.b", "worker": {"maxActivateRequests": 0}},
            {"name": "", "runtime": "java", "signature": 5, "handlr": "a.b"},
            "not an object",
            {"name": "ok", "runtime": "aworker", "url": "code", "signature": "s",
             "handler": "a.b", "initializer": "a.b.c"}
        ]"#;
        let problems = parse(json, base).unwrap_err();
        assert_eq!(
            shown(&problems),
            [
                "functions[4].name: duplicate function name \"ok\" (first at functions[0])",
                "functions[0].handler: must be \"file.export\" with exactly one dot, got \"index\"",
                "functions[1].worker.maxActivateRequests: expected an integer >= 1, got 0",
                "functions[2].name: must be 1 to 64 characters of [A-Za-z0-9_.-], not \".\" or \
                 \"..\", got \"\"",
                "functions[2].runtime: expected \"nodejs\", \"aworker\", \"python3\", \"native\" \
                 or \"process\", got \"java\"",
                "functions[2].url: missing (required)",
                "functions[2].signature: expected a string, got 5",
                "functions[2].handlr: unknown key (did you mean \"handler\"?)",
                "functions[3]: expected an object, got \"not an object\"",
                "functions[4].sourceFile: missing (required for runtime aworker)",
                "functions[4].handler: not used by runtime aworker",
                "functions[4].initializer: not used by runtime aworker",
                "functions[4].initializer: must be \"file.export\" with exactly one dot, got \
                 \"a.b.c\"",
            ]
        );
    }

    #[test]
    fn runtimes_and_their_fields() {
        let tmp = fixture("runtimes");
        let base: &Path = &tmp;
        let json = r#"[
            {"name": "a", "runtime": "aworker", "url": "code", "signature": "s", "sourceFile": "main.js"},
            {"name": "p", "runtime": "python3", "url": "code", "signature": "s"},
            {"name": "n", "runtime": "native", "url": "code", "signature": "s", "handler": "x.y"},
            {"name": "c", "runtime": "process", "url": "code", "signature": "s", "sourceFile": "main.js"}
        ]"#;
        let set = parse(json, base).unwrap();
        let runtimes: Vec<Runtime> = set.functions.iter().map(|f| f.runtime).collect();
        assert_eq!(
            runtimes,
            [
                Runtime::Aworker,
                Runtime::Python3,
                Runtime::Native,
                Runtime::Process
            ]
        );
        assert_eq!(set.functions[0].source_file.as_deref(), Some("main.js"));

        let json = r#"[
            {"name": "n", "runtime": "nodejs", "url": "code", "signature": "s", "sourceFile": "main.js"},
            {"name": "a", "runtime": "aworker", "url": "code", "signature": "s", "sourceFile": "../x.js"},
            {"name": "b", "runtime": "aworker", "url": "code", "signature": "s", "sourceFile": "nope.js"}
        ]"#;
        let problems = parse(json, base).unwrap_err();
        assert_eq!(
            shown(&problems),
            [
                "functions[0].handler: missing (required for runtime nodejs)".to_owned(),
                "functions[0].sourceFile: not used by runtime nodejs".to_owned(),
                "functions[1].sourceFile: must be a relative path inside the code directory, \
                 got \"../x.js\""
                    .to_owned(),
                format!(
                    "functions[2].sourceFile: {} is not a file",
                    base.join("code/nope.js").display()
                ),
            ]
        );
    }

    #[test]
    fn names_are_checked() {
        let tmp = fixture("names");
        let base: &Path = &tmp;
        for bad in ["..", ".", "a/b", "a b", "é", &"x".repeat(65)] {
            let json = HELLO.replace("\"hello\"", &Value::String(bad.to_owned()).to_string());
            let problems = parse(&format!("[{json}]"), base).unwrap_err();
            assert_eq!(problems.len(), 1, "{bad}");
            assert_eq!(problems[0].path, "functions[0].name");
        }
        let json = HELLO.replace("hello", &"x".repeat(64));
        assert!(parse(&format!("[{json}]"), base).is_ok());
    }

    #[test]
    fn a_profile_cannot_open_a_debugger_itself() {
        let tmp = fixture("debugger");
        let base: &Path = &tmp;
        let json = HELLO.replace(
            "}",
            r#", "worker": {"v8Options": ["--inspect"],
                            "execArgv": ["--enable-source-maps", "--inspect-brk=0.0.0.0:9229"]},
                 "environments": [{"key": "NODE_OPTIONS",
                                   "value": "--max-old-space-size=64 --inspect=0.0.0.0:0"}]}"#,
        );
        let problems = parse(&format!("[{json}]"), base).unwrap_err();
        let shown = shown(&problems);
        let at = "functions[0]";
        for (path, flag) in [
            ("worker.v8Options[0]", "--inspect"),
            ("worker.execArgv[1]", "--inspect-brk=0.0.0.0:9229"),
            ("environments[0].value", "--inspect=0.0.0.0:0"),
        ] {
            let wanted = format!("{at}.{path}: \"{flag}\" opens a debugger");
            assert!(
                shown.iter().any(|l| l.starts_with(&wanted)),
                "{wanted} in {shown:?}"
            );
        }
        assert_eq!(shown.len(), 3, "{shown:?}");
        // A process function's arguments are its own program's.
        let process = HELLO.replace("\"nodejs\"", "\"process\"").replace(
            "}",
            r#", "sourceFile": "index.js", "worker": {"execArgv": ["--debug"]}}"#,
        );
        if let Err(problems) = parse(&format!("[{process}]"), base) {
            let lines = super::tests::shown(&problems);
            assert!(!lines.iter().any(|l| l.contains("execArgv")), "{lines:?}");
        }
    }

    #[test]
    fn environments_are_checked() {
        let tmp = fixture("environments");
        let base: &Path = &tmp;
        let json = HELLO.replace(
            "}",
            r#", "environments": [
                {"key": "GOOD", "value": "1"},
                {"key": "1BAD", "value": "x"},
                {"key": "NOSLATE_X", "value": "x"},
                {"key": "NOSLATED_X", "value": "x"},
                {"key": "FC_FUNC_CODE_PATH", "value": "x"},
                {"key": "GOOD", "value": "2"},
                {"key": "NUM", "value": 3},
                {"key": "NUL", "value": "a\u0000b"},
                {"value": "x", "extra": true},
                5
            ]}"#,
        );
        let problems = parse(&format!("[{json}]"), base).unwrap_err();
        let at = "functions[0].environments";
        assert_eq!(
            shown(&problems),
            [
                format!(
                    "{at}[1].key: must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*), got \"1BAD\""
                ),
                format!(
                    "{at}[2].key: \"NOSLATE_X\" is reserved: names starting with NOSLATE_ are set by the runtime"
                ),
                format!(
                    "{at}[3].key: \"NOSLATED_X\" is reserved: names starting with NOSLATED_ are set by the runtime"
                ),
                format!(
                    "{at}[4].key: \"FC_FUNC_CODE_PATH\" is reserved: names starting with FC_ are set by the runtime"
                ),
                format!("{at}[5].key: duplicate key \"GOOD\" (first at {at}[0])"),
                format!("{at}[6].value: expected a string, got 3"),
                format!("{at}[7].value: must not contain a NUL character"),
                format!("{at}[8].key: missing (required)"),
                format!("{at}[8].extra: unknown key"),
                format!("{at}[9]: expected an object, got 5"),
            ]
        );
    }

    #[test]
    fn worker_limits_and_resources_are_checked() {
        let tmp = fixture("worker");
        let base: &Path = &tmp;
        let json = HELLO.replace(
            "}",
            r#", "worker": {"reservationCount": 3, "replicaCountLimit": 2, "maxActivateRequest": 1,
                            "concurrencyShrinkThreshold": 0.8, "execArgv": ["ok", 1],
                            "dispatchMode": "random", "disposable": "yes"},
                 "resourceLimit": {"memory": 1024, "cpu": 1.5, "disk": 1},
                 "rateLimit": {"tokensPerFill": 2, "maxTokenCount": -1},
                 "namespace": ""}"#,
        );
        let problems = parse(&format!("[{json}]"), base).unwrap_err();
        let at = "functions[0]";
        assert_eq!(
            shown(&problems),
            [
                format!("{at}.rateLimit.maxTokenCount: expected an integer >= 0, got -1"),
                format!(
                    "{at}.rateLimit.tokensPerFill: has no effect without rateLimit.fillInterval"
                ),
                format!(
                    "{at}.resourceLimit.memory: expected a size of at least 16777216 bytes (a number of bytes or a string such as \"512mb\"), got 1024"
                ),
                format!("{at}.resourceLimit.cpu: expected a number in (0, 1], got 1.5"),
                format!("{at}.resourceLimit.disk: unknown key"),
                format!("{at}.worker.execArgv[1]: expected a string, got 1"),
                format!("{at}.worker.disposable: expected true or false, got \"yes\""),
                format!(
                    "{at}.worker.dispatchMode: expected \"least-request-count\" or \"round-robin\", got \"random\""
                ),
                format!(
                    "{at}.worker.maxActivateRequest: unknown key (did you mean \"maxActivateRequests\"?)"
                ),
                format!("{at}.worker.reservationCount: must be <= replicaCountLimit (2), got 3"),
                format!(
                    "{at}.worker.concurrencyShrinkThreshold: must be below concurrencyExpandThreshold (0.7), got 0.8"
                ),
            ]
        );

        let sys = SystemConfig {
            virtual_memory_pool_size: 256 << 20,
            ..SystemConfig::default()
        };
        let problems = parse_functions(&format!("[{HELLO}]"), base, &sys).unwrap_err();
        assert_eq!(
            shown(&problems),
            [
                "functions[0].resourceLimit.memory: 536870912 bytes is more than \
              virtualMemoryPoolSize (268435456 bytes), so no worker could start"
            ]
        );
    }

    #[test]
    fn handler_styles_and_process_limits() {
        let dir = fixture("styles");
        let json = r#"[
            {"name": "a", "runtime": "nodejs", "url": ".", "handler": "i.h", "signature": "s",
             "handlerStyle": "fc-http", "resourceLimit": {"pids": 64, "nofile": 256}},
            {"name": "b", "runtime": "python3", "url": ".", "handler": "i.h", "signature": "s"},
            {"name": "c", "runtime": "python3", "url": ".", "handler": "i.h", "signature": "s",
             "handlerStyle": "noslate"},
            {"name": "d", "runtime": "nodejs", "url": ".", "handler": "i.h", "signature": "s",
             "handlerStyle": "guess", "resourceLimit": {"pids": 0, "nofile": -1}}
        ]"#;
        let problems = shown(&parse(json, &dir).unwrap_err());
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(
            problems[0].starts_with("functions[2].handlerStyle: "),
            "{problems:#?}"
        );
        assert!(problems[1].starts_with("functions[3].resourceLimit.pids: "));
        assert!(problems[2].starts_with("functions[3].resourceLimit.nofile: "));
        assert!(problems[3].starts_with("functions[3].handlerStyle: "));
        let ok = r#"[
            {"name": "a", "runtime": "nodejs", "url": ".", "handler": "i.h", "signature": "s",
             "handlerStyle": "fc-http", "resourceLimit": {"pids": 64, "nofile": 256}},
            {"name": "b", "runtime": "python3", "url": ".", "handler": "i.h", "signature": "s"}
        ]"#;
        let set = parse(ok, &dir).unwrap();
        assert_eq!(set.functions[0].handler_style, HandlerStyle::FcHttp);
        assert_eq!(set.functions[0].resource_limit.pids, 64);
        assert_eq!(set.functions[0].resource_limit.nofile, 256);
        assert_eq!(set.functions[1].handler_style, HandlerStyle::FcEvent);
    }

    #[test]
    fn empty_rate_limit_and_namespace() {
        let tmp = fixture("ratelimit");
        let base: &Path = &tmp;
        let json = HELLO.replace("}", r#", "rateLimit": {}, "namespace": ""}"#);
        let f = parse(&format!("[{json}]"), base)
            .unwrap()
            .functions
            .remove(0);
        assert_eq!(
            f.rate_limit,
            Some(RateLimit {
                max_token_count: None,
                tokens_per_fill: None,
                fill_interval_ms: None
            })
        );
        assert_eq!(f.namespace, None);
    }

    #[test]
    fn services_are_parsed() {
        let tmp = fixture("services");
        let base: &Path = &tmp;
        let json = format!(
            r#"{{"functions": [{HELLO}, {}],
                "services": [
                    {{"name": "one", "selector": {{"functionName": "hello"}}}},
                    {{"name": "two", "type": "default", "selector": {{"functionName": "world"}}}},
                    {{"name": "split", "type": "proportional-load-balance", "selectors": [
                        {{"selector": {{"functionName": "hello"}}, "proportion": 0.3}},
                        {{"selector": {{"functionName": "world"}}, "proportion": 0.7}}
                    ]}}
                ]}}"#,
            HELLO.replace("hello", "world")
        );
        let set = parse(&json, base).unwrap();
        assert_eq!(set.services.len(), 3);
        assert_eq!(
            set.services[0].kind,
            ServiceKind::Default {
                function: "hello".to_owned()
            }
        );
        assert_eq!(set.services[1].select(0.5), Some("world"));
        assert_eq!(
            set.services[2].kind,
            ServiceKind::Proportional(vec![("hello".to_owned(), 0.3), ("world".to_owned(), 0.7)])
        );
    }

    #[test]
    fn service_problems_are_reported_together() {
        let tmp = fixture("service-problems");
        let base: &Path = &tmp;
        let json = format!(
            r#"{{"functions": [{HELLO}, {{"name": "broken", "runtime": "nodejs"}}],
                "services": [
                    {{"name": "a", "selector": {{"functionName": "nope"}}}},
                    {{"name": "a", "selector": {{"functionName": "broken"}}}},
                    {{"name": "b", "type": "proportional-load-balance", "selectors": [
                        {{"selector": {{"functionName": "hello"}}, "proportion": 0.5}},
                        {{"selector": {{"functionName": "broken"}}, "proportion": 0.2}}
                    ]}},
                    {{"name": "c", "type": "proportional-load-balance", "selectors": []}},
                    {{"name": "d", "type": "proportional-load-balance", "selectors": [
                        {{"selector": {{"functionName": "hello"}}, "proportion": 0}},
                        {{"selector": {{"functionName": "hello"}}, "proportion": 1}}
                    ]}},
                    {{"name": "e", "type": "weighted"}},
                    {{"name": "f", "selectors": [], "selector": {{"functionName": "hello"}}}},
                    {{"name": "g"}},
                    {{"name": "h", "type": "proportional-load-balance", "selector": {{"functionName": "hello"}}}},
                    {{"name": "i", "type": "proportional-load-balance", "selectors": [
                        {{"selector": {{"functionName": "hello"}}, "proportion": 0.5}},
                        {{"selector": {{"functionName": "hello"}}, "proportion": 0.5}}
                    ]}}
                ]}}"#
        );
        let problems = parse(&json, base).unwrap_err();
        assert_eq!(
            shown(&problems),
            [
                "functions[1].url: missing (required)",
                "functions[1].signature: missing (required)",
                "functions[1].handler: missing (required for runtime nodejs)",
                "services[1].name: duplicate service name \"a\" (first at services[0])",
                "services[0].selector.functionName: no function named \"nope\" in this profile set",
                "services[2].selectors: proportions must add up to 1, got 0.7",
                "services[3].selectors: must not be empty",
                "services[4].selectors[0].proportion: expected a number in (0, 1], got 0",
                "services[5].type: expected \"default\" or \"proportional-load-balance\", got \"weighted\"",
                "services[6].selectors: only used by type \"proportional-load-balance\"",
                "services[7].selector: missing (required)",
                "services[8].selector: only used by type \"default\"",
                "services[8].selectors: missing (required)",
                "services[9].selectors[1].selector.functionName: duplicate target \"hello\" (first at services[9].selectors[0])",
            ]
        );
    }
}
