#!/usr/bin/env bash
# Installs the Debian packages Quern needs, skipping those already present.
# Idempotent: run it as often as you like. `make deps` calls it.
# `deps.sh --build` installs only what compiling the binaries needs (the build
# stage of deploy/container/Containerfile), not the test tools.
#
# Each package and why it is here (see also docs/dependencies.md):
set -euo pipefail

PKGS=(
  # build
  build-essential      # gcc, make, libc headers
  cmake                # the build system (CMake + CTest)
  pkg-config           # finds the libraries below
  # libquern-core
  libmicrohttpd-dev    # HTTP server of every service (epoll, thread pool)
  libjansson-dev       # JSON parsing and emitting
  libsqlite3-dev       # embedded storage and the embedded bus
  libssl-dev           # libcrypto: SHA-256 of blobs, HMAC, random ids
  libcurl4-openssl-dev # HTTP client between services, CLI and tests
  librabbitmq-dev      # rabbitmq-c: the amqp:// backend of the bus (scale-out twin of sqlite://)
  libpq-dev            # libpq: the postgres:// backend of the store (scale-out twin of sqlite://)
  # libquern-ml
  libopenblas-dev      # BLAS for ALS (sgemm/ssyrk)
  liblapacke-dev       # LAPACKE for closed-form ridge regression
  liblinear-dev        # logistic regression and linear SVM
  libxgboost-dev       # gradient-boosted trees (XGBoost C API)
  # quern-serve (gRPC front, DESIGN.md section 5)
  libgrpc-dev          # gRPC core C library: the Open Inference Protocol over gRPC
  libprotobuf-c-dev    # protobuf-c runtime: (un)packs the messages of proto/*.proto
  protobuf-c-compiler  # protoc-c: generates the C message code at build time
  libcmocka-dev        # unit-test framework (CMake configure requires it)
)
TEST_PKGS=(
  # tests
  prometheus           # promtool: checks /metrics output
  python3-numpy        # reference checks: .npy round trip, ALS reference step
  python3-scipy        # reference checks: drift statistics vs scipy.stats
  python3-xgboost      # reference checks: a Python-trained model predicts identically
  rabbitmq-server      # bus contract tests start a private broker (and restart it mid-stream)
  postgresql           # store contract and registry tests start a private server (initdb, pg_ctl)
  iproute2             # fault tests: the multi-host run makes network namespaces and veths (ip netns)
  python3-grpcio       # gRPC tests and bench: a stock Python client talks to quern-serve
  python3-grpc-tools   # generates that client's stubs from proto/*.proto at test time
  python3-protobuf     # the message classes those stubs use
  curl                 # black-box tests and the demo talk HTTP from the shell
  wrk                  # bench_serve.sh: HTTP load generator for quern-serve and its baselines
  nginx-light          # bench_serve.sh: a fixed-200 nginx, the ceiling for an HTTP server here
  nghttp2-client       # bench_h2load.sh: h2load, the HTTP/2 load generator for gRPC ModelInfer
  python3-fastapi      # bench_serve.sh baseline: the usual Python serving stack (FastAPI ...)
  python3-uvicorn      # ... on uvicorn, predicting with python3-xgboost
  python3-pandas       # bench_prep.sh baseline: pandas reads, cleans and writes Online Retail
  xz-utils             # the shipped data sets are xz-compressed (data/)
  clang                # fuzz targets (libFuzzer) and sanitizer builds
  libclang-rt-14-dev   # clang's sanitizer and libFuzzer runtimes
  python3-yaml         # tests/deploy: parses deploy/compose.yaml and the rendered k8s manifests
  chromium             # tests/browser: the console driven in a real headless browser (puppeteer-core)
)
# tests/deploy renders deploy/k8s with `kubectl kustomize`. Debian's kubectl
# (kubernetes-client) only when no kubectl is on PATH: another package's
# kubectl would clash with it over /usr/bin/kubectl.
command -v kubectl >/dev/null 2>&1 || TEST_PKGS+=(kubernetes-client)

if [ "${1:-}" != --build ]; then
  PKGS+=("${TEST_PKGS[@]}")
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

# The console's browser-side packages (package.json, pinned by package-lock.json):
# uPlot, built into quern-console, and puppeteer-core, which drives chromium
# in tests/browser. `npm ci` installs exactly the lock file into node_modules/;
# nothing is fetched at run time. Needs Node >= 18 (npm comes with it).
npm_deps() {
  local root
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  if ! command -v npm >/dev/null 2>&1; then
    echo "deps: npm not found: install Node.js >= 18 for the console (uPlot) and tests/browser" >&2
    return 1
  fi
  [ "${1:-}" = --build ] && return 0
  # npm ci writes node_modules/.package-lock.json last: newer than the lock
  # file means the install is complete and current.
  if [ "$root/node_modules/.package-lock.json" -nt "$root/package-lock.json" ]; then
    echo "deps: node_modules is current with package-lock.json"
    return 0
  fi
  (cd "$root" && npm ci --no-audit --no-fund)
}

if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#PKGS[@]} packages present"
  npm_deps "${1:-}"
  exit 0
fi

echo "deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# Package lists on a fresh machine may be missing or old (a listed version
# gone from the mirror): refresh them once before installing anything.
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
npm_deps "${1:-}"
