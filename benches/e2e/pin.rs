//! Optional pinning of the c=1 phase (`BENCH_PIN=1`), with taskset(1): std only, no unsafe.

use std::fs;
use std::process::{Command, Stdio};

use crate::common::*;

/// The affinity mask of a process or thread, as taskset prints it (hex).
pub fn affinity(pid: u32) -> Option<String> {
    let out = Command::new("taskset")
        .args(["-p", &pid.to_string()])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout);
    Some(s.trim().rsplit(' ').next()?.to_string()).filter(|m| !m.is_empty())
}

pub fn set_affinity(pid: u32, mask: &str) -> bool {
    // -a: every thread of the process (a tid alone is a process of one thread here).
    Command::new("taskset")
        .args(["-a", "-p", mask, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// While alive, keeps the calling thread and the server processes (with everything they
/// forked) on one CPU; restores the previous masks when dropped.
pub struct Pin(pub Vec<(u32, String)>);

impl Pin {
    pub fn new(server: u32) -> Pin {
        let me = fs::read_link("/proc/thread-self")
            .ok()
            .and_then(|p| p.file_name()?.to_str()?.parse::<u32>().ok());
        let mut pids: Vec<u32> = me.into_iter().chain([server]).collect();
        pids.extend(descendants(server).into_iter().map(|(p, _)| p));
        // The lowest CPU this process may use.
        let one = affinity(std::process::id())
            .and_then(|m| u128::from_str_radix(m.trim_start_matches("0x"), 16).ok())
            .filter(|&m| m != 0)
            .map_or(1, |m| 1u128 << m.trailing_zeros());
        let mut saved = Vec::new();
        for pid in pids {
            if let Some(old) = affinity(pid)
                && set_affinity(pid, &format!("{one:x}"))
            {
                saved.push((pid, old));
            }
        }
        Pin(saved)
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        for (pid, mask) in &self.0 {
            set_affinity(*pid, mask);
        }
    }
}
