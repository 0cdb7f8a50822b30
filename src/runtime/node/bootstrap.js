'use strict';
// noslate Node.js worker bootstrap: the worker side of docs/PROTOCOL.md.
//
// The runtime execs `node [execArgv...] bootstrap.js` with the code directory as cwd, frames from
// the runtime on fd 3 and frames to the runtime on fd 4. This file loads the user's code on INIT
// and serves each invocation as one protocol stream, in one of four calling conventions:
//
//   NOSLATE_RUNTIME=nodejs, NOSLATE_HANDLER_STYLE=noslate   handler(ctx, req, res)       (Noslate)
//   NOSLATE_RUNTIME=nodejs, NOSLATE_HANDLER_STYLE=fc-event  handler(event, context[, callback])
//   NOSLATE_RUNTIME=nodejs, NOSLATE_HANDLER_STYLE=fc-http   handler(req, resp, context)  (FC HTTP)
//   NOSLATE_RUNTIME=aworker, NOSLATE_SOURCE_FILE=main.js    addEventListener('fetch', ...)
//
// The style comes from the profile (handlerStyle), never from the handler's arity. All of them sit
// on the same stream machinery: a Readable request body that returns credit as it is read and a
// Writable response that waits for credit (the Noslate style hands those two to the handler as is).
//
// Spare mode (NOSLATE_SPARE=1): the runtime keeps a few workers started before any function needs
// them, with a neutral cwd and only PATH, HOME, NOSLATE_IPC_IN/OUT and NOSLATE_WORKER_ID=spare-<n>
// in the environment, so that assigning one to a function skips node's start-up. A spare sends
// READY with "spare": true. The INIT that assigns it carries, besides the usual fields,
//
//   "spare": {"env": [["KEY", "value"], ...], "cwd": "/abs/code/dir"}
//
// `env` being the complete environment a cold worker of the function would have had and `cwd` its
// code directory. The spare enters cwd, replaces process.env with exactly `env`, derives again
// everything read from the environment at start-up (assignSpare) and then initialises as a cold
// worker does; from then on nothing tells the two apart. The first INIT ends spare mode whatever
// its outcome, so a spare never serves a second function. "spare" in the INIT of a worker not
// started as a spare, or its absence from a spare's, is an INIT_ERROR (WorkerProtocolError).
// Node itself reads a few variables only at process start (NODE_OPTIONS, NODE_EXTRA_CA_CERTS,
// NODE_DEBUG, ...); for a spare those come from its own start-up environment, not `env`.
//
// Hot-path notes: incoming frames are parsed in place from the socket's chunks; outgoing frames are
// serialised into one shared buffer (the "arena") and written with a single write per event-loop
// turn, so a batch of small responses costs one syscall.

const fs = require('fs');
const Module = require('module');
const net = require('net');
const path = require('path');
const util = require('util');
const { pathToFileURL } = require('url');
const { AsyncLocalStorage } = require('async_hooks');
const { Readable, Writable } = require('stream');
const workerThreads = require('worker_threads');

// ---- The debugger belongs to the runtime ---------------------------------------------------
//
// A debugger runs any code it is sent, so it must never listen beyond this machine. An inspect
// worker is started by the runtime with --inspect=127.0.0.1:0 and reports the address in READY. No function may open one of its own, on any address: inspector.open() (also
// through inspector/promises) and the deprecated process.binding('inspector') refuse, in every
// thread, and SIGUSR1 starts none; worker threads are started with this file preloaded (--require), whatever execArgv the
// code asks for, and it only installs this guard there. Other processes a function starts are out
// of its reach (see docs/ARCHITECTURE.md, "Inspector").
const INSPECTOR_DENIED = 'the inspector is opened by the runtime only (on 127.0.0.1, for an ' +
  'inspect worker: noslate inspect NAME); a function may not open it';

function guardInspector() {
  const refuse = function open() {
    const err = new Error(INSPECTOR_DENIED);
    err.code = 'ERR_NOSLATE_INSPECTOR_DENIED';
    throw err;
  };
  const fixed = (object, name, value) =>
    Object.defineProperty(object, name, { value, writable: false, configurable: false, enumerable: true });
  // inspector/promises and `import 'node:inspector'` copy `open` from these exports when they
  // first load, which is after this.
  fixed(require('inspector'), 'open', refuse);
  const binding = process.binding;
  fixed(process, 'binding', function (name) {
    if (String(name) === 'inspector') refuse();
    return binding.call(process, name);
  });
  const Worker = workerThreads.Worker;
  const preload = __filename;
  const Guarded = new Proxy(Worker, {
    construct(target, args, newTarget) {
      const options = Object.assign({}, args[1]);
      options.execArgv = [...(options.execArgv || process.execArgv), '--require', preload];
      return Reflect.construct(target, [args[0], options, ...args.slice(2)], newTarget === Guarded ? target : newTarget);
    },
  });
  fixed(Worker.prototype, 'constructor', Guarded);
  fixed(workerThreads, 'Worker', Guarded);
  // SIGUSR1 (also what process._debugProcess sends) would start a debugger on 127.0.0.1:9229
  // that the runtime knows nothing of. With a listener Node does not; with the listener
  // removed, the signal's default action ends the process.
  if (workerThreads.isMainThread) process.on('SIGUSR1', () => {});
}

guardInspector();
if (!workerThreads.isMainThread) return;

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
const COMPACT_HEAD = 0x06;
// worker → runtime
const READY = 0x81;
const INIT_DONE = 0x82;
const INIT_ERROR = 0x83;
const RESPONSE_HEAD = 0x84;
const RESPONSE_BODY = 0x85;
const RESPONSE_ERROR = 0x86;
const WINDOW_OUT = 0x87;
const COMPACT_RESPONSE_HEAD = 0x88;

// Credit a stream direction starts with when its receiver announced no other.
const INITIAL_WINDOW = 256 * 1024;
const MAX_WINDOW = 16 * 1024 * 1024;
// The request-body credit this worker grants each stream, announced in INIT_DONE: one protocol
// pipe's worth, so that the runtime can keep writing a large upload while the handler reads.
const REQUEST_WINDOW = 1024 * 1024;
// Request-body credit is returned once this much has been consumed, at once rather than at the
// end of the loop turn: a quarter of the window, so the runtime always has the rest in flight.
const GRANT_THRESHOLD = REQUEST_WINDOW / 4;
// The response-body credit each stream starts with: INIT's responseWindow, the runtime's grant.
let responseWindow = INITIAL_WINDOW;
// Response bodies are cut into frames of at most this size so that one large write cannot hold the
// pipe for long while other streams wait.
const MAX_BODY_FRAME = 64 * 1024;

// The same object for the whole life of the process: a spare's assignment replaces its contents,
// so what reads through `env` after INIT sees the function's environment. The fds are read once;
// spares get the same ones.
const env = process.env;
// `noslate check --load` runs this file with NOSLATE_CHECK_LOAD=1 and no protocol pipes: load the
// handler and initializer as INIT would (without running the initializer), report, exit.
if (env.NOSLATE_CHECK_LOAD === '1') {
  checkLoad();
  return;
}
// Reads from the runtime land in one 64 KiB buffer, reused, and what a read brought is copied out
// at its size: a small request costs neither a fresh 64 KiB buffer nor one pinned by the few bytes
// a handler keeps. A read that fills its buffer is a large body under way: the next read takes a
// buffer of its own twice as large, up to 1 MiB, handed on without a copy; one that comes back
// less than half full is copied out at its size instead, and the next is half as large. A 32 MiB
// upload is then about 40 reads instead of 512, each one trip through onData, the request stream
// and the handler: a third less worker CPU per upload and up to half again its throughput. A
// handler that keeps every chunk it gets holds at most twice their size.
const READ_BYTES = 64 * 1024;
const BULK_READ_BYTES = 1024 * 1024;
const sharedReadBuffer = Buffer.allocUnsafeSlow(READ_BYTES);
let readBytes = READ_BYTES;
const input = new net.Socket({
  fd: Number(env.NOSLATE_IPC_IN) || 3,
  readable: true,
  writable: false,
  onread: {
    buffer: () => (readBytes > READ_BYTES ? Buffer.allocUnsafeSlow(readBytes) : sharedReadBuffer),
    callback: (n, buf) => {
      const own = buf !== sharedReadBuffer && n * 2 >= buf.length;
      if (n === buf.length) readBytes = Math.min(buf.length * 2, BULK_READ_BYTES);
      else if (n * 2 < buf.length) readBytes = Math.max(buf.length / 2, READ_BYTES);
      onData(own ? buf.subarray(0, n) : Buffer.from(buf.subarray(0, n)));
    },
  },
});
const output = new net.Socket({ fd: Number(env.NOSLATE_IPC_OUT) || 4, readable: false, writable: true });

// ---- Outgoing frames -----------------------------------------------------------------------

const ARENA_SIZE = 256 * 1024;
let arena = Buffer.allocUnsafeSlow(ARENA_SIZE);
let arenaUsed = 0;
// Where the arena's part not yet handed to `segments` starts.
let arenaStart = 0;
// What goes out ahead of that part, in order: arenas that filled up before the flush, parts of
// the arena cut off before a payload sent by reference, and those payloads.
let segments = [];
// The write callbacks of chunks sent by reference, run once the flush that carries them has
// been taken by the output socket.
let referenceCallbacks = [];
// A response body frame's payload at least this large goes out as a reference to the handler's
// buffer, after its header, rather than copied into the arena: copying took a fifth of a worker's
// CPU streaming a large body. The handler's write then completes only once the output socket took
// the bytes, since a writer may reuse its buffer when the write completes.
const REFERENCE_MIN = 16 * 1024;
const EMPTY_BYTES = Buffer.alloc(0);
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
    if (arenaUsed > arenaStart) segments.push(arena.subarray(arenaStart, arenaUsed));
    arena = Buffer.allocUnsafeSlow(Math.max(ARENA_SIZE, size));
    arenaUsed = 0;
    arenaStart = 0;
    lastBodyFlagsAt = -1;
  }
  if (!flushScheduled) {
    flushScheduled = true;
    // setImmediate runs after every I/O callback of this loop turn and all the ticks and
    // microtasks they queued, which is as much batching as we can get without adding latency.
    setImmediate(flush);
  }
}

// A frame header, with room in the arena for `inArena` bytes of its payload (all of it unless the
// payload goes by reference).
function putHeader(stream, kind, flags, length, inArena = length) {
  reserve(HEADER_SIZE + inArena);
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

// Header text with a char past latin1 cannot go in a compact head (one byte per char).
const NOT_LATIN1 = /[^\u0000-\u00ff]/;

// A response head in the compact encoding (docs/PROTOCOL.md "compact response head"): the
// lengths in a table, then every name and value in one latin1 write. It costs a fraction of
// JSON.stringify and of the runtime's JSON parse. checkHeader admits only latin1 values, but
// a value is turned into a string again when the head goes out: one whose String() changed in
// between goes as JSON, which carries any char.
function sendResponseHead(stream, flags, status, headers) {
  let text = '';
  for (let i = 0; i < headers.length; i++) text += headers[i][0] + headers[i][1];
  if (NOT_LATIN1.test(text)) {
    sendJson(stream, RESPONSE_HEAD, flags, { status, headers });
    return;
  }
  putHeader(stream, COMPACT_RESPONSE_HEAD, flags, 8 + 8 * headers.length + text.length);
  let at = arenaUsed;
  arena.writeUInt16LE(status, at);
  arena.writeUInt16LE(0, at + 2);
  arena.writeUInt32LE(headers.length, at + 4);
  at += 8;
  for (let i = 0; i < headers.length; i++) {
    arena.writeUInt32LE(headers[i][0].length, at);
    arena.writeUInt32LE(headers[i][1].length, at + 4);
    at += 8;
  }
  if (text.length > 0) at += arena.write(text, at, text.length, 'latin1');
  arenaUsed = at;
}

function sendBytes(stream, kind, flags, bytes, start, end) {
  // Copied rather than referenced: the writer may reuse its buffer once the write callback ran.
  putHeader(stream, kind, flags, end - start);
  arenaUsed += bytes.copy(arena, arenaUsed, start, end);
}

// A frame whose payload, `bytes[start..end)`, goes out by reference after its header: the
// caller must keep those bytes unchanged until the flush that carries them was written.
function sendBytesByReference(stream, kind, flags, bytes, start, end) {
  putHeader(stream, kind, flags, end - start, 0);
  segments.push(arena.subarray(arenaStart, arenaUsed));
  arenaStart = arenaUsed;
  segments.push(bytes.subarray(start, end));
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
  if (arenaUsed > arenaStart) segments.push(arena.subarray(arenaStart, arenaUsed));
  arenaUsed = 0;
  arenaStart = 0;
  const out = segments;
  segments = [];
  // Parts of the current arena are copied when the socket still holds earlier bytes, so that the
  // arena can be reused; other segments (full arenas, payloads by reference) are written as they are.
  const current = arena.buffer;
  const last = out.length - 1;
  let done;
  if (referenceCallbacks.length > 0) {
    const callbacks = referenceCallbacks;
    referenceCallbacks = [];
    done = () => { for (const cb of callbacks) cb(); };
  }
  if (last > 0) output.cork();
  for (let i = 0; i <= last; i++) {
    const chunk = backedUp && out[i].buffer === current ? Buffer.from(out[i]) : out[i];
    if (i === last) output.write(chunk, done);
    else output.write(chunk);
  }
  if (last > 0) output.uncork();
  // Nothing new to write: the callbacks run once what the socket holds is out.
  if (last < 0 && done !== undefined) output.write(EMPTY_BYTES, done);
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

// A REQUEST_BODY frame whose payload is still arriving: its stream, its flags and how many of
// its bytes are still to come. Its pieces go to the request as they arrive rather than being
// joined into one buffer first: socket reads and body frames are both about 64 KiB, so nearly
// every body frame of a large upload straddles two reads, and joining them copied most of it.
let bodyStream = 0;
let bodyFlags = 0;
let bodyLeft = 0;

// Passes on the part of the arriving body frame in `buf[start..end)`; returns where it ended.
// END, if the frame has it, goes with the frame's last piece.
function bodyPiece(buf, start, end) {
  const n = Math.min(bodyLeft, end - start);
  bodyLeft -= n;
  onRequestBody(bodyStream, bodyLeft === 0 ? bodyFlags : bodyFlags & ~FLAG_END, buf, start, start + n);
  return start + n;
}

// A REQUEST_BODY frame with `length` payload bytes, whose header was just read, starts arriving
// with `buf[start..end)`; returns where its part of `buf` ended.
function startBody(stream, flags, length, buf, start, end) {
  bodyStream = stream;
  bodyFlags = flags;
  bodyLeft = length;
  return bodyPiece(buf, start, end);
}

function onData(chunk) {
  let at = 0;
  if (bodyLeft > 0) {
    at = bodyPiece(chunk, 0, chunk.length);
    if (bodyLeft > 0) return;
  }
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
      const length = frameLength(frame, 0);
      if (frame[8] === REQUEST_BODY && length > 0) {
        partial = [];
        partialSize = 0;
        at = startBody(frame.readUInt32LE(4), frame[9], length, chunk, at, chunk.length);
        if (bodyLeft > 0) return;
        break;
      }
      partialNeed = HEADER_SIZE + length;
      if (partialNeed > HEADER_SIZE) continue;
    }
    partial = [];
    partialSize = 0;
    partialNeed = HEADER_SIZE;
    dispatch(frame, 0);
  }
  const end = chunk.length;
  while (end - at >= HEADER_SIZE) {
    const length = frameLength(chunk, at);
    const frameEnd = at + HEADER_SIZE + length;
    if (frameEnd > end) {
      if (chunk[at + 8] !== REQUEST_BODY) break;
      startBody(chunk.readUInt32LE(at + 4), chunk[at + 9], length, chunk, at + HEADER_SIZE, end);
      return;
    }
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
    case COMPACT_HEAD:
      return onRequestHead(stream, flags, decodeCompactHead(buf, start, end));
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

// Started as a spare (see the top of the file), and not yet assigned a function.
const startedSpare = env.NOSLATE_SPARE === '1';
let spare = startedSpare;
// What the worker is, from its environment: read at start-up and again when a spare is assigned.
// Everything else reads `env` when it needs a value.
let workerId;
let runtimeName;
let handlerStyle;
function readEnvironment() {
  workerId = env.NOSLATE_WORKER_ID || `pid-${process.pid}`;
  runtimeName = env.NOSLATE_RUNTIME || 'nodejs';
  handlerStyle = env.NOSLATE_HANDLER_STYLE || 'noslate';
}
readEnvironment();
// The user's handler (or, for aworker, null) and the style's way of calling it for one stream:
// serve(ctx, req, res, head, flags). Both are set once INIT succeeded.
let handler = null;
let serve = null;
let initializing = false;
let shuttingDown = false;
let exiting = false;
// Promises handed to waitUntil() that have not settled: shutdown waits for them.
let backgroundTasks = 0;
// Open streams by id; the Response object carries the stream's state.
//
// An open-addressing table of its own rather than a Map. A Map that takes a stream and drops one per
// request is rehashed over and over, and V8 links each table it leaves behind to the one that
// replaces it, for live iterators. Once a full collection has moved the live table into the old
// generation, the next table is reachable from that dead one at every young-generation
// collection, is kept and promoted, and so is the one after it, with the requests they hold: a
// worker that got there promoted about 1 MB per scavenge instead of about 30 KB, ran a full
// collection every 80 ms and spent about 40 % more CPU per request from then on (5.4 µs instead
// of 3.1 under a c=64 load, which one fresh worker in five to ten met). This table allocates only
// when it grows: ids in a Uint32Array (0 is never a stream id), linear probing (the runtime hands
// out ids in sequence, so they rarely collide), and deletion by shifting the entries behind back,
// so that no tombstone ever calls for a rehash. None of 34 fresh workers met it with this table,
// and their CPU per request was that of the Map's good draws.
class StreamTable {
  constructor() {
    this.ids = new Uint32Array(64);
    this.slots = new Array(64).fill(undefined);
    this.mask = 63;
    this.size = 0;
  }

  indexOf(id) {
    if (id === 0) return -1; // an empty slot's key: no stream has it
    for (let i = id & this.mask; ; i = (i + 1) & this.mask) {
      const key = this.ids[i];
      if (key === id) return i;
      if (key === 0) return -1;
    }
  }

  get(id) {
    const i = this.indexOf(id);
    return i < 0 ? undefined : this.slots[i];
  }

  has(id) {
    return this.indexOf(id) >= 0;
  }

  set(id, res) {
    let i = id & this.mask;
    while (this.ids[i] !== 0 && this.ids[i] !== id) i = (i + 1) & this.mask;
    if (this.ids[i] === 0) {
      this.ids[i] = id;
      this.size++;
    }
    this.slots[i] = res;
    if (this.size * 2 > this.ids.length) this.resize(this.ids.length * 2);
  }

  delete(id) {
    let hole = this.indexOf(id);
    if (hole < 0) return;
    this.size--;
    // Entries after the hole whose probe from their home slot passed through it move back into
    // it, so that every entry stays reachable from its home without a marker in the hole.
    for (let j = (hole + 1) & this.mask; this.ids[j] !== 0; j = (j + 1) & this.mask) {
      const home = this.ids[j] & this.mask;
      const passes = hole <= j ? home <= hole || home > j : home <= hole && home > j;
      if (passes) {
        this.ids[hole] = this.ids[j];
        this.slots[hole] = this.slots[j];
        hole = j;
      }
    }
    this.ids[hole] = 0;
    this.slots[hole] = undefined;
  }

  resize(capacity) {
    const { ids, slots } = this;
    this.ids = new Uint32Array(capacity);
    this.slots = new Array(capacity).fill(undefined);
    this.mask = capacity - 1;
    this.size = 0;
    for (let i = 0; i < ids.length; i++) if (ids[i] !== 0) this.set(ids[i], slots[i]);
  }

  values() {
    return this.slots.filter((res) => res !== undefined);
  }

  clear() {
    this.ids.fill(0);
    this.slots.fill(undefined);
    this.size = 0;
  }
}
const streams = new StreamTable();

function logWorker(message) {
  process.stderr.write(`${new Date().toISOString()} [noslate worker ${workerId}] ${message}\n`);
}

function protocolError(message) {
  logWorker(`protocol error: ${message}`);
  process.exit(1);
}

// Anything that escapes user code outside a handler's own promise leaves the worker in an unknown
// state: report it as the error of every open stream (with its stack: it may well come from one of
// them), then die, and let the runtime start a replacement.
function crash(what, err) {
  logWorker(`${what}: ${err instanceof Error ? err.stack : util.inspect(err)}`);
  if (exiting) return;
  exiting = true;
  const payload = errorPayload(err);
  payload.errorMessage = `${what}: ${payload.errorMessage}`;
  for (const res of streams.values()) {
    if (!res._done) sendJson(res._id, RESPONSE_ERROR, 0, payload);
    res._done = true;
  }
  streams.clear();
  if (initializing) {
    initializing = false;
    sendJson(0, INIT_ERROR, 0, payload);
  }
  if (flushScheduled) flush();
  // Exit once the kernel has every byte (or give up after a second: the runtime fails whatever
  // is still open with WorkerCrashed).
  if (output.writableLength === 0) process.exit(1);
  output.once('drain', () => process.exit(1));
  setTimeout(() => process.exit(1), 1000).unref();
}

// Shutdown (EOF on fd 3): exit once no stream, initializer or waitUntil() task is left and every
// frame is written.
function maybeExit() {
  if (exiting || streams.size > 0 || initializing || backgroundTasks > 0) return;
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

// Where in the user's code an error comes from, as "file:line": a SyntaxError's stack starts with
// that line; other errors have it in their first frame outside node's own modules and this file.
function errorLocation(err) {
  const stack = err !== null && typeof err === 'object' && typeof err.stack === 'string' ? err.stack : '';
  const first = /^((?:file:\/\/)?\/[^\n]*?):(\d+)\n/.exec(stack);
  if (first) return `${first[1].replace(/^file:\/\//, '')}:${first[2]}`;
  for (const m of stack.matchAll(/^\s*at (?:.*\()?((?:file:\/\/)?\/[^\s():]+):(\d+):\d+\)?$/gm)) {
    const file = m[1].replace(/^file:\/\//, '');
    if (file !== __filename) return `${file}:${m[2]}`;
  }
  return null;
}

// Loads a CommonJS or ES module; a failure names the file and line it comes from.
async function loadModule(resolved) {
  try {
    if (resolved.endsWith('.mjs')) return await import(pathToFileURL(resolved).href);
    try {
      return require(resolved);
    } catch (err) {
      if (err && err.code === 'ERR_REQUIRE_ESM') return await import(pathToFileURL(resolved).href);
      throw err;
    }
  } catch (err) {
    if (err instanceof Error) {
      // A missing dependency's message lists the require stack, this file included: the first
      // line says it all.
      if (err.code === 'MODULE_NOT_FOUND') err.message = err.message.split('\n')[0];
      const at = errorLocation(err);
      const where = at === null ? resolved : at.startsWith(`${resolved}:`) ? at : `${resolved} (at ${at})`;
      err.message = `failed to load ${where}: ${err.message}`;
      // The message is the stack's first line (after a SyntaxError's source excerpt); keep the two
      // in step for the log and the client.
      if (typeof err.stack === 'string') {
        const lines = err.stack.split('\n');
        const headAt = lines.findIndex((l) => l.startsWith(`${err.name}:`));
        if (headAt >= 0) {
          let framesAt = lines.findIndex((l, i) => i > headAt && /^\s+at /.test(l));
          if (framesAt < 0) framesAt = lines.length;
          lines.splice(0, framesAt, `${err.name}: ${err.message}`);
        }
        err.stack = lines.join('\n');
      }
    }
    throw err;
  }
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
  const mod = await loadModule(resolved);
  const fn = mod == null ? undefined : mod[name];
  if (typeof fn !== 'function') {
    const what = fn === undefined ? 'no export' : `an export of type ${typeof fn}`;
    throw namedError(notFoundType, `${resolved} has ${what} named "${name}" where a function is expected (for ${spec})`);
  }
  return fn;
}

function namedError(name, message) {
  const err = new Error(message);
  err.name = name;
  return err;
}

function isThenable(value) {
  return value !== null && typeof value === 'object' && typeof value.then === 'function';
}

// Calls an FC-style `fn(...args, callback)`: done when the callback is called or, if fn returns a
// promise, when that settles, whichever comes first.
function callWithCallback(fn, args) {
  return new Promise((resolve, reject) => {
    let settled = false;
    const callback = (err, data) => {
      if (settled) return;
      settled = true;
      if (err !== undefined && err !== null) reject(err);
      else resolve(data);
    };
    const result = fn(...args, callback);
    if (isThenable(result)) {
      result.then((data) => {
        if (!settled) { settled = true; resolve(data); }
      }, (err) => {
        if (!settled) { settled = true; reject(err === undefined ? new Error('promise rejected with undefined') : err); }
      });
    }
  });
}

async function onInit(init) {
  const granted = init == null ? undefined : init.responseWindow;
  if (Number.isInteger(granted) && granted > 0 && granted <= MAX_WINDOW) responseWindow = granted;
  // Before anything reads the environment or the cwd: a spare becomes the function's worker here.
  // "spare": null counts as absent (an Option serialised without skipping).
  if (spare || (init != null && init.spare != null)) {
    try {
      assignSpare(init == null ? undefined : init.spare);
    } catch (err) {
      logWorker(`initialization failed: ${err instanceof Error ? err.stack : util.inspect(err)}`);
      sendJson(0, INIT_ERROR, 0, errorPayload(err));
      if (shuttingDown) maybeExit();
      return;
    }
  }
  const fn = init.function || {};
  const codeDir = fn.codeDir || env.NOSLATE_CODE_DIR || process.cwd();
  initializing = true;
  try {
    const ctx = contextOf(init);
    if (runtimeName === 'aworker') {
      await initAworker(codeDir, ctx);
      serve = serveFetch;
    } else {
      const styles = { noslate: serveNoslate, 'fc-event': serveFcEvent, 'fc-http': serveFcHttp };
      if (!Object.prototype.hasOwnProperty.call(styles, handlerStyle)) {
        throw namedError('InvalidHandlerStyle', `unknown NOSLATE_HANDLER_STYLE ${JSON.stringify(handlerStyle)}`);
      }
      const loaded = await loadExport(codeDir, fn.handler || env.NOSLATE_HANDLER, 'HandlerNotFound');
      const initializerSpec = fn.initializer || env.NOSLATE_INITIALIZER;
      if (initializerSpec) {
        const initializer = await loadExport(codeDir, initializerSpec, 'InitializerNotFound');
        // FC's initializer(context, callback) finishes by callback or promise; Noslate's by
        // returning (a promise or not).
        if (handlerStyle === 'noslate') await requestIds.run(ctx.requestId, initializer, ctx);
        else await requestIds.run(ctx.requestId, callWithCallback, initializer, [ctx]);
      }
      handler = loaded;
      serve = styles[handlerStyle];
    }
    if (initializing) sendJson(0, INIT_DONE, 0, { requestWindow: REQUEST_WINDOW });
  } catch (err) {
    logWorker(`initialization failed: ${err instanceof Error ? err.stack : util.inspect(err)}`);
    if (initializing) sendJson(0, INIT_ERROR, 0, errorPayload(err));
  }
  initializing = false;
  if (shuttingDown) maybeExit();
}

// The check mode (see where `env` is set): exit 0 when the exports load, else 1 with the error
// as INIT_ERROR would carry it on one stderr line after the CHECK_LOAD_MARK. Only the process's
// environment is used: nothing declared with let/const below the check has been set up.
async function checkLoad() {
  const mark = 'NOSLATE_CHECK_LOAD ';
  try {
    const codeDir = env.NOSLATE_CODE_DIR || process.cwd();
    await loadExport(codeDir, env.NOSLATE_HANDLER, 'HandlerNotFound');
    if (env.NOSLATE_INITIALIZER) await loadExport(codeDir, env.NOSLATE_INITIALIZER, 'InitializerNotFound');
  } catch (err) {
    process.stderr.write(`${mark}${JSON.stringify(errorPayload(err))}\n`, () => process.exit(1));
    return;
  }
  process.exit(0);
}

// Turns a spare into the worker of the function its INIT names: the code directory as cwd, the
// function's environment as process.env (nothing of the spare's own left, NOSLATE_SPARE included)
// and what start-up derived from them derived again. Throws what INIT_ERROR reports; spare mode
// ends even then, so a spare is offered to one function only.
function assignSpare(assignment) {
  const wasSpare = spare;
  spare = false;
  if (!wasSpare) {
    const why = startedSpare ? 'was assigned a function already' : 'was not started as a spare (NOSLATE_SPARE=1)';
    throw namedError('WorkerProtocolError', `INIT carries "spare" but this worker ${why}`);
  }
  if (assignment == null) {
    throw namedError('WorkerProtocolError', `INIT without "spare" sent to a spare worker: it needs the function's environment and code directory`);
  }
  const pairs = assignment.env;
  const cwd = assignment.cwd;
  const isPair = (p) => Array.isArray(p) && p.length === 2 && typeof p[0] === 'string' && p[0] !== '' &&
    typeof p[1] === 'string';
  if (!Array.isArray(pairs) || !pairs.every(isPair)) {
    throw namedError('WorkerProtocolError', 'INIT "spare.env" must be an array of ["KEY", "value"] string pairs');
  }
  if (typeof cwd !== 'string' || !path.isAbsolute(cwd)) {
    throw namedError('WorkerProtocolError', `INIT "spare.cwd" must be an absolute path, got ${JSON.stringify(cwd)}`);
  }
  // First, as the one step that can fail for reasons of the function's own: a spare that cannot
  // enter the directory still has its own environment when it reports so.
  try {
    process.chdir(cwd);
  } catch (err) {
    // What a cold start reports when it cannot start a worker in that directory.
    throw namedError('WorkerStartFailed', `code directory ${cwd} is not usable: ${err.message}`);
  }
  for (const key of Object.keys(env)) delete env[key];
  for (const [key, value] of pairs) env[key] = value;
  readEnvironment();
  // require()'s global folders come from NODE_PATH and HOME at start-up.
  Module._initPaths();
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

// ---- The compact request head ----------------------------------------------------------------

// COMPACT_HEAD (PROTOCOL.md "compact head") carries what REQUEST_HEAD's JSON does, in fixed
// places: decoding it costs this worker a fifth of what JSON.parse of the same head does, which
// was the largest single cost of a small invocation. This worker asks for it in READY.
const COMPACT_HTTP = 0x01;
const COMPACT_DEADLINE = 0x02;
const COMPACT_TIMEOUT = 0x04;
const COMPACT_BAGGAGE = 0x08;
const COMPACT_CLIENT_IP = 0x10;
const COMPACT_ASCII = 0x20;
const COMPACT_FIXED = 28;
const COMPACT_CONTEXT_FIXED = 32;
// The context's optional strings, one presence bit each in this order; the next bit says
// whether function.initializationTimeout is set.
const CONTEXT_OPTIONAL_STRINGS = 16;

// The payload being decoded, and where in it. When all its strings are ASCII, `compactText`
// is the whole payload as one string, and each field a slice of it: one call into C++ per head
// rather than one per string, which is most of the cost of decoding.
let compactBuf = null;
let compactText = null;
let compactBase = 0;
let compactAt = 0;
let compactEnd = 0;

function compactNeed(n) {
  if (compactAt + n > compactEnd) protocolError('COMPACT_HEAD ends inside a field');
}

function compactString() {
  compactNeed(4);
  const buf = compactBuf;
  const at = compactAt;
  const len = (buf[at] | (buf[at + 1] << 8) | (buf[at + 2] << 16)) + buf[at + 3] * 0x1000000;
  compactAt = at + 4;
  compactNeed(len);
  compactAt += len;
  if (compactText === null) return buf.toString('utf8', at + 4, compactAt);
  return compactText.slice(at + 4 - compactBase, compactAt - compactBase);
}

function compactPairs(count) {
  // Each pair takes at least its two lengths: a count beyond that is refused before it is
  // allocated for.
  compactNeed(count * 8);
  const pairs = new Array(count);
  for (let i = 0; i < count; i++) {
    const name = compactString();
    pairs[i] = [name, compactString()];
  }
  return pairs;
}

// A decoded COMPACT_HEAD: the fields a REQUEST_HEAD's JSON parses to. When the head is all
// ASCII, its header pairs are made from the payload's text only when something reads
// `headers`: most handlers never do, and FC's calls carry some twenty x-fc-* headers, whose
// strings and pairs were most of what this worker allocated per invocation, all of it alive
// until the answer and so carried through young-generation collections.
class CompactHead {
  constructor(kind) {
    this.kind = kind;
    this.method = '';
    this.url = '';
    this.requestId = '';
    this.context = null;
    this.deadline = undefined;
    this.timeoutMs = undefined;
    this.clientIp = undefined;
    this.baggage = undefined;
    this._pairs = null;
    // The payload's text and where its header pairs start in it (null: decoded).
    this._text = null;
    this._at = 0;
    this._count = 0;
    // What clientIpOf would find in the headers (undefined: not looked for).
    this._headerClientIp = undefined;
  }

  get headers() {
    if (this._text !== null) {
      this._pairs = pairsFromText(this._text, this._at, this._count);
      this._text = null;
    }
    return this._pairs;
  }

  set headers(pairs) {
    this._pairs = pairs;
    this._text = null;
  }
}

// A field length of the compact layout, read from the payload's latin1 text.
function textLength(text, at) {
  return (text.charCodeAt(at) | (text.charCodeAt(at + 1) << 8) | (text.charCodeAt(at + 2) << 16))
    + text.charCodeAt(at + 3) * 0x1000000;
}

function pairsFromText(text, at, count) {
  const pairs = new Array(count);
  for (let i = 0; i < count; i++) {
    const nameLength = textLength(text, at);
    const name = text.slice(at + 4, at + 4 + nameLength);
    at += 4 + nameLength;
    const valueLength = textLength(text, at);
    pairs[i] = [name, text.slice(at + 4, at + 4 + valueLength)];
    at += 4 + valueLength;
  }
  return pairs;
}

// Checks the bounds of `count` header pairs and steps over them, leaving where they are for
// CompactHead's `headers`; on the way, finds the client address clientIpOf would read from
// them, which every invocation's context needs. Only names of those headers' lengths are
// made into strings.
function stepOverPairs(head, count) {
  compactNeed(count * 8);
  const buf = compactBuf;
  const text = compactText;
  const base = compactBase;
  head._text = text;
  head._at = compactAt - base;
  head._count = count;
  let fc = null;
  let forwarded = null;
  let real = null;
  for (let i = 0; i < count; i++) {
    let at = compactAt;
    compactNeed(4);
    const nameLength = (buf[at] | (buf[at + 1] << 8) | (buf[at + 2] << 16)) + buf[at + 3] * 0x1000000;
    const nameAt = at + 4;
    compactAt = nameAt;
    compactNeed(nameLength + 4);
    at = nameAt + nameLength;
    const valueLength = (buf[at] | (buf[at + 1] << 8) | (buf[at + 2] << 16)) + buf[at + 3] * 0x1000000;
    const valueAt = at + 4;
    compactAt = valueAt;
    compactNeed(valueLength);
    compactAt = valueAt + valueLength;
    if (nameLength !== 14 && nameLength !== 15 && nameLength !== 9) continue;
    const key = text.slice(nameAt - base, nameAt - base + nameLength).toLowerCase();
    if (key === 'x-fc-client-ip') {
      if (fc === null && valueLength > 0) fc = text.slice(valueAt - base, valueAt - base + valueLength);
    } else if (key === 'x-forwarded-for') {
      if (forwarded === null) forwarded = text.slice(valueAt - base, valueAt - base + valueLength);
    } else if (key === 'x-real-ip') {
      if (real === null) real = text.slice(valueAt - base, valueAt - base + valueLength);
    }
  }
  head._headerClientIp = clientIpFrom(fc, forwarded, real);
}

// The client's address among its headers: FC's x-fc-client-ip (the first that is not empty),
// else the first X-Forwarded-For's first hop, else the first X-Real-IP.
function clientIpFrom(fc, forwarded, real) {
  if (fc) return fc;
  if (forwarded) return forwarded.split(',')[0].trim();
  return real || null;
}

// The object a REQUEST_HEAD's JSON parses to (absent context values are null).
function decodeCompactHead(buf, start, end) {
  compactBuf = buf;
  compactAt = start;
  compactEnd = end;
  compactNeed(COMPACT_FIXED);
  const bits = buf[start];
  // Latin1 is one char per byte: a field's chars are at its bytes' offsets.
  compactText = bits & COMPACT_ASCII ? buf.toString('latin1', start, end) : null;
  compactBase = start;
  const headerCount = buf.readUInt32LE(start + 4);
  const baggageCount = buf.readUInt32LE(start + 8);
  const head = new CompactHead(bits & COMPACT_HTTP ? 'http' : 'event');
  if (bits & COMPACT_DEADLINE) head.deadline = buf.readDoubleLE(start + 12);
  if (bits & COMPACT_TIMEOUT) head.timeoutMs = buf.readDoubleLE(start + 20);
  compactAt = start + COMPACT_FIXED;
  head.method = compactString();
  head.url = compactString();
  head.requestId = compactString();
  if (bits & COMPACT_CLIENT_IP) head.clientIp = compactString();
  if (compactText === null) head.headers = compactPairs(headerCount);
  else stepOverPairs(head, headerCount);
  if (bits & COMPACT_BAGGAGE) head.baggage = compactPairs(baggageCount);
  head.context = decodeCompactContext(head.requestId);
  if (compactAt !== end) protocolError(`COMPACT_HEAD has ${end - compactAt} bytes after its fields`);
  compactBuf = null;
  compactText = null;
  return head;
}

function decodeCompactContext(requestId) {
  compactNeed(COMPACT_CONTEXT_FIXED);
  const buf = compactBuf;
  const at = compactAt;
  const present = buf.readUInt32LE(at);
  const memory = buf.readDoubleLE(at + 4);
  const timeout = buf.readDoubleLE(at + 12);
  const initializationTimeout = present & (1 << CONTEXT_OPTIONAL_STRINGS) ? buf.readDoubleLE(at + 20) : null;
  const retryCount = buf.readUInt32LE(at + 28);
  compactAt = at + COMPACT_CONTEXT_FIXED;
  const name = compactString();
  const handler = compactString();
  const v = compactOptional;
  for (let i = 0; i < CONTEXT_OPTIONAL_STRINGS; i++) v[i] = present & (1 << i) ? compactString() : null;
  return {
    requestId,
    credentials: { accessKeyId: v[0], accessKeySecret: v[1], securityToken: v[2] },
    function: { name, handler, memory, timeout, initializer: v[3], initializationTimeout },
    service: { name: v[4], logProject: v[5], logStore: v[6], qualifier: v[7], versionId: v[8] },
    region: v[9],
    accountId: v[10],
    retryCount,
    tracing: {
      openTracingSpanContext: v[11],
      openTracingSpanBaggages: v[12],
      jaegerEndpoint: v[13],
      traceparent: v[14],
      tracestate: v[15],
    },
  };
}

// The context's optional strings, reused by every decode.
const compactOptional = new Array(CONTEXT_OPTIONAL_STRINGS).fill(null);

// ---- Handler context -----------------------------------------------------------------------

// The FC context of an invocation or of the initializer (PROTOCOL.md "context"), plus a logger:
// one shape for both, whatever the INIT or request head carries, a missing value being null.
// Deliberately nothing from process.env: credentials travel per request.
class Context {
  constructor(context, requestId, clientIp) {
    const c = context || {};
    const cred = c.credentials || {};
    const fn = c.function || {};
    const svc = c.service || {};
    this.requestId = c.requestId || requestId || '';
    this.credentials = {
      accessKeyId: valueOrNull(cred.accessKeyId),
      accessKeySecret: valueOrNull(cred.accessKeySecret),
      securityToken: valueOrNull(cred.securityToken),
    };
    this.function = {
      name: valueOrNull(fn.name),
      handler: valueOrNull(fn.handler),
      memory: valueOrNull(fn.memory),
      timeout: valueOrNull(fn.timeout),
      initializer: valueOrNull(fn.initializer),
      initializationTimeout: valueOrNull(fn.initializationTimeout),
    };
    this.service = {
      name: valueOrNull(svc.name),
      logProject: valueOrNull(svc.logProject),
      logStore: valueOrNull(svc.logStore),
      qualifier: valueOrNull(svc.qualifier),
      versionId: valueOrNull(svc.versionId),
    };
    this.region = valueOrNull(c.region);
    this.accountId = valueOrNull(c.accountId);
    this.retryCount = c.retryCount || 0;
    const tr = c.tracing || {};
    this.tracing = {
      openTracingSpanContext: valueOrNull(tr.openTracingSpanContext),
      openTracingSpanBaggages: parseBaggages(tr.openTracingSpanBaggages),
      jaegerEndpoint: valueOrNull(tr.jaegerEndpoint),
      traceparent: valueOrNull(tr.traceparent),
      tracestate: valueOrNull(tr.tracestate),
    };
    this.clientIP = clientIp || null;
    this.logger = new Logger(this.requestId);
  }
}

function valueOrNull(value) {
  return value === undefined ? null : value;
}

// FC's baggage header is base64 of a JSON object; FC's runtime hands handlers the object, and
// an empty one when the header is absent or not that.
function parseBaggages(encoded) {
  if (typeof encoded !== 'string' || encoded === '') return {};
  try {
    const value = JSON.parse(Buffer.from(encoded, 'base64').toString('utf8'));
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? value : {};
  } catch {
    return {};
  }
}

// The context of an INIT or a request head, built the same way for both.
function contextOf(msg) {
  return new Context(msg.context, msg.requestId, clientIpOf(msg));
}

// The client's address: the runtime's clientIp when it sends one, else FC's x-fc-client-ip, else
// the first X-Forwarded-For hop, else X-Real-IP; null when none is there (an INIT has no headers).
function clientIpOf(head) {
  if (head == null) return null;
  if (typeof head.clientIp === 'string' && head.clientIp) return head.clientIp;
  if (head._headerClientIp !== undefined) return head._headerClientIp;
  const headers = Array.isArray(head.headers) ? head.headers : [];
  let fc = null;
  let forwarded = null;
  let real = null;
  for (const [name, value] of headers) {
    const key = name.toLowerCase();
    if (key === 'x-fc-client-ip' && fc === null && value) fc = value;
    else if (key === 'x-forwarded-for' && forwarded === null) forwarded = value;
    else if (key === 'x-real-ip' && real === null) real = value;
  }
  return clientIpFrom(fc, forwarded, real);
}

// The request id of the invocation (or initializer) whose code is running: console lines written
// inside it carry the id, whatever other invocations interleave with it on this worker. The store
// is the id string itself, so entering it allocates nothing per request beyond the run() frame.
const requestIds = new AsyncLocalStorage();

// `<ISO time> <requestId> [LEVEL] message`, as FC's runtimes write function logs. The record is
// built whole and written with one write(): a multi-line message stays one record, and since a
// worker's stdout and stderr are its own fds (a file, or a pipe the runtime relays to its console
// line by line), no other worker's line can land inside it.
function logRecord(requestId, level, args) {
  return `${new Date().toISOString()} ${requestId} [${level}] ${util.format(...args)}\n`;
}

// console.log/info/debug go to stdout and console.warn/error to stderr, as in Node; inside an
// invocation each call is one record with the request id, outside one the original output is kept.
function patchConsole() {
  const methods = [
    ['log', 'INFO', process.stdout], ['info', 'INFO', process.stdout],
    ['debug', 'DEBUG', process.stdout], ['warn', 'WARN', process.stderr],
    ['error', 'ERROR', process.stderr],
  ];
  for (const [name, level, stream] of methods) {
    const original = console[name];
    console[name] = function (...args) {
      const requestId = requestIds.getStore();
      if (requestId) stream.write(logRecord(requestId, level, args));
      else original.apply(console, args);
    };
  }
}

// Lines like FC's own Node.js runtime: `<ISO time> <requestId> [LEVEL] message`.
class Logger {
  constructor(requestId) {
    this.requestId = requestId;
  }

  _log(level, args) {
    process.stdout.write(logRecord(this.requestId, level, args));
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
    this._reqHead = head;
    this._headers = null; // built on first use: most handlers never look
    this._rawHeaders = null;
    this._res = res;
    this._bodyEnded = false;
    // Body bytes received and not yet returned as credit (some may still sit in our buffer).
    this._unacked = 0;
    // As on Node's IncomingMessage: the whole body arrived; the body was cut off (CANCEL).
    this.complete = false;
    this.aborted = false;
  }

  get headers() {
    if (this._headers === null) this._headers = headersObject(this._reqHead.headers || []);
    return this._headers;
  }

  set headers(value) {
    this._headers = value;
  }

  get rawHeaders() {
    if (this._rawHeaders === null) this._rawHeaders = (this._reqHead.headers || []).flat();
    return this._rawHeaders;
  }

  set rawHeaders(value) {
    this._rawHeaders = value;
  }

  // FC's HTTP request fields (the fc-http style); computed on use.

  get path() {
    const q = this.url.indexOf('?');
    return q < 0 ? this.url : this.url.slice(0, q);
  }

  get queries() {
    const q = this.url.indexOf('?');
    const queries = {};
    if (q < 0) return queries;
    for (const [key, value] of new URLSearchParams(this.url.slice(q + 1))) {
      const prev = queries[key];
      if (prev === undefined) queries[key] = value;
      else if (Array.isArray(prev)) prev.push(value);
      else queries[key] = [prev, value];
    }
    return queries;
  }

  // The client's address as FC gives it (see clientIpOf).
  get clientIP() {
    return clientIpOf(this._reqHead) || '';
  }

  // The whole body as a Buffer: a promise, or node-style through `callback(err, body)`.
  getBody(callback) {
    const body = new Promise((resolve, reject) => {
      if (this.readableEnded) {
        resolve(EMPTY);
        return;
      }
      const chunks = [];
      this.on('data', (chunk) => chunks.push(chunk));
      this.once('end', () => resolve(Buffer.concat(chunks)));
      this.once('error', reject);
      this.once('close', () => {
        if (!this.readableEnded) reject(namedError('Cancelled', 'the request was cancelled before its body ended'));
      });
    });
    if (typeof callback === 'function') body.then((b) => callback(null, b), (err) => callback(err));
    return body;
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

  // As Node's IncomingMessage does: an error is emitted only to 'error' listeners, so that a
  // request aborted under a handler that never listens cannot become an uncaught exception. It is
  // still the stream's error (req.errored, async iteration, pipeline).
  _destroy(err, cb) {
    cb(err && this.listenerCount('error') > 0 ? err : null);
  }

  _grant() {
    if (this._bodyEnded || this._res._done) return;
    const consumed = this._unacked - this.readableLength;
    if (consumed >= GRANT_THRESHOLD) {
      this._unacked -= consumed;
      sendU32(this._res._id, WINDOW_OUT, consumed);
      flush();
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
    this._credit = responseWindow;
    // A body chunk waiting for credit: the chunk, how far it was sent, its write callback.
    this._waiting = null;
    this._waitingAt = 0;
    this._waitingCb = null;
    // Whether some of the waiting chunk went by reference (its write completes after the flush).
    this._waitingByReference = false;
    // Called after a CANCEL (aworker aborts the request's signal with it).
    this._onCancel = null;
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
    sendResponseHead(this._id, flags, this.statusCode, headers);
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
      if (n >= REFERENCE_MIN) {
        sendBytesByReference(this._id, RESPONSE_BODY, 0, chunk, at, at + n);
        this._waitingByReference = true;
      } else {
        sendBytes(this._id, RESPONSE_BODY, 0, chunk, at, at + n);
      }
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
    if (this._waitingByReference) {
      this._waitingByReference = false;
      referenceCallbacks.push(cb);
      // Its last frames may have gone out already (an abort after a wait for credit).
      if (!flushScheduled) {
        flushScheduled = true;
        setImmediate(flush);
      }
    } else {
      cb();
    }
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
// With `cancelled` (the reason of the runtime's CANCEL), a request body the handler has not read
// to its end is lost, and req says so as Node's http does when a client aborts: 'aborted', then
// 'error' (ECONNRESET, for its listeners), then 'close'.
function abort(res, cancelled) {
  closeStream(res);
  const req = res._req;
  const bodyLost = cancelled !== undefined && !req.readableEnded && !req.destroyed;
  if (bodyLost) {
    req.aborted = true;
    req.destroy(abortedError(cancelled));
  } else {
    req.destroy();
  }
  res.destroy();
  if (res._waiting !== null) res._releaseWaiting();
  // After the destroy, so that a listener writing to res cannot reach the wire; before 'error'
  // and 'close', which the destroy emits on the next tick.
  if (bodyLost) req.emit('aborted');
}

// Node's error for a request whose client went away, with the runtime's reason.
function abortedError(reason) {
  const err = new Error('aborted');
  err.code = 'ECONNRESET';
  err.reason = reason;
  return err;
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
  if (serve === null) protocolError(`REQUEST_HEAD for stream ${stream} before INIT_DONE`);
  if (stream === 0 || streams.has(stream)) protocolError(`REQUEST_HEAD reuses open stream id ${stream}`);
  const ctx = contextOf(head);
  const res = new Response(stream, ctx.requestId);
  const req = new Request(res, head);
  res._req = req;
  if (flags & FLAG_END) {
    req._bodyEnded = true;
    req.complete = true;
    req.push(null);
  }
  streams.set(stream, res);
  requestIds.run(ctx.requestId, serve, ctx, req, res, head);
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
    req.complete = true;
    req.push(null);
  }
}

function onWindow(stream, increment) {
  const res = streams.get(stream);
  if (res === undefined) return;
  res._credit += increment;
  if (res._waiting !== null) res._pump();
}

// CANCEL ends both directions: the response is dropped, and a request body that has not ended
// never will (the deadline passed, the client went away, or the runtime refused the rest of the
// body: too large, or broken chunked framing).
function onCancel(stream, reason) {
  const res = streams.get(stream);
  if (res === undefined) return; // the terminal frame already went out
  const why = reason || 'no reason given';
  sendJson(stream, RESPONSE_ERROR, 0, {
    errorMessage: `invocation cancelled: ${why}`,
    errorType: 'Cancelled',
    stackTrace: [],
  });
  abort(res, why);
  if (res._onCancel !== null) res._onCancel(reason);
}

// ---- Noslate style: handler(ctx, req, res) -------------------------------------------------

function serveNoslate(ctx, req, res) {
  let result;
  try {
    result = handler(ctx, req, res);
  } catch (err) {
    fail(res, err);
    return;
  }
  if (result !== null && typeof result === 'object' && typeof result.then === 'function') {
    result.then((value) => checkNoslateResult(res, value), (err) => fail(res, err));
  } else {
    checkNoslateResult(res, result);
  }
}

// A Noslate handler answers through res; what it returns is ignored. An FC event handler
// (event, context) left at the default style returns its answer instead and never touches res, so
// the invocation would hang until its timeout with nothing logged: fail it at once, naming the
// setting. Only values an FC handler returns as its answer count (strings, numbers, booleans,
// buffers, arrays, plain objects): an expression-bodied Noslate handler may well return whatever
// its last call gives back (req.on(...), req.pipe(res), a timer) and answer later.
function checkNoslateResult(res, value) {
  if (res._done || !looksLikeAnswer(value) || responseTouched(res)) return;
  const what = Array.isArray(value) ? 'an array' : value === null ? 'null' : `a ${Buffer.isBuffer(value) ? 'Buffer' : typeof value}`;
  fail(res, namedError('WrongHandlerStyle',
    `the handler returned ${what} but never used res: with "handlerStyle": "noslate" (the default for ` +
    'runtime nodejs) a handler(ctx, req, res) answers through res (res.end(...)) and its return value ' +
    'is ignored. For an FC handler(event, context) that returns its answer, set "handlerStyle": ' +
    '"fc-event" in the function profile ("fc-http" for handler(req, resp, context))'));
}

function looksLikeAnswer(value) {
  if (value === undefined) return false;
  if (value === null) return false;
  const type = typeof value;
  if (type === 'string' || type === 'number' || type === 'boolean' || type === 'bigint') return true;
  if (type !== 'object') return false;
  if (Array.isArray(value) || value instanceof Uint8Array || value instanceof ArrayBuffer) return true;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

// Whether the handler did anything with res: a header, a status, a write or end, a pipe into it,
// a listener of its own.
function responseTouched(res) {
  return res._head !== HEAD_NONE || res._headers !== null || res.statusCode !== 200 ||
    res.writableEnded || res.writableLength > 0 || res.destroyed || res.writableCorked > 0 ||
    res.listenerCount('error') > 1 || res.listenerCount('finish') > 0 || res.listenerCount('close') > 0 ||
    res.listenerCount('unpipe') > 0 || res.listenerCount('drain') > 0;
}

// ---- FC event style: handler(event, context[, callback]) -----------------------------------
//
// FC's Node.js event handler. `event` is the request body as a Buffer (for event and HTTP-trigger
// invocations alike); the handler answers through the callback or, when it returns a promise,
// with what that resolves to, whichever comes first. The result is the 200 body: a string or
// Buffer as is, undefined/null as nothing, anything else as JSON.

function readWhole(req, done) {
  if (req.readableEnded || (req._bodyEnded && req.readableLength === 0)) {
    done(EMPTY);
    return;
  }
  const chunks = [];
  let size = 0;
  req.on('data', (chunk) => {
    chunks.push(chunk);
    size += chunk.length;
  });
  req.on('end', () => done(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size)));
}

const EMPTY = Buffer.alloc(0);

function resultBody(data) {
  if (data === undefined || data === null) return EMPTY;
  if (typeof data === 'string' || Buffer.isBuffer(data)) return data;
  if (data instanceof Uint8Array) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (data instanceof ArrayBuffer) return Buffer.from(data);
  const json = JSON.stringify(data);
  return json === undefined ? EMPTY : json;
}

function serveFcEvent(ctx, req, res, head) {
  const httpTrigger = head.kind === 'http';
  readWhole(req, (body) => {
    if (res._done) return; // cancelled while the body arrived
    const event = httpTrigger ? Buffer.from(JSON.stringify(httpTriggerEvent(ctx, head, body))) : body;
    callFcHandler(handler, [event, ctx], res, (data) => {
      if (res._done) return;
      try {
        if (httpTrigger) answerHttpTrigger(res, data);
        else res.end(resultBody(data));
      } catch (err) {
        fail(res, err);
      }
    });
  });
}

// Content types whose bodies an HTTP-trigger event carries as text; any other body is base64.
const TEXT_TYPE = /^(text\/|application\/(json|xml|javascript|x-www-form-urlencoded)\b|[^;]*\+(json|xml)\b)/i;

// FC 3.0's HTTP-trigger event: what an event handler reached through an HTTP trigger receives
// (as a JSON Buffer, like any event). Repeated headers and query parameters are joined with ', '
// and ',' as FC does; the header names keep the client's case.
function httpTriggerEvent(ctx, head, body) {
  const url = head.url || '/';
  const q = url.indexOf('?');
  const rawPath = q < 0 ? url : url.slice(0, q);
  const headers = {};
  let contentType = '';
  let host = '';
  let userAgent = '';
  for (const [name, value] of head.headers || []) {
    headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
    const key = name.toLowerCase();
    if (key === 'content-type') contentType = value;
    else if (key === 'host') host = value;
    else if (key === 'user-agent') userAgent = value;
  }
  const queryParameters = {};
  if (q >= 0) {
    for (const [key, value] of new URLSearchParams(url.slice(q + 1))) {
      queryParameters[key] = queryParameters[key] === undefined ? value : `${queryParameters[key]},${value}`;
    }
  }
  const text = body.length === 0 || TEXT_TYPE.test(contentType);
  const domainName = host.replace(/:\d+$/, '');
  const now = new Date();
  return {
    version: 'v1',
    rawPath,
    headers,
    queryParameters,
    body: text ? body.toString('utf8') : body.toString('base64'),
    isBase64Encoded: !text,
    requestContext: {
      accountId: ctx.accountId || '',
      domainName,
      domainPrefix: domainName.split('.')[0],
      http: {
        method: head.method || 'GET',
        path: rawPath,
        protocol: 'HTTP/1.1',
        sourceIp: clientIpOf(head) || '',
        userAgent,
      },
      requestId: ctx.requestId,
      time: now.toISOString(),
      timeEpoch: String(now.getTime()),
    },
  };
}

// Standard base64, padded or not.
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$/;

// An HTTP-trigger event handler's result as the HTTP response, as FC does it: an object with a
// statusCode is {statusCode, headers, body, isBase64Encoded}; anything else is a 200 whose body
// is the result (strings and Buffers as is, other values as JSON).
function answerHttpTrigger(res, data) {
  if (data !== null && typeof data === 'object' && !Buffer.isBuffer(data) && !(data instanceof Uint8Array)
      && !Array.isArray(data) && data.statusCode !== undefined) {
    const status = data.statusCode;
    if (!Number.isInteger(status) || status < 100 || status > 999) {
      throw namedError('InvalidResponse', `statusCode must be an integer HTTP status, got ${JSON.stringify(status)}`);
    }
    let body = data.body;
    if (data.isBase64Encoded) {
      // Buffer.from(.., 'base64') skips what is not base64: check first, so that a mistake is
      // reported rather than answered with garbled bytes.
      if (typeof body !== 'string' || !BASE64.test(body)) {
        const what = typeof body === 'string' ? 'a string that is not base64' : typeof body;
        throw namedError('InvalidResponse', `body must be a base64 string when isBase64Encoded is true, got ${what}`);
      }
      body = Buffer.from(body, 'base64');
    }
    res.statusCode = status;
    const headers = data.headers || {};
    for (const name of Object.keys(headers)) res.setHeader(name, String(headers[name]));
    res.end(resultBody(body));
    return;
  }
  if (data !== null && data !== undefined && typeof data === 'object' && !Buffer.isBuffer(data)
      && !(data instanceof Uint8Array) && !(data instanceof ArrayBuffer) && !res.hasHeader('content-type')) {
    res.setHeader('content-type', 'application/json');
  }
  res.end(resultBody(data));
}

// Calls fn(...args, callback) and hands its result to `answer` (or its error to fail()).
function callFcHandler(fn, args, res, answer) {
  let settled = false;
  const callback = (err, data) => {
    if (settled) return;
    settled = true;
    if (err !== undefined && err !== null) fail(res, err);
    else answer(data);
  };
  let result;
  try {
    result = fn(...args, callback);
  } catch (err) {
    if (settled) fail(res, err); // logged: the answer already went out
    else {
      settled = true;
      fail(res, err);
    }
    return;
  }
  if (isThenable(result)) {
    result.then((data) => callback(null, data), (err) => {
      if (settled) fail(res, err); // logged only
      else callback(err === undefined || err === null ? new Error(`handler rejected with ${err}`) : err);
    });
  }
}

// ---- FC HTTP style: handler(req, resp, context) --------------------------------------------
//
// FC's Node.js HTTP handler. `req` is the request body as a Readable (getRawBody(req) works) with
// FC's fields: headers, path, queries, method, clientIP, url, and getBody(). `resp` is FC's
// response: setStatusCode, setHeader, deleteHeader, send(body) with body a string, a Buffer, a
// Readable or a web ReadableStream (streamed to the client as it is produced).

class FcResponse {
  constructor(res) {
    this._res = res;
    this._sent = false;
  }

  setStatusCode(code) {
    const status = Number(code);
    if (!Number.isInteger(status) || status < 100 || status > 999) {
      throw new RangeError(`invalid status code: ${code}`);
    }
    this._res.statusCode = status;
  }

  setHeader(name, value) {
    this._res.setHeader(name, typeof value === 'number' ? String(value) : value);
  }

  getHeader(name) {
    return this._res.getHeader(name);
  }

  hasHeader(name) {
    return this._res.hasHeader(name);
  }

  deleteHeader(name) {
    this._res.removeHeader(name);
  }

  get headersSent() {
    return this._res.headersSent;
  }

  send(body) {
    if (this._sent) throw new Error('resp.send() was already called for this request');
    this._sent = true;
    const res = this._res;
    if (res._done) return;
    if (body !== null && typeof body === 'object' && typeof body.pipe === 'function') {
      body.once('error', (err) => fail(res, err));
      body.pipe(res);
      return;
    }
    if (body !== null && typeof body === 'object' && typeof body.getReader === 'function') {
      pumpWebBody(res, body.getReader(), false);
      return;
    }
    res.end(resultBody(body));
  }
}

function serveFcHttp(ctx, req, res) {
  let result;
  try {
    result = handler(req, new FcResponse(res), ctx);
  } catch (err) {
    fail(res, err);
    return;
  }
  if (isThenable(result)) result.then(undefined, (err) => fail(res, err));
}

// ---- aworker: addEventListener('fetch' | 'install', listener) ------------------------------
//
// aworker's Service-Worker-style API on stock Node.js. The source file runs as a script (CommonJS,
// or an ES module for .mjs) with a global addEventListener. On INIT the 'install' listeners run and
// their waitUntil() promises are awaited: that is the initializer. Each invocation is a FetchEvent
// whose `request` is a WHATWG Request with a streaming body, answered by respondWith(Response or
// a promise of one); the Response body is streamed to the client chunk by chunk.

// Node's fetch classes, looked up only when an aworker function starts: merely touching
// globalThis.Request loads undici, which costs every request of the worker ~2.5 µs of CPU
// (measured on the Noslate-style hello handler), so the other styles never do.
let WebRequest = null;
let WebResponse = null;
let WebHeaders = null;

const listeners = { fetch: [], install: [] };

function addEventListener(type, listener, options) {
  if (listener === null || listener === undefined) return;
  const list = listeners[type];
  if (list === undefined) return; // other events never fire here
  if (list.some((l) => l.listener === listener)) return;
  const once = options !== null && typeof options === 'object' && options.once === true;
  list.push({ listener, once });
}

function removeEventListener(type, listener) {
  const list = listeners[type];
  if (list === undefined) return;
  const at = list.findIndex((l) => l.listener === listener);
  if (at >= 0) list.splice(at, 1);
}

function invalidState(message) {
  return new DOMException(message, 'InvalidStateError');
}

class ExtendableEvent extends Event {
  constructor(type) {
    super(type);
    this._dispatching = true;
    this._stopped = false;
    this._lifetime = [];
  }

  // Extends the event's lifetime: an install event's promises must settle before the worker
  // serves; a fetch event's keep the worker from exiting at shutdown until they settle.
  waitUntil(promise) {
    const p = Promise.resolve(promise);
    if (this._lifetime !== null) this._lifetime.push(p);
    else trackBackground(p, this);
  }

  stopImmediatePropagation() {
    this._stopped = true;
    super.stopImmediatePropagation();
  }
}

class InstallEvent extends ExtendableEvent {
  constructor(ctx) {
    super('install');
    this.context = ctx;
  }
}

class FetchEvent extends ExtendableEvent {
  constructor(ctx, req, res, head) {
    super('fetch');
    this._lifetime = null; // fetch events hand waitUntil() promises to the background
    this._req = req;
    this._res = res;
    this._head = head;
    this._request = null;
    this._responded = false;
    this._response = undefined;
    // Not in the Service Worker API: FC's context of this invocation.
    this.context = ctx;
    this.requestId = ctx.requestId;
  }

  get request() {
    if (this._request === null) this._request = webRequest(this._req, this._res, this._head);
    return this._request;
  }

  respondWith(response) {
    if (!this._dispatching) throw invalidState('respondWith() must be called synchronously in the fetch listener');
    if (this._responded) throw invalidState('respondWith() was already called');
    this._responded = true;
    this._response = response;
    this.stopImmediatePropagation();
  }
}

function trackBackground(promise, event) {
  backgroundTasks += 1;
  promise.then(undefined, (err) => {
    const id = event instanceof FetchEvent ? event.requestId : 'install';
    logWorker(`request ${id}: waitUntil() promise rejected: ${err instanceof Error ? err.stack : util.inspect(err)}`);
  }).finally(() => {
    backgroundTasks -= 1;
    if (shuttingDown) maybeExit();
  });
}

// Calls the listeners of one event in order, as EventTarget does, but with their exceptions and
// rejections handed to `onError` instead of being reported asynchronously.
function fireEvent(event, list, onError) {
  for (const entry of list.slice()) {
    if (entry.once) removeEventListener(event.type, entry.listener);
    const l = entry.listener;
    try {
      const result = typeof l === 'function' ? l.call(globalThis, event) : l.handleEvent(event);
      if (isThenable(result)) result.then(undefined, onError);
    } catch (err) {
      onError(err);
    }
    if (event._stopped) break;
  }
  event._dispatching = false;
}

async function initAworker(codeDir, ctx) {
  const sourceFile = env.NOSLATE_SOURCE_FILE;
  if (!sourceFile) throw namedError('HandlerNotFound', 'NOSLATE_SOURCE_FILE is not set (sourceFile of an aworker function)');
  const resolved = path.resolve(codeDir, sourceFile);
  if (!fs.existsSync(resolved)) throw namedError('HandlerNotFound', `source file ${resolved} does not exist`);
  WebRequest = globalThis.Request;
  WebResponse = globalThis.Response;
  WebHeaders = globalThis.Headers;
  globalThis.addEventListener = addEventListener;
  globalThis.removeEventListener = removeEventListener;
  globalThis.FetchEvent = FetchEvent;
  globalThis.ExtendableEvent = ExtendableEvent;
  if (globalThis.self === undefined) globalThis.self = globalThis;
  await loadModule(resolved);
  if (listeners.fetch.length === 0) {
    throw namedError('HandlerNotFound', `${resolved} registered no 'fetch' event listener (addEventListener('fetch', ...))`);
  }
  const event = new InstallEvent(ctx);
  let failed = null;
  fireEvent(event, listeners.install, (err) => { if (failed === null) failed = err; });
  // waitUntil() may be called again while the first promises run: wait for those too.
  const lifetime = event._lifetime;
  for (let awaited = 0; failed === null && awaited < lifetime.length;) {
    const batch = lifetime.slice(awaited);
    awaited = lifetime.length;
    await Promise.all(batch);
  }
  event._lifetime = null;
  if (failed !== null) throw failed;
}

// The WHATWG Request of an invocation. Its body is a ReadableStream pulled from the stream's
// Readable, so request credit goes back to the runtime only as the function reads.
function webRequest(req, res, head) {
  const headers = new WebHeaders();
  for (const [name, value] of head.headers || []) {
    try {
      headers.append(name, value);
    } catch {
      // A value fetch's Headers refuses (a control character): leave it out.
    }
  }
  const method = head.method || 'GET';
  const init = { method, headers, duplex: 'half' };
  const bodyless = method === 'GET' || method === 'HEAD';
  if (bodyless) req.resume(); // a body on GET is not offered to the function; drain it
  else if (!(req._bodyEnded && req.readableLength === 0)) init.body = webBody(req);
  const controller = new AbortController();
  init.signal = controller.signal;
  res._onCancel = (reason) => controller.abort(new DOMException(`invocation cancelled: ${reason || 'no reason given'}`, 'AbortError'));
  const url = head.url || '/';
  let absolute;
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) absolute = url;
  else {
    const host = req.headers.host;
    absolute = `http://${typeof host === 'string' && /^[A-Za-z0-9.:[\]_-]+$/.test(host) ? host : 'localhost'}${url.startsWith('/') ? '' : '/'}${url}`;
  }
  try {
    return new WebRequest(absolute, init);
  } catch {
    return new WebRequest(`http://localhost${url.startsWith('/') ? '' : '/'}${url}`, init);
  }
}

// A ReadableStream over the request Readable with no buffer of its own (highWaterMark 0): a chunk
// is taken from the Readable (returning its credit) only when the function asks for one.
function webBody(req) {
  let wake = null;
  const onEvent = () => {
    if (wake !== null) {
      const w = wake;
      wake = null;
      w();
    }
  };
  let listening = false;
  const pull = (controller) => {
    const chunk = req.read();
    if (chunk !== null) {
      controller.enqueue(chunk);
      return undefined;
    }
    if (req.readableEnded) {
      controller.close();
      return undefined;
    }
    if (req.destroyed) {
      controller.error(new DOMException('the invocation was cancelled', 'AbortError'));
      return undefined;
    }
    if (!listening) {
      listening = true;
      req.on('readable', onEvent);
      req.on('end', onEvent);
      req.on('close', onEvent);
    }
    return new Promise((resolve) => { wake = resolve; }).then(() => pull(controller));
  };
  return new ReadableStream({
    pull,
    cancel() {
      req.destroy();
    },
  }, { highWaterMark: 0 });
}

function serveFetch(ctx, req, res, head) {
  const event = new FetchEvent(ctx, req, res, head);
  const onError = (err) => fail(res, err);
  fireEvent(event, listeners.fetch, onError);
  if (res._done) return; // a listener threw
  if (!event._responded) {
    fail(res, namedError('Error', 'no fetch listener called event.respondWith() (it must be called synchronously, before any await; pass it a promise of the Response)'));
    return;
  }
  const response = event._response;
  if (response instanceof WebResponse) {
    sendWebResponse(res, response);
  } else {
    Promise.resolve(response).then((r) => sendWebResponse(res, r), onError);
  }
}

function sendWebResponse(res, response) {
  try {
    startWebResponse(res, response);
  } catch (err) {
    fail(res, err);
  }
}

function startWebResponse(res, response) {
  if (!(response instanceof WebResponse)) {
    fail(res, new TypeError(`respondWith() needs a Response, got ${util.inspect(response, { depth: 0 })}`));
    return;
  }
  if (res._done) {
    if (response.body !== null) response.body.cancel().catch(() => {});
    return;
  }
  res.statusCode = response.status;
  if (response.statusText) res.statusMessage = response.statusText;
  const headers = response.headers;
  let cookies = null;
  for (const [name, value] of headers) {
    if (name === 'set-cookie') cookies = cookies || setCookies(headers, value);
    else res.setHeader(name, value);
  }
  if (cookies !== null) res.setHeader('set-cookie', cookies);
  if (response.body === null) {
    res.end();
    return;
  }
  pumpWebBody(res, response.body.getReader(), true);
}

// Every Set-Cookie value of a Headers, which iteration joins with ", " (a comma that a cookie's
// Expires holds too). Node 20 has getSetCookie(); Node 18's undici keeps them in its header list.
function setCookies(headers, joined) {
  if (typeof headers.getSetCookie === 'function') return headers.getSetCookie();
  for (const key of Object.getOwnPropertySymbols(headers)) {
    const list = key.description === 'headers list' ? headers[key] : null;
    if (list !== null && typeof list === 'object' && Array.isArray(list.cookies)) {
      return list.cookies.map((c) => (Array.isArray(c) ? String(c[1]) : String(c)));
    }
  }
  return [joined];
}

const TURN_END = Symbol('turn end');

function turnEnd() {
  return new Promise((resolve) => setImmediate(resolve, TURN_END));
}

function waitDrain(res) {
  if (res.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

function asBuffer(chunk) {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (typeof chunk === 'string') return Buffer.from(chunk);
  if (ArrayBuffer.isView(chunk)) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  if (chunk instanceof ArrayBuffer) return Buffer.from(chunk);
  throw new TypeError(`a response body chunk must be a Uint8Array, got ${util.inspect(chunk, { depth: 0 })}`);
}

// Streams a web ReadableStream into the response. A body that is complete within the current
// loop turn (a string, a buffer) goes out whole with a Content-Length; any other is streamed, each
// chunk as soon as it is produced, within the stream's credit.
async function pumpWebBody(res, reader, peek) {
  let finished = false;
  res.once('close', () => {
    if (!finished) reader.cancel().catch(() => {});
  });
  try {
    let r = await reader.read();
    if (!r.done && peek && !res.hasHeader('content-length')) {
      const first = asBuffer(r.value);
      const next = reader.read();
      const ready = await Promise.race([next, turnEnd()]);
      if (ready !== TURN_END && ready.done) {
        finished = true;
        if (!res._done) res.end(first);
        return;
      }
      if (res._done) return;
      if (!res.write(first)) await waitDrain(res);
      r = ready === TURN_END ? await next : ready;
    }
    while (!r.done) {
      if (res._done) return;
      if (!res.write(asBuffer(r.value))) await waitDrain(res);
      r = await reader.read();
    }
    finished = true;
    if (!res._done) res.end();
  } catch (err) {
    finished = true;
    fail(res, err);
    reader.cancel(err).catch(() => {});
  }
}

// ---- Start ---------------------------------------------------------------------------------

patchConsole();
process.on('uncaughtException', (err) => crash('uncaught exception', err));
process.on('unhandledRejection', (reason) => crash('unhandled rejection', reason));

input.on('end', onEof);
input.on('error', (err) => crash('read from runtime failed', err));
output.on('error', (err) => crash('write to runtime failed', err));

const ready = {
  pid: process.pid,
  runtime: runtimeName,
  version: process.version,
  protocol: 1,
  compactHead: true,
};
// Where a debugger listens, if one is open: an inspect worker's, or one a flag opened that the
// runtime then refuses (only it opens debuggers).
const debuggerUrl = require('inspector').url();
if (debuggerUrl) ready.inspector = debuggerUrl;
if (spare) {
  ready.spare = true;
  // Everything else the bootstrap uses, whatever the style, is loaded above. The ES module loader
  // (what loadModule() needs for an ES module handler, and import() in user code) loads on first
  // use, ~3 ms that a spare pays before READY rather than in the INIT; it costs the requests of
  // CommonJS functions nothing. Not so the fetch classes (aworker): loading undici takes ~16 ms
  // but also costs every request of the other styles ~3 µs of CPU, so they stay lazy.
  const sendReady = () => sendJson(0, READY, 0, ready);
  import('node:fs').then(sendReady, sendReady);
} else {
  sendJson(0, READY, 0, ready);
}
