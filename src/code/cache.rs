//! The package cache on disk, `NOSLATE_WORKDIR/bundles/`:
//!
//! ```text
//! bundles/<key>/code/…        the unpacked package (workers' code directory)
//! bundles/<key>/.integrity    written last: the url and signature it was built for
//! bundles/.tmp-<key>-<n>/     a package being built (renamed to <key> when unpacked)
//! ```
//!
//! An entry is used only when its marker names the same url and signature; anything else
//! (no marker: a build cut short; another url: a key collision) is removed and rebuilt. All
//! of this blocks on the file system and the network: it runs on package threads.

use super::fetch;
use super::zip::{self, ZipLimits};
use crate::config::{CodePackageLimits, PackageLocation};
use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The marker's name inside an entry.
const MARKER: &str = ".integrity";
/// The prefix of entries being built.
const TEMP_PREFIX: &str = ".tmp-";

/// Tells concurrent builds in this process apart.
static BUILDS: AtomicU64 = AtomicU64::new(0);

/// The directory workers of package `key` run in.
pub fn code_dir(root: &Path, key: &str) -> PathBuf {
    root.join(key).join("code")
}

/// What to build: the cache key and where the zip comes from.
#[derive(Debug, Clone)]
pub struct Build {
    pub key: String,
    pub url: String,
    pub signature: String,
    pub location: PackageLocation,
}

fn marker_text(build: &Build) -> String {
    serde_json::json!({ "url": build.url, "signature": build.signature }).to_string()
}

/// Makes sure `build`'s entry exists and is complete: reuses it when its marker matches,
/// else fetches, unpacks into a temporary directory, renames it into place and writes the
/// marker last.
pub fn ensure(root: &Path, build: &Build, limits: &CodePackageLimits) -> Result<(), String> {
    let entry = root.join(&build.key);
    let marker = entry.join(MARKER);
    let wanted = marker_text(build);
    if fs::read_to_string(&marker).is_ok_and(|text| text == wanted) {
        return Ok(());
    }
    fs::create_dir_all(root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    if entry.exists() {
        log::warn!(
            "[code] {} has no matching {MARKER}: removed and rebuilt",
            entry.display()
        );
        fs::remove_dir_all(&entry)
            .map_err(|e| format!("cannot remove {}: {e}", entry.display()))?;
    }
    let temp = root.join(format!(
        "{TEMP_PREFIX}{}-{}-{}",
        build.key,
        std::process::id(),
        BUILDS.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&temp);
    fs::create_dir(&temp).map_err(|e| format!("cannot create {}: {e}", temp.display()))?;
    let built = build_into(&temp, build, limits).and_then(|()| {
        fs::rename(&temp, &entry).map_err(|e| {
            format!(
                "cannot rename {} to {}: {e}",
                temp.display(),
                entry.display()
            )
        })
    });
    if let Err(why) = built {
        let _ = fs::remove_dir_all(&temp);
        return Err(why);
    }
    let partial = entry.join(".integrity.tmp");
    fs::write(&partial, wanted)
        .and_then(|()| fs::rename(&partial, &marker))
        .map_err(|e| format!("cannot write {}: {e}", marker.display()))
}

/// Fetches the zip and unpacks it into `temp/code`; a download is removed afterwards.
fn build_into(temp: &Path, build: &Build, limits: &CodePackageLimits) -> Result<(), String> {
    let code = temp.join("code");
    fs::create_dir(&code).map_err(|e| format!("cannot create {}: {e}", code.display()))?;
    let zip_limits = ZipLimits {
        max_unpacked_bytes: limits.max_unpacked_bytes,
        max_entries: limits.max_entries,
    };
    // A package is unpacked on its function's first start: the log says what that took.
    let unpack = |archive: fs::File| {
        let started = Instant::now();
        zip::unpack(&archive, &code, &zip_limits).map(|done| (done, started.elapsed()))
    };
    let (done, took) = match &build.location {
        PackageLocation::File(path) => unpack(fetch::open_local(path, limits.max_bytes)?),
        PackageLocation::Remote(url) => {
            let download = temp.join("download.zip");
            let timeout = Duration::from_millis(limits.fetch_timeout_ms);
            let started = Instant::now();
            let unpacked = fetch::download(url, &download, temp, limits.max_bytes, timeout)
                .and_then(|archive| {
                    log::info!(
                        "[code] downloaded {url} ({} bytes) in {:.1} ms",
                        archive.metadata().map_or(0, |m| m.len()),
                        started.elapsed().as_secs_f64() * 1e3
                    );
                    unpack(archive)
                });
            for file in ["download.zip", "curl.stderr", "curl.report"] {
                let _ = fs::remove_file(temp.join(file));
            }
            unpacked
        }
    }?;
    log::info!(
        "[code] unpacked {} ({} files, {} bytes) in {:.1} ms",
        build.url,
        done.files,
        done.bytes,
        took.as_secs_f64() * 1e3
    );
    Ok(())
}

/// Removes every entry (and leftover build directory) whose key is not in `keep`; returns
/// the keys removed. Runs only while no build is in progress.
pub fn sweep(root: &Path, keep: &HashSet<String>) -> Vec<String> {
    let Ok(dir) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for item in dir.flatten() {
        let name = item.file_name().to_string_lossy().into_owned();
        if keep.contains(&name) {
            continue;
        }
        let path = item.path();
        match fs::remove_dir_all(&path) {
            Ok(()) => {
                log::info!("[code] removed unused package {}", path.display());
                if !name.starts_with(TEMP_PREFIX) {
                    removed.push(name);
                }
            }
            Err(e) => log::warn!("[code] cannot remove {}: {e}", path.display()),
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "noslate-cache-{name}-{}-{}",
            std::process::id(),
            crate::rand::Rng::from_entropy().next_u64()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn zip_file(dir: &Path, body: &str) -> PathBuf {
        fs::create_dir_all(dir).unwrap();
        let file = dir.join("p.zip");
        let status = std::process::Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import zipfile\nz = zipfile.ZipFile({:?}, 'w', zipfile.ZIP_DEFLATED)\nz.writestr('index.js', {body:?})\nz.close()",
                file.display().to_string()
            ))
            .status()
            .unwrap();
        assert!(status.success());
        file
    }

    fn build(zip: &Path, signature: &str) -> Build {
        Build {
            key: format!("k-{signature}"),
            url: format!("file://{}", zip.display()),
            signature: signature.into(),
            location: PackageLocation::File(zip.to_path_buf()),
        }
    }

    #[test]
    fn an_entry_is_built_once_and_rebuilt_without_its_marker() {
        let root = root("ensure");
        let src = root.with_extension("src");
        let zip = zip_file(&src, "v1");
        let limits = CodePackageLimits::default();
        let b = build(&zip, "s1");
        ensure(&root, &b, &limits).unwrap();
        let index = code_dir(&root, &b.key).join("index.js");
        assert_eq!(fs::read_to_string(&index).unwrap(), "v1");
        assert!(root.join(&b.key).join(MARKER).is_file());

        // The marker matches: the entry is used as it is, whatever the zip says now.
        zip_file(&src, "v2");
        ensure(&root, &b, &limits).unwrap();
        assert_eq!(fs::read_to_string(&index).unwrap(), "v1");

        // No marker: the tree is not trusted and is rebuilt.
        fs::remove_file(root.join(&b.key).join(MARKER)).unwrap();
        fs::write(code_dir(&root, &b.key).join("stale.js"), "x").unwrap();
        ensure(&root, &b, &limits).unwrap();
        assert_eq!(fs::read_to_string(&index).unwrap(), "v2");
        assert!(!code_dir(&root, &b.key).join("stale.js").exists());

        // A failed build leaves nothing behind.
        let bad = Build {
            key: "k-bad".into(),
            location: PackageLocation::File(src.join("missing.zip")),
            ..b.clone()
        };
        assert!(
            ensure(&root, &bad, &limits)
                .unwrap_err()
                .starts_with("cannot open")
        );
        let names: Vec<String> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![b.key.clone()]);

        // A sweep keeps what is wanted and removes the rest.
        let other = build(&zip, "s2");
        ensure(&root, &other, &limits).unwrap();
        fs::create_dir(root.join(".tmp-leftover")).unwrap();
        let keep: HashSet<String> = [other.key.clone()].into();
        assert_eq!(sweep(&root, &keep), vec![b.key.clone()]);
        assert!(!root.join(".tmp-leftover").exists());
        assert!(root.join(&other.key).exists());
        let _ = fs::remove_dir_all(&root);
        let _ = fs::remove_dir_all(&src);
    }
}
