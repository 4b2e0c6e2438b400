"""containerd's own runc shim driving pyshim-runc as its runtime binary (`ctr run --runc-binary`):
the strictest test of runc compatibility there is - go-runc's exact command lines (--root,
--log <bundle>/log.json --log-format json, create --pid-file, start, state, kill, delete,
exec --process --detach --pid-file, ps --format json, pause, resume), and the shim reaping
an init that pyshim-runc's create left to it."""
from __future__ import annotations

import pytest

from integration.conftest import IMAGE
from integration.containerd import RUNC_RUNTIME
from integration.test_cli import pyshim_runc


@pytest.fixture
def runc_binary():
    binary = pyshim_runc()
    if binary is None:
        pytest.fail("pyshim-runc not found: run hack/install.sh", pytrace=False)
    return ["--runtime", RUNC_RUNTIME, "--runc-binary", binary]


def test_run_gives_output_and_exit_code(containerd, cid, runc_binary):
    r = containerd.ctr("run", "--rm", *runc_binary, IMAGE, cid, "sh", "-c",
                       "echo hello from pyshim-runc; echo to-stderr >&2; exit 3", timeout=60)
    assert r.returncode == 3, r.stderr
    assert "hello from pyshim-runc\n" in r.stdout and "to-stderr" in r.stdout + r.stderr


def test_exec_ps_pause_resume_kill_delete(containerd, cid, runc_binary):
    r = containerd.ctr("run", "-d", *runc_binary, IMAGE, cid, "sleep", "60")
    assert r.returncode == 0, r.stderr
    containerd.wait_task_status(cid, "RUNNING")
    r = containerd.ctr("task", "exec", "--exec-id", "e1", cid, "sh", "-c", "echo exec-ok; exit 5")
    assert (r.returncode, r.stdout) == (5, "exec-ok\n"), r.stderr
    r = containerd.ctr("task", "ps", cid)
    assert r.returncode == 0 and str(containerd.tasks()[cid][0]) in r.stdout, r.stderr
    assert containerd.ctr("task", "pause", cid).returncode == 0
    containerd.wait_task_status(cid, "PAUSED")
    assert containerd.ctr("task", "resume", cid).returncode == 0
    containerd.wait_task_status(cid, "RUNNING")
    assert containerd.ctr("task", "kill", "-s", "KILL", cid).returncode == 0
    containerd.wait_task_status(cid, "STOPPED")
    assert containerd.ctr("task", "delete", cid).returncode == 0
    assert containerd.ctr("container", "delete", cid).returncode == 0


def test_a_bad_config_fails_clearly(containerd, cid, runc_binary):
    r = containerd.ctr("run", "--rm", *runc_binary, IMAGE, cid, "/no/such/binary", timeout=60)
    assert r.returncode != 0
    assert "/no/such/binary" in r.stderr  # the error pyshim-runc logged, relayed by the shim
    containerd.ctr("container", "delete", cid)


def test_a_terminal_through_the_console_socket(containerd, cid, runc_binary):
    import os
    import select
    import subprocess
    import time
    master, slave = os.openpty()
    try:
        p = subprocess.Popen(containerd.ctr_argv("run", "-t", "--rm", *runc_binary, IMAGE, cid,
                                                 "sh", "-c", "tty; exit 2"),
                             stdin=slave, stdout=slave, stderr=slave)
        assert p.wait(60) == 2
        out, deadline = b"", time.monotonic() + 2
        while time.monotonic() < deadline and select.select([master], [], [], 0.1)[0]:
            try:
                out += os.read(master, 65536)
            except OSError:
                break
        assert b"/dev/pts/0" in out
    finally:
        os.close(master)
        os.close(slave)
