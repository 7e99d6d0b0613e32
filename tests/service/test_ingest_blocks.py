"""test_ingest_blocks.py - quern-ingest keeps rows as column blocks
(src/ml/colblock.h): the events page and the NDJSON export give back exactly
the canonical texts the rows had as text (computed here in Python from the
rules of src/ml/records.h), whatever after/until/limit cut through blocks;
the columnar export (Accept: application/vnd.quern.colblocks), decoded by a
decoder written here from colblock.h's format description, renders the same
rows, copies whole blocks as stored and slices cut ones; rows a data
directory kept in the old table `events` are converted at start, also when
the conversion is killed midway.

Run through tests/unit/core/run_store_pg.sh (QUERN_TEST_PG set) the same
round trips run against PostgreSQL; the tests that open ingest.db with
sqlite3 are then skipped."""
import json
import math
import os
import sqlite3
import struct
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import BIN, PG, Service, ServiceTest  # noqa: E402

BLOCKS = "application/vnd.quern.colblocks"
MAX_ROWS = 65536
NDJSON = {"Content-Type": "application/x-ndjson"}


# ---- canonical rows, as src/ml/records.h writes them -------------------------------

def fmt_number(v):
    """qml_format_number: integral values under 1e15 without a fraction,
    else the shortest of %.15g/%.16g/%.17g that reads back exactly."""
    if v == math.floor(v) and abs(v) < 1e15:
        return "%.0f" % (0.0 if v == 0 else v)
    for p in (15, 16, 17):
        s = "%.*g" % (p, v)
        if p == 17 or float(s) == v:
            return s


SHORT = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def jstr(s):
    """Minimal escaping: quote, backslash and control characters only."""
    out = ['"']
    for ch in s:
        if ch in SHORT:
            out.append(SHORT[ch])
        elif ord(ch) < 0x20:
            out.append("\\u%04x" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def canon(v):
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return fmt_number(v)
    if isinstance(v, str):
        return jstr(v)
    if isinstance(v, list):
        return "[" + ",".join(canon(x) for x in v) + "]"
    keys = sorted(v, key=lambda k: k.encode())
    return "{" + ",".join(jstr(k) + ":" + canon(v[k]) for k in keys) + "}"


# ---- the column-block format, from colblock.h's description ------------------------

def decode_blocks(data):
    """The blocks of a page: [(start, end, nrows, [(key, values, cells)])].
    Checks what the format promises (magic, offsets, cells, column order)."""
    out, p = [], 0
    while p < len(data):
        start = p
        if data[p:p + 4] != b"QCB1":
            raise AssertionError(f"no block magic at byte {p}: {data[p:p + 4]!r}")
        nrows, ncols = struct.unpack_from("<II", data, p + 4)
        p += 12
        cols, prev = [], None
        for _ in range(ncols):
            (kl,) = struct.unpack_from("<I", data, p)
            key = data[p + 4:p + 4 + kl]
            p += 4 + kl
            name = json.loads(key)
            if prev is not None and not prev.encode() < name.encode():
                raise AssertionError(f"columns out of order: {prev!r} then {name!r}")
            prev = name
            (nv,) = struct.unpack_from("<I", data, p)
            off = struct.unpack_from("<%dI" % (nv + 1), data, p + 4)
            p += 4 + 4 * (nv + 1)
            if off[0] != 0 or any(off[i] >= off[i + 1] for i in range(nv)):
                raise AssertionError(f"column {name}: offsets {off[:8]}... not increasing (values are never empty)")
            raw = data[p:p + off[-1]]
            p += off[-1]
            values = [raw[off[i]:off[i + 1]] for i in range(nv)]
            width = data[p]
            p += 1
            fmt = {1: "B", 2: "H", 4: "I"}[width]
            cells = struct.unpack_from("<%d%s" % (nrows, fmt), data, p)
            p += nrows * width
            if any(c > nv for c in cells):
                raise AssertionError(f"column {name}: a cell past its {nv} values")
            cols.append((key, values, cells))
        if p > len(data):
            raise AssertionError("a block runs past the page")
        out.append((start, p, nrows, cols))
    return out


def render(block, r):
    """Row r of a decoded block as its canonical text (bytes)."""
    _, _, _, cols = block
    return b"{" + b",".join(k + b":" + vals[cells[r] - 1] for k, vals, cells in cols if cells[r]) + b"}"


def block_rows(blocks):
    return [render(b, r) for b in blocks for r in range(b[2])]


# ---- rows ---------------------------------------------------------------------------

def varied_rows(n, base=0):
    """Rows of every shape a canonical text has: nested objects and arrays,
    escapes and control characters, non-ASCII keys and values, keys present
    in some rows only, numbers of every form, null/true/false."""
    numbers = [0, -0.0, 1, -1, 2.0, 0.1, -2.5, 1e15, 123456789012345, 1e300, 5e-324, 1.7976931348623157e308,
               1 / 3, 2 ** 53, -(2 ** 62), 1e-7, 100.25, 3.14159]
    strings = ["plain", "", "quote\" back\\slash /", "tab\tnl\nret\rbs\bff\f", "\u0001\u001f\u007f ctl",
               "é ü Ž 日本語 😀", "Customer, Ltd.", "x" * 300, "\u00a0nbsp", "€ 12,50"]
    rows = []
    for i in range(base, base + n):
        r = {"i": i, "s": strings[i % len(strings)], "n": numbers[i % len(numbers)]}
        if i % 2:
            r["odd"] = True
        if i % 3 == 0:
            r["Customer ID"] = f"C{i % 7}"
        if i % 5 == 0:
            r["nested"] = {"z": [1, {"y": None, "x": False}, []], "a": {}, "ключ": "значение"}
        if i % 7 == 0:
            r["prix (€)"] = numbers[(i // 7) % len(numbers)]
        if i % 11 == 0:
            r["null"] = None
        if i % 13 == 0:
            r["名前"] = strings[(i // 13) % len(strings)]
        if i % 17 == 0:
            r["arr"] = [i, "two", [3.5, None], {"b": 1, "a": 2}]
        rows.append(r)
    return rows


def bulk_rows(n, base=0):
    """Many plain rows with repeated values (one big batch of them makes
    more than one block)."""
    countries = ["United Kingdom", "France", "EIRE", "Deutschland", "España"]
    return [{"InvoiceNo": f"5{i // 10:05d}", "Quantity": i % 24 - 3, "UnitPrice": (i % 50) * 0.25 + 0.05,
             "Country": countries[i % 5], "Desc": f"item {i % 997}"} for i in range(base, base + n)]


TYPED_SCHEMA = {"columns": [{"name": "user", "type": "categorical", "required": True},
                            {"name": "price", "type": "numeric"},
                            {"name": "ok", "type": "boolean"},
                            {"name": "ts", "type": "timestamp"}],
                "additional_columns": True}


def typed_rows(n):
    """(row sent, canonical row expected) for the schema'd dataset: numeric
    strings become numbers, yes/no booleans, an empty price null; extra
    columns are kept as given."""
    out = []
    for i in range(n):
        sent = {"user": f"u{i % 9}", "price": ["2.50", 3, 1e-3, "", "-7", 12.75][i % 6],
                "ok": ["yes", False, "no", True][i % 4], "ts": "2011-12-09 12:50:00"}
        if i % 3 == 0:
            sent["extra"] = {"k": [i, "v"]}
        want = dict(sent)
        want["price"] = {"2.50": 2.5, "": None, "-7": -7.0}.get(sent["price"], sent["price"]) \
            if isinstance(sent["price"], str) else sent["price"]
        want["ok"] = {"yes": True, "no": False}.get(sent["ok"], sent["ok"])
        out.append((sent, want))
    return out


class Checked(ServiceTest):
    """Services stopped at the end of a test logged no sanitizer report
    (an ASan/UBSan build of ingest runs these tests too)."""

    def tearDown(self):
        super().tearDown()
        self.assertNoSanitizerReports()


class IngestBlocks(Checked):
    def setUp(self):
        super().setUp()
        self.ing = self.start("ingest")

    # -- helpers --------------------------------------------------------------

    def post_rows(self, ds, rows):
        body = ("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n").encode()
        st, _, a = self.ing.request("POST", f"/v1/datasets/{ds}/events", body=body, headers=NDJSON, timeout=120)
        self.assertEqual(st, 201, a)
        self.assertEqual(a["accepted"], len(rows), a)
        return a

    def export(self, ds, after=None, until=None, limit=None, blocks=False):
        q = [f"{k}={v}" for k, v in (("after", after), ("until", until), ("limit", limit)) if v is not None]
        st, h, body = self.ing.request("GET", f"/v1/datasets/{ds}/export" + ("?" + "&".join(q) if q else ""),
                                       headers={"Accept": BLOCKS} if blocks else None, raw=True, timeout=120)
        self.assertEqual(st, 200, body[:300])
        return h, body

    def fill(self, ds, batches):
        """Posts the batches; returns the expected canonical texts, seq order."""
        want = []
        for rows in batches:
            a = self.post_rows(ds, rows)
            self.assertEqual(a["first_seq"], len(want) + 1)
            want += [canon(r).encode() for r in rows]
        return want

    def check_ndjson(self, ds, want, after, until, limit):
        h, body = self.export(ds, after, until, limit)
        a = after or 0
        hi = min(len(want), until if until is not None else len(want), a + (limit or 10000))
        rows = want[a:hi] if hi > a else []
        self.assertEqual(body, b"".join(r + b"\n" for r in rows), (after, until, limit))
        self.assertEqual(h["content-type"], "application/x-ndjson")
        self.assertEqual((int(h["quern-rows"]), int(h["quern-next-after"]), int(h["quern-last-seq"])),
                         (len(rows), a + len(rows), len(want)), (after, until, limit))
        return h, body

    def check_events(self, ds, want, after, limit):
        st, _, body = self.ing.request("GET", f"/v1/datasets/{ds}/events?after={after}&limit={limit}", raw=True)
        self.assertEqual(st, 200, body[:300])
        rows = want[after:after + limit]
        page = (b'{"dataset":' + jstr(ds).encode() + b',"events":[' +
                b",".join(b'{"seq":%d,"data":' % (after + 1 + i) + r + b"}" for i, r in enumerate(rows)) +
                b'],"next_after":%d,"last_seq":%d}' % (after + len(rows), len(want)))
        self.assertEqual(body, page, (after, limit))

    def stored_blocks(self, ds):
        db = sqlite3.connect(f"file:{os.path.join(self.ing.data, 'ingest.db')}?mode=ro", uri=True, timeout=30)
        try:
            return db.execute("SELECT first_seq, last_seq, data FROM event_blocks WHERE dataset_id = "
                              "(SELECT id FROM datasets WHERE name = ?) ORDER BY first_seq", (ds,)).fetchall()
        finally:
            db.close()

    # -- text forms -----------------------------------------------------------

    def test_round_trip_events_and_ndjson(self):
        sizes = [1, 5, 37, 200, 3, 1000, 2]
        batches, base = [], 0
        for n in sizes:
            batches.append(varied_rows(n, base))
            base += n
        want = self.fill("free", batches)
        n = len(want)
        # Every row whole, and cut inside and across blocks.
        for after, until, limit in [(None, None, None), (0, None, 1), (0, 1, None), (1, 6, None), (3, 40, None),
                                    (5, 6, None), (42, 42, None), (6, 43, 10), (40, 250, 100), (243, 1248, None),
                                    (244, None, 7), (n - 1, None, None), (n, None, None), (n + 5, None, None),
                                    (100, 2000, 1000), (0, None, 100000)]:
            self.check_ndjson("free", want, after, until, limit)
        for after, limit in [(0, 1000), (0, 37), (4, 37), (41, 202), (n - 3, 10), (n, 5), (0, 10000)]:
            self.check_events("free", want, after, limit)
        # The rows are what was sent, read back as JSON too.
        self.assertEqual([json.loads(r) for r in want], [r for b in batches for r in b])

    def test_schema_dataset_round_trip(self):
        st, _, body = self.ing.request("PUT", "/v1/datasets/typed/schema", TYPED_SCHEMA)
        self.assertEqual(st, 200, body)
        pairs = typed_rows(120)
        want = []
        for lo, hi in ((0, 1), (1, 50), (50, 120)):
            self.post_rows("typed", [s for s, _ in pairs[lo:hi]])
            want += [canon(w).encode() for _, w in pairs[lo:hi]]
        for after, until, limit in [(None, None, None), (0, 30, None), (10, 60, 20), (49, 51, None)]:
            self.check_ndjson("typed", want, after, until, limit)
        self.check_events("typed", want, 0, 1000)
        self.check_events("typed", want, 48, 3)

    # -- the columnar form ----------------------------------------------------

    def test_columnar_export(self):
        big = 70000  # more than one block's rows: two blocks from one batch
        batches = [varied_rows(1), varied_rows(300, 1), bulk_rows(big, 301), varied_rows(40, big + 301)]
        want = self.fill("cb", batches)
        n = len(want)
        self.assertEqual(n, 70341)
        b1 = 301 + MAX_ROWS  # the last row of the big batch's first block
        stored = None if PG else self.stored_blocks("cb")
        if stored is not None:
            self.assertEqual([(f, l) for f, l, _ in stored],
                             [(1, 1), (2, 301), (302, b1), (b1 + 1, 70301), (70302, n)])
        for after, until, limit in [(None, None, 100000), (None, None, None), (0, 1, None), (0, 2, None),
                                    (1, 301, None), (5, 9, None), (300, 303, None), (b1 - 2, b1 + 2, None),
                                    (b1, None, 100000), (250, None, 70000), (70300, None, None),
                                    (n - 1, None, None), (n, None, None), (n + 3, None, None), (10, 20, 5),
                                    (0, None, 1), (301, b1, None)]:
            h, text = self.check_ndjson("cb", want, after, until, limit)
            hb, body = self.export("cb", after, until, limit, blocks=True)
            self.assertEqual(hb["content-type"], BLOCKS)
            for k in ("quern-rows", "quern-next-after", "quern-last-seq"):
                self.assertEqual(hb[k], h[k], (k, after, until, limit))
            blocks = decode_blocks(body)
            rows = block_rows(blocks)
            self.assertEqual(b"".join(r + b"\n" for r in rows), text, (after, until, limit))
            if stored is None:
                continue
            # One block per stored block in range: whole ones byte for
            # byte as stored, cut ones sliced to the rows in range.
            a = after or 0
            hi = a + len(rows)
            span = [(f, l, d) for f, l, d in stored if l > a and f <= hi]
            self.assertEqual(len(blocks), len(span), (after, until, limit))
            for (start, end, nrows, _), (f, l, d) in zip(blocks, span):
                lo_, hi_ = max(f, a + 1), min(l, hi)
                self.assertEqual(nrows, hi_ - lo_ + 1)
                if lo_ == f and hi_ == l:
                    self.assertEqual(body[start:end], d, (f, l))
                else:
                    self.assertLess(end - start, len(d), (f, l))

    def test_columnar_export_paging(self):
        want = self.fill("pg", [varied_rows(90), varied_rows(11, 90), varied_rows(400, 101)])
        got, after, pages = [], 0, 0
        while True:
            h, body = self.export("pg", after, None, 33, blocks=True)
            rows = block_rows(decode_blocks(body))
            self.assertEqual(int(h["quern-rows"]), len(rows))
            if not rows:
                self.assertEqual(int(h["quern-next-after"]), after)
                break
            self.assertLessEqual(len(rows), 33)
            self.assertEqual(int(h["quern-next-after"]), after + len(rows))
            got += rows
            after = int(h["quern-next-after"])
            pages += 1
        self.assertEqual(got, want)
        self.assertEqual(pages, math.ceil(len(want) / 33))
        # Without the Accept header (or with another type) it is NDJSON.
        st, h, body = self.ing.request("GET", "/v1/datasets/pg/export?limit=2",
                                       headers={"Accept": "application/x-ndjson"}, raw=True)
        self.assertEqual((st, h["content-type"], body), (200, "application/x-ndjson", want[0] + b"\n" + want[1] + b"\n"))
        st, h, body = self.ing.request("GET", "/v1/datasets/pg/export?limit=2",
                                       headers={"Accept": "application/json;q=0.5, " + BLOCKS + ";q=1"}, raw=True)
        self.assertEqual((st, h["content-type"]), (200, BLOCKS))
        self.assertEqual(block_rows(decode_blocks(body)), want[:2])
        self.assertError(self.ing.request("GET", "/v1/datasets/nope/export", headers={"Accept": BLOCKS}),
                         404, "not_found")
        self.assertError(self.ing.request("GET", "/v1/datasets/pg/export?after=5&until=4",
                                          headers={"Accept": BLOCKS}), 400, "invalid_argument")


@unittest.skipIf(PG, "edits ingest.db with sqlite3")
class IngestDataLoss(Checked):
    def test_a_block_that_does_not_read_is_data_loss(self):
        ing = self.start("ingest")
        for lo, n in ((0, 10), (10, 20), (30, 5)):
            body = ("\n".join(json.dumps(r) for r in varied_rows(n, lo)) + "\n").encode()
            st, _, a = ing.request("POST", "/v1/datasets/d/events", body=body, headers=NDJSON)
            self.assertEqual(st, 201, a)
        db = sqlite3.connect(os.path.join(ing.data, "ingest.db"), timeout=30)
        (data,) = db.execute("SELECT data FROM event_blocks WHERE first_seq = 11").fetchone()
        cut = data[:len(data) - 3]  # a column's cells run past the end
        db.execute("UPDATE event_blocks SET data = ? WHERE first_seq = 11", (cut,))
        db.commit()
        db.close()
        for path, hdr in (("/v1/datasets/d/export", None), ("/v1/datasets/d/export?after=12&until=13", {"Accept": BLOCKS}),
                          ("/v1/datasets/d/events?after=5", None)):
            st, _, body = ing.request("GET", path, headers=hdr)
            self.assertEqual(st, 500, (path, body))
            self.assertEqual(body["error"]["code"], "internal")
        bad = log_events(ing, "stored rows unreadable")
        self.assertEqual(len(bad), 3, bad)
        self.assertEqual((bad[0]["dataset"], bad[0]["first_seq"], bad[0]["last_seq"]), ("d", 11, 30), bad[0])
        # Rows outside that block still read.
        st, h, body = ing.request("GET", "/v1/datasets/d/export?after=30", raw=True)
        self.assertEqual((st, int(h["quern-rows"])), (200, 5))
        st, h, body = ing.request("GET", "/v1/datasets/d/export?until=10", raw=True)
        self.assertEqual((st, int(h["quern-rows"])), (200, 10))


# ---- rows of a data directory from before blocks --------------------------------------

def to_old_form(path):
    """Rewrites ingest.db as a build before column blocks left it: every row
    as its text in events, no event_blocks table, schema version 2."""
    db = sqlite3.connect(path, timeout=30)
    try:
        n = 0
        for ds, f, l, data in db.execute("SELECT dataset_id, first_seq, last_seq, data FROM event_blocks "
                                         "ORDER BY dataset_id, first_seq").fetchall():
            rows = block_rows(decode_blocks(data))
            assert len(rows) == l - f + 1
            db.executemany("INSERT INTO events (dataset_id, seq, data) VALUES (?, ?, ?)",
                           [(ds, f + i, r.decode()) for i, r in enumerate(rows)])
            n += len(rows)
        db.execute("DROP TABLE event_blocks")
        db.execute("DELETE FROM schema_migrations WHERE version >= 3")
        db.commit()
        return n
    finally:
        db.close()


def count(path, sql):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute(sql).fetchone()[0]
    finally:
        db.close()


def log_events(svc, msg):
    out = []
    for line in svc.log().splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("msg") == msg:
            out.append(ev)
    return out


@unittest.skipIf(PG, "converts an SQLite data directory")
class IngestConversion(Checked):
    def test_rows_of_an_old_data_directory_are_converted(self):
        ing = self.start("ingest")
        st, _, body = ing.request("PUT", "/v1/datasets/typed/schema", TYPED_SCHEMA)
        self.assertEqual(st, 200, body)
        ing.request("POST", "/v1/datasets/typed/events", body=[s for s, _ in typed_rows(30)], timeout=60)
        for lo, n in ((0, 3), (3, 500), (503, 2)):
            body = ("\n".join(json.dumps(r) for r in varied_rows(n, lo)) + "\n").encode()
            st, _, a = ing.request("POST", "/v1/datasets/free/events", body=body, headers=NDJSON)
            self.assertEqual(st, 201, a)
        before = {}
        for ds in ("free", "typed"):
            before[ds] = (ing.request("GET", f"/v1/datasets/{ds}/export", raw=True)[2],
                          ing.request("GET", f"/v1/datasets/{ds}/events?limit=10000", raw=True)[2],
                          ing.request("GET", f"/v1/datasets/{ds}")[2]["last_seq"])
        self.assertEqual(before["free"][2], 505)
        ing.stop()
        path = os.path.join(ing.data, "ingest.db")
        self.assertEqual(to_old_form(path), 535)

        ing.start(timeout=60)
        self.assertEqual(count(path, "SELECT count(*) FROM events"), 0)
        done = log_events(ing, "rows converted to column blocks")
        self.assertEqual(done[-1]["rows"], 535, done)
        self.assertEqual(sum(e["rows"] for e in log_events(ing, "rows converted")), 535)
        for ds in ("free", "typed"):
            self.assertEqual(ing.request("GET", f"/v1/datasets/{ds}/export", raw=True)[2], before[ds][0])
            self.assertEqual(ing.request("GET", f"/v1/datasets/{ds}/events?limit=10000", raw=True)[2], before[ds][1])
            self.assertEqual(ing.request("GET", f"/v1/datasets/{ds}")[2]["last_seq"], before[ds][2])
        # The sequence goes on where it was.
        st, _, a = ing.request("POST", "/v1/datasets/free/events", body={"after": "conversion"})
        self.assertEqual((st, a["first_seq"]), (201, 506), a)
        # A start with nothing left to convert logs nothing of it.
        ing.stop()
        ing.start(timeout=60)
        self.assertEqual(len(log_events(ing, "rows converted to column blocks")), 1)

    def test_kill_during_conversion_loses_and_repeats_nothing(self):
        n = 300000
        want = [canon({"i": i, "s": f"row {i % 1000}", "v": i + 0.5}) for i in range(1, n + 1)]
        partial = False
        for attempt in range(3):
            ing = Service("ingest")
            ing.start()
            self.services.append(ing)
            st, _, a = ing.request("POST", "/v1/datasets/big/events", body={"i": 0})
            self.assertEqual(st, 201, a)
            ing.stop()
            path = os.path.join(ing.data, "ingest.db")
            db = sqlite3.connect(path, timeout=30)
            (ds,) = db.execute("SELECT id FROM datasets WHERE name = 'big'").fetchone()
            db.execute("DELETE FROM event_blocks")
            db.executemany("INSERT INTO events (dataset_id, seq, data) VALUES (?, ?, ?)",
                           ((ds, i + 1, t) for i, t in enumerate(want)))
            db.execute("UPDATE datasets SET last_seq = ? WHERE name = 'big'", (n,))
            db.commit()
            db.close()
            # Started by hand: the service serves only after converting.
            with open(ing.log_path, "ab") as log:
                ing.proc = subprocess.Popen([os.path.join(BIN, "quern-ingest"), "--listen", "127.0.0.1:0",
                                             "--data", ing.data], stdout=log, stderr=log, env=ing.env)
            deadline = time.time() + 120
            while time.time() < deadline and not log_events(ing, "rows converted"):
                self.assertIsNone(ing.proc.poll(), ing.log())
                time.sleep(0.005)
            ing.kill9()
            left = count(path, "SELECT count(*) FROM events")
            blocks = count(path, "SELECT COALESCE(SUM(last_seq - first_seq + 1), 0) FROM event_blocks")
            self.assertEqual(left + blocks, n)
            if 0 < left < n:
                partial = True
                break
        self.assertTrue(partial, "the kill never came in the middle of a conversion")

        ing.start(timeout=180)
        self.assertEqual(count(path, "SELECT count(*) FROM events"), 0)
        got, after = [], 0
        while True:
            st, h, body = ing.request("GET", f"/v1/datasets/big/export?after={after}&limit=100000", raw=True,
                                      timeout=120)
            self.assertEqual(st, 200)
            if not body:
                break
            got += body.decode().splitlines()
            after = int(h["quern-next-after"])
        self.assertEqual(got, want)
        self.assertEqual(ing.request("GET", "/v1/datasets/big")[2]["last_seq"], n)


if __name__ == "__main__":
    unittest.main()
