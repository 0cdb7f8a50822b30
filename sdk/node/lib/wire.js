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
const ignore = () => {};

// Reads land in one buffer that every connection shares: each read is handled before the next
// one happens, so a read costs no allocation and no trip through the socket's own stream, and
// what an exchange keeps of it (a body chunk, an unfinished head) is copied out. A read that
// fills its buffer is a large body under way: that connection's next read takes a buffer of its
// own twice as large, up to 1 MiB, handed on without a copy; one that comes back less than half
// full is copied out at its size and halves the next, down to the shared buffer again. A large
// response is then read in a few large pieces, and a caller that keeps its chunks holds at most
// twice their size.
const READ_BYTES = 64 * 1024;
const BULK_READ_BYTES = 1024 * 1024;
const SHARED_READ_BUFFER = Buffer.allocUnsafe(READ_BYTES);
const kept = (chunk) => (chunk.buffer === SHARED_READ_BUFFER.buffer ? Buffer.from(chunk) : chunk);

// Header fields of the transfer itself, which are not the function's.
const TRANSFER_HEADERS = new Set(['connection', 'keep-alive', 'transfer-encoding', 'date']);

// Parses a response head (without its final CRLF CRLF) into what this client uses: the status,
// the function's header pairs in order (without the transfer's own fields), the framing fields
// and the runtime's error type. null when it is not an HTTP/1.x response head. Repeated framing
// fields are joined, so that two lengths make a length that does not parse.
function parseHead(bytes) {
  const text = bytes.toString('latin1');
  let end = text.indexOf('\r\n');
  if (end < 0) end = text.length;
  if (end < 12 || !text.startsWith('HTTP/1.') || (text[7] !== '1' && text[7] !== '0') || text[8] !== ' '
    || (end > 12 && text[12] !== ' ')) {
    return null;
  }
  let status = 0;
  for (let i = 9; i < 12; i++) {
    const digit = text.charCodeAt(i) - 48;
    if (digit < 0 || digit > 9) return null;
    status = status * 10 + digit;
  }
  const head = { status, pairs: [], contentLength: undefined, transferEncoding: undefined, errorType: undefined };
  while (end < text.length) {
    const at = end + 2;
    end = text.indexOf('\r\n', at);
    if (end < 0) end = text.length;
    const colon = text.indexOf(':', at);
    if (colon <= at || colon >= end) return null;
    const name = text.slice(at, colon);
    const value = text.slice(colon + 1, end).trim();
    const lower = name.toLowerCase();
    if (lower === 'content-length') head.contentLength = join(head.contentLength, value);
    else if (lower === 'transfer-encoding') head.transferEncoding = join(head.transferEncoding, value);
    else if (lower === 'x-noslate-error') head.errorType = join(head.errorType, value);
    if (!TRANSFER_HEADERS.has(lower)) head.pairs.push([name, value]);
  }
  return head;
}

const join = (prev, value) => (prev === undefined ? value : `${prev}, ${value}`);

// The body framing of a response: { length } or { chunked } or { untilClose }.
function framingOf(head) {
  const te = head.transferEncoding;
  if (te !== undefined) {
    return /(^|,)\s*chunked\s*$/i.test(te) ? CHUNKED : null;
  }
  const cl = head.contentLength;
  if (cl !== undefined) {
    if (!/^\d+$/.test(cl)) return null;
    return { length: Number(cl) };
  }
  if (head.status === 204 || head.status === 304 || (head.status >= 100 && head.status < 200)) return { length: 0 };
  return UNTIL_CLOSE;
}

const CHUNKED = Object.freeze({ chunked: true });
const UNTIL_CLOSE = Object.freeze({ untilClose: true });

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

// A response stream. Piping one whose whole body has already arrived (a small answer comes in
// the same read as its head) ends the destination with that body in one call. Readable's own
// pipe (its listeners on both streams, the flowing loop, a write, then an end a tick later)
// costs a gateway more than the rest of the invocation, and an HTTP response ended with its
// whole body states a Content-Length instead of being chunked. A stream someone else already
// reads, or one still receiving, is piped the usual way. As with Readable's pipe, every
// destination piped before the stream's 'end' gets the body, and one piped after gets none.
class Response extends Readable {
  constructor(exchange, head) {
    super();
    this.exchange = exchange;
    this.status = head.status;
    this.metadata = { headers: head.pairs };
    this.whole = false;
    // The body a first pipe took (null: empty), for other destinations piped before 'end'.
    this.pipedBody = undefined;
  }

  _read() {
    // Once done, the connection may carry another exchange: reading on must not resume it.
    if (!this.exchange.responseDone) this.exchange.socket.resume();
  }

  _destroy(err, cb) {
    if (!this.exchange.responseDone) this.exchange.socket.destroy();
    cb(err);
  }

  pipe(dest, options) {
    if (this.pipedBody === undefined) {
      if (!this.whole || this.destroyed || this.readableFlowing !== null
        || this.listenerCount('data') > 0 || this.listenerCount('readable') > 0) {
        return super.pipe(dest, options);
      }
      // All of it, as the stream has ended; then 'end' and 'close' follow as they would.
      this.pipedBody = this.read();
    } else if (this.readableEnded) {
      return super.pipe(dest, options);
    }
    const body = this.pipedBody;
    dest.emit('pipe', this);
    if (options && options.end === false) {
      if (body !== null) dest.write(body);
    } else {
      dest.end(body === null ? undefined : body);
    }
    return dest;
  }
}

// One kept-alive connection to the runtime. Its listeners are attached once, for its whole
// life: they hand what the socket does to the exchange it carries, and drop it while it idles
// (the runtime closing an idle connection is a restart, or its idle timeout). Until it is
// connected it carries nothing: an exchange waits in `connecting`, so that a connection the
// runtime's listener could not take yet can be tried again without losing a byte.
class Connection {
  constructor(pool, exchange, attempt) {
    this.pool = pool;
    // The size of its next read: above READ_BYTES, into a buffer of its own (see
    // SHARED_READ_BUFFER).
    this.readBytes = READ_BYTES;
    this.socket = net.connect({
      path: pool.socketPath,
      onread: { buffer: () => this.nextReadBuffer(), callback: (n, buf) => this.onRead(n, buf) },
    });
    this.exchange = null;
    this.connecting = exchange;
    // How many times its exchange was turned away before (see Pool#connectFailed).
    this.attempt = attempt;
    const socket = this.socket;
    socket.once('connect', () => {
      const waiting = this.connecting;
      this.connecting = null;
      pool.begin(this, waiting, false);
    });
    socket.on('error', (err) => {
      if (this.connecting) pool.connectFailed(this, err);
      else if (this.exchange) this.exchange.fail(err);
      else pool.drop(this);
    });
    socket.on('end', () => {
      if (!this.exchange) pool.drop(this);
    });
    socket.on('close', () => {
      if (this.exchange) this.exchange.onClose();
      else pool.drop(this);
      pool.onConnectionClosed(this);
    });
    socket.on('drain', () => {
      if (this.exchange && this.exchange.body && !this.exchange.requestDone) this.exchange.body.resume();
    });
  }

  nextReadBuffer() {
    return this.readBytes > READ_BYTES ? Buffer.allocUnsafe(this.readBytes) : SHARED_READ_BUFFER;
  }

  // `n` bytes were read into `buf`: they belong to the exchange under way. An idle connection
  // that reads anything leaves the pool.
  onRead(n, buf) {
    let chunk = buf.subarray(0, n);
    if (n === buf.length) {
      this.readBytes = Math.min(buf.length * 2, BULK_READ_BYTES);
    } else if (n * 2 < buf.length) {
      this.readBytes = Math.max(buf.length / 2, READ_BYTES);
      if (buf !== SHARED_READ_BUFFER) chunk = Buffer.from(chunk);
    }
    if (this.exchange) this.exchange.onData(chunk);
    else this.pool.drop(this);
  }
}

// One request and its response on a connection. `onHead(err, response, exchange)` is called
// once; the response is a Readable with `status` and `metadata.headers`. The exchange tells
// whether its connection was `reused`, whether anything was `received` on it, and the runtime's
// `errorType` of an answer that is an error. Until the pool gives it a connection (`begin`), it
// waits, and nothing of it is sent.
class Exchange {
  constructor(pool, head, body, bodyLength, onHead) {
    this.pool = pool;
    this.connection = null;
    this.socket = null;
    this.head = head;
    this.reused = false;
    this.mayRetry = true;
    // When a connection for it was first turned away (0: never).
    this.firstRefused = 0;
    this.errorType = undefined;
    this.onHead = onHead;
    this.body = body;
    this.bodyLength = bodyLength;
    this.sent = 0;
    this.headDone = false;
    this.requestDone = false;
    this.responseDone = false;
    this.failed = false;
    this.received = false;
    this.pending = null;
    this.framing = null;
    this.dechunker = null;
    this.left = 0;
    this.response = null;
  }

  finishHead(err, res) {
    if (this.headDone) return;
    this.headDone = true;
    this.onHead(err, res, this);
  }

  // Sends the request on `connection`, which it now owns.
  begin(connection, reused) {
    this.connection = connection;
    this.socket = connection.socket;
    this.reused = reused;
    const { head, body } = this;
    this.head = null;
    if (Buffer.isBuffer(body)) {
      writeWithHead(this.socket, head, body.length === 0 ? null : body);
      this.requestDone = true;
    } else {
      this.stream(head, body, this.bodyLength);
    }
  }

  fail(err) {
    if (this.failed) return;
    this.failed = true;
    if (!this.headDone) this.finishHead(err);
    else if (this.response && !this.responseDone) this.response.destroy(err);
    if (this.socket) this.socket.destroy();
    else this.pool.forget(this);
  }

  maybeRelease() {
    if (this.requestDone && this.responseDone && !this.failed) this.pool.release(this.connection);
  }

  endResponse() {
    this.responseDone = true;
    this.response.whole = true;
    this.response.push(null);
    this.maybeRelease();
  }

  onClose() {
    if (this.responseDone) return;
    if (this.response && this.framing.untilClose) {
      this.endResponse();
      return;
    }
    // Before the head: the runtime went away. After it: the stream was cut (the worker died or
    // broke it), which Noslate calls a closed peer connection.
    this.fail(this.response ? peerConnectionClosed()
      : Object.assign(new Error('the runtime closed the connection'), { code: 'ECONNRESET' }));
  }

  onData(chunk) {
    this.received = true;
    if (this.response === null) this.onHeadBytes(chunk);
    else this.onBody(chunk);
  }

  onHeadBytes(chunk) {
    const pending = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
    const end = pending.indexOf(CRLF_CRLF);
    if (end < 0) {
      if (pending.length > MAX_HEAD_BYTES) this.fail(new Error('the runtime sent an over-long response head'));
      else this.pending = kept(pending);
      return;
    }
    this.pending = null;
    const parsed = parseHead(pending.subarray(0, end));
    const framing = parsed && framingOf(parsed);
    if (!framing) {
      this.fail(new Error('the runtime sent a response that is not HTTP/1.1'));
      return;
    }
    this.framing = framing;
    if (framing.chunked) this.dechunker = new Dechunker();
    this.left = framing.length || 0;
    this.errorType = parsed.errorType;
    const response = new Response(this, parsed);
    // A cut or broken answer destroys the stream with an error. It may come before the caller
    // has attached any listener (the head is handed over a tick later), and an 'error' nobody
    // listens to would end the whole gateway process: the caller still sees it through
    // `for await`, `pipeline()` or an 'error' listener of its own.
    response.on('error', ignore);
    this.response = response;
    this.finishHead(null, response);
    if (framing.length === 0) this.endResponse();
    else this.onBody(pending.subarray(end + 4));
  }

  onBody(buf) {
    if (buf.length === 0) return;
    const { framing, response } = this;
    if (framing.untilClose) {
      if (!response.push(kept(buf))) this.socket.pause();
      return;
    }
    if (framing.length !== undefined) {
      const n = Math.min(this.left, buf.length);
      this.left -= n;
      if (n > 0 && !response.push(kept(n === buf.length ? buf : buf.subarray(0, n)))) this.socket.pause();
      if (this.left === 0) {
        if (n < buf.length) this.fail(new Error('bytes after the response'));
        else this.endResponse();
      }
      return;
    }
    let parts;
    let used;
    try {
      [parts, used] = this.dechunker.feed(buf);
    } catch (err) {
      this.fail(err);
      return;
    }
    let more = true;
    for (const part of parts) more = response.push(kept(part)) && more;
    if (!more) this.socket.pause();
    if (this.dechunker.done) {
      if (used < buf.length) this.fail(new Error('bytes after the response'));
      else this.endResponse();
    }
  }

  // Sends a Readable body after the head: as is when `bodyLength` is its known length (the
  // head says so), else chunked.
  stream(head, body, bodyLength) {
    // An incoming HTTP request (what a gateway passes on) of a stated length: its parser, which
    // called the gateway at the request's head, pushes the body that came in the same read
    // before the next tick. A body whose stated length is all there is taken whole, and goes
    // with the head in one write, without the stream's flowing machinery.
    if (typeof body.complete === 'boolean' && bodyLength !== undefined && body.readableFlowing === null) {
      if (!this.sendWhole(head, body)) process.nextTick(() => this.sendWhole(head, body) || this.sendChunks(head, body));
      return;
    }
    this.sendChunks(head, body);
  }

  // Sends a request whose body has all arrived, unread, with its head; false if it has not.
  sendWhole(head, body) {
    if (this.failed) return true;
    // Decoded text or objects are not bytes of the stated length: those go the usual way.
    if (body.readableFlowing !== null || body.readableLength !== this.bodyLength
      || body.readableEncoding !== null || body.readableObjectMode
      || body.listenerCount('data') > 0 || body.listenerCount('readable') > 0) {
      return false;
    }
    writeWithHead(this.socket, head, this.bodyLength === 0 ? null : body.read());
    // Its parser has yet to say that the message is complete: flowing, the stream then ends as
    // usual ('end', 'close'), for whoever else listens.
    if (!body.complete) body.resume();
    this.sent = this.bodyLength;
    this.requestDone = true;
    this.maybeRelease();
    return true;
  }

  // Sends the head, then the body as it comes.
  sendChunks(head, body) {
    const bodyLength = this.bodyLength;
    const socket = this.socket;
    // The head waits for the body bytes this tick brings, so that a small body goes in the
    // same write as its head: one syscall, and one read on the runtime's side.
    socket.cork();
    socket.write(head, 'latin1');
    body.on('data', (chunk) => this.onRequestData(chunk));
    // Queued after the body's own resume (a tick away), so it runs once those bytes are in.
    process.nextTick(() => socket.uncork());
    body.once('end', () => {
      if (this.failed) return;
      if (bodyLength === undefined) {
        socket.write(LAST_CHUNK);
      } else if (this.sent < bodyLength) {
        this.fail(new Error(`the request body ended after ${this.sent} of its stated ${bodyLength} bytes`));
        return;
      }
      this.requestDone = true;
      this.maybeRelease();
    });
  }

  onRequestData(data) {
    if (this.failed) return;
    const chunk = bytesOf(data, this.body.readableEncoding);
    if (chunk === null) {
      this.fail(new TypeError(`the request body gave a chunk of type ${typeof data}, not bytes or a string`));
      return;
    }
    if (chunk.length === 0) return;
    let ok;
    if (this.bodyLength === undefined) {
      ok = this.socket.write(Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, CRLF]));
    } else {
      this.sent += chunk.length;
      if (this.sent > this.bodyLength) {
        this.fail(new Error(`the request body is longer than its stated ${this.bodyLength} bytes`));
        return;
      }
      ok = this.socket.write(chunk);
    }
    if (!ok) this.body.pause();
  }
}

// A request body's chunk as bytes: a Readable of strings (`Readable.from(['...'])`, or one with
// an encoding set) gives text, sent in that encoding (UTF-8 for object mode). null: not bytes.
function bytesOf(chunk, encoding) {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (typeof chunk === 'string') return Buffer.from(chunk, encoding || 'utf8');
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  return null;
}

// The largest body copied behind its head into one buffer; a larger one goes in the same
// writev as its head, without the copy.
const COPY_WITH_HEAD_BYTES = 64 * 1024;

// Writes a request head and its whole body (null: none) in one syscall.
function writeWithHead(socket, head, body) {
  if (body === null) {
    socket.write(head, 'latin1');
  } else if (body.length <= COPY_WITH_HEAD_BYTES) {
    const buf = Buffer.allocUnsafe(head.length + body.length);
    buf.write(head, 0, 'latin1');
    body.copy(buf, head.length);
    socket.write(buf);
  } else {
    socket.cork();
    socket.write(head, 'latin1');
    socket.write(body);
    socket.uncork();
  }
}

// For how long, and how soon, a connection the runtime's listener turned away for want of
// room in its backlog (EAGAIN: a burst of new connections) is tried again. The waits grow and
// are spread at random, so that a burst does not come back as one.
const CONNECT_RETRY_BUDGET_MS = 3000;
const CONNECT_RETRY_FIRST_MS = 2;
const CONNECT_RETRY_MAX_MS = 100;

class Pool {
  // `maxConnections` bounds the connections open at once; an exchange past it waits for one.
  constructor(socketPath, maxConnections) {
    this.socketPath = socketPath;
    this.maxConnections = maxConnections;
    this.idle = [];
    // Exchanges waiting for a connection, oldest first.
    this.waiting = [];
    // Connections open or opening.
    this.open = 0;
    this.closed = false;
  }

  // Ends idle connections; exchanges still waiting for one fail. Those under way finish.
  close() {
    this.closed = true;
    for (const connection of this.idle.splice(0)) connection.socket.destroy();
    for (const exchange of this.waiting.splice(0)) exchange.fail(new Error('the client was closed'));
  }

  // One exchange. `head` is the request head's text (ending with CRLF CRLF, one byte per char);
  // `body` a Buffer sent with it, or a Readable sent after it: as is when `bodyLength` is its
  // known length (the head says so), else chunked. Calls `onHead(err, response, exchange)` once.
  // Returns the exchange, whose `fail(err)` ends it and its connection.
  exchange(head, body, bodyLength, onHead) {
    const exchange = new Exchange(this, head, body, bodyLength, onHead);
    const connection = this.idle.pop();
    if (connection !== undefined) this.begin(connection, exchange, true);
    else if (this.open < this.maxConnections) this.connect(exchange, 0);
    else this.waiting.push(exchange);
    return exchange;
  }

  connect(exchange, attempt) {
    this.open += 1;
    // It lives on through its socket's listeners.
    new Connection(this, exchange, attempt);
  }

  // `connection` is ready for `exchange` (null: it was given up while connecting).
  begin(connection, exchange, reused) {
    if (exchange === null || exchange.failed) {
      this.release(connection);
      return;
    }
    connection.exchange = exchange;
    exchange.begin(connection, reused);
  }

  // A connection failed before it was established: a listener whose backlog was full
  // (EAGAIN) is tried again a little later; anything else fails its exchange.
  connectFailed(connection, err) {
    const exchange = connection.connecting;
    connection.connecting = null;
    if (exchange === null || exchange.failed) return;
    if (exchange.firstRefused === 0) exchange.firstRefused = Date.now();
    if (err.code === 'EAGAIN' && !this.closed && Date.now() - exchange.firstRefused < CONNECT_RETRY_BUDGET_MS) {
      const attempt = connection.attempt + 1;
      const wait = Math.min(CONNECT_RETRY_MAX_MS, CONNECT_RETRY_FIRST_MS * 2 ** attempt) * (0.5 + Math.random());
      // Not counted while it waits, so that others may connect meanwhile.
      setTimeout(() => {
        if (exchange.failed) return;
        if (this.closed) exchange.fail(new Error('the client was closed'));
        else if (this.open < this.maxConnections) this.connect(exchange, attempt);
        else this.waiting.unshift(exchange);
      }, wait);
      return;
    }
    exchange.fail(err);
  }

  // An exchange given up while it waited for a connection.
  forget(exchange) {
    const at = this.waiting.indexOf(exchange);
    if (at >= 0) this.waiting.splice(at, 1);
  }

  release(connection) {
    connection.exchange = null;
    connection.readBytes = READ_BYTES;
    if (this.closed || connection.socket.destroyed) {
      connection.socket.destroy();
      return;
    }
    // Paused by back-pressure on the last response, it would not even see its own close.
    connection.socket.resume();
    const next = this.waiting.shift();
    if (next !== undefined) this.begin(connection, next, true);
    else this.idle.push(connection);
  }

  // An idle connection that did something (closed, failed, or sent unasked bytes) leaves.
  drop(connection) {
    const at = this.idle.indexOf(connection);
    if (at >= 0) this.idle.splice(at, 1);
    connection.socket.destroy();
  }

  // A connection is gone: room for one that an exchange waits for.
  onConnectionClosed(connection) {
    this.open -= 1;
    const exchange = connection.connecting;
    if (exchange !== null && !exchange.failed) {
      // Closed before it connected, without an error of its own.
      exchange.fail(Object.assign(new Error('the connection to the runtime closed before it was established'), { code: 'ECONNRESET' }));
    }
    const next = this.waiting.shift();
    if (next !== undefined && this.open < this.maxConnections) this.connect(next, 0);
    else if (next !== undefined) this.waiting.unshift(next);
  }
}

module.exports = { Pool, parseHead, framingOf, Dechunker };
