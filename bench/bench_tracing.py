"""bench_tracing.py - what span recording and export cost a request.

Starts quern-registry three times (tracing off; on, exporting to a local
OTLP sink; on, exporting to a port where nothing listens, so every span is
dropped after its retries) and measures GET /v1/models/{name} with wrk
(2 threads, 32 connections, 10 s, after a 2 s warm-up) in each. The sink
reads each POST and answers 200 without parsing it. Prints one line per run.

    /usr/bin/python3 bench/bench_tracing.py [build/bin]
"""
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../tests/service"))
from harness import Service  # noqa: E402


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    spans = 0

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        Sink.spans += body.count(b'"spanId"')
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wrk(port, seconds):
    url = f"http://127.0.0.1:{port}/v1/models/bench"
    subprocess.run(["wrk", "-t2", "-c32", "-d2s", url], capture_output=True)
    out = subprocess.run(["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+(\S+)", out).group(1)
    return rps, p99


def run(label, env, seconds=10):
    data = tempfile.mkdtemp(prefix="quern-bench-trace-")
    s = Service("registry", data=data, env=dict(env, QUERN_HOME=data)).start()
    try:
        st, _, _ = s.request("POST", "/v1/models", {"name": "bench"})
        assert st == 201, st
        rps, p99 = wrk(s.port, seconds)
        _, _, metrics = s.request("GET", "/metrics", raw=True)
        dropped = sum(float(m) for m in re.findall(rb'quern_otel_spans_dropped_total\{[^}]*\} (\S+)', metrics))
        exported = re.search(rb"quern_otel_spans_exported_total\{[^}]*\} (\S+)", metrics)
    finally:
        s.stop()
    print(json.dumps({"run": label, "requests_per_s": round(rps), "p99": p99,
                      "exported": float(exported.group(1)) if exported else 0, "dropped": dropped}))


def main():
    if len(sys.argv) > 1:
        os.environ["QUERN_BIN"] = sys.argv[1]
        import harness
        harness.BIN = sys.argv[1]
    sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    run("off", {})
    run("on, local sink", {"QUERN_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.server_address[1]}"})
    run("on, collector down", {"QUERN_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}"})
    run("off again", {})
    sink.shutdown()


if __name__ == "__main__":
    main()
