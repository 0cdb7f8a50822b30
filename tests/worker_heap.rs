//! A Node.js worker's heap under many concurrent invocations: the bootstrap's bookkeeping of
//! open streams must not keep finished requests alive into the old generation.

mod common;

use std::process::Command;
use std::sync::{Arc, Barrier};
use std::thread;

use common::{Noslate, Req, profile};
use serde_json::json;

const CLIENTS: usize = 64;
const REQUESTS_PER_CLIENT: usize = 2000;

fn majors(resp: &common::Response) -> u64 {
    assert_eq!(resp.status, 200, "{}", resp.brief());
    resp.json()["majors"]
        .as_u64()
        .unwrap_or_else(|| panic!("no count in {}", resp.brief()))
}

/// A full collection moves whatever is live into the old generation, the table of open streams
/// included. Thousands of invocations after it, 64 at a time, must still die young: a table whose
/// dead predecessors keep its successors (and the requests in them) reachable makes every
/// scavenge promote them, and full collections follow one after another. With the Map the
/// bootstrap once used, 128,000 invocations after the forced collection brought three more (five
/// runs out of five); with its own table, none.
#[test]
fn finished_invocations_die_young_after_a_full_collection() {
    common::require_node();
    let mut p = profile("gcwatch", "gcwatch");
    p["worker"]["maxActivateRequests"] = json!(CLIENTS);
    p["worker"]["execArgv"] = json!(["--expose-gc"]);
    let ns = Noslate::start(&json!([p]));
    let port = ns.port();
    let mut control = common::Client::connect(port);
    // Warm up, then move everything live (the stream table with this request in it) to the old
    // generation.
    for _ in 0..200 {
        assert_eq!(control.request(&Req::new("GET", "/")).text(), "ok");
    }
    control.request(&Req::new("GET", "/gc").header("x-gc", "full"));
    let after_full = majors(&control.request(&Req::new("GET", "/gc").header("x-gc", "count")));

    let barrier = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                let mut c = common::Client::connect(port);
                let req = Req::new("GET", "/");
                barrier.wait();
                for _ in 0..REQUESTS_PER_CLIENT {
                    let resp = c.request(&req);
                    assert_eq!(resp.text(), "ok", "{}", resp.brief());
                }
            })
        })
        .collect();
    for (i, client) in clients.into_iter().enumerate() {
        assert!(
            client.join().is_ok(),
            "client {i} failed (see its panic above)"
        );
    }

    let after_load = majors(&control.request(&Req::new("GET", "/gc").header("x-gc", "count")));
    eprintln!(
        "full collections: {after_full} up to the forced one, {} more under {} invocations",
        after_load - after_full,
        CLIENTS * REQUESTS_PER_CLIENT
    );
    assert!(
        after_load - after_full <= 1,
        "{} full collections under {} small invocations after a forced one: finished requests \
         are being promoted",
        after_load - after_full,
        CLIENTS * REQUESTS_PER_CLIENT
    );
}

/// The bootstrap's `StreamTable` class, as the worker runs it.
fn stream_table_source() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/runtime/node/bootstrap.js");
    let text = std::fs::read_to_string(path).expect("read the Node.js bootstrap");
    let start = text
        .find("\nclass StreamTable {")
        .expect("the bootstrap defines StreamTable");
    let len = text[start..]
        .find("\n}\n")
        .expect("StreamTable's closing brace");
    text[start..start + len + 3].to_string()
}

/// The table against a Map, over two million random opens and closes with up to 300 streams
/// open: ids in sequence as the runtime hands them out, some near the top of the u32 range, so
/// that probes wrap around the table, collide and are shifted back on deletion, and the table
/// grows. Every open stream must be found, and no closed one, nor stream 0 (an empty slot's key).
#[test]
fn the_stream_table_finds_every_open_stream_and_no_closed_one() {
    common::require_node();
    let check = r#"
const t = new StreamTable();
const m = new Map();
const open = [];
let next = 1;
let seed = 12345;
const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
for (let step = 0; step < 2000000; step++) {
  if (rnd() < 0.5 && open.length < 300) {
    let id = rnd() < 0.01 ? 0xffffff00 + ((rnd() * 255) | 0) + 1 : next++;
    if (m.has(id)) continue;
    t.set(id, { id });
    m.set(id, id);
    open.push(id);
  } else if (open.length > 0) {
    const k = (rnd() * open.length) | 0;
    const id = open[k];
    open[k] = open[open.length - 1];
    open.pop();
    t.delete(id);
    m.delete(id);
    if (t.has(id) || t.get(id) !== undefined) throw new Error(`closed stream ${id} still found`);
  }
  if (step % 997 === 0) {
    if (t.size !== m.size) throw new Error(`size ${t.size}, expected ${m.size}`);
    for (const id of open) {
      const res = t.get(id);
      if (res === undefined || res.id !== id) throw new Error(`open stream ${id} lost at ${step}`);
    }
  }
}
const size = t.size;
t.delete(0);
if (t.has(0) || t.get(0) !== undefined || t.size !== size) throw new Error('stream 0 found');
const values = t.values().map((res) => res.id).sort((a, b) => a - b);
const expected = [...m.keys()].sort((a, b) => a - b);
if (JSON.stringify(values) !== JSON.stringify(expected)) throw new Error('values() differs');
t.clear();
if (t.size !== 0 || t.has(expected[0] ?? 1)) throw new Error('clear() left streams');
console.log(`ok ${expected.length} open, capacity ${t.ids.length}`);
"#;
    let out = Command::new("node")
        .arg("-e")
        .arg(format!("{}\n{check}", stream_table_source()))
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
