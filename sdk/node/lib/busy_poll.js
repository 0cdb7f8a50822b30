'use strict';
// Keeping the event loop awake for a moment while an invocation waits for its response head.
//
// At low concurrency a gateway's call crosses four processes (client, gateway, runtime, worker)
// and back, and every process that sleeps in epoll between the hops is woken by the next one:
// a context switch, and on a VM whose idle vCPU has halted, an interrupt to wake it. The
// runtime keeps its own loop polling for a short window for that reason (its
// src/reactor/busy_poll.rs); the gateway's loop is the other sleeper on the path. While an invocation is
// waiting for its head, few are under way, and the window has not passed, the loop is kept
// turning with setImmediate, which makes libuv poll without blocking, so the runtime's answer
// is read as soon as it is written.
//
// The cost is CPU that nothing else was using at c=1, but at a few invocations at once the
// gateway's spare time is what the runtime and its workers need on a small machine; so the
// loop spins only while at most `maxWaiting` invocations wait. A spin that passed in vain (a
// slow function) turns spinning off for the next BACKOFF_INVOCATIONS invocations, so that slow
// functions cost no CPU beyond their first window. A process that may run on one CPU only
// never spins: it would keep the CPU from the very processes it waits for.

const os = require('os');
const { performance } = require('perf_hooks');

// The window after an invocation is sent, in microseconds.
const DEFAULT_WINDOW_MICROS = 500;
// The most invocations waiting for their heads at which the loop spins.
const DEFAULT_MAX_WAITING = 2;
// Invocations that do not spin after a spin passed in vain.
const BACKOFF_INVOCATIONS = 16;

class BusyPoll {
  /**
   * @param {number} windowMicros 0 turns spinning off
   * @param {number} maxWaiting
   * @param {object} [env] `now()` in ms, `later(fn)`, `cpus`: injected by tests
   */
  constructor(windowMicros, maxWaiting, env = {}) {
    this.windowMs = windowMicros / 1000;
    this.maxWaiting = maxWaiting;
    this.now = env.now || (() => performance.now());
    this.later = env.later || setImmediate;
    const cpus = env.cpus ?? (typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length);
    this.enabled = this.windowMs > 0 && cpus > 1;
    this.waiting = 0;
    this.until = 0;
    this.spinning = false;
    this.skip = 0;
    this.tick = () => this.turn();
  }

  // An invocation was sent and waits for its head.
  sent() {
    this.waiting++;
    if (!this.enabled) return;
    if (this.skip > 0) {
      this.skip--;
      return;
    }
    if (this.waiting > this.maxWaiting) return;
    this.until = this.now() + this.windowMs;
    if (!this.spinning) {
      this.spinning = true;
      this.later(this.tick);
    }
  }

  // An invocation stopped waiting: its head came, or it failed.
  settled() {
    if (this.waiting > 0) this.waiting--;
  }

  turn() {
    if (this.waiting === 0 || this.waiting > this.maxWaiting) {
      this.spinning = false;
      return;
    }
    if (this.now() >= this.until) {
      // The window passed and a head is still due: the function is slower than any window.
      this.spinning = false;
      this.skip = BACKOFF_INVOCATIONS;
      return;
    }
    this.later(this.tick);
  }
}

module.exports = { BusyPoll, DEFAULT_WINDOW_MICROS, DEFAULT_MAX_WAITING, BACKOFF_INVOCATIONS };
