# noslate: every target a developer or CI needs. `make run` and `make test` are the two
# commands a fresh machine needs (see README.md).

CARGO ?= cargo
PORT ?= 9000
FUNCTIONS ?= examples/functions.json
# The only crates allowed as runtime dependencies (see README.md, "Dependencies").
ALLOWED_DEPS := env_logger httparse libc log mio serde serde_json

.PHONY: build run test bench soak lint fmt deps-check clean

# Cargo's output directory; `make build` always leaves the binary at target/release/noslate,
# where `make run`, the Dockerfile and start.sh look for it.
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)

build:
	$(CARGO) build --release
	@if [ "$(TARGET_DIR)" != "target" ]; then \
		mkdir -p target/release && cp "$(TARGET_DIR)/release/noslate" target/release/noslate; \
	fi
	@# The reference native worker, where examples/functions.json's native-echo runs it.
	$(CARGO) build --release --example native_worker
	cp "$(TARGET_DIR)/release/examples/native_worker" examples/native-echo/native_worker

# Serves the bundled example functions on port $(PORT).
run: build
	./target/release/noslate serve --port $(PORT) --functions $(FUNCTIONS)

# Unit tests beside the code, integration tests in tests/ (real binary, real Node.js workers).
test:
	$(CARGO) test --all-targets

# End-to-end benchmark: the runtime vs Node's own http server, side by side (benches/README.md).
# It measures the examples as built, so they are built first (a native-echo binary left from an
# older build would be measured otherwise).
bench: build
	$(CARGO) bench --bench e2e

# Soak and fault suite, run by hand (not part of `make test`): a million requests, kill -9 of a
# worker, a busy loop, a memory hog, 2,000 slow clients and SIGTERM, each under load, with
# PASS/FAIL per scenario (benches/README.md, "Soak and faults"). SOAK_REQUESTS=100000 is quicker.
soak:
	$(CARGO) bench --bench soak

lint: deps-check
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

# Fails when a runtime dependency outside ALLOWED_DEPS appears.
deps-check:
	@extra=$$($(CARGO) tree --depth 1 -e normal --prefix none --format '{p}' \
		| awk 'NR > 1 {print $$1}' | sort -u \
		| grep -vxF $(foreach d,$(ALLOWED_DEPS),-e $(d))); \
	if [ -n "$$extra" ]; then echo "runtime dependencies not allowed: $$extra"; exit 1; fi; \
	echo "deps-check: only $(ALLOWED_DEPS)"

clean:
	$(CARGO) clean

.PHONY: fuzz

# Coverage-guided fuzzing of the HTTP head parser, the chunked decoder, the worker frame codec,
# the config loaders, the code package unpackers (zip and DEFLATE, the latter also against
# zlib) and the admin invocation headers with cargo-fuzz (nightly; installed if missing),
# FUZZ_SECONDS (default 60) per target, one target at a time; ends with executions and crashes
# per target. Not part of `make test`, which replays the seed corpora instead
# (tests/fuzz_corpus.rs).
FUZZ_SECONDS ?= 60

fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

.PHONY: image image-test

# The Function Compute container image, with podman or docker (docs/DEPLOY.md). BASE_IMAGE,
# IMAGE and CONTAINER_ENGINE can be overridden from the environment.
image: build
	scripts/image.sh build

# Builds the image fully offline (a debootstrap'd Debian base, cached in ~/.cache/noslate), runs
# it with podman and drives it like FC: hooks, invocations, errors, stop. Prints sizes and times.
image-test: build
	scripts/image.sh test
