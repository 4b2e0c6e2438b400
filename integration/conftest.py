"""Fixtures for the integration suite: a private containerd (one per session) with the
busybox test image imported, each scenario parametrized over the runc shim and pyshim,
and a leak check after every test.

Needs root and containerd/ctr; without them the suite is skipped, except under CI (env CI
set), where a missing prerequisite fails it.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import uuid

import pytest

from integration.containerd import (BUSYBOX_IMAGE, PYSHIM_BINARY, PYSHIM_RUNTIME,
                                    RUNC_RUNTIME, PrivateContainerd, build_busybox_image)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = BUSYBOX_IMAGE
LEAK_WAIT = 10.0  # seconds a shim gets to exit after its container is deleted

_instance: PrivateContainerd | None = None
_cri_instance: PrivateContainerd | None = None


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def missing_prerequisites() -> list[str]:
    missing = []
    if os.geteuid() != 0:
        missing.append("root (the integration suite mounts and runs containers)")
    for b in ("containerd", "ctr", "runc", "containerd-shim-runc-v2"):
        if shutil.which(b) is None:
            missing.append(f"{b} on PATH (hack/install.sh installs it)")
    if not os.path.exists("/bin/busybox"):
        missing.append("/bin/busybox (busybox-static; hack/install.sh installs it)")
    return missing


def _pyshim_binary() -> str | None:
    venv = os.path.join(REPO, ".venv", "bin", PYSHIM_BINARY)
    if os.path.exists(venv):
        return venv
    return shutil.which(PYSHIM_BINARY)


def pyshim_shims() -> dict[str, str] | None:
    """PrivateContainerd(shims=...) putting this checkout's pyshim first on containerd's PATH."""
    shim = _pyshim_binary()
    return {PYSHIM_BINARY: shim} if shim else None


def _sigterm_to_keyboardinterrupt(signum, frame):
    # A SIGTERM (e.g. from `timeout`) ends the run like ^C, so fixtures still tear down and
    # the private containerd and its containers do not outlive the run.
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def prerequisites():
    """Skips (fails under CI) when root, containerd, ctr, runc or busybox are missing."""
    missing = missing_prerequisites()
    if missing:
        msg = "integration prerequisites missing: " + "; ".join(missing)
        if in_ci():
            pytest.fail(msg + " (CI is set: failing instead of skipping)", pytrace=False)
        pytest.skip(msg)


@pytest.fixture(scope="session")
def busybox_tar(prerequisites, tmp_path_factory) -> str:
    """The OCI archive of the test image (hack/mkimage.py), built once per session."""
    tar = str(tmp_path_factory.mktemp("image") / "busybox.tar")
    build_busybox_image(tar)
    return tar


@pytest.fixture(scope="session")
def containerd(prerequisites, busybox_tar):
    """The session's PrivateContainerd, with IMAGE imported."""
    global _instance
    old = signal.signal(signal.SIGTERM, _sigterm_to_keyboardinterrupt)
    c = PrivateContainerd(shims=pyshim_shims())
    _instance = c
    try:
        c.import_image(busybox_tar)
        yield c
    finally:
        _instance = None
        notes = c.stop()
        signal.signal(signal.SIGTERM, old)
        if notes:
            print("\nprivate containerd teardown had to clean up:\n  " + "\n  ".join(notes))


SESSION_KEYRING_C = r"""
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {  /* describe our session keyring (KEYCTL_DESCRIBE of KEY_SPEC_SESSION_KEYRING) */
    char buf[512];
    if (syscall(SYS_keyctl, 6, -3, buf, sizeof buf) < 0) { perror("keyctl"); return 1; }
    printf("%s\n", buf);
    return 0;
}
"""


@pytest.fixture(scope="session")
def sesring(tmp_path_factory) -> str:
    """A static program (gcc -static) printing its session keyring's description, e.g.
    "keyring;0;0;3f1b0000;_ses.ID": the directory holding it as `sesring`."""
    d = tmp_path_factory.mktemp("sesring")
    (d / "sesring.c").write_text(SESSION_KEYRING_C)
    subprocess.run(["gcc", "-static", "-O", "-o", str(d / "sesring"), str(d / "sesring.c")],
                   check=True, capture_output=True)
    (d / "sesring.c").unlink()
    return str(d)


@pytest.fixture(params=[RUNC_RUNTIME, PYSHIM_RUNTIME], ids=["runc", "pyshim"])
def runtime(request, containerd):
    """The runtime name to pass to `ctr run --runtime`."""
    if request.param == PYSHIM_RUNTIME and _pyshim_binary() is None:
        pytest.fail(f"{PYSHIM_BINARY} not found (neither {REPO}/.venv/bin nor PATH): "
                    "run hack/install.sh", pytrace=False)
    return request.param


class ContainerIds:
    """Unique container ids for one test; every id handed out is leak-checked afterwards."""

    def __init__(self, nodename: str):
        base = re.sub(r"[^A-Za-z0-9]+", "-", nodename).strip("-").lower()
        self.base = (base[:40].strip("-") or "t") + "-" + uuid.uuid4().hex[:6]
        self.ids: list[str] = []

    def new(self) -> str:
        cid = f"{self.base}-{len(self.ids)}"
        self.ids.append(cid)
        return cid


@pytest.fixture
def container_ids(request, containerd, _leak_check):
    return _leak_check


@pytest.fixture
def cid(container_ids) -> str:
    """A unique container id for this test."""
    return container_ids.new()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
    if rep.failed and _instance is not None and _instance.dir is not None:
        rep.sections.append(("containerd log (tail)", _instance.log_tail(60)))
    if rep.failed and _cri_instance is not None and _cri_instance.dir is not None:
        rep.sections.append(("CRI containerd log (tail)", _cri_instance.log_tail(60)))


@pytest.fixture(autouse=True)
def _leak_check(request):
    """After each test: no shim of this containerd left running, no mount of the test's
    containers left under containerd's dirs, no shim socket left for them."""
    if "containerd" not in request.fixturenames:
        yield None
        return
    c: PrivateContainerd = request.getfixturevalue("containerd")
    ids = ContainerIds(request.node.name)
    yield ids
    problems = []
    call = getattr(request.node, "rep_call", None)
    test_failed = call is None or call.failed
    # Containers the test left behind: a failed test may leave them; a passing one must not.
    left = [i for i in ids.ids if i in set(c.task_ids()) | set(c.container_ids())]
    if left:
        notes = c.reap(left)
        if not test_failed:
            problems.append(f"test left containers/tasks behind: {left} ({notes})")
    deadline = time.monotonic() + LEAK_WAIT
    while True:
        shims = c.shim_processes()
        mounts = c.leftover_mounts(ids.ids)
        sockets = c.leftover_sockets(ids.ids)
        if not (shims or mounts or sockets) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if shims:
        problems.append("shim processes still running %.0fs after the test: %s" % (LEAK_WAIT, [
            (p, " ".join(_argv(p))) for p in shims]))
    if mounts:
        problems.append(f"mounts left: {mounts}")
    if sockets:
        problems.append(f"shim sockets left: {sockets}")
    if shims or mounts or sockets:
        # Leave a clean slate for the next test.
        c._kill_pids(shims, 10)
        c.reap(ids.ids)
    if problems:
        pytest.fail("leak check: " + "; ".join(problems), pytrace=False)


def _argv(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


# ---- CRI ---------------------------------------------------------------------------------------
# A second private containerd with the CRI plugin (integration/containerd.py, cri=True), made only
# when a CRI test runs; the CRI tests use these fixtures, not `containerd`, and check their own
# leftovers (integration/cri_pods.py).
CRI_HANDLERS = ["runc", "pyshim"]


def cri_missing() -> list[str]:
    from integration.containerd import CNI_BIN_DIR
    missing = [f"{CNI_BIN_DIR}/{p} (containernetworking-plugins)" for p in ("ptp", "host-local", "loopback")
               if not os.access(os.path.join(CNI_BIN_DIR, p), os.X_OK)]
    for b in ("gcc", "ip"):
        if shutil.which(b) is None:
            missing.append(f"{b} on PATH")
    return missing


@pytest.fixture(scope="session")
def cri_containerd(prerequisites, busybox_tar):
    """A PrivateContainerd with CRI (namespace k8s.io), the busybox image imported there."""
    from integration.containerd import CRI_NAMESPACE
    from integration.cri_pods import CGROUP_PREFIX, remove_cgroup_tree
    missing = cri_missing()
    if missing:
        msg = "CRI prerequisites missing: " + "; ".join(missing)
        if in_ci():
            pytest.fail(msg + " (CI is set: failing instead of skipping)", pytrace=False)
        pytest.skip(msg)
    if _pyshim_binary() is None:
        pytest.fail(f"{PYSHIM_BINARY} not found: run hack/install.sh", pytrace=False)
    old = signal.signal(signal.SIGTERM, _sigterm_to_keyboardinterrupt)
    global _cri_instance
    c = PrivateContainerd(cri=True, shims=pyshim_shims(), namespace=CRI_NAMESPACE)
    _cri_instance = c
    try:
        c.import_image(busybox_tar, namespace=CRI_NAMESPACE)
        yield c
    finally:
        _cri_instance = None
        notes = c.stop()
        remove_cgroup_tree(CGROUP_PREFIX)

        signal.signal(signal.SIGTERM, old)
        if notes:
            print("\nCRI containerd teardown had to clean up:\n  " + "\n  ".join(notes))


@pytest.fixture(scope="session")
def cri_client(cri_containerd):
    with cri_containerd.cri_client() as client:
        yield client


@pytest.fixture(params=CRI_HANDLERS)
def handler(request) -> str:
    """The CRI runtime_handler: `runc` (io.containerd.runc.v2) or `pyshim` (io.containerd.pyshim.v2)."""
    return request.param


@pytest.fixture
def pods(request, cri_containerd, cri_client, handler, tmp_path):
    """A PodFactory for this test on `handler`; afterwards its pods are removed through CRI and
    nothing of them may be left (integration/cri_pods.py)."""
    from integration.cri_pods import PodFactory
    f = PodFactory(cri_containerd, cri_client, handler, str(tmp_path), request.node.name)
    yield f
    call = getattr(request.node, "rep_call", None)
    failed = call is None or call.failed
    notes = f.finish(failed=failed)
    if failed and notes:
        print("\nCRI cleanup after a failed test:\n  " + "\n  ".join(notes))
