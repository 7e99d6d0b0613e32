"""test_sources_pg.py - pull sources of kind postgres against the private
server of tests/unit/core/run_store_pg.sh (QUERN_TEST_PG; skipped without
it): integer and timestamp cursors, types as JSON, chunks of `batch` rows
through a server-side cursor, the password never stored nor shown (only
where it is: password_file / password_env), and failures (refused
connection, bad SQL, unreadable password file) recorded on the run."""
import os
import socket
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ServiceTest, WORK, PG  # noqa: E402
from sources_common import put, run, read_all  # noqa: E402


def psql(sql):
    p = subprocess.run(["psql", PG, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql], capture_output=True, text=True,
                       timeout=120)
    if p.returncode != 0:
        raise RuntimeError(p.stderr)


@unittest.skipUnless(PG, "needs QUERN_TEST_PG (run through tests/unit/core/run_store_pg.sh)")
class PgSources(ServiceTest):
    def setUp(self):
        super().setUp()
        self.table = "src_" + os.urandom(4).hex()
        psql(f'CREATE TABLE {self.table} (id bigint PRIMARY KEY, ts timestamptz NOT NULL, "Customer ID" text, '
             f'amount numeric(10,2), ok boolean, note text)')
        self.dir = tempfile.mkdtemp(prefix="quern-pgsrc-", dir=WORK)
        self.pwfile = os.path.join(self.dir, "pw")
        with open(self.pwfile, "w") as f:
            f.write("not-used-with-trust\n")
        self.ing = self.start("ingest", env={"QUERN_SOURCE_PW": "also-not-used"},
                              args=["--source-paths", self.dir])

    def tearDown(self):
        super().tearDown()
        psql(f"DROP TABLE IF EXISTS {self.table}")

    def fill(self, lo, hi):
        psql(f"INSERT INTO {self.table} SELECT i, timestamptz '2024-01-01 00:00:00+00' + (i / 3) * interval '1 minute', "
             f"'c' || (i % 11), i * 0.25, i % 2 = 0, CASE WHEN i % 5 = 0 THEN NULL ELSE 'n' || i END "
             f"FROM generate_series({lo}, {hi}) AS i")

    def spec(self, **kw):
        s = {"kind": "postgres", "dataset": "orders", "url": PG, "password_file": self.pwfile,
             "query": f"SELECT * FROM {self.table}", "cursor": "id"}
        s.update(kw)
        return s

    def test_integer_cursor_types_and_chunks(self):
        self.fill(1, 5000)
        st, _, body = put(self.ing, "o", self.spec(batch=1000))
        self.assertEqual(st, 201, body)
        self.assertEqual(body["password_file"], self.pwfile)
        r = run(self.ing, "o")
        self.assertEqual((r["status"], r["rows"], r["chunks"]), ("succeeded", 5000, 5), r)
        rows, seqs = read_all(self.ing, "orders")
        self.assertEqual([x["id"] for x in rows], list(range(1, 5001)))
        self.assertEqual(seqs, list(range(1, 5001)))
        self.assertEqual(rows[3]["amount"], 1.0)
        self.assertIs(rows[3]["ok"], True)
        self.assertIsNone(rows[4]["note"])
        self.assertEqual(rows[0]["Customer ID"], "c1")
        self.fill(5001, 5100)
        self.assertEqual(run(self.ing, "o")["rows"], 100)
        st, _, src = self.ing.request("GET", "/v1/sources/o")
        self.assertEqual(src["cursor"], 5100)

    def test_timestamp_cursor_with_ties(self):
        self.fill(1, 300)  # three rows per minute
        put(self.ing, "t", self.spec(cursor="ts", batch=10, password_file=None, password_env="QUERN_SOURCE_PW"))
        r = run(self.ing, "t")
        self.assertEqual((r["status"], r["rows"]), ("succeeded", 300), r)
        # Later rows with later times (a row arriving with a time at or
        # before the cursor is not taken: the cursor must only grow).
        self.fill(303, 332)
        self.assertEqual(run(self.ing, "t")["rows"], 30)
        rows, _ = read_all(self.ing, "orders")
        self.assertEqual(sorted(x["id"] for x in rows), list(range(1, 301)) + list(range(303, 333)))
        st, _, src = self.ing.request("GET", "/v1/sources/t")
        self.assertTrue(src["cursor"].startswith("2024-01-01 01:50:00"), src["cursor"])

    def test_password_never_in_url_and_failures(self):
        bad = PG.replace("://quern@", "://quern:hunter2@")
        self.assertError(put(self.ing, "x", self.spec(url=bad)), 400, "invalid_argument", "password")
        self.assertError(put(self.ing, "x", self.spec(url=PG + "?password=hunter2")), 400, "invalid_argument",
                         "password")
        self.assertError(put(self.ing, "x", self.spec(password_env="QUERN_SOURCE_PW")), 400, "invalid_argument",
                         "not both")
        self.assertError(put(self.ing, "x", self.spec(password_file=None, password_env="QUERN_TOKEN")), 400,
                         "invalid_argument", "QUERN_SOURCE_")
        self.assertError(put(self.ing, "x", self.spec(password_file=None, password_env="lower")), 400,
                         "invalid_argument", "password_env")
        self.assertError(put(self.ing, "x", self.spec(url="mysql://h/db")), 400, "invalid_argument", "url")
        put(self.ing, "sql", self.spec(query=f"SELECT nosuchcol FROM {self.table}"))
        r = run(self.ing, "sql")
        self.assertEqual(r["status"], "failed")
        self.assertIn("nosuchcol", r["error"])
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        put(self.ing, "down", self.spec(url=f"postgres://quern@127.0.0.1:{port}/quern", connect_timeout=2))
        r = run(self.ing, "down")
        self.assertEqual(r["status"], "failed")
        self.assertIn("cannot connect", r["error"])
        put(self.ing, "nopw", self.spec(password_file=os.path.join(self.dir, "absent")))
        r = run(self.ing, "nopw")
        self.assertEqual(r["status"], "failed")
        self.assertIn("password_file", r["error"])
        put(self.ing, "noenv", self.spec(password_file=None, password_env="QUERN_SOURCE_NO_SUCH_VAR"))
        r = run(self.ing, "noenv")
        self.assertIn("QUERN_SOURCE_NO_SUCH_VAR", r["error"])


if __name__ == "__main__":
    unittest.main()
