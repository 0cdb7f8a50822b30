#!/bin/sh
# runtime "process", CGI style: this script runs once per request. The request body is its stdin,
# what it prints is the response body, and the request and the FC context are in its environment.
printf '%s %s for %s (request %s)\n' "$REQUEST_METHOD" "$REQUEST_URI" \
    "$NOSLATE_CTX_FUNCTION_NAME" "$NOSLATE_REQUEST_ID"
exec cat
