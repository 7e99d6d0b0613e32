#!/usr/bin/python3
"""ModelInfer throughput and latency of quern-serve's gRPC front.

Starts build/tests/grpc_sum_server (the gRPC front with the test backend of
tests/unit/serve/sum_backend.c) on a free loopback port, generates Python
stubs from proto/*.proto into a temporary directory, and drives ModelInfer on
model "sum" at a fixed concurrency (one blocking client thread per in-flight
call, one shared HTTP/2 channel) for a fixed number of calls. Prints calls/s
and latency p50/p99 per payload mode. The client is Python (grpcio), whose
per-call overhead bounds the figures: they compare builds of the server on
one machine, they are not the server's ceiling.

    /usr/bin/python3 bench/bench_grpc.py [--build build] [--concurrency 8]
        [--calls 4000] [--batch 1] [--modes raw,typed]

Traffic stays on 127.0.0.1 and the run is bounded by --calls and --max-seconds.
"""
import argparse
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gen_stubs(out):
    proto = os.path.join(ROOT, "proto")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", proto,
                    "--python_out", out, "--grpc_python_out", out,
                    os.path.join(proto, "grpc_service.proto"),
                    os.path.join(proto, "health.proto")], check=True)
    sys.path.insert(0, out)


def make_request(pb, mode, batch):
    vals = [float(i % 7) for i in range(batch * 3)]
    rq = pb.ModelInferRequest(model_name="sum")
    t = rq.inputs.add(name="x", datatype="FP32", shape=[batch, 3])
    if mode == "raw":
        rq.raw_input_contents.append(struct.pack(f"<{len(vals)}f", *vals))
    else:
        t.contents.fp32_contents.extend(vals)
    return rq


def run(stub, rq, concurrency, calls, max_seconds):
    lat = []
    lock = threading.Lock()
    left = [calls]
    errors = []
    stop_at = time.monotonic() + max_seconds

    def worker():
        mine = []
        while time.monotonic() < stop_at:
            with lock:
                if left[0] == 0:
                    break
                left[0] -= 1
            t0 = time.perf_counter()
            try:
                stub.ModelInfer(rq, timeout=10)
            except Exception as e:  # noqa: BLE001 - counted and reported
                errors.append(repr(e))
                continue
            mine.append(time.perf_counter() - t0)
        with lock:
            lat.extend(mine)

    ts = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    return lat, wall, errors


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--calls", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--modes", default="raw,typed")
    ap.add_argument("--max-seconds", type=float, default=60)
    a = ap.parse_args()

    server = os.path.join(a.build, "tests", "grpc_sum_server")
    proc = subprocess.Popen([server, "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("port "):
            sys.exit(f"bench_grpc: server did not start ({line!r})")
        port = int(line.split()[1])
        with tempfile.TemporaryDirectory() as tmp:
            gen_stubs(tmp)
            import grpc
            import grpc_service_pb2 as pb
            import grpc_service_pb2_grpc as pbg
            ch = grpc.insecure_channel(f"127.0.0.1:{port}")
            stub = pbg.GRPCInferenceServiceStub(ch)
            print(f"gRPC ModelInfer, model sum, batch {a.batch}, concurrency {a.concurrency}, "
                  f"{a.calls} calls per mode (Python grpcio {grpc.__version__} client)")
            for mode in a.modes.split(","):
                rq = make_request(pb, mode, a.batch)
                run(stub, rq, a.concurrency, min(200, a.calls), a.max_seconds)  # warm-up
                lat, wall, errors = run(stub, rq, a.concurrency, a.calls, a.max_seconds)
                if not lat:
                    sys.exit(f"bench_grpc: no call succeeded: {errors[:3]}")
                print(f"  {mode:5s}: {len(lat) / wall:8.0f} calls/s   "
                      f"p50 {statistics.median(lat) * 1e3:6.2f} ms   "
                      f"p99 {pct(lat, 99) * 1e3:6.2f} ms   errors {len(errors)}")
            ch.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
