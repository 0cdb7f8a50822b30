//! Workers' output relayed to the runtime's console (`logger.workerOutput: console`): lines of
//! different workers never mix, however long; a console that stalls never stalls the runtime
//! and never grows its memory; what waited arrives whole once the console drains.

mod common;

use std::io::{BufRead, BufReader};
use std::thread;

use common::{Noslate, Req, WAIT, assert_invoke_ok, proc_rss_kib, profile, wait_until};
use serde_json::{Value, json};

fn console_config() -> Value {
    json!({"logger": {"workerOutput": "console"}})
}

fn flood(name: &str) -> Value {
    let mut p = profile(name, "flood");
    p["handlerStyle"] = json!("fc-event");
    p
}

/// Checks one line `<letter × (size - 11)><10-digit number>`: returns its letter and number.
fn parse_flood_line(line: &str, size: usize) -> Option<(char, u64)> {
    if line.len() != size - 1 {
        return None;
    }
    let (body, number) = line.split_at(size - 11);
    let letter = body.chars().next()?;
    body.chars()
        .all(|c| c == letter)
        .then_some(())
        .and_then(|()| number.parse().ok())
        .map(|n| (letter, n))
}

#[test]
fn long_lines_of_two_workers_never_mix() {
    const LINE: usize = 48 * 1024;
    let mut p = flood("flood");
    p["worker"]["reservationCount"] = json!(2);
    p["worker"]["replicaCountLimit"] = json!(2);
    p["worker"]["maxActivateRequests"] = json!(1);
    let mut ns = Noslate::builder()
        .functions(&json!([p]))
        .config(&console_config())
        .hold_stdout()
        .start();
    let stdout = ns.take_stdout().expect("held stdout");
    let reader = thread::spawn(move || {
        let mut letters = std::collections::HashMap::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.len() < 1000 {
                continue; // FC's Start/End lines and the like
            }
            let Some((letter, n)) = parse_flood_line(&line, LINE) else {
                return Err(format!("a mixed or broken line: {}…", &line[..80]));
            };
            let next = letters.entry(letter).or_insert(0u64);
            if n != *next {
                return Err(format!("{letter}: line {n} came where {next} was due"));
            }
            *next += 1;
            if letters.values().sum::<u64>() == 2 * (8 * 1024 * 1024 / LINE as u64) {
                return Ok(letters);
            }
        }
        Err("stdout ended early".to_owned())
    });
    let port = ns.port();
    let callers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|letter| {
            thread::spawn(move || {
                let mut client = common::Client::connect(port);
                client.request(
                    &Req::new("POST", "/invoke").body(format!("{letter}:8:{LINE}").as_bytes()),
                )
            })
        })
        .collect();
    for caller in callers {
        assert_invoke_ok(&caller.join().expect("caller"));
    }
    let letters = reader
        .join()
        .expect("reader")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(letters.len(), 2, "{letters:?}");
}

#[test]
fn a_worker_writing_100_mb_to_a_stalled_console_stalls_only_itself() {
    const LINE: usize = 1024;
    let mut ns = Noslate::builder()
        .functions(&json!([flood("flood"), profile("echo", "echo")]))
        .config(&json!({"logger": {"workerOutput": "console", "consoleBufferSize": 1048576}}))
        .hold_stdout()
        .start();
    let port = ns.port();
    let flooding = thread::spawn(move || {
        let mut client = common::Client::connect(port);
        client.request(
            &Req::new("POST", "/invoke")
                .header("x-noslate-function", "flood")
                .body(format!("f:100:{LINE}").as_bytes()),
        )
    });
    // Nobody reads the console: the flood fills the runtime's buffer, then its own pipe; the
    // rest waits in the worker (Node.js queues what a pipe does not take; Python blocks).
    let waiting = || {
        let (ok, stats, _) = ns.cli(&["stats"]);
        if !ok {
            return 0;
        }
        serde_json::from_str::<Value>(&stats)
            .map_or(0, |s| s["console"]["waitingBytes"].as_u64().unwrap_or(0))
    };
    wait_until(WAIT, "the console holds its buffer", || {
        waiting() >= 1024 * 1024
    });
    let rss_before = proc_rss_kib(ns.pid()).expect("rss");
    // The runtime still serves everything else.
    for i in 0..50 {
        let resp = ns.send(
            &Req::new("POST", "/invoke")
                .header("x-noslate-function", "echo")
                .body(format!("echo {i}").as_bytes()),
        );
        assert_eq!(resp.status, 200, "{}", resp.brief());
        let health = ns.send(&Req::new("GET", "/healthz"));
        assert_eq!(health.status, 200, "{}", health.brief());
    }
    let held = waiting();
    assert!(
        held <= 1024 * 1024 + 128 * 1024,
        "the console holds {held} bytes, beyond logger.consoleBufferSize"
    );
    let rss_stalled = proc_rss_kib(ns.pid()).expect("rss");
    // The console drains: every line arrives whole and in order, and the flood completes.
    let stdout = ns.take_stdout().expect("held stdout");
    let reader = thread::spawn(move || {
        let mut next = 0u64;
        let mut bytes = 0u64;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !line.starts_with('f') {
                continue;
            }
            match parse_flood_line(&line, LINE) {
                Some(('f', n)) if n == next => next += 1,
                _ => return Err(format!("line {next}: {}", &line[..line.len().min(80)])),
            }
            bytes += LINE as u64;
            if next == 100 * 1024 * 1024 / LINE as u64 {
                return Ok(bytes);
            }
        }
        Err(format!("stdout ended after {next} lines"))
    });
    let answer = assert_invoke_ok(&flooding.join().expect("flood caller"));
    let bytes = reader
        .join()
        .expect("reader")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bytes, 100 * 1024 * 1024);
    assert_eq!(answer["lines"], 100 * 1024 * 1024 / LINE as u64);
    let rss_after = proc_rss_kib(ns.pid()).expect("rss");
    eprintln!(
        "runtime RSS: {rss_before} KiB stalled start, {rss_stalled} KiB stalled, {rss_after} KiB after"
    );
    // The console buffer is 1 MiB; the runtime never holds the flood.
    assert!(
        rss_stalled < rss_before + 8 * 1024 && rss_after < rss_before + 8 * 1024,
        "RSS grew: {rss_before} → {rss_stalled} → {rss_after} KiB"
    );
}
