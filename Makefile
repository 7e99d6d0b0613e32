# Quern: the commands people type. The real build is CMake (CMakeLists.txt);
# this file only names the steps. See README.md.
#
#   make deps           install the Debian packages Quern needs (idempotent)
#   make build          build everything into build/bin/
#   make test           build and run the whole suite (unit, service, fuzz replay)
#   make test-sanitize  the same suite built with ASan + UBSan (build-asan/)
#   make test-faults    fault and multi-host tests (CTest label faults; root for namespaces)
#   make demo           the flagship use case on embedded defaults (CASE=bikes: the second loop)
#   make bench          benchmarks, each beside its baseline
#   make fuzz           libFuzzer on every target for FUZZ_SECONDS each
#   make image          the container images, one per service (docker or podman; docs/operations.md)
#   make test-deploy    the compose stack for real: images, the closed loop across
#                       containers, a killed service restarted, backends restarted (root)

BUILD        ?= build
ASAN_BUILD   ?= build-asan
FUZZ_BUILD   ?= build-fuzz
JOBS         ?= $(shell nproc)
FUZZ_SECONDS ?= 30
DEPS_STAMP   := .deps-stamp

.PHONY: all deps build test test-unit test-sanitize test-faults test-deploy demo bench fuzz image clean

all: build

$(DEPS_STAMP): scripts/deps.sh
	bash scripts/deps.sh
	@touch $@

deps:
	bash scripts/deps.sh
	@touch $(DEPS_STAMP)

$(BUILD)/CMakeCache.txt: $(DEPS_STAMP)
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo

# Warnings, errors and a one-line summary; no directory chatter (scripts/build.sh).
build: $(BUILD)/CMakeCache.txt
	@bash scripts/build.sh $(BUILD) $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 900 -LE faults

# One at a time: they kill, restart and partition real processes.
test-faults: build
	cd $(BUILD) && ctest --output-on-failure -L faults --timeout 600

$(ASAN_BUILD)/CMakeCache.txt: $(DEPS_STAMP)
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DQUERN_SANITIZE=ON

test-sanitize: $(ASAN_BUILD)/CMakeCache.txt
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS) --timeout 1800 -LE 'slow|faults'

demo: build
	/usr/bin/python3 scripts/demo.py $(if $(CASE),--case $(CASE))

bench: build
	bash bench/run.sh

$(FUZZ_BUILD)/CMakeCache.txt: $(DEPS_STAMP)
	CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DQUERN_FUZZ=ON -DQUERN_SANITIZE=ON

fuzz: $(FUZZ_BUILD)/CMakeCache.txt
	cmake --build $(FUZZ_BUILD) -j $(JOBS)
	bash tests/fuzz/run.sh $(FUZZ_BUILD)/fuzz $(FUZZ_SECONDS)

# Container tooling comes from its own script, so `make deps`/`make test`
# never pull it in.
# QUERN_IMAGE_BUILD=source builds inside debian:bookworm instead of from $(BUILD).
image: build
	bash scripts/deps-image.sh
	BUILD=$(BUILD) JOBS=$(JOBS) bash scripts/image.sh

# Starts its own dockerd (tests/deploy/dockerd.sh) unless one answers on
# $$DOCKER_HOST, and stops it after; tears the stack down.
test-deploy: build
	bash scripts/deps-image.sh
	BUILD=$(BUILD) QUERN_BIN=$(CURDIR)/$(BUILD)/bin /usr/bin/python3 tests/deploy/stack_loop.py

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD) $(DEPS_STAMP)
