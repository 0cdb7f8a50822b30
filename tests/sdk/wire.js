'use strict';
// The SDK's own HTTP/1.1 client against a fake runtime on a Unix socket that splits its answers
// at every byte, stalls, cuts them and half-closes, and against responses that are not HTTP.
// No runtime is started; NOSLATE_WORKDIR is a fresh directory.

const assert = require('assert/strict');
const fs = require('fs');
const net = require('net');
const path = require('path');
const { NoslatedClient, run, text, waitFor, rejection } = require('./harness');
const { Dechunker, parseHead, framingOf } = require(path.join(process.env.NOSLATE_PATH, 'lib', 'wire'));

const socketPath = path.join(process.env.NOSLATE_WORKDIR, 'noslated.sock');
const HEALTH_BODY = '{"health":true,"reason":null,"lifecycle":"running","instance":"x"}';
const HEALTH = `HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${HEALTH_BODY.length}\r\n\r\n${HEALTH_BODY}`;

// The fake runtime: health checks answer at once; an invocation gets `script(socket)`, and is
// recorded in `invocations` as its bytes and the number of reads they took.
let script = null;
const invocations = [];
// Connections that carried at least one invocation.
let invocationConnections = 0;
// How long health checks wait for their answer, and how many came.
let healthDelay = 0;
let healthChecks = 0;
function serve() {
  try { fs.unlinkSync(socketPath); } catch {}
  const server = net.createServer((socket) => {
    let buf = '';
    let reads = 0;
    let invoked = false;
    socket.on('data', (chunk) => {
      buf += chunk.toString('latin1');
      reads += 1;
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.slice(0, end);
        const length = /content-length: (\d+)/i.exec(head);
        const chunked = /transfer-encoding: chunked/i.test(head);
        let used = end + 4;
        if (length) used += Number(length[1]);
        if (chunked) {
          const last = buf.indexOf('0\r\n\r\n', end + 4);
          if (last < 0) return;
          used = last + 5;
        }
        if (buf.length < used) return;
        const bytes = buf.slice(0, used);
        buf = buf.slice(used);
        if (head.startsWith('GET /v1/health')) {
          healthChecks += 1;
          if (healthDelay > 0) setTimeout(() => socket.write(HEALTH), healthDelay);
          else socket.write(HEALTH);
        } else {
          invocations.push({ bytes, reads });
          if (!invoked) invocationConnections += 1;
          invoked = true;
          script(socket);
        }
        reads = 0;
      }
    });
    socket.on('error', () => {});
  });
  return new Promise((resolve) => server.listen(socketPath, () => resolve(server)));
}

// Writes `bytes` one piece at a time, `size` bytes each, a tick apart.
async function dribble(socket, bytes, size) {
  for (let i = 0; i < bytes.length; i += size) {
    socket.write(bytes.subarray(i, i + size));
    await new Promise((resolve) => setImmediate(resolve));
  }
}

const chunkedAnswer = Buffer.from(
  'HTTP/1.1 201 Created\r\nx-a: 1\r\nx-a: 2\r\ntransfer-encoding: chunked\r\n\r\n'
  + '5;ext=1\r\nhello\r\n1\r\n,\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n', 'latin1');
const lengthAnswer = Buffer.from('HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello world', 'latin1');

let agent;
let server;

run([
  ['the chunk decoder gives the same bytes split anywhere', async () => {
    const body = chunkedAnswer.subarray(chunkedAnswer.indexOf('\r\n\r\n') + 4);
    for (let cut = 0; cut <= body.length; cut++) {
      const d = new Dechunker();
      const out = [];
      for (const piece of [body.subarray(0, cut), body.subarray(cut)]) {
        const [parts] = d.feed(piece);
        out.push(...parts);
      }
      assert.equal(Buffer.concat(out).toString(), 'hello, world', `cut at ${cut}`);
      assert.ok(d.done);
    }
    const bytewise = new Dechunker();
    const out = [];
    for (const byte of body) out.push(...bytewise.feed(Buffer.from([byte]))[0]);
    assert.equal(Buffer.concat(out).toString(), 'hello, world');
    assert.throws(() => new Dechunker().feed(Buffer.from('zz\r\n')), /bad chunk size/);
    assert.throws(() => new Dechunker().feed(Buffer.from('1\r\nab\r\n')), /no CRLF/);
  }],

  ['heads that are not HTTP are refused', async () => {
    assert.equal(parseHead(Buffer.from('HTTP/2 200')), null);
    assert.equal(parseHead(Buffer.from('HTTP/1.1 200 OK\r\nno-colon')), null);
    assert.equal(framingOf(parseHead(Buffer.from('HTTP/1.1 200 OK\r\ncontent-length: x'))), null);
    assert.equal(framingOf(parseHead(Buffer.from('HTTP/1.1 200 OK\r\ntransfer-encoding: gzip'))), null);
  }],

  ['start against the fake runtime', async () => {
    server = await serve();
    agent = new NoslatedClient({ watchInterval: 60000 });
    await agent.start();
  }],

  ['answers split at every size, chunked and by length, read whole', async () => {
    for (const answer of [chunkedAnswer, lengthAnswer]) {
      for (const size of [1, 2, 3, 7, 64]) {
        script = (socket) => { dribble(socket, answer, size); };
        const res = await agent.invoke('f', 'x', { url: '/' });
        const body = await text(res);
        assert.equal(body, answer === chunkedAnswer ? 'hello, world' : 'hello world', `size ${size}`);
        if (answer === chunkedAnswer) {
          assert.equal(res.status, 201);
          assert.deepEqual(res.metadata.headers, [['x-a', '1'], ['x-a', '2']]);
        }
      }
    }
  }],

  ['a connection is reused after each answer, also after a stall', async () => {
    script = (socket) => {
      socket.write(lengthAnswer.subarray(0, 20));
      setTimeout(() => socket.write(lengthAnswer.subarray(20)), 200);
    };
    assert.equal(await text(await agent.invoke('f', 'x', { url: '/' })), 'hello world');
    assert.equal(await text(await agent.invoke('f', 'x', { url: '/' })), 'hello world');
  }],

  ['an answer cut after its head errors the stream with Peer connection closed', async () => {
    script = (socket) => { socket.end(chunkedAnswer.subarray(0, chunkedAnswer.length - 12)); };
    const res = await agent.invoke('f', 'x', { url: '/' });
    const err = await rejection(text(res));
    assert.equal(err.message, 'Peer connection closed');
    assert.equal(err.name, 'NoslatedError');
  }],

  ['a connection closed before any answer, or half-closed, rejects', async () => {
    script = (socket) => { socket.destroy(); };
    assert.match((await rejection(agent.invoke('f', 'x', { url: '/' }))).message, /closed the connection|ECONNRESET|EPIPE/);
    script = (socket) => { socket.end(); };
    assert.match((await rejection(agent.invoke('f', 'x', { url: '/' }))).message, /closed the connection/);
    script = (socket) => { socket.end('HTTP/1.1 200 OK\r\ncontent-le'); };
    assert.match((await rejection(agent.invoke('f', 'x', { url: '/' }))).message, /closed the connection/);
  }],

  ['garbage and an over-long head reject and close', async () => {
    script = (socket) => { socket.write('SMTP ready\r\n\r\n'); };
    assert.match((await rejection(agent.invoke('f', 'x', { url: '/' }))).message, /not HTTP\/1.1/);
    script = (socket) => { socket.write(`HTTP/1.1 200 OK\r\nx: ${'a'.repeat(70000)}`); };
    assert.match((await rejection(agent.invoke('f', 'x', { url: '/' }))).message, /over-long response head/);
    script = (socket) => { socket.write(`${lengthAnswer.toString('latin1')}EXTRA`); };
    const res = await agent.invoke('f', 'x', { url: '/' });
    assert.match((await rejection(text(res))).message, /bytes after the response/);
  }],

  ['a piped response gives the same bytes and events, whole or still arriving', async () => {
    const { PassThrough, Writable } = require('stream');
    const collect = () => {
      const dest = new Writable({ write(chunk, _, cb) { this.parts.push(chunk); cb(); } });
      dest.parts = [];
      return dest;
    };
    const events = (res) => {
      const seen = [];
      for (const name of ['end', 'close']) res.on(name, () => seen.push(name));
      return seen;
    };
    // Whole before it is piped (split 'hello' ',' ' world' on the wire): one write, then the end.
    script = (socket) => { socket.write(chunkedAnswer); };
    let res = await agent.invoke('f', 'x', { url: '/' });
    let dest = collect();
    let piped = null;
    dest.on('pipe', (src) => { piped = src; });
    let seen = events(res);
    assert.equal(res.pipe(dest), dest);
    await new Promise((resolve) => dest.on('finish', resolve));
    assert.equal(piped, res);
    assert.equal(Buffer.concat(dest.parts).toString(), 'hello, world');
    assert.equal(dest.parts.length, 1, 'a whole body goes in one write');
    await waitFor('the response closes', () => seen.length === 2);
    assert.deepEqual(seen, ['end', 'close']);
    // Two destinations piped before the end both get the body; one piped after it, none.
    script = (socket) => { socket.write(lengthAnswer); };
    res = await agent.invoke('f', 'x', { url: '/' });
    const [first, second, late] = [collect(), collect(), collect()];
    const finished = [first, second, late].map((d) => new Promise((resolve) => d.on('finish', resolve)));
    res.pipe(first);
    res.pipe(second);
    await new Promise((resolve) => res.on('end', resolve));
    res.pipe(late);
    await Promise.all(finished);
    assert.equal(Buffer.concat(first.parts).toString(), 'hello world');
    assert.equal(Buffer.concat(second.parts).toString(), 'hello world');
    assert.equal(late.parts.length, 0);
    // stream.pipeline (which pipes with { end: false } and ends the destination itself).
    script = (socket) => { socket.write(chunkedAnswer); };
    res = await agent.invoke('f', 'x', { url: '/' });
    const viaPipeline = collect();
    await require('stream/promises').pipeline(res, viaPipeline);
    assert.equal(Buffer.concat(viaPipeline.parts).toString(), 'hello, world');
    assert.ok(viaPipeline.writableFinished);
    // { end: false } leaves the destination open.
    script = (socket) => { socket.write(lengthAnswer); };
    res = await agent.invoke('f', 'x', { url: '/' });
    const open = new PassThrough();
    res.pipe(open, { end: false });
    await new Promise((resolve) => res.on('end', resolve));
    assert.equal(open.read().toString(), 'hello world');
    assert.equal(open.writableEnded, false);
    // Still arriving when piped: every part as it comes, then the end.
    script = (socket) => {
      socket.write(chunkedAnswer.subarray(0, chunkedAnswer.length - 20));
      setTimeout(() => socket.write(chunkedAnswer.subarray(chunkedAnswer.length - 20)), 100);
    };
    res = await agent.invoke('f', 'x', { url: '/' });
    dest = collect();
    seen = events(res);
    res.pipe(dest);
    await new Promise((resolve) => dest.on('finish', resolve));
    assert.equal(Buffer.concat(dest.parts).toString(), 'hello, world');
    await waitFor('the response closes', () => seen.length === 2);
    // Already read by someone else: piped the usual way, and both see every byte.
    script = (socket) => { socket.write(lengthAnswer); };
    res = await agent.invoke('f', 'x', { url: '/' });
    await new Promise((resolve) => setTimeout(resolve, 50));
    const alsoRead = [];
    res.on('data', (chunk) => alsoRead.push(chunk));
    dest = collect();
    res.pipe(dest);
    await new Promise((resolve) => dest.on('finish', resolve));
    assert.equal(Buffer.concat(dest.parts).toString(), 'hello world');
    assert.equal(Buffer.concat(alsoRead).toString(), 'hello world');
  }],

  ['a gateway piping a whole answer states its length; one still arriving is chunked', async () => {
    const http = require('http');
    const gateway = http.createServer(async (req, res) => {
      const response = await agent.invoke('f', req, { url: req.url });
      response.pipe(res);
    });
    await new Promise((resolve) => gateway.listen(0, '127.0.0.1', resolve));
    const get = () => new Promise((resolve, reject) => {
      http.get({ port: gateway.address().port, path: '/', agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk) => { body += chunk; });
        res.on('end', () => resolve({ headers: res.headers, body }));
      }).on('error', reject);
    });
    script = (socket) => { socket.write(chunkedAnswer); };
    let answer = await get();
    assert.equal(answer.body, 'hello, world');
    assert.equal(answer.headers['content-length'], '12');
    assert.equal(answer.headers['transfer-encoding'], undefined);
    script = (socket) => {
      socket.write(chunkedAnswer.subarray(0, chunkedAnswer.length - 20));
      setTimeout(() => socket.write(chunkedAnswer.subarray(chunkedAnswer.length - 20)), 100);
    };
    answer = await get();
    assert.equal(answer.body, 'hello, world');
    assert.equal(answer.headers['transfer-encoding'], 'chunked');
    gateway.close();
  }],

  ['a gateway passes on request bodies of a stated length whole, late or cut', async () => {
    const http = require('http');
    const failures = [];
    let decode = false;
    const gateway = http.createServer(async (req, res) => {
      if (decode) req.setEncoding('utf8');
      try {
        const response = await agent.invoke('f', req, { url: req.url, headers: { 'x-h': req.headers['x-h'] } });
        response.pipe(res);
      } catch (err) {
        failures.push(err);
        res.destroy();
      }
    });
    await new Promise((resolve) => gateway.listen(0, '127.0.0.1', resolve));
    script = (socket) => { socket.write(lengthAnswer); };
    // Sends a raw request to the gateway in `pieces`, `gap` ms apart; resolves to its answer.
    const send = (pieces, gap, { end = false } = {}) => new Promise((resolve) => {
      const client = net.connect(gateway.address().port, '127.0.0.1');
      let answer = '';
      client.on('data', (chunk) => { answer += chunk.toString('latin1'); });
      client.on('close', () => resolve(answer));
      client.on('error', () => {});
      pieces.forEach((piece, i) => setTimeout(() => {
        client.write(Buffer.from(piece, 'latin1'));
        if (i === pieces.length - 1) {
          if (end) client.destroy();
          else setTimeout(() => client.end(), 200);
        }
      }, i * gap));
    });
    const head = (length) => `POST /p HTTP/1.1\r\nHost: x\r\nx-h: \u00e9\r\nContent-Length: ${length}\r\nConnection: close\r\n\r\n`;
    const body = (invocation) => invocation.bytes.slice(invocation.bytes.indexOf('\r\n\r\n') + 4);
    // Head and body in one packet: they go on to the runtime in one write.
    invocations.length = 0;
    let answer = await send([`${head(5)}hello`], 0);
    assert.match(answer, /hello world$/);
    assert.equal(invocations.length, 1);
    assert.equal(body(invocations[0]), 'hello');
    assert.equal(invocations[0].reads, 1);
    assert.match(invocations[0].bytes, /\r\nContent-Length: 5\r\n/);
    // A header past ASCII travels escaped, and the runtime reads it back as the same char.
    assert.match(invocations[0].bytes, /x-noslate-headers: \[\["x-h","\\u00e9"\]\]\r\n/);
    // An empty body.
    answer = await send([head(0)], 0);
    assert.match(answer, /hello world$/);
    assert.equal(body(invocations[1]), '');
    // The body comes after the head, in pieces, with stalls between them.
    answer = await send([head(11), 'hel', 'lo w', 'orld'], 60);
    assert.match(answer, /hello world$/);
    assert.equal(body(invocations[2]), 'hello world');
    // A gateway that reads its requests as text: the bytes still go as they came.
    decode = true;
    answer = await send([`${head(5)}h\u00c3\u00a9!!`], 0);
    decode = false;
    assert.match(answer, /hello world$/);
    assert.equal(body(invocations[3]), 'h\u00c3\u00a9!!');
    // The client goes away in the middle of the body: that invocation is cancelled, and the
    // gateway serves the next one.
    script = () => {};
    await send([head(10), 'abcd'], 60, { end: true });
    await waitFor('the cut body cancels its invocation', () => failures.length === 1);
    assert.match(failures[0].message, /CANCELLED/);
    script = (socket) => { socket.write(lengthAnswer); };
    answer = await send([`${head(2)}ok`], 0);
    assert.match(answer, /hello world$/);
    assert.equal(body(invocations[invocations.length - 1]), 'ok');
    gateway.close();
  }],

  ['a stalled head is given up at the deadline plus a second', async () => {
    script = () => {};
    const t0 = Date.now();
    const err = await rejection(agent.invoke('f', 'x', { url: '/', timeout: 100 }));
    assert.match(err.message, /DEADLINE_EXCEEDED/);
    assert.ok(Date.now() - t0 < 5000);
  }],

  ['started again after close(), the client keeps its connections alive again', async () => {
    script = (socket) => { socket.write(lengthAnswer); };
    await agent.close();
    await agent.start();
    invocationConnections = 0;
    for (let i = 0; i < 3; i++) assert.equal(await text(await agent.invoke('f', 'x', { url: '/' })), 'hello world');
    assert.equal(invocationConnections, 1);
  }],

  ['past maxConnections, invocations wait for a connection; given up there, they leave', async () => {
    const small = new NoslatedClient({ watchInterval: 60000, maxConnections: 2 });
    await small.start();
    let open = 0;
    let most = 0;
    const sockets = new Set();
    const counting = (socket) => {
      if (!sockets.has(socket)) {
        sockets.add(socket);
        open += 1;
        most = Math.max(most, open);
        socket.on('close', () => { open -= 1; });
      }
    };
    script = (socket) => {
      counting(socket);
      setTimeout(() => socket.write(lengthAnswer), 30);
    };
    const answers = await Promise.all(Array.from({ length: 6 }, () => small.invoke('f', 'x', { url: '/' }).then(text)));
    assert.deepEqual(answers, Array(6).fill('hello world'));
    assert.equal(most, 2);
    // Two hold the connections; a third waits, and its deadline passes while it does.
    script = (socket) => { counting(socket); setTimeout(() => socket.write(lengthAnswer), 1500); };
    const held = [small.invoke('f', 'x', { url: '/' }), small.invoke('f', 'x', { url: '/' })];
    const late = await rejection(small.invoke('f', 'x', { url: '/', timeout: 0 }));
    assert.match(late.message, /DEADLINE_EXCEEDED/);
    // close() fails one still waiting; those under way finish.
    const waiting = small.invoke('f', 'x', { url: '/' });
    await small.close();
    assert.match((await rejection(waiting)).message, /closed/);
    for (const answer of await Promise.all(held)) assert.equal(await text(answer), 'hello world');
  }],

  ['a burst of connections past the listener backlog is tried again, not failed', async () => {
    const crowdedPath = path.join(process.env.NOSLATE_WORKDIR, 'crowded.sock');
    const crowded = net.createServer((socket) => {
      socket.on('data', (chunk) => socket.write(chunk.toString('latin1').startsWith('GET /v1/health') ? HEALTH : lengthAnswer));
      socket.on('error', () => {});
    });
    await new Promise((resolve) => crowded.listen({ path: crowdedPath, backlog: 1 }, resolve));
    const client = new NoslatedClient({ socketPath: crowdedPath, watchInterval: 60000 });
    await client.start();
    const answers = await Promise.all(Array.from({ length: 40 }, () => client.invoke('f', 'x', { url: '/' }).then(text)));
    assert.deepEqual(answers, Array(40).fill('hello world'));
    await client.close();
    crowded.close();
  }],

  ['a large answer nobody reads is held back at the socket, then arrives whole', async () => {
    // 32 MiB of pseudo-random bytes by length, written as fast as the socket takes them: the
    // SDK reads into larger buffers of its own once a read fills one, and stops reading while its
    // response stream is full, so the runtime's writes wait instead of piling up in the SDK.
    const size = 32 << 20;
    // A prime length, so that no read lines up with a repeat of the pattern.
    const piece = Buffer.alloc(65521);
    for (let i = 0; i < piece.length; i++) piece[i] = (i * 7919 + (i >> 8)) & 0xff;
    let written = 0;
    script = (socket) => {
      socket.write(`HTTP/1.1 200 OK\r\ncontent-length: ${size}\r\n\r\n`);
      const more = () => {
        while (written < size) {
          const n = Math.min(piece.length, size - written);
          written += n;
          if (!socket.write(piece.subarray(0, n))) {
            socket.once('drain', more);
            return;
          }
        }
      };
      more();
    };
    const res = await agent.invoke('f', 'x', { url: '/' });
    await new Promise((resolve) => setTimeout(resolve, 300));
    const unread = written;
    assert.ok(unread < 8 << 20, `the runtime wrote ${unread} bytes into an unread response`);
    // Every chunk is kept until the end, as a caller that collects a body does: a chunk must
    // not share memory with a later read.
    const chunks = [];
    for await (const chunk of res) chunks.push(chunk);
    const body = Buffer.concat(chunks);
    assert.equal(body.length, size);
    for (let at = 0; at < size; at += piece.length) {
      const n = Math.min(piece.length, size - at);
      assert.ok(body.subarray(at, at + n).equals(piece.subarray(0, n)), `the bytes at ${at} arrived as written`);
    }
  }],

  ['the chunks of an answer that comes in bursts and trickles pin at most twice its size', async () => {
    // Each burst grows the SDK's reads to buffers of 1 MiB, handed on without a copy; the
    // trickle after it comes back in reads that fill little of such a buffer, which must be
    // copied out rather than pin a MiB each for as long as the caller keeps its chunks.
    const burst = Buffer.alloc(2 << 20);
    for (let i = 0; i < burst.length; i++) burst[i] = (i * 31 + (i >> 10)) & 0xff;
    const drop = Buffer.alloc(2048, 0x5a);
    const rounds = 4;
    const drops = 50;
    const size = rounds * (burst.length + drops * drop.length);
    script = async (socket) => {
      socket.write(`HTTP/1.1 200 OK\r\ncontent-length: ${size}\r\n\r\n`);
      for (let r = 0; r < rounds; r++) {
        if (!socket.write(burst)) await new Promise((resolve) => socket.once('drain', resolve));
        for (let d = 0; d < drops; d++) {
          socket.write(drop);
          await new Promise((resolve) => setTimeout(resolve, 1));
        }
      }
    };
    const res = await agent.invoke('f', 'x', { url: '/' });
    const chunks = [];
    for await (const chunk of res) chunks.push(chunk);
    let held = 0;
    for (const buffer of new Set(chunks.map((chunk) => chunk.buffer))) held += buffer.byteLength;
    assert.ok(held <= 2 * size + (1 << 20), `the chunks of a ${size}-byte answer pin ${held} bytes`);
    const body = Buffer.concat(chunks);
    assert.equal(body.length, size);
    const round = Buffer.concat([burst, ...Array(drops).fill(drop)]);
    for (let r = 0; r < rounds; r++) {
      assert.ok(body.subarray(r * round.length, (r + 1) * round.length).equals(round), `round ${r} arrived as written`);
    }
  }],

  ['a runtime slow to answer its health checks is not taken for gone', async () => {
    const warnings = [];
    const watching = new NoslatedClient({
      watchInterval: 50,
      logger: { info() {}, warn: (line) => warnings.push(line), error: (line) => warnings.push(line) },
    });
    await watching.start();
    script = (socket) => { socket.write(lengthAnswer); };
    // Past the client's 1 s health timeout: the first check after this goes unanswered in time.
    healthDelay = 1300;
    const checksBefore = healthChecks;
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.ok(healthChecks > checksBefore, 'a slow health check was made');
    assert.equal(await text(await watching.invoke('f', 'x', { url: '/' })), 'hello world');
    assert.deepEqual(warnings, []);
    healthDelay = 0;
    await watching.close();
  }],

  ['close', async () => {
    await agent.close();
    server.close();
  }],
]);
