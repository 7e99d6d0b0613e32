"""test_sources_http.py - pull sources of kind http against a local server
the test starts: JSON arrays and rows under a key, NDJSON, CSV; paging by
next link (body key and Link header), cursor parameter and page numbers; the
append-only rule (a growing last page gives only its new rows); ETag and
If-Modified-Since (304: nothing taken); headers from a file; 500s retried
then recorded; a malformed page failing the run with nothing of it stored;
and the --source-allow list (loopback refused unless listed)."""
import json
import os
import sys
import tempfile
import unittest
from urllib.parse import urlparse, parse_qs

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ServiceTest, WORK  # noqa: E402
from sources_common import Pages, json_body, put, run, read_all  # noqa: E402

JSON = {"Content-Type": "application/json"}


class HttpSources(ServiceTest):
    def setUp(self):
        super().setUp()
        self.rows = [{"id": i, "name": f"n{i}"} for i in range(1, 26)]
        self.fail = 0
        self.pages = Pages(self.handle)
        self.dir = tempfile.mkdtemp(prefix="quern-http-", dir=WORK)
        self.ing = self.start("ingest", args=["--source-allow", "127.0.0.1", "--source-paths", self.dir])

    def tearDown(self):
        super().tearDown()
        self.pages.close()

    def handle(self, path, headers):
        u = urlparse(path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        if self.fail:
            self.fail -= 1
            return 500, {}, b"boom"
        if u.path == "/array":
            return 200, JSON, json_body(self.rows)
        if u.path == "/next":  # 10 rows a page, next link in the body
            start = int(q.get("from", 0))
            page = self.rows[start:start + 10]
            nxt = f"/next?from={start + 10}" if start + 10 < len(self.rows) else None
            return 200, JSON, json_body({"data": {"items": page}, "links": {"next": nxt}})
        if u.path == "/link":  # Link header paging, NDJSON
            start = int(q.get("from", 0))
            page = self.rows[start:start + 7]
            h = {"Content-Type": "application/x-ndjson"}
            if start + 7 < len(self.rows):
                h["Link"] = f'<{self.pages.url}/link?from={start + 7}>; rel="next", </link?from=0>; rel="first"'
            return 200, h, "".join(json.dumps(r) + "\n" for r in page).encode()
        if u.path == "/cursor":
            after = int(q.get("after", 0))
            page = [r for r in self.rows if r["id"] > after][:8]
            return 200, JSON, json_body({"rows": page, "next_cursor": page[-1]["id"] if page else None})
        if u.path == "/pages":  # CSV, page numbers from 1, 10 a page
            p, size = int(q.get("page", 1)), int(q.get("per_page", 10))
            page = self.rows[(p - 1) * size:p * size]
            text = "id,name\n" + "".join(f"{r['id']},{r['name']}\n" for r in page)
            return 200, {"Content-Type": "text/csv"}, text.encode()
        if u.path == "/etag":
            tag = f'"v{len(self.rows)}"'
            if headers.get("If-None-Match") == tag:
                return 304, {"ETag": tag}, b""
            return 200, dict(JSON, ETag=tag, **{"Last-Modified": "Wed, 01 Jan 2025 00:00:00 GMT"}), json_body(self.rows)
        if u.path == "/auth":
            if headers.get("X-Api-Key") != "s3cret":
                return 401, JSON, b'{"error":"no key"}'
            return 200, JSON, json_body(self.rows[:3])
        if u.path == "/broken":
            return 200, JSON, b'[{"id": 1}, {"id": '
        return 404, {}, b""

    def spec(self, path, **kw):
        s = {"kind": "http", "dataset": "api", "url": self.pages.url + path}
        s.update(kw)
        return s

    def ids(self):
        rows, seqs = read_all(self.ing, "api")
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)))
        return [int(r["id"]) for r in rows]

    def test_array_and_append_only(self):
        put(self.ing, "a", self.spec("/array"))
        r = run(self.ing, "a")
        self.assertEqual((r["status"], r["rows"]), ("succeeded", 25), r)
        self.assertEqual(run(self.ing, "a")["rows"], 0)
        self.rows.append({"id": 26, "name": "n26"})
        self.assertEqual(run(self.ing, "a")["rows"], 1)
        self.assertEqual(self.ids(), list(range(1, 27)))
        st, _, src = self.ing.request("GET", "/v1/sources/a")
        self.assertEqual(src["state"]["taken"], 26)
        st, _, src = put(self.ing, "a", self.spec("/array", timeout_ms=5000))  # same url: the state stays
        self.assertEqual(src["state"]["taken"], 26)
        st, _, src = put(self.ing, "a", self.spec("/etag"))  # another url: its pages start over
        self.assertIsNone(src["state"])

    def test_next_link_in_body(self):
        put(self.ing, "n", self.spec("/next", rows_key="data.items", paging="next_link", next_key="links.next"))
        r = run(self.ing, "n")
        self.assertEqual((r["status"], r["rows"], r["chunks"]), ("succeeded", 25, 3), r)
        for i in range(26, 31):
            self.rows.append({"id": i, "name": "x"})
        self.assertEqual(run(self.ing, "n")["rows"], 5)
        self.assertEqual(self.ids(), list(range(1, 31)))

    def test_link_header_ndjson(self):
        put(self.ing, "l", self.spec("/link", format="ndjson", paging="next_link"))
        r = run(self.ing, "l")
        self.assertEqual((r["status"], r["rows"], r["chunks"]), ("succeeded", 25, 4), r)
        self.assertEqual(self.ids(), list(range(1, 26)))

    def test_cursor_param(self):
        put(self.ing, "c", self.spec("/cursor", rows_key="rows", paging="cursor", cursor_param="after",
                                     cursor_key="next_cursor"))
        r = run(self.ing, "c")
        self.assertEqual((r["status"], r["rows"]), ("succeeded", 25), r)
        self.rows.append({"id": 26, "name": "n"})
        self.assertEqual(run(self.ing, "c")["rows"], 1)
        self.assertEqual(self.ids(), list(range(1, 27)))

    def test_page_numbers_csv(self):
        put(self.ing, "p", self.spec("/pages", format="csv", paging="page", page_size=10,
                                     page_size_param="per_page"))
        r = run(self.ing, "p")
        self.assertEqual((r["status"], r["rows"]), ("succeeded", 25), r)
        for i in range(26, 33):  # fills page 3, starts page 4
            self.rows.append({"id": i, "name": "n"})
        self.assertEqual(run(self.ing, "p")["rows"], 7)
        self.assertEqual(self.ids(), list(range(1, 33)))

    def test_etag(self):
        put(self.ing, "e", self.spec("/etag"))
        self.assertEqual(run(self.ing, "e")["rows"], 25)
        n = len(self.pages.requests)
        self.assertEqual(run(self.ing, "e")["rows"], 0)
        path, hdrs = self.pages.requests[n]
        self.assertEqual(hdrs.get("If-None-Match"), '"v25"')
        self.assertEqual(hdrs.get("If-Modified-Since"), "Wed, 01 Jan 2025 00:00:00 GMT")
        self.rows.append({"id": 26, "name": "n"})
        self.assertEqual(run(self.ing, "e")["rows"], 1)

    def test_headers_file(self):
        hf = os.path.join(self.dir, "headers")
        with open(hf, "w") as f:
            f.write("# the API key\nX-Api-Key: s3cret\n")
        put(self.ing, "k", self.spec("/auth", headers_file=hf))
        self.assertEqual(run(self.ing, "k")["rows"], 3)
        st, _, src = self.ing.request("GET", "/v1/sources/k")
        self.assertNotIn("s3cret", json.dumps(src))
        self.assertError(put(self.ing, "k3", self.spec("/auth", headers_file="/etc/passwd")), 400,
                         "invalid_argument", "headers_file", "--source-paths")
        put(self.ing, "k2", self.spec("/auth"))
        r = run(self.ing, "k2")
        self.assertEqual(r["status"], "failed")
        self.assertIn("401", r["error"])

    def test_failures_recorded_nothing_lost(self):
        put(self.ing, "f", self.spec("/next", rows_key="data.items", paging="next_link", next_key="links.next"))
        self.fail = 100
        r = run(self.ing, "f")
        self.assertEqual(r["status"], "failed", r)
        self.assertIn("500", r["error"])
        self.fail = 0
        r = run(self.ing, "f")
        self.assertEqual((r["status"], r["rows"]), ("succeeded", 25), r)
        put(self.ing, "b", self.spec("/broken", dataset="broken"))
        r = run(self.ing, "b")
        self.assertEqual(r["status"], "failed")
        self.assertIn("not JSON", r["error"])
        self.assertEqual(read_all(self.ing, "broken")[0], [])
        put(self.ing, "r", self.spec("/array", rows_key="nope", dataset="broken"))
        self.assertError(put(self.ing, "r", self.spec("/array", format="csv", rows_key="x")), 400,
                         "invalid_argument", "rows_key")

    def test_allow_list(self):
        other = self.start("ingest")  # no --source-allow
        self.assertError(put(other, "x", self.spec("/array")), 400, "invalid_argument", "--source-allow")
        self.assertError(put(other, "x", self.spec("/array", url="http://user:pw@example.com/")), 400,
                         "invalid_argument", "credentials")
        # A name is judged by what it resolves to, at each connection.
        st, _, body = put(other, "byname", self.spec("/array", url=f"http://localhost:{self.pages.port}/array"))
        self.assertEqual(st, 201, body)
        n = len(self.pages.requests)
        r = run(other, "byname")
        self.assertEqual(r["status"], "failed", r)
        self.assertIn("--source-allow", r["error"])
        self.assertEqual(len(self.pages.requests), n)  # never connected
        self.assertError(put(self.ing, "x", self.spec("/array", paging="sideways")), 400, "invalid_argument",
                         "paging")
        self.assertError(put(self.ing, "x", self.spec("/array", paging="page")), 400, "invalid_argument",
                         "page_size")
        self.assertError(put(self.ing, "x", self.spec("/array", paging="cursor")), 400, "invalid_argument",
                         "cursor_param")


if __name__ == "__main__":
    unittest.main()
