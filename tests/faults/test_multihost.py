"""Multi-host: Quern across five "hosts" (Linux network namespaces made here),
then one host cut off and restored.

Topology, all of it created by this test and removed at its end (also on
failure or interrupt): a namespace holding a bridge, and one namespace per
host, each with a veth whose other end is on the bridge. Addresses exist only
inside these namespaces, on 10.77.0.0/24 (the root namespace gets none):

    infra 10.77.0.10  RabbitMQ + PostgreSQL (tests/unit/core/run_bus_amqp.sh and
                      run_store_pg.sh with QUERN_TEST_BIND)
    core  10.77.0.11  quern-registry
    data  10.77.0.12  quern-ingest, quern-prep
    ml    10.77.0.13  quern-train
    edge  10.77.0.14  quern-serve, quern-monitor, quern-alert
    ctl   10.77.0.2   the test's own client (this script re-runs itself there)

Every service has its own --data dir, --bus amqp://10.77.0.10, and (all but
serve) --db postgres://10.77.0.10/...?schema=<service>; serve, prep, train and
monitor reach the registry at http://10.77.0.11:7701.

The loop: a synthetic interactions CSV ingested (data), a prep run making
dataset version 1 (data -> core), ALS trained and promoted (ml -> core), serve
answering /recommend with version 1 (edge). Then edge is cut off (its veth's
bridge end set down) while more rows are ingested and a second job promotes
version 2. Serve's promotion events come only from the bus (--poll-interval
1h). Asserted:
- during the cut, serve keeps answering local clients on edge from version 1
  (zero failures);
- after the link is back, serve catches up to version 2: the quern.model.promoted
  the bus accepted during the cut reached it (nothing acknowledged was lost);
- a test consumer subscribed before the cut received every event acknowledged
  meanwhile (each ingested batch's quern.events.ingested, the promotion);
- every acknowledged ingest batch is stored exactly once.

Needs root (CAP_NET_ADMIN) and iproute2: without them the test FAILS (it
never skips), since CI must run it.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import http.client

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from faults import TOOLS, BIN, WORK, als_job, interactions_csv, metric, wait_for  # noqa: E402

HOSTS = {"ctl": 2, "infra": 10, "core": 11, "data": 12, "ml": 13, "edge": 14}
NET = "10.77.0"


def ip_of(host):
    return f"{NET}.{HOSTS[host]}"


def sh(*cmd, check=True):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


class Net:
    """The namespaces and links; delete() removes them and stops what runs in them."""

    def __init__(self, tag):
        self.tag = tag
        self.made = []

    def ns(self, host):
        return f"qf{self.tag}-{host}"

    def create(self):
        br = self.ns("br")
        sh("ip", "netns", "add", br)
        self.made.append(br)
        sh("ip", "netns", "exec", br, "ip", "link", "set", "lo", "up")
        sh("ip", "netns", "exec", br, "ip", "link", "add", "br0", "type", "bridge")
        sh("ip", "netns", "exec", br, "ip", "link", "set", "br0", "up")
        for host, n in HOSTS.items():
            ns = self.ns(host)
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
            # Both ends are born inside our namespaces: nothing touches the root one.
            sh("ip", "netns", "exec", ns, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", f"b{n}",
               "netns", br)
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ip_of(host)}/24", "dev", "eth0")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            sh("ip", "netns", "exec", br, "ip", "link", "set", f"b{n}", "master", "br0")
            sh("ip", "netns", "exec", br, "ip", "link", "set", f"b{n}", "up")

    def link(self, host, up):
        sh("ip", "netns", "exec", self.ns("br"), "ip", "link", "set", f"b{HOSTS[host]}", "up" if up else "down")

    def delete(self):
        # Processes first (by PID, only those inside our namespaces), then the namespaces.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = []
            for ns in self.made:
                out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
                pids += [int(p) for p in out.split()]
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            if pids and sig == signal.SIGTERM:
                for _ in range(100):
                    if not any(os.path.exists(f"/proc/{p}") for p in pids):
                        break
                    time.sleep(0.1)
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.made = []


# ---- the outer run (root namespace): make the network, run the test inside ctl ----

def outer():
    if os.geteuid() != 0:
        print("test_multihost: FAILED: needs root (CAP_NET_ADMIN) to create network namespaces", file=sys.stderr)
        return 1
    try:
        sh("ip", "-V")
    except (OSError, RuntimeError) as e:
        print(f"test_multihost: FAILED: iproute2 is missing ({e}); scripts/deps.sh installs it", file=sys.stderr)
        return 1
    net = Net(f"{os.getpid() % 100000}")

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        net.create()
        env = dict(os.environ, QF_TAG=net.tag)
        p = subprocess.run(["ip", "netns", "exec", net.ns("ctl"), sys.executable, os.path.abspath(__file__),
                            "--inner"], env=env)
        return p.returncode
    except RuntimeError as e:
        print(f"test_multihost: FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        net.delete()
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        if f"qf{net.tag}-" in left:
            print(f"test_multihost: namespaces left behind: {left}", file=sys.stderr)


# ---- the inner run (ctl namespace) ------------------------------------------------

class HostService:
    """A service binary started inside a host's namespace on a fixed address."""

    def __init__(self, net, host, name, port, home, args):
        self.net, self.host, self.name, self.port = net, host, name, port
        self.addr = ip_of(host)
        self.data = os.path.join(home, host, name)
        os.makedirs(self.data, exist_ok=True)
        self.args = args
        self.proc = None
        self.log_path = os.path.join(self.data, f"{name}.log")

    @property
    def url(self):
        return f"http://{self.addr}:{self.port}"

    def start(self, timeout=30):
        log = open(self.log_path, "ab")
        cmd = ["ip", "netns", "exec", self.net.ns(self.host), os.path.join(BIN, f"quern-{self.name}"),
               "--listen", f"{self.addr}:{self.port}", "--data", self.data] + self.args
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=dict(os.environ, QUERN_HOME=self.data))
        log.close()
        wait_for(f"{self.name} on {self.host} to answer /healthz",
                 lambda: self.proc.poll() is None and self.request("GET", "/healthz", timeout=2)[0] == 200
                 or self._dead(), timeout=timeout)
        return self

    def _dead(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.log()[-3000:]}")
        return False

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def request(self, method, path, body=None, headers=None, timeout=30):
        conn = http.client.HTTPConnection(self.addr, self.port, timeout=timeout)
        hdrs = dict(headers or {})
        if body is not None and not isinstance(body, (bytes, bytearray)):
            body = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        if resp.getheader("Content-Type", "").startswith("application/json") and data:
            return resp.status, json.loads(data)
        return resp.status, data

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None


def events_tool(*args):
    p = subprocess.run([os.path.join(TOOLS, "quern-events"), *args], capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise AssertionError(f"quern-events {args[0]}: {p.stderr}")
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


LOCAL_CLIENT = r"""
import http.client, json, sys, threading, time
addr, port = sys.argv[1], int(sys.argv[2])
ok = failed = 0
versions = set()
errors = []
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
while not stop.is_set():
    try:
        c = http.client.HTTPConnection(addr, port, timeout=5)
        c.request("GET", "/v1/models/recs/recommend?user=u%d&k=5" % (ok % 40))
        r = c.getresponse()
        body = r.read()
        c.close()
        if r.status == 200:
            ok += 1
            versions.add(json.loads(body)["version"])
        else:
            failed += 1
            errors.append(r.status)
    except Exception as e:
        failed += 1
        errors.append(repr(e))
    time.sleep(0.01)
print(json.dumps({"ok": ok, "failed": failed, "versions": sorted(versions), "errors": errors[:5]}))
"""


class MultiHostTest(unittest.TestCase):
    def setUp(self):
        self.net = Net(os.environ["QF_TAG"])
        self.home = tempfile.mkdtemp(prefix="quern-multihost-", dir=WORK)
        self.services = []
        self.infra = None

    def tearDown(self):
        for s in reversed(self.services):
            rc = s.stop()
            if rc not in (0, None):
                print(f"{s.name} exited {rc}; log tail:\n{s.log()[-1500:]}", file=sys.stderr)
        if self.infra:
            self.infra.stdin.close()  # the holder exits; the scripts stop PostgreSQL and RabbitMQ
            try:
                self.infra.wait(60)
            except subprocess.TimeoutExpired:
                self.infra.kill()
        if not os.environ.get("QUERN_KEEP"):
            subprocess.run(["rm", "-rf", self.home])

    def start_infra(self):
        info = os.path.join(self.home, "infra.json")
        scripts = os.path.join(HERE, "..", "unit", "core")
        hold = ("import json, os, sys; json.dump({'amqp': os.environ['QUERN_TEST_AMQP'], "
                "'pg': os.environ['QUERN_TEST_PG']}, open(sys.argv[1] + '.tmp', 'w')); "
                "os.rename(sys.argv[1] + '.tmp', sys.argv[1]); sys.stdin.read()")
        log = open(os.path.join(self.home, "infra.log"), "ab")
        self.infra = subprocess.Popen(
            ["ip", "netns", "exec", self.net.ns("infra"), "bash", os.path.join(scripts, "run_bus_amqp.sh"),
             "bash", os.path.join(scripts, "run_store_pg.sh"), "/usr/bin/python3", "-c", hold, info],
            stdin=subprocess.PIPE, stdout=log, stderr=log, env=dict(os.environ, QUERN_TEST_BIND=ip_of("infra")))
        log.close()

        def ready():
            if self.infra.poll() is not None:
                raise AssertionError("infra exited:\n" + open(os.path.join(self.home, "infra.log")).read()[-3000:])
            return os.path.exists(info)
        wait_for("RabbitMQ and PostgreSQL on infra", ready, timeout=120)
        with open(info) as f:
            return json.load(f)

    def svc(self, host, name, port, args):
        s = HostService(self.net, host, name, port, self.home, args).start()
        self.services.append(s)
        return s

    def test_loop_across_hosts_and_a_partition(self):
        t0 = time.time()
        infra = self.start_infra()
        amqp, pg = infra["amqp"], infra["pg"]
        reg_url = f"http://{ip_of('core')}:7701"

        def common(name):
            return ["--bus", amqp, "--db", f"{pg}?schema={name}"]

        reg = self.svc("core", "registry", 7701, common("registry"))
        ing = self.svc("data", "ingest", 7702, common("ingest"))
        prep = self.svc("data", "prep", 7703, common("prep") + ["--registry", reg_url, "--ingest", ing.url])
        tr = self.svc("ml", "train", 7704, common("train") + ["--registry", reg_url])
        sv = self.svc("edge", "serve", 7705, ["--bus", amqp, "--registry", reg_url, "--models", "recs",
                                              "--grpc-listen", "off", "--poll-interval", "1h"])
        self.svc("edge", "monitor", 7707, common("monitor") + ["--registry", reg_url])
        self.svc("edge", "alert", 7708, common("alert"))
        for topic in ("quern.events.ingested", "quern.model.promoted"):
            events_tool("subscribe", amqp, "faults-mh-" + topic.split(".")[1], topic)
        t_up = time.time() - t0

        # The loop: ingest -> prep -> train -> serve.
        def ingest(key, data):
            st, ans = ing.request("POST", "/v1/datasets/interactions/events", body=data,
                                  headers={"Content-Type": "text/csv", "Idempotency-Key": key})
            self.assertIn(st, (200, 201), ans)
            return ans
        acked = {"b1": ingest("b1", interactions_csv())}
        st, body = prep.request("PUT", "/v1/pipelines/clean", {
            "source": "interactions", "output": "interactions-clean",
            "steps": [{"op": "drop_missing", "columns": ["user", "item"]}],
            "schema": {"columns": [{"name": "weight", "type": "numeric"}]}, "trigger": {"kind": "manual"}})
        self.assertIn(st, (200, 201), body)

        def run_prep():
            st, run = prep.request("POST", "/v1/pipelines/clean/runs", {})
            self.assertEqual(st, 202, run)
            run = wait_for("the prep run", lambda: (lambda r: r if r[1]["state"] in ("succeeded", "failed")
                                                      else None)(prep.request(
                "GET", f"/v1/pipelines/clean/runs/{run['run_id']}")), timeout=120)[1]
            self.assertEqual(run["state"], "succeeded", run)
            return run

        def train(seed):
            st, job = tr.request("POST", "/v1/jobs", als_job("recs", "interactions-clean", params={
                "factors": 8, "iterations": 5, "regularization": 0.05, "alpha": 5, "seed": seed}))
            self.assertEqual(st, 202, job)
            job = wait_for("the training job", lambda: (lambda j: j if j[1]["state"] in ("succeeded", "failed")
                                                         else None)(tr.request("GET", f"/v1/jobs/{job['id']}")),
                           timeout=180)[1]
            self.assertEqual(job["state"], "succeeded", job)
            return job

        run1 = run_prep()
        self.assertEqual(run1["dataset_version"], 1)
        j1 = train(3)
        self.assertEqual(j1["result"]["version"], 1)
        wait_for("serve on version 1", lambda: sv.request("GET", "/v1/models/recs/recommend?user=u1&k=5")[1]
                 .get("version") == "1", timeout=60)
        t_loop = time.time() - t0

        # Cut edge off; a client on edge keeps asking serve.
        local = subprocess.Popen(["ip", "netns", "exec", self.net.ns("edge"), "/usr/bin/python3", "-c",
                                  LOCAL_CLIENT, ip_of("edge"), "7705"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        self.net.link("edge", False)
        with self.assertRaises(OSError):
            sv.request("GET", "/healthz", timeout=1)
        t_cut = time.time()
        acked["b2"] = ingest("b2", interactions_csv(seed=12, prefix="n"))
        run2 = run_prep()
        self.assertEqual(run2["dataset_version"], 2)
        j2 = train(4)
        self.assertEqual((j2["result"]["version"], j2["result"]["promoted"]), (2, True))
        st, alias = reg.request("GET", "/v1/models/recs/aliases/production")
        self.assertEqual(alias["version"], 2)
        time.sleep(max(2.0, 10.0 - (time.time() - t_cut)))  # a cut longer than TCP's first retransmissions
        cut_for = time.time() - t_cut
        local.stdin.close()
        during = json.loads(local.stdout.read())
        local.stdout.close()
        local.wait(10)

        # Restore: serve catches up from the bus alone.
        self.net.link("edge", True)
        t_back = time.time()
        wait_for("serve on version 2 after the link is back", lambda: sv.request(
            "GET", "/v1/models/recs/recommend?user=u1&k=5", timeout=3)[1].get("version") == "2", timeout=120)
        caught_up = time.time() - t_back
        self.assertIn("promotion received", sv.log())

        # Everything acknowledged reached the consumer; ingest holds each batch once.
        got = events_tool("read", amqp, "faults-mh-events", "quern.events.ingested", "100000", "3000")
        batches = {e["data"]["batch_id"] for e in got}
        self.assertEqual({a["batch_id"] for a in acked.values()} - batches, set())
        promoted = [e["data"] for e in events_tool("read", amqp, "faults-mh-model", "quern.model.promoted",
                                                   "1000", "3000")]
        self.assertIn(2, [p.get("version") for p in promoted], promoted)
        st, ds = ing.request("GET", "/v1/datasets/interactions")
        self.assertEqual(ds["rows"], sum(a["accepted"] for a in acked.values()))
        st, body = sv.request("GET", "/metrics")
        self.assertEqual(metric(body, "quern_circuit_state", upstream="registry"), 0)

        self.assertEqual(during["failed"], 0, during)
        self.assertGreater(during["ok"], 20)
        self.assertEqual(during["versions"], ["1"], during)
        print(f"multi-host: infra + 7 services up in {t_up:.0f}s, loop to version 1 in {t_loop:.0f}s; "
              f"edge cut off {cut_for:.0f}s: {during['ok']} local requests answered (0 failed) on version 1 while version 2 "
              f"was promoted; serve on version 2 {caught_up:.1f}s after the link came back; "
              f"{len(got)} ingest events and {len(promoted)} promotions consumed")


if __name__ == "__main__":
    if "--inner" in sys.argv:
        sys.argv.remove("--inner")
        unittest.main(verbosity=2)
    else:
        sys.exit(outer())
