# noslate: the Function Compute custom-container image.
#
#   make build && make image          # or: podman|docker build -t noslate .
#   docker run --rm -p 9000:9000 noslate
#
# The binary is built on the host first (`make build`, glibc of Debian trixie or older) and copied
# in; nothing is compiled inside the image. To build from a clean checkout without a Rust
# toolchain, use Dockerfile.source (a multi-stage build that compiles inside the build).
# docs/DEPLOY.md says when to use which, and covers FC, the `/code` layout, Kubernetes and Knative.
#
# BASE_IMAGE must be Debian trixie (or a rootfs of it, as `make image-test` builds offline with
# debootstrap): Node.js 20 and Python 3.13 come from its archive.
ARG BASE_IMAGE=debian:trixie-slim
FROM ${BASE_IMAGE}

# The runtimes the workers exec, from the distribution: Node.js 20 (`nodejs`) and Python 3.13
# (`python3`). ca-certificates: functions call HTTPS APIs (OSS, SLS, ...) with the system's trust
# store, and the runtime downloads http(s):// code packages with `curl`. No recommends, no build
# tools, no apt lists or caches left in the layer.
RUN set -eux; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        nodejs python3 ca-certificates curl; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old /var/lib/dpkg/*-old \
        /var/log/apt /var/log/dpkg.log /var/log/alternatives.log; \
    node --version; python3 --version; curl --version

# Where the runtime writes the worker bootstrap and the worker logs (both must be writable; FC's
# writable layer is enough), the port FC calls, and the function profiles: the default code is the
# repository's examples/, laid out as /code/functions.json and /code/<function>/ (docs/DEPLOY.md).
ENV NOSLATE_WORKDIR=/tmp/noslate \
    NOSLATE_LOGDIR=/tmp/noslate/logs \
    NOSLATE_FUNCTIONS=/code/functions.json \
    SERVER_PORT=9000

# The image's system config: function output (console.log, print, ctx.logger) goes to the
# container's stdout/stderr, which FC collects into the function's logstore, rather than to files
# inside the instance. A config of one's own (NOSLATED_CONFIG_PATH) replaces it: keep
# "logger": {"workerOutput": "console"} in it.
RUN mkdir -p /etc/noslate && printf '%s\n' '{"logger": {"workerOutput": "console"}}' > /etc/noslate/config.json
ENV NOSLATED_CONFIG_PATH=/etc/noslate/config.json

COPY target/release/noslate start.sh /usr/local/bin/
# The Node.js SDK (NoslatedClient) for gateways: `require(process.env.NOSLATE_PATH)`, as in
# Noslate's images.
COPY sdk/node/ /usr/local/lib/noslate/sdk/
ENV NOSLATE_PATH=/usr/local/lib/noslate/sdk
COPY examples/ /code/
# A /code/server.js of the user's is run by start.sh as the gateway, beside the workers (as
# Noslate's seed image does), with this NOSLATE_PATH (README, "Your own gateway").

# Declared after the heavy layer so that a new version does not invalidate the apt layer.
# `make image` passes the version from Cargo.toml, the git remote and the commit.
ARG BASE_IMAGE
ARG NOSLATE_VERSION=0.0.0
ARG NOSLATE_SOURCE=unknown
ARG NOSLATE_REVISION=unknown
LABEL org.opencontainers.image.title="noslate" \
      org.opencontainers.image.description="Single-binary serverless runtime for Function Compute custom containers" \
      org.opencontainers.image.version="${NOSLATE_VERSION}" \
      org.opencontainers.image.source="${NOSLATE_SOURCE}" \
      org.opencontainers.image.revision="${NOSLATE_REVISION}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"

EXPOSE 9000
WORKDIR /code
# start.sh checks the environment and execs the binary: noslate is PID 1, receives SIGTERM itself,
# drains and exits 0. It reaps every child, orphans included, so no init shim is needed.
ENTRYPOINT ["/usr/local/bin/start.sh", "start"]
