'use strict';
// Row (c) of benches/e2e.rs: the examples/hello handler served directly by Node's own `http`
// module, one process, no runtime in between. It is the baseline that noslate's /invoke (row b)
// is compared against.
//
// Usage: node benches/node_direct.js [port]   (port 0 or absent = any free port; PORT also works)
// Prints the bound port on stdout, alone on one line, once it is listening.

const http = require('http');
const path = require('path');

const port = Number(process.argv[2] ?? process.env.PORT ?? 0);
const codeDir = process.env.HELLO_DIR || path.join(__dirname, '..', 'examples', 'hello');
const { handler } = require(path.join(codeDir, 'index.js'));

// A context shaped like the one the runtime passes to Noslate-signature handlers, built per
// request as the runtime does, so that this side does not get a free lunch.
const fn = { name: 'hello', handler: 'index.handler', memory: 512, timeout: 3 };
let seq = 0;

const server = http.createServer((req, res) => {
  const ctx = {
    requestId: req.headers['x-fc-request-id'] || `direct-${++seq}`,
    credentials: null,
    function: fn,
    service: null,
    region: null,
    accountId: null,
    retryCount: 0,
  };
  try {
    const ret = handler(ctx, req, res);
    if (ret && typeof ret.then === 'function') ret.then(null, (err) => fail(res, err));
  } catch (err) {
    fail(res, err);
  }
});

function fail(res, err) {
  console.error(err);
  if (!res.headersSent) res.statusCode = 500;
  res.end();
}

server.keepAliveTimeout = 0;
server.timeout = 0;
server.listen(port, '0.0.0.0', () => {
  process.stdout.write(`${server.address().port}\n`);
});

for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
