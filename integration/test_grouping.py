"""Grouping (issue 4): containers sharing one shim. Pod grouping by the CRI sandbox-id
annotation, for both runtimes; pyshim's per-namespace policy (runtime config)."""
from __future__ import annotations

import time

from integration.containerd import BUSYBOX_IMAGE as IMAGE, PYSHIM_RUNTIME
from integration.test_ctr import T, gone, ok

SANDBOX = "io.kubernetes.cri.sandbox-id"


def _new_shims(c, before):
    return sorted(set(c.shim_processes()) - set(before))


def _remove(c, ids):
    for cid in ids:
        c.ctr("task", "kill", "-s", "SIGKILL", cid, timeout=T)
    for cid in ids:
        c.wait_task_status(cid, "STOPPED")
        ok(c.ctr("task", "delete", cid, timeout=T))
        ok(c.ctr("container", "rm", cid, timeout=T))
        gone(c, cid)


def _wait_no_shims(c, pids, timeout=10):
    deadline = time.monotonic() + timeout
    while set(pids) & set(c.shim_processes()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return set(pids) & set(c.shim_processes())


def test_containers_of_one_pod_share_a_shim(containerd, runtime, container_ids):
    c = containerd
    ids = [container_ids.new() for _ in range(3)]
    before = c.shim_processes()
    for cid in ids:
        ok(c.ctr("run", "-d", "--runtime", runtime, "--annotation", f"{SANDBOX}={ids[0]}",
                 IMAGE, cid, "sleep", "1000", timeout=T))
    shims = _new_shims(c, before)
    assert len(shims) == 1, shims
    _remove(c, ids)
    assert not _wait_no_shims(c, shims), "the pod's shim did not exit after its last container"


def test_namespace_grouping_one_shim_for_all_and_one_crash_disturbs_no_other(
        containerd, container_ids, tmp_path):
    # A pyshim policy: the runc shim has no equivalent, so this runs for pyshim alone.
    runtime = PYSHIM_RUNTIME
    c = containerd
    cfg = tmp_path / "pyshim.toml"
    cfg.write_text('grouping = "namespace"\n')
    ids = [container_ids.new() for _ in range(3)]
    before = c.shim_processes()
    for cid in ids:
        ok(c.ctr("run", "-d", "--runtime", runtime, "--runtime-config-path", str(cfg),
                 IMAGE, cid, "sleep", "1000", timeout=T))
    shims = _new_shims(c, before)
    assert len(shims) == 1, shims
    # one container dies; the others and the shim carry on
    ok(c.ctr("task", "kill", "-s", "SIGKILL", ids[0], timeout=T))
    c.wait_task_status(ids[0], "STOPPED")
    tasks = c.tasks()
    assert [tasks[cid][1] for cid in ids[1:]] == ["RUNNING", "RUNNING"]
    ok(c.ctr("task", "delete", ids[0], timeout=T))
    assert shims[0] in c.shim_processes()
    assert [c.tasks()[cid][1] for cid in ids[1:]] == ["RUNNING", "RUNNING"]
    _remove(c, ids[1:])
    ok(c.ctr("container", "rm", ids[0], timeout=T))
    assert not _wait_no_shims(c, shims), "the namespace shim did not exit after the last container"


def test_bad_runtime_config_is_a_clear_error(containerd, cid, tmp_path):
    runtime = PYSHIM_RUNTIME  # pyshim's own configuration: no runc counterpart
    cfg = tmp_path / "pyshim.toml"
    cfg.write_text('grouping = "cluster"\n')
    r = containerd.ctr("run", "--rm", "--runtime", runtime, "--runtime-config-path", str(cfg),
                       IMAGE, cid, "true", timeout=T)
    assert r.returncode != 0
    assert f"{cfg}: grouping = 'cluster': must be one of pod, namespace, container" in r.stderr
    containerd.ctr("container", "rm", cid, timeout=T)
