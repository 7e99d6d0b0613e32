"""test_http_content_length.py - a malformed Content-Length gets our JSON
error, not libmicrohttpd's HTML page (docs/operations.md, "The request
framing").

libmicrohttpd 0.9.75 refuses a Content-Length that is not all digits (or is
past 2^64) itself, before any handler of ours runs; src/core/http.c answers
it from libmicrohttpd's error log instead (see "a malformed Content-Length"
there). Each request goes over a raw socket (python's http.client would
not send such headers), to a real quern-registry (the {"error":{"code",
"message"}} shape) and to a real quern-serve's OIP route (the
{"error":"..."} shape).

It asserts: "12abc", "-1", "abc", "+8", "0x8", "8 " and an empty value are
each a 400 invalid_argument naming the value, a value past 2^64 a 413
resource_exhausted, all as application/json with Connection: close and
X-Request-Id, and nothing after the JSON body but the end of the connection
(no HTML page, no second status line); on serve's /v2 infer route the body
is the OIP {"error":"..."}; two different Content-Length headers are a JSON
400 too; the same bad request as the second one of a kept-alive connection
gets the same answer; while other connections sit with half-sent heads (a
valid Content-Length, the blank line not yet sent), the bad request still
gets the JSON answer and those connections get nothing until they finish
their heads, then their own answers; with half-sent heads whose
Content-Length is bad too (where the server cannot always tell which
connection libmicrohttpd is refusing), nothing ever reaches the wrong
connection and every one of them gets a 400; the server answers normally
afterwards. Run by /usr/bin/python3.
"""
import json
import os
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import ServiceTest  # noqa: E402

BAD = ["12abc", "-1", "abc", "+8", "0x8", "8 ", ""]
HUGE = "99999999999999999999999"


def connect(port):
    return socket.create_connection(("127.0.0.1", port), timeout=30)


def read_all(sock, timeout=30):
    """Everything the server sends until it closes the connection."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.time() + timeout
    while time.time() < deadline:
        b = sock.recv(65536)
        if not b:
            return data
        data += b
    raise AssertionError(f"the connection was not closed within {timeout} s: {data[:300]!r}")


def read_one(sock, timeout=30):
    """One response (head and Content-Length body); the rest stays unread."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        b = sock.recv(65536)
        if not b:
            raise AssertionError(f"the connection closed mid-response: {data!r}")
        data += b
    head, _, body = data.partition(b"\r\n\r\n")
    n = int(parse_head(head)[1]["content-length"])
    while len(body) < n:
        b = sock.recv(65536)
        if not b:
            break
        body += b
    return head, body[:n]


def parse_head(head):
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs


def request(path, lengths, body=b'{"a":1}'):
    r = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()
    for v in lengths:
        r += f"Content-Length: {v}\r\n".encode()
    return r + b"\r\n" + body


class ContentLengthTest(ServiceTest):
    def setUp(self):
        super().setUp()
        self.reg = self.start("registry")

    def check_answer(self, raw, status, code, value, oip=False):
        """raw: all the bytes one connection received; exactly one JSON answer."""
        self.assertTrue(raw.startswith(b"HTTP/1.1 "), raw[:200])
        head, sep, body = raw.partition(b"\r\n\r\n")
        self.assertTrue(sep, raw[:300])
        st, h = parse_head(head)
        self.assertEqual(st, status, raw[:400])
        self.assertEqual(h.get("content-type"), "application/json", raw[:400])
        self.assertEqual(h.get("connection", "").lower(), "close", raw[:400])
        self.assertTrue(h.get("x-request-id"), raw[:400])
        # the whole rest of the stream is the body: no HTML, no second answer
        self.assertEqual(len(body), int(h["content-length"]), raw[:600])
        self.assertNotIn(b"<html>", raw)
        self.assertEqual(raw.count(b"HTTP/1.1 "), 1, raw[:600])
        doc = json.loads(body)
        if oip:
            self.assertEqual(set(doc), {"error"}, doc)
            msg = doc["error"]
            self.assertIsInstance(msg, str, doc)
        else:
            self.assertEqual(doc["error"]["code"], code, doc)
            msg = doc["error"]["message"]
        self.assertIn("Content-Length", msg)
        if value:
            self.assertIn(value, msg)
        return msg

    def bad_once(self, port, path, value, oip=False):
        s = connect(port)
        try:
            s.sendall(request(path, [value]))
            raw = read_all(s)
        finally:
            s.close()
        if value == HUGE:
            return self.check_answer(raw, 413, "resource_exhausted", value, oip)
        return self.check_answer(raw, 400, "invalid_argument", value.strip(), oip)

    def test_1_malformed_values_are_json(self):
        for v in BAD + [HUGE]:
            with self.subTest(value=v):
                msg = self.bad_once(self.reg.port, "/v1/models", v)
                if v != HUGE:
                    self.assertIn("decimal digits", msg)
        # two different Content-Length headers: checked by the server itself
        s = connect(self.reg.port)
        s.sendall(request("/v1/models", ["7", "9"]))
        raw = read_all(s)
        s.close()
        self.check_answer(raw, 400, "invalid_argument", "2 Content-Length headers")
        # and the server goes on answering
        st, _, body = self.reg.request("POST", "/v1/models", {"name": "after"})
        self.assertEqual(st, 201, body)
        self.assertNoSanitizerReports()

    def test_2_second_request_of_a_kept_alive_connection(self):
        s = connect(self.reg.port)
        try:
            s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
            head, _ = read_one(s)
            self.assertEqual(parse_head(head)[0], 200)
            s.sendall(request("/v1/models", ["12abc"]))
            raw = read_all(s)
        finally:
            s.close()
        self.check_answer(raw, 400, "invalid_argument", "12abc")

    def test_3_half_sent_heads_elsewhere(self):
        port = self.reg.port
        # other connections with a valid Content-Length and no blank line yet
        # (enough of them that every worker thread holds some)
        waiting = []
        for i in range(12):
            w = connect(port)
            w.sendall(b"POST /v1/models HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 16\r\n")
            waiting.append(w)
        time.sleep(0.3)
        for v in ("12abc", "-1"):
            self.bad_once(port, "/v1/models", v)
        for i, w in enumerate(waiting):
            w.settimeout(0.2)
            try:
                got = w.recv(100)
            except socket.timeout:
                got = None
            self.assertIsNone(got, f"a half-sent head got {got!r}")
            w.sendall(b"\r\n" + json.dumps({"name": f"w{i:02d}"}).encode().ljust(16))
            head, body = read_one(w)
            self.assertEqual(parse_head(head)[0], 201, body)
            w.close()

        # half-sent heads whose Content-Length is bad too: the server may not
        # tell them apart from the request it is refusing (then libmicrohttpd's
        # own page stands), but nothing may reach the wrong connection
        waiting = []
        for i in range(8):
            w = connect(port)
            w.sendall(b"POST /v1/models HTTP/1.1\r\nHost: x\r\nContent-Length: 5x\r\n")
            waiting.append(w)
        time.sleep(0.3)
        s = connect(port)
        s.sendall(request("/v1/models", ["12abc"]))
        raw = read_all(s)
        s.close()
        self.assertTrue(raw.startswith(b"HTTP/1.1 400 "), raw[:300])
        if b"application/json" in raw:
            self.check_answer(raw, 400, "invalid_argument", "12abc")
        for w in waiting:
            w.settimeout(0.2)
            try:
                got = w.recv(100)
            except socket.timeout:
                got = None
            self.assertIsNone(got, f"a half-sent head got {got!r}")
        for w in waiting:
            w.sendall(b"\r\n")
            raw = read_all(w)
            w.close()
            self.assertTrue(raw.startswith(b"HTTP/1.1 400 "), raw[:300])
            if b"application/json" in raw:
                self.check_answer(raw, 400, "invalid_argument", "5x")
        st, _, body = self.reg.request("GET", "/v1/models")
        self.assertEqual(st, 200, body)
        self.assertNoSanitizerReports()

    def test_4_oip_route_shape(self):
        serve = self.start("serve", args=["--registry", f"http://127.0.0.1:{self.reg.port}",
                                          "--grpc-listen", "off", "--poll-interval", "60s"])
        for v in ("12abc", HUGE):
            with self.subTest(value=v):
                self.bad_once(serve.port, "/v2/models/m/infer", v, oip=True)
        self.assertNoSanitizerReports()


if __name__ == "__main__":
    unittest.main()
