'use strict';
// Invocations on their own small HTTP/1.1 client over the admin socket: a pool of kept-alive
// Unix-socket connections, one exchange at a time on each. Node's `http` client costs more per
// request than the whole runtime hop (its request and response objects, agent bookkeeping and
// event chains), and invocations are the hot path of every gateway. What is sent is fixed by
// the SDK; what is read is parsed strictly, and anything unexpected fails that exchange and
// closes its connection.

const net = require('net');
const { Readable } = require('stream');
const { peerConnectionClosed } = require('./errors');

// The largest response head accepted from the runtime.
const MAX_HEAD_BYTES = 64 * 1024;
const CRLF_CRLF = Buffer.from('\r\n\r\n');
const LAST_CHUNK = Buffer.from('0\r\n\r\n');
const CRLF = Buffer.from('\r\n');

// Parses a response head (without its final CRLF CRLF); null when it is not one.
function parseHead(bytes) {
  const lines = bytes.toString('latin1').split('\r\n');
  const status = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
  if (!status) return null;
  const rawHeaders = [];
  const headers = Object.create(null);
  for (let i = 1; i < lines.length; i++) {
    const colon = lines[i].indexOf(':');
    if (colon <= 0) return null;
    const name = lines[i].slice(0, colon);
    const value = lines[i].slice(colon + 1).trim();
    rawHeaders.push(name, value);
    const lower = name.toLowerCase();
    headers[lower] = lower in headers ? `${headers[lower]}, ${value}` : value;
  }
  return { status: Number(status[1]), rawHeaders, headers };
}

// The body framing of a response: { length } or { chunked } or { untilClose }.
function framingOf(head) {
  const te = head.headers['transfer-encoding'];
  if (te !== undefined) {
    return /(^|,)\s*chunked\s*$/i.test(te) ? { chunked: true } : null;
  }
  const cl = head.headers['content-length'];
  if (cl !== undefined) {
    if (!/^\d+$/.test(cl)) return null;
    return { length: Number(cl) };
  }
  if (head.status === 204 || head.status === 304 || (head.status >= 100 && head.status < 200)) return { length: 0 };
  return { untilClose: true };
}

// An incremental decoder of the chunked coding: feed() returns the data bytes it completed,
// and sets `done` after the last chunk and its (empty or skipped) trailers.
class Dechunker {
  constructor() {
    this.state = 'size';
    this.line = '';
    this.left = 0;
    this.done = false;
  }

  // Returns [dataBuffers, usedBytes]; bytes after the end are not used.
  feed(buf) {
    const out = [];
    let i = 0;
    while (i < buf.length && !this.done) {
      if (this.state === 'data') {
        const n = Math.min(this.left, buf.length - i);
        out.push(buf.subarray(i, i + n));
        i += n;
        this.left -= n;
        if (this.left === 0) this.state = 'data-crlf';
        continue;
      }
      const nl = buf.indexOf(10, i);
      if (nl < 0) {
        this.line += buf.toString('latin1', i);
        if (this.line.length > 4096) throw new Error('a chunk line longer than 4096 bytes');
        i = buf.length;
        break;
      }
      const line = (this.line + buf.toString('latin1', i, nl)).replace(/\r$/, '');
      this.line = '';
      i = nl + 1;
      if (this.state === 'size') {
        const size = /^([0-9a-fA-F]{1,12})(;.*)?$/.exec(line.trim());
        if (!size) throw new Error(`a bad chunk size line ${JSON.stringify(line.slice(0, 40))}`);
        this.left = parseInt(size[1], 16);
        this.state = this.left === 0 ? 'trailer' : 'data';
      } else if (this.state === 'data-crlf') {
        if (line !== '') throw new Error('no CRLF after a chunk');
        this.state = 'size';
      } else if (line === '') {
        this.done = true;
      }
    }
    return [out, i];
  }
}

class Pool {
  constructor(socketPath) {
    this.socketPath = socketPath;
    this.idle = [];
    this.closed = false;
  }

  close() {
    this.closed = true;
    for (const socket of this.idle.splice(0)) socket.destroy();
  }

  release(socket) {
    if (this.closed || socket.destroyed) {
      socket.destroy();
      return;
    }
    for (const event of ['data', 'end', 'error', 'close', 'drain']) socket.removeAllListeners(event);
    // An idle connection the runtime closes (a restart) leaves the pool at once.
    const drop = () => {
      const at = this.idle.indexOf(socket);
      if (at >= 0) this.idle.splice(at, 1);
      socket.destroy();
    };
    socket.on('error', drop);
    socket.on('end', drop);
    socket.on('close', drop);
    socket.on('data', drop);
    // Paused by back-pressure on the last response, it would not even see its own close.
    socket.resume();
    this.idle.push(socket);
  }

  // An idle connection (reused: true) or a new one.
  acquire() {
    const socket = this.idle.pop();
    if (socket) {
      for (const event of ['data', 'end', 'error', 'close']) socket.removeAllListeners(event);
      return { socket, reused: true };
    }
    return { socket: net.connect(this.socketPath), reused: false };
  }

  // One exchange. `head` is the request head's text (ending with CRLF CRLF); `body` a Buffer
  // sent with it, or a Readable sent after it: as is when `bodyLength` is its known length (the
  // head says so), else chunked. Calls `onHead(err, response, {reused, received})` once; the
  // response is a Readable with `statusCode`, `headers` and `rawHeaders`.
  exchange(head, body, bodyLength, onHead) {
    const { socket, reused } = this.acquire();
    let headDone = false;
    let requestDone = false;
    let responseDone = false;
    let pending = Buffer.alloc(0);
    let framing = null;
    let dechunker = null;
    let left = 0;
    let response = null;
    let received = false;

    const finishHead = (err, res) => {
      if (headDone) return;
      headDone = true;
      onHead(err, res, { reused, received });
    };
    const fail = (err) => {
      if (!headDone) finishHead(err);
      else if (response && !responseDone) response.destroy(err);
      socket.destroy();
    };
    const maybeRelease = () => {
      if (requestDone && responseDone) this.release(socket);
    };
    const endResponse = () => {
      responseDone = true;
      response.push(null);
      maybeRelease();
    };
    const onBody = (buf) => {
      if (buf.length === 0) return;
      if (framing.untilClose) {
        if (!response.push(buf)) socket.pause();
        return;
      }
      if (framing.length !== undefined) {
        const n = Math.min(left, buf.length);
        left -= n;
        if (n > 0 && !response.push(buf.subarray(0, n))) socket.pause();
        if (left === 0) {
          if (n < buf.length) { fail(new Error('bytes after the response')); return; }
          endResponse();
        }
        return;
      }
      let parts;
      let used;
      try {
        [parts, used] = dechunker.feed(buf);
      } catch (err) {
        fail(err);
        return;
      }
      let more = true;
      for (const part of parts) more = response.push(part) && more;
      if (!more) socket.pause();
      if (dechunker.done) {
        if (used < buf.length) { fail(new Error('bytes after the response')); return; }
        endResponse();
      }
    };
    socket.on('data', (chunk) => {
      received = true;
      if (response === null) {
        pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
        const end = pending.indexOf(CRLF_CRLF);
        if (end < 0) {
          if (pending.length > MAX_HEAD_BYTES) fail(new Error('the runtime sent an over-long response head'));
          return;
        }
        const parsed = parseHead(pending.subarray(0, end));
        framing = parsed && framingOf(parsed);
        if (!framing) { fail(new Error('the runtime sent a response that is not HTTP/1.1')); return; }
        if (framing.chunked) dechunker = new Dechunker();
        left = framing.length || 0;
        response = new Readable({ read: () => socket.resume() });
        response.statusCode = parsed.status;
        response.headers = parsed.headers;
        response.rawHeaders = parsed.rawHeaders;
        // A cut or broken answer destroys the stream with an error. It may come before the
        // caller has attached any listener (the head is handed over a tick later), and an
        // 'error' nobody listens to would end the whole gateway process: the caller still sees
        // it through `for await`, `pipeline()` or an 'error' listener of its own.
        response.on('error', () => {});
        response._destroy = (err, cb) => {
          if (!responseDone) socket.destroy();
          cb(err);
        };
        const rest = pending.subarray(end + 4);
        pending = null;
        finishHead(null, response);
        if (framing.length === 0) endResponse();
        else onBody(rest);
        return;
      }
      onBody(chunk);
    });
    socket.on('error', (err) => fail(err));
    socket.on('close', () => {
      if (!responseDone) {
        if (response && framing && framing.untilClose) { endResponse(); return; }
        // Before the head: the runtime went away. After it: the stream was cut (the worker
        // died or broke it), which Noslate calls a closed peer connection.
        fail(response ? peerConnectionClosed()
          : Object.assign(new Error('the runtime closed the connection'), { code: 'ECONNRESET' }));
      }
    });

    if (Buffer.isBuffer(body)) {
      socket.write(body.length ? Buffer.concat([Buffer.from(head, 'latin1'), body]) : head);
      requestDone = true;
      return { socket, cancel: (err) => fail(err) };
    }
    socket.write(head);
    let sent = 0;
    const onData = (chunk) => {
      if (!chunk.length) return;
      let ok;
      if (bodyLength === undefined) {
        ok = socket.write(Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, CRLF]));
      } else {
        sent += chunk.length;
        if (sent > bodyLength) {
          fail(new Error(`the request body is longer than its stated ${bodyLength} bytes`));
          return;
        }
        ok = socket.write(chunk);
      }
      if (!ok) body.pause();
    };
    socket.on('drain', () => body.resume());
    body.on('data', onData);
    body.once('end', () => {
      if (bodyLength === undefined) {
        socket.write(LAST_CHUNK);
      } else if (sent < bodyLength) {
        fail(new Error(`the request body ended after ${sent} of its stated ${bodyLength} bytes`));
        return;
      }
      requestDone = true;
      maybeRelease();
    });
    return { socket, cancel: (err) => fail(err) };
  }
}

module.exports = { Pool, parseHead, framingOf, Dechunker };
