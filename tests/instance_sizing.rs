//! `virtualMemoryPoolSize` follows the instance when the configuration does not set it:
//! `FC_FUNCTION_MEMORY_SIZE` (MB), else the container's cgroup limit, else the machine's memory.
//! `noslate check`, `noslate serve --probe` and the start-up log say which.

mod common;

use std::process::Command;

use common::{Noslate, Req, TempDir, assert_error_json, binary, profile};
use serde_json::{Value, json};

/// Two functions whose one reserved worker each reserves 400 MiB.
fn two_big_functions() -> Value {
    let mut a = profile("first", "echo");
    a["resourceLimit"] = json!({ "memory": 400 << 20 });
    let mut b = profile("second", "echo");
    b["resourceLimit"] = json!({ "memory": 400 << 20 });
    json!([a, b])
}

fn noslate_with(fc_memory_mb: &str, config: Option<Value>) -> Noslate {
    let mut builder = Noslate::builder()
        .functions(&two_big_functions())
        .env("FC_FUNCTION_MEMORY_SIZE", fc_memory_mb);
    if let Some(config) = config {
        builder = builder.config(&config);
    }
    builder.start()
}

#[test]
fn the_pool_follows_fc_function_memory_size() {
    // 1024 MB hold both reserved workers.
    let ns = noslate_with("1024", None);
    let resp = ns.send(&Req::new("POST", "/initialize"));
    assert_eq!(resp.status, 200, "{}", resp.brief());
    assert!(
        ns.log_count(&["virtualMemoryPoolSize 1024 MiB (from FC_FUNCTION_MEMORY_SIZE)"]) >= 1,
        "the start-up log names the source"
    );
    drop(ns);
    // 600 MB hold one: /initialize names the pool and its size.
    let ns = noslate_with("600", None);
    let resp = ns.send(&Req::new("POST", "/initialize"));
    let body = assert_error_json(&resp, 404, Some("WorkerStartFailed"));
    let message = body["errorMessage"].as_str().unwrap_or_default();
    assert!(
        message.contains("total: 600 MiB (virtualMemoryPoolSize)"),
        "{message}"
    );
}

#[test]
fn a_configured_pool_wins_over_the_instance() {
    // Noslate's 1gb stays reachable by setting it.
    let ns = noslate_with("600", Some(json!({ "virtualMemoryPoolSize": "1gb" })));
    let resp = ns.send(&Req::new("POST", "/initialize"));
    assert_eq!(resp.status, 200, "{}", resp.brief());
    assert!(ns.log_count(&["virtualMemoryPoolSize 1024 MiB (from the config file's"]) >= 1);
}

#[test]
fn check_and_the_probe_report_the_pool_and_its_source() {
    let dir = TempDir::new();
    let file = dir.path().join("functions.json");
    std::fs::write(&file, two_big_functions().to_string()).expect("write");
    let run = |args: &[&str]| {
        let out = Command::new(binary())
            .args(args)
            .arg("--functions")
            .arg(&file)
            .arg("--workdir")
            .arg(dir.path().join("work"))
            .env("FC_FUNCTION_MEMORY_SIZE", "3072")
            .env_remove("NOSLATED_VIRTUAL_MEMORY_POOL_SIZE")
            .output()
            .expect("run noslate");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let check = run(&["check"]);
    assert!(
        check.contains("virtualMemoryPoolSize 3072 MiB (from FC_FUNCTION_MEMORY_SIZE)"),
        "{check}"
    );
    let probe: Value = serde_json::from_str(&run(&["serve", "--probe"])).expect("probe JSON");
    assert_eq!(
        probe["virtualMemoryPoolSize"]["bytes"],
        3072u64 << 20,
        "{probe}"
    );
    assert_eq!(
        probe["virtualMemoryPoolSize"]["source"],
        "FC_FUNCTION_MEMORY_SIZE"
    );
    // Without FC's variable: the cgroup limit or the machine's memory, never Noslate's default.
    let out = Command::new(binary())
        .args(["check", "--functions"])
        .arg(&file)
        .arg("--workdir")
        .arg(dir.path().join("work"))
        .env_remove("FC_FUNCTION_MEMORY_SIZE")
        .env_remove("NOSLATED_VIRTUAL_MEMORY_POOL_SIZE")
        .output()
        .expect("run noslate check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("(from the container's cgroup memory limit)")
            || text.contains("(from the machine's memory)"),
        "{text}"
    );
}
