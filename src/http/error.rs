//! The one error type of the codec: every malformed or over-limit input ends up here, carrying
//! enough to pick the status code and render a JSON error body.

use std::fmt;

/// Why a request could not be parsed or accepted. Each variant maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The request violates HTTP/1.1 syntax or framing rules (400).
    Malformed(String),
    /// The request line and headers exceed `limit` bytes (431).
    HeadTooLarge {
        /// The configured maximum head size, in bytes.
        limit: usize,
    },
    /// The request has more than `limit` header fields (431).
    TooManyHeaders {
        /// The maximum number of header fields accepted.
        limit: usize,
    },
    /// The request body exceeds `limit` bytes (413).
    BodyTooLarge {
        /// The configured maximum body size, in bytes.
        limit: u64,
    },
    /// The chunked body encoding is broken (400).
    BadChunk(String),
    /// The request uses a feature this server does not implement, such as a transfer-coding
    /// other than chunked (501).
    NotImplemented(String),
    /// The request carries an `Expect` value other than `100-continue` (417).
    ExpectationFailed(String),
    /// The request head did not complete within this many milliseconds of its first byte (408).
    HeadTimeout(u64),
}

impl HttpError {
    /// The HTTP status code to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Self::Malformed(_) | Self::BadChunk(_) => 400,
            Self::HeadTooLarge { .. } | Self::TooManyHeaders { .. } => 431,
            Self::BodyTooLarge { .. } => 413,
            Self::NotImplemented(_) => 501,
            Self::ExpectationFailed(_) => 417,
            Self::HeadTimeout(_) => 408,
        }
    }

    /// The `errorType` of the JSON error body, in the style of FC's error types.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "MalformedRequest",
            Self::HeadTooLarge { .. } | Self::TooManyHeaders { .. } => {
                "RequestHeaderFieldsTooLarge"
            }
            Self::BodyTooLarge { .. } => "PayloadTooLarge",
            Self::BadChunk(_) => "InvalidChunk",
            Self::NotImplemented(_) => "NotImplemented",
            Self::ExpectationFailed(_) => "ExpectationFailed",
            Self::HeadTimeout(_) => "RequestTimeout",
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(what) => write!(f, "malformed request: {what}"),
            Self::HeadTooLarge { limit } => {
                write!(
                    f,
                    "request line and headers exceed http.maxHeaderBytes ({limit} bytes)"
                )
            }
            Self::TooManyHeaders { limit } => {
                write!(
                    f,
                    "request has more than http.maxHeaders ({limit}) header fields"
                )
            }
            Self::BodyTooLarge { limit } => {
                write!(
                    f,
                    "request body exceeds http.maxRequestBodySize ({limit} bytes)"
                )
            }
            Self::BadChunk(what) => write!(f, "invalid chunked body: {what}"),
            Self::NotImplemented(what) => write!(f, "not implemented: {what}"),
            Self::ExpectationFailed(what) => write!(f, "expectation failed: {what}"),
            Self::HeadTimeout(ms) => write!(
                f,
                "the request head did not complete within http.headerTimeoutMs ({ms} ms)"
            ),
        }
    }
}

impl std::error::Error for HttpError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_type_per_variant() {
        let cases = [
            (HttpError::Malformed("x".into()), 400, "MalformedRequest"),
            (
                HttpError::HeadTooLarge { limit: 1 },
                431,
                "RequestHeaderFieldsTooLarge",
            ),
            (
                HttpError::TooManyHeaders { limit: 1 },
                431,
                "RequestHeaderFieldsTooLarge",
            ),
            (HttpError::BodyTooLarge { limit: 1 }, 413, "PayloadTooLarge"),
            (HttpError::BadChunk("x".into()), 400, "InvalidChunk"),
            (HttpError::NotImplemented("x".into()), 501, "NotImplemented"),
            (
                HttpError::ExpectationFailed("x".into()),
                417,
                "ExpectationFailed",
            ),
        ];
        for (err, status, kind) in cases {
            assert_eq!(err.status(), status, "{err:?}");
            assert_eq!(err.error_type(), kind, "{err:?}");
        }
    }

    #[test]
    fn messages_name_problem_and_limit() {
        assert_eq!(
            HttpError::BodyTooLarge { limit: 33_554_432 }.to_string(),
            "request body exceeds http.maxRequestBodySize (33554432 bytes)"
        );
        assert_eq!(
            HttpError::HeadTooLarge { limit: 16_384 }.to_string(),
            "request line and headers exceed http.maxHeaderBytes (16384 bytes)"
        );
        assert_eq!(
            HttpError::TooManyHeaders { limit: 100 }.to_string(),
            "request has more than http.maxHeaders (100) header fields"
        );
        assert_eq!(
            HttpError::Malformed("invalid header name".into()).to_string(),
            "malformed request: invalid header name"
        );
        assert_eq!(
            HttpError::BadChunk("missing CRLF after chunk data".into()).to_string(),
            "invalid chunked body: missing CRLF after chunk data"
        );
    }

    #[test]
    fn is_std_error() {
        let err: Box<dyn std::error::Error> = Box::new(HttpError::NotImplemented("gzip".into()));
        assert_eq!(err.to_string(), "not implemented: gzip");
    }
}
