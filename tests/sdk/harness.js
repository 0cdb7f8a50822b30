'use strict';
// A tiny runner for the SDK's scripts: named async checks run in order, each printed `ok NAME`;
// the first failure prints `FAIL NAME: ...` and exits 1. Every check is bounded by a timeout so
// that a hanging promise is a failure, not a stuck test.

const { NoslatedClient } = require(process.env.NOSLATE_PATH);

const CHECK_TIMEOUT_MS = 20000;

async function run(checks) {
  for (const [name, check] of checks) {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${CHECK_TIMEOUT_MS} ms`)), CHECK_TIMEOUT_MS);
    });
    try {
      await Promise.race([check(), timeout]);
      console.log(`ok ${name}`);
    } catch (err) {
      console.log(`FAIL ${name}: ${err && err.stack ? err.stack : err}`);
      process.exit(1);
    } finally {
      clearTimeout(timer);
    }
  }
  process.exit(0);
}

async function text(response) {
  const chunks = [];
  for await (const chunk of response) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

// Resolves once `cond()` is truthy, polling every 20 ms; rejects after `ms`.
async function waitFor(what, cond, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await cond();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

// Rejection of `promise`, which must reject.
async function rejection(promise) {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

module.exports = { NoslatedClient, run, text, waitFor, rejection };
