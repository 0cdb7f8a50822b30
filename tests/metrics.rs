//! `noslate metrics`: the running runtime's metrics in Prometheus' text format, on the admin
//! socket only, after real invocations through a Node.js worker.

mod common;

use common::{Noslate, Req, profile};
use serde_json::json;

/// A validator of Prometheus' text exposition format (0.0.4), checking what `promtool check
/// metrics` checks, since promtool is not packaged here.
mod exposition {
    use std::collections::HashSet;

    fn is_metric_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    fn is_label_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !s.starts_with("__")
    }

    fn is_value(s: &str) -> bool {
        matches!(s, "+Inf" | "-Inf" | "NaN") || s.parse::<f64>().is_ok()
    }

    /// `{a="x",b="y"}` into pairs; `None` when malformed (bad names, quotes or escapes).
    fn labels(mut s: &str) -> Option<Vec<(String, String)>> {
        let mut out = Vec::new();
        s = s.strip_prefix('{')?.strip_suffix('}')?;
        while !s.is_empty() {
            let (name, rest) = s.split_once("=\"")?;
            if !is_label_name(name) {
                return None;
            }
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        _ => return None,
                    },
                    '"' => break i,
                    '\n' => return None,
                    c => value.push(c),
                }
            };
            out.push((name.to_owned(), value));
            s = &rest[end + 1..];
            s = match s.strip_prefix(',') {
                Some(more) if !more.is_empty() => more,
                Some(_) => "",
                None if s.is_empty() => s,
                None => return None,
            };
        }
        Some(out)
    }

    /// What a histogram series showed: its last bucket, its +Inf bucket, its count, and
    /// whether it had a sum.
    #[derive(Default)]
    struct HistogramSeen {
        last: f64,
        inf: Option<f64>,
        count: Option<f64>,
        sum: bool,
    }

    /// Every problem found: syntax, names, TYPE and HELP placement, families split apart,
    /// duplicate series, counters not named `_total`, histograms whose buckets are not
    /// cumulative or disagree with `_count`, or that lack `_sum`.
    pub fn problems(text: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if !text.ends_with('\n') {
            problems.push("the text does not end with a newline".to_owned());
        }
        let mut types: Vec<(String, String)> = Vec::new();
        let mut helped = HashSet::new();
        let mut finished_families: HashSet<String> = HashSet::new();
        let mut current: Option<String> = None;
        let mut series = HashSet::new();
        // Histogram state per (family, labels without le): last bucket, +Inf, count, sum.
        let mut buckets: std::collections::HashMap<(String, String), HistogramSeen> =
            Default::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let (kind, name, arg) = (parts.next(), parts.next(), parts.next());
                let Some(name) = name.filter(|n| is_metric_name(n)) else {
                    problems.push(format!("bad comment: {line}"));
                    continue;
                };
                match kind {
                    Some("TYPE") => {
                        let kind = arg.unwrap_or_default();
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind)
                        {
                            problems.push(format!("unknown type: {line}"));
                        }
                        if types.iter().any(|(n, _)| n == name) {
                            problems.push(format!("TYPE twice for {name}"));
                        }
                        if kind == "counter" && !name.ends_with("_total") {
                            problems.push(format!("counter {name} is not named _total"));
                        }
                        types.push((name.to_owned(), kind.to_owned()));
                    }
                    Some("HELP") => {
                        if !helped.insert(name.to_owned()) {
                            problems.push(format!("HELP twice for {name}"));
                        }
                        if arg.is_none_or(str::is_empty) {
                            problems.push(format!("empty HELP for {name}"));
                        }
                    }
                    _ => {}
                }
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                problems.push(format!("stray line: {line:?}"));
                continue;
            }
            let (series_text, value) = match line.rsplit_once(' ') {
                Some(split) => split,
                None => {
                    problems.push(format!("no value: {line}"));
                    continue;
                }
            };
            if !is_value(value) {
                problems.push(format!("bad value: {line}"));
            }
            let (name, label_text) = match series_text.find('{') {
                Some(i) => (&series_text[..i], &series_text[i..]),
                None => (series_text, ""),
            };
            if !is_metric_name(name) {
                problems.push(format!("bad metric name: {line}"));
                continue;
            }
            let pairs = if label_text.is_empty() {
                Some(Vec::new())
            } else {
                labels(label_text)
            };
            let Some(pairs) = pairs else {
                problems.push(format!("bad labels: {line}"));
                continue;
            };
            if !series.insert(series_text.to_owned()) {
                problems.push(format!("duplicate series: {series_text}"));
            }
            let histogram_part = ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                types
                    .iter()
                    .any(|(n, k)| n == base && k == "histogram")
                    .then(|| (base.to_owned(), *suffix))
            });
            let family = histogram_part
                .as_ref()
                .map_or(name.to_owned(), |(base, _)| base.clone());
            match types.iter().find(|(n, _)| *n == family) {
                None => problems.push(format!("sample before its TYPE: {line}")),
                Some((_, kind)) if kind == "histogram" && histogram_part.is_none() => {
                    problems.push(format!("histogram sample without a suffix: {line}"))
                }
                _ => {}
            }
            if current.as_deref() != Some(family.as_str()) {
                if let Some(previous) = current.take() {
                    finished_families.insert(previous);
                }
                if finished_families.contains(&family) {
                    problems.push(format!("family {family} is split apart"));
                }
                current = Some(family.clone());
            }
            if let Some((base, suffix)) = histogram_part {
                let number: f64 = value.parse().unwrap_or(f64::NAN);
                let rest: Vec<String> = pairs
                    .iter()
                    .filter(|(k, _)| k != "le")
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let entry = buckets.entry((base.clone(), rest.join(","))).or_default();
                match suffix {
                    "_bucket" => {
                        let Some((_, le)) = pairs.iter().find(|(k, _)| k == "le") else {
                            problems.push(format!("bucket without le: {line}"));
                            continue;
                        };
                        if number < entry.last {
                            problems.push(format!("buckets not cumulative: {line}"));
                        }
                        entry.last = number;
                        if le == "+Inf" {
                            entry.inf = Some(number);
                        }
                    }
                    "_count" => entry.count = Some(number),
                    _ => entry.sum = true,
                }
            }
        }
        for ((family, labels), seen) in buckets {
            let HistogramSeen {
                inf, count, sum, ..
            } = seen;
            if inf.is_none() || inf != count {
                problems.push(format!(
                    "histogram {family}{{{labels}}}: +Inf bucket {inf:?} vs count {count:?}"
                ));
            }
            if !sum {
                problems.push(format!("histogram {family}{{{labels}}} has no _sum"));
            }
        }
        problems
    }

    #[test]
    fn the_validator_finds_what_promtool_would() {
        let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\"} 3\n\
                    # HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n\
                    h_sum 0.5\nh_count 2\n";
        assert_eq!(problems(good), Vec::<String>::new());
        for bad in [
            "# TYPE a counter\na 1\n",
            "# TYPE a_total counter\na_total 1\n# TYPE b gauge\nb 1\na_total{x=\"1\"} 2\n",
            "# TYPE a_total counter\na_total{x=1} 1\n",
            "# TYPE a_total counter\na_total one\n",
            "# TYPE a_total counter\na_total 1\na_total 2\n",
            "b 1\n",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n",
            "# TYPE g gauge\ng 1",
        ] {
            assert!(!problems(bad).is_empty(), "should be refused: {bad:?}");
        }
    }
}

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
    // What promtool's `check metrics` checks, with the validator below.
    let problems = exposition::problems(&text);
    assert!(problems.is_empty(), "{problems:#?}\n{text}");
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

/// Starts the runtime with system `config`, which it must refuse; returns its stderr.
#[track_caller]
fn refused_start(config: serde_json::Value) -> String {
    let exited = Noslate::builder()
        .functions(&json!([profile("echo", "echo")]))
        .config(&config)
        .run_to_exit();
    assert!(!exited.status.success(), "exit status {:?}", exited.status);
    exited.stderr
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
    let stderr = refused_start(json!({ "metrics": { "address": addr } }));
    assert!(
        stderr.contains(&addr) && stderr.contains("metrics.address"),
        "stderr:\n{stderr}"
    );
}

#[test]
fn a_malformed_metrics_address_is_a_config_error_naming_its_path() {
    let stderr = refused_start(json!({ "metrics": { "address": "localhost:http" } }));
    assert!(stderr.contains("metrics.address"), "stderr:\n{stderr}");
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
    let stderr = refused_start(json!({"metrics": {"enabled": "no"}}));
    assert!(stderr.contains("metrics.enabled"), "stderr:\n{stderr}");
}

#[test]
fn a_real_http_client_scrapes_while_other_scrapers_stall_half_close_or_vanish() {
    use std::io::{Read, Write};
    let port = free_port();
    let ns = Noslate::builder()
        .functions(&json!([profile("echo", "echo")]))
        .config(&json!({ "metrics": { "address": format!("127.0.0.1:{port}") } }))
        .start();
    let request = b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n";
    // Half a request, then nothing.
    let mut stalled = common::raw_connect(port, common::WAIT);
    stalled.write_all(&request[..9]).expect("write");
    // A whole request, then gone without reading.
    drop({
        let mut gone = common::raw_connect(port, common::WAIT);
        gone.write_all(request).expect("write");
        gone
    });
    // A whole request, byte by byte, then a half-close: the answer still comes.
    let mut half = common::raw_connect(port, common::WAIT);
    for byte in request {
        half.write_all(&[*byte]).expect("write");
    }
    half.shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    let mut answer = Vec::new();
    let _ = half.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("# TYPE noslate_workers gauge"), "{answer}");

    // Node's own HTTP client, as a scraper would be.
    let script = "const http = require('http');\
        http.get({host: '127.0.0.1', port: +process.argv[1], path: '/metrics'}, (r) => {\
          let b = ''; r.setEncoding('utf8'); r.on('data', (c) => b += c);\
          r.on('end', () => process.stdout.write(r.statusCode + '\\n' + r.headers['content-type'] + '\\n' + b));\
        }).on('error', (e) => { console.error(e.message); process.exit(1); });";
    let out = std::process::Command::new("node")
        .args(["-e", script, &port.to_string()])
        .output()
        .expect("run node");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = text.splitn(3, '\n');
    assert_eq!(lines.next(), Some("200"), "{text}");
    assert_eq!(
        lines.next(),
        Some("text/plain; version=0.0.4; charset=utf-8"),
        "{text}"
    );
    let problems = exposition::problems(lines.next().unwrap_or_default());
    assert!(problems.is_empty(), "{problems:#?}");

    // The FC port was never held up, and the stalled scraper is still waiting, not answered.
    assert_eq!(ns.invoke(b"x", &[]).status, 200);
    stalled
        .set_read_timeout(Some(std::time::Duration::from_millis(100)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    assert!(
        matches!(stalled.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
            || e.kind() == std::io::ErrorKind::TimedOut),
        "a half request gets no answer yet"
    );
}
