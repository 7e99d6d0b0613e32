"""Black-box tests of quern-ingest: every route and content type over HTTP,
schema validation in both on_error modes, bounds, Idempotency-Key, paging,
feedback, events reaching the bus, kill -9 under load, SIGTERM, and /metrics
under promtool."""
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import unittest

from harness import ServiceTest, Service

NDJSON = {"Content-Type": "application/x-ndjson"}
CSV = {"Content-Type": "text/csv"}
JSON_CT = {"Content-Type": "application/json"}


def ndjson(rows):
    return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()


SCHEMA = {"columns": [{"name": "user", "type": "categorical", "required": True},
                      {"name": "price", "type": "numeric"},
                      {"name": "ok", "type": "boolean"},
                      {"name": "ts", "type": "timestamp"}],
          "additional_columns": False}


class IngestTest(ServiceTest):
    def setUp(self):
        super().setUp()
        self.svc = self.start("ingest")

    # -- helpers ------------------------------------------------------------

    def post(self, dataset, body, headers=None, query=""):
        if not isinstance(body, (bytes, bytearray)):
            body = json.dumps(body).encode()
            headers = dict(JSON_CT, **(headers or {}))
        return self.svc.request("POST", f"/v1/datasets/{dataset}/events{query}", body=body,
                                headers=headers)

    def events(self, dataset, after=0, limit=None):
        q = f"/v1/datasets/{dataset}/events?after={after}" + (f"&limit={limit}" if limit else "")
        st, _, body = self.svc.request("GET", q)
        self.assertEqual(st, 200, body)
        return body

    def all_events(self, dataset, limit=10000):
        out, after = [], 0
        while True:
            page = self.events(dataset, after, limit)
            out += page["events"]
            if not page["events"]:
                return out
            after = page["next_after"]

    def put_schema(self, dataset, schema=SCHEMA):
        st, _, body = self.svc.request("PUT", f"/v1/datasets/{dataset}/schema", schema)
        self.assertEqual(st, 200, body)
        return body

    # -- content types --------------------------------------------------------

    def test_json_forms_ndjson_and_csv_without_schema(self):
        st, _, a = self.post("raw", {"b": 2, "a": "x"})
        self.assertEqual(st, 201, a)
        self.assertEqual((a["dataset"], a["accepted"], a["rejected"], a["first_seq"], a["last_seq"]),
                         ("raw", 1, 0, 1, 1))
        self.assertEqual(a["errors"], [])
        st, _, a = self.post("raw", [{"n": 1}, {"n": 2.5, "nested": {"z": 1, "a": [True, None]}}])
        self.assertEqual((st, a["first_seq"], a["last_seq"]), (201, 2, 3), a)
        st, _, a = self.post("raw", {"events": [{"n": 3}]})
        self.assertEqual((st, a["first_seq"]), (201, 4), a)
        st, _, a = self.post("raw", b'{"n":4}\n\n{"n":5}\r\n', NDJSON)
        self.assertEqual((st, a["accepted"], a["last_seq"]), (201, 2, 6), a)
        st, _, a = self.post("raw", b'n,s\n7,"a, ""quoted""\nline"\n8,\n', CSV)
        self.assertEqual((st, a["accepted"]), (201, 2), a)
        data = [e["data"] for e in self.all_events("raw")]
        self.assertEqual([e["seq"] for e in self.events("raw")["events"]], list(range(1, 9)))
        self.assertEqual(data[0], {"a": "x", "b": 2})
        self.assertEqual(data[2], {"n": 2.5, "nested": {"a": [True, None], "z": 1}})
        self.assertEqual(data[3:6], [{"n": 3}, {"n": 4}, {"n": 5}])
        # CSV without a schema keeps every value as a string, quoting undone.
        self.assertEqual(data[6], {"n": "7", "s": 'a, "quoted"\nline'})
        self.assertEqual(data[7], {"n": "8", "s": ""})

    def test_canonical_storage(self):
        # Keys sorted, compact, numbers shortest: what GET returns is stable.
        self.post("c", b'{"z": 1.50, "a": 1e2, "m": "\\u00e9\\n"}', JSON_CT)
        st, _, raw = self.svc.request("GET", "/v1/datasets/c/events", raw=True)
        self.assertEqual(st, 200)
        self.assertIn(b'"data":{"a":100,"m":"\xc3\xa9\\n","z":1.5}', raw)

    def test_bad_content_type_and_bad_json(self):
        self.assertError(self.post("d", b'{"a":1}', {"Content-Type": "text/plain"}), 400,
                         "invalid_argument", "Content-Type")
        self.assertError(self.post("d", b'{"a":1', JSON_CT), 400, "invalid_argument", "not valid JSON")
        self.assertError(self.post("d", b'[{"a":1},{"a":2]', JSON_CT), 400, "invalid_argument", "row 2")
        self.assertError(self.post("d", b'[{"a":1}] trailing', JSON_CT), 400, "invalid_argument")
        self.assertError(self.post("d", b'[]', JSON_CT), 400, "invalid_argument", "no rows")
        self.assertError(self.post("d", b'', NDJSON), 400, "invalid_argument")
        self.assertError(self.post("bad%20name!", {"a": 1}), 400, "invalid_argument", "dataset")
        self.assertError(self.post("d", {"a": 1}, query="?on_error=maybe"), 400, "invalid_argument",
                         "on_error")
        # Bad NDJSON lines are row errors (the other lines still parse).
        st, _, a = self.post("d", b'{"a":1}\nnot json\n[1]\n{"bad\\u0001key":1}\n', NDJSON, "?on_error=skip")
        self.assertEqual((st, a["accepted"], a["rejected"]), (201, 1, 3), a)
        self.assertEqual([e["row"] for e in a["errors"]], [2, 3, 4])
        self.assertIn("invalid JSON", a["errors"][0]["reason"])
        self.assertIn("object", a["errors"][1]["reason"])
        self.assertIn("column", a["errors"][2]["reason"])
        # Nothing of a refused body is stored.
        self.assertEqual(self.events("d")["last_seq"], 1)

    # -- schemas --------------------------------------------------------------

    def test_schema_put_get_and_bad_schemas(self):
        self.assertError(self.svc.request("GET", "/v1/datasets/s/schema"), 404, "not_found")
        got = self.put_schema("s")
        self.assertEqual(got["dataset"], "s")
        self.assertEqual(got["schema"]["columns"][0],
                         {"name": "user", "type": "categorical", "required": True})
        self.assertEqual(got["schema"]["columns"][1]["required"], False)
        st, _, body = self.svc.request("GET", "/v1/datasets/s/schema")
        self.assertEqual((st, body["schema"]), (200, got["schema"]))
        for bad, needle in [({"columns": [{"name": "a", "type": "text"}]}, "type"),
                            ({"columns": [{"name": "a\tb", "type": "numeric"}]}, "control character"),
                            ({"columns": [{"name": "a", "type": "numeric"}] * 2}, "twice"),
                            ({"columns": [], "extra": 1}, "extra"),
                            ({"columns": [{"name": f"c{i}", "type": "numeric"} for i in range(257)]}, "256"),
                            ({"columns": "x"}, "array")]:
            self.assertError(self.svc.request("PUT", "/v1/datasets/s/schema", bad), 400,
                             "invalid_argument", needle)
        st, _, d = self.svc.request("GET", "/v1/datasets/s")
        self.assertEqual((st, d["name"], d["rows"], d["schema"]["additional_columns"]), (200, "s", 0, False))
        st, _, lst = self.svc.request("GET", "/v1/datasets")
        self.assertEqual(lst["datasets"], [{"name": "s", "rows": 0, "last_seq": 0, "has_schema": True}])
        self.assertError(self.svc.request("GET", "/v1/datasets/nope"), 404, "not_found", "nope")
        self.assertError(self.svc.request("GET", "/v1/datasets/nope/events"), 404, "not_found")

    def test_schema_validation_reject_and_skip(self):
        self.put_schema("s")
        rows = [{"user": "a", "price": "2.50", "ok": "yes", "ts": "2024-01-02T03:04:05Z"},  # 1 ok
                {"user": "b", "price": "cheap"},                                            # 2 type
                {"price": 3},                                                               # 3 required
                {"user": "c", "colour": "red"},                                             # 4 unknown
                {"user": "d", "ok": 2},                                                     # 5 type
                {"user": "e", "ts": "yesterday"},                                           # 6 timestamp
                {"user": 7, "price": 1, "ok": False, "ts": 1700000000}]                     # 7 ok
        err = self.assertError(self.post("s", ndjson(rows), NDJSON), 400, "invalid_argument",
                               "5 of 7 rows are invalid", "on_error=skip")
        errs = err["details"]["errors"]
        self.assertEqual([e["row"] for e in errs], [2, 3, 4, 5, 6])
        self.assertIn('column price: "cheap" is not a number', errs[0]["reason"])
        self.assertIn("column user is required", errs[1]["reason"])
        self.assertIn("colour is not in the schema", errs[2]["reason"])
        self.assertIn("column ok", errs[3]["reason"])
        self.assertIn("not a timestamp", errs[4]["reason"])
        self.assertEqual(self.svc.request("GET", "/v1/datasets/s")[2]["rows"], 0)
        st, _, a = self.post("s", ndjson(rows), NDJSON, "?on_error=skip")
        self.assertEqual((st, a["accepted"], a["rejected"], a["first_seq"], a["last_seq"]), (201, 2, 5, 1, 2))
        self.assertEqual([e["row"] for e in a["errors"]], [2, 3, 4, 5, 6])
        data = [e["data"] for e in self.all_events("s")]
        # Typed: numeric strings become numbers, "yes" true, a number in a
        # categorical column a string; timestamps are kept as given.
        self.assertEqual(data[0], {"user": "a", "price": 2.5, "ok": True, "ts": "2024-01-02T03:04:05Z"})
        self.assertEqual(data[1], {"user": "7", "price": 1, "ok": False, "ts": 1700000000})

    def test_nesting_past_the_limit_is_refused_never_nulled(self):
        # A row may nest 64 levels (the row object is one); one more is a 400
        # naming the row, its line and the limit, and nothing is stored (it
        # used to be stored with the deep value replaced by null).
        def nest(levels):
            v = 1
            for _ in range(levels):
                v = [v]
            return v
        ok = {"id": 1, "v": nest(63)}           # 1 + 63 = 64 levels
        deep = {"id": 2, "v": nest(64)}         # 65 levels
        body = ndjson([ok]) + b"\n" + ndjson([deep])
        err = self.assertError(self.post("deep", body, NDJSON), 400, "invalid_argument",
                               "row 2", "column v", "deeper than 64 levels")
        self.assertEqual(err["details"]["errors"][0]["row"], 2)
        self.assertEqual(err["details"]["errors"][0]["line"], 3)
        st, _, d = self.svc.request("GET", "/v1/datasets/deep")
        self.assertIn(st, (200, 404), d)  # nothing stored: no dataset, or an empty one
        if st == 200:
            self.assertEqual(d["rows"], 0)
        # In a JSON array body too, and under on_error=skip the row is
        # reported as rejected (not stored altered).
        self.assertError(self.post("deep", [ok, deep]), 400, "invalid_argument", "row 2",
                         "deeper than 64 levels")
        st, _, a = self.post("deep", [ok, deep], query="?on_error=skip")
        self.assertEqual((st, a["accepted"], a["rejected"]), (201, 1, 1), a)
        data = [e["data"] for e in self.all_events("deep")]
        self.assertEqual(data, [ok])
        self.assertNotIn("null", json.dumps(data))

    def test_csv_with_schema(self):
        self.put_schema("s")
        body = b'user,price,ok\n"Smith, J",1e3,no\nx,abc,yes\n,2,true\n"unterminated,1,yes\n'
        err = self.assertError(self.post("s", body, CSV), 400, "invalid_argument")
        self.assertEqual([e["row"] for e in err["details"]["errors"]], [2, 3, 4])
        st, _, a = self.post("s", body, CSV, "?on_error=skip")
        self.assertEqual((st, a["accepted"], a["rejected"]), (201, 1, 3), a)
        self.assertEqual(a["errors"][0]["line"], 3)
        self.assertIn("price", a["errors"][0]["reason"])
        self.assertIn("required", a["errors"][1]["reason"])
        self.assertEqual(self.all_events("s")[0]["data"], {"user": "Smith, J", "price": 1000, "ok": False})
        # Header faults refuse the whole body.
        self.assertError(self.post("s", b"user,colour\na,b\n", CSV), 400, "invalid_argument", "colour")
        self.assertError(self.post("s", b"price\n1\n", CSV), 400, "invalid_argument", "required column user")
        self.assertError(self.post("s", b"user,user\na,b\n", CSV), 400, "invalid_argument", "twice")
        self.assertError(self.post("s", b"user\n", CSV), 400, "invalid_argument", "no rows")

    def test_csv_as_people_write_it(self):
        # A sensor export: ';' separators (sniffed), decimal commas, Latin-1,
        # names with spaces, parentheses and accents, -200 for missing,
        # trailing ';;' and CRLF.
        schema = {"columns": [{"name": "Customer ID", "type": "categorical", "required": True},
                              {"name": "CO(GT)", "type": "numeric"},
                              {"name": "Temp\u00e9rature", "type": "numeric"},
                              {"name": "Date", "type": "timestamp"}],
                  "additional_columns": False}
        self.put_schema("air", schema)
        body = ("Customer ID;CO(GT);Temp\u00e9rature;Date;;\r\n"
                "17850;2,6;13,5;2004-03-10;;\r\n"
                "Z\u00fcrich 1;-200;-1,25;2004-03-11;;\r\n"
                "12346;1000;-200;;;\r\n").encode("latin-1")
        # Not UTF-8 and no encoding given: refused whole at the first bad byte.
        self.assertError(self.post("air", body, CSV), 400, "invalid_argument", "line 1, byte offset 23")
        q = "?encoding=latin-1&decimal_comma=true&na=-200"
        st, _, a = self.post("air", body, CSV, q)
        self.assertEqual((st, a["accepted"], a["rejected"]), (201, 3, 0), a)
        self.assertEqual([e["data"] for e in self.all_events("air")], [
            {"Customer ID": "17850", "CO(GT)": 2.6, "Temp\u00e9rature": 13.5, "Date": "2004-03-10"},
            {"Customer ID": "Z\u00fcrich 1", "CO(GT)": None, "Temp\u00e9rature": -1.25, "Date": "2004-03-11"},
            {"Customer ID": "12346", "CO(GT)": 1000, "Temp\u00e9rature": None, "Date": None}])
        # The stored bytes are UTF-8, kept exactly.
        st, _, raw = self.svc.request("GET", "/v1/datasets/air/events?after=1&limit=1", raw=True)
        self.assertIn('"Customer ID":"Z\u00fcrich 1"'.encode(), raw)
        # Given explicitly, the same; Windows-1252 reads these bytes the same way too.
        st, _, a = self.post("air", body, CSV, q.replace("latin-1", "windows-1252") + "&delimiter=%3B")
        self.assertEqual((st, a["accepted"]), (201, 3), a)
        # A missing marker in a required column is a row error.
        self.assertError(self.post("air", "Customer ID;CO(GT)\n-200;1\n".encode(), CSV, "?na=-200"),
                         400, "invalid_argument")
        # Column names as written, in JSON too; control characters are not names.
        st, _, a = self.post("free", [{"Customer ID": 1, "CO(GT)": "x"}])
        self.assertEqual(st, 201, a)
        self.assertError(self.post("free", b"a\x01b\n1\n", CSV), 400, "invalid_argument", "control character")
        # The dialect stored with the dataset's schema applies to every CSV body (pushed by
        # any client); the query still overrides it per request.
        stored = dict(schema, csv={"decimal_comma": True, "encoding": "latin-1", "na": ["-200"],
                                   "delimiter": ";"})
        got = self.put_schema("air2", stored)
        self.assertEqual(got["schema"]["csv"], stored["csv"])
        st, _, a = self.post("air2", body, CSV)
        self.assertEqual((st, a["accepted"], a["rejected"]), (201, 3, 0), a)
        self.assertEqual([e["data"] for e in self.all_events("air2")],
                         [e["data"] for e in self.all_events("air")][:3])
        self.assertError(self.post("air2", body, CSV, "?encoding=utf-8"), 400, "invalid_argument",
                         "byte offset 23")
        self.assertError(self.svc.request("PUT", "/v1/datasets/air3/schema",
                                          dict(schema, csv={"encoding": "koi8-r"})),
                         400, "invalid_argument", "csv.encoding")
        # Bad dialect parameters are 400s naming the parameter.
        for query, needle in [("?delimiter=x", "delimiter"), ("?encoding=ebcdic", "encoding"),
                              ("?decimal_comma=1", "decimal_comma"), ("?quote=ab", "quote"),
                              ("?decimal_comma=true&delimiter=,", "decimal_comma")]:
            self.assertError(self.post("free", b"a\n1\n", CSV, query), 400, "invalid_argument", needle)
        self.assertError(self.post("free", {"a": 1}, query="?na=NA"), 400, "invalid_argument", "text/csv")

    def test_errors_truncated_past_100(self):
        self.put_schema("s")
        rows = [{"user": "u", "price": "x"}] * 150 + [{"user": "u"}]
        st, _, a = self.post("s", ndjson(rows), NDJSON, "?on_error=skip")
        self.assertEqual((st, a["accepted"], a["rejected"], len(a["errors"])), (201, 1, 150, 100))
        self.assertTrue(a["errors_truncated"])

    # -- bounds ---------------------------------------------------------------

    def test_bounds(self):
        st, _, a = self.post("b", b'{"a":1}\n' * 100000, NDJSON)
        self.assertEqual((st, a["accepted"]), (201, 100000), a)
        self.assertError(self.post("b", b'{"a":1}\n' * 100001, NDJSON), 400, "invalid_argument",
                         "more than 100000 rows")
        big = b'{"a":"' + b"x" * (64 * 1024) + b'"}\n'
        st, _, a = self.post("b", big + b'{"a":2}\n', NDJSON, "?on_error=skip")
        self.assertEqual((st, a["accepted"], a["errors"][0]["row"]), (201, 1, 1), a)
        self.assertIn("bytes", a["errors"][0]["reason"])
        wide = {f"c{i}": i for i in range(257)}
        st, _, a = self.post("b", [wide, {"a": 1}], query="?on_error=skip")
        self.assertEqual((st, a["rejected"]), (201, 1), a)
        self.assertIn("256", a["errors"][0]["reason"])
        # Over 64 MiB: 413 from the announced length, before any body is read.
        with socket.create_connection(("127.0.0.1", self.svc.port), timeout=10) as sk:
            sk.sendall(b"POST /v1/datasets/b/events HTTP/1.1\r\nHost: x\r\n"
                       b"Content-Type: application/x-ndjson\r\nContent-Length: %d\r\n\r\n"
                       % (64 * 1024 * 1024 + 1))
            self.assertIn(b" 413 ", sk.recv(4096).split(b"\r\n")[0] + b" ")
        self.assertEqual(self.events("b", 0, 1)["last_seq"], 100002)

    # -- idempotency ------------------------------------------------------------

    def test_idempotency_key(self):
        h = dict(NDJSON, **{"Idempotency-Key": "batch-1"})
        body = ndjson([{"i": 1}, {"i": 2}])
        st, hd, first = self.post("i", body, h)
        self.assertEqual(st, 201, first)
        self.assertNotIn("idempotent-replayed", hd)
        st, hd, again = self.post("i", body, h)
        self.assertEqual((st, hd.get("idempotent-replayed")), (200, "true"))
        self.assertEqual(again, first)
        self.assertEqual(self.events("i")["last_seq"], 2)
        self.assertError(self.post("i", ndjson([{"i": 3}]), h), 409, "already_exists", "batch-1")
        # Keys are per dataset.
        st, _, other = self.post("j", body, h)
        self.assertEqual(st, 201, other)
        # A refused batch is not remembered: fixing it under the same key works.
        h2 = dict(NDJSON, **{"Idempotency-Key": "batch-2"})
        self.assertEqual(self.post("i", b"nope\n", h2)[0], 400)
        self.assertEqual(self.post("i", ndjson([{"i": 4}]), h2)[0], 201)
        self.assertError(self.post("i", body, {**NDJSON, "Idempotency-Key": "x" * 300}), 400, "invalid_argument")
        # Concurrent retries of one key store once.
        h3 = dict(NDJSON, **{"Idempotency-Key": "batch-3"})
        codes = []
        ts = [threading.Thread(target=lambda: codes.append(self.post("i", ndjson([{"i": 9}] * 50), h3)[0]))
              for _ in range(6)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        self.assertEqual(sorted(codes), [200] * 5 + [201])
        self.assertEqual(self.events("i")["last_seq"], 2 + 1 + 50)

    # -- reading ----------------------------------------------------------------

    def test_paging_in_order(self):
        for b in range(5):
            self.post("p", ndjson([{"n": b * 100 + i} for i in range(100)]), NDJSON)
        seen, after = [], 0
        while True:
            page = self.events("p", after, 37)
            self.assertEqual(page["last_seq"], 500)
            if not page["events"]:
                self.assertEqual(page["next_after"], after)
                break
            self.assertLessEqual(len(page["events"]), 37)
            seen += page["events"]
            after = page["next_after"]
        self.assertEqual([e["seq"] for e in seen], list(range(1, 501)))
        self.assertEqual([e["data"]["n"] for e in seen], list(range(500)))
        self.assertError(self.svc.request("GET", "/v1/datasets/p/events?limit=10001"), 400, "invalid_argument")
        self.assertError(self.svc.request("GET", "/v1/datasets/p/events?after=-1"), 400, "invalid_argument")

    def test_export_pages_ndjson_in_order(self):
        """The bulk reader's route: the stored texts as NDJSON, exactly the rows of
        (after, until] in seq order, at most limit, with the seqs in headers."""
        for b in range(5):
            self.post("x", ndjson([{"n": b * 100 + i, "s": f"\u00e9\"{i}"} for i in range(100)]), NDJSON)
        stored = [json.dumps(e["data"], separators=(",", ":"), sort_keys=True, ensure_ascii=False)
                  for e in self.all_events("x")]
        got, after = [], 0
        while after < 450:
            st, h, raw = self.svc.request("GET", f"/v1/datasets/x/export?after={after}&until=450&limit=37",
                                          raw=True)
            self.assertEqual(st, 200, raw)
            self.assertTrue(h["content-type"].startswith("application/x-ndjson"), h)
            lines = raw.decode().split("\n")
            self.assertEqual(lines[-1], "")  # every row ends with its newline
            lines = lines[:-1]
            self.assertEqual(len(lines), min(37, 450 - after))
            self.assertEqual(h["quern-last-seq"], "500")
            self.assertEqual(h["quern-rows"], str(len(lines)))
            self.assertEqual(h["quern-next-after"], str(after + len(lines)))
            got += lines
            after += len(lines)
        self.assertEqual(got, stored[:450])  # the stored texts, byte for byte
        st, h, raw = self.svc.request("GET", "/v1/datasets/x/export?after=450", raw=True)
        self.assertEqual((st, raw.count(b"\n"), h["quern-next-after"]), (200, 50, "500"))
        st, h, raw = self.svc.request("GET", "/v1/datasets/x/export?after=500", raw=True)
        self.assertEqual((st, raw, h["quern-rows"], h["quern-next-after"]), (200, b"", "0", "500"))
        st, h, raw = self.svc.request("GET", "/v1/datasets/x/export?after=0&until=0", raw=True)
        self.assertEqual((st, raw), (200, b""))
        for q, needle in (("limit=0", "limit"), ("limit=100001", "limit"), ("after=-1", "after"),
                          ("after=x", "after"), ("until=1.5", "until"), ("after=10&until=9", "until"),
                          ("after=99999999999999999999", "after")):
            self.assertError(self.svc.request("GET", f"/v1/datasets/x/export?{q}"), 400, "invalid_argument", needle)
        self.assertError(self.svc.request("GET", "/v1/datasets/nope/export"), 404, "not_found", "nope")
        self.assertError(self.svc.request("GET", "/v1/datasets/Bad%20Name/export"), 400, "invalid_argument")

    # -- feedback ---------------------------------------------------------------

    def test_feedback(self):
        recs = [{"model": "reco", "request_id": "r1", "label": 1},
                {"model": "reco", "user": "u1", "item": "i9", "outcome": "purchase", "value": "19.99",
                 "time": "2024-05-01T10:00:00Z"}]
        st, _, a = self.svc.request("POST", "/v1/feedback", recs)
        self.assertEqual((st, a["accepted"]), (201, 2), a)
        st, _, a = self.svc.request("POST", "/v1/feedback", body=ndjson([recs[0]]), headers=NDJSON)
        self.assertEqual((st, a["accepted"]), (201, 1), a)
        bad = [{"request_id": "r"}, {"model": "m", "user": "u"}, {"model": "m", "request_id": "r", "colour": 1},
               {"model": "m", "request_id": "r", "label": [1]}, {"model": "m", "request_id": "r", "value": "x"}]
        err = self.assertError(self.svc.request("POST", "/v1/feedback", bad), 400, "invalid_argument")
        self.assertEqual([e["row"] for e in err["details"]["errors"]], [1, 2, 3, 4, 5])
        self.assertError(self.svc.request("POST", "/v1/feedback", body=b"a,b\n1,2\n", headers=CSV), 400,
                         "invalid_argument", "JSON")
        h = {"Idempotency-Key": "fb-1"}
        st, _, a = self.svc.request("POST", "/v1/feedback", [recs[0]], headers=h)
        st2, hd, a2 = self.svc.request("POST", "/v1/feedback", [recs[0]], headers=h)
        self.assertEqual((st, st2, hd.get("idempotent-replayed"), a2), (201, 200, "true", a))
        evs = self.outbox()
        fb = [e["event"] for e in evs if e["event"]["type"] == "quern.feedback.received"]
        self.assertEqual(len(fb), 4)
        self.assertEqual(fb[1]["data"], {"model": "reco", "user": "u1", "item": "i9", "outcome": "purchase",
                                         "value": 19.99, "time": "2024-05-01T10:00:00Z"})

    # -- the bus ----------------------------------------------------------------

    def outbox(self):
        st, _, body = self.svc.request("GET", "/v1/outbox?after=0&limit=1000")
        self.assertEqual(st, 200, body)
        return body["events"]

    def test_events_reach_the_bus(self):
        st, _, a = self.post("busy", ndjson([{"i": i} for i in range(10)]), NDJSON)
        self.assertEqual(st, 201)
        self.svc.request("POST", "/v1/feedback", {"model": "m", "request_id": "r"})
        deadline = time.time() + 10
        while time.time() < deadline:
            evs = self.outbox()
            if len(evs) == 2 and all(e["published"] for e in evs):
                break
            time.sleep(0.05)
        self.assertTrue(all(e["published"] for e in evs), evs)
        ing = evs[0]["event"]
        self.assertEqual(ing["type"], "quern.events.ingested")
        self.assertEqual(ing["source"], "quern-ingest")
        self.assertEqual(ing["data"], {"dataset": "busy", "batch_id": a["batch_id"], "rows": 10,
                                       "first_seq": 1, "last_seq": 10})
        # Read the embedded bus itself, as a consumer would find it.
        db = sqlite3.connect(f"file:{os.path.join(self.svc.data, 'bus.db')}?mode=ro", uri=True)
        rows = db.execute("SELECT id, topic, body FROM bus_messages ORDER BY seq").fetchall()
        db.close()
        self.assertEqual([(r[0], r[1]) for r in rows],
                         [(ing["id"], "quern.events.ingested"),
                          (evs[1]["event"]["id"], "quern.feedback.received")])
        self.assertEqual(json.loads(rows[0][2])["data"]["batch_id"], a["batch_id"])

    def test_backlog_answers_429(self):
        # Hold the embedded bus's write lock so the outbox cannot publish; past
        # --max-backlog writes get 429 with Retry-After, and recover once the
        # bus takes events again.
        svc = self.start("ingest", args=["--max-backlog", "2"])
        bus = sqlite3.connect(os.path.join(svc.data, "bus.db"), timeout=10, isolation_level=None)
        bus.execute("BEGIN EXCLUSIVE")
        try:
            for i in range(3):
                st, _, a = svc.request("POST", "/v1/datasets/x/events", {"i": i})
                self.assertEqual(st, 201, a)
            time.sleep(0.1)
            st, h, body = svc.request("POST", "/v1/datasets/x/events", {"i": 9})
            self.assertEqual((st, h.get("retry-after"), body["error"]["code"]), (429, "1", "resource_exhausted"))
            self.assertIn("bound 2", body["error"]["message"])
            st, h, body = svc.request("POST", "/v1/feedback", {"model": "m", "request_id": "r"})
            self.assertEqual(st, 429, body)
            self.assertEqual(svc.request("GET", "/v1/datasets/x/events")[0], 200)  # reads still work
        finally:
            bus.execute("ROLLBACK")
            bus.close()
        deadline = time.time() + 20
        while time.time() < deadline:
            st, _, _ = svc.request("POST", "/v1/datasets/x/events", {"i": 10})
            if st == 201:
                break
            time.sleep(0.2)
        self.assertEqual(st, 201)
        st, _, body = svc.request("GET", "/metrics", raw=True)
        self.assertIn(b'quern_ingest_backpressure_total{service="ingest",reason="backlog"}', body)

    # -- crashes and stops ------------------------------------------------------

    def test_kill9_under_load_keeps_every_acknowledged_row_once(self):
        acked, inflight, stop = [], [], threading.Event()

        def client(k):
            b = 0
            while not stop.is_set():
                ids = [f"c{k}-b{b}-{i}" for i in range(200)]
                key = f"c{k}-b{b}"
                inflight.append((key, ids))
                try:
                    st, _, _ = self.svc.request("POST", "/v1/datasets/load/events",
                                                body=ndjson([{"id": x, "k": k} for x in ids]),
                                                headers=dict(NDJSON, **{"Idempotency-Key": key}), timeout=10)
                except OSError:
                    return
                if st == 201:
                    acked.extend(ids)
                    inflight.remove((key, ids))
                b += 1

        ts = [threading.Thread(target=client, args=(k,)) for k in range(3)]
        [t.start() for t in ts]
        time.sleep(1.5)
        self.svc.kill9()
        stop.set()
        [t.join() for t in ts]
        self.assertGreater(len(acked), 1000, "too little load before the kill")
        self.svc.start()
        seen = [e["data"]["id"] for e in self.all_events("load")]
        self.assertEqual(len(seen), len(set(seen)), "a row is stored twice")
        missing = set(acked) - set(seen)
        self.assertEqual(missing, set(), f"{len(missing)} acknowledged rows lost")
        # Retrying the batches that got no answer with their keys stores each once.
        for key, ids in inflight:
            st, _, _ = self.svc.request("POST", "/v1/datasets/load/events",
                                        body=ndjson([{"id": x, "k": int(key[1])} for x in ids]),
                                        headers=dict(NDJSON, **{"Idempotency-Key": key}))
            self.assertIn(st, (200, 201))
        seen = [e["data"]["id"] for e in self.all_events("load")]
        self.assertEqual(len(seen), len(set(seen)))
        for _, ids in inflight:
            self.assertTrue(set(ids) <= set(seen))
        self.assertEqual([e["seq"] for e in self.all_events("load")], list(range(1, len(seen) + 1)))

    def test_sigterm_exits_zero_and_outbox_is_flushed(self):
        self.post("t", ndjson([{"a": 1}]), NDJSON)
        self.assertEqual(self.svc.stop(signal.SIGTERM), 0)
        self.svc.start()
        self.assertTrue(all(e["published"] for e in self.outbox()))

    def test_health_metrics_and_promtool(self):
        self.post("m", ndjson([{"a": 1}, {"a": 2}]), NDJSON)
        self.post("m", b"x\n", NDJSON, "?on_error=skip")
        self.svc.request("POST", "/v1/feedback", {"model": "m", "request_id": "r"})
        for path in ("/healthz", "/readyz"):
            self.assertEqual(self.svc.request("GET", path)[0], 200)
        st, _, text = self.svc.request("GET", "/metrics", raw=True)
        self.assertEqual(st, 200)
        text = text.decode()
        self.assertIn('quern_ingest_rows_total{service="ingest",dataset="m",outcome="accepted"} 2', text)
        self.assertIn('quern_ingest_rows_total{service="ingest",dataset="m",outcome="rejected"} 1', text)
        self.assertIn('quern_ingest_batches_total{service="ingest",outcome="stored"} 2', text)
        self.assertIn('quern_ingest_feedback_total{service="ingest"} 1', text)
        self.assertIn("quern_ingest_batch_rows_bucket", text)
        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool, "promtool missing: run make deps")
        p = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
