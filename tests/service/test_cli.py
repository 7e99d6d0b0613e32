"""Black-box tests of the quern command: quern up/status/down as a supervisor
of real service processes, and the client commands with their exit codes."""
import http.client
import http.server
import json
import os
import random
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request

BIN = os.environ.get("QUERN_BIN", os.path.join(os.path.dirname(__file__), "../../build/bin"))
WORK = os.environ.get("QUERN_TEST_WORK", tempfile.gettempdir())


def free_base():
    """A port base whose 10 ports are all free on loopback."""
    for _ in range(200):
        base = random.randrange(20000, 60000, 10)
        ok = True
        for off in range(10):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", base + off))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            return base
    raise RuntimeError("no free port range")


class CliTest(unittest.TestCase):
    def setUp(self):
        self.home = tempfile.mkdtemp(prefix="quern-cli-", dir=WORK)
        self.env = dict(os.environ, QUERN_HOME=self.home, QUERN_PORT_BASE=str(free_base()))
        for k in ("QUERN_REGISTRY", "QUERN_INGEST", "QUERN_PREP", "QUERN_TRAIN", "QUERN_SERVE",
                  "QUERN_MONITOR", "QUERN_ALERT"):
            self.env.pop(k, None)

    def tearDown(self):
        self.quern("down")

    def quern(self, *args, stdin=None):
        p = subprocess.run([os.path.join(BIN, "quern"), *args], env=self.env, capture_output=True,
                           text=True, input=stdin, timeout=120)
        return p.returncode, p.stdout, p.stderr

    def api(self, service_offset, path):
        """GET a service's JSON API directly (what the CLI sent, seen from the other end)."""
        url = f"http://127.0.0.1:{int(self.env['QUERN_PORT_BASE']) + service_offset}{path}"
        with urllib.request.urlopen(url, timeout=60) as r:
            return json.loads(r.read())

    def up(self, services):
        rc, out, err = self.quern("up", "--detach", "--services", services)
        self.assertEqual(rc, 0, err)

    def status(self):
        rc, out, err = self.quern("--json", "status")
        return rc, {s["service"]: s for s in json.loads(out)}

    def test_up_status_restart_down(self):
        rc, out, err = self.quern("up", "--detach", "--services", "registry")
        self.assertEqual(rc, 0, err)
        self.assertIn("registry", out)
        rc, st = self.status()
        self.assertEqual(rc, 0)
        reg = st["registry"]
        self.assertTrue(reg["ready"])
        self.assertEqual(reg["port"], int(self.env["QUERN_PORT_BASE"]) + 1)
        self.assertRegex(reg["version"], r"^\d+\.\d+\.\d+$")
        self.assertTrue(os.path.exists(os.path.join(self.home, "logs", "registry.log")))

        rc, out, err = self.quern("up", "--detach")
        self.assertEqual(rc, 4, "a second up must refuse")
        self.assertIn("already", err)

        # A crashed service is restarted by the supervisor.
        os.kill(reg["pid"], signal.SIGKILL)
        deadline = time.time() + 15
        while time.time() < deadline:
            rc, st = self.status()
            if st["registry"]["ready"] and st["registry"]["pid"] != reg["pid"]:
                break
            time.sleep(0.2)
        self.assertNotEqual(st["registry"]["pid"], reg["pid"])
        self.assertTrue(st["registry"]["ready"])
        self.assertEqual(st["registry"]["restarts"], 1)

        restarted = st["registry"]["pid"]
        rc, out, err = self.quern("down")
        self.assertEqual(rc, 0, err)
        rc, st = self.status()
        self.assertEqual(rc, 1)
        self.assertFalse(st["registry"]["ready"])
        with self.assertRaises(ProcessLookupError):
            os.kill(restarted, 0)

    def test_up_without_models_list(self):
        """quern up with no QUERN_MODELS: serve follows every model's production
        alias, so every service (serve too) is ready at once, none restarting."""
        self.env.pop("QUERN_MODELS", None)
        t0 = time.time()
        rc, out, err = self.quern("up", "--detach")
        took = time.time() - t0
        self.assertEqual(rc, 0, err)
        self.assertLess(took, 45, "quern up --detach must not wait for serve's timeout")
        rc, st = self.status()
        self.assertEqual(rc, 0, st)
        self.assertIn("serve", st)
        for name, svc in st.items():
            self.assertTrue(svc["ready"], (name, svc))
        pid = st["serve"]["pid"]
        time.sleep(3)  # a crash-looping serve would have exited and restarted by now
        rc, st = self.status()
        self.assertTrue(st["serve"]["ready"], st["serve"])
        self.assertEqual(st["serve"]["pid"], pid)
        self.assertEqual(st["serve"]["restarts"], 0)
        # Ready with zero models: serve's own answer says so.
        body = self.api(5, "/v2/health/ready")
        self.assertEqual(body, {"ready": True, "models": {}})

    def test_models_commands_and_exit_codes(self):
        rc, out, err = self.quern("models", "list")
        self.assertEqual(rc, 1, "registry down is a failure")
        self.assertIn("quern up", err)
        self.assertEqual(self.quern("up", "--detach", "--services", "registry")[0], 0)

        model = os.path.join(self.home, "model.json")
        with open(model, "w") as f:
            json.dump({"learner": {"note": "a model file is opaque to the registry"}}, f)
        rc, out, err = self.quern("models", "import", "--name", "adult", "--kind", "xgboost", "--file", model,
                                  "--inputs", "age:FP64,workclass:BYTES", "--promote", "production")
        self.assertEqual(rc, 0, err)
        self.assertIn("version 1", out)
        rc, out, err = self.quern("--json", "models", "versions", "adult")
        versions = json.loads(out)
        self.assertEqual([v["version"] for v in versions], [1])
        self.assertEqual(versions[0]["manifest"]["inputs"][1], {"name": "workclass", "datatype": "BYTES",
                                                                "shape": [-1]})
        self.assertEqual(versions[0]["aliases"], ["production"])
        rc, out, err = self.quern("models", "list")
        self.assertEqual(rc, 0)
        self.assertRegex(out, r"adult\s+1\s+")
        # Piped output is a plain table (no escape codes).
        self.assertNotIn("\033", out)

        self.assertEqual(self.quern("models", "show", "ghost")[0], 3)
        rc, out, err = self.quern("models", "promote", "adult", "9")
        self.assertEqual(rc, 3)
        self.assertIn("version 9", err)
        self.assertEqual(self.quern("models", "import", "--name", "adult")[0], 2)
        self.assertEqual(self.quern("models", "bogus")[0], 2)
        self.assertEqual(self.quern("bogus")[0], 2)
        rc, out, err = self.quern("models", "import", "--name", "bad", "--kind", "xgboost", "--file", model,
                                  "--inputs", "age:FLOAT")
        self.assertEqual(rc, 2)
        self.assertIn("FLOAT", err)

        # show: key-value lines, JSON with --json (after the command too).
        rc, out, err = self.quern("models", "show", "adult")
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"(?m)^name\s+adult$")
        self.assertRegex(out, r"(?m)^aliases\s+production=1$")
        with self.assertRaises(ValueError):
            json.loads(out)
        rc, out, err = self.quern("models", "show", "adult", "--json")
        self.assertEqual((rc, json.loads(out)["name"]), (0, "adult"))

    def test_options_tables_help_and_usage_errors(self):
        # Global options anywhere on the line: `status --json` is JSON (nothing runs: exit 1).
        rc, out, err = self.quern("status", "--json")
        self.assertEqual(rc, 1)
        self.assertIn("registry", {s["service"] for s in json.loads(out)})
        # Help comes from the option table, as `quern help CMD` and `quern CMD --help`.
        for args in (("help", "ingest"), ("ingest", "--help"), ("ingest", "-h")):
            rc, out, err = self.quern(*args)
            self.assertEqual(rc, 0, args)
            self.assertIn("usage: quern ingest DATASET FILE", out)
            self.assertRegex(out, r"--batch N\s+rows per request at most \[default 5000\] \[1..100000\]")
            self.assertIn("--batch-bytes SIZE", out)
            self.assertIn("--format csv|ndjson", out)
        rc, out, err = self.quern("help", "models", "import")
        self.assertIn("--inputs INPUTS", out)
        self.assertIn("(required)", out)
        rc, out, err = self.quern("help", "models")
        self.assertEqual(rc, 0)
        self.assertIn("quern models promote NAME VERSION", out)
        self.assertRegex(self.quern("--version")[1], r"^quern \d+\.\d+\.\d+")
        # Usage errors: exit 2, what is wrong, the usage line; every line of stderr is whole.
        for args, needle in ((("ingest", "ds", "f", "--bogus"), "has no option --bogus"),
                             (("ingest", "ds"), "needs FILE"),
                             (("ingest", "ds", "f", "--batch", "0"), "--batch: 0 is out of range 1..100000"),
                             (("ingest", "ds", "f", "--batch", "ten"), "not a whole number"),
                             (("ingest", "ds", "f", "--format", "xml"), "not one of csv|ndjson"),
                             (("ingest", "ds", "f", "--batch-bytes", "1Q"), "not a size"),
                             (("ingest", "ds", "f", "extra"), "takes no argument \"extra\""),
                             (("models", "promote", "m", "0"), "VERSION: 0 is out of range"),
                             (("models", "import", "--name", "x"), "needs --kind"),
                             (("recommend", "m", "u", "--k"), "--k needs a value"),
                             (("up", "--detach=yes"), "takes no value"),
                             (("jobs", "bogus"), "no subcommand \"bogus\""),
                             (("bogus",), "unknown command")):
            rc, out, err = self.quern(*args)
            self.assertEqual(rc, 2, (args, err))
            self.assertIn(needle, err, args)
            self.assertTrue(err.startswith("quern: ") and err.endswith("\n"), (args, err))
            self.assertNotRegex(err, r"[^\n]quern: ", "a message ran into the previous one")

    def test_ingest_csv_dialect_options(self):
        """A Latin-1, ';'-separated export with -200 for missing: the delimiter is sniffed once
        and every batch is read the same way; names and text arrive as UTF-8, kept exactly."""
        self.up("ingest")
        path = os.path.join(self.home, "air.csv")
        with open(path, "wb") as f:
            f.write("Customer ID;CO(GT);Temp\u00e9rature;;\r\n".encode("latin-1"))
            for i in range(5):
                f.write(f"Z\u00fcrich {i};{i},5;-200;;\r\n".encode("latin-1"))
        rc, out, err = self.quern("--json", "ingest", "air", path, "--batch", "2", "--encoding", "latin-1",
                                  "--na", "-200")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["accepted"], 5)
        page = self.api(2, "/v1/datasets/air/events?limit=10")
        self.assertEqual([e["data"] for e in page["events"]],
                         [{"Customer ID": f"Z\u00fcrich {i}", "CO(GT)": f"{i},5", "Temp\u00e9rature": None}
                          for i in range(5)])
        # With the dialect stored in the dataset's schema, no options are needed.
        url = f"http://127.0.0.1:{int(self.env['QUERN_PORT_BASE']) + 2}/v1/datasets/air3/schema"
        req = urllib.request.Request(url, method="PUT", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"columns": [], "csv": {
                                         "delimiter": ";", "encoding": "latin-1", "na": ["-200"]}}).encode())
        with urllib.request.urlopen(req, timeout=60) as r:
            self.assertEqual(r.status, 200)
        rc, out, err = self.quern("--json", "ingest", "air3", path, "--batch", "2")
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.api(2, "/v1/datasets/air3/events?limit=10")["events"], page["events"])
        # Without --encoding the file is refused at its first bad byte, naming it.
        rc, out, err = self.quern("ingest", "air2", path)
        self.assertNotEqual(rc, 0)
        self.assertIn("line 1, byte offset 23", err)
        rc, out, err = self.quern("ingest", "air2", path, "--delimiter", ":")
        self.assertNotEqual(rc, 0)
        self.assertIn("--delimiter must be one of", err)

    def test_ingest_large_file_every_row_arrives(self):
        """A file far larger than one batch (60,000 rows of 2 KB, --batch 50000 = 100 MB a batch by
        rows): batches are cut by bytes too, and every row is at the other end exactly once."""
        self.up("ingest")
        path = os.path.join(self.home, "big.ndjson")
        pad = "x" * 2000
        with open(path, "w") as f:
            for i in range(60000):
                f.write(json.dumps({"i": i, "pad": pad}) + "\n")
        rc, out, err = self.quern("--json", "ingest", "big", path, "--batch", "50000")
        self.assertEqual(rc, 0, err)
        ans = json.loads(out)
        self.assertEqual((ans["accepted"], ans["rejected"]), (60000, 0))
        self.assertGreaterEqual(ans["batches"], 7, "16 MiB a request: at least 7 requests for 120 MB")
        self.assertEqual(self.api(2, "/v1/datasets/big")["rows"], 60000)
        seen, after = [], 0
        while True:
            page = self.api(2, f"/v1/datasets/big/events?after={after}&limit=10000")
            seen += [e["data"]["i"] for e in page["events"]]
            if page["next_after"] == after or page["next_after"] >= page["last_seq"]:
                break
            after = page["next_after"]
        self.assertEqual(sorted(seen), list(range(60000)))
        os.unlink(path)

        # --batch-bytes cuts smaller requests; CSV keeps its header and whole quoted records.
        path = os.path.join(self.home, "quoted.csv")
        with open(path, "w") as f:
            f.write("i,note\n")
            for i in range(1000):
                f.write(f'{i},"line one\nline two {"y" * 100}"\n')
        rc, out, err = self.quern("--json", "ingest", "quoted", path, "--batch-bytes", "8K")
        self.assertEqual(rc, 0, err)
        ans = json.loads(out)
        self.assertEqual(ans["accepted"], 1000)
        self.assertGreaterEqual(ans["batches"], 1000 * 130 // 8192)
        ev = self.api(2, "/v1/datasets/quoted/events?after=999&limit=1")["events"][0]["data"]
        self.assertEqual(ev["i"], "999")
        self.assertTrue(ev["note"].startswith("line one\nline two"))

    def test_ingest_answer_lost_is_sent_again_once(self):
        """A connection cut after ingest stored a batch but before its answer came: `quern ingest`
        sends the batch again under the same Idempotency-Key, ingest answers from what it stored,
        and every row is in the dataset exactly once. A proxy between them drops every third
        POST's answer (it reads ingest's answer, then closes the client's connection)."""
        self.up("ingest")
        upstream = int(self.env["QUERN_PORT_BASE"]) + 2
        seen = []  # (Idempotency-Key, answer dropped)

        class Proxy(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                conn = http.client.HTTPConnection("127.0.0.1", upstream, timeout=60)
                hdrs = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request("POST", self.path, body=body, headers=hdrs)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                drop = len(seen) % 3 == 1
                seen.append((self.headers.get("Idempotency-Key"), drop))
                if drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "date", "server"):
                        self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = None

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        try:
            path = os.path.join(self.home, "lost.ndjson")
            with open(path, "w") as f:
                for i in range(1000):
                    f.write(json.dumps({"i": i}) + "\n")
            env = dict(self.env, QUERN_INGEST=f"http://127.0.0.1:{srv.server_address[1]}")
            p = subprocess.run([os.path.join(BIN, "quern"), "--json", "ingest", "lost", path, "--batch", "100"],
                               env=env, capture_output=True, text=True, timeout=120)
        finally:
            srv.shutdown()
            srv.server_close()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["accepted"], 1000)
        dropped = [k for k, d in seen if d]
        self.assertGreaterEqual(len(dropped), 3, seen)
        keys = [k for k, _ in seen]
        self.assertTrue(all(keys), f"a request went without an Idempotency-Key: {seen}")
        for k in dropped:  # each lost answer's request came again, under its key
            self.assertGreaterEqual(keys.count(k), 2, (k, seen))
        self.assertEqual(len(set(keys)), 10, "ten batches of 100 rows, one key each")
        self.assertEqual(self.api(2, "/v1/datasets/lost")["rows"], 1000)
        got = [e["data"]["i"] for e in self.api(2, "/v1/datasets/lost/events?after=0&limit=5000")["events"]]
        self.assertEqual(sorted(got), list(range(1000)))

    def test_ingest_failure_names_the_line(self):
        self.up("ingest")
        path = os.path.join(self.home, "bad.ndjson")
        with open(path, "w") as f:
            for i in range(1, 3001):
                f.write("{not json\n" if i == 2500 else json.dumps({"i": i}) + "\n")
        rc, out, err = self.quern("ingest", "bad", path, "--batch", "1000")
        self.assertEqual(rc, 2, err)
        self.assertIn("failed at line 2500", err)
        self.assertIn(f"line 2500 of {path}: invalid JSON", err)
        self.assertIn("2000 rows before line 2001 were acknowledged", err)
        for line in err.splitlines():
            self.assertTrue(line.startswith("quern: "), err)
        self.assertEqual(self.api(2, "/v1/datasets/bad")["rows"], 2000)
        # --skip-invalid: the valid rows stored, the invalid one named by its line of the file.
        rc, out, err = self.quern("ingest", "skipped", path, "--batch", "1000", "--skip-invalid")
        self.assertEqual(rc, 0, err)
        self.assertIn("2999 rows accepted, 1 rejected, in 3 batches", out)
        self.assertIn(f"line 2500 of {path}: invalid JSON", err)

        # A record larger than a request can be: named, nothing after it sent.
        with open(path, "w") as f:
            f.write(json.dumps({"i": 1}) + "\n" + json.dumps({"i": 2, "pad": "z" * 4000}) + "\n")
        rc, out, err = self.quern("ingest", "bad2", path, "--batch-bytes", "2K")
        self.assertEqual(rc, 2, err)
        self.assertIn("line 2: a record of more than 2048 bytes does not fit", err)
        self.assertIn("1 rows before it were acknowledged", err)
        self.assertEqual(self.api(2, "/v1/datasets/bad2")["rows"], 1)

        # Ingest gone: exit 1, the line, and what to do.
        self.assertEqual(self.quern("down")[0], 0)
        rc, out, err = self.quern("ingest", "bad", path)
        self.assertEqual(rc, 1, err)
        self.assertIn("failed at line 1", err)
        self.assertIn("quern up", err)

    def test_ingest_follows_a_smaller_body_limit(self):
        """An ingest with --max-body 64K under --batch-bytes 100K: its 413 names its limit, and the
        CLI sends the batch again in requests under it. (When ingest closes the connection before
        the 413 can be read, the CLI must say so and stop instead: never lose rows quietly.)"""
        self.env["QUERN_INGEST_MAX_BODY"] = "64K"
        self.up("ingest")
        path = os.path.join(self.home, "rows.csv")
        with open(path, "w") as f:
            f.write("i,note\n")
            for i in range(3000):
                f.write(f"{i},{'n' * 200}\n")
        rc, out, err = self.quern("--json", "ingest", "limited", path, "--batch-bytes", "100K")
        rows = self.api(2, "/v1/datasets/limited")["rows"] if rc == 0 or "acknowledged" in err else 0
        if rc == 0:
            self.assertIn("ingest accepts at most 65536 bytes per request", err)
            self.assertEqual((json.loads(out)["accepted"], rows), (3000, 3000))
            self.assertGreaterEqual(json.loads(out)["batches"], 3000 * 205 // 65536 + 1)
        else:
            self.assertEqual(rc, 1, err)
            self.assertIn("the connection broke while", err)
            acked = int(re.search(r"(\d+) rows before line \d+ were acknowledged", err).group(1))
            self.assertEqual(rows, acked)

    def test_names_of_the_maximum_length(self):
        """128 characters is the longest name the services take: every path the CLI builds
        from such names arrives whole."""
        self.up("registry,ingest")
        name, alias, ds = "m" * 127 + "1", "a" * 127 + "2", "d" * 127 + "3"
        model = os.path.join(self.home, "model.json")
        with open(model, "w") as f:
            json.dump({"learner": {}}, f)
        rc, out, err = self.quern("models", "import", "--name", name, "--kind", "xgboost", "--file", model,
                                  "--inputs", "x:FP64", "--promote", alias)
        self.assertEqual(rc, 0, err)
        rc, out, err = self.quern("--json", "models", "versions", name)
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)[0]["aliases"], [alias])
        rc, out, err = self.quern("models", "promote", name, "1", "--alias", alias[:-1] + "9")
        self.assertEqual(rc, 0, err)
        rc, out, err = self.quern("--json", "models", "show", name)
        self.assertEqual(json.loads(out)["aliases"], {alias: 1, alias[:-1] + "9": 1})
        rows = os.path.join(self.home, "rows.ndjson")
        with open(rows, "w") as f:
            f.write('{"a": 1}\n{"a": 2}\n')
        rc, out, err = self.quern("ingest", ds, rows)
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.api(2, f"/v1/datasets/{ds}")["rows"], 2)
        # One more character is the service's to refuse, whole (not cut to fit a buffer).
        rc, out, err = self.quern("models", "show", name + "x")
        self.assertEqual(rc, 2, err)

    def test_pipelines_run_prints_the_run_record(self):
        self.up("registry,ingest,prep")
        rows = os.path.join(self.home, "raw.csv")
        with open(rows, "w") as f:
            f.write("user,item,qty\n")
            for i in range(10):
                f.write(f"u{i},{'' if i % 3 == 0 else 'i' + str(i)},{i}\n")
        self.assertEqual(self.quern("ingest", "raw", rows)[0], 0)
        spec = os.path.join(self.home, "pipe.json")
        with open(spec, "w") as f:
            json.dump({"source": "raw", "output": "clean", "steps": [{"op": "drop_missing", "columns": ["item"]}]}, f)
        rc, out, err = self.quern("pipelines", "put", "p", spec)
        self.assertEqual(rc, 0, err)
        rc, out, err = self.quern("pipelines", "run", "p")
        self.assertEqual(rc, 0, err)
        runs = self.api(3, "/v1/pipelines/p/runs")["runs"]
        self.assertEqual((runs[0]["rows_in"], runs[0]["rows_out"]), (10, 6))
        self.assertIn("rows in 10, out 6", out)
        # Under --json the answer is the run's last record, as the API has it once the run ended
        # (the same input again: prep may skip it).
        rc, out, err = self.quern("--json", "pipelines", "run", "p")
        self.assertEqual(rc, 0, err)
        run = json.loads(out)
        self.assertIn(run["state"], ("succeeded", "skipped"))
        self.assertEqual(run, self.api(3, f"/v1/pipelines/p/runs/{run['run_id']}"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
