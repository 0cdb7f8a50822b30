//! The scalers (`controlPlane.scaler`) with the real binary and Node.js workers: the water-level
//! scaler grows a busy pool past what the queue asks for and shrinks it back to the reservation
//! after `workerRedundantVictimSpareTimes` low polls, victims in `shrinkStrategy` order; the EMA
//! scaler (chosen with Noslate's `useEmaScaling`) grows to its scale factor and shrinks once the
//! load is gone; `noslate stats` names each function's scaler; conflicting keys stop the start.
//!
//! Every test polls every 200 ms (`controlPlane.workerTrafficStatsPullingMs`) and waits for
//! conditions, bounded, never for a fixed time.

mod common;

use common::{Client, Noslate, Req, WAIT, profile, wait_until};
use serde_json::{Value, json};

/// The scalers' poll interval in these tests.
const POLL_MS: u64 = 200;
/// How long each request of the load keeps its worker busy: long enough for two rounds of
/// worker starts on a loaded machine, so the whole load is in flight when the scaler looks.
const LOAD_MS: u64 = 8_000;
/// Small workers, so that the memory pool never limits these pools.
const SMALL: u64 = 128 << 20;

fn stats(ns: &Noslate) -> Value {
    let (ok, out, err) = ns.cli(&["stats"]);
    assert!(ok, "noslate stats failed: {err}");
    serde_json::from_str(&out).expect("stats is JSON")
}

/// `function`'s workers by state, from `noslate stats`: (starting or ready, every state).
fn pool(ns: &Noslate, function: &str) -> (u64, Value) {
    let workers = stats(ns)["functions"][function]["workers"].clone();
    let count = |state: &str| workers[state].as_u64().unwrap_or(0);
    (
        count("starting") + count("initializing") + count("ready"),
        workers,
    )
}

/// The ids of `function`'s workers in `state`, from `noslate ps --json`.
fn worker_ids(ns: &Noslate, function: &str, state: &str) -> Vec<String> {
    let (ok, out, err) = ns.cli(&["ps", "--json"]);
    assert!(ok, "noslate ps failed: {err}");
    let rows: Value = serde_json::from_str(&out).expect("ps --json is JSON");
    rows.as_array()
        .expect("an array of workers")
        .iter()
        .filter(|w| w["function"] == function && w["state"] == state)
        .filter_map(|w| w["id"].as_str().map(str::to_owned))
        .collect()
}

/// Starts `n` invocations that each hold a worker slot for [`LOAD_MS`].
fn load(ns: &Noslate, n: usize) -> Vec<Client> {
    let req = Req::new("POST", "/invoke")
        .header("x-faulty-mode", "sleep")
        .header("x-faulty-ms", LOAD_MS.to_string());
    (0..n)
        .map(|_| {
            let mut c = ns.client();
            c.send(&req.to_bytes());
            c
        })
        .collect()
}

/// Waits until `function` has `want` workers starting or ready, and returns the most it had
/// at any look on the way.
#[track_caller]
fn wait_for_pool(ns: &Noslate, function: &str, want: u64, what: &str) -> u64 {
    let mut most = 0;
    wait_until(WAIT, what, || {
        let (alive, _) = pool(ns, function);
        most = most.max(alive);
        alive == want
    });
    most
}

/// A one-slot function of the `faulty` fixture: one reserved worker, up to ten.
fn one_slot(name: &str, worker: Value) -> Value {
    let mut p = profile(name, "faulty");
    p["resourceLimit"] = json!({ "memory": SMALL });
    p["worker"] = json!({
        "reservationCount": 1, "replicaCountLimit": 10, "maxActivateRequests": 1,
        "initializationTimeout": 10000
    });
    for (k, v) in worker.as_object().expect("worker settings").iter() {
        p["worker"][k] = v.clone();
    }
    p
}

#[test]
fn the_water_level_scaler_grows_a_busy_pool_then_shrinks_it_to_the_reservation() {
    let p = one_slot("wl", json!({ "shrinkStrategy": "FILO" }));
    let ns = Noslate::builder()
        .functions(&json!([p]))
        .config(&json!({
            "controlPlane": {
                "scaler": "waterLevel",
                "workerTrafficStatsPullingMs": POLL_MS,
                "workerRedundantVictimSpareTimes": 3,
                "capacityScalingStage": 0.7
            },
            "virtualMemoryPoolSize": "4gb",
            "turf": { "spareWorkers": 0 }
        }))
        .start();
    wait_for_pool(&ns, "wl", 1, "the reserved worker is up");
    wait_until(WAIT, "the reserved worker is ready", || {
        worker_ids(&ns, "wl", "ready").len() == 1
    });
    let reserved = worker_ids(&ns, "wl", "ready");
    assert_eq!(
        stats(&ns)["functions"]["wl"]["scaler"]["kind"],
        "waterLevel",
        "stats name the scaler"
    );
    assert_eq!(
        ns.log_count(&[
            "scaler waterLevel: polled every 200 ms",
            "capacityScalingStage 0.7, shrinks after 3 polls"
        ]),
        1,
        "the start-up log names the scaler"
    );

    // Four requests that each take a one-slot worker: the queue brings the pool to four; at
    // 100 % water level the scaler aims at 70 %, ⌈4 / 0.7⌉ = 6 workers, and no more (4 busy
    // of 6 is 67 %, between the thresholds).
    let mut clients = load(&ns, 4);
    let most = wait_for_pool(&ns, "wl", 6, "the water level grows the pool to six");
    assert!(most <= 6, "never more than six workers, saw {most}");

    for c in &mut clients {
        let resp = c.read_response();
        assert_eq!(resp.status, 200, "{}", resp.brief());
    }
    assert!(pool(&ns, "wl").0 <= 6, "{:?}", pool(&ns, "wl").1);

    // Idle now: three low polls, then ⌊6 / 1⌋ drained down to the reservation, newest first
    // (FILO), so the reserved worker is the one that stays.
    wait_until(WAIT, "the pool shrinks back to its reserved worker", || {
        let (alive, workers) = pool(&ns, "wl");
        alive == 1 && workers.as_object().is_some_and(|m| m.len() == 1)
    });
    assert_eq!(
        worker_ids(&ns, "wl", "ready"),
        reserved,
        "FILO keeps the oldest"
    );
    ns.wait_no_zombies();
    assert_eq!(
        stats(&ns)["functions"]["wl"]["scaler"]["redundantPolls"],
        0,
        "every later poll is at the reservation: nothing redundant"
    );
}

#[test]
fn the_ema_scaler_grows_to_its_scale_factor_and_shrinks_after_the_load() {
    // One bucket and alpha 1: the EMA is the last sample, so the counts below are exact.
    let p = one_slot(
        "ema",
        json!({
            "concurrencySlidingWindowSize": 1000, "concurrencySlidingBucketCount": 1,
            "emaConcurrencyAlpha": 1, "scaleFactor": 0.5, "expandCooldown": 0,
            "shrinkCooldown": 1000, "shrinkCooldownOnStartup": true
        }),
    );
    let ns = Noslate::builder()
        .functions(&json!([p]))
        .config(&json!({
            "controlPlane": { "useEmaScaling": true, "workerTrafficStatsPullingMs": POLL_MS },
            "virtualMemoryPoolSize": "4gb",
            "turf": { "spareWorkers": 0 }
        }))
        .start();
    wait_for_pool(&ns, "ema", 1, "the reserved worker is up");
    assert_eq!(stats(&ns)["functions"]["ema"]["scaler"]["kind"], "ema");
    assert_eq!(ns.log_count(&["scaler ema: polled every 200 ms"]), 1);

    // Three in flight: ⌈3 / 0.5⌉ = 6 workers; then 3 of 6 busy is 50 %, between the
    // thresholds.
    let mut clients = load(&ns, 3);
    let most = wait_for_pool(&ns, "ema", 6, "the EMA grows the pool to six");
    assert!(most <= 6, "never more than six workers, saw {most}");
    for c in &mut clients {
        let resp = c.read_response();
        assert_eq!(resp.status, 200, "{}", resp.brief());
    }

    // EMA 0 below the 0.3 threshold, outside the one-second shrink cooldown: down to the
    // reservation.
    wait_until(WAIT, "the pool shrinks back to its reserved worker", || {
        let (alive, workers) = pool(&ns, "ema");
        alive == 1 && workers.as_object().is_some_and(|m| m.len() == 1)
    });
    assert_eq!(stats(&ns)["functions"]["ema"]["scaler"]["ema"], 0.0);
    ns.wait_no_zombies();
}

#[test]
fn the_idle_scaler_is_the_default_and_conflicting_or_unknown_scalers_stop_the_start() {
    let ns = Noslate::start(&json!([profile("plain", "faulty")]));
    assert_eq!(stats(&ns)["functions"]["plain"]["scaler"]["kind"], "idle");
    assert_eq!(ns.log_count(&["scaler idle: workers idle for"]), 1);
    drop(ns);

    for (control_plane, says) in [
        (
            json!({ "useEmaScaling": true, "scaler": "waterLevel" }),
            "controlPlane.scaler: \"waterLevel\" conflicts with controlPlane.useEmaScaling: true",
        ),
        (
            json!({ "scaler": "legacy" }),
            "controlPlane.scaler: expected \"idle\", \"waterLevel\" or \"ema\", got \"legacy\"",
        ),
    ] {
        let exited = Noslate::builder()
            .functions(&json!([profile("plain", "faulty")]))
            .config(&json!({ "controlPlane": control_plane }))
            .run_to_exit();
        assert!(!exited.status.success(), "exit status {:?}", exited.status);
        assert!(exited.stderr.contains(says), "{}", exited.stderr);
    }
}
