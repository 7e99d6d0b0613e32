"""Black-box tests of quern-registry: every route over HTTP, bad input,
concurrency, crash safety of blob uploads, and /metrics under promtool."""
import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import unittest

from harness import ServiceTest, Service


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class RegistryTest(ServiceTest):
    def setUp(self):
        super().setUp()
        self.reg = self.start("registry")

    # -- helpers ------------------------------------------------------------

    def put_blob(self, data, digest=None):
        return self.reg.request("PUT", f"/v1/blobs/{digest or sha(data)}", body=data,
                                headers={"Content-Type": "application/octet-stream"})

    def manifest(self, payload=b"weights"):
        st, _, _ = self.put_blob(payload)
        self.assertIn(st, (200, 201))
        return {"format": "quern.model/1", "kind": "xgboost",
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
                "outputs": [{"name": "p", "datatype": "FP32", "shape": [-1]}],
                "files": {"model.json": sha(payload)}}

    def create_model(self, name="churn", **extra):
        st, h, body = self.reg.request("POST", "/v1/models", {"name": name, **extra})
        self.assertEqual(st, 201, body)
        return body

    def create_version(self, name="churn", **extra):
        st, _, body = self.reg.request("POST", f"/v1/models/{name}/versions",
                                       {"manifest": self.manifest(), **extra})
        self.assertEqual(st, 201, body)
        return body

    # -- models -------------------------------------------------------------

    def test_model_lifecycle(self):
        m = self.create_model("churn", description="who leaves", tags={"team": "growth"})
        self.assertEqual(m["name"], "churn")
        self.assertEqual(m["tags"], {"team": "growth"})
        self.assertIsNone(m["latest_version"])
        self.assertEqual(m["aliases"], {})
        self.assertError(self.reg.request("POST", "/v1/models", {"name": "churn"}),
                         409, "already_exists", "churn")
        st, _, got = self.reg.request("GET", "/v1/models/churn")
        self.assertEqual((st, got["description"]), (200, "who leaves"))
        st, _, _ = self.reg.request("DELETE", "/v1/models/churn")
        self.assertEqual(st, 204)
        self.assertError(self.reg.request("GET", "/v1/models/churn"), 404, "not_found", "churn")
        self.assertError(self.reg.request("DELETE", "/v1/models/churn"), 404, "not_found")

    def test_model_list_pagination_and_tag_filter(self):
        for i in range(7):
            self.create_model(f"m{i}", tags={"team": "a" if i % 2 else "b"})
        seen, token = [], None
        while True:
            q = "/v1/models?limit=3" + (f"&page_token={token}" if token else "")
            st, _, body = self.reg.request("GET", q)
            self.assertEqual(st, 200, body)
            seen += [m["name"] for m in body["models"]]
            token = body.get("next_page_token")
            if not token:
                break
        self.assertEqual(seen, [f"m{i}" for i in range(7)])
        st, _, body = self.reg.request("GET", "/v1/models?tag=team:a")
        self.assertEqual([m["name"] for m in body["models"]], ["m1", "m3", "m5"])
        st, _, body = self.reg.request("GET", "/v1/models?tag=team")
        self.assertEqual(len(body["models"]), 7)
        self.assertError(self.reg.request("GET", "/v1/models?page_token=garbage!"), 400,
                         "invalid_argument", "page_token")
        self.assertError(self.reg.request("GET", "/v1/models?limit=0"), 400, "invalid_argument", "limit")
        self.assertError(self.reg.request("GET", "/v1/models?limit=abc"), 400, "invalid_argument", "limit")

    def test_bad_model_requests(self):
        r = self.reg.request
        self.assertError(r("POST", "/v1/models", b"{not json", {"Content-Type": "application/json"}),
                         400, "invalid_argument")
        self.assertError(r("POST", "/v1/models", {"name": 42}), 400, "invalid_argument", "name", "string")
        self.assertError(r("POST", "/v1/models", {}), 400, "invalid_argument", "name", "required")
        self.assertError(r("POST", "/v1/models", {"name": "x", "colour": "red"}), 400,
                         "invalid_argument", "colour")
        self.assertError(r("POST", "/v1/models", {"name": "../etc"}), 400, "invalid_argument", "model name")
        self.assertError(r("POST", "/v1/models", {"name": "a/b"}), 400, "invalid_argument")
        self.assertError(r("POST", "/v1/models", {"name": "x" * 200}), 400, "invalid_argument", "limit")
        self.assertError(r("POST", "/v1/models", {"name": "x", "tags": {"k": 1}}), 400,
                         "invalid_argument", "tag")
        self.assertError(r("GET", "/v1/models/..%2Fetc"), 400, "invalid_argument")
        big = {"name": "x", "description": "y" * (200 * 1024)}
        self.assertError(r("POST", "/v1/models", big), 413, "resource_exhausted")

    # -- versions -----------------------------------------------------------

    def test_versions(self):
        self.create_model()
        v1 = self.create_version(metrics={"auc": 0.91}, params={"eta": 0.1, "rounds": 100},
                                 tags={"stage": "candidate"}, dataset={"name": "adult", "version": 3},
                                 description="first")
        self.assertEqual(v1["version"], 1)
        self.assertEqual(v1["metrics"], {"auc": 0.91})
        self.assertEqual(v1["dataset"], {"name": "adult", "version": 3})
        self.assertTrue(v1["manifest_digest"].startswith("sha256:"))
        self.assertEqual(self.create_version()["version"], 2)
        st, _, body = self.reg.request("GET", "/v1/models/churn/versions/1")
        self.assertEqual((st, body["description"]), (200, "first"))
        st, _, body = self.reg.request("GET", "/v1/models/churn/versions/latest")
        self.assertEqual(body["version"], 2)
        st, _, body = self.reg.request("GET", "/v1/models/churn/versions")
        self.assertEqual([v["version"] for v in body["versions"]], [2, 1])
        st, _, body = self.reg.request("GET", "/v1/models/churn/versions?tag=stage:candidate")
        self.assertEqual([v["version"] for v in body["versions"]], [1])
        st, _, body = self.reg.request("GET", "/v1/models/churn/versions?limit=1")
        self.assertEqual([v["version"] for v in body["versions"]], [2])
        st, _, body = self.reg.request("GET", "/v1/models/churn/versions?limit=1&page_token="
                                       + body["next_page_token"])
        self.assertEqual([v["version"] for v in body["versions"]], [1])
        self.assertNotIn("next_page_token", body)

        st, _, body = self.reg.request("PATCH", "/v1/models/churn/versions/1",
                                       {"status": "deprecated", "tags": {"stage": None, "owner": "ana"}})
        self.assertEqual(st, 200, body)
        self.assertEqual((body["status"], body["tags"]), ("deprecated", {"owner": "ana"}))
        st, _, body = self.reg.request("GET", "/v1/models/churn/versions?status=deprecated")
        self.assertEqual([v["version"] for v in body["versions"]], [1])
        self.assertError(self.reg.request("PATCH", "/v1/models/churn/versions/1", {"status": "gone"}),
                         400, "invalid_argument", "status")

    def test_bad_version_requests(self):
        r = self.reg.request
        self.assertError(r("POST", "/v1/models/ghost/versions", {"manifest": self.manifest()}),
                         404, "not_found", "ghost")
        self.create_model()
        self.assertError(r("GET", "/v1/models/churn/versions/9"), 404, "not_found", "version 9")
        self.assertError(r("GET", "/v1/models/churn/versions/abc"), 400, "invalid_argument", "version")
        self.assertError(r("GET", "/v1/models/churn/versions/latest"), 404, "not_found", "no versions")
        m = self.manifest()
        self.assertError(r("POST", "/v1/models/churn/versions", {}), 400, "invalid_argument", "manifest")
        self.assertError(r("POST", "/v1/models/churn/versions", {"manifest": dict(m, format="v9")}),
                         400, "invalid_argument", "format")
        self.assertError(r("POST", "/v1/models/churn/versions", {"manifest": dict(m, kind="svm")}),
                         400, "invalid_argument", "kind")
        no_inputs = {k: v for k, v in m.items() if k != "inputs"}
        self.assertError(r("POST", "/v1/models/churn/versions", {"manifest": no_inputs}),
                         400, "invalid_argument", "inputs")
        bad_type = dict(m, inputs=[{"name": "x", "datatype": "FLOAT", "shape": [-1, 3]}])
        self.assertError(r("POST", "/v1/models/churn/versions", {"manifest": bad_type}),
                         400, "invalid_argument", "FLOAT")
        bad = dict(m, files={"model.json": "sha256:" + "a" * 70})
        self.assertError(r("POST", "/v1/models/churn/versions", {"manifest": bad}), 400,
                         "invalid_argument", "64")
        missing = dict(m, files={"model.json": sha(b"never uploaded")})
        self.assertError(r("POST", "/v1/models/churn/versions", {"manifest": missing}), 400,
                         "failed_precondition", "not stored")
        trav = dict(m, files={"../x": sha(b"weights")})
        self.assertError(r("POST", "/v1/models/churn/versions", {"manifest": trav}), 400,
                         "invalid_argument", "manifest file")
        self.assertError(r("POST", "/v1/models/churn/versions", {"manifest": m, "metrics": {"auc": "hi"}}),
                         400, "invalid_argument", "auc")
        # Nothing above created a version, and numbering starts at 1.
        self.assertEqual(self.create_version()["version"], 1)

    def test_50_concurrent_version_creations_are_gapless(self):
        self.create_model()
        manifest = self.manifest()
        results, errors = [], []

        def create():
            try:
                st, _, body = self.reg.request("POST", "/v1/models/churn/versions", {"manifest": manifest})
                (results if st == 201 else errors).append(body.get("version", body))
            except Exception as e:  # noqa: BLE001 - any failure is a test failure
                errors.append(repr(e))

        threads = [threading.Thread(target=create) for _ in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(sorted(results), list(range(1, 51)))
        st, _, body = self.reg.request("GET", "/v1/models/churn/versions?limit=1000")
        self.assertEqual(sorted(v["version"] for v in body["versions"]), list(range(1, 51)))

    # -- aliases ------------------------------------------------------------

    def test_aliases_move_atomically_and_publish(self):
        self.create_model()
        self.create_version()
        self.create_version()
        r = self.reg.request
        st, _, body = r("PUT", "/v1/models/churn/aliases/production", {"version": 1},
                        headers={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
        self.assertEqual((st, body["version"], body["previous_version"]), (200, 1, None))
        st, _, body = r("PUT", "/v1/models/churn/aliases/production", {"version": 2})
        self.assertEqual((body["version"], body["previous_version"]), (2, 1))
        st, _, body = r("PUT", "/v1/models/churn/aliases/production", {"version": 2})  # no-op
        self.assertEqual((st, body["previous_version"]), (200, 2))
        st, _, body = r("GET", "/v1/models/churn/aliases/production")
        self.assertEqual((st, body["version"]), (200, 2))
        st, _, body = r("GET", "/v1/models/churn")
        self.assertEqual(body["aliases"], {"production": 2})
        st, _, body = r("GET", "/v1/models/churn/versions/2")
        self.assertEqual(body["aliases"], ["production"])
        st, _, body = r("GET", "/v1/models/churn/aliases")
        self.assertEqual([a["alias"] for a in body["aliases"]], ["production"])

        st, _, body = r("GET", "/v1/events")
        evs = [e["event"] for e in body["events"]]
        self.assertEqual([e["type"] for e in evs], ["quern.model.promoted"] * 2)
        self.assertEqual(evs[0]["specversion"], "1.0")
        self.assertEqual(evs[0]["source"], "quern-registry")
        self.assertEqual(evs[0]["data"], {"model": "churn", "alias": "production", "version": 1,
                                          "previous_version": None})
        self.assertEqual(evs[1]["data"]["previous_version"], 1)
        self.assertTrue(evs[0]["traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-"))
        # The outbox drains to the bus (embedded sqlite bus under QUERN_HOME).
        for _ in range(100):
            st, _, body = r("GET", "/v1/events")
            if all(e["published"] for e in body["events"]):
                break
            time.sleep(0.05)
        self.assertTrue(all(e["published"] for e in body["events"]), body)
        st, _, body = r("GET", f"/v1/events?after={body['events'][0]['seq']}")
        self.assertEqual(len(body["events"]), 1)

        self.assertError(r("PUT", "/v1/models/churn/aliases/production", {"version": 7}), 404,
                         "not_found", "version 7")
        self.assertError(r("PUT", "/v1/models/churn/aliases/production", {"version": "2"}), 400,
                         "invalid_argument", "integer")
        self.assertError(r("PUT", "/v1/models/churn/aliases/latest", {"version": 1}), 400,
                         "invalid_argument", "reserved")
        self.assertError(r("PUT", "/v1/models/ghost/aliases/production", {"version": 1}), 404,
                         "not_found", "ghost")
        st, _, _ = r("DELETE", "/v1/models/churn/aliases/production")
        self.assertEqual(st, 204)
        self.assertError(r("GET", "/v1/models/churn/aliases/production"), 404, "not_found", "production")

    # -- datasets -----------------------------------------------------------

    def test_datasets(self):
        data = b"user,item,weight\n1,2,3\n"
        self.put_blob(data)
        manifest = {"format": "quern.dataset/1", "files": {"data.csv": sha(data)}, "rows": 1}
        r = self.reg.request
        st, _, v1 = r("POST", "/v1/datasets/retail/versions", {"manifest": manifest})
        self.assertEqual((st, v1["version"]), (201, 1), v1)
        st, _, v2 = r("POST", "/v1/datasets/retail/versions", {"manifest": manifest, "description": "again"})
        self.assertEqual(v2["version"], 2)
        st, _, body = r("GET", "/v1/datasets/retail/versions/latest")
        self.assertEqual(body["version"], 2)
        st, _, body = r("GET", "/v1/datasets/retail/versions/1")
        self.assertEqual(body["manifest"]["rows"], 1)
        st, _, body = r("GET", "/v1/datasets/retail/versions")
        self.assertEqual([v["version"] for v in body["versions"]], [2, 1])
        st, _, body = r("GET", "/v1/datasets")
        self.assertEqual([(d["name"], d["latest_version"]) for d in body["datasets"]], [("retail", 2)])
        self.assertError(r("GET", "/v1/datasets/nope/versions/1"), 404, "not_found", "nope")
        self.assertError(r("GET", "/v1/datasets/retail/versions/3"), 404, "not_found")
        self.assertError(r("POST", "/v1/datasets/retail/versions", {"manifest": {"format": "quern.model/1"}}),
                         400, "invalid_argument", "format")

    # -- blobs --------------------------------------------------------------

    def test_blob_roundtrip_range_and_idempotence(self):
        data = os.urandom(300_000)
        st, h, body = self.put_blob(data)
        self.assertEqual((st, body["digest"], body["size"]), (201, sha(data), len(data)))
        st, _, body = self.put_blob(data)
        self.assertEqual((st, body["created"]), (200, False))
        st, h, got = self.reg.request("GET", f"/v1/blobs/{sha(data)}", raw=True)
        self.assertEqual((st, got), (200, data))
        self.assertEqual(h["accept-ranges"], "bytes")
        st, h, got = self.reg.request("GET", f"/v1/blobs/{sha(data)}", headers={"Range": "bytes=100-199"},
                                      raw=True)
        self.assertEqual((st, got, h["content-range"]), (206, data[100:200], f"bytes 100-199/{len(data)}"))
        st, h, got = self.reg.request("GET", f"/v1/blobs/{sha(data)}", headers={"Range": "bytes=-10"}, raw=True)
        self.assertEqual((st, got), (206, data[-10:]))
        st, h, got = self.reg.request("GET", f"/v1/blobs/{sha(data)}", headers={"Range": "bytes=299990-"},
                                      raw=True)
        self.assertEqual((st, got), (206, data[299990:]))
        st, h, _ = self.reg.request("GET", f"/v1/blobs/{sha(data)}", headers={"Range": "bytes=999999-"})
        self.assertEqual((st, h["content-range"]), (416, f"bytes */{len(data)}"))
        st, h, got = self.reg.request("HEAD", f"/v1/blobs/{sha(data)}", raw=True)
        self.assertEqual((st, got, int(h["content-length"])), (200, b"", len(data)))
        st, _, body = self.put_blob(b"")
        self.assertEqual((st, body["size"]), (201, 0))

    def test_bad_blob_requests(self):
        data = b"hello"
        self.assertError(self.put_blob(data, sha(b"other")), 400, "invalid_argument", "not the")
        self.assertError(self.put_blob(data, "sha256:" + "a" * 70), 400, "invalid_argument", "64")
        self.assertError(self.put_blob(data, "sha256:" + "A" * 64), 400, "invalid_argument", "lower-case")
        self.assertError(self.put_blob(data, "md5:abc"), 400, "invalid_argument", "sha256:")
        self.assertError(self.reg.request("GET", "/v1/blobs/sha256:" + "a" * 70), 400, "invalid_argument")
        self.assertError(self.reg.request("GET", "/v1/blobs/..%2F..%2Fetc%2Fpasswd"), 400, "invalid_argument")
        self.assertError(self.reg.request("GET", "/v1/blobs/" + sha(b"absent")), 404, "not_found")
        # The mismatched upload left nothing behind.
        tmp = os.path.join(self.reg.data, "blobs", "tmp")
        self.assertEqual(os.listdir(tmp), [])
        self.assertError(self.reg.request("GET", "/v1/blobs/" + sha(b"other")), 404, "not_found")

    def test_large_blob_streams_in_bounded_memory(self):
        size = 256 * 1024 * 1024
        chunk = os.urandom(1 << 20)
        h = hashlib.sha256()
        for _ in range(size // len(chunk)):
            h.update(chunk)
        digest = "sha256:" + h.hexdigest()

        class Body:
            def __init__(self):
                self.left = size // len(chunk)

            def read(self, n=-1):
                if self.left == 0:
                    return b""
                self.left -= 1
                return chunk

        st, _, body = self.reg.request("PUT", f"/v1/blobs/{digest}", body=Body(),
                                       headers={"Content-Length": str(size)}, timeout=300)
        self.assertEqual((st, body["size"]), (201, size), body)
        with open(f"/proc/{self.reg.proc.pid}/status") as f:
            rss_kb = int([l for l in f if l.startswith("VmHWM")][0].split()[1])
        self.assertLess(rss_kb, 100 * 1024, "the registry held the blob in memory")
        st, h2, _ = self.reg.request("HEAD", f"/v1/blobs/{digest}")
        self.assertEqual(int(h2["content-length"]), size)

    def test_kill9_during_upload_leaves_nothing_and_keeps_committed_data(self):
        self.create_model()
        v = self.create_version()
        data = os.urandom(8 << 20)
        s = socket.create_connection(("127.0.0.1", self.reg.port))
        s.sendall(f"PUT /v1/blobs/{sha(data)} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n"
                  "Content-Type: application/octet-stream\r\n\r\n".encode())
        s.sendall(data[: len(data) // 2])
        time.sleep(0.5)
        self.reg.kill9()
        s.close()
        self.reg.start()
        self.assertError(self.reg.request("GET", f"/v1/blobs/{sha(data)}"), 404, "not_found")
        self.assertEqual(os.listdir(os.path.join(self.reg.data, "blobs", "tmp")), [])
        st, _, body = self.reg.request("GET", "/v1/models/churn/versions/1")
        self.assertEqual((st, body["manifest_digest"]), (200, v["manifest_digest"]))
        st, _, body = self.reg.request("GET", f"/v1/blobs/{v['manifest']['files']['model.json']}", raw=True)
        self.assertEqual((st, body), (200, b"weights"))

    # -- operations ---------------------------------------------------------

    def test_health_metrics_and_promtool(self):
        self.create_model()
        self.reg.request("GET", "/v1/models/ghost")
        st, _, body = self.reg.request("GET", "/healthz")
        self.assertEqual(st, 200)
        st, _, body = self.reg.request("GET", "/readyz")
        self.assertEqual(st, 200)
        # A request is counted once the server reports it complete, a moment
        # after the client read it: scrape until the 404 above shows.
        for _ in range(100):
            st, h, text = self.reg.request("GET", "/metrics", raw=True)
            if b'code="404"' in text:
                break
            time.sleep(0.02)
        self.assertEqual(st, 200)
        self.assertTrue(h["content-type"].startswith("text/plain"))
        text = text.decode()
        self.assertIn('route="/v1/models/{name}"', text)
        self.assertNotIn('route="/v1/models/ghost"', text)
        self.assertIn("quern_http_request_duration_seconds_bucket", text)
        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool, "promtool missing: run make deps")
        p = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True)
        self.assertEqual(p.returncode, 0, p.stdout.decode() + p.stderr.decode())

    def test_sigterm_exits_zero(self):
        self.assertEqual(self.reg.stop(), 0)

    def test_auth_on_mutations(self):
        reg = self.start("registry", env={"QUERN_TOKEN": "s3cret"})
        self.assertError(reg.request("POST", "/v1/models", {"name": "a"}), 401, "unauthenticated")
        self.assertError(reg.request("POST", "/v1/models", {"name": "a"},
                                     headers={"Authorization": "Bearer wrong"}), 401, "unauthenticated")
        st, _, _ = reg.request("POST", "/v1/models", {"name": "a"}, headers={"Authorization": "Bearer s3cret"})
        self.assertEqual(st, 201)
        st, _, _ = reg.request("GET", "/v1/models/a")
        self.assertEqual(st, 200)

    def test_help_and_bad_flags(self):
        exe = os.path.join(os.environ.get("QUERN_BIN", "build/bin"), "quern-registry")
        p = subprocess.run([exe, "--help"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0)
        for flag in ("--listen", "--data", "--bus", "--registry", "--log-level", "QUERN_LISTEN"):
            self.assertIn(flag, p.stdout)
        p = subprocess.run([exe, "--threads", "0"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 2)
        self.assertIn("threads", p.stderr)
        p = subprocess.run([exe, "--bogus"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 2)
        self.assertIn("bogus", p.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
