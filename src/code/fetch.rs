//! Getting a package's zip as a file: opening a local one, or downloading an `http(s)://` one
//! with `curl` run as a child process (TLS needs a library the runtime does not carry; curl is in
//! the image). Blocking: runs on a package thread, never on the loop.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest tail of curl's stderr quoted in an error.
const STDERR_TAIL: usize = 400;
/// How long past its own `--max-time` curl is given before it is killed.
const CURL_GRACE: Duration = Duration::from_secs(5);
/// How often the thread checks whether curl has exited.
const WAIT_STEP: Duration = Duration::from_millis(20);

/// Opens a local zip of at most `max_bytes` (it is read piece by piece as it is unpacked).
pub fn open_local(path: &Path, max_bytes: u64) -> Result<fs::File, String> {
    let file = fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    if meta.len() > max_bytes {
        return Err(format!(
            "{} is larger than controlPlane.codePackageMaxBytes ({max_bytes} bytes)",
            path.display()
        ));
    }
    Ok(file)
}

/// Downloads `url` into `to` (created) with curl, within `max_bytes` and `timeout`, and
/// opens it. `scratch` is a directory for curl's report and messages (files, not pipes:
/// nothing to drain while waiting).
///
/// The loop reaps every exited child of the runtime (`wait4(-1)`), so curl's exit status may
/// never reach this thread: curl reports its own exit code (`--write-out %{exitcode}`, a line
/// written as it finishes), and that line, not the wait status, says how it ended.
pub fn download(
    url: &str,
    to: &Path,
    scratch: &Path,
    max_bytes: u64,
    timeout: Duration,
) -> Result<fs::File, String> {
    let stderr_file = scratch.join("curl.stderr");
    let report_file = scratch.join("curl.report");
    let create = |path: &Path| {
        fs::File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))
    };
    let stderr = create(&stderr_file)?;
    let report = create(&report_file)?;
    let seconds = format!("{:.3}", timeout.as_secs_f64());
    let mut command = Command::new("curl");
    // curl dies with this thread: a runtime that exits leaves no download behind.
    crate::sys::kill_with_spawning_thread(&mut command);
    let mut child = command
        .args(["--silent", "--show-error", "--fail", "--location"])
        .args(["--proto", "=http,https", "--proto-redir", "=http,https"])
        .args(["--max-filesize", &max_bytes.to_string()])
        .args(["--max-time", &seconds])
        .args(["--write-out", "%{exitcode} %{http_code}\\n"])
        .arg("--output")
        .arg(to)
        .arg("--")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::from(report))
        .stderr(Stdio::from(stderr))
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                "curl is not installed; it is needed for http(s):// code urls".to_string()
            }
            _ => format!("cannot run curl: {e}"),
        })?;
    let deadline = Instant::now() + timeout + CURL_GRACE;
    let finished = |report: &Path| {
        let text = fs::read_to_string(report).unwrap_or_default();
        text.ends_with('\n').then_some(text)
    };
    let report = loop {
        if let Some(text) = finished(&report_file) {
            break Some(text);
        }
        // curl checks --max-filesize against a declared length only: a body without one
        // (chunked) is measured here while it arrives.
        if fs::metadata(to).is_ok_and(|m| m.len() > max_bytes) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "the download is larger than controlPlane.codePackageMaxBytes ({max_bytes} bytes)"
            ));
        }
        match child.try_wait() {
            // Exited (reaped here or by the loop): its report, if it wrote one, is complete.
            Ok(Some(_)) | Err(_) => break finished(&report_file),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "curl did not finish within {} ms; killed",
                    timeout.as_millis()
                ));
            }
            // A helper thread, not the loop: waiting here blocks nothing else.
            Ok(None) => std::thread::sleep(WAIT_STEP),
        }
    };
    let code = report
        .as_deref()
        .and_then(|text| text.split_whitespace().next())
        .and_then(|code| code.parse::<i32>().ok());
    match code {
        Some(0) => open_local(to, max_bytes),
        Some(code) => Err(format!(
            "curl exited with {code}{}",
            explain(code, &stderr_tail(&stderr_file))
        )),
        None => Err(format!(
            "curl ended without reporting how{}",
            stderr_tail(&stderr_file)
        )),
    }
}

/// `: <what curl said>`, or a description of well-known exit codes when it said nothing.
fn explain(code: i32, tail: &str) -> String {
    if !tail.is_empty() {
        return tail.to_string();
    }
    let what = match code {
        6 => "could not resolve the host",
        7 => "could not connect",
        18 => "the transfer ended early",
        22 => "the server answered with an HTTP error",
        28 => "the transfer timed out",
        63 => "the package is larger than controlPlane.codePackageMaxBytes",
        _ => return String::new(),
    };
    format!(": {what}")
}

/// `: <last line(s) of curl's stderr>`, bounded, or empty.
fn stderr_tail(file: &Path) -> String {
    let text = fs::read(file).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let start = text
        .char_indices()
        .rev()
        .nth(STDERR_TAIL)
        .map_or(0, |(at, _)| at);
    format!(": {}", text[start..].replace('\n', " / "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_zip_over_the_limit_is_refused() {
        let file = std::env::temp_dir().join(format!("noslate-fetch-{}", std::process::id()));
        fs::write(&file, [0u8; 100]).unwrap();
        assert_eq!(
            open_local(&file, 100).unwrap().metadata().unwrap().len(),
            100
        );
        let err = open_local(&file, 99).unwrap_err();
        assert!(
            err.contains("larger than controlPlane.codePackageMaxBytes (99 bytes)"),
            "{err}"
        );
        let _ = fs::remove_file(&file);
        assert!(
            open_local(&file, 99)
                .unwrap_err()
                .starts_with("cannot open")
        );
        let dir = std::env::temp_dir();
        assert!(open_local(&dir, 99).unwrap_err().ends_with("is not a file"));
    }

    #[test]
    fn curl_errors_are_explained() {
        assert_eq!(explain(22, ""), ": the server answered with an HTTP error");
        assert_eq!(explain(22, ": curl: (22) 404"), ": curl: (22) 404");
        assert_eq!(explain(99, ""), "");
    }
}
