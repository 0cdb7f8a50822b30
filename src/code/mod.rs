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
