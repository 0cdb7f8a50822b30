//! `gateway.*` (ours): the user's own HTTP server (a Noslate gateway such as `server.js`), run
//! by the runtime beside its workers on the FC port, while the runtime serves its admin socket
//! and, if asked, HTTP on another port.

use serde_json::Value;

use crate::config::problems::{Fields, Problems, describe, set, string};

/// Default `gateway.sdkPath`: where the image installs the Node.js SDK (`sdk/node`), given to the
/// gateway as `NOSLATE_PATH` for `require(process.env.NOSLATE_PATH)` (the image also sets
/// `NOSLATE_PATH` itself, which overrides this).
pub const DEFAULT_GATEWAY_SDK_PATH: &str = "/usr/local/lib/noslate/sdk";
/// The variable that carries the SDK's directory to the gateway; set in the runtime's own
/// environment, it overrides `gateway.sdkPath`.
pub const GATEWAY_SDK_PATH_ENV: &str = "NOSLATE_PATH";
/// Default `gateway.stderrTailBytes`: how much of the gateway's latest stderr is kept to report
/// why it died.
pub const DEFAULT_GATEWAY_STDERR_TAIL_BYTES: usize = 4096;
/// Smallest accepted `gateway.stderrTailBytes`.
pub const MIN_GATEWAY_STDERR_TAIL_BYTES: u64 = 256;

/// Where the runtime's own HTTP listener goes while a gateway owns the FC port
/// (`gateway.runtimePort`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimePort {
    /// No HTTP listener: the gateway reaches the runtime over the admin socket (the default).
    Off,
    /// The runtime's HTTP server on `127.0.0.1:<port>` (0 picks a free port).
    Loopback(u16),
}

/// `gateway.*`: the user's gateway process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// `gateway.command`: the program (a path, or a name looked up in `PATH`).
    pub command: String,
    /// `gateway.args`: its arguments.
    pub args: Vec<String>,
    /// `gateway.env`: variables added to its environment last (they win over the ones the
    /// runtime sets), sorted by name.
    pub env: Vec<(String, String)>,
    /// `gateway.cwd`: its working directory; `None` is the runtime's own.
    pub cwd: Option<String>,
    /// `gateway.sdkPath`: passed as `NOSLATE_PATH` (`NOSLATE_PATH` in the runtime's own
    /// environment overrides it). It need not exist.
    pub sdk_path: String,
    /// `gateway.runtimePort`: the runtime's own HTTP listener, moved off the FC port.
    pub runtime_port: RuntimePort,
    /// `gateway.stopGracePeriod`, in milliseconds: SIGTERM to SIGKILL when the runtime stops;
    /// `None` is `turf.gracefulExitPeriodMs`.
    pub stop_grace_period_ms: Option<u64>,
    /// `gateway.stderrTailBytes`: the last bytes of its stderr kept for the report of its end.
    pub stderr_tail_bytes: usize,
}

impl GatewayConfig {
    /// A gateway running `command` with the defaults (`--gateway` on the command line).
    pub fn new(command: String) -> GatewayConfig {
        GatewayConfig {
            command,
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            sdk_path: DEFAULT_GATEWAY_SDK_PATH.to_owned(),
            runtime_port: RuntimePort::Off,
            stop_grace_period_ms: None,
            stderr_tail_bytes: DEFAULT_GATEWAY_STDERR_TAIL_BYTES,
        }
    }

    /// The command line as one would type it, for logs and `noslate stats`.
    pub fn command_line(&self) -> String {
        std::iter::once(self.command.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Reads the `gateway` object (`null` or absent leaves the gateway off).
pub(super) fn apply_gateway(
    slot: &mut Option<GatewayConfig>,
    s: &mut Fields<'_>,
    p: &mut Problems,
) {
    let command = match s.required("command", p) {
        Some((value, path)) => match string(value, &path, p) {
            Some(text) if text.is_empty() => {
                p.add(path, "must not be empty");
                None
            }
            other => other,
        },
        None => None,
    };
    let mut gateway = GatewayConfig::new(command.clone().unwrap_or_default());
    set(&mut gateway.args, s.strings("args", p));
    if let Some((value, path)) = s.get("env") {
        set(&mut gateway.env, super::sections::env_map(value, &path, p));
    }
    set(&mut gateway.cwd, s.non_empty_string("cwd", p).map(Some));
    set(&mut gateway.sdk_path, s.non_empty_string("sdkPath", p));
    if let Some((value, path)) = s.get("runtimePort") {
        set(&mut gateway.runtime_port, runtime_port(value, &path, p));
    }
    set(
        &mut gateway.stop_grace_period_ms,
        s.int("stopGracePeriod", 0, p).map(Some),
    );
    if let Some(bytes) = s.byte_size("stderrTailBytes", MIN_GATEWAY_STDERR_TAIL_BYTES, p) {
        gateway.stderr_tail_bytes = usize::try_from(bytes).unwrap_or(usize::MAX).min(1 << 20);
    }
    if command.is_some() {
        *slot = Some(gateway);
    }
}

/// `gateway.runtimePort`: a port number, or `"off"`.
fn runtime_port(value: &Value, path: &str, p: &mut Problems) -> Option<RuntimePort> {
    if value.as_str() == Some("off") {
        return Some(RuntimePort::Off);
    }
    match value.as_u64().and_then(|n| u16::try_from(n).ok()) {
        Some(port) => Some(RuntimePort::Loopback(port)),
        None => {
            p.add(
                path,
                format!(
                    "expected a port (0-65535) or \"off\", got {}",
                    describe(value)
                ),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SystemConfig, parse_system_config};

    fn parse(json: &str) -> Result<SystemConfig, Vec<String>> {
        parse_system_config(json, &|_| None)
            .map_err(|problems| problems.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn no_gateway_by_default_and_with_null() {
        assert_eq!(parse("{}").unwrap().gateway, None);
        assert_eq!(parse(r#"{"gateway": null}"#).unwrap().gateway, None);
    }

    #[test]
    fn a_full_gateway_is_read() {
        let cfg = parse(
            r#"{"gateway": {"command": "node", "args": ["/code/server.js", "--x"],
                            "env": {"B": "2", "A": "1"}, "cwd": "/code",
                            "sdkPath": "/opt/sdk", "runtimePort": 9001,
                            "stopGracePeriod": 5000, "stderrTailBytes": "1kb"}}"#,
        )
        .unwrap();
        let gateway = cfg.gateway.unwrap();
        assert_eq!(gateway.command, "node");
        assert_eq!(gateway.args, ["/code/server.js", "--x"]);
        assert_eq!(
            gateway.env,
            [("A".into(), "1".into()), ("B".into(), "2".into())]
        );
        assert_eq!(gateway.cwd.as_deref(), Some("/code"));
        assert_eq!(gateway.sdk_path, "/opt/sdk");
        assert_eq!(gateway.runtime_port, RuntimePort::Loopback(9001));
        assert_eq!(gateway.stop_grace_period_ms, Some(5000));
        assert_eq!(gateway.stderr_tail_bytes, 1024);
        assert_eq!(gateway.command_line(), "node /code/server.js --x");
    }

    #[test]
    fn defaults_of_a_minimal_gateway() {
        let gateway = parse(r#"{"gateway": {"command": "./gw"}}"#)
            .unwrap()
            .gateway
            .unwrap();
        assert_eq!(gateway, GatewayConfig::new("./gw".into()));
        assert_eq!(gateway.runtime_port, RuntimePort::Off);
        assert_eq!(gateway.sdk_path, DEFAULT_GATEWAY_SDK_PATH);
        assert_eq!(gateway.stop_grace_period_ms, None);
        let off = parse(r#"{"gateway": {"command": "gw", "runtimePort": "off"}}"#).unwrap();
        assert_eq!(off.gateway.unwrap().runtime_port, RuntimePort::Off);
    }

    #[test]
    fn every_bad_key_is_named() {
        let problems = parse(
            r#"{"gateway": {"command": "", "args": "server.js", "env": {"1A": "x", "B": 2},
                            "cwd": "", "sdkPath": 3, "runtimePort": 70000,
                            "stopGracePeriod": -1, "stderrTailBytes": 10, "comand": "x"}}"#,
        )
        .unwrap_err();
        for key in [
            "gateway.command: must not be empty",
            "gateway.args: ",
            "gateway.env.1A: not a valid environment variable name",
            "gateway.env.B: expected a string",
            "gateway.cwd: must not be empty",
            "gateway.sdkPath: ",
            "gateway.runtimePort: expected a port (0-65535) or \"off\", got 70000",
            "gateway.stopGracePeriod: ",
            "gateway.stderrTailBytes: ",
            "gateway.comand: unknown key (did you mean \"command\"?)",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "{key}: {problems:?}"
            );
        }
        assert_eq!(
            parse(r#"{"gateway": {}}"#).unwrap_err(),
            ["gateway.command: missing (required)"]
        );
        assert_eq!(
            parse(r#"{"gateway": "node server.js"}"#).unwrap_err(),
            ["gateway: expected an object, got \"node server.js\""]
        );
    }

    #[test]
    fn noslate_path_in_the_environment_wins_over_the_file() {
        let env = |name: &str| (name == GATEWAY_SDK_PATH_ENV).then(|| "/env/sdk".to_owned());
        let cfg = parse_system_config(r#"{"gateway": {"command": "gw", "sdkPath": "/f"}}"#, &env)
            .unwrap();
        assert_eq!(cfg.gateway.unwrap().sdk_path, "/env/sdk");
        // Without a gateway the variable means nothing to the runtime.
        assert_eq!(parse_system_config("{}", &env).unwrap().gateway, None);
    }
}
