"""Pods through containerd's CRI gRPC API, each case with runtime_handler `runc` and `pyshim` side
by side (the `handler` fixture): what kubelet asks of a runtime. A private containerd with CRI
(integration/containerd.py, cri=True) runs them; `pods` (integration/cri_pods.py) removes every
pod through CRI afterwards and fails the test if anything of it is left (pods, containers, shims,
mounts, network namespaces, runtime state, cgroups, CNI cache entries).
"""
from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import time

import grpc
import pytest

from integration.containerd import CRI_NAMESPACE, _cmdline
from integration.cri import (CREATED, EXITED, NODE, POD, RUNNING, SANDBOX_NOTREADY, SANDBOX_READY,
                             code_of)
from integration.cri_pods import ppid_of, proc_ns

# A container that ends on SIGTERM (pid 1 of its pid namespace has no default SIGTERM action:
# it needs a handler) and otherwise runs until stopped. A test that stops it and times the stop
# first waits for "started" in its log: a SIGTERM that comes before the trap is set is ignored.
STOPPABLE = ["sh", "-c", "trap 'echo bye; exit 0' TERM; echo started; while :; do sleep 0.1; done"]
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)) (stdout|stderr) ([PF]) (.*)$")


def run_sync(pods, cid, cmd, exec_timeout=0):
    return pods.cri.exec_sync(cid, cmd, exec_timeout)


def shim_kind(pid: int) -> str:
    argv = " ".join(_cmdline(pid) or [])
    if "containerd-shim-runc-v2" in argv:
        return "runc"
    if "pyshim" in argv or "shim.forkserver" in argv or "shim.main" in argv:
        return "pyshim"
    return argv


def only_shim(pods) -> int:
    """The one shim process of the CRI containerd (tests run one at a time)."""
    shims = pods.c.shim_processes()
    assert len(shims) == 1, f"expected one shim, found {[(p, _cmdline(p)) for p in shims]}"
    assert shim_kind(shims[0]) == pods.handler, _cmdline(shims[0])
    return shims[0]


def parse_log(text: str) -> dict[str, list[tuple[str, str]]]:
    """{stream: [(P|F, content), ...]} of a CRI log file; every line must be in the format."""
    out: dict[str, list[tuple[str, str]]] = {"stdout": [], "stderr": []}
    for line in text.split("\n")[:-1]:
        m = LOG_LINE.match(line)
        assert m, f"not a CRI log line: {line[:200]!r}"
        out[m.group(4)].append((m.group(5), m.group(6)))
    assert text.endswith("\n") or text == ""
    return out


# ---- sandboxes -------------------------------------------------------------------------------
def test_host_network_pod(pods):
    pod = pods.run(host_network=True)
    st = pod.status().status
    assert st.state == SANDBOX_READY
    assert st.linux.namespaces.options.network == NODE
    assert st.network.ip == ""
    info = pod.info()
    assert info["runtimeHandler"] == pods.handler
    assert only_shim(pods) == ppid_of(pod.pid)
    cid = pod.container("app", STOPPABLE)
    r = run_sync(pods, cid, ["readlink", "/proc/self/ns/net"])
    assert (r.exit_code, r.stdout.decode().strip()) == (0, os.readlink("/proc/self/ns/net"))
    # ipc is the pod's own (joined from the sandbox by path), not the host's
    app = pod.container_pid(cid)
    assert proc_ns(app, "ipc") == proc_ns(pod.pid, "ipc") != proc_ns("self", "ipc")
    assert proc_ns(app, "pid") != proc_ns(pod.pid, "pid")  # no shareProcessNamespace


def test_pod_network_pod(pods):
    pod = pods.run(host_network=False, hostname="web-0")
    st = pod.status().status
    assert st.state == SANDBOX_READY
    assert st.linux.namespaces.options.network == POD
    ip = st.network.ip
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(pods.c.pod_subnet), ip
    assert os.path.exists(pods.netns[pod.id])
    cid = pod.container("app", STOPPABLE)
    r = run_sync(pods, cid, ["ip", "-4", "-o", "addr", "show", "eth0"])
    assert r.exit_code == 0 and f"inet {ip}/" in r.stdout.decode(), r
    r = run_sync(pods, cid, ["hostname"])
    assert r.stdout == b"web-0\n"
    app = pod.container_pid(cid)
    for ns in ("net", "ipc", "uts"):
        assert proc_ns(app, ns) == proc_ns(pod.pid, ns) != proc_ns("self", ns), ns
    # The host reaches the pod (ptp's host route; the blackhole keeps the rest of the subnet in).
    ping = subprocess.run(["/bin/busybox", "ping", "-c", "1", "-W", "5", ip], capture_output=True,
                          text=True, timeout=30)
    assert ping.returncode == 0, ping.stdout + ping.stderr


# ---- containers ------------------------------------------------------------------------------
def test_container_lifecycle(pods):
    pod = pods.run()
    cri = pods.cri
    cid = pod.create("app", STOPPABLE)
    st = cri.container_status(cid).status
    assert (st.state, st.metadata.name) == (CREATED, "app")
    assert st.log_path == pod.log_path("app")
    cri.start_container(cid)
    st = cri.wait_container_state(cid, RUNNING)
    assert st.started_at > 0 and st.finished_at == 0
    assert st.image.image and st.image_ref
    assert [c.id for c in cri.list_containers(pod.id)] == [cid]
    pod.wait_log("app", "started")
    t0 = time.monotonic()
    cri.stop_container(cid, grace=10)
    assert time.monotonic() - t0 < 5, "a container that exits on SIGTERM took the whole grace"
    st = cri.container_status(cid).status
    assert (st.state, st.exit_code, st.reason) == (EXITED, 0, "Completed")
    assert st.finished_at >= st.started_at
    logs = parse_log(pod.log("app"))
    assert logs["stdout"] == [("F", "started"), ("F", "bye")]
    cri.remove_container(cid)
    assert code_of(cri.container_status, cid) == grpc.StatusCode.NOT_FOUND
    assert cri.list_containers(pod.id) == []


def test_exec_sync(pods):
    pod = pods.run()
    cid = pod.container("app", STOPPABLE)
    r = run_sync(pods, cid, ["sh", "-c", "echo out; echo err >&2; echo out2; exit 3"])
    assert (r.stdout, r.stderr, r.exit_code) == (b"out\nout2\n", b"err\n", 3)
    r = run_sync(pods, cid, ["true"])
    assert (r.stdout, r.stderr, r.exit_code) == (b"", b"", 0)
    # the exec runs in the container: its root, env, cwd
    r = run_sync(pods, cid, ["sh", "-c", "pwd; echo $PATH; cat /proc/1/cmdline | tr '\\0' ' '"])
    lines = r.stdout.decode().split("\n")
    assert lines[0] == "/" and "/bin" in lines[1] and lines[2].startswith("sh -c trap")
    big = run_sync(pods, cid, ["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x"])
    assert big.stdout == b"x" * 300000
    # A command that is not there fails the call (as kubelet's exec probes see it), naming the
    # binary as runc does. The status code differs: runc's shim says Unknown (runc's error is
    # untyped), pyshim FailedPrecondition (shim/errors.py maps the engine's typed setup error).
    with pytest.raises(grpc.RpcError) as e:
        run_sync(pods, cid, ["/no/such/binary"])
    assert e.value.code() in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.FAILED_PRECONDITION)
    assert 'exec: "/no/such/binary": stat /no/such/binary: no such file or directory' in \
        e.value.details(), e.value.details()
    t0 = time.monotonic()
    try:
        r = run_sync(pods, cid, ["sleep", "30"], exec_timeout=1)
        timed = ("exit", r.exit_code)
    except grpc.RpcError as e:
        timed = ("error", e.code())
    assert time.monotonic() - t0 < 15
    assert timed[0] == "error" or timed[1] != 0, timed
    # the container is still fine afterwards
    assert pods.cri.container_status(cid).status.state == RUNNING
    assert run_sync(pods, cid, ["echo", "ok"]).stdout == b"ok\n"


def test_logs_cri_format(pods):
    pod = pods.run()
    script = ("echo out1; echo err1 >&2; printf part; sleep 0.3; printf 'ial\\n'; "
              "echo err2 >&2; head -c 20000 /dev/zero | tr '\\0' x; echo; printf tail-no-newline")
    cid = pod.container("app", ["sh", "-c", script], wait_running=False)
    st = pods.cri.wait_container_state(cid, EXITED, timeout=30)
    assert (st.exit_code, st.reason) == (0, "Completed")
    # The log is complete once the container has exited (containerd drains the FIFOs first).
    deadline = time.monotonic() + 10
    while "tail-no-newline" not in pod.log("app") and time.monotonic() < deadline:
        time.sleep(0.05)
    logs = parse_log(pod.log("app"))
    assert logs["stderr"] == [("F", "err1"), ("F", "err2")]
    assert logs["stdout"] == [("F", "out1"), ("F", "partial"), ("P", "x" * 16384),
                              ("F", "x" * (20000 - 16384)), ("P", "tail-no-newline")]


def test_stop_graceful_then_sigkill(pods):
    pod = pods.run()
    cri = pods.cri
    graceful = pod.container("graceful", ["sh", "-c", "trap 'echo term; exit 7' TERM; "
                                          "echo up; while :; do sleep 0.1; done"])
    stubborn = pod.container("stubborn", ["sh", "-c", "trap '' TERM; echo up; "
                                          "while :; do sleep 0.1; done"])
    pod.wait_log("graceful", "up")
    pod.wait_log("stubborn", "up")
    t0 = time.monotonic()
    cri.stop_container(graceful, grace=10)
    assert time.monotonic() - t0 < 5
    st = cri.container_status(graceful).status
    assert (st.state, st.exit_code, st.reason) == (EXITED, 7, "Error")
    assert [c for _, c in parse_log(pod.log("graceful"))["stdout"]] == ["up", "term"]
    t0 = time.monotonic()
    cri.stop_container(stubborn, grace=2)
    took = time.monotonic() - t0
    assert 1.9 <= took < 10, f"StopContainer(timeout=2) of a container ignoring SIGTERM took {took:.1f}s"
    st = cri.container_status(stubborn).status
    assert (st.state, st.exit_code, st.reason) == (EXITED, 137, "Error")
    cri.stop_container(stubborn, grace=2)  # again: nothing to do, no error
    for cid in (graceful, stubborn):
        cri.remove_container(cid)


def test_pod_stop_and_remove(pods):
    pod = pods.run(host_network=False)
    cri = pods.cri
    cid = pod.container("app", STOPPABLE)
    netns = pods.netns[pod.id]
    cri.stop_pod(pod.id)
    assert pod.status().status.state == SANDBOX_NOTREADY
    st = cri.container_status(cid).status
    assert st.state == EXITED
    assert not os.path.exists(netns), "StopPodSandbox left the network namespace"
    assert pods.c.shim_processes() == [] or _wait_no_shims(pods)
    cri.stop_pod(pod.id)  # idempotent
    cri.remove_pod(pod.id)
    pods.removed.add(pod.id)
    assert code_of(cri.pod_status, pod.id) == grpc.StatusCode.NOT_FOUND
    assert code_of(cri.container_status, cid) == grpc.StatusCode.NOT_FOUND
    assert code_of(cri.remove_pod, pod.id) == grpc.StatusCode.OK  # removing twice is fine


def _wait_no_shims(pods, timeout=10) -> bool:
    deadline = time.monotonic() + timeout
    while pods.c.shim_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not pods.c.shim_processes()


# ---- pods: one shim, shared namespaces ----------------------------------------------------------
def test_pod_containers_share_one_shim(pods):
    pod = pods.run()
    a = pod.container("a", STOPPABLE)
    b = pod.container("b", STOPPABLE)
    shim = only_shim(pods)
    for pid in (pod.pid, pod.container_pid(a), pod.container_pid(b)):
        assert ppid_of(pid) == shim, f"{pid} ({_cmdline(pid)}) is not a child of the pod's shim"
    # containerd dials one shim socket for all three (each bundle's `address`)
    addresses = set()
    for cid in (pod.id, a, b):
        with open(os.path.join(pods.c.bundle_path(cid, CRI_NAMESPACE), "address")) as f:
            addresses.add(f.read().strip())
    assert len(addresses) == 1, addresses
    if pods.handler == "pyshim":  # the daemon is recorded where it was started: the sandbox
        with open(os.path.join(pods.c.bundle_path(pod.id, CRI_NAMESPACE), "shim.pid")) as f:
            assert int(f.read()) == shim
    # a second pod gets a shim of its own (per-pod grouping, the default)
    other = pods.run()
    pod.container("c", STOPPABLE)  # the first pod's shim still takes new containers
    shims = pods.c.shim_processes()
    assert len(shims) == 2 and ppid_of(other.pid) in shims and ppid_of(other.pid) != shim


def test_share_process_namespace(pods):
    shared = pods.run(share_pid=True)
    a = shared.container("a", STOPPABLE)
    b = shared.container("b", ["sleep", "600"])
    assert proc_ns(shared.container_pid(a), "pid") == proc_ns(shared.pid, "pid")
    assert proc_ns(shared.container_pid(b), "pid") == proc_ns(shared.pid, "pid")
    r = run_sync(pods, a, ["cat", "/proc/1/cmdline"])
    assert r.stdout == b"/pause\0"
    r = run_sync(pods, a, ["ps", "-o", "args"])
    assert "sleep 600" in r.stdout.decode() and "/pause" in r.stdout.decode()
    # without shareProcessNamespace each container is pid 1 of its own namespace
    alone = pods.run()
    c = alone.container("c", STOPPABLE)
    r = run_sync(pods, c, ["cat", "/proc/1/cmdline"])
    assert r.stdout.split(b"\0")[:2] == [b"sh", b"-c"]
    assert proc_ns(alone.container_pid(c), "pid") != proc_ns(alone.pid, "pid")
    # StopContainer of a non-pid-1 process in the shared namespace: SIGTERM's default action
    t0 = time.monotonic()
    pods.cri.stop_container(b, grace=10)
    assert time.monotonic() - t0 < 5
    st = pods.cri.container_status(b).status
    assert (st.state, st.exit_code) == (EXITED, 143)


def test_oom_killed(pods):
    pod = pods.run()
    # The container's init itself grows past the limit: busybox tail keeps an unterminated line.
    cid = pod.container("hog", ["sh", "-c", "exec tail /dev/zero"], memory_limit=32 << 20,
                        wait_running=False)
    st = pods.cri.wait_container_state(cid, EXITED, timeout=60)
    assert (st.exit_code, st.reason) == (137, "OOMKilled"), (st.exit_code, st.reason, st.message)
