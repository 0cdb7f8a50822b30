'use strict';
// A streamed response: five chunks, 200 ms apart. No content-length is set, so the client gets
// each chunk as it is written (chunked transfer encoding) rather than one body at the end.
exports.handler = (ctx, req, res) => {
  res.setHeader('content-type', 'text/plain; charset=utf-8');
  let sent = 0;
  const timer = setInterval(() => {
    sent += 1;
    res.write(`chunk ${sent} of 5 at ${new Date().toISOString()}\n`);
    if (sent === 5) {
      clearInterval(timer);
      res.end();
    }
  }, 200);
  // The client may leave (or the deadline pass) mid-stream: stop producing.
  res.on('close', () => clearInterval(timer));
};
