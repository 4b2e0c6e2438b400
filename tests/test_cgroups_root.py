"""Real cgroups on this host (root only): create /pyshim-test-<random> with limits, put a child
we forked in it, check the kernel's files, stats, freeze/thaw, OOM notification, kill, destroy;
and on the cgroup2 mount, the eBPF device filter and cgroup.kill. Every test removes its
cgroups in a finally, and only ever signals processes it started itself (by pid)."""

import os
import secrets
import select
import signal
import subprocess
import sys
import time

import pytest

from runtime import cgroups
from runtime.cgroups import V2Manager, detect

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (real cgroupfs)")

MiB = 1 << 20


def state(pid: int) -> str:
    with open(f"/proc/{pid}/status") as f:
        return next(line.split()[1] for line in f if line.startswith("State:"))


def gated_python(code: str) -> subprocess.Popen:
    """A python child that runs `code` only after we send it a byte (once it is in the cgroup)."""
    return subprocess.Popen([sys.executable, "-c", "import sys, os\nsys.stdin.read(1)\n" + code],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


class Cleanup:
    """Children we started and managers we created; undone in reverse, whatever happened."""

    def __init__(self):
        self.children, self.managers = [], []

    def run(self):
        for m in self.managers:
            try:
                if m.freezer_state() in ("FROZEN", "FREEZING"):
                    m.thaw()  # a frozen child would never die
            except Exception:
                pass
        for p in self.children:
            if p.poll() is None:
                p.kill()  # our own child, by pid
            p.wait(timeout=10)
        for m in self.managers:
            try:
                m.destroy()
            except Exception:
                pass
        left = [d for m in self.managers for d in m.dirs() if os.path.exists(d)]
        assert not left, f"cgroup directories left behind: {left}"


@pytest.fixture
def cleanup():
    c = Cleanup()
    try:
        yield c
    finally:
        c.run()


def new_manager(cleanup, **kw):
    m = cgroups.manager(f"/pyshim-test-{secrets.token_hex(4)}", "t", detect(), **kw)
    cleanup.managers.append(m)
    return m


def read(m, ctrl, name):
    d = m.paths[ctrl] if m.version == 1 else m.path
    with open(os.path.join(d, name)) as f:
        return f.read().strip()


def test_lifecycle_limits_stats_freeze_kill_destroy(cleanup):
    m = new_manager(cleanup)
    m.create()
    assert m.exists()
    if m.version == 2:
        m.set({"pids": {"limit": 32}})  # on v2 only what the root enables can be set
    else:
        m.set({"memory": {"limit": 64 * MiB}, "pids": {"limit": 32}, "cpu": {"shares": 512}})
        assert read(m, "memory", "memory.limit_in_bytes") == str(64 * MiB)
        assert read(m, "cpu", "cpu.shares") == "512"
        # cpuset was initialised from the parent, or the pid write below would fail
        parent = os.path.dirname(m.paths["cpuset"])
        assert read(m, "cpuset", "cpuset.cpus") == open(f"{parent}/cpuset.cpus").read().strip()
    assert read(m, "pids", "pids.max") == "32"

    child = subprocess.Popen(["sleep", "60"])
    cleanup.children.append(child)
    m.apply(child.pid)
    with open(f"/proc/{child.pid}/cgroup") as f:
        own = cgroups.parse_proc_cgroup(f.read())
    name = "/" + os.path.basename(m.dirs()[0])
    assert own["pids" if m.version == 1 else ""] == name
    assert m.pids() == [child.pid]

    s = m.stats()
    assert s["pids"]["current"] == 1
    if m.version == 1:
        assert s["pids"]["limit"] == 32
        # usage may be 0: v1 does not move charges with the task (move_charge_at_immigrate)
        assert s["memory"]["usage"]["limit"] == 64 * MiB and s["memory"]["usage"]["usage"] >= 0
        assert s["cpu"]["usage"]["total"] >= 0 and len(s["cpu"]["usage"]["per_cpu"]) >= 1

    m.freeze()
    assert m.freezer_state() == "FROZEN"
    if m.version == 1:
        assert state(child.pid) == "D"  # v1 freezer: uninterruptible, as the kernel reports it
    m.thaw()
    assert m.freezer_state() == "THAWED"
    assert state(child.pid) == "S"

    m.kill_all(signal.SIGKILL)
    assert child.wait(timeout=10) == -signal.SIGKILL
    m.destroy()
    assert not m.exists()
    assert not any(os.path.exists(d) for d in m.dirs())


def test_kill_all_of_a_paused_container_with_sigkill(cleanup):
    m = new_manager(cleanup)
    m.create()
    child = subprocess.Popen(["sleep", "60"])
    cleanup.children.append(child)
    m.apply(child.pid)
    m.freeze()
    m.kill_all(signal.SIGTERM)  # stays paused; the signal waits
    assert m.freezer_state() == "FROZEN" and child.poll() is None
    m.kill_all(signal.SIGKILL)
    assert child.wait(timeout=10) in (-signal.SIGKILL, -signal.SIGTERM)
    m.destroy()
    assert not m.exists()


def test_oom_is_notified(cleanup):
    h = detect()
    if h.mode == "v1" and "memory" not in h.mounts:
        pytest.skip("no memory controller")
    m = new_manager(cleanup)
    m.create()
    if m.version == 2 and "memory" not in m.controllers():
        pytest.skip("memory controller not enabled on the cgroup2 root")
    m.set({"memory": {"limit": 32 * MiB, "swap": 32 * MiB}})  # no swap to escape into
    efd = m.oom_event_fd() if m.version == 1 else None
    try:
        child = gated_python("x = bytearray(256 << 20)\nprint('survived')")
        cleanup.children.append(child)
        m.apply(child.pid)
        child.stdin.write("go")
        child.stdin.close()
        assert child.wait(timeout=30) == -signal.SIGKILL
        if efd is not None:
            assert select.select([efd], [], [], 5)[0] == [efd]
            assert os.eventfd_read(efd) >= 1
        assert m.oom_kill_count() >= 1
    finally:
        if efd is not None:
            os.close(efd)
    m.destroy()
    assert not m.exists()


OPEN_DEVICES = """
r = []
for path, flags in (("/dev/zero", os.O_RDWR), ("/dev/null", os.O_RDONLY),
                    ("/dev/null", os.O_WRONLY), ("/dev/full", os.O_RDONLY)):
    try:
        os.close(os.open(path, flags))
        r.append("ok")
    except OSError as e:
        r.append(e.errno)
print(r)
"""


DEVICE_RULES = [{"allow": False, "access": "rwm"},
                {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
                {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "r"}]


def test_v1_devices_cgroup_enforces_the_list(cleanup):
    h = detect()
    if h.mode != "v1" or "devices" not in h.mounts:
        pytest.skip("no v1 devices controller")
    m = new_manager(cleanup)
    m.create()
    m.set({"devices": DEVICE_RULES})
    assert read(m, "devices", "devices.list").splitlines() == ["c 1:5 rwm", "c 1:3 r"]
    probe = gated_python(OPEN_DEVICES)
    cleanup.children.append(probe)
    m.apply(probe.pid)
    out, _ = probe.communicate("go", timeout=10)
    assert out.strip() == "['ok', 'ok', 1, 1]"  # /dev/null write and /dev/full: EPERM
    m.destroy()
    assert not m.exists()


def test_v2_device_filter_freeze_and_cgroup_kill_on_the_cgroup2_mount(cleanup):
    h = detect()
    if not h.unified:
        pytest.skip("no cgroup2 mount")
    path = os.path.join(h.unified.point, f"pyshim-test-{secrets.token_hex(4)}")
    m = V2Manager(path, h.unified.point)
    cleanup.managers.append(m)
    m.create(enable=())  # never touch the host's subtree_control from a test
    m.set({"devices": DEVICE_RULES})  # BPF_PROG_LOAD + BPF_PROG_ATTACH(BPF_CGROUP_DEVICE)
    probe = gated_python(OPEN_DEVICES)
    cleanup.children.append(probe)
    m.apply(probe.pid)
    out, _ = probe.communicate("go", timeout=10)
    assert out.strip() == "['ok', 'ok', 1, 1]"  # /dev/null write and /dev/full: EPERM

    m.set({"devices": [{"allow": True, "access": "rwm"}]})  # replaces, does not stack
    from runtime.cgroups import devices_bpf
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert len(devices_bpf.query(fd)) == 1
    finally:
        os.close(fd)

    child = subprocess.Popen(["sleep", "60"])
    cleanup.children.append(child)
    m.apply(child.pid)
    m.freeze()
    assert m.freezer_state() == "FROZEN"
    m.thaw()
    m.kill_all(signal.SIGKILL)  # cgroup.kill
    assert child.wait(timeout=10) == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while m.pids() and time.monotonic() < deadline:
        time.sleep(0.01)
    m.destroy()
    assert not os.path.exists(path)
