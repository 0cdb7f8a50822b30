//! What a worker can see of its surroundings with `turf.inheritEnv: "none"` (Noslate's strict
//! behaviour): only the profile's environment, the runtime's `NOSLATE_*` variables, `PATH` and
//! `HOME`; never the server's environment or FC credentials. What the default policy passes
//! is tested in `worker_env.rs`.

mod common;

use common::{Noslate, assert_invoke_ok, fixture_dir, profile};
use serde_json::{Value, json};

const CANARY: &str = "canary-value-from-the-server-environment";

/// The runtime started with a canary and FC-style credentials in its own environment.
fn envdump() -> Noslate {
    let mut p = profile("envdump", "envdump");
    p["environments"] = json!([
        {"key": "LABEL", "value": "isolated"},
        {"key": "WITH_SPACES", "value": "a b=c"}
    ]);
    Noslate::builder()
        .functions(&json!([p]))
        .config(&json!({"turf": {"inheritEnv": "none"}}))
        .env("NOSLATE_TEST_SERVER_CANARY_ONLY", CANARY)
        .env("SERVER_CANARY", CANARY)
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", "server-ak-id")
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "server-ak-secret")
        .env("ALIBABA_CLOUD_SECURITY_TOKEN", "server-sts-token")
        .env("FC_ACCESS_KEY_ID", "server-fc-ak")
        .start()
}

const HEADER_CREDENTIALS: [(&str, &str); 3] = [
    ("x-fc-access-key-id", "header-ak-id"),
    ("x-fc-access-key-secret", "header-ak-secret"),
    ("x-fc-security-token", "header-sts-token"),
];

fn env_of(body: &Value) -> Vec<(String, String)> {
    let env = body["env"].as_object().expect("env object");
    env.iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect()
}

#[test]
fn worker_env_holds_only_profile_and_runtime_variables() {
    let ns = envdump();
    let body = assert_invoke_ok(&ns.invoke(b"", &HEADER_CREDENTIALS));
    let env = env_of(&body);
    let get = |k: &str| {
        env.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };

    assert_eq!(get("LABEL"), Some("isolated"), "env: {env:?}");
    assert_eq!(get("WITH_SPACES"), Some("a b=c"), "env: {env:?}");
    assert!(
        get("PATH").is_some_and(|p| !p.is_empty()),
        "PATH is set: {env:?}"
    );
    assert!(
        get("HOME").is_some_and(|p| !p.is_empty()),
        "HOME is set: {env:?}"
    );
    assert_eq!(
        get("NOSLATE_FUNCTION_NAME"),
        Some("envdump"),
        "env: {env:?}"
    );

    let allowed = ["LABEL", "WITH_SPACES", "PATH", "HOME"];
    let strays: Vec<_> = env
        .iter()
        .filter(|(k, _)| !allowed.contains(&k.as_str()) && !k.starts_with("NOSLATE_"))
        .collect();
    assert!(
        strays.is_empty(),
        "variables from outside the profile leaked in: {strays:?}"
    );
}

#[test]
fn server_environment_does_not_reach_the_worker() {
    let ns = envdump();
    let body = assert_invoke_ok(&ns.invoke(b"", &[]));
    for (k, v) in env_of(&body) {
        assert!(
            !v.contains(CANARY),
            "server canary leaked into the worker as {k}={v}"
        );
        assert!(
            !v.starts_with("server-"),
            "server credential leaked into the worker as {k}={v}"
        );
        assert_ne!(k, "SERVER_CANARY");
        assert_ne!(
            k, "NOSLATE_TEST_SERVER_CANARY_ONLY",
            "a server NOSLATE_* variable leaked"
        );
        assert!(
            !k.starts_with("ALIBABA_CLOUD_"),
            "{k} leaked into the worker"
        );
    }
}

#[test]
fn fc_credentials_travel_in_the_context_not_the_environment() {
    let ns = envdump();
    let body = assert_invoke_ok(&ns.invoke(b"", &HEADER_CREDENTIALS));
    for (k, v) in env_of(&body) {
        for (_, secret) in HEADER_CREDENTIALS {
            assert!(
                !v.contains(secret),
                "credential {secret} is in the worker env as {k}"
            );
        }
    }
    let creds = &body["credentials"];
    assert_eq!(
        creds["accessKeyId"], "header-ak-id",
        "ctx.credentials: {creds}"
    );
    assert_eq!(
        creds["accessKeySecret"], "header-ak-secret",
        "ctx.credentials: {creds}"
    );
    assert_eq!(
        creds["securityToken"], "header-sts-token",
        "ctx.credentials: {creds}"
    );

    // The next invocation without credentials does not see the previous ones.
    let body = assert_invoke_ok(&ns.invoke(b"", &[]));
    let text = body["credentials"].to_string();
    assert!(
        !text.contains("header-ak"),
        "credentials of an earlier request: {text}"
    );
}

#[test]
fn worker_runs_in_its_code_directory() {
    let ns = envdump();
    let body = assert_invoke_ok(&ns.invoke(b"", &[]));
    let cwd = body["cwd"].as_str().unwrap();
    let expected = fixture_dir("envdump").canonicalize().unwrap();
    assert_eq!(std::path::Path::new(cwd).canonicalize().unwrap(), expected);
}

#[test]
fn worker_output_can_go_to_the_runtime_console_for_fc_logs() {
    let ns = Noslate::builder()
        .functions(&json!([profile("loud", "talk")]))
        .config(&json!({ "logger": { "workerOutput": "console" } }))
        .start();
    let resp = ns.invoke(b"", &[("x-say", "marker-7f3a")]);
    assert_eq!(resp.status, 200, "{}", resp.brief());
    // FC collects the container's stdout: the function's lines land there, between the
    // runtime's FC Invoke Start/End lines.
    ns.wait_stdout("out:marker-7f3a");
    assert!(
        !ns.dir().join("logs").join("loud").exists(),
        "no per-worker log files with workerOutput: console"
    );
}

#[test]
fn worker_output_goes_to_per_worker_files_by_default() {
    let ns = Noslate::start(&json!([profile("quiet", "talk")]));
    let resp = ns.invoke(b"", &[("x-say", "marker-91c2")]);
    assert_eq!(resp.status, 200);
    let dir = ns.dir().join("logs").join("quiet").join("quiet-1");
    common::wait_until(
        common::WAIT,
        "the line reaches the worker's stdout file",
        || std::fs::read_to_string(dir.join("stdout")).is_ok_and(|s| s.contains("out:marker-91c2")),
    );
    let stderr = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
    assert!(stderr.contains("err:marker-91c2"), "{stderr}");
    assert!(!ns.stdout_lines().iter().any(|l| l.contains("marker-91c2")));
}
