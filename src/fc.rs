//! Function Compute's side of the contract: which route a request is, which function it targets,
//! the context built from FC's `x-fc-*` headers, request ids, and the log lines FC expects.

use crate::http::HeaderList;
use crate::wire;
use serde::Serialize;

/// What an incoming request asks the runtime to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `POST /initialize`: wait for reserved workers and their initializers.
    Initialize,
    /// `GET /pre-freeze`.
    PreFreeze,
    /// `GET /pre-stop`: drain and stop.
    PreStop,
    /// `GET /healthz`: answered by the runtime itself.
    Healthz,
    /// `GET <readinessPath>`: whether the runtime can serve.
    Ready,
    /// An invocation of a function.
    Invoke {
        /// Event (`POST /invoke`) or HTTP trigger.
        kind: InvokeKind,
        /// The function or service named by the path (`/invoke/NAME`,
        /// `/invoke/service/NAME`), if any.
        function_from_path: Option<Target>,
    },
}

/// What an invocation names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A function, by name.
    Function(String),
    /// A service (which picks a function), by name.
    Service(String),
}

/// The two invocation styles FC has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvokeKind {
    /// Event function: the body is the payload; success is 200 with `x-fc-status: 200`.
    Event,
    /// HTTP trigger: the request is forwarded as-is and the function's status passes through.
    Http,
}

impl InvokeKind {
    /// The name used in the wire protocol's request head.
    pub fn as_str(self) -> &'static str {
        match self {
            InvokeKind::Event => "event",
            InvokeKind::Http => "http",
        }
    }
}

/// A request's route could not be decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError(pub String);

/// Decides the route. The readiness path (GET/HEAD) is always the runtime's: FC's HTTP health
/// check may reach it with any headers. Otherwise `x-fc-control-path` wins when present, then
/// the method and path, and any request that is not one of the runtime's own routes is an
/// HTTP-trigger invocation.
pub fn route(
    method: &str,
    path: &str,
    control_path: Option<&str>,
    readiness_path: &str,
) -> Result<Route, RouteError> {
    if path == readiness_path && matches!(method, "GET" | "HEAD") {
        return Ok(Route::Ready);
    }
    let function_from_path = invoke_path_function(path);
    if let Some(control) = control_path {
        return match control {
            "/invoke" => Ok(Route::Invoke {
                kind: InvokeKind::Event,
                function_from_path,
            }),
            "/http-invoke" => Ok(Route::Invoke {
                kind: InvokeKind::Http,
                function_from_path: None,
            }),
            "/initialize" => Ok(Route::Initialize),
            "/pre-freeze" => Ok(Route::PreFreeze),
            "/pre-stop" => Ok(Route::PreStop),
            other => Err(RouteError(format!(
                "unknown x-fc-control-path {other:?}; expected /invoke, /http-invoke, \
                 /initialize, /pre-freeze or /pre-stop"
            ))),
        };
    }
    Ok(match (method, path) {
        ("POST", "/initialize") => Route::Initialize,
        ("GET", "/pre-freeze") => Route::PreFreeze,
        ("GET", "/pre-stop") => Route::PreStop,
        ("GET" | "HEAD", "/healthz") => Route::Healthz,
        ("POST", "/invoke") => Route::Invoke {
            kind: InvokeKind::Event,
            function_from_path: None,
        },
        ("POST", _) if function_from_path.is_some() => Route::Invoke {
            kind: InvokeKind::Event,
            function_from_path,
        },
        _ => Route::Invoke {
            kind: InvokeKind::Http,
            function_from_path: None,
        },
    })
}

/// The target named by `/invoke/NAME` or `/invoke/service/NAME`.
fn invoke_path_function(path: &str) -> Option<Target> {
    path_target(path.strip_prefix("/invoke/")?)
}

/// The target `NAME` or `service/NAME` names, at the end of an invocation path: one non-empty
/// segment, percent-decoded (`crate::http::request::decode_path_segment`).
pub fn path_target(rest: &str) -> Option<Target> {
    use crate::http::request::decode_path_segment;
    match rest.strip_prefix("service/") {
        Some(service) => decode_path_segment(service).map(Target::Service),
        None => decode_path_segment(rest).map(Target::Function),
    }
}

/// The context FC's own runtimes hand to handlers, built from the request's `x-fc-*` headers
/// (docs/PROTOCOL.md "context"). It borrows from the request head.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Context<'a> {
    /// The invocation's request id.
    pub request_id: &'a str,
    /// Temporary credentials, when FC was given a role.
    #[serde(skip_serializing_if = "Credentials::is_empty")]
    pub credentials: Credentials<'a>,
    /// The function as FC describes it.
    pub function: FunctionInfo<'a>,
    /// FC 2.0's service (empty in FC 3.0).
    #[serde(skip_serializing_if = "ServiceInfo::is_empty")]
    pub service: ServiceInfo<'a>,
    /// Region, such as `cn-hangzhou`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<&'a str>,
    /// The owner's account id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<&'a str>,
    /// How many times FC retried this (async) invocation.
    pub retry_count: u32,
    /// The caller's trace: FC's OpenTracing headers and W3C trace context.
    #[serde(skip_serializing_if = "Tracing::is_empty")]
    pub tracing: Tracing<'a>,
}

/// COMPACT_HEAD's context (docs/PROTOCOL.md "compact head"): a u32 of presence bits for the
/// optional values, the numbers, the function's name and handler, then each optional string
/// that is present, in bit order. Its `requestId` is the head's.
impl wire::CompactContext for Context<'_> {
    fn put_compact(&self, out: &mut wire::CompactWriter<'_>) {
        let (c, f, s, t) = (
            &self.credentials,
            &self.function,
            &self.service,
            &self.tracing,
        );
        let optional = [
            c.access_key_id,
            c.access_key_secret,
            c.security_token,
            f.initializer,
            s.name,
            s.log_project,
            s.log_store,
            s.qualifier,
            s.version_id,
            self.region,
            self.account_id,
            t.open_tracing_span_context,
            t.open_tracing_span_baggages,
            t.jaeger_endpoint,
            t.traceparent,
            t.tracestate,
        ];
        let mut present = u32::from(f.initialization_timeout.is_some()) << optional.len();
        for (bit, value) in optional.iter().enumerate() {
            if value.is_some() {
                present |= 1 << bit;
            }
        }
        out.u32(present);
        for number in [f.memory, f.timeout, f.initialization_timeout.unwrap_or(0)] {
            out.f64(number as f64);
        }
        out.u32(self.retry_count);
        out.str(f.name);
        out.str(f.handler);
        for value in optional.into_iter().flatten() {
            out.str(value);
        }
    }
}

/// `context.tracing`: what a handler needs to continue the caller's trace. FC's values are
/// passed as sent (the baggage stays base64, for the runtimes to decode as FC's do); a W3C
/// `traceparent` is passed only when it is well formed, and `tracestate` only with it.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tracing<'a> {
    /// `x-fc-tracing-opentracing-span-context`.
    #[serde(skip_serializing_if = "Option::is_none")]
    open_tracing_span_context: Option<&'a str>,
    /// `x-fc-tracing-opentracing-span-baggages`: base64 of a JSON object.
    #[serde(skip_serializing_if = "Option::is_none")]
    open_tracing_span_baggages: Option<&'a str>,
    /// `x-fc-tracing-jaeger-endpoint`.
    #[serde(skip_serializing_if = "Option::is_none")]
    jaeger_endpoint: Option<&'a str>,
    /// W3C `traceparent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<&'a str>,
    /// W3C `tracestate`.
    #[serde(skip_serializing_if = "Option::is_none")]
    tracestate: Option<&'a str>,
}

impl Tracing<'_> {
    fn is_empty(&self) -> bool {
        self.open_tracing_span_context.is_none()
            && self.open_tracing_span_baggages.is_none()
            && self.jaeger_endpoint.is_none()
            && self.traceparent.is_none()
    }
}

/// The longest `tracestate` passed on: W3C lets a vendor drop one longer than 512 characters.
const MAX_TRACESTATE: usize = 512;

/// Whether `value` is a W3C `traceparent` a receiver may use: `VV-TRACEID-PARENTID-FLAGS` in
/// lowercase hex, version not `ff`, ids not all zero. A later version may append fields after
/// the four it shares with version `00`.
pub fn valid_traceparent(value: &str) -> bool {
    let bytes = value.as_bytes();
    let lower_hex = |b: &[u8]| b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let zero = |b: &[u8]| b.iter().all(|&c| c == b'0');
    if bytes.len() < 55 || [2, 35, 52].iter().any(|&i| bytes[i] != b'-') {
        return false;
    }
    let (version, trace_id, parent_id, flags) =
        (&bytes[0..2], &bytes[3..35], &bytes[36..52], &bytes[53..55]);
    let fields_ok = [version, trace_id, parent_id, flags]
        .iter()
        .all(|f| lower_hex(f))
        && version != b"ff"
        && !zero(trace_id)
        && !zero(parent_id);
    let length_ok = match version {
        b"00" => bytes.len() == 55,
        _ => bytes.len() == 55 || bytes[55] == b'-',
    };
    fields_ok && length_ok
}

/// STS credentials from `x-fc-access-key-*` and `x-fc-security-token`.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Credentials<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    access_key_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_key_secret: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    security_token: Option<&'a str>,
}

impl Credentials<'_> {
    fn is_empty(&self) -> bool {
        self.access_key_id.is_none()
            && self.access_key_secret.is_none()
            && self.security_token.is_none()
    }
}

/// `context.function`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionInfo<'a> {
    /// FC's function name, or the profile's.
    pub name: &'a str,
    /// FC's handler header, or the profile's handler.
    pub handler: &'a str,
    /// Memory in MB.
    pub memory: u64,
    /// Timeout in seconds.
    pub timeout: u64,
    /// Initializer name, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initializer: Option<&'a str>,
    /// Initializer timeout in seconds, if FC sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initialization_timeout: Option<u64>,
}

/// `context.service` (FC 2.0).
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceInfo<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_project: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_store: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    qualifier: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_id: Option<&'a str>,
}

impl ServiceInfo<'_> {
    fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.log_project.is_none()
            && self.log_store.is_none()
            && self.qualifier.is_none()
            && self.version_id.is_none()
    }
}

/// What the runtime knows about the target function, used where FC sent no header.
#[derive(Debug, Clone, Copy)]
pub struct ProfileFacts<'a> {
    /// Profile name.
    pub name: &'a str,
    /// Profile handler.
    pub handler: &'a str,
    /// Profile initializer.
    pub initializer: Option<&'a str>,
    /// Memory limit in bytes.
    pub memory_bytes: u64,
}

/// Finds a header by (lowercase) name, case-insensitively. Non-empty values only: FC 3.0 sends
/// some `x-fc-*` headers as empty strings.
pub fn header<'a>(headers: &'a HeaderList, name: &str) -> Option<&'a str> {
    headers.get(name).filter(|v| !v.is_empty())
}

/// The request id FC gave a call (`x-fc-request-id`), if it gave one: the call's own id on the
/// FC port, and on the admin socket when a gateway forwards FC's headers without an id of its
/// own.
pub fn call_request_id(headers: &HeaderList) -> Option<&str> {
    header(headers, "x-fc-request-id")
}

/// The headers [`context`] reads; each is the index of its name in [`CONTEXT_HEADERS`].
#[derive(Debug, Clone, Copy)]
enum ContextField {
    AccessKeyId,
    AccessKeySecret,
    SecurityToken,
    FunctionName,
    FunctionHandler,
    FunctionMemory,
    FunctionTimeout,
    FunctionInitializer,
    InitializationTimeout,
    ServiceName,
    ServiceLogProject,
    ServiceLogStore,
    Qualifier,
    VersionId,
    Region,
    AccountId,
    RetryCount,
    OpenTracingSpanContext,
    OpenTracingSpanBaggages,
    JaegerEndpoint,
    TraceParent,
    TraceState,
}

/// The names of the [`ContextField`]s, in their order.
const CONTEXT_HEADERS: [&str; 22] = [
    "x-fc-access-key-id",
    "x-fc-access-key-secret",
    "x-fc-security-token",
    "x-fc-function-name",
    "x-fc-function-handler",
    "x-fc-function-memory",
    FUNCTION_TIMEOUT_HEADER,
    "x-fc-function-initializer",
    INITIALIZATION_TIMEOUT_HEADER,
    "x-fc-service-name",
    "x-fc-service-logproject",
    "x-fc-service-logstore",
    "x-fc-qualifier",
    "x-fc-version-id",
    "x-fc-region",
    "x-fc-account-id",
    "x-fc-retry-count",
    "x-fc-tracing-opentracing-span-context",
    "x-fc-tracing-opentracing-span-baggages",
    "x-fc-tracing-jaeger-endpoint",
    "traceparent",
    "tracestate",
];

/// The values of [`CONTEXT_HEADERS`] in a request, found in one pass over its fields: FC sends
/// some twenty headers, and looking each name up on its own read them all twenty times. A
/// slot holds what [`header`] would find: the first field of that name, if not empty.
struct ContextHeaders<'a>([Option<&'a str>; CONTEXT_HEADERS.len()]);

impl<'a> ContextHeaders<'a> {
    fn of(headers: &'a HeaderList) -> Self {
        let mut found = [None; CONTEXT_HEADERS.len()];
        for (name, value) in headers {
            if let Some(slot) = CONTEXT_HEADERS
                .iter()
                .position(|known| known.eq_ignore_ascii_case(name))
            {
                found[slot].get_or_insert(value);
            }
        }
        ContextHeaders(found.map(|v| v.filter(|v| !v.is_empty())))
    }

    fn get(&self, field: ContextField) -> Option<&'a str> {
        self.0[field as usize]
    }
}

/// Builds the context for one invocation or initialization.
pub fn context<'a>(
    headers: &'a HeaderList,
    request_id: &'a str,
    timeout_ms: u64,
    facts: ProfileFacts<'a>,
) -> Context<'a> {
    use ContextField::*;
    let found = ContextHeaders::of(headers);
    let h = |field| found.get(field);
    let number = |field| h(field).and_then(|v| v.trim().parse::<u64>().ok());
    Context {
        request_id,
        credentials: Credentials {
            access_key_id: h(AccessKeyId),
            access_key_secret: h(AccessKeySecret),
            security_token: h(SecurityToken),
        },
        function: FunctionInfo {
            name: h(FunctionName).unwrap_or(facts.name),
            handler: h(FunctionHandler).unwrap_or(facts.handler),
            memory: number(FunctionMemory).unwrap_or(facts.memory_bytes >> 20),
            timeout: number(FunctionTimeout).unwrap_or(timeout_ms.div_ceil(1000)),
            initializer: h(FunctionInitializer).or(facts.initializer),
            initialization_timeout: number(InitializationTimeout),
        },
        service: ServiceInfo {
            name: h(ServiceName),
            log_project: h(ServiceLogProject),
            log_store: h(ServiceLogStore),
            qualifier: h(Qualifier),
            version_id: h(VersionId),
        },
        region: h(Region),
        account_id: h(AccountId),
        retry_count: number(RetryCount)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
        tracing: tracing(&found),
    }
}

/// The trace headers of a request, as `context.tracing` carries them.
fn tracing<'a>(found: &ContextHeaders<'a>) -> Tracing<'a> {
    use ContextField::*;
    let h = |field| found.get(field);
    let traceparent = h(TraceParent)
        .map(str::trim)
        .filter(|v| valid_traceparent(v));
    Tracing {
        open_tracing_span_context: h(OpenTracingSpanContext),
        open_tracing_span_baggages: h(OpenTracingSpanBaggages),
        jaeger_endpoint: h(JaegerEndpoint),
        traceparent,
        tracestate: traceparent
            .and(h(TraceState))
            .filter(|v| v.len() <= MAX_TRACESTATE),
    }
}

/// The header in which FC sends each invocation's timeout, in seconds.
pub const FUNCTION_TIMEOUT_HEADER: &str = "x-fc-function-timeout";
/// The header in which FC sends the initializer's timeout on `/initialize`, in seconds.
pub const INITIALIZATION_TIMEOUT_HEADER: &str = "x-fc-initialization-timeout";

/// The per-invocation timeout FC sent in `x-fc-function-timeout` (seconds), in milliseconds;
/// None when it sent none, or one that [`seconds_header_ms`] refuses (the request was turned
/// away for that before it became an invocation).
pub fn timeout_header_ms(headers: &HeaderList) -> Option<u64> {
    seconds_header_ms(headers, FUNCTION_TIMEOUT_HEADER)
        .ok()
        .flatten()
}

/// The duration FC sent in header `name`, in (possibly fractional) seconds, in milliseconds:
/// None without the header, and why not when its value is not a positive number of seconds
/// (FC sends whole seconds; a value it would not send is a client's mistake, which silently
/// becoming the profile's timeout would hide).
pub fn seconds_header_ms(headers: &HeaderList, name: &str) -> Result<Option<u64>, String> {
    let Some(value) = header(headers, name) else {
        return Ok(None);
    };
    match value.trim().parse::<f64>() {
        // Rounded to whole milliseconds, at least one; a value past u64's range saturates.
        Ok(secs) if secs.is_finite() && secs > 0.0 => {
            Ok(Some((secs * 1000.0).round().max(1.0) as u64))
        }
        _ => Err(format!(
            "{name}: {value:?} is not a positive number of seconds"
        )),
    }
}

/// The length of a generated request id (a UUID's text).
const REQUEST_ID_LEN: usize = 36;

/// Generates request ids for requests that arrive without `x-fc-request-id`: UUID-shaped
/// (version 4 layout), from a generator seeded by the kernel.
#[derive(Debug)]
pub struct RequestIds {
    rng: crate::rand::Rng,
}

impl RequestIds {
    /// A generator seeded from the kernel's randomness.
    pub fn new() -> Self {
        RequestIds {
            rng: crate::rand::Rng::from_entropy(),
        }
    }

    /// The next id. Written into one allocation of its exact size: `format!` would grow its
    /// string three times, and this runs for most requests.
    pub fn next_id(&mut self) -> String {
        let a = self.rng.next_u64();
        let b = self.rng.next_u64();
        let mut id = String::with_capacity(REQUEST_ID_LEN);
        let fields = [
            (a >> 32, 8),
            ((a >> 16) & 0xffff, 4),
            (0x4000 | (a & 0xfff), 4),
            (0x8000 | ((b >> 48) & 0x3fff), 4),
            (b & 0xffff_ffff_ffff, 12),
        ];
        for (i, (value, digits)) in fields.into_iter().enumerate() {
            if i > 0 {
                id.push('-');
            }
            for shift in (0..digits).rev() {
                let nibble = (value >> (shift * 4)) & 0xf;
                id.push(char::from(b"0123456789abcdef"[nibble as usize]));
            }
        }
        id
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

/// The phases FC prints Start/End lines for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// An invocation.
    Invoke,
    /// `/initialize`.
    Initialize,
    /// `/pre-freeze`.
    PreFreeze,
    /// `/pre-stop`.
    PreStop,
}

impl Phase {
    /// A lifecycle hook rather than an invocation.
    pub fn is_hook(self) -> bool {
        self != Phase::Invoke
    }

    fn as_str(self) -> &'static str {
        match self {
            Phase::Invoke => "Invoke",
            Phase::Initialize => "Initialize",
            Phase::PreFreeze => "PreFreeze",
            Phase::PreStop => "PreStop",
        }
    }
}

/// FC's per-invocation log lines (`FC Invoke Start RequestId: <id>` and the End, Initialize,
/// PreFreeze and PreStop variants), collected during one loop iteration and written to stdout
/// with a single `write`: two unbuffered lines per invocation would cost two syscalls each.
#[derive(Debug, Default)]
pub struct FcLog {
    pending: Vec<u8>,
}

impl FcLog {
    /// Queues the Start line of `phase`.
    pub fn start(&mut self, phase: Phase, request_id: &str) {
        self.line(phase, "Start", request_id);
    }

    /// Queues the End line of `phase`.
    pub fn end(&mut self, phase: Phase, request_id: &str) {
        self.line(phase, "End", request_id);
    }

    fn line(&mut self, phase: Phase, edge: &str, request_id: &str) {
        let out = &mut self.pending;
        out.extend_from_slice(b"FC ");
        out.extend_from_slice(phase.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(edge.as_bytes());
        out.extend_from_slice(b" RequestId: ");
        // A request id comes from a client header: keep one line per event whatever it holds.
        out.extend(
            request_id
                .bytes()
                .map(|b| if b.is_ascii_control() { b' ' } else { b }),
        );
        out.push(b'\n');
    }

    /// The lines queued since the last [`FcLog::clear`], for the console to write.
    pub fn take(&self) -> &[u8] {
        &self.pending
    }

    /// Forgets the lines [`FcLog::take`] returned.
    pub fn clear(&mut self) {
        self.pending.clear();
        if self.pending.capacity() > 64 * 1024 {
            self.pending.shrink_to(4096);
        }
    }
}

/// The `x-fc-*` headers that describe the instance rather than one call: the credentials and
/// the function's identity. A worker initialized outside any call gets the latest of these.
const PLATFORM_HEADERS: [&str; 13] = [
    "x-fc-access-key-id",
    "x-fc-access-key-secret",
    "x-fc-security-token",
    "x-fc-region",
    "x-fc-account-id",
    "x-fc-function-name",
    "x-fc-function-handler",
    "x-fc-function-memory",
    "x-fc-service-name",
    "x-fc-service-logproject",
    "x-fc-service-logstore",
    "x-fc-qualifier",
    "x-fc-version-id",
];

/// FC's system environment variables, and the header each stands for. FC sets them when the
/// instance starts, so they are what is known before the first call.
const PLATFORM_ENV: [(&str, &str); 10] = [
    ("ALIBABA_CLOUD_ACCESS_KEY_ID", "x-fc-access-key-id"),
    ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "x-fc-access-key-secret"),
    ("ALIBABA_CLOUD_SECURITY_TOKEN", "x-fc-security-token"),
    ("FC_REGION", "x-fc-region"),
    ("FC_ACCOUNT_ID", "x-fc-account-id"),
    ("FC_FUNCTION_NAME", "x-fc-function-name"),
    ("FC_FUNCTION_HANDLER", "x-fc-function-handler"),
    ("FC_FUNCTION_MEMORY_SIZE", "x-fc-function-memory"),
    ("FC_SERVICE_NAME", "x-fc-service-name"),
    ("FC_QUALIFIER", "x-fc-qualifier"),
];

/// What the platform said most recently about the instance: its credentials (which FC rotates
/// and sends on every call) and the function's identity. Before any call, FC's environment
/// variables stand in for the headers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PlatformHeaders {
    /// Sorted by name.
    headers: HeaderList,
    /// Whether `headers` came from a call (rather than from the environment).
    from_call: bool,
}

impl PlatformHeaders {
    /// The values FC's environment variables give, before any call.
    pub fn from_env(env: impl IntoIterator<Item = (String, String)>) -> PlatformHeaders {
        let mut headers: Vec<(String, String)> = env
            .into_iter()
            .filter(|(_, value)| !value.is_empty())
            .filter_map(|(name, value)| {
                PLATFORM_ENV
                    .iter()
                    .find(|(var, _)| *var == name)
                    .map(|(_, header)| ((*header).to_owned(), value))
            })
            .collect();
        headers.sort();
        PlatformHeaders {
            headers: headers.into_iter().collect(),
            from_call: false,
        }
    }

    /// Whether `call` is a platform call (it has FC's request id) whose instance headers are
    /// not the ones held: taking them in is then worth its allocation, and, for a call from a
    /// local peer, the cost of checking where it came from.
    pub fn is_news(&self, call: &HeaderList) -> bool {
        if header(call, "x-fc-request-id").is_none() {
            return false;
        }
        let mut carried = 0;
        for name in PLATFORM_HEADERS {
            let Some(value) = header(call, name) else {
                continue;
            };
            carried += 1;
            let held = self
                .headers
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v);
            if held != Some(value) || !self.from_call {
                return true;
            }
        }
        // Held values the call no longer carries (a role removed, say) are news too.
        carried != self.headers.len() && self.from_call
    }

    /// Takes the instance headers of a platform call in place of what was held: FC sends them
    /// all on every call, so one missing now is one that no longer applies.
    pub fn take_from(&mut self, call: &HeaderList) {
        let mut headers: Vec<(&str, &str)> = PLATFORM_HEADERS
            .iter()
            .filter_map(|name| header(call, name).map(|v| (*name, v)))
            .collect();
        headers.sort_unstable();
        self.headers = headers.into_iter().collect();
        self.from_call = true;
    }

    /// The headers, in the form `context` reads.
    pub fn headers(&self) -> &HeaderList {
        &self.headers
    }

    /// Where the values came from, for logs and the probe.
    pub fn source(&self) -> &'static str {
        if self.from_call {
            "the latest platform call"
        } else {
            "FC's environment variables"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderList {
        pairs.iter().copied().collect()
    }

    #[test]
    fn the_compact_context_lists_present_values_in_bit_order_after_the_numbers() {
        const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let h = headers(&[
            ("x-fc-region", "cn-hangzhou"),
            ("x-fc-access-key-id", "AK"),
            ("x-fc-initialization-timeout", "7"),
            ("x-fc-retry-count", "2"),
            ("traceparent", PARENT),
        ]);
        let facts = ProfileFacts {
            name: "f",
            handler: "index.handler",
            initializer: Some("index.init"),
            memory_bytes: 256 << 20,
        };
        let head = wire::RequestHead {
            kind: "event".into(),
            method: "".into(),
            url: "".into(),
            headers: Default::default(),
            baggage: None,
            request_id: "r".into(),
            deadline: None,
            timeout_ms: None,
            client_ip: None,
            context: context(&h, "r", 3000, facts),
        };
        let mut out = Vec::new();
        wire::put_compact_head(&mut out, 1, true, &head).unwrap();
        // The head's own fields: 28 fixed bytes, then method "", url "" and request id "r".
        let ctx = &out[wire::HEADER_LEN + 28 + 4 + 4 + 5..];
        let present = (1 << 0) | (1 << 3) | (1 << 9) | (1 << 14) | (1 << 16);
        assert_eq!(ctx[..4], u32::to_le_bytes(present));
        assert_eq!(ctx[4..12], 256f64.to_le_bytes(), "memory in MB");
        assert_eq!(ctx[12..20], 3f64.to_le_bytes(), "timeout in seconds");
        assert_eq!(ctx[20..28], 7f64.to_le_bytes(), "initialization timeout");
        assert_eq!(ctx[28..32], 2u32.to_le_bytes(), "retry count");
        let mut strings = Vec::new();
        for value in [
            "f",
            "index.handler",
            "AK",
            "index.init",
            "cn-hangzhou",
            PARENT,
        ] {
            strings.extend_from_slice(&(value.len() as u32).to_le_bytes());
            strings.extend_from_slice(value.as_bytes());
        }
        assert_eq!(&ctx[32..], strings.as_slice());
    }

    #[test]
    fn control_path_decides_over_method_and_path() {
        assert_eq!(
            route("GET", "/anything", Some("/invoke"), "/ready"),
            Ok(Route::Invoke {
                kind: InvokeKind::Event,
                function_from_path: None
            })
        );
        assert_eq!(
            route("POST", "/invoke", Some("/http-invoke"), "/ready"),
            Ok(Route::Invoke {
                kind: InvokeKind::Http,
                function_from_path: None
            })
        );
        assert_eq!(
            route("POST", "/x", Some("/initialize"), "/ready"),
            Ok(Route::Initialize)
        );
        assert!(route("GET", "/", Some("/bogus"), "/ready").is_err());
    }

    #[test]
    fn paths_route_hooks_events_and_everything_else_to_http() {
        assert_eq!(
            route("POST", "/initialize", None, "/ready"),
            Ok(Route::Initialize)
        );
        assert_eq!(
            route("GET", "/pre-freeze", None, "/ready"),
            Ok(Route::PreFreeze)
        );
        assert_eq!(
            route("GET", "/pre-stop", None, "/ready"),
            Ok(Route::PreStop)
        );
        assert_eq!(route("GET", "/healthz", None, "/ready"), Ok(Route::Healthz));
        assert_eq!(
            route("POST", "/invoke/echo", None, "/ready"),
            Ok(Route::Invoke {
                kind: InvokeKind::Event,
                function_from_path: Some(Target::Function("echo".into()))
            })
        );
        assert_eq!(
            route("POST", "/invoke/service/front", None, "/ready"),
            Ok(Route::Invoke {
                kind: InvokeKind::Event,
                function_from_path: Some(Target::Service("front".into()))
            })
        );
        assert_eq!(
            route("POST", "/invoke/%65cho", None, "/ready"),
            Ok(Route::Invoke {
                kind: InvokeKind::Event,
                function_from_path: Some(Target::Function("echo".into()))
            })
        );
        // The wrong method for a hook is somebody's HTTP function.
        for (method, path) in [
            ("GET", "/initialize"),
            ("POST", "/pre-stop"),
            ("PUT", "/a/b"),
        ] {
            assert_eq!(
                route(method, path, None, "/ready"),
                Ok(Route::Invoke {
                    kind: InvokeKind::Http,
                    function_from_path: None
                })
            );
        }
    }

    #[test]
    fn the_readiness_path_shadows_functions_for_get_and_head_only() {
        assert_eq!(
            route("GET", "/ready", Some("/http-invoke"), "/ready"),
            Ok(Route::Ready)
        );
        assert_eq!(route("HEAD", "/ready", None, "/ready"), Ok(Route::Ready));
        assert_eq!(route("GET", "/health", None, "/health"), Ok(Route::Ready));
        assert!(matches!(
            route("POST", "/ready", None, "/ready"),
            Ok(Route::Invoke { .. })
        ));
    }

    #[test]
    fn context_comes_from_fc_headers_with_profile_fallbacks() {
        let h = headers(&[
            ("X-Fc-Access-Key-Id", "AK"),
            ("x-fc-access-key-secret", "SK"),
            ("x-fc-function-memory", "1024"),
            ("x-fc-region", "cn-hangzhou"),
            ("x-fc-service-name", ""),
            ("x-fc-retry-count", "2"),
        ]);
        let facts = ProfileFacts {
            name: "hello",
            handler: "index.handler",
            initializer: None,
            memory_bytes: 512 << 20,
        };
        let ctx = context(&h, "rid", 3000, facts);
        let json = serde_json::to_value(&ctx).unwrap();
        assert_eq!(json["requestId"], "rid");
        assert_eq!(json["credentials"]["accessKeyId"], "AK");
        assert_eq!(json["credentials"]["accessKeySecret"], "SK");
        assert_eq!(json["function"]["name"], "hello");
        assert_eq!(json["function"]["memory"], 1024);
        assert_eq!(json["function"]["timeout"], 3);
        assert_eq!(json["region"], "cn-hangzhou");
        assert_eq!(json["retryCount"], 2);
        assert!(
            json.get("service").is_none(),
            "empty FC 3.0 service headers are dropped"
        );
    }

    #[test]
    fn every_context_field_is_read_from_the_first_field_of_its_name() {
        let facts = ProfileFacts {
            name: "hello",
            handler: "index.handler",
            initializer: None,
            memory_bytes: 512 << 20,
        };
        // Each known header twice, in mixed case, the second value different: the context
        // takes the first, as a lookup of that name would, and an empty first hides the second.
        let mut pairs = Vec::new();
        for (i, name) in CONTEXT_HEADERS.iter().enumerate() {
            pairs.push((name.to_ascii_uppercase(), format!("first-{i}")));
            pairs.push(((*name).to_owned(), format!("second-{i}")));
        }
        pairs.push(("x-fc-unknown".to_owned(), "x".to_owned()));
        let list: HeaderList = pairs.iter().map(|(n, v)| (n, v)).collect();
        let found = ContextHeaders::of(&list);
        for (i, name) in CONTEXT_HEADERS.iter().enumerate() {
            assert_eq!(found.0[i], Some(format!("first-{i}").as_str()), "{name}");
            assert_eq!(found.0[i], header(&list, name), "{name}");
        }
        let h = headers(&[
            ("x-fc-region", ""),
            ("x-fc-region", "cn-hangzhou"),
            ("X-FC-FUNCTION-NAME", "from-header"),
        ]);
        let json = serde_json::to_value(context(&h, "rid", 3000, facts)).unwrap();
        assert!(json.get("region").is_none(), "{json}");
        assert_eq!(json["function"]["name"], "from-header");
    }

    #[test]
    fn tracing_headers_reach_the_context_and_a_bad_traceparent_does_not() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let facts = ProfileFacts {
            name: "hello",
            handler: "index.handler",
            initializer: None,
            memory_bytes: 512 << 20,
        };
        let h = headers(&[
            ("traceparent", parent),
            ("tracestate", "congo=t61rcWkgMzE"),
            ("x-fc-tracing-opentracing-span-context", "a:b:c:1"),
            ("x-fc-tracing-opentracing-span-baggages", "eyJrIjoidiJ9"),
            ("x-fc-tracing-jaeger-endpoint", "http://jaeger/api/traces"),
        ]);
        let json = serde_json::to_value(context(&h, "rid", 3000, facts)).unwrap();
        assert_eq!(json["tracing"]["traceparent"], parent);
        assert_eq!(json["tracing"]["tracestate"], "congo=t61rcWkgMzE");
        assert_eq!(json["tracing"]["openTracingSpanContext"], "a:b:c:1");
        assert_eq!(json["tracing"]["openTracingSpanBaggages"], "eyJrIjoidiJ9");
        assert_eq!(
            json["tracing"]["jaegerEndpoint"],
            "http://jaeger/api/traces"
        );

        let h = headers(&[
            (
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            ),
            ("tracestate", "congo=t61rcWkgMzE"),
        ]);
        let json = serde_json::to_value(context(&h, "rid", 3000, facts)).unwrap();
        assert!(json.get("tracing").is_none(), "{json}");
    }

    #[test]
    fn traceparent_follows_the_w3c_grammar() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(valid_traceparent(good));
        assert!(valid_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later"
        ));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01",
        ] {
            assert!(!valid_traceparent(bad), "{bad}");
        }
    }

    #[test]
    fn timeout_header_is_seconds() {
        assert_eq!(
            timeout_header_ms(&headers(&[("x-fc-function-timeout", "3")])),
            Some(3000)
        );
        assert_eq!(
            timeout_header_ms(&headers(&[("x-fc-function-timeout", "0.5")])),
            Some(500)
        );
        assert_eq!(timeout_header_ms(&headers(&[])), None);
        // FC 3.0 sends some of its headers empty: as if it had sent none.
        assert_eq!(
            seconds_header_ms(
                &headers(&[("x-fc-function-timeout", "")]),
                FUNCTION_TIMEOUT_HEADER
            ),
            Ok(None)
        );
        assert_eq!(
            seconds_header_ms(
                &headers(&[("x-fc-function-timeout", " 0.0001 ")]),
                FUNCTION_TIMEOUT_HEADER
            ),
            Ok(Some(1))
        );
        assert_eq!(
            seconds_header_ms(
                &headers(&[("x-fc-function-timeout", "1e300")]),
                FUNCTION_TIMEOUT_HEADER
            ),
            Ok(Some(u64::MAX))
        );
        for bad in ["-1", "0", "x", "3s", "inf", "NaN", "1e400"] {
            let got = seconds_header_ms(
                &headers(&[("x-fc-function-timeout", bad)]),
                FUNCTION_TIMEOUT_HEADER,
            );
            assert_eq!(
                got,
                Err(format!(
                    "x-fc-function-timeout: {bad:?} is not a positive number of seconds"
                )),
                "{bad}"
            );
            // Refused before the request becomes an invocation; never a timeout of its own.
            assert_eq!(
                timeout_header_ms(&headers(&[("x-fc-function-timeout", bad)])),
                None
            );
        }
    }

    #[test]
    fn fc_log_lines_have_fc_format_and_stay_one_per_line() {
        let mut log = FcLog::default();
        log.start(Phase::Invoke, "abc");
        log.end(Phase::PreStop, "x\ny");
        assert_eq!(
            String::from_utf8(log.pending.clone()).unwrap(),
            "FC Invoke Start RequestId: abc\nFC PreStop End RequestId: x y\n"
        );
    }

    #[test]
    fn request_ids_are_unique_and_uuid_shaped() {
        let mut ids = RequestIds::new();
        let a = ids.next_id();
        let b = ids.next_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);

        // The version-4 layout: eight, four, '4' and three, a variant digit in 8..=b and
        // three, twelve lowercase hex digits; in one allocation of exactly that size.
        let mut seeded = RequestIds {
            rng: crate::rand::Rng::with_seed(7),
        };
        let mut rng = crate::rand::Rng::with_seed(7);
        for _ in 0..1000 {
            let id = seeded.next_id();
            let (a, b) = (rng.next_u64(), rng.next_u64());
            let expected = format!(
                "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
                a >> 32,
                (a >> 16) & 0xffff,
                a & 0xfff,
                0x8000 | ((b >> 48) & 0x3fff),
                b & 0xffff_ffff_ffff
            );
            assert_eq!(id, expected);
            assert_eq!(id.capacity(), REQUEST_ID_LEN);
            assert!(
                matches!(id.as_bytes()[19], b'8' | b'9' | b'a' | b'b'),
                "{id}"
            );
        }
    }

    #[test]
    fn platform_headers_start_from_fc_environment_variables() {
        let env = [
            ("FC_REGION", "cn-beijing"),
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", "AK0"),
            ("ALIBABA_CLOUD_SECURITY_TOKEN", ""),
            ("NOSLATE_SECRET", "never"),
            ("FC_FUNCTION_MEMORY_SIZE", "2048"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let platform = PlatformHeaders::from_env(env);
        let facts = ProfileFacts {
            name: "hello",
            handler: "index.handler",
            initializer: None,
            memory_bytes: 512 << 20,
        };
        let json = serde_json::to_value(context(platform.headers(), "rid", 3000, facts))
            .expect("context serializes");
        assert_eq!(json["region"], "cn-beijing");
        assert_eq!(json["credentials"]["accessKeyId"], "AK0");
        assert!(json["credentials"].get("securityToken").is_none());
        assert_eq!(json["function"]["memory"], 2048);
        assert_eq!(platform.headers().len(), 3, "{platform:?}");
        assert_eq!(platform.source(), "FC's environment variables");
    }

    #[test]
    fn platform_headers_follow_rotating_credentials_from_calls_only() {
        let mut platform = PlatformHeaders::from_env([("FC_REGION".into(), "cn-beijing".into())]);
        let call = |ak: &str| {
            headers(&[
                ("x-fc-request-id", "r1"),
                ("x-fc-access-key-id", ak),
                ("x-fc-region", "cn-beijing"),
                ("x-fc-function-timeout", "3"),
            ])
        };
        // Not a platform call: no request id.
        assert!(!platform.is_news(&headers(&[("x-fc-access-key-id", "FAKE")])));
        // The first call is news even when its values equal the environment's.
        assert!(platform.is_news(&call("AK1")));
        platform.take_from(&call("AK1"));
        assert_eq!(platform.source(), "the latest platform call");
        assert!(!platform.is_news(&call("AK1")), "same credentials again");
        assert!(platform.is_news(&call("AK2")), "rotated");
        platform.take_from(&call("AK2"));
        assert_eq!(
            header(platform.headers(), "x-fc-access-key-id"),
            Some("AK2")
        );
        assert_eq!(header(platform.headers(), "x-fc-function-timeout"), None);
        // A call without credentials (the role was removed) drops them.
        let without = headers(&[("x-fc-request-id", "r3"), ("x-fc-region", "cn-beijing")]);
        assert!(platform.is_news(&without));
        platform.take_from(&without);
        assert_eq!(header(platform.headers(), "x-fc-access-key-id"), None);
        assert!(!platform.is_news(&without));
    }
}
