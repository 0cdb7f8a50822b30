"""noslate Python worker bootstrap: the worker side of docs/PROTOCOL.md, stdlib only.

The runtime execs `python3 [execArgv...] bootstrap.py` with the code directory as cwd, frames from
the runtime on fd 3 and frames to the runtime on fd 4. On INIT this file imports the handler's
module, runs the initializer, and then serves each invocation (one protocol stream) in one of two
calling conventions, chosen by NOSLATE_HANDLER_STYLE (the profile's handlerStyle):

  fc-event  FC's event handler: handler(event, context) -> str | bytes | dict | list | None,
            with `event` the request body as bytes; the result is the 200 body (JSON for dict
            and list).
  fc-http   FC's HTTP handler, a WSGI app: handler(environ, start_response) -> iterable of bytes,
            with environ['wsgi.input'] streaming the request body and environ['fc.context'] the
            context. The body is streamed to the client as the iterable yields it.

`initializer(context)` runs once, before the first request. `context` carries FC's fields as
attributes: request_id, credentials, function, service, region, account_id, retry_count and a
logger whose lines carry the request id.

Threads: the main thread only reads frames (so CANCEL and WINDOW frames are seen at once, whatever
the handlers do), each open stream runs its handler in a thread of its own, and frames are written
whole under one lock. The runtime opens up to `maxActivateRequests` streams per worker, so that
many handler calls may run at once in one process (like FC's instance concurrency); a function
whose code is not thread-safe sets `maxActivateRequests: 1`. Frames of streams that are not
running yet are still read and kept, within each stream's credit.
"""

import base64
import collections
import contextvars
import io
import importlib
import importlib.util
import json
import logging
import os
import re
import struct
import sys
import threading
import time
import traceback
from urllib.parse import parse_qsl, unquote_to_bytes

# ---- Wire constants (PROTOCOL.md "Framing") ------------------------------------------------------

HEADER = struct.Struct("<IIBBH")
HEADER_SIZE = HEADER.size
MAX_PAYLOAD = 1024 * 1024
FLAG_END = 0x01

INIT = 0x01
REQUEST_HEAD = 0x02
REQUEST_BODY = 0x03
CANCEL = 0x04
WINDOW_IN = 0x05
READY = 0x81
INIT_DONE = 0x82
INIT_ERROR = 0x83
RESPONSE_HEAD = 0x84
RESPONSE_BODY = 0x85
RESPONSE_ERROR = 0x86
WINDOW_OUT = 0x87

INITIAL_WINDOW = 256 * 1024
MAX_WINDOW = 16 * 1024 * 1024
# This worker grants the default request window (its INIT_DONE announces none).
GRANT_THRESHOLD = INITIAL_WINDOW // 2
# The response-body credit each stream starts with: INIT's responseWindow, the runtime's grant.
_response_window = INITIAL_WINDOW
MAX_BODY_FRAME = 64 * 1024
U32 = struct.Struct("<I")

FD_IN = int(os.environ.get("NOSLATE_IPC_IN") or 3)
FD_OUT = int(os.environ.get("NOSLATE_IPC_OUT") or 4)
WORKER_ID = os.environ.get("NOSLATE_WORKER_ID") or "pid-%d" % os.getpid()
STYLE = os.environ.get("NOSLATE_HANDLER_STYLE") or "fc-event"
THIS_FILE = os.path.abspath(__file__)
IMPORTLIB_DIR = os.path.dirname(os.path.abspath(importlib.__file__)) + os.sep


# The process's own stderr: the worker's lines never take a request id's record format.
_STDERR = sys.stderr


def log_worker(message):
    _STDERR.write("%s [noslate worker %s] %s\n" % (_iso_now(), WORKER_ID, message))
    _STDERR.flush()


def _iso_now():
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % (int(t * 1000) % 1000)


def protocol_error(message):
    log_worker("protocol error: " + message)
    os._exit(1)


# ---- Outgoing frames -----------------------------------------------------------------------------

_write_lock = threading.Lock()


def _write_all(parts):
    """Writes every byte of `parts` to fd 4, whatever os.writev() takes at a time."""
    views = [memoryview(p) for p in parts if len(p) > 0]
    while views:
        try:
            n = os.writev(FD_OUT, views)
        except InterruptedError:
            continue
        while n > 0:
            first = views[0]
            if n >= len(first):
                n -= len(first)
                views.pop(0)
            else:
                views[0] = first[n:]
                n = 0


def send_frame(stream, kind, flags=0, payload=b""):
    header = HEADER.pack(len(payload), stream, kind, flags, 0)
    try:
        with _write_lock:
            _write_all((header, payload))
    except OSError as err:
        log_worker("write to runtime failed: %s" % err)
        os._exit(1)


def send_json(stream, kind, value, flags=0):
    send_frame(stream, kind, flags, json.dumps(value, separators=(",", ":")).encode("utf-8"))


# ---- Errors --------------------------------------------------------------------------------------


class Cancelled(BaseException):
    """Raised in a handler thread whose invocation was cancelled (timeout, client gone).

    A BaseException, so that `except Exception` in user code does not swallow it."""


class HandlerNotFound(Exception):
    pass


class InitializerNotFound(Exception):
    pass


class WrongHandlerStyle(Exception):
    """The handler's calling convention is not the one its profile's handlerStyle names."""


def _user_frames(tb):
    """The traceback's frames without this file's and importlib's own."""
    frames = traceback.extract_tb(tb)
    return [
        f
        for f in frames
        if os.path.abspath(f.filename) != THIS_FILE
        and not f.filename.startswith("<frozen ")
        and not f.filename.startswith(IMPORTLIB_DIR)
    ]


def error_payload(err):
    """The PROTOCOL.md error of an exception: FC's errorMessage, errorType and stackTrace lines."""
    frames = _user_frames(err.__traceback__)
    lines = ["Traceback (most recent call last):"] if frames else []
    for line in traceback.format_list(frames):
        lines.extend(line.rstrip("\n").split("\n"))
    lines.extend(
        "".join(traceback.format_exception_only(type(err), err)).rstrip("\n").split("\n")
    )
    return {
        "errorMessage": str(err),
        "errorType": type(err).__name__,
        "stackTrace": lines,
    }


def _format(err):
    return "".join(traceback.format_exception(type(err), err, err.__traceback__)).rstrip()


def _location(err):
    """'file:line' where an exception raised while importing user code comes from."""
    if isinstance(err, SyntaxError) and err.filename:
        return "%s:%s" % (err.filename, err.lineno)
    frames = _user_frames(err.__traceback__)
    if frames:
        return "%s:%s" % (frames[-1].filename, frames[-1].lineno)
    return None


# ---- Context -------------------------------------------------------------------------------------


class _Attrs(object):
    """A read-mostly record with attribute access, as FC's context parts are."""

    def __init__(self, **fields):
        self.__dict__.update(fields)

    def __repr__(self):
        return "%s(%s)" % (
            type(self).__name__,
            ", ".join("%s=%r" % kv for kv in sorted(self.__dict__.items())),
        )


class Credentials(_Attrs):
    pass


class FunctionMeta(_Attrs):
    pass


class ServiceMeta(_Attrs):
    pass


class Tracing(_Attrs):
    """`context.tracing`, as FC's Python runtime has it: `span_context`, `span_baggages` (base64
    of a JSON object, as sent) and `jaeger_endpoint`; plus the W3C `traceparent` and
    `tracestate`. Absent values are None."""

    def parse_open_tracing_baggages(self):
        """The baggage as a dict; empty when there is none or it is not base64 JSON."""
        if not self.span_baggages:
            return {}
        try:
            value = json.loads(base64.b64decode(self.span_baggages))
        except (ValueError, TypeError):
            return {}
        return value if isinstance(value, dict) else {}


# The request id of the invocation (or initializer) running in this thread: every handler call
# runs in a thread of its own (see _submit), which sets it for the call and resets it after, and
# asyncio tasks the handler starts copy it. Lines written outside any call have no id.
_request_id = contextvars.ContextVar("noslate_request_id", default="")


class _RequestIdFilter(logging.Filter):
    def filter(self, record):
        if not hasattr(record, "request_id"):
            record.request_id = _request_id.get()
        return True


class _RecordStream(object):
    """sys.stdout / sys.stderr for user code: inside an invocation, each line it writes becomes one
    record `<ISO time> <requestId> [LEVEL] message`, written with one write() so that no other
    thread's record lands inside it. A message is complete at a write ending in a newline, so
    print("a\nb") stays one record; text without one waits, per thread, for the rest."""

    def __init__(self, raw, level):
        self._raw = raw
        self._level = level
        self._pending = threading.local()

    def write(self, text):
        written = len(text)
        request_id = _request_id.get()
        pending = getattr(self._pending, "value", None)
        if pending is not None and pending[0] != request_id:
            # Left unfinished by an earlier call on this thread: its own record.
            self._pending.value = None
            self._emit(pending[0], pending[1])
            pending = None
        if not request_id:
            return self._raw.write(text)
        if pending is not None:
            text = pending[1] + text
        if text.endswith("\n"):
            self._pending.value = None
            self._emit(request_id, text[:-1])
        else:
            self._pending.value = (request_id, text)
        return written

    def _emit(self, request_id, message):
        if request_id:
            self._raw.write("%s %s [%s] %s\n" % (_iso_now(), request_id, self._level, message))
        else:
            self._raw.write(message)
        self._raw.flush()

    def end_call(self):
        """Writes what the ending call left without a newline on this thread as its record."""
        pending = getattr(self._pending, "value", None)
        if pending is not None:
            self._pending.value = None
            self._emit(pending[0], pending[1])

    def flush(self):
        self._raw.flush()

    def __getattr__(self, name):
        return getattr(self._raw, name)


def _end_call_output():
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, _RecordStream):
            stream.end_call()


def _setup_logging():
    """FC's log format on stdout: `<time> <request id> [LEVEL] message`."""
    handler = logging.StreamHandler(sys.__stdout__)
    formatter = logging.Formatter("%(asctime)s %(request_id)s [%(levelname)s] %(message)s")
    formatter.converter = time.gmtime
    formatter.default_time_format = "%Y-%m-%dT%H:%M:%S"
    formatter.default_msec_format = "%s.%03dZ"
    handler.setFormatter(formatter)
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    sys.stdout = _RecordStream(sys.__stdout__, "INFO")
    sys.stderr = _RecordStream(sys.__stderr__, "ERROR")


_fc_logger = logging.getLogger("fc")


class Context(object):
    """FC's context, from the `context` object of the INIT payload or request head."""

    def __init__(self, c, request_id):
        c = c or {}
        self.request_id = c.get("requestId") or request_id or ""
        cred = c.get("credentials") or {}
        self.credentials = Credentials(
            access_key_id=cred.get("accessKeyId"),
            access_key_secret=cred.get("accessKeySecret"),
            security_token=cred.get("securityToken"),
        )
        fn = c.get("function") or {}
        self.function = FunctionMeta(
            name=fn.get("name"),
            handler=fn.get("handler"),
            memory=fn.get("memory"),
            timeout=fn.get("timeout"),
            initializer=fn.get("initializer"),
            initialization_timeout=fn.get("initializationTimeout"),
        )
        svc = c.get("service") or {}
        self.service = ServiceMeta(
            name=svc.get("name"),
            log_project=svc.get("logProject"),
            log_store=svc.get("logStore"),
            qualifier=svc.get("qualifier"),
            version_id=svc.get("versionId"),
        )
        self.region = c.get("region")
        self.account_id = c.get("accountId")
        self.retry_count = c.get("retryCount") or 0
        tr = c.get("tracing") or {}
        self.tracing = Tracing(
            span_context=tr.get("openTracingSpanContext"),
            span_baggages=tr.get("openTracingSpanBaggages"),
            jaeger_endpoint=tr.get("jaegerEndpoint"),
            traceparent=tr.get("traceparent"),
            tracestate=tr.get("tracestate"),
        )
        self._logger = None

    @property
    def logger(self):
        """A logger whose lines carry this request's id (made on first use)."""
        if self._logger is None:
            self._logger = logging.LoggerAdapter(_fc_logger, {"request_id": self.request_id})
        return self._logger


# ---- Streams -------------------------------------------------------------------------------------


class Stream(object):
    """One invocation: the request body received so far, the response credit, the terminal state.

    The reader thread fills it; the handler thread consumes it. `lock` guards every field and is
    held while this stream's frames are written, so that a CANCEL's terminal frame can never
    interleave with a body frame of the same stream."""

    def __init__(self, sid, head, ended):
        self.id = sid
        self.head = head
        self.lock = threading.Condition(threading.Lock())
        self.chunks = collections.deque()
        self.body_ended = ended
        self.consumed = 0  # body bytes read by the handler and not yet returned as credit
        self.credit = _response_window
        self.done = False  # the terminal frame went out
        self.cancelled = False
        self.cancel_reason = None  # the CANCEL's reason, for the error a body read raises
        self.reading = False  # the handler thread waits in read_chunk (which raises on CANCEL)
        self.head_sent = False
        self.thread_ident = None  # the handler thread, while it runs user code

    # -- request body (handler thread) --

    def read_chunk(self):
        """The next body chunk, b"" at the end (or once the response is complete: the rest of the
        request is dropped then); raises Cancelled once the stream is cancelled, which is also how
        a body the runtime refused (too large, broken framing, client gone) ends: never as b""."""
        with self.lock:
            self.reading = True
            try:
                while not self.chunks and not self.body_ended and not self.done:
                    self.lock.wait()
            finally:
                self.reading = False
            if self.cancelled:
                raise Cancelled(
                    "the invocation was cancelled: %s" % (self.cancel_reason or "no reason given")
                )
            if not self.chunks:
                return b""
            chunk = self.chunks.popleft()
            if not self.body_ended and not self.done:
                self.consumed += len(chunk)
                if self.consumed >= GRANT_THRESHOLD:
                    send_frame(self.id, WINDOW_OUT, 0, U32.pack(self.consumed))
                    self.consumed = 0
            return chunk

    def read_all(self):
        parts = []
        while True:
            chunk = self.read_chunk()
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)

    # -- response (handler thread) --

    def send_head(self, status, headers, end=False):
        with self.lock:
            if self.done:
                raise Cancelled("the invocation was cancelled")
            self.head_sent = True
            flags = FLAG_END if end else 0
            if end:
                self._close()  # first: once the frame is out, the runtime may reuse the id
            send_json(self.id, RESPONSE_HEAD, {"status": status, "headers": headers}, flags)

    def send_whole(self, status, headers, body):
        """The whole response: head and body in one write when the body fits in one frame and
        the credit, else head, then body within the credit."""
        with self.lock:
            if self.done:
                raise Cancelled("the invocation was cancelled")
            if len(body) > min(self.credit, MAX_BODY_FRAME):
                whole = False
            else:
                whole = True
                self.head_sent = True
                self.credit -= len(body)
                self._close()
                head = json.dumps({"status": status, "headers": headers}, separators=(",", ":"))
                head = head.encode("utf-8")
                parts = (
                    HEADER.pack(len(head), self.id, RESPONSE_HEAD, FLAG_END if not body else 0, 0),
                    head,
                )
                if body:
                    parts += (HEADER.pack(len(body), self.id, RESPONSE_BODY, FLAG_END, 0), body)
                try:
                    with _write_lock:
                        _write_all(parts)
                except OSError as err:
                    log_worker("write to runtime failed: %s" % err)
                    os._exit(1)
        if not whole:
            self.send_head(status, headers, end=not body)
            if body:
                self.send_body(body, end=True)

    def send_body(self, data, end=False):
        """Sends `data` within the credit, waiting for WINDOW frames as needed."""
        view = memoryview(data)
        at = 0
        total = len(view)
        while True:
            with self.lock:
                while self.credit <= 0 and not self.done and at < total:
                    self.lock.wait()
                if self.done:
                    raise Cancelled("the invocation was cancelled")
                n = min(total - at, self.credit, MAX_BODY_FRAME)
                last = at + n == total
                flags = FLAG_END if end and last else 0
                if flags:
                    self._close()  # first: once the frame is out, the runtime may reuse the id
                if n > 0 or flags:
                    send_frame(self.id, RESPONSE_BODY, flags, view[at : at + n])
                self.credit -= n
                at += n
                if last:
                    return

    def fail(self, err):
        """Sends the error as the terminal frame, if the stream is still open."""
        with self.lock:
            if self.done:
                return False
            self._close()
            send_json(self.id, RESPONSE_ERROR, error_payload(err))
            return True

    def _close(self):
        """Marks the stream done and forgets it; called just before its terminal frame is
        written, under `lock`."""
        self.done = True
        self.chunks.clear()
        self.lock.notify_all()
        _streams.pop(self.id, None)


_streams = {}  # id -> Stream; touched by the reader thread, and by _close under the stream's lock


# ---- Handler threads -----------------------------------------------------------------------------

_idle = []  # idle handler threads' mailboxes
_idle_lock = threading.Lock()


class _Mailbox(object):
    def __init__(self):
        self.cond = threading.Condition(threading.Lock())
        self.task = None


def _submit(task):
    """Runs `task` on an idle handler thread, or a new one."""
    with _idle_lock:
        box = _idle.pop() if _idle else None
    if box is None:
        box = _Mailbox()
        t = threading.Thread(target=_thread_main, args=(box, task), daemon=True)
        t.start()
        return
    with box.cond:
        box.task = task
        box.cond.notify()


def _thread_main(box, task):
    while True:
        try:
            task()
        except BaseException as err:  # noqa: BLE001 - a Cancelled landing late, or a bug here
            if not isinstance(err, Cancelled):
                log_worker("handler thread: %s" % _format(err))
        with box.cond:
            box.task = None
            with _idle_lock:
                _idle.append(box)
            while box.task is None:
                box.cond.wait()
            task = box.task


def _raise_in_thread(ident):
    """Interrupts a handler that ignores cancellation: raises Cancelled in its thread at its next
    Python instruction (not inside a blocking C call such as time.sleep)."""
    try:
        import ctypes

        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(Cancelled))
    except Exception as err:  # noqa: BLE001
        log_worker("cannot interrupt a cancelled handler: %s" % err)


def _clear_async_exc(ident):
    try:
        import ctypes

        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)
    except Exception:  # noqa: BLE001
        pass


def _run_user(st, fn, *args):
    """Calls user code for stream `st`, interruptible by a CANCEL."""
    ident = threading.get_ident()
    with st.lock:
        if st.done:
            raise Cancelled("the invocation was cancelled")
        st.thread_ident = ident
    try:
        return fn(*args)
    finally:
        with st.lock:
            interrupted = st.thread_ident is None
            st.thread_ident = None
        if interrupted:
            _clear_async_exc(ident)


# ---- Styles --------------------------------------------------------------------------------------

_handler = None


def _result_bytes(result):
    if result is None:
        return b""
    if isinstance(result, (bytes, bytearray, memoryview)):
        return bytes(result)
    if isinstance(result, str):
        return result.encode("utf-8")
    if isinstance(result, (dict, list, tuple, int, float, bool)):
        return json.dumps(result).encode("utf-8")
    return str(result).encode("utf-8")


def serve_event(st, ctx):
    event = st.read_all()
    if st.head.get("kind") == "http":
        event = json.dumps(http_trigger_event(st.head, ctx, event)).encode("utf-8")
        try:
            result = _run_user(st, _handler, event, ctx)
        except (TypeError, AttributeError) as err:
            _hint_wsgi_as_event(err, event)
            raise
        status, headers, body = http_trigger_response(result)
        headers.append(["content-length", str(len(body))])
        st.send_whole(status, headers, body)
        return
    try:
        result = _run_user(st, _handler, event, ctx)
    except (TypeError, AttributeError) as err:
        _hint_wsgi_as_event(err, event)
        raise
    body = _result_bytes(result)
    st.send_whole(200, [["content-length", str(len(body))]], body)


_WSGI_HINT = (
    ' (with "handlerStyle": "fc-event", the default for runtime python3, the handler is called as'
    " handler(event, context) with the request body as bytes; a WSGI application"
    ' handler(environ, start_response) needs "handlerStyle": "fc-http" in the function profile)'
)


def _hint_wsgi_as_event(err, event):
    """Names the handlerStyle setting in the error of a WSGI app called as an event handler.

    Such an app fails on its first use of either argument: the context is not start_response, the
    event (bytes) is not an environ mapping. Only those failures get the hint; the exception keeps
    its type and traceback."""
    text = str(err)
    wsgi_use = (
        "'Context' object is not callable" in text
        or "byte indices must be integers or slices, not str" in text
        or (
            isinstance(err, AttributeError)
            and text.startswith("'bytes' object has no attribute ")
            and getattr(err, "obj", event) is event
        )
    )
    if wsgi_use and len(err.args) <= 1:
        err.args = (text + _WSGI_HINT,)


# Content types whose bodies an HTTP-trigger event carries as text; any other body is base64.
_TEXT_TYPE = re.compile(
    r"^(text/|application/(json|xml|javascript|x-www-form-urlencoded)\b|[^;]*\+(json|xml)\b)", re.I
)


def http_trigger_event(head, ctx, body):
    """FC 3.0's HTTP-trigger event, what an event handler reached through an HTTP trigger gets
    (as JSON bytes, like any event). Repeated headers and query parameters are joined with ', '
    and ',' as FC does; the header names keep the client's case."""
    url = head.get("url") or "/"
    raw_path, _, query = url.partition("?")
    headers = {}
    lower = {}
    for name, value in head.get("headers") or []:
        headers[name] = value if name not in headers else headers[name] + ", " + value
        lower.setdefault(name.lower(), value)
    params = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        params[key] = value if key not in params else params[key] + "," + value
    text = not body or bool(_TEXT_TYPE.match(lower.get("content-type", "")))
    host = lower.get("host", "")
    name, _, port = host.rpartition(":")
    domain = name if name and port.isdigit() else host
    now = time.time()
    return {
        "version": "v1",
        "rawPath": raw_path,
        "headers": headers,
        "queryParameters": params,
        "body": body.decode("utf-8", "replace") if text else base64.b64encode(body).decode("ascii"),
        "isBase64Encoded": not text,
        "requestContext": {
            "accountId": ctx.account_id or "",
            "domainName": domain,
            "domainPrefix": domain.split(".")[0],
            "http": {
                "method": head.get("method") or "GET",
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": _client_ip(head, lower),
                "userAgent": lower.get("user-agent", ""),
            },
            "requestId": ctx.request_id,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
            + ".%03dZ" % (int(now * 1000) % 1000),
            "timeEpoch": str(int(now * 1000)),
        },
    }


def _client_ip(head, lower):
    """The runtime's clientIp, else x-fc-client-ip, else the first X-Forwarded-For hop, else
    X-Real-IP."""
    if head.get("clientIp"):
        return head["clientIp"]
    forwarded = (
        lower.get("x-fc-client-ip") or lower.get("x-forwarded-for") or lower.get("x-real-ip") or ""
    )
    return forwarded.split(",")[0].strip()


class InvalidResponse(Exception):
    """An HTTP-trigger event handler returned a response FC could not send."""


def http_trigger_response(result):
    """An HTTP-trigger event handler's result as (status, headers, body), as FC does it: a dict
    with a statusCode is {statusCode, headers, body, isBase64Encoded}; anything else is a 200
    whose body is the result (str and bytes as is, other values as JSON)."""
    if isinstance(result, dict) and "statusCode" in result:
        status = result["statusCode"]
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 999:
            raise InvalidResponse("statusCode must be an integer HTTP status, got %r" % (status,))
        body = result.get("body")
        if result.get("isBase64Encoded"):
            if not isinstance(body, str):
                raise InvalidResponse(
                    "body must be a base64 string when isBase64Encoded is true, got %s"
                    % type(body).__name__
                )
            try:
                body = base64.b64decode(body, validate=True)
            except ValueError:
                raise InvalidResponse(
                    "body must be a base64 string when isBase64Encoded is true, got a string "
                    "that is not base64"
                ) from None
        headers = [[str(k), str(v)] for k, v in (result.get("headers") or {}).items()]
        headers = [h for h in headers if h[0].lower() != "content-length"]
        return status, headers, _result_bytes(body)
    headers = []
    if isinstance(result, (dict, list, tuple)):
        headers.append(["content-type", "application/json"])
    return 200, headers, _result_bytes(result)


class _BodyRaw(io.RawIOBase):
    """wsgi.input's raw stream: the request body, chunk by chunk as the runtime sends it."""

    def __init__(self, st):
        self._st = st
        self._rest = b""
        self._eof = False

    def readable(self):
        return True

    def readinto(self, b):
        if not self._rest:
            if self._eof:
                return 0
            self._rest = self._st.read_chunk()
            if not self._rest:
                self._eof = True
                return 0
        n = min(len(b), len(self._rest))
        b[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n


def _status_code(status):
    try:
        code = int(str(status).split(" ", 1)[0])
    except ValueError:
        raise ValueError("invalid WSGI status %r: expected '200 OK'" % (status,))
    if not 100 <= code <= 999:
        raise ValueError("invalid WSGI status %r" % (status,))
    return code


def _header_str(value):
    """A WSGI header value (a native str of latin-1 characters) as sent on the wire."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)


def wsgi_environ(st, ctx):
    head = st.head
    url = head.get("url") or "/"
    path, _, query = url.partition("?")
    # PEP 3333: PATH_INFO is the decoded path, its bytes as latin-1 characters.
    path_info = unquote_to_bytes(path).decode("latin-1") if "%" in path else path
    environ = {
        "REQUEST_METHOD": head.get("method") or "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path_info,
        "QUERY_STRING": query,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "9000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": head.get("clientIp") or "",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BufferedReader(_BodyRaw(st), MAX_BODY_FRAME),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "fc.context": ctx,
        "fc.request_uri": url,
    }
    for name, value in head.get("headers") or []:
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE" or key == "CONTENT_LENGTH":
            environ.setdefault(key, value)
            continue
        key = "HTTP_" + key
        if key in environ:
            environ[key] = environ[key] + ("; " if key == "HTTP_COOKIE" else ",") + value
        else:
            environ[key] = value
    if "HTTP_HOST" in environ:
        host, _, port = environ["HTTP_HOST"].partition(":")
        environ["SERVER_NAME"] = host or "localhost"
        if port:
            environ["SERVER_PORT"] = port
    if not environ["REMOTE_ADDR"]:
        # FC puts the client's address in x-fc-client-ip; behind other proxies, the first hop.
        forwarded = (
            environ.get("HTTP_X_FC_CLIENT_IP")
            or environ.get("HTTP_X_FORWARDED_FOR")
            or environ.get("HTTP_X_REAL_IP")
            or ""
        )
        environ["REMOTE_ADDR"] = forwarded.split(",")[0].strip()
    return environ


def serve_wsgi(st, ctx):
    environ = wsgi_environ(st, ctx)
    state = {"status": None, "headers": None}

    def start_response(status, headers, exc_info=None):
        if exc_info is not None:
            try:
                if st.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif state["status"] is not None:
            raise AssertionError("start_response() was already called")
        state["status"] = _status_code(status)
        state["headers"] = [[_header_str(k), _header_str(v)] for k, v in headers]
        return write

    def write(data):
        if state["status"] is None:
            raise AssertionError("write() before start_response()")
        if not st.head_sent:
            st.send_head(state["status"], state["headers"])
        if data:
            st.send_body(data)

    result = _run_user(st, _handler, environ, start_response)
    if state["status"] is None and (
        result is None or isinstance(result, (str, bytes, bytearray, dict, int, float, bool))
    ):
        # An event handler(event, context) configured as a WSGI app returns its answer and never
        # calls start_response: name the setting rather than fail on iterating the answer.
        raise WrongHandlerStyle(
            'the handler returned %s without calling start_response(): with "handlerStyle":'
            ' "fc-http" the handler is a WSGI application(environ, start_response) returning an'
            " iterable of bytes. For an FC handler(event, context) that returns its answer, set"
            ' "handlerStyle": "fc-event" (the default for runtime python3) in the function profile'
            % ("None" if result is None else "a " + type(result).__name__)
        )
    try:
        if isinstance(result, (list, tuple)) and not st.head_sent:
            # A whole body: one head with its length, then the body with END.
            body = b"".join(result)
            if state["status"] is None:
                raise AssertionError("the WSGI app returned without calling start_response()")
            headers = state["headers"]
            if not any(k.lower() == "content-length" for k, _ in headers):
                headers = headers + [["content-length", str(len(body))]]
            st.send_whole(state["status"], headers, body)
            return
        iterator = iter(result)
        while True:
            chunk = _run_user(st, next, iterator, None)
            if chunk is None:
                break
            if not chunk:
                continue
            if not st.head_sent:
                if state["status"] is None:
                    raise AssertionError("the WSGI app yielded a body before calling start_response()")
                st.send_head(state["status"], state["headers"])
            st.send_body(chunk)
        if not st.head_sent:
            if state["status"] is None:
                raise AssertionError("the WSGI app returned without calling start_response()")
            st.send_head(state["status"], state["headers"], end=True)
        else:
            st.send_body(b"", end=True)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()


_serve = None


def run_stream(st):
    token = _request_id.set(st.head.get("requestId") or "")
    try:
        ctx = Context(st.head.get("context"), st.head.get("requestId"))
        _serve(st, ctx)
    except Cancelled:
        pass  # the reader thread sent the terminal frame
    except BaseException as err:  # noqa: BLE001 - SystemExit in a handler is its error too
        if st.fail(err):
            log_worker(
                "request %s failed: %s"
                % (st.head.get("requestId"), _format(err).rstrip())
            )
    finally:
        _end_call_output()
        _request_id.reset(token)
        _stream_finished()


# ---- Loading user code ---------------------------------------------------------------------------


def _split_spec(spec, not_found):
    if not isinstance(spec, str) or "." not in spec or spec.startswith(".") or spec.endswith("."):
        raise not_found('invalid handler %s: expected "file.function"' % json.dumps(spec))
    module, _, name = spec.rpartition(".")
    return module, name


_modules = {}


def load_module(code_dir, module, spec, not_found):
    """Imports `module` ('index', 'dir/index' or 'pkg.mod') from the code directory."""
    if module in _modules:
        return _modules[module]
    candidates = [module]
    if "/" not in module and "." in module:
        candidates.append(module.replace(".", "/"))
    path = None
    for cand in candidates:
        for p in (os.path.join(code_dir, cand + ".py"), os.path.join(code_dir, cand, "__init__.py")):
            if os.path.isfile(p):
                path = p
                break
        if path:
            break
    if path is None:
        raise not_found(
            "cannot find module %s (for %s) in %s" % (json.dumps("./" + module + ".py"), spec, code_dir)
        )
    try:
        if os.path.dirname(os.path.relpath(path, code_dir)) == "":
            # A module at the top of the code directory, imported by name as FC does.
            mod = importlib.import_module(os.path.splitext(os.path.basename(path))[0])
        else:
            # Deeper (dir/index.handler): loaded from its file.
            name = module.strip("/").replace("/", ".")
            loader_spec = importlib.util.spec_from_file_location(name, path)
            mod = importlib.util.module_from_spec(loader_spec)
            sys.modules[name] = mod
            loader_spec.loader.exec_module(mod)
    except BaseException as err:  # noqa: BLE001 - SystemExit at import is a load failure too
        at = _location(err)
        where = at if at is None or at.startswith(path + ":") else "%s (at %s)" % (path, at)
        raise _LoadError(err, "failed to load %s: %s: %s" % (where or path, type(err).__name__, err))
    _modules[module] = mod
    return mod


class _LoadError(Exception):
    """Wraps an exception raised by importing user code, keeping its type name and traceback."""

    def __init__(self, cause, message):
        Exception.__init__(self, message)
        self.cause = cause


def load_function(code_dir, spec, not_found):
    module, name = _split_spec(spec, not_found)
    mod = load_module(code_dir, module, spec, not_found)
    fn = getattr(mod, name, None)
    if not callable(fn):
        what = "no attribute" if fn is None else "an attribute of type %s" % type(fn).__name__
        raise not_found(
            "%s has %s named %s where a function is expected (for %s)"
            % (getattr(mod, "__file__", module), what, json.dumps(name), spec)
        )
    return fn


def init_error_payload(err):
    if isinstance(err, _LoadError):
        payload = error_payload(err.cause)
        payload["errorMessage"] = str(err)
        return payload
    return error_payload(err)


def on_init(init):
    global _handler, _serve, _response_window
    granted = init.get("responseWindow")
    if isinstance(granted, int) and not isinstance(granted, bool) and 0 < granted <= MAX_WINDOW:
        _response_window = granted
    fn = init.get("function") or {}
    code_dir = fn.get("codeDir") or os.environ.get("NOSLATE_CODE_DIR") or os.getcwd()
    try:
        styles = {"fc-event": serve_event, "fc-http": serve_wsgi}
        if STYLE not in styles:
            raise ValueError("unknown NOSLATE_HANDLER_STYLE %s for python3" % json.dumps(STYLE))
        if code_dir not in sys.path:
            sys.path.insert(0, code_dir)
        spec = fn.get("handler") or os.environ.get("NOSLATE_HANDLER")
        if not spec:
            raise HandlerNotFound("the function has no handler (the profile's \"handler\")")
        handler = load_function(code_dir, spec, HandlerNotFound)
        init_spec = fn.get("initializer") or os.environ.get("NOSLATE_INITIALIZER")
        if init_spec:
            initializer = load_function(code_dir, init_spec, InitializerNotFound)
            # Only the initializer's own lines carry the id, not the module's at import.
            token = _request_id.set(init.get("requestId") or "")
            try:
                initializer(Context(init.get("context"), init.get("requestId")))
            finally:
                _end_call_output()
                _request_id.reset(token)
        _handler = handler
        _serve = styles[STYLE]
        send_frame(0, INIT_DONE)
    except BaseException as err:  # noqa: BLE001
        log_worker("initialization failed: %s" % _format(err).rstrip())
        send_json(0, INIT_ERROR, init_error_payload(err))


# ---- Incoming frames -----------------------------------------------------------------------------

_shutting_down = False
_open_count = 0  # streams whose handler has not finished
_open_lock = threading.Condition(threading.Lock())


def _stream_finished():
    global _open_count
    with _open_lock:
        _open_count -= 1
        _open_lock.notify_all()


def on_request_head(sid, flags, payload):
    global _open_count
    if _serve is None:
        protocol_error("REQUEST_HEAD for stream %d before INIT_DONE" % sid)
    if sid == 0 or sid in _streams:
        protocol_error("REQUEST_HEAD reuses open stream id %d" % sid)
    head = json.loads(payload.decode("utf-8"))
    st = Stream(sid, head, bool(flags & FLAG_END))
    _streams[sid] = st
    with _open_lock:
        _open_count += 1
    _submit(lambda: run_stream(st))


def on_request_body(sid, flags, payload):
    st = _streams.get(sid)
    if st is None:
        return  # answered or cancelled: the rest of the request is ignored
    with st.lock:
        if st.done or st.body_ended:
            return
        if payload:
            st.chunks.append(payload)
        if flags & FLAG_END:
            st.body_ended = True
        st.lock.notify_all()


def on_window(sid, increment):
    st = _streams.get(sid)
    if st is None:
        return
    with st.lock:
        st.credit += increment
        st.lock.notify_all()


def on_cancel(sid, payload):
    st = _streams.get(sid)
    if st is None:
        return  # the terminal frame already went out
    reason = None
    if payload:
        try:
            reason = json.loads(payload.decode("utf-8")).get("reason")
        except Exception:  # noqa: BLE001
            pass
    with st.lock:
        if st.done:
            return
        st.cancelled = True
        st.cancel_reason = reason
        st._close()
        send_json(
            sid,
            RESPONSE_ERROR,
            {
                "errorMessage": "invocation cancelled: %s" % (reason or "no reason given"),
                "errorType": "Cancelled",
                "stackTrace": [],
            },
        )
        # Under the lock: the handler thread clears a pending interruption when it leaves user
        # code, so one set here can never land in its next task. A handler waiting for body bytes
        # is not interrupted: its read raises Cancelled itself, with the reason.
        if st.thread_ident is not None:
            if not st.reading:
                _raise_in_thread(st.thread_ident)
            st.thread_ident = None


def dispatch(kind, sid, flags, payload):
    if kind == REQUEST_HEAD:
        on_request_head(sid, flags, payload)
    elif kind == REQUEST_BODY:
        on_request_body(sid, flags, payload)
    elif kind == WINDOW_IN:
        if len(payload) < 4:
            protocol_error("WINDOW frame of %d bytes" % len(payload))
        on_window(sid, U32.unpack_from(payload)[0])
    elif kind == CANCEL:
        on_cancel(sid, payload)
    elif kind == INIT:
        on_init(json.loads(payload.decode("utf-8")))
    else:
        protocol_error("unknown frame kind 0x%x" % kind)


def read_loop():
    """Reads frames from fd 3 until EOF; partial reads of a frame are buffered."""
    buf = bytearray()
    while True:
        try:
            data = os.read(FD_IN, 256 * 1024)
        except InterruptedError:
            continue
        except OSError as err:
            log_worker("read from runtime failed: %s" % err)
            os._exit(1)
        if not data:
            if buf:
                protocol_error("EOF inside a frame (%d bytes buffered)" % len(buf))
            return
        buf += data
        at = 0
        end = len(buf)
        frames = []
        with memoryview(buf) as view:
            while end - at >= HEADER_SIZE:
                length, sid, kind, flags, _ = HEADER.unpack_from(buf, at)
                if length > MAX_PAYLOAD:
                    protocol_error("frame payload of %d bytes exceeds 1 MiB" % length)
                frame_end = at + HEADER_SIZE + length
                if frame_end > end:
                    break
                frames.append((kind, sid, flags, view[at + HEADER_SIZE : frame_end].tobytes()))
                at = frame_end
        if at:
            del buf[:at]
        for frame in frames:
            dispatch(*frame)


def _setup_process():
    # stdout and stderr are log files: write lines as they come rather than in 8 KiB blocks.
    try:
        sys.stdout.reconfigure(line_buffering=True)
        sys.stderr.reconfigure(line_buffering=True)
    except Exception:  # noqa: BLE001
        pass
    # The code directory, not this file's, is where `import` looks first.
    if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(THIS_FILE):
        sys.path.pop(0)
    _setup_logging()


def serve_worker(forked=False):
    """The worker's life: READY, then frames until EOF on fd 3, then exit."""
    send_json(
        0,
        READY,
        {
            "pid": os.getpid(),
            "runtime": "python3",
            "version": "%d.%d.%d" % sys.version_info[:3],
            "protocol": 1,
            "forked": forked,
        },
    )
    read_loop()
    # EOF: the runtime has no stream open on this worker; let running handlers finish.
    with _open_lock:
        while _open_count > 0 and any(not st.done for st in list(_streams.values())):
            _open_lock.wait(0.1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# ---- Warm seed (docs/PROTOCOL.md "Warm seeds") ---------------------------------------------------
#
# Started with --seed, this process imports the function's modules once and then forks a worker
# for each `fork` message on its control socket (a SOCK_SEQPACKET socket on fds 3 and 4). The
# message carries the worker's fds 3 and 4 (its protocol pipes) and its stdout and stderr. An
# intermediate process forks the worker and exits, so the worker is reparented to the runtime
# (a child subreaper), which reaps and supervises it like any other worker. The initializer runs
# in each worker, after INIT, never in the seed.

PR_SET_PDEATHSIG = 1
REPARENT_TIMEOUT = 5.0


def _seed_send(sock, value):
    sock.send(json.dumps(value).encode("utf-8"))


def import_function_code():
    """Imports the handler's and the initializer's modules without calling anything (a warm
    seed before it forks, and `noslate check --load`)."""
    code_dir = os.environ.get("NOSLATE_CODE_DIR") or os.getcwd()
    if STYLE not in ("fc-event", "fc-http"):
        raise ValueError("unknown NOSLATE_HANDLER_STYLE %s for python3" % json.dumps(STYLE))
    if code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    spec = os.environ.get("NOSLATE_HANDLER")
    if not spec:
        raise HandlerNotFound("the function has no handler (the profile's \"handler\")")
    load_function(code_dir, spec, HandlerNotFound)
    init_spec = os.environ.get("NOSLATE_INITIALIZER")
    if init_spec:
        load_function(code_dir, init_spec, InitializerNotFound)


def _reseed_randomness():
    """A fork copies every random generator's state: reseed the ones we can find from the OS, so
    that no two workers draw the same numbers. `random`'s own instance is reseeded by its at-fork
    hook; this also covers random.Random instances the function's modules made at import, and
    numpy's global generator. Values already drawn at import stay what they were in the seed."""
    rnd = sys.modules.get("random")
    if rnd is not None:
        rnd.seed()
        for mod in list(_modules.values()):
            for value in list(vars(mod).values()):
                if isinstance(value, rnd.Random) and not isinstance(value, rnd.SystemRandom):
                    value.seed()
    np_random = getattr(sys.modules.get("numpy"), "random", None)
    if np_random is not None:
        try:
            np_random.seed()
        except Exception:  # noqa: BLE001
            pass


def _become_worker(sock, wid, runtime_pid, fds, libc):
    """In the forked worker: take the runtime as parent, place the fds, and serve."""
    global WORKER_ID
    try:
        os.setsid()
        # The intermediate exits right after forking us; then the runtime (a subreaper) is our
        # parent. PDEATHSIG is armed only after that, since reparenting itself would fire it.
        deadline = time.monotonic() + REPARENT_TIMEOUT
        while os.getppid() != runtime_pid:
            if time.monotonic() > deadline:
                raise OSError("not reparented to the runtime (pid %d) in time" % runtime_pid)
            time.sleep(0.0001)
        if libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0) != 0:
            raise OSError("prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != runtime_pid:
            os._exit(1)  # the runtime died in between
        sock.detach()  # fd 3 is about to become the protocol pipe; the object must not close it
        for fd, target in zip(fds, (FD_IN, FD_OUT, 1, 2)):
            os.dup2(fd, target)
        for fd in fds:
            os.close(fd)
        os.environ["NOSLATE_WORKER_ID"] = wid
        WORKER_ID = wid
        _reseed_randomness()
    except BaseException as err:  # noqa: BLE001
        log_worker("forked worker %s failed to start: %s" % (wid, err))
        os._exit(1)
    serve_worker(forked=True)


def _seed_fork(sock, req, fds, libc):
    wid = str(req.get("id") or "")
    try:
        runtime_pid = int(req.get("runtimePid") or 0)
    except (TypeError, ValueError):
        runtime_pid = 0
    # The runtime is PID 1 in a container (FC's, or `docker run`): any positive pid is valid.
    if len(fds) != 4 or not wid or runtime_pid < 1:
        _seed_send(sock, {"op": "fork-failed", "id": wid, "error": "malformed fork request"})
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        mid = os.fork()
    except OSError as err:
        _seed_send(sock, {"op": "fork-failed", "id": wid, "error": "fork: %s" % err})
        return
    if mid == 0:
        # The intermediate: fork the worker, report its pid, and exit so it is orphaned.
        code = 0
        try:
            pid = os.fork()
            if pid == 0:
                _become_worker(sock, wid, runtime_pid, fds, libc)
            _seed_send(sock, {"op": "forked", "id": wid, "pid": pid})
        except BaseException as err:  # noqa: BLE001
            code = 1
            try:
                _seed_send(sock, {"op": "fork-failed", "id": wid, "error": "fork: %s" % err})
            except BaseException:  # noqa: BLE001
                pass
        os._exit(code)
    while True:
        try:
            os.waitpid(mid, 0)
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            break


def seed_main():
    import ctypes
    import socket

    started = time.monotonic()
    # fd 4 (the same socket) stays open, so the descriptors received below land above 4.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=FD_IN)
    try:
        import_function_code()
    except BaseException as err:  # noqa: BLE001
        log_worker("seed: import failed: %s" % _format(err).rstrip())
        try:
            _seed_send(sock, {"op": "failed", "error": init_error_payload(err)})
        finally:
            os._exit(0)
    libc = ctypes.CDLL(None, use_errno=True)
    _seed_send(
        sock,
        {"op": "ready", "pid": os.getpid(), "importMs": (time.monotonic() - started) * 1000.0},
    )
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(sock, 64 * 1024, 8)
        except InterruptedError:
            continue
        except OSError as err:
            log_worker("seed: reading the control socket failed: %s" % err)
            os._exit(1)
        if not msg:
            for fd in fds:
                os.close(fd)
            os._exit(0)  # EOF: the runtime stops the seed
        try:
            req = json.loads(msg.decode("utf-8"))
            if not isinstance(req, dict) or req.get("op") != "fork":
                raise ValueError("unknown request %r" % msg[:100])
            _seed_fork(sock, req, fds, libc)
        except ValueError as err:
            log_worker("seed: %s" % err)
        finally:
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass


def check_load():
    """`noslate check --load`: imports the handler and initializer as INIT would (without running
    the initializer) and exits 0, or 1 with the INIT_ERROR payload on one stderr line after the
    marker. No protocol pipes are open."""
    try:
        import_function_code()
    except BaseException as err:  # noqa: BLE001
        _STDERR.write("NOSLATE_CHECK_LOAD " + json.dumps(init_error_payload(err)) + "\n")
        _STDERR.flush()
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)


def main():
    _setup_process()
    if os.environ.get("NOSLATE_CHECK_LOAD") == "1":
        check_load()
    if "--seed" in sys.argv[1:]:
        seed_main()
    else:
        serve_worker()


if __name__ == "__main__":
    main()
