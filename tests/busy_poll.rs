//! The loop's spin before it sleeps (`dataPlane.busyPollMicros`): requests that arrive whole,
//! in pieces or after a stall are all answered while it spins, and a runtime whose clients went
//! quiet falls asleep: with a keep-alive connection still open, it uses no CPU.

mod common;

use std::thread;
use std::time::Duration;

use common::{Client, Noslate, Req, assert_invoke_ok, proc_cpu_ticks, profile};
use serde_json::json;

/// The longest window there is, so that a spin that never ended, or one that ran between
/// requests as if they were still coming, would show as whole clock ticks of CPU.
fn spinning_runtime() -> Noslate {
    common::require_node();
    Noslate::builder()
        .functions(&json!([profile("echo", "echo")]))
        .config(&json!({"dataPlane": {"busyPollMicros": 10_000, "busyPollMaxRequests": 4}}))
        .start()
}

fn invoke(body: &str) -> Req {
    Req::new("POST", "/invoke").body(body.as_bytes())
}

#[test]
fn requests_whole_split_and_stalled_are_answered_while_the_loop_spins() {
    let noslate = spinning_runtime();
    let mut client = Client::connect(noslate.port());
    for i in 0..50 {
        let resp = client.request(&invoke(&format!("whole {i}")));
        assert_invoke_ok(&resp);
        assert!(
            resp.text().contains(&format!("whole {i}")),
            "{}",
            resp.brief()
        );
    }
    // Byte by byte, with pauses inside the spin window and past it.
    let bytes = invoke("split").to_bytes();
    for (i, byte) in bytes.iter().enumerate() {
        client.send(std::slice::from_ref(byte));
        if i % 7 == 0 {
            thread::sleep(Duration::from_millis(if i % 14 == 0 { 15 } else { 1 }));
        }
    }
    let resp = client.read_response();
    assert_invoke_ok(&resp);
    assert!(resp.text().contains("split"), "{}", resp.brief());
    // Then the same connection stays quiet, and ends with a half-close after a request.
    thread::sleep(Duration::from_millis(30));
    let resp = client.request(&invoke("after a stall"));
    assert_invoke_ok(&resp);
    client.send(&invoke("last").to_bytes());
    client.shutdown_write();
    let resp = client.read_response();
    assert_invoke_ok(&resp);
    assert!(resp.text().contains("last"), "{}", resp.brief());
}

#[test]
fn a_runtime_whose_clients_went_quiet_uses_no_cpu() {
    let noslate = spinning_runtime();
    // Two keep-alive connections stay open, and requests alternate on them: the loop spins
    // between them, and would go on spinning if it took an open connection for a coming
    // request.
    let mut first = Client::connect(noslate.port());
    let mut second = Client::connect(noslate.port());
    for i in 0..20 {
        assert_invoke_ok(&first.request(&invoke(&format!("a {i}"))));
        assert_invoke_ok(&second.request(&invoke(&format!("b {i}"))));
    }
    // Let the last window run out, then measure one second of quiet.
    thread::sleep(Duration::from_millis(100));
    let before = proc_cpu_ticks(noslate.pid()).expect("the runtime's CPU time");
    thread::sleep(Duration::from_secs(1));
    let after = proc_cpu_ticks(noslate.pid()).expect("the runtime's CPU time");
    // A clock tick is 10 ms: a loop spinning through the second would show about 100.
    assert!(
        after - before <= 5,
        "the idle runtime used {} ticks of CPU in one second",
        after - before
    );
    // And it still answers at once on both connections.
    assert_invoke_ok(&first.request(&invoke("again")));
    assert_invoke_ok(&second.request(&invoke("again")));
}

#[test]
fn after_many_clients_were_served_the_loop_sleeps_at_once() {
    common::require_node();
    // The longest window and a limit of two: six clients that each send one request and wait
    // for its answer, all at once, then go quiet for longer than the window, as a gateway's
    // pooled connections do. A spin after each burst's last answer would cost a whole window,
    // about half of every pause.
    let noslate = Noslate::builder()
        .functions(&json!([profile("echo", "echo")]))
        .config(&json!({"dataPlane": {"busyPollMicros": 10_000, "busyPollMaxRequests": 2}}))
        .start();
    let mut clients: Vec<Client> = (0..6).map(|_| Client::connect(noslate.port())).collect();
    let burst = |clients: &mut [Client], round: usize| {
        for (i, client) in clients.iter_mut().enumerate() {
            client.send(&invoke(&format!("burst {round} client {i}")).to_bytes());
        }
        for client in clients.iter_mut() {
            assert_invoke_ok(&client.read_response());
        }
    };
    burst(&mut clients, 0);
    let before = proc_cpu_ticks(noslate.pid()).expect("the runtime's CPU time");
    let start = std::time::Instant::now();
    let mut bursts = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        bursts += 1;
        burst(&mut clients, bursts as usize);
        thread::sleep(Duration::from_millis(20));
    }
    let after = proc_cpu_ticks(noslate.pid()).expect("the runtime's CPU time");
    assert!(bursts > 10, "{bursts} bursts answered");
    // A 10 ms spin after every burst would be about `bursts` ticks (a tick is 10 ms).
    assert!(
        after - before <= bursts / 3,
        "the runtime used {} ticks of CPU for {bursts} bursts of six clients",
        after - before
    );
    // And a client alone is answered as before.
    for i in 0..20 {
        assert_invoke_ok(&clients[0].request(&invoke(&format!("alone {i}"))));
    }
}

#[test]
fn at_its_cpu_pressure_limit_the_loop_sleeps_between_requests() {
    if !std::path::Path::new("/proc/pressure/cpu").exists() {
        eprintln!("skipped: this kernel reports no CPU pressure (/proc/pressure/cpu)");
        return;
    }
    common::require_node();
    // The longest window, and a limit any pressure reaches: once the loop has sampled the
    // pressure twice, no wait spins.
    let noslate = Noslate::builder()
        .functions(&json!([profile("echo", "echo")]))
        .config(&json!({"dataPlane": {
            "busyPollMicros": 10_000,
            "busyPollMaxRequests": 4,
            "busyPollMaxCpuPressure": 0
        }}))
        .env("RUST_LOG", "debug")
        .start();
    noslate.wait_log_count(
        &[
            "no busy polling for now",
            "dataPlane.busyPollMaxCpuPressure 0 %",
        ],
        1,
    );
    // A request every 5 ms for a second: a 10 ms spin after each answer would keep the loop
    // busy through all of it, about 100 clock ticks.
    let mut client = Client::connect(noslate.port());
    let before = proc_cpu_ticks(noslate.pid()).expect("the runtime's CPU time");
    let start = std::time::Instant::now();
    let mut answered = 0;
    while start.elapsed() < Duration::from_secs(1) {
        assert_invoke_ok(&client.request(&invoke(&format!("paced {answered}"))));
        answered += 1;
        thread::sleep(Duration::from_millis(5));
    }
    let after = proc_cpu_ticks(noslate.pid()).expect("the runtime's CPU time");
    assert!(answered > 20, "{answered} requests answered");
    assert!(
        after - before <= 30,
        "the runtime used {} ticks of CPU for {answered} paced requests",
        after - before
    );
}

/// Starts a runtime with `data_plane` and expects it to refuse, naming the problem.
#[track_caller]
fn assert_refused_at_start(data_plane: serde_json::Value, problem: &str) {
    let exited = Noslate::builder()
        .functions(&json!([profile("echo", "echo")]))
        .config(&json!({ "dataPlane": data_plane }))
        .run_to_exit();
    assert!(!exited.status.success(), "{exited:?}");
    assert!(exited.stderr.contains(problem), "{}", exited.stderr);
}

#[test]
fn a_cpu_pressure_limit_past_100_percent_is_refused_at_start() {
    assert_refused_at_start(
        json!({"busyPollMaxCpuPressure": 101}),
        "dataPlane.busyPollMaxCpuPressure: must be at most 100, got 101",
    );
}

#[test]
fn a_window_past_its_bound_is_refused_at_start() {
    assert_refused_at_start(
        json!({"busyPollMicros": 10_001}),
        "dataPlane.busyPollMicros: must be at most 10000, got 10001",
    );
}
