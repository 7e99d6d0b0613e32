"""test_sources_files.py - pull sources of kind files: CSV and NDJSON files
appearing in a directory, each taken once by the digest of its content (a
copy or a rename takes nothing), temporary names left alone, the dataset's
CSV dialect applied, a file that cannot be read whole refused with its line
and not read again, bad rows per on_error with file and line."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ServiceTest, WORK, BIN  # noqa: E402
from sources_common import put, run, read_all, last_run  # noqa: E402


class FilesSources(ServiceTest):
    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix="quern-drop-", dir=WORK)
        self.ing = self.start("ingest", args=["--source-paths", self.dir])

    def write(self, name, text):
        tmp = os.path.join(self.dir, name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.rename(tmp, os.path.join(self.dir, name))

    def test_each_file_once(self):
        st, _, body = put(self.ing, "drop", {"kind": "files", "dataset": "readings", "dir": self.dir})
        self.assertEqual(st, 201, body)
        self.write("a.csv", "sensor,CO(GT)\ns1,2.5\ns2,3\n")
        self.write("b.ndjson", '{"sensor":"s3","CO(GT)":4}\n{"sensor":"s4","CO(GT)":5}\n')
        self.write("c.part", "sensor\nignored\n")
        self.write("notes.md", "not data\n")
        r = run(self.ing, "drop")
        self.assertEqual((r["status"], r["rows"], r["chunks"]), ("succeeded", 4, 2), r)
        # Again: nothing. A copy under another name: nothing. A new file: its rows.
        self.assertEqual(run(self.ing, "drop")["rows"], 0)
        shutil.copy(os.path.join(self.dir, "a.csv"), os.path.join(self.dir, "a-copy.csv"))
        self.assertEqual(run(self.ing, "drop")["rows"], 0)
        self.write("empty.csv", "sensor,CO(GT)\n")  # a header alone: taken, no rows, no failure
        self.write("void.ndjson", "")
        r = run(self.ing, "drop")
        self.assertEqual((r["status"], r["rows"], r["chunks"]), ("succeeded", 0, 2), r)
        self.write("d.csv", "sensor,CO(GT)\ns5,6\n")
        self.assertEqual(run(self.ing, "drop")["rows"], 1)
        rows, seqs = read_all(self.ing, "readings")
        self.assertEqual([x["sensor"] for x in rows], ["s1", "s2", "s3", "s4", "s5"])
        self.assertEqual(seqs, [1, 2, 3, 4, 5])
        self.assertEqual(rows[0]["CO(GT)"], "2.5")  # no schema: cells stay strings

    def test_dialect_schema_and_errors(self):
        st, _, _ = self.ing.request("PUT", "/v1/datasets/air/schema", {
            "columns": [{"name": "CO(GT)", "type": "numeric", "required": True}],
            "csv": {"delimiter": ";", "decimal_comma": True, "na": ["-200"]}})
        self.assertEqual(st, 200)
        put(self.ing, "air", {"kind": "files", "dataset": "air", "dir": self.dir, "on_error": "skip"})
        self.write("1.csv", "Date;CO(GT);\n10/03/2004;2,6;\n10/03/2004;abc;\n11/03/2004;1,5;\n")
        r = run(self.ing, "air")
        self.assertEqual((r["status"], r["rows"], r["rejected"]), ("succeeded", 2, 1), r)
        self.assertEqual(r["errors"][0]["file"], "1.csv")
        self.assertEqual(r["errors"][0]["line"], 3)
        rows, _ = read_all(self.ing, "air")
        self.assertEqual([x["CO(GT)"] for x in rows], [2.6, 1.5])
        # A file whose header misses a required column: refused whole, named, not read again.
        self.write("2.csv", "Date;Other\n1;2\n")
        r = run(self.ing, "air")
        self.assertEqual(r["status"], "failed", r)
        self.assertIn("2.csv", r["error"])
        self.assertIn("CO(GT)", r["error"])
        r = run(self.ing, "air")
        self.assertEqual((r["status"], r["rows"]), ("succeeded", 0), r)
        self.assertEqual(len(read_all(self.ing, "air")[0]), 2)

    def test_reject_takes_nothing_of_the_file(self):
        self.ing.request("PUT", "/v1/datasets/n/schema",
                         {"columns": [{"name": "x", "type": "numeric", "required": True}]})
        put(self.ing, "n", {"kind": "files", "dataset": "n", "dir": self.dir})
        self.write("a.csv", "x\n1\nbad\n3\n")
        r = run(self.ing, "n")
        self.assertEqual(r["status"], "failed", r)
        self.assertIn("row 2", r["error"])
        self.assertEqual(read_all(self.ing, "n")[0], [])
        # Fixed (new content): taken.
        self.write("a.csv", "x\n1\n2\n3\n")
        self.assertEqual(run(self.ing, "n")["rows"], 3)

    def test_bad_declarations(self):
        self.assertError(put(self.ing, "x", {"kind": "files", "dataset": "d"}), 400, "invalid_argument", "dir")
        self.assertError(put(self.ing, "x", {"kind": "files", "dataset": "d", "dir": "rel"}), 400,
                         "invalid_argument", "dir")
        self.assertError(put(self.ing, "x", {"kind": "files", "dataset": "d", "dir": self.dir, "format": "xml"}), 400,
                         "invalid_argument", "format")
        self.assertError(put(self.ing, "x", {"kind": "files", "dataset": "d", "dir": "/etc"}), 400,
                         "invalid_argument", "--source-paths")
        put(self.ing, "missing", {"kind": "files", "dataset": "d", "dir": os.path.join(self.dir, "nope")})
        r = run(self.ing, "missing")
        self.assertEqual(r["status"], "failed")
        self.assertIn("nope", r["error"])


    def test_cli(self):
        env = dict(os.environ, QUERN_INGEST=f"http://127.0.0.1:{self.ing.port}", QUERN_HOME=self.dir)

        def quern(*args):
            return subprocess.run([os.path.join(BIN, "quern")] + list(args), capture_output=True, text=True,
                                  env=env, timeout=120)

        decl = os.path.join(self.dir, "..", os.path.basename(self.dir) + "-decl.json")
        with open(decl, "w") as f:
            json.dump({"kind": "files", "dataset": "cli", "dir": self.dir, "interval": "1h"}, f)
        p = quern("sources", "put", "drop", decl)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("Source drop stored", p.stdout)
        # A new source with an interval runs at once. Wait for that run to
        # end over the empty directory: a file written while it lists the
        # directory would be its, and `sources run` while it runs is refused
        # (one run at a time) - under load both happened.
        deadline = time.time() + 120
        first = last_run(self.ing, "drop")
        while (first is None or first["status"] == "running") and time.time() < deadline:
            time.sleep(0.05)
            first = last_run(self.ing, "drop")
        self.assertEqual((first["status"], first["rows"]), ("succeeded", 0), first)
        self.write("a.csv", "x\n1\n2\n")
        p = quern("sources", "run", "drop")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("succeeded, 2 rows stored", p.stdout)
        p = quern("sources", "list")
        self.assertIn("drop", p.stdout)
        self.assertIn("files", p.stdout)
        p = quern("--json", "sources", "show", "drop")
        self.assertEqual(json.loads(p.stdout)["last_run"]["rows"], 2)
        p = quern("sources", "history", "drop", "--limit", "5")
        self.assertIn("succeeded", p.stdout)
        self.write("b.csv", "y\n1\n")  # another header: fine without a schema
        with open(decl, "w") as f:
            json.dump({"kind": "files", "dataset": "cli", "dir": self.dir + "/nope"}, f)
        quern("sources", "put", "drop", decl)
        p = quern("sources", "run", "drop")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("error:", p.stdout)
        p = quern("sources", "run", "nosuch")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("nosuch", p.stderr)


if __name__ == "__main__":
    unittest.main()
