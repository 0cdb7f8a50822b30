#!/usr/bin/env bash
# The container image: `make image` (scripts/image.sh build) and `make image-test`
# (scripts/image.sh test). See docs/DEPLOY.md.
#
# build   builds the Dockerfile with podman (or docker) as noslate:<version> and noslate:latest.
#         BASE_IMAGE (default docker.io/library/debian:trixie-slim), IMAGE (default noslate) and
#         CONTAINER_ENGINE (podman|docker) can be set in the environment.
#
# test    proves the image fully offline (no registry): a Debian trixie minbase rootfs made with
#         debootstrap from the mirror apt already uses (cached as a tarball between runs), imported
#         as a local base image; the Dockerfile built on it; the container run three times with its
#         port published on 127.0.0.1 and driven like Function Compute drives it; `podman stop`
#         must give exit code 0 well inside the grace period. Prints the image's layers, the time
#         from `podman run` to the first good /invoke (median of 3) and the stop times. Everything
#         it creates (containers, images, temp files) is removed at exit; the base tarball stays.
#
#         NOSLATE_IMAGE_CACHE   where the base tarball is kept (default ~/.cache/noslate)
#         NOSLATE_DEBIAN_MIRROR the mirror for debootstrap (default: apt's, from /etc/apt)
#         NOSLATE_IMAGE_KEEP=1  keep the built image (tagged localhost/noslate-image-test:<id>)
#         NOSLATE_IMAGE_RUN_ARGS extra `podman run` arguments for the three runs (e.g. `-e RUST_LOG=debug`)
#
# Podman runs with a containers.conf generated in a temp dir (CONTAINERS_CONF), never the system
# one: the runc runtime when the cgroup hierarchy is mixed v1/v2 (crun refuses it), cgroupfs and a
# file event log when systemd is not running, and default ulimits no higher than this shell's hard
# limits (podman's defaults are higher, and raising a hard limit fails without CAP_SYS_RESOURCE).
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

SUITE=trixie
GRACE=10            # podman stop -t: seconds between SIGTERM and SIGKILL
STOP_BUDGET_MS=5000 # a stop must take less than half the grace period
START_BUDGET_S=30   # from podman run to the first good /invoke
ADDED_LIMIT=15000000 # bytes the project may add on top of base + nodejs + python3

say() { printf 'image: %s\n' "$*" >&2; }
die() {
    printf '\nimage: FAIL: %s\n' "$*" >&2
    exit 1
}
now_ms() {
    if [ -n "${EPOCHREALTIME:-}" ]; then # bash 5: no fork
        local t=${EPOCHREALTIME/./}
        echo $((t / 1000))
    else
        date +%s%3N
    fi
}
need() {
    command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"
}
version() {
    sed -n '/^\[package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1
}
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1000000 }'; }
median3() { printf '%s\n' "$@" | sort -n | sed -n 2p; }

TMPD="$(mktemp -d "${TMPDIR:-/tmp}/noslate-image.XXXXXX")"
CONTAINERS=()
IMAGES=()
BUILD_FLAGS=()
BG_PIDS=()
cleanup() {
    local rc=$?
    set +e
    for pid in "${BG_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    if [ "${ENGINE:-}" = podman ]; then
        for c in "${CONTAINERS[@]}"; do podman rm -f -t 0 "$c" >/dev/null 2>&1; done
        # No -f: it would also remove any other container that uses the same image.
        for i in "${IMAGES[@]}"; do podman rmi "$i" >/dev/null 2>&1; done
    fi
    rm -rf "$TMPD"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- the container engine ------------------------------------------------------------------

pick_engine() {
    ENGINE="${CONTAINER_ENGINE:-}"
    if [ -z "$ENGINE" ]; then
        if command -v podman >/dev/null 2>&1; then
            ENGINE=podman
        elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
            ENGINE=docker
        else
            die "neither podman nor a running docker engine found (apt-get install podman runc uidmap)"
        fi
    fi
    [ "$ENGINE" = podman ] && podman_conf
    return 0
}

# A containers.conf for this machine, in the temp dir. Left alone when CONTAINERS_CONF is set.
podman_conf() {
    [ -z "${CONTAINERS_CONF:-}" ] || return 0
    local conf="$TMPD/containers.conf" ulimits=() n u
    n="$(ulimit -Hn)"
    u="$(ulimit -Hu)"
    # Podman lowers its own RLIMIT_NPROC to 32768 when it starts (seen with strace), and without
    # CAP_SYS_RESOURCE a container cannot get more than the process that starts it.
    if [ "$u" = unlimited ] || [ "$u" -gt 32768 ]; then u=32768; fi
    # `podman build` does not read default_ulimits for its RUN steps: it gets them as flags.
    [ "$n" = unlimited ] || { ulimits+=("\"nofile=$n:$n\""); BUILD_FLAGS+=(--ulimit "nofile=$n:$n"); }
    [ "$u" = unlimited ] || { ulimits+=("\"nproc=$u:$u\""); BUILD_FLAGS+=(--ulimit "nproc=$u:$u"); }
    {
        echo "[containers]"
        echo "default_ulimits = [$(
            IFS=,
            echo "${ulimits[*]}"
        )]"
        echo "[engine]"
        if [ -d /sys/fs/cgroup/unified ] || ! [ -f /sys/fs/cgroup/cgroup.controllers ]; then
            # cgroup v1 or the hybrid v1/v2 layout: crun refuses it, runc works.
            command -v runc >/dev/null 2>&1 ||
                die "runc not found: podman needs it on this cgroup layout (apt-get install runc)"
            echo 'runtime = "runc"'
        fi
        if ! [ -d /run/systemd/system ]; then
            echo 'cgroup_manager = "cgroupfs"'
            echo 'events_logger = "file"'
        fi
    } >"$conf"
    export CONTAINERS_CONF="$conf"
}

build_image() { # build_image TAG BASE [extra engine args...]
    local tag="$1" base="$2"
    shift 2
    local source revision
    source="$(git remote get-url origin 2>/dev/null || echo unknown)"
    revision="$(git describe --always --dirty 2>/dev/null || echo unknown)"
    [ -x target/release/noslate ] || die "target/release/noslate is missing: run make build first"
    "$ENGINE" build ${BUILD_FLAGS[@]+"${BUILD_FLAGS[@]}"} "$@" \
        --build-arg BASE_IMAGE="$base" \
        --build-arg NOSLATE_VERSION="$(version)" \
        --build-arg NOSLATE_SOURCE="$source" \
        --build-arg NOSLATE_REVISION="$revision" \
        -t "$tag" -f Dockerfile .
}

cmd_build() {
    pick_engine
    local image="${IMAGE:-noslate}" base="${BASE_IMAGE:-docker.io/library/debian:trixie-slim}"
    build_image "$image:$(version)" "$base"
    "$ENGINE" tag "$image:$(version)" "$image:latest"
    say "built $image:$(version) (and $image:latest) on $base"
    "$ENGINE" history "$image:$(version)"
}

# ---- the offline base image ----------------------------------------------------------------

# The first URI apt uses for suite $1 (deb822 .sources, then one-line .list files).
apt_uri() {
    local want="$1" f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        uri="$(awk -v want="$want" 'BEGIN { RS = ""; FS = "\n" }
            {
                types = ""; uris = ""; suites = ""
                for (i = 1; i <= NF; i++) {
                    line = $i
                    if (line ~ /^Types:/) { sub(/^Types:[ \t]*/, "", line); types = " " line " " }
                    else if (line ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", line); uris = line }
                    else if (line ~ /^Suites:/) { sub(/^Suites:[ \t]*/, "", line); suites = " " line " " }
                }
                if (index(types, " deb ") && index(suites, " " want " ")) { split(uris, u, /[ \t]+/); print u[1]; exit }
            }' "$f")"
        if [ -n "$uri" ]; then
            echo "$uri"
            return
        fi
    done
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        sed -e 's/\[[^]]*\]//' | awk -v want="$want" '!found && $1 == "deb" && $3 == want { print $2; found = 1 }'
}

# The first Debian archive (a URI ending in /debian) that apt on this host uses, whatever suite.
debian_mirror() {
    cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs:[ \t]*//p' | tr ' \t' '\n\n' |
        grep -m 1 '/debian/*$' | sed 's:/*$::' || true
    [ -n "$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs:[ \t]*//p')" ] ||
        sed -e 's/\[[^]]*\]//' /etc/apt/sources.list 2>/dev/null |
        awk '$1 == "deb" && $2 ~ /\/debian\/?$/ { sub(/\/$/, "", $2); print $2; exit }'
}

# The equivalent of debian:trixie-slim (debuerreotype's minbase + "slim" settings): no docs,
# man pages or locales from later installs, no apt caches or lists, services never started.
slimify() {
    local root="$1" mirror="$2" security="$3"
    rm -f "$root/etc/apt/sources.list"
    {
        printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\n' "$mirror" "$SUITE" "$SUITE"
        printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
        if [ -n "$security" ]; then
            printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\n' "$security" "$SUITE"
            printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
        fi
    } >"$root/etc/apt/sources.list.d/debian.sources"
    printf '#!/bin/sh\n# No service starts during image builds.\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 0755 "$root/usr/sbin/policy-rc.d"
    cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
# Slim image: documentation, manuals and translations are not installed.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
    echo 'force-unsafe-io' >"$root/etc/dpkg/dpkg.cfg.d/docker-apt-speedup"
    cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    echo 'Acquire::GzipIndexes "true";' >"$root/etc/apt/apt.conf.d/docker-gzip-indexes"
    echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
    echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
    find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
    rm -rf "$root"/usr/share/{groff,info,linda,locale,man}/* "$root"/usr/share/lintian/overrides/*
    rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/log/* "$root"/tmp/* \
        "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old
    mkdir -p "$root/var/lib/apt/lists/partial"
}

# Prints the path of the cached base tarball, making it first when it is missing.
base_tarball() {
    local arch cache tarball mirror security
    arch="$(dpkg --print-architecture)"
    cache="${NOSLATE_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/noslate}"
    tarball="$cache/debian-$SUITE-minbase-$arch.tar"
    if [ -s "$tarball" ]; then
        say "base: cached $tarball ($(mb "$(stat -c %s "$tarball")"))"
        echo "$tarball"
        return
    fi
    need debootstrap "apt-get install debootstrap"
    mirror="${NOSLATE_DEBIAN_MIRROR:-$(apt_uri "$SUITE")}"
    # A host on another release still names the mirror it uses: the same one serves $SUITE.
    [ -n "$mirror" ] || mirror="$(debian_mirror)"
    [ -n "$mirror" ] || die "no Debian mirror in /etc/apt (set NOSLATE_DEBIAN_MIRROR)"
    security="$(apt_uri "$SUITE-security")"
    if [ -z "$security" ] && [ "${mirror%/debian}" != "$mirror" ]; then
        security="${mirror%/debian}/debian-security"
    fi
    local include=()
    case "$mirror" in https:*) include=(--include=ca-certificates) ;; esac
    say "base: debootstrap --variant=minbase $SUITE from $mirror (first run only; cached afterwards)"
    local root="$TMPD/rootfs" t0
    t0=$(now_ms)
    if ! timeout 1200 debootstrap --variant=minbase --arch="$arch" "${include[@]}" \
        "$SUITE" "$root" "$mirror" >"$TMPD/debootstrap.log" 2>&1; then
        tail -n 20 "$TMPD/debootstrap.log" >&2
        die "debootstrap failed (log above)"
    fi
    slimify "$root" "$mirror" "$security"
    mkdir -p "$cache"
    tar --numeric-owner --xattrs -C "$root" --exclude='./dev/*' --exclude='./proc/*' \
        --exclude='./sys/*' -cf "$tarball.part" .
    mv "$tarball.part" "$tarball"
    say "base: $tarball built in $(($(now_ms) - t0)) ms ($(mb "$(stat -c %s "$tarball")"))"
    echo "$tarball"
}

# ---- driving the container like Function Compute -------------------------------------------

PORT=""
# req NAME METHOD PATH [curl args...]: one request; the status goes to $TMPD/NAME.code, the head
# to NAME.head and the body to NAME.body.
req() {
    local name="$1" method="$2" path="$3"
    shift 3
    curl -sS --max-time 15 -X "$method" -o "$TMPD/$name.body" -D "$TMPD/$name.head" \
        -w '%{http_code}' "$@" "http://127.0.0.1:$PORT$path" >"$TMPD/$name.code" 2>"$TMPD/$name.err" ||
        echo 000 >"$TMPD/$name.code"
    [ -f "$TMPD/$name.head" ] && sed -i 's/\r$//' "$TMPD/$name.head"
    return 0
}
code_of() { cat "$TMPD/$1.code"; }
expect() { # expect NAME STATUS [header-regex] [body-regex]: fail with what arrived otherwise
    local name="$1" status="$2" header="${3:-}" body="${4:-}" got
    got="$(code_of "$name")"
    if [ "$got" != "$status" ] ||
        { [ -n "$header" ] && ! grep -Eqi "$header" "$TMPD/$name.head"; } ||
        { [ -n "$body" ] && ! grep -Eq "$body" "$TMPD/$name.body"; }; then
        {
            echo "--- $name: expected $status${header:+, header /$header/}${body:+, body /$body/}; got:"
            cat "$TMPD/$name.head" "$TMPD/$name.err" 2>/dev/null || true
            head -c 2000 "$TMPD/$name.body" 2>/dev/null || true
            echo
            echo "--- container log (last 40 lines, without the FC Invoke lines):"
            podman logs "$CURRENT" 2>&1 | grep -v '^FC Invoke' | tail -n 40 || true
        } >&2
        die "$name: expected HTTP $status${header:+ with /$header/}${body:+ and body /$body/}, got $got"
    fi
    say "  ok  $name: $status"
}

CURRENT=""
START_MS=""
STOP_MS=""
RUN_RETURNED_MS=""
EXITED_MS=""
# Milliseconds since the epoch of a podman time stamp (`2026-11-29 00:04:01.123456789 +0000 UTC`).
stamp_ms() { date -d "${1% UTC}" +%s%3N; }
# Starts container $1 (with more `podman run` arguments after it) and waits for the first good
# /invoke; START_MS is the time it took.
start_container() {
    local name="$1" t0 deadline
    shift
    t0=$(now_ms)
    # shellcheck disable=SC2086 # NOSLATE_IMAGE_RUN_ARGS is split on purpose
    podman run -d --name "$name" -p 127.0.0.1::9000 ${NOSLATE_IMAGE_RUN_ARGS:-} "$@" "$IMAGE_ID" >/dev/null ||
        die "podman run failed"
    RUN_RETURNED_MS=$(($(now_ms) - t0))
    CONTAINERS+=("$name")
    CURRENT="$name"
    PORT="$(podman port "$name" 9000/tcp | sed -n '1s/.*://p')"
    if [ -z "$PORT" ]; then
        podman logs "$name" >&2 || true
        die "podman port $name 9000/tcp gave no host port (state: $(podman inspect -f '{{.State.Status}} exit {{.State.ExitCode}} {{.State.Error}}' "$name"))"
    fi
    deadline=$((t0 + START_BUDGET_S * 1000))
    while :; do
        req first POST /invoke -H 'x-fc-control-path: /invoke' -H "x-fc-request-id: first-$name" \
            -H 'x-noslate-function: hello' --data-binary 'ping'
        [ "$(code_of first)" = 200 ] && break
        if [ "$(podman inspect -f '{{.State.Running}}' "$name")" != true ]; then
            podman logs "$name" >&2 || true
            die "container $name exited before answering /invoke (log above)"
        fi
        if [ "$(now_ms)" -ge "$deadline" ]; then
            podman logs "$name" 2>&1 | grep -v '^FC Invoke' | tail -n 40 >&2 || true
            die "no good /invoke from $name within ${START_BUDGET_S}s (last answer: $(code_of first) $(head -c 600 "$TMPD/first.body"))"
        fi
        sleep 0.02 # poll interval
    done
    START_MS=$(($(now_ms) - t0))
}

# Stops container $1 with `podman stop`; asserts exit 0 inside the budget; STOP_MS is the time.
stop_container() {
    local name="$1" t0 ms code
    t0=$(now_ms)
    timeout $((GRACE + 20)) podman stop -t "$GRACE" "$name" >/dev/null || die "podman stop $name failed"
    ms=$(($(now_ms) - t0))
    code="$(podman inspect -f '{{.State.ExitCode}}' "$name")"
    # When the process itself ended (the rest of `ms` is podman's own teardown).
    EXITED_MS=$(($(stamp_ms "$(podman inspect -f '{{.State.FinishedAt}}' "$name")") - t0))
    if [ "$code" != 0 ]; then
        podman logs --tail 40 "$name" >&2 || true
        [ "$code" = 137 ] && die "$name was SIGKILLed (exit 137): SIGTERM did not end it within ${GRACE}s"
        die "$name exited with $code after podman stop, expected 0"
    fi
    [ "$ms" -lt "$STOP_BUDGET_MS" ] || die "$name took ${ms} ms to stop (budget ${STOP_BUDGET_MS} ms of a ${GRACE}s grace)"
    STOP_MS=$ms
}

# What runs inside: noslate itself is PID 1 (start.sh exec'd it), and the image carries no apt
# lists and no compiler.
inside_container() {
    local pid1 extra
    pid1="$(podman exec "$CURRENT" cat /proc/1/cmdline | tr '\0' ' ')"
    case "$pid1" in
        /usr/local/bin/noslate\ serve*) say "  ok  PID 1 is '$pid1'" ;;
        *) die "PID 1 in the container is '$pid1', expected /usr/local/bin/noslate serve" ;;
    esac
    extra="$(podman exec "$CURRENT" sh -c 'ls -A /var/lib/apt/lists | grep -v "^partial$" | grep -v "^lock$";
        for t in gcc cc make g++ apt-get; do command -v "$t" 2>/dev/null | grep -v apt-get; done' || true)"
    [ -z "$extra" ] || die "the image carries apt lists or build tools: $extra"
    say "  ok  no apt lists, no build tools in the image"
    # A gateway's view: the SDK at NOSLATE_PATH reaches the runtime over its admin socket.
    sdk="$(podman exec "$CURRENT" node -e '
        const { NoslatedClient } = require(process.env.NOSLATE_PATH);
        (async () => {
          const agent = new NoslatedClient();
          await agent.start();
          const res = await agent.invoke("hello", Buffer.from("image"), {});
          let body = ""; for await (const c of res) body += c;
          console.log(res.status, body.trim());
          await agent.close();
        })().catch((e) => { console.log("FAIL", e.message); process.exit(1); });' 2>&1)" ||
        die "the SDK at NOSLATE_PATH failed in the image: $sdk"
    say "  ok  require(NOSLATE_PATH).NoslatedClient invoked hello: $sdk"
}

# The whole FC conversation, on the first container.
drive_like_fc() {
    local rid=image-test-1
    req init POST /initialize -H 'x-fc-control-path: /initialize' -H 'x-fc-request-id: image-test-init'
    expect init 200
    req health GET /healthz
    expect health 200 '' '"status":"ok"'
    req ready GET /ready
    expect ready 200
    req invoke POST /invoke -H 'x-fc-control-path: /invoke' -H "x-fc-request-id: $rid" \
        -H 'x-fc-function-timeout: 3' -H 'x-fc-function-name: hello' -H 'x-fc-region: cn-hangzhou' \
        -H 'x-fc-account-id: 1234' -H 'x-fc-retry-count: 0' -H 'x-noslate-function: hello' \
        -H 'content-type: application/octet-stream' --data-binary 'hello from FC'
    expect invoke 200 '^x-fc-status: 200' '^hello$'
    req initfn POST /invoke/init -H 'x-fc-control-path: /invoke' -H 'x-fc-request-id: image-test-2'
    expect initfn 200 '' '"greeting":"hello from the initializer"'
    req http PUT '/any/path?q=1' -H 'x-fc-control-path: /http-invoke' -H 'x-fc-request-id: image-test-3' \
        -H 'x-noslate-function: echo' -H 'x-a: 1' -H 'content-type: text/plain' --data-binary 'some body'
    expect http 200 '^content-type: application/json' \
        '"method":"PUT".*"url":"/any/path\?q=1".*"body":"some body"'
    grep -q '"requestId":"image-test-3"' "$TMPD/http.body" || die "http: the echo lacks the FC request id"
    req fnerr POST /invoke -H 'x-fc-control-path: /invoke' -H 'x-fc-request-id: image-test-4' \
        -H 'x-noslate-function: error' --data-binary 'x'
    expect fnerr 404 '^x-fc-status: 404' '"errorType":"DemoError"'
    if grep -q '"name": *"python-event"' examples/functions.json; then # Python 3 from the distribution
        req python POST /invoke/python-event -H 'x-fc-control-path: /invoke' -H 'x-fc-request-id: image-test-py' \
            --data-binary '{"a":1}'
        expect python 200 '^x-fc-status: 200' '"function": *"python-event"'
        req wsgi GET '/wsgi/path?q=1' -H 'x-fc-control-path: /http-invoke' -H 'x-noslate-function: python-wsgi'
        expect wsgi 200
        warm_fork_in_image python-event
    fi
    if grep -q '"name": *"process-echo"' examples/functions.json; then # runtime process, CGI style
        req process POST '/some/path?x=1' -H 'x-fc-control-path: /http-invoke' \
            -H 'x-noslate-function: process-echo' --data-binary 'some body'
        expect process 200 '' '^POST /some/path\?x=1 for process-echo'
    fi
    if grep -q '"name": *"native-echo"' examples/functions.json; then # the reference native worker
        req native POST /invoke/native-echo -H 'x-fc-control-path: /invoke' --data-binary 'native body'
        expect native 200 '^x-method: POST' '^native body$'
    fi
    req nofn POST /invoke -H 'x-fc-control-path: /invoke' -H 'x-noslate-function: no-such-function'
    expect nofn 404 '^x-fc-status: 404' '"errorType":"FunctionNotFound"'
    req freeze GET /pre-freeze -H 'x-fc-control-path: /pre-freeze' -H 'x-fc-request-id: image-test-5'
    expect freeze 200
    # The log lines are batched per loop iteration: poll for them, bounded.
    local deadline=$(($(now_ms) + 5000)) log="$TMPD/container.log"
    while :; do
        podman logs "$CURRENT" >"$log" 2>/dev/null || true
        grep -q "FC Invoke Start RequestId: $rid" "$log" && grep -q "FC Invoke End RequestId: $rid" "$log" && break
        [ "$(now_ms)" -lt "$deadline" ] ||
            die "no 'FC Invoke Start/End RequestId: $rid' lines in the container's stdout: $(tail -n 20 "$log")"
        sleep 0.05 # poll interval
    done
    say "  ok  FC Invoke Start/End RequestId: $rid in the container's stdout"
    req prestop GET /pre-stop -H 'x-fc-control-path: /pre-stop' -H 'x-fc-request-id: image-test-6'
    expect prestop 200
    req afterstop POST /invoke -H 'x-fc-control-path: /invoke' -H 'x-noslate-function: hello' --data-binary x
    expect afterstop 503 '' '"errorType":"RuntimeStopped"'
}

# The conformance suite (tests/conformance.rs: every runtime's bootstrap, driven case by case
# through the worker protocol) run inside the image, on its Node.js and Python. The test binary
# is built on the host and mounted at its own path, with the repository's fixtures.
conformance_in_image() {
    local bin t0
    bin="$(cargo test --test conformance --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "conformance":
        print(m["executable"])')"
    [ -n "$bin" ] && [ -x "$bin" ] || die "conformance: cannot build the suite (cargo test --test conformance --no-run)"
    t0=$(now_ms)
    if ! timeout 600 podman run --rm --entrypoint "$bin" -v "$PWD:$PWD:ro" -w "$PWD" "$IMAGE_ID" \
        --test-threads=2 >"$TMPD/conformance.out" 2>&1; then
        tail -n 40 "$TMPD/conformance.out" >&2
        die "conformance: the suite failed inside the image (above)"
    fi
    say "  ok  conformance inside the image ($(podman run --rm --entrypoint node "$IMAGE_ID" --version), $(podman run --rm --entrypoint python3 "$IMAGE_ID" --version)): $(grep -o 'test result: ok. [0-9]* passed' "$TMPD/conformance.out" | head -n 1) in $(($(now_ms) - t0)) ms"
}

# The distribution's Python forks warm workers: once function $1's seed is ready, its worker is
# killed, and the one that replaces it must be forked from the seed and serve.
warm_fork_in_image() {
    local fn="$1" deadline pid
    deadline=$(($(now_ms) + 15000))
    until podman exec "$CURRENT" noslate stats 2>/dev/null |
        python3 -c 'import json,sys; s=json.load(sys.stdin)["functions"][sys.argv[1]]["seed"]; sys.exit(0 if s and s["state"]=="ready" else 1)' "$fn"; do
        [ "$(now_ms)" -lt "$deadline" ] || die "warm fork: the seed of $fn is not ready within 15 s: $(podman exec "$CURRENT" noslate stats 2>&1 | head -c 2000)"
        sleep 0.1 # poll interval
    done
    pid="$(podman exec "$CURRENT" noslate ps --json |
        python3 -c 'import json,sys; print(next(w["pid"] for w in json.load(sys.stdin) if w["function"]==sys.argv[1] and w["state"]=="ready"))' "$fn")"
    podman exec "$CURRENT" sh -c "kill -9 $pid" # the shell's kill: minbase has no procps
    req forked POST "/invoke/$fn" -H 'x-fc-control-path: /invoke' --data-binary '{"a":2}'
    expect forked 200 '^x-fc-status: 200'
    podman exec "$CURRENT" noslate ps --json |
        python3 -c 'import json,sys; sys.exit(0 if any(w["function"]==sys.argv[1] and w["start"]=="forked" for w in json.load(sys.stdin)) else 1)' "$fn" ||
        die "warm fork: no forked worker of $fn after its worker was killed: $(podman exec "$CURRENT" noslate ps --json)"
    say "  ok  warm fork: a worker of $fn forked from its seed on $(podman exec "$CURRENT" python3 --version) served"
}

# The seed's gateway pattern: /code/server.js (the example gateway, on the SDK at NOSLATE_PATH)
# started by start.sh and supervised by the runtime, which stays PID 1 and serves through it.
gateway_in_image() {
    local pid1 state
    pid1="$(podman exec "$CURRENT" cat /proc/1/cmdline | tr '\0' ' ')"
    case "$pid1" in
        /usr/local/bin/noslate\ serve*--gateway*) ;;
        *) die "gateway: PID 1 is '$pid1', expected noslate serve with --gateway" ;;
    esac
    state="$(podman exec "$CURRENT" noslate stats | python3 -c 'import json, sys; g = json.load(sys.stdin).get("gateway") or {}; print(g.get("state"), g.get("restarts"))')"
    [ "$state" = "running 0" ] || die "gateway: noslate stats says state and restarts '$state', expected 'running 0'"
    req gateway POST /invoke/hello --data-binary 'through the gateway'
    expect gateway 200 '' '^hello'
    say "  ok  /code/server.js runs as the supervised gateway (PID 1: $pid1) and invokes through the SDK"
}

# A streamed invocation in flight when SIGTERM arrives must finish whole before the exit.
stop_with_stream_in_flight() {
    local name="$1" out="$TMPD/stream.out" deadline pid rc=0
    curl -sS -N --max-time 20 -H 'x-fc-control-path: /http-invoke' -H 'x-noslate-function: stream' \
        "http://127.0.0.1:$PORT/stream" >"$out" 2>"$TMPD/stream.err" &
    pid=$!
    BG_PIDS+=("$pid")
    deadline=$(($(now_ms) + 10000))
    until grep -q '^chunk 1 of 5' "$out" 2>/dev/null; do
        [ "$(now_ms)" -lt "$deadline" ] || die "stream: no first chunk within 10 s"
        sleep 0.01
    done
    stop_container "$name"
    wait "$pid" || rc=$?
    { [ "$rc" = 0 ] && grep -q '^chunk 5 of 5' "$out"; } ||
        die "stream: the in-flight response was cut by the stop (curl rc $rc): $(cat "$out" "$TMPD/stream.err")"
    say "  ok  a streamed invocation in flight at SIGTERM completed (5 of 5 chunks)"
}

cmd_test() {
    local t_all id base tarball t0 build_ms
    t_all=$(now_ms)
    [ "$(id -u)" = 0 ] || die "make image-test runs podman and debootstrap as root"
    need podman "apt-get install podman runc uidmap"
    need curl "apt-get install curl"
    need jq "apt-get install jq"
    [ -x target/release/noslate ] || die "target/release/noslate is missing: run make build first"
    CONTAINER_ENGINE=podman pick_engine
    say "podman $(podman version -f '{{.Client.Version}}'), CONTAINERS_CONF=${CONTAINERS_CONF}:"
    sed 's/^/image:   /' "$CONTAINERS_CONF" >&2

    id="$$-$(date +%s)"
    tarball="$(base_tarball)"
    base="localhost/noslate-image-test-base:$id"
    t0=$(now_ms)
    podman import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' "$tarball" "$base" >"$TMPD/import.log" 2>&1 || {
        cat "$TMPD/import.log" >&2
        die "podman import $tarball failed"
    }
    IMAGES+=("$base")
    say "base: imported as $base in $(($(now_ms) - t0)) ms"

    IMAGE_ID="localhost/noslate-image-test:$id"
    IMAGES+=("$IMAGE_ID")
    t0=$(now_ms)
    say "build: Dockerfile on $base"
    build_image "$IMAGE_ID" "$base" --pull=never --layers >"$TMPD/build.log" 2>&1 || {
        tail -n 40 "$TMPD/build.log" >&2
        die "podman build failed (log above)"
    }
    build_ms=$(($(now_ms) - t0))
    say "build: $IMAGE_ID in $build_ms ms"
    [ "${NOSLATE_IMAGE_KEEP:-}" = 1 ] && unset 'IMAGES[-1]'

    # ---- sizes ----
    local total base_size runtimes_size added
    total="$(podman image inspect -f '{{.Size}}' "$IMAGE_ID")"
    base_size="$(podman image inspect -f '{{.Size}}' "$base")"
    podman history --format json "$IMAGE_ID" >"$TMPD/history.json"
    runtimes_size="$(jq '[.[] | select((.CreatedBy // .createdBy // "") | test("apt-get install")) | .size] | add // 0' "$TMPD/history.json")"
    added=$((total - base_size - runtimes_size))
    {
        echo
        echo "Image $IMAGE_ID, layer by layer (oldest first):"
        jq -r 'reverse | .[] | [(.size | tostring), ((.CreatedBy // .createdBy // "") | gsub("\\s+"; " ") | .[0:110])] | @tsv' \
            "$TMPD/history.json" | awk -F'\t' '$1 > 0 || $2 !~ /#\(nop\)/ {
                printf "  %9.2f MB  %s\n", $1 / 1000000, ($2 == "" ? "(base rootfs: debootstrap --variant=minbase '"$SUITE"')" : $2) }'
        echo "  ----"
        printf '  %9.2f MB  total\n' "$(awk -v b="$total" 'BEGIN { print b / 1000000 }')"
        printf '  %9.2f MB  base (Debian %s minbase, slim)\n' "$(awk -v b="$base_size" 'BEGIN { print b / 1000000 }')" "$SUITE"
        printf '  %9.2f MB  distribution nodejs + python3 + ca-certificates\n' "$(awk -v b="$runtimes_size" 'BEGIN { print b / 1000000 }')"
        printf '  %9.2f MB  added by noslate (binary, start.sh, /code examples, config)\n' "$(awk -v b="$added" 'BEGIN { print b / 1000000 }')"
    } >&2
    [ "$added" -lt "$ADDED_LIMIT" ] || die "the project adds $(mb "$added") on top of base + runtimes (limit $(mb "$ADDED_LIMIT"))"

    local label
    label="$(podman image inspect -f '{{index .Labels "org.opencontainers.image.version"}}' "$IMAGE_ID")"
    [ "$label" = "$(version)" ] || die "label org.opencontainers.image.version is '$label', Cargo.toml says $(version)"
    say "labels: version $label, source $(podman image inspect -f '{{index .Labels "org.opencontainers.image.source"}}' "$IMAGE_ID")"
    conformance_in_image

    # ---- start.sh check, and start refusing a bad environment ----
    say "start.sh:"
    podman run --rm --entrypoint /usr/local/bin/start.sh "$IMAGE_ID" check >"$TMPD/check.out" 2>&1 || {
        cat "$TMPD/check.out" >&2
        die "start.sh check failed in the image"
    }
    grep -q 'configuration OK' "$TMPD/check.out" || die "start.sh check: no 'configuration OK': $(cat "$TMPD/check.out")"
    say "  ok  start.sh check: $(grep 'runtimes used' "$TMPD/check.out" | sed 's/^start.sh: //')"
    local rc=0
    timeout 60 podman run --rm -e NOSLATE_FUNCTIONS=/code/missing.json "$IMAGE_ID" >"$TMPD/bad.out" 2>&1 || rc=$?
    { [ "$rc" = 2 ] && grep -q 'functions file /code/missing.json is not a readable file' "$TMPD/bad.out"; } || {
        cat "$TMPD/bad.out" >&2
        die "start.sh start with a missing functions file: expected exit 2 and a clear line, got $rc"
    }
    say "  ok  start.sh start refuses a missing functions file: exit 2, '$(head -n 1 "$TMPD/bad.out")'"
    rc=0
    timeout 60 podman run --rm --read-only --read-only-tmpfs=false "$IMAGE_ID" >"$TMPD/ro.out" 2>&1 || rc=$?
    { [ "$rc" = 2 ] && grep -q '/tmp/noslate is not writable' "$TMPD/ro.out"; } || {
        cat "$TMPD/ro.out" >&2
        die "start.sh start on a read-only root: expected exit 2 and a clear line, got $rc"
    }
    say "  ok  start.sh start refuses a read-only work dir: exit 2, '$(head -n 1 "$TMPD/ro.out")'"

    # ---- three runs ----
    local starts=() stops=() exits=()
    for run in 1 2 3; do
        say "run $run:"
        start_container "noslate-image-test-$id-$run"
        starts+=("$START_MS")
        say "  ok  podman run -> first good /invoke: $START_MS ms (podman run -d returned after $RUN_RETURNED_MS ms)"
        case $run in
            1)
                inside_container
                drive_like_fc
                stop_container "$CURRENT"
                say "  ok  podman stop after /pre-stop: exit 0 in $STOP_MS ms (process gone after $EXITED_MS ms)"
                ;;
            2)
                stop_container "$CURRENT"
                say "  ok  podman stop with idle workers: exit 0 in $STOP_MS ms (process gone after $EXITED_MS ms)"
                ;;
            3)
                stop_with_stream_in_flight "$CURRENT"
                say "  ok  podman stop with an invocation in flight: exit 0 in $STOP_MS ms (process gone after $EXITED_MS ms)"
                ;;
        esac
        stops+=("$STOP_MS")
        exits+=("$EXITED_MS")
        podman rm -f -t 0 "$CURRENT" >/dev/null
    done

    # ---- the seed's gateway ----
    say "gateway:"
    start_container "noslate-image-test-$id-gateway" -v "$PWD/examples/gateway/server.js:/code/server.js:ro"
    gateway_in_image
    stop_container "$CURRENT"
    say "  ok  podman stop with the gateway: exit 0 in $STOP_MS ms (process gone after $EXITED_MS ms)"
    podman rm -f -t 0 "$CURRENT" >/dev/null

    local total_s
    total_s="$(awk -v ms="$(($(now_ms) - t_all))" 'BEGIN { printf "%.1f", ms / 1000 }')"
    cat >&2 <<EOF

image-test: PASS
  image size            $(mb "$total") total; base $(mb "$base_size"), nodejs+python3 $(mb "$runtimes_size"), noslate adds $(mb "$added")
  build                 $build_ms ms (on the imported base; apt from the mirror)
  podman run -> /invoke ${starts[*]} ms; median $(median3 "${starts[@]}") ms
  podman stop -> exit   ${stops[*]} ms (after /pre-stop, idle, in-flight); median $(median3 "${stops[@]}") ms; grace ${GRACE}s
  SIGTERM -> process exit ${exits[*]} ms (FinishedAt; the rest is podman's teardown)
  image-test total      ${total_s} s
EOF
}

case "${1:-}" in
    build) cmd_build ;;
    test) cmd_test ;;
    *)
        echo "usage: scripts/image.sh build|test" >&2
        exit 2
        ;;
esac
