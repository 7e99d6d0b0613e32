"""bench_traffic.py - what shadow traffic costs the production path
(issue 15: "less than 10% of its p50 at 50% shadow"). Run by /usr/bin/python3
from the repository root after a build:

    /usr/bin/python3 bench/bench_traffic.py [REQUESTS_PER_BLOCK] [BLOCKS]

Starts a real quern-registry and quern-serve (the black-box test harness),
registers two versions of a logistic model (production, challenger), and
times one-row REST infers from one keep-alive client, in alternating blocks
with the policy at 0% shadow and at 50% shadow (challenger), so both figures
come from the same run under the same background load. Prints p50 and p90 of
each and the shadow's extra p50 in percent, plus the shadow counters.
"""
import hashlib
import http.client
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../tests/service"))
from harness import Service  # noqa: E402

COLS = ["x0", "x1"]


def main():
    per = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    blocks = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    home = tempfile.mkdtemp(prefix="quern-bench-traffic-")
    env = {"QUERN_HOME": home}
    for d in ("registry", "serve"):
        os.makedirs(os.path.join(home, d))
    reg = Service("registry", data=os.path.join(home, "registry"), env=env).start(timeout=60)
    serve = None
    try:
        reg.request("POST", "/v1/models", {"name": "shop"})
        for v, alias in ((1, "production"), (2, "challenger")):
            lin = json.dumps({"format": "quern.linear/1", "kind": "logistic", "n_features": 2,
                              "coef": [[0.3 * v, -0.2]], "intercept": [0.1], "classes": [0, 1]}).encode()
            d = "sha256:" + hashlib.sha256(lin).hexdigest()
            reg.request("PUT", f"/v1/blobs/{d}", body=lin)
            man = {"format": "quern.model/1", "kind": "logistic",
                   "inputs": [{"name": c, "datatype": "FP64", "shape": [-1]} for c in COLS],
                   "outputs": [{"name": "probability", "datatype": "FP32", "shape": [-1]}],
                   "transforms": {"format": "quern.features/1", "n_features": 2,
                                  "columns": [{"name": c, "type": "numeric", "steps": []} for c in COLS]},
                   "params": {"task": "binary", "classes": [0, 1]}, "files": {"model.json": d}}
            reg.request("POST", "/v1/models/shop/versions", {"manifest": man})
            reg.request("PUT", f"/v1/models/shop/aliases/{alias}", {"version": v})
        serve = Service("serve", data=os.path.join(home, "serve"), env=env,
                        args=["--poll-interval", "60s", "--grpc-listen", "off", "--models", "shop",
                              "--registry", f"http://127.0.0.1:{reg.port}"]).start(timeout=60)
        body = json.dumps({"inputs": [{"name": c, "datatype": "FP64", "shape": [1], "data": [0.5]}
                                      for c in COLS]}).encode()
        conn = http.client.HTTPConnection("127.0.0.1", serve.port, timeout=60)

        def policy(fraction):
            _, _, out = reg.request("PUT", "/v1/models/shop/traffic", {
                "routes": [{"alias": "production", "weight": 100}],
                "shadow": {"alias": "challenger", "fraction": fraction}})
            deadline = time.time() + 30
            while time.time() < deadline:
                _, _, st = serve.request("GET", "/v1/models")
                tr = st["models"][0]["traffic"]
                if tr and tr["updated_at"] == out["updated_at"] and all(tr["versions"].values()):
                    return
                time.sleep(0.05)
            raise RuntimeError("serve did not follow the policy")

        def block(n):
            lat = []
            for _ in range(n):
                t0 = time.perf_counter()
                conn.request("POST", "/v2/models/shop/infer", body=body,
                             headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                lat.append(time.perf_counter() - t0)
                assert r.status == 200
            return lat

        res = {0.0: [], 0.5: []}
        policy(0.0)
        block(500)  # warm up
        for _ in range(blocks):
            for f in (0.0, 0.5):
                policy(f)
                res[f] += block(per)
        conn.close()
        p50 = {f: statistics.median(v) * 1e3 for f, v in res.items()}
        p90 = {f: statistics.quantiles(v, n=10)[-1] * 1e3 for f, v in res.items()}
        load = os.getloadavg()[0]
        print(f"requests per setting: {per * blocks} (in {blocks} alternating blocks), load {load:.1f}")
        for f in (0.0, 0.5):
            print(f"shadow {f:.0%}: p50 {p50[f]:.3f} ms  p90 {p90[f]:.3f} ms")
        print(f"shadow 50% costs the production p50 {100 * (p50[0.5] / p50[0.0] - 1):+.1f}%")
        _, _, text = serve.request("GET", "/metrics", raw=True)
        for line in text.decode().splitlines():
            if line.startswith("quern_traffic_") and not line.startswith("#"):
                print("  " + line)
    finally:
        for s in (serve, reg):
            if s:
                s.stop()


if __name__ == "__main__":
    main()
