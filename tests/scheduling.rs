//! Scheduling with the real binary and Node.js workers: scale-up from zero and idle shrink back
//! to the reservation, disposable workers, round-robin, rate limiting, the system circuit
//! breaker, services in proportion, queue-less functions, the memory pool, and `/ready`.

mod common;

use common::{Client, Noslate, Req, WAIT, assert_error_json, is_alive, profile, wait_until};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};

fn pid_of(resp: &common::Response) -> i64 {
    assert_eq!(resp.status, 200, "{}", resp.brief());
    resp.json()["pid"]
        .as_i64()
        .expect("the fixture answers its pid")
}

/// Sends a request without waiting for its answer.
fn start(ns: &Noslate, req: &Req) -> Client {
    let mut c = ns.client();
    c.send(&req.to_bytes());
    c
}

fn sleep_req(ms: u64) -> Req {
    Req::new("POST", "/invoke")
        .header("x-faulty-mode", "sleep")
        .header("x-faulty-ms", ms.to_string())
}

/// Small workers: Noslate's default pool (1 GiB) holds only two of its default 512 MiB ones.
const SMALL: u64 = 128 << 20;

/// Live worker processes: the runtime's children, less its spare Node.js processes (which
/// belong to no function until a scale-up takes one).
fn live_workers(ns: &Noslate) -> usize {
    let children = ns.children();
    let (ok, stats, err) = ns.cli(&["stats"]);
    assert!(ok, "{err}");
    let stats: Value = serde_json::from_str(&stats).expect("stats is JSON");
    let spares: Vec<i64> = stats["spares"]["processes"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["pid"].as_i64()).collect())
        .unwrap_or_default();
    children
        .into_iter()
        .filter(|&p| is_alive(p) && !spares.contains(&i64::from(p)))
        .count()
}

#[test]
fn a_burst_scales_up_from_zero_and_idle_workers_shrink_back_to_the_reservation() {
    let mut p = profile("burst", "faulty");
    p["resourceLimit"] = json!({ "memory": SMALL });
    p["worker"] = json!({
        "reservationCount": 0, "replicaCountLimit": 3, "maxActivateRequests": 1,
        "idleTimeout": 1000
    });
    let ns = Noslate::start(&json!([p]));
    assert_eq!(live_workers(&ns), 0, "reservation 0 starts nothing");
    let mut clients: Vec<Client> = (0..3).map(|_| start(&ns, &sleep_req(500))).collect();
    let pids: BTreeSet<i64> = clients
        .iter_mut()
        .map(|c| pid_of(&c.read_response()))
        .collect();
    assert_eq!(
        pids.len(),
        3,
        "three concurrent requests, three workers: {pids:?}"
    );
    wait_until(WAIT, "idle workers shrink back to zero", || {
        live_workers(&ns) == 0
    });
    ns.wait_no_zombies();
    // And it scales from zero again.
    assert_eq!(ns.send(&sleep_req(1)).status, 200);
}

#[test]
fn shrink_never_goes_below_the_reservation() {
    let mut p = profile("keep", "faulty");
    p["resourceLimit"] = json!({ "memory": SMALL });
    p["worker"] = json!({
        "reservationCount": 1, "replicaCountLimit": 3, "maxActivateRequests": 1,
        "idleTimeout": 500
    });
    let ns = Noslate::start(&json!([p]));
    let mut clients: Vec<Client> = (0..3).map(|_| start(&ns, &sleep_req(300))).collect();
    for c in &mut clients {
        assert_eq!(c.read_response().status, 200);
    }
    wait_until(WAIT, "the pool shrinks to its reservation", || {
        live_workers(&ns) == 1
    });
    // Several more idle periods later it is still there.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(2500);
    wait_until(WAIT, "two seconds of idleness pass", || {
        std::time::Instant::now() >= deadline
    });
    assert_eq!(live_workers(&ns), 1);
}

#[test]
fn disposable_workers_serve_one_request_each_and_go() {
    let mut p = profile("once", "faulty");
    p["resourceLimit"] = json!({ "memory": SMALL });
    p["worker"] = json!({ "reservationCount": 0, "replicaCountLimit": 3, "disposable": true });
    let ns = Noslate::start(&json!([p]));
    let mut clients: Vec<Client> = (0..3).map(|_| start(&ns, &sleep_req(300))).collect();
    let pids: Vec<i64> = clients
        .iter_mut()
        .map(|c| pid_of(&c.read_response()))
        .collect();
    let distinct: BTreeSet<i64> = pids.iter().copied().collect();
    assert_eq!(distinct.len(), 3, "one worker per request: {pids:?}");
    wait_until(WAIT, "each disposable worker is gone", || {
        pids.iter().all(|&p| !is_alive(i32::try_from(p).unwrap()))
    });
    ns.wait_no_zombies();
}

#[test]
fn round_robin_alternates_between_workers() {
    let mut p = profile("rr", "faulty");
    p["worker"] = json!({
        "reservationCount": 2, "replicaCountLimit": 2, "dispatchMode": "round-robin"
    });
    let ns = Noslate::start(&json!([p]));
    assert_eq!(ns.send(&Req::new("POST", "/initialize")).status, 200);
    let pids: Vec<i64> = (0..6).map(|_| pid_of(&ns.invoke(b"", &[]))).collect();
    assert_ne!(pids[0], pids[1], "{pids:?}");
    for i in 2..pids.len() {
        assert_eq!(pids[i], pids[i - 2], "strict alternation: {pids:?}");
    }
}

#[test]
fn a_rate_limited_function_answers_429_then_recovers_after_refill() {
    let mut p = profile("limited", "faulty");
    p["rateLimit"] = json!({ "maxTokenCount": 2, "tokensPerFill": 2, "fillInterval": 1000 });
    let ns = Noslate::start(&json!([p]));
    let statuses: Vec<u16> = (0..3).map(|_| ns.invoke(b"", &[]).status).collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    let resp = loop {
        let resp = ns.invoke(b"", &[]);
        if resp.status == 429 {
            break resp;
        }
    };
    let body = assert_error_json(&resp, 429, Some("RateLimitExceeded"));
    assert_eq!(
        resp.header("x-fc-status"),
        Some("404"),
        "an event function's failure"
    );
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("rate limited")
    );
    // An HTTP function gets a plain 429.
    let http = ns.send(&Req::new("GET", "/some/page"));
    if http.status == 429 {
        assert_eq!(http.header("x-fc-status"), None);
    }
    wait_until(WAIT, "the bucket refills", || {
        ns.invoke(b"", &[]).status == 200
    });
}

#[test]
fn the_breaker_opens_under_overload_and_closes_afterwards() {
    let mut p = profile("busy", "faulty");
    p["worker"]["maxActivateRequests"] = json!(10);
    let ns = Noslate::builder()
        .functions(&json!([p]))
        .config(&json!({ "systemCircuitBreaker": { "requestCountLimit": 2 } }))
        .start();
    let hang = Req::new("POST", "/invoke")
        .header("x-faulty-mode", "hang")
        .header("x-fc-function-timeout", "60");
    let hanging: Vec<Client> = (0..4).map(|_| start(&ns, &hang)).collect();
    wait_until(WAIT, "the breaker opens", || {
        let resp = ns.invoke(b"", &[("x-fc-function-timeout", "1")]);
        resp.status == 503
    });
    let resp = ns.invoke(b"", &[]);
    let body = assert_error_json(&resp, 503, Some("SystemCircuitBreakerOpen"));
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("requestCountLimit"),
        "{body}"
    );
    let ready = ns.send(&Req::new("GET", "/ready"));
    assert_eq!(ready.status, 503, "{}", ready.brief());
    // Resets, not closes: a FIN after a complete request is a half-close, which is answered.
    hanging.into_iter().for_each(Client::reset);
    wait_until(WAIT, "the breaker closes", || {
        ns.invoke(b"", &[]).status == 200
    });
    assert_eq!(ns.send(&Req::new("GET", "/ready")).status, 200);
}

#[test]
fn a_proportional_service_splits_traffic_in_proportion() {
    let mut a = profile("left", "envdump");
    a["environments"] = json!([{ "key": "WHO", "value": "left" }]);
    let mut b = profile("right", "envdump");
    b["environments"] = json!([{ "key": "WHO", "value": "right" }]);
    let ns = Noslate::start(&json!({
        "functions": [a, b],
        "services": [{
            "name": "split", "type": "proportional-load-balance",
            "selectors": [
                { "selector": { "functionName": "left" }, "proportion": 0.3 },
                { "selector": { "functionName": "right" }, "proportion": 0.7 }
            ]
        }]
    }));
    let mut counts: HashMap<String, u32> = HashMap::new();
    let mut c = ns.client();
    for _ in 0..1000 {
        let resp = c.request(&Req::new("POST", "/invoke/service/split"));
        assert_eq!(resp.status, 200, "{}", resp.brief());
        let who = resp.json()["env"]["WHO"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        *counts.entry(who).or_default() += 1;
    }
    let left = counts.get("left").copied().unwrap_or(0);
    assert!(
        (230..=370).contains(&left),
        "30% of 1000 within 7 points: {counts:?}"
    );
    assert_eq!(counts.values().sum::<u32>(), 1000);
    let resp = ns.send(&Req::new("POST", "/invoke").header("x-noslate-service", "nope"));
    assert_error_json(&resp, 404, Some("ServiceNotFound"));
}

#[test]
fn a_function_without_a_queue_rejects_when_no_worker_is_free() {
    let mut p = profile("noqueue", "faulty");
    p["worker"]["maxActivateRequests"] = json!(1);
    p["worker"]["disableRequestQueue"] = json!(true);
    let ns = Noslate::start(&json!([p]));
    // Until its worker is ready a queue-less function turns requests away too.
    assert_eq!(ns.send(&Req::new("POST", "/initialize")).status, 200);
    assert_eq!(ns.invoke(b"", &[]).status, 200);
    let _busy = start(&ns, &sleep_req(3000));
    wait_until(WAIT, "the worker is busy", || {
        let resp = ns.invoke(b"", &[]);
        resp.status == 503
    });
    let resp = ns.invoke(b"", &[]);
    let body = assert_error_json(&resp, 503, Some("NoAvailableWorker"));
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("disableRequestQueue")
    );
}

#[test]
fn the_memory_pool_blocks_launches_and_says_so() {
    let mut p = profile("big", "faulty");
    p["resourceLimit"] = json!({ "memory": 300 << 20 });
    p["worker"] =
        json!({ "reservationCount": 1, "replicaCountLimit": 3, "maxActivateRequests": 1 });
    let ns = Noslate::builder()
        .functions(&json!([p]))
        .config(&json!({ "virtualMemoryPoolSize": "512mb" }))
        .start();
    assert_eq!(ns.send(&Req::new("POST", "/initialize")).status, 200);
    let _busy = start(&ns, &sleep_req(3000));
    let resp = loop {
        let resp = ns.invoke(b"", &[]);
        if resp.status != 200 {
            break resp;
        }
    };
    let body = assert_error_json(&resp, 503, Some("NoEnoughVirtualMemory"));
    let message = body["errorMessage"].as_str().unwrap();
    assert!(message.contains("No enough virtual memory"), "{message}");
    // The message names the settings that would change it, in MiB.
    for knob in [
        "virtualMemoryPoolSize",
        "resourceLimit.memory",
        "total: 512 MiB",
    ] {
        assert!(message.contains(knob), "{knob} missing: {message}");
    }
    assert_eq!(live_workers(&ns), 1, "no second worker over the pool");
    let (ok, stats, _) = ns.cli(&["stats"]);
    assert!(ok, "{stats}");
    let stats: Value = serde_json::from_str(&stats).expect("stats JSON");
    let refused = stats["functions"]["big"]["rejected"]["noEnoughVirtualMemory"]
        .as_u64()
        .unwrap_or(0);
    assert!(refused >= 1, "noslate stats counts the refusal: {stats}");
}

#[test]
fn ready_follows_the_reservation() {
    let mut p = profile("slow", "slowinit");
    p["initializer"] = json!("index.initializer");
    p["environments"] = json!([{ "key": "SLOW_INIT_MS", "value": "1500" }]);
    let ns = Noslate::start(&json!([p]));
    let early = ns.send(&Req::new("GET", "/ready"));
    let body: Value = early.json();
    assert_eq!(early.status, 503, "{}", early.brief());
    assert!(
        body["errorMessage"].as_str().unwrap().contains("reserved"),
        "{body}"
    );
    wait_until(WAIT, "ready once initialized", || {
        ns.send(&Req::new("GET", "/ready")).status == 200
    });
    // The readiness path is the runtime's even when FC marks the request an HTTP invocation.
    let resp = ns.send(&Req::new("GET", "/ready").header("x-fc-control-path", "/http-invoke"));
    assert_eq!(resp.json()["ready"], true);
}

#[test]
fn initialize_reports_reserved_workers_the_memory_pool_cannot_hold() {
    let mut a = profile("first", "faulty");
    a["resourceLimit"] = json!({ "memory": 400 << 20 });
    let mut b = profile("second", "faulty");
    b["resourceLimit"] = json!({ "memory": 400 << 20 });
    let ns = Noslate::builder()
        .functions(&json!([a, b]))
        .config(&json!({ "virtualMemoryPoolSize": "600mb" }))
        .start();
    let resp = ns.send(&Req::new("POST", "/initialize"));
    let body = assert_error_json(&resp, 404, Some("WorkerStartFailed"));
    let message = body["errorMessage"].as_str().unwrap();
    assert!(message.contains("No enough virtual memory"), "{message}");
    let ready = ns.send(&Req::new("GET", "/ready"));
    assert_eq!(ready.status, 503);
    assert!(
        ready.text().contains("No enough virtual memory"),
        "{}",
        ready.text()
    );
}
