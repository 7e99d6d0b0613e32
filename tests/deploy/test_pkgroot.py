#!/usr/bin/python3
"""test_pkgroot.py - deploy/container/pkgroot.py, the roots of the backends'
images (quern-rabbitmq, -postgres, -prometheus), without an engine.

A root of curl (and its dependencies, and Debian's Essential set) laid out from
this host's installation:
- runs by itself: curl, sh and awk (an alternative) work under chroot into it;
- is laid out as Debian 12 is (merged /usr) and as a -slim image (no man
  pages, documentation only as copyright files), with no package manager;
- has Debian's base accounts plus the --user asked for, and each --dir with the
  owner and mode asked for;
- leaves the host as it was (its /etc/passwd, /etc/group, the files linked in).
The cache key follows the arguments; a package that is not installed and a
--dir through a symlink (which could lead out of the root) are refused.
"""
import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("QUERN_SOURCE_DIR", os.path.abspath(os.path.join(HERE, "..", "..")))
PKGROOT = os.path.join(SRC, "deploy", "container", "pkgroot.py")
WORK = os.environ.get("QUERN_TEST_WORK", tempfile.gettempdir())


def pkgroot(*args):
    return subprocess.run(["/usr/bin/python3", PKGROOT, *args], capture_output=True, text=True, timeout=600)


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class PkgRoot(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise unittest.SkipTest("pkgroot.py keeps owners: root only")
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise unittest.SkipTest("no user postgres (scripts/deps.sh installs postgresql)")
        cls.host = {p: digest(p) for p in ("/etc/passwd", "/etc/group", "/usr/bin/curl")}
        cls.tmp = tempfile.mkdtemp(dir=WORK, prefix="pkgroot.")
        cls.r = os.path.join(cls.tmp, "root")
        cls.args = ["--user", "postgres", "--dir", "/var/lib/quern-test:postgres:postgres:0750", "curl"]
        p = pkgroot("--out", cls.r, *cls.args)
        assert p.returncode == 0, p.stderr
        cls.summary = p.stderr

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def chroot(self, *cmd):
        return subprocess.run(["chroot", self.r, *cmd], capture_output=True, text=True, timeout=60)

    def test_runs_by_itself(self):
        p = self.chroot("/usr/bin/curl", "--version")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(p.stdout.startswith("curl "), p.stdout)
        p = self.chroot("/bin/sh", "-c", "echo 'a b' | awk '{print $2}'")
        self.assertEqual((p.returncode, p.stdout), (0, "b\n"), p.stderr)
        self.assertEqual(os.readlink(os.path.join(self.r, "usr/bin/awk")), "/etc/alternatives/awk")
        self.assertTrue(os.path.exists(os.path.join(self.r, "etc/ld.so.cache")))

    def test_layout(self):
        for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
            self.assertEqual(os.readlink(os.path.join(self.r, link)), target)
        self.assertTrue(os.path.exists(os.path.join(self.r, "usr/share/doc/curl/copyright")))
        docs = [f for dp, _, fs in os.walk(os.path.join(self.r, "usr/share/doc")) for f in fs if f != "copyright"]
        self.assertEqual(docs, [])
        man = [f for dp, _, fs in os.walk(os.path.join(self.r, "usr/share/man")) for f in fs]
        self.assertEqual(man, [])
        for absent in ("usr/bin/apt-get", "var/lib/dpkg/status"):
            self.assertFalse(os.path.exists(os.path.join(self.r, absent)), absent)
        self.assertEqual(os.stat(os.path.join(self.r, "tmp")).st_mode & 0o7777, 0o1777)
        self.assertIn("packages", self.summary)

    def test_accounts_and_dirs(self):
        with open(os.path.join(self.r, "etc/passwd")) as f:
            users = {line.split(":")[0]: line.split(":") for line in f}
        self.assertEqual(users["root"][2], "0")
        pg = pwd.getpwnam("postgres")
        self.assertEqual((users["postgres"][2], users["postgres"][3]), (str(pg.pw_uid), str(pg.pw_gid)))
        with open(os.path.join(self.r, "etc/group")) as f:
            self.assertIn(str(pg.pw_gid), {line.split(":")[2] for line in f})
        st = os.stat(os.path.join(self.r, "var/lib/quern-test"))
        self.assertEqual((st.st_uid, st.st_gid, st.st_mode & 0o7777), (pg.pw_uid, pg.pw_gid, 0o750))

    def test_host_untouched(self):
        for path, d in self.host.items():
            self.assertEqual(digest(path), d, path)
        self.assertFalse(os.path.exists("/var/lib/quern-test"))

    def test_key(self):
        k1 = pkgroot("--key", *self.args)
        k2 = pkgroot("--key", *self.args)
        k3 = pkgroot("--key", "--user", "postgres", "curl")
        self.assertEqual(k1.returncode, 0, k1.stderr)
        self.assertEqual(k1.stdout, k2.stdout)
        self.assertNotEqual(k1.stdout, k3.stdout)
        self.assertRegex(k1.stdout, r"^[0-9a-f]{32}\n$")

    def test_refusals(self):
        p = pkgroot("--key", "quern-no-such-package")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("quern-no-such-package is not installed", p.stderr)
        out = os.path.join(self.tmp, "bad")
        p = pkgroot("--out", out, "--dir", "/var/run/quern-test-escape:root:root:0755", "dash")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("symlink", p.stderr)
        self.assertFalse(os.path.exists("/run/quern-test-escape"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
