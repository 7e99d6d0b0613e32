"""test_serve_traffic_grpc.py - traffic policies over gRPC as over REST
(DESIGN.md section 5; docs/serve.md, "Traffic policies").

A real quern-registry and quern-serve (REST and gRPC) share one QUERN_HOME.
Model "shop" has two logistic versions written by hand (those of
test_serve_traffic.py: each its own coefficients, so a prediction says which
version computed it): v1 production, v2 candidate.

It asserts: a gRPC ModelInfer answer carries the version and alias that
served it in its initial metadata (x-quern-model-version,
x-quern-model-alias: REST's X-Quern-Model-* headers in lower case) and in
ModelInferResponse.model_version, agreeing with the prediction, with and
without a policy; under a 50/50 canary sticky on a header, 200 gRPC calls
with 20 distinct values of that metadata key give each value one version,
both versions appear, and each value gets the same version over REST (the
header) as over gRPC (the metadata, sent in lower case as gRPC does);
under a policy sticky on the user, the "user" request parameter does the
same over both protocols. A call that fails after its version was chosen
(an input the version does not take) says which version and alias it was,
over gRPC (initial metadata) as over REST (headers), with and without a
canary (each version with its own alias); one that fails before (a version
not served, a model not served) says none. Run by /usr/bin/python3
(python3-grpcio).
"""
import os
import socket
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import test_serve as ts  # noqa: E402 (the module: its TestCase is not run here)
from test_serve_traffic import COLS, MODEL, ROW, TrafficFixture, expect  # noqa: E402


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class TrafficGrpcTest(TrafficFixture):
    HOME_PREFIX = "quern-trgrpc-"

    @classmethod
    def setUpClass(cls):
        import grpc
        cls.gport = free_port()
        cls.GRPC_LISTEN = f"127.0.0.1:{cls.gport}"
        super().setUpClass()
        try:
            cls.pb, cls.pbg, _, _ = ts.ServeTest.grpc_stubs.__func__(ts.ServeTest)
            cls.ch = grpc.insecure_channel(f"127.0.0.1:{cls.gport}")
            grpc.channel_ready_future(cls.ch).result(timeout=60)
        except Exception:
            super().tearDownClass()
            raise
        cls.stub = cls.pbg.GRPCInferenceServiceStub(cls.ch)

    @classmethod
    def tearDownClass(cls):
        cls.ch.close()
        super().tearDownClass()

    # ---- helpers ---------------------------------------------------------------

    def grpc_infer(self, metadata=(), user=None):
        """One ModelInfer: (version, alias) from its initial metadata, checked
        against the body's model_version and the prediction."""
        rq = self.pb.ModelInferRequest(model_name=MODEL)
        for i, c in enumerate(COLS):
            t = rq.inputs.add(name=c, datatype="FP64", shape=[1])
            t.contents.fp64_contents.append(ROW[i])
        if user is not None:
            rq.parameters["user"].string_param = user
        rs, call = self.stub.ModelInfer.with_call(rq, metadata=list(metadata), timeout=30)
        md = dict(call.initial_metadata())
        v = md.get("x-quern-model-version")
        self.assertIsNotNone(v, md)
        self.assertEqual(rs.model_version, v)
        self.assertAlmostEqual(rs.outputs[0].contents.fp32_contents[0], expect(int(v)), places=5)
        return int(v), md.get("x-quern-model-alias")

    def rest_infer(self, headers=None, user=None):
        """One REST infer, as grpc_infer answers: (version, alias)."""
        return self.infer(headers=headers, params=None if user is None else {"user": user})[:2]

    # ---- tests -----------------------------------------------------------------

    def test_1_answer_says_version_and_alias(self):
        self.assertEqual(self.grpc_infer(), (1, "production"))
        self.assertEqual(self.rest_infer(), (1, "production"))
        # a version asked for by number: metadata names it as well
        rq = self.pb.ModelInferRequest(model_name=MODEL, model_version="1")
        for i, c in enumerate(COLS):
            rq.inputs.add(name=c, datatype="FP64", shape=[1]).contents.fp64_contents.append(ROW[i])
        rs, call = self.stub.ModelInfer.with_call(rq, timeout=30)
        self.assertEqual((rs.model_version, dict(call.initial_metadata())["x-quern-model-version"]), ("1", "1"))

    def test_2_canary_answers_name_their_version(self):
        self.set_policy({"routes": [{"alias": "production", "weight": 50}, {"alias": "candidate", "weight": 50}]})
        try:
            seen = {}
            for _ in range(60):
                v, alias = self.grpc_infer()
                seen[v] = alias
            self.assertEqual(seen, {1: "production", 2: "candidate"})
        finally:
            self.clear_policy()

    def test_3_sticky_header_over_both_protocols(self):
        self.set_policy({"routes": [{"alias": "production", "weight": 50}, {"alias": "candidate", "weight": 50}],
                         "sticky": "header:X-Tenant"})
        try:
            got = {}
            for i in range(200):
                key = f"tenant-{i % 20}"
                v, _ = self.grpc_infer(metadata=[("x-tenant", key)])
                got.setdefault(key, set()).add(v)
            self.assertEqual(len(got), 20)
            for key, vs in got.items():
                self.assertEqual(len(vs), 1, (key, vs))
            self.assertEqual(set().union(*got.values()), {1, 2}, got)
            for key, vs in got.items():
                for _ in range(3):
                    self.assertEqual(self.rest_infer(headers={"X-Tenant": key})[0], next(iter(vs)), key)
        finally:
            self.clear_policy()

    def test_4_sticky_user_over_both_protocols(self):
        self.set_policy({"routes": [{"alias": "production", "weight": 50}, {"alias": "candidate", "weight": 50}],
                         "sticky": "user"})
        try:
            got = {}
            for i in range(100):
                user = f"user-{i % 20}"
                got.setdefault(user, set()).add(self.grpc_infer(user=user)[0])
            for user, vs in got.items():
                self.assertEqual(len(vs), 1, (user, vs))
            self.assertEqual(set().union(*got.values()), {1, 2}, got)
            for user, vs in got.items():
                self.assertEqual(self.rest_infer(user=user)[0], next(iter(vs)), user)
        finally:
            self.clear_policy()

    def failed_grpc(self, version="", model=MODEL):
        """A ModelInfer missing input x1: (status code, version, alias) from
        the failed call's initial metadata (None when absent)."""
        import grpc
        rq = self.pb.ModelInferRequest(model_name=model, model_version=version)
        rq.inputs.add(name=COLS[0], datatype="FP64", shape=[1]).contents.fp64_contents.append(ROW[0])
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.ModelInfer(rq, timeout=30)
        e = cm.exception
        md = dict(e.initial_metadata() or ())
        self.assertNotIn("x-quern-model-version", dict(e.trailing_metadata() or ()))
        return e.code(), md.get("x-quern-model-version"), md.get("x-quern-model-alias"), e.details()

    def failed_rest(self, version=None, model=MODEL):
        body = {"inputs": [{"name": COLS[0], "datatype": "FP64", "shape": [1], "data": [ROW[0]]}]}
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
        st, h, out = self.conn.post(path, body)
        return st, h.get("x-quern-model-version"), h.get("x-quern-model-alias"), out

    def test_5_failed_call_says_version_and_alias(self):
        import grpc
        code, v, alias, msg = self.failed_grpc()
        self.assertEqual((code, v, alias), (grpc.StatusCode.INVALID_ARGUMENT, "1", "production"), msg)
        self.assertIn(COLS[1], msg)
        st, v, alias, out = self.failed_rest()
        self.assertEqual((st, v, alias), (400, "1", "production"), out)
        # by number: the same
        self.assertEqual(self.failed_grpc(version="1")[:3], (grpc.StatusCode.INVALID_ARGUMENT, "1", "production"))
        self.assertEqual(self.failed_rest(version="1")[:3], (400, "1", "production"))
        # failed before a version was chosen: none named
        self.assertEqual(self.failed_grpc(version="9")[:3], (grpc.StatusCode.NOT_FOUND, None, None))
        self.assertEqual(self.failed_rest(version="9")[:3], (404, None, None))
        self.assertEqual(self.failed_grpc(model="nope")[:3], (grpc.StatusCode.NOT_FOUND, None, None))
        self.assertEqual(self.failed_rest(model="nope")[:3], (404, None, None))
        # under a canary each failure names the arm that took it
        self.set_policy({"routes": [{"alias": "production", "weight": 50}, {"alias": "candidate", "weight": 50}]})
        try:
            seen = set()
            for _ in range(60):
                code, v, alias, msg = self.failed_grpc()
                self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, msg)
                seen.add((v, alias))
            self.assertEqual(seen, {("1", "production"), ("2", "candidate")})
            seen = set()
            for _ in range(60):
                st, v, alias, out = self.failed_rest()
                self.assertEqual(st, 400, out)
                seen.add((v, alias))
            self.assertEqual(seen, {("1", "production"), ("2", "candidate")})
        finally:
            self.clear_policy()


if __name__ == "__main__":
    unittest.main()
