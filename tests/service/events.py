"""events.py - the bus side of the black-box tests: publish CloudEvents and
read them back through build/tests/quern-events (a small C tool linked with
libquern-core, so tests use the real bus code), and build reference profiles
with libquern-ml."""
import json
import os
import subprocess
import time
import uuid
from datetime import datetime, timezone

TOOLS = os.environ.get("QUERN_TOOLS", os.path.join(os.path.dirname(__file__), "../../build/tests"))
TOOL = os.path.join(TOOLS, "quern-events")


def envelope(type_, data, id_=None):
    return {"specversion": "1.0", "id": id_ or str(uuid.uuid4()), "source": "quern-test",
            "type": type_, "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "datacontenttype": "application/json", "data": data}


def publish(bus, events):
    """Publishes whole envelopes (dicts); returns their ids."""
    text = "".join(json.dumps(e) + "\n" for e in events)
    p = subprocess.run([TOOL, "publish", bus], input=text.encode(), capture_output=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.decode())
    return p.stdout.decode().split()


def publish_predictions(bus, model, version, preds, prefix):
    """Logs one prediction per score in preds (feature x = 1.0), request ids
    prefix0, prefix1, ..., as quern.predictions.logged events of 50."""
    evs = []
    for i in range(0, len(preds), 50):
        evs.append(envelope("quern.predictions.logged", {
            "model": model, "version": version,
            "predictions": [{"request_id": f"{prefix}{i + j}", "time": time.time(), "features": {"x": 1.0},
                             "prediction": p} for j, p in enumerate(preds[i:i + 50])]}))
    publish(bus, evs)


def subscribe(bus, group, pattern):
    """Creates a durable group so that events published from now on are kept for it."""
    p = subprocess.run([TOOL, "subscribe", bus, group, pattern], capture_output=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.decode())


def read(bus, group, pattern, max_n=1000, quiet_ms=1000):
    """Receives (and acks) events of pattern through group until quiet_ms of silence."""
    p = subprocess.run([TOOL, "read", bus, group, pattern, str(max_n), str(quiet_ms)],
                       capture_output=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.decode())
    return [json.loads(line) for line in p.stdout.decode().splitlines() if line.strip()]


def profile(csv_path, out_path):
    p = subprocess.run([TOOL, "profile", csv_path, out_path], capture_output=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.decode())
    with open(out_path, "rb") as f:
        return f.read()
