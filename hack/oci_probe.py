#!/usr/bin/env python3
"""pyshim's own OCI conformance probe: runtime-tools-style checks against any runc-compatible CLI.

NOT the OCI runtime-tools validation suite (hack/oci-validation.sh runs that when its source is
available; Debian does not package it). This probe follows its method: for each case a busybox
bundle whose config.json varies one area of the spec; the runtime CLI is driven through
create/start/state/kill/delete; a shell script inside the container checks what runtimetest
checks (process, user, capabilities, rlimits, hostname, mounts, devices, masked/readonly
paths, sysctl, oom_score_adj, id mappings, propagation, seccomp) and prints TAP; the host side
checks namespaces, cgroups and hooks. Every assertion is one TAP line, so totals compare
across runtimes.

Usage: hack/oci_probe.py [--runtime pyshim-runc] [--runtime runc] [--cases a,b] [--out DIR]
       [--verbose]   (root; prints per-case and total ok / not ok / skip per runtime)
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from runtime.specgen import default_config  # noqa: E402

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "cat", "echo", "grep", "awk", "id", "hostname", "readlink", "stat", "touch",
           "mkdir", "ls", "head", "tail", "cut", "env", "pwd", "sleep", "tr", "true", "wc")
TIMEOUT = 30
CAP_NAMES = None  # filled from runtime.caps


# --- TAP -------------------------------------------------------------------------------------
class Tap:
    def __init__(self):
        self.lines: list[str] = []

    def ok(self, cond: bool, desc: str, diag: str = "") -> bool:
        n = len(self.lines) + 1
        line = f"{'ok' if cond else 'not ok'} {n} - {desc}"
        if not cond and diag:
            line += f" # {diag}"
        self.lines.append(line)
        return cond

    def skip(self, desc: str, why: str) -> None:
        self.lines.append(f"ok {len(self.lines) + 1} - {desc} # SKIP {why}")

    def eq(self, got, want, desc: str) -> bool:
        return self.ok(got == want, desc, f"expected {want!r}, got {got!r}")

    def raw(self, text: str) -> None:
        """Lines "ok - desc" / "not ok - desc # diag" from the container, renumbered."""
        for line in text.splitlines():
            if line.startswith(("ok - ", "not ok - ")):
                cond = line.startswith("ok")
                body = line.split(" - ", 1)[1]
                desc, _, diag = body.partition(" # ")
                self.ok(cond, desc, diag)

    def text(self) -> str:
        return f"1..{len(self.lines)}\n" + "".join(f"{ln}\n" for ln in self.lines)


def count(tap_text: str) -> dict[str, int]:
    c = {"ok": 0, "not ok": 0, "skip": 0}
    for line in tap_text.splitlines():
        if line.startswith("not ok"):
            c["not ok"] += 1
        elif line.startswith("ok"):
            c["skip" if "# SKIP" in line else "ok"] += 1
    return c


# --- the runtime under test ------------------------------------------------------------------
class Runtime:
    def __init__(self, binary: str, root: str):
        self.binary, self.root = binary, root

    def __call__(self, *args, timeout: float = TIMEOUT, stdout=None) -> tuple[int, str, str]:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                r = subprocess.run([self.binary, "--root", self.root, *args],
                                   stdin=subprocess.DEVNULL, stdout=stdout or out, stderr=err,
                                   timeout=timeout)
                rc = r.returncode
            except subprocess.TimeoutExpired:
                rc = -1
            out.seek(0)
            err.seek(0)
            return rc, out.read().decode(errors="replace"), err.read().decode(errors="replace")

    def state(self, cid: str) -> dict | None:
        rc, out, _ = self("state", cid)
        try:
            return json.loads(out) if rc == 0 else None
        except ValueError:
            return None

    def wait(self, cid: str, status: str, timeout: float = 10) -> dict | None:
        deadline = time.monotonic() + timeout
        while True:
            st = self.state(cid)
            if (st and st.get("status") == status) or time.monotonic() > deadline:
                return st
            time.sleep(0.02)

    def cleanup(self) -> None:
        rc, out, _ = self("list", "-q")
        for cid in out.split() if rc == 0 else []:
            self("delete", "--force", cid)


class Bundle:
    """A busybox bundle in `d`; write(config) puts config.json and the probe script in it."""

    def __init__(self, d: str):
        self.dir = d
        self.rootfs = os.path.join(d, "rootfs")
        os.makedirs(os.path.join(self.rootfs, "bin"))
        for sub in ("tmp", "etc", "dev", "proc", "sys", "mnt"):
            os.makedirs(os.path.join(self.rootfs, sub), exist_ok=True)
        os.chmod(os.path.join(self.rootfs, "tmp"), 0o1777)
        shutil.copy(BUSYBOX, os.path.join(self.rootfs, "bin", "busybox"))
        for a in APPLETS:
            os.link(os.path.join(self.rootfs, "bin/busybox"), os.path.join(self.rootfs, "bin", a))
        with open(os.path.join(self.rootfs, "etc/passwd"), "w") as f:
            f.write("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n")
        with open(os.path.join(self.rootfs, "etc/group"), "w") as f:
            f.write("root:x:0:\ntty:x:5:\nuser:x:1000:\n")

    def write(self, config: dict, script: str | None = None) -> str:
        with open(os.path.join(self.dir, "config.json"), "w") as f:
            json.dump(config, f)
        if script is not None:
            with open(os.path.join(self.rootfs, "probe.sh"), "w") as f:
                f.write(script)
        return self.dir


def base_config(args=("sh", "/probe.sh")) -> dict:
    c = default_config(list(args), hostname="oci-probe")
    return c


# --- the in-container checks (what runtimetest checks), generated from the config ------------
_HELPERS = r"""
t() {
  if [ "$2" = "$3" ]; then echo "ok - $1"; else echo "not ok - $1 # expected '$3', got '$2'"; fi
}
has() { case " $2 " in *" $3 "*) echo "ok - $1";; *) echo "not ok - $1 # '$3' not in '$2'";; esac; }
status() { grep "^$1:" /proc/$$/status | awk '{print $2}'; }
limit() { grep "^$1 " /proc/$$/limits | awk '{print $(NF-2) " " $(NF-1)}'; }
mnt() {
  awk -v d="$1" '$5 == d {for (i = 7; $i != "-"; i++); print $(i+1) " " $(i+2)}' \
    /proc/self/mountinfo
}
mntopts() { awk -v d="$1" '$5 == d {print $6}' /proc/self/mountinfo | tail -n 1; }
"""
_LIMITS = {"RLIMIT_CPU": "Max cpu time", "RLIMIT_FSIZE": "Max file size",
           "RLIMIT_DATA": "Max data size", "RLIMIT_STACK": "Max stack size",
           "RLIMIT_CORE": "Max core file size", "RLIMIT_RSS": "Max resident set",
           "RLIMIT_NPROC": "Max processes", "RLIMIT_NOFILE": "Max open files",
           "RLIMIT_MEMLOCK": "Max locked memory", "RLIMIT_AS": "Max address space",
           "RLIMIT_LOCKS": "Max file locks", "RLIMIT_SIGPENDING": "Max pending signals",
           "RLIMIT_MSGQUEUE": "Max msgqueue size", "RLIMIT_NICE": "Max nice priority",
           "RLIMIT_RTPRIO": "Max realtime priority", "RLIMIT_RTTIME": "Max realtime timeout"}
_DEFAULT_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
                    "/dev/tty", "/dev/ptmx")
_DEFAULT_LINKS = {"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0",
                  "/dev/stdout": "/proc/self/fd/1", "/dev/stderr": "/proc/self/fd/2"}
NS_PROC = {"ipc": "ipc", "uts": "uts", "network": "net", "pid": "pid", "mount": "mnt",
           "cgroup": "cgroup", "user": "user", "time": "time"}


def q(s) -> str:
    return shlex.quote(str(s))


def _cap_mask(names) -> str:
    from runtime import caps
    last = caps.last_cap()
    m = 0
    for n in names or []:
        i = caps.NUMBERS.get(n)
        if i is not None and i <= last:
            m |= 1 << i
    return f"{m:016x}"


def probe_script(c: dict, extra: str = "") -> str:
    p = c["process"]
    lines = ["#!/bin/sh", _HELPERS]
    add = lines.append
    add(f"t 'process.cwd' \"$(pwd)\" {q(p['cwd'])}")
    for e in p.get("env", []):
        k, _, v = e.partition("=")
        awk = q('BEGIN {print ENVIRON["' + k + '"]}')
        add(f"t {q('process.env ' + k)} \"$(awk {awk})\" {q(v)}")
    user = p.get("user", {})
    add(f"t 'process.user.uid' \"$(id -u)\" {q(user.get('uid', 0))}")
    add(f"t 'process.user.gid' \"$(id -g)\" {q(user.get('gid', 0))}")
    for g in user.get("additionalGids", []):
        add(f"has {q(f'process.user.additionalGids {g}')} \"$(id -G)\" {q(g)}")
    if user.get("umask") is not None:
        add(f"t 'process.user.umask' \"$(umask)\" {q('%04o' % user['umask'])}")
    add(f"t 'process.args' \"$(tr '\\0' ' ' < /proc/$$/cmdline)\" {q(' '.join(p['args']) + ' ')}")
    add(f"t 'process.noNewPrivileges' \"$(status NoNewPrivs)\" "
        f"{q(1 if p.get('noNewPrivileges') else 0)}")
    caps = p.get("capabilities")
    if caps is not None and user.get("uid", 0) != 0:
        # execve as a non-root user: permitted and effective become the ambient set
        caps = dict(caps, permitted=caps.get("ambient", []), effective=caps.get("ambient", []))
    if caps is not None:
        for key, field in (("bounding", "CapBnd"), ("effective", "CapEff"),
                           ("inheritable", "CapInh"), ("permitted", "CapPrm"),
                           ("ambient", "CapAmb")):
            add(f"t {q('process.capabilities.' + key)} \"$(status {field})\" "
                f"{q(_cap_mask(caps.get(key)))}")
    for r in p.get("rlimits", []):
        name = _LIMITS[r["type"]]

        def fmt(v):
            return "unlimited" if v >= 2**63 else str(v)
        add(f"t {q('process.rlimits ' + r['type'])} \"$(limit {q(name)})\" "
            f"{q(fmt(r['soft']) + ' ' + fmt(r['hard']))}")
    if p.get("oomScoreAdj") is not None:
        add(f"t 'process.oomScoreAdj' \"$(cat /proc/$$/oom_score_adj)\" {q(p['oomScoreAdj'])}")
    if c.get("hostname"):
        add(f"t 'hostname' \"$(hostname)\" {q(c['hostname'])}")
    want_ro = "ro" if c.get("root", {}).get("readonly") else "rw"
    add(f"t 'root.readonly' \"$(mntopts / | cut -d, -f1)\" {want_ro}")
    for m in c.get("mounts", []):
        if m.get("type") in ("bind", "rbind") or "bind" in m.get("options", []) \
                or "rbind" in m.get("options", []):
            add(f"t {q('mounts ' + m['destination'] + ' exists')} "
                f"\"$([ -e {q(m['destination'])} ] && echo yes)\" yes")
            continue
        want = f"{m.get('type')} {m.get('source')}"
        add(f"has {q('mounts ' + m['destination'])} \"$(mnt {q(m['destination'])} | tr '\\n' "
            f"' ')\" {q(want)}")
        if "ro" in m.get("options", []):
            add(f"t {q('mounts ' + m['destination'] + ' ro')} "
                f"\"$(mntopts {q(m['destination'])} | cut -d, -f1)\" ro")
    for d in _DEFAULT_DEVICES:
        add(f"t {q('default device ' + d)} \"$([ -c {d} ] && echo c)\" c")
    for link, target in _DEFAULT_LINKS.items():
        add(f"t {q('default symlink ' + link)} \"$(readlink {link})\" {q(target)}")
    linux = c.get("linux", {})
    for d in linux.get("devices", []):
        kind = {"c": "character special file", "b": "block special file", "p": "fifo"}[d["type"]]
        want = f"{kind}|{d.get('major', 0):x}|{d.get('minor', 0):x}|" \
               f"{d.get('fileMode', 0o666) & 0o777:o}|{d.get('uid', 0)}|{d.get('gid', 0)}"
        if d["type"] == "p":
            want = f"{kind}|0|0|{d.get('fileMode', 0o666) & 0o777:o}|{d.get('uid', 0)}|" \
                   f"{d.get('gid', 0)}"
        add(f"t {q('linux.devices ' + d['path'])} \"$(stat -c '%F|%t|%T|%a|%u|%g' "
            f"{q(d['path'])} 2>&1)\" {q(want)}")
    for path in linux.get("maskedPaths", []):
        add(f"if [ -d {q(path)} ]; then t {q('linux.maskedPaths ' + path)} "
            f"\"$(ls -A {q(path)} | wc -l)\" 0; elif [ -e {q(path)} ]; then "
            f"t {q('linux.maskedPaths ' + path)} \"$(head -c 1 {q(path)} 2>/dev/null | wc -c)\" 0;"
            f" fi")
    for path in linux.get("readonlyPaths", []):
        add(f"[ -e {q(path)} ] && t {q('linux.readonlyPaths ' + path)} "
            f"\"$(mntopts {q(path)} | cut -d, -f1)\" ro")
    for key, value in linux.get("sysctl", {}).items():
        add(f"t {q('linux.sysctl ' + key)} \"$(cat /proc/sys/{key.replace('.', '/')})\" "
            f"{q(value)}")
    for key, f in (("uidMappings", "uid_map"), ("gidMappings", "gid_map")):
        for m in linux.get(key, []):
            want = f"{m['containerID']} {m['hostID']} {m['size']}"
            add(f"has {q('linux.' + key)} \"$(awk '{{print $1\"_\"$2\"_\"$3}}' /proc/$$/{f} | "
                f"tr '\\n' ' ')\" {q(want.replace(' ', '_'))}")
    prop = linux.get("rootfsPropagation")
    if prop:
        want = {"shared": "shared", "rshared": "shared", "slave": "master", "rslave": "master",
                "private": "private", "rprivate": "private"}.get(prop, prop)
        add(f"t {q('linux.rootfsPropagation ' + prop)} \"$(awk '$5 == \"/\" {{f = \"private\"; "
            f"for (i = 7; $i != \"-\"; i++) {{ split($i, a, \":\"); "
            f"if (a[1] == \"shared\" && f == \"private\") f = \"shared\"; "
            f"if (a[1] == \"master\") f = \"master\"; "
            f"if ($i == \"unbindable\") f = \"unbindable\" }}"
            f" print f}}' /proc/self/mountinfo | tail -n 1)\" {q(want)}")
    for t in NS_PROC.values():
        add(f"echo \"ns {t} $(readlink /proc/$$/ns/{t})\"")
    add(extra)
    add("echo probe-done")
    return "\n".join(lines) + "\n"


# --- cases -----------------------------------------------------------------------------------
class Case:
    def __init__(self, rt: Runtime, tmp: str, tap: Tap):
        self.rt, self.tmp, self.tap = rt, tmp, tap
        self.bundle = Bundle(os.path.join(tmp, "bundle"))
        self.id = "probe-" + uuid.uuid4().hex[:10]
        self.cleanups: list = []

    def run_probe(self, config: dict, extra_script: str = "", host_checks=None,
                  check_ns: bool = True) -> str | None:
        """create (host checks while created) + start; the probe's output, or None."""
        tap, rt = self.tap, self.rt
        b = self.bundle.write(config, probe_script(config, extra_script))
        out_path = os.path.join(self.tmp, "probe.out")
        with open(out_path, "wb") as out:
            rc, _, err = rt("create", "--bundle", b, self.id, stdout=out)
        if not tap.ok(rc == 0, "create", f"exit {rc}: {err.strip()[-300:]}"):
            return None
        st = rt.state(self.id) or {}
        if host_checks:
            host_checks(st)
        rc, _, err = rt("start", self.id)
        tap.ok(rc == 0, "start", f"exit {rc}: {err.strip()[-300:]}")
        st = rt.wait(self.id, "stopped")
        tap.ok(bool(st) and st["status"] == "stopped", "the probe ran to its end",
               f"state {st and st.get('status')}")
        rc, _, err = rt("delete", self.id)
        tap.ok(rc == 0, "delete", f"exit {rc}: {err.strip()[-300:]}")
        with open(out_path) as f:
            text = f.read()
        tap.ok("probe-done" in text, "the probe script completed", text[-300:].replace("\n", "|"))
        tap.raw(text)
        if check_ns:
            self._namespaces(config, text)
        return text

    def _namespaces(self, config: dict, text: str) -> None:
        seen = {}
        for line in text.splitlines():
            if line.startswith("ns "):
                _, t, link = (line.split(" ", 2) + [""])[:3]
                seen[t] = link
        want = {n["type"]: n.get("path") for n in config.get("linux", {}).get("namespaces", [])}
        for spec_type, t in NS_PROC.items():
            try:
                host = os.readlink(f"/proc/self/ns/{t}")
            except OSError:
                continue
            got = seen.get(t, "")
            if spec_type not in want:
                self.tap.eq(got, host, f"linux.namespaces {spec_type}: shared with the host")
            elif want[spec_type]:
                ino = os.stat(want[spec_type]).st_ino
                self.tap.eq(got, f"{t}:[{ino}]", f"linux.namespaces {spec_type}: joined path")
            else:
                self.tap.ok(bool(got) and got != host, f"linux.namespaces {spec_type}: new",
                            f"got {got!r}, host {host!r}")


def case_lifecycle(c: Case) -> None:
    tap, rt = c.tap, c.rt
    b = c.bundle.write(base_config(["sleep", "30"]))
    pidfile = os.path.join(c.tmp, "pid")
    rc, _, err = rt("create", "--bundle", b, "--pid-file", pidfile, c.id)
    tap.ok(rc == 0, "create --pid-file", err.strip()[-300:])
    st = rt.state(c.id) or {}
    for key in ("ociVersion", "id", "status", "pid", "bundle"):
        tap.ok(key in st, f"state has {key}")
    tap.eq(st.get("status"), "created", "state.status after create")
    tap.eq(st.get("id"), c.id, "state.id")
    tap.eq(st.get("bundle"), b, "state.bundle")
    pid = st.get("pid") or 0
    tap.ok(pid > 0 and os.path.exists(f"/proc/{pid}"), "state.pid is a live process")
    tap.eq(open(pidfile).read().strip() if os.path.exists(pidfile) else None, str(pid),
           "the pid file holds state.pid")
    rc, _, _ = rt("start", c.id)
    tap.eq(rc, 0, "start")
    tap.eq((rt.state(c.id) or {}).get("status"), "running", "state.status after start")
    rc, _, _ = rt("start", c.id)
    tap.ok(rc != 0, "start of a running container is an error")
    rc, _, _ = rt("delete", c.id)
    tap.ok(rc != 0, "delete of a running container is an error")
    tap.eq((rt.state(c.id) or {}).get("status"), "running", "... and has no effect")
    rc, _, _ = rt("kill", c.id, "KILL")
    tap.eq(rc, 0, "kill KILL")
    st = rt.wait(c.id, "stopped") or {}
    tap.eq(st.get("status"), "stopped", "state.status after the process exits")
    rc, _, _ = rt("start", c.id)
    tap.ok(rc != 0, "start of a stopped container is an error")
    rc, _, _ = rt("kill", c.id, "TERM")
    tap.ok(rc != 0, "kill of a stopped container is an error")
    rc, _, _ = rt("delete", c.id)
    tap.eq(rc, 0, "delete of a stopped container")
    tap.ok(rt.state(c.id) is None, "state after delete is an error")
    rc, _, _ = rt("delete", c.id)
    tap.ok(rc != 0, "delete of a deleted container is an error")
    # kill/delete of a created container
    b = c.bundle.write(base_config(["sleep", "30"]))
    rc, _, _ = rt("create", "--bundle", b, c.id)
    tap.eq(rc, 0, "create again with the same id after delete")
    rc, _, _ = rt("create", "--bundle", b, c.id)
    tap.ok(rc != 0, "create with an id in use is an error")
    rc, _, _ = rt("kill", c.id, "TERM")
    tap.eq(rc, 0, "kill TERM of a created container")
    tap.eq((rt.wait(c.id, "stopped") or {}).get("status"), "stopped", "... stops it")
    rt("delete", c.id)
    rc, _, _ = rt("create", "--bundle", b, c.id)
    rc2, _, _ = rt("delete", "--force", c.id)
    tap.ok(rc == 0 and rc2 == 0, "delete --force of a created container")
    tap.ok(rt.state(c.id) is None, "... removes it")
    tap.ok(rt("state", "no-such-" + c.id)[0] != 0, "state of an unknown id is an error")


def case_errors(c: Case) -> None:
    tap, rt = c.tap, c.rt
    bad = base_config(["true"])
    del bad["process"]["cwd"]
    rc, _, _ = rt("create", "--bundle", c.bundle.write(bad), c.id)
    tap.ok(rc != 0, "create without process.cwd fails")
    tap.ok(rt.state(c.id) is None, "... and leaves no container")
    bad = base_config(["/no/such/exe"])
    rc, _, _ = rt("create", "--bundle", c.bundle.write(bad), c.id)
    tap.ok(rc != 0, "create of a missing executable fails")
    tap.ok(rt.state(c.id) is None, "... and leaves no container")
    rc, _, _ = rt("create", "--bundle", os.path.join(c.tmp, "nowhere"), c.id)
    tap.ok(rc != 0, "create with a missing bundle fails")
    bad = base_config(["true"])
    bad["ociVersion"] = 1
    rc, _, _ = rt("create", "--bundle", c.bundle.write(bad), c.id)
    tap.ok(rc != 0, "create with a malformed config.json fails")
    rc, _, _ = rt("kill", c.id, "KILL")
    tap.ok(rc != 0, "kill of an unknown id is an error")


def _probe(mutate=None, extra="", host=None):
    def case(c: Case) -> None:
        config = base_config()
        if mutate:
            mutate(config, c)
        c.run_probe(config, extra, (lambda st: host(c, config, st)) if host else None)
    return case


def _process(cfg, c):
    os.makedirs(os.path.join(c.bundle.rootfs, "work"), exist_ok=True)
    p = cfg["process"]
    p["cwd"] = "/work"
    p["env"] += ["PROBE_A=1", "PROBE_B=two words"]
    p["args"] = ["sh", "/probe.sh", "extra-arg"]
    p["noNewPrivileges"] = False


def _user(cfg, c):
    os.makedirs(os.path.join(c.bundle.rootfs, "home/user"), exist_ok=True)
    cfg["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [5, 2000],
                              "umask": 0o027}


def _capabilities(cfg, c):
    cfg["process"]["capabilities"] = {
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID"],
        "effective": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "inheritable": ["CAP_NET_BIND_SERVICE"]}


def _rlimits(cfg, c):
    cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 256, "hard": 512},
                                 {"type": "RLIMIT_CORE", "soft": 0, "hard": 2**64 - 1},
                                 {"type": "RLIMIT_NPROC", "soft": 1000, "hard": 2000}]


def _root_readonly(cfg, c):
    cfg["root"]["readonly"] = True


def _paths(cfg, c):
    os.makedirs(os.path.join(c.bundle.rootfs, "secret-dir"), exist_ok=True)
    open(os.path.join(c.bundle.rootfs, "secret-dir/x"), "w").write("x")
    open(os.path.join(c.bundle.rootfs, "secret-file"), "w").write("secret")
    os.makedirs(os.path.join(c.bundle.rootfs, "ro-dir"), exist_ok=True)
    cfg["linux"]["maskedPaths"] += ["/secret-dir", "/secret-file"]
    cfg["linux"]["readonlyPaths"] += ["/ro-dir"]


def _mounts(cfg, c):
    host = os.path.join(c.tmp, "hostdir")
    os.makedirs(host, exist_ok=True)
    cfg["mounts"] += [
        {"destination": "/mnt/tmp", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "mode=1777", "size=1m"]},
        {"destination": "/mnt/bind", "type": "bind", "source": host, "options": ["rbind", "ro"]},
        {"destination": "/mnt/proc2", "type": "proc", "source": "proc"}]


def _devices(cfg, c):
    cfg["linux"]["devices"] = [
        {"path": "/dev/probe-null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600,
         "uid": 1, "gid": 2},
        {"path": "/dev/probe-fifo", "type": "p", "fileMode": 0o640}]
    cfg["linux"]["resources"]["devices"].append(
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"})


def _sysctl(cfg, c):
    cfg["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shmmni": "1024",
                              "kernel.domainname": "probe.example"}


def _oom(cfg, c):
    cfg["process"]["oomScoreAdj"] = 500


def _ns_all(cfg, c):
    cfg["linux"]["namespaces"] = [{"type": t} for t in ("pid", "network", "ipc", "uts",
                                                        "mount", "cgroup")]


def _ns_host(cfg, c):
    cfg["linux"]["namespaces"] = [{"type": "mount"}]
    cfg.pop("hostname", None)


def _ns_path(cfg, c):
    name = "probe-" + c.id
    subprocess.run(["ip", "netns", "add", name], check=True)
    c.cleanups.append(lambda: subprocess.run(["ip", "netns", "delete", name]))
    cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "network"]
    cfg["linux"]["namespaces"].append({"type": "network", "path": f"/var/run/netns/{name}"})


def _propagation(kind):
    def mutate(cfg, c):
        cfg["linux"]["rootfsPropagation"] = kind
    return mutate


def _userns(cfg, c):
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    os.chown(c.bundle.rootfs, 100000, 100000)


def _seccomp(cfg, c):
    cfg["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}


_SECCOMP_CHECK = ("t 'linux.seccomp: mkdir denied with EPERM' \"$(mkdir /tmp/x 2>&1 | "
                  "grep -c 'Operation not permitted')\" 1")


def _cgroups(cfg, c):
    cfg["linux"]["cgroupsPath"] = f"/oci-probe/{c.id}"
    c.cleanups.append(_remove_probe_cgroups)
    cfg["linux"]["resources"].update(
        memory={"limit": 64 << 20}, pids={"limit": 77}, cpu={"shares": 512})


def _remove_probe_cgroups() -> None:
    for top in [f"/sys/fs/cgroup/{d}" for d in os.listdir("/sys/fs/cgroup")] + ["/sys/fs/cgroup"]:
        try:
            os.rmdir(os.path.join(top, "oci-probe"))  # only if empty: runtimes keep parents
        except OSError:
            pass


def _cgroups_host(c: Case, cfg, st) -> None:
    tap = c.tap
    pid = st.get("pid")
    path = cfg["linux"]["cgroupsPath"]
    for ctl, f, want in (("memory", "memory.limit_in_bytes", str(64 << 20)),
                         ("pids", "pids.max", "77"), ("cpu", "cpu.shares", "512")):
        p = f"/sys/fs/cgroup/{ctl}{path}/{f}"
        v2 = {"memory.limit_in_bytes": "memory.max", "pids.max": "pids.max",
              "cpu.shares": None}[f]
        if not os.path.isdir(f"/sys/fs/cgroup/{ctl}") and v2:
            p = f"/sys/fs/cgroup{path}/{v2}"
        try:
            got = open(p).read().strip()
        except OSError as e:
            got = f"error: {e.strerror}"
        tap.eq(got, want, f"linux.resources {ctl}: {f}")
        try:
            procs = open(os.path.dirname(p) + "/cgroup.procs").read().split()
        except OSError:
            procs = []
        tap.ok(str(pid) in procs, f"linux.cgroupsPath: the init is in the {ctl} cgroup")


def case_hooks(c: Case) -> None:
    tap, rt = c.tap, c.rt
    log = os.path.join(c.bundle.rootfs, "hooks.log")  # startContainer sees it as /hooks.log
    cfg = base_config(["true"])

    def hook(kind):
        path = "/hooks.log" if kind == "startContainer" else log
        return {"path": "/bin/sh", "args": ["sh", "-c", f"read s; echo {kind} \"$s\" >> {path}"]}
    cfg["hooks"] = {k: [hook(k)] for k in ("prestart", "createRuntime", "createContainer",
                                            "startContainer", "poststart", "poststop")}
    b = c.bundle.write(cfg)
    rc, _, err = rt("create", "--bundle", b, c.id)
    tap.ok(rc == 0, "create with hooks", err.strip()[-300:])
    rt("start", c.id)
    rt.wait(c.id, "stopped")
    rt("delete", c.id)
    lines = open(log).read().splitlines() if os.path.exists(log) else []
    kinds = [ln.split(" ", 1)[0] for ln in lines]
    for k in ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
              "poststop"):
        tap.eq(kinds.count(k), 1, f"hooks.{k} ran once")
    order = [k for k in kinds if k in ("createRuntime", "startContainer", "poststop")]
    tap.eq(order, ["createRuntime", "startContainer", "poststop"], "hooks run in lifecycle order")
    states = []
    for ln in lines:
        try:
            states.append(json.loads(ln.split(" ", 1)[1]))
        except (IndexError, ValueError):
            pass
    tap.ok(bool(states) and all(s.get("id") == c.id for s in states),
           "hooks get the state JSON on stdin")


def _hook_case(kind: str, must_fail_create: bool):
    """A failing `kind` hook: prestart/createRuntime failures fail create (and leave nothing);
    poststart/poststop failures are warnings, the lifecycle goes on (runtime-spec)."""
    def case(c: Case) -> None:
        tap, rt = c.tap, c.rt
        cfg = base_config(["true"])
        cfg["hooks"] = {kind: [{"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]}]}
        rc, _, _ = rt("create", "--bundle", c.bundle.write(cfg), c.id)
        if must_fail_create:
            tap.ok(rc != 0, f"a failing {kind} hook fails create")
            tap.ok(rt.state(c.id) is None, "... and leaves no container")
            return
        tap.eq(rc, 0, f"create with a failing {kind} hook")
        rc, _, _ = rt("start", c.id)
        tap.eq(rc, 0, f"start with a failing {kind} hook")
        tap.eq((rt.wait(c.id, "stopped") or {}).get("status"), "stopped", "the process ran")
        rc, _, _ = rt("delete", c.id)
        tap.eq(rc, 0, f"delete with a failing {kind} hook")
        tap.ok(rt.state(c.id) is None, "... removes the container")
    return case


def _invalid(mutate, what: str):
    def case(c: Case) -> None:
        cfg = base_config(["true"])
        mutate(cfg)
        rc, _, _ = c.rt("create", "--bundle", c.bundle.write(cfg), c.id)
        c.tap.ok(rc != 0, f"create fails: {what}")
        c.tap.ok(c.rt.state(c.id) is None, "... and leaves no container")
    return case


def case_config_updates_without_effect(c: Case) -> None:
    tap, rt = c.tap, c.rt
    out = os.path.join(c.tmp, "out")
    cfg = base_config(["sh", "-c", "echo original"])
    b = c.bundle.write(cfg)
    with open(out, "wb") as f:
        rc, _, _ = rt("create", "--bundle", b, c.id, stdout=f)
    tap.eq(rc, 0, "create")
    cfg["process"]["args"] = ["sh", "-c", "echo changed"]
    cfg["annotations"] = {"changed": "yes"}
    c.bundle.write(cfg)
    tap.ok("annotations" not in (rt.state(c.id) or {}), "state ignores a changed config.json")
    rt("start", c.id)
    rt.wait(c.id, "stopped")
    rt("delete", c.id)
    tap.eq(open(out).read(), "original\n", "start runs the config as it was at create")


def case_unknown_capability(c: Case) -> None:
    """runtime-tools' process_capabilities_fail config. The runtime-spec asks for an error;
    runc 1.1.5 and crun 1.8.1 warn, leave the name out and run the container, and so does
    pyshim (runtime.caps)."""
    tap, rt = c.tap, c.rt
    cfg = base_config(["true"])
    cfg["process"]["capabilities"]["bounding"].append("CAP_NO_SUCH")
    rc, _, err = rt("run", "--bundle", c.bundle.write(cfg), c.id)
    tap.ok(rc == 0, "run with an unknown capability in the bounding set",
           f"exit {rc}: {err.strip()}")
    tap.ok("CAP_NO_SUCH" in err, "a warning names the unknown capability", err.strip())
    tap.ok(rt.state(c.id) is None, "... and run leaves no container")


def case_killsig(c: Case) -> None:
    tap, rt = c.tap, c.rt
    out = os.path.join(c.tmp, "out")
    script = ("trap 'echo got-USR1' USR1; trap 'echo got-HUP' HUP; trap 'echo got-TERM; exit 0' "
              "TERM; echo ready; while :; do sleep 0.05; done")
    b = c.bundle.write(base_config(["sh", "-c", script]))
    with open(out, "wb") as f:
        rt("run", "-d", "--bundle", b, c.id, stdout=f)
    deadline = time.monotonic() + 5
    while "ready" not in open(out).read() and time.monotonic() < deadline:
        time.sleep(0.02)
    for sig in ("USR1", "SIGHUP", "15"):
        tap.eq(rt("kill", c.id, sig)[0], 0, f"kill {sig}")
        time.sleep(0.2)
    st = rt.wait(c.id, "stopped") or {}
    tap.eq(st.get("status"), "stopped", "TERM ended the process through its trap")
    text = open(out).read()
    for word in ("got-USR1", "got-HUP", "got-TERM"):
        tap.ok(word in text, f"the process received {word[4:]}", text.replace("\n", "|"))
    rt("delete", c.id)


def case_delete_resources(c: Case) -> None:
    tap, rt = c.tap, c.rt
    cfg = base_config(["sleep", "30"])
    cfg["linux"]["cgroupsPath"] = f"/oci-probe/{c.id}"
    c.cleanups.append(_remove_probe_cgroups)
    rc, _, _ = rt("run", "-d", "--bundle", c.bundle.write(cfg), c.id)
    tap.eq(rc, 0, "run -d")
    pid = (rt.state(c.id) or {}).get("pid", 0)
    cg = f"/sys/fs/cgroup/memory/oci-probe/{c.id}"
    tap.ok(os.path.isdir(cg), "the container's cgroup exists while it runs")
    tap.eq(rt("delete", "--force", c.id)[0], 0, "delete --force")
    time.sleep(0.1)
    tap.ok(not os.path.exists(f"/proc/{pid}") or _zombie(pid), "delete killed the process")
    tap.ok(not os.path.isdir(cg), "delete removed the cgroup")
    tap.ok(rt.state(c.id) is None, "delete removed the container")


def _zombie(pid: int) -> bool:
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


def _cgroup_devices(cfg, c):
    cfg["linux"]["cgroupsPath"] = f"/oci-probe/{c.id}"
    c.cleanups.append(_remove_probe_cgroups)
    cfg["linux"]["resources"]["devices"] = [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rw"}]


def _cgroup_devices_host(c: Case, cfg, st) -> None:
    """cgroup v1 devices.list of the container while it is created: deny-all replaced by the
    listed rules (the runtime may add its default devices)."""
    path = f"/sys/fs/cgroup/devices{cfg['linux']['cgroupsPath']}/devices.list"
    try:
        rules = open(path).read().split("\n")
    except OSError as e:
        c.tap.ok(False, "linux.resources.devices: devices.list readable", e.strerror)
        return
    c.tap.ok("a *:* rwm" not in rules, "linux.resources.devices: not everything is allowed",
             str(rules))
    c.tap.ok("c 1:3 rwm" in rules, "linux.resources.devices: c 1:3 rwm is allowed", str(rules))
    c.tap.ok("c 10:229 rw" in rules, "linux.resources.devices: c 10:229 rw is allowed",
             str(rules))


CASES = {
    "lifecycle": case_lifecycle,
    "errors": case_errors,
    "default": _probe(),
    "process": _probe(_process),
    "process_user": _probe(_user),
    "process_capabilities": _probe(_capabilities),
    "process_rlimits": _probe(_rlimits),
    "process_oom_score_adj": _probe(_oom),
    "hostname": _probe(lambda cfg, c: cfg.update(hostname="probe-host")),
    "root_readonly": _probe(_root_readonly),
    "linux_masked_readonly_paths": _probe(_paths),
    "mounts": _probe(_mounts),
    "linux_devices": _probe(_devices),
    "linux_sysctl": _probe(_sysctl),
    "linux_ns_all": _probe(_ns_all),
    "linux_ns_host": _probe(_ns_host),
    "linux_ns_path": _probe(_ns_path),
    "linux_rootfs_propagation_private": _probe(_propagation("rprivate")),
    "linux_rootfs_propagation_slave": _probe(_propagation("rslave")),
    "linux_rootfs_propagation_shared": _probe(_propagation("rshared")),
    "linux_uid_gid_mappings": _probe(_userns),
    "linux_seccomp": _probe(_seccomp, _SECCOMP_CHECK),
    "linux_cgroups": _probe(_cgroups, host=_cgroups_host),
    "hooks": case_hooks,
    "prestart_fail": _hook_case("prestart", True),
    "createRuntime_fail": _hook_case("createRuntime", True),
    "poststart_fail": _hook_case("poststart", False),
    "poststop_fail": _hook_case("poststop", False),
    "process_capabilities_unknown": case_unknown_capability,
    "process_rlimits_fail": _invalid(
        lambda cfg: cfg["process"]["rlimits"].append({"type": "RLIMIT_NO_SUCH", "soft": 1,
                                                      "hard": 1}), "an unknown rlimit"),
    "config_updates_without_effect": case_config_updates_without_effect,
    "killsig": case_killsig,
    "delete_resources": case_delete_resources,
    "linux_cgroups_devices": _probe(_cgroup_devices, host=_cgroup_devices_host),
}


def run_case(binary: str, name: str, work: str) -> str:
    """One case against one runtime CLI -> its TAP text (never raises)."""
    tmp = tempfile.mkdtemp(prefix=f"{name}-", dir=work)
    os.chmod(tmp, 0o755)  # a user namespace's root must reach the rootfs
    rt = Runtime(binary, os.path.join(tmp, "state"))
    tap = Tap()
    c = Case(rt, tmp, tap)
    try:
        CASES[name](c)
    except Exception as e:  # noqa: BLE001 - a broken case is one failure, the run goes on
        tap.ok(False, f"{name}: the case itself failed", f"{type(e).__name__}: {e}")
    finally:
        rt.cleanup()
        for f in c.cleanups:
            f()
        shutil.rmtree(tmp, ignore_errors=True)
    return tap.text()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runtime", action="append", help="a runc-compatible CLI (repeatable)")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--out", help="write <runtime>/<case>.tap here")
    ap.add_argument("--verbose", "-v", action="store_true", help="print the failing lines")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("oci_probe.py: must run as root", file=sys.stderr)
        return 1
    runtimes = a.runtime or ["pyshim-runc"]
    cases = a.cases.split(",")
    unknown = [n for n in cases if n not in CASES]
    if unknown:
        print(f"oci_probe.py: unknown cases {unknown}; known: {', '.join(CASES)}",
              file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="oci-probe-")
    os.chmod(work, 0o755)
    totals = {}
    try:
        for rt in runtimes:
            binary = shutil.which(rt) or rt
            total = {"ok": 0, "not ok": 0, "skip": 0}
            print(f"== {rt} ({binary})")
            for name in cases:
                text = run_case(binary, name, work)
                if a.out:
                    d = os.path.join(a.out, os.path.basename(rt))
                    os.makedirs(d, exist_ok=True)
                    with open(os.path.join(d, f"{name}.tap"), "w") as f:
                        f.write(text)
                n = count(text)
                for k in total:
                    total[k] += n[k]
                print(f"  {name:36s} ok {n['ok']:3d}  not ok {n['not ok']:3d}  skip {n['skip']}")
                if a.verbose:
                    for line in text.splitlines():
                        if line.startswith("not ok"):
                            print(f"      {line}")
            totals[rt] = total
        print("\ntotals:")
        for rt, t in totals.items():
            print(f"  {rt:20s} ok {t['ok']:4d}  not ok {t['not ok']:4d}  skip {t['skip']}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
