'use strict';
// The `g` rows of benches/e2e: a gateway as Noslate's users wrote them, Node's own `http` in
// front of `require(NOSLATE_PATH).NoslatedClient`, forwarding every request to the function
// `hello` of the runtime whose admin socket is `$NOSLATE_WORKDIR/noslated.sock`.
//
// Usage: node benches/sdk_gateway.js [port]   (0 = any free port). Prints the port once listening.

const http = require('http');
const path = require('path');

const sdkPath = process.env.NOSLATE_PATH || path.join(__dirname, '..', 'sdk', 'node');
// BENCH_GATEWAY_TRANSPORT=none: invocations are answered inside this process
// (benches/sdk_null_transport.js), the bound of any transport to the runtime.
if (process.env.BENCH_GATEWAY_TRANSPORT === 'none') require('./sdk_null_transport').install(sdkPath);
const { NoslatedClient } = require(sdkPath);

const agent = new NoslatedClient();
const port = Number(process.argv[2] ?? 0);

const server = http.createServer(async (req, res) => {
  try {
    const response = await agent.invoke('hello', req, {
      method: req.method,
      url: req.url,
      headers: req.headers,
    });
    res.statusCode = response.status;
    for (const [key, value] of response.metadata.headers) res.appendHeader(key, value);
    response.pipe(res);
  } catch (err) {
    res.writeHead(502, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ name: err.name, message: err.message }));
  }
});

agent.start().then(() => {
  server.listen(port, '127.0.0.1', () => console.log(server.address().port));
}, (err) => {
  console.error(err.message);
  process.exit(1);
});

// A clean exit on SIGTERM, so that `--cpu-prof` (BENCH_GATEWAY_NODE_ARGS) writes its profile.
process.on('SIGTERM', () => process.exit(0));
