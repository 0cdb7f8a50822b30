//! The listen port comes from `--port`, else `FC_CUSTOM_LISTEN_PORT`, `FC_SERVER_PORT`,
//! `SERVER_PORT`, then Knative's `PORT`, else 9000: the same image runs on FC and on Knative.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use common::{Req, TempDir, WAIT, binary, profile};
use serde_json::json;

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Starts `noslate serve` without `--port`, with `env` as the only port variables, and returns
/// the port it says it listens on.
fn listening_port(env: &[(&str, u16)]) -> u16 {
    let dir = TempDir::new();
    let functions = dir.path().join("functions.json");
    std::fs::write(&functions, json!([profile("echo", "echo")]).to_string()).expect("write");
    let mut cmd = Command::new(binary());
    cmd.args(["serve", "--functions"])
        .arg(&functions)
        .env("NOSLATE_WORKDIR", dir.path().join("work"))
        .env("NOSLATE_LOGDIR", dir.path().join("logs"));
    for name in [
        "FC_CUSTOM_LISTEN_PORT",
        "FC_SERVER_PORT",
        "SERVER_PORT",
        "PORT",
    ] {
        cmd.env_remove(name);
    }
    for (name, port) in env {
        cmd.env(name, port.to_string());
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn noslate");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.find("listening on 0.0.0.0:") {
                let digits: String = line[at + "listening on 0.0.0.0:".len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                let _ = tx.send(digits.parse::<u16>().ok());
            }
        }
    });
    let port = rx.recv_timeout(WAIT).ok().flatten();
    let health = port.map(|p| common::Client::connect(p).request(&Req::new("GET", "/healthz")));
    // SIGTERM: the runtime stops its workers before it exits, leaving no process behind.
    common::signal(i32::try_from(child.id()).expect("pid"), libc::SIGTERM);
    let _ = child.wait();
    let health = health.expect("noslate said where it listens");
    assert_eq!(health.status, 200, "{}", health.brief());
    port.unwrap_or_default()
}

#[test]
fn knatives_port_is_used_when_no_other_port_is_set() {
    let port = free_port();
    assert_eq!(listening_port(&[("PORT", port)]), port);
}

#[test]
fn server_port_comes_before_knatives_port() {
    let (server_port, knative_port) = (free_port(), free_port());
    assert_eq!(
        listening_port(&[("SERVER_PORT", server_port), ("PORT", knative_port)]),
        server_port
    );
}
