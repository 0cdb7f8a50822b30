'use strict';
// Echoes the request. By default the answer is JSON describing what arrived (method, url, headers,
// body as text): handy to see what an HTTP trigger delivers. With `?stream` in the query the body is
// piped straight back instead, chunk by chunk with backpressure, so it works for any size.
exports.handler = (ctx, req, res) => {
  if (new URL(req.url, 'http://localhost').searchParams.has('stream')) {
    res.setHeader('content-type', req.headers['content-type'] || 'application/octet-stream');
    req.pipe(res);
    return;
  }
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({
      requestId: ctx.requestId,
      method: req.method,
      url: req.url,
      headers: req.headers,
      body: Buffer.concat(chunks).toString(),
    }));
  });
};
