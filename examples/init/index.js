'use strict';
// The initializer runs once per worker, before its first invocation (FC's /initialize hook). It
// prepares state that every invocation then reads. If it throws, the worker never serves.
let state = null;
let invocations = 0;

exports.initializer = async (ctx) => {
  // Stands in for real set-up work: opening a connection pool, loading a model...
  await new Promise((resolve) => setTimeout(resolve, 100));
  // GREETING comes from the profile's `environments` in functions.json.
  state = { greeting: process.env.GREETING || 'hello', initializedAt: new Date().toISOString() };
  ctx.logger.info('initialized');
};

exports.handler = (ctx, req, res) => {
  invocations += 1;
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ ...state, invocations, pid: process.pid }));
};
