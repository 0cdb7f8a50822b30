//! Code packages: a function whose `url` names a zip (`file://PATH.zip`, `http(s)://…`) runs
//! from the package unpacked in the cache (`cache.rs`), fetched (`fetch.rs`: a local read or
//! curl) and unpacked (`zip.rs`, `inflate.rs`) once per `(url, signature)`.
//!
//! [`Packages`] is the loop's side. Fetching and unpacking block on the network and the file
//! system, so each build runs on a thread of its own (at most
//! `controlPlane.codePackageFetchConcurrency` at once; the rest wait in order) that owns
//! nothing but its job and reports its outcome over a channel, waking the loop with a
//! `mio::Waker`. Concurrent needs for the same key share one build; a failed build is
//! forgotten, so a later start tries again. Sweeps of unused entries run on a thread too,
//! only while no build is running.

pub mod cache;
pub mod fetch;
pub mod inflate;
pub mod zip;

use crate::config::{CodePackage, CodePackageLimits, FunctionProfile};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};

/// The cache's directory under the work directory.
pub fn cache_root(workdir: &Path) -> PathBuf {
    workdir.join("bundles")
}

/// Points the profiles' packaged functions at their place in the cache under `root`.
pub fn place(root: &Path, profiles: &mut [FunctionProfile]) {
    for profile in profiles {
        if let Some(package) = &profile.package {
            profile.code_dir = cache::code_dir(root, &package.key);
        }
    }
}

/// A package build that finished.
#[derive(Debug)]
pub struct Built {
    /// Its key.
    pub key: String,
    /// `Err`: why it could not be fetched or unpacked.
    pub result: Result<(), String>,
}

enum Job {
    Build(cache::Build),
    Sweep(HashSet<String>),
}

enum Outcome {
    Built(Built),
    Swept(Vec<String>),
}

/// The state of a key the loop knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyState {
    /// Waiting for a thread, or being built.
    Building,
    /// Complete on disk.
    Ready,
}

/// The loop's side of the package cache.
pub struct Packages {
    root: PathBuf,
    limits: CodePackageLimits,
    keys: HashMap<String, KeyState>,
    /// Builds waiting for a thread, oldest first.
    waiting: VecDeque<cache::Build>,
    running: usize,
    /// The keys a wanted sweep keeps; it runs once no build is running.
    sweep_wanted: Option<HashSet<String>>,
    sweeping: bool,
    /// The package each live worker runs from, so a sweep never removes it.
    worker_keys: HashMap<crate::ids::WorkerKey, String>,
    outcomes: Receiver<Outcome>,
    report: Sender<Outcome>,
    waker: Arc<mio::Waker>,
}

impl std::fmt::Debug for Packages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packages")
            .field("root", &self.root)
            .field("keys", &self.keys)
            .field("running", &self.running)
            .field("sweeping", &self.sweeping)
            .finish_non_exhaustive()
    }
}

impl Packages {
    /// The cache under `root`, waking the loop through `waker` when a thread is done.
    pub fn new(root: PathBuf, limits: CodePackageLimits, waker: mio::Waker) -> Packages {
        let (report, outcomes) = channel();
        Packages {
            root,
            limits,
            keys: HashMap::new(),
            waiting: VecDeque::new(),
            running: 0,
            sweep_wanted: None,
            sweeping: false,
            worker_keys: HashMap::new(),
            outcomes,
            report,
            waker: Arc::new(waker),
        }
    }

    /// The cache's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether `package` is unpacked; if not, makes sure it is being built. `url` and
    /// `signature` are the profile's, recorded in the entry's marker.
    pub fn ensure(&mut self, package: &CodePackage, url: &str, signature: &str) -> bool {
        match self.keys.get(&package.key) {
            Some(KeyState::Ready) => return true,
            Some(KeyState::Building) => return false,
            None => {}
        }
        log::info!("[code] fetching {url} (package {})", package.key);
        self.keys.insert(package.key.clone(), KeyState::Building);
        self.waiting.push_back(cache::Build {
            key: package.key.clone(),
            url: url.to_owned(),
            signature: signature.to_owned(),
            location: package.location.clone(),
        });
        self.pump();
        false
    }

    /// Whether `package` is unpacked.
    pub fn is_ready(&self, package: &CodePackage) -> bool {
        self.keys.get(&package.key) == Some(&KeyState::Ready)
    }

    /// Remembers that a live worker runs from `package`.
    pub fn note_worker(&mut self, worker: crate::ids::WorkerKey, package: &CodePackage) {
        self.worker_keys.insert(worker, package.key.clone());
    }

    /// Forgets the workers `is_gone` says are gone; true when a package lost its last one.
    pub fn forget_workers(&mut self, is_gone: impl Fn(crate::ids::WorkerKey) -> bool) -> bool {
        let before: HashSet<String> = self.worker_keys.values().cloned().collect();
        self.worker_keys.retain(|&worker, _| !is_gone(worker));
        let after: HashSet<&String> = self.worker_keys.values().collect();
        before.iter().any(|key| !after.contains(key))
    }

    /// Removes, once no build runs, every cache entry but the packages of `profiles` and of
    /// live workers (and those being built).
    pub fn sweep<'a>(&mut self, profiles: impl Iterator<Item = &'a FunctionProfile>) {
        let mut keep: HashSet<String> = profiles
            .filter_map(|p| p.package.as_ref().map(|package| package.key.clone()))
            .collect();
        keep.extend(self.worker_keys.values().cloned());
        // Entries no profile wants are no longer known ready: a later need rebuilds them.
        self.keys
            .retain(|key, state| *state == KeyState::Building || keep.contains(key));
        self.sweep_wanted = Some(keep);
        self.pump();
    }

    /// Takes the builds that finished since the last call (after a wake-up).
    pub fn take_built(&mut self) -> Vec<Built> {
        let mut built = Vec::new();
        while let Ok(outcome) = self.outcomes.try_recv() {
            match outcome {
                Outcome::Built(done) => {
                    self.running = self.running.saturating_sub(1);
                    match &done.result {
                        Ok(()) => {
                            self.keys.insert(done.key.clone(), KeyState::Ready);
                        }
                        Err(_) => {
                            self.keys.remove(&done.key);
                        }
                    }
                    built.push(done);
                }
                Outcome::Swept(removed) => {
                    self.sweeping = false;
                    for key in removed {
                        if self.keys.get(&key) == Some(&KeyState::Ready) {
                            self.keys.remove(&key);
                        }
                    }
                }
            }
        }
        self.pump();
        built
    }

    /// Starts what may start: a wanted sweep once nothing builds, else builds up to the
    /// concurrency limit (none while a sweep runs).
    fn pump(&mut self) {
        if self.sweeping {
            return;
        }
        if self.running == 0
            && let Some(mut keep) = self.sweep_wanted.take()
        {
            keep.extend(self.waiting.iter().map(|b| b.key.clone()));
            self.sweeping = true;
            self.start(Job::Sweep(keep));
            return;
        }
        let limit = self.limits.fetch_concurrency.max(1) as usize;
        while self.running < limit
            && self.sweep_wanted.is_none()
            && let Some(build) = self.waiting.pop_front()
        {
            self.running += 1;
            self.start(Job::Build(build));
        }
    }

    /// Runs `job` on a thread of its own.
    fn start(&mut self, job: Job) {
        let root = self.root.clone();
        let limits = self.limits;
        let report = self.report.clone();
        let waker = Arc::clone(&self.waker);
        let failed_key = match &job {
            Job::Build(build) => Some(build.key.clone()),
            Job::Sweep(_) => None,
        };
        let spawned = std::thread::Builder::new()
            .name("code-package".into())
            .spawn(move || {
                let outcome = match job {
                    Job::Build(build) => Outcome::Built(Built {
                        result: cache::ensure(&root, &build, &limits),
                        key: build.key,
                    }),
                    Job::Sweep(keep) => Outcome::Swept(cache::sweep(&root, &keep)),
                };
                // The loop may be gone (the runtime stopping): nothing is left to tell.
                if report.send(outcome).is_ok() {
                    let _ = waker.wake();
                }
            });
        if let Err(e) = spawned {
            let outcome = match failed_key {
                Some(key) => Outcome::Built(Built {
                    key,
                    result: Err(format!("cannot start a thread to fetch the package: {e}")),
                }),
                None => Outcome::Swept(Vec::new()),
            };
            let _ = self.report.send(outcome);
            let _ = self.waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PackageLocation;
    use std::time::{Duration, Instant};

    struct Fixture {
        poll: mio::Poll,
        packages: Packages,
        dir: PathBuf,
    }

    impl Fixture {
        fn new(name: &str, concurrency: u32) -> Fixture {
            let dir = std::env::temp_dir().join(format!(
                "noslate-packages-{name}-{}-{}",
                std::process::id(),
                crate::rand::Rng::from_entropy().next_u64()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let poll = mio::Poll::new().unwrap();
            let waker = mio::Waker::new(poll.registry(), mio::Token(7)).unwrap();
            let limits = CodePackageLimits {
                fetch_concurrency: concurrency,
                ..CodePackageLimits::default()
            };
            let packages = Packages::new(dir.join("bundles"), limits, waker);
            Fixture {
                poll,
                packages,
                dir,
            }
        }

        fn zip(&self, name: &str) -> PathBuf {
            let path = self.dir.join(name);
            let status = std::process::Command::new("python3")
                .arg("-c")
                .arg(format!(
                    "import zipfile\nz = zipfile.ZipFile({:?}, 'w')\nz.writestr('index.js', '1')\nz.close()",
                    path.display().to_string()
                ))
                .status()
                .unwrap();
            assert!(status.success());
            path
        }

        fn package(&self, path: &Path, key: &str) -> CodePackage {
            CodePackage {
                location: PackageLocation::File(path.to_path_buf()),
                key: key.into(),
            }
        }

        /// Waits (bounded) for the waker and takes what finished.
        fn wait_built(&mut self) -> Vec<Built> {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut events = mio::Events::with_capacity(4);
            loop {
                let built = self.packages.take_built();
                if !built.is_empty() {
                    return built;
                }
                assert!(Instant::now() < deadline, "no build finished");
                self.poll
                    .poll(&mut events, Some(Duration::from_millis(200)))
                    .unwrap();
            }
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn needs_for_one_key_share_a_build_and_a_failure_is_forgotten() {
        let mut f = Fixture::new("share", 2);
        let zip = f.zip("a.zip");
        let a = f.package(&zip, "a");
        assert!(!f.packages.ensure(&a, "file://a.zip", "s"));
        assert!(!f.packages.ensure(&a, "file://a.zip", "s"));
        assert_eq!(f.packages.running, 1, "one build for both needs");
        let built = f.wait_built();
        assert_eq!(built.len(), 1);
        assert_eq!(built[0].result, Ok(()));
        assert!(f.packages.is_ready(&a));
        assert!(f.packages.ensure(&a, "file://a.zip", "s"));
        assert!(f.packages.root().join("a/code/index.js").is_file());

        let missing = f.package(&f.dir.join("missing.zip"), "m");
        assert!(!f.packages.ensure(&missing, "file://missing.zip", "s"));
        let built = f.wait_built();
        assert!(
            built[0]
                .result
                .as_ref()
                .unwrap_err()
                .starts_with("cannot open")
        );
        assert!(!f.packages.is_ready(&missing));
        // Not remembered as failed: the next need builds again.
        assert!(!f.packages.ensure(&missing, "file://missing.zip", "s"));
        assert_eq!(f.packages.running, 1);
        f.wait_built();
    }

    #[test]
    fn builds_beyond_the_concurrency_wait_and_a_sweep_waits_for_builds() {
        let mut f = Fixture::new("order", 1);
        let zip = f.zip("a.zip");
        let (a, b) = (f.package(&zip, "a"), f.package(&zip, "b"));
        f.packages.ensure(&a, "u", "1");
        f.packages.ensure(&b, "u", "2");
        assert_eq!((f.packages.running, f.packages.waiting.len()), (1, 1));
        // Nothing keeps `a`: the sweep waits for the running build and holds `b` back.
        f.packages.sweep(std::iter::empty());
        assert!(!f.packages.sweeping && f.packages.sweep_wanted.is_some());
        let built = f.wait_built();
        assert_eq!(built[0].key, "a");
        assert!(f.packages.sweeping, "the sweep runs once no build does");
        assert_eq!(f.packages.waiting.len(), 1, "b waits for the sweep");
        let built = f.wait_built();
        assert_eq!(built[0].key, "b");
        assert!(!f.packages.is_ready(&a), "a was swept");
        assert!(!f.packages.root().join("a").exists());
        assert!(
            f.packages.is_ready(&b),
            "b, waiting during the sweep, was kept"
        );
        assert!(f.packages.root().join("b/code/index.js").is_file());
    }
}
