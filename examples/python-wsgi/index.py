"""FC's Python HTTP handler (runtime "python3", handlerStyle "fc-http"): a WSGI app.
environ carries the request (wsgi.input streams the body) and environ['fc.context'] the FC
context. A generator's pieces reach the client as they are produced: try `?stream`."""
import json
import time


def handler(environ, start_response):
    context = environ["fc.context"]
    if "stream" in environ.get("QUERY_STRING", ""):
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
        return slow_lines()
    body = environ["wsgi.input"].read()  # to the end, whether or not there is a Content-Length
    answer = json.dumps({
        "method": environ["REQUEST_METHOD"],
        "path": environ["PATH_INFO"],
        "query": environ["QUERY_STRING"],
        "body": body.decode("utf-8", "replace"),
        "requestId": context.request_id,
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [answer]


def slow_lines():
    for i in range(1, 4):
        time.sleep(0.2)
        yield ("line %d of 3\n" % i).encode()
