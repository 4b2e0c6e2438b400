"""hack/pause.c and its image (hack/mkimage.py --pause): the CRI sandbox program and image.
Needs gcc (-static, libc6-dev); the pid-namespace case needs root. No containerd."""
from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time

import pytest

from integration.containerd import load_mkimage

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc")


@pytest.fixture(scope="module")
def pause(tmp_path_factory) -> str:
    return load_mkimage().compile_pause(str(tmp_path_factory.mktemp("pause") / "pause"))


def stat(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: state, ppid, ... ([] if gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return []


def children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = stat(int(d))
            if len(st) > 1 and int(st[1]) == pid:
                out.append(int(d))
    return sorted(out)


def _wait(p: subprocess.Popen, timeout: float = 10) -> int:
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise


def test_static_and_version(pause):
    mk = load_mkimage()
    assert mk.is_static_elf(pause)
    r = subprocess.run([pause, "-v"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and r.stdout.startswith("pyshim-pause")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_blocks_until_term_or_int(pause, sig):
    p = subprocess.Popen([pause], stderr=subprocess.DEVNULL)
    time.sleep(0.2)
    assert p.poll() is None, "pause exited on its own"
    p.send_signal(sig)
    assert _wait(p) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (unshare --pid)")
def test_reaps_orphans_as_pid1(pause):
    # pause is pid 1 of a new pid namespace; a shell in it leaves an orphan that exits: no zombie.
    p = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", pause],
                         stderr=subprocess.DEVNULL)
    inner = None
    try:
        deadline = time.monotonic() + 10
        while inner is None and time.monotonic() < deadline:
            kids = children(p.pid)
            inner = kids[0] if kids else None
            time.sleep(0.05)
        assert inner is not None, "no pause process inside the namespace"
        # Enter its pid namespace and leave a short-lived orphan behind.
        subprocess.run(["nsenter", "-t", str(inner), "-p", "--", "sh", "-c", "(sleep 0.2 &)"],
                       check=True, timeout=10)
        time.sleep(1.0)
        states = {k: stat(k)[0] for k in children(inner)}
        assert "Z" not in states.values(), f"pause left zombies: {states}"
    finally:
        # unshare --fork blocks SIGTERM while it waits: stop pause itself; unshare follows.
        if inner is not None:
            os.kill(inner, signal.SIGTERM)
        else:
            p.kill()
        assert _wait(p) == 0 or inner is None


def test_image_layout(tmp_path):
    mk = load_mkimage()
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    assert mk.build_pause_image(str(a)) == mk.build_pause_image(str(b))
    assert a.read_bytes() == b.read_bytes()
    with tarfile.open(a) as t:
        files = {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}
    desc = json.loads(files["index.json"])["manifests"][0]
    assert desc["annotations"]["io.containerd.image.name"] == mk.PAUSE_NAME
    manifest = json.loads(files["blobs/sha256/" + desc["digest"].split(":")[1]])
    config = json.loads(files["blobs/sha256/" + manifest["config"]["digest"].split(":")[1]])
    assert config["config"]["Entrypoint"] == ["/pause"]
    layer = gzip.decompress(files["blobs/sha256/" + manifest["layers"][0]["digest"].split(":")[1]])
    with tarfile.open(fileobj=io.BytesIO(layer)) as t:
        members = t.getmembers()
    assert [(m.name, m.mode) for m in members] == [("pause", 0o755)]
