//! What an invocation on the admin socket says about itself, in `x-noslate-*` request headers:
//! the method, url, headers and baggage the function sees, its deadline and its request id.
//! The headers of the admin request itself frame the transfer to the runtime (Host,
//! Content-Length, Transfer-Encoding, Connection); the function's own headers, which may carry
//! any of those names with values of their own, travel apart in `x-noslate-headers`.
//!
//! | header | value | default |
//! |---|---|---|
//! | `x-noslate-method` | the method the function sees | `POST` |
//! | `x-noslate-url` | the url (path and query) the function sees | `/` |
//! | `x-noslate-headers` | a JSON array of `[name, value]` pairs, in order, or an object of names to values (a string, or an array of strings for a repeated name) | the request's own headers, less the framing ones and `x-noslate-*` |
//! | `x-noslate-baggage` | the same, of keys and values | none |
//! | `x-noslate-timeout` | milliseconds until the response head is due | the profile's timeout |
//! | `x-noslate-deadline` | that moment, in milliseconds since the Unix epoch | |
//! | `x-noslate-request-id` | the request id the function and the logs see | the function's `x-fc-request-id` header if not empty (as on the FC port), else a fresh one |
//!
//! An invocation that names a method or a url is an HTTP-trigger invocation (the function's
//! status and headers pass through); one that names neither is an event, as on FC's
//! `POST /invoke`. A timeout or a deadline given here covers the wait for the response head,
//! not the whole body, so a long stream is not cut by a deadline meant for the answer to start;
//! without either, the profile's timeout applies as on the FC port.
//!
//! Both sides use this module: the runtime parses, and the CLI builds the same headers.

use crate::fc::InvokeKind;
use crate::http::HeaderList;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// The method the function sees.
pub const METHOD: &str = "x-noslate-method";
/// The url the function sees.
pub const URL: &str = "x-noslate-url";
/// The function's headers, as JSON pairs or an object.
pub const HEADERS: &str = "x-noslate-headers";
/// Noslate's baggage, as JSON pairs or an object.
pub const BAGGAGE: &str = "x-noslate-baggage";
/// Milliseconds until the response head is due.
pub const TIMEOUT: &str = "x-noslate-timeout";
/// The head's deadline, in milliseconds since the Unix epoch.
pub const DEADLINE: &str = "x-noslate-deadline";
/// The request id.
pub const REQUEST_ID: &str = "x-noslate-request-id";
/// Set on every answer the runtime made itself (refusals, timeouts, function errors), with the
/// error's type: a client tells them from a function's own response of the same status.
pub const ERROR: &str = "x-noslate-error";

/// The longest request id accepted: ids go into log lines and the function's context.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Where the names of the metadata headers start: none of them is the function's.
const NOSLATE_PREFIX: &str = "x-noslate-";

/// Framing headers of the admin request, which are not the function's.
const FRAMING: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "content-length",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "proxy-connection",
];

/// An invocation's description, parsed from an admin request's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Event or HTTP trigger.
    pub kind: InvokeKind,
    /// The method the function sees.
    pub method: String,
    /// The url the function sees.
    pub url: String,
    /// The function's headers.
    pub headers: HeaderList,
    /// Noslate's baggage, if any was given.
    pub baggage: Option<Vec<(String, String)>>,
    /// Milliseconds until the response head is due, if the caller set a timeout or deadline.
    pub head_timeout_ms: Option<u64>,
    /// The caller's request id.
    pub request_id: Option<String>,
}

/// Why an admin invocation's headers are refused; the message names the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataError(pub String);

impl std::fmt::Display for MetadataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(header: &str, why: impl std::fmt::Display) -> MetadataError {
    MetadataError(format!("{header}: {why}"))
}

/// The only value of `name` in `headers`; a repeated one is refused, since two methods or
/// two deadlines cannot both hold.
fn single<'a>(headers: &'a HeaderList, name: &str) -> Result<Option<&'a str>, MetadataError> {
    let mut found = None;
    for (k, v) in headers {
        if k.eq_ignore_ascii_case(name) {
            if found.is_some() {
                return Err(bad(name, "given more than once"));
            }
            found = Some(v);
        }
    }
    Ok(found)
}

/// An HTTP token (RFC 9110 `tchar`s), as a method must be.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// One `[name, value]` entry, borrowed from the JSON text unless it had to be unescaped: the
/// headers a gateway forwards come this way with every invocation, and their strings are then
/// copied once, into the function's header list.
#[derive(Deserialize)]
struct Pair<'a>(#[serde(borrow)] Cow<'a, str>, #[serde(borrow)] Cow<'a, str>);

/// A JSON string, borrowed from the text unless it had to be unescaped.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// The entries of `x-noslate-headers` or `x-noslate-baggage`, in order. Two shapes are taken:
/// an array of `[name, value]` pairs, and an object whose values are strings, or arrays of
/// strings for a repeated name. The object is what `JSON.stringify` makes of Node's
/// `req.headers` in one native call; building the pairs in JavaScript took a gateway 40 %
/// longer for the twenty-odd headers FC sends.
struct PairList<'a>(Vec<Pair<'a>>);

impl<'de> Deserialize<'de> for PairList<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PairListVisitor)
    }
}

struct PairListVisitor;

impl<'de> Visitor<'de> for PairListVisitor {
    type Value = PairList<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[[name, value], ...] or {name: value, ...}")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Ok(PairList(all_of(seq)?))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(Text(name)) = map.next_key::<Text<'de>>()? {
            match map.next_value::<Values<'de>>()? {
                Values::One(value) => out.push(Pair(name, value)),
                Values::Many(values) => {
                    out.extend(values.into_iter().map(|Text(v)| Pair(name.clone(), v)));
                }
            }
        }
        Ok(PairList(out))
    }
}

/// An object entry's value: one string, or one per repetition of its name.
enum Values<'a> {
    One(Cow<'a, str>),
    Many(Vec<Text<'a>>),
}

impl<'de> Deserialize<'de> for Values<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValuesVisitor)
    }
}

struct ValuesVisitor;

impl<'de> Visitor<'de> for ValuesVisitor {
    type Value = Values<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an array of strings")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Values::One(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Values::One(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Values::One(Cow::Owned(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Ok(Values::Many(all_of(seq)?))
    }
}

/// Every element of a JSON array, borrowing what it can.
fn all_of<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(mut seq: A) -> Result<Vec<T>, A::Error> {
    let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
    while let Some(item) = seq.next_element()? {
        out.push(item);
    }
    Ok(out)
}

/// Pairs from a JSON array of two-string arrays, or from an object of names to values. Strings
/// stand for bytes (one char per byte, as headers are presented to functions), so a char past
/// U+00FF cannot be sent and is refused.
fn pairs<'a>(header: &str, value: &'a str) -> Result<Vec<Pair<'a>>, MetadataError> {
    // A well-formed list (every gateway invocation carries one) parses straight into pairs;
    // anything else is read again as a JSON value, only to say what is wrong with it.
    let Ok(PairList(out)) = serde_json::from_str::<PairList<'a>>(value) else {
        return Err(shape_error(header, value));
    };
    // Bytes, not chars: past U+00FF every char's UTF-8 starts with a byte of 0xC4 or more, and
    // below it no byte is that large. Decoding chars here cost more than parsing the JSON, and
    // so did a scan that stops at the first hit: this one has no branch, so it compiles to
    // vector compares over the kilobyte of headers a gateway forwards from FC.
    let invalid = |s: &str| {
        (s.bytes()).fold(false, |hit, b| {
            hit | (b >= 0xc4) | (b == b'\r') | (b == b'\n')
        })
    };
    if let Some(index) =
        (out.iter()).position(|Pair(n, v)| n.is_empty() || invalid(n) || invalid(v))
    {
        return Err(bad(
            header,
            format!(
                "entry {index} has an empty name, a line break, or a char past U+00FF \
                 (values stand for bytes)"
            ),
        ));
    }
    Ok(out)
}

/// Why `value` is not a JSON array of two-string arrays.
fn shape_error(header: &str, value: &str) -> MetadataError {
    let parsed: serde_json::Value = match serde_json::from_str(value) {
        Ok(parsed) => parsed,
        Err(e) => {
            return bad(
                header,
                format!("not JSON ({e}); expected [[name, value], ...]"),
            );
        }
    };
    let items = match parsed {
        serde_json::Value::Array(items) => items,
        serde_json::Value::Object(entries) => {
            let well_formed = |v: &serde_json::Value| match v {
                serde_json::Value::String(_) => true,
                serde_json::Value::Array(all) => all.iter().all(serde_json::Value::is_string),
                _ => false,
            };
            return match entries.iter().find(|(_, v)| !well_formed(v)) {
                Some((name, _)) => bad(
                    header,
                    format!("the value of {name:?} must be a string or an array of strings"),
                ),
                None => bad(header, "expected a JSON object of names to values"),
            };
        }
        _ => {
            return bad(
                header,
                "expected a JSON array of [name, value] pairs or an object of names to values",
            );
        }
    };
    for (index, item) in items.iter().enumerate() {
        let serde_json::Value::Array(pair) = item else {
            return bad(header, format!("entry {index} is not a [name, value] pair"));
        };
        if pair.len() != 2 {
            return bad(header, format!("entry {index} is not a [name, value] pair"));
        }
        if !pair.iter().all(serde_json::Value::is_string) {
            return bad(header, format!("entry {index} must hold two strings"));
        }
    }
    bad(header, "expected a JSON array of [name, value] pairs")
}

/// A count of milliseconds.
fn millis(header: &str, value: &str) -> Result<u64, MetadataError> {
    value.trim().parse::<u64>().map_err(|_| {
        bad(
            header,
            format!("{value:?} is not a whole number of milliseconds"),
        )
    })
}

fn now_unix_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

impl Metadata {
    /// Parses an admin invocation's headers. `now_ms` is the wall clock in milliseconds since
    /// the Unix epoch, for a deadline.
    pub fn parse(headers: &HeaderList, now_ms: u64) -> Result<Metadata, MetadataError> {
        let method = single(headers, METHOD)?;
        let url = single(headers, URL)?;
        if let Some(m) = method
            && !is_token(m)
        {
            return Err(bad(METHOD, format!("{m:?} is not an HTTP method")));
        }
        if let Some(u) = url
            && (u.is_empty() || u.bytes().any(|b| b <= b' ' || b == 0x7f))
        {
            return Err(bad(
                URL,
                format!("{u:?} is empty or holds spaces or control bytes"),
            ));
        }
        let kind = if method.is_some() || url.is_some() {
            InvokeKind::Http
        } else {
            InvokeKind::Event
        };
        let function_headers = match single(headers, HEADERS)? {
            Some(json) => pairs(HEADERS, json)?
                .iter()
                .map(|Pair(n, v)| (n, v))
                .collect(),
            None => headers
                .iter()
                .filter(|(k, _)| {
                    let noslate = (k.as_bytes().get(..NOSLATE_PREFIX.len()))
                        .is_some_and(|p| p.eq_ignore_ascii_case(NOSLATE_PREFIX.as_bytes()));
                    !noslate && !FRAMING.iter().any(|f| k.eq_ignore_ascii_case(f))
                })
                .collect(),
        };
        let baggage = single(headers, BAGGAGE)?
            .map(|json| pairs(BAGGAGE, json))
            .transpose()?
            .map(|list| {
                (list.into_iter())
                    .map(|Pair(n, v)| (n.into_owned(), v.into_owned()))
                    .collect()
            });
        let timeout = single(headers, TIMEOUT)?
            .map(|v| millis(TIMEOUT, v))
            .transpose()?;
        let deadline = single(headers, DEADLINE)?
            .map(|v| millis(DEADLINE, v))
            .transpose()?;
        // Both given: the earlier moment wins, as a caller's deadline is never extended.
        let head_timeout_ms = match (timeout, deadline.map(|d| d.saturating_sub(now_ms))) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let request_id = single(headers, REQUEST_ID)?
            .map(|id| {
                let ok = !id.is_empty()
                    && id.len() <= MAX_REQUEST_ID_LEN
                    && id.bytes().all(|b| b.is_ascii_graphic());
                if ok {
                    Ok(id.to_owned())
                } else {
                    Err(bad(
                        REQUEST_ID,
                        format!(
                            "must be 1 to {MAX_REQUEST_ID_LEN} visible ASCII characters, \
                             without spaces"
                        ),
                    ))
                }
            })
            .transpose()?;
        Ok(Metadata {
            kind,
            method: method.unwrap_or("POST").to_owned(),
            url: url.unwrap_or("/").to_owned(),
            headers: function_headers,
            baggage,
            head_timeout_ms,
            request_id,
        })
    }

    /// Parses with the current wall clock.
    pub fn parse_now(headers: &HeaderList) -> Result<Metadata, MetadataError> {
        Metadata::parse(headers, now_unix_ms())
    }
}

/// Encodes pairs as `x-noslate-headers` / `x-noslate-baggage` carry them: JSON, with every char
/// past ASCII escaped so that the header value stays ASCII.
pub fn encode_pairs(pairs: &[(String, String)]) -> String {
    let json = serde_json::to_string(
        &pairs
            .iter()
            .map(|(k, v)| [k.as_str(), v.as_str()])
            .collect::<Vec<_>>(),
    )
    .unwrap_or_else(|_| "[]".to_owned());
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(list: &[(&str, &str)]) -> HeaderList {
        list.iter().copied().collect()
    }

    fn owned(list: &[(&str, &str)]) -> Vec<(String, String)> {
        h(list).to_pairs()
    }

    #[test]
    fn without_metadata_it_is_an_event_with_the_requests_own_headers() {
        let m = Metadata::parse(
            &h(&[
                ("Host", "noslate"),
                ("Content-Length", "2"),
                ("X-A", "1"),
                ("x-noslate-timeout", "50"),
            ]),
            0,
        )
        .unwrap();
        assert_eq!(m.kind, InvokeKind::Event);
        assert_eq!(m.method, "POST");
        assert_eq!(m.url, "/");
        assert_eq!(m.headers, h(&[("X-A", "1")]));
        assert_eq!(m.head_timeout_ms, Some(50));
        assert_eq!(m.baggage, None);
        assert_eq!(m.request_id, None);
    }

    #[test]
    fn a_method_or_url_makes_an_http_invocation_with_exact_headers() {
        let headers = encode_pairs(&owned(&[
            ("Host", "example.com"),
            ("content-length", "5"),
            ("x-é", "caf\u{e9}"),
            ("x-a", "1"),
            ("x-a", "2"),
        ]));
        assert!(headers.is_ascii());
        let m = Metadata::parse(
            &h(&[
                ("x-noslate-method", "PUT"),
                ("x-noslate-url", "/a/b?c=1"),
                ("x-noslate-headers", &headers),
                ("x-noslate-baggage", r#"[["k","v"],["k","w"]]"#),
                ("x-noslate-request-id", "abc-1"),
                ("x-noslate-deadline", "10500"),
            ]),
            10_000,
        )
        .unwrap();
        assert_eq!(m.kind, InvokeKind::Http);
        assert_eq!(m.method, "PUT");
        assert_eq!(m.url, "/a/b?c=1");
        assert_eq!(
            m.headers,
            h(&[
                ("Host", "example.com"),
                ("content-length", "5"),
                ("x-é", "caf\u{e9}"),
                ("x-a", "1"),
                ("x-a", "2"),
            ])
        );
        assert_eq!(m.baggage, Some(owned(&[("k", "v"), ("k", "w")])));
        assert_eq!(m.request_id.as_deref(), Some("abc-1"));
        assert_eq!(m.head_timeout_ms, Some(500));
        let only_url = Metadata::parse(&h(&[("x-noslate-url", "/x")]), 0).unwrap();
        assert_eq!(
            (only_url.kind, only_url.method.as_str()),
            (InvokeKind::Http, "POST")
        );
    }

    #[test]
    fn the_earlier_of_timeout_and_deadline_wins_and_a_past_deadline_is_zero() {
        let both = |t: &str, d: &str| {
            Metadata::parse(
                &h(&[("x-noslate-timeout", t), ("x-noslate-deadline", d)]),
                1_000,
            )
            .unwrap()
            .head_timeout_ms
        };
        assert_eq!(both("300", "1200"), Some(200));
        assert_eq!(both("100", "1200"), Some(100));
        assert_eq!(both("100", "10"), Some(0));
    }

    #[test]
    fn bad_metadata_names_the_header() {
        let err = |list: &[(&str, &str)]| Metadata::parse(&h(list), 0).unwrap_err().0;
        assert!(err(&[("x-noslate-method", "G ET")]).starts_with("x-noslate-method:"));
        assert!(err(&[("x-noslate-url", "/a b")]).starts_with("x-noslate-url:"));
        assert!(err(&[("x-noslate-url", "")]).starts_with("x-noslate-url:"));
        assert!(err(&[("x-noslate-headers", "{")]).contains("not JSON"));
        assert!(err(&[("x-noslate-headers", "7")]).contains("JSON array"));
        assert!(err(&[("x-noslate-headers", r#""a""#)]).contains("or an object"));
        assert!(err(&[("x-noslate-headers", r#"{"a":1}"#)]).contains(r#"value of "a" must"#));
        assert!(err(&[("x-noslate-headers", r#"{"a":["b",2]}"#)]).contains(r#"value of "a""#));
        assert!(err(&[("x-noslate-headers", r#"{"a":null}"#)]).contains(r#"value of "a""#));
        assert!(err(&[("x-noslate-headers", r#"{"":"v"}"#)]).contains("empty name"));
        assert!(err(&[("x-noslate-headers", r#"{"a":"b\r\nc: d"}"#)]).contains("line break"));
        assert!(err(&[("x-noslate-baggage", r#"{"a":"\u0100"}"#)]).contains("U+00FF"));
        assert!(err(&[("x-noslate-headers", "[[1,2]]")]).contains("entry 0 must hold two strings"));
        assert!(err(&[("x-noslate-headers", r#"[["a"]]"#)]).contains("entry 0 is not a [name"));
        assert!(
            err(&[("x-noslate-headers", r#"[["a","b"],["c","d","e"]]"#)])
                .contains("entry 1 is not a [name")
        );
        assert!(err(&[("x-noslate-headers", r#"[["a","b"],7]"#)]).contains("entry 1 is not a"));
        assert!(err(&[("x-noslate-headers", r#"[["","v"]]"#)]).contains("empty name"));
        assert!(err(&[("x-noslate-baggage", r#"[["a","\u0100"]]"#)]).contains("U+00FF"));
        assert!(err(&[("x-noslate-baggage", r#"[["a","x\ny"]]"#)]).contains("line break"));
        assert!(err(&[("x-noslate-headers", r#"[["a","x\ry"]]"#)]).contains("line break"));
        for past_latin1 in ["\u{100}", "\u{20ac}", "\u{1f600}"] {
            let raw = format!(r#"[["a","{past_latin1}"]]"#);
            assert!(
                err(&[("x-noslate-headers", &raw)]).contains("U+00FF"),
                "{past_latin1}"
            );
        }
        assert!(err(&[("x-noslate-timeout", "-1")]).starts_with("x-noslate-timeout:"));
        assert!(err(&[("x-noslate-deadline", "soon")]).starts_with("x-noslate-deadline:"));
        assert!(err(&[("x-noslate-request-id", "a b")]).starts_with("x-noslate-request-id:"));
        let long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        assert!(err(&[("x-noslate-request-id", &long)]).contains("128"));
        assert!(
            err(&[("x-noslate-method", "GET"), ("X-Noslate-Method", "PUT")])
                .contains("more than once")
        );
    }

    #[test]
    fn an_object_of_names_gives_the_same_pairs_in_order() {
        let parse = |json: &str| {
            let list = h(&[("x-noslate-url", "/"), ("x-noslate-headers", json)]);
            Metadata::parse(&list, 0).unwrap().headers
        };
        let object = r#"{"b":"2","a":"1","set-cookie":["x=1","y=2"],"q":"\"é\"","e":[]}"#;
        let expected = [
            ("b", "2"),
            ("a", "1"),
            ("set-cookie", "x=1"),
            ("set-cookie", "y=2"),
            ("q", "\"é\""),
        ];
        assert_eq!(parse(object), expected);
        let pairs = encode_pairs(&owned(&expected));
        assert_eq!(parse(&pairs), expected);
        assert_eq!(parse("{}"), [] as [(&str, &str); 0]);
        assert_eq!(parse(r#"{"a":"1","a":"2"}"#), [("a", "1"), ("a", "2")]);
        let baggage = h(&[("x-noslate-baggage", r#"{"k":"v","k2":["w"]}"#)]);
        let m = Metadata::parse(&baggage, 0).unwrap();
        let expected = [("k", "v"), ("k2", "w")].map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(m.baggage.as_deref(), Some(&expected[..]));
    }

    #[test]
    fn any_cut_or_changed_byte_of_a_list_gets_an_answer() {
        let lists = [
            r#"[["a","1"],["b","x\u00e9\"y"]]"#,
            r#"{"a":"1","b":["2","3"],"c":"\u00e9"}"#,
        ];
        let parse = |json: &str| {
            let list = h(&[("x-noslate-url", "/"), ("x-noslate-headers", json)]);
            Metadata::parse(&list, 0)
        };
        for list in lists {
            assert!(parse(list).is_ok(), "{list}");
            for cut in 0..list.len() {
                assert!(parse(&list[..cut]).is_err(), "{list} cut at {cut}");
            }
            for at in 0..list.len() {
                for b in [b'"', b'[', b']', b'{', b'}', b':', b',', b'\\', b'x', b'1'] {
                    let mut bytes = list.as_bytes().to_vec();
                    bytes[at] = b;
                    // Either answer will do; what matters is that there is one.
                    let _ = parse(&String::from_utf8_lossy(&bytes));
                }
            }
        }
    }

    #[test]
    fn every_latin1_char_is_taken_raw_or_escaped() {
        let latin1: String = (1u8..=0xff)
            .filter(|b| !matches!(b, b'\r' | b'\n'))
            .map(char::from)
            .collect();
        let escaped = encode_pairs(&owned(&[("x-v", &latin1)]));
        let raw = serde_json::to_string(&[["x-v", latin1.as_str()]]).unwrap();
        for list in [escaped, raw] {
            let m = Metadata::parse(
                &h(&[("x-noslate-method", "GET"), ("x-noslate-headers", &list)]),
                0,
            )
            .unwrap();
            assert_eq!(m.headers.get("x-v"), Some(latin1.as_str()));
        }
    }
}
