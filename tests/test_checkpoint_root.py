"""runtime.checkpoint against real containers of the engine (root), with a fake `criu`: what the
dump probes read from a running container (its stdio, the FIFO outside its mount namespace,
its cgroup), and everything a restore does around criu (cgroup, criu-root bind mount, mount
points, the fds criu inherits, state.json) and undoes when criu fails. Real criu runs in
integration/test_checkpoint.py."""

import ctypes
import json
import os
import shutil
import time

import pytest

from runtime import checkpoint as ck
from runtime.container import Engine, Stdio
from runtime.specgen import default_config

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

BUSYBOX = "/bin/busybox"


@pytest.fixture(scope="module", autouse=True)
def subreaper():
    if os.geteuid() == 0:  # as the shim: the init (and what the fake criu leaves) comes to us
        assert ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0


@pytest.fixture
def env(tmp_path):
    if not os.path.exists(BUSYBOX):
        pytest.skip("no static busybox")
    bundle = tmp_path / "bundle"
    (bundle / "rootfs" / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, bundle / "rootfs/bin/busybox")
    for name in ("sh", "sleep"):
        os.link(bundle / "rootfs/bin/busybox", bundle / "rootfs/bin" / name)
    (tmp_path / "shared").mkdir()
    config = default_config(["sleep", "1000"])
    config["mounts"].append({"destination": "/data", "type": "bind",
                             "source": str(tmp_path / "shared"), "options": ["rbind"]})
    (bundle / "config.json").write_text(json.dumps(config))
    engine = Engine(str(tmp_path / "state"))
    yield engine, bundle
    for cid in engine.list():
        c = engine.load(cid)
        c.delete(force=True)
        _reap(c.pid)


def _reap(pid):
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def fake_criu(tmp_path, body):
    path = tmp_path / "criu"
    path.write_text(f"""#!/bin/sh
echo "$@" > {tmp_path}/criu.args
ls -l /proc/$$/fd > {tmp_path}/criu.fds
cat /proc/$$/cgroup > {tmp_path}/criu.cgroup
for a; do
  case "$prev" in --work-dir) work=$a;; --pidfile) pidfile=$a;; --root) root=$a;; esac
  prev=$a
done
{body}
""")
    path.chmod(0o755)
    return str(path)


def test_dump_probes_a_running_container(env, tmp_path):
    engine, bundle = env
    fifo = str(tmp_path / "stdout")
    os.mkfifo(fifo)
    keep = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    out = os.open(fifo, os.O_WRONLY)
    stdin_r, stdin_w = os.pipe()
    try:
        c = engine.create("c1", str(bundle), Stdio(stdin=stdin_r, stdout=out, stderr=out))
    finally:
        os.close(out)
        os.close(stdin_r)
    c.start()
    criu = fake_criu(tmp_path, "exit 0")
    img = str(tmp_path / "img")
    ck.checkpoint(c, ck.CheckpointOptions(image_path=img), criu=criu)
    argv = (tmp_path / "criu.args").read_text().split()
    with open(f"/proc/{c.pid}/fdinfo/1") as f:
        mnt = int(next(line for line in f if line.startswith("mnt_id:")).split()[1])
    key = f"file[{mnt:x}:{os.stat(fifo).st_ino:x}]"  # the host FIFO: outside the container
    assert argv[:4] == ["dump", "--tree", str(c.pid), "--images-dir"]
    assert argv[argv.index("--root") + 1] == str(bundle / "rootfs")
    assert key in argv and "mnt[/data]:/data" in argv
    assert [a for a in argv if a.endswith(":/dev/null") and a.startswith("mnt[/proc/")]  # masked
    freezer = c._data["cgroup"].get("path") or c._data["cgroup"]["paths"]["freezer"]
    assert argv[argv.index("--freeze-cgroup") + 1] == freezer
    descriptors, external, saved = ck.read_image(img)
    assert descriptors == [f"pipe:[{os.fstat(stdin_w).st_ino}]", fifo, fifo]
    assert external == {1: key, 2: key} and saved == ck.CheckpointOptions()
    assert c.status() == "running"
    os.close(stdin_w)
    os.close(keep)


RESTORE_OK = """
[ -d "$root/data" ] && [ -d "$root/proc" ] || { echo "Error (fake): no mount points" >&2; exit 1; }
grep -q " $root " /proc/self/mountinfo || { echo "Error (fake): root not mounted" >&2; exit 1; }
echo restored >&3
sleep 1000 </dev/null >/dev/null 2>&1 &
echo $! > "$pidfile"
echo "restore done" > "$work/restore.log"
"""


def test_restore_around_criu(env, tmp_path):
    engine, bundle = env
    img = tmp_path / "img"
    img.mkdir()
    (img / "descriptors.json").write_text('["/dev/null", "pipe:[123]", "pipe:[123]"]')
    criu = fake_criu(tmp_path, RESTORE_OK)
    r, w = os.pipe()
    try:
        c = ck.restore(engine, "c1", str(bundle), str(img), Stdio(stdout=w, stderr=w), criu=criu,
                       work_dir=str(tmp_path / "work"))
    finally:
        os.close(w)
    assert os.read(r, 100) == b"restored\n"  # the new stdout, as criu's fd 3
    os.close(r)
    argv = (tmp_path / "criu.args").read_text().split()
    assert argv[:2] == ["restore", "--images-dir"] and "fd[3]:pipe:[123]" in argv
    assert f"mnt[/data]:{tmp_path}/shared" in argv
    assert c.status() == "running" and c.pid in c.pids()  # born in the container's cgroup
    assert engine.load("c1").pid == c.pid
    state_dir = os.path.join(engine.root, "c1")
    assert sorted(os.listdir(state_dir)) == ["state.json"]  # no criu-root, no pidfile, no fifo
    mounts = open("/proc/self/mountinfo").read()
    assert str(tmp_path) + "/state" not in mounts and f"{bundle}/rootfs/data" not in mounts
    c.delete(force=True)
    _reap(c.pid)
    assert engine.list() == []


def test_failed_restore_leaves_nothing(env, tmp_path):
    engine, bundle = env
    img = tmp_path / "img"
    img.mkdir()
    (img / "descriptors.json").write_text('["/dev/null", "/dev/null", "/dev/null"]')
    criu = fake_criu(tmp_path, 'echo "(0.1) Error (criu/cr-restore.c:1): cannot restore" > '
                               '"$work/restore.log"; sleep 1000 & exit 1')
    with pytest.raises(ck.CriuError) as e:
        ck.restore(engine, "c1", str(bundle), str(img), None, criu=criu,
                   work_dir=str(tmp_path / "work"))
    assert "cannot restore" in str(e.value) and str(tmp_path / "work/restore.log") in str(e.value)
    assert not os.path.exists(os.path.join(engine.root, "c1"))
    cgroup_line = (tmp_path / "criu.cgroup").read_text().splitlines()[0].split(":", 2)[2]
    assert cgroup_line.endswith("/c1")  # criu ran in the container's cgroup ...
    for line in (tmp_path / "criu.cgroup").read_text().splitlines():
        ctrl, path = line.split(":", 2)[1:]
        if path.endswith("/c1"):  # ... which is gone, with what criu left in it
            mount = "/sys/fs/cgroup/" + (ctrl.replace("name=", "") or "unified")
            assert not os.path.exists(mount + path) or not os.path.isdir(mount + path)
    assert str(tmp_path) + "/state" not in open("/proc/self/mountinfo").read()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the sleep criu left was killed with the cgroup
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.02)


def test_restore_of_no_image_is_refused_before_anything(env, tmp_path):
    engine, bundle = env
    with pytest.raises(ck.CheckpointError, match="descriptors.json"):
        ck.restore(engine, "c1", str(bundle), str(tmp_path), None, criu="/nonexistent")
    assert engine.list() == [] and not os.path.exists(os.path.join(engine.root, "c1"))
