"""quern-console as a black box: its proxy to the services and its built-in pages.

The proxy forwards /api/<service>/<path> (query kept) to the configured service
with the console's token; reads pass without a token, anything else needs the
console's own token (401 otherwise) and must not come from another origin
(403); unknown services and paths outside /api/<service>/ are 404; a '..' or
'.' segment, escaped or not, is 400; a body over --max-body is 413; the
service's answer (status, type, body) comes back as it was; a service that
does not answer is 503. The pages are served gzip with an ETag."""
import gzip
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import unittest

from harness import BIN, Service, ServiceTest

TOKEN = "console-test-token"


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def raw(port, method, path, headers=None, body=None):
    """A request with the path sent exactly as given (no normalisation)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


@unittest.skipUnless(os.path.exists(os.path.join(BIN, "quern-console")),
                     "quern-console is not built (uPlot missing: make deps)")
class ConsoleTest(ServiceTest):
    def setUp(self):
        super().setUp()
        self.reg = self.start("registry", env={"QUERN_TOKEN": TOKEN})
        dead = f"http://127.0.0.1:{closed_port()}"
        self.con = self.start("console", args=["--registry", f"http://127.0.0.1:{self.reg.port}", "--ingest", dead,
                                               "--max-body", "1K"], env={"QUERN_TOKEN": TOKEN})

    def auth(self, **extra):
        return dict({"Authorization": f"Bearer {TOKEN}"}, **extra)

    def test_get_passes_without_token_and_answers_as_the_service(self):
        for name in ("a", "b", "c"):
            st, _, _ = self.reg.request("POST", "/v1/models", {"name": name}, headers=self.auth())
            self.assertEqual(st, 201)
        st, h, body = self.con.request("GET", "/api/registry/v1/models?limit=2")
        self.assertEqual(st, 200, body)
        self.assertEqual(self.reg.request("GET", "/v1/models?limit=2")[2], body)
        self.assertEqual([m["name"] for m in body["models"]], ["a", "b"])
        self.assertIn("next_page_token", body)  # the query string went through
        self.assertTrue(h["content-type"].startswith("application/json"))
        # the service's own error, status and message kept
        self.assertError(self.con.request("GET", "/api/registry/v1/models/nope"), 404, "not_found", "nope")
        # text answers keep their type
        st, h, text = self.con.request("GET", "/api/registry/metrics", raw=True)
        self.assertEqual(st, 200)
        self.assertTrue(h["content-type"].startswith("text/plain"), h)
        self.assertIn(b'quern_build_info{service="registry"', text)
        self.assertEqual(self.con.request("HEAD", "/api/registry/v1/models")[0], 200)

    def test_mutations_need_the_console_token(self):
        body = {"name": "m1"}
        self.assertError(self.con.request("POST", "/api/registry/v1/models", body), 401, "unauthenticated")
        self.assertError(self.con.request("POST", "/api/registry/v1/models", body,
                                          headers={"Authorization": "Bearer wrong-token"}), 401, "unauthenticated")
        self.assertEqual(self.reg.request("GET", "/v1/models/m1")[0], 404)
        st, _, out = self.con.request("POST", "/api/registry/v1/models", body, headers=self.auth())
        self.assertEqual(st, 201, out)
        self.assertEqual(out["name"], "m1")
        self.assertEqual(self.reg.request("GET", "/v1/models/m1")[0], 200)
        # a conflict comes back as the registry said it
        self.assertError(self.con.request("POST", "/api/registry/v1/models", body, headers=self.auth()),
                         409, "already_exists")
        # from another origin, even with the token: refused
        self.assertError(self.con.request("POST", "/api/registry/v1/models", {"name": "m2"},
                                          headers=self.auth(Origin="http://evil.example")), 403,
                         "permission_denied", "Origin")
        for verb in ("PUT", "PATCH", "DELETE"):
            self.assertEqual(self.con.request(verb, "/api/registry/v1/models/m1")[0], 401, verb)
        # the run search is a read sent as a POST: it passes without the token
        # (and answers as the registry does: this one may not have runs yet)
        st, _, out = self.con.request("POST", "/api/registry/v1/runs/search", {"max_results": 5})
        self.assertNotEqual(st, 401, out)
        self.assertEqual(st, self.reg.request("POST", "/v1/runs/search", {"max_results": 5},
                                              headers=self.auth())[0])
        self.assertError(self.con.request("POST", "/api/train/v1/runs/search", {}), 404, "not_found", "registry")

    def test_unknown_services_and_paths_are_404(self):
        self.assertError(self.con.request("GET", "/api/nosuch/v1/models"), 404, "not_found", "nosuch")
        for p in ("/api/registry", "/api/registry/", "/api", "/apis/registry/v1/models", "/v1/models",
                  "/api//registry/v1/models"):
            self.assertEqual(raw(self.con.port, "GET", p)[0], 404, p)

    def test_dot_segments_and_absolute_urls_are_refused(self):
        for p in ("/api/registry/v1/../../etc/passwd", "/api/registry/..", "/api/registry/v1/%2e%2e/x",
                  "/api/registry/v1/%2E%2E/models", "/api/registry/./v1/models", "/api/registry/v1/models/%2e"):
            st, _, body = raw(self.con.port, "GET", p)
            self.assertEqual(st, 400, (p, body))
            self.assertIn(b"not allowed", body)
        st, _, _ = raw(self.con.port, "GET", "http://evil.example/api/registry/v1/models")
        self.assertIn(st, (400, 404))
        st, _, _ = raw(self.con.port, "GET", "/api/registry/v1/models/a%5cb")
        self.assertEqual(st, 400)

    def test_body_bound(self):
        big = json.dumps({"name": "x", "description": "d" * 2000}).encode()
        st, _, body = raw(self.con.port, "POST", "/api/registry/v1/models", body=big,
                          headers=self.auth(**{"Content-Type": "application/json"}))
        self.assertEqual(st, 413, body)
        self.assertEqual(self.reg.request("GET", "/v1/models/x")[0], 404)
        # a GET may carry no body at all
        st, _, _ = raw(self.con.port, "GET", "/api/registry/v1/models", body=b"{}",
                       headers={"Content-Type": "application/json"})
        self.assertEqual(st, 413)

    def test_a_service_that_does_not_answer_is_503(self):
        self.assertError(self.con.request("GET", "/api/ingest/v1/datasets"), 503, "unavailable", "quern-ingest")

    def test_pages_gzip_etag(self):
        st, h, body = raw(self.con.port, "GET", "/", headers={"Accept-Encoding": "gzip, br"})
        self.assertEqual(st, 200)
        self.assertEqual(h["content-encoding"], "gzip")
        self.assertTrue(h["content-type"].startswith("text/html"))
        self.assertEqual(h["cache-control"], "no-cache")
        page = gzip.decompress(body)
        self.assertIn(b"/assets/app.js", page)
        st, h2, plain = raw(self.con.port, "GET", "/")
        self.assertEqual((st, plain), (200, page))
        self.assertNotIn("content-encoding", h2)
        self.assertEqual(raw(self.con.port, "GET", "/", headers={"If-None-Match": h["etag"]})[0], 304)
        st, h, js = raw(self.con.port, "GET", "/assets/uPlot.iife.min.js", headers={"Accept-Encoding": "gzip"})
        self.assertEqual(st, 200)
        self.assertTrue(h["content-type"].startswith("text/javascript"))
        self.assertIn(b"uPlot", gzip.decompress(js))
        self.assertEqual(raw(self.con.port, "GET", "/assets/nope.js")[0], 404)
        total = 0
        for name in ("index.html", "style.css", "app.js", "ui.js", "overview.js", "model.js", "runs.js",
                     "dataset.js", "jobs.js", "monitor.js", "alerts.js", "uPlot.iife.min.js", "uPlot.min.css"):
            st, h, b = raw(self.con.port, "GET", "/" if name == "index.html" else f"/assets/{name}",
                           headers={"Accept-Encoding": "gzip"})
            self.assertEqual(st, 200, name)
            total += len(b)
        self.assertLess(total, 150 * 1024, "every asset together, gzip")

    def test_health(self):
        for p in ("/healthz", "/readyz"):
            self.assertEqual(self.con.request("GET", p)[0], 200)
        st, _, m = self.con.request("GET", "/metrics", raw=True)
        self.assertIn(b'quern_http_requests_total{service="console"', m)
        self.assertIn(b'process_start_time_seconds{service="console"}', m)
        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool, "promtool missing: run make deps")
        p = subprocess.run([promtool, "check", "metrics"], input=m, capture_output=True)
        self.assertEqual(p.returncode, 0, p.stdout.decode() + p.stderr.decode())


@unittest.skipUnless(os.path.exists(os.path.join(BIN, "quern-console")),
                     "quern-console is not built (uPlot missing: make deps)")
class OverviewBreakerTest(ServiceTest):
    """The overview's reads, many overviews at once, with one service down
    (ingest: nothing listens) and one up but not ready (serve, waiting for a
    model the registry does not have): each tile must keep saying what its
    service is, and only the down service's circuit may open. Before, the
    client counted serve's 503 "not ready" as a failure and retried it: two
    failed attempts per read, so whenever five came in a row (overviews in
    flight together, or readiness polled on its own) serve's circuit opened,
    its /metrics then failed fast and its tile said "down" without a version.
    A /metrics answer in between reset the count, which is why a single
    overview rarely showed it and this test checks the rule itself too: each
    readiness read reaches serve once, and eight in a row leave it closed."""

    ROUNDS = 12

    def test_overview_reads_open_only_the_down_services_circuit(self):
        reg = self.start("registry")
        regurl = f"http://127.0.0.1:{reg.port}"
        serve = Service("serve", args=["--registry", regurl, "--models", "ghost", "--grpc-listen", "off"])
        serve.ready = lambda: serve.request("GET", "/healthz")[0] == 200  # it never turns ready
        serve.start()
        self.services.append(serve)
        self.assertEqual(serve.request("GET", "/readyz")[0], 503)
        dead = f"http://127.0.0.1:{closed_port()}"
        con = self.start("console", args=["--registry", regurl, "--serve", f"http://127.0.0.1:{serve.port}",
                                          "--ingest", dead, "--prep", dead, "--train", dead, "--monitor", dead,
                                          "--alert", dead])
        # what overview.js asks for, per load
        paths = [f"/api/{s}/{p}" for s in ("registry", "serve", "ingest") for p in ("readyz", "metrics")]
        paths += ["/api/registry/v1/models?limit=1000", "/api/registry/v1/events?limit=1000"]
        got = {p: [] for p in paths}
        lock = threading.Lock()

        def read(p):
            st, _, body = con.request("GET", p, raw=True)
            with lock:
                got[p].append((st, body))

        # ROUNDS overviews loaded at once (reloads, several tabs): every read in flight together
        threads = [threading.Thread(target=read, args=(p,)) for _ in range(self.ROUNDS) for p in paths]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for p in paths:
            self.assertEqual(len(got[p]), self.ROUNDS, p)
        for st, _ in got["/api/registry/readyz"] + got["/api/registry/metrics"] + got["/api/registry/v1/models?limit=1000"]:
            self.assertEqual(st, 200)
        for st, body in got["/api/serve/readyz"]:
            # the service's own answer every time, never "did not answer"
            self.assertEqual(st, 503)
            self.assertEqual(json.loads(body)["status"], "not_ready", body)
        for st, body in got["/api/serve/metrics"]:
            self.assertEqual(st, 200, body)
            self.assertIn(b'quern_build_info{service="serve"', body)
        for st, body in got["/api/ingest/readyz"] + got["/api/ingest/metrics"]:
            self.assertEqual(st, 503, body)
            self.assertIn(b"quern-ingest", body)
        st, _, m = con.request("GET", "/metrics", raw=True)
        states = dict(re.findall(rb'quern_circuit_state\{[^}]*upstream="(\w+)"[^}]*\} (\d+)', m))
        self.assertEqual(states.get(b"ingest"), b"1", m.decode()[-2000:])
        for up in (b"registry", b"serve"):
            self.assertEqual(states.get(up, b"0"), b"0", (up, m.decode()[-2000:]))
        # a readiness answer is not retried: serve saw each read once (and our own one)
        def readyz_seen():
            sm = serve.request("GET", "/metrics", raw=True)[2]
            n = re.search(rb'quern_http_requests_total\{[^}]*route="/readyz"[^}]*code="503"[^}]*\} (\d+)', sm)
            return int(n.group(1)) if n else 0
        self.assertEqual(readyz_seen(), self.ROUNDS + 1)
        # readiness polled on its own, many times in a row (a status page
        # refreshing): still an answer each time, and serve's other reads pass
        for _ in range(8):
            st, _, body = con.request("GET", "/api/serve/readyz")
            self.assertEqual((st, body.get("status")), (503, "not_ready"), body)
        st, _, body = con.request("GET", "/api/serve/metrics", raw=True)
        self.assertEqual(st, 200, body)
        st, _, m = con.request("GET", "/metrics", raw=True)
        self.assertIn(b'quern_circuit_state{service="console",upstream="serve"} 0', m)


if __name__ == "__main__":
    unittest.main()
