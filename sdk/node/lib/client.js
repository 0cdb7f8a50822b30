'use strict';
// NoslatedClient: Noslate's SDK interface over noslate's admin socket. Configuration set here is
// kept, and sent again whenever the runtime (re)appears, so that a runtime restarted under a
// running gateway gets back what the gateway had set.

const { EventEmitter } = require('events');
const { AdminTransport, defaultSocketPath } = require('./admin');
const { BusyPoll, DEFAULT_WINDOW_MICROS, DEFAULT_MAX_WAITING } = require('./busy_poll');
const checks = require('./checks');
const errors = require('./errors');

const START_TIMEOUT_MS = 10000;
const WATCH_INTERVAL_MS = 1000;
const HEALTH_TIMEOUT_MS = 1000;
// Health checks in a row that may go unanswered in time before the runtime counts as gone.
const MISSED_CHECKS = 3;
// Invocation connections open at once; one invocation holds one until its answer has ended,
// and invocations past it wait for one. The runtime queues at most
// dataPlane.requestQueueLimit (1000) per function beyond what its workers take.
const MAX_CONNECTIONS = 1024;
// The longest busy-poll window: past this, sleeping costs less than spinning.
const MAX_BUSY_POLL_MICROS = 1000;
// The client's own bound on the response head, past the deadline the runtime enforces.
const HEAD_GUARD_MARGIN_MS = 1000;
// The longest timer Node.js keeps (a longer one fires at once); a guard past it is left to
// the runtime's own deadline.
const MAX_TIMER_MS = 2 ** 31 - 1;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function selectorPairs(selector) {
  if (!selector || typeof selector !== 'object') return [];
  return Object.entries(selector).map(([key, value]) => ({ key, value }));
}

// The service profiles as `getServiceProfile()` returns them in Noslate: selectors as
// [{key, value}].
function convertServices(items) {
  return items.map((item) => {
    const out = { ...item };
    if (item.selector) out.selector = selectorPairs(item.selector);
    if (Array.isArray(item.selectors)) {
      out.selectors = item.selectors.map((s) => ({ ...s, selector: selectorPairs(s && s.selector) }));
    }
    return out;
  });
}

class NoslatedClient extends EventEmitter {
  /**
   * @param {object} [options]
   * @param {string} [options.socketPath] the admin socket; default `$NOSLATE_WORKDIR/noslated.sock`
   * @param {object} [options.logger] `{info, warn, error}`; default: silent but for warnings
   * @param {number} [options.startTimeout] ms `start()` waits for the runtime (10 000)
   * @param {number} [options.watchInterval] ms between checks for a restarted runtime (1 000)
   * @param {number} [options.maxConnections] invocations under way at once (1 024); more wait
   * @param {number} [options.busyPollMicros] how long the event loop keeps polling, instead of
   *   sleeping, after an invocation is sent while at most `busyPollMaxWaiting` wait for their
   *   heads (500; 0 turns it off)
   * @param {number} [options.busyPollMaxWaiting] (2)
   */
  constructor(options = {}) {
    super();
    this.socketPath = options.socketPath || defaultSocketPath();
    this.logger = options.logger || { info() {}, warn: (...a) => console.warn('[noslate sdk]', ...a), error: (...a) => console.error('[noslate sdk]', ...a) };
    this.startTimeout = options.startTimeout ?? START_TIMEOUT_MS;
    this.watchInterval = options.watchInterval ?? WATCH_INTERVAL_MS;
    this.maxConnections = options.maxConnections ?? MAX_CONNECTIONS;
    if (!Number.isInteger(this.maxConnections) || this.maxConnections < 1) {
      throw new TypeError(`maxConnections must be a positive integer, not ${JSON.stringify(options.maxConnections)}`);
    }
    const busyPollMicros = options.busyPollMicros ?? DEFAULT_WINDOW_MICROS;
    const busyPollMaxWaiting = options.busyPollMaxWaiting ?? DEFAULT_MAX_WAITING;
    if (!Number.isFinite(busyPollMicros) || busyPollMicros < 0 || busyPollMicros > MAX_BUSY_POLL_MICROS) {
      throw new TypeError(`busyPollMicros must be a number of microseconds from 0 to ${MAX_BUSY_POLL_MICROS}, not ${JSON.stringify(options.busyPollMicros)}`);
    }
    if (!Number.isInteger(busyPollMaxWaiting) || busyPollMaxWaiting < 1) {
      throw new TypeError(`busyPollMaxWaiting must be a positive integer, not ${JSON.stringify(options.busyPollMaxWaiting)}`);
    }
    this.transport = new AdminTransport(this.socketPath, this.maxConnections, new BusyPoll(busyPollMicros, busyPollMaxWaiting));
    // What this client set, sent again to a runtime that (re)appears. null: never set.
    this.functionProfiles = null;
    this.functionProfilesMode = 'IMMEDIATELY';
    this.serviceProfiles = null;
    this.rawServiceProfiles = null;
    this.platformEnvironmentVariables = null;
    this.inspectors = new Set();
    // The runtime instance last seen (`/v1/health`), and whether it answers now.
    this.instance = null;
    this.connected = false;
    this.closed = false;
    this.watchTimer = null;
    // Health checks not answered in time, in a row.
    this.missedChecks = 0;
    // Configuration calls run one after another, each answered: an overlapping set neither
    // hangs nor lands out of order.
    this.configChain = Promise.resolve();
  }

  /** Resolves once the runtime answers; rejects after `startTimeout` ms. */
  async start() {
    this.closed = false;
    this.transport.open();
    const deadline = Date.now() + this.startTimeout;
    let last;
    for (;;) {
      try {
        const health = await this.transport.call('GET', '/v1/health', { timeoutMs: HEALTH_TIMEOUT_MS });
        await this.onRuntime(health);
        break;
      } catch (err) {
        last = err;
      }
      if (Date.now() >= deadline) {
        const err = new Error('Timeout on waiting first plane client ready');
        err.cause = last;
        throw err;
      }
      await sleep(50);
    }
    this.watch();
  }

  /** Stops watching the runtime and closes idle connections. */
  async close() {
    this.closed = true;
    clearTimeout(this.watchTimer);
    this.watchTimer = null;
    this.connected = false;
    this.transport.close();
  }

  watch() {
    if (this.closed) return;
    this.watchTimer = setTimeout(async () => {
      try {
        const health = await this.transport.call('GET', '/v1/health', { timeoutMs: HEALTH_TIMEOUT_MS });
        this.missedChecks = 0;
        await this.onRuntime(health);
      } catch (err) {
        this.missedChecks += 1;
        // Gone (nothing listens, or the connection broke): at once. Slow to answer (a busy
        // loop, a burst of connections ahead in its backlog): only after several checks in a
        // row, so that a busy runtime is not taken for a gone one, with every invocation
        // refused meanwhile.
        if (err.code === errors.Status.UNAVAILABLE || this.missedChecks >= MISSED_CHECKS) {
          if (this.connected) this.logger.warn(`the runtime stopped answering: ${err.message}`);
          this.connected = false;
        }
      }
      this.watch();
    }, this.watchInterval);
    this.watchTimer.unref();
  }

  // The runtime answered: if it is new (first contact, a restart, or back after an absence),
  // send it what this client had set, then say so as Noslate's SDK does.
  async onRuntime(health) {
    const fresh = !this.connected || health.instance !== this.instance;
    this.instance = health.instance;
    this.connected = true;
    if (!fresh) return;
    await this.resend();
    this.emit('newDataPlaneClientReady', { instance: this.instance });
    this.emit('newControlPlaneClientReady', { instance: this.instance });
  }

  async resend() {
    const steps = [];
    if (this.platformEnvironmentVariables !== null) {
      steps.push(['platform environment variables', () => this.putEnv(this.platformEnvironmentVariables)]);
    }
    if (this.functionProfiles !== null) {
      steps.push(['function profiles', () => this.putFunctions(this.functionProfiles)]);
    }
    if (this.rawServiceProfiles !== null) {
      steps.push(['service profiles', () => this.putServices(this.rawServiceProfiles)]);
    }
    for (const name of this.inspectors) {
      steps.push([`the inspector of ${name}`, () => this.putInspector(name, true)]);
    }
    for (const [what, step] of steps) {
      try {
        await this.serial(step);
      } catch (err) {
        this.logger.error(`could not send ${what} again to the runtime: ${err.message}`);
      }
    }
  }

  serial(op) {
    const run = this.configChain.then(op, op);
    this.configChain = run.catch(() => {});
    return run;
  }

  putFunctions(profiles) {
    return this.transport.call('PUT', '/v1/functions', {
      body: profiles,
      // Relative code urls resolve against the gateway's directory, as they would in its files.
      headers: { 'x-noslate-base-dir': process.cwd() },
    });
  }

  putServices(items) {
    return this.transport.call('PUT', '/v1/services', { body: items });
  }

  putEnv(envs) {
    const map = {};
    for (const { key, value } of envs) map[key] = value;
    return this.transport.call('PUT', '/v1/env', { body: map });
  }

  putInspector(name, use) {
    return this.transport.call('PUT', `/v1/inspector/${encodeURIComponent(name)}`, { body: { use } });
  }

  // ---- Invocations ----

  /** Invokes function `name`; resolves at the response head to a Readable. */
  invoke(name, data, metadata) {
    return this.trigger('', name, data, metadata);
  }

  /** Invokes service `name` (which picks a function); resolves at the response head. */
  invokeService(name, data, metadata) {
    return this.trigger('service/', name, data, metadata);
  }

  // Not `async`: a gateway awaits this once per request, and an async function would wrap the
  // transport's promise in one more.
  trigger(prefix, name, data, metadata) {
    let body;
    let meta;
    try {
      checks.checkName(name, prefix ? 'service name' : 'function name');
      body = checks.checkData(data);
      meta = checks.checkMetadata(metadata);
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.closed || !this.connected) {
      // Nothing to send to; a Readable given is left for the caller to destroy.
      return Promise.reject(errors.noDataPlane());
    }
    let fields = `x-noslate-headers: ${meta.headersJson}\r\n`;
    if (meta.method !== undefined) fields += `x-noslate-method: ${meta.method}\r\n`;
    if (meta.url !== undefined) fields += `x-noslate-url: ${meta.url}\r\n`;
    if (meta.baggageJson !== undefined) fields += `x-noslate-baggage: ${meta.baggageJson}\r\n`;
    if (meta.requestId !== undefined) fields += `x-noslate-request-id: ${meta.requestId}\r\n`;
    let headGuard;
    if (meta.deadline !== undefined) {
      fields += `x-noslate-deadline: ${Math.floor(meta.deadline)}\r\n`;
      headGuard = Math.max(0, meta.deadline - Date.now()) + HEAD_GUARD_MARGIN_MS;
    } else if (meta.timeout !== undefined) {
      fields += `x-noslate-timeout: ${Math.floor(meta.timeout)}\r\n`;
      headGuard = meta.timeout + HEAD_GUARD_MARGIN_MS;
    }
    if (headGuard > MAX_TIMER_MS) headGuard = undefined;
    const path = `/v1/invoke/${prefix}${encodeURIComponent(name)}`;
    const event = meta.method === undefined && meta.url === undefined;
    return this.transport.invoke(path, fields, body, headGuard, event);
  }

  // ---- Function profiles ----

  /** Replaces the whole profile set (Noslate's semantics: absent functions are removed). */
  setFunctionProfile(profiles, mode = 'IMMEDIATELY') {
    return Promise.resolve().then(() => {
      checks.checkFunctionProfiles(profiles, mode);
      const copy = structuredClone(profiles);
      if (!this.connected) {
        // Sent when the runtime appears, as Noslate does with no control plane connected.
        this.functionProfiles = copy;
        this.functionProfilesMode = mode;
        return undefined;
      }
      return this.serial(async () => {
        const answer = await this.putFunctions(copy);
        if (!answer || typeof answer !== 'object') throw new Error("Function profile didn't set.");
        this.functionProfiles = copy;
        this.functionProfilesMode = mode;
        return answer;
      });
    });
  }

  /** The profile set this client last set (Noslate returns its cache, not the runtime's). */
  getFunctionProfile() {
    return this.functionProfiles;
  }

  // ---- Service profiles ----

  setServiceProfile(items) {
    return Promise.resolve().then(() => {
      checks.checkServiceProfiles(items);
      const copy = structuredClone(items);
      if (!this.connected) {
        this.rawServiceProfiles = copy;
        this.serviceProfiles = convertServices(copy);
        return undefined;
      }
      return this.serial(async () => {
        const answer = await this.putServices(copy);
        this.rawServiceProfiles = copy;
        this.serviceProfiles = convertServices(copy);
        return answer;
      });
    });
  }

  getServiceProfile() {
    return this.serviceProfiles || [];
  }

  // ---- Platform environment variables ----

  setPlatformEnvironmentVariables(envs) {
    return Promise.resolve().then(() => {
      const checked = checks.checkPlatformEnvironmentVariables(envs);
      if (!this.connected) {
        this.platformEnvironmentVariables = checked;
        return undefined;
      }
      return this.serial(async () => {
        const answer = await this.putEnv(checked);
        if (!answer || typeof answer !== 'object') throw new Error("Platform environment variables didn't set.");
        this.platformEnvironmentVariables = checked;
        return answer;
      });
    });
  }

  getPlatformEnvironmentVariables() {
    return this.platformEnvironmentVariables || [];
  }

  // ---- Inspector ----

  /** Routes `name`'s invocations to an inspect worker started with `--inspect` (or back). */
  useInspector(name, use) {
    return Promise.resolve().then(() => {
      checks.checkName(name, 'function name');
      if (typeof use !== 'boolean') throw new TypeError('use must be a boolean');
      if (!this.connected) {
        if (use) this.inspectors.add(name); else this.inspectors.delete(name);
        return undefined;
      }
      return this.serial(async () => {
        const answer = await this.putInspector(name, use);
        if (use) this.inspectors.add(name); else this.inspectors.delete(name);
        return answer;
      });
    });
  }

  // ---- Health and stats ----

  async checkControlPlaneHealth(timeout = 1000) {
    try {
      await this.transport.call('GET', '/v1/health', { timeoutMs: timeout });
      return { health: true, name: 'ControlPlane' };
    } catch (err) {
      return { health: false, name: 'ControlPlane', reason: err.message };
    }
  }

  async checkDataPlaneHealth(timeout = 1000) {
    try {
      const health = await this.transport.call('GET', '/v1/health', { timeoutMs: timeout });
      return health.health
        ? { health: true, name: 'DataPlane' }
        : { health: false, name: 'DataPlane', reason: health.reason };
    } catch (err) {
      return { health: false, name: 'DataPlane', reason: err.message };
    }
  }

  /** Workers by function, in the shape of Noslate's `getWorkerStatsSnapshot()`. */
  async getWorkerStatsSnapshot() {
    const [workers, profiles] = await Promise.all([
      this.transport.call('GET', '/v1/workers'),
      this.transport.call('GET', '/v1/functions'),
    ]);
    const byName = new Map((profiles.functions || []).map((p) => [p.name, p]));
    const brokers = new Map();
    const now = Date.now();
    for (const w of workers || []) {
      const inspector = Boolean(w.inspector);
      const key = `${w.function}${inspector ? ':inspector' : ''}`;
      if (!brokers.has(key)) {
        brokers.set(key, {
          name: w.function,
          inspector,
          profile: byName.get(w.function) || null,
          redundantTimes: 0,
          startingPool: [],
          activeWorkerCount: 0,
          initiatingWorkerCount: 0,
          workers: [],
        });
      }
      const broker = brokers.get(key);
      const ready = w.state === 'ready';
      if (ready) broker.activeWorkerCount += 1;
      else if (w.state === 'starting' || w.state === 'initializing') broker.initiatingWorkerCount += 1;
      broker.workers.push({
        name: w.id,
        credential: w.id,
        pid: w.pid,
        status: w.state,
        registerTime: typeof w.ageMs === 'number' ? now - w.ageMs : null,
        activeRequestCount: w.inflight || 0,
      });
    }
    return { brokers: [...brokers.values()] };
  }
}

module.exports = { NoslatedClient };
