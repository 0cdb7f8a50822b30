'use strict';
// Profiles, services, platform environment variables, worker stats: Noslate's semantics and
// messages, every call answered (overlapping sets included).
// Started with function `echo`; FIXTURES names tests/fixtures.

const assert = require('assert/strict');
const path = require('path');
const { NoslatedClient, run, text, waitFor, rejection } = require('./harness');

const fixtures = process.env.FIXTURES;
const profile = (name, fixture, extra = {}) => ({
  name,
  runtime: 'nodejs',
  url: `file://${path.join(fixtures, fixture)}`,
  handler: 'index.handler',
  signature: 'v1',
  worker: { reservationCount: 0, replicaCountLimit: 1 },
  ...extra,
});

const agent = new NoslatedClient();

run([
  ['before start, sets are kept and sent once the runtime is there', async () => {
    assert.equal(agent.getFunctionProfile(), null);
    assert.deepEqual(agent.getServiceProfile(), []);
    assert.deepEqual(agent.getPlatformEnvironmentVariables(), []);
    await agent.setPlatformEnvironmentVariables([{ key: 'PLATFORM_X', value: 'early' }]);
    await agent.setFunctionProfile([profile('env', 'envdump'), profile('echo', 'echo')]);
    await agent.start();
    const res = await agent.invoke('env', '', { url: '/' });
    assert.equal(JSON.parse(await text(res)).env.PLATFORM_X, 'early');
  }],

  ['setFunctionProfile replaces the whole set; getFunctionProfile returns it', async () => {
    const set = [profile('echo', 'echo'), profile('echo2', 'echo')];
    const answer = await agent.setFunctionProfile(set);
    assert.ok(answer && typeof answer === 'object');
    assert.deepEqual(agent.getFunctionProfile(), set);
    set[0].name = 'changed-after';
    assert.equal(agent.getFunctionProfile()[0].name, 'echo', 'a copy is kept');
    assert.equal((await agent.invoke('echo2', 'x', { url: '/' })).status, 200);
    const gone = await rejection(agent.invoke('env', 'x'));
    assert.equal(gone.name, 'FunctionNotFound');
  }],

  ['bad profiles are refused, and nothing changes', async () => {
    assert.match((await rejection(agent.setFunctionProfile('x'))).message, /must be an array/);
    assert.match((await rejection(agent.setFunctionProfile([1]))).message, /instance\[0\]/);
    assert.match((await rejection(agent.setFunctionProfile([], 'LATER'))).message, /IMMEDIATELY or WAIT/);
    const err = await rejection(agent.setFunctionProfile([{ name: 'bad', runtime: 'cobol', url: 'file:///x' }]));
    assert.equal(err.name, 'InvalidProfiles');
    assert.equal(agent.getFunctionProfile()[1].name, 'echo2');
  }],

  ['overlapping sets all answer, and the last one wins', async () => {
    const sets = Array.from({ length: 8 }, (_, i) => [profile('echo', 'echo'), profile(`f${i}`, 'echo')]);
    const answers = await Promise.allSettled(sets.map((set) => agent.setFunctionProfile(set)));
    assert.ok(answers.every((a) => a.status === 'fulfilled'), JSON.stringify(answers));
    assert.equal(agent.getFunctionProfile()[1].name, 'f7');
    assert.equal((await agent.invoke('f7', 'x', { url: '/' })).status, 200);
    assert.equal((await rejection(agent.invoke('f6', 'x'))).name, 'FunctionNotFound');
  }],

  ['service profiles: set, routed, and read back as key/value selectors', async () => {
    const items = [{ name: 'front', selector: { functionName: 'echo' } }];
    await agent.setServiceProfile(items);
    assert.deepEqual(agent.getServiceProfile(), [{ name: 'front', selector: [{ key: 'functionName', value: 'echo' }] }]);
    const res = await agent.invokeService('front', 'svc', { url: '/' });
    assert.equal(JSON.parse(await text(res)).body, 'svc');
    const err = await rejection(agent.setServiceProfile([{ name: 'bad', selector: { functionName: 'nosuch' } }]));
    assert.match(err.message, /nosuch/);
    assert.equal(agent.getServiceProfile()[0].name, 'front');
  }],

  ['a relative code url resolves against the caller\'s directory, and services see it so', async () => {
    // The runtime runs elsewhere: a url relative to this process's directory must not be read
    // against the runtime's when a service set is checked against the functions.
    const cwd = process.cwd();
    process.chdir(fixtures);
    try {
      await agent.setFunctionProfile([profile('echo', 'echo'), { ...profile('rel', 'echo'), url: 'file://./echo' }]);
    } finally {
      process.chdir(cwd);
    }
    await agent.setServiceProfile([{ name: 'front', selector: { functionName: 'echo' } }]);
    assert.equal(JSON.parse(await text(await agent.invoke('rel', 'relative', { url: '/' }))).body, 'relative');
    assert.equal(JSON.parse(await text(await agent.invokeService('front', 'svc', { url: '/' }))).body, 'svc');
  }],

  ['platform environment variables, with Noslate\'s checks', async () => {
    assert.equal((await rejection(agent.setPlatformEnvironmentVariables([{ key: 'NOSLATE_A', value: '1' }]))).message,
      "Platform environment variables' key can't start with NOSLATED_ and NOSLATE_. (Failed: NOSLATE_A)");
    assert.equal((await rejection(agent.setPlatformEnvironmentVariables([{ key: 'NOSLATED_A', value: '1' }]))).message,
      "Platform environment variables' key can't start with NOSLATED_ and NOSLATE_. (Failed: NOSLATED_A)");
    assert.equal((await rejection(agent.setPlatformEnvironmentVariables([{ key: 'A', value: 5 }]))).message,
      "Platform environment variables' value can't be out of string. (Failed: A, 5 (number))");
    await agent.setPlatformEnvironmentVariables([{ key: 'A', value: null }, { key: 'B', value: 'b' }]);
    assert.deepEqual(agent.getPlatformEnvironmentVariables(), [{ key: 'A', value: '' }, { key: 'B', value: 'b' }]);
  }],

  ['getWorkerStatsSnapshot lists brokers and their workers', async () => {
    await agent.setFunctionProfile([profile('echo', 'echo', { worker: { reservationCount: 1, replicaCountLimit: 1 } })]);
    await (await agent.invoke('echo', 'x', { url: '/' })).resume();
    const snapshot = await agent.getWorkerStatsSnapshot();
    const broker = snapshot.brokers.find((b) => b.name === 'echo');
    assert.ok(broker, JSON.stringify(snapshot));
    assert.equal(broker.inspector, false);
    assert.equal(broker.profile.name, 'echo');
    assert.ok(broker.workers.length >= 1);
    const worker = broker.workers[0];
    assert.equal(typeof worker.pid, 'number');
    assert.equal(typeof worker.registerTime, 'number');
    assert.equal(typeof worker.activeRequestCount, 'number');
  }],

  ['useInspector routes a function to its inspect worker and back', async () => {
    assert.equal((await rejection(agent.useInspector('echo', 'yes'))).message, 'use must be a boolean');
    assert.equal((await rejection(agent.useInspector('nosuch', true))).name, 'FunctionNotFound');
    await agent.useInspector('echo', true);
    const broker = await waitFor('the inspect worker is ready', async () => {
      const snapshot = await agent.getWorkerStatsSnapshot();
      const b = snapshot.brokers.find((x) => x.name === 'echo' && x.inspector);
      return b && b.activeWorkerCount === 1 ? b : null;
    }, 15000);
    const seen = JSON.parse(await text(await agent.invoke('echo', 'x', { url: '/' })));
    assert.equal(seen.pid, broker.workers[0].pid, 'served by the inspect worker');
    await agent.useInspector('echo', false);
    await waitFor('the inspect worker is gone', async () =>
      !(await agent.getWorkerStatsSnapshot()).brokers.some((b) => b.inspector), 15000);
    const back = JSON.parse(await text(await agent.invoke('echo', 'x', { url: '/' })));
    assert.notEqual(back.pid, broker.workers[0].pid);
  }],

  ['close', () => agent.close()],
]);
