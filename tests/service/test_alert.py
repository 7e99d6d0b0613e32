"""Black-box tests of quern-alert on the shared sqlite bus: a drift rule fires
an alert with its evidence, a signed webhook (HMAC checked here), exactly one
retrain however many drift events arrive, resolution on quern.train.finished;
one pending retrain per model; a dead webhook target retried with backoff
then recorded failed while other alerts fire on time; metric rules; rules
reloaded by SIGHUP and PUT /v1/rules, invalid rules refused; secrets and URL
credentials never shown nor logged; webhook and scrape targets checked
against --webhook-allow / --scrape-allow (literal addresses at load, names
after resolution at send time). The local receivers listen on 127.0.0.1, so
alert is started with --webhook-allow 127.0.0.1 unless a test says otherwise."""
import base64
import hashlib
import hmac
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import events
from harness import ServiceTest, Service, WORK

SECRET = "s3cret"


def wait_for(fn, timeout=30, every=0.1):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"condition not met in {timeout}s (last: {last!r})")


class Receiver:
    """A local HTTP server recording POSTs and serving a settable /metrics."""

    def __init__(self):
        self.posts = []
        self.gets = []
        self.metrics = ""
        rec = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(n)
                rec.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def do_GET(self):
                rec.gets.append(({k.lower(): v for k, v in self.headers.items()}, self.path))
                data = rec.metrics.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


JOB = {"kind": "als", "dataset": "retail-interactions", "spec": {"factors": 32},
       "promote_policy": {"metric": "ndcg@10", "margin": 0.01}}


def drift_rule(url, **over):
    r = {"name": "drift", "on": {"event": "quern.drift.detected", "where": {"data.dataset_drift": True}},
         "severity": "critical", "cooldown": "10m", "dedupe": "{data.model}",
         "resolve": {"event": "quern.train.finished"},
         "actions": [{"type": "log"}, {"type": "webhook", "url": url, "secret": SECRET, "retries": 2},
                     {"type": "retrain", "model": "{data.model}", "job": JOB}]}
    r.update(over)
    return r


def drift(model, version=1, dataset_drift=True):
    return events.envelope("quern.drift.detected", {
        "model": model, "version": version, "dataset_drift": dataset_drift, "share_drifted": 0.67,
        "window": {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:05:00Z", "rows": 1000},
        "features": [{"column": "x", "method": "ks", "statistic": 0.4, "p_value": 0.001, "threshold": 0.05,
                      "drifted": True}]})


class AlertTest(ServiceTest):
    def setUp(self):
        super().setUp()
        self.home = tempfile.mkdtemp(prefix="quern-alert-", dir=WORK)
        os.makedirs(os.path.join(self.home, "alert"))
        self.bus = f"sqlite://{self.home}/bus.db"
        self.rules_path = os.path.join(self.home, "rules.json")
        self.rx = Receiver()
        for g, p in (("t-train", "quern.train.requested"), ("t-alerts", "quern.alert.*")):
            events.subscribe(self.bus, g, p)

    def tearDown(self):
        super().tearDown()
        self.assertNoSanitizerReports(("monitor", "alert"))
        self.rx.close()
        shutil.rmtree(self.home, ignore_errors=True)

    def start_alert(self, rules, *extra, allow="127.0.0.1"):
        """Starts alert on self.rules_path; allow is --webhook-allow (None: not given)."""
        with open(self.rules_path, "w") as f:
            json.dump({"rules": rules}, f)
        args = ["--rules", self.rules_path, "--webhook-backoff", "100ms", "--webhook-timeout", "1s",
                "--poll-interval", "200ms", "--bus-lease", "2s", *extra]
        if allow is not None:
            args += ["--webhook-allow", allow]
        self.al = self.start("alert", data=os.path.join(self.home, "alert"), env={"QUERN_HOME": self.home},
                             args=args)
        return self.al

    def alerts(self, query=""):
        st, _, body = self.al.request("GET", "/v1/alerts" + query)
        self.assertEqual(st, 200, body)
        return body["alerts"]

    def test_drift_fires_signed_webhook_one_retrain_and_resolves(self):
        self.start_alert([drift_rule(f"http://127.0.0.1:{self.rx.port}/hook")])
        events.publish(self.bus, [drift("retail"), drift("retail", 2), drift("retail", dataset_drift=False)])
        a = wait_for(lambda: (lambda l: l[0] if l and l[0]["count"] == 2 else None)(self.alerts()))
        self.assertEqual(len(self.alerts()), 1)
        self.assertEqual((a["rule"], a["state"], a["severity"], a["dedupe_key"]), ("drift", "firing", "critical", "retail"))
        self.assertEqual(a["evidence"]["model"], "retail")
        self.assertEqual(a["evidence"]["features"][0]["column"], "x")
        # the webhook: one signed POST
        wait_for(lambda: len(self.rx.posts) == 1)
        hdrs, body = self.rx.posts[0]
        want = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        self.assertEqual(hdrs["x-quern-signature"], want)
        self.assertEqual(json.loads(body)["alert"]["id"], a["id"])
        st, _, one = self.al.request("GET", f"/v1/alerts/{a['id']}")
        acts = wait_for(lambda: (lambda x: x if x[1]["status"] == "delivered" else None)(
            self.al.request("GET", f"/v1/alerts/{a['id']}")[2]["actions"]))
        self.assertEqual([x["type"] for x in acts], ["log", "webhook", "retrain"])
        self.assertEqual((acts[0]["status"], acts[1]["attempts"], acts[2]["status"]), ("done", 1, "requested"))
        # exactly one retrain
        reqs = events.read(self.bus, "t-train", "quern.train.requested", quiet_ms=1000)
        self.assertEqual(len(reqs), 1, reqs)
        d = reqs[0]["data"]
        self.assertEqual((d["model"], d["kind"], d["dataset"], d["job_id"]),
                         ("retail", "als", "retail-interactions", acts[2]["detail"]["job_id"]))
        self.assertEqual(d["spec"], JOB["spec"])
        self.assertEqual(d["promote_policy"], JOB["promote_policy"])
        self.assertTrue(d["reason"].startswith("alert drift: "), d["reason"])
        # training finishes: the alert resolves
        events.publish(self.bus, [events.envelope("quern.train.finished", {
            "job_id": d["job_id"], "model": "retail", "version": 5, "outcome": "promoted"})])
        wait_for(lambda: self.alerts()[0]["state"] == "resolved")
        self.assertEqual(self.alerts("?state=firing"), [])
        # drift again within the cooldown: held back, no second retrain
        events.publish(self.bus, [drift("retail", 6)])
        time.sleep(1.5)
        self.assertEqual(len(self.alerts()), 1)
        self.assertEqual(events.read(self.bus, "t-train", "quern.train.requested", quiet_ms=500), [])
        got = events.read(self.bus, "t-alerts", "quern.alert.*", quiet_ms=1000)
        self.assertEqual([e["type"] for e in got], ["quern.alert.fired", "quern.alert.resolved"])
        self.assertEqual(got[0]["data"]["id"], a["id"])
        st, _, text = self.al.request("GET", "/metrics", raw=True)
        self.assertIn(b'quern_alerts_fired_total{service="alert",rule="drift",severity="critical"} 1', text)
        p = subprocess.run([shutil.which("promtool"), "check", "metrics"], input=text, capture_output=True)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(self.al.stop(), 0)

    def test_one_pending_retrain_per_model(self):
        # a new alert per version and no cooldown: only the pending retrain holds back a loop
        self.start_alert([drift_rule(f"http://127.0.0.1:{self.rx.port}/hook", dedupe="{data.model}/{data.version}",
                                     cooldown="0s", resolve={"after": "1h"})])
        events.publish(self.bus, [drift("retail", 1), drift("retail", 2)])
        wait_for(lambda: len(self.alerts()) == 2)
        reqs = events.read(self.bus, "t-train", "quern.train.requested", quiet_ms=1000)
        self.assertEqual(len(reqs), 1)
        second = [x for x in self.alerts() if x["dedupe_key"] == "retail/2"][0]
        self.assertEqual(second["actions"][2]["status"], "skipped")
        self.assertEqual(second["actions"][2]["detail"]["pending_job_id"], reqs[0]["data"]["job_id"])
        events.publish(self.bus, [events.envelope("quern.train.finished", {
            "job_id": reqs[0]["data"]["job_id"], "model": "retail", "outcome": "kept_champion"}), drift("retail", 3)])
        wait_for(lambda: len(self.alerts()) == 3)
        self.assertEqual(len(events.read(self.bus, "t-train", "quern.train.requested", quiet_ms=1000)), 1)

    def test_webhook_down_retried_then_failed_nothing_blocked(self):
        dead = f"http://127.0.0.1:{free_port()}/hook"
        other = {"name": "other", "on": {"event": "quern.dataset.ready"}, "actions": [{"type": "log"}]}
        # a backoff long enough that the other alert fires while retries go on, even under ASan
        self.start_alert([drift_rule(dead, actions=[{"type": "webhook", "url": dead, "retries": 3}]), other],
                         "--webhook-backoff", "400ms")
        t0 = time.time()
        events.publish(self.bus, [drift("retail")])
        wait_for(lambda: self.alerts("?rule=drift"))
        events.publish(self.bus, [events.envelope("quern.dataset.ready", {"dataset": "d", "version": 1})])
        wait_for(lambda: self.alerts("?rule=other"), timeout=3)
        fired_other = time.time()
        a = self.alerts("?rule=drift")[0]
        # the second alert fired while the first webhook was still being retried
        self.assertIn(a["actions"][0]["status"], ("pending", "retrying"))
        act = wait_for(lambda: (lambda x: x if x["status"] == "failed" else None)(
            self.al.request("GET", f"/v1/alerts/{a['id']}")[2]["actions"][0]), timeout=20)
        self.assertEqual(act["attempts"], 4)
        self.assertTrue(act["last_error"])
        # backoff: 3 waits of >= 0.5 * 400, 800, 1600 ms
        self.assertGreater(time.time() - t0, 1.4)
        self.assertLess(fired_other - t0, 3)
        st, _, text = self.al.request("GET", "/metrics", raw=True)
        self.assertIn(b'quern_alert_webhooks_total{service="alert",outcome="failed"} 1', text)

    def test_metric_rule_fires_and_clears(self):
        self.rx.metrics = ('# TYPE quern_drift_score gauge\n'
                           'quern_drift_score{service="monitor",model="retail",feature="x",method="wasserstein"} 0.5\n'
                           'quern_drift_score{service="monitor",model="other",feature="x",method="wasserstein"} 0.9\n')
        rule = {"name": "score", "on": {"metric": {"url": f"http://127.0.0.1:{self.rx.port}/metrics",
                                                   "name": "quern_drift_score", "labels": {"model": "retail"},
                                                   "op": ">", "value": 0.2, "for": "300ms"}},
                "dedupe": "{labels.model}/{labels.feature}", "actions": [{"type": "log"}]}
        self.start_alert([rule])
        a = wait_for(lambda: self.alerts(), timeout=10)
        self.assertEqual(len(a), 1)
        self.assertEqual((a[0]["dedupe_key"], a[0]["evidence"]["value"]), ("retail/x", 0.5))
        self.rx.metrics = self.rx.metrics.replace("} 0.5", "} 0.1")
        wait_for(lambda: self.alerts()[0]["state"] == "resolved", timeout=10)

    def test_rules_reload_put_and_validation(self):
        url = f"http://127.0.0.1:{self.rx.port}/hook"
        self.start_alert([drift_rule(url)])
        st, _, body = self.al.request("GET", "/v1/rules")
        self.assertEqual((st, body["count"]), (200, 1))
        # SIGHUP picks up a new file
        with open(self.rules_path, "w") as f:
            json.dump({"rules": [drift_rule(url), {"name": "ready", "on": {"event": "quern.dataset.ready"}}]}, f)
        self.al.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: self.al.request("GET", "/v1/rules")[2]["count"] == 2)
        # an invalid file is refused and the rules stay
        with open(self.rules_path, "w") as f:
            json.dump({"rules": [{"name": "x", "on": {"event": "quern.a"}, "severity": "loud"}]}, f)
        self.al.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "rules not reloaded" in self.al.log())
        self.assertIn("rules[0].severity", self.al.log())
        self.assertEqual(self.al.request("GET", "/v1/rules")[2]["count"], 2)
        bad = [({"rules": [{"on": {"event": "quern.a"}}]}, "rules[0].name"),
               ({"rules": [{"name": "a", "on": {"event": "quern.a"}, "cooldown": "soon"}]}, "rules[0].cooldown"),
               ({"rules": [{"name": "a", "on": {"event": "quern.a"}}, {"name": "a", "on": {"event": "quern.b"}}]},
                "rules[1].name"),
               ({"rules": [{"name": "a", "on": {"event": "quern.a"},
                            "actions": [{"type": "webhook", "url": "ftp://x"}]}]}, "rules[0].actions[0].url"),
               ({"rules": [{"name": "a", "on": {"event": "quern.a"},
                            "actions": [{"type": "retrain", "model": "m"}]}]}, "rules[0].actions[0].job"),
               ({"rules": [{"name": "a", "on": {"event": "quern.a"},
                            "actions": [{"type": "webhook", "url": "http://x", "secret_env": "QUERN_NO_SUCH_VAR"}]}]},
                "QUERN_NO_SUCH_VAR"),
               ({"rules": [{"name": "a", "on": {"metric": {"url": "http://x/metrics", "name": "m", "op": "~",
                                                           "value": 1}}}]}, "rules[0].on.metric.op"),
               ({"rules": [{"name": "a", "on": {"event": "quern.a"}, "extra": 1}]}, "rules[0].extra"),
               ({"rules": {}}, "rules")]
        for body, needle in bad:
            self.assertError(self.al.request("PUT", "/v1/rules", body), 400, "invalid_argument", needle)
        self.assertEqual(self.al.request("GET", "/v1/rules")[2]["count"], 2)
        st, _, body = self.al.request("PUT", "/v1/rules", {"rules": [drift_rule(url)]})
        self.assertEqual((st, body["count"]), (200, 1))
        with open(self.rules_path) as f:
            self.assertEqual(len(json.load(f)["rules"]), 1)
        self.assertError(self.al.request("GET", "/v1/alerts?state=bogus"), 400, "invalid_argument", "state")
        self.assertError(self.al.request("GET", "/v1/alerts/nope"), 404, "not_found", "nope")
        self.al.stop()
        # a bad file at start: refuses to start, naming the field
        with open(self.rules_path, "w") as f:
            json.dump({"rules": [{"name": "a", "on": {"event": "quern.a"}, "resolve": {}}]}, f)
        p = subprocess.run([os.path.join(os.environ.get("QUERN_BIN", "build/bin"), "quern-alert"), "--rules",
                            self.rules_path, "--listen", "127.0.0.1:0", "--data", os.path.join(self.home, "alert")],
                           capture_output=True, env=dict(os.environ, QUERN_HOME=self.home), timeout=30)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(b"rules[0].resolve", p.stderr)

    def test_bad_templates_and_retrain_jobs_refused(self):
        """Template syntax (dedupe, a retrain's model) and a retrain's job (kind, dataset,
        dataset_version) are checked at PUT and at reload: 400 naming the rule and the field,
        and the rules in force stay."""
        url = f"http://127.0.0.1:{self.rx.port}/hook"
        self.start_alert([drift_rule(url)])

        def retrain(model="{data.model}", **job):
            return [{"type": "retrain", "model": model, "job": dict(JOB, **job)}]
        bad = [
            ({"dedupe": "{data.model"}, "rules[0].dedupe", "not closed"),
            ({"dedupe": "{data.{model}}"}, "rules[0].dedupe", "not closed"),
            ({"dedupe": "data.model}"}, "rules[0].dedupe", "closes no"),
            ({"dedupe": "{}"}, "rules[0].dedupe", "dotted path"),
            ({"dedupe": "{data..model}"}, "rules[0].dedupe", "empty path segment"),
            ({"dedupe": "{" + "p" * 300 + "}"}, "rules[0].dedupe", "dotted path"),
            ({"actions": retrain(model="{data.model")}, "rules[0].actions[0].model", "not closed"),
            ({"actions": retrain(model="a b")}, "rules[0].actions[0].model", "model"),
            ({"actions": retrain(kind="torch")}, "rules[0].actions[0].job.kind", "torch"),
            ({"actions": retrain(kind="")}, "rules[0].actions[0].job.kind"),
            ({"actions": retrain(dataset_version=-1)}, "rules[0].actions[0].job.dataset_version"),
            ({"actions": retrain(dataset_version=0)}, "rules[0].actions[0].job.dataset_version"),
            ({"actions": retrain(dataset_version=1.5)}, "rules[0].actions[0].job.dataset_version"),
            ({"actions": retrain(dataset_version="3")}, "rules[0].actions[0].job.dataset_version"),
            ({"actions": retrain(dataset="../etc")}, "rules[0].actions[0].job.dataset"),
            ({"actions": retrain(promote_policy="always")}, "rules[0].actions[0].job.promote_policy"),
        ]
        for over, *needles in bad:
            body = {"rules": [drift_rule(url, name="bad-one", **over)]}
            with self.subTest(over=over):
                self.assertError(self.al.request("PUT", "/v1/rules", body), 400, "invalid_argument",
                                 "rule bad-one", *needles)
        st, _, shown = self.al.request("GET", "/v1/rules")
        self.assertEqual((st, [r["name"] for r in shown["rules"]]), (200, ["drift"]))
        # the same validator at reload: refused, named in the log, the rules stay
        with open(self.rules_path, "w") as f:
            json.dump({"rules": [drift_rule(url, name="bad-two", actions=retrain(kind="torch"))]}, f)
        self.al.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "rules not reloaded" in self.al.log())
        self.assertIn("rule bad-two", self.al.log())
        self.assertIn("rules[0].actions[0].job.kind", self.al.log())
        self.assertEqual([r["name"] for r in self.al.request("GET", "/v1/rules")[2]["rules"]], ["drift"])
        # valid templates, kinds and versions still pass
        good = drift_rule(url, name="good", dedupe="{data.model}/{data.window.rows}-x",
                          actions=retrain(kind="xgboost", dataset_version=7) + retrain(model="fixed-name"))
        st, _, body = self.al.request("PUT", "/v1/rules", {"rules": [good]})
        self.assertEqual((st, body["count"]), (200, 1), body)

    # ---- secrets are write-only ------------------------------------------------------------

    def call(self, seen, method, path, body=None):
        """A request whose answer text is kept in seen; returns (status, parsed JSON or text)."""
        st, _, raw = self.al.request(method, path, body, raw=True)
        text = raw.decode(errors="replace")
        seen.append(f"{method} {path} -> {st}: {text}")
        try:
            return st, json.loads(text)
        except ValueError:
            return st, text

    def test_secrets_never_shown_nor_logged(self):
        port = self.rx.port
        hook = f"http://hookuser:hookpass@127.0.0.1:{port}/hook?token=tok123&x=1"
        scrape = f"http://scrapeuser:scrapepw@127.0.0.1:{port}/metrics"
        leaks = (SECRET, "hookpass", "tok123", "scrapepw")
        self.rx.metrics = 'quern_drift_score{model="retail"} 0.5\n'
        metric_rule = {"name": "score", "on": {"metric": {"url": scrape, "name": "quern_drift_score", "op": ">",
                                                          "value": 0.2}},
                       "actions": [{"type": "webhook", "url": hook, "secret": SECRET, "retries": 0}]}
        self.start_alert([drift_rule(hook), metric_rule], "--log-level", "debug")
        seen = []
        st, rules = self.call(seen, "GET", "/v1/rules")
        self.assertEqual(st, 200)
        shown_hook = f"http://hookuser:***@127.0.0.1:{port}/hook?token=***&x=1"
        self.assertEqual(rules["rules"][0]["actions"][1], {"type": "webhook", "url": shown_hook, "secret": "(set)",
                                                             "retries": 2})
        self.assertEqual(rules["rules"][1]["on"]["metric"]["url"], f"http://scrapeuser:***@127.0.0.1:{port}/metrics")
        # the real values are what is used: credentials, token and signature reach the receiver
        events.publish(self.bus, [drift("retail")])
        wait_for(lambda: len([p for p in self.rx.posts if json.loads(p[1])["alert"]["rule"] == "drift"]) == 1)
        hdrs, body = [p for p in self.rx.posts if json.loads(p[1])["alert"]["rule"] == "drift"][0]
        self.assertEqual(hdrs["authorization"], "Basic " + base64.b64encode(b"hookuser:hookpass").decode())
        self.assertEqual(hdrs["x-quern-signature"],
                         "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest())
        wait_for(lambda: any(h.get("authorization") == "Basic " + base64.b64encode(b"scrapeuser:scrapepw").decode()
                             for h, _ in self.rx.gets))
        wait_for(lambda: len(self.rx.posts) == 2)  # the metric rule's webhook too
        alerts = wait_for(lambda: (lambda l: l if len(l) == 2 and all(
            x["status"] in ("delivered", "failed") for a in l for x in a["actions"] if x["type"] == "webhook") else None)(
            self.call(seen, "GET", "/v1/alerts")[1]["alerts"]))
        for a in alerts:
            st, one = self.call(seen, "GET", f"/v1/alerts/{a['id']}")
            hook_acts = [x for x in one["actions"] if x["type"] == "webhook"]
            self.assertEqual([x["detail"]["url"] for x in hook_acts], [shown_hook])
            self.assertEqual(hook_acts[0]["status"], "delivered", hook_acts)
            if a["rule"] == "score":
                self.assertEqual(one["evidence"]["url"], f"http://scrapeuser:***@127.0.0.1:{port}/metrics")
        # what GET /v1/rules shows can be given back: "(set)" and *** keep the values in force
        st, put = self.call(seen, "PUT", "/v1/rules", {"rules": rules["rules"]})
        self.assertEqual(st, 200, put)
        self.assertEqual(put["rules"][0]["actions"][1]["secret"], "(set)")
        with open(self.rules_path) as f:
            on_disk = json.load(f)["rules"]
        self.assertEqual((on_disk[0]["actions"][1]["secret"], on_disk[0]["actions"][1]["url"]), (SECRET, hook))
        self.assertEqual(on_disk[1]["on"]["metric"]["url"], scrape)
        events.publish(self.bus, [drift("other")])
        wait_for(lambda: any(json.loads(b)["alert"]["subject"] == "other" for _, b in self.rx.posts))
        hdrs, body = [p for p in self.rx.posts if json.loads(p[1])["alert"]["subject"] == "other"][0]
        self.assertEqual(hdrs["x-quern-signature"],
                         "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest())
        # "(set)" where no secret is in force, *** where no such URL is: refused, naming the field
        self.assertEqual(self.call(seen, "PUT", "/v1/rules", {"rules": [{"name": "new", "on": {"event": "quern.a"},
            "actions": [{"type": "webhook", "url": f"http://127.0.0.1:{port}/h", "secret": "(set)"}]}]})[0], 400)
        self.assertIn("rules[0].actions[0].secret", seen[-1])
        self.assertEqual(self.call(seen, "PUT", "/v1/rules", {"rules": [{"name": "drift", "on": {"event": "quern.a"},
            "actions": [{"type": "log"}, {"type": "webhook", "url": f"http://u:***@127.0.0.1:{port}/other"}]}]})[0], 400)
        self.assertIn("rules[0].actions[1].url", seen[-1])
        # a refused document holding the secret does not echo it
        self.assertEqual(self.call(seen, "PUT", "/v1/rules", {"rules": [{"name": "a", "on": {"event": "quern.a"},
            "severity": "loud", "actions": [{"type": "webhook", "url": hook, "secret": SECRET}]}]})[0], 400)
        # a rules file broken right at the secret: the reload is refused and the log does not quote it
        with open(self.rules_path, "w") as f:
            f.write('{"rules": ["%s" "%s"]}' % (SECRET, SECRET))
        self.al.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "rules not reloaded" in self.al.log())
        self.call(seen, "GET", "/v1/rules")
        self.call(seen, "GET", "/metrics")
        self.assertEqual(self.al.stop(), 0)
        log = self.al.log()
        self.assertIn("webhook delivered", log)  # the log is there, and says things
        for leak in leaks:
            self.assertNotIn(leak, log, f"{leak} in the log")
            for text in seen:
                self.assertNotIn(leak, text)

    # ---- outbound targets ------------------------------------------------------------------

    def test_webhook_targets_refused_unless_allowed(self):
        port = self.rx.port

        def rules(url):
            return {"rules": [{"name": "h", "on": {"event": "quern.dataset.ready"},
                               "actions": [{"type": "webhook", "url": url, "retries": 3}]}]}
        self.start_alert([], allow=None)
        for url, needle in ((f"http://127.0.0.1:{port}/hook", "127.0.0.1 is a loopback address"),
                            ("http://169.254.169.254/latest/meta-data/", "link-local"),
                            ("http://[::ffff:169.254.169.254]/", "link-local"),
                            ("http://10.0.0.8:7702/v1/datasets/x/events", "private"),
                            ("http://[::1]:7702/", "loopback"),
                            ("http://2130706433/", "loopback"),
                            ("http://[fd00::1]/", "unique local")):
            self.assertError(self.al.request("PUT", "/v1/rules", rules(url)), 400, "invalid_argument",
                             "rules[0].actions[0].url", needle, "--webhook-allow")
        # a name resolving to loopback passes at load and is refused at send time, once, with the reason
        st, _, body = self.al.request("PUT", "/v1/rules", rules(f"http://localhost:{port}/hook"))
        self.assertEqual(st, 200, body)
        events.publish(self.bus, [events.envelope("quern.dataset.ready", {"dataset": "d", "version": 1})])
        a = wait_for(lambda: self.alerts())[0]
        act = wait_for(lambda: (lambda x: x if x["status"] == "failed" else None)(
            self.al.request("GET", f"/v1/alerts/{a['id']}")[2]["actions"][0]))
        self.assertEqual(act["attempts"], 1, act)
        for needle in ("localhost (resolving to", "loopback", "--webhook-allow"):
            self.assertIn(needle, act["last_error"])
        self.assertEqual(self.rx.posts, [])
        self.assertEqual(self.al.stop(), 0)
        # listing loopback lets loopback through, and nothing else
        self.start_alert([], allow="127.0.0.1, ::1")
        self.assertError(self.al.request("PUT", "/v1/rules", rules("http://169.254.169.254/")), 400,
                         "invalid_argument", "rules[0].actions[0].url", "169.254.169.254 is a link-local address")
        self.assertEqual(self.al.request("PUT", "/v1/rules", rules(f"http://127.0.0.1:{port}/hook"))[0], 200)
        self.assertEqual(self.al.request("PUT", "/v1/rules", rules(f"http://[::1]:{port}/hook"))[0], 200)
        self.assertEqual(self.al.stop(), 0)
        # a bad allow-list refuses to start, naming the flag and the entry
        for flag, value, needle in (("--webhook-allow", "10.0.0.1/8", b"10.0.0.0/8"),
                                    ("--scrape-allow", "http://x", b"give only its host")):
            p = subprocess.run([os.path.join(os.environ.get("QUERN_BIN", "build/bin"), "quern-alert"), flag, value,
                                "--listen", "127.0.0.1:0", "--data", os.path.join(self.home, "alert")],
                               capture_output=True, env=dict(os.environ, QUERN_HOME=self.home), timeout=30)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn(flag.encode(), p.stderr)
            self.assertIn(needle, p.stderr)

    def test_metric_rules_read_only_platform_metrics(self):
        port = self.rx.port

        def rules(url):
            return {"rules": [{"name": "m", "on": {"metric": {"url": url, "name": "quern_drift_score", "op": ">",
                                                              "value": 0.2}}, "actions": [{"type": "log"}]}]}
        self.start_alert([], allow=None)
        for url, needle in ((f"http://127.0.0.1:{port}/v1/datasets/x/events", "only the /metrics path"),
                            (f"http://127.0.0.1:{port}/metrics?name[]=x", "only the /metrics path"),
                            (f"http://127.0.0.1:{port}/metrics/../v1/models", "only the /metrics path"),
                            (f"http://127.0.0.1:{port}/", "only the /metrics path"),
                            ("http://10.1.2.3/metrics", "10.1.2.3 is not in --scrape-allow"),
                            ("http://169.254.169.254/metrics", "is not in --scrape-allow")):
            self.assertError(self.al.request("PUT", "/v1/rules", rules(url)), 400, "invalid_argument",
                             "rules[0].on.metric.url", needle)
        # the default ("platform") holds loopback, where the one-machine layout listens
        self.assertEqual(self.al.request("PUT", "/v1/rules", rules(f"http://127.0.0.1:{port}/metrics"))[0], 200)
        self.assertEqual(self.al.stop(), 0)
        # an explicit list replaces the default; with names only, another name is refused at load
        self.start_alert([], "--scrape-allow", "quern-monitor", allow=None)
        for url, needle in ((f"http://127.0.0.1:{port}/metrics", "127.0.0.1 is not in --scrape-allow"),
                            ("http://metrics.example.com/metrics", "metrics.example.com is not in --scrape-allow")):
            self.assertError(self.al.request("PUT", "/v1/rules", rules(url)), 400, "invalid_argument",
                             "rules[0].on.metric.url", needle)
        self.assertEqual(self.al.request("PUT", "/v1/rules", rules("http://quern-monitor:7707/metrics"))[0], 200)
        self.assertEqual(self.al.stop(), 0)
        # a name is checked after resolution: localhost is not in 10.0.0.0/8, so it is never scraped
        self.rx.gets.clear()
        self.rx.metrics = 'quern_drift_score{model="retail"} 0.5\n'
        local = dict(rules(f"http://localhost:{port}/metrics")["rules"][0], name="local")
        self.start_alert([local], "--scrape-allow", "10.0.0.0/8", allow=None)
        refused = wait_for(lambda: [json.loads(line) for line in self.al.log().splitlines()
                                    if '"rule":"local"' in line and "scrape failed" in line], timeout=10)
        self.assertIn("localhost (resolving to ", refused[0]["detail"])
        self.assertIn("is not in --scrape-allow", refused[0]["detail"])
        self.assertEqual(self.rx.gets, [])
        self.assertEqual(self.alerts(), [])


if __name__ == "__main__":
    unittest.main()
