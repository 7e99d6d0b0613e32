"""test_tracing.py - one trace across the services, exported as OTLP/HTTP JSON.

A small OTLP receiver (http.server on loopback, POST /v1/traces) collects what
registry, ingest, prep, train and serve export (QUERN_OTLP_ENDPOINT points at
it; one QUERN_HOME, so one bus). The test drives one causal chain with one
trace id:

  POST ingest /v1/datasets/clicks/events   (traceparent: T, caller span A)
    -> quern.events.ingested -> prep's rows trigger -> prep run
       -> ingest (read events), registry (blob, dataset version)
  POST train /v1/jobs                      (traceparent: T, caller span B)
    -> quern.train.requested -> the job: dataset, fit ..., champion, upload, register
       -> registry (version, alias) -> quern.model.promoted
       -> serve's consumer -> serve follows the alias -> registry downloads

then stops every service (SIGTERM flushes their spans) and checks the
payloads' shape and that the spans join up: every parent of a span of trace T
is a span of T or one of the two caller spans, each service took part, a
registry SERVER span hangs below a train CLIENT span, and serve's CONSUMER
span of quern.model.promoted below the registry's PRODUCER span.
"""
import json
import os
import random
import re
import shutil
import tempfile
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness import ServiceTest, Service, WORK

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN_A = "b7ad6b7169203331"   # the caller of ingest
SPAN_B = "c8be7c827a314442"   # the caller of train
TP_A = f"00-{TRACE}-{SPAN_A}-01"
TP_B = f"00-{TRACE}-{SPAN_B}-01"
SERVER, CLIENT, PRODUCER, CONSUMER, INTERNAL = 2, 3, 4, 5, 1


class Receiver:
    """Stores every JSON body POSTed to /v1/traces."""

    def __init__(self):
        self.bodies = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                data = self.rfile.read(n)
                ok = self.path == "/v1/traces" and self.headers.get("Content-Type") == "application/json"
                if ok:
                    with outer.lock:
                        outer.bodies.append(json.loads(data))
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def spans(self):
        """(service.name, span) for every span received."""
        out = []
        with self.lock:
            for b in self.bodies:
                for rs in b["resourceSpans"]:
                    attrs = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}
                    svc = attrs["service.name"]["stringValue"]
                    for ss in rs["scopeSpans"]:
                        for sp in ss["spans"]:
                            out.append((svc, sp))
        return out


def attr(span, key):
    for a in span.get("attributes", []):
        if a["key"] == key:
            v = a["value"]
            return next(iter(v.values()))
    return None


def interactions(users=60, per_user=8, items=40, seed=5):
    rnd = random.Random(seed)
    lines = ["user,item,weight"]
    for u in range(users):
        for it in rnd.sample(range(items), per_user):
            lines.append(f"u{u},i{it},1")
    return ("\n".join(lines) + "\n").encode(), users * per_user


class TracingTest(ServiceTest):
    def setUp(self):
        super().setUp()
        self.rx = Receiver()
        self.home = tempfile.mkdtemp(prefix="quern-trace-home-", dir=WORK)
        self.env = {"QUERN_HOME": self.home, "QUERN_OTLP_ENDPOINT": self.rx.url}

    def tearDown(self):
        super().tearDown()
        self.rx.stop()
        for svc in self.services:
            for needle in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
                self.assertNotIn(needle, svc.log(), f"{svc.name} log ({svc.log_path})")
        if not os.environ.get("QUERN_KEEP"):
            shutil.rmtree(self.home, ignore_errors=True)

    def svc(self, name, args=()):
        data = os.path.join(self.home, name)
        os.makedirs(data, exist_ok=True)
        return self.start(name, data=data, env=self.env, args=list(args))

    def wait_for(self, what, fn, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = fn()
            if v:
                return v
            time.sleep(0.1)
        self.fail(f"timed out waiting for {what}")

    def test_one_trace_from_ingest_to_serve(self):
        reg = self.svc("registry")
        regurl = f"http://127.0.0.1:{reg.port}"
        ing = self.svc("ingest")
        prep = self.svc("prep", ["--registry", regurl, "--ingest", f"http://127.0.0.1:{ing.port}"])
        train = self.svc("train", ["--registry", regurl])
        # serve is ready only once its model has a version: wait for it to listen.
        os.makedirs(os.path.join(self.home, "serve"), exist_ok=True)
        serve = Service("serve", data=os.path.join(self.home, "serve"), env=self.env,
                        args=["--models", "recs", "--poll-interval", "1h", "--grpc-listen", "off",
                              "--registry", regurl])
        serve.ready = lambda: serve.request("GET", "/healthz")[0] == 200
        self.services.append(serve.start(timeout=30))

        # ---- ingest -> prep: a rows-triggered pipeline --------------------------------
        st, _, ans = ing.request("PUT", "/v1/datasets/clicks/schema", {"columns": [
            {"name": "user", "type": "categorical"}, {"name": "item", "type": "categorical"},
            {"name": "weight", "type": "numeric"}]})
        self.assertIn(st, (200, 201), ans)
        st, _, ans = prep.request("PUT", "/v1/pipelines/clicks", {
            "source": "clicks", "output": "clicks-clean", "steps": [],
            "trigger": {"kind": "rows", "every": 100}})
        self.assertEqual(st, 201, ans)
        csv, nrows = interactions()
        st, h, ans = ing.request("POST", "/v1/datasets/clicks/events", csv,
                                 {"Content-Type": "text/csv", "traceparent": TP_A})
        self.assertEqual(st, 201, ans)
        self.assertEqual(ans["accepted"], nrows)

        def dataset_ready():
            st, _, v = reg.request("GET", "/v1/datasets/clicks-clean/versions/latest")
            return v if st == 200 else None
        self.wait_for("the prep run's dataset version", dataset_ready)

        # ---- train -> registry -> serve ----------------------------------------------
        job = {"model": "recs", "kind": "als", "dataset": "clicks-clean",
               "spec": {"user": "user", "item": "item", "weight": "weight", "k": 5,
                        "split": {"kind": "leave_k_out", "k": 1, "seed": 7}},
               "params": {"factors": 4, "iterations": 3, "regularization": 0.1, "alpha": 2, "seed": 1}}
        st, _, j = train.request("POST", "/v1/jobs", job, {"traceparent": TP_B})
        self.assertEqual(st, 202, j)

        def job_done():
            st, _, jj = train.request("GET", f"/v1/jobs/{j['id']}")
            return jj if jj["state"] in ("succeeded", "failed", "cancelled") else None
        done = self.wait_for("the training job", job_done)
        self.assertEqual(done["state"], "succeeded", done)
        self.assertTrue(done["result"]["promoted"], done)
        self.wait_for("serve to load the promoted version",
                      lambda: serve.request("GET", "/v2/models/recs/ready")[0] == 200, timeout=60)

        # SIGTERM: every service flushes what it still holds.
        for s in reversed(self.services):
            self.assertEqual(s.stop(), 0, s.log()[-2000:])

        self.check_shape()
        self.check_trace()

    # ---- assertions ------------------------------------------------------------------

    def check_shape(self):
        self.assertTrue(self.rx.bodies, "no OTLP payload arrived")
        hexid = {16: re.compile(r"^[0-9a-f]{16}$"), 32: re.compile(r"^[0-9a-f]{32}$")}
        for b in self.rx.bodies:
            self.assertEqual(set(b), {"resourceSpans"})
            for rs in b["resourceSpans"]:
                keys = [a["key"] for a in rs["resource"]["attributes"]]
                self.assertIn("service.name", keys)
                for ss in rs["scopeSpans"]:
                    self.assertEqual(ss["scope"]["name"], "quern")
                    for sp in ss["spans"]:
                        self.assertRegex(sp["traceId"], hexid[32])
                        self.assertRegex(sp["spanId"], hexid[16])
                        if "parentSpanId" in sp:
                            self.assertRegex(sp["parentSpanId"], hexid[16])
                        self.assertIsInstance(sp["name"], str)
                        self.assertIn(sp["kind"], (1, 2, 3, 4, 5))
                        for k in ("startTimeUnixNano", "endTimeUnixNano"):
                            self.assertIsInstance(sp[k], str)
                            self.assertTrue(sp[k].isdigit(), sp)
                        self.assertGreaterEqual(int(sp["endTimeUnixNano"]), int(sp["startTimeUnixNano"]))
                        # nanoseconds: within a day of now
                        self.assertLess(abs(int(sp["startTimeUnixNano"]) / 1e9 - time.time()), 86400)
                        for a in sp["attributes"]:
                            self.assertEqual(len(a["value"]), 1, a)
                            self.assertIn(next(iter(a["value"])),
                                          ("stringValue", "intValue", "doubleValue", "boolValue"))
                            if "intValue" in a["value"]:
                                self.assertIsInstance(a["value"]["intValue"], str)
                        self.assertIsInstance(sp["status"], dict)

    def check_trace(self):
        spans = [(svc, sp) for svc, sp in self.rx.spans() if sp["traceId"] == TRACE]
        by_id = {sp["spanId"]: (svc, sp) for svc, sp in spans}
        self.assertEqual(len(by_id), len(spans), "span ids repeat")
        services = {svc for svc, _ in spans}
        for want in ("quern-ingest", "quern-prep", "quern-registry", "quern-train", "quern-serve"):
            self.assertIn(want, services, f"no span of {want} in the trace: {sorted(services)}")

        # Every parent resolves: a span of the trace, or one of the two callers.
        for svc, sp in spans:
            p = sp.get("parentSpanId")
            self.assertTrue(p, f"{svc} {sp['name']} has no parent; only the callers are roots")
            self.assertTrue(p in by_id or p in (SPAN_A, SPAN_B),
                            f"{svc} {sp['name']}: parent {p} is not in the trace")

        def parent(sp):
            return by_id.get(sp.get("parentSpanId"), (None, None))

        def find(svc, kind, name=None, pred=None):
            return [sp for s, sp in spans if s == svc and sp["kind"] == kind and
                    (name is None or (name(sp["name"]) if callable(name) else sp["name"] == name)) and
                    (pred is None or pred(sp))]

        # ingest's SERVER span is the child of caller A; its event's PRODUCER below it.
        ing = find("quern-ingest", SERVER, "POST /v1/datasets/{name}/events")
        self.assertEqual(len(ing), 1)
        self.assertEqual(ing[0]["parentSpanId"], SPAN_A)
        self.assertEqual(attr(ing[0], "http.status_code"), "201")
        prod = find("quern-ingest", PRODUCER, "publish quern.events.ingested")
        self.assertEqual([parent(p)[1]["spanId"] for p in prod], [ing[0]["spanId"]])
        # The bus hop to prep, and the run it triggered.
        cons = find("quern-prep", CONSUMER, "process quern.events.ingested")
        self.assertEqual(len(cons), 1)
        self.assertEqual(cons[0]["parentSpanId"], prod[0]["spanId"])
        run = find("quern-prep", INTERNAL, "prep run clicks")
        self.assertEqual(len(run), 1)
        self.assertEqual(run[0]["parentSpanId"], cons[0]["spanId"])
        # The run's calls: registry SERVER spans below prep CLIENT spans below the run.
        prep_calls = [c for c in find("quern-prep", CLIENT) if c["parentSpanId"] == run[0]["spanId"]]
        self.assertTrue(prep_calls)
        reg_dsv = find("quern-registry", SERVER, "POST /v1/datasets/{name}/versions")
        self.assertTrue(reg_dsv)
        self.assertTrue(any(parent(r)[0] == "quern-prep" and parent(r)[1]["kind"] == CLIENT
                            and parent(r)[1]["parentSpanId"] == run[0]["spanId"] for r in reg_dsv))
        self.assertTrue(find("quern-ingest", SERVER, lambda n: n.startswith("GET ")),
                        "prep's reads of ingest are in the trace")

        # train: SERVER (child of caller B) -> PRODUCER -> CONSUMER -> job -> stages.
        post = find("quern-train", SERVER, "POST /v1/jobs")
        self.assertEqual(len(post), 1)
        self.assertEqual(post[0]["parentSpanId"], SPAN_B)
        req = find("quern-train", PRODUCER, "publish quern.train.requested")
        self.assertEqual(req[0]["parentSpanId"], post[0]["spanId"])
        tcons = find("quern-train", CONSUMER, "process quern.train.requested")
        self.assertEqual(tcons[0]["parentSpanId"], req[0]["spanId"])
        job = find("quern-train", INTERNAL, "train job")
        self.assertEqual(len(job), 1)
        self.assertEqual(job[0]["parentSpanId"], tcons[0]["spanId"])
        self.assertEqual(attr(job[0], "quern.outcome"), "promoted")
        stages = {sp["name"]: sp for sp in find("quern-train", INTERNAL)
                  if sp["parentSpanId"] == job[0]["spanId"]}
        for st in ("dataset", "split", "fit", "evaluate", "profile", "champion", "upload", "register"):
            self.assertIn(st, stages, f"stage span {st} missing: {sorted(stages)}")
        # The dataset's read and the registration are registry SERVER spans below train CLIENT spans.
        reg_under_train = [r for r in find("quern-registry", SERVER)
                           if parent(r)[0] == "quern-train" and parent(r)[1]["kind"] == CLIENT]
        names = {r["name"] for r in reg_under_train}
        for n in ("GET /v1/datasets/{name}/versions/{n}", "PUT /v1/blobs/{digest}",
                  "POST /v1/models/{name}/versions", "PUT /v1/models/{name}/aliases/{alias}"):
            self.assertIn(n, names, f"registry span {n} not below train: {sorted(names)}")
        alias = [r for r in reg_under_train if r["name"] == "PUT /v1/models/{name}/aliases/{alias}"][0]
        self.assertEqual(parent(parent(alias)[1])[1]["spanId"], stages["register"]["spanId"])
        finished = find("quern-train", PRODUCER, "publish quern.train.finished")
        self.assertEqual(finished[0]["parentSpanId"], job[0]["spanId"])

        # The bus hop to serve: the promotion, below the alias move.
        promo = find("quern-registry", PRODUCER, "publish quern.model.promoted")
        self.assertEqual(len(promo), 1)
        self.assertEqual(promo[0]["parentSpanId"], alias["spanId"])
        scons = find("quern-serve", CONSUMER, "process quern.model.promoted")
        self.assertEqual(len(scons), 1)
        self.assertEqual(scons[0]["parentSpanId"], promo[0]["spanId"])
        follow = find("quern-serve", INTERNAL, "serve follow alias")
        self.assertEqual(len(follow), 1)
        self.assertEqual(follow[0]["parentSpanId"], scons[0]["spanId"])
        self.assertEqual(attr(follow[0], "quern.version"), "1")
        # serve's downloads: registry SERVER spans below serve CLIENT spans below the follow.
        downloads = [r for r in find("quern-registry", SERVER, lambda n: n.startswith("GET "))
                     if parent(r)[0] == "quern-serve" and
                     parent(r)[1]["parentSpanId"] == follow[0]["spanId"]]
        self.assertIn("GET /v1/blobs/{digest}", {r["name"] for r in downloads})

        # Probes never make spans.
        self.assertFalse([sp for _, sp in self.rx.spans() if sp["name"].endswith(("/healthz", "/readyz", "/metrics"))])


if __name__ == "__main__":
    unittest.main()
