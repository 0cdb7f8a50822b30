//! Spawn to ready: sequential disposable workers, timed by the runtime's own log.

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;
use crate::servers::{BODY, hello_profile, why};

/// Spawn to ready of a native worker, p50.
pub const TARGET_NATIVE_SPAWN_P50_MS: f64 = 2.0;

/// Spawn-to-ready times of one kind of worker.
#[derive(Default)]
pub struct SpawnRow {
    /// Spawn to ready of each worker, as the runtime logged it, ms, sorted.
    pub ready_ms: Vec<f64>,
    /// What the client saw per request (spawn, invoke, answer), ms, sorted.
    pub request_ms: Vec<f64>,
    pub counts: Counts,
    /// Why the row is short or missing.
    pub note: Option<String>,
    /// Nothing could be measured: the row prints "not available".
    pub unavailable: bool,
}

impl SpawnRow {
    pub fn unavailable(why: String) -> SpawnRow {
        SpawnRow {
            note: Some(why),
            unavailable: true,
            ..SpawnRow::default()
        }
    }

    /// Every request answered 2xx and every spawn logged its time.
    pub fn clean(&self) -> bool {
        !self.unavailable
            && self.note.is_none()
            && !self.ready_ms.is_empty()
            && self.counts.errors + self.counts.non2xx == 0
    }

    pub fn json(&self) -> Value {
        let p = |v: &[f64], q: f64| percentile(v, q);
        json!({
            "available": !self.unavailable, "note": self.note, "spawns": self.ready_ms.len(),
            "ready_ms": {"p50": p(&self.ready_ms, 50.0), "p99": p(&self.ready_ms, 99.0),
                         "min": self.ready_ms.first(), "max": self.ready_ms.last()},
            "client_request_ms": {"p50": p(&self.request_ms, 50.0), "p99": p(&self.request_ms, 99.0)},
            "ok": self.counts.ok, "non2xx": self.counts.non2xx, "errors": self.counts.errors,
            "first_error": self.counts.first_error,
        })
    }
}

/// The worker settings of the spawn rows: no reservation, and a fresh worker per request that
/// is stopped after it.
pub fn disposable_worker(base: Option<&Value>) -> Value {
    let mut w = base.cloned().unwrap_or_else(|| json!({}));
    if let Some(o) = w.as_object_mut() {
        o.insert("reservationCount".into(), json!(0));
        o.insert("replicaCountLimit".into(), json!(1));
        o.insert("disposable".into(), json!(true));
    }
    w
}

/// Starts a runtime with the one disposable function in `functions` and makes `n` sequential
/// invocations, each once the previous worker has exited (every spawn on a quiet machine).
/// The spawn-to-ready times are the runtime's own, parsed from its log.
pub fn measure_spawns(
    tmp: &Path,
    tag: &str,
    functions: &Value,
    n: usize,
    expect: Option<&'static [u8]>,
) -> SpawnRow {
    let cold = json!({"turf": {"spareWorkers": 0}});
    measure_spawns_after(
        tmp,
        tag,
        functions,
        Some(&cold),
        n,
        expect,
        |_: &Seen, _| true,
    )
}

/// [`measure_spawns`] with `config`, where start `i` waits (up to 10 s) until `ready(seen, i)`
/// holds in the runtime's log: a warm seed that finished importing, a spare that is ready.
pub fn measure_spawns_after(
    tmp: &Path,
    tag: &str,
    functions: &Value,
    config: Option<&Value>,
    n: usize,
    expect: Option<&'static [u8]>,
    ready: impl Fn(&Seen, usize) -> bool,
) -> SpawnRow {
    let (p, port) = match start_noslate_with(tmp, tag, functions, config, true) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("bench: spawn to ready ({tag}): {e}");
            return SpawnRow::unavailable(why(&e));
        }
    };
    let name = functions[0]["name"].as_str().unwrap_or("hello");
    let req = request_bytes("POST", &format!("/invoke/{name}"), port, BODY);
    let mut client = BlockingClient::new(SocketAddr::from(([127, 0, 0, 1], port)));
    let mut row = SpawnRow::default();
    let budget = Instant::now() + Duration::from_secs(60);
    let mut sent = 0;
    for i in 0..n {
        if !p.wait_seen(Duration::from_secs(5), |s| s.exits >= i) {
            row.note
                .get_or_insert_with(|| format!("worker {i} did not exit within 5 s"));
        }
        if Instant::now() >= budget {
            row.note
                .get_or_insert_with(|| format!("stopped after {i} spawns (60 s budget)"));
            break;
        }
        if !p.wait_seen(Duration::from_secs(10), |s| ready(s, i)) {
            row.note.get_or_insert_with(|| {
                format!("start {i}: the runtime was not ready for it within 10 s")
            });
        }
        let t0 = Instant::now();
        let r = client.exchange(&req, expect);
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        sent += 1;
        match r {
            Ok((resp, _)) => {
                let o = classify(&resp);
                if matches!(o, Outcome::Ok) {
                    row.request_ms.push(ms);
                }
                row.counts.add(o);
            }
            Err(e) => row.counts.add(Outcome::Error(e)),
        }
        // Its ready line came before its answer, but the log reader may lag behind.
        p.wait_seen(Duration::from_secs(2), |s| s.ready_ms.len() > i);
    }
    row.ready_ms = p.ready_ms();
    row.ready_ms.sort_by(f64::total_cmp);
    row.request_ms.sort_by(f64::total_cmp);
    if row.ready_ms.len() != sent && row.note.is_none() {
        row.note = Some(format!(
            "{} ready lines for {sent} requests",
            row.ready_ms.len()
        ));
    }
    row
}

/// Spawn to ready of Node.js workers running `hello`.
pub fn measure_node_spawns(tmp: &Path, n: usize) -> SpawnRow {
    let functions = json!([hello_profile(disposable_worker(None), json!({}))]);
    measure_spawns(tmp, "spawn-node", &functions, n, Some(BODY))
}

/// The first `runtime: "native"` profile of `examples/functions.json`, its `url` made absolute,
/// if its executable has been built (`make build` builds the example's).
pub fn native_example() -> Option<Value> {
    example_where(|f| f.get("runtime").and_then(Value::as_str) == Some("native")).filter(|f| {
        let dir = f.get("url").and_then(Value::as_str).unwrap_or_default();
        let file = f
            .get("sourceFile")
            .and_then(Value::as_str)
            .unwrap_or_default();
        Path::new(dir).join(file).is_file()
    })
}

/// The first profile of `examples/functions.json` that `pick` accepts, its `url` made absolute.
pub fn example_where(pick: impl Fn(&Value) -> bool) -> Option<Value> {
    let dir = Path::new(MANIFEST_DIR).join("examples");
    let text = fs::read_to_string(dir.join("functions.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    let list = v.get("functions").unwrap_or(&v).as_array()?;
    let mut f = list.iter().find(|f| pick(f))?.clone();
    if let Some(url) = f.get("url").and_then(Value::as_str) {
        let rel = url.strip_prefix("file://").unwrap_or(url);
        let abs = if Path::new(rel).is_absolute() {
            PathBuf::from(rel)
        } else {
            dir.join(rel)
        };
        f["url"] = json!(abs);
    }
    Some(f)
}

/// The reference native worker, `examples/native_worker.rs` (an echo over docs/PROTOCOL.md),
/// built in release mode beside the runtime binary (`cargo build` is a no-op when it is fresh).
pub fn native_worker_bin() -> Result<PathBuf, String> {
    if !Path::new(MANIFEST_DIR)
        .join("examples/native_worker.rs")
        .exists()
    {
        return Err("examples/ ships no native worker".into());
    }
    let out = Command::new(env!("CARGO"))
        .args(["build", "--release", "--example", "native_worker"])
        .current_dir(MANIFEST_DIR)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cargo build --example native_worker: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rev().find(|l| !l.trim().is_empty());
        return Err(format!(
            "cargo build --example native_worker failed: {}",
            last.unwrap_or_default().trim()
        ));
    }
    let bin = Path::new(NOSLATE_BIN)
        .parent()
        .map(|d| d.join("examples/native_worker"))
        .filter(|b| b.exists());
    bin.ok_or_else(|| "cargo built native_worker, but not beside the runtime binary".into())
}

/// Spawn to ready of native workers: a `runtime: "native"` profile of `examples/functions.json`,
/// else the reference worker `examples/native_worker.rs`, if the runtime runs native workers at
/// all. Never faked: without either, the row says why.
pub fn measure_native_spawns(tmp: &Path, tag: &str, n: usize) -> SpawnRow {
    let not_implemented = |e: &str| {
        let reason = why(e);
        if reason.contains("not supported") {
            format!("not available: runtime native not implemented ({reason})")
        } else {
            format!("not available: {reason}")
        }
    };
    let built = if native_example().is_none() {
        Some(native_worker_bin())
    } else {
        None
    };
    let example = native_example().or_else(|| match &built {
        Some(Ok(bin)) => Some(json!({
            "name": "native", "runtime": "native", "url": bin.parent(),
            "sourceFile": "native_worker", "signature": "bench",
        })),
        _ => None,
    });
    let Some(mut example) = example else {
        if let Some(Err(e)) = &built {
            eprintln!("bench: native worker: {e}");
        }
        // No reference worker; still ask the binary whether it would run one.
        let probe = json!([{
            "name": "native", "runtime": "native", "url": Path::new(MANIFEST_DIR).join("examples"),
            "handler": "index.handler", "signature": "bench", "worker": disposable_worker(None)
        }]);
        let why = match (
            start_noslate_with(tmp, &format!("{tag}-probe"), &probe, None, false),
            built,
        ) {
            (Err(e), _) => not_implemented(&e),
            (Ok(_), Some(Err(e))) => format!("not available: {e}"),
            (Ok(_), _) => "not available: examples/ ships no native worker".to_string(),
        };
        return SpawnRow::unavailable(why);
    };
    example["worker"] = disposable_worker(example.get("worker"));
    // The reference worker echoes the body; another native example is only checked for 2xx.
    let expect = built.is_some().then_some(BODY);
    let mut row = measure_spawns(tmp, tag, &json!([example]), n, expect);
    if row.unavailable {
        row.note = row.note.as_deref().map(not_implemented);
    }
    row
}

/// One spawn-to-ready line of the report.
pub fn spawn_line(out: &mut String, label: &str, row: Option<&SpawnRow>, target: Option<f64>) {
    let target_txt = target.map_or("no target; informational".to_string(), |t| {
        format!("target p50 <= {t:.0} ms")
    });
    let Some(row) = row else {
        let _ = writeln!(
            out,
            "  {label}: not selected (BENCH_TARGETS) ({target_txt})"
        );
        return;
    };
    if row.unavailable {
        let note = row.note.as_deref().unwrap_or("not available");
        let _ = writeln!(out, "  {label}: {note} ({target_txt})  n/a");
        return;
    }
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
    let r = &row.ready_ms;
    let verdict = match target {
        Some(t) => pass(row.clean() && percentile(r, 50.0).is_some_and(|p| p <= t)),
        None => pass(row.clean()),
    };
    let mut problems = Vec::new();
    if let Some(n) = &row.note {
        problems.push(n.clone());
    }
    if let Some(e) = &row.counts.first_error {
        problems.push(e.clone());
    }
    if row.counts.non2xx > 0 {
        problems.push(format!("{} non-2xx", row.counts.non2xx));
    }
    let problems = if problems.is_empty() {
        String::new()
    } else {
        format!(" ({})", problems.join("; "))
    };
    let _ = writeln!(
        out,
        "  {label}: p50 {} ms, p99 {} ms, min {} ms, max {} ms over {} spawns; the client saw p50 {} ms per request ({target_txt})  {verdict}{problems}",
        ms(percentile(r, 50.0)),
        ms(percentile(r, 99.0)),
        ms(r.first().copied()),
        ms(r.last().copied()),
        r.len(),
        ms(percentile(&row.request_ms, 50.0)),
    );
}

/// The verdict of a spawn row in the overall result: None when it does not count (not
/// selected, not available, or informational without target).
pub fn spawn_verdict(row: Option<&SpawnRow>, target: Option<f64>) -> Option<bool> {
    let row = row.filter(|r| !r.unavailable)?;
    Some(match target {
        Some(t) => row.clean() && percentile(&row.ready_ms, 50.0).is_some_and(|p| p <= t),
        None => row.clean(),
    })
}
