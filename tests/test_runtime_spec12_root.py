"""Root tests of the runtime-spec 1.0.2-1.2 fields on this host's kernel: process.scheduler,
process.ioPriority, linux.personality, linux.timeOffsets, the "rro" mount option,
rootfsPropagation on "/", linux.netDevices, and the refused LSM fields. What the container's
process got is read from the host (/proc/<pid>, sched_getscheduler, ioprio_get) while it
sleeps. Skipped unless running as root."""

import ctypes
import os
import signal
import subprocess

import pytest
from test_runtime_root import _reap, env, read_all, run, subreaper, write_config  # noqa: F401

from runtime.container import Stdio
from runtime.errors import InvalidSpec

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
IOPRIO_GET = {"x86_64": 252, "aarch64": 31}[os.uname().machine]


def sleeping(engine, bundle, mutate, cid="c1"):
    write_config(bundle, ["sleep", "30"], mutate)
    c = engine.create(cid, str(bundle))
    c.start()
    return c


def stop(c):
    c.kill(signal.SIGKILL)
    _reap(c.pid)
    c.delete()


def test_scheduler_io_priority_and_personality_are_the_processs(env):
    engine, bundle = env

    def mutate(c):
        c["process"]["scheduler"] = {"policy": "SCHED_BATCH", "nice": 7}
        c["process"]["ioPriority"] = {"class": "IOPRIO_CLASS_BE", "priority": 6}
        c["linux"]["personality"] = {"domain": "LINUX32"}
    c = sleeping(engine, bundle, mutate)
    try:
        assert os.sched_getscheduler(c.pid) == os.SCHED_BATCH
        assert os.getpriority(os.PRIO_PROCESS, c.pid) == 7
        assert _libc.syscall(IOPRIO_GET, 1, c.pid) == 2 << 13 | 6
        assert int(open(f"/proc/{c.pid}/personality").read(), 16) == 0x0008
    finally:
        stop(c)


def test_time_offsets_shift_the_containers_clocks(env):
    engine, bundle = env

    def mutate(c):
        c["linux"]["namespaces"].append({"type": "time"})
        c["linux"]["timeOffsets"] = {"monotonic": {"secs": 86400 * 365},
                                     "boottime": {"secs": 86400 * 30, "nanosecs": 5}}
    c = sleeping(engine, bundle, mutate)
    try:
        offsets = open(f"/proc/{c.pid}/timens_offsets").read().split("\n")
        assert f"monotonic {86400 * 365:>12} {0:>9}".split() in [o.split() for o in offsets]
        assert ["boottime", str(86400 * 30), "5"] in [o.split() for o in offsets]
        assert os.readlink(f"/proc/{c.pid}/ns/time") != os.readlink("/proc/self/ns/time")
    finally:
        stop(c)
    # and the process sees it: /proc/uptime is CLOCK_BOOTTIME
    out, code = run(engine, bundle, ["cat", "/proc/uptime"], cid="c2", mutate=mutate)
    assert code == 0 and float(out.split()[0]) > 86400 * 30, out


def test_rro_makes_a_bind_mount_read_only_recursively(env, tmp_path):
    engine, bundle = env
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(src / "sub")], check=True)
    try:
        def mutate(c):
            c["mounts"].append({"destination": "/data", "type": "bind", "source": str(src),
                                "options": ["rbind", "rro"]})
        out, code = run(engine, bundle, ["sh", "-c", "echo x > /data/a || echo no-a; "
                                         "echo x > /data/sub/b || echo no-b; "
                                         "grep ' /data' /proc/self/mountinfo"], mutate=mutate)
        assert code == 0
        assert "no-a" in out and "no-b" in out, out
        lines = [ln.split() for ln in out.splitlines() if ln[:1].isdigit()]  # mountinfo
        assert [ln[4] for ln in lines] == ["/data", "/data/sub"], out
        assert all("ro" in ln[5].split(",") for ln in lines), out
    finally:
        subprocess.run(["umount", str(src / "sub")], check=True)


@pytest.fixture
def shared_bundle(env, tmp_path):
    """The bundle on a mount of its own that is shared on the host, as on a systemd host (this
    one's mounts are all private): what rslave needs to have a master."""
    engine, bundle = env
    top = tmp_path / "shared"
    top.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", str(top)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(top)], check=True)
        subprocess.run(["cp", "-a", str(bundle), str(top / "bundle")], check=True)
        yield engine, top / "bundle"
    finally:
        for cid in engine.list():
            engine.load(cid).delete(force=True)
        subprocess.run(["umount", "-l", str(top)], check=True)


@pytest.mark.parametrize("prop,tag", [("rslave", "master:"), ("rshared", "shared:"),
                                      ("rprivate", None), ("unbindable", "unbindable"),
                                      ("runbindable", "unbindable")])
def test_rootfs_propagation_shows_on_the_root_mount(shared_bundle, prop, tag):
    engine, bundle = shared_bundle
    out, code = run(engine, bundle, ["cat", "/proc/self/mountinfo"],
                    mutate=lambda c: c["linux"].update(rootfsPropagation=prop))
    assert code == 0, out
    root, = [ln for ln in out.splitlines() if ln.split()[4] == "/"]
    optional = root.split(" - ")[0].split()[6:]
    if tag is None:
        assert optional == [], out
    else:
        assert any(o.startswith(tag) for o in optional), out


@pytest.mark.xfail(strict=True, reason=(
    "on a host whose mounts are all private (this one) the root mount has no master to be a "
    "slave of: rslave leaves '/' private, as with runc (crun shows a master); a master would "
    "have to be a peer kept alive for the container's life"))
def test_rslave_on_a_host_without_shared_mounts(env):
    engine, bundle = env
    out, code = run(engine, bundle, ["cat", "/proc/self/mountinfo"],
                    mutate=lambda c: c["linux"].update(rootfsPropagation="rslave"))
    root, = [ln for ln in out.splitlines() if ln.split()[4] == "/"]
    assert "master:" in root, root


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


@pytest.fixture
def host_device():
    """A host interface to move: a dummy one, or a veth pair where the kernel has no dummy.
    Removed whatever happens (nothing of it may be left on the host)."""
    names = ["pyshimtest0"]
    r = subprocess.run(["ip", "link", "add", "pyshimtest0", "type", "dummy"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        names.append("pyshimtest1")
        subprocess.run(["ip", "link", "add", "pyshimtest0", "type", "veth", "peer", "name",
                        "pyshimtest1"], check=True)
    try:
        yield "pyshimtest0"
    finally:
        for n in names:
            if _link_exists(n):
                subprocess.run(["ip", "link", "del", n], capture_output=True)
        assert not any(_link_exists(n) for n in names)


def test_net_devices_are_moved_in_renamed_and_given_back(env, host_device):
    engine, bundle = env

    def mutate(c):
        c["linux"]["netDevices"] = {host_device: {"name": "ctr0"}}
    c = sleeping(engine, bundle, mutate)
    try:
        assert not _link_exists(host_device)  # gone from the host...
        inside = subprocess.run(["nsenter", "-t", str(c.pid), "-n", "ip", "-o", "link"],
                                capture_output=True, text=True, check=True).stdout
        assert ": ctr0" in inside and host_device not in inside  # ...into the container, renamed
    finally:
        c.delete(force=True)  # moves it back while the init still holds the namespace
        _reap(c.pid)
    assert _link_exists(host_device)  # given back under its own name
    assert "pyroute2" not in __import__("sys").modules  # only ever in the helper


def test_a_missing_net_device_fails_create_and_leaves_nothing(env):
    engine, bundle = env
    write_config(bundle, ["true"], lambda c: c["linux"].update(
        netDevices={"pyshimnone0": {}}))
    with pytest.raises(Exception) as e:
        engine.create("c1", str(bundle))
    assert "pyshimnone0" in str(e.value) and "does not exist" in str(e.value)
    assert engine.list() == []


def test_an_apparmor_profile_fails_create_naming_the_field(env):
    engine, bundle = env
    write_config(bundle, ["true"], lambda c: c["process"].update(apparmorProfile="x"))
    with pytest.raises(InvalidSpec) as e:
        engine.create("c1", str(bundle), Stdio())
    assert e.value.field == "process.apparmorProfile"
    assert engine.list() == []
