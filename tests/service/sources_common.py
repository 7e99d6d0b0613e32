"""sources_common.py - what the pull-source tests share (tests/service and
tests/faults): reading a dataset back whole, running a source and waiting,
and a local HTTP server serving pages the test defines.

Standard library only. The HTTP server listens on 127.0.0.1 on an ephemeral
port in a thread of the test process and is shut down by the test.
"""
import http.server
import json
import threading
import time


def read_all(ingest, dataset):
    """Every row of dataset in seq order: (rows, seqs)."""
    rows, seqs, after = [], [], 0
    while True:
        st, _, body = ingest.request("GET", f"/v1/datasets/{dataset}/events?after={after}&limit=10000")
        if st == 404:
            return rows, seqs
        assert st == 200, body
        for e in body["events"]:
            rows.append(e["data"])
            seqs.append(e["seq"])
        if not body["events"]:
            return rows, seqs
        after = body["next_after"]


def put(ingest, name, spec):
    return ingest.request("PUT", f"/v1/sources/{name}", spec)


def run(ingest, name, timeout=120):
    """Runs the source now and waits for the run's end; returns the run."""
    st, _, body = ingest.request("POST", f"/v1/sources/{name}/runs?wait=true", timeout=timeout)
    assert st in (200, 202), (st, body)
    deadline = time.time() + timeout
    while body["status"] == "running" and time.time() < deadline:
        time.sleep(0.1)
        body = last_run(ingest, name)
    return body


def last_run(ingest, name):
    st, _, body = ingest.request("GET", f"/v1/sources/{name}/runs?limit=1")
    assert st == 200, body
    return body["runs"][0] if body["runs"] else None


def metric(ingest, name, **labels):
    st, _, text = ingest.request("GET", "/metrics", raw=True)
    total = None
    for line in text.decode().splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total = (total or 0) + float(line.rsplit(" ", 1)[1])
    return total


class Pages:
    """A local HTTP server: handler(path, headers) -> (status, headers dict, body bytes)."""

    def __init__(self, handler):
        self.handler = handler
        self.requests = []
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append((self.path, dict(self.headers)))
                status, hdrs, body = outer.handler(self.path, self.headers)
                self.send_response(status)
                for k, v in hdrs.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def json_body(obj):
    return json.dumps(obj).encode()
