//! The HTTP/1.1 codec: sans-io parsing of request heads and chunked bodies, and rendering of
//! response heads and error responses. Nothing here touches a socket; the connection state
//! machine feeds bytes in and writes the produced bytes out.

pub mod chunked;
pub mod date;
pub mod error;
pub mod headers;
pub mod request;
pub mod response;

pub use chunked::{Chunk, ChunkedDecoder, LAST_CHUNK, encode_chunk_header};
pub use date::DateCache;
pub use error::HttpError;
pub use headers::HeaderList;
pub use request::{BodyKind, Parsed, RequestHead, RequestLimits, parse_request};
pub use response::{
    CONTINUE_100, Framing, error_body, reason_phrase, response_framing, write_error, write_head,
    write_json_response,
};
