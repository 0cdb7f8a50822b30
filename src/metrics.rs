//! Metrics in Prometheus' text exposition format (version 0.0.4): fixed-bucket histograms and
//! counters that the loop updates with integer arithmetic only (no allocation, no formatting on
//! the request path), and the encoder that writes them out when they are scraped.

use std::fmt::Write as _;
use std::time::Duration;

/// The content type of a scrape: the text exposition format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of the duration histograms' buckets, in microseconds: from 100 µs (a warm
/// invocation through the runtime) to a minute (past most functions' timeouts). Fixed, so that
/// series from every runtime can be aggregated.
pub const DURATION_BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000, 15_000_000, 60_000_000,
];

/// A histogram of durations over [`DURATION_BUCKETS_US`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    counts: [u64; DURATION_BUCKETS_US.len() + 1],
    /// Sum of the observations, in microseconds.
    sum_us: u64,
}

impl Histogram {
    /// Counts one observation.
    pub fn observe(&mut self, value: Duration) {
        let us = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        let bucket = DURATION_BUCKETS_US.partition_point(|&bound| bound < us);
        self.counts[bucket] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// How many observations there were.
    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// How an invocation ended, as its outcome label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Answered by the function (any status it chose).
    None,
    /// The function threw or returned an error (its own error type is not a label: it is the
    /// function's to choose, and unbounded).
    Function,
    /// One of the runtime's own error types, by name.
    Runtime(&'static str),
}

/// The runtime's own error types an invocation can end with; anything else is the function's.
const RUNTIME_ERROR_TYPES: [&str; 20] = [
    "AmbiguousTarget",
    "CpuLimitExceeded",
    "FunctionNotFound",
    "FunctionTimeout",
    "InternalError",
    "InvalidResponse",
    "MemoryLimitExceeded",
    "NoAvailableWorker",
    "NoEnoughVirtualMemory",
    "PayloadTooLarge",
    "RateLimitExceeded",
    "ReplicaLimitExceeded",
    "RequestHeaderFieldsTooLarge",
    "RuntimeStopped",
    "ServiceNotFound",
    "SystemCircuitBreakerOpen",
    "TooManyRequests",
    "WorkerCrashed",
    "WorkerStartFailed",
    "InitializationTimeout",
];

impl ErrorKind {
    /// The kind an error answer of type `error_type` is counted as.
    pub fn of(error_type: &str) -> ErrorKind {
        RUNTIME_ERROR_TYPES
            .iter()
            .find(|&&known| known == error_type)
            .map_or(ErrorKind::Function, |&known| ErrorKind::Runtime(known))
    }

    fn label(self) -> &'static str {
        match self {
            ErrorKind::None => "",
            ErrorKind::Function => "FunctionError",
            ErrorKind::Runtime(name) => name,
        }
    }
}

/// What one finished invocation contributes to its function's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    /// The status it was answered with (0 when the connection was cut before any).
    pub status: u16,
    pub error: ErrorKind,
    /// From admission to its dispatch to a worker (`None`: never dispatched).
    pub queue_wait: Option<Duration>,
    /// From admission to its response head (`None`: no head came).
    pub to_head: Option<Duration>,
    /// From admission to its end.
    pub total: Duration,
    /// Request body bytes sent to the worker.
    pub bytes_in: u64,
    /// Response body bytes written for the client.
    pub bytes_out: u64,
}

/// One function's invocation metrics.
#[derive(Debug, Clone, Default)]
pub struct InvocationMetrics {
    /// Finished invocations by status class (0 = none, 1..=5 = 1xx..5xx) and error kind.
    outcomes: Vec<((u8, ErrorKind), u64)>,
    queue_wait: Histogram,
    to_head: Histogram,
    total: Histogram,
    bytes_in: u64,
    bytes_out: u64,
}

impl InvocationMetrics {
    /// Counts a finished invocation. Allocates only the first time an outcome is seen (there
    /// are at most a few dozen).
    pub fn record(&mut self, done: &Finished) {
        let class = u8::try_from(done.status / 100).unwrap_or(0).min(5);
        let key = (class, done.error);
        match self.outcomes.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => self.outcomes.push((key, 1)),
        }
        if let Some(wait) = done.queue_wait {
            self.queue_wait.observe(wait);
        }
        if let Some(head) = done.to_head {
            self.to_head.observe(head);
        }
        self.total.observe(done.total);
        self.bytes_in = self.bytes_in.saturating_add(done.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(done.bytes_out);
    }
}

/// How a worker came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartKind {
    /// Forked and exec'd from nothing.
    Cold,
    /// Forked from its function's warm seed.
    Forked,
    /// A spare Node.js worker taken over.
    Spare,
}

impl StartKind {
    /// Every kind, in label order.
    pub const ALL: [StartKind; 3] = [StartKind::Cold, StartKind::Forked, StartKind::Spare];

    /// The `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            StartKind::Cold => "cold",
            StartKind::Forked => "forked",
            StartKind::Spare => "spare",
        }
    }
}

/// One function's worker starts: how many came up, by kind, and how long from the launch
/// decision to ready.
#[derive(Debug, Clone, Default)]
pub struct StartMetrics {
    ready: [u64; 3],
    start_to_ready: Histogram,
}

impl StartMetrics {
    /// Counts a worker of `kind` that became ready `after` its launch decision.
    pub fn record(&mut self, kind: StartKind, after: Duration) {
        self.ready[kind as usize] += 1;
        self.start_to_ready.observe(after);
    }

    /// Workers that became ready, of `kind`.
    pub fn ready(&self, kind: StartKind) -> u64 {
        self.ready[kind as usize]
    }

    /// Launch decision to ready.
    pub fn start_to_ready(&self) -> &Histogram {
        &self.start_to_ready
    }
}

/// A scrape being written: each metric family once, with its `# HELP` and `# TYPE`.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

/// A label set: names and values (values are escaped when written).
pub type Labels<'a> = &'a [(&'a str, &'a str)];

impl Exposition {
    /// Starts a metric family.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: Labels<'_>, value: impl std::fmt::Display) {
        self.text.push_str(name);
        write_labels(&mut self.text, labels, None);
        let _ = writeln!(self.text, " {value}");
    }

    /// A histogram's samples (buckets, sum in seconds, count) for `labels`.
    pub fn histogram(&mut self, name: &str, labels: Labels<'_>, h: &Histogram) {
        let mut cumulative = 0;
        for (i, &count) in h.counts.iter().enumerate() {
            cumulative += count;
            let le = match DURATION_BUCKETS_US.get(i) {
                Some(&us) => seconds(us),
                None => "+Inf".to_owned(),
            };
            self.text.push_str(name);
            self.text.push_str("_bucket");
            write_labels(&mut self.text, labels, Some(&le));
            let _ = writeln!(self.text, " {cumulative}");
        }
        let _ = write!(self.text, "{name}_sum");
        write_labels(&mut self.text, labels, None);
        let _ = writeln!(self.text, " {}", seconds(h.sum_us));
        let _ = write!(self.text, "{name}_count");
        write_labels(&mut self.text, labels, None);
        let _ = writeln!(self.text, " {cumulative}");
    }

    /// One function's invocation families' samples, labelled with `function`.
    pub fn invocations(&mut self, function: &str, m: &InvocationMetrics) {
        for &((class, error), n) in &m.outcomes {
            let class = if class == 0 {
                "none".to_owned()
            } else {
                format!("{class}xx")
            };
            let labels = [
                ("function", function),
                ("status_class", class.as_str()),
                ("error_type", error.label()),
            ];
            self.sample("noslate_invocations_total", &labels, n);
        }
    }

    /// The text, as served.
    pub fn finish(self) -> String {
        self.text
    }
}

impl InvocationMetrics {
    /// The duration histograms: (metric name, histogram).
    pub fn histograms(&self) -> [(&'static str, &Histogram); 3] {
        [
            ("noslate_invocation_queue_wait_seconds", &self.queue_wait),
            ("noslate_invocation_time_to_head_seconds", &self.to_head),
            ("noslate_invocation_duration_seconds", &self.total),
        ]
    }

    /// Request and response body bytes.
    pub fn bytes(&self) -> (u64, u64) {
        (self.bytes_in, self.bytes_out)
    }
}

/// `us` microseconds as seconds, exactly (no float rounding in bucket bounds).
fn seconds(us: u64) -> String {
    let whole = us / 1_000_000;
    let frac = us % 1_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

fn write_labels(out: &mut String, labels: Labels<'_>, le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (name, value) in labels.iter().copied().chain(le.map(|v| ("le", v))) {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(name);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_they_do_not_exceed() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_micros(101));
        h.observe(Duration::from_secs(3600));
        assert_eq!(h.counts[0], 1, "100 µs is within le=0.0001");
        assert_eq!(h.counts[1], 1);
        assert_eq!(h.counts[DURATION_BUCKETS_US.len()], 1, "+Inf");
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn histograms_are_written_cumulative_with_exact_bounds() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(2));
        let mut out = Exposition::default();
        out.histogram("x_seconds", &[("function", "f")], &h);
        let text = out.finish();
        assert!(
            text.contains("x_seconds_bucket{function=\"f\",le=\"0.00025\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{function=\"f\",le=\"0.0005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{function=\"f\",le=\"0.0025\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{function=\"f\",le=\"+Inf\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_sum{function=\"f\"} 0.0023\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_count{function=\"f\"} 2\n"),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = Exposition::default();
        out.sample("m", &[("function", "a\"b\\c\nd")], 1);
        assert_eq!(out.finish(), "m{function=\"a\\\"b\\\\c\\nd\"} 1\n");
    }

    #[test]
    fn a_functions_own_error_types_fold_into_one_label() {
        assert_eq!(
            ErrorKind::of("FunctionTimeout"),
            ErrorKind::Runtime("FunctionTimeout")
        );
        assert_eq!(ErrorKind::of("MyCustomError"), ErrorKind::Function);
        let mut m = InvocationMetrics::default();
        for error in ["Boom", "Bang", "FunctionTimeout"] {
            m.record(&Finished {
                status: 404,
                error: ErrorKind::of(error),
                queue_wait: None,
                to_head: None,
                total: Duration::from_millis(1),
                bytes_in: 0,
                bytes_out: 0,
            });
        }
        let mut out = Exposition::default();
        out.invocations("f", &m);
        let text = out.finish();
        assert!(text.contains(
            "noslate_invocations_total{function=\"f\",status_class=\"4xx\",error_type=\"FunctionError\"} 2\n"
        ), "{text}");
        assert!(
            text.contains("error_type=\"FunctionTimeout\"} 1\n"),
            "{text}"
        );
    }
}
