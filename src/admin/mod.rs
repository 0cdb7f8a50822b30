//! The admin socket: a Unix-domain socket (mode 0600) in the work directory, never on the FC
//! port. It speaks HTTP/1.1 with JSON bodies, through the same parser and event loop as the FC
//! port, so its routes grow like any HTTP API:
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/v1/workers` | one object per worker: id, function, pid, state, in-flight, RSS, CPU, age, enforcement |
//! | GET | `/v1/health` | `health`, `reason` (`Circuit Breaker Enabled` while the breaker is open), `lifecycle`, `breakerOpen`, `instance` (changes when the runtime restarts) |
//! | GET | `/v1/stats` | exit counters by reason, per-function worker states, queue lengths, rejections |
//! | GET, PUT | `/v1/functions` | the function profile set (PUT replaces it whole, Noslate's `setFunctionProfile`) |
//! | GET, PUT | `/v1/services` | the service profiles |
//! | GET, PUT | `/v1/env` | the platform environment variables given to every new worker |
//! | POST | `/v1/invoke/NAME`, `/v1/invoke/service/NAME` | an invocation: an event, or an HTTP request described by `x-noslate-*` headers ([`invocation`]); the body streams both ways |
//! | GET | `/v1/inspector` | the functions whose inspector is on, each inspect worker with its 127.0.0.1 port, `ws://` and DevTools URLs |
//! | GET | `/v1/inspector/NAME` | the same for one function (`"use": false` when its inspector is off) |
//! | PUT | `/v1/inspector/NAME` | body `{"use": true\|false}`: turn the function's inspector on or off (Noslate's `useInspector`); 400 naming the problem for any other body, 404 for an unknown function, 409 for a function that is not Node.js |
//!
//! This module holds what both sides share (the path, the routes) and the CLI's client.

pub mod client;
pub mod invocation;
pub mod top;

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
    /// `GET /v1/health`: whether invocations are served, and the runtime's instance.
    Health,
    /// `GET /v1/metrics`: Prometheus' text format.
    Metrics,
    /// `GET /v1/functions`.
    GetFunctions,
    /// `PUT /v1/functions`.
    SetFunctions,
    /// `GET /v1/services`.
    GetServices,
    /// `PUT /v1/services`.
    SetServices,
    /// `GET /v1/env`.
    GetEnv,
    /// `PUT /v1/env`.
    SetEnv,
    /// `POST /v1/invoke/...`: invoke a function or service.
    Invoke(crate::fc::Target),
    /// `GET /v1/inspector`: every function whose inspector is on.
    Inspectors,
    /// `GET /v1/inspector/NAME`.
    InspectorOf(String),
    /// `PUT /v1/inspector/NAME`: turn its inspector on or off.
    SetInspector(String),
    /// A known path with the wrong method; carries the allowed ones.
    MethodNotAllowed(&'static str),
    /// No such path.
    NotFound,
}

/// Routes an admin request.
pub fn route(method: &str, path: &str) -> Route {
    let path = path.trim_end_matches('/');
    let get = matches!(method, "GET" | "HEAD");
    let put = method == "PUT";
    let pick = |get_route: Route, put_route: Route| {
        if get {
            get_route
        } else if put {
            put_route
        } else {
            Route::MethodNotAllowed("GET, PUT")
        }
    };
    match path {
        "/v1/workers" if get => Route::Workers,
        "/v1/stats" if get => Route::Stats,
        "/v1/health" if get => Route::Health,
        "/v1/metrics" if get => Route::Metrics,
        "/v1/workers" | "/v1/stats" | "/v1/metrics" | "/v1/health" => {
            Route::MethodNotAllowed("GET")
        }
        "/v1/functions" => pick(Route::GetFunctions, Route::SetFunctions),
        "/v1/services" => pick(Route::GetServices, Route::SetServices),
        "/v1/env" => pick(Route::GetEnv, Route::SetEnv),
        "/v1/inspector" if get => Route::Inspectors,
        "/v1/inspector" => Route::MethodNotAllowed("GET"),
        _ if path.starts_with("/v1/inspector/") => {
            let segment = path.trim_start_matches("/v1/inspector/");
            match crate::http::request::decode_path_segment(segment) {
                None => Route::NotFound,
                Some(name) => pick(Route::InspectorOf(name.clone()), Route::SetInspector(name)),
            }
        }
        _ => match path.strip_prefix("/v1/invoke/") {
            Some(rest) if method == "POST" => {
                crate::fc::path_target(rest).map_or(Route::NotFound, Route::Invoke)
            }
            Some(_) => Route::MethodNotAllowed("POST"),
            None => Route::NotFound,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_method_and_path() {
        use crate::fc::Target;
        assert_eq!(route("GET", "/v1/workers"), Route::Workers);
        assert_eq!(route("GET", "/v1/workers/"), Route::Workers);
        assert_eq!(route("GET", "/v1/health"), Route::Health);
        assert_eq!(route("PUT", "/v1/health"), Route::MethodNotAllowed("GET"));
        assert_eq!(route("POST", "/v1/stats"), Route::MethodNotAllowed("GET"));
        assert_eq!(route("GET", "/v2/workers"), Route::NotFound);
        assert_eq!(route("PUT", "/v1/functions"), Route::SetFunctions);
        assert_eq!(route("PUT", "/v1/env"), Route::SetEnv);
        assert_eq!(
            route("DELETE", "/v1/services"),
            Route::MethodNotAllowed("GET, PUT")
        );
        assert_eq!(
            route("POST", "/v1/invoke/hello"),
            Route::Invoke(Target::Function("hello".into()))
        );
        assert_eq!(
            route("POST", "/v1/invoke/service/front"),
            Route::Invoke(Target::Service("front".into()))
        );
        assert_eq!(
            route("POST", "/v1/invoke/service/%66ront"),
            Route::Invoke(Target::Service("front".into()))
        );
        assert_eq!(route("POST", "/v1/invoke/a%2Fb"), Route::NotFound);
        assert_eq!(route("POST", "/v1/invoke/%zz"), Route::NotFound);
        assert_eq!(
            route("GET", "/v1/invoke/hello"),
            Route::MethodNotAllowed("POST")
        );
        assert_eq!(route("GET", "/v1/inspector"), Route::Inspectors);
        assert_eq!(
            route("PUT", "/v1/inspector"),
            Route::MethodNotAllowed("GET")
        );
        assert_eq!(
            route("PUT", "/v1/inspector/hello"),
            Route::SetInspector("hello".into())
        );
        assert_eq!(
            route("GET", "/v1/inspector/hello/"),
            Route::InspectorOf("hello".into())
        );
        assert_eq!(
            route("POST", "/v1/inspector/hello"),
            Route::MethodNotAllowed("GET, PUT")
        );
        assert_eq!(route("PUT", "/v1/inspector/a/b"), Route::NotFound);
        assert_eq!(
            socket_path(Path::new("/w")),
            PathBuf::from("/w/noslated.sock")
        );
    }
}
