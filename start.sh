#!/bin/sh
# Container entrypoint for Function Compute: `start.sh start` prepares the directories and execs
# the runtime, so it runs as PID 1 and receives SIGTERM directly (it drains, then exits 0).
# `start.sh check` only validates the configuration.
set -eu

NOSLATE_BIN="${NOSLATE_BIN:-}"
if [ -z "$NOSLATE_BIN" ]; then
    here="$(cd "$(dirname "$0")" && pwd)"
    for candidate in "$here/noslate" /usr/local/bin/noslate "$here/target/release/noslate"; do
        if [ -x "$candidate" ]; then NOSLATE_BIN="$candidate"; break; fi
    done
fi
if [ -z "$NOSLATE_BIN" ] || [ ! -x "$NOSLATE_BIN" ]; then
    echo "start.sh: noslate binary not found (set NOSLATE_BIN or run make build)" >&2
    exit 2
fi

export NOSLATE_WORKDIR="${NOSLATE_WORKDIR:-/tmp/noslate}"
export NOSLATE_LOGDIR="${NOSLATE_LOGDIR:-$NOSLATE_WORKDIR/logs}"

prepare_dirs() {
    for dir in "$NOSLATE_WORKDIR" "$NOSLATE_LOGDIR"; do
        if ! mkdir -p "$dir" 2>/dev/null || [ ! -w "$dir" ]; then
            echo "start.sh: $dir is not writable (set NOSLATE_WORKDIR / NOSLATE_LOGDIR)" >&2
            exit 2
        fi
    done
}

case "${1:-start}" in
    start)
        shift || true
        prepare_dirs
        exec "$NOSLATE_BIN" serve "$@"
        ;;
    check)
        shift
        exec "$NOSLATE_BIN" check "$@"
        ;;
    *)
        echo "usage: start.sh start|check [noslate options]" >&2
        exit 2
        ;;
esac
