//! The admin socket: a Unix-domain socket (mode 0600) in the work directory, never on the FC
//! port. It speaks HTTP/1.1 with JSON bodies, through the same parser and event loop as the FC
//! port, so its routes grow like any HTTP API:
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/v1/workers` | one object per worker: id, function, pid, state, in-flight, RSS, CPU, age, enforcement |
//! | GET | `/v1/stats` | exit counters by reason, and per-function worker and queue counts |
//!
//! This module holds what both sides share (the path, the routes) and the CLI's client.

pub mod client;

use std::path::{Path, PathBuf};

/// File name of the admin socket inside `NOSLATE_WORKDIR` (Noslate's name for its socket).
pub const SOCKET_NAME: &str = "noslated.sock";

/// The admin socket's path for a work directory.
pub fn socket_path(workdir: &Path) -> PathBuf {
    workdir.join(SOCKET_NAME)
}

/// An admin request, decided from its method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /v1/workers`.
    Workers,
    /// `GET /v1/stats`.
    Stats,
    /// A known path with the wrong method; carries the allowed one.
    MethodNotAllowed(&'static str),
    /// No such path.
    NotFound,
}

/// Routes an admin request.
pub fn route(method: &str, path: &str) -> Route {
    let (want, route) = match path.trim_end_matches('/') {
        "/v1/workers" => ("GET", Route::Workers),
        "/v1/stats" => ("GET", Route::Stats),
        _ => return Route::NotFound,
    };
    if method == want || (method == "HEAD" && want == "GET") {
        route
    } else {
        Route::MethodNotAllowed(want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_method_and_path() {
        assert_eq!(route("GET", "/v1/workers"), Route::Workers);
        assert_eq!(route("GET", "/v1/workers/"), Route::Workers);
        assert_eq!(route("POST", "/v1/stats"), Route::MethodNotAllowed("GET"));
        assert_eq!(route("GET", "/v2/workers"), Route::NotFound);
        assert_eq!(
            socket_path(Path::new("/w")),
            PathBuf::from("/w/noslated.sock")
        );
    }
}
