"""Black-box tests of quern-registry's POST /v1/blobs (a blob whose digest the
client learns only at the end: sent chunked, as prep streams its output CSV):
stored under the digest of what arrived, answered with it; the same bytes
again are "already stored"; an empty body is the empty blob; a blob over
--max-blob-size is refused (413) and nothing is left behind; a client that
hangs up mid-way leaves no blob and no temp file."""
import hashlib
import http.client
import os
import socket
import time
import unittest

from harness import ServiceTest


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chunks(data, size):
    for i in range(0, len(data), size):
        yield data[i:i + size]


class BlobPostTest(ServiceTest):
    def post_chunked(self, reg, data, size=65536):
        conn = http.client.HTTPConnection("127.0.0.1", reg.port, timeout=60)
        try:
            conn.request("POST", "/v1/blobs", body=chunks(data, size),
                         headers={"Content-Type": "application/octet-stream"}, encode_chunked=True)
            resp = conn.getresponse()
            return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), resp.read()
        finally:
            conn.close()

    def tmp_files(self, reg):
        return os.listdir(os.path.join(reg.data, "blobs", "tmp"))

    def test_chunked_post_stores_under_its_digest(self):
        import json
        reg = self.start("registry")
        data = os.urandom(3 * 1024 * 1024 + 17)
        st, h, body = self.post_chunked(reg, data)
        self.assertEqual(st, 201, body)
        ans = json.loads(body)
        self.assertEqual(ans, {"digest": sha(data), "size": len(data), "created": True})
        self.assertEqual(h["location"], f"/v1/blobs/{sha(data)}")
        st, _, got = reg.request("GET", f"/v1/blobs/{sha(data)}", raw=True)
        self.assertEqual(st, 200)
        self.assertEqual(got, data)
        # The same bytes again, in other chunk sizes: already stored.
        st, _, body = self.post_chunked(reg, data, size=1000)
        self.assertEqual(st, 200, body)
        self.assertEqual(json.loads(body)["created"], False)
        # With a Content-Length instead of chunks: the same route.
        st, _, body = reg.request("POST", "/v1/blobs", body=b"abc",
                                  headers={"Content-Type": "application/octet-stream"})
        self.assertEqual(st, 201, body)
        self.assertEqual(body["digest"], sha(b"abc"))
        # An empty body is the empty blob.
        st, _, body = self.post_chunked(reg, b"")
        self.assertIn(st, (200, 201), body)
        self.assertEqual(json.loads(body)["digest"], sha(b""))
        self.assertEqual(self.tmp_files(reg), [])
        self.assertNoSanitizerReports()

    def test_too_large_and_cut_short_leave_nothing(self):
        reg = self.start("registry", args=["--max-blob-size", "1M"])
        data = os.urandom(2 * 1024 * 1024)
        st, _, body = self.post_chunked(reg, data)
        self.assertEqual(st, 413, body)
        st, _, _ = reg.request("GET", f"/v1/blobs/{sha(data)}")
        self.assertEqual(st, 404)
        # A client that stops half-way through a chunked body.
        s = socket.create_connection(("127.0.0.1", reg.port), timeout=30)
        s.sendall(b"POST /v1/blobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Type: application/octet-stream\r\n\r\n" + b"10000\r\n" + b"x" * 30000)
        time.sleep(0.3)
        s.close()
        deadline = time.time() + 20
        while self.tmp_files(reg) and time.time() < deadline:
            time.sleep(0.1)
        self.assertEqual(self.tmp_files(reg), [])
        st, _, _ = reg.request("GET", "/readyz")
        self.assertEqual(st, 200)
        self.assertNoSanitizerReports()


if __name__ == "__main__":
    unittest.main()
