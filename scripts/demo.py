#!/usr/bin/python3
"""make demo: the flagship loop of Quern on the real Online Retail data.

Every service runs as its own process on embedded defaults (`quern up`), and the
story unfolds as a shop's would:

 1. the purchases up to a cut-off date are ingested; prep cleans them into a dataset
    snapshot; train fits ALS; version 1 is registered beside the popularity baseline
    and promoted to production;
 2. serve answers recommendation requests over REST and gRPC while prediction logs flow
    to the monitor (a control window of customers like the training ones: no drift);
 3. the later months arrive as new purchases and as traffic; the monitor detects the
    drift (the autumn and Christmas customers are new), the alert fires and requests a
    retrain; version 2 is trained on the fresh data, beats version 1 on the fresh
    holdout, is promoted, and serve swaps to it under load with zero failed requests;
 4. it prints what happened, with the figures.

    make demo                       # the whole story (about two minutes)
    make demo CASE=bikes            # the second loop: a regressor's live quality (demo_bikes.py)
    DEMO_KEEP=1 make demo           # leave the services running afterwards
    /usr/bin/python3 scripts/demo.py --subset 4 --json   # every 4th customer; the story as JSON

The services' state goes to $QUERN_DEMO_HOME (default ./.quern-demo), wiped at start;
their logs to $QUERN_DEMO_HOME/logs. Ports: $QUERN_PORT_BASE (default 7700) + 1..9 (+9: the console).
"""
import argparse
import csv
import datetime
import http.client
import json
import lzma
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("QUERN_BIN", os.path.join(ROOT, "build", "bin"))
CUTOFF = "2011-09-01"          # phase 1: purchases before this date
V1_HOLDOUT = "2011-08-01"      # v1 is evaluated on August, trained before it
V2_HOLDOUT = "2011-11-01"      # v2 (and v1, as champion) on November-December
WINDOW = 2000                  # requests per monitor window
MODEL = "retail"


def say(msg):
    if not ARGS.json:
        print(f"\033[1m{msg}\033[0m" if sys.stdout.isatty() else msg, flush=True)


def detail(msg):
    if not ARGS.json:
        print(f"  {msg}", flush=True)


class Api:
    """JSON over HTTP to one service, on a kept-alive connection per thread."""

    def __init__(self, port):
        self.port = port
        self.local = threading.local()

    def call(self, method, path, body=None, timeout=60):
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        data = json.dumps(body).encode() if body is not None else None
        try:
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException):
            self.local.conn = None
            conn.close()
            raise
        ctype = resp.getheader("Content-Type", "")
        return resp.status, (json.loads(raw) if raw and ctype.startswith("application/json") else raw)


def quern(*args, check=True):
    """Runs the quern command (JSON output); returns its parsed answer."""
    p = subprocess.run([os.path.join(BIN, "quern"), "--json", *args], env=ENV, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise SystemExit(f"quern {' '.join(args)} failed ({p.returncode}):\n{p.stderr}{p.stdout}")
    try:
        return json.loads(p.stdout) if p.stdout.strip() else None
    except ValueError:
        return p.stdout


def wait(what, fn, timeout=180, every=0.25):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(every)
    raise SystemExit(f"demo: timed out waiting for {what} (logs in {HOME}/logs)")


# ---- data ---------------------------------------------------------------------------

def load_purchases():
    """The shipped Online Retail file, split at the cut-off date. With --subset N only
    every Nth customer is kept (a deterministic subset, for CI)."""
    path = os.path.join(ROOT, "build", "datasets", "online_retail.csv")
    if os.path.exists(path):
        f = open(path, newline="", encoding="utf-8")
    else:
        f = lzma.open(os.path.join(ROOT, "data", "online-retail", "online_retail.csv.xz"), "rt",
                      newline="", encoding="utf-8")
    with f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    ix = {c: i for i, c in enumerate(header)}
    if ARGS.subset > 1:
        body = [r for r in body if r[ix["CustomerID"]] and int(r[ix["CustomerID"]]) % ARGS.subset == 0]
    before = [r for r in body if r[ix["InvoiceDate"]] < CUTOFF]
    after = [r for r in body if r[ix["InvoiceDate"]] >= CUTOFF]
    return header, ix, before, after


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def customers(rows, ix, since=None, until=None):
    """One entry per distinct (customer, item) purchase in the period: traffic shaped
    like buying (a customer asks as often as they buy something new), the same shape
    the training profile samples."""
    pairs = sorted({(r[ix["CustomerID"]], r[ix["StockCode"]]) for r in rows
                    if r[ix["CustomerID"]] and not r[ix["InvoiceNo"]].startswith("C")
                    and (since is None or r[ix["InvoiceDate"]] >= since)
                    and (until is None or r[ix["InvoiceDate"]] < until)})
    return [c for c, _ in pairs]


# ---- traffic ------------------------------------------------------------------------

class Load:
    """A steady background client: recommendations for known users, counting failures
    and which version answered, until stopped."""

    def __init__(self, api, users, threads=3):
        self.api, self.users = api, users
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.ok = self.failed = 0
        self.versions = {}
        self.first_seen = {}
        self.errors = []
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(threads)]

    def run(self, seed):
        rnd = random.Random(seed)
        while not self.stop_flag.is_set():
            user = rnd.choice(self.users)
            try:
                st, body = self.api.call("GET", f"/v1/models/{MODEL}/recommend?user={user}&k=10")
                good = st == 200 and len(body["items"]) == 10
            except (OSError, http.client.HTTPException, ValueError, KeyError) as e:
                st, body, good = 0, repr(e), False
            with self.lock:
                if good:
                    self.ok += 1
                    v = body["version"]
                    self.versions[v] = self.versions.get(v, 0) + 1
                    self.first_seen.setdefault(v, time.time())
                else:
                    self.failed += 1
                    if len(self.errors) < 5:
                        self.errors.append(f"{st}: {str(body)[:200]}")

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join()


def replay(api, users, n, seed):
    """n recommendation requests for users drawn from `users`."""
    rnd = random.Random(seed)
    fallback = failed = 0
    for _ in range(n):
        st, body = api.call("GET", f"/v1/models/{MODEL}/recommend?user={rnd.choice(users)}&k=10")
        if st != 200:
            failed += 1
        elif body.get("fallback"):
            fallback += 1
    return fallback, failed


def grpc_recommend(port, users):
    """The same recommendations through gRPC ModelInfer (a stock grpcio client whose
    stubs are generated from proto/ at run time)."""
    work = tempfile.mkdtemp(prefix="quern-demo-grpc-")
    try:
        proto = os.path.join(ROOT, "proto")
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", proto, f"--python_out={work}",
                        f"--grpc_python_out={work}", os.path.join(proto, "grpc_service.proto")],
                       check=True, capture_output=True)
        sys.path.insert(0, work)
        import grpc
        import grpc_service_pb2 as pb
        import grpc_service_pb2_grpc as pbg
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pbg.GRPCInferenceServiceStub(ch)
            req = pb.ModelInferRequest(model_name=MODEL)
            t = req.inputs.add(name="user_id", datatype="BYTES", shape=[len(users)])
            t.contents.bytes_contents.extend(u.encode() for u in users)
            # With a token configured (the compose stack), gRPC inference needs it too.
            token = os.environ.get("QUERN_TOKEN")
            meta = [("authorization", f"Bearer {token}")] if token else None
            resp = stub.ModelInfer(req, timeout=10, metadata=meta)
            out = {o.name: o for o in resp.outputs}
            items = list(out["item_id"].contents.bytes_contents) if out["item_id"].contents.bytes_contents \
                else None
            return resp.model_version, list(out["item_id"].shape), items[:3] if items else None
    finally:
        sys.path.remove(work) if work in sys.path else None
        shutil.rmtree(work, ignore_errors=True)


def alert_rules():
    """The alert rule of the story: drift of the model's dataset fires it, and its
    action asks train for a retrain on the fresh data, champion against challenger.
    tests/deploy/stack_loop.py mounts the same file into quern-alert."""
    return {"rules": [{
        "name": "retail-drift", "severity": "critical", "cooldown": "30m", "dedupe": "{data.model}",
        "on": {"event": "quern.drift.detected", "where": {"data.model": MODEL, "data.dataset_drift": True}},
        "resolve": {"event": "quern.train.finished", "where": {"data.model": MODEL}},
        "actions": [{"type": "log"}, {"type": "retrain", "model": "{data.model}", "job": {
            "kind": "als", "dataset": "online-retail-purchases", "spec": dict(SPEC, split={
                "kind": "time", "column": "InvoiceDate", "cutoff": V2_HOLDOUT}),
            "promote_policy": {"metric": "map@10", "margin": 0.0, "mode": "challenger"}}}]}]}


# ---- the story ----------------------------------------------------------------------

def run():
    story = {}
    header, ix, before, after = load_purchases()
    os.makedirs(HOME, exist_ok=True)
    first, later = os.path.join(HOME, "purchases-1.csv"), os.path.join(HOME, "purchases-2.csv")
    write_csv(first, header, before)
    write_csv(later, header, after)

    rules = alert_rules()
    with open(os.path.join(HOME, "alert-rules.json"), "w") as f:
        json.dump(rules, f, indent=1)

    if ARGS.attach:
        say(f"Using the running services on ports {BASE + 1}-{BASE + 8}")
    else:
        say(f"Starting every Quern service on embedded defaults (state in {HOME})")
        st = quern("up", "--detach")
        detail(", ".join(f"{s['service']}:{s['port']}" for s in st))
        if any(s["service"] == "console" for s in st):
            detail(f"the console: http://127.0.0.1:{BASE + 9}/")
    reg, serve, mon, alert = (Api(BASE + n) for n in (1, 5, 7, 8))

    # 1. ingest -> prep -> train v1 ------------------------------------------------
    say(f"1. Ingesting {len(before):,} raw rows: every transaction before {CUTOFF}")
    ing = quern("ingest", "online-retail-raw", first, "--batch", "20000")
    detail(f"{ing['accepted']:,} rows accepted in {ing['batches']} batches")
    pipeline = json.load(open(os.path.join(ROOT, "examples", "pipelines", "online-retail.json")))
    pipeline["trigger"] = {"kind": "manual"}  # the demo runs prep at the moments of its story
    pipe_file = os.path.join(HOME, "pipeline.json")
    json.dump(pipeline, open(pipe_file, "w"))
    quern("pipelines", "put", "online-retail", pipe_file)
    run1 = quern("pipelines", "run", "online-retail")
    rep = run1["report"]
    story["prep_1"] = {"rows_in": rep["rows_in"], "rows_out": rep["rows_out"],
                       "dataset_version": run1["dataset_version"]}
    detail(f"prep cleaned {rep['rows_in']:,} rows into {rep['rows_out']:,} purchases "
           f"(dataset online-retail-purchases v{run1['dataset_version']}):")
    for s in rep["steps"]:
        if s.get("dropped"):
            detail(f"  {s['op']:<13} dropped {s['dropped']:>7,}  {s.get('reason', '')}")

    say("   Training ALS (64 factors) on them; held out: August")
    spec_file = os.path.join(HOME, "als-v1.json")
    json.dump(dict(SPEC, split={"kind": "time", "column": "InvoiceDate", "cutoff": V1_HOLDOUT}), open(spec_file, "w"))
    job = quern("train", MODEL, "--kind", "als", "--dataset", "online-retail-purchases", "--spec", spec_file)
    r1 = job["result"]
    m1 = r1["metrics"]
    story["v1"] = {"version": r1["version"], "outcome": r1["outcome"], "map@10": m1["map@10"],
                   "baseline.map@10": m1["baseline.map@10"], "ndcg@10": m1["ndcg@10"],
                   "baseline.ndcg@10": m1["baseline.ndcg@10"]}
    detail(f"version {r1['version']}: MAP@10 {m1['map@10']:.4f} (popularity {m1['baseline.map@10']:.4f}), "
           f"NDCG@10 {m1['ndcg@10']:.4f} (popularity {m1['baseline.ndcg@10']:.4f}) -> {r1['outcome']}")

    # 2. serve, with a control window ----------------------------------------------
    wait("serve to load version 1", lambda: serve.call("GET", "/v2/health/ready")[0] == 200)
    say("2. quern-serve answers; a control window of customers like the training ones")
    known = customers(before, ix, until=V1_HOLDOUT)
    st, body = serve.call("GET", f"/v1/models/{MODEL}/recommend?user={known[0]}&k=5")
    detail(f"REST  GET /v1/models/{MODEL}/recommend?user={known[0]}&k=5 -> "
           + ", ".join(i["item"] for i in body["items"]))
    gv, gshape, gitems = grpc_recommend(BASE + 6, known[:3])
    detail(f"gRPC  ModelInfer(user_id=[3 users]) -> version {gv}, item_id shape {gshape}, first {gitems}")
    t0 = time.perf_counter()
    fb, failed = replay(serve, known, WINDOW, seed=1)
    dt = time.perf_counter() - t0
    story["control"] = {"requests": WINDOW, "fallback": fb, "failed": failed}
    detail(f"{WINDOW} requests in {dt:.2f} s ({dt / WINDOW * 1e6:.0f} us each, from Python), {fb} unknown users")
    control = wait("the monitor's control window", lambda: report_after(mon, 0))
    story["control"]["drift"] = control["dataset_drift"]
    story["control"]["features"] = features(control)
    detail(f"monitor: dataset drift {control['dataset_drift']}; " + "; ".join(
        f"{f['column']} {f['method']} {f['statistic']:.3f}" for f in control["features"] if "statistic" in f))

    # 3. the world changes ----------------------------------------------------------
    say(f"3. The autumn arrives: {len(after):,} more rows, ingested and cleaned")
    ing2 = quern("ingest", "online-retail-raw", later, "--batch", "20000")
    run2 = quern("pipelines", "run", "online-retail")
    story["prep_2"] = {"rows_in": run2["report"]["rows_in"], "rows_out": run2["report"]["rows_out"],
                       "dataset_version": run2["dataset_version"]}
    detail(f"{ing2['accepted']:,} rows ingested; dataset v{run2['dataset_version']}: "
           f"{run2['report']['rows_out']:,} purchases up to December")

    say("   Autumn and Christmas customers ask for recommendations")
    autumn = customers(after, ix)
    fb2, failed2 = replay(serve, autumn, WINDOW, seed=2)
    story["shifted"] = {"requests": WINDOW, "fallback": fb2, "failed": failed2}
    detail(f"{WINDOW} requests, {fb2} from customers the model has never seen")
    drift = wait("the monitor to report the shifted window", lambda: report_after(mon, 1))
    story["shifted"]["drift"] = drift["dataset_drift"]
    story["shifted"]["features"] = features(drift)
    detail(f"monitor: dataset drift {drift['dataset_drift']} (share {drift['share_drifted']:.2f}); " + "; ".join(
        f"{f['column']} {f['method']} {f['statistic']:.3f}{' DRIFT' if f.get('drifted') else ''}"
        for f in drift["features"] if "statistic" in f))

    # From here a steady client load runs beside, through the retrain and the swap.
    load = Load(serve, known).start()
    fired = wait("the alert", lambda: alerts(alert))
    story["alert"] = {"rule": fired["rule"], "actions": [a["type"] + ":" + a["status"] for a in fired["actions"]]}
    detail(f"alert {fired['rule']} fired ({fired['severity']}): " + ", ".join(story["alert"]["actions"]))

    say("   quern-train retrains on the fresh data; champion/challenger on November-December")
    job2 = wait("the retrain", lambda: finished_retrain(), timeout=300)
    r2 = job2["result"]
    story["v2"] = {"version": r2["version"], "outcome": r2["outcome"], "metric": r2["metric"],
                   "challenger_score": r2["challenger_score"], "champion_score": r2.get("champion_score"),
                   "champion_version": r2.get("champion_version"), "map@10": r2["metrics"]["map@10"],
                   "baseline.map@10": r2["metrics"]["baseline.map@10"]}
    detail(f"version {r2['version']}: {r2['reason']} -> {r2['outcome']}")
    if r2["outcome"] == "promoted":
        wait("serve to swap to version 2", lambda: str(r2["version"]) in load.versions, timeout=60)
        time.sleep(1.0)
        st, alias = reg.call("GET", f"/v1/models/{MODEL}/aliases/production")
        t_promote = datetime.datetime.strptime(alias["updated_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
    load.stop()
    story["serve"] = {"requests": load.ok + load.failed, "failed": load.failed, "versions": load.versions,
                      "errors": load.errors}
    if r2["outcome"] == "promoted":
        story["serve"]["swap_s"] = round(load.first_seen[str(r2["version"])] - t_promote, 3)
    st, body = alert.call("GET", f"/v1/alerts?rule=retail-drift")
    story["alert"]["state"] = body["alerts"][0]["state"] if body.get("alerts") else None

    # 4. the story -------------------------------------------------------------------
    say("4. What happened")
    p1, v1, v2, sv = story["prep_1"], story["v1"], story["v2"], story["serve"]
    detail(f"prep kept {p1['rows_out']:,} of {p1['rows_in']:,} raw rows (no customer, cancellations, "
           "postage and fees, free lines)")
    detail(f"v1: MAP@10 {v1['map@10']:.4f} vs popularity {v1['baseline.map@10']:.4f}; in production")
    detail(f"control window: drift {story['control']['drift']}; shifted window: drift {story['shifted']['drift']} "
           f"({story['shifted']['fallback']} of {WINDOW} requests from unknown customers)")
    if v2["champion_score"] is not None:
        detail(f"v2 on the fresh holdout: {v2['metric']} {v2['challenger_score']:.4f} vs v1 "
               f"{v2['champion_score']:.4f} -> {v2['outcome']}")
    detail(f"serve answered {sv['requests']:,} requests during the swap, {sv['failed']} failed, "
           f"versions {sv['versions']}" + (f"; it served v2 {sv['swap_s']:.2f} s after the promotion"
                                          if "swap_s" in sv else ""))
    detail(f"alert {story['alert']['rule']}: {story['alert']['state']}")
    return story


def report_after(mon, n_before):
    """The latest monitor report once at least n_before + 1 windows closed."""
    st, body = mon.call("GET", f"/v1/monitors/{MODEL}/report?history=10")
    if st != 200:
        return None
    reports = body.get("reports") or ([body["report"]] if body.get("report") else [])
    return reports[0] if len(reports) > n_before else None


def features(report):
    return [{k: f.get(k) for k in ("column", "method", "statistic", "p_value", "threshold", "drifted")}
            for f in report.get("features", [])]


def alerts(api):
    st, body = api.call("GET", "/v1/alerts?rule=retail-drift")
    return body["alerts"][0] if st == 200 and body.get("alerts") else None


def finished_retrain():
    jobs = quern("jobs", "list")
    done = [j for j in jobs if j.get("model") == MODEL
            and j["state"] in ("succeeded", "failed", "cancelled")
            and (j.get("result") or {}).get("version") != 1]
    if done and done[0]["state"] != "succeeded":
        raise SystemExit(f"demo: the retrain {done[0]['state']}: {done[0].get('error')}")
    if not done:
        return None
    st, job = Api(BASE + 4).call("GET", f"/v1/jobs/{done[0]['id']}")
    return job


SPEC = {"kind": "als", "user": "CustomerID", "item": "StockCode", "time": "InvoiceDate", "k": 10,
        "params": {"factors": 64, "iterations": 15, "regularization": 0.01, "alpha": 1, "cg_steps": 3,
                   "threads": 2}}

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subset", type=int, default=1, help="keep every Nth customer (deterministic)")
    ap.add_argument("--json", action="store_true", help="print the story as JSON")
    ap.add_argument("--keep", action="store_true", default=bool(os.environ.get("DEMO_KEEP")),
                    help="leave the services running")
    ap.add_argument("--case", choices=("shop", "bikes"), default=os.environ.get("CASE") or "shop",
                    help="shop: recommendations and data drift (Online Retail); bikes: a regressor's "
                         "live quality from feedback (Bike Sharing, scripts/demo_bikes.py)")
    ap.add_argument("--attach", action="store_true",
                    help="drive services already running on $QUERN_PORT_BASE + 1..8 (e.g. the compose "
                         "stack, tests/deploy/stack_loop.py); neither start nor stop them")
    ARGS = ap.parse_args()
    if ARGS.case == "bikes":
        import demo_bikes
        MODEL, WINDOW = demo_bikes.MODEL, demo_bikes.WINDOW
    HOME = os.path.abspath(os.environ.get("QUERN_DEMO_HOME", os.path.join(ROOT, ".quern-demo")))
    BASE = int(os.environ.get("QUERN_PORT_BASE", "7700"))
    ENV = dict(os.environ, QUERN_HOME=HOME, QUERN_PORT_BASE=str(BASE), QUERN_MODELS=os.environ.get("QUERN_MODELS", MODEL),
               QUERN_LOG_SAMPLE_RATE="1", QUERN_POLL_INTERVAL="2s",
               QUERN_MONITOR_WINDOW_ROWS=str(WINDOW), QUERN_MONITOR_WINDOW_SECONDS="3600",
               QUERN_ALERT_RULES=os.path.join(HOME, "alert-rules.json"),
               QUERN_MONITOR_QUALITY_WINDOW=os.environ.get("QUERN_MONITOR_QUALITY_WINDOW", str(WINDOW)))
    for k in ("QUERN_REGISTRY", "QUERN_INGEST", "QUERN_PREP", "QUERN_TRAIN", "QUERN_SERVE",
              "QUERN_MONITOR", "QUERN_ALERT", "QUERN_CONSOLE", "QUERN_DATA", "QUERN_LISTEN"):
        ENV.pop(k, None)
    if not ARGS.attach:
        subprocess.run([os.path.join(BIN, "quern"), "down"], env=ENV, capture_output=True)
    shutil.rmtree(HOME, ignore_errors=True)
    ok = False
    try:
        result = demo_bikes.run(sys.modules[__name__]) if ARGS.case == "bikes" else run()
        ok = True
        if ARGS.json:
            print(json.dumps(result, indent=1))
    finally:
        if ARGS.attach:
            pass
        elif not ARGS.keep or not ok:
            subprocess.run([os.path.join(BIN, "quern"), "down"], env=ENV, capture_output=True)
        elif not ARGS.json:
            print(f"\nThe services keep running (quern status; QUERN_HOME={HOME} quern down stops them).")
            if os.path.exists(os.path.join(BIN, "quern-console")):
                print(f"The console: http://127.0.0.1:{BASE + 9}/")
