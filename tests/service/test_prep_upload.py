"""test_prep_upload.py - prep's output CSV streamed to the registry while it is
written (a writer thread, a pipe, a chunked POST /v1/blobs): when the
registry refuses the upload part-way (the CSV is larger than its
--max-blob-size and larger than the pipe, so the writer is still writing),
the run fails and says why, nothing is registered, prep stays responsive and
the writer thread is not left blocked (a second run ends the same way, and
SIGTERM exits 0). With a registry that takes it, the stored blob is the CSV
whose digest and size the manifest names, and the run's timing has its
write and upload phases."""
import hashlib
import json
import os
import tempfile
import time
import unittest

from harness import WORK, ServiceTest

ROWS = 60000


class PrepUploadTest(ServiceTest):
    def setUp(self):
        super().setUp()
        self.home = tempfile.mkdtemp(prefix="quern-prep-upload-", dir=WORK)

    def start_all(self, reg_args=()):
        env = {"QUERN_HOME": self.home}
        self.reg = self.start("registry", env=env, args=list(reg_args))
        self.ing = self.start("ingest", env=env)
        self.prep = self.start("prep", env=env, args=["--registry", f"http://127.0.0.1:{self.reg.port}",
                                                      "--ingest", f"http://127.0.0.1:{self.ing.port}"])
        for first in range(0, ROWS, 10000):
            body = "".join(json.dumps({"id": f"user-{i:06d}", "qty": i % 97, "note": "x, \"quoted\""}) + "\n"
                           for i in range(first, first + 10000)).encode()
            st, _, ans = self.ing.request("POST", "/v1/datasets/big/events", body,
                                          {"Content-Type": "application/x-ndjson"})
            self.assertEqual(st, 201, ans)
        st, _, body = self.prep.request("PUT", "/v1/pipelines/big", {
            "source": "big", "output": "big-clean",
            "steps": [{"op": "filter", "column": "qty", "cmp": ">", "value": 0}]})
        self.assertIn(st, (200, 201), body)

    def run_now(self):
        st, _, body = self.prep.request("POST", "/v1/pipelines/big/runs")
        self.assertEqual(st, 202, body)
        deadline = time.time() + 120
        while time.time() < deadline:
            st, _, run = self.prep.request("GET", f"/v1/pipelines/big/runs/{body['run_id']}")
            if run["state"] in ("succeeded", "failed", "skipped"):
                return run
            time.sleep(0.1)
        self.fail(f"run {body['run_id']} did not finish")

    def test_refused_upload_fails_the_run_cleanly(self):
        self.start_all(reg_args=["--max-blob-size", "64K"])
        for _ in range(2):
            run = self.run_now()
            self.assertEqual(run["state"], "failed", run)
            self.assertIn("uploading the output CSV", run["error"])
        st, _, body = self.reg.request("GET", "/v1/datasets/big-clean/versions")
        self.assertIn(st, (200, 404), body)
        if st == 200:
            self.assertEqual(body.get("versions", []), [], body)
        self.assertEqual(os.listdir(os.path.join(self.reg.data, "blobs", "tmp")), [])
        self.assertEqual(self.prep.stop(), 0)
        self.assertNoSanitizerReports()

    def test_streamed_blob_is_the_manifests(self):
        self.start_all()
        run = self.run_now()
        self.assertEqual(run["state"], "succeeded", run)
        timing = run["report"]["timing"]
        for phase in ("write", "upload"):
            self.assertGreaterEqual(timing[phase], 0, timing)
        st, _, v = self.reg.request("GET", "/v1/datasets/big-clean/versions/latest")
        self.assertEqual(st, 200, v)
        digest = v["manifest"]["files"]["data.csv"]
        st, _, data = self.reg.request("GET", f"/v1/blobs/{digest}", raw=True)
        self.assertEqual(st, 200)
        self.assertEqual("sha256:" + hashlib.sha256(data).hexdigest(), digest)
        self.assertEqual(len(data), v["manifest"]["bytes"])
        lines = data.split(b"\r\n")
        self.assertEqual(lines[0], b"id,note,qty")  # ingest stores keys sorted
        self.assertEqual(lines[1], b'user-000001,"x, ""quoted""",1')
        kept = sum(1 for i in range(ROWS) if i % 97 > 0)
        self.assertEqual(len(lines) - 2, kept)  # header, rows, and the empty tail after the last CRLF
        self.assertEqual(v["manifest"]["rows"], kept)
        self.assertNoSanitizerReports()


if __name__ == "__main__":
    unittest.main()
