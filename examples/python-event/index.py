"""FC's Python event handler (runtime "python3", handlerStyle "fc-event", the default):
handler(event, context) gets the request body as bytes; what it returns is the 200 body
(str or bytes as is, a dict or list as JSON). initializer(context) runs once per worker first."""
import json
import logging
import os

state = {}


def initializer(context):
    state["greeting"] = os.environ.get("GREETING", "hello")
    context.logger.info("initialized")


def handler(event, context):
    logging.getLogger().info("event of %d bytes", len(event))
    try:
        data = json.loads(event or b"{}")
    except ValueError:
        data = event.decode("utf-8", "replace")
    return {
        "greeting": state.get("greeting"),
        "input": data,
        "requestId": context.request_id,
        "function": context.function.name,
    }
