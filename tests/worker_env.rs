//! What a worker inherits from the runtime's environment (`turf.inheritEnv`): by default FC's
//! system variables, the credentials, `TZ` and `LANG`, and nothing else of the runtime's; with
//! `"none"`, nothing; with a list, exactly its names and prefixes. The function's own and the
//! platform's variables win over inherited ones.

mod common;

use common::{Noslate, assert_invoke_ok, profile, require_python};
use serde_json::{Value, json};

/// The runtime's environment in these tests: FC's, the runtime's own, and unrelated.
const RUNTIME_ENV: &[(&str, &str)] = &[
    ("FC_REGION", "cn-hangzhou"),
    ("FC_INSTANCE_ID", "c-123"),
    ("FC_SERVER_PORT", "9000"),
    ("ALIBABA_CLOUD_ACCESS_KEY_ID", "AK"),
    ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "SK"),
    ("ALIBABA_CLOUD_SECURITY_TOKEN", "TOKEN"),
    ("TZ", "Asia/Shanghai"),
    ("NOSLATE_SECRET_SETTING", "runtime-only"),
    ("NOSLATED_MAX_ACTIVATE_REQUESTS", "7"),
    ("RUST_LOG", "debug"),
    ("DATABASE_PASSWORD", "hunter2"),
    ("MY_FEATURE", "on"),
];

fn envdump(runtime: &str) -> Value {
    if runtime == "nodejs" {
        profile("envdump", "envdump")
    } else {
        let mut p = profile("envdump", "envdump-python");
        p["runtime"] = json!("python3");
        p["handlerStyle"] = json!("fc-event");
        p
    }
}

/// The environment a worker of `p` sees, with the runtime started with `RUNTIME_ENV` and
/// `config`.
fn worker_env(p: Value, config: Value) -> serde_json::Map<String, Value> {
    let mut builder = Noslate::builder().functions(&json!([p])).config(&config);
    for (k, v) in RUNTIME_ENV {
        builder = builder.env(k, v);
    }
    let ns = builder.start();
    let body = assert_invoke_ok(&ns.invoke(b"", &[]));
    body["env"].as_object().cloned().unwrap_or_default()
}

fn assert_default_policy(runtime: &str) {
    let env = worker_env(envdump(runtime), json!({}));
    for (name, value) in [
        ("FC_REGION", "cn-hangzhou"),
        ("FC_INSTANCE_ID", "c-123"),
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", "AK"),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "SK"),
        ("ALIBABA_CLOUD_SECURITY_TOKEN", "TOKEN"),
        ("TZ", "Asia/Shanghai"),
    ] {
        assert_eq!(env.get(name), Some(&json!(value)), "{name} missing");
    }
    for name in [
        "FC_SERVER_PORT",
        "NOSLATE_SECRET_SETTING",
        "NOSLATED_MAX_ACTIVATE_REQUESTS",
        "RUST_LOG",
        "DATABASE_PASSWORD",
        "MY_FEATURE",
    ] {
        assert!(!env.contains_key(name), "{name} reached the worker");
    }
}

#[test]
fn node_workers_inherit_fc_variables_and_credentials_only() {
    assert_default_policy("nodejs");
}

#[test]
fn python_workers_inherit_fc_variables_and_credentials_only() {
    require_python();
    assert_default_policy("python3");
}

#[test]
fn none_inherits_nothing() {
    let env = worker_env(envdump("nodejs"), json!({"turf": {"inheritEnv": "none"}}));
    for (name, _) in RUNTIME_ENV {
        assert!(!env.contains_key(*name), "{name} reached the worker");
    }
}

#[test]
fn a_list_passes_exactly_its_names_and_prefixes_and_the_profile_wins() {
    let mut p = envdump("nodejs");
    p["environments"] = json!([{"key": "TZ", "value": "UTC"}]);
    let env = worker_env(
        p,
        json!({"turf": {"inheritEnv": ["MY_*", "TZ", "RUST_LOG"]}}),
    );
    assert_eq!(env.get("MY_FEATURE"), Some(&json!("on")));
    assert_eq!(
        env.get("RUST_LOG"),
        Some(&json!("debug")),
        "listed explicitly"
    );
    assert_eq!(env.get("TZ"), Some(&json!("UTC")), "the profile's own wins");
    for name in [
        "FC_REGION",
        "ALIBABA_CLOUD_ACCESS_KEY_ID",
        "DATABASE_PASSWORD",
    ] {
        assert!(!env.contains_key(name), "{name} reached the worker");
    }
}

#[test]
fn a_bad_mode_or_pattern_is_a_config_error_with_its_path() {
    for (value, path) in [
        (json!("everything"), "turf.inheritEnv"),
        (json!(["OK_*", "A*B"]), "turf.inheritEnv[1]"),
    ] {
        let exited = Noslate::builder()
            .functions(&json!([profile("echo", "echo")]))
            .config(&json!({"turf": {"inheritEnv": value}}))
            .run_to_exit();
        assert_eq!(exited.status.code(), Some(2), "{}", exited.stderr);
        assert!(
            exited.stderr.contains(path),
            "{path} not named: {}",
            exited.stderr
        );
    }
}
