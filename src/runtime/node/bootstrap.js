'use strict';
// noslate Node.js worker bootstrap: the worker side of docs/PROTOCOL.md.
//
// The runtime execs `node [execArgv...] bootstrap.js` with the code directory as cwd, frames from
// the runtime on fd 3 and frames to the runtime on fd 4. This file loads the user's module on INIT
// and serves Noslate-style `handler(ctx, req, res)` invocations, one protocol stream each.
//
// Hot-path notes: incoming frames are parsed in place from the socket's chunks; outgoing frames are
// serialised into one shared buffer (the "arena") and written with a single write per event-loop
// turn, so a batch of small responses costs one syscall.

const fs = require('fs');
const net = require('net');
const path = require('path');
const util = require('util');
const { pathToFileURL } = require('url');
const { Readable, Writable } = require('stream');

// ---- Wire constants (PROTOCOL.md "Framing") --------------------------------------------------

const HEADER_SIZE = 12;
const MAX_PAYLOAD = 1024 * 1024;
const FLAG_END = 0x01;

// runtime → worker
const INIT = 0x01;
const REQUEST_HEAD = 0x02;
const REQUEST_BODY = 0x03;
const CANCEL = 0x04;
const WINDOW_IN = 0x05;
// worker → runtime
const READY = 0x81;
const INIT_DONE = 0x82;
const INIT_ERROR = 0x83;
const RESPONSE_HEAD = 0x84;
const RESPONSE_BODY = 0x85;
const RESPONSE_ERROR = 0x86;
const WINDOW_OUT = 0x87;

const INITIAL_WINDOW = 256 * 1024;
// Request-body credit is returned once this much has been consumed: half the window, so the
// runtime always has the other half in flight.
const GRANT_THRESHOLD = INITIAL_WINDOW / 2;
// Response bodies are cut into frames of at most this size so that one large write cannot hold the
// pipe for long while other streams wait.
const MAX_BODY_FRAME = 64 * 1024;

const env = process.env;
const input = new net.Socket({ fd: Number(env.NOSLATE_IPC_IN) || 3, readable: true, writable: false });
const output = new net.Socket({ fd: Number(env.NOSLATE_IPC_OUT) || 4, readable: false, writable: true });

// ---- Outgoing frames -----------------------------------------------------------------------

const ARENA_SIZE = 256 * 1024;
let arena = Buffer.allocUnsafeSlow(ARENA_SIZE);
let arenaUsed = 0;
// Arenas that filled up before the flush; written, in order, ahead of the current one.
let fullArenas = [];
let flushScheduled = false;
// Where the flags byte of the newest RESPONSE_BODY frame still in the arena lives, if no other frame
// of its stream followed it, so that res.end() can mark that frame END instead of sending an empty
// END frame.
let lastBodyStream = 0;
let lastBodyFlagsAt = -1;
// Responses whose head writeHead() committed but that have not written a body frame yet; their
// heads go out at the flush unless a body write (or end) carries them out first.
let committedHeads = [];

function reserve(size) {
  if (arenaUsed + size > arena.length) {
    if (arenaUsed > 0) fullArenas.push(arena.subarray(0, arenaUsed));
    arena = Buffer.allocUnsafeSlow(Math.max(ARENA_SIZE, size));
    arenaUsed = 0;
    lastBodyFlagsAt = -1;
  }
  if (!flushScheduled) {
    flushScheduled = true;
    // setImmediate runs after every I/O callback of this loop turn and all the ticks and
    // microtasks they queued, which is as much batching as we can get without adding latency.
    setImmediate(flush);
  }
}

function putHeader(stream, kind, flags, length) {
  reserve(HEADER_SIZE + length);
  const at = arenaUsed;
  arena.writeUInt32LE(length, at);
  arena.writeUInt32LE(stream, at + 4);
  arena[at + 8] = kind;
  arena[at + 9] = flags;
  arena[at + 10] = 0;
  arena[at + 11] = 0;
  arenaUsed = at + HEADER_SIZE;
  if (kind === RESPONSE_BODY) {
    lastBodyStream = stream;
    lastBodyFlagsAt = at + 9;
  } else if (stream === lastBodyStream) {
    lastBodyFlagsAt = -1; // END may only go on the stream's last frame
  }
}

function sendEmpty(stream, kind, flags) {
  putHeader(stream, kind, flags, 0);
}

function sendString(stream, kind, flags, string, encoding, byteLength) {
  putHeader(stream, kind, flags, byteLength);
  arenaUsed += arena.write(string, arenaUsed, byteLength, encoding);
}

function sendJson(stream, kind, flags, value) {
  const json = JSON.stringify(value);
  sendString(stream, kind, flags, json, 'utf8', Buffer.byteLength(json));
}

function sendBytes(stream, kind, flags, bytes, start, end) {
  // Copied rather than referenced: the writer may reuse its buffer once the write callback ran.
  putHeader(stream, kind, flags, end - start);
  arenaUsed += bytes.copy(arena, arenaUsed, start, end);
}

function sendU32(stream, kind, value) {
  putHeader(stream, kind, 0, 4);
  arena.writeUInt32LE(value, arenaUsed);
  arenaUsed += 4;
}

// Sets END on the stream's last body frame if it is still unsent; false if there is none.
function markLastBodyEnd(stream) {
  if (lastBodyFlagsAt < 0 || lastBodyStream !== stream) return false;
  arena[lastBodyFlagsAt] |= FLAG_END;
  return true;
}

function flush() {
  for (const res of committedHeads) {
    if (res._head === HEAD_COMMITTED && !res._done) res._sendHead(0);
  }
  committedHeads = [];
  flushScheduled = false;
  lastBodyFlagsAt = -1;
  // While the runtime is behind on reading, queue an exact-size copy rather than pinning the whole
  // arena in the socket's queue for every flush.
  const backedUp = output.writableLength !== 0;
  const used = arenaUsed === 0 ? null : backedUp ? Buffer.from(arena.subarray(0, arenaUsed)) : arena.subarray(0, arenaUsed);
  arenaUsed = 0;
  if (fullArenas.length > 0) {
    output.cork();
    for (const chunk of fullArenas) output.write(chunk);
    if (used !== null) output.write(used);
    output.uncork();
    fullArenas = [];
  } else if (used !== null) {
    output.write(used);
  }
  // Otherwise an empty write queue means the kernel took every byte synchronously and the arena
  // can be reused; if not, the socket still points into it.
  if (!backedUp && output.writableLength !== 0) arena = Buffer.allocUnsafeSlow(ARENA_SIZE);
  if (shuttingDown) maybeExit();
}

// ---- Incoming frames -----------------------------------------------------------------------

// A frame split across socket chunks: its pieces so far, their total size, and the size needed
// (the header alone until the header is complete, then the whole frame).
let partial = [];
let partialSize = 0;
let partialNeed = HEADER_SIZE;

function frameLength(buf, at) {
  const length = buf.readUInt32LE(at);
  if (length > MAX_PAYLOAD) protocolError(`frame payload of ${length} bytes exceeds 1 MiB`);
  return length;
}

function onData(chunk) {
  let at = 0;
  // Complete a frame that straddles the previous chunk, copying only that frame's bytes.
  while (partialSize > 0) {
    const take = Math.min(partialNeed - partialSize, chunk.length - at);
    partial.push(chunk.subarray(at, at + take));
    partialSize += take;
    at += take;
    if (partialSize < partialNeed) return;
    const frame = partial.length === 1 ? partial[0] : Buffer.concat(partial, partialSize);
    partial = [frame];
    if (partialNeed === HEADER_SIZE) {
      partialNeed = HEADER_SIZE + frameLength(frame, 0);
      if (partialNeed > HEADER_SIZE) continue;
    }
    partial = [];
    partialSize = 0;
    partialNeed = HEADER_SIZE;
    dispatch(frame, 0);
  }
  const end = chunk.length;
  while (end - at >= HEADER_SIZE) {
    const frameEnd = at + HEADER_SIZE + frameLength(chunk, at);
    if (frameEnd > end) break;
    dispatch(chunk, at);
    at = frameEnd;
  }
  if (at < end) {
    partial.push(chunk.subarray(at));
    partialSize = end - at;
    partialNeed = partialSize >= HEADER_SIZE ? HEADER_SIZE + frameLength(chunk, at) : HEADER_SIZE;
  }
}

function dispatch(buf, at) {
  const start = at + HEADER_SIZE;
  const end = start + buf.readUInt32LE(at);
  const stream = buf.readUInt32LE(at + 4);
  const kind = buf[at + 8];
  const flags = buf[at + 9];
  switch (kind) {
    case REQUEST_HEAD:
      return onRequestHead(stream, flags, JSON.parse(buf.toString('utf8', start, end)));
    case REQUEST_BODY:
      return onRequestBody(stream, flags, buf, start, end);
    case WINDOW_IN:
      return onWindow(stream, buf.readUInt32LE(start));
    case CANCEL:
      return onCancel(stream, end > start ? JSON.parse(buf.toString('utf8', start, end)).reason : undefined);
    case INIT:
      return onInit(JSON.parse(buf.toString('utf8', start, end)));
    default:
      protocolError(`unknown frame kind 0x${kind.toString(16)}`);
  }
}

// ---- Worker lifecycle ----------------------------------------------------------------------

const workerId = env.NOSLATE_WORKER_ID || `pid-${process.pid}`;
let handler = null;
let initializing = false;
let shuttingDown = false;
let exiting = false;
// Open streams by id; the Response object carries the stream's state.
const streams = new Map();

function logWorker(message) {
  process.stderr.write(`${new Date().toISOString()} [noslate worker ${workerId}] ${message}\n`);
}

function protocolError(message) {
  logWorker(`protocol error: ${message}`);
  process.exit(1);
}

// Anything that escapes user code outside a handler's own promise leaves the worker in an unknown
// state: report it and die, and let the runtime fail the open streams and start a replacement.
function crash(what, err) {
  logWorker(`${what}: ${err instanceof Error ? err.stack : util.inspect(err)}`);
  process.exit(1);
}

// Shutdown (EOF on fd 3): exit once no stream or initializer is left and every frame is written.
function maybeExit() {
  if (exiting || streams.size > 0 || initializing) return;
  if (flushScheduled) return; // flush() calls back here after writing
  exiting = true;
  output.end(() => process.exit(0));
}

function onEof() {
  shuttingDown = true;
  maybeExit();
}

// `file.export` → [absolute module path without extension, export name]; the file part may
// contain dots and slashes ("lib/a.b" → lib/a, b).
function splitHandler(spec, notFoundType) {
  const dot = typeof spec === 'string' ? spec.lastIndexOf('.') : -1;
  if (dot <= 0 || dot === spec.length - 1) {
    throw namedError(notFoundType, `invalid handler ${JSON.stringify(spec)}: expected "file.export"`);
  }
  return [spec.slice(0, dot), spec.slice(dot + 1)];
}

async function loadExport(codeDir, spec, notFoundType) {
  const [file, name] = splitHandler(spec, notFoundType);
  const base = path.resolve(codeDir, file);
  let resolved;
  try {
    resolved = require.resolve(base);
  } catch {
    // require() does not look for .mjs; accept an ES module handler file too.
    if (!fs.existsSync(`${base}.mjs`)) {
      throw namedError(notFoundType, `cannot find module "./${file}" (for ${spec}) in ${codeDir}`);
    }
    resolved = `${base}.mjs`;
  }
  let mod;
  try {
    mod = resolved.endsWith('.mjs') ? await import(pathToFileURL(resolved).href) : require(resolved);
  } catch (err) {
    if (err && err.code === 'ERR_REQUIRE_ESM') {
      mod = await import(pathToFileURL(resolved).href);
    } else {
      if (err instanceof Error) err.message = `failed to load ${resolved}: ${err.message}`;
      throw err;
    }
  }
  const fn = mod == null ? undefined : mod[name];
  if (typeof fn !== 'function') {
    throw namedError(notFoundType, `${resolved} does not export a function named "${name}" (for ${spec})`);
  }
  return fn;
}

function namedError(name, message) {
  const err = new Error(message);
  err.name = name;
  return err;
}

async function onInit(init) {
  const fn = init.function || {};
  const codeDir = fn.codeDir || env.NOSLATE_CODE_DIR || process.cwd();
  initializing = true;
  try {
    const loaded = await loadExport(codeDir, fn.handler || env.NOSLATE_HANDLER, 'HandlerNotFound');
    const initializerSpec = fn.initializer || env.NOSLATE_INITIALIZER;
    if (initializerSpec) {
      const initializer = await loadExport(codeDir, initializerSpec, 'InitializerNotFound');
      await initializer(new Context(init.context, init.requestId));
    }
    handler = loaded;
    sendEmpty(0, INIT_DONE, 0);
  } catch (err) {
    logWorker(`initialization failed: ${err instanceof Error ? err.stack : util.inspect(err)}`);
    sendJson(0, INIT_ERROR, 0, errorPayload(err));
  }
  initializing = false;
}

// A stack trace as lines, cut where this file's frames start: what lies below (frame dispatch,
// module loading) is the same for every error and only shows the worker's internals to the client.
function userStack(stack) {
  const lines = stack.split('\n');
  const cut = lines.findIndex((line) => line.includes(__filename));
  return cut < 0 ? lines : lines.slice(0, cut);
}

function errorPayload(err) {
  if (err instanceof Error || (err !== null && typeof err === 'object' && typeof err.message === 'string')) {
    return {
      errorMessage: err.message,
      errorType: typeof err.name === 'string' && err.name ? err.name : 'Error',
      stackTrace: typeof err.stack === 'string' ? userStack(err.stack) : [],
    };
  }
  // A thrown string, number, plain object...: its text is the message.
  return {
    errorMessage: typeof err === 'string' ? err : util.inspect(err),
    errorType: 'Error',
    stackTrace: [],
  };
}

// ---- Handler context -----------------------------------------------------------------------

// The FC context of the invocation (PROTOCOL.md "context"), plus a logger. Deliberately nothing
// from process.env: credentials travel per request.
class Context {
  constructor(context, requestId) {
    const c = context || {};
    this.requestId = c.requestId || requestId || '';
    this.credentials = c.credentials || null;
    this.function = c.function || null;
    this.service = c.service || null;
    this.region = c.region || null;
    this.accountId = c.accountId || null;
    this.retryCount = c.retryCount || 0;
    this.logger = new Logger(this.requestId);
  }
}

// Lines like FC's own Node.js runtime: `<ISO time> <requestId> [LEVEL] message`.
class Logger {
  constructor(requestId) {
    this.requestId = requestId;
  }

  _log(level, args) {
    process.stdout.write(`${new Date().toISOString()} ${this.requestId} [${level}] ${util.format(...args)}\n`);
  }

  debug(...args) { this._log('DEBUG', args); }
  info(...args) { this._log('INFO', args); }
  warn(...args) { this._log('WARN', args); }
  error(...args) { this._log('ERROR', args); }
}

// ---- Request -------------------------------------------------------------------------------

// Headers Node's http keeps only the first of (IncomingMessage#_addHeaderLine).
const SINGLE_VALUE_HEADERS = new Set([
  'age', 'authorization', 'content-length', 'content-type', 'etag', 'expires', 'from', 'host',
  'if-modified-since', 'if-unmodified-since', 'last-modified', 'location', 'max-forwards',
  'proxy-authorization', 'referer', 'retry-after', 'server', 'user-agent',
]);

// [[name, value], ...] → the object Node's http exposes as req.headers.
function headersObject(pairs) {
  const headers = {};
  for (const [name, value] of pairs) {
    const key = name.toLowerCase();
    const prev = headers[key];
    if (prev === undefined) {
      headers[key] = key === 'set-cookie' ? [value] : value;
    } else if (key === 'set-cookie') {
      prev.push(value);
    } else if (!SINGLE_VALUE_HEADERS.has(key)) {
      headers[key] = `${prev}${key === 'cookie' ? '; ' : ', '}${value}`;
    }
  }
  return headers;
}

// The request body as a Readable. The runtime may send at most the credit this side grants; credit
// goes back as the handler consumes what was pushed.
class Request extends Readable {
  constructor(res, head) {
    super();
    this.method = head.method;
    this.url = head.url;
    // Not in the v1 request head; accepted as pairs or an object should the runtime send it.
    this.baggage = Array.isArray(head.baggage) ? Object.fromEntries(head.baggage) : (head.baggage || {});
    this._headerPairs = head.headers || [];
    this._headers = null; // built on first use: most handlers never look
    this._rawHeaders = null;
    this._res = res;
    this._bodyEnded = false;
    // Body bytes received and not yet returned as credit (some may still sit in our buffer).
    this._unacked = 0;
  }

  get headers() {
    if (this._headers === null) this._headers = headersObject(this._headerPairs);
    return this._headers;
  }

  set headers(value) {
    this._headers = value;
  }

  get rawHeaders() {
    if (this._rawHeaders === null) this._rawHeaders = this._headerPairs.flat();
    return this._rawHeaders;
  }

  set rawHeaders(value) {
    this._rawHeaders = value;
  }

  // Every way of consuming a Readable (flowing mode, pipe, async iteration, 'readable' + read())
  // goes through read(), so credit is returned here. Readable's _read() is no use for it: it is not
  // called again until the next push(), and the runtime pushes nothing until it gets credit.
  read(n) {
    const chunk = super.read(n);
    this._grant();
    return chunk;
  }

  _read() {
    // Data arrives by push() from the REQUEST_BODY frames.
  }

  _grant() {
    if (this._bodyEnded || this._res._done) return;
    const consumed = this._unacked - this.readableLength;
    if (consumed >= GRANT_THRESHOLD) {
      this._unacked -= consumed;
      sendU32(this._res._id, WINDOW_OUT, consumed);
    }
  }
}

// ---- Response ------------------------------------------------------------------------------

const HEAD_NONE = 0; // headers still mutable
const HEAD_COMMITTED = 1; // writeHead() called; the frame is not queued yet
const HEAD_SENT = 2; // RESPONSE_HEAD queued

const RESPONSE_OPTIONS = { decodeStrings: false }; // strings go straight into the arena
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const INVALID_VALUE_CHAR = /[^\t\x20-\x7e\x80-\xff]/;

function headersSentError(what) {
  const err = new Error(`Cannot ${what} after they are sent to the client`);
  err.code = 'ERR_HTTP_HEADERS_SENT';
  return err;
}

function checkHeader(name, value) {
  if (typeof name !== 'string' || !TOKEN.test(name)) {
    throw new TypeError(`Header name must be a valid HTTP token ["${name}"]`);
  }
  if (value === undefined) throw new TypeError(`Invalid value "undefined" for header "${name}"`);
  for (const v of Array.isArray(value) ? value : [value]) {
    if (INVALID_VALUE_CHAR.test(String(v))) throw new TypeError(`Invalid character in header content ["${name}"]`);
  }
}

function ignoreError() {
  // Errors on res are reported to the runtime by _destroy; without a listener the emit would throw.
}

// The response as a Writable, with the parts of http.ServerResponse that handlers use. The Response
// is also the stream's bookkeeping record (credit, terminal state).
class Response extends Writable {
  constructor(stream, requestId) {
    super(RESPONSE_OPTIONS);
    this.statusCode = 200;
    this.statusMessage = ''; // kept for compatibility; the protocol carries no reason phrase
    this._id = stream;
    this._requestId = requestId;
    this._req = null;
    this._headers = null; // lowercase name → [name as given, value]
    this._head = HEAD_NONE;
    this._done = false; // the terminal frame is queued
    this._credit = INITIAL_WINDOW;
    // A body chunk waiting for credit: the chunk, how far it was sent, its write callback.
    this._waiting = null;
    this._waitingAt = 0;
    this._waitingCb = null;
    this.on('error', ignoreError);
  }

  get headersSent() {
    return this._head !== HEAD_NONE;
  }

  setHeader(name, value) {
    if (this._head !== HEAD_NONE) throw headersSentError('set headers');
    checkHeader(name, value);
    if (this._headers === null) this._headers = Object.create(null);
    this._headers[name.toLowerCase()] = [name, value];
    return this;
  }

  getHeader(name) {
    const entry = this._headers === null ? undefined : this._headers[name.toLowerCase()];
    return entry === undefined ? undefined : entry[1];
  }

  hasHeader(name) {
    return this._headers !== null && this._headers[name.toLowerCase()] !== undefined;
  }

  removeHeader(name) {
    if (this._head !== HEAD_NONE) throw headersSentError('remove headers');
    if (this._headers !== null) delete this._headers[name.toLowerCase()];
  }

  getHeaderNames() {
    return this._headers === null ? [] : Object.keys(this._headers);
  }

  getHeaders() {
    const headers = Object.create(null);
    for (const key in this._headers) headers[key] = this._headers[key][1];
    return headers;
  }

  // writeHead(status, [statusMessage], [headers]); headers is an object or a flat
  // [name, value, ...] array as in Node.
  writeHead(status, statusMessage, headers) {
    if (this._head !== HEAD_NONE) throw headersSentError('write headers');
    if (typeof statusMessage === 'string') this.statusMessage = statusMessage;
    else headers = statusMessage;
    this.statusCode = status;
    if (Array.isArray(headers)) {
      const fromArray = new Set();
      for (let i = 0; i + 1 < headers.length; i += 2) {
        const name = headers[i];
        const key = String(name).toLowerCase();
        const prev = fromArray.has(key) ? this.getHeader(key) : undefined;
        // Repeated names in the array are all kept, like Node's raw header arrays.
        this.setHeader(name, prev === undefined ? headers[i + 1] : [].concat(prev, headers[i + 1]));
        fromArray.add(key);
      }
    } else if (headers) {
      for (const name of Object.keys(headers)) this.setHeader(name, headers[name]);
    }
    this._commitHead();
    committedHeads.push(this);
    return this;
  }

  flushHeaders() {
    if (this._head === HEAD_NONE) this._commitHead();
    if (this._head === HEAD_COMMITTED && !this._done) this._sendHead(0);
  }

  end(chunk, encoding, cb) {
    // A whole body given to end() before anything went out: state its length, so the runtime can
    // frame the client response without chunked encoding.
    if (this._head !== HEAD_SENT && chunk != null && typeof chunk !== 'function' && !this.writableEnded &&
        !this.hasHeader('content-length') && !this.hasHeader('transfer-encoding')) {
      const length = typeof chunk === 'string'
        ? Buffer.byteLength(chunk, typeof encoding === 'string' ? encoding : 'utf8')
        : chunk.byteLength;
      if (length !== undefined) {
        if (this._headers === null) this._headers = Object.create(null);
        this._headers['content-length'] = ['content-length', String(length)];
      }
    }
    return super.end(chunk, encoding, cb);
  }

  _commitHead() {
    const status = this.statusCode;
    if (!Number.isInteger(status) || status < 100 || status > 999) {
      const err = new RangeError(`Invalid status code: ${status}`);
      err.code = 'ERR_HTTP_INVALID_STATUS_CODE';
      throw err;
    }
    this._head = HEAD_COMMITTED;
  }

  _sendHead(flags) {
    const headers = [];
    for (const key in this._headers) {
      const [name, value] = this._headers[key];
      if (Array.isArray(value)) for (const v of value) headers.push([name, String(v)]);
      else headers.push([name, String(value)]);
    }
    this._head = HEAD_SENT;
    sendJson(this._id, RESPONSE_HEAD, flags, { status: this.statusCode, headers });
  }

  _write(chunk, encoding, cb) {
    if (this._head === HEAD_NONE) this._commitHead();
    if (this._head === HEAD_COMMITTED) this._sendHead(0);
    if (typeof chunk === 'string') {
      const length = Buffer.byteLength(chunk, encoding);
      if (length <= this._credit && length <= MAX_BODY_FRAME) {
        if (length > 0) sendString(this._id, RESPONSE_BODY, 0, chunk, encoding, length);
        this._credit -= length;
        return cb();
      }
      chunk = Buffer.from(chunk, encoding);
    }
    this._waiting = chunk;
    this._waitingAt = 0;
    this._waitingCb = cb;
    this._pump();
  }

  // Sends as much of the waiting chunk as the credit allows; the write completes (and Writable
  // lets the next one through) only when all of it is out.
  _pump() {
    const chunk = this._waiting;
    let at = this._waitingAt;
    while (this._credit > 0 && at < chunk.length) {
      const n = Math.min(chunk.length - at, this._credit, MAX_BODY_FRAME);
      sendBytes(this._id, RESPONSE_BODY, 0, chunk, at, at + n);
      this._credit -= n;
      at += n;
    }
    this._waitingAt = at;
    if (at === chunk.length) this._releaseWaiting();
  }

  _releaseWaiting() {
    const cb = this._waitingCb;
    this._waiting = null;
    this._waitingCb = null;
    cb();
  }

  _final(cb) {
    if (!this._done) {
      if (this._head === HEAD_NONE) this._commitHead();
      if (this._head === HEAD_COMMITTED) this._sendHead(FLAG_END);
      else if (!markLastBodyEnd(this._id)) sendEmpty(this._id, RESPONSE_BODY, FLAG_END);
      closeStream(this);
    }
    cb();
  }

  _destroy(err, cb) {
    // Destroyed by the handler (with or without an error) before the response ended.
    if (!this._done) fail(this, err || namedError('Error', 'response destroyed before it ended'));
    cb(err);
  }
}

// ---- Streams -------------------------------------------------------------------------------

function closeStream(res) {
  res._done = true;
  streams.delete(res._id);
}

// Ends a stream whose terminal frame was just queued without the response finishing: the handler
// sees req and res destroyed ('close'), and a write waiting for credit completes with an error.
function abort(res) {
  closeStream(res);
  res._req.destroy();
  res.destroy();
  if (res._waiting !== null) res._releaseWaiting();
}

// The handler failed: RESPONSE_ERROR is the terminal frame, before or after the head (after it,
// the runtime aborts the client response).
function fail(res, err) {
  const text = err instanceof Error ? err.stack : util.inspect(err);
  if (res._done) {
    logWorker(`request ${res._requestId}: error after its response ended: ${text}`);
    return;
  }
  logWorker(`request ${res._requestId} failed: ${text}`);
  sendJson(res._id, RESPONSE_ERROR, 0, errorPayload(err));
  abort(res);
}

function onRequestHead(stream, flags, head) {
  if (handler === null) protocolError(`REQUEST_HEAD for stream ${stream} before INIT_DONE`);
  if (stream === 0 || streams.has(stream)) protocolError(`REQUEST_HEAD reuses open stream id ${stream}`);
  const ctx = new Context(head.context, head.requestId);
  const res = new Response(stream, ctx.requestId);
  const req = new Request(res, head);
  res._req = req;
  if (flags & FLAG_END) {
    req._bodyEnded = true;
    req.push(null);
  }
  streams.set(stream, res);
  let result;
  try {
    result = handler(ctx, req, res);
  } catch (err) {
    fail(res, err);
    return;
  }
  if (result !== null && typeof result === 'object' && typeof result.then === 'function') {
    result.then(undefined, (err) => fail(res, err));
  }
}

function onRequestBody(stream, flags, buf, start, end) {
  const res = streams.get(stream);
  if (res === undefined) return; // answered or cancelled: the rest of the request is ignored
  const req = res._req;
  if (req._bodyEnded || req.destroyed) return;
  if (end > start) {
    req._unacked += end - start;
    if (req.push(buf.subarray(start, end))) req._grant();
  }
  if (flags & FLAG_END) {
    req._bodyEnded = true;
    req.push(null);
  }
}

function onWindow(stream, increment) {
  const res = streams.get(stream);
  if (res === undefined) return;
  res._credit += increment;
  if (res._waiting !== null) res._pump();
}

function onCancel(stream, reason) {
  const res = streams.get(stream);
  if (res === undefined) return; // the terminal frame already went out
  sendJson(stream, RESPONSE_ERROR, 0, {
    errorMessage: `invocation cancelled: ${reason || 'no reason given'}`,
    errorType: 'Cancelled',
    stackTrace: [],
  });
  abort(res);
  // After the destroy, so that a listener writing to res cannot reach the wire.
  res._req.emit('aborted');
}

// ---- Start ---------------------------------------------------------------------------------

process.on('uncaughtException', (err) => crash('uncaught exception', err));
process.on('unhandledRejection', (reason) => crash('unhandled rejection', reason));

input.on('data', onData);
input.on('end', onEof);
input.on('error', (err) => crash('read from runtime failed', err));
output.on('error', (err) => crash('write to runtime failed', err));

sendJson(0, READY, 0, { pid: process.pid, runtime: 'nodejs', version: process.version, protocol: 1 });
