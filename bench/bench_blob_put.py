#!/usr/bin/python3
"""bench_blob_put.py - the registry's blob upload alone: PUT /v1/blobs/sha256:...
of a file (default: 36 MB of random bytes, the size of prep's Online Retail
output) into a fresh quern-registry, N times (each a new blob: its first 8
bytes changed), timed by curl (the same client library prep uploads with) from
the request to the 201; the registry's CPU time (user+sys from /proc) beside
it. Prep's "upload" phase is this plus its own read of the file.

    /usr/bin/python3 bench/bench_blob_put.py [--build DIR] [--bytes N] [--reps N]
    /usr/bin/python3 bench/bench_blob_put.py --prep CSV [--build DIR] [--reps N]

--prep: prep's write + upload of the cleaned Online Retail CSV, both ways, one
after the other in each repetition (build/bench/bench_prep_clean --registry A
--registry2 B): written to a file then PUT by digest to registry A, or
streamed (a chunked POST /v1/blobs reading a pipe a writer thread fills) to
registry B; the blobs are removed between repetitions so that each upload
stores a new one (with its fsync).
"""
import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--bytes", type=int, default=36237048)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--prep", metavar="CSV", help="time prep's two ways of writing and uploading its output")
    a = ap.parse_args()
    os.environ["QUERN_BIN"] = os.path.join(os.path.abspath(a.build), "bin")
    sys.path.insert(0, os.path.join(ROOT, "tests", "service"))
    from harness import Service  # noqa: E402

    work = tempfile.mkdtemp(prefix="quern-bench-blob-")
    if a.prep:
        import shutil
        regs = [Service("registry", env={"QUERN_HOME": work}) for _ in range(2)]
        for r in regs:
            r.start()
        try:
            drv = os.path.join(os.path.abspath(a.build), "bench", "bench_prep_clean")
            for i in range(a.reps):
                for r in regs:
                    shutil.rmtree(os.path.join(r.data, "blobs", "sha256"), ignore_errors=True)
                    os.makedirs(os.path.join(r.data, "blobs", "sha256"))
                load = " ".join(open("/proc/loadavg").read().split()[:3])
                out = subprocess.run([drv, a.prep, os.path.join(ROOT, "examples/pipelines/online-retail.json"),
                                      "--reps", "1", "--registry", f"http://127.0.0.1:{regs[0].port}",
                                      "--registry2", f"http://127.0.0.1:{regs[1].port}"],
                                     capture_output=True, text=True)
                line = [x for x in out.stdout.splitlines() if x.startswith("rep ")]
                print(f"load {load}: {line[0][7:] if line else out.stdout + out.stderr}")
        finally:
            for r in regs:
                r.stop()
        return
    reg = Service("registry", env={"QUERN_HOME": work})
    reg.start()
    try:
        data = bytearray(os.urandom(a.bytes))
        path = os.path.join(work, "blob.bin")
        print(f"load average {' '.join(open('/proc/loadavg').read().split()[:3])}, {a.bytes:,} bytes a blob")
        times = []
        for i in range(a.reps):
            data[:8] = i.to_bytes(8, "little")
            with open(path, "wb") as f:
                f.write(data)
            d = hashlib.sha256(data).hexdigest()
            c0 = cpu_s(reg.proc.pid)
            t0 = time.monotonic()
            out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-T", path,
                                  "-H", "Expect:", "-H", "Content-Type: application/octet-stream",
                                  f"http://127.0.0.1:{reg.port}/v1/blobs/sha256:{d}"],
                                 capture_output=True, text=True)
            t = time.monotonic() - t0
            c = cpu_s(reg.proc.pid) - c0
            if out.stdout != "201":
                raise SystemExit(f"PUT: {out.stdout} {out.stderr}")
            times.append(t)
            print(f"  put {i + 1}: {t:.3f} s, registry CPU {c:.3f} s")
        times.sort()
        print(f"median {times[len(times) // 2]:.3f} s, best {times[0]:.3f} s")
    finally:
        reg.stop()


if __name__ == "__main__":
    main()
