"""test_slow_body.py - a request body must keep coming (libquern-core's HTTP server).

libmicrohttpd's idle timeout restarts on every byte, so a client that sends
its body a few bytes at a time used to hold a worker and a connection for as
long as it liked (the head had a deadline; the body had none). The rule now,
Apache mod_reqtimeout's: the head's deadline to start, then one more second
per 500 bytes. On quern-registry with --header-timeout 2s:
- a body trickled at 40 bytes/s gets 408 deadline_exceeded naming the rate
  to keep, soon after the 2 s, on a connection the server then closes; the
  model it described is not created; the service answers others meanwhile;
- a body sent slowly but steadily (1,000 bytes/s, 4 s in all: twice the head
  deadline) is taken whole and answered 201.
"""
import json
import os
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import ServiceTest  # noqa: E402


def padded_model(name, size):
    """A valid POST /v1/models body of exactly size bytes (JSON whitespace pads it)."""
    body = json.dumps({"name": name}).encode()
    return body[:-1] + b" " * (size - len(body)) + b"}"


class SlowBody(ServiceTest):
    def setUp(self):
        super().setUp()
        self.reg = self.start("registry", args=["--header-timeout", "2s"])

    def send_slowly(self, body, chunk, every, deadline):
        """Sends the head at once, then body in pieces of chunk bytes every
        `every` seconds until the server answers or closes. Returns (status
        line, parsed JSON body or None, seconds from the first byte, whether
        the whole body went out)."""
        s = socket.create_connection(("127.0.0.1", self.reg.port), timeout=deadline)
        head = (f"POST /v1/models HTTP/1.1\r\nHost: registry\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        t0 = time.monotonic()
        s.sendall(head)
        sent, answer = 0, b""
        s.setblocking(False)
        try:
            while time.monotonic() - t0 < deadline:
                try:
                    got = s.recv(65536)
                    if not got:
                        break
                    answer += got
                    if b"\r\n\r\n" in answer:
                        h, _, rest = answer.partition(b"\r\n\r\n")
                        clen = [int(l.split(b":")[1]) for l in h.split(b"\r\n") if l.lower().startswith(b"content-length:")]
                        if clen and len(rest) >= clen[0]:
                            break
                except BlockingIOError:
                    pass
                if sent < len(body):
                    try:
                        sent += s.send(body[sent:sent + chunk])
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                time.sleep(every)
        finally:
            took = time.monotonic() - t0
            s.close()
        h, _, rest = answer.partition(b"\r\n\r\n")
        status = h.split(b"\r\n")[0].decode() if h else ""
        try:
            doc = json.loads(rest) if rest else None
        except ValueError:
            doc = None
        return status, doc, took, sent == len(body)

    def test_trickled_body_is_cut_with_408(self):
        status, doc, took, whole = self.send_slowly(padded_model("trickled", 2000), 20, 0.5, 30)
        self.assertIn(" 408 ", status, (status, doc))
        self.assertEqual(doc["error"]["code"], "deadline_exceeded", doc)
        self.assertIn("too slowly", doc["error"]["message"])
        self.assertIn("500 bytes a second", doc["error"]["message"])
        self.assertFalse(whole, "the whole body went out: the deadline did not cut it")
        self.assertLess(took, 10, f"cut only after {took:.1f} s")
        self.assertEqual(self.reg.request("GET", "/v1/models/trickled")[0], 404)
        self.assertEqual(self.reg.request("GET", "/healthz")[0], 200)

    def test_slow_steady_body_is_taken(self):
        status, doc, took, whole = self.send_slowly(padded_model("steady", 4000), 250, 0.25, 30)
        self.assertIn(" 201 ", status, (status, doc))
        self.assertTrue(whole)
        self.assertGreater(took, 3.0, "the body went too fast to prove anything")
        self.assertEqual(self.reg.request("GET", "/v1/models/steady")[0], 200)


if __name__ == "__main__":
    unittest.main()
