"""bench_h2load.py - helpers of bench_h2load.sh (run by /usr/bin/python3).

  bodies DIR GRPC_PORT   writes the request bodies h2load sends, each checked
                         first by one real call: DIR/grpc-cols.bin and
                         DIR/grpc-2d.bin (ModelInfer for model "adult", one row,
                         framed as one gRPC message: flag byte, 4-byte big-endian
                         length, the protobuf), DIR/rest-cols.json and
                         DIR/rest-2d.json (the same row over REST).
  stats LOGFILE          p50 and p99 in ms of an h2load --log-file (one line per
                         request: start time, status, latency in microseconds).
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUMERIC = ["age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week"]
ROW = [39, 77516, 13, 2174, 0, 40]


def bodies(out, port):
    with tempfile.TemporaryDirectory() as tmp:
        proto = os.path.join(ROOT, "proto")
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", proto,
                        "--python_out", tmp, os.path.join(proto, "grpc_service.proto")],
                       check=True)
        sys.path.insert(0, tmp)
        import grpc
        import grpc_service_pb2 as pb

        cols = pb.ModelInferRequest(model_name="adult")
        for name, v in zip(NUMERIC, ROW):
            cols.inputs.add(name=name, datatype="FP64", shape=[1]).contents.fp64_contents.append(v)
        two = pb.ModelInferRequest(model_name="adult")
        two.inputs.add(name="input__0", datatype="FP32", shape=[1, len(ROW)])
        two.raw_input_contents.append(struct.pack(f"<{len(ROW)}f", *ROW))
        ch = grpc.insecure_channel(f"127.0.0.1:{port}")
        call = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        answers = []
        for name, rq in (("cols", cols), ("2d", two)):
            raw = rq.SerializeToString()
            reply = pb.ModelInferResponse.FromString(call(raw, timeout=10))
            if not reply.outputs:
                sys.exit(f"bench_h2load: gRPC {name} answered no outputs")
            out_t = reply.outputs[0]
            vals = list(out_t.contents.fp32_contents) or \
                list(struct.unpack(f"<{len(reply.raw_output_contents[0]) // 4}f",
                                   reply.raw_output_contents[0]))
            answers.append(vals[0])
            with open(os.path.join(out, f"grpc-{name}.bin"), "wb") as fh:
                fh.write(b"\0" + struct.pack(">I", len(raw)) + raw)
        ch.close()
        if abs(answers[0] - answers[1]) > 1e-6:
            sys.exit(f"bench_h2load: the two forms disagree: {answers}")
    rest_cols = {"inputs": [{"name": c, "datatype": "FP64", "shape": [1], "data": [v]}
                            for c, v in zip(NUMERIC, ROW)]}
    rest_2d = {"inputs": [{"name": "input__0", "datatype": "FP32", "shape": [1, len(ROW)],
                           "data": ROW}]}
    for name, body in (("cols", rest_cols), ("2d", rest_2d)):
        with open(os.path.join(out, f"rest-{name}.json"), "w") as fh:
            json.dump(body, fh)


def stats(path):
    lat = sorted(int(line.split()[2]) for line in open(path) if len(line.split()) >= 3)
    if not lat:
        print("- -")
        return
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] / 1000.0
    print(f"{pick(0.5):.3f} {pick(0.99):.3f}")


if __name__ == "__main__":
    if sys.argv[1] == "bodies":
        bodies(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "stats":
        stats(sys.argv[2])
    else:
        sys.exit(__doc__)
