//! Trace context: W3C `traceparent`/`tracestate` and FC's OpenTracing headers reach the
//! handler's `context.tracing` in Node.js and Python, shaped as FC's own runtimes shape them;
//! a malformed `traceparent` does not (nor its `tracestate`), and the call still succeeds.

mod common;

use common::{Noslate, profile, require_python};
use serde_json::{Value, json};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// base64 of `{"tenant":"t1","hop":"2"}`.
const BAGGAGE: &str = "eyJ0ZW5hbnQiOiJ0MSIsImhvcCI6IjIifQ==";

fn tracing_function(runtime: &str) -> Value {
    let fixture = if runtime == "nodejs" {
        "tracing"
    } else {
        "tracing-python"
    };
    let mut p = profile("tracing", fixture);
    p["runtime"] = json!(runtime);
    p["handlerStyle"] = json!("fc-event");
    p
}

fn traced_call(ns: &Noslate, traceparent: &str) -> Value {
    let resp = ns.invoke(
        b"{}",
        &[
            ("x-fc-request-id", "trace-1"),
            ("traceparent", traceparent),
            ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
            ("x-fc-tracing-opentracing-span-context", "5f2b:9d3e:0:1"),
            ("x-fc-tracing-opentracing-span-baggages", BAGGAGE),
            (
                "x-fc-tracing-jaeger-endpoint",
                "http://jaeger.local/api/traces",
            ),
        ],
    );
    assert_eq!(resp.status, 200, "{}", resp.brief());
    serde_json::from_slice(&resp.body).expect("the handler answers JSON")
}

#[test]
fn node_handlers_get_the_callers_trace_in_fc_shape() {
    let ns = Noslate::start(&json!([tracing_function("nodejs")]));
    let t = traced_call(&ns, TRACEPARENT);
    assert_eq!(t["traceparent"], TRACEPARENT, "{t}");
    assert_eq!(
        t["tracestate"], "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
        "{t}"
    );
    assert_eq!(t["openTracingSpanContext"], "5f2b:9d3e:0:1", "{t}");
    assert_eq!(
        t["openTracingSpanBaggages"],
        json!({"tenant": "t1", "hop": "2"}),
        "FC's Node.js runtime decodes the baggage: {t}"
    );
    assert_eq!(t["jaegerEndpoint"], "http://jaeger.local/api/traces", "{t}");

    let t = traced_call(&ns, "00-not-a-trace-01");
    assert_eq!(t["traceparent"], Value::Null, "{t}");
    assert_eq!(
        t["tracestate"],
        Value::Null,
        "no state without its parent: {t}"
    );
    assert_eq!(t["openTracingSpanContext"], "5f2b:9d3e:0:1", "{t}");

    let resp = ns.invoke(b"{}", &[("x-fc-tracing-opentracing-span-baggages", "%%%")]);
    let t: Value = serde_json::from_slice(&resp.body).expect("JSON");
    assert_eq!(
        t["openTracingSpanBaggages"],
        json!({}),
        "bad baggage is empty: {t}"
    );
    assert_eq!(t["traceparent"], Value::Null, "{t}");
}

#[test]
fn python_handlers_get_the_callers_trace_in_fc_shape() {
    require_python();
    let ns = Noslate::start(&json!([tracing_function("python3")]));
    let t = traced_call(&ns, TRACEPARENT);
    assert_eq!(t["traceparent"], TRACEPARENT, "{t}");
    assert_eq!(
        t["tracestate"], "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
        "{t}"
    );
    assert_eq!(t["spanContext"], "5f2b:9d3e:0:1", "{t}");
    assert_eq!(t["spanBaggages"], BAGGAGE, "{t}");
    assert_eq!(t["baggage"], json!({"tenant": "t1", "hop": "2"}), "{t}");
    assert_eq!(t["jaegerEndpoint"], "http://jaeger.local/api/traces", "{t}");

    let t = traced_call(
        &ns,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
    );
    assert_eq!(
        t["traceparent"],
        Value::Null,
        "a zero parent id is invalid: {t}"
    );
    assert_eq!(t["tracestate"], Value::Null, "{t}");
}
