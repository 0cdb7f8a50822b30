'use strict';
// The SDK's busy polling: while few invocations wait for their response heads, the event loop
// keeps turning for a short window instead of sleeping; a slow function turns it off for a
// while; it never outlasts its window. Function: drip (tests/fixtures/drip).

const assert = require('assert/strict');
const path = require('path');
const { NoslatedClient, run, text } = require('./harness');
const { BusyPoll, BACKOFF_INVOCATIONS } = require(path.join(process.env.NOSLATE_PATH, 'lib', 'busy_poll'));

// A BusyPoll on a clock and a scheduler of the test's own.
function fake({ windowMicros = 200, maxWaiting = 2, cpus = 2 } = {}) {
  const state = { t: 0, queued: [] };
  const poll = new BusyPoll(windowMicros, maxWaiting, {
    now: () => state.t,
    later: (fn) => state.queued.push(fn),
    cpus,
  });
  // Runs the scheduled turns, advancing the clock by `stepMs` before each; returns how many ran.
  state.turns = (stepMs, limit = 1000) => {
    let n = 0;
    while (state.queued.length > 0 && n < limit) {
      state.t += stepMs;
      state.queued.shift()();
      n++;
    }
    return n;
  };
  return { poll, state };
}

run([
  ['the loop turns while a head is due and stops when it came', async () => {
    const { poll, state } = fake();
    poll.sent();
    assert.equal(state.turns(0.01, 5), 5, 'still turning within the window');
    poll.settled();
    assert.equal(state.turns(0.01), 1, 'the next turn sees nothing waiting and stops');
    assert.equal(state.queued.length, 0);
  }],

  ['a window that passes in vain turns spinning off for the next invocations', async () => {
    const { poll, state } = fake();
    poll.sent();
    // 200 µs, turns of 10 µs: about 20 turns, then it gives up with the head still due.
    const turns = state.turns(0.01);
    assert.ok(turns >= 19 && turns <= 21, `${turns} turns`);
    poll.settled();
    for (let i = 0; i < BACKOFF_INVOCATIONS; i++) {
      poll.sent();
      assert.equal(state.queued.length, 0, `invocation ${i} after the vain spin does not spin`);
      poll.settled();
    }
    poll.sent();
    assert.equal(state.queued.length, 1, 'then it spins again');
  }],

  ['more invocations waiting than maxWaiting, one CPU, or a zero window: no spinning', async () => {
    let { poll, state } = fake({ maxWaiting: 2 });
    poll.sent();
    poll.sent();
    poll.sent();
    assert.equal(state.turns(0.01), 1, 'the turn scheduled at two sees three waiting and stops');
    poll.sent();
    assert.equal(state.queued.length, 0, 'a fourth does not start one');
    ({ poll, state } = fake({ cpus: 1 }));
    poll.sent();
    assert.equal(state.queued.length, 0);
    ({ poll, state } = fake({ windowMicros: 0 }));
    poll.sent();
    assert.equal(state.queued.length, 0);
  }],

  ['bad options are refused by name', async () => {
    assert.throws(() => new NoslatedClient({ busyPollMicros: -1 }), /busyPollMicros/);
    assert.throws(() => new NoslatedClient({ busyPollMicros: 5000 }), /busyPollMicros/);
    assert.throws(() => new NoslatedClient({ busyPollMaxWaiting: 0 }), /busyPollMaxWaiting/);
  }],

  ['a slow function costs the waiting process no more than a window of CPU', async () => {
    const agent = new NoslatedClient();
    await agent.start();
    // Warm up, so that what follows measures waiting, not compiling.
    for (let i = 0; i < 20; i++) await text(await agent.invoke('drip', '', { url: '/' }));
    const before = process.cpuUsage();
    const started = Date.now();
    const res = await agent.invoke('drip', '', { url: '/', headers: [['x-drip-head-delay', '400']] });
    const waited = Date.now() - started;
    const used = process.cpuUsage(before);
    await text(res);
    assert.ok(waited >= 350, `waited ${waited} ms for the head`);
    const cpuMs = (used.user + used.system) / 1000;
    // A loop that spun the whole wait would have used about 400 ms.
    assert.ok(cpuMs < 100, `${cpuMs} ms of CPU while waiting ${waited} ms`);
    await agent.close();
  }],
]);
