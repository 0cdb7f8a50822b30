'use strict';
// Health checks: healthy, unhealthy with Noslate's reason while the breaker is open (and
// invocations refused with FAILED_PRECONDITION), a deadline of 0, and a runtime that is gone.
// Started with function `drip` and systemCircuitBreaker.requestCountLimit 2.

const assert = require('assert/strict');
const { PassThrough } = require('stream');
const { NoslatedClient, run, waitFor, rejection } = require('./harness');

const agent = new NoslatedClient();

run([
  ['start', () => agent.start()],

  ['healthy', async () => {
    assert.deepEqual(await agent.checkDataPlaneHealth(), { health: true, name: 'DataPlane' });
    assert.deepEqual(await agent.checkControlPlaneHealth(), { health: true, name: 'ControlPlane' });
  }],

  ['a deadline of 0 fails the check with DEADLINE_EXCEEDED', async () => {
    const answer = await agent.checkDataPlaneHealth(0);
    assert.equal(answer.health, false);
    assert.match(answer.reason, /DEADLINE_EXCEEDED/);
  }],

  ['unhealthy while the breaker is open, then healthy again', async () => {
    const inputs = [];
    const pending = [];
    for (let i = 0; i < 4; i++) {
      const input = new PassThrough();
      inputs.push(input);
      pending.push(agent.invoke('drip', input, {
        url: '/', timeout: 60000, headers: [['x-drip-head-delay', '60000']],
      }).catch((err) => err));
    }
    const open = await waitFor('the breaker opens', async () => {
      const h = await agent.checkDataPlaneHealth();
      return h.health === false ? h : null;
    }, 15000);
    assert.deepEqual(open, { health: false, name: 'DataPlane', reason: 'Circuit Breaker Enabled' });
    const refused = await rejection(agent.invoke('drip', '', { url: '/' }));
    assert.equal(refused.name, 'SystemCircuitBreakerOpen');
    assert.equal(refused.code, 9);
    inputs.forEach((input) => input.destroy(new Error('stop waiting')));
    for (const err of await Promise.all(pending)) assert.match(err.message, /CANCELLED/);
    await waitFor('the breaker closes', async () => (await agent.checkDataPlaneHealth()).health, 15000);
  }],

  ['a runtime that is not there', async () => {
    const lost = new NoslatedClient({ socketPath: '/nonexistent/noslated.sock', startTimeout: 300 });
    assert.equal((await rejection(lost.start())).message, 'Timeout on waiting first plane client ready');
    const h = await lost.checkDataPlaneHealth();
    assert.equal(h.health, false);
    assert.equal(h.reason, 'No activated data plane.');
    assert.equal((await rejection(lost.invoke('drip', 'x'))).message, 'No activated data plane.');
    await lost.close();
  }],

  ['close', () => agent.close()],
]);
