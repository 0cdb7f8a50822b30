'use strict';
// A runtime restarted under a running client gets back what the client had set: the platform
// environment and the function profiles. The test restarts the runtime when this script prints
// `restart now`, and writes a line to stdin once the new one is started.

const assert = require('assert/strict');
const path = require('path');
const readline = require('readline');
const { NoslatedClient, run, text, waitFor } = require('./harness');

const fixtures = process.env.FIXTURES;
const agent = new NoslatedClient({ watchInterval: 100 });
let ready = 0;
agent.on('newDataPlaneClientReady', () => { ready += 1; });
const lines = readline.createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once('line', resolve));

run([
  ['start and set', async () => {
    await agent.start();
    assert.equal(ready, 1);
    await agent.setPlatformEnvironmentVariables([{ key: 'SET_BY', value: 'sdk' }]);
    await agent.setFunctionProfile([{
      name: 'mine',
      runtime: 'nodejs',
      url: `file://${path.join(fixtures, 'envdump')}`,
      handler: 'index.handler',
      signature: 'v1',
      worker: { reservationCount: 0, replicaCountLimit: 1 },
    }]);
    assert.equal(JSON.parse(await text(await agent.invoke('mine', '', { url: '/' }))).env.SET_BY, 'sdk');
  }],

  ['the restarted runtime gets the set again', async () => {
    console.log('restart now');
    await nextLine();
    await waitFor('the client sees the new runtime', () => ready === 2, 15000);
    const res = await waitFor('mine answers on the new runtime', async () => {
      try {
        return await agent.invoke('mine', '', { url: '/' });
      } catch {
        return null;
      }
    }, 15000);
    assert.equal(JSON.parse(await text(res)).env.SET_BY, 'sdk');
  }],

  ['close', () => agent.close()],
]);
