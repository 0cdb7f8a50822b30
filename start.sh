#!/bin/sh
# Container entrypoint for Function Compute: `start.sh start` checks the environment, prepares the
# directories and execs the runtime, so it runs as PID 1 and receives SIGTERM directly (it drains,
# then exits 0). `start.sh check` only validates the configuration and exits non-zero with the
# reasons.
#
# Both read the same settings as the binary: --functions FILE or NOSLATE_FUNCTIONS, --config FILE
# or NOSLATED_CONFIG_PATH, NOSLATE_WORKDIR, NOSLATE_LOGDIR. Every problem is one line on stderr,
# `start.sh: ...`; the exit status is then 2, as the binary's for a bad configuration.
#
# The user's own gateway, as in Noslate's seed image: when $SERVER_PATH/server.js exists
# (SERVER_PATH=/code by default), the runtime is told to run it with node on the FC port
# (--gateway node --gateway-arg $SERVER_PATH/server.js) and stays the exec'd PID 1 itself. It
# is left alone when the command line passes --gateway or the system config sets "gateway".
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
SERVER_PATH="${SERVER_PATH:-/code}"
export NOSLATE_LOGDIR="${NOSLATE_LOGDIR:-$NOSLATE_WORKDIR/logs}"

problems=0
problem() {
    echo "start.sh: $*" >&2
    problems=$((problems + 1))
}

# The files named on the command line win over the environment, as in the binary.
functions_file="${NOSLATE_FUNCTIONS:-}"
config_file="${NOSLATED_CONFIG_PATH:-}"
workdir="$NOSLATE_WORKDIR"
logdir="$NOSLATE_LOGDIR"
gateway_flag=""
scan_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --gateway | --gateway=*) gateway_flag=yes ;;
            --functions) functions_file="${2:-}"; [ $# -lt 2 ] || shift ;;
            --functions=*) functions_file="${1#--functions=}" ;;
            --config) config_file="${2:-}"; [ $# -lt 2 ] || shift ;;
            --config=*) config_file="${1#--config=}" ;;
            --workdir) workdir="${2:-}"; [ $# -lt 2 ] || shift ;;
            --workdir=*) workdir="${1#--workdir=}" ;;
            --logdir) logdir="${2:-}"; [ $# -lt 2 ] || shift ;;
            --logdir=*) logdir="${1#--logdir=}" ;;
        esac
        shift
    done
}

# `start`: create the directories; `check`: only tell whether they could be created and written.
check_dirs() {
    create="$1"
    for dir in "$workdir" "$logdir"; do
        if [ "$create" = yes ]; then
            if ! mkdir -p "$dir" 2>/dev/null || [ ! -w "$dir" ]; then
                problem "$dir is not writable (set NOSLATE_WORKDIR / NOSLATE_LOGDIR)"
            fi
        else
            probe="$dir"
            while [ ! -e "$probe" ]; do probe="$(dirname "$probe")"; done
            if [ ! -d "$probe" ] || [ ! -w "$probe" ]; then
                problem "$dir is not writable (set NOSLATE_WORKDIR / NOSLATE_LOGDIR)"
            fi
        fi
    done
}

check_files() {
    if [ -z "$functions_file" ]; then
        problem "no function profiles: set NOSLATE_FUNCTIONS or pass --functions FILE"
    elif [ -d "$functions_file" ] || [ ! -r "$functions_file" ]; then
        problem "functions file $functions_file is not a readable file (NOSLATE_FUNCTIONS / --functions)"
    fi
    if [ -n "$config_file" ] && { [ -d "$config_file" ] || [ ! -r "$config_file" ]; }; then
        problem "config file $config_file is not a readable file (NOSLATED_CONFIG_PATH / --config)"
    fi
}

# The runtimes the profiles name (`"runtime": "nodejs"`), one per line.
runtimes_used() {
    [ -n "$functions_file" ] && [ -r "$functions_file" ] && [ ! -d "$functions_file" ] || return 0
    grep -o '"runtime"[[:space:]]*:[[:space:]]*"[A-Za-z0-9_-]*"' "$functions_file" 2>/dev/null \
        | sed 's/.*"\([^"]*\)"$/\1/' | sort -u
}

# Profiles with http(s):// code urls need curl, which downloads them. `check` counts a missing
# one as a problem; `start` only warns: the runtime serves, and those functions' starts fail.
check_fetcher() {
    strict="$1"
    [ -n "$functions_file" ] && [ -r "$functions_file" ] && [ ! -d "$functions_file" ] || return 0
    grep -qi '"url"[[:space:]]*:[[:space:]]*"https\{0,1\}://' "$functions_file" 2>/dev/null || return 0
    command -v curl >/dev/null 2>&1 && return 0
    what="functions have http(s):// code urls, but curl was not found (install curl)"
    if [ "$strict" = yes ]; then
        problem "$what"
    else
        echo "start.sh: warning: $what; their starts will fail" >&2
    fi
}

# starter.<runtime>.bin from the system config, when it sets one (parsed with whichever of
# python3 or node exists; without either the default name is checked).
starter_bin() {
    runtime="$1" default="$2"
    if [ -n "$config_file" ] && [ -r "$config_file" ] && grep -q '"starter"' "$config_file" 2>/dev/null; then
        bin=""
        if command -v python3 >/dev/null 2>&1; then
            bin="$(python3 -c 'import json,sys
try:
    print(json.load(open(sys.argv[1]))["starter"][sys.argv[2]]["bin"])
except Exception:
    pass' "$config_file" "$runtime" 2>/dev/null || true)"
        elif command -v node >/dev/null 2>&1; then
            bin="$(node -e 'try { const c = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
                     const b = c.starter[process.argv[2]].bin; if (b) console.log(b); } catch (e) {}' \
                   "$config_file" "$runtime" 2>/dev/null || true)"
        fi
        if [ -n "$bin" ]; then echo "$bin"; return; fi
    fi
    echo "$default"
}

# Which runtime binaries exist, and a problem for each one a function needs but cannot have.
# With `versions`, also run them to check the minimum versions (`check` only: it costs a fork).
check_runtimes() {
    versions="$1"
    node_bin="$(starter_bin nodejs node)"
    python_bin="$(starter_bin python3 python3)"
    node_path="$(command -v "$node_bin" 2>/dev/null || true)"
    python_path="$(command -v "$python_bin" 2>/dev/null || true)"
    used="$(runtimes_used | tr '\n' ' ' | sed 's/ *$//')"
    node_note="" python_note="" node_checked=""
    for runtime in $used; do
        case "$runtime" in
            nodejs | aworker)
                # Both run on Node.js; check it once.
                [ -z "$node_checked" ] || continue
                node_checked=yes
                if [ -z "$node_path" ]; then
                    problem "functions use runtime $runtime, but $node_bin was not found (install Node.js 18+ or set starter.nodejs.bin)"
                elif [ "$versions" = yes ]; then
                    v="$("$node_path" --version 2>/dev/null || true)"
                    major="$(echo "$v" | sed -n 's/^v\([0-9]*\)\..*/\1/p')"
                    if [ -z "$major" ] || [ "$major" -lt 18 ]; then
                        problem "functions use runtime $runtime, but $node_path is ${v:-not runnable}; Node.js 18+ is needed"
                    fi
                    node_note=" ($v)"
                fi
                ;;
            python3)
                # The minimum version is the binary's to check (`noslate check`, below, and
                # every start): it is stated in one place only.
                if [ -z "$python_path" ]; then
                    problem "functions use runtime python3, but $python_bin was not found (install python3 or set starter.python3.bin)"
                elif [ "$versions" = yes ]; then
                    v="$("$python_path" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)"
                    python_note=" ($v)"
                fi
                ;;
        esac
    done
    echo "start.sh: runtimes used: ${used:-unknown};" \
        "node: ${node_path:-not found}$node_note; python3: ${python_path:-not found}$python_note" >&2
}

# The gateway start.sh adds: "$SERVER_PATH/server.js" when it exists and nothing else names a
# gateway. Sets gateway_script (empty for none), gateway_bin and gateway_note (for `check`).
find_gateway() {
    gateway_script=""
    gateway_bin=""
    if [ -n "$gateway_flag" ]; then
        gateway_note="given on the command line (--gateway)"
    elif [ -n "$config_file" ] && [ -r "$config_file" ] && grep -q '"gateway"' "$config_file" 2>/dev/null; then
        gateway_note="from the system config (gateway.*)"
    elif [ -f "$SERVER_PATH/server.js" ]; then
        gateway_script="$SERVER_PATH/server.js"
        gateway_bin="$(starter_bin nodejs node)"
        gateway_note="$gateway_bin $gateway_script (SERVER_PATH)"
        if ! command -v "$gateway_bin" >/dev/null 2>&1; then
            problem "$gateway_script exists, but $gateway_bin was not found to run it (install Node.js or set starter.nodejs.bin)"
        fi
    else
        gateway_note="none (no $SERVER_PATH/server.js)"
    fi
}

case "${1:-start}" in
    start)
        [ $# -eq 0 ] || shift
        scan_args "$@"
        check_dirs yes
        check_files
        check_runtimes no
        find_gateway
        check_fetcher no
        if [ "$problems" -gt 0 ]; then
            echo "start.sh: not starting: $problems problem(s) above" >&2
            exit 2
        fi
        if [ -n "$gateway_script" ]; then
            set -- --gateway "$gateway_bin" --gateway-arg "$gateway_script" "$@"
        fi
        exec "$NOSLATE_BIN" serve "$@"
        ;;
    check)
        [ $# -eq 0 ] || shift
        scan_args "$@"
        check_dirs no
        check_files
        check_runtimes yes
        check_fetcher yes
        find_gateway
        echo "start.sh: gateway: $gateway_note" >&2
        if [ -n "$gateway_script" ]; then
            set -- --gateway "$gateway_bin" --gateway-arg "$gateway_script" "$@"
        fi
        # The binary validates every field of the profiles and the config, with field paths.
        if ! "$NOSLATE_BIN" check "$@"; then
            problems=$((problems + 1))
        fi
        if [ "$problems" -gt 0 ]; then
            echo "start.sh: check failed: $problems problem(s) above" >&2
            exit 2
        fi
        ;;
    *)
        echo "usage: start.sh start|check [noslate options]" >&2
        exit 2
        ;;
esac
