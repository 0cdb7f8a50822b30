//! `noslate top`: a live view of the runtime over its admin socket, one frame per second, like
//! `top`. Each frame is the difference of two scrapes of `/v1/metrics` one interval apart: per
//! function, requests per second, p50 and p99 latency over the interval, in-flight and queued
//! requests, workers by state and errors; and a header line for the runtime.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// One scrape: every sample, by its series (name and labels as written).
#[derive(Debug, Default, Clone)]
pub struct Scrape {
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    /// Reads Prometheus' text format (comments and malformed lines are skipped).
    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse().ok()?))
            })
            .collect();
        Scrape { samples }
    }

    fn get(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }

    /// The samples of metric `name` whose labels include `function="<f>"`, with their labels.
    fn of<'a>(&'a self, name: &'a str, function: &'a str) -> impl Iterator<Item = (&'a str, f64)> {
        let prefix = format!("{name}{{function=\"{}\"", escape(function));
        self.samples
            .iter()
            .filter(move |(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| (k.as_str(), *v))
    }

    /// The functions the scrape names.
    fn functions(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .samples
            .keys()
            .filter_map(|k| k.strip_prefix("noslate_inflight_requests{function=\""))
            .filter_map(|rest| rest.strip_suffix("\"}"))
            .map(unescape)
            .collect();
        names.dedup();
        names
    }
}

/// One function's row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub function: String,
    pub rps: f64,
    /// Upper bounds of the buckets holding the median and the 99th percentile, in ms (`None`:
    /// no invocation in the interval).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub inflight: f64,
    pub queued: f64,
    /// Workers by state, in the states' order, those with none left out.
    pub workers: Vec<(String, f64)>,
    /// Invocations in the interval that did not end 2xx.
    pub errors: f64,
}

/// The frame between two scrapes `interval` apart.
pub fn rows(before: &Scrape, after: &Scrape, interval: Duration) -> Vec<Row> {
    let secs = interval.as_secs_f64().max(1e-3);
    after
        .functions()
        .into_iter()
        .map(|function| {
            let count = |s: &Scrape| {
                s.get(&format!(
                    "noslate_invocation_duration_seconds_count{{function=\"{}\"}}",
                    escape(&function)
                ))
            };
            let done = (count(after) - count(before)).max(0.0);
            let buckets: Vec<(f64, f64)> = after
                .of("noslate_invocation_duration_seconds_bucket", &function)
                .filter_map(|(series, n)| {
                    let le = label(series, "le")?;
                    let bound = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().ok()?
                    };
                    Some((bound, n - before.get(series)))
                })
                .collect();
            let quantile = |q: f64| {
                let mut sorted = buckets.clone();
                sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
                let want = (q * done).ceil().max(1.0);
                (done > 0.0)
                    .then(|| {
                        sorted
                            .iter()
                            .find(|(_, n)| *n >= want)
                            .map(|(b, _)| b * 1000.0)
                    })
                    .flatten()
            };
            let errors = after
                .of("noslate_invocations_total", &function)
                .filter(|(series, _)| label(series, "status_class") != Some("2xx"))
                .map(|(series, n)| (n - before.get(series)).max(0.0))
                .sum();
            let mut workers: Vec<(String, f64)> = Vec::new();
            for (series, n) in after.of("noslate_workers", &function) {
                let Some(state) = label(series, "state") else {
                    continue;
                };
                match workers.iter_mut().find(|(s, _)| s == state) {
                    Some((_, total)) => *total += n,
                    None => workers.push((state.to_owned(), n)),
                }
            }
            workers.retain(|(_, n)| *n > 0.0);
            let gauge =
                |name: &str| after.get(&format!("{name}{{function=\"{}\"}}", escape(&function)));
            Row {
                rps: done / secs,
                p50_ms: quantile(0.5),
                p99_ms: quantile(0.99),
                inflight: gauge("noslate_inflight_requests"),
                queued: gauge("noslate_queued_requests"),
                workers,
                errors,
                function,
            }
        })
        .collect()
}

/// The frame as text: a header line for the runtime, then a table of functions.
pub fn render(after: &Scrape, rows: &[Row]) -> String {
    let mut out = String::new();
    let breaker = if after.get("noslate_circuit_breaker_open") > 0.0 {
        "OPEN"
    } else {
        "closed"
    };
    let _ = writeln!(
        out,
        "noslate: {} connections, RSS {:.1} MiB, breaker {breaker}",
        after.get("noslate_connections"),
        after.get("noslate_resident_memory_bytes") / (1024.0 * 1024.0),
    );
    let _ = writeln!(
        out,
        "{:<24} {:>8} {:>9} {:>9} {:>8} {:>7} {:>7}  WORKERS",
        "FUNCTION", "RPS", "P50 ms", "P99 ms", "INFLIGHT", "QUEUED", "ERRORS"
    );
    let ms = |v: Option<f64>| match v {
        Some(v) if v.is_infinite() => "> 60000".to_owned(),
        Some(v) => format!("<= {v}"),
        None => "-".to_owned(),
    };
    for r in rows {
        let workers: Vec<String> = r.workers.iter().map(|(s, n)| format!("{s} {n}")).collect();
        let _ = writeln!(
            out,
            "{:<24} {:>8.1} {:>9} {:>9} {:>8} {:>7} {:>7}  {}",
            r.function,
            r.rps,
            ms(r.p50_ms),
            ms(r.p99_ms),
            r.inflight,
            r.queued,
            r.errors,
            workers.join(", ")
        );
    }
    out
}

/// The value of label `name` in a series written as `metric{a="x",b="y"}`.
fn label<'a>(series: &'a str, name: &str) -> Option<&'a str> {
    let start = series.find(&format!("{name}=\""))? + name.len() + 2;
    let rest = &series[start..];
    let mut end = 0;
    let bytes = rest.as_bytes();
    while end < bytes.len() && bytes[end] != b'"' {
        end += if bytes[end] == b'\\' { 2 } else { 1 };
    }
    rest.get(..end)
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn unescape(value: &str) -> String {
    value
        .replace("\\n", "\n")
        .replace("\\\"", "\"")
        .replace("\\\\", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "\
noslate_connections 1
noslate_inflight_requests{function=\"f\"} 0
noslate_invocation_duration_seconds_bucket{function=\"f\",le=\"0.001\"} 0
noslate_invocation_duration_seconds_bucket{function=\"f\",le=\"0.01\"} 0
noslate_invocation_duration_seconds_bucket{function=\"f\",le=\"+Inf\"} 0
noslate_invocation_duration_seconds_count{function=\"f\"} 0
";

    const AFTER: &str = "\
# HELP noslate_connections x
noslate_connections 3
noslate_resident_memory_bytes 4194304
noslate_circuit_breaker_open 0
noslate_inflight_requests{function=\"f\"} 2
noslate_queued_requests{function=\"f\"} 1
noslate_workers{function=\"f\",state=\"ready\",kind=\"cold\"} 2
noslate_workers{function=\"f\",state=\"ready\",kind=\"spare\"} 1
noslate_workers{function=\"f\",state=\"starting\",kind=\"cold\"} 0
noslate_invocations_total{function=\"f\",status_class=\"2xx\",error_type=\"\"} 98
noslate_invocations_total{function=\"f\",status_class=\"4xx\",error_type=\"FunctionError\"} 2
noslate_invocation_duration_seconds_bucket{function=\"f\",le=\"0.001\"} 90
noslate_invocation_duration_seconds_bucket{function=\"f\",le=\"0.01\"} 99
noslate_invocation_duration_seconds_bucket{function=\"f\",le=\"+Inf\"} 100
noslate_invocation_duration_seconds_count{function=\"f\"} 100
";

    #[test]
    fn a_frame_is_the_difference_of_two_scrapes() {
        let rows = rows(
            &Scrape::parse(BEFORE),
            &Scrape::parse(AFTER),
            Duration::from_secs(2),
        );
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(r.function, "f");
        assert!((r.rps - 50.0).abs() < 1e-9, "{r:?}");
        assert_eq!(r.p50_ms, Some(1.0));
        assert_eq!(r.p99_ms, Some(10.0));
        assert_eq!((r.inflight, r.queued, r.errors), (2.0, 1.0, 2.0));
        assert_eq!(r.workers, vec![("ready".to_owned(), 3.0)]);
        let text = render(&Scrape::parse(AFTER), &rows);
        assert!(
            text.starts_with("noslate: 3 connections, RSS 4.0 MiB, breaker closed\n"),
            "{text}"
        );
        assert!(text.contains("ready 3"), "{text}");
    }

    #[test]
    fn an_idle_interval_has_no_percentiles() {
        let rows = rows(
            &Scrape::parse(AFTER),
            &Scrape::parse(AFTER),
            Duration::from_secs(1),
        );
        assert_eq!(
            (rows[0].rps, rows[0].p50_ms, rows[0].errors),
            (0.0, None, 0.0)
        );
    }

    #[test]
    fn labels_with_quotes_are_read_whole() {
        assert_eq!(label("m{function=\"a\\\"b\",le=\"1\"}", "le"), Some("1"));
        assert_eq!(
            label("m{function=\"a\\\"b\",le=\"1\"}", "function"),
            Some("a\\\"b")
        );
    }
}
