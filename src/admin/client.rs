//! The CLI side of the admin socket: one blocking HTTP/1.1 request per call, and the
//! `noslate ps` table.

use crate::http::HeaderList;
use crate::http::chunked::{Chunk, ChunkedDecoder, LAST_CHUNK, encode_chunk_header};
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long the CLI waits for the runtime.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer the CLI accepts.
const MAX_RESPONSE: u64 = 16 << 20;

/// An answer from the runtime.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body bytes (de-chunked).
    pub body: Vec<u8>,
}

fn connect_error(socket: &Path, err: &std::io::Error) -> String {
    format!(
        "cannot connect to the runtime's admin socket {}: {err} (is `noslate serve` running \
         with the same NOSLATE_WORKDIR? --socket PATH names another socket)",
        socket.display()
    )
}

/// Sends one request with optional extra headers and body, and returns the answer.
pub fn request_raw(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Answer, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| connect_error(socket, &e))?;
    let _ = stream.set_read_timeout(Some(TIMEOUT));
    let _ = stream.set_write_timeout(Some(TIMEOUT));
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: noslate\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE)
        .read_to_end(&mut raw)
        .map_err(|e| format!("cannot read the answer: {e}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the runtime's answer has no HTTP head")?;
    let head = String::from_utf8_lossy(raw.get(..split).unwrap_or_default()).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("the runtime's answer has no status")?;
    let rest = raw.get(split + 4..).unwrap_or_default();
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(Answer { status, body })
}

/// Decodes a complete chunked body.
fn dechunk(input: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut decoder = ChunkedDecoder::new(MAX_RESPONSE);
    let mut rest = input;
    loop {
        match decoder.decode(rest) {
            Ok((used, Chunk::Data(data))) => {
                out.extend_from_slice(data);
                rest = rest.get(used..).unwrap_or_default();
            }
            Ok((_, Chunk::Done)) => return Ok(out),
            Ok((_, Chunk::NeedMore)) => return Err("truncated chunked answer".to_owned()),
            Err(err) => return Err(format!("bad chunked answer: {err}")),
        }
    }
}

/// The head of an invocation's answer.
#[derive(Debug)]
pub struct AnswerHead {
    /// HTTP status.
    pub status: u16,
    /// Header fields, in order.
    pub headers: HeaderList,
}

impl AnswerHead {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::fc::header(&self.headers, name)
    }
}

/// Largest answer head the CLI accepts.
const MAX_ANSWER_HEAD: usize = 64 * 1024;

/// How an answer's body is framed.
enum BodyFraming {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

/// Sends `POST path` with `headers` and `body` streamed as chunks, and copies the answer's
/// body to `out` as it arrives. The body is sent from its own thread so that a function that
/// answers while it still reads (an echo) never waits on a client that is itself busy
/// writing. Returns the answer's head once its body has ended.
pub fn invoke_streaming(
    socket: &Path,
    path: &str,
    headers: &[(String, String)],
    mut body: Box<dyn Read + Send>,
    out: &mut dyn Write,
) -> Result<AnswerHead, String> {
    let stream = UnixStream::connect(socket).map_err(|e| connect_error(socket, &e))?;
    let _ = stream.set_write_timeout(Some(TIMEOUT));
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: noslate\r\nConnection: close\r\n\
         Transfer-Encoding: chunked\r\n"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut writer = stream
        .try_clone()
        .map_err(|e| format!("cannot use the admin socket: {e}"))?;
    writer
        .write_all(head.as_bytes())
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let sender = std::thread::spawn(move || -> Result<(), String> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut frame = Vec::with_capacity(buf.len() + 16);
        loop {
            let n = body
                .read(&mut buf)
                .map_err(|e| format!("cannot read the request body: {e}"))?;
            frame.clear();
            if n == 0 {
                frame.extend_from_slice(LAST_CHUNK);
            } else {
                encode_chunk_header(n, &mut frame);
                frame.extend_from_slice(&buf[..n]);
                frame.extend_from_slice(b"\r\n");
            }
            // The runtime may answer and stop reading before the body ends (an error, or a
            // function that ignores its input): the rest is then not needed.
            if writer.write_all(&frame).is_err() || n == 0 {
                return Ok(());
            }
        }
    });
    let answer = read_answer(stream, out);
    let sent = sender
        .join()
        .unwrap_or_else(|_| Err("the request body's sender failed".to_owned()));
    match (answer, sent) {
        (Ok(head), _) => Ok(head),
        (Err(err), Err(body_err)) => Err(format!("{body_err}; {err}")),
        (Err(err), Ok(())) => Err(err),
    }
}

/// Reads an answer's head, then copies its body to `out`.
fn read_answer(mut stream: UnixStream, out: &mut dyn Write) -> Result<AnswerHead, String> {
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let (head, framing, used) = loop {
        let n = stream
            .read(&mut chunk)
            .map_err(|e| format!("cannot read the answer: {e}"))?;
        if n == 0 {
            return Err("the runtime closed the connection before answering".to_owned());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut fields = [httparse::EMPTY_HEADER; 128];
        let mut parsed = httparse::Response::new(&mut fields);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Complete(used)) => {
                let status = parsed.code.unwrap_or(0);
                let mut headers = HeaderList::new();
                for h in parsed.headers.iter() {
                    headers.push_latin1(h.name, h.value);
                }
                let chunked = crate::fc::header(&headers, "transfer-encoding")
                    .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
                let length = crate::fc::header(&headers, "content-length")
                    .and_then(|v| v.trim().parse::<u64>().ok());
                let framing = match (chunked, length) {
                    (true, _) => BodyFraming::Chunked(ChunkedDecoder::new(u64::MAX)),
                    (false, Some(n)) => BodyFraming::Length(n),
                    (false, None) => BodyFraming::UntilClose,
                };
                break (AnswerHead { status, headers }, framing, used);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_ANSWER_HEAD => {}
            Ok(httparse::Status::Partial) => return Err("the answer's head is too large".into()),
            Err(err) => return Err(format!("the runtime's answer is not HTTP: {err}")),
        }
    };
    buf.drain(..used);
    copy_body(&mut stream, framing, buf, &mut chunk, out)?;
    Ok(head)
}

/// Copies a body framed by `framing` to `out`: first the bytes already read (`pending`), then
/// the stream's.
fn copy_body(
    stream: &mut UnixStream,
    mut framing: BodyFraming,
    mut pending: Vec<u8>,
    chunk: &mut [u8],
    out: &mut dyn Write,
) -> Result<(), String> {
    let write = |out: &mut dyn Write, data: &[u8]| {
        out.write_all(data)
            .and_then(|()| out.flush())
            .map_err(|e| format!("cannot write the answer: {e}"))
    };
    loop {
        let mut rest = pending.as_slice();
        match &mut framing {
            BodyFraming::Length(left) => {
                let take = usize::try_from(*left).map_or(rest.len(), |l| l.min(rest.len()));
                write(out, &rest[..take])?;
                *left -= take as u64;
                if *left == 0 {
                    return Ok(());
                }
            }
            BodyFraming::UntilClose => write(out, rest)?,
            BodyFraming::Chunked(decoder) => loop {
                match decoder.decode(rest) {
                    Ok((used, Chunk::Data(data))) => {
                        write(out, data)?;
                        rest = rest.get(used..).unwrap_or_default();
                    }
                    Ok((_, Chunk::Done)) => return Ok(()),
                    Ok((_, Chunk::NeedMore)) => break,
                    Err(err) => return Err(format!("bad chunked answer: {err}")),
                }
            },
        }
        let n = stream
            .read(chunk)
            .map_err(|e| format!("cannot read the answer: {e}"))?;
        if n == 0 {
            return match framing {
                BodyFraming::UntilClose => Ok(()),
                _ => Err("the answer was cut short (the invocation failed mid-stream)".to_owned()),
            };
        }
        pending.clear();
        pending.extend_from_slice(&chunk[..n]);
    }
}

/// Sends one request and returns the status and the JSON body.
pub fn request(socket: &Path, method: &str, path: &str) -> Result<(u16, Value), String> {
    request_json(socket, method, path, &[], b"")
}

/// Sends one request with a body and returns the status and the JSON answer.
pub fn request_json(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<(u16, Value), String> {
    let answer = request_raw(socket, method, path, headers, body)?;
    let json = serde_json::from_slice(&answer.body)
        .map_err(|e| format!("the runtime's answer is not JSON: {e}"))?;
    Ok((answer.status, json))
}

/// Largest `/json/list` answer the CLI reads from a debugger.
const MAX_TARGET_LIST: usize = 1 << 20;

/// Fetches the target list a Node.js debugger serves on `127.0.0.1:port` (`GET /json/list`,
/// a JSON array), bounded by [`TIMEOUT`] for the connection and each read.
pub fn debugger_targets(port: u16) -> Result<Value, String> {
    use std::net::{Ipv4Addr, SocketAddr, TcpStream};
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .map_err(|e| format!("cannot connect to the debugger on {addr}: {e}"))?;
    let _ = stream.set_read_timeout(Some(TIMEOUT));
    let _ = stream.set_write_timeout(Some(TIMEOUT));
    let head = format!("GET /json/list HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(head.as_bytes())
        .map_err(|e| format!("cannot ask the debugger on {addr}: {e}"))?;
    // The debugger may keep the connection open: read until the body its length announces.
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if let Some(body) = length.and_then(|n| raw.get(split + 4..split + 4 + n)) {
                return parse_targets(body);
            }
        }
        if raw.len() > MAX_TARGET_LIST {
            return Err(format!("the debugger on {addr} answered more than 1 MiB"));
        }
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("cannot read the debugger's answer on {addr}: {e}")),
        }
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("the debugger on {addr} sent no HTTP answer"))?;
    parse_targets(raw.get(split + 4..).unwrap_or_default())
}

fn parse_targets(body: &[u8]) -> Result<Value, String> {
    let list: Value = serde_json::from_slice(body)
        .map_err(|e| format!("the debugger's /json/list is not JSON: {e}"))?;
    if !list.is_array() {
        return Err(format!("the debugger's /json/list is not a list: {list}"));
    }
    Ok(list)
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn mib(bytes: &Value) -> String {
    bytes.as_u64().map_or_else(
        || "-".to_owned(),
        |b| format!("{:.1}M", b as f64 / f64::from(1 << 20)),
    )
}

fn duration(ms: &Value) -> String {
    let Some(ms) = ms.as_u64() else {
        return "-".to_owned();
    };
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m{}s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{}h{}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

/// Renders `GET /v1/workers` as the `noslate ps` table.
pub fn ps_table(workers: &Value) -> String {
    let mut rows = vec![
        [
            "ID", "FUNCTION", "PID", "STATE", "START", "INFLIGHT", "RSS", "CPU", "AGE", "LIMITS",
        ]
        .map(str::to_owned),
    ];
    for w in workers.as_array().map(Vec::as_slice).unwrap_or_default() {
        let limits = w["enforcement"]
            .as_object()
            .map(|e| {
                ["memory", "cpu", "pids", "nofile"]
                    .iter()
                    .map(|k| format!("{k}={}", e.get(*k).map_or("-".to_owned(), text)))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_else(|| "-".to_owned());
        rows.push([
            text(&w["id"]),
            text(&w["function"]),
            text(&w["pid"]),
            text(&w["state"]),
            text(&w["start"]),
            text(&w["inflight"]),
            mib(&w["rssBytes"]),
            duration(&w["cpuMs"]),
            duration(&w["ageMs"]),
            limits,
        ]);
    }
    let widths: Vec<usize> = (0..10)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ps_table_has_one_row_per_worker_and_aligned_columns() {
        let workers = json!([
            {"id": "hello-1", "function": "hello", "pid": 42, "state": "ready", "start": "spare",
             "inflight": 0,
             "rssBytes": 41_943_040u64, "cpuMs": 120, "ageMs": 65_000,
             "enforcement": {"memory": "cgroup", "cpu": "none", "pids": "cgroup", "nofile": "rlimit"}},
            {"id": "echo-12", "function": "echo", "pid": 4242, "state": "starting", "inflight": 3,
             "rssBytes": null, "cpuMs": null, "ageMs": 5}
        ]);
        let table = ps_table(&workers);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID "));
        assert!(lines[1].contains("hello-1") && lines[1].contains("40.0M"));
        assert!(lines[1].contains("1m5s") && lines[1].contains("memory=cgroup"));
        assert!(lines[2].contains("starting") && lines[2].contains("5ms"));
        let start = lines[0].find("START").unwrap();
        assert_eq!(&lines[1][start..start + 5], "spare");
        let col = lines[0].find("FUNCTION").unwrap();
        assert_eq!(&lines[1][col..col + 5], "hello");
        assert_eq!(&lines[2][col..col + 4], "echo");
    }
}
