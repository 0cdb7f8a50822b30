//! `noslate metrics`: the running runtime's metrics in Prometheus' text format, on the admin
//! socket only, after real invocations through a Node.js worker.

mod common;

use common::{Noslate, Req, profile};
use serde_json::json;

/// The value of the sample `series` (name and labels, exactly as written) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn invocations_are_counted_by_outcome_and_timed() {
    let ns = Noslate::start(&json!([profile("faulty", "faulty")]));
    for _ in 0..3 {
        assert_eq!(ns.invoke(b"x", &[]).status, 200);
    }
    let thrown = ns.invoke(b"x", &[("x-faulty-mode", "throw")]);
    assert_eq!(thrown.status, 404);

    let (ok, text, err) = ns.cli(&["metrics"]);
    assert!(ok, "metrics failed: {err}");
    let f = "function=\"faulty\"";
    let ok_series =
        format!("noslate_invocations_total{{{f},status_class=\"2xx\",error_type=\"\"}}");
    assert_eq!(sample(&text, &ok_series), Some(3.0), "{text}");
    // The function's own error type is not a label: it is the function's, and unbounded.
    let thrown_series = format!(
        "noslate_invocations_total{{{f},status_class=\"4xx\",error_type=\"FunctionError\"}}"
    );
    assert_eq!(sample(&text, &thrown_series), Some(1.0), "{text}");
    for histogram in [
        "noslate_invocation_queue_wait_seconds",
        "noslate_invocation_time_to_head_seconds",
        "noslate_invocation_duration_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {histogram} histogram\n")),
            "{text}"
        );
        let count = sample(&text, &format!("{histogram}_count{{{f}}}"));
        let inf = sample(&text, &format!("{histogram}_bucket{{{f},le=\"+Inf\"}}"));
        assert_eq!(count, inf, "{histogram}: +Inf equals the count");
    }
    assert_eq!(
        sample(
            &text,
            &format!("noslate_invocation_duration_seconds_count{{{f}}}")
        ),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!("noslate_request_bytes_total{{{f}}}")),
        Some(4.0),
        "one body byte per invocation: {text}"
    );
    assert_eq!(
        sample(&text, &format!("noslate_inflight_requests{{{f}}}")),
        Some(0.0)
    );
    assert_eq!(sample(&text, "noslate_circuit_breaker_open"), Some(0.0));
    // The one worker started cold and became ready once.
    assert_eq!(
        sample(
            &text,
            &format!("noslate_worker_starts_total{{{f},kind=\"cold\"}}")
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!("noslate_worker_start_to_ready_seconds_count{{{f}}}")
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!("noslate_workers{{{f},state=\"ready\",kind=\"cold\"}}")
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(&text, "noslate_open_fds").unwrap_or(0.0) > 3.0,
        "{text}"
    );
    assert!(
        sample(&text, "noslate_loop_iterations_total").unwrap_or(0.0) > 0.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "noslate_connections_refused_total"),
        Some(0.0)
    );
    let rss = sample(&text, "noslate_resident_memory_bytes").unwrap_or(0.0);
    assert!(rss > 1e6, "the runtime's own RSS: {text}");
    // Every family is declared once, and every sample belongs to a declared family.
    let mut declared = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap_or_default();
            assert!(
                !declared.contains(&name.to_owned()),
                "{name} declared twice"
            );
            declared.push(name.to_owned());
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let family = name
                .strip_suffix("_bucket")
                .or_else(|| name.strip_suffix("_sum"))
                .or_else(|| name.strip_suffix("_count"))
                .filter(|base| declared.iter().any(|d| d == base))
                .unwrap_or(name);
            assert!(declared.iter().any(|d| d == family), "undeclared: {line}");
        }
    }
}

#[test]
fn metrics_are_served_on_the_admin_socket_only_in_the_text_format() {
    let ns = Noslate::start(&json!([profile("echo", "echo")]));
    // On the FC port, every path may be a function's: it is an invocation, not the metrics.
    let fc = ns.send(&Req::new("GET", "/v1/metrics"));
    assert!(
        !String::from_utf8_lossy(&fc.body).contains("# TYPE"),
        "{fc:?}"
    );
    let socket = ns.dir().join("work").join("noslated.sock");
    let answer = common::admin_get(&socket, "/v1/metrics");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{answer}"
    );
    let put = common::admin_request(&socket, "PUT", "/v1/metrics");
    assert!(put.starts_with("HTTP/1.1 405"), "{put}");
}

/// A port nobody listens on (bound then released; the runtime binds it right after).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// One request on TCP `port`, with `Connection: close`; the whole raw answer.
fn tcp_request(port: u16, method: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(common::WAIT))
        .expect("timeout");
    let request = format!("{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("write");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn a_metrics_address_serves_get_metrics_over_tcp_and_nothing_else() {
    let port = free_port();
    // A port alone binds 127.0.0.1.
    let ns = Noslate::builder()
        .functions(&json!([profile("echo", "echo")]))
        .config(&json!({ "metrics": { "address": port.to_string() } }))
        .start();
    assert_eq!(ns.invoke(b"hi", &[]).status, 200);
    let answer = tcp_request(port, "GET", "/metrics");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{answer}"
    );
    let series =
        "noslate_invocations_total{function=\"echo\",status_class=\"2xx\",error_type=\"\"}";
    assert_eq!(sample(&answer, series), Some(1.0), "{answer}");
    // No invocation, hook or admin route is reachable there.
    for path in ["/invoke", "/initialize", "/v1/workers", "/"] {
        let other = tcp_request(port, "GET", path);
        assert!(other.starts_with("HTTP/1.1 404"), "{path}: {other}");
        assert!(
            other.contains("\"errorType\":\"NotFound\""),
            "{path}: {other}"
        );
    }
    let post = tcp_request(port, "POST", "/metrics");
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    // The invocation count did not move: nothing above reached the function.
    let again = tcp_request(port, "GET", "/metrics");
    assert_eq!(sample(&again, series), Some(1.0), "{again}");
}

#[test]
fn a_metrics_address_that_cannot_be_bound_stops_the_start_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let exited = Noslate::builder()
        .functions(&json!([profile("echo", "echo")]))
        .config(&json!({ "metrics": { "address": addr } }))
        .run_to_exit();
    assert!(!exited.status.success(), "exit status {:?}", exited.status);
    assert!(
        exited.stderr.contains(&addr) && exited.stderr.contains("metrics.address"),
        "stderr:\n{}",
        exited.stderr
    );
}

#[test]
fn a_malformed_metrics_address_is_a_config_error_naming_its_path() {
    let exited = Noslate::builder()
        .functions(&json!([profile("echo", "echo")]))
        .config(&json!({ "metrics": { "address": "localhost:http" } }))
        .run_to_exit();
    assert!(!exited.status.success(), "exit status {:?}", exited.status);
    assert!(
        exited.stderr.contains("metrics.address"),
        "stderr:\n{}",
        exited.stderr
    );
}

#[test]
fn top_once_prints_one_frame_of_the_last_second() {
    let ns = Noslate::start(&json!([profile("echo", "echo")]));
    // Invocations keep coming while `top` takes its two scrapes one second apart.
    let port = ns.port();
    let load = std::thread::spawn(move || {
        let until = std::time::Instant::now() + std::time::Duration::from_millis(1500);
        let mut n = 0;
        while std::time::Instant::now() < until {
            let mut c = common::Client::connect(port);
            if c.request(&Req::new("POST", "/invoke").body(b"x")).status == 200 {
                n += 1;
            }
        }
        n
    });
    let (ok, frame, err) = ns.cli(&["top", "--once"]);
    let done = load.join().expect("load");
    assert!(ok, "top failed: {err}");
    assert!(done > 0);
    let lines: Vec<&str> = frame.lines().collect();
    assert!(lines[0].starts_with("noslate: "), "{frame}");
    assert!(lines[0].contains("breaker closed"), "{frame}");
    assert!(lines[1].starts_with("FUNCTION"), "{frame}");
    let row = lines
        .iter()
        .find(|l| l.starts_with("echo "))
        .unwrap_or_else(|| panic!("no row for echo:\n{frame}"));
    let rps: f64 = row
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(rps > 0.0, "invocations in the last second: {frame}");
    assert!(row.contains("ready 1"), "{frame}");
    // A pipe gets plain text: no terminal control sequences.
    assert!(!frame.contains('\u{1b}'), "{frame:?}");
}

#[test]
fn with_metrics_enabled_false_invocations_are_not_counted_and_the_gauges_stay() {
    let ns = Noslate::builder()
        .functions(&json!([profile("echo", "echo")]))
        .config(&json!({"metrics": {"enabled": false}}))
        .start();
    assert_eq!(ns.invoke(b"x", &[]).status, 200);
    let (ok, text, err) = ns.cli(&["metrics"]);
    assert!(ok, "metrics failed: {err}");
    for absent in [
        "noslate_invocations_total",
        "noslate_invocation_duration_seconds",
        "noslate_request_bytes_total",
    ] {
        assert!(!text.contains(absent), "{absent} is left out: {text}");
    }
    assert!(
        text.contains("noslate_workers{function=\"echo\",state=\"ready\",kind=\"cold\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("noslate_inflight_requests{function=\"echo\"} 0"),
        "{text}"
    );
    let (ok, frame, err) = ns.cli(&["top", "--once"]);
    assert!(ok, "top failed: {err}");
    assert!(frame.lines().any(|l| l.starts_with("echo ")), "{frame}");
}

#[test]
fn metrics_enabled_must_be_a_boolean() {
    let exited = Noslate::builder()
        .functions(&json!([profile("echo", "echo")]))
        .config(&json!({"metrics": {"enabled": "no"}}))
        .run_to_exit();
    assert!(!exited.status.success());
    assert!(
        exited.stderr.contains("metrics.enabled"),
        "{}",
        exited.stderr
    );
}
