"""integration/containerd.py itself: stop() leaves nothing behind even after containerd
died with containers running (runc shim only: it checks the library, not a shim)."""
from __future__ import annotations

import os
import subprocess

from integration.containerd import BUSYBOX_IMAGE as IMAGE, PrivateContainerd, mountpoints


def test_stop_cleans_up_after_a_crash(prerequisites, busybox_tar):
    c = PrivateContainerd()
    try:
        c.import_image(busybox_tar)
        assert c.ctr("run", "-d", IMAGE, "crash-d", "sleep", "1000", timeout=60).returncode == 0
        attached = subprocess.Popen(["ctr", "--address", c.address, "run", IMAGE, "crash-a", "sleep", "1000"],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        c.wait_task_status("crash-a", "RUNNING", proc=attached)
        attached.kill()
        attached.wait()
        pids = [pid for pid, _ in c.tasks().values()]
        shims = c.shim_processes()
        assert len(shims) == 2 and len(c.leftover_mounts()) == 2
        sockets = c.leftover_sockets(["crash-d", "crash-a"])
        assert len(sockets) == 2
        top = c.dir
        c.proc.kill()  # containerd dies; shims and containers live on
        c.proc.wait()
    finally:
        notes = c.stop()
    assert any("killed shim" in n for n in notes)
    for pid in shims + pids:
        assert not _alive(pid)
    assert not [s for s in sockets if os.path.exists(s)]
    assert not [m for m in mountpoints() if m.startswith(top)]
    assert not os.path.exists(top)
    assert c.shim_processes() == []


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
