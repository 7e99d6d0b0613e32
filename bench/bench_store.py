"""bench_store.py - the registry's version-creation rate on its store.

Starts a real quern-registry (build/bin) through the test harness, creates one
model and one blob, then has THREADS clients POST versions of that model
until TOTAL exist, and prints versions/s. Each version is one write
transaction (next_version bump, version row, outbox event) behind an HTTP
request. With QUERN_TEST_PG set (bench/bench_store.sh runs it under
tests/unit/core/run_store_pg.sh) the registry keeps its metadata in that
PostgreSQL database; otherwise in SQLite under its --data dir.

    /usr/bin/python3 bench/bench_store.py [TOTAL] [THREADS]
"""
import hashlib
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../tests/service"))
import harness  # noqa: E402

TOTAL = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
THREADS = int(sys.argv[2]) if len(sys.argv) > 2 else 8


def main():
    reg = harness.Service("registry").start()
    try:
        payload = b"weights"
        digest = "sha256:" + hashlib.sha256(payload).hexdigest()
        st, _, _ = reg.request("PUT", f"/v1/blobs/{digest}", body=payload,
                               headers={"Content-Type": "application/octet-stream"})
        assert st in (200, 201), st
        st, _, body = reg.request("POST", "/v1/models", {"name": "bench"})
        assert st == 201, body
        manifest = {"format": "quern.model/1", "kind": "xgboost",
                    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
                    "outputs": [{"name": "p", "datatype": "FP32", "shape": [-1]}],
                    "files": {"model.json": digest}}
        left = [TOTAL]
        lock = threading.Lock()
        errors = []

        def client():
            while True:
                with lock:
                    if left[0] == 0:
                        return
                    left[0] -= 1
                st, _, body = reg.request("POST", "/v1/models/bench/versions", {"manifest": manifest})
                if st != 201:
                    errors.append((st, body))
                    return

        t0 = time.monotonic()
        threads = [threading.Thread(target=client) for _ in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        secs = time.monotonic() - t0
        assert not errors, errors[:3]
        st, _, body = reg.request("GET", "/v1/models/bench/versions?limit=1")
        assert body["versions"][0]["version"] == TOTAL, body
        store = "postgres" if harness.PG else "sqlite"
        print(f"registry on {store}: {TOTAL} versions by {THREADS} clients in {secs:.2f} s "
              f"= {TOTAL / secs:.0f} versions/s")
    finally:
        reg.stop()


if __name__ == "__main__":
    main()
