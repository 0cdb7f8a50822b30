//! Parsing of a request head (request line and header fields) with `httparse`, plus the framing
//! rules of RFC 9112 §6 that decide where the body ends and whether the connection persists.

use std::mem::MaybeUninit;

use super::error::HttpError;
use super::headers::HeaderList;

/// Size of the stack array `httparse` fills: the hard ceiling on header fields per request,
/// whatever [`RequestLimits::max_headers`] says.
pub const MAX_HEADERS_CAP: usize = 128;

/// Per-request limits; exceeding one is an error with the matching 4xx status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest request head (request line, header fields, final CRLF) accepted, in bytes.
    pub max_head_bytes: usize,
    /// Most header fields accepted; values above [`MAX_HEADERS_CAP`] act as that cap.
    pub max_headers: usize,
    /// Largest request body accepted, in bytes, whether framed by length or chunked.
    pub max_body_bytes: u64,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_head_bytes: 16 * 1024,
            max_headers: 100,
            max_body_bytes: 32 * 1024 * 1024,
        }
    }
}

/// How the request body is framed, i.e. how the caller finds where it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body: neither header is present, or `Content-Length: 0`.
    None,
    /// Exactly this many bytes (never 0) follow the head.
    Length(u64),
    /// A chunked body follows; feed it to a `ChunkedDecoder`.
    Chunked,
}

/// A parsed and validated request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method, case preserved (methods are case-sensitive).
    pub method: String,
    /// The request target as sent: path plus query for the usual origin form.
    pub target: String,
    /// `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub minor_version: u8,
    /// The header fields in order, names in their original case, duplicates kept; values are
    /// decoded as ISO-8859-1, one char per byte (see [`HeaderList::push_latin1`]).
    pub headers: HeaderList,
    /// Where the body ends.
    pub body: BodyKind,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
    /// Whether the client waits for `100 Continue` before sending the body. Only set for an
    /// HTTP/1.1 request that has a body (RFC 9110 §10.1.1: HTTP/1.0 expectations are ignored).
    pub expect_continue: bool,
}

impl RequestHead {
    /// The value of the first header field named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// The target's path, without its `?query`. For the absolute form a server must also
    /// accept (`http://host/path`, RFC 9112 §3.2.2), the path after the authority (`/` when
    /// there is none), so that routes do not depend on which form the client used.
    pub fn path(&self) -> &str {
        let target = self.target.as_str();
        let path = match absolute_form_rest(target) {
            Some(rest) => rest.find(['/', '?']).map_or("/", |at| &rest[at..]),
            None => target,
        };
        match path.split_once('?') {
            Some(("", _)) => "/",
            Some((path, _)) => path,
            None => path,
        }
    }

    /// Whether this is a `HEAD` request, whose response must carry no body.
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

/// One path segment as the name it stands for: percent-encoded octets decoded (RFC 3986
/// §2.1), so that `/invoke/%65cho` names `echo`. `None` for an empty segment, a malformed
/// escape, bytes that are not UTF-8, or an encoded `/` (a name is never two segments).
pub fn decode_path_segment(segment: &str) -> Option<String> {
    if segment.is_empty() || segment.contains('/') {
        return None;
    }
    if !segment.contains('%') {
        return Some(segment.to_owned());
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while let Some(&b) = bytes.get(at) {
        if b == b'%' {
            let hex = bytes.get(at + 1..at + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            at += 3;
        } else {
            out.push(b);
            at += 1;
        }
    }
    let name = String::from_utf8(out).ok()?;
    (!name.contains('/')).then_some(name)
}

/// What follows `scheme://` in an absolute-form target of scheme http or https.
fn absolute_form_rest(target: &str) -> Option<&str> {
    let (scheme, rest) = target.split_once("://")?;
    (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")).then_some(rest)
}

/// The outcome of [`parse_request`] on the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A whole head; the body (if any) or the next pipelined request starts at `head_len`.
    Complete {
        /// The parsed head.
        head: RequestHead,
        /// Bytes of `buf` taken by the head, including any empty lines before it.
        head_len: usize,
    },
    /// The head is not complete yet: read more and call again with the longer buffer.
    Partial,
}

/// Parses the request head at the start of `buf`.
///
/// Syntax errors are final (there is no point waiting for more bytes), so the caller answers
/// with `err.status()` and closes. Leading empty lines are skipped (RFC 9112 §2.2).
///
/// # Errors
///
/// [`HttpError::Malformed`] for bad syntax or ambiguous framing, `HeadTooLarge` or
/// `TooManyHeaders` past [`RequestLimits`], `BodyTooLarge` for a `Content-Length` over the limit,
/// `NotImplemented` for transfer-codings other than chunked, `ExpectationFailed` for an
/// `Expect` other than `100-continue`.
pub fn parse_request(buf: &[u8], limits: &RequestLimits) -> Result<Parsed, HttpError> {
    // An acceptable head lies entirely within the first `max_head_bytes`, so parsing no further
    // bounds the work a large buffer costs, and a head still partial at that point is too large.
    let window = buf.get(..limits.max_head_bytes).unwrap_or(buf);
    let header_cap = limits.max_headers.min(MAX_HEADERS_CAP);
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CAP];
    let (slots, _) = storage.split_at_mut(header_cap);
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(window, slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if window.len() >= limits.max_head_bytes => {
            return Err(HttpError::HeadTooLarge {
                limit: limits.max_head_bytes,
            });
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(err) => return Err(map_parse_error(err, header_cap)),
    };

    // httparse sets all three on a complete parse; the errors only keep this panic-free.
    let method = req.method.ok_or_else(|| malformed("missing method"))?;
    let target = req
        .path
        .ok_or_else(|| malformed("missing request target"))?;
    let minor_version = req.version.ok_or_else(|| malformed("missing version"))?;
    let bytes = req
        .headers
        .iter()
        .map(|h| h.name.len() + h.value.len())
        .sum();
    let mut headers = HeaderList::with_capacity(req.headers.len(), bytes);
    for h in req.headers.iter() {
        headers.push_latin1(h.name, h.value);
    }

    // Two hosts are two readings of where the request goes, for a proxy and for us (RFC 9112
    // §3.2 asks for a 400).
    if headers.values("host").nth(1).is_some() {
        return Err(malformed("more than one host header"));
    }
    let body = body_kind(&headers, minor_version, limits)?;
    let keep_alive = keep_alive(&headers, minor_version);
    let expect_continue =
        expects_continue(&headers)? && minor_version >= 1 && body != BodyKind::None;

    Ok(Parsed::Complete {
        head: RequestHead {
            method: method.to_owned(),
            target: target.to_owned(),
            minor_version,
            headers,
            body,
            keep_alive,
            expect_continue,
        },
        head_len,
    })
}

fn malformed(what: &str) -> HttpError {
    HttpError::Malformed(what.to_owned())
}

fn map_parse_error(err: httparse::Error, header_cap: usize) -> HttpError {
    match err {
        httparse::Error::TooManyHeaders => HttpError::TooManyHeaders { limit: header_cap },
        httparse::Error::HeaderName => malformed("invalid header name"),
        httparse::Error::HeaderValue => malformed("invalid byte in header value"),
        httparse::Error::NewLine => malformed("invalid line ending"),
        httparse::Error::Token => malformed("invalid method or request target"),
        httparse::Error::Version => malformed("invalid or unsupported http version"),
        // Only produced for responses, but the enum is shared.
        httparse::Error::Status => malformed("invalid request line"),
    }
}

/// The non-empty elements of a comma-separated list field (RFC 9110 §5.6.1), trimmed.
fn elements(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .map(|e| e.trim_matches([' ', '\t']))
        .filter(|e| !e.is_empty())
}

/// Decides the body framing from `Transfer-Encoding` and `Content-Length` (RFC 9112 §6.3),
/// rejecting every ambiguous combination, since a disagreement with a front proxy about where a
/// body ends is how requests get smuggled.
fn body_kind(
    headers: &HeaderList,
    minor_version: u8,
    limits: &RequestLimits,
) -> Result<BodyKind, HttpError> {
    let content_length = content_length(headers)?;

    let mut has_transfer_encoding = false;
    let mut chunked_count = 0usize;
    let mut unsupported = None;
    for value in headers.values("transfer-encoding") {
        has_transfer_encoding = true;
        for coding in elements(value) {
            if coding.eq_ignore_ascii_case("chunked") {
                chunked_count += 1;
            } else if unsupported.is_none() {
                unsupported = Some(coding);
            }
        }
    }

    if has_transfer_encoding {
        if content_length.is_some() {
            return Err(malformed(
                "both transfer-encoding and content-length are present",
            ));
        }
        // RFC 9112 §6.1: HTTP/1.0 has no transfer codings, so the framing is faulty.
        if minor_version == 0 {
            return Err(malformed("transfer-encoding in an http/1.0 request"));
        }
        // Any coding besides chunked (gzip, identity, ...) would reach the worker still encoded.
        if let Some(coding) = unsupported {
            return Err(HttpError::NotImplemented(format!(
                "transfer-coding {coding:?} is not supported"
            )));
        }
        return match chunked_count {
            0 => Err(malformed("empty transfer-encoding")),
            1 => Ok(BodyKind::Chunked),
            _ => Err(malformed("chunked transfer-coding applied more than once")),
        };
    }

    match content_length {
        None | Some(0) => Ok(BodyKind::None),
        Some(len) if len > limits.max_body_bytes => Err(HttpError::BodyTooLarge {
            limit: limits.max_body_bytes,
        }),
        Some(len) => Ok(BodyKind::Length(len)),
    }
}

/// The single `Content-Length` value, if any. Repeated fields or list elements are accepted only
/// when they all agree, as HTTP/1.1 allows; any disagreement is an invalid length (two parties
/// reading two different lengths is how requests are smuggled).
fn content_length(headers: &HeaderList) -> Result<Option<u64>, HttpError> {
    let mut found = None;
    for value in headers.values("content-length") {
        // Empty elements are not skipped here: "Content-Length: ,5" is not a length.
        for element in value.split(',') {
            let len = parse_decimal(element.trim_matches([' ', '\t']))?;
            match found {
                Some(previous) if previous != len => {
                    return Err(malformed("conflicting content-length values"));
                }
                _ => found = Some(len),
            }
        }
    }
    Ok(found)
}

/// Parses `1*DIGIT` into a u64; `str::parse` would also accept a leading `+`.
fn parse_decimal(digits: &str) -> Result<u64, HttpError> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("content-length is not a decimal number"));
    }
    digits.bytes().try_fold(0u64, |acc, b| {
        acc.checked_mul(10)
            .and_then(|acc| acc.checked_add(u64::from(b - b'0')))
            .ok_or_else(|| malformed("content-length overflows"))
    })
}

/// Persistence per RFC 9112 §9.3: HTTP/1.1 persists unless told `close`; HTTP/1.0 only with
/// `keep-alive`. `close` wins over everything.
fn keep_alive(headers: &HeaderList, minor_version: u8) -> bool {
    let mut close = false;
    let mut keep = false;
    for value in headers.values("connection") {
        for option in elements(value) {
            if option.eq_ignore_ascii_case("close") {
                close = true;
            } else if option.eq_ignore_ascii_case("keep-alive") {
                keep = true;
            }
        }
    }
    !close && (minor_version >= 1 || keep)
}

/// Whether `Expect: 100-continue` is present; any other expectation is refused (RFC 9110
/// §10.1.1), since this server cannot meet it.
fn expects_continue(headers: &HeaderList) -> Result<bool, HttpError> {
    let mut found = false;
    for value in headers.values("expect") {
        for expectation in elements(value) {
            if expectation.eq_ignore_ascii_case("100-continue") {
                found = true;
            } else {
                return Err(HttpError::ExpectationFailed(format!(
                    "unsupported expectation {expectation:?}"
                )));
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_path_segment_is_percent_decoded_into_the_name_it_stands_for() {
        assert_eq!(decode_path_segment("echo").as_deref(), Some("echo"));
        assert_eq!(decode_path_segment("%65cho").as_deref(), Some("echo"));
        assert_eq!(decode_path_segment("a%2Db%2db").as_deref(), Some("a-b-b"));
        assert_eq!(decode_path_segment("caf%C3%A9").as_deref(), Some("café"));
        for bad in [
            "", "a/b", "a%2Fb", "a%2fb", "%", "%6", "%zz", "%+1", "%C3", "%FF",
        ] {
            assert_eq!(decode_path_segment(bad), None, "{bad:?}");
        }
    }
    use super::*;

    fn parse(buf: &[u8]) -> Result<Parsed, HttpError> {
        parse_request(buf, &RequestLimits::default())
    }

    /// Parses a buffer expected to hold one complete head.
    fn head(buf: &[u8]) -> RequestHead {
        match parse(buf) {
            Ok(Parsed::Complete { head, head_len }) => {
                assert_eq!(head_len, buf.len(), "head_len");
                head
            }
            other => panic!("expected a complete head, got {other:?}"),
        }
    }

    fn err(buf: &[u8]) -> HttpError {
        match parse(buf) {
            Err(err) => err,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// A request of exactly `total` bytes, padded with one header value.
    fn request_of_len(total: usize) -> Vec<u8> {
        let prefix = b"GET / HTTP/1.1\r\nx-pad: ";
        let suffix = b"\r\n\r\n";
        let pad = total - prefix.len() - suffix.len();
        let mut buf = prefix.to_vec();
        buf.extend(std::iter::repeat_n(b'a', pad));
        buf.extend_from_slice(suffix);
        assert_eq!(buf.len(), total);
        buf
    }

    fn with_headers(count: usize) -> Vec<u8> {
        let mut buf = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..count {
            buf.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
        }
        buf.extend_from_slice(b"\r\n");
        buf
    }

    #[test]
    fn simple_get() {
        let h =
            head(b"GET /hello?name=x&y=1 HTTP/1.1\r\nHost: example\r\nX-A: 1\r\nx-a: 2\r\n\r\n");
        assert_eq!(h.method, "GET");
        assert_eq!(h.target, "/hello?name=x&y=1");
        assert_eq!(h.path(), "/hello");
        assert_eq!(h.minor_version, 1);
        assert_eq!(
            h.headers,
            vec![
                ("Host".to_owned(), "example".to_owned()),
                ("X-A".to_owned(), "1".to_owned()),
                ("x-a".to_owned(), "2".to_owned()),
            ]
        );
        assert_eq!(h.header("x-A"), Some("1"));
        assert_eq!(h.header("HOST"), Some("example"));
        assert_eq!(h.header("missing"), None);
        assert_eq!(h.body, BodyKind::None);
        assert!(h.keep_alive);
        assert!(!h.expect_continue);
        assert!(!h.is_head());
    }

    #[test]
    fn path_without_query_and_is_head() {
        let h = head(b"HEAD /a/b HTTP/1.1\r\n\r\n");
        assert_eq!(h.path(), "/a/b");
        assert!(h.is_head());
        let h = head(b"GET /a?b?c HTTP/1.1\r\n\r\n");
        assert_eq!(h.path(), "/a");
        let h = head(b"GET /? HTTP/1.1\r\n\r\n");
        assert_eq!(h.path(), "/");
        for (target, path) in [
            ("http://example.com/invoke?x=1", "/invoke"),
            ("HTTPS://example.com:8443/a/b", "/a/b"),
            ("http://example.com", "/"),
            ("http://example.com?q", "/"),
            ("http://user@example.com/p", "/p"),
            // Not the absolute form: an origin-form path that happens to hold "://".
            ("/a/http://b", "/a/http://b"),
        ] {
            let h = head(format!("GET {target} HTTP/1.1\r\n\r\n").as_bytes());
            assert_eq!(h.path(), path, "{target}");
            assert_eq!(h.target, target, "the target stays as sent");
        }
        // Methods are case-sensitive: "head" is some other method.
        assert!(!head(b"head / HTTP/1.1\r\n\r\n").is_head());
    }

    #[test]
    fn header_values_are_trimmed_and_decoded_as_latin1() {
        let h = head(
            b"GET / HTTP/1.1\r\nX-Bin: \xff\xfeok \t\r\nX-Utf8: caf\xc3\xa9\r\nX-Empty:\r\n\r\n",
        );
        // One char per byte, as Node's http module presents header values: every byte survives
        // the trip to the worker and back.
        assert_eq!(h.header("x-bin"), Some("\u{ff}\u{fe}ok"));
        assert_eq!(h.header("x-utf8"), Some("caf\u{c3}\u{a9}"));
        assert_eq!(h.header("x-empty"), Some(""));
    }

    #[test]
    fn http_1_1_without_host_is_accepted() {
        assert_eq!(head(b"GET / HTTP/1.1\r\n\r\n").header("host"), None);
    }

    #[test]
    fn leading_empty_lines_are_skipped_and_counted() {
        let buf = b"\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        let h = head(buf);
        assert_eq!(h.method, "GET");
    }

    #[test]
    fn every_prefix_is_partial() {
        let buf = b"POST /invoke?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n";
        for end in 0..buf.len() {
            assert_eq!(
                parse(&buf[..end]),
                Ok(Parsed::Partial),
                "prefix of {end} bytes"
            );
        }
        assert_eq!(head(buf).body, BodyKind::Length(3));
    }

    #[test]
    fn pipelined_requests_in_one_buffer() {
        let first = b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\n";
        let second = b"GET /b HTTP/1.1\r\nConnection: close\r\n\r\n";
        let mut buf = first.to_vec();
        buf.extend_from_slice(b"hello");
        buf.extend_from_slice(second);
        buf.extend_from_slice(b"GET /c HT");

        let Ok(Parsed::Complete { head, head_len }) = parse(&buf) else {
            panic!("first request");
        };
        assert_eq!(head_len, first.len());
        assert_eq!(head.path(), "/a");
        let BodyKind::Length(len) = head.body else {
            panic!("length body");
        };
        let body_end = head_len + len as usize;
        assert_eq!(&buf[head_len..body_end], b"hello");

        let rest = &buf[body_end..];
        let Ok(Parsed::Complete { head, head_len }) = parse(rest) else {
            panic!("second request");
        };
        assert_eq!(head_len, second.len());
        assert_eq!(head.path(), "/b");
        assert!(!head.keep_alive);

        assert_eq!(parse(&rest[head_len..]), Ok(Parsed::Partial));
    }

    #[test]
    fn keep_alive_rules() {
        let cases: &[(&[u8], bool)] = &[
            (b"GET / HTTP/1.1\r\n\r\n", true),
            (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
            (b"GET / HTTP/1.1\r\nConnection: CLOSE\r\n\r\n", false),
            (
                b"GET / HTTP/1.1\r\nConnection: Upgrade, Close\r\n\r\n",
                false,
            ),
            (b"GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n", true),
            (b"GET / HTTP/1.1\r\nConnection: closed\r\n\r\n", true),
            (
                b"GET / HTTP/1.1\r\nConnection: foo\r\nconnection: close\r\n\r\n",
                false,
            ),
            (b"GET / HTTP/1.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
            (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
            (
                b"GET / HTTP/1.0\r\nConnection: te,\tkeep-alive ,\r\n\r\n",
                true,
            ),
            (
                b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
                false,
            ),
            (
                b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
                false,
            ),
        ];
        for (buf, expected) in cases {
            assert_eq!(
                head(buf).keep_alive,
                *expected,
                "{}",
                String::from_utf8_lossy(buf)
            );
        }
    }

    #[test]
    fn http_1_0_version_is_reported() {
        assert_eq!(head(b"GET / HTTP/1.0\r\n\r\n").minor_version, 0);
    }

    #[test]
    fn chunked_transfer_encoding() {
        let h = head(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(h.body, BodyKind::Chunked);
        let h = head(b"POST / HTTP/1.1\r\nTransfer-Encoding: CHUNKED \r\n\r\n");
        assert_eq!(h.body, BodyKind::Chunked);
        // Empty list elements are allowed by the list syntax.
        let h = head(b"POST / HTTP/1.1\r\nTransfer-Encoding: , chunked,\r\n\r\n");
        assert_eq!(h.body, BodyKind::Chunked);
    }

    #[test]
    fn other_transfer_codings_are_not_implemented() {
        for buf in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let e = err(buf);
            assert_eq!(e.status(), 501, "{}", String::from_utf8_lossy(buf));
            assert!(matches!(e, HttpError::NotImplemented(_)));
        }
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n").to_string(),
            "not implemented: transfer-coding \"gzip\" is not supported"
        );
    }

    #[test]
    fn transfer_encoding_framing_errors() {
        for buf in [
            // Smuggling defence: both framings at once.
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: ,\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let e = err(buf);
            assert!(
                matches!(e, HttpError::Malformed(_)),
                "{}: {e:?}",
                String::from_utf8_lossy(buf)
            );
            assert_eq!(e.status(), 400);
        }
    }

    #[test]
    fn content_length_values() {
        let cases: &[(&[u8], BodyKind)] = &[
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
                BodyKind::Length(5),
            ),
            (
                b"POST / HTTP/1.1\r\ncontent-length:  007 \r\n\r\n",
                BodyKind::Length(7),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                BodyKind::None,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                BodyKind::Length(5),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
                BodyKind::Length(5),
            ),
            (
                b"POST / HTTP/1.0\r\nContent-Length: 9\r\n\r\n",
                BodyKind::Length(9),
            ),
        ];
        for (buf, expected) in cases {
            assert_eq!(
                head(buf).body,
                *expected,
                "{}",
                String::from_utf8_lossy(buf)
            );
        }
    }

    #[test]
    fn a_second_host_is_malformed() {
        let e = err(b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\nhost: b\r\n\r\n");
        assert_eq!(
            e.to_string(),
            "malformed request: more than one host header"
        );
        let e = err(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n");
        assert!(matches!(e, HttpError::Malformed(_)), "{e:?}");
    }

    #[test]
    fn bad_content_length_is_malformed() {
        for value in [
            "",
            " ",
            "+5",
            "-1",
            "0x10",
            "5a",
            "5 5",
            "1e3",
            "5,",
            ",5",
            "5, 6",
            "١",
            "18446744073709551616",
            "99999999999999999999999",
        ] {
            let buf = format!("POST / HTTP/1.1\r\nContent-Length: {value}\r\n\r\n");
            let e = err(buf.as_bytes());
            assert!(matches!(e, HttpError::Malformed(_)), "{value:?}: {e:?}");
        }
        let e = err(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n");
        assert_eq!(
            e.to_string(),
            "malformed request: conflicting content-length values"
        );
        let e = err(b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n");
        assert_eq!(e.to_string(), "malformed request: content-length overflows");
    }

    #[test]
    fn body_limit_boundary() {
        let limits = RequestLimits {
            max_body_bytes: 100,
            ..RequestLimits::default()
        };
        let ok = parse_request(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n", &limits);
        assert!(matches!(
            ok,
            Ok(Parsed::Complete {
                head: RequestHead {
                    body: BodyKind::Length(100),
                    ..
                },
                ..
            })
        ));
        let too_big = parse_request(b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", &limits);
        assert_eq!(too_big, Err(HttpError::BodyTooLarge { limit: 100 }));
        let max = parse(b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n");
        assert_eq!(
            max,
            Err(HttpError::BodyTooLarge {
                limit: 32 * 1024 * 1024
            })
        );
        assert_eq!(max.map_err(|e| e.status()), Err(413));
    }

    #[test]
    fn expect_continue() {
        let h = head(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
        assert!(h.expect_continue);
        let h =
            head(b"POST / HTTP/1.1\r\nExpect: 100-Continue\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(h.expect_continue);
        // No body: nothing to wait for.
        assert!(!head(b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n").expect_continue);
        // HTTP/1.0 expectations are ignored.
        let h = head(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
        assert!(!h.expect_continue);
        // An empty Expect asks for nothing.
        assert!(!head(b"POST / HTTP/1.1\r\nExpect:\r\nContent-Length: 1\r\n\r\n").expect_continue);
    }

    #[test]
    fn other_expectations_fail() {
        for value in ["100-continue-please", "foo", "100-continue, foo", "200-ok"] {
            let buf = format!("POST / HTTP/1.1\r\nExpect: {value}\r\nContent-Length: 1\r\n\r\n");
            let e = err(buf.as_bytes());
            assert!(matches!(e, HttpError::ExpectationFailed(_)), "{value}");
            assert_eq!(e.status(), 417);
        }
    }

    #[test]
    fn head_size_boundary() {
        let limit = RequestLimits::default().max_head_bytes;
        assert_eq!(limit, 16_384);

        let exact = request_of_len(limit);
        assert!(matches!(
            parse(&exact),
            Ok(Parsed::Complete { head_len, .. }) if head_len == limit
        ));
        // A body after a head that fits does not count against the head limit.
        let mut with_body = request_of_len(limit);
        with_body.extend_from_slice(&[b'x'; 100_000]);
        assert!(matches!(
            parse(&with_body),
            Ok(Parsed::Complete { head_len, .. }) if head_len == limit
        ));

        let over = request_of_len(limit + 1);
        assert_eq!(parse(&over), Err(HttpError::HeadTooLarge { limit }));
        assert_eq!(parse(&over).map_err(|e| e.status()), Err(431));

        // Partial heads: below the limit wait for more, at the limit the head cannot fit.
        assert_eq!(parse(&over[..limit - 1]), Ok(Parsed::Partial));
        assert_eq!(
            parse(&over[..limit]),
            Err(HttpError::HeadTooLarge { limit })
        );
        assert_eq!(
            parse(&over[..limit + 1]),
            Err(HttpError::HeadTooLarge { limit })
        );
    }

    #[test]
    fn endless_empty_lines_hit_the_head_limit() {
        let limits = RequestLimits {
            max_head_bytes: 64,
            ..RequestLimits::default()
        };
        let buf = b"\r\n".repeat(40);
        assert_eq!(
            parse_request(&buf, &limits),
            Err(HttpError::HeadTooLarge { limit: 64 })
        );
    }

    #[test]
    fn header_count_boundary() {
        assert!(matches!(
            parse(&with_headers(100)),
            Ok(Parsed::Complete { .. })
        ));
        assert_eq!(
            parse(&with_headers(101)),
            Err(HttpError::TooManyHeaders { limit: 100 })
        );
        // Detected before the head is complete.
        let partial = with_headers(101);
        assert_eq!(
            parse(&partial[..partial.len() - 2]),
            Err(HttpError::TooManyHeaders { limit: 100 })
        );
        let many = RequestLimits {
            max_headers: 1000,
            max_head_bytes: 1 << 20,
            ..RequestLimits::default()
        };
        assert!(matches!(
            parse_request(&with_headers(MAX_HEADERS_CAP), &many),
            Ok(Parsed::Complete { .. })
        ));
        assert_eq!(
            parse_request(&with_headers(MAX_HEADERS_CAP + 1), &many),
            Err(HttpError::TooManyHeaders {
                limit: MAX_HEADERS_CAP
            })
        );
        let none = RequestLimits {
            max_headers: 0,
            ..RequestLimits::default()
        };
        assert!(matches!(
            parse_request(&with_headers(0), &none),
            Ok(Parsed::Complete { .. })
        ));
        assert_eq!(
            parse_request(&with_headers(1), &none),
            Err(HttpError::TooManyHeaders { limit: 0 })
        );
    }

    #[test]
    fn syntax_errors_are_malformed() {
        for buf in [
            &b"GET / HTTP/1.1\r\nContent-Length : 5\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\n Host: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\0b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n",
            b"GET / HTTP/1.1\r\nX\x01: a\r\n\r\n",
            b"GET / HTTP/1.1\r\n: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/1.2\r\n\r\n",
            b"GET / http/1.1\r\n\r\n",
            b"GET /\r\n\r\n",
            b"G@T / HTTP/1.1\r\n\r\n",
            b"GET /a b HTTP/1.1\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"\r\r\n",
        ] {
            let e = err(buf);
            assert!(
                matches!(e, HttpError::Malformed(_)),
                "{:?}: {e:?}",
                String::from_utf8_lossy(buf)
            );
            assert_eq!(e.status(), 400);
        }
    }

    /// A tiny deterministic generator, so the mutation test needs no crate and replays exactly.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn mutated_requests_never_panic_and_head_len_is_in_bounds() {
        let seeds: &[&[u8]] = &[
            b"POST /invoke?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\nConnection: keep-alive\r\nExpect: 100-continue\r\n\r\nhello world!",
            b"PUT / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nX: y\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ];
        let alphabet = b"\r\n :,;\t\0\x7f\xffaZ09-chunked";
        let limits = RequestLimits {
            max_head_bytes: 96,
            max_headers: 3,
            max_body_bytes: 100,
        };
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let mut buf = seeds[rng.below(seeds.len())].to_vec();
            for _ in 0..=rng.below(4) {
                let at = rng.below(buf.len());
                match rng.below(3) {
                    0 => buf[at] = alphabet[rng.below(alphabet.len())],
                    1 => buf.insert(at, alphabet[rng.below(alphabet.len())]),
                    _ => {
                        buf.remove(at);
                    }
                }
            }
            let end = rng.below(buf.len() + 1);
            for candidate in [&buf[..], &buf[..end]] {
                for limits in [&limits, &RequestLimits::default()] {
                    if let Ok(Parsed::Complete { head_len, .. }) = parse_request(candidate, limits)
                    {
                        assert!(head_len <= candidate.len());
                        assert!(head_len <= limits.max_head_bytes);
                    }
                }
            }
        }
    }
}
