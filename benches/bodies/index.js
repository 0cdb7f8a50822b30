'use strict';
// The large-body rows of benches/e2e (`BENCH_TARGETS` letter `l`): one handler, served through
// noslate and by Node's own `http` (benches/node_direct.js with HELLO_DIR set to this directory).
//   POST /echo             the body, piped back as it arrives (with backpressure)
//   POST /upload           the body, read and dropped; answers its length
//   GET  /download?bytes=N N bytes, written from one reused buffer with backpressure
const CHUNK = Buffer.alloc(256 * 1024, 0x61);

exports.handler = (ctx, req, res) => {
  const url = new URL(req.url, 'http://localhost');
  if (url.pathname.endsWith('/echo')) {
    res.setHeader('content-type', 'application/octet-stream');
    req.pipe(res);
    return;
  }
  if (url.pathname.endsWith('/upload')) {
    let n = 0;
    req.on('data', (chunk) => { n += chunk.length; });
    req.on('end', () => res.end(String(n)));
    return;
  }
  let left = Number(url.searchParams.get('bytes') || 0);
  res.setHeader('content-type', 'application/octet-stream');
  res.setHeader('content-length', String(left));
  const write = () => {
    while (left > 0) {
      const piece = left >= CHUNK.length ? CHUNK : CHUNK.subarray(0, left);
      left -= piece.length;
      if (!res.write(piece)) {
        res.once('drain', write);
        return;
      }
    }
    res.end();
  };
  req.resume();
  req.on('end', write);
};
