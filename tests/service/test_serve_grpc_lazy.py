"""test_serve_grpc_lazy.py - quern-serve starts gRPC core on the first gRPC
connection, not at start (src/serve/grpc_listen.h, grpc_lib.h).

An idle serve holds its gRPC port (a second bind fails) but has no gRPC
thread and has not even loaded libgrpc; the first call from a stock client
(grpcio) is answered as before, a second connection too, and from then on
gRPC's threads and library are there. A serve never asked over gRPC stops
cleanly. Serve runs beside a real, empty quern-registry, so it is ready.
Run by /usr/bin/python3.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import WORK, Service  # noqa: E402

# Threads gRPC core starts (Linux names, 15 bytes at most) and serve's
# workers polling gRPC's queue.
GRPC_CORE_THREADS = ("default-executo", "resolver-execut", "grpc_global_tim", "timer_manager",
                     "event_engine")
WORKER = "grpc-worker"


def thread_names(pid):
    names = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass  # a thread that just ended
    return names


def maps_grpc(pid):
    with open(f"/proc/{pid}/maps") as f:
        return any("/libgrpc.so" in line for line in f)


class LazyGrpcTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import grpc  # noqa: F401 - /usr/bin/python3 has python3-grpcio
        proto = os.path.join(os.path.dirname(__file__), "../../proto")
        out = tempfile.mkdtemp(prefix="grpc_stubs_", dir=WORK)
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", proto,
                        "--python_out", out, "--grpc_python_out", out,
                        os.path.join(proto, "grpc_service.proto"),
                        os.path.join(proto, "health.proto")], check=True)
        sys.path.insert(0, out)

    def setUp(self):
        self.home = tempfile.mkdtemp(prefix="quern-lazy-grpc-", dir=WORK)
        self.env = {"QUERN_HOME": self.home}
        for d in ("registry", "serve"):
            os.makedirs(os.path.join(self.home, d))
        self.reg = Service("registry", data=os.path.join(self.home, "registry"),
                           env=self.env).start(timeout=60)
        self.serve = Service("serve", data=os.path.join(self.home, "serve"), env=self.env,
                             args=["--grpc-listen", "127.0.0.1:0", "--poll-interval", "1h",
                                   "--registry", f"http://127.0.0.1:{self.reg.port}"])
        self.serve.start(timeout=60)

    def tearDown(self):
        for s in (self.serve, self.reg):
            s.stop()

    def grpc_port(self):
        for line in self.serve.log().splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("msg") == "grpc listening":
                return int(ev["port"])
        self.fail("serve logged no grpc listening line:\n" + self.serve.log())

    def assertIdle(self, pid):
        names = thread_names(pid)
        self.assertFalse([n for n in names if n in GRPC_CORE_THREADS or n == WORKER], names)
        self.assertFalse(maps_grpc(pid), "libgrpc is mapped before any gRPC client came")

    def assertPortHeld(self, port):
        s = socket.socket()
        try:
            with self.assertRaises(OSError):
                s.bind(("127.0.0.1", port))
        finally:
            s.close()

    def test_first_call_starts_grpc(self):
        import grpc
        import grpc_service_pb2 as pb
        import grpc_service_pb2_grpc as pbg
        import health_pb2 as hpb
        import health_pb2_grpc as hpbg

        pid, port = self.serve.proc.pid, self.grpc_port()
        self.assertGreater(port, 0)
        self.assertPortHeld(port)
        self.assertIdle(pid)
        idle_threads = len(thread_names(pid))

        ch = grpc.insecure_channel(f"127.0.0.1:{port}")
        try:
            stub = pbg.GRPCInferenceServiceStub(ch)
            self.assertTrue(stub.ServerLive(pb.ServerLiveRequest(), timeout=30).live)
            self.assertTrue(stub.ServerReady(pb.ServerReadyRequest(), timeout=30).ready)
            self.assertEqual(hpbg.HealthStub(ch).Check(hpb.HealthCheckRequest(), timeout=30).status,
                             hpb.HealthCheckResponse.SERVING)
            # The backend behind it: an unknown model is NOT_FOUND, named.
            with self.assertRaises(grpc.RpcError) as cm:
                stub.ModelInfer(pb.ModelInferRequest(model_name="nope"), timeout=30)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
            self.assertIn("nope", cm.exception.details())
        finally:
            ch.close()

        # gRPC core runs now: its threads, serve's workers, the library.
        names = thread_names(pid)
        self.assertEqual(names.count(WORKER), 4, names)
        self.assertTrue([n for n in names if n in GRPC_CORE_THREADS], names)
        self.assertTrue(maps_grpc(pid))
        self.assertGreater(len(names), idle_threads)

        # A later connection is handed to the running core, not a second one.
        ch2 = grpc.insecure_channel(f"127.0.0.1:{port}")
        try:
            stub = pbg.GRPCInferenceServiceStub(ch2)
            self.assertTrue(stub.ServerLive(pb.ServerLiveRequest(), timeout=30).live)
        finally:
            ch2.close()
        self.assertEqual(thread_names(pid).count(WORKER), 4)
        self.assertEqual(self.serve.log().count('"grpc started on the first connection"'), 1)
        # REST is unaffected, and SIGTERM still drains both and exits 0.
        self.assertEqual(self.serve.request("GET", "/v2/health/live")[0], 200)
        self.assertEqual(self.serve.stop(), 0)

    def test_never_asked_stops_cleanly(self):
        pid, port = self.serve.proc.pid, self.grpc_port()
        self.assertIdle(pid)
        self.assertEqual(self.serve.request("GET", "/v2/health/ready")[0], 200)
        self.assertEqual(self.serve.stop(), 0)
        self.assertNotIn('"grpc started', self.serve.log())
        # The port is free again once serve is gone.
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        finally:
            s.close()


if __name__ == "__main__":
    unittest.main()
