"""test_sources_sqlite.py - pull sources of kind sqlite, and what every kind
shares: the declaration API (400s naming the field), runs now and on the
interval, the run history, the incremental cursor (ties kept together), the
dataset's schema (reject and skip), bad SQL recorded on the run, metrics, and
a run cut short by a restart marked interrupted."""
import os
import sqlite3
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ServiceTest, WORK  # noqa: E402
from sources_common import put, run, read_all, last_run, metric  # noqa: E402


def make_db(path, rows):
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE IF NOT EXISTS sales (id INTEGER PRIMARY KEY, ts TEXT, \"Customer ID\" TEXT, price REAL)")
    c.executemany("INSERT INTO sales VALUES (?, ?, ?, ?)", rows)
    c.commit()
    c.close()


class SqliteSources(ServiceTest):
    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix="quern-src-", dir=WORK)
        self.db = os.path.join(self.dir, "shop.db")
        self.ing = self.start("ingest", args=["--source-paths", self.dir])

    def spec(self, **kw):
        s = {"kind": "sqlite", "dataset": "sales", "path": self.db, "query": "SELECT * FROM sales",
             "cursor": "id"}
        s.update(kw)
        return s

    def test_incremental_pull(self):
        make_db(self.db, [(i, f"2024-01-{1 + i % 28:02d}", f"c{i % 7}", i / 4) for i in range(1, 1001)])
        st, _, body = put(self.ing, "shop", self.spec(batch=300))
        self.assertEqual(st, 201, body)
        self.assertIsNone(body["cursor"])
        r = run(self.ing, "shop")
        self.assertEqual(r["status"], "succeeded", r)
        self.assertEqual(r["rows"], 1000)
        self.assertEqual(r["chunks"], 4)  # 300 + 300 + 300 + 100
        rows, seqs = read_all(self.ing, "sales")
        self.assertEqual([x["id"] for x in rows], list(range(1, 1001)))
        self.assertEqual(seqs, list(range(1, 1001)))
        self.assertEqual(rows[0]["Customer ID"], "c1")
        self.assertEqual(rows[3]["price"], 1.0)
        # Nothing new: nothing taken. New rows: only they.
        self.assertEqual(run(self.ing, "shop")["rows"], 0)
        make_db(self.db, [(i, "2024-02-01", "c9", 1.5) for i in range(1001, 1051)])
        self.assertEqual(run(self.ing, "shop")["rows"], 50)
        rows, seqs = read_all(self.ing, "sales")
        self.assertEqual([x["id"] for x in rows], list(range(1, 1051)))
        self.assertEqual(seqs, list(range(1, 1051)))
        st, _, src = self.ing.request("GET", "/v1/sources/shop")
        self.assertEqual(src["cursor"], 1050)
        self.assertEqual(src["last_run"]["rows"], 50)
        # Another query keeps the cursor; another cursor column forgets it.
        st, _, src = put(self.ing, "shop", self.spec(batch=300, query="SELECT * FROM sales WHERE price >= 0"))
        self.assertEqual((st, src["cursor"]), (200, 1050))
        self.assertEqual(run(self.ing, "shop")["rows"], 0)
        st, _, src = put(self.ing, "shop", self.spec(batch=300, cursor="ts"))
        self.assertIsNone(src["cursor"])
        put(self.ing, "shop", self.spec(batch=300))
        self.assertEqual(metric(self.ing, "quern_source_rows_total", source="shop"), 1050)
        self.assertEqual(metric(self.ing, "quern_source_runs_total", source="shop", result="succeeded"), 4)
        # The outbox carries quern.events.ingested for the pulled rows, as for pushes.
        st, _, ob = self.ing.request("GET", "/v1/outbox?limit=100")
        self.assertEqual(st, 200, ob)
        evs = [e["event"] for e in ob["events"] if e["event"]["type"] == "quern.events.ingested"]
        self.assertTrue(evs, ob)
        self.assertEqual(sum(e["data"]["rows"] for e in evs), 1050)

    def test_ties_on_the_cursor_stay_together(self):
        # 10 rows share each timestamp; chunks of 4 must not split a tie, or
        # "ts > last" would skip the rest of it.
        make_db(self.db, [(i, f"2024-03-{1 + (i - 1) // 10:02d}T00:00:00", "c", 1.0) for i in range(1, 51)])
        put(self.ing, "t", self.spec(cursor="ts", batch=4))
        r = run(self.ing, "t")
        self.assertEqual((r["status"], r["rows"]), ("succeeded", 50), r)
        self.assertEqual(r["chunks"], 5)
        make_db(self.db, [(i, "2024-03-06T00:00:00", "c", 1.0) for i in range(51, 56)])
        self.assertEqual(run(self.ing, "t")["rows"], 5)
        rows, _ = read_all(self.ing, "sales")
        self.assertEqual(sorted(x["id"] for x in rows), list(range(1, 56)))

    def test_schema_reject_and_skip(self):
        make_db(self.db, [(1, "2024-01-01", "a", 1.0), (2, "2024-01-02", "b", None), (3, "2024-01-03", "c", 3.0)])
        st, _, _ = self.ing.request("PUT", "/v1/datasets/sales/schema",
                                    {"columns": [{"name": "price", "type": "numeric", "required": True}]})
        self.assertEqual(st, 200)
        put(self.ing, "s", self.spec())
        r = run(self.ing, "s")
        self.assertEqual(r["status"], "failed", r)
        self.assertIn("row 2", r["error"])
        self.assertIn("on_error", r["error"])
        self.assertEqual(r["errors"][0]["row"], 2)
        self.assertEqual(read_all(self.ing, "sales")[0], [])
        st, _, src = self.ing.request("GET", "/v1/sources/s")
        self.assertIsNone(src["cursor"])  # nothing acknowledged
        put(self.ing, "s", self.spec(on_error="skip"))
        r = run(self.ing, "s")
        self.assertEqual((r["status"], r["rows"], r["rejected"]), ("succeeded", 2, 1), r)
        self.assertEqual(r["errors"][0]["row"], 2)
        self.assertEqual([x["id"] for x in read_all(self.ing, "sales")[0]], [1, 3])

    def test_bad_sql_and_missing_file_are_recorded(self):
        make_db(self.db, [(1, "x", "a", 1.0)])
        put(self.ing, "bad", self.spec(query="SELECT * FROM nosuch"))
        r = run(self.ing, "bad")
        self.assertEqual(r["status"], "failed")
        self.assertIn("nosuch", r["error"])
        put(self.ing, "nocur", self.spec(cursor="updated"))
        r = run(self.ing, "nocur")
        self.assertEqual(r["status"], "failed")
        self.assertIn("updated", r["error"])
        put(self.ing, "gone", self.spec(path=os.path.join(self.dir, "nope.db")))
        r = run(self.ing, "gone")
        self.assertEqual(r["status"], "failed")
        self.assertIn("nope.db", r["error"])
        self.assertFalse(os.path.exists(os.path.join(self.dir, "nope.db")))  # read-only open creates nothing
        self.assertEqual(metric(self.ing, "quern_source_runs_total", source="bad", result="failed"), 1)
        st, _, h = self.ing.request("GET", "/v1/sources/bad/runs")
        self.assertEqual(len(h["runs"]), 1)
        self.assertIsNotNone(h["runs"][0]["finished_at"])
        self.assertGreaterEqual(h["runs"][0]["duration_ms"], 0)

    def test_bad_declarations_name_the_field(self):
        cases = [
            ({"dataset": "d"}, "kind"),
            ({"kind": "oracle", "dataset": "d"}, "kind"),
            (self.spec(dataset="bad name!"), "dataset"),
            (self.spec(path="rel.db"), "path"),
            (self.spec(query=""), "query"),
            (self.spec(query="SELECT 1; DROP TABLE x"), "query"),
            (self.spec(cursor=None), "cursor"),
            (self.spec(interval="soon"), "interval"),
            (self.spec(interval="10ms"), "interval"),
            (self.spec(on_error="maybe"), "on_error"),
            (self.spec(batch=0), "batch"),
            (self.spec(extra=1), "extra"),
        ]
        for spec, field in cases:
            spec = {k: v for k, v in spec.items() if v is not None}
            self.assertError(put(self.ing, "x", spec), 400, "invalid_argument", field)
        self.assertError(put(self.ing, "bad%20name", self.spec()), 400, "invalid_argument")
        # Files outside --source-paths, or reached through a link out of it.
        self.assertError(put(self.ing, "x", self.spec(path="/etc/passwd")), 400, "invalid_argument", "path",
                         "--source-paths")
        self.assertError(put(self.ing, "x", self.spec(path=self.dir + "/../x.db")), 400, "invalid_argument", "path")
        outside = tempfile.mkdtemp(prefix="quern-out-", dir=WORK)
        make_db(os.path.join(outside, "o.db"), [(1, "x", "a", 1.0)])
        os.symlink(os.path.join(outside, "o.db"), os.path.join(self.dir, "link.db"))
        self.assertError(put(self.ing, "x", self.spec(path=os.path.join(self.dir, "link.db"))), 400,
                         "invalid_argument", "--source-paths")
        self.assertError(self.ing.request("GET", "/v1/sources/none"), 404, "not_found", "none")
        self.assertError(self.ing.request("POST", "/v1/sources/none/runs"), 404, "not_found")
        self.assertError(self.ing.request("DELETE", "/v1/sources/none"), 404, "not_found")

    def test_list_delete_and_interval(self):
        make_db(self.db, [(1, "x", "a", 1.0)])
        put(self.ing, "a", self.spec())
        put(self.ing, "b", self.spec(interval="1s", dataset="sales_b"))
        st, _, body = self.ing.request("GET", "/v1/sources")
        self.assertEqual([s["name"] for s in body["sources"]], ["a", "b"])
        # b runs by itself on its interval; a (no interval) never does.
        deadline = time.time() + 20
        while time.time() < deadline and not read_all(self.ing, "sales_b")[0]:
            time.sleep(0.2)
        self.assertEqual(len(read_all(self.ing, "sales_b")[0]), 1)
        self.assertEqual(last_run(self.ing, "b")["cause"], "schedule")
        self.assertIsNone(last_run(self.ing, "a"))
        st, _, _ = self.ing.request("DELETE", "/v1/sources/b")
        self.assertEqual(st, 200)
        st, _, body = self.ing.request("GET", "/v1/sources")
        self.assertEqual([s["name"] for s in body["sources"]], ["a"])

    def test_backoff_after_failures(self):
        put(self.ing, "f", self.spec(path=os.path.join(self.dir, "absent.db"), interval="1s"))
        time.sleep(8)
        st, _, h = self.ing.request("GET", "/v1/sources/f/runs?limit=100")
        n = len(h["runs"])
        # 1 s interval doubled after each failure: runs at ~0, 2, 6 s (not 8).
        self.assertGreaterEqual(n, 2, h)
        self.assertLessEqual(n, 4, h)
        self.assertTrue(all(r["status"] == "failed" for r in h["runs"]))
        st, _, src = self.ing.request("GET", "/v1/sources/f")
        self.assertGreaterEqual(src["failures"], 2)

    def test_changed_during_a_run(self):
        make_db(self.db, [(i, "x", "a", 1.0) for i in range(1, 30001)])
        put(self.ing, "c", self.spec(batch=100))
        st, _, r = self.ing.request("POST", "/v1/sources/c/runs")
        self.assertEqual(st, 202, r)
        deadline = time.time() + 30
        while time.time() < deadline and last_run(self.ing, "c")["rows"] == 0:
            time.sleep(0.01)
        st, _, body = self.ing.request("POST", "/v1/sources/c/runs")
        self.assertError((st, _, body), 409, "aborted", "running already")
        put(self.ing, "c", self.spec(batch=1000))  # same kind and dataset: the cursor is kept
        deadline = time.time() + 60
        while time.time() < deadline and last_run(self.ing, "c")["status"] == "running":
            time.sleep(0.05)
        r = last_run(self.ing, "c")
        self.assertEqual(r["status"], "failed", r)
        self.assertIn("changed", r["error"])
        self.assertEqual(run(self.ing, "c")["status"], "succeeded")
        rows, seqs = read_all(self.ing, "sales")
        self.assertEqual(sorted(x["id"] for x in rows), list(range(1, 30001)))
        self.assertEqual(seqs, list(range(1, 30001)))

    def test_prep_rows_trigger_fires_on_pulled_rows(self):
        # Pulled rows announce themselves as pushed ones do: prep's rows
        # trigger fires on them, unchanged.
        home = tempfile.mkdtemp(prefix="quern-src-home-", dir=WORK)
        env = {"QUERN_HOME": home}
        reg = self.start("registry", env=env)
        ing = self.start("ingest", env=env, args=["--source-paths", self.dir])
        prep = self.start("prep", env=env, args=["--registry", f"http://127.0.0.1:{reg.port}",
                                                 "--ingest", f"http://127.0.0.1:{ing.port}"])
        st, _, body = prep.request("PUT", "/v1/pipelines/sales", {
            "source": "sales", "output": "sales-clean", "steps": [], "trigger": {"kind": "rows", "every": 500}})
        self.assertEqual(st, 201, body)
        make_db(self.db, [(i, "2024-01-01", f"c{i}", 1.0) for i in range(1, 301)])
        put(ing, "shop", self.spec(batch=100))
        self.assertEqual(run(ing, "shop")["rows"], 300)
        time.sleep(1)
        self.assertEqual(prep.request("GET", "/v1/pipelines/sales/runs")[2]["runs"], [])
        make_db(self.db, [(i, "2024-01-02", f"c{i}", 2.0) for i in range(301, 601)])
        self.assertEqual(run(ing, "shop")["rows"], 300)
        deadline = time.time() + 60
        runs = []
        while time.time() < deadline:
            runs = prep.request("GET", "/v1/pipelines/sales/runs")[2]["runs"]
            if runs and runs[0]["state"] in ("succeeded", "failed"):
                break
            time.sleep(0.2)
        self.assertEqual(len(runs), 1, runs)
        self.assertEqual(runs[0]["trigger"], "rows")
        st, _, r = prep.request("GET", f"/v1/pipelines/sales/runs/{runs[0]['run_id']}")
        self.assertEqual(r["state"], "succeeded", r)
        self.assertEqual(r["rows_out"], 600)

    def test_restart_marks_interrupted_runs(self):
        make_db(self.db, [(i, "x", "a", 1.0) for i in range(1, 20001)])
        put(self.ing, "big", self.spec(batch=100))
        self.ing.request("POST", "/v1/sources/big/runs")
        deadline = time.time() + 30
        while time.time() < deadline and (last_run(self.ing, "big") or {}).get("rows", 0) == 0:
            time.sleep(0.01)
        self.ing.kill9()
        self.ing.start()
        r = last_run(self.ing, "big")
        if r["status"] == "failed":
            self.assertIn("interrupted", r["error"])
        r = run(self.ing, "big")
        self.assertEqual(r["status"], "succeeded", r)
        rows, seqs = read_all(self.ing, "sales")
        self.assertEqual(sorted(x["id"] for x in rows), list(range(1, 20001)))
        self.assertEqual(seqs, list(range(1, 20001)))


if __name__ == "__main__":
    unittest.main()
