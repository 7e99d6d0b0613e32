#!/usr/bin/python3
"""setup.py - the browser suite's world: every service and quern-console on
free ports with real data flowing, left running for the Node driver.

It runs scripts/demo.py on a deterministic subset of Online Retail (every 3rd
customer): ingest, prep, train version 1, serve, predictions, a control and a
shifted monitor window (a drift report), the alert and its retrain (version
2). QUERN_TOKEN is set, so every mutating call (the console's promote too)
needs it. Prints one JSON line: {"home", "base", "console", "token"}; stop
everything with `QUERN_HOME=<home> QUERN_PORT_BASE=<base> quern down`.
"""
import json
import os
import random
import socket
import subprocess
import sys
import tempfile

ROOT = os.environ.get("QUERN_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
WORK = os.environ.get("QUERN_TEST_WORK", tempfile.gettempdir())


def free_base():
    for _ in range(200):
        base = random.randrange(20000, 60000, 10)
        socks = []
        try:
            for off in range(10):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + off))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def main():
    home = tempfile.mkdtemp(prefix="quern-browser-", dir=WORK)
    base = free_base()
    token = "browser-suite-token"
    env = dict(os.environ, QUERN_DEMO_HOME=home, QUERN_PORT_BASE=str(base), QUERN_TOKEN=token, DEMO_KEEP="1")
    p = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "demo.py"), "--subset", "3", "--json",
                        "--keep"], env=env, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-3000:] + p.stderr[-3000:])
        sys.exit(1)
    print(json.dumps({"home": home, "base": base, "console": f"http://127.0.0.1:{base + 9}", "token": token,
                      "story": json.loads(p.stdout)}))


if __name__ == "__main__":
    main()
