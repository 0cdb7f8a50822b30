'use strict';
// Errors as Noslate's SDK reports them: an Error whose `name`, `message` and numeric `code` say
// what failed. Refusals by the runtime carry gRPC-style codes (as Noslate's data plane sent
// them); failures of the function carry a CanonicalCode, `peerStack` and the function's own
// `errorType`.

// Noslate's canonical codes for a failed request to a worker.
const CanonicalCode = Object.freeze({
  OK: 0,
  INTERNAL_ERROR: 1,
  TIMEOUT: 2,
  NOT_IMPLEMENTED: 3,
  CONNECTION_RESET: 4,
  CLIENT_ERROR: 5,
  CANCELLED: 6,
});

// gRPC status codes, which Noslate's data plane used for its own refusals.
const Status = Object.freeze({
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  INTERNAL: 13,
  UNAVAILABLE: 14,
});

class NoslatedError extends Error {
  constructor(code, message, fields = {}) {
    super(message);
    this.name = 'NoslatedError';
    this.code = code;
    Object.assign(this, fields);
  }
}

// The runtime's own error types (README, "Errors the runtime itself returns"), and the code each
// is reported with. A type not listed here is the function's own (a thrown error's name).
const RUNTIME_ERRORS = new Map([
  ['FunctionNotFound', Status.NOT_FOUND],
  ['ServiceNotFound', Status.NOT_FOUND],
  ['NotFound', Status.NOT_FOUND],
  ['RateLimitExceeded', Status.RESOURCE_EXHAUSTED],
  ['TooManyRequests', Status.RESOURCE_EXHAUSTED],
  ['TooManyConnections', Status.RESOURCE_EXHAUSTED],
  ['NoEnoughVirtualMemory', Status.RESOURCE_EXHAUSTED],
  ['PayloadTooLarge', Status.RESOURCE_EXHAUSTED],
  ['RequestHeaderFieldsTooLarge', Status.RESOURCE_EXHAUSTED],
  ['SystemCircuitBreakerOpen', Status.FAILED_PRECONDITION],
  ['RuntimeStopped', Status.UNAVAILABLE],
  ['NotReady', Status.UNAVAILABLE],
  ['NoAvailableWorker', Status.UNAVAILABLE],
  ['WorkerStartFailed', Status.UNAVAILABLE],
  ['InvalidInvokeMetadata', Status.INVALID_ARGUMENT],
  ['AmbiguousTarget', Status.INVALID_ARGUMENT],
  ['MethodNotAllowed', Status.INVALID_ARGUMENT],
  ['InternalError', Status.INTERNAL],
]);

// Failures of the function's worker rather than refusals: Noslate's NoslatedError codes.
const WORKER_FAILURES = new Map([
  ['FunctionTimeout', CanonicalCode.TIMEOUT],
  ['WorkerCrashed', CanonicalCode.CONNECTION_RESET],
  ['MemoryLimitExceeded', CanonicalCode.CONNECTION_RESET],
  ['CpuLimitExceeded', CanonicalCode.CONNECTION_RESET],
  ['WorkerProtocolError', CanonicalCode.CONNECTION_RESET],
  ['InvalidResponse', CanonicalCode.INTERNAL_ERROR],
  ['InitializationError', CanonicalCode.INTERNAL_ERROR],
  ['InitializationTimeout', CanonicalCode.TIMEOUT],
]);

const codeName = (code) => Object.keys(CanonicalCode).find((k) => CanonicalCode[k] === code);

// The error for an answer the runtime made itself: `status`, its `x-noslate-error` type and the
// JSON body ({errorMessage, errorType, stackTrace}).
function fromAnswer(status, errorType, body) {
  const message = (body && body.errorMessage) || `the runtime answered ${status} ${errorType}`;
  const stack = body && Array.isArray(body.stackTrace) ? body.stackTrace.join('\n') : undefined;
  const fields = { errorType, status };
  if (RUNTIME_ERRORS.has(errorType)) {
    const err = new Error(message);
    err.name = errorType;
    err.code = RUNTIME_ERRORS.get(errorType);
    Object.assign(err, fields);
    return err;
  }
  const code = WORKER_FAILURES.has(errorType) ? WORKER_FAILURES.get(errorType) : CanonicalCode.INTERNAL_ERROR;
  return new NoslatedError(
    code,
    `Noslated request failed: CanonicalCode::${codeName(code)} request kind(Trigger), ${message}`,
    { ...fields, operation: 'Trigger', peerMessage: message, peerStack: stack },
  );
}

// The response stream ended before its last byte: the runtime cut it (the worker died or timed
// out mid-stream). Noslate's words for it.
function peerConnectionClosed() {
  return new NoslatedError(CanonicalCode.CONNECTION_RESET, 'Peer connection closed', {
    errorType: 'PEER_CONNECTION_CLOSED',
  });
}

// Noslate's error when no data plane is connected.
function noDataPlane(cause) {
  const err = new Error('No activated data plane.');
  err.code = Status.UNAVAILABLE;
  if (cause) err.cause = cause;
  return err;
}

function deadlineExceeded(what) {
  const err = new Error(`DEADLINE_EXCEEDED: Deadline exceeded (${what})`);
  err.code = Status.DEADLINE_EXCEEDED;
  return err;
}

module.exports = {
  CanonicalCode,
  Status,
  NoslatedError,
  fromAnswer,
  peerConnectionClosed,
  noDataPlane,
  deadlineExceeded,
};
