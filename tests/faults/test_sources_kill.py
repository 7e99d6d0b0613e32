"""test_sources_kill.py - kill -9 of quern-ingest in the middle of a pull,
twice, then a restart and a run to the end: every source row is in the
dataset exactly once (sqlite, files, http; postgres in
test_sources_pg_kill.py). The cursor, the file digests and the http page
state are committed with the rows they cover."""
import json
import os
import sqlite3
import sys
import tempfile
import time
import unittest
from urllib.parse import urlparse, parse_qs

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faults import ServiceTest, WORK  # noqa: E402
from sources_kill import kill_mid_pull  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "service"))
from sources_common import Pages, json_body  # noqa: E402


class SourcesKill(ServiceTest):
    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix="quern-kill-", dir=WORK)

    def test_sqlite(self):
        total = 200000
        db = os.path.join(self.dir, "src.db")
        c = sqlite3.connect(db)
        c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, x REAL)")
        c.executemany("INSERT INTO t VALUES (?, ?, ?)", ((i, f"v{i}", i / 3) for i in range(1, total + 1)))
        c.commit()
        c.close()
        ing = self.start("ingest", args=["--source-paths", self.dir])
        kill_mid_pull(self, ing, "s", {"kind": "sqlite", "dataset": "d", "path": db, "query": "SELECT * FROM t",
                                       "cursor": "id", "batch": 500}, total)

    def test_files(self):
        drop = os.path.join(self.dir, "drop")
        os.mkdir(drop)
        total, per = 60000, 300
        for f in range(total // per):
            with open(os.path.join(drop, f"part-{f:04d}.csv"), "w") as out:
                out.write("id,v\n" + "".join(f"{i},v{i}\n" for i in range(f * per + 1, (f + 1) * per + 1)))
        ing = self.start("ingest", args=["--source-paths", self.dir])
        kill_mid_pull(self, ing, "f", {"kind": "files", "dataset": "d", "dir": drop}, total)

    def test_http(self):
        total, per = 60000, 200

        def handle(path, headers):
            q = parse_qs(urlparse(path).query)
            start = int(q.get("from", ["0"])[0])
            time.sleep(0.005)
            page = [{"id": i, "v": f"v{i}"} for i in range(start + 1, min(start + per, total) + 1)]
            nxt = f"/rows?from={start + per}" if start + per < total else None
            return 200, {"Content-Type": "application/json"}, json_body({"rows": page, "next": nxt})

        pages = Pages(handle)
        try:
            ing = self.start("ingest", args=["--source-allow", "127.0.0.1"])
            kill_mid_pull(self, ing, "h", {"kind": "http", "dataset": "d", "url": pages.url + "/rows",
                                           "rows_key": "rows", "paging": "next_link", "next_key": "next",
                                           "max_pages": 100000}, total)
        finally:
            pages.close()


if __name__ == "__main__":
    unittest.main()
