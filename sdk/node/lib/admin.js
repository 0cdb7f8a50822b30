'use strict';
// The transport: HTTP/1.1 over the runtime's admin socket (`NOSLATE_WORKDIR/noslated.sock`),
// kept alive between calls. JSON calls for configuration and health; streamed invocations whose
// description travels in `x-noslate-*` headers (the runtime's src/admin/invocation.rs).

const http = require('http');
const os = require('os');
const path = require('path');
const errors = require('./errors');
const { Pool } = require('./wire');

// Where the runtime puts its admin socket, as it computes it: `NOSLATE_WORKDIR`, else
// `$TMPDIR/noslate`.
function defaultSocketPath() {
  const workdir = process.env.NOSLATE_WORKDIR || path.join(process.env.TMPDIR || '/tmp', 'noslate');
  return path.join(workdir, 'noslated.sock');
}

// The largest error body read from the runtime.
const MAX_ERROR_BODY = 1 << 20;

// A socket that cannot be reached means the runtime is not there (yet, or any more).
function isUnreachable(err) {
  return ['ENOENT', 'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ENOTSOCK'].includes(err && err.code);
}

// No runtime listens on the socket: there is nothing to send to.
function cannotConnect(err) {
  return ['ENOENT', 'ECONNREFUSED', 'ENOTSOCK'].includes(err && err.code);
}

function readAll(stream, limit) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    stream.on('data', (chunk) => {
      size += chunk.length;
      if (size <= limit) chunks.push(chunk);
    });
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    stream.on('error', reject);
  });
}

function parseJson(bytes) {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch {
    return null;
  }
}

class AdminTransport {
  constructor(socketPath, maxConnections, busyPoll) {
    this.socketPath = socketPath;
    this.agent = new http.Agent({ keepAlive: true });
    this.pool = new Pool(socketPath, maxConnections);
    this.busyPoll = busyPoll;
  }

  close() {
    this.agent.destroy();
    this.pool.close();
  }

  // In use again after close(): connections are kept alive again.
  open() {
    this.pool.closed = false;
  }

  // One JSON call; resolves to the parsed answer, rejects with the runtime's error (its
  // `errorType` as the name), `noDataPlane` when the runtime cannot be reached, or a deadline
  // error after `timeoutMs`.
  call(method, urlPath, { body, headers = {}, timeoutMs = 30000 } = {}) {
    if (!(timeoutMs > 0)) {
      // A deadline that has already passed: nothing is sent (gRPC's behaviour for Noslate).
      return Promise.reject(errors.deadlineExceeded(`${method} ${urlPath} with a deadline of ${timeoutMs} ms`));
    }
    return new Promise((resolve, reject) => {
      const payload = body === undefined ? null : Buffer.from(JSON.stringify(body));
      const req = http.request({
        socketPath: this.socketPath,
        agent: this.agent,
        method,
        path: urlPath,
        headers: {
          ...headers,
          ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
        },
      });
      const timer = setTimeout(() => {
        req.destroy(errors.deadlineExceeded(`${method} ${urlPath} took over ${timeoutMs} ms`));
      }, timeoutMs);
      req.on('response', (res) => {
        readAll(res, MAX_ERROR_BODY).then((bytes) => {
          clearTimeout(timer);
          const json = parseJson(bytes);
          if (res.statusCode >= 200 && res.statusCode < 300) {
            resolve(json);
            return;
          }
          const err = new Error((json && json.errorMessage) || `the runtime answered ${res.statusCode}`);
          err.name = (json && json.errorType) || 'Error';
          err.status = res.statusCode;
          if (json && Array.isArray(json.stackTrace)) err.problems = json.stackTrace;
          reject(err);
        }, (err) => {
          clearTimeout(timer);
          reject(err);
        });
      });
      req.on('error', (err) => {
        clearTimeout(timer);
        reject(isUnreachable(err) ? errors.noDataPlane(err) : err);
      });
      req.end(payload || undefined);
    });
  }

  // One invocation: `fields` are its `x-noslate-*` header lines. Resolves at the response head
  // to the response stream, with `status` and `metadata.headers` (the function's headers as
  // pairs); rejects with the runtime's error before the head. `headGuardMs` bounds the wait for
  // the head on this side too, a second past the deadline the runtime enforces, should the
  // runtime itself be stuck. The answer to an `event` invocation carries FC's `x-fc-status`,
  // as on the FC port; it is the runtime's, not the function's, and is left out.
  invoke(urlPath, fields, data, headGuardMs, event) {
    let streamed = !Buffer.isBuffer(data);
    let length = streamed ? knownLength(data) : data.length;
    if (streamed && data.readableEnded) {
      // Read to its end already: it gives no bytes, and would never say so again.
      if (length > 0) {
        return Promise.reject(new Error(`the request body had already been read: it ended before its stated ${length} bytes`));
      }
      data = EMPTY;
      length = 0;
      streamed = false;
    } else if (streamed && (data.destroyed || data.errored)) {
      // Destroyed before it ended: nothing will come, not even an 'error'.
      return Promise.reject(cancelled(data.errored || new Error('the request body stream was destroyed')));
    }
    const head = `POST ${urlPath} HTTP/1.1\r\nHost: noslate\r\n${fields}${
      length === undefined ? 'Transfer-Encoding: chunked' : `Content-Length: ${length}`}\r\n\r\n`;
    return new Promise((resolve, reject) => {
      let settled = false;
      let exchange = null;
      const fail = (err) => {
        if (!settled) {
          settled = true;
          this.busyPoll.settled();
          reject(err);
        }
      };
      const guard = headGuardMs === undefined ? null : setTimeout(() => {
        const err = errors.deadlineExceeded(`no response head within ${headGuardMs} ms`);
        fail(err);
        if (exchange) exchange.fail(err);
      }, headGuardMs);
      const onHead = (err, res, done) => {
        if (guard !== null) clearTimeout(guard);
        if (err) {
          // A kept-alive connection the runtime closed just before this request reached it (a
          // restart): nothing was done, so a whole body may go again on a new one.
          if (done.reused && !done.received && !streamed && !settled && done.mayRetry) {
            exchange = this.pool.exchange(head, data, undefined, onHead);
            exchange.mayRetry = false;
            return;
          }
          fail(cannotConnect(err) ? errors.noDataPlane(err) : err);
          return;
        }
        if (done.errorType !== undefined) {
          readAll(res, MAX_ERROR_BODY).then(
            (bytes) => fail(errors.fromAnswer(res.status, done.errorType, parseJson(bytes))),
            fail,
          );
          return;
        }
        if (settled) {
          // Given up on already (the guard fired): nobody reads it.
          res.destroy();
          return;
        }
        if (event) res.metadata.headers = res.metadata.headers.filter(([name]) => name.toLowerCase() !== 'x-fc-status');
        settled = true;
        this.busyPoll.settled();
        resolve(res);
      };
      // Counted before the exchange starts, so that an answer however early settles it.
      this.busyPoll.sent();
      exchange = this.pool.exchange(head, data, streamed ? length : undefined, onHead);
      if (streamed) {
        data.on('error', (cause) => {
          const err = cancelled(cause);
          fail(err);
          exchange.fail(err);
        });
        // Destroyed without an error, it says nothing else: neither 'end' nor 'error' comes.
        data.on('close', () => {
          if (data.readableEnded) return;
          const err = cancelled(data.errored || new Error('the request body stream was destroyed before its end'));
          fail(err);
          exchange.fail(err);
        });
      }
    });
  }
}

const EMPTY = Buffer.alloc(0);

// A request body that failed or was destroyed: the invocation is cancelled, as Noslate's gRPC
// client says when its caller gives up.
function cancelled(cause) {
  const err = new Error('CANCELLED: Cancelled on client');
  err.code = errors.Status.CANCELLED;
  err.cause = cause;
  return err;
}

// The length of a stream that states it: an incoming HTTP request with a Content-Length (what
// a gateway passes on), which then goes to the runtime as is rather than re-framed in chunks.
function knownLength(stream) {
  const h = stream.headers;
  if (!h || h['transfer-encoding'] !== undefined || typeof h['content-length'] !== 'string') return undefined;
  return /^\d+$/.test(h['content-length']) ? Number(h['content-length']) : undefined;
}

module.exports = { AdminTransport, defaultSocketPath };
