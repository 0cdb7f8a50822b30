//! The SDK gateway (`BENCH_TARGETS` letter `g`): invocations through a gateway as Noslate's users
//! wrote them (Node's own `http` + `require(NOSLATE_PATH).NoslatedClient` + noslate,
//! `benches/sdk_gateway.js`), side by side with the runtime's direct FC port and with Node's
//! own `http` serving the handler. Every round starts a fresh runtime (one Node.js worker,
//! `maxActivateRequests` 64), a fresh gateway in front of its admin socket and a fresh Node
//! direct; the three sides alternate, each with a warm-up (2 s, `BENCH_GATEWAY_WARMUP`), c=64
//! throughput and c=1 latency.
//! The ratio gateway/direct FC port is the median of the per-round ratios; target >= 0.5.
//! A fourth side is the same gateway with the SDK's transport replaced by answers made in the
//! gateway's own process (`benches/sdk_null_transport.js`): what it serves is the most any
//! transport between the SDK and the runtime could give the gateway (informational).
//! With `BENCH_GATEWAY_FC_HEADERS=1`, every side's requests carry FC's headers instead of the
//! bench's plain request.
//! Noslate's own SDK path measured 1.4 k req/s at c=64 on this kind of machine
//! (`HTTP -> SDK -> data plane`, reference peers table): quoted, not measured here.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;
use crate::config::Config;
use crate::report::rows_or_why;
use crate::rounds::{process_cpu_ns, run_latency};
use crate::servers::{BODY, hello_profile, one_worker, start_node_direct};

/// Gateway c=64 throughput against the direct FC port's: the target.
pub const TARGET_GATEWAY_RATIO: f64 = 0.5;
/// Noslate's SDK path at c=64 (HTTP front + SDK + data plane + one worker), req/s, from the
/// peers measured on this kind of machine; a quoted figure, for scale.
const NOSLATE_SDK_PATH_RPS: f64 = 1_397.0;

// The sides' places in `SIDES` and `GatewayRows::sides`.
const DIRECT: usize = 0;
const GATEWAY: usize = 1;
const NODE_DIRECT: usize = 2;
const NO_TRANSPORT: usize = 3;

const SIDES: [&str; 4] = [
    "direct FC port",
    "SDK gateway",
    "node direct",
    "SDK, no transport",
];

/// The warm-up of every side of this row, in seconds (`BENCH_GATEWAY_WARMUP`), at least
/// `BENCH_WARMUP`. A fresh gateway runs the SDK's and Node's `http` code through V8's tiers
/// for over a second: in one run it served 2.1 k req/s in its first 0.5 s, 5.9 k and 9.4 k in
/// the next two 0.83 s windows and 11.7 k from then on. The row compares steady states.
const GATEWAY_WARMUP_SECS: f64 = 2.0;

/// One side's numbers over the rounds.
#[derive(Default)]
struct Side {
    rps: Vec<f64>,
    p50_us: Vec<f64>,
    /// CPU per request at c=64 of the process serving the side's port (the runtime, the
    /// gateway, Node), in µs.
    front_cpu_us: Vec<f64>,
    /// The same for the runtime behind the gateway (SDK gateway side only).
    runtime_cpu_us: Vec<f64>,
    errors: u64,
    first_error: Option<String>,
}

pub struct GatewayRows {
    sides: Vec<Side>,
    note: Option<String>,
    /// Every side's requests carried FC's headers (`BENCH_GATEWAY_FC_HEADERS=1`), which the
    /// gateway forwards as `req.headers`, as a gateway behind FC does.
    fc_headers: bool,
}

/// `node benches/sdk_gateway.js` in front of the runtime whose work directory is `work`; with
/// `in_process` its invocations are answered inside the gateway instead
/// (`BENCH_GATEWAY_TRANSPORT=none`).
fn start_gateway(work: &Path, in_process: bool) -> Result<(Proc, u16), String> {
    let mut cmd = Command::new("node");
    if in_process {
        cmd.env("BENCH_GATEWAY_TRANSPORT", "none");
    }
    // BENCH_GATEWAY_NODE_ARGS: extra Node.js flags for the gateway, such as `--cpu-prof`.
    if let Ok(args) = std::env::var("BENCH_GATEWAY_NODE_ARGS") {
        cmd.args(args.split_whitespace());
    }
    cmd.arg(Path::new(MANIFEST_DIR).join("benches/sdk_gateway.js"))
        .arg("0")
        .env("NOSLATE_WORKDIR", work)
        .env("NOSLATE_PATH", Path::new(MANIFEST_DIR).join("sdk/node"));
    let (mut p, rx) = Proc::spawn("sdk_gateway", cmd, bare_port)?;
    let port = p.wait_port(&rx, Duration::from_secs(20))?;
    Ok((p, port))
}

pub fn measure_gateway(cfg: &Config, tmp: &Path) -> GatewayRows {
    let mut sides: Vec<Side> = SIDES.iter().map(|_| Side::default()).collect();
    let functions = json!([hello_profile(one_worker(), json!({}))]);
    let warmup = env_num("BENCH_GATEWAY_WARMUP", GATEWAY_WARMUP_SECS).max(cfg.warmup);
    let fc_headers = env_num("BENCH_GATEWAY_FC_HEADERS", 0.0) > 0.0;
    for round in 0..cfg.rounds {
        let tag = format!("gateway-r{}", round + 1);
        let runtime = start_noslate_with(tmp, &tag, &functions, None, true);
        let (runtime, runtime_port) = match runtime {
            Ok(r) => r,
            Err(e) => {
                return GatewayRows {
                    sides,
                    note: Some(e),
                    fc_headers,
                };
            }
        };
        let started = start_gateway(&workdir(tmp, &tag), false).and_then(|g| {
            Ok((
                g,
                start_node_direct()?,
                start_gateway(&workdir(tmp, &tag), true)?,
            ))
        });
        let ((gateway, gateway_port), (node, node_port), (bound, bound_port)) = match started {
            Ok(s) => s,
            Err(e) => {
                return GatewayRows {
                    sides,
                    note: Some(e),
                    fc_headers,
                };
            }
        };
        let ports = [runtime_port, gateway_port, node_port, bound_port];
        let pids = [runtime.pid(), gateway.pid(), node.pid(), bound.pid()];
        // Alternating the order cancels the position bias of a round.
        let order: [usize; 4] = if round % 2 == 0 {
            [0, 1, 2, 3]
        } else {
            [3, 2, 1, 0]
        };
        for i in order {
            let addr = ([127, 0, 0, 1], ports[i]).into();
            let req = if fc_headers {
                fc_request_bytes("POST", "/invoke", ports[i], BODY)
            } else {
                request_bytes("POST", "/invoke", ports[i], BODY)
            };
            let warm = Duration::from_secs_f64(warmup);
            let _ = run_throughput(addr, &req, Some(BODY), cfg.conns, cfg.threads, warm);
            let cpu_before = [pids[i], pids[DIRECT]].map(process_cpu_ns);
            let tp = run_throughput(
                addr,
                &req,
                Some(BODY),
                cfg.conns,
                cfg.threads,
                cfg.segment(),
            );
            let cpu_after = [pids[i], pids[DIRECT]].map(process_cpu_ns);
            let served = tp.rps() * cfg.segment().as_secs_f64();
            let per_request = |k: usize| match (cpu_before[k], cpu_after[k]) {
                (Some(a), Some(b)) if served > 0.0 => {
                    Some(b.saturating_sub(a) as f64 / 1e3 / served)
                }
                _ => None,
            };
            let lat = run_latency(addr, &req, Some(BODY), cfg.segment());
            let side = &mut sides[i];
            side.front_cpu_us.extend(per_request(0));
            if i == GATEWAY {
                side.runtime_cpu_us.extend(per_request(1));
            }
            side.rps.push(tp.rps());
            if let Some(p50) = percentile_us(&lat.samples, 50.0) {
                side.p50_us.push(p50);
            }
            for counts in [&tp.counts, &lat.counts] {
                side.errors += counts.errors + counts.non2xx;
                if side.first_error.is_none() {
                    side.first_error = (counts.first_error.clone()).or(counts.first_non2xx.clone());
                }
            }
        }
        drop((gateway, bound, node, runtime));
        eprintln!(
            "bench: SDK gateway, round {} of {} done",
            round + 1,
            cfg.rounds
        );
    }
    GatewayRows {
        sides,
        note: None,
        fc_headers,
    }
}

impl GatewayRows {
    /// Per-round ratios of side `a` over side `b`, their median.
    fn ratio(&self, a: usize, b: usize) -> Option<f64> {
        let pairs: Vec<f64> = (self.sides[a].rps.iter())
            .zip(&self.sides[b].rps)
            .filter(|(_, d)| **d > 0.0)
            .map(|(g, d)| g / d)
            .collect();
        median(pairs)
    }

    pub fn pass(&self) -> bool {
        self.note.is_none()
            && self.sides.iter().all(|s| s.errors == 0)
            && self
                .ratio(GATEWAY, DIRECT)
                .is_some_and(|r| r >= TARGET_GATEWAY_RATIO)
    }

    pub fn json(&self) -> Value {
        json!({
            "note": self.note,
            "sides": SIDES.iter().zip(&self.sides).map(|(name, s)| json!({
                "side": name, "rps": s.rps, "p50_us": s.p50_us, "errors": s.errors,
                "first_error": s.first_error, "front_cpu_us_per_req": s.front_cpu_us,
                "runtime_cpu_us_per_req": s.runtime_cpu_us,
            })).collect::<Vec<_>>(),
            "gateway_over_direct": self.ratio(GATEWAY, DIRECT),
            "gateway_over_node_direct": self.ratio(GATEWAY, NODE_DIRECT),
            "no_transport_over_direct": self.ratio(NO_TRANSPORT, DIRECT),
            "target_min": TARGET_GATEWAY_RATIO,
            "noslate_sdk_path_rps_quoted": NOSLATE_SDK_PATH_RPS,
            "fc_headers": self.fc_headers,
            "pass": self.pass(),
        })
    }
}

/// The report's lines for the rows.
pub fn gateway_lines(out: &mut String, rows: Option<&GatewayRows>) {
    let fc = rows.is_some_and(|r| r.fc_headers);
    let title = format!(
        "SDK gateway (node http + NoslatedClient + noslate, one worker; fresh servers per round; medians of rounds){}:",
        if fc {
            "; every request with FC's headers"
        } else {
            ""
        }
    );
    let Some(rows) = rows_or_why(out, &title, rows, |r| r.note.as_ref()) else {
        return;
    };
    for (name, s) in SIDES.iter().zip(&rows.sides) {
        let rps = median(s.rps.clone()).map_or("-".into(), |v| format!("{v:>8.0}"));
        let p50 = median(s.p50_us.clone()).map_or("-".into(), |v| format!("{v:.0}"));
        let errors = match (&s.first_error, s.errors) {
            (_, 0) => String::new(),
            (Some(e), n) => format!("; {n} errors, first: {e}"),
            (None, n) => format!("; {n} errors"),
        };
        let _ = writeln!(
            out,
            "  {name:<17} c=64 {rps} req/s, c=1 p50 {p50} µs{errors}"
        );
    }
    let cpu = |v: &Vec<f64>| median(v.clone()).map_or("-".into(), |v| format!("{v:.1} µs"));
    let [direct, gateway, node, bound] =
        [DIRECT, GATEWAY, NODE_DIRECT, NO_TRANSPORT].map(|i| &rows.sides[i]);
    // Busy share of one core: a gateway near 100 % is the row's bottleneck.
    let busy = match (
        median(gateway.front_cpu_us.clone()),
        median(gateway.rps.clone()),
    ) {
        (Some(us), Some(rps)) => format!("{:.0} %", us * rps / 1e4),
        _ => "-".into(),
    };
    let _ = writeln!(
        out,
        "  CPU per request at c=64: gateway process {} (busy {busy} of a core), the runtime behind it {}; the runtime on the direct FC port {}; node direct {}; the gateway without a transport {}",
        cpu(&gateway.front_cpu_us),
        cpu(&gateway.runtime_cpu_us),
        cpu(&direct.front_cpu_us),
        cpu(&node.front_cpu_us),
        cpu(&bound.front_cpu_us),
    );
    let fmt = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.2}"));
    let _ = writeln!(
        out,
        "  gateway/direct FC port = {} (target >= {TARGET_GATEWAY_RATIO:.1})  {}; gateway/node direct = {}; Noslate's own SDK path: {NOSLATE_SDK_PATH_RPS:.0} req/s (quoted, not this run)",
        fmt(rows.ratio(GATEWAY, DIRECT)),
        pass(rows.pass()),
        fmt(rows.ratio(GATEWAY, NODE_DIRECT)),
    );
    let _ = writeln!(
        out,
        "  SDK, no transport/direct FC port = {} (invocations answered inside the gateway: the most any transport to the runtime could give; informational)",
        fmt(rows.ratio(NO_TRANSPORT, DIRECT)),
    );
}
