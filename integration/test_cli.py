"""pyshim-runc and runc side by side, as root, on the same kind of bundle (a static busybox
rootfs and ctr's default spec from runtime/specgen.py): the lifecycle, exit codes, error
reporting, and the shapes of what they print.

Each runtime gets its own --root under the test's tmp dir; the CLIs' stdout/stderr go to files,
never pipes, because a created container keeps the CLI's stdio as its own (runc semantics).
Needs root, runc and /bin/busybox: skipped without them (failed under CI).
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from integration.conftest import REPO, in_ci
from runtime.specgen import default_config

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "echo", "cat", "true", "sleep", "ls", "id", "hostname", "kill")
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
STATE_KEYS = ["ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"]


def pyshim_runc() -> str | None:
    for p in (os.environ.get("PYSHIM_RUNC"), os.path.join(REPO, ".venv", "bin", "pyshim-runc"),
              shutil.which("pyshim-runc")):
        if p and os.path.exists(p):
            return p
    return None


@pytest.fixture(scope="module")
def binaries():
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    if shutil.which("runc") is None:
        missing.append("runc")
    if not os.path.exists(BUSYBOX):
        missing.append(BUSYBOX)
    if pyshim_runc() is None:
        missing.append("pyshim-runc (hack/install.sh writes .venv/bin/pyshim-runc)")
    if missing:
        msg = "CLI integration prerequisites missing: " + ", ".join(missing)
        if in_ci():
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return {"runc": shutil.which("runc"), "pyshim": pyshim_runc()}


class Runtime:
    """One CLI with its own state root; every call's output is captured through files."""

    def __init__(self, name: str, binary: str, root: str):
        self.name, self.binary, self.root = name, binary, root

    def __call__(self, *args: str, timeout: float = 30, input: bytes | None = None,
                 global_args: tuple = ()) -> tuple[int, str, str]:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            r = subprocess.run([self.binary, "--root", self.root, *global_args, *args],
                               stdout=out, stderr=err, timeout=timeout,
                               input=input, stdin=None if input is not None else subprocess.DEVNULL)
            out.seek(0)
            err.seek(0)
            return r.returncode, out.read().decode(), err.read().decode()

    def ok(self, *args: str, **kw) -> str:
        rc, out, err = self(*args, **kw)
        assert rc == 0, f"{self.name} {' '.join(args)}: exit {rc}: {err}"
        return out

    def state(self, cid: str) -> dict:
        return json.loads(self.ok("state", cid))

    def wait_status(self, cid: str, want: str, timeout: float = 10) -> dict:
        """The state once its status is `want` (a container not there yet counts as not yet)."""
        deadline = time.monotonic() + timeout
        while True:
            rc, out, err = self("state", cid)
            st = json.loads(out) if rc == 0 else {"status": f"error: {err.strip()}"}
            if st["status"] == want or time.monotonic() > deadline:
                return st
            time.sleep(0.02)

    def cleanup(self) -> None:
        rc, out, _ = self("list", "-q")
        for cid in out.split() if rc == 0 else []:
            self("delete", "--force", cid)


@pytest.fixture
def runtimes(binaries, tmp_path):
    rts = {name: Runtime(name, b, str(tmp_path / f"state-{name}")) for name, b in binaries.items()}
    yield rts
    for rt in rts.values():
        rt.cleanup()
    # pyshim's inits keep the CLI's command line (they are its forks): one still alive once
    # every container is deleted is an orphan (e.g. of a create that failed), which no state
    # dir names any more. Killed here, and a failure.
    root = rts["pyshim"].root
    orphans = [pid for pid in _pids_with_arg(root) if pid != os.getpid()]
    for pid in orphans:
        os.kill(pid, 9)
    assert not orphans, f"processes left with --root {root}: {orphans}"


def _pids_with_arg(arg: str) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if arg.encode() in argv:
                out.append(int(p))
    return out


@pytest.fixture(params=["runc", "pyshim"])
def rt(request, runtimes) -> Runtime:
    return runtimes[request.param]


@pytest.fixture
def bundle(tmp_path):
    """A busybox bundle; call it with the process args (and a config mutator) to write
    config.json. Returns the bundle path."""
    b = tmp_path / "bundle"
    (b / "rootfs" / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, b / "rootfs/bin/busybox")
    for name in APPLETS:
        os.link(b / "rootfs/bin/busybox", b / "rootfs/bin" / name)

    def write(args, mutate=None) -> str:
        c = default_config(list(args), hostname="clitest")
        if mutate:
            mutate(c)
        (b / "config.json").write_text(json.dumps(c))
        return str(b)
    return write


# --- lifecycle -------------------------------------------------------------------------------
def test_create_start_state_kill_delete(rt, bundle, tmp_path):
    b = bundle(["sleep", "30"])
    pidfile = tmp_path / "pid"
    rt.ok("create", "--bundle", b, "--pid-file", str(pidfile), "c1")
    st = rt.state("c1")
    assert st["status"] == "created" and st["pid"] > 0
    assert pidfile.read_text() == str(st["pid"])  # no newline
    assert os.path.exists(f"/proc/{st['pid']}")  # the init outlived the CLI
    rt.ok("start", "c1")
    assert rt.state("c1")["status"] == "running"
    rt.ok("kill", "c1", "KILL")
    st = rt.wait_status("c1", "stopped")
    assert (st["status"], st["pid"]) == ("stopped", 0)
    rt.ok("delete", "c1")
    assert rt("state", "c1")[0] == 1
    assert rt.ok("list", "-q") == ""


@pytest.mark.parametrize("form", ["TERM", "SIGTERM", "15", "term"])
def test_kill_signal_forms_stop_a_created_container(rt, bundle, form):
    rt.ok("create", "--bundle", bundle(["sleep", "30"]), "k")
    rt.ok("kill", "k", form)
    assert rt.wait_status("k", "stopped")["status"] == "stopped"
    rt.ok("delete", "k")


def _wait_for_file(path: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout} s"
        time.sleep(0.01)


# The container's shell says it is ready (its trap set) by writing /ready into the bundle's rootfs.
TRAPPING = "trap 'echo got-term{to}; exit {code}' TERM; echo > /ready; sleep 30 & wait"


def test_kill_defaults_to_sigterm(rt, bundle):
    b = bundle(["sh", "-c", TRAPPING.format(to=" > /got", code=0)])
    rt.ok("run", "-d", "--bundle", b, "t")
    _wait_for_file(os.path.join(b, "rootfs/ready"))
    rt.ok("kill", "t")
    assert rt.wait_status("t", "stopped")["status"] == "stopped"
    with open(os.path.join(b, "rootfs/got")) as f:  # the trap ran: TERM, not KILL
        assert f.read() == "got-term\n"
    rt.ok("delete", "t")


def test_run_foreground_gives_output_and_exit_code_and_cleans_up(rt, bundle):
    b = bundle(["sh", "-c", "echo out; echo err >&2; hostname; exit 7"])
    rc, out, err = rt("run", "--bundle", b, "r")
    assert (rc, out, err) == (7, "out\nclitest\n", "err\n")
    assert rt.ok("list", "-q") == ""


def test_signals_the_caller_ignored_are_default_in_the_container(rt, bundle):
    """Under nohup (SIGHUP ignored), with SIGINT ignored too, and Python's own SIGPIPE and
    SIGXFSZ: the container's process starts with no signal ignored or blocked (exec keeps
    SIG_IGN), as with runc."""
    b = bundle(["cat", "/proc/self/status"])  # (no shell: ash ignores SIGQUIT itself)

    def ignore():
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    r = subprocess.run([rt.binary, "--root", rt.root, "run", "--bundle", b, "sig"],
                       capture_output=True, timeout=30, stdin=subprocess.DEVNULL,
                       preexec_fn=ignore)
    assert r.returncode == 0, r.stderr
    status = dict(line.split(":\t", 1) for line in r.stdout.decode().splitlines())
    assert (status["SigBlk"], status["SigIgn"]) == ("0000000000000000", "0000000000000000")


def _cpus_allowed(status: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in status.splitlines()
                if line.startswith("Cpus_allowed_list:"))


def _cpu_list(cpus) -> str:
    cpus = sorted(cpus)
    return f"{cpus[0]}-{cpus[-1]}" if cpus == list(range(cpus[0], cpus[-1] + 1)) \
        else ",".join(map(str, cpus))


def test_the_containers_cpus_are_its_cpusets_not_its_callers(runtimes, bundle, tmp_path):
    """As runc since 1.2 (Debian's 1.1.5 still hands its own affinity on; not asserted here):
    run and exec under `taskset` to one CPU, the container's processes may run on every CPU
    of their cgroup's cpuset, or on linux.resources.cpu.cpus when set; an exec's
    process.execCPUAffinity.final is its own affinity."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    first, last = cpus[0], cpus[-1]
    py = runtimes["pyshim"]

    def pinned(*args):  # output through files: a detached container keeps its stdio
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            r = subprocess.run([py.binary, "--root", py.root, *args], stdout=out, stderr=err,
                               timeout=30, stdin=subprocess.DEVNULL,
                               preexec_fn=lambda: os.sched_setaffinity(0, {first}))
            out.seek(0)
            err.seek(0)
            assert r.returncode == 0, err.read()
            return out.read().decode()
    b = bundle(["cat", "/proc/self/status"])
    assert _cpus_allowed(pinned("run", "--bundle", b, "aff1")) == _cpu_list(cpus)

    def cpuset(c):
        c["linux"]["resources"]["cpu"] = {"cpus": str(last), "mems": "0"}
    b = bundle(["cat", "/proc/self/status"], cpuset)
    assert _cpus_allowed(pinned("run", "--bundle", b, "aff2")) == str(last)

    b = bundle(["sleep", "30"])
    pinned("run", "-d", "--bundle", b, "aff3")
    assert _cpus_allowed(pinned("exec", "aff3", "cat", "/proc/self/status")) == _cpu_list(cpus)
    proc = tmp_path / "process.json"
    proc.write_text(json.dumps({"args": ["cat", "/proc/self/status"], "cwd": "/",
                                "env": ["PATH=/bin"],
                                "execCPUAffinity": {"initial": str(last), "final": str(first)}}))
    assert _cpus_allowed(pinned("exec", "--process", str(proc), "aff3")) == str(first)
    py.ok("delete", "--force", "aff3")


def test_a_seccomp_profile_that_predates_close_range_still_runs(rt, bundle):
    """runtime-tools' default profile (and docker's older ones) know nothing of close_range and
    answer it ENOSYS: a runtime must not need it under the filter (runc never calls it)."""
    def refuse_close_range(c):
        c["process"]["noNewPrivileges"] = False  # the filter goes in before the ids change
        c["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["close_range"], "action": "SCMP_ACT_ERRNO",
                          "errnoRet": 38}]}  # ENOSYS
    b = bundle(["sh", "-c", "echo ran"], refuse_close_range)
    rc, out, err = rt("run", "--bundle", b, "cr")
    assert (rc, out) == (0, "ran\n"), err


def test_a_seccomp_filter_is_compiled_once_and_read_back(runtimes, bundle):
    """pyshim keeps the filters libseccomp compiled in its root's .seccomp-cache, as crun does
    in its own: the second container with a profile gets the same filter without a compile,
    and it holds as the first did; another profile is another entry; `list` sees no container
    in the cache."""
    rt = runtimes["pyshim"]
    cache = os.path.join(rt.root, ".seccomp-cache")

    def deny_mkdir(errno_ret):
        def mutate(c):
            c["linux"]["seccomp"] = {
                "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                              "errnoRet": errno_ret}]}
        return mutate
    b = bundle(["sh", "-c", "mkdir /made 2>&1; echo $?"], deny_mkdir(1))  # EPERM
    for i in range(2):
        rc, out, err = rt("run", "--bundle", b, f"sc{i}")
        assert rc == 0 and "Operation not permitted" in out, (out, err)
        assert len(os.listdir(cache)) == 1
    entry = os.path.join(cache, os.listdir(cache)[0])
    assert oct(os.stat(entry).st_mode & 0o777) == "0o600"
    b = bundle(["sh", "-c", "mkdir /made 2>&1; echo $?"], deny_mkdir(13))  # EACCES
    rc, out, err = rt("run", "--bundle", b, "sc2")
    assert rc == 0 and "Permission denied" in out, (out, err)
    assert len(os.listdir(cache)) == 2
    assert rt("list", "-q")[1] == ""


def _mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == path or p.startswith(path + "/")]


def test_no_mount_namespace_shares_the_hosts_mount_namespace(rt, bundle):
    """Without a mount namespace the container stays in the caller's (runtime-tools'
    linux_ns_itype checks it from outside). pyshim mounts nothing then, since each mount would
    be the host's; runc 1.1 mounts the spec's into the host's namespace and leaves them."""
    def no_mount_namespace(c):
        c["hostname"] = None
        c["linux"]["namespaces"] = [{"type": "pid"}]
        c["linux"].pop("maskedPaths", None)
        c["linux"].pop("readonlyPaths", None)
    b = bundle(["sleep", "30"], no_mount_namespace)
    rootfs = os.path.join(b, "rootfs")
    try:
        rt.ok("create", "--bundle", b, "nomnt")
        pid = rt.state("nomnt")["pid"]
        assert os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt")
        assert os.readlink(f"/proc/{pid}/root") == rootfs  # chrooted into the rootfs
        rt.ok("delete", "--force", "nomnt")
        if rt.name == "pyshim":
            assert _mounts_under(rootfs) == []  # nothing was mounted on the host
    finally:
        for point in reversed(_mounts_under(rootfs)):  # runc's leftovers
            subprocess.run(["umount", "-l", point], check=False)

    def masked(c):
        no_mount_namespace(c)
        c["linux"]["maskedPaths"] = ["/proc/kcore"]
    if rt.name == "pyshim":  # masking would change the host's /proc: refused, naming the field
        rc, out, err = rt("create", "--bundle", bundle(["true"], masked), "nomnt2")
        assert rc == 1 and "linux.maskedPaths" in err and "mount namespace" in err, err
        assert rt.ok("list", "-q") == ""


def test_run_foreground_forwards_signals(rt, bundle):
    b = bundle(["sh", "-c", TRAPPING.format(to="", code=3)])
    with tempfile.TemporaryFile() as out:
        p = subprocess.Popen([rt.binary, "--root", rt.root, "run", "--bundle", b, "f"],
                             stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            _wait_for_file(os.path.join(b, "rootfs/ready"))
            p.terminate()
            assert p.wait(10) == 3
        finally:
            p.kill()
            p.wait()
        out.seek(0)
        assert out.read() == b"got-term\n"


def test_run_detached_and_exit_status_of_a_killed_container(rt, bundle):
    rt.ok("run", "--detach", "--bundle", bundle(["sleep", "30"]), "d")
    assert rt.state("d")["status"] == "running"
    rc, _, err = rt("delete", "d")
    assert rc == 1 and err  # running: needs --force
    rt.ok("delete", "--force", "d")
    assert rt.ok("list", "-q") == ""


def test_the_containers_loopback_is_up(rt, bundle):
    rc, out, err = rt("run", "--bundle", bundle(["cat", "/sys/class/net/lo/flags"]), "lo")
    assert rc == 0, err
    assert int(out.strip(), 16) & 1 == 1  # IFF_UP


def test_create_does_not_keep_the_callers_other_fds(rt, bundle):
    # A pipe the caller leaks to the CLI must not stay open in the waiting init.
    r, w = os.pipe()
    try:
        with tempfile.TemporaryFile() as out:
            subprocess.run([rt.binary, "--root", rt.root, "create", "--bundle",
                            bundle(["true"]), "p"], stdout=out, stderr=out,
                           stdin=subprocess.DEVNULL, pass_fds=(w,), check=True, timeout=30)
        os.close(w)
        w = None
        os.set_blocking(r, False)
        assert os.read(r, 1) == b""  # EOF: no writer left anywhere
    finally:
        os.close(r)
        if w is not None:
            os.close(w)
    assert rt.state("p")["status"] == "created"


def _with_fds(rt, args, fds: dict[int, int], timeout: float = 30) -> tuple[int, str, str]:
    """Run the CLI with fds[n] as its fd n (n >= 3), as a caller of --preserve-fds would."""
    def place():
        # Copies first: a source may itself sit on another one's target number.
        high = {target: fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for target, fd in fds.items()}
        for target, fd in high.items():
            os.dup2(fd, target)  # inheritable
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        r = subprocess.run([rt.binary, "--root", rt.root, *args], stdout=out, stderr=err,
                           stdin=subprocess.DEVNULL, preexec_fn=place, pass_fds=tuple(fds),
                           timeout=timeout)
        out.seek(0)
        err.seek(0)
        return r.returncode, out.read().decode(), err.read().decode()


def _pipe_with(data: bytes) -> int:
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    return r


def test_preserve_fds_pass_exactly_those_fds(runtimes, bundle):
    """run and exec --preserve-fds 2: the caller's fds 3 and 4 are the container process's 3
    and 4; its fd 5, not preserved, is not there. Same output as runc."""
    script = "cat <&3 >&4; echo; ls /proc/self/fd | sort -n | tr '\\n' ' '"
    outs = {}
    for name, rt in runtimes.items():
        got = {}
        for how in ("run", "exec"):
            r3 = _pipe_with(f"via-{how}".encode())
            r4, w4 = os.pipe()
            leak_r, leak_w = os.pipe()
            try:
                if how == "run":
                    b = bundle(["sh", "-c", script])
                    args = ["run", "--preserve-fds", "2", "--bundle", b, f"pf-{how}"]
                else:
                    rt.ok("run", "-d", "--bundle", bundle(["sleep", "30"]), "pf-exec")
                    args = ["exec", "--preserve-fds", "2", "pf-exec", "sh", "-c", script]
                rc, out, err = _with_fds(rt, args, {3: r3, 4: w4, 5: leak_w})
                os.close(w4)
                w4 = None
                os.set_blocking(r4, False)
                got[how] = (rc, out, err, os.read(r4, 100))
            finally:
                for fd in (r3, r4, w4, leak_r, leak_w):
                    if fd is not None:
                        os.close(fd)
            if how == "exec":
                rt.ok("delete", "--force", "pf-exec")
        outs[name] = got
    for how in ("run", "exec"):
        rc, out, err, piped = outs["pyshim"][how]
        assert (rc, err, piped) == (0, "", f"via-{how}".encode()), outs["pyshim"][how]
        # 0-4 and ls's own directory fd (a number above 4), nothing else
        fds = out.split()
        assert fds[:5] == ["0", "1", "2", "3", "4"] and len(fds) == 6, out
    assert outs["pyshim"] == outs["runc"]


def test_socket_activation_fds_and_env_reach_the_container(runtimes, bundle):
    """systemd socket activation, as runc takes it: with LISTEN_PID = the CLI's pid and
    LISTEN_FDS=1, fd 3 reaches the container's process (before the --preserve-fds one) with
    LISTEN_FDS=1 and LISTEN_PID=1 in its env. Same output as runc."""
    script = "echo $LISTEN_FDS $LISTEN_PID; cat <&3; cat <&4"
    outs = {}
    for name, rt in runtimes.items():
        b = bundle(["sh", "-c", script])
        r3, r4 = _pipe_with(b"activated\n"), _pipe_with(b"preserved\n")
        try:
            with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
                def place():
                    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in (r3, r4)]
                    for target, fd in zip((3, 4), high):
                        os.dup2(fd, target)
                # sh's exec keeps its pid: LISTEN_PID names the CLI
                subprocess.run(["/bin/sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"', "sh",
                                rt.binary, "--root", rt.root, "run", "--preserve-fds", "1",
                                "--bundle", b, "sa"], stdout=out, stderr=err,
                               stdin=subprocess.DEVNULL, preexec_fn=place, pass_fds=(3, 4),
                               timeout=30, check=False)
                out.seek(0)
                err.seek(0)
                outs[name] = (out.read().decode(), err.read().decode())
        finally:
            os.close(r3)
            os.close(r4)
    assert outs["pyshim"] == ("1 1\nactivated\npreserved\n", ""), outs["pyshim"]
    assert outs["pyshim"] == outs["runc"]


def test_preserving_a_closed_fd_fails_create_and_leaves_nothing(rt, bundle):
    rc, _, err = rt("run", "--preserve-fds", "40", "--bundle", bundle(["true"]), "pf")
    assert rc == 1 and "preserved-fd" in err, err
    assert rt.ok("list", "-q").split() == []


def test_each_container_gets_a_session_keyring_of_its_own(runtimes, bundle, sesring):
    """As runc: the init and an exec'd process join a keyring named _ses.<id>, searchable by
    the container's user, not the caller's session keyring; with --no-new-keyring both keep
    the caller's. Asked from inside by a static program describing its session keyring."""
    probe = os.path.join(sesring, "sesring")
    outs = {}
    for name, rt in runtimes.items():
        b = bundle(["sh", "-c", "/bin/sesring; sleep 30"])
        shutil.copy(probe, os.path.join(b, "rootfs/bin/sesring"))
        got = []
        for cid, flags in ((f"kr-{name}", []), (f"kr-none-{name}", ["--no-new-keyring"])):
            rt.ok("run", "-d", *flags, "--bundle", b, cid)
            rt.wait_status(cid, "running")
            out = rt.ok("exec", cid, "/bin/sesring")
            got.append(out.replace(cid, "<id>"))
            rt.ok("delete", "--force", cid)
        outs[name] = got
    mine, inherited = outs["pyshim"]
    assert re.fullmatch(r"keyring;0;0;[0-9a-f]{8};_ses\.<id>\n", mine), mine
    assert int(mine.split(";")[3], 16) & 0x080000  # searchable by the container's user
    assert "_ses.<id>" not in inherited  # the caller's, whatever that is
    assert outs["pyshim"] == outs["runc"]


def test_no_pivot_runs_like_runcs(runtimes, bundle):
    """run --no-pivot (rootfs moved onto / and chrooted, for a ramdisk rootfs that pivot_root
    cannot leave): the same root, mounts and output as runc's, and as without the flag."""
    count = "i=0; while read l; do i=$((i+1)); done < /proc/self/mountinfo; echo $i"
    b = bundle(["sh", "-c", f"ls /; {count}"])
    outs = {name: [rt.ok("run", *flags, "--bundle", b, f"np{i}")
                   for i, flags in enumerate(([], ["--no-pivot"]))]
            for name, rt in runtimes.items()}
    assert outs["pyshim"] == outs["runc"]
    assert outs["pyshim"][0] == outs["pyshim"][1]


# --- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [("state", "nope"), ("start", "nope"), ("kill", "nope"),
                                  ("delete", "nope"), ("state",), ("create", "--bogus", "x"),
                                  ("kill", "x", "y", "z")])
def test_errors_exit_1_with_a_message(rt, args):
    rc, _, err = rt(*args)
    assert rc == 1 and "level=error" in err


def test_delete_force_of_a_missing_container_succeeds(rt):
    assert rt("delete", "--force", "nope")[0] == 0


def test_lifecycle_errors(rt, bundle):
    b = bundle(["sleep", "30"])
    rt.ok("create", "--bundle", b, "e")
    rc, _, err = rt("create", "--bundle", b, "e")
    assert rc == 1 and "exist" in err
    rc, _, err = rt("kill", "e", "NOSUCHSIG")
    assert rc == 1 and "unknown signal" in err
    rt.ok("start", "e")
    rc, _, err = rt("start", "e")
    assert rc == 1 and "level=error" in err
    rt.ok("kill", "e", "9")
    rt.wait_status("e", "stopped")
    rc, _, err = rt("kill", "e", "9")
    assert rc == 1 and "not running" in err
    rt.ok("delete", "e")


def test_bad_configs_fail_create_and_leave_nothing(rt, bundle):
    rc, _, err = rt("create", "--bundle", bundle(["/no/such/binary"]), "b1")
    assert rc == 1 and "/no/such/binary" in err
    rc, _, err = rt("create", "--bundle", bundle([], lambda c: c["process"].pop("cwd")), "b2")
    assert rc == 1 and "cwd" in err.lower()
    # a cgroup value only the kernel refuses: with pyshim the cgroup is made after the fork,
    # and the init already forked must go too (the fixture fails on any orphan)
    rc, _, err = rt("create", "--bundle", bundle(["true"], lambda c: c["linux"].setdefault(
        "resources", {}).update(cpu={"cpus": "100000"})), "b3")
    assert rc == 1 and "cpuset.cpus" in err, err
    assert rt.ok("list", "-q") == ""


def test_every_spec_rlimit_is_set_like_runcs(runtimes, bundle):
    """RLIMIT_LOCKS (which Python's resource module lacks: pyshim failed create on it) and the
    others, including RLIM_INFINITY, as /proc/self/limits shows them inside."""
    limits = [("RLIMIT_LOCKS", 100, 200), ("RLIMIT_NOFILE", 1024, 2048),
              ("RLIMIT_CORE", 0, 2**64 - 1), ("RLIMIT_MSGQUEUE", 8192, 819200)]
    b = bundle(["cat", "/proc/self/limits"], lambda c: c["process"].update(rlimits=[
        {"type": t, "soft": soft, "hard": hard} for t, soft, hard in limits]))
    outs = {}
    for name, rt in runtimes.items():
        rc, out, err = rt("run", "--bundle", b, "lim")
        assert rc == 0, (name, err)
        outs[name] = out
    assert outs["pyshim"] == outs["runc"]
    lines = {ln[:26].strip(): ln[26:].split()[:2] for ln in outs["pyshim"].splitlines()}
    assert lines["Max file locks"] == ["100", "200"]
    assert lines["Max core file size"] == ["0", "unlimited"]


def test_unknown_capabilities_are_left_out_with_a_warning(rt, bundle):
    """runtime-tools' process_capabilities_fail config: runc (and crun) warn and run."""
    from runtime import caps
    from runtime.specgen import DEFAULT_CAPS
    b = bundle(["cat", "/proc/self/status"],
               lambda c: c["process"]["capabilities"]["bounding"].append("CAP_NO_SUCH"))
    rc, out, err = rt("run", "--bundle", b, "u")
    assert rc == 0 and "warn" in err and "CAP_NO_SUCH" in err, err
    bounding = next(ln.split()[1] for ln in out.splitlines() if ln.startswith("CapBnd:"))
    assert int(bounding, 16) == caps.to_mask(DEFAULT_CAPS, "x")
    assert rt.ok("list", "-q") == ""


def test_a_mount_label_without_selinux_is_left_out_with_a_warning(runtimes, bundle):
    """crun's reading; runc 1.1.5 passes context= to mount(2), which fails with EINVAL."""
    if os.path.exists("/sys/fs/selinux/enforce"):
        pytest.skip("this host has SELinux: the label is applied (tests/test_runtime_mounts.py)")
    label = "system_u:object_r:container_file_t:s0:c1,c2"
    b = bundle(["cat", "/proc/self/mountinfo"], lambda c: c["linux"].update(mountLabel=label))
    rc, out, err = runtimes["pyshim"]("run", "--bundle", b, "l")
    assert rc == 0, err
    assert "linux.mountLabel" in err and label in err and "warn" in err, err
    dev = [ln for ln in out.splitlines() if ln.split()[4] == "/dev"]
    assert len(dev) == 1 and " - tmpfs " in dev[0] and "context=" not in out, out


def test_json_log_gets_the_error(rt, tmp_path):
    log = tmp_path / f"{rt.name}.log"
    rc, _, err = rt("state", "nope", global_args=("--log", str(log), "--log-format", "json"))
    assert rc == 1 and err.strip() and "level=" not in err  # the bare message
    line = json.loads(log.read_text().splitlines()[-1])
    assert line["level"] == "error" and "not exist" in line["msg"] and RFC3339.match(line["time"])


def test_unknown_command(rt):
    assert rt("frobnicate")[0] == 3


# --- the same shapes -------------------------------------------------------------------------
def test_state_and_list_have_runcs_shape(runtimes, bundle):
    b = bundle(["sleep", "30"], lambda c: c.update(annotations={"org.test": "<x>"}))
    states, lists = {}, {}
    for name, rt in runtimes.items():
        rt.ok("create", "--bundle", b, "s")
        out = rt.ok("state", "s")
        assert not out.endswith("\n")
        states[name] = json.loads(out)
        lists[name] = rt.ok("list", "--format", "json")
        assert '"\\u003cx\\u003e"' in out  # Go's HTML-safe escaping
    runc, py = states["runc"], states["pyshim"]
    assert list(runc) == list(py) == STATE_KEYS[:-1] + ["annotations", "owner"]
    for k in ("id", "status", "bundle", "rootfs", "annotations", "owner"):
        assert runc[k] == py[k], k
    assert {k: type(v) for k, v in runc.items()} == {k: type(v) for k, v in py.items()}
    assert RFC3339.match(py["created"]) and py["pid"] > 0
    lr, lp = json.loads(lists["runc"])[0], json.loads(lists["pyshim"])[0]
    assert list(lr) == list(lp) and lr["owner"] == lp["owner"] == "root"
    tr = runtimes["runc"].ok("list").splitlines()
    tp = runtimes["pyshim"].ok("list").splitlines()
    assert tr[0].split() == tp[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    assert tr[1].split()[2:4] == tp[1].split()[2:4] == ["created", b]


def test_empty_list(runtimes):
    for rt in runtimes.values():
        assert rt.ok("list", "--format", "json") == "null\n"
        assert rt.ok("list", "-q") == ""


def test_spec_is_runcs_but_for_the_version(runtimes, tmp_path):
    docs = {}
    for name, rt in runtimes.items():
        for rootless in (False, True):
            d = tmp_path / f"{name}-{rootless}"
            d.mkdir()
            rt.ok("spec", "--bundle", str(d), *(["--rootless"] if rootless else []))
            text = (d / "config.json").read_text()
            docs[name, rootless] = json.loads(text), text
            rc, _, err = rt("spec", "--bundle", str(d))
            assert rc == 1 and "exists" in err
    for rootless in (False, True):
        (r, rtext), (p, ptext) = docs["runc", rootless], docs["pyshim", rootless]
        assert rtext.replace(f'"{r["ociVersion"]}"', '"V"') == \
            ptext.replace(f'"{p["ociVersion"]}"', '"V"')


def test_features(runtimes):
    r = json.loads(runtimes["runc"].ok("features"))
    p = json.loads(runtimes["pyshim"].ok("features"))
    assert set(p) == set(r)
    # runc 1.1.5 predates the Intel RDT entry (1.1) and idmapped mounts (1.2)
    assert set(p["linux"]) == set(r["linux"]) | {"intelRdt", "mountExtensions"}
    basic = {"mount", "pid", "network", "ipc", "uts"}
    assert basic <= set(p["linux"]["namespaces"]) and basic <= set(r["linux"]["namespaces"])
    assert set(p["linux"]["namespaces"]) <= set(r["linux"]["namespaces"]) | {"time"}
    assert set(p["linux"]["capabilities"]) == set(r["linux"]["capabilities"])
    assert set(p["mountOptions"]) <= set(r["mountOptions"]) | {"idmap", "ridmap"}


def test_exec_or_a_clear_error(runtimes, bundle):
    from runtime.container import Container
    b = bundle(["sleep", "30"])
    outs = {}
    for name, rt in runtimes.items():
        rt.ok("run", "-d", "--bundle", b, "x")
        outs[name] = rt("exec", "x", "sh", "-c", "echo in-$(hostname); exit 5")
    if not hasattr(Container, "exec"):
        rc, _, err = outs["pyshim"]
        assert rc == 1 and "exec: not supported by this engine yet" in err
        pytest.skip("the engine has no exec yet")
    assert outs["pyshim"] == outs["runc"] == (5, "in-clitest\n", "")


def test_exec_into_sub_cgroups_like_runc(runtimes, bundle):
    """exec --cgroup: a bare path joins that existing sub-cgroup in every hierarchy, a
    controller:path only in that one; a missing one is an error. Same /proc/self/cgroup
    (relative to the container's own cgroup) as runc."""
    b = bundle(["sleep", "30"])
    outs = {}
    for name, rt in runtimes.items():
        rt.ok("run", "-d", "--bundle", b, "sc")
        pid = rt.state("sc")["pid"]
        own = {}
        for line in open(f"/proc/{pid}/cgroup").read().splitlines():
            hid, ctrls, path = line.split(":", 2)
            if ctrls in ("pids", "memory"):
                own[ctrls] = path
        made = [f"/sys/fs/cgroup/{c}{p}/sub" for c, p in own.items()]
        for d in made:
            os.mkdir(d)
        try:
            got = []
            for flags in (["--cgroup", "pids:sub"], ["--cgroup", "pids:sub", "--cgroup",
                                                     "memory:sub"], ["--cgroup", "nope:sub"]):
                rc, out, err = rt("exec", *flags, "sc", "cat", "/proc/self/cgroup")
                lines = {ln.split(":", 2)[1]: ln.split(":", 2)[2]
                         for ln in out.splitlines()} if rc == 0 else {}
                got.append((rc, {c: lines.get(c, "").replace(own[c], "<own>") for c in own}))
            outs[name] = got
        finally:
            rt("delete", "--force", "sc")
            for d in made:
                if os.path.isdir(d):
                    os.rmdir(d)
    assert outs["pyshim"][:2] == [(0, {"pids": "<own>/sub", "memory": "<own>"}),
                                  (0, {"pids": "<own>/sub", "memory": "<own>/sub"})], outs
    assert outs["pyshim"][2][0] == 255  # runc's status for a failed exec
    assert outs["pyshim"] == outs["runc"]


def test_ps_pause_resume_update_kill_all(rt, bundle, tmp_path):
    cg = f"/pyshim-cli-{rt.name}-{os.getpid()}-{tmp_path.name[-8:]}"
    b = bundle(["sh", "-c", "sleep 100 & sleep 200"],
               lambda c: c["linux"].update(cgroupsPath=cg))
    try:
        rt.ok("run", "-d", "--bundle", b, "u")
        pid = rt.state("u")["pid"]
        deadline = time.monotonic() + 5
        while len(json.loads(rt.ok("ps", "--format", "json", "u"))) < 2 and \
                time.monotonic() < deadline:
            time.sleep(0.02)
        pids = json.loads(rt.ok("ps", "--format", "json", "u"))
        assert pid in pids and len(pids) == 2
        table = rt.ok("ps", "u").splitlines()
        assert table[0].split()[:2] == ["UID", "PID"] and len(table) == 3
        rt.ok("pause", "u")
        assert rt.state("u")["status"] == "paused"
        rt.ok("resume", "u")
        assert rt.state("u")["status"] == "running"
        rt.ok("update", "--memory", "64m", "--pids-limit", "50", "u")
        memory = f"/sys/fs/cgroup/memory{cg}/memory.limit_in_bytes"
        if os.path.exists(memory):  # cgroup v1 (this project's hosts); v2 names differ
            assert open(memory).read().strip() == str(64 << 20)
            assert open(f"/sys/fs/cgroup/pids{cg}/pids.max").read().strip() == "50"
        rt.ok("kill", "--all", "u", "KILL")
        assert rt.wait_status("u", "stopped")["status"] == "stopped"
        rt.ok("delete", "u")
    finally:
        for top in os.listdir("/sys/fs/cgroup"):
            try:
                os.rmdir(f"/sys/fs/cgroup/{top}{cg}")
            except OSError:
                pass


# --- terminals -------------------------------------------------------------------------------
def _read_until_eof(fd: int, timeout: float = 10) -> bytes:
    import select
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not select.select([fd], [], [], 0.1)[0]:
            continue
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the slave side is gone
            break
        if not data:
            break
        out += data
    return out


def _terminal(c):
    c["process"]["terminal"] = True


def test_console_socket_gets_the_pty_master(rt, bundle, tmp_path):
    import socket
    b = bundle(["sh", "-c", "tty; echo out-$(hostname); exit 0"], _terminal)
    path = str(tmp_path / "console.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    try:
        rt.ok("create", "--bundle", b, "--console-socket", path, "tty1")
        conn, _ = server.accept()
        _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
        conn.close()
        assert len(fds) == 1
        rt.ok("start", "tty1")
        out = _read_until_eof(fds[0])
        os.close(fds[0])
    finally:
        server.close()
    assert out.replace(b"\r\n", b"\n") == b"/dev/pts/0\nout-clitest\n"
    assert rt.wait_status("tty1", "stopped")["status"] == "stopped"
    rt.ok("delete", "tty1")


def test_run_and_exec_with_a_terminal_in_the_foreground(rt, bundle):
    master, slave = os.openpty()
    try:
        p = subprocess.Popen([rt.binary, "--root", rt.root, "run", "--bundle",
                              bundle(["sh", "-c", "tty; read x; echo got-$x; exit 4"],
                                     _terminal), "tty2"],
                             stdin=slave, stdout=slave, stderr=slave)
        time.sleep(0.5)
        os.write(master, b"hello\n")
        assert p.wait(15) == 4
        out = _read_until_eof(master, 2).replace(b"\r\n", b"\n")
        assert b"/dev/pts/0\n" in out and b"got-hello\n" in out
    finally:
        os.close(master)
        os.close(slave)
    rt.ok("run", "-d", "--bundle", bundle(["sleep", "30"]), "tty3")
    master, slave = os.openpty()
    try:
        p = subprocess.Popen([rt.binary, "--root", rt.root, "exec", "-t", "tty3", "sh", "-c",
                              "tty; exit 6"], stdin=slave, stdout=slave, stderr=slave)
        assert p.wait(15) == 6
        assert b"/dev/pts/" in _read_until_eof(master, 2)
    finally:
        os.close(master)
        os.close(slave)
    rt.ok("delete", "--force", "tty3")


def test_terminal_rules_like_runc(rt, bundle, tmp_path):
    rc, _, err = rt("create", "--bundle", bundle(["true"], _terminal), "r1")
    assert rc == 1 and "cannot allocate tty" in err
    rc, _, err = rt("create", "--console-socket", str(tmp_path / "s"), "--bundle",
                    bundle(["true"]), "r2")
    assert rc == 1 and "cannot use console socket" in err
    assert rt.ok("list", "-q") == ""
