//! Rendering of response heads and complete error responses.
//!
//! Header fields come from workers, i.e. from user code, so they are filtered: fields that would
//! break framing or allow response splitting are dropped, and the framing and connection fields
//! are always our own.

use super::error::HttpError;

/// The interim response sent before reading a body the client is holding back.
pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Fields the runtime owns: framing, `Date`, and hop-by-hop fields (RFC 9110 §7.6.1), which
/// describe our connection to the client rather than the worker's response.
const MANAGED_FIELDS: &[&str] = &[
    "connection",
    "content-length",
    "date",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// How the response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many body bytes follow (`Content-Length`).
    Length(u64),
    /// The body is chunked (`Transfer-Encoding: chunked`); HTTP/1.1 clients only.
    Chunked,
    /// HTTP/1.0 client and unknown length: the body runs until we close the connection.
    Close,
    /// No body at all: 1xx, 204 and 304 responses, and responses to HEAD.
    NoBody,
}

/// The framing to use for a response, following RFC 9112 §6.3: no body for 1xx, 204, 304 and
/// HEAD; the length when it is known; otherwise chunked for HTTP/1.1 and close-delimited for
/// HTTP/1.0, which has no chunked coding.
pub fn response_framing(
    status: u16,
    is_head: bool,
    body_len: Option<u64>,
    minor_version: u8,
) -> Framing {
    if is_head || status < 200 || status == 204 || status == 304 {
        return Framing::NoBody;
    }
    match body_len {
        Some(len) => Framing::Length(len),
        None if minor_version >= 1 => Framing::Chunked,
        None => Framing::Close,
    }
}

/// Writes `HTTP/1.1 <status> <reason>\r\n`, the caller's header fields, then our own `Date`,
/// framing field and `Connection` as needed, and the blank line.
///
/// Caller fields that are framing or hop-by-hop (`Connection`, `Content-Length`, `Date`,
/// `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`), whose
/// name is not a token, or whose value holds CR, LF, NUL or another control byte are skipped.
/// A status outside 100..=999 cannot be written and becomes 500. `Framing::Close` always
/// writes `Connection: close`; an HTTP/1.0 client that stays connected gets
/// `Connection: keep-alive`. `Framing::Chunked` must not be used for an HTTP/1.0 client (see
/// [`response_framing`]). `date` is an IMF-fixdate such as `DateCache::get` returns.
pub fn write_head<'a>(
    out: &mut Vec<u8>,
    status: u16,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    framing: &Framing,
    keep_alive: bool,
    minor_version: u8,
    date: &[u8],
) {
    write_status_line(out, status);
    for (name, value) in headers {
        write_field_checked(out, name, value);
    }
    write_date(out, date);
    match framing {
        Framing::Length(len) => {
            out.extend_from_slice(b"Content-Length: ");
            push_decimal(out, *len);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::Close | Framing::NoBody => {}
    }
    let keep_alive = keep_alive && *framing != Framing::Close;
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if minor_version == 0 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The reason phrase of every status in the IANA registry, or "Unknown" for the rest.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => "Unknown",
    }
}

/// The JSON error body `{"errorMessage": ..., "errorType": ...}`, the shape FC runtimes use.
pub fn error_body(error_type: &str, message: &str) -> Vec<u8> {
    serde_json::json!({ "errorMessage": message, "errorType": error_type })
        .to_string()
        .into_bytes()
}

/// A complete error response for `err`: status, JSON body, `Content-Type: application/json`,
/// `Content-Length` and the `extra` header fields. With `keep_alive` false it also says
/// `Connection: close`.
///
/// For a HEAD request the caller sends only the head, i.e. drops the body bytes.
pub fn write_error(
    out: &mut Vec<u8>,
    err: &HttpError,
    extra: &[(&str, &str)],
    keep_alive: bool,
    date: &[u8],
) {
    let body = error_body(err.error_type(), &err.to_string());
    write_json_response(out, err.status(), extra, &body, keep_alive, date);
}

/// A complete response with a JSON `body` and the `extra` header fields, such as
/// `("x-fc-status", "404")` for a function error. Extra fields are filtered as in
/// [`write_head`]. Since the client's HTTP version may be unknown here, a kept-alive connection
/// is announced with `Connection: keep-alive`, which HTTP/1.0 needs and HTTP/1.1 ignores.
pub fn write_json_response(
    out: &mut Vec<u8>,
    status: u16,
    extra: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
    date: &[u8],
) {
    let head = Head {
        status,
        content_type: "application/json",
        extra,
        keep_alive,
    };
    write_response(out, &head, body, date);
}

/// A complete response's head: its status, body type, extra fields and connection handling.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    pub status: u16,
    pub content_type: &'a str,
    /// Extra header fields (a `content-type` among them is ignored).
    pub extra: &'a [(&'a str, &'a str)],
    pub keep_alive: bool,
}

/// Writes a complete response with a body of `head.content_type` and its length.
pub fn write_response(out: &mut Vec<u8>, head: &Head<'_>, body: &[u8], date: &[u8]) {
    let Head {
        status,
        content_type,
        extra,
        keep_alive,
    } = *head;
    write_status_line(out, status);
    // The runtime's own answers name their own type: no client input reaches it.
    out.extend_from_slice(b"Content-Type: ");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in extra {
        if !name.eq_ignore_ascii_case("content-type") {
            write_field_checked(out, name, value);
        }
    }
    write_date(out, date);
    out.extend_from_slice(b"Content-Length: ");
    push_decimal(out, body.len() as u64);
    out.extend_from_slice(if keep_alive {
        b"\r\nConnection: keep-alive\r\n\r\n"
    } else {
        b"\r\nConnection: close\r\n\r\n"
    });
    out.extend_from_slice(body);
}

fn write_status_line(out: &mut Vec<u8>, status: u16) {
    // The status-code is exactly three digits (RFC 9112 §4).
    let status = if (100..=999).contains(&status) {
        status
    } else {
        500
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn write_date(out: &mut Vec<u8>, date: &[u8]) {
    out.extend_from_slice(b"Date: ");
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\n");
}

/// Writes `name: value` unless the field is ours to set or unsafe to forward.
fn write_field_checked(out: &mut Vec<u8>, name: &str, value: &str) {
    let value = value.trim_matches([' ', '\t']);
    if !is_token(name)
        || MANAGED_FIELDS.iter().any(|m| m.eq_ignore_ascii_case(name))
        || !value.bytes().all(is_field_value_byte)
    {
        return;
    }
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    // Values are latin1 strings, as in Node (see request::latin1): a char up to U+00FF is that
    // byte. Anything wider cannot be latin1 and is sent as UTF-8 rather than dropped.
    if value.chars().all(|c| u32::from(c) <= 0xff) {
        out.extend(
            value
                .chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?')),
        );
    } else {
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// `token = 1*tchar` (RFC 9110 §5.6.2).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `field-vchar`, SP or HTAB (RFC 9110 §5.5): everything but control bytes and DEL, which
/// includes the CR, LF and NUL of response-splitting attempts.
fn is_field_value_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

/// Appends `n` in decimal without going through `fmt`.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    for slot in digits.iter_mut().rev() {
        // `n % 10` is a single digit, so the cast cannot truncate.
        *slot = b'0' + (n % 10) as u8;
        start -= 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(start..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";

    fn head(
        status: u16,
        headers: &[(&str, &str)],
        framing: Framing,
        keep_alive: bool,
        minor: u8,
    ) -> String {
        let mut out = Vec::new();
        write_head(
            &mut out,
            status,
            headers.iter().copied(),
            &framing,
            keep_alive,
            minor,
            DATE,
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn length_framed_keep_alive() {
        assert_eq!(
            head(
                200,
                &[("Content-Type", "text/plain"), ("X-A", "1"), ("x-a", "2")],
                Framing::Length(5),
                true,
                1
            ),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: 1\r\nx-a: 2\r\n\
             Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 5\r\n\r\n"
        );
    }

    #[test]
    fn chunked_and_close() {
        assert_eq!(
            head(201, &[], Framing::Chunked, false, 1),
            "HTTP/1.1 201 Created\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn close_framing_forces_connection_close() {
        assert_eq!(
            head(200, &[], Framing::Close, true, 0),
            "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn http_1_0_keep_alive_is_explicit() {
        assert_eq!(
            head(204, &[], Framing::NoBody, true, 0),
            "HTTP/1.1 204 No Content\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Connection: keep-alive\r\n\r\n"
        );
        assert!(
            head(200, &[], Framing::Length(0), false, 0).ends_with("Connection: close\r\n\r\n")
        );
    }

    #[test]
    fn managed_fields_from_the_worker_are_dropped() {
        let text = head(
            200,
            &[
                ("Connection", "keep-alive"),
                ("content-length", "999"),
                ("Transfer-Encoding", "gzip"),
                ("DATE", "yesterday"),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Connection", "close"),
                ("TE", "trailers"),
                ("Trailer", "X-Sum"),
                ("Upgrade", "websocket"),
                ("X-Kept", "yes"),
            ],
            Framing::Length(2),
            true,
            1,
        );
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nX-Kept: yes\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Content-Length: 2\r\n\r\n"
        );
    }

    #[test]
    fn response_splitting_is_prevented() {
        let text = head(
            200,
            &[
                ("X-Split", "a\r\nSet-Cookie: evil=1"),
                ("X-Lf", "a\nb"),
                ("X-Cr", "a\rb"),
                ("X-Nul", "a\0b"),
                ("X-Del", "a\x7fb"),
                ("X-Esc", "\x1b[31m"),
                ("Bad Name", "v"),
                ("Bad:Name", "v"),
                ("Bad\r\nName", "v"),
                ("", "v"),
                ("X-Ünicode-Name", "v"),
                ("X-Tab", "a\tb"),
                ("X-Utf8", "snow \u{2603}"),
                ("X-Trim", "  padded \t"),
                ("X-Empty", ""),
                ("x!#$%&'*+-.^_`|~9", "token chars"),
            ],
            Framing::NoBody,
            true,
            1,
        );
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nX-Tab: a\tb\r\nX-Utf8: snow \u{2603}\r\nX-Trim: padded\r\nX-Empty: \r\n\
             x!#$%&'*+-.^_`|~9: token chars\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n"
        );
        assert_eq!(text.matches("\r\n\r\n").count(), 1);
    }

    #[test]
    fn latin1_values_go_out_as_single_bytes() {
        let mut out = Vec::new();
        let headers = [("X-Latin1", "caf\u{e9}")];
        write_head(&mut out, 200, headers, &Framing::NoBody, true, 1, b"d");
        let needle: &[u8] = b"X-Latin1: caf\xe9\r\n";
        assert!(out.windows(needle.len()).any(|w| w == needle));
    }

    #[test]
    fn status_line_edges() {
        assert!(head(599, &[], Framing::NoBody, true, 1).starts_with("HTTP/1.1 599 Unknown\r\n"));
        assert!(head(100, &[], Framing::NoBody, true, 1).starts_with("HTTP/1.1 100 Continue\r\n"));
        assert!(head(999, &[], Framing::NoBody, true, 1).starts_with("HTTP/1.1 999 Unknown\r\n"));
        for invalid in [0, 99, 1000, u16::MAX] {
            assert!(
                head(invalid, &[], Framing::NoBody, true, 1)
                    .starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
                "{invalid}"
            );
        }
    }

    #[test]
    fn content_length_digits() {
        assert!(head(200, &[], Framing::Length(0), true, 1).contains("\r\nContent-Length: 0\r\n"));
        assert!(
            head(200, &[], Framing::Length(u64::MAX), true, 1)
                .contains("\r\nContent-Length: 18446744073709551615\r\n")
        );
    }

    #[test]
    fn reason_phrases() {
        assert_eq!(reason_phrase(200), "OK");
        assert_eq!(reason_phrase(404), "Not Found");
        assert_eq!(reason_phrase(413), "Content Too Large");
        assert_eq!(reason_phrase(417), "Expectation Failed");
        assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
        assert_eq!(reason_phrase(501), "Not Implemented");
        assert_eq!(reason_phrase(306), "Unknown");
        assert_eq!(reason_phrase(299), "Unknown");
        assert_eq!(reason_phrase(0), "Unknown");
        // Every phrase is safe to put on the status line.
        for status in 0..=u16::MAX {
            let phrase = reason_phrase(status);
            assert!(!phrase.is_empty() && phrase.bytes().all(is_field_value_byte));
        }
    }

    #[test]
    fn framing_choice() {
        assert_eq!(response_framing(200, false, Some(5), 1), Framing::Length(5));
        assert_eq!(response_framing(200, false, Some(0), 0), Framing::Length(0));
        assert_eq!(response_framing(200, false, None, 1), Framing::Chunked);
        assert_eq!(response_framing(200, false, None, 0), Framing::Close);
        assert_eq!(response_framing(200, true, Some(5), 1), Framing::NoBody);
        assert_eq!(response_framing(204, false, Some(5), 1), Framing::NoBody);
        assert_eq!(response_framing(304, false, None, 1), Framing::NoBody);
        assert_eq!(response_framing(103, false, None, 1), Framing::NoBody);
        assert_eq!(response_framing(205, false, Some(0), 1), Framing::Length(0));
    }

    #[test]
    fn error_body_is_json() {
        let body = error_body("Error", "quote \" and \n newline");
        assert_eq!(
            String::from_utf8(body.clone()).unwrap(),
            r#"{"errorMessage":"quote \" and \n newline","errorType":"Error"}"#
        );
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["errorType"], "Error");
    }

    #[test]
    fn complete_error_response() {
        let mut out = Vec::new();
        let err = HttpError::BodyTooLarge { limit: 33_554_432 };
        write_error(&mut out, &err, &[], false, DATE);
        let body = r#"{"errorMessage":"request body exceeds http.maxRequestBodySize (33554432 bytes)","errorType":"PayloadTooLarge"}"#;
        let expected = format!(
            "HTTP/1.1 413 Content Too Large\r\nContent-Type: application/json\r\n\
             Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn error_response_can_keep_alive() {
        let mut out = Vec::new();
        write_error(
            &mut out,
            &HttpError::ExpectationFailed("x".into()),
            &[],
            true,
            DATE,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 417 Expectation Failed\r\n"));
        assert!(text.contains("\r\nConnection: keep-alive\r\n\r\n{"));
    }

    #[test]
    fn json_response_with_extra_fields() {
        let mut out = Vec::new();
        let body = br#"{"errorMessage":"boom","errorType":"Error","stackTrace":[]}"#;
        write_json_response(
            &mut out,
            404,
            &[
                ("x-fc-status", "404"),
                ("content-type", "text/html"),
                ("Content-Length", "1"),
                ("x-evil", "a\r\nb"),
            ],
            body,
            true,
            DATE,
        );
        let expected = format!(
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nx-fc-status: 404\r\n\
             Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: {}\r\n\
             Connection: keep-alive\r\n\r\n{}",
            body.len(),
            String::from_utf8_lossy(body)
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn head_parses_back_with_httparse() {
        let text = head(
            503,
            &[("Retry-After", "1"), ("X-Bad", "a\nb")],
            Framing::Length(3),
            false,
            1,
        );
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut resp = httparse::Response::new(&mut headers);
        assert_eq!(
            resp.parse(text.as_bytes()),
            Ok(httparse::Status::Complete(text.len()))
        );
        assert_eq!(resp.code, Some(503));
        assert_eq!(resp.reason, Some("Service Unavailable"));
        assert_eq!(resp.headers.len(), 4);
    }

    #[test]
    fn continue_is_a_complete_interim_response() {
        let mut headers = [httparse::EMPTY_HEADER; 1];
        let mut resp = httparse::Response::new(&mut headers);
        assert_eq!(
            resp.parse(CONTINUE_100),
            Ok(httparse::Status::Complete(CONTINUE_100.len()))
        );
        assert_eq!(resp.code, Some(100));
    }
}
