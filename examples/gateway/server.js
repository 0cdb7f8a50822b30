'use strict';
// A Noslate gateway: the user's own HTTP server in front of the runtime, as Noslate's seed image
// runs /code/server.js. It uses Node's `http` and Noslate's SDK only:
//
//   noslate serve --functions examples/functions.json --gateway node \
//       --gateway-arg examples/gateway/server.js
//
// The runtime starts it with the FC port in PORT, the SDK's directory in NOSLATE_PATH and its
// work directory in NOSLATE_WORKDIR (where the SDK finds the admin socket); it restarts it if it
// dies and stops it first on SIGTERM.
//
// Routes: `/invoke/NAME[/...]` and `/invoke/service/NAME[/...]` invoke the function or service
// NAME; anything else goes to the function named by `x-noslate-function`, else to `hello`.
// The method, URL and headers travel as the invocation's metadata, the body as a stream, and
// the function's status, headers and body stream come back as they are produced.
const http = require('http');
const { NoslatedClient } = require(process.env.NOSLATE_PATH);

const port = Number(process.env.PORT || 9000);
const defaultFunction = process.env.GATEWAY_DEFAULT_FUNCTION || 'hello';
const agent = new NoslatedClient();

// HTTP statuses for the SDK's error codes: NOT_FOUND (no such function or service),
// RESOURCE_EXHAUSTED (rate limit, full queue), DEADLINE_EXCEEDED, UNAVAILABLE (stopping, no
// worker could start); any other failure is a 502.
const STATUS_OF_CODE = { 5: 404, 8: 429, 4: 504, 14: 503 };

// The request's headers as [name, value] pairs, in order and with repeats (Noslate's metadata).
function headerPairs(req) {
  const pairs = [];
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    pairs.push([req.rawHeaders[i], req.rawHeaders[i + 1]]);
  }
  return pairs;
}

// Response headers for writeHead: Noslate gives [name, value] pairs; an object passes as is.
function flatHeaders(headers) {
  if (!Array.isArray(headers)) return headers || {};
  return headers.flat();
}

// Which function (or service) a request is for.
function target(req) {
  const match = /^\/invoke\/(?:(service)\/)?([A-Za-z0-9_.-]+)/.exec(req.url);
  if (match) return { service: Boolean(match[1]), name: match[2] };
  return { service: false, name: req.headers['x-noslate-function'] || defaultFunction };
}

async function handle(req, res) {
  const { service, name } = target(req);
  const metadata = { method: req.method, url: req.url, headers: headerPairs(req) };
  try {
    const response = service
      ? await agent.invokeService(name, req, metadata)
      : await agent.invoke(name, req, metadata);
    res.writeHead(response.status, flatHeaders(response.metadata.headers));
    response.on('error', () => res.destroy());
    response.pipe(res);
  } catch (err) {
    // Refused before the response head: the error's name is the runtime's errorType, its code
    // a gRPC status as in Noslate's SDK.
    res.writeHead(STATUS_OF_CODE[err.code] || 502, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ errorType: err.name || 'Error', errorMessage: err.message, code: err.code }));
  }
}

async function main() {
  await agent.start();
  const server = http.createServer((req, res) => {
    handle(req, res);
  });
  server.listen(port, '0.0.0.0', () => console.log(`gateway listening on ${port}`));
  process.on('SIGTERM', () => {
    // Stop accepting, let the requests in flight finish, then leave: the runtime drains after.
    server.close(() => {
      Promise.resolve(agent.close()).finally(() => process.exit(0));
    });
    server.closeIdleConnections();
  });
}

main().catch((err) => {
  console.error(`gateway: cannot start: ${err.stack || err}`);
  process.exit(1);
});
