"""Terminals (issue 4): `ctr run -t` and `ctr task exec -t`, runc shim and pyshim alike.
ctr needs a terminal of its own for -t, so it runs on a pty this test holds."""
from __future__ import annotations

import os
import pty
import select
import subprocess
import time

from integration.containerd import BUSYBOX_IMAGE as IMAGE
from integration.test_ctr import T, gone, ok


def _run_on_pty(argv: list[str], send: bytes = b"", timeout: float = 30) -> tuple[int, bytes]:
    """Run argv with a pty as its stdin/stdout/stderr; type `send`; return (status, output)."""
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    p = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    sent = False
    try:
        while time.monotonic() < deadline:
            if not sent and send and b"ready" in out:
                os.write(master, send)
                sent = True
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    out += os.read(master, 65536)
                except OSError:  # EIO: ctr exited and closed the slave
                    break
            elif p.poll() is not None:
                break
        return p.wait(timeout=max(1, deadline - time.monotonic())), out
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)


def test_run_with_a_terminal(containerd, runtime, cid):
    c = containerd
    status, out = _run_on_pty(c.ctr_argv(
        "run", "-t", "--rm", "--runtime", runtime, IMAGE, cid, "sh", "-c",
        "tty; echo ready; read line; echo got-$line; exit 5"), send=b"hello\r")
    text = out.decode(errors="replace")
    assert "/dev/pts/0" in text, text
    assert "got-hello" in text, text
    assert status == 5, (status, text)
    gone(c, cid)


def test_exec_with_a_terminal(containerd, runtime, cid):
    c = containerd
    ok(c.ctr("run", "-d", "--runtime", runtime, IMAGE, cid, "sleep", "1000", timeout=T))
    c.wait_task_status(cid, "RUNNING")
    status, out = _run_on_pty(c.ctr_argv("task", "exec", "-t", "--exec-id", "tty", cid,
                                         "sh", "-c", "tty; exit 3"))
    assert status == 3, (status, out)
    assert b"/dev/pts/" in out, out
    c.ctr("task", "kill", "-s", "SIGKILL", cid, timeout=T)
    c.wait_task_status(cid, "STOPPED")
    ok(c.ctr("task", "delete", cid, timeout=T))
    ok(c.ctr("container", "rm", cid, timeout=T))
    gone(c, cid)
