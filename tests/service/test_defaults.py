"""test_defaults.py - a service started alone, on its defaults, on a fresh machine.

The README's first step is `quern-registry --data DIR` in a fresh checkout:
no QUERN_HOME, no --bus, so the bus is the default sqlite://./.quern/bus.db
and ./.quern/ does not exist yet. The service must create what its defaults
need and become ready, not exit on "cannot open".
"""
import os
import shutil
import tempfile
import unittest

import harness
from harness import Service, WORK

CLEARED = ("QUERN_HOME", "QUERN_BUS", "QUERN_DATA", "QUERN_LISTEN", "QUERN_REGISTRY")


class DefaultsTest(unittest.TestCase):
    def setUp(self):
        harness.BIN = os.path.abspath(harness.BIN)  # the test changes directory
        self.cwd = os.getcwd()
        self.tmp = tempfile.mkdtemp(prefix="quern-defaults-", dir=WORK)
        self.svc = None

    def tearDown(self):
        os.chdir(self.cwd)
        if self.svc:
            self.svc.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start_in(self, cwd, name, env=None, **kw):
        """Starts a service whose working directory is cwd, with none of the
        QUERN_* variables that would replace a default unless env sets them."""
        s = Service(name, **kw)
        for k in CLEARED:
            s.env.pop(k, None)
        s.env.update(env or {})
        os.makedirs(cwd, exist_ok=True)
        os.chdir(cwd)  # the child inherits it
        try:
            self.svc = s
            s.start(timeout=30)
        finally:
            os.chdir(self.cwd)
        return s

    def test_registry_alone_creates_the_default_bus_directory(self):
        fresh = os.path.join(self.tmp, "checkout")
        data = os.path.join(self.tmp, "data")
        os.makedirs(data)
        s = self.start_in(fresh, "registry", data=data)
        st, _, body = s.request("GET", "/readyz")
        self.assertEqual(st, 200, body)
        self.assertTrue(os.path.isfile(os.path.join(fresh, ".quern", "bus.db")),
                        os.listdir(fresh))
        # It is a working bus: a write that publishes an event succeeds.
        st, _, body = s.request("POST", "/v1/models", {"name": "first"})
        self.assertEqual(st, 201, body)

    def test_quern_home_that_does_not_exist_yet(self):
        home = os.path.join(self.tmp, "not", "yet", "home")
        data = os.path.join(self.tmp, "data2")
        os.makedirs(data)
        s = self.start_in(self.tmp, "ingest", data=data, env={"QUERN_HOME": home})
        st, _, body = s.request("GET", "/readyz")
        self.assertEqual(st, 200, body)
        self.assertTrue(os.path.isfile(os.path.join(home, "bus.db")))


if __name__ == "__main__":
    unittest.main()
