#!/usr/bin/python3
"""pkgroot.py - a container root holding Debian packages as this host has them
installed: the base of quern-rabbitmq, quern-postgres and quern-prometheus
(scripts/image.sh), made without debootstrap, apt or a network.

    pkgroot.py --out DIR [--user NAME]... [--dir PATH:USER:GROUP:MODE]... PKG...
    pkgroot.py --key ...same arguments...   print the root's cache key

The root holds PKG..., everything they depend on (Depends and Pre-Depends,
recursively; the first installed alternative, virtual packages through the
installed package that provides them; no Recommends, as with apt-get
--no-install-recommends) and Debian's Essential set (sh, coreutils, ...: what a
debian:bookworm-slim has, less apt). Each package's files are those dpkg
installed (/var/lib/dpkg/info/PKG.list), taken from the host with their
owner and mode (hard-linked where DIR is on the same file system: read, never
written), with dpkg's diversions followed and Debian 12's merged /usr
kept (/bin, /sbin, /lib, /lib64 are symlinks into /usr). Left out, as in the
official -slim images: documentation (copyright files stay), man and info
pages, translations. What maintainer scripts would have made is made here:
/etc/passwd and /etc/group (Debian's base accounts, each --user NAME with its
groups as the host has them, and the groups owning files in the root), the
alternatives' symlinks as the host selected them, /etc/localtime (UTC) and the
dynamic loader's cache, and each --dir with its owner and mode (the state and
run directories a service writes). No package manager and no dpkg database go
in: the images are made again, never upgraded in place.

The host must be Debian 12 with the packages installed (scripts/deps-image.sh
installs them); the root is then those packages exactly at the host's
versions. The key (--key) is a hash of the packages and versions in the root,
the arguments and this file: scripts/image.sh lays the root out again only
when it changes.
"""
import argparse
import errno
import grp
import hashlib
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys

DPKG = "/var/lib/dpkg"
# What the -slim images leave out (their /etc/dpkg/dpkg.cfg.d/docker-slim).
EXCLUDE = re.compile(r"^/usr/share/(man|groff|info|lintian|linda)/|^/usr/share/locale/(?!locale\.alias$)"
                     r"|^/usr/share/doc/(?!.*/copyright$)")
MERGED = {"/bin": "usr/bin", "/sbin": "usr/sbin", "/lib": "usr/lib", "/lib64": "usr/lib64"}


def die(msg):
    print(f"pkgroot: {msg}", file=sys.stderr)
    sys.exit(1)


def installed():
    """{name: {field: value}} of the packages dpkg has installed (name without :arch)."""
    pkgs = {}
    with open(os.path.join(DPKG, "status"), encoding="utf-8") as f:
        for para in f.read().split("\n\n"):
            fields, key = {}, None
            for line in para.splitlines():
                if line[:1] in (" ", "\t"):
                    if key:
                        fields[key] += "\n" + line
                    continue
                key, _, val = line.partition(":")
                fields[key] = val.strip()
            if fields.get("Status", "").endswith(" installed") and "Package" in fields:
                pkgs[fields["Package"]] = fields
    return pkgs


def closure(pkgs, wanted):
    provides = {}
    for name, f in pkgs.items():
        for p in f.get("Provides", "").split(","):
            p = re.sub(r"\(.*\)", "", p).strip()
            if p:
                provides.setdefault(p, []).append(name)
    todo = sorted(n for n, f in pkgs.items() if f.get("Essential") == "yes") + list(wanted)
    seen = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if name not in pkgs:
            die(f"{name} is not installed here: run scripts/deps-image.sh")
        seen.add(name)
        deps = ",".join(pkgs[name].get(k, "") for k in ("Pre-Depends", "Depends"))
        for dep in deps.split(","):
            if not dep.strip():
                continue
            alts = [re.sub(r"\(.*?\)|\[.*?\]|<.*?>", "", a).strip().split(":")[0] for a in dep.split("|")]
            pick = next((a for a in alts if a in pkgs), None)
            if pick is None:
                pick = next((p for a in alts for p in provides.get(a, [])), None)
            if pick is None:
                die(f"{name} depends on {dep.strip()}, which nothing installed here satisfies")
            todo.append(pick)
    return sorted(seen)


def listfile(pkgs, name):
    arch = pkgs[name].get("Architecture", "")
    for cand in (f"{name}:{arch}.list", f"{name}.list"):
        path = os.path.join(DPKG, "info", cand)
        if os.path.exists(path):
            return path
    die(f"no file list for {name} in {DPKG}/info")


def diversions():
    div = {}
    try:
        with open(os.path.join(DPKG, "diversions"), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return div
    for i in range(0, len(lines) - 2, 3):
        div[lines[i]] = (lines[i + 1], lines[i + 2])
    return div


def canonical(path):
    """The path as it is on the host, its directories' symlinks resolved (merged /usr)."""
    if path in MERGED or path == "/":
        return path
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def host_lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split(":") for line in f if line.strip()]


def accounts(users, gids):
    """Debian's base accounts (base-passwd), the users asked for and the groups
    they are in or that own files, as the host has them."""
    passwd = [line for line in host_lines("/usr/share/base-passwd/passwd.master")]
    group = [line for line in host_lines("/usr/share/base-passwd/group.master")]
    for e in passwd + group:
        e[1] = "x"
    hpasswd = {e[0]: e for e in host_lines("/etc/passwd")}
    hgroup = host_lines("/etc/group")
    want_gids = set(gids)
    for u in users:
        if u not in hpasswd:
            die(f"user {u} does not exist here (its package's postinst makes it)")
        e = hpasswd[u]
        if e[0] not in {p[0] for p in passwd}:
            passwd.append(e)
        want_gids.add(int(e[3]))
        want_gids.update(int(g[2]) for g in hgroup if u in g[3].split(","))
    have = {int(g[2]) for g in group}
    for g in hgroup:
        if int(g[2]) in want_gids and int(g[2]) not in have:
            members = [m for m in g[3].split(",") if m in users]
            group.append([g[0], "x", g[2], ",".join(members)])
    return passwd, group


def alternatives(present):
    """(link, target) symlinks of the host's alternatives whose chosen file is in the root."""
    links = []
    adir = os.path.join(DPKG, "alternatives")
    for name in sorted(os.listdir(adir)) if os.path.isdir(adir) else []:
        with open(os.path.join(adir, name), encoding="utf-8") as f:
            lines = f.read().split("\n")
        pairs = [(name, lines[1])]
        i = 2
        while i + 1 < len(lines) and lines[i]:
            pairs.append((lines[i], lines[i + 1]))
            i += 2
        for n, link in pairs:
            etc = f"/etc/alternatives/{n}"
            if not os.path.islink(etc):
                continue
            target = os.readlink(etc)
            if canonical(target) not in present:
                continue
            links.append((etc, target))
            if os.path.islink(link):
                links.append((canonical(link), os.readlink(link)))
    return links


def lay_out(out, paths):
    """Each host path into OUT: directories made with the host's owner and mode,
    symlinks copied, regular files hard-linked (the same file system: no copy)
    or else copied. Nothing in OUT is ever written through afterwards (write()
    replaces a file), so the host's files are only read."""
    for p in paths:  # sorted: a directory before what is in it
        st = os.lstat(p)
        dst = out + p
        parent = os.path.dirname(dst)
        if not os.path.isdir(parent):
            os.makedirs(parent)
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(dst)
            os.chown(dst, st.st_uid, st.st_gid)
            os.chmod(dst, stat.S_IMODE(st.st_mode))
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(p), dst)
            os.lchown(dst, st.st_uid, st.st_gid)
        elif stat.S_ISREG(st.st_mode):
            try:
                os.link(p, dst)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.EPERM):
                    raise
                shutil.copy2(p, dst)
                os.chown(dst, st.st_uid, st.st_gid)
        else:
            print(f"pkgroot: {p}: neither file, directory nor symlink; left out", file=sys.stderr)


def inside(out, path, what=None):
    """Dies unless OUT + PATH is reached without a symlink (one could lead out
    of OUT, onto the host's files: /var/run is /run, absolute, on Debian)."""
    d = out + path
    if os.path.realpath(d) != os.path.normpath(d):
        die(f"{what or path}: a symlink on the way; name the directory itself")


def write(path, text, mode=0o644):
    """A new file at PATH (a hard link to a host file there is replaced, never written)."""
    if os.path.lexists(path):
        os.unlink(path)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, mode)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="the directory to lay the root out in (made afresh)")
    ap.add_argument("--key", action="store_true", help="print the root's cache key and stop")
    ap.add_argument("--user", action="append", default=[], help="an account the root must have")
    ap.add_argument("--dir", action="append", default=[], metavar="PATH:USER:GROUP:MODE",
                    help="a directory the root must have, with this owner and octal mode")
    ap.add_argument("packages", nargs="+")
    a = ap.parse_args()
    if bool(a.out) == a.key:
        ap.error("give --out DIR or --key")

    pkgs = installed()
    names = closure(pkgs, a.packages)
    h = hashlib.sha256()
    with open(os.path.abspath(__file__), "rb") as f:
        h.update(f.read())
    h.update(repr((sorted(a.user), sorted(a.dir), sorted(a.packages))).encode())
    for n in names:
        h.update(f"{n} {pkgs[n].get('Version')} {pkgs[n].get('Architecture')}\n".encode())
    if a.key:
        print(h.hexdigest()[:32])
        return

    div = diversions()
    paths = set()
    for n in names:
        with open(listfile(pkgs, n), encoding="utf-8") as f:
            for p in f.read().splitlines():
                if p in ("/.", "/") or not p:
                    continue
                if p in div and div[p][1] != n:
                    p = div[p][0]  # another package's copy, set aside by the diverter
                if EXCLUDE.search(p):
                    continue
                paths.add(canonical(p))
    present = {p for p in paths if os.path.lexists(p)}
    entries = sorted(present)  # a directory before what is in it
    out = os.path.abspath(a.out)
    subprocess.run(["rm", "-rf", out], check=True)
    os.makedirs(out)
    for link, target in MERGED.items():
        os.symlink(target, out + link)
    lay_out(out, [p for p in entries if p not in MERGED])

    gids = set()
    for dirpath, dirnames, filenames in os.walk(out):
        for fn in dirnames + filenames:
            gids.add(os.lstat(os.path.join(dirpath, fn)).st_gid)
    passwd, group = accounts(a.user, gids)
    write(out + "/etc/passwd", "".join(":".join(e) + "\n" for e in passwd))
    write(out + "/etc/group", "".join(":".join(e) + "\n" for e in group))

    os.makedirs(out + "/etc/alternatives", exist_ok=True)
    for link, target in alternatives(present):
        dst = out + link
        if os.path.lexists(dst):
            continue
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.symlink(target, dst)
    for d, mode in (("/tmp", 0o1777), ("/var/tmp", 0o1777), ("/root", 0o700), ("/run", 0o755),
                    ("/proc", 0o555), ("/sys", 0o555), ("/dev", 0o755), ("/home", 0o755)):
        inside(out, d)
        os.makedirs(out + d, exist_ok=True)
        os.chmod(out + d, mode)
    if os.path.exists(out + "/usr/share/zoneinfo/Etc/UTC") and not os.path.lexists(out + "/etc/localtime"):
        os.symlink("/usr/share/zoneinfo/Etc/UTC", out + "/etc/localtime")
        write(out + "/etc/timezone", "Etc/UTC\n")
    for spec in a.dir:
        path, user, group, mode = spec.split(":")
        d = out + path
        inside(out, path, f"--dir {path}")
        os.makedirs(d, exist_ok=True)
        os.chown(d, pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid)
        os.chmod(d, int(mode, 8))
    # The loader's cache (-X: its symlinks are the packages' own, left as they are).
    subprocess.run(["ldconfig", "-X", "-r", out], check=True)

    size = sum(os.lstat(os.path.join(dp, fn)).st_size for dp, _, fns in os.walk(out) for fn in fns)
    print(f"pkgroot: {len(names)} packages, {len(entries)} paths, {size / 1e6:.1f} MB in {out}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
