"""Survival (issue 4): containerd restarted under running containers, and a shim killed.
Each scenario runs with the runc shim and with pyshim and asserts the same outcome."""
from __future__ import annotations

import os
import signal
import time

from integration.containerd import BUSYBOX_IMAGE as IMAGE
from integration.test_ctr import T, gone, ok


def _task(c, cid):
    """{"pid", "status"} of the task, or None."""
    found = c.tasks().get(cid)
    return {"pid": found[0], "status": found[1]} if found else None


def test_containers_survive_a_containerd_restart(containerd, runtime, cid):
    c = containerd
    ok(c.ctr("run", "-d", "--runtime", runtime, IMAGE, cid, "sleep", "1000", timeout=T))
    c.wait_task_status(cid, "RUNNING")
    pid = int(_task(c, cid)["pid"])
    c.restart()
    task = _task(c, cid)  # containerd found the shim again (address file + Connect)
    assert task and task["status"] == "RUNNING" and int(task["pid"]) == pid
    assert os.path.exists(f"/proc/{pid}")
    # later kill/exit/delete work, and the exit event reaches the new containerd
    ok(c.ctr("task", "kill", "-s", "SIGKILL", cid, timeout=T))
    c.wait_task_status(cid, "STOPPED")
    ok(c.ctr("task", "delete", cid, timeout=T))
    ok(c.ctr("container", "rm", cid, timeout=T))
    gone(c, cid)


def test_a_killed_shim_is_cleaned_up_by_containerd(containerd, runtime, cid):
    c = containerd
    ok(c.ctr("run", "-d", "--runtime", runtime, IMAGE, cid, "sleep", "1000", timeout=T))
    c.wait_task_status(cid, "RUNNING")
    container_pid = int(_task(c, cid)["pid"])
    shim = c.shim_pid_of(cid)
    assert shim, "no shim process found for the container"
    os.kill(shim, signal.SIGKILL)  # a shim we started (through containerd), by pid
    # containerd notices the disconnect and runs `<shim> delete`: the container's processes
    # are killed and its rootfs unmounted; the task is reported stopped or gone.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        task = _task(c, cid)
        if (task is None or task["status"] == "STOPPED") and not _alive(container_pid):
            break
        time.sleep(0.1)
    assert not _alive(container_pid), "the container's process outlived its killed shim"
    task = _task(c, cid)
    assert task is None or task["status"] == "STOPPED", task
    c.ctr("task", "delete", cid, timeout=T)
    ok(c.ctr("container", "rm", cid, timeout=T))
    gone(c, cid)
    socket = c.shim_socket_path(None, cid)
    if runtime.endswith("runc.v2"):
        # The runc shim's socket outlives it when it is killed (its delete does not remove
        # it); that is runc's leftover, removed here so the leak check judges ours alone.
        if os.path.exists(socket):
            os.unlink(socket)
    else:  # pyshim's `delete` removes a socket nobody listens on any more
        assert not os.path.exists(socket), socket


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
