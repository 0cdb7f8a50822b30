//! The runtime's own memory: its `VmRSS` with two idle workers.

use std::fmt::Write as _;
use std::path::Path;
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;
use crate::servers::start_noslate;

/// The runtime's own RSS with two idle workers, MiB.
pub const TARGET_RSS_MIB: f64 = 10.0;

pub fn measure_rss(tmp: &Path) -> Value {
    match start_noslate(tmp, "rss", 2) {
        Ok((p, _port)) => {
            thread::sleep(Duration::from_secs(1));
            let rss = vm_rss_kib(p.pid());
            let kids: Vec<u32> = process_table()
                .iter()
                .filter(|(_, (ppid, _))| *ppid == p.pid())
                .map(|(&pid, _)| pid)
                .collect();
            let kids_rss: u64 = kids.iter().filter_map(|&k| vm_rss_kib(k)).sum();
            json!({"runtime_vm_rss_kib": rss, "child_processes": kids.len(), "children_vm_rss_kib": kids_rss})
        }
        Err(e) => {
            eprintln!("bench: RSS measurement failed: {e}");
            json!({"error": e})
        }
    }
}

/// The runtime's own RSS with two idle workers, KiB, if it was measured.
pub fn rss_kib(rss: &Value) -> Option<u64> {
    rss.get("runtime_vm_rss_kib").and_then(Value::as_u64)
}

/// The RSS with two idle workers was measured and is under its target.
pub fn rss_pass(rss: &Value) -> bool {
    rss_kib(rss).is_some_and(|k| (k as f64) / 1024.0 < TARGET_RSS_MIB)
}

/// The RSS lines of the report: with two idle workers (`measure_rss`), and after the load.
pub fn rss_lines(out: &mut String, rss: &Value, rss_after: Option<u64>) {
    let kib = |k: &str| rss.get(k).and_then(Value::as_u64).unwrap_or(0);
    match rss_kib(rss) {
        Some(k) => {
            let _ = writeln!(
                out,
                "runtime RSS with 2 idle workers: {:.1} MiB (target < {TARGET_RSS_MIB:.0} MiB)  {}  [not counting its {} child processes: {:.1} MiB together]",
                k as f64 / 1024.0,
                pass(rss_pass(rss)),
                kib("child_processes"),
                kib("children_vm_rss_kib") as f64 / 1024.0
            );
        }
        None => {
            let e = rss.get("error").and_then(Value::as_str).unwrap_or("?");
            let _ = writeln!(
                out,
                "runtime RSS with 2 idle workers: not measured (target < {TARGET_RSS_MIB:.0} MiB)  FAIL ({})",
                e.lines().next().unwrap_or_default()
            );
        }
    }
    if let Some(k) = rss_after {
        let _ = writeln!(
            out,
            "runtime RSS after the load (the last round's runtime, 1 worker; informational): {:.1} MiB",
            k as f64 / 1024.0
        );
    }
}
