//! End-to-end benchmark of noslate: `make bench` (`cargo bench --bench e2e`).
//!
//! # What it guards
//!
//! The promise of noslate is that putting the runtime in front of a Node.js function costs
//! (almost) nothing compared with serving the same function from Node's own `http` module, and
//! that the runtime itself stays small. Nine targets run side by side in one invocation:
//!
//! - **(a) noslate `GET /healthz`**, answered by the runtime itself: the HTTP floor of the event
//!   loop, no worker involved.
//! - **(b) noslate `POST /invoke`** with the 5-byte body `hello`, to `examples/hello` through the
//!   runtime and ONE pre-forked Node.js worker (`reservationCount: 1`, `replicaCountLimit: 1`),
//!   in the default sandbox: memory and pids limits enforced (by cgroup where writable).
//! - **(c) node http direct**: the same handler in one Node.js process on `http.createServer`
//!   (`benches/node_direct.js`). One worker against one Node process: apples to apples.
//! - **(d) noslate, limits off**: (b) again in a second runtime started with the system config
//!   `{"turf": {"enforceLimits": false}}`. c=64 only.
//! - **(e) noslate, full scheduling**: (b) again in a third runtime with a `rateLimit` that never
//!   binds (10^8 tokens per second) and `{"controlPlane": {"useEmaScaling": true}}`: the token
//!   bucket, the EMA scaler and the rest of the scheduler's bookkeeping on every request.
//!   c=64 only.
//! - **(f) noslate, metrics off**: (b) again in a runtime started with
//!   `{"metrics": {"enabled": false}}`: what counting and timing every invocation for the
//!   metrics costs. c=64 only.
//! - **(w) noslate, two workers**: (b) again in a runtime whose function keeps two workers
//!   (`reservationCount` = `replicaCountLimit` = 2): what a second worker adds over Node
//!   direct's one process, at c=64 and c=1.
//! - **(x) noslate, FC's headers**: (b) again in its own runtime, every request carrying the
//!   21 `x-fc-*` headers FC sends a function (`FC_CALL_HEADERS`), at c=64 and c=1.
//! - **(y) node direct, FC's headers**: (c) again in its own process with the same request:
//!   x/y is the b/c comparison for what a function behind FC really receives (informational).
//!
//! For each target: a warm-up, then **c=64 throughput** (keep-alive connections on a mio event
//! loop over 2 threads, each connection closed-loop: send, read the whole response by
//! Content-Length or chunked, send again; req/s counts only 2xx with a valid body, non-2xx and
//! errors are counted apart), then **c=1 latency** (one keep-alive connection, one thread,
//! blocking socket with TCP_NODELAY; p50/p99/p999 from all sorted samples; not for d and e).
//! c=64 comes first so that every target's c=64 follows the same warm-up. Every response is
//! validated: 200 for (a); 200 and body `hello` for the others.
//!
//! The targets run interleaved in rounds (default 6: a→d→b→f→e→w→c→y→x, then
//! x→y→c→w→e→f→b→d→a, ...), each after a warm-up; `BENCH_SECS` is split across the rounds. (b) sits between (d) and (e), whose
//! ratios to it have the tightest targets; (a) and (c) are one slot away. **Every round starts
//! fresh servers** (runtimes, workers, node; like JMH's forks): a Node.js process settles into
//! one of two speeds for its whole life. In A/A runs (two identical runtimes as b and d) one
//! worker spent about 5.5 µs of user CPU per request and the other about 10, the runtime
//! processes alike, and with the same two servers in every round the ratio came out anywhere
//! from 0.76 to 1.23 from run to run, every round agreeing; pinning did not change that. Fresh
//! servers per round make that per-process draw per-round noise. Likewise c=1 latency is
//! bimodal: about 12 µs per exchange when the kernel keeps the client and the server on one
//! vCPU, about 85 µs when they sit on two (an idle vCPU must be woken), and a segment tends to
//! stay in one mode. Running b next to the others in every round and taking the **median of the
//! per-round pairs** cancels machine drift and outvotes a lottery round; the per-round values
//! and the pooled ones (all samples and all rounds together) are printed too.
//!
//! One extra measurement starts noslate with two idle workers (`reservationCount: 2`), calls
//! `/initialize`, waits 1 s and reads the runtime's own `VmRSS` (not the workers').
//!
//! After the rounds, with their servers stopped, more rows:
//!
//! - **Spawn to ready**: a runtime with a disposable function (`reservationCount: 0`,
//!   `disposable: true`: every request gets a fresh worker that is stopped after it) takes
//!   `BENCH_SPAWNS` (default 60) sequential requests, each sent once the previous worker has
//!   exited, so that every spawn runs on a quiet machine. The numbers are the runtime's own,
//!   parsed from its stderr lines `[turf w=<id> pid=<pid>] ready to serve after <ms> ms`: from
//!   the launch decision through fork/exec (and the sandbox set-up) to the worker's INIT_DONE.
//!   p50/p99 for Node.js workers (`examples/hello`), and for native workers (target p50 <=
//!   2 ms): the repo's reference worker `examples/native_worker.rs` (an echo over
//!   docs/PROTOCOL.md, built here with `cargo build --release --example native_worker`), or a
//!   `runtime: "native"` profile of `examples/functions.json` if there is one. A binary without
//!   the native runtime, or no native worker, makes that row "not available" with the reason,
//!   never a made-up number. The full count is 200 spawns: native does 200
//!   (`BENCH_NATIVE_SPAWNS`); at about 40-80 ms per Node.js spawn its default is 60
//!   (`BENCH_SPAWNS=200` for the full count).
//! - **Per runtime** (`BENCH_TARGETS` letter `r`): start to ready, the same way, over
//!   `BENCH_RUNTIME_SPAWNS` (default 100) disposable starts each of a Python worker whose module
//!   (written to a temp code dir) imports `json`, `decimal` and `email`, cold and forked from
//!   its warm seed, of Node.js (`examples/hello`) cold and taken from a spare process, and of
//!   the native reference worker. Each fast path is then compared with its cold start (ratio
//!   of p50s, with their targets).
//!   Then one table of c=64 invoke throughput through each runtime's trivial handler: nodejs
//!   noslate / fc-event / fc-http, aworker, python3 fc-event / fc-http (WSGI), native and process
//!   (a `#!/bin/sh` `echo hello` in a temp code dir), the profiles of `examples/functions.json`
//!   with one worker (`reservationCount` = `replicaCountLimit` = 1, `maxActivateRequests` 64) and
//!   `resourceLimit.memory` 128 MiB (native, process: 64 MiB); a fresh runtime per row, 0.3 s
//!   warm-up and ONE 2 s window: a single-round reading, not a ratio. Every answer must be 2xx
//!   (and `hello`, the echo or `hello\n` where the handler's body is known); errors are counted.
//!   Informational: no targets; a row that ran with errors fails the overall verdict.
//! - **Burst from zero**: 64 connections, opened beforehand, each send one
//!   `POST /invoke` at once; the time from the first request until all 64 are answered. Cold:
//!   `reservationCount: 0` (the runtime scales from zero: `replicaCountLimit: 4`,
//!   `maxActivateRequests: 16`, `resourceLimit.memory` 128 MiB so that four workers fit in the
//!   default 1 GiB memory pool). Warm: the same with `reservationCount: 4`, after `/initialize`.
//!   Each burst gets a fresh runtime; `BENCH_BURSTS` (default 5) bursts per side, alternating
//!   cold/warm; medians and their ratio are reported (no target).
//! - **Large bodies** (`BENCH_TARGETS` letter `l`): a 32 MiB echo, upload and download
//!   through noslate with one Node.js worker, through Node's own `http` serving the same
//!   handler (`benches/bodies/index.js`), and through `cat` over pipes (the floor of this
//!   machine); each transfer on a fresh connection, from the first byte sent to the last
//!   received, in `BENCH_BODY_ROUNDS` rounds with fresh servers (default 5), each with
//!   `BENCH_BODY_WARMUP` untimed transfers per side and mode (default 3) and then
//!   `BENCH_BODY_RUNS` timed ones (default 5); medians over all rounds; target echo
//!   noslate/node >= 0.9.
//! - **SDK gateway** (`BENCH_TARGETS` letter `g`): Node's `http` + `NoslatedClient` + noslate
//!   (`benches/sdk_gateway.js`), the runtime's direct FC port, Node direct, and the gateway
//!   with invocations answered in its own process (the bound of any transport), fresh servers
//!   per round, alternating; c=64 throughput and c=1 p50 per side; target gateway/direct >= 0.5
//!   (median of per-round ratios).
//! - **Code package unpacking** (`BENCH_TARGETS` letter `p`): a zip of the hello function and
//!   `BENCH_PACKAGE_FILES` (default 3000) generated files of word-like JavaScript (about 8 KiB
//!   each), unpacked by a fresh runtime (its own `[code] unpacked ... in <ms> ms` line), by
//!   `unzip -q` (if installed) and by python's `zipfile`, `BENCH_PACKAGE_RUNS` (default 5)
//!   times each, alternating; medians (informational).
//! - **Memory per connection** (`BENCH_TARGETS` letter `m`): the runtime's own `VmRSS` per
//!   connection. A runtime as in (a)/(b) takes 2,000 keep-alive connections that each make one
//!   `GET /healthz` and idle (target <= 4 KiB each), then 2,000 more that each pipeline 2,000
//!   `GET /healthz` in one write, with `SO_RCVBUF` 4096 and an Ethernet MSS set before connect,
//!   and never read; once its RSS settled, the growth per stalled connection (target < 68 KiB:
//!   the default `http.maxConnectionOutputBytes` plus the 4 KiB read buffer) and in all. Then
//!   500 stalled connections on a fresh runtime: the per-connection figure must not grow with
//!   the client count. /proc/net/tcp confirms that the runtime stopped reading them. The bench
//!   raises its soft `RLIMIT_NOFILE` to the hard limit first.
//!
//! # How to read it
//!
//! The load generator shares the 2 vCPUs with the servers, as wrk did in `reference/peers.md`,
//! so absolute numbers move a lot from run to run. **Compare only ratios measured in one run**:
//!
//! - throughput b/c >= 1.5 at c=64: one Node.js worker behind the runtime serves half as much
//!   again as the same handler on one Node process's own `http`;
//! - p50 b-c <= +60 µs (+30 µs with `BENCH_PIN=1`): the latency the runtime hop adds over
//!   calling Node directly at c=1;
//! - b/a: how far the function path is from the runtime's own HTTP floor (informational);
//! - throughput b/d (limits on / limits off) >= 0.97: what enforcing the limits costs;
//! - throughput e/b (full scheduling / plain) >= 0.95: what the scheduler's bookkeeping costs;
//! - throughput b/f (metrics on / metrics off) >= 0.98: what the metrics cost;
//! - runtime RSS with 2 idle workers < 10 MiB;
//! - native spawn to ready p50 <= 2 ms (Node.js spawn and the burst times are informational);
//! - runtime RSS per idle connection <= 4 KiB, per stalled pipelining connection < 68 KiB, and
//!   the latter not growing with the client count.
//!
//! PASS/FAIL is printed per line, but the process exits 0 either way: numbers from a shared,
//! noisy machine are reported, not asserted. Results also go to `<target dir>/bench/e2e.json`.
//!
//! Knobs (environment): `BENCH_SECS` (measurement seconds per target and mode, split across rounds;
//! default 5), `BENCH_ROUNDS` (default 6), `BENCH_FRESH` (1: fresh servers every round, the
//! default; 0: one set for all rounds), `BENCH_CONNS` (default 64), `BENCH_THREADS` (default 2),
//! `BENCH_WARMUP` (seconds of warm-up of a target in each fresh round, default 0.5; with
//! `BENCH_FRESH=0` later rounds re-warm for a quarter of it), `BENCH_TARGETS` (which rows: `a`-`f` and `w`
//! the round targets, `s` the spawn rows, `r` the per-runtime rows, `z` the burst, `m` memory per
//! connection, `l` large bodies, `g` the SDK gateway, `p` package unpacking; default `abcdefwxysrzmlgp`), `BENCH_BODY_ROUNDS` (rounds of the
//! large-body rows, each with fresh servers, default 5), `BENCH_BODY_RUNS` (transfers per side and
//! mode in each, default 5), `BENCH_BODY_WARMUP` (untimed transfers before them,
//! default 3), `BENCH_PACKAGE_FILES` and `BENCH_PACKAGE_RUNS` (the `p`
//! rows' package size and unpackings per tool, default 3000 and 5), `BENCH_SPAWNS` (Node.js, default 60), `BENCH_NATIVE_SPAWNS`
//! (default 200), `BENCH_RUNTIME_SPAWNS` (starts per runtime of the `r` rows, default 100),
//! `BENCH_BURSTS` (bursts per side, default 5), `BENCH_MEM_CONNS` (idle, then stalled connections
//! of the `m` rows, default 2000), `BENCH_MEM_SMALL_CONNS` (the second stalled count, default 500),
//! `BENCH_MEM_PIPELINE` (requests per stalled connection, default 2000), `BENCH_PIN` (1: pin the
//! c=1 phase, client thread and servers, to one CPU with taskset; removes the placement lottery but
//! is not how peers.md measured), `BENCH_FUNCTION_DIR` (the function's code, default
//! `examples/hello`), `BENCH_EXAMPLE_WAIT` (seconds to wait for that function to appear, default
//! 0), `BENCH_NOSLATE_BIN` (another runtime binary to measure, default the one cargo built). See
//! benches/README.md.
//!
//! # Layout
//!
//! - `config`: the `BENCH_*` knobs;
//! - `servers`: starting noslate and node direct, and each round's servers;
//! - `rounds`: the targets (a)-(f), their c=64 throughput and c=1 latency rounds and statistics;
//! - `pin`: `BENCH_PIN`;
//! - `spawn`, `runtimes`, `burst`, `memory`, `bodies`, `gateway`, `packages`: the rows after the rounds, each measured and
//!   printed by its own module;
//! - `report`: the tables, the ratios and their verdicts, and the JSON;
//! - `../common`: the load generator and the process helpers shared with `soak.rs`.
// The only unsafe code is in `common` (raising RLIMIT_NOFILE, a socket option set before
// connect), each function allowed there by name.
#![deny(unsafe_code)]

mod bodies;
mod burst;
#[path = "../common/mod.rs"]
mod common;
mod config;
mod gateway;
mod memory;
mod packages;
mod pin;
mod report;
mod rounds;
mod runtimes;
mod servers;
mod spawn;

use std::fs;
use std::io::{self, Write};
use std::time::Instant;

use serde_json::json;

use burst::measure_bursts;
use common::*;
use config::Config;
use memory::{measure_conn_memory, measure_rss};
use report::{Extra, cpu_times};
use rounds::{Target, run_rounds};
use runtimes::measure_runtimes;
use servers::{Servers, setup_targets, wait_for_example};
use spawn::{measure_native_spawns, measure_node_spawns};

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it, and
    // there it should only prove that the bench builds, not spend a minute loading the machine.
    if !std::env::args().any(|a| a == "--bench") {
        println!("e2e bench: built; run it with `make bench` (cargo bench --bench e2e)");
        return;
    }
    let cfg = Config::from_env();
    let t_start = Instant::now();
    // The memory rows hold thousands of connections open, on both ends.
    let nofile = raise_nofile();
    let cpu0 = cpu_times();
    let loadavg = fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    println!("noslate e2e bench: {}", noslate_bin().display());
    println!(
        "  {} rounds x {:.2} s per mode and target (BENCH_SECS={} split over BENCH_ROUNDS), {}, c=64 = {} conns on {} threads, warm-up {} s{}",
        cfg.rounds,
        cfg.segment().as_secs_f64(),
        cfg.secs,
        if cfg.fresh {
            "fresh servers every round"
        } else {
            "the same servers in every round (BENCH_FRESH=0)"
        },
        cfg.conns,
        cfg.threads,
        cfg.warmup,
        if cfg.pin {
            ", c=1 pinned to one CPU (BENCH_PIN)"
        } else {
            ""
        }
    );
    println!(
        "  noslate runs ONE Node.js worker (reservationCount = replicaCountLimit = 1) against ONE Node.js process in (c): apples to apples"
    );
    println!(
        "  then: spawn to ready ({} Node.js spawns, BENCH_SPAWNS; {} native, BENCH_NATIVE_SPAWNS), per runtime ({} starts each, BENCH_RUNTIME_SPAWNS; c={} invoke throughput), burst from zero ({} bursts per side, BENCH_BURSTS), memory per connection ({} idle + {} stalled, BENCH_MEM_CONNS; then {} stalled, BENCH_MEM_SMALL_CONNS); rows selected: {}; RLIMIT_NOFILE {nofile}",
        cfg.spawns,
        cfg.native_spawns,
        cfg.runtime_spawns,
        cfg.conns,
        cfg.bursts,
        cfg.mem_conns,
        cfg.mem_conns,
        cfg.mem_small_conns,
        cfg.targets
    );

    // Declared first, so dropped last: after every process below is gone.
    let tmp = TempDir::new().expect("temp dir");
    let have_example = wait_for_example();

    // Runtime memory with two idle workers, measured alone before the load.
    let rss = if have_example && cfg.targets.contains(['a', 'b']) {
        measure_rss(&tmp.0)
    } else {
        json!({"error": "skipped"})
    };

    let mut targets = [
        Target::new('a', "(a) noslate /healthz", false),
        Target::new('b', "(b) noslate /invoke", false),
        Target::new('c', "(c) node http direct", false),
        Target::new('d', "(d) /invoke limits off", true),
        Target::new('e', "(e) /invoke full sched", true),
        Target::new('f', "(f) /invoke metrics off", true),
        Target::new('w', "(w) /invoke 2 workers", false),
        Target::new('x', "(x) /invoke FC headers", false),
        Target::new('y', "(y) node direct FC hdrs", false),
    ];
    let mut servers: Option<Servers> = None;
    let (mut enforcement_on, mut enforcement_off) = (None, None);
    run_rounds(&cfg, &mut targets, &mut |r, targets| {
        // The previous round's servers stop before the next ones start.
        servers = None;
        let s = setup_targets(&cfg, &tmp.0, have_example, targets, r);
        enforcement_on = enforcement_on.take().or_else(|| s.enforcement_on.clone());
        enforcement_off = enforcement_off.take().or_else(|| s.enforcement_off.clone());
        servers = Some(s);
    });
    let rss_after = servers
        .as_ref()
        .and_then(|s| s.main.as_ref())
        .and_then(|p| vm_rss_kib(p.pid()));
    // The machine's load over the rounds; without rounds (no round target selected) the span
    // is the bench's start alone, and its share would say nothing.
    let rounds_ran = targets.iter().any(|t| t.addr.is_some());
    let cpu = cpu0.zip(cpu_times()).filter(|_| rounds_ran).map(|(a, b)| {
        let d: Vec<f64> = (0..3).map(|i| b[i].saturating_sub(a[i]) as f64).collect();
        let total = (d[0] + d[1] + d[2]).max(1.0);
        (100.0 * d[0] / total, 100.0 * d[2] / total)
    });
    drop(servers);

    // The rows that start their own runtimes, on a machine without the round servers.
    let spawns = have_example && cfg.targets.contains('s');
    let spawn_node = spawns.then(|| measure_node_spawns(&tmp.0, cfg.spawns));
    let spawn_native = cfg
        .targets
        .contains('s')
        .then(|| measure_native_spawns(&tmp.0, "spawn-native", cfg.native_spawns));
    let runtimes = cfg
        .targets
        .contains('r')
        .then(|| measure_runtimes(&cfg, &tmp.0));
    let burst =
        (have_example && cfg.targets.contains('z')).then(|| measure_bursts(&tmp.0, cfg.bursts));
    let conn_memory =
        (have_example && cfg.targets.contains('m')).then(|| measure_conn_memory(&cfg, &tmp.0));
    let bodies = cfg
        .targets
        .contains('l')
        .then(|| bodies::measure_bodies(&tmp.0, cfg.body_rounds, cfg.body_runs, cfg.body_warmup));
    let gateway =
        (have_example && cfg.targets.contains('g')).then(|| gateway::measure_gateway(&cfg, &tmp.0));
    let packages = (have_example && cfg.targets.contains('p'))
        .then(|| packages::measure_packages(&tmp.0, cfg.package_files, cfg.package_runs));

    let extra = Extra {
        rss,
        rss_after,
        cpu,
        loadavg,
        total_secs: t_start.elapsed().as_secs_f64(),
        enforcement_on,
        enforcement_off,
        spawn_node,
        spawn_native,
        burst,
        runtimes,
        conn_memory,
        bodies,
        gateway,
        packages,
        nofile: nofile as u64,
    };
    let json = report::report(&cfg, &targets, &extra);
    write_report("e2e", &json);
    let _ = io::stdout().flush();
}
