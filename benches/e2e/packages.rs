//! Code package unpacking: how long a function's first start waits for its zip, against
//! Info-ZIP's `unzip` and python's `zipfile` unpacking the same archive to the same file system.
//!
//! That file system is tmpfs (`/dev/shm`) where there is one, or `BENCH_PACKAGE_DIR`: on this
//! VM's ext4 disk every tool took 1.2 to 2.3 s for the default package whenever a fresh
//! directory was created after a pause, and 0.3 s for the same unpacking repeated at once;
//! that measures the disk's metadata reads, not the unpacker.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;
use crate::servers::{function_dir, why};

/// Writes the bench's package: the hello function's `index.js` and `files` generated source
/// files of word-like JavaScript (about 8 KiB each, in 50 directories, deflated by python's
/// `zipfile`), the same bytes on every run.
const MAKE_PACKAGE: &str = r#"
import random, sys, zipfile
out, index, files = sys.argv[1], sys.argv[2], int(sys.argv[3])
random.seed(1)
words = ["".join(random.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(random.randint(2, 12)))
         for _ in range(3000)]
ends = [";", " {", "}", "(", ");", ","]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    z.write(index, "index.js")
    for i in range(files):
        lines, size = [], 0
        while size < 8192:
            line = "  " * random.randint(0, 4) + " ".join(random.choice(words) for _ in range(random.randint(1, 10))) + random.choice(ends)
            lines.append(line)
            size += len(line) + 1
        z.writestr("node_modules/m%02d/f%05d.js" % (i % 50, i), "\n".join(lines) + "\n")
"#;

/// What the package holds, and each tool's unpacking times (ms, sorted).
#[derive(Default)]
pub struct PackageRows {
    /// Files in the package.
    pub files: usize,
    pub zip_bytes: u64,
    pub unpacked_bytes: u64,
    /// The runtime's own `[code] unpacked ... in <ms> ms`, one fresh runtime each.
    pub noslate_ms: Vec<f64>,
    /// `unzip -q` into a fresh directory, if the machine has it.
    pub unzip_ms: Vec<f64>,
    /// python3's `zipfile.ZipFile.extractall` into a fresh directory.
    pub python_ms: Vec<f64>,
    /// The first thing that failed: the row then fails the overall verdict.
    pub failure: Option<String>,
    /// What is missing without failing (no `unzip`).
    pub note: Option<String>,
    /// Where the unpacking went.
    pub dir: Option<String>,
}

/// The directory the rows unpack into, removed with everything in it when dropped.
struct Place(PathBuf);

impl Place {
    fn new(bench_tmp: &Path) -> Place {
        let base = std::env::var_os("BENCH_PACKAGE_DIR")
            .map(PathBuf::from)
            .or_else(|| Some(PathBuf::from("/dev/shm")).filter(|d| d.is_dir()))
            .unwrap_or_else(|| bench_tmp.to_path_buf());
        let dir = base.join(format!("noslate-bench-packages-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        match fs::create_dir_all(&dir) {
            Ok(()) => Place(dir),
            Err(_) => Place(bench_tmp.join("packages")),
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

impl PackageRows {
    pub fn clean(&self) -> bool {
        self.failure.is_none()
    }

    pub fn json(&self) -> Value {
        let p50 = |v: &[f64]| percentile(v, 50.0);
        let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
        json!({
            "files": self.files, "zip_bytes": self.zip_bytes, "unpacked_bytes": self.unpacked_bytes,
            "runs": self.noslate_ms.len(),
            "noslate_ms_p50": p50(&self.noslate_ms), "unzip_ms_p50": p50(&self.unzip_ms),
            "python_ms_p50": p50(&self.python_ms),
            "noslate_over_unzip": ratio(p50(&self.noslate_ms), p50(&self.unzip_ms)),
            "noslate_over_python": ratio(p50(&self.noslate_ms), p50(&self.python_ms)),
            "failure": self.failure, "note": self.note, "dir": self.dir,
        })
    }
}

/// Runs `runs` fresh runtimes whose only function comes from a package of `files` generated
/// files, and times each tool unpacking the same zip as often, alternating.
pub fn measure_packages(bench_tmp: &Path, files: usize, runs: usize) -> PackageRows {
    let mut rows = PackageRows {
        files: files + 1,
        ..PackageRows::default()
    };
    let place = Place::new(bench_tmp);
    let tmp = place.0.as_path();
    rows.dir = Some(tmp.display().to_string());
    let zip = tmp.join("package.zip");
    let made = Command::new("python3")
        .arg("-c")
        .arg(MAKE_PACKAGE)
        .arg(&zip)
        .arg(function_dir().join("index.js"))
        .arg(files.to_string())
        .output();
    match made {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            rows.failure = Some(format!(
                "python3 could not write the package: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            return rows;
        }
        Err(e) => {
            rows.failure = Some(format!("python3 could not run: {e}"));
            return rows;
        }
    }
    rows.zip_bytes = fs::metadata(&zip).map_or(0, |m| m.len());
    let has_unzip = Command::new("unzip")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    // Each unpacking starts with nothing left to write back: the previous ones wrote and
    // removed thousands of files, and their writeback slowed the next by several times.
    let settle = || {
        let _ = Command::new("sync").status();
    };
    for run in 0..runs {
        settle();
        match noslate_unpack(tmp, &zip, run) {
            Ok((ms, bytes)) => {
                rows.noslate_ms.push(ms);
                rows.unpacked_bytes = bytes;
            }
            Err(e) => {
                rows.failure.get_or_insert(e);
            }
        }
        if has_unzip {
            settle();
            let dest = tmp.join(format!("unzip-{run}"));
            match timed(
                Command::new("unzip")
                    .arg("-q")
                    .arg(&zip)
                    .arg("-d")
                    .arg(&dest),
            ) {
                Ok(ms) => rows.unzip_ms.push(ms),
                Err(e) => {
                    rows.failure.get_or_insert(format!("unzip: {e}"));
                }
            }
            let _ = fs::remove_dir_all(&dest);
        }
        settle();
        let dest = tmp.join(format!("python-{run}"));
        let extract = "import sys, zipfile\nzipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])";
        let mut python = Command::new("python3");
        python.arg("-c").arg(extract).arg(&zip).arg(&dest);
        match timed(&mut python) {
            Ok(ms) => rows.python_ms.push(ms),
            Err(e) => {
                rows.failure.get_or_insert(format!("python3 zipfile: {e}"));
            }
        }
        let _ = fs::remove_dir_all(&dest);
    }
    if !has_unzip {
        rows.note = Some("no unzip on this machine: that row is empty".into());
    }
    for v in [
        &mut rows.noslate_ms,
        &mut rows.unzip_ms,
        &mut rows.python_ms,
    ] {
        v.sort_by(f64::total_cmp);
    }
    rows
}

/// Starts a runtime in a fresh work directory (an empty package cache) whose function is the
/// package, and reads how long it took to unpack from its log. Returns that and the bytes.
fn noslate_unpack(tmp: &Path, zip: &Path, run: usize) -> Result<(f64, u64), String> {
    let tag = format!("package-{run}");
    let functions = json!([{
        "name": "hello",
        "runtime": "nodejs",
        "url": format!("file://{}", zip.display()),
        "handler": "index.handler",
        "signature": "bench",
        "worker": {"reservationCount": 1, "replicaCountLimit": 1},
    }]);
    let (p, _port) = start_noslate_with(tmp, &tag, &functions, None, false)
        .map_err(|e| format!("runtime: {}", why(&e)))?;
    let mut found = None;
    let end = Instant::now() + Duration::from_secs(60);
    while found.is_none() && Instant::now() < end {
        found = p.tail(200).lines().find_map(unpacked);
        if found.is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    drop(p);
    let _ = fs::remove_dir_all(tmp.join(&tag));
    found.ok_or_else(|| "the runtime logged no `[code] unpacked` line within 60 s".into())
}

/// `(ms, bytes)` of a `[code] unpacked URL (N files, B bytes) in MS ms` line.
fn unpacked(line: &str) -> Option<(f64, u64)> {
    let rest = &line[line.find("[code] unpacked ")?..];
    let bytes = rest
        .split(" files, ")
        .nth(1)?
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    let ms = rest
        .rsplit(") in ")
        .next()?
        .strip_suffix(" ms")?
        .parse()
        .ok()?;
    Some((ms, bytes))
}

/// Runs `cmd` to its end; its wall time in ms.
fn timed(cmd: &mut Command) -> Result<f64, String> {
    let t0 = Instant::now();
    let out = cmd.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(t0.elapsed().as_secs_f64() * 1e3)
}

pub fn package_lines(out: &mut String, rows: Option<&PackageRows>) {
    let Some(r) = rows else { return };
    let _ = writeln!(
        out,
        "\ncode package unpack (BENCH_TARGETS p): {} files, {:.1} MB zipped, {:.1} MB unpacked, \
         into {}; {} fresh runtimes, each tool as often, alternating (informational)",
        r.files,
        r.zip_bytes as f64 / 1e6,
        r.unpacked_bytes as f64 / 1e6,
        r.dir.as_deref().unwrap_or("?"),
        r.noslate_ms.len()
    );
    let p50 = |v: &[f64]| percentile(v, 50.0);
    for (label, v) in [
        ("noslate (its log)", &r.noslate_ms),
        ("unzip -q", &r.unzip_ms),
        ("python3 zipfile", &r.python_ms),
    ] {
        let shown = p50(v).map_or("n/a".to_string(), |ms| {
            format!(
                "p50 {ms:8.1} ms   min {:8.1}   max {:8.1}",
                v.first().copied().unwrap_or(0.0),
                v.last().copied().unwrap_or(0.0)
            )
        });
        let _ = writeln!(out, "  {label:<20} {shown}");
    }
    if let (Some(a), Some(b)) = (p50(&r.noslate_ms), p50(&r.unzip_ms)) {
        let _ = writeln!(out, "  noslate / unzip      {:.2}", a / b);
    }
    if let Some(failure) = &r.failure {
        let _ = writeln!(out, "  FAILED: {failure}");
    }
    if let Some(note) = &r.note {
        let _ = writeln!(out, "  note: {note}");
    }
}
