//! Per runtime: start to ready of each runtime (cold and its fast path), and c=64 invoke
//! throughput of each runtime's trivial handler.

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;
use crate::config::Config;
use crate::report::fmt_int;
use crate::servers::{BODY, hello_profile, one_worker, why};
use crate::spawn::{
    SpawnRow, disposable_worker, example_where, measure_native_spawns, measure_spawns,
    measure_spawns_after, native_example, native_worker_bin, spawn_line,
};

/// Measured seconds of each runtime's invoke-throughput row: one round, a table, not a ratio.
pub const RUNTIME_TP_SECS: f64 = 2.0;
/// Warm-up seconds before each of them.
pub const RUNTIME_TP_WARMUP: f64 = 0.3;
/// The module of the Python start-to-ready row: the imports `json`, `decimal` and `email` and a trivial handler.
pub const PY_IMPORTS: &str =
    "import json, decimal, email\n\n\ndef handler(event, context):\n    return \"hello\"\n";
/// The command of the `process` row.
pub const PROCESS_SCRIPT: &str = "#!/bin/sh\necho hello\n";

/// One start-to-ready line of the per-runtime table.
pub struct RuntimeSpawn {
    pub key: &'static str,
    pub label: &'static str,
    pub row: SpawnRow,
}

/// One line of the per-runtime invoke-throughput table.
pub struct InvokeRow {
    pub key: &'static str,
    pub label: &'static str,
    /// The body every answer must be; None: any 2xx body (the examples that answer JSON).
    pub expect: Option<&'static [u8]>,
    pub warmup: Counts,
    pub run: Result<ThroughputRun, String>,
}

impl InvokeRow {
    pub fn clean(&self) -> bool {
        self.warmup.errors + self.warmup.non2xx == 0
            && self
                .run
                .as_ref()
                .is_ok_and(|r| r.counts.ok > 0 && r.counts.errors + r.counts.non2xx == 0)
    }

    pub fn json(&self) -> Value {
        let check = self.expect.map_or("2xx".to_string(), |e| {
            format!("2xx and body {:?}", String::from_utf8_lossy(e))
        });
        let mut v = json!({
            "key": self.key, "label": self.label, "check": check, "pass": self.clean(),
            "warmup": {"ok": self.warmup.ok, "non2xx": self.warmup.non2xx,
                       "errors": self.warmup.errors},
        });
        match &self.run {
            Ok(r) => {
                v["rps"] = json!(r.rps());
                v["secs"] = json!(r.secs);
                v["ok"] = json!(r.counts.ok);
                v["non2xx"] = json!(r.counts.non2xx);
                v["errors"] = json!(r.counts.errors);
                v["first_error"] = json!(
                    r.counts
                        .first_error
                        .as_ref()
                        .or(self.warmup.first_error.as_ref())
                );
            }
            Err(e) => v["error"] = json!(e),
        }
        v
    }
}

pub struct RuntimeRows {
    pub spawns: Vec<RuntimeSpawn>,
    pub invoke: Vec<InvokeRow>,
}

impl RuntimeRows {
    /// Every row that ran is clean and every speed-up target that could be measured is met;
    /// rows that do not exist do not count.
    pub fn clean(&self) -> bool {
        self.spawns
            .iter()
            .filter(|s| !s.row.unavailable)
            .all(|s| s.row.clean())
            && self.invoke.iter().all(InvokeRow::clean)
            && self.speedups().iter().all(|s| s.pass().unwrap_or(true))
    }

    pub fn row(&self, key: &str) -> Option<&SpawnRow> {
        self.spawns
            .iter()
            .find(|s| s.key == key)
            .map(|s| &s.row)
            .filter(|r| !r.unavailable && !r.ready_ms.is_empty())
    }

    /// The fast-start targets: each fast path against its cold start, from the same run.
    pub fn speedups(&self) -> Vec<Speedup> {
        let p50 = |key: &str| self.row(key).and_then(|r| percentile(&r.ready_ms, 50.0));
        vec![
            Speedup {
                key: "python3_warm_seed",
                label: "python3 warm seed vs cold",
                cold_p50: p50("python3_cold"),
                fast_p50: p50("python3_warm_seed"),
                min_ratio: TARGET_PY_SEED_RATIO,
                max_fast_p50: Some(TARGET_PY_SEED_P50_MS),
            },
            Speedup {
                key: "nodejs_spare_process",
                label: "nodejs spare process vs cold",
                cold_p50: p50("nodejs_cold"),
                fast_p50: p50("nodejs_spare_process"),
                min_ratio: TARGET_NODE_SPARE_RATIO,
                max_fast_p50: None,
            },
        ]
    }

    /// The `per_runtime` section of the JSON report.
    pub fn json(&self, cfg: &Config) -> Value {
        json!({
            "spawns_each": cfg.runtime_spawns,
            "start_to_ready": self.spawns.iter()
                .map(|s| (s.key.to_string(), json!({"label": s.label, "row": s.row.json()})))
                .collect::<serde_json::Map<_, _>>(),
            "speedups": self.speedups().iter()
                .map(|s| (s.key.to_string(), s.json()))
                .collect::<serde_json::Map<_, _>>(),
            "invoke_throughput": {
                "conns": cfg.conns, "threads": cfg.threads, "secs": RUNTIME_TP_SECS,
                "warmup_secs": RUNTIME_TP_WARMUP, "rounds": 1,
                "rows": self.invoke.iter().map(InvokeRow::json).collect::<Vec<_>>(),
            },
            "pass": self.clean(),
        })
    }
}

/// Target: a worker forked from the warm seed is ready at least this many times faster
/// than a cold Python start (p50 against p50).
pub const TARGET_PY_SEED_RATIO: f64 = 10.0;
/// Target: p50 spawn-to-ready of a worker forked from the warm seed, ms.
pub const TARGET_PY_SEED_P50_MS: f64 = 5.0;
/// Target: a Node.js worker from a spare process is ready at least this many times
/// faster than a cold one.
pub const TARGET_NODE_SPARE_RATIO: f64 = 3.0;

/// One fast-start path against its cold start.
pub struct Speedup {
    pub key: &'static str,
    pub label: &'static str,
    pub cold_p50: Option<f64>,
    pub fast_p50: Option<f64>,
    pub min_ratio: f64,
    pub max_fast_p50: Option<f64>,
}

impl Speedup {
    pub fn ratio(&self) -> Option<f64> {
        Some(self.cold_p50? / self.fast_p50?.max(1e-3))
    }

    /// `None` when either side was not measured.
    pub fn pass(&self) -> Option<bool> {
        let ratio = self.ratio()?;
        let fast = self.fast_p50?;
        Some(ratio >= self.min_ratio && self.max_fast_p50.is_none_or(|max| fast <= max))
    }

    pub fn json(&self) -> Value {
        json!({"cold_p50_ms": self.cold_p50, "fast_p50_ms": self.fast_p50,
               "cold_over_fast": self.ratio(), "target_min_ratio": self.min_ratio,
               "target_max_fast_p50_ms": self.max_fast_p50, "pass": self.pass()})
    }
}

/// Writes `text` to `dir/file`, executable with `exec`.
pub fn write_code(dir: &Path, file: &str, text: &str, exec: bool) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(file);
    fs::create_dir_all(dir)
        .and_then(|()| fs::write(&path, text))
        .and_then(|()| {
            if exec {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            } else {
                Ok(())
            }
        })
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Start to ready of a Python worker whose module imports `json`, `decimal` and `email`: cold
/// (`disableSeed`), or forked from the function's warm seed.
pub fn measure_python_spawns(tmp: &Path, n: usize, seed: bool) -> SpawnRow {
    let code = tmp.join("code-py-imports");
    if let Err(e) = write_code(&code, "index.py", PY_IMPORTS, false) {
        return SpawnRow::unavailable(format!("not available: {e}"));
    }
    let mut worker = disposable_worker(None);
    worker["disableSeed"] = json!(!seed);
    let functions = json!([{
        "name": "pyimports", "runtime": "python3", "url": code, "handler": "index.handler",
        "signature": "bench", "resourceLimit": {"memory": 128 * MIB},
        "worker": worker,
    }]);
    let tag = if seed {
        "r-spawn-python-seed"
    } else {
        "r-spawn-python"
    };
    measure_spawns_after(tmp, tag, &functions, None, n, Some(BODY), |s: &Seen, _| {
        !seed || s.seeds_ready > 0
    })
}

/// The native profile of the invoke row, and the body it must answer (the reference worker
/// echoes; another native example is only checked for 2xx).
pub fn native_profile() -> Result<(Value, Option<&'static [u8]>), String> {
    if let Some(f) = native_example() {
        return Ok((f, None));
    }
    let bin = native_worker_bin()?;
    Ok((
        json!({"name": "native", "runtime": "native", "url": bin.parent(),
               "sourceFile": "native_worker", "signature": "bench"}),
        Some(BODY),
    ))
}

/// The profiles of the invoke table: key, label, profile (or why there is none), memory limit,
/// and the body each answer must be.
#[allow(clippy::type_complexity)]
pub fn invoke_profiles(
    tmp: &Path,
) -> Vec<(
    &'static str,
    &'static str,
    Result<Value, String>,
    u64,
    Option<&'static [u8]>,
)> {
    let example = |name: &str| {
        example_where(|f| f.get("name").and_then(Value::as_str) == Some(name))
            .ok_or_else(|| format!("examples/functions.json has no {name:?}"))
    };
    let (native, native_expect) = match native_profile() {
        Ok((f, e)) => (Ok(f), e),
        Err(e) => (Err(e), None),
    };
    let code = tmp.join("code-process");
    let process = write_code(&code, "hello.sh", PROCESS_SCRIPT, true).map(|()| {
        json!({"name": "process-hello", "runtime": "process", "url": code,
               "sourceFile": "hello.sh", "signature": "bench"})
    });
    vec![
        (
            "nodejs",
            "nodejs noslate (examples/hello)",
            example("hello"),
            128,
            Some(BODY),
        ),
        (
            "nodejs_fc_event",
            "nodejs fc-event (fc-event-node)",
            example("fc-event-node"),
            128,
            None,
        ),
        (
            "nodejs_fc_http",
            "nodejs fc-http (fc-http-node)",
            example("fc-http-node"),
            128,
            None,
        ),
        (
            "aworker",
            "aworker (aworker-hello)",
            example("aworker-hello"),
            128,
            None,
        ),
        (
            "python3_fc_event",
            "python3 fc-event (python-event)",
            example("python-event"),
            128,
            None,
        ),
        (
            "python3_wsgi",
            "python3 fc-http WSGI (python-wsgi)",
            example("python-wsgi"),
            128,
            None,
        ),
        (
            "native",
            "native (native_worker)",
            native,
            64,
            native_expect,
        ),
        (
            "process",
            "process (sh: echo hello)",
            process,
            64,
            Some(b"hello\n"),
        ),
    ]
}

/// c=64 throughput of one function in a runtime of its own: one worker, reserved and
/// initialized, a short warm-up, then one measured window.
pub fn measure_invoke(
    cfg: &Config,
    tmp: &Path,
    tag: &str,
    mut profile: Value,
    memory_mib: u64,
    expect: Option<&'static [u8]>,
) -> (Counts, Result<ThroughputRun, String>) {
    profile["worker"] = one_worker();
    profile["resourceLimit"]["memory"] = json!(memory_mib * MIB);
    let name = profile["name"].as_str().unwrap_or("hello").to_string();
    let (p, port) = match start_noslate_with(tmp, tag, &json!([profile]), None, true) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("bench: invoke throughput ({tag}): {e}");
            return (Counts::default(), Err(why(&e)));
        }
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let req = request_bytes("POST", &format!("/invoke/{name}"), port, BODY);
    let secs = Duration::from_secs_f64;
    let warm = run_throughput(
        addr,
        &req,
        expect,
        cfg.conns,
        cfg.threads,
        secs(RUNTIME_TP_WARMUP),
    );
    let run = run_throughput(
        addr,
        &req,
        expect,
        cfg.conns,
        cfg.threads,
        secs(RUNTIME_TP_SECS),
    );
    if run.counts.errors + run.counts.non2xx > 0 {
        eprintln!(
            "bench: invoke throughput ({tag}): {} errors, {} non-2xx; its log:\n{}",
            run.counts.errors,
            run.counts.non2xx,
            p.tail(10)
        );
    }
    drop(p);
    (warm.counts, Ok(run))
}

/// The per-runtime rows: start to ready (`BENCH_RUNTIME_SPAWNS` each), then the invoke table.
pub fn measure_runtimes(cfg: &Config, tmp: &Path) -> RuntimeRows {
    let n = cfg.runtime_spawns;
    let node = json!([hello_profile(disposable_worker(None), json!({}))]);
    let spawns = vec![
        RuntimeSpawn {
            key: "python3_cold",
            label: "python3 cold, module imports json+decimal+email",
            row: measure_python_spawns(tmp, n, false),
        },
        RuntimeSpawn {
            key: "python3_warm_seed",
            label: "python3 same module from the warm seed (target: p50 <= 5 ms, >= 10x cold)",
            row: measure_python_spawns(tmp, n, true),
        },
        RuntimeSpawn {
            key: "nodejs_cold",
            label: "nodejs cold, examples/hello",
            row: measure_spawns(tmp, "r-spawn-node", &node, n, Some(BODY)),
        },
        RuntimeSpawn {
            key: "nodejs_spare_process",
            label: "nodejs from a spare process (target: >= 3x faster than cold)",
            row: measure_spawns_after(
                tmp,
                "r-spawn-node-spare",
                &node,
                None,
                n,
                Some(BODY),
                // Start i takes the i-th spare, once it is ready (each refill starts 100 ms
                // after a spare is taken).
                |s: &Seen, i| s.spares_ready > i,
            ),
        },
        RuntimeSpawn {
            key: "native",
            label: "native, examples/native_worker",
            row: measure_native_spawns(tmp, "r-spawn-native", n),
        },
    ];
    let invoke = invoke_profiles(tmp)
        .into_iter()
        .map(|(key, label, profile, mib, expect)| {
            let (warmup, run) = match profile {
                Ok(p) => measure_invoke(cfg, tmp, &format!("r-invoke-{key}"), p, mib, expect),
                Err(e) => (Counts::default(), Err(format!("not available: {e}"))),
            };
            InvokeRow {
                key,
                label,
                expect,
                warmup,
                run,
            }
        })
        .collect();
    RuntimeRows { spawns, invoke }
}

/// The per-runtime section of the report.
pub fn runtime_lines(out: &mut String, cfg: &Config, rows: Option<&RuntimeRows>) {
    let _ = writeln!(
        out,
        "\nper runtime, start to ready (the runtime's own log, as above; BENCH_RUNTIME_SPAWNS={} sequential disposable starts each):",
        cfg.runtime_spawns
    );
    let Some(rows) = rows else {
        let _ = writeln!(out, "  not selected (BENCH_TARGETS)");
        return;
    };
    for s in &rows.spawns {
        if s.row.unavailable {
            let note = s.row.note.as_deref().unwrap_or("not available");
            let _ = writeln!(out, "  {}: {note}  n/a", s.label);
        } else {
            let target = (s.key == "python3_warm_seed").then_some(TARGET_PY_SEED_P50_MS);
            spawn_line(out, s.label, Some(&s.row), target);
        }
    }
    for sp in rows.speedups() {
        let target = match sp.max_fast_p50 {
            Some(max) => format!("target >= {:.0}x and p50 <= {max:.0} ms", sp.min_ratio),
            None => format!("target >= {:.0}x", sp.min_ratio),
        };
        match sp.pass() {
            Some(ok) => {
                let _ = writeln!(
                    out,
                    "  {}: cold/fast = {:.1}x (p50 {:.2} ms vs {:.2} ms; {target})  {}",
                    sp.label,
                    sp.ratio().unwrap_or(0.0),
                    sp.cold_p50.unwrap_or(0.0),
                    sp.fast_p50.unwrap_or(0.0),
                    pass(ok)
                );
            }
            None => {
                let _ = writeln!(out, "  {}: not measured ({target})  n/a", sp.label);
            }
        }
    }
    let _ = writeln!(
        out,
        "\nper runtime, invoke throughput at c={} ({} threads; one worker each, maxActivateRequests 64, memory 128 MiB, native/process 64 MiB; a fresh runtime per row, {RUNTIME_TP_WARMUP} s warm-up, ONE {RUNTIME_TP_SECS} s window: a single-round reading, not a ratio):",
        cfg.conns, cfg.threads
    );
    let _ = writeln!(
        out,
        "  {:<38} {:>9} {:>8} {:>7}  check",
        "runtime / handler style", "req/s", "non-2xx", "errors"
    );
    for r in &rows.invoke {
        let check = r.expect.map_or("200, any body".to_string(), |e| {
            format!("200 + body {:?}", String::from_utf8_lossy(e))
        });
        match &r.run {
            Ok(run) => {
                let mut verdict = pass(r.clean()).to_string();
                if let Some(e) = run
                    .counts
                    .first_error
                    .as_ref()
                    .or(r.warmup.first_error.as_ref())
                {
                    let _ = write!(verdict, " ({e})");
                }
                let _ = writeln!(
                    out,
                    "  {:<38} {:>9} {:>8} {:>7}  {check}  {verdict}",
                    r.label,
                    fmt_int(run.rps()),
                    run.counts.non2xx,
                    run.counts.errors
                );
            }
            Err(e) => {
                let _ = writeln!(out, "  {:<38} {:>9}  FAIL ({e})", r.label, "-");
            }
        }
    }
}
