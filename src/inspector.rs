//! The inspector (Noslate's `useInspector`): what is decided without I/O. While a Node.js
//! function's inspector is on, its invocations go to one separate *inspect worker*, a fresh
//! process (never a warm-seed fork or a spare) started with `--inspect=127.0.0.1:0`: the
//! kernel picks a free port, so it cannot collide with another listener, and the bootstrap
//! reports the address in its READY before any user code runs. The runtime accepts the worker
//! only if that address is `127.0.0.1`.
//!
//! Here: the admin body (`{"use": true|false}`), which runtimes can be inspected, the
//! inspect-mode replica rule, the memory relaxation, and the debugger's address and URLs.

use crate::config::Runtime;

/// The Node.js flag of an inspect worker: loopback only, port chosen by the kernel.
pub const NODE_INSPECT_ARG: &str = "--inspect=127.0.0.1:0";

/// An inspect worker's memory limit is its function's times this (Noslate's rule: a debugging
/// session, heap snapshots included, needs room); the virtual memory pool still counts the
/// function's own limit.
pub const MEMORY_FACTOR: u64 = 100;

/// At most this many inspect workers (of the current generation, starting or serving) per
/// function.
pub const MAX_INSPECT_WORKERS: usize = 1;

/// The message of an inspect launch past [`MAX_INSPECT_WORKERS`] (Noslate's
/// `kReplicaLimitExceededInspector`).
pub const REPLICA_LIMIT_MESSAGE: &str = "Replica count exceeded limit in inspect mode";

/// What a Python (or other non-Node.js) function is told.
pub fn unsupported_message(name: &str, runtime: Runtime) -> String {
    let runtime = match runtime {
        Runtime::Nodejs => "nodejs",
        Runtime::Aworker => "aworker",
        Runtime::Python3 => "python3",
        Runtime::Native => "native",
        Runtime::Process => "process",
    };
    format!(
        "function {name} runs {runtime}: the inspector is supported for Node.js functions only \
         (nodejs, aworker); Python functions run without a debugger"
    )
}

/// Whether functions of `runtime` can run an inspect worker: those whose workers are Node.js.
pub fn supports(runtime: Runtime) -> bool {
    matches!(runtime, Runtime::Nodejs | Runtime::Aworker)
}

/// An inspect worker's memory limit for a function limit of `memory` bytes.
pub fn relaxed_memory(memory: u64) -> u64 {
    memory.saturating_mul(MEMORY_FACTOR)
}

/// Whether one more inspect worker may start while `live` (starting or serving, current
/// generation) exist; the error names the rule.
pub fn may_launch(function: &str, live: usize) -> Result<(), String> {
    if live < MAX_INSPECT_WORKERS {
        return Ok(());
    }
    Err(format!(
        "{REPLICA_LIMIT_MESSAGE}: function {function} already has {live} inspect worker(s) \
         (at most {MAX_INSPECT_WORKERS})"
    ))
}

/// The first Node.js debugger flag (`--inspect`, `--inspect-brk=0.0.0.0:9229`, `--debug-port`,
/// any spelling with `_`) among the space-separated words of `args` (an `execArgv` entry,
/// `NODE_OPTIONS`). A debugger runs whatever code it is sent, so only the runtime opens one.
pub fn debugger_flag_in(args: &str) -> Option<&str> {
    args.split_whitespace().find(|word| {
        let name = word.split('=').next().unwrap_or_default().replace('_', "-");
        name.starts_with("--inspect") || name.starts_with("--debug")
    })
}

/// Why a configured debugger flag is refused.
pub fn debugger_flag_problem(flag: &str) -> String {
    format!(
        "{flag:?} opens a debugger, which runs any code it is sent: the runtime opens it itself, \
         on 127.0.0.1 only (noslate inspect NAME, PUT /v1/inspector/NAME)"
    )
}

/// Parses the body of `PUT /v1/inspector/NAME`: `{"use": true}` or `{"use": false}`. The
/// error names the problem.
pub fn parse_use(body: &[u8]) -> Result<bool, String> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not JSON ({e}); send {{\"use\": true}} or false"))?;
    let serde_json::Value::Object(object) = value else {
        return Err(format!(
            "the body must be a JSON object {{\"use\": true|false}}, got {value}"
        ));
    };
    if let Some(other) = object.keys().find(|k| k.as_str() != "use") {
        return Err(format!(
            "unknown field {other:?}: the body is {{\"use\": true|false}}"
        ));
    }
    match object.get("use") {
        Some(serde_json::Value::Bool(on)) => Ok(*on),
        Some(other) => Err(format!("\"use\" must be true or false, got {other}")),
        None => Err("missing field \"use\": the body is {\"use\": true|false}".to_owned()),
    }
}

/// Where an inspect worker's debugger listens, from the `ws://` URL its bootstrap reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The port on 127.0.0.1.
    pub port: u16,
    /// The target id (the path of the WebSocket URL).
    pub id: String,
}

impl Endpoint {
    /// Parses `ws://127.0.0.1:PORT/ID`. Any other host (`0.0.0.0`, a public address, a name)
    /// is refused: the debugger must be reachable from this machine only.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("the debugger's URL {url:?} is not ws://"))?;
        let (authority, id) = rest
            .split_once('/')
            .ok_or_else(|| format!("the debugger's URL {url:?} has no target id"))?;
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| format!("the debugger's URL {url:?} has no port"))?;
        if host != "127.0.0.1" {
            return Err(format!(
                "the debugger listens on {host}, not 127.0.0.1 (loopback only)"
            ));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("the debugger's URL {url:?} has no valid port"))?;
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!("the debugger's URL {url:?} has no valid target id"));
        }
        Ok(Endpoint {
            port,
            id: id.to_owned(),
        })
    }

    /// The plain WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/{}", self.port, self.id)
    }

    /// The URL Chrome DevTools opens.
    pub fn devtools_url(&self) -> String {
        devtools_url(&format!("127.0.0.1:{}/{}", self.port, self.id))
    }

    /// The target list Node.js serves on the debugger's port.
    pub fn list_url(&self) -> String {
        format!("http://127.0.0.1:{}/json/list", self.port)
    }
}

/// The DevTools URL for a WebSocket target written without its scheme (`127.0.0.1:PORT/ID`).
pub fn devtools_url(target: &str) -> String {
    format!("devtools://devtools/bundled/js_app.html?experiments=true&v8only=true&ws={target}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_use_true_or_false_and_every_other_shape_is_named() {
        assert_eq!(parse_use(br#"{"use": true}"#), Ok(true));
        assert_eq!(parse_use(br#" {"use":false} "#), Ok(false));
        let err = |body: &[u8]| parse_use(body).expect_err("refused");
        assert!(err(b"{\"use\": tru").contains("not JSON"));
        assert!(err(b"").contains("not JSON"));
        assert!(err(b"[true]").contains("JSON object"));
        assert!(err(b"{}").contains("missing field \"use\""));
        assert!(err(br#"{"use": 1}"#).contains("must be true or false, got 1"));
        assert!(err(br#"{"use": "true"}"#).contains("got \"true\""));
        assert!(err(br#"{"use": null}"#).contains("got null"));
        assert!(err(br#"{"use": true, "port": 9229}"#).contains("unknown field \"port\""));
    }

    #[test]
    fn only_node_functions_are_inspected() {
        assert!(supports(Runtime::Nodejs));
        assert!(supports(Runtime::Aworker));
        for other in [Runtime::Python3, Runtime::Native, Runtime::Process] {
            assert!(!supports(other));
        }
        let message = unsupported_message("py", Runtime::Python3);
        assert!(message.contains("Node.js functions only"), "{message}");
        assert!(message.contains("Python functions run without a debugger"));
    }

    #[test]
    fn debugger_flags_are_the_runtimes() {
        for flag in [
            "--inspect",
            "--inspect=0.0.0.0:9229",
            "--inspect-brk",
            "--inspect_wait=1.2.3.4:1",
            "--inspect-port=0.0.0.0:9229",
            "--debug-port=9229",
        ] {
            assert_eq!(
                debugger_flag_in(&format!("--enable-source-maps {flag}")),
                Some(flag)
            );
        }
        for harmless in [
            "",
            "--enable-source-maps",
            "--max-old-space-size=100",
            "inspect",
        ] {
            assert_eq!(debugger_flag_in(harmless), None, "{harmless}");
        }
    }

    #[test]
    fn one_inspect_worker_per_function() {
        assert_eq!(may_launch("f", 0), Ok(()));
        let refused = may_launch("f", 1).expect_err("second refused");
        assert!(refused.starts_with(REPLICA_LIMIT_MESSAGE), "{refused}");
        assert!(refused.contains("function f"));
    }

    #[test]
    fn memory_is_relaxed_a_hundred_fold_without_overflow() {
        assert_eq!(relaxed_memory(512 << 20), 51_200 << 20);
        assert_eq!(relaxed_memory(u64::MAX / 2), u64::MAX);
    }

    #[test]
    fn only_a_loopback_endpoint_is_accepted() {
        let ok = Endpoint::parse("ws://127.0.0.1:40123/0f1e2d3c-aaaa-bbbb").expect("loopback");
        assert_eq!(ok.port, 40123);
        assert_eq!(ok.ws_url(), "ws://127.0.0.1:40123/0f1e2d3c-aaaa-bbbb");
        assert_eq!(
            ok.devtools_url(),
            "devtools://devtools/bundled/js_app.html?experiments=true&v8only=true\
             &ws=127.0.0.1:40123/0f1e2d3c-aaaa-bbbb"
        );
        assert_eq!(ok.list_url(), "http://127.0.0.1:40123/json/list");
        for bad in [
            "ws://0.0.0.0:40123/abc",
            "ws://10.0.0.5:40123/abc",
            "ws://localhost:40123/abc",
            "ws://[::]:40123/abc",
            "ws://127.0.0.1:0/abc",
            "ws://127.0.0.1:99999/abc",
            "ws://127.0.0.1:40123/",
            "ws://127.0.0.1:40123/a b",
            "http://127.0.0.1:40123/abc",
            "ws://127.0.0.1/abc",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(
            Endpoint::parse("ws://0.0.0.0:1/x")
                .expect_err("any address")
                .contains("not 127.0.0.1")
        );
    }
}
