'use strict';
// FC's Node.js HTTP handler (`handlerStyle: "fc-http"`): handler(req, resp, context).
// `req` has headers, path, queries, method, clientIP and url, and is a readable stream of the body
// (or use `await req.getBody()`); `resp` has setStatusCode, setHeader, deleteHeader and send, which
// takes a string, a Buffer or a readable stream (streamed to the client as it is produced).
const { Readable } = require('stream');

exports.handler = async (req, resp, context) => {
  if ('stream' in req.queries) {
    resp.setHeader('content-type', 'text/plain; charset=utf-8');
    resp.send(Readable.from((async function* lines() {
      for (let i = 1; i <= 3; i++) {
        await new Promise((resolve) => setTimeout(resolve, 200));
        yield `line ${i} of 3\n`;
      }
    })()));
    return;
  }
  const body = await req.getBody();
  resp.setStatusCode(200);
  resp.setHeader('content-type', 'application/json');
  resp.send(JSON.stringify({
    method: req.method,
    path: req.path,
    queries: req.queries,
    headers: req.headers,
    body: body.toString(),
    requestId: context.requestId,
  }));
};
