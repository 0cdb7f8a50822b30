//! Live reconfiguration over the admin socket (the CLI's `functions`, `services`, `env` and
//! `invoke` calls): code changes roll to new workers without failing a request, invalid sets
//! change nothing, overlapping updates all return, removed functions drain.

mod common;

use common::{Noslate, Req, WAIT, binary, fixture_dir, profile, wait_until};
use serde_json::{Value, json};
use std::process::Command;

fn write_set(ns: &Noslate, name: &str, set: &Value) -> String {
    let path = ns.dir().join(name);
    std::fs::write(&path, set.to_string()).unwrap();
    path.to_string_lossy().into_owned()
}

fn with_env(mut p: Value, key: &str, value: &str) -> Value {
    p["environments"] = json!([{ "key": key, "value": value }]);
    p["resourceLimit"] = json!({ "memory": 128 << 20 });
    p
}

fn who(resp: &common::Response) -> String {
    assert_eq!(resp.status, 200, "{}", resp.brief());
    resp.json()["env"]["VERSION"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_code_change_rolls_to_new_workers_without_failing_a_request() {
    let v1 = with_env(profile("app", "envdump"), "VERSION", "v1");
    let ns = Noslate::start(&json!([v1]));
    assert_eq!(who(&ns.invoke(b"", &[])), "v1");

    // Keep traffic flowing on another thread while the update rolls.
    let port = ns.port();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            let mut c = common::Client::connect(port);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let resp = c.request(&Req::new("POST", "/invoke"));
                answers.push((resp.status, resp.text()));
            }
            answers
        })
    };
    let v2 = with_env(profile("app", "envdump"), "VERSION", "v2");
    let file = write_set(&ns, "v2.json", &json!([v2]));
    let (ok, out, err) = ns.cli(&["functions", "set", &file]);
    assert!(ok, "{err}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["restarted"], json!(["app"]));
    wait_until(WAIT, "the new code serves", || {
        who(&ns.invoke(b"", &[])) == "v2"
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers = traffic.join().unwrap();
    assert!(!answers.is_empty());
    for (status, body) in &answers {
        assert_eq!(*status, 200, "no request fails during the rollout: {body}");
    }
    // Only the new generation remains.
    wait_until(WAIT, "the old worker is gone", || {
        let (_, out, _) = ns.cli(&["ps", "--json"]);
        serde_json::from_str::<Value>(&out)
            .map(|w| w.as_array().map_or(0, Vec::len) == 1)
            .unwrap_or(false)
    });
    let (ok, out, _) = ns.cli(&["functions", "get"]);
    assert!(ok);
    let got: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(got["functions"][0]["environments"][0]["value"], "v2");
}

#[test]
fn an_invalid_set_is_rejected_whole_and_nothing_changes() {
    let ns = Noslate::start(&json!([with_env(
        profile("keep", "envdump"),
        "VERSION",
        "v1"
    )]));
    let bad = json!([
        with_env(profile("keep", "envdump"), "VERSION", "v2"),
        { "name": "broken", "runtime": "nodejs", "url": "/nonexistent/dir", "signature": "s" }
    ]);
    let file = write_set(&ns, "bad.json", &bad);
    let (ok, _, err) = ns.cli(&["functions", "set", &file]);
    assert!(!ok);
    assert!(
        err.contains("functions[1].url"),
        "every problem with its path: {err}"
    );
    assert!(err.contains("functions[1].handler"), "{err}");
    assert_eq!(
        who(&ns.invoke(b"", &[])),
        "v1",
        "the running set is untouched"
    );
}

#[test]
fn in_place_changes_apply_without_restarting_workers() {
    let p = with_env(profile("live", "faulty"), "A", "1");
    let ns = Noslate::start(&json!([p.clone()]));
    let pid = ns.invoke(b"", &[]).json()["pid"].as_i64().unwrap();
    let mut limited = p;
    limited["rateLimit"] = json!({ "maxTokenCount": 1, "tokensPerFill": 1, "fillInterval": 60000 });
    let file = write_set(&ns, "limited.json", &json!([limited]));
    let (ok, out, err) = ns.cli(&["functions", "set", &file]);
    assert!(ok, "{err}");
    assert!(out.contains("\"updated\""), "{out}");
    let statuses: Vec<u16> = (0..3).map(|_| ns.invoke(b"", &[]).status).collect();
    assert!(
        statuses.contains(&429),
        "the new rate limit applies at once: {statuses:?}"
    );
    let first_ok = statuses.iter().position(|&s| s == 200);
    if first_ok.is_some() {
        // Same worker: nothing restarted.
        let (_, ps, _) = ns.cli(&["ps", "--json"]);
        assert!(ps.contains(&pid.to_string()), "{ps}");
    }
}

#[test]
fn overlapping_updates_all_return_and_the_last_wins() {
    let ns = Noslate::start(&json!([with_env(
        profile("race", "envdump"),
        "VERSION",
        "v0"
    )]));
    let handles: Vec<_> = (1..=4)
        .map(|i| {
            let file = write_set(
                &ns,
                &format!("v{i}.json"),
                &json!([with_env(
                    profile("race", "envdump"),
                    "VERSION",
                    &format!("v{i}")
                )]),
            );
            let socket = ns.dir().join("work").join("noslated.sock");
            std::thread::spawn(move || {
                Command::new(binary())
                    .args(["functions", "set", &file, "--socket"])
                    .arg(socket)
                    .output()
                    .unwrap()
                    .status
                    .success()
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap(), "every caller gets an answer");
    }
    let (_, out, _) = ns.cli(&["functions", "get"]);
    let last: Value = serde_json::from_str(&out).unwrap();
    let version = last["functions"][0]["environments"][0]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until(WAIT, "the applied version serves", || {
        who(&ns.invoke(b"", &[])) == version
    });
}

#[test]
fn a_removed_function_drains_and_a_new_one_serves() {
    let ns = Noslate::start(&json!([
        with_env(profile("old", "envdump"), "VERSION", "old"),
        with_env(profile("other", "envdump"), "VERSION", "other")
    ]));
    let file = write_set(
        &ns,
        "swap.json",
        &json!([
            with_env(profile("other", "envdump"), "VERSION", "other"),
            with_env(profile("fresh", "envdump"), "VERSION", "fresh")
        ]),
    );
    let (ok, out, err) = ns.cli(&["functions", "set", &file]);
    assert!(ok, "{err}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["removed"], json!(["old"]));
    assert_eq!(answer["added"], json!(["fresh"]));
    let gone = ns.send(&Req::new("POST", "/invoke/old"));
    assert_eq!(gone.status, 404);
    wait_until(WAIT, "the new function serves", || {
        ns.send(&Req::new("POST", "/invoke/fresh")).status == 200
    });
    wait_until(WAIT, "the removed function's worker is gone", || {
        let (_, ps, _) = ns.cli(&["ps"]);
        !ps.contains("old-")
    });
}

#[test]
fn platform_env_reaches_new_workers_and_invoke_goes_through_the_socket() {
    let ns = Noslate::start(&json!([with_env(
        profile("plat", "envdump"),
        "VERSION",
        "v1"
    )]));
    let file = write_set(
        &ns,
        "env.json",
        &json!({ "REGION_TAG": "east", "VERSION": "ignored" }),
    );
    let (ok, _, err) = ns.cli(&["env", "set", &file]);
    assert!(ok, "{err}");
    wait_until(WAIT, "new workers carry the platform env", || {
        let resp = ns.invoke(b"", &[]);
        resp.status == 200 && resp.json()["env"]["REGION_TAG"] == "east"
    });
    let resp = ns.invoke(b"", &[]);
    assert_eq!(
        resp.json()["env"]["VERSION"],
        "v1",
        "the function's own env wins"
    );
    let (ok, out, _) = ns.cli(&["env", "get"]);
    assert!(ok && out.contains("east"), "{out}");
    let (ok, out, err) = ns.cli(&["invoke", "plat", "--data", "hi"]);
    assert!(ok, "{err}");
    let body: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(body["env"]["REGION_TAG"], "east");
    let bad = write_set(&ns, "badenv.json", &json!({ "FC_X": "1", "bad name": "2" }));
    let (ok, _, err) = ns.cli(&["env", "set", &bad]);
    assert!(!ok);
    assert!(err.contains("FC_X") && err.contains("bad name"), "{err}");
    let _ = fixture_dir("envdump");
}

#[test]
fn add_remove_cycles_reuse_function_records() {
    let ns = Noslate::start(&json!([with_env(
        profile("other", "envdump"),
        "VERSION",
        "other"
    )]));
    for cycle in 0..60 {
        let mut fresh = with_env(profile(&format!("f{cycle}"), "envdump"), "VERSION", "f");
        fresh["worker"]["reservationCount"] = json!(0);
        let file = write_set(
            &ns,
            "cycle.json",
            &json!([
                with_env(profile("other", "envdump"), "VERSION", "other"),
                fresh
            ]),
        );
        let (ok, _, err) = ns.cli(&["functions", "set", &file]);
        assert!(ok, "cycle {cycle}: {err}");
        if cycle % 20 == 0 {
            let resp = ns.send(&Req::new("POST", &format!("/invoke/f{cycle}")));
            assert_eq!(resp.status, 200, "cycle {cycle}: {}", resp.brief());
        }
    }
    // Removed functions drain; then their records are taken by the next ones added.
    wait_until(WAIT, "the function records to stay few", || {
        let (_, out, _) = ns.cli(&["stats"]);
        let stats: Value = serde_json::from_str(&out).unwrap_or_default();
        stats["functionRecords"].as_u64().is_some_and(|n| n <= 4)
    });
    assert_eq!(ns.send(&Req::new("POST", "/invoke/f59")).status, 200);
}
