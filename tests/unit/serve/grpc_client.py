#!/usr/bin/python3
"""A stock gRPC client (grpcio + stubs generated from proto/*.proto by
grpc_tools.protoc) against quern-serve's gRPC front running the test backend
of sum_backend.c. Run by test_grpc.c; exits 0 when every check passes.

    grpc_client.py --port P --proto DIR --work DIR [--mode all|notready|slow|auth]
                   [--deadline-scale X]

Modes: all (every method, conversions, errors), notready (the server reports
not ready), slow (one ModelInfer that sleeps in the backend; --expect ok|error
says how it must end, for the shutdown tests), auth (the server has --token
TOKEN; --auth-reads 0|1 says whether the read calls need it too).
"""
import argparse
import atexit
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import traceback

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
# The deadline of a call that moves tens of MiB (the message-limit and
# decode-budget checks), times --deadline-scale: the bytes go through gRPC
# on both sides, which takes seconds on a loaded machine and several times
# that under AddressSanitizer (test_grpc.c passes a scale for sanitizer
# builds). A server that hung would still fail them; what they check is the
# status and message of the answer.
BIG_DEADLINE = 30


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(num, payload):
    """A length-delimited protobuf field (strings, bytes, messages)."""
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def gen_stubs(proto, work):
    os.makedirs(work, exist_ok=True)
    out = tempfile.mkdtemp(prefix="grpc_stubs_", dir=work)
    atexit.register(shutil.rmtree, out, True)
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", proto,
                    "--python_out", out, "--grpc_python_out", out,
                    os.path.join(proto, "grpc_service.proto"),
                    os.path.join(proto, "health.proto")], check=True)
    sys.path.insert(0, out)


class Checks:
    def __init__(self, port, deadline_scale=1.0):
        import grpc
        import grpc_service_pb2 as pb
        import grpc_service_pb2_grpc as pbg
        import health_pb2 as hpb
        import health_pb2_grpc as hpbg
        self.grpc, self.pb, self.hpb = grpc, pb, hpb
        self.ch = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = pbg.GRPCInferenceServiceStub(self.ch)
        self.health = hpbg.HealthStub(self.ch)
        self.passed = 0
        self.failed = 0
        self.big_deadline = BIG_DEADLINE * deadline_scale

    # -- helpers -------------------------------------------------------
    def run(self, fn):
        try:
            fn()
            self.passed += 1
        except Exception:
            self.failed += 1
            print(f"FAIL {fn.__name__}", file=sys.stderr)
            traceback.print_exc()

    def expect_error(self, call, req, code, *needles, metadata=None, timeout=10):
        try:
            call(req, timeout=timeout, metadata=metadata)
        except self.grpc.RpcError as e:
            assert e.code() == code, f"got {e.code()} ({e.details()}), want {code}"
            for n in needles:
                assert n in e.details(), f"{n!r} not in {e.details()!r}"
            return e
        raise AssertionError(f"call succeeded, want {code}")

    def infer_req(self, model="sum", inputs=(), raw=None, outputs=(), **kw):
        pb = self.pb
        rq = pb.ModelInferRequest(model_name=model, **kw)
        for name, dt, shape, contents in inputs:
            t = rq.inputs.add(name=name, datatype=dt, shape=shape)
            if contents:
                for field, vals in contents.items():
                    getattr(t.contents, field).extend(vals)
        if raw is not None:
            rq.raw_input_contents.extend(raw)
        for o in outputs:
            rq.outputs.add(name=o)
        return rq

    @staticmethod
    def pack_bytes(elems):
        return b"".join(struct.pack("<I", len(e)) + e for e in elems)

    @staticmethod
    def unpack_bytes(raw):
        out, off = [], 0
        while off < len(raw):
            (n,) = struct.unpack_from("<I", raw, off)
            out.append(raw[off + 4:off + 4 + n])
            off += 4 + n
        return out

    # -- health and metadata ------------------------------------------
    def test_server_live_ready(self):
        assert self.stub.ServerLive(self.pb.ServerLiveRequest(), timeout=10).live is True
        assert self.stub.ServerReady(self.pb.ServerReadyRequest(), timeout=10).ready is True

    def test_model_ready(self):
        pb, grpc = self.pb, self.grpc
        assert self.stub.ModelReady(pb.ModelReadyRequest(name="sum"), timeout=10).ready
        assert self.stub.ModelReady(pb.ModelReadyRequest(name="sum", version="1"), timeout=10).ready
        assert not self.stub.ModelReady(pb.ModelReadyRequest(name="sleepy"), timeout=10).ready
        self.expect_error(self.stub.ModelReady, pb.ModelReadyRequest(name="nope"),
                          grpc.StatusCode.NOT_FOUND, "nope")
        self.expect_error(self.stub.ModelReady, pb.ModelReadyRequest(name="sum", version="9"),
                          grpc.StatusCode.NOT_FOUND, "version 9")
        self.expect_error(self.stub.ModelReady, pb.ModelReadyRequest(),
                          grpc.StatusCode.INVALID_ARGUMENT, "name")

    def test_server_metadata(self):
        r = self.stub.ServerMetadata(self.pb.ServerMetadataRequest(), timeout=10)
        assert (r.name, r.version, list(r.extensions)) == \
            ("quern-serve-test", "0.1.0", ["model_repository"]), r

    def test_model_metadata(self):
        pb = self.pb
        r = self.stub.ModelMetadata(pb.ModelMetadataRequest(name="sum"), timeout=10)
        assert r.name == "sum" and list(r.versions) == ["1"] and r.platform == "quern-test", r
        got_in = [(t.name, t.datatype, list(t.shape)) for t in r.inputs]
        got_out = [(t.name, t.datatype, list(t.shape)) for t in r.outputs]
        assert got_in == [("x", "FP32", [-1, 3]), ("name", "BYTES", [-1])], got_in
        assert got_out == [("y", "FP32", [-1]), ("greeting", "BYTES", [-1])], got_out
        self.expect_error(self.stub.ModelMetadata, pb.ModelMetadataRequest(name="nope"),
                          self.grpc.StatusCode.NOT_FOUND, "nope")

    def test_health(self):
        H = self.hpb.HealthCheckResponse
        chk = self.health.Check
        assert chk(self.hpb.HealthCheckRequest(), timeout=10).status == H.SERVING
        assert chk(self.hpb.HealthCheckRequest(service="inference.GRPCInferenceService"),
                   timeout=10).status == H.SERVING
        assert chk(self.hpb.HealthCheckRequest(service="sum"), timeout=10).status == H.SERVING
        assert chk(self.hpb.HealthCheckRequest(service="sleepy"),
                   timeout=10).status == H.NOT_SERVING
        self.expect_error(chk, self.hpb.HealthCheckRequest(service="nope"),
                          self.grpc.StatusCode.NOT_FOUND, "nope")

    def test_unimplemented(self):
        # Health/Watch (declared, not served) and a Triton-only method.
        watch = self.health.Watch(self.hpb.HealthCheckRequest(), timeout=10)
        try:
            next(iter(watch))
            raise AssertionError("Watch answered")
        except self.grpc.RpcError as e:
            assert e.code() == self.grpc.StatusCode.UNIMPLEMENTED, e.code()
        call = self.ch.unary_unary("/inference.GRPCInferenceService/RepositoryIndex",
                                   request_serializer=lambda b: b,
                                   response_deserializer=lambda b: b)
        self.expect_error(call, b"", self.grpc.StatusCode.UNIMPLEMENTED, "RepositoryIndex")

    # -- ModelInfer ------------------------------------------------------
    def test_infer_typed(self):
        rq = self.infer_req(inputs=[("x", "FP32", [2, 3],
                                     {"fp32_contents": [1, 2, 3, 4, 5, 6.5]})], id="req-1")
        r = self.stub.ModelInfer(rq, timeout=10)
        assert (r.model_name, r.model_version, r.id) == ("sum", "1", "req-1"), r
        assert len(r.raw_output_contents) == 0, "typed request must get typed outputs"
        y = r.outputs[0]
        assert (y.name, y.datatype, list(y.shape)) == ("y", "FP32", [2]), y
        assert list(y.contents.fp32_contents) == [6.0, 15.5], y.contents

    def test_infer_raw(self):
        raw = struct.pack("<6f", 1, 2, 3, -4, 0.25, 10)
        rq = self.infer_req(inputs=[("x", "FP32", [2, 3], None)], raw=[raw])
        r = self.stub.ModelInfer(rq, timeout=10)
        assert len(r.raw_output_contents) == 1, r
        assert not r.outputs[0].HasField("contents"), "raw response must not carry contents"
        assert list(r.outputs[0].shape) == [2]
        assert struct.unpack("<2f", r.raw_output_contents[0]) == (6.0, 6.25)

    def test_infer_bytes(self):
        names = [b"ann", b"", "b\u00e9".encode()]
        raw = [struct.pack("<3f", 1, 1, 1), self.pack_bytes(names)]
        rq = self.infer_req(inputs=[("x", "FP32", [1, 3], None), ("name", "BYTES", [3], None)],
                            raw=raw)
        r = self.stub.ModelInfer(rq, timeout=10)
        by = {o.name: i for i, o in enumerate(r.outputs)}
        assert r.outputs[by["greeting"]].datatype == "BYTES"
        got = self.unpack_bytes(r.raw_output_contents[by["greeting"]])
        assert got == [b"hello, " + n for n in names], got
        # typed BYTES, and only the requested output comes back
        rq = self.infer_req(inputs=[("x", "FP32", [1, 3], {"fp32_contents": [0, 0, 0]}),
                                    ("name", "BYTES", [2], {"bytes_contents": [b"x", b"\0y"]})],
                            outputs=["greeting"])
        r = self.stub.ModelInfer(rq, timeout=10)
        assert [o.name for o in r.outputs] == ["greeting"], r.outputs
        assert list(r.outputs[0].contents.bytes_contents) == [b"hello, x", b"hello, \0y"]

    def test_infer_empty_batch(self):
        rq = self.infer_req(inputs=[("x", "FP32", [0, 3], None)])
        r = self.stub.ModelInfer(rq, timeout=10)
        assert list(r.outputs[0].shape) == [0] and len(r.outputs[0].contents.fp32_contents) == 0

    def test_infer_errors(self):
        S = self.grpc.StatusCode
        ie = lambda rq, code, *n: self.expect_error(self.stub.ModelInfer, rq, code, *n)
        x6 = {"fp32_contents": [1, 2, 3, 4, 5, 6]}
        # wrong datatype (the backend refuses it)
        ie(self.infer_req(inputs=[("x", "FP64", [2, 3], {"fp64_contents": [1] * 6})]),
           S.INVALID_ARGUMENT, "input x", "FP64")
        # data in the field of another datatype
        ie(self.infer_req(inputs=[("x", "FP32", [2, 3], {"int_contents": [1] * 6})]),
           S.INVALID_ARGUMENT, "input x", "int_contents")
        # shape does not match the data length, typed and raw
        ie(self.infer_req(inputs=[("x", "FP32", [2, 3], {"fp32_contents": [1] * 5})]),
           S.INVALID_ARGUMENT, "input x", "[2,3]")
        ie(self.infer_req(inputs=[("x", "FP32", [2, 3], None)], raw=[b"\0" * 20]),
           S.INVALID_ARGUMENT, "input x", "20 bytes")
        # raw entries not one per input
        ie(self.infer_req(inputs=[("x", "FP32", [1, 3], None), ("name", "BYTES", [1], None)],
                          raw=[b"\0" * 12]), S.INVALID_ARGUMENT, "raw_input_contents")
        # both typed and raw
        ie(self.infer_req(inputs=[("x", "FP32", [2, 3], x6)], raw=[b"\0" * 24]),
           S.INVALID_ARGUMENT, "input x")
        # unknown model, unknown version
        ie(self.infer_req(model="nope", inputs=[("x", "FP32", [2, 3], x6)]),
           S.NOT_FOUND, "nope")
        ie(self.infer_req(inputs=[("x", "FP32", [2, 3], x6)], model_version="7"),
           S.NOT_FOUND, "version 7")
        # missing input
        ie(self.infer_req(inputs=[("name", "BYTES", [1], {"bytes_contents": [b"a"]})]),
           S.INVALID_ARGUMENT, "input x", "missing")
        # unknown datatype, negative dimension, too many dimensions
        ie(self.infer_req(inputs=[("x", "FLOAT", [2, 3], x6)]),
           S.INVALID_ARGUMENT, "input x", "FLOAT")
        ie(self.infer_req(inputs=[("x", "FP32", [-2, 3], x6)]),
           S.INVALID_ARGUMENT, "input x", "shape[0]")
        ie(self.infer_req(inputs=[("x", "FP32", [1] * 9, {"fp32_contents": [1]})]),
           S.INVALID_ARGUMENT, "input x", "dimensions")
        # BYTES raw whose length prefix runs past the end
        bad = struct.pack("<I", 100) + b"abc"
        ie(self.infer_req(inputs=[("x", "FP32", [1, 3], None), ("name", "BYTES", [1], None)],
                          raw=[b"\0" * 12, bad]), S.INVALID_ARGUMENT, "input name", "100 bytes")
        # BYTES raw with trailing bytes beyond its shape
        ie(self.infer_req(inputs=[("x", "FP32", [1, 3], None), ("name", "BYTES", [1], None)],
                          raw=[b"\0" * 12, self.pack_bytes([b"a", b"b"])]),
           S.INVALID_ARGUMENT, "input name")
        # FP16 has no typed field
        ie(self.infer_req(model="echo", inputs=[("h", "FP16", [1], None)]),
           S.INVALID_ARGUMENT, "input h", "raw_input_contents")
        # input name missing, duplicated; requested output unknown
        ie(self.infer_req(inputs=[("", "FP32", [1, 3], {"fp32_contents": [1, 2, 3]})]),
           S.INVALID_ARGUMENT, "inputs[0]")
        ie(self.infer_req(inputs=[("x", "FP32", [1, 3], {"fp32_contents": [1, 2, 3]})] * 2),
           S.INVALID_ARGUMENT, "input x", "twice")
        ie(self.infer_req(inputs=[("x", "FP32", [1, 3], {"fp32_contents": [1, 2, 3]})],
                          outputs=["zz"]), S.INVALID_ARGUMENT, "output zz")
        # a model that is not ready
        ie(self.infer_req(model="sleepy", inputs=[("x", "FP32", [1, 3], None)],
                          raw=[b"\0" * 12]), S.UNAVAILABLE, "sleepy")
        # no model name; a message that is not protobuf at all
        ie(self.infer_req(model=""), S.INVALID_ARGUMENT, "model_name")
        call = self.ch.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                   request_serializer=lambda b: b,
                                   response_deserializer=lambda b: b)
        self.expect_error(call, b"\xff\xff\xff\xff", S.INVALID_ARGUMENT, "ModelInferRequest")

    def test_infer_too_large(self):
        raw = b"\0" * (65 * 1024 * 1024 - 12 * 1024)  # a little over 64 MiB with framing
        raw = raw[: len(raw) - len(raw) % 12]
        n = len(raw) // 12
        rq = self.infer_req(inputs=[("x", "FP32", [n, 3], None)], raw=[raw])
        if rq.ByteSize() <= 64 * 1024 * 1024:
            rq.raw_input_contents[0] = raw + b"\0" * (1 << 20)
        self.expect_error(self.stub.ModelInfer, rq, self.grpc.StatusCode.RESOURCE_EXHAUSTED,
                          timeout=self.big_deadline)

    def test_infer_decode_budget(self):
        # 20M empty BYTES elements: 40 MiB on the wire (under the message
        # limit) but over 300 MiB once decoded; refused, not decoded.
        n = 20_000_000
        contents = b"\x42\x00" * n
        tensor = field(1, b"x") + field(2, b"BYTES") + field(3, varint(n)) + field(5, contents)
        msg = field(1, b"echo") + field(5, tensor)
        assert len(msg) < 64 * 1024 * 1024
        call = self.ch.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                   request_serializer=lambda b: b,
                                   response_deserializer=lambda b: b)
        self.expect_error(call, msg, self.grpc.StatusCode.RESOURCE_EXHAUSTED,
                          "decoding it needs more than 256 MiB", timeout=self.big_deadline)

    def raw_call(self, method):
        return self.ch.unary_unary(f"/inference.GRPCInferenceService/{method}",
                                   request_serializer=lambda b: b,
                                   response_deserializer=lambda b: b)

    def test_invalid_utf8(self):
        # protobuf-c does not check string fields; the server does, and its
        # messages stay valid UTF-8 (the bad byte escaped as \xFF).
        S = self.grpc.StatusCode
        x = field(1, b"x") + field(2, b"FP32") + field(3, varint(1) + varint(3))
        raw = field(7, struct.pack("<3f", 1, 2, 3))
        infer = self.raw_call("ModelInfer")
        for msg, needles in [
            (field(1, b"s\xffm") + field(5, x) + raw, ["model_name", "s\\xFFm", "UTF-8"]),
            (field(1, b"sum") + field(2, b"\xc3") + field(5, x) + raw, ["model_version"]),
            (field(1, b"sum") + field(3, b"id\xfe") + field(5, x) + raw, ["id", "id\\xFE"]),
            (field(1, b"sum") + field(5, field(1, b"na\xffme") + x[3:]) + raw,
             ["inputs[0].name", "na\\xFFme", "UTF-8"]),
            (field(1, b"sum") + field(5, x) + field(6, field(1, b"\xed\xa0\x80")) + raw,
             ["outputs[0].name", "\\xED\\xA0\\x80"]),
        ]:
            e = self.expect_error(infer, msg, S.INVALID_ARGUMENT, *needles)
            e.details().encode("utf-8")
        # a valid multi-byte name that is unknown comes back intact
        self.expect_error(self.stub.ModelInfer,
                          self.infer_req(model="mod\u00e8le", inputs=[("x", "FP32", [1, 3], None)],
                                         raw=[b"\0" * 12]),
                          S.NOT_FOUND, "mod\u00e8le")
        for method in ("ModelReady", "ModelMetadata"):
            self.expect_error(self.raw_call(method), field(1, b"su\x80m"),
                              S.INVALID_ARGUMENT, "name", "su\\x80m")
        # a parameter key that is not UTF-8 (map entry: key 1, value 2)
        param = field(4, field(1, b"k\xff") + field(2, varint(1 << 3) + varint(1)))
        self.expect_error(infer, field(1, b"sum") + param + field(5, x) + raw,
                          S.INVALID_ARGUMENT, "k\\xFF")
        assert self.stub.ServerLive(self.pb.ServerLiveRequest(), timeout=10).live is True

    def test_too_many_inputs(self):
        # capped as on REST (names are compared pairwise: 20,000 inputs would
        # take the server minutes); refused at once, well inside the timeout
        S = self.grpc.StatusCode
        many = [(f"i{k}", "FP32", [0], None) for k in range(20000)]
        self.expect_error(self.stub.ModelInfer, self.infer_req(inputs=many), S.INVALID_ARGUMENT,
                          "20000 inputs", "256")
        self.expect_error(self.stub.ModelInfer, self.infer_req(
            inputs=[("x", "FP32", [1, 3], {"fp32_contents": [1, 2, 3]})],
            outputs=["y"] * 65), S.INVALID_ARGUMENT, "65 outputs")

    def test_infer_shapes(self):
        # zero, huge and overflowing dimensions: refused with a message,
        # nothing allocated for them
        S = self.grpc.StatusCode
        ie = lambda rq, code, *n: self.expect_error(self.stub.ModelInfer, rq, code, *n)
        ie(self.infer_req(inputs=[("x", "FP32", [2**40, 3], None)], raw=[b"\0" * 12]),
           S.INVALID_ARGUMENT, "input x")
        ie(self.infer_req(inputs=[("x", "FP32", [2**62, 2**62], None)], raw=[b"\0" * 12]),
           S.INVALID_ARGUMENT, "input x", "overflows")
        ie(self.infer_req(inputs=[("x", "FP32", [2**40, 3], {"fp32_contents": [1, 2, 3]})]),
           S.INVALID_ARGUMENT, "input x")
        ie(self.infer_req(model="echo", inputs=[("b", "BYTES", [2**40], None)],
                          raw=[self.pack_bytes([b"a"])]),
           S.INVALID_ARGUMENT, "input b")
        ie(self.infer_req(inputs=[("x", "FP32", [1, 0], None)], raw=[b""]),
           S.INVALID_ARGUMENT, "input x")
        ie(self.infer_req(inputs=[("x", "FP32", [], None)], raw=[b"\0" * 4]),
           S.INVALID_ARGUMENT, "input x")

    def test_echo_typed_all_types(self):
        cases = [
            ("BOOL", "bool_contents", [True, False, True]),
            ("INT8", "int_contents", [-128, 0, 127]),
            ("INT16", "int_contents", [-32768, 1, 32767]),
            ("INT32", "int_contents", [-2**31, 2, 2**31 - 1]),
            ("INT64", "int64_contents", [-2**63, 3, 2**63 - 1]),
            ("UINT8", "uint_contents", [0, 1, 255]),
            ("UINT16", "uint_contents", [0, 2, 65535]),
            ("UINT32", "uint_contents", [0, 3, 2**32 - 1]),
            ("UINT64", "uint64_contents", [0, 4, 2**64 - 1]),
            ("FP32", "fp32_contents", [-1.5, 0.0, 3.25]),
            ("FP64", "fp64_contents", [-1e300, math.pi, 2.0]),
            ("BYTES", "bytes_contents", [b"", b"\0\1", b"zz"]),
        ]
        rq = self.infer_req(model="echo",
                            inputs=[(f"t_{dt}", dt, [3], {f: v}) for dt, f, v in cases])
        r = self.stub.ModelInfer(rq, timeout=10)
        assert len(r.raw_output_contents) == 0
        for (dt, f, v), o in zip(cases, r.outputs):
            assert (o.name, o.datatype, list(o.shape)) == (f"t_{dt}", dt, [3]), o
            assert list(getattr(o.contents, f)) == v, (dt, list(getattr(o.contents, f)))
        # values outside a narrow type's range are refused, naming the input
        for dt, f, v in [("INT8", "int_contents", [128]), ("UINT16", "uint_contents", [70000])]:
            self.expect_error(self.stub.ModelInfer,
                              self.infer_req(model="echo", inputs=[("n", dt, [1], {f: v})]),
                              self.grpc.StatusCode.INVALID_ARGUMENT, "input n", "range")

    def test_echo_raw_all_types(self):
        fmts = {"BOOL": "?", "INT8": "b", "INT16": "h", "INT32": "i", "INT64": "q",
                "UINT8": "B", "UINT16": "H", "UINT32": "I", "UINT64": "Q", "FP16": "e",
                "FP32": "f", "FP64": "d"}
        vals = {"BOOL": [True, False], "FP16": [1.5, -2.0], "FP32": [1.5, -2.0],
                "FP64": [1.5, -2.0], "INT8": [-1, 2], "INT16": [-300, 2], "INT32": [-1, 7],
                "INT64": [-2**40, 1], "UINT8": [200, 1], "UINT16": [60000, 1],
                "UINT32": [2**31, 1], "UINT64": [2**63, 1]}
        inputs, raw = [], []
        for dt, f in fmts.items():
            inputs.append((f"r_{dt}", dt, [2], None))
            raw.append(struct.pack("<2" + f, *vals[dt]))
        inputs.append(("r_BYTES", "BYTES", [2], None))
        raw.append(self.pack_bytes([b"ab", b""]))
        r = self.stub.ModelInfer(self.infer_req(model="echo", inputs=inputs, raw=raw), timeout=10)
        assert list(r.raw_output_contents) == raw
        assert [o.datatype for o in r.outputs] == list(fmts) + ["BYTES"]

    def test_parameters_and_trace(self):
        pb = self.pb
        rq = self.infer_req(inputs=[("x", "FP32", [1, 3], {"fp32_contents": [1, 2, 3]})])
        rq.parameters["b"].bool_param = True
        rq.parameters["i"].int64_param = -7
        rq.parameters["s"].string_param = "hi"
        rq.parameters["d"].double_param = 2.5
        rq.parameters["u"].uint64_param = 9
        rq.inputs[0].parameters["scale"].int64_param = 3
        r = self.stub.ModelInfer(rq, timeout=10, metadata=[("traceparent", TP)])
        p = r.parameters
        assert p["b"].bool_param is True and p["b"].WhichOneof("parameter_choice") == "bool_param"
        assert p["i"].int64_param == -7 and p["s"].string_param == "hi"
        assert p["d"].double_param == 2.5 and p["u"].int64_param == 9
        assert p["traceparent"].string_param == TP, p
        assert p["input_params_x"].string_param == '{"scale": 3}' or \
            p["input_params_x"].string_param == '{"scale":3}', p["input_params_x"]
        # a malformed traceparent is ignored, not an error
        r = self.stub.ModelInfer(rq, timeout=10, metadata=[("traceparent", "00-zz-01")])
        assert "traceparent" not in r.parameters
        bad = pb.ModelInferRequest()
        bad.CopyFrom(rq)
        bad.parameters["u"].uint64_param = 2**64 - 1
        self.expect_error(self.stub.ModelInfer, bad, self.grpc.StatusCode.INVALID_ARGUMENT, "u")

    def test_concurrent(self):
        errors = []

        def work(k):
            try:
                for j in range(40):
                    v = float(k * 100 + j)
                    rq = self.infer_req(inputs=[("x", "FP32", [1, 3], None)],
                                        raw=[struct.pack("<3f", v, 1, 1)])
                    r = self.stub.ModelInfer(rq, timeout=20)
                    got = struct.unpack("<f", r.raw_output_contents[0])[0]
                    if got != v + 2:
                        errors.append((k, j, got))
            except Exception as e:  # noqa: BLE001 - report, don't hide
                errors.append(repr(e))

        ts = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not errors, errors[:5]


def auth_checks(c, token, auth_reads):
    """The token rules of REST on gRPC: infer always, reads with
    --auth-reads, probes never."""
    grpc, pb, S = c.grpc, c.pb, c.grpc.StatusCode
    good = [("authorization", f"Bearer {token}")]
    infer = c.infer_req(inputs=[("x", "FP32", [1, 3], {"fp32_contents": [1, 2, 3]})])

    def test_infer_needs_token():
        c.expect_error(c.stub.ModelInfer, infer, S.UNAUTHENTICATED, "authorization", "Bearer")
        c.expect_error(c.stub.ModelInfer, infer, S.UNAUTHENTICATED, "not valid",
                       metadata=[("authorization", "Bearer wrong")])
        # a prefix of the token, the token with a byte more, another scheme
        c.expect_error(c.stub.ModelInfer, infer, S.UNAUTHENTICATED, "not valid",
                       metadata=[("authorization", f"Bearer {token[:-1]}")])
        c.expect_error(c.stub.ModelInfer, infer, S.UNAUTHENTICATED, "not valid",
                       metadata=[("authorization", f"Bearer {token}x")])
        c.expect_error(c.stub.ModelInfer, infer, S.UNAUTHENTICATED, "authorization",
                       metadata=[("authorization", f"Basic {token}")])
        r = c.stub.ModelInfer(infer, timeout=10, metadata=good)
        assert list(r.outputs[0].contents.fp32_contents) == [6.0], r
        r = c.stub.ModelInfer(infer, timeout=10,
                              metadata=[("authorization", f"bearer  {token}")])
        assert list(r.outputs[0].contents.fp32_contents) == [6.0], r

    def test_probes_open():
        assert c.stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live is True
        assert c.stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready is True
        st = c.health.Check(c.hpb.HealthCheckRequest(), timeout=10).status
        assert st == c.hpb.HealthCheckResponse.SERVING, st
        # a wrong token on a probe is ignored, not refused
        assert c.stub.ServerLive(pb.ServerLiveRequest(), timeout=10,
                                 metadata=[("authorization", "Bearer wrong")]).live is True

    def test_reads():
        reads = [(c.stub.ModelMetadata, pb.ModelMetadataRequest(name="sum")),
                 (c.stub.ServerMetadata, pb.ServerMetadataRequest()),
                 (c.stub.ModelReady, pb.ModelReadyRequest(name="sum"))]
        for call, rq in reads:
            if auth_reads:
                c.expect_error(call, rq, S.UNAUTHENTICATED, "authorization")
                c.expect_error(call, rq, S.UNAUTHENTICATED, "not valid",
                               metadata=[("authorization", "Bearer wrong")])
            else:
                call(rq, timeout=10)
            call(rq, timeout=10, metadata=good)

    for t in (test_infer_needs_token, test_probes_open, test_reads):
        c.run(t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--proto", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--mode", default="all")
    ap.add_argument("--expect", default="ok")
    ap.add_argument("--token", default="")
    ap.add_argument("--auth-reads", type=int, default=0)
    ap.add_argument("--deadline-scale", type=float, default=1.0)
    a = ap.parse_args()
    gen_stubs(a.proto, a.work)
    c = Checks(a.port, a.deadline_scale)
    if a.mode == "slow":
        rq = c.infer_req(inputs=[("x", "FP32", [1, 3], {"fp32_contents": [1, 2, 3]})])
        rq.parameters["sleep_ms"].int64_param = 600
        try:
            r = c.stub.ModelInfer(rq, timeout=30)
            ok = list(r.outputs[0].contents.fp32_contents) == [6.0]
            print("slow call: ok" if ok else "slow call: wrong answer")
        except c.grpc.RpcError as e:
            ok = False
            print(f"slow call: {e.code()} {e.details()}")
        sys.exit(0 if ok == (a.expect == "ok") else 1)
    if a.mode == "auth":
        auth_checks(c, a.token, a.auth_reads)
    elif a.mode == "notready":
        def test_not_ready():
            assert c.stub.ServerReady(c.pb.ServerReadyRequest(), timeout=10).ready is False
            assert c.stub.ServerLive(c.pb.ServerLiveRequest(), timeout=10).live is True
            st = c.health.Check(c.hpb.HealthCheckRequest(), timeout=10).status
            assert st == c.hpb.HealthCheckResponse.NOT_SERVING, st
        c.run(test_not_ready)
    else:
        for name in sorted(n for n in dir(Checks) if n.startswith("test_")):
            c.run(getattr(c, name))
    print(f"{c.passed} passed, {c.failed} failed")
    sys.exit(1 if c.failed else 0)


if __name__ == "__main__":
    main()
