//! Large and chunked bodies in both directions, verified by CRC-32 or against the generator,
//! never by holding two copies of a large body.

mod common;

use std::io::{Read, Write};
use std::thread;

use common::{
    Client, Crc32, Framing, MIB, Noslate, Pattern, PatternCheck, Req, SplitMix, WAIT,
    assert_error_json, assert_invoke_ok, profile, wait_until,
};
use serde_json::{Value, json};

fn bytes_fn() -> Noslate {
    Noslate::start(&json!([profile("bytes", "bytes")]))
}

/// Streams `len` pattern bytes as the Content-Length body of `POST path` (from a writer thread,
/// so an early answer cannot dead-lock the test) and returns (response, CRC of what was sent).
fn post_pattern(c: &mut Client, path: &str, mode: &str, seed: u32, len: usize) -> (Value, u32) {
    let head = Req::new("POST", path)
        .header("x-bytes-mode", mode)
        .header("Content-Length", len.to_string())
        .head_bytes();
    c.send(&head);
    let mut w = c.stream().try_clone().unwrap();
    let writer = thread::spawn(move || Pattern::new(seed).write_to(&mut w, len).unwrap());
    let resp = c.read_response();
    let crc = writer.join().unwrap();
    assert_eq!(resp.status, 200, "body: {}", resp.brief());
    (resp.json(), crc)
}

fn assert_sink(answer: &Value, len: usize, crc: u32) {
    assert_eq!(answer["length"], len, "bytes the function read: {answer}");
    assert_eq!(
        answer["crc32"], crc,
        "CRC-32 of what the function read: {answer}"
    );
}

/// Asks the function for `len` pattern bytes and checks them as they arrive.
fn get_pattern(c: &mut Client, seed: u32, len: usize, with_length: bool) -> Framing {
    let req = Req::new("GET", "/source")
        .header("x-bytes-mode", "source")
        .header("x-bytes-size", len.to_string())
        .header("x-bytes-seed", seed.to_string())
        .header("x-bytes-length", if with_length { "1" } else { "0" });
    c.send(&req.to_bytes());
    let mut check = PatternCheck::new(seed);
    let resp = c.read_response_with(false, &mut |b| check.feed(b));
    assert_eq!(resp.status, 200);
    assert_eq!(
        check.received,
        u64::try_from(len).unwrap(),
        "response body length"
    );
    assert_eq!(
        check.first_mismatch, None,
        "first wrong byte of the response body"
    );
    resp.framing
}

#[test]
fn crc32_helper_gives_the_standard_check_value() {
    // CRC-32/ISO-HDLC of "123456789" is 0xCBF43926 (the catalogue's check value).
    let mut crc = Crc32::new();
    crc.update(b"123456789");
    assert_eq!(crc.finish(), 0xCBF4_3926);
}

#[test]
fn pattern_and_crc_match_the_javascript_fixture_on_a_small_body() {
    // Guards the checksum helpers themselves: 10 bytes, compared byte for byte.
    let ns = bytes_fn();
    let mut c = ns.client();
    let resp = c.request(
        &Req::new("GET", "/s")
            .header("x-bytes-mode", "source")
            .header("x-bytes-size", "10")
            .header("x-bytes-seed", "7")
            .header("x-bytes-length", "1"),
    );
    let mut expected = [0u8; 10];
    Pattern::new(7).fill(&mut expected);
    assert_eq!(resp.body, expected);
    let (answer, crc) = post_pattern(&mut c, "/s", "sink", 7, 10);
    let mut direct = Crc32::new();
    direct.update(&expected);
    assert_eq!(crc, direct.finish());
    assert_sink(&answer, 10, crc);
}

/// A handler may refill its buffer once a write of it has completed. Large response writes go
/// to the runtime without a copy, so the worker may complete such a write only once its bytes
/// are out: four concurrent responses from one recycled buffer each, read slowly at first so
/// that the worker's output backs up, all arrive as written.
#[test]
fn a_buffer_reused_after_its_write_completed_arrives_as_written() {
    const LEN: usize = 8 * MIB;
    let mut p = profile("bytes", "bytes");
    p["worker"]["maxActivateRequests"] = json!(4);
    let ns = Noslate::start(&json!([p]));
    let readers: Vec<_> = (0..4u32)
        .map(|i| {
            let mut c = ns.client();
            thread::spawn(move || {
                let seed = 100 + i;
                let req = Req::new("GET", "/reuse")
                    .header("x-bytes-mode", "reuse")
                    .header("x-bytes-size", LEN.to_string())
                    .header("x-bytes-seed", seed.to_string());
                c.send(&req.to_bytes());
                // Nothing read for a while: the socket, the runtime and the worker fill up.
                thread::sleep(std::time::Duration::from_millis(300));
                let mut check = PatternCheck::new(seed);
                let resp = c.read_response_with(false, &mut |b| check.feed(b));
                (resp.status, check.received, check.first_mismatch)
            })
        })
        .collect();
    for (i, reader) in readers.into_iter().enumerate() {
        let (status, received, mismatch) = reader.join().unwrap();
        assert_eq!(status, 200, "response {i}");
        assert_eq!(received, LEN as u64, "response {i} length");
        assert_eq!(mismatch, None, "response {i}: first wrong byte");
    }
}

#[test]
fn one_mib_request_body_http_trigger_and_event() {
    let ns = bytes_fn();
    let mut c = ns.client();
    let (answer, crc) = post_pattern(&mut c, "/upload", "sink", 11, MIB);
    assert_sink(&answer, MIB, crc);

    let head = Req::new("POST", "/invoke")
        .header("x-bytes-mode", "sink")
        .header("Content-Length", MIB.to_string())
        .head_bytes();
    c.send(&head);
    let mut w = c.stream().try_clone().unwrap();
    let writer = thread::spawn(move || Pattern::new(12).write_to(&mut w, MIB).unwrap());
    let answer = assert_invoke_ok(&c.read_response());
    assert_sink(&answer, MIB, writer.join().unwrap());
}

#[test]
fn thirty_two_mib_request_body_spliced_and_copied() {
    for (ns, seed) in [(bytes_fn(), 32), (bytes_fn_copying(), 33)] {
        let mut c = ns.client();
        let (answer, crc) = post_pattern(&mut c, "/upload", "sink", seed, 32 * MIB);
        assert_sink(&answer, 32 * MIB, crc);
    }
}

#[test]
fn a_function_keeping_every_chunk_of_a_large_upload_holds_at_most_twice_its_size() {
    // The worker reads a large body in buffers of its own, up to 1 MiB, and hands the chunks
    // on as views of them: a read that filled less than half of its buffer is copied out, so
    // that what the chunks pin is never more than twice what they carry.
    for (ns, seed) in [(bytes_fn(), 34), (bytes_fn_copying(), 35)] {
        let mut c = ns.client();
        let (answer, crc) = post_pattern(&mut c, "/upload", "hold", seed, 16 * MIB);
        assert_sink(&answer, 16 * MIB, crc);
        let held = answer["held"].as_u64().expect("held");
        assert!(
            held <= 2 * 16 * MIB as u64 + MIB as u64,
            "the chunks of a 16 MiB body pin {held} bytes: {answer}"
        );
    }
}

#[test]
fn chunked_request_body() {
    let ns = bytes_fn();
    let mut c = ns.client();
    let head = Req::new("POST", "/upload")
        .header("x-bytes-mode", "sink")
        .header("Transfer-Encoding", "chunked")
        .head_bytes();
    c.send(&head);
    // Odd chunk sizes, one with a chunk extension, then a trailer field.
    let sizes = [1usize, 2, 4095, 4096, 65_537, 300_000, 1, 700_000];
    let mut pattern = Pattern::new(99);
    let mut crc = Crc32::new();
    let mut total = 0;
    for (i, &n) in sizes.iter().enumerate() {
        let mut data = vec![0u8; n];
        pattern.fill(&mut data);
        crc.update(&data);
        total += n;
        let ext = if i == 2 { ";name=value" } else { "" };
        c.send(format!("{n:x}{ext}\r\n").as_bytes());
        c.send(&data);
        c.send(b"\r\n");
    }
    c.send(b"0\r\nX-Trailer: done\r\n\r\n");
    let resp = c.read_response();
    assert_eq!(resp.status, 200, "body: {}", resp.brief());
    assert_sink(&resp.json(), total, crc.finish());
}

#[test]
fn one_mib_response_body_with_content_length() {
    let ns = bytes_fn();
    let mut c = ns.client();
    let framing = get_pattern(&mut c, 5, MIB, true);
    let expected = u64::try_from(MIB).unwrap();
    assert_eq!(
        framing,
        Framing::Length(expected),
        "the function set Content-Length"
    );
    // The connection is reusable afterwards.
    get_pattern(&mut c, 6, 1000, true);
}

#[test]
fn thirty_two_mib_response_body() {
    let ns = bytes_fn();
    let mut c = ns.client();
    get_pattern(&mut c, 33, 32 * MIB, true);
}

#[test]
fn chunked_response_body() {
    let ns = bytes_fn();
    let mut c = ns.client();
    let framing = get_pattern(&mut c, 8, 3 * MIB + 17, false);
    assert_eq!(
        framing,
        Framing::Chunked,
        "no Content-Length from the function: chunked"
    );
    get_pattern(&mut c, 9, 10, false);
}

#[test]
fn chunked_response_of_a_small_multi_write_answer() {
    let ns = Noslate::start(&json!([profile("echo", "echo")]));
    let mut c = ns.client();
    let resp = c.request(&Req::new("GET", "/pieces").header("x-echo-chunks", "5"));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.framing, Framing::Chunked);
    assert_eq!(resp.json()["url"], "/pieces");
}

#[test]
fn eight_mib_streamed_through_the_function_both_ways_at_once() {
    stream_eight_mib_both_ways(&bytes_fn());
}

#[test]
fn eight_mib_streamed_both_ways_over_pipes_as_protocol_channels() {
    let ns = Noslate::builder()
        .functions(&json!([profile("bytes", "bytes")]))
        .config(&json!({ "turf": { "workerChannel": "pipe" } }))
        .start();
    stream_eight_mib_both_ways(&ns);
}

fn stream_eight_mib_both_ways(ns: &Noslate) {
    // The function pipes the request body into the response while the client is still sending:
    // flow control in both directions must keep this from dead-locking.
    let mut c = ns.client();
    let len = 8 * MIB;
    let head = Req::new("POST", "/pipe")
        .header("x-bytes-mode", "pipe")
        .header("Content-Length", len.to_string())
        .head_bytes();
    c.send(&head);
    let mut w = c.stream().try_clone().unwrap();
    let writer = thread::spawn(move || {
        Pattern::new(77).write_to(&mut w, len).unwrap();
        w.flush().unwrap();
    });
    let mut check = PatternCheck::new(77);
    let resp = c.read_response_with(false, &mut |b| check.feed(b));
    writer.join().unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(check.received, u64::try_from(len).unwrap());
    assert_eq!(check.first_mismatch, None);
}

#[test]
fn client_closing_during_a_large_response_frees_the_worker() {
    // The client reads 1 MiB of a 32 MiB response and leaves; the single slot must come back.
    let mut p = profile("bytes", "bytes");
    p["worker"]["maxActivateRequests"] = json!(1);
    let ns = Noslate::start(&json!([p]));
    let mut c = ns.client();
    let req = Req::new("GET", "/big")
        .header("x-bytes-mode", "source")
        .header("x-bytes-size", (32 * MIB).to_string())
        .header("x-bytes-length", "1");
    c.send(&req.to_bytes());
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    while got < MIB {
        let n = std::io::Read::read(&mut c.stream(), &mut buf).unwrap();
        assert!(n > 0, "closed early");
        got += n;
    }
    drop(c);
    let mut c = ns.client();
    assert_eq!(get_pattern(&mut c, 3, 1000, true), Framing::Length(1000));
}

// ---------------------------------------------------------------------------------------------
// A request body the runtime refuses fails the function's request stream

/// The `bodywatch` fixture under an `http.maxRequestBodySize` of 1 MiB.
fn bodywatch() -> Noslate {
    Noslate::builder()
        .functions(&json!([profile("watch", "bodywatch")]))
        .config(&json!({ "http": { "maxRequestBodySize": MIB } }))
        .start()
}

/// Sends the head of a chunked upload to the fixture, which records its request's events under
/// `id` and answers as `mode` says.
fn start_watched_upload(c: &mut Client, mode: &str, id: &str) {
    let head = Req::new("POST", "/upload")
        .header("x-watch-mode", mode)
        .header("x-watch-id", id)
        .header("Transfer-Encoding", "chunked")
        .head_bytes();
    c.send(&head);
}

/// Writes `len` body bytes as 64 KiB chunks and then `tail` from a thread (the function reads as
/// they come, and an early answer must not dead-lock the test). Nothing follows `tail`, so the
/// runtime has read everything the client sent when it refuses the body: it can close without a
/// reset and the answer is not lost.
fn write_chunked(c: &Client, len: usize, tail: &'static [u8]) -> thread::JoinHandle<()> {
    let mut w = c.stream().try_clone().unwrap();
    thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            let mut frame = format!("{n:x}\r\n").into_bytes();
            frame.extend_from_slice(&chunk[..n]);
            frame.extend_from_slice(b"\r\n");
            w.write_all(&frame).unwrap();
            left -= n;
        }
        w.write_all(tail).unwrap();
        w.flush().unwrap();
    })
}

/// Everything the server sends until it closes the connection.
fn read_to_close(c: &Client) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match c.stream().read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("reading until the server closes: {e}"),
        }
    }
}

/// What the fixture recorded for upload `id`, asked for in an invocation of its own.
fn events(ns: &Noslate, id: &str) -> Vec<String> {
    let answer = assert_invoke_ok(&ns.invoke(b"", &[("x-watch-report", id)]));
    answer["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the fixture has recorded every event in `expected` for upload `id` and returns
/// all it recorded.
fn wait_events(ns: &Noslate, id: &str, expected: &[&str]) -> Vec<String> {
    wait_until(
        WAIT,
        "the function's request stream reports the events",
        || {
            let seen = events(ns, id);
            expected.iter().all(|e| seen.iter().any(|s| s == e))
        },
    );
    events(ns, id)
}

/// The events of a request whose body was cut off, in order, as Node's http reports a client
/// abort.
const ABORTED: [&str; 3] = ["aborted", "error ECONNRESET aborted", "close aborted=true"];

#[track_caller]
fn assert_body_failed(ns: &Noslate, id: &str) {
    let seen = wait_events(ns, id, &ABORTED);
    assert!(
        !seen.iter().any(|e| e.starts_with("end ")),
        "the function took a cut-off body for a whole one: {seen:?}"
    );
    let tail: Vec<&str> = seen
        .iter()
        .map(String::as_str)
        .filter(|e| *e != "data")
        .collect();
    assert_eq!(tail, ABORTED, "the request stream's events in order");
}

#[test]
fn oversized_chunked_upload_to_a_streaming_function_fails_its_request_and_cuts_the_response() {
    let ns = bodywatch();
    let pid = assert_invoke_ok(&ns.invoke(b"", &[]))["pid"].clone();
    let mut c = ns.client();
    start_watched_upload(&mut c, "stream", "stream");
    // Exactly the limit, then one chunk size line that goes over it.
    let writer = write_chunked(&c, MIB, b"1\r\n");
    let raw = read_to_close(&c);
    writer.join().unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "the function's head: {text}"
    );
    assert!(
        text.contains("reading\n"),
        "the function's first line: {text}"
    );
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "the response must be cut, not ended: {text}"
    );
    assert_body_failed(&ns, "stream");
    // The worker survives the cancellation and serves on.
    assert_eq!(assert_invoke_ok(&ns.invoke(b"", &[]))["pid"], pid);
}

#[test]
fn oversized_chunked_upload_answered_413_and_the_function_sees_the_abort() {
    let ns = bodywatch();
    let mut c = ns.client();
    start_watched_upload(&mut c, "whole", "too-large");
    let writer = write_chunked(&c, MIB, b"1\r\n");
    let resp = c.read_response();
    writer.join().unwrap();
    let body = assert_error_json(&resp, 413, Some("PayloadTooLarge"));
    assert!(
        body["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("http.maxRequestBodySize")),
        "{body}"
    );
    // The client's body is at fault, not the function: FC must not count a failure of it.
    assert_eq!(resp.header("x-fc-status"), None, "{}", resp.brief());
    c.expect_closed();
    assert_body_failed(&ns, "too-large");
    assert_invoke_ok(&ns.invoke(b"", &[]));
}

#[test]
fn broken_chunk_framing_answered_400_and_the_function_sees_the_abort() {
    let ns = bodywatch();
    let mut c = ns.client();
    start_watched_upload(&mut c, "whole", "framing");
    let writer = write_chunked(&c, 300 * 1024, b"zz\r\n");
    let resp = c.read_response();
    writer.join().unwrap();
    assert_error_json(&resp, 400, Some("InvalidChunk"));
    assert_eq!(resp.header("x-fc-status"), None, "{}", resp.brief());
    c.expect_closed();
    assert_body_failed(&ns, "framing");
    assert_invoke_ok(&ns.invoke(b"", &[]));
}

#[test]
fn client_leaving_mid_body_fails_the_functions_request() {
    let ns = bodywatch();
    let mut c = ns.client();
    start_watched_upload(&mut c, "whole", "gone");
    write_chunked(&c, 300 * 1024, b"").join().unwrap();
    // The function has the first bytes before the client goes.
    wait_events(&ns, "gone", &["data"]);
    drop(c);
    assert_body_failed(&ns, "gone");
    assert_invoke_ok(&ns.invoke(b"", &[]));
}

#[test]
fn oversized_chunked_upload_makes_a_wsgi_input_read_raise() {
    common::require_python();
    let dir = common::TempDir::new();
    std::fs::write(
        dir.path().join("app.py"),
        r#"
import json

seen = {}

def handler(environ, start_response):
    report = environ.get("HTTP_X_WATCH_REPORT")
    if report is not None:
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(seen.get(report, {})).encode()]
    got = seen[environ["HTTP_X_WATCH_ID"]] = {"read": 0}
    inp = environ["wsgi.input"]
    try:
        while True:
            chunk = inp.read(65536)
            if not chunk:
                got["ended"] = True
                break
            got["read"] += len(chunk)
    except BaseException as err:
        got["raised"] = "%s: %s" % (type(err).__name__, err)
        raise
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(got).encode()]
"#,
    )
    .unwrap();
    let p = json!({
        "name": "wsgi", "runtime": "python3", "handlerStyle": "fc-http", "url": dir.path(),
        "handler": "app.handler", "signature": "t",
        "worker": {"reservationCount": 1, "replicaCountLimit": 1, "maxActivateRequests": 4},
        "resourceLimit": {"memory": 128 << 20}
    });
    let ns = Noslate::builder()
        .functions(&json!([p]))
        .config(&json!({ "http": { "maxRequestBodySize": MIB } }))
        .start();
    let mut c = ns.client();
    c.send(
        &Req::new("POST", "/upload")
            .header("x-watch-id", "big")
            .header("Transfer-Encoding", "chunked")
            .head_bytes(),
    );
    let writer = write_chunked(&c, MIB, b"1\r\n");
    let resp = c.read_response();
    writer.join().unwrap();
    assert_error_json(&resp, 413, Some("PayloadTooLarge"));
    let report = || {
        let resp = ns.send(&Req::new("GET", "/report").header("x-watch-report", "big"));
        assert_eq!(resp.status, 200, "{}", resp.brief());
        resp.json()
    };
    wait_until(WAIT, "the handler's read raised", || {
        report()["raised"].is_string()
    });
    let got = report();
    // Cancelled, with the reason when the read was waiting for bytes (the usual case); a
    // handler between reads is interrupted with a bare Cancelled.
    assert!(
        got["raised"]
            .as_str()
            .is_some_and(|r| r.starts_with("Cancelled")),
        "{got}"
    );
    assert!(
        got["ended"].is_null(),
        "a cut-off body read as a whole one: {got}"
    );
}

// ---------------------------------------------------------------------------------------------
// Request bodies spliced from the client's socket to the worker (the default for a large
// Content-Length body), and copied when `dataPlane.spliceRequestBodies` is off

fn bytes_fn_copying() -> Noslate {
    Noslate::builder()
        .functions(&json!([profile("bytes", "bytes")]))
        .config(&json!({ "dataPlane": { "spliceRequestBodies": false } }))
        .start()
}

/// The head of a Content-Length upload of `len` bytes to the sink.
fn sink_upload_head(len: usize) -> Vec<u8> {
    Req::new("POST", "/upload")
        .header("x-bytes-mode", "sink")
        .header("Content-Length", len.to_string())
        .head_bytes()
}

/// Sends `len` pattern bytes as the Content-Length body of an upload to the sink, cut at random
/// points into pieces of up to `max_piece` bytes with pauses of up to `max_pause_us`, and checks
/// what the function read.
fn upload_in_pieces(ns: &Noslate, seed: u64, len: usize, max_piece: usize, max_pause_us: usize) {
    let mut body = vec![0u8; len];
    Pattern::new(u32::try_from(seed).unwrap_or(1) + 1).fill(&mut body);
    let mut crc = Crc32::new();
    crc.update(&body);
    let mut c = ns.client();
    c.stream().set_nodelay(true).unwrap();
    let head = sink_upload_head(len);
    c.send(&head);
    let mut w = c.stream().try_clone().unwrap();
    let writer = thread::spawn(move || {
        let mut rng = SplitMix::new(seed);
        let mut at = 0;
        while at < body.len() {
            let n = (1 + rng.below(max_piece)).min(body.len() - at);
            w.write_all(&body[at..at + n]).unwrap();
            at += n;
            let pause = rng.below(max_pause_us + 1);
            if pause > 0 {
                // Pacing the client, not waiting for a condition.
                thread::sleep(std::time::Duration::from_micros(pause as u64));
            }
        }
    });
    let resp = c.read_response();
    writer.join().unwrap();
    assert_eq!(resp.status, 200, "seed {seed}: {}", resp.brief());
    assert_sink(&resp.json(), len, crc.finish());
}

#[test]
fn a_large_body_split_at_random_points_and_stalled_arrives_whole_spliced_or_copied() {
    for ns in [bytes_fn(), bytes_fn_copying()] {
        for seed in 0..4 {
            upload_in_pieces(&ns, 0xB0D1 + seed, 300 * 1024, 16 * 1024, 2000);
        }
        assert_invoke_ok(&ns.invoke(b"", &[("x-bytes-mode", "sink")]));
    }
}

#[test]
fn a_large_body_delivered_one_byte_at_a_time_arrives_whole() {
    // Just over the size from which a body is spliced: every byte may be a splice of its own.
    upload_in_pieces(&bytes_fn(), 7, 64 * 1024 + 333, 1, 0);
}

#[test]
fn a_large_body_then_a_half_close_gets_the_whole_answer() {
    let ns = bytes_fn();
    let mut c = ns.client();
    let head = sink_upload_head(MIB);
    c.send(&head);
    let crc = Pattern::new(41).write_to(&mut c.stream(), MIB).unwrap();
    c.shutdown_write();
    let resp = c.read_response();
    assert_eq!(resp.status, 200, "{}", resp.brief());
    assert_sink(&resp.json(), MIB, crc);
    let mut rest = Vec::new();
    let _ = c.stream().read_to_end(&mut rest);
    assert!(rest.is_empty(), "after the answer: {rest:?}");
}

/// Sends the head of a Content-Length upload of `len` bytes to the bodywatch fixture, and the
/// first `sent` of them.
fn start_watched_length_upload(c: &mut Client, id: &str, len: usize, sent: usize) {
    let head = Req::new("POST", "/upload")
        .header("x-watch-mode", "whole")
        .header("x-watch-id", id)
        .header("Content-Length", len.to_string())
        .head_bytes();
    c.send(&head);
    c.stream().write_all(&vec![b'x'; sent]).unwrap();
}

/// A client sends a third of a spliced body and then `leaves`: the function's request fails as
/// a client abort, and the worker serves on.
fn cut_off_mid_spliced_body(id: &str, leave: impl FnOnce(Client)) {
    let ns = bodywatch();
    let mut c = ns.client();
    start_watched_length_upload(&mut c, id, 900 * 1024, 300 * 1024);
    wait_events(&ns, id, &["data"]);
    leave(c);
    assert_body_failed(&ns, id);
    assert_invoke_ok(&ns.invoke(b"", &[]));
}

#[test]
fn a_client_leaving_mid_spliced_body_fails_the_functions_request() {
    cut_off_mid_spliced_body("left", drop);
}

#[test]
fn a_client_resetting_mid_spliced_body_fails_the_functions_request() {
    cut_off_mid_spliced_body("reset", Client::reset);
}

#[test]
fn spliced_uploads_cut_off_or_whole_leave_no_descriptor_behind() {
    // No spare process: its start would change the count the test watches.
    let ns = Noslate::builder()
        .functions(&json!([profile("bytes", "bytes")]))
        .config(&json!({ "turf": { "spareWorkers": 0 } }))
        .start();
    // One keep-alive client stays connected throughout, so that the runtime holds the same
    // connections when the count is taken and when it is compared.
    let mut kept = ns.client();
    let (answer, crc) = post_pattern(&mut kept, "/upload", "sink", 5, MIB);
    assert_sink(&answer, MIB, crc);
    // The worker's body pipe now exists; everything after this must give back what it takes.
    let settled = common::proc_fd_count(ns.pid()).expect("the runtime's fds");
    for round in 0..4 {
        let mut c = ns.client();
        c.send(&sink_upload_head(MIB));
        c.stream().write_all(&vec![b'z'; 200 * 1024]).unwrap();
        if round % 2 == 0 {
            c.reset();
        } else {
            drop(c);
        }
        let (answer, crc) = post_pattern(&mut kept, "/upload", "sink", round, MIB);
        assert_sink(&answer, MIB, crc);
    }
    wait_until(
        WAIT,
        "the runtime's descriptors are back to where they were",
        || common::proc_fd_count(ns.pid()) == Some(settled),
    );
}

#[test]
fn a_request_pipelined_right_behind_a_spliced_body_is_answered_after_it() {
    // The splice takes exactly the body: the next request's bytes, sent in the same writes,
    // stay in the socket for the parser.
    let ns = bytes_fn();
    let mut c = ns.client();
    let len = 300 * 1024 + 7;
    let mut body = vec![0u8; len];
    Pattern::new(9).fill(&mut body);
    let mut crc = Crc32::new();
    crc.update(&body);
    let mut bytes = sink_upload_head(len);
    bytes.extend_from_slice(&body);
    bytes.extend_from_slice(&Req::new("GET", "/healthz").to_bytes());
    let mut w = c.stream().try_clone().unwrap();
    let writer = thread::spawn(move || w.write_all(&bytes).unwrap());
    let first = c.read_response();
    assert_eq!(first.status, 200, "{}", first.brief());
    assert_sink(&first.json(), len, crc.finish());
    let second = c.read_response();
    assert_eq!(second.status, 200, "{}", second.brief());
    assert_eq!(second.json()["status"], "ok", "{}", second.brief());
    writer.join().unwrap();
}

#[test]
fn concurrent_spliced_uploads_on_one_worker_take_turns_with_its_body_pipe_and_all_arrive() {
    // One worker, one body pipe, sixteen bodies at once: each piece waits for the pipe to empty,
    // and every body is driven on when it does.
    let mut p = profile("bytes", "bytes");
    p["worker"]["maxActivateRequests"] = json!(16);
    p["worker"]["replicaCountLimit"] = json!(1);
    let ns = Noslate::start(&json!([p]));
    thread::scope(|scope| {
        for seed in 0..16u32 {
            let ns = &ns;
            scope.spawn(move || {
                let mut c = ns.client();
                let (answer, crc) = post_pattern(&mut c, "/upload", "sink", 100 + seed, 2 * MIB);
                assert_sink(&answer, 2 * MIB, crc);
            });
        }
    });
}
