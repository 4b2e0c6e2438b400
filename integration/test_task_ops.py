"""Task operations beyond run/kill/delete (issue 4), through ctr, runc shim and pyshim alike:
pause/resume, ps (Pids), metrics (Stats), OOM kills (event before exit, status 137)."""
from __future__ import annotations

import subprocess
import time

from integration.containerd import BUSYBOX_IMAGE as IMAGE, PYSHIM_RUNTIME
from integration.test_ctr import T, gone, ok


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _cleanup(c, cid):
    c.ctr("task", "kill", "-s", "SIGKILL", cid, timeout=T)
    c.wait_task_status(cid, "STOPPED")
    ok(c.ctr("task", "delete", cid, timeout=T))
    ok(c.ctr("container", "rm", cid, timeout=T))
    gone(c, cid)


def test_pause_and_resume(containerd, runtime, cid):
    c = containerd
    ok(c.ctr("run", "-d", "--runtime", runtime, IMAGE, cid, "sh", "-c",
             "while true; do sleep 0.05; done", timeout=T))
    pid, _ = c.wait_task_status(cid, "RUNNING")
    ok(c.ctr("task", "pause", cid, timeout=T))
    c.wait_task_status(cid, "PAUSED")
    time.sleep(0.2)
    assert _state(pid) == "D"  # frozen by the freezer cgroup
    ok(c.ctr("task", "resume", cid, timeout=T))
    c.wait_task_status(cid, "RUNNING")
    assert _state(pid) in ("S", "R")
    _cleanup(c, cid)


def test_ps_lists_the_init_and_exec_processes(containerd, runtime, cid):
    c = containerd
    ok(c.ctr("run", "-d", "--runtime", runtime, IMAGE, cid, "sleep", "1000", timeout=T))
    init_pid, _ = c.wait_task_status(cid, "RUNNING")
    exec_proc = subprocess.Popen(c.ctr_argv("task", "exec", "--exec-id", "sleeper", cid,
                                            "sleep", "1000"),
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            r = ok(c.ctr("task", "ps", cid, timeout=T))
            rows = [line.split() for line in r.stdout.splitlines()[1:] if line.strip()]
            if len(rows) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        pids = {int(row[0]): row[1:] for row in rows}
        assert init_pid in pids and len(pids) == 2, r.stdout
        exec_info = [info for pid, info in pids.items() if pid != init_pid][0]
        assert exec_info and "sleeper" in " ".join(exec_info), r.stdout  # ProcessDetails{exec_id}
    finally:
        _cleanup(c, cid)
        exec_proc.wait(T)


def test_metrics_report_the_cgroup(containerd, runtime, cid):
    c = containerd
    ok(c.ctr("run", "-d", "--runtime", runtime, "--memory-limit", str(64 << 20), IMAGE, cid,
             "sleep", "1000", timeout=T))
    c.wait_task_status(cid, "RUNNING")
    r = ok(c.ctr("task", "metrics", "--format", "json", cid, timeout=T))
    assert '"limit": 67108864' in r.stdout or '"limit":67108864' in r.stdout, r.stdout[:2000]
    assert '"pids"' in r.stdout
    _cleanup(c, cid)


def test_oom_kill_is_reported_before_the_exit(containerd, runtime, cid):
    c = containerd
    events = subprocess.Popen(c.ctr_argv("events"), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(0.3)
        r = c.ctr("run", "--rm", "--runtime", runtime, "--memory-limit", str(32 << 20), IMAGE, cid,
                  "dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1", timeout=T)
        assert r.returncode == 137, (r.returncode, r.stderr)
        time.sleep(0.5)
    finally:
        events.terminate()
        out, _ = events.communicate(timeout=T)
    lines = [line for line in out.splitlines() if cid in line]
    topics = [t for line in lines for t in ("/tasks/oom", "/tasks/exit") if f" {t} " in line]
    assert "/tasks/oom" in topics, lines
    if runtime == PYSHIM_RUNTIME:  # pyshim guarantees the order; the runc shim may race it
        assert topics.index("/tasks/oom") < topics.index("/tasks/exit"), lines
    gone(c, cid)
