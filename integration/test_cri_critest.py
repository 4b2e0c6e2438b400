"""critest (kubernetes-sigs/cri-tools, pkg/validate) ported to this suite: the specs about the
runtime behind a RuntimeClass handler, each case with handlers `runc` and `pyshim` side by side
(the `handler` fixture; `pods`, integration/cri_pods.py, removes and leak-checks every pod).

Each test names the critest spec(s) it mirrors and asserts what critest asserts, with critest's
pod and container configurations: a default critest sandbox has every namespace mode POD (pod
network through CNI, and the containers join the sandbox's pid namespace, since an unset
NamespaceOption is POD), no hostname; critest's "default" container runs `top`, its "pause"
container `sh -c top`. critest's ExecSync fails on a non-zero exit code, so "err occurred" below
means an RPC error or a non-zero exit code.

Where critest needs an image from a registry (nginx, httpd, nonewprivs), a stand-in runs in the
local busybox image with the same observable: busybox httpd serves the page, a static setuid
program built here with gcc prints its effective uid. The image's busybox has no ipcs/pgrep:
/proc/sysvipc/shm and ps stand in. Specs answered by containerd alone (image service, runtime
info, not-found idempotence) or impossible on this host (host port mapping, AppArmor, SELinux,
cgroup v2, features containerd 1.6 does not advertise) have no test here. Where pyshim differs
from runc, the pyshim case is a strict xfail naming the cause (parametrize `handler` directly).
"""
from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import time

import grpc
import pytest

from integration.cri import (CREATED, EXITED, NODE, POD, RUNNING, SANDBOX_NOTREADY, SANDBOX_READY,
                            cri)
from integration.cri_stream import STDOUT, StreamSession
from integration.test_cri_pods import parse_log

EXEC_TIMEOUT = 30  # critest's defaultExecSyncTimeout
TOP = ["top"]  # critest's DefaultContainerCommand
PAUSE = ["sh", "-c", "top"]  # critest's pauseCmd / DefaultPauseCommand
DEFAULT_LOG = "hello World"  # critest's defaultLog
WWW = "<html><body>critest stand-in</body></html>"


# ---- building what critest builds -----------------------------------------------------------
@contextlib.contextmanager
def _mutating(client, method: str, mutate):
    """Let `mutate` edit the config message a CriClient call is about to send (the first
    message argument: PodSandboxConfig for run_pod, ContainerConfig for create_container)."""
    orig = getattr(client, method)

    def call(*args, **kwargs):
        for a in args:
            if isinstance(a, (cri.PodSandboxConfig, cri.ContainerConfig)):
                mutate(a)
                break
        return orig(*args, **kwargs)

    setattr(client, method, call)
    try:
        yield
    finally:
        del client.__dict__[method]


def critest_pod(pods, *, network=POD, pid=POD, ipc=POD, privileged=False, tweak=None, **kw):
    """A sandbox as critest makes it: namespace modes POD unless told (pod network), no
    hostname; `tweak(config)` edits the PodSandboxConfig before it is sent."""
    def mutate(config):
        no = config.linux.security_context.namespace_options
        no.network, no.pid, no.ipc = network, pid, ipc
        if tweak:
            tweak(config)
    kw.setdefault("hostname", "")
    with _mutating(pods.cri, "run_pod", mutate):
        return pods.run(host_network=network == NODE, privileged=privileged, **kw)


def create(pod, name, command, *, tweak=None, start=False, wait_running=True, **kw) -> str:
    """pod.create (or pod.container when start) with `tweak(config)` editing the
    ContainerConfig (mounts, stdin_once, resources...) before it is sent."""
    def do():
        if start:
            return pod.container(name, command, wait_running=wait_running, **kw)
        return pod.create(name, command, **kw)
    if tweak is None:
        return do()
    with _mutating(pod.cri, "create_container", tweak):
        return do()


def sc(**kw) -> cri.LinuxContainerSecurityContext:
    return cri.LinuxContainerSecurityContext(**kw)


def mounts(*ms: cri.Mount):
    def tweak(cfg):
        cfg.mounts.extend(ms)
    return tweak


def list_containers(pods, **flt) -> list[str]:
    return [c.id for c in pods.cri.runtime.ListContainers(
        cri.ListContainersRequest(filter=cri.ContainerFilter(**flt)), timeout=30).containers]


def list_pods(pods, **flt) -> list[str]:
    return [p.id for p in pods.cri.runtime.ListPodSandbox(
        cri.ListPodSandboxRequest(filter=cri.PodSandboxFilter(**flt)), timeout=30).items]


def exec_ok(pods, cid, cmd) -> str:
    """critest's execSyncContainer: no error, exit code 0, empty stderr; the stdout."""
    r = pods.cri.exec_sync(cid, cmd, EXEC_TIMEOUT)
    assert (r.exit_code, r.stderr) == (0, b""), (cmd, r)
    return r.stdout.decode()


def exec_result(pods, cid, cmd, exec_timeout=EXEC_TIMEOUT):
    """(failed, stdout, stderr) as critest's client sees it: failed on an RPC error or a
    non-zero exit code."""
    try:
        r = pods.cri.exec_sync(cid, cmd, exec_timeout)
    except grpc.RpcError as e:
        return True, b"", e.details().encode()
    return r.exit_code != 0, r.stdout, r.stderr


def wait_exited(pods, cid, timeout=60) -> cri.ContainerStatus:
    return pods.cri.wait_container_state(cid, EXITED, timeout=timeout)


def log_has(pod, name, stream, line, timeout=10) -> None:
    """critest's verifyLogContents: a CRI log line of `stream` whose content is `line`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            logs = parse_log(pod.log(name))
        except FileNotFoundError:
            logs = {"stdout": [], "stderr": []}
        if line in [c for _, c in logs[stream]]:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{line!r} not on {stream} of {pod.log_path(name)}: {logs}")
        time.sleep(0.05)


def host_run(*argv, check=True) -> subprocess.CompletedProcess:
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check:
        assert r.returncode == 0, (argv, r.stdout, r.stderr)
    return r


def lazy_umount(*paths) -> None:
    for p in paths:
        subprocess.run(["umount", "-l", str(p)], capture_output=True, timeout=30)


def web_server(port: int = 80) -> list[str]:
    """The web server container's command (stand-in for critest's nginx/httpd images)."""
    return ["sh", "-c", f"mkdir -p /www && echo '{WWW}' >/www/index.html && echo httpd serving; "
                        f"exec httpd -f -v -p {port} -h /www"]


def http_get(host: str, port: int, timeout: float = 20) -> tuple[int, bytes]:
    """critest's checkMainPage: GET / until it answers (no proxy); (status, body)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = http.client.HTTPConnection(host, port, timeout=5)
            conn.request("GET", "/")
            resp = conn.getresponse()
            out = resp.status, resp.read()
            conn.close()
            return out
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- Container: basic operations (container.go) ------------------------------------------------
def test_container_basic_operations(pods):
    """critest Container "runtime should support basic operations on container": creating
    container, starting container, stopping container, removing created container, removing
    running container, removing stopped container, execSync [Conformance]; with the state
    and label filters of Streaming List (which critest skips on containerd) over the unary
    ListContainers."""
    pod = critest_pod(pods)
    c = pods.cri
    # creating: listed by an Id filter
    a = pod.create("container-for-create", TOP, labels={"critest": "basic"})
    assert list_containers(pods, id=a) == [a]
    assert c.container_status(a).status.state == CREATED
    # starting
    c.start_container(a)
    c.wait_container_state(a, RUNNING, timeout=60)
    # (the filters of critest's Streaming List specs, which it skips on containerd)
    running = cri.ContainerStateValue(state=RUNNING)
    assert a in list_containers(pods, pod_sandbox_id=pod.id, state=running)
    assert a not in list_containers(pods, state=cri.ContainerStateValue(state=CREATED))
    assert list_containers(pods, label_selector={"critest": "basic"}) == [a]
    assert list_containers(pods, label_selector={"critest": "other"}) == []
    # execSync
    assert exec_ok(pods, a, ["echo", "-n", "hello"]) == "hello"
    # stopping (critest fails the stop if it takes its whole 60 s timeout)
    t0 = time.monotonic()
    c.stop_container(a, grace=60)
    assert time.monotonic() - t0 < 60
    assert c.container_status(a).status.state == EXITED
    # removing a created, a running and a stopped container
    created = pod.create("container-for-remove-created", PAUSE)
    running = pod.container("container-for-remove-running", PAUSE)
    stopped = pod.container("container-for-remove-stopped", PAUSE)
    c.stop_container(stopped, grace=60)
    wait_exited(pods, stopped)
    for cid in (created, running, stopped, a):
        c.remove_container(cid)
        assert list_containers(pods, id=cid) == [], cid


def test_exec_sync_timeout(pods):
    """critest Container "runtime should support execSync with timeout [Conformance]": an
    ExecSync of `sleep 4321` with a 1 s timeout fails, and its process is gone right after
    (critest: `pgrep sleep || true` prints nothing; the image has no pgrep, ps stands in)."""
    pod = critest_pod(pods)
    cid = pod.container("container-for-execSync-timeout", TOP)
    t0 = time.monotonic()
    failed, _, _ = exec_result(pods, cid, ["sleep", "4321"], exec_timeout=1)
    assert failed, "execSync should time out"
    assert time.monotonic() - t0 < EXEC_TIMEOUT
    out = exec_ok(pods, cid, ["sh", "-c", "ps -o comm | grep -x sleep || true"])
    assert out.strip() == "", f"the timed-out exec's process is still there: {out!r}"


def test_container_stats(pods):
    """critest Container: "runtime should support listing container stats", "... listing stats
    for started containers", "... when filter is nil", "... for three created containers when
    filter is nil.", "... for containers filtered by labels" [Conformance]."""
    pod = critest_pod(pods)
    c = pods.cri
    ids = [pod.create(f"container-for-stats-{i}", TOP) for i in range(3)]
    labelled = pod.create("container-for-stats-with-labels", TOP, labels={"foo": "bar"})
    for cid in ids + [labelled]:
        c.start_container(cid)
    st = c.container_stats(ids[0])
    assert st.attributes.id == ids[0]
    assert "container-for-stats-" in st.attributes.metadata.name
    assert st.cpu.timestamp != 0 and st.memory.timestamp != 0, st

    def listed(flt):
        return {s.attributes.id for s in c.runtime.ListContainerStats(
            cri.ListContainerStatsRequest(filter=flt), timeout=30).stats}
    assert ids[0] in listed(cri.ContainerStatsFilter(id=ids[0]))
    assert set(ids + [labelled]) <= listed(None)
    assert labelled in listed(cri.ContainerStatsFilter(label_selector={"foo": "bar"}))
    assert labelled not in listed(cri.ContainerStatsFilter(label_selector={"foo": "baz"}))


# ---- Container: volumes and logs (container.go) ------------------------------------------------
@pytest.mark.parametrize("symlink", [False, True], ids=["dir", "symlink"])
def test_container_with_volume(pods, tmp_path, symlink):
    """critest Container "runtime should support starting container with volume" and "... with
    volume when host path is a symlink" [Conformance]: a host dir (holding a flag file) mounted
    at the same path is listed in the container."""
    pod = critest_pod(pods)
    host = tmp_path / f"test{pod.id[:12]}"
    host.mkdir()
    (host / "testVolume.file").touch()
    path = str(host)
    if symlink:
        path = str(host) + "-symlink"
        os.symlink(host, path)
    cid = create(pod, "container-with-volume", PAUSE, start=True, tweak=mounts(
        cri.Mount(host_path=path, container_path=path, selinux_relabel=True)))
    assert exec_ok(pods, cid, ["ls", "-A", path]) != ""


def test_container_log_and_reopen(pods):
    """critest Container "runtime should support starting container with log" and "runtime
    should support reopening container log" [Conformance]. (critest writes a line a second and
    watches the renamed log for 5 s; here a line every 0.2 s, watched for 1 s.)"""
    pod = critest_pod(pods)
    c = pods.cri
    cid = pod.container("container-with-log", ["echo", DEFAULT_LOG], wait_running=False)
    wait_exited(pods, cid)
    log_has(pod, "container-with-log", "stdout", DEFAULT_LOG)

    name = "container-reopen-log"
    cid = pod.container(name, ["sh", "-c", f"while true; do echo {DEFAULT_LOG}; sleep 0.2; done"])
    log_has(pod, name, "stdout", DEFAULT_LOG)
    path = pod.log_path(name)
    os.rename(path, path + ".new")
    c.runtime.ReopenContainerLog(cri.ReopenContainerLogRequest(container_id=cid), timeout=30)
    assert os.path.exists(path), "ReopenContainerLog did not create a new log file"
    log_has(pod, name, "stdout", DEFAULT_LOG)
    with open(path + ".new") as f:
        old = f.read()
    time.sleep(1)
    with open(path + ".new") as f:
        assert f.read() == old, "the renamed log is still written to"


# ---- Container Mount Propagation, OOM, Mount Readonly (container_linux.go) ----------------------
PROPAGATIONS = {"rprivate": cri.PROPAGATION_PRIVATE, "rshared": cri.PROPAGATION_BIDIRECTIONAL,
                "rslave": cri.PROPAGATION_HOST_TO_CONTAINER}


@pytest.mark.parametrize("handler,mode", [
    pytest.param(h, m, id=f"{h}-{m}") for h in ("runc", "pyshim") for m in PROPAGATIONS])
def test_mount_propagation(pods, tmp_path, mode):
    """critest Container Mount Propagation: "mount with 'rprivate' should not support
    propagation", "mount with 'rshared' should support propagation from host to container and
    vice versa", "mount with 'rslave' should support propagation from host to container"."""
    prop = PROPAGATIONS[mode]
    pod = critest_pod(pods, privileged=True)
    mnt = tmp_path / "mnt"
    pmnt = mnt / "propagationMnt"
    src = tmp_path / "propagationSrcDir"
    pmnt.mkdir(parents=True)
    src.mkdir()
    (src / "flagFile").touch()
    cmnt = mnt / "containerMntPoint"
    try:
        host_run("mount", "--rbind", str(mnt), str(mnt))
        host_run("mount", "--make-rprivate" if prop == cri.PROPAGATION_PRIVATE
                 else "--make-rshared", str(mnt))
        cid = create(pod, "mount-propagation-test", PAUSE, security_context=sc(privileged=True),
                     tweak=mounts(cri.Mount(host_path=str(mnt), container_path=str(mnt),
                                            propagation=prop)))
        ms = pods.cri.container_status(cid, verbose=True).status.mounts
        assert len(ms) == 1, ms
        assert (ms[0].container_path, ms[0].host_path, ms[0].readonly, ms[0].selinux_relabel,
                ms[0].propagation) == (str(mnt), str(mnt), False, False, prop), ms[0]
        pods.cri.start_container(cid)
        pods.cri.wait_container_state(cid, RUNNING, timeout=60)
        host_run("mount", "--rbind", str(src), str(pmnt))
        seen = exec_ok(pods, cid, ["ls", "-A", str(pmnt)])
        if prop == cri.PROPAGATION_PRIVATE:
            assert seen == "", "a host mount reached an rprivate mount"
        else:
            assert seen != "", "a host mount did not reach the container"
        exec_ok(pods, cid, ["sh", "-c", f"mkdir -p {cmnt}"])
        exec_ok(pods, cid, ["sh", "-c", f"mount --bind /etc {cmnt}"])
        back = os.listdir(cmnt)
        if prop == cri.PROPAGATION_BIDIRECTIONAL:
            assert back, "a container mount did not reach the host through rshared"
        else:
            assert back == [], f"a container mount reached the host through {mode}"
    finally:
        lazy_umount(cmnt, pmnt, mnt)


def test_oom_killed_reason(pods):
    """critest Container OOM "should terminate with exitCode 137 and reason OOMKilled": memory
    and memory+swap limits of 15 MiB, `dd bs=20M`."""
    pod = critest_pod(pods, privileged=True)

    def limits(cfg):
        cfg.linux.resources.memory_limit_in_bytes = 15 << 20
        cfg.linux.resources.memory_swap_limit_in_bytes = 15 << 20
    cid = create(pod, "OOM-test", ["sh", "-c", "dd if=/dev/zero of=/dev/null bs=20M"],
                 tweak=limits)
    pods.cri.container_status(cid, verbose=True)
    pods.cri.start_container(cid)
    st = wait_exited(pods, cid)
    deadline = time.monotonic() + 10
    while st.reason != "OOMKilled" and time.monotonic() < deadline:
        time.sleep(0.1)
        st = pods.cri.container_status(cid).status
    assert (st.reason, st.exit_code) == ("OOMKilled", 137), (st.reason, st.exit_code, st.message)


def test_readonly_mount_not_recursive(pods, tmp_path):
    """critest Container Mount Readonly "should support non-recursive readonly mounts": a
    read-only mount of a host dir keeps a tmpfs mounted below it writable."""
    pod = critest_pod(pods, privileged=True)
    host = tmp_path / "rro"
    tmpfs = host / "tmpfs"
    tmpfs.mkdir(parents=True)
    try:
        host_run("mount", "-t", "tmpfs", "none", str(tmpfs))
        cid = create(pod, "test-mount", PAUSE, tweak=mounts(cri.Mount(
            host_path=str(host), container_path="/mnt", readonly=True, selinux_relabel=True)))
        assert len(pods.cri.container_status(cid, verbose=True).status.mounts) == 1
        pods.cri.start_container(cid)
        pods.cri.wait_container_state(cid, RUNNING, timeout=60)
        exec_ok(pods, cid, ["touch", "/mnt/tmpfs/file"])
        failed, _, err = exec_result(pods, cid, ["touch", "/mnt/file"])
        assert failed and b"Read-only file system" in err  # the mount itself is read-only
    finally:
        lazy_umount(tmpfs)


# ---- PodSandbox (pod.go, pod_linux.go, idempotence.go) ------------------------------------------
def test_pod_sandbox_basic_operations(pods):
    """critest PodSandbox "runtime should support running PodSandbox", "... stopping
    PodSandbox", "... removing PodSandbox" [Conformance], and Idempotence "StopPodSandbox should
    not return an error if already stopped"; with the state and label filters of Streaming
    List (which critest skips on containerd) over the unary ListPodSandbox."""
    pod = critest_pod(pods, labels={"critest": "pod-basic"})
    c = pods.cri
    assert pod.status().status.state == SANDBOX_READY
    assert list_pods(pods, id=pod.id) == [pod.id]
    ready = cri.PodSandboxStateValue(state=SANDBOX_READY)
    assert pod.id in list_pods(pods, state=ready)
    assert list_pods(pods, label_selector={"critest": "pod-basic"}) == [pod.id]
    c.stop_pod(pod.id)
    assert pod.status().status.state == SANDBOX_NOTREADY
    assert pod.id not in list_pods(pods, state=ready)
    c.stop_pod(pod.id)
    assert pod.status().status.state == SANDBOX_NOTREADY
    c.remove_pod(pod.id)
    pods.removed.add(pod.id)
    assert list_pods(pods, id=pod.id) == []


@pytest.mark.parametrize("key,value", [("kernel.shm_rmid_forced", "1"),
                                       ("fs.mqueue.msg_max", "100")], ids=["safe", "unsafe"])
def test_sysctls(pods, key, value):
    """critest PodSandbox "should support safe sysctls" (kernel.shm_rmid_forced) and "should
    support unsafe sysctls" (fs.mqueue.msg_max)."""
    pod = critest_pod(pods, sysctls={key: value})
    cid = pod.container("container-sysctl", TOP)
    r = pods.cri.exec_sync(cid, ["cat", "/proc/sys/" + key.replace(".", "/")], EXEC_TIMEOUT)
    assert (r.exit_code, r.stdout.decode().strip()) == (0, value), r


def test_idempotent_container_stop_and_remove(pods):
    """critest Idempotence "StopContainer should not return an error if already stopped" (stop,
    remove, remove again), with a second StopContainer of the exited container."""
    pod = critest_pod(pods)
    c = pods.cri
    cid = pod.container("idempotence-container", PAUSE)
    c.stop_container(cid, grace=60)
    wait_exited(pods, cid)
    c.stop_container(cid, grace=60)
    c.remove_container(cid)
    c.remove_container(cid)
    assert list_containers(pods, id=cid) == []


# ---- Security Context: NamespaceOption (security_context_linux.go) ------------------------------
def test_host_pid(pods):
    """critest Security Context NamespaceOption "runtime should support HostPID": a process of
    one hostPID container (nginx there; top here, its pid read back from inside) is seen by
    `pidof` in another hostPID container."""
    pod = critest_pod(pods, pid=NODE)
    first = pod.container("nginx-container-hostpid",
                          ["sh", "-c", "echo $$ >/tmp/top.pid; exec top"])
    pid = exec_ok(pods, first, ["sh", "-c", "while [ ! -s /tmp/top.pid ]; do sleep 0.1; done; "
                                            "cat /tmp/top.pid"]).strip()
    second = pod.container("container-with-HostPID-test", ["sh", "-c", "sleep 1000"])
    pids = exec_ok(pods, second, ["pidof", "top", "||", "true"]).split()
    assert pid in pids, f"top's pid {pid} is not seen by a hostPID container: {pids}"


def test_pod_and_container_pid(pods):
    """critest Security Context NamespaceOption "runtime should support PodPID" (pid 1 is not
    the container's command: it shares the sandbox's pid namespace) and "runtime should
    support ContainerPID" (pid 1 is the container's command). critest runs nginx and looks for
    its "master process"; a shell script stands in."""
    cmd = ["sh", "-c", "echo up; exec sleep 1000"]
    shared = critest_pod(pods, pid=POD)
    cid = shared.container("nginx-container-process-namespace", cmd)
    assert "sleep" not in exec_ok(pods, cid, ["cat", "/proc/1/cmdline"])
    alone = critest_pod(pods, pid=cri.CONTAINER)
    cid = alone.container("nginx-container-pid", cmd)
    assert exec_ok(pods, cid, ["cat", "/proc/1/cmdline"]).split("\0")[:2] == ["sleep", "1000"]


@pytest.mark.parametrize("mode", ["NODE", "POD"], ids=["host-ipc", "pod-ipc"])
def test_host_ipc(pods, mode):
    """critest Security Context NamespaceOption "runtime should support HostIpc is true" / "is
    false": a SysV shared memory segment made on the host is (not) seen in the container
    (critest reads `ipcs -m`; the image has no ipcs, /proc/sysvipc/shm is what it reads)."""
    out = host_run("ipcmk", "-M", "1048576").stdout
    shmid = out.strip().rsplit(" ", 1)[-1]
    try:
        pod = critest_pod(pods, ipc=NODE if mode == "NODE" else POD)
        cid = pod.container("namespace-container", PAUSE)
        table = exec_ok(pods, cid, ["cat", "/proc/sysvipc/shm"])
        ids = [line.split()[1] for line in table.splitlines()[1:] if line.split()]
        if mode == "NODE":
            assert shmid in ids, (shmid, table)
        else:
            assert shmid not in ids, (shmid, table)
    finally:
        host_run("ipcrm", "-m", shmid, check=False)


@pytest.mark.parametrize("mode", ["NODE", "POD"], ids=["host-network", "pod-network"])
def test_host_network(pods, mode):
    """critest Security Context NamespaceOption "runtime should support HostNetwork is true" /
    "is false": a TCP port the host listens on is (not) in the container's `netstat -ln`."""
    with socket.socket() as srv:
        srv.bind(("0.0.0.0", 0))
        srv.listen()
        port = srv.getsockname()[1]
        pod = critest_pod(pods, network=NODE if mode == "NODE" else POD)
        name = "container-with-HostNetwork-test"
        cid = pod.container(name, ["sh", "-c", "netstat -ln"], wait_running=False)
        wait_exited(pods, cid)
        log_has(pod, name, "stdout", "Active Internet connections (only servers)")
        lines = [c for _, c in parse_log(pod.log(name))["stdout"]]
        found = any(f":{port} " in line + " " for line in lines)
        assert found == (mode == "NODE"), (port, lines)


# ---- Security Context: bucket (security_context_linux.go) --------------------------------------
def test_run_as_user_group_and_supplemental_groups(pods):
    """critest Security Context: "runtime should support SupplementalGroups", "... RunAsUser",
    "... RunAsUserName", "... RunAsGroup", "runtime should return error if RunAsGroup is set
    without RunAsUser"."""
    pod = critest_pod(pods)
    cid = pod.container("container-with-SupplementalGroups-test", PAUSE,
                        security_context=sc(supplemental_groups=[1234, 5678]))
    groups = exec_ok(pods, cid, ["id", "-G"]).split()
    assert "1234" in groups and "5678" in groups, groups
    cid = pod.container("container-with-RunAsUser-test", PAUSE,
                        security_context=sc(run_as_user=cri.Int64Value(value=1001)))
    assert exec_ok(pods, cid, ["id", "-u"]) == "1001\n"
    cid = pod.container("container-with-RunAsUserName-test", PAUSE,
                        security_context=sc(run_as_username="nobody"))
    assert exec_ok(pods, cid, ["id", "-nu"]) == "nobody\n"
    name = "container-with-RunAsGroup-test"
    cid = pod.container(name, ["sh", "-c", "echo $(id -u):$(id -g)"], wait_running=False,
                        security_context=sc(run_as_user=cri.Int64Value(value=1001),
                                            run_as_group=cri.Int64Value(value=1002)))
    wait_exited(pods, cid)
    log_has(pod, name, "stdout", "1001:1002")
    with pytest.raises(grpc.RpcError):
        pod.create("container-with-RunAsGroup-without-RunAsUser-test",
                   ["sh", "-c", "echo $(id -u):$(id -g)"],
                   security_context=sc(run_as_group=cri.Int64Value(value=1002)))


def test_readonly_rootfs(pods):
    """critest Security Context "runtime should support that ReadOnlyRootfs is false" and "...
    is true": `touch test.go` in the working dir `/` works, or fails with a read-only error."""
    pod = critest_pod(pods)
    cmd = ["sh", "-c", "touch test.go && [ -f test.go ] && echo 'Found'"]
    rw = pod.container("container-with-ReadOnlyRootfs-false-test", cmd, wait_running=False,
                       security_context=sc(readonly_rootfs=False))
    ro = pod.container("container-with-ReadOnlyRootfs-true-test", cmd, wait_running=False,
                       security_context=sc(readonly_rootfs=True))
    wait_exited(pods, rw)
    wait_exited(pods, ro)
    log_has(pod, "container-with-ReadOnlyRootfs-false-test", "stdout", "Found")
    log_has(pod, "container-with-ReadOnlyRootfs-true-test", "stderr",
            "touch: test.go: Read-only file system")


def brctl_works(pods, cid) -> bool:
    """critest's checkNetworkManagement: `brctl addbr foobar` (in the pod's own netns)."""
    failed, _, _ = exec_result(pods, cid, ["brctl", "addbr", "foobar"])
    return not failed


def cap_bnd(pods, cid) -> str:
    status = exec_ok(pods, cid, ["cat", "/proc/self/status"])
    return [line.split()[1] for line in status.splitlines() if line.startswith("CapBnd:")][0]


def test_privileged_and_capabilities(pods):
    """critest Security Context: "runtime should support Privileged is true", "... Privileged
    is false", "... adding capability", "... dropping capability", "... adding ALL
    capabilities", "... dropping ALL capabilities"."""
    priv_pod = critest_pod(pods, privileged=True)
    cid = priv_pod.container("container-with-isPrivileged-test", PAUSE,
                             security_context=sc(privileged=True))
    assert brctl_works(pods, cid), "a privileged container cannot manage its network"

    pod = critest_pod(pods)
    cid = pod.container("container-with-notPrivileged-test", PAUSE,
                        security_context=sc(privileged=False))
    assert not brctl_works(pods, cid), "an unprivileged container manages its network"
    cid = pod.container("container-with-added-capability-test", PAUSE, security_context=sc(
        capabilities=cri.Capability(add_capabilities=["NET_ADMIN"])))
    assert brctl_works(pods, cid), "NET_ADMIN was not added"
    cid = pod.container("container-with-notCapability-test", TOP)
    assert not brctl_works(pods, cid)
    cid = pod.container("container-with-dropped-capability-test", PAUSE, security_context=sc(
        capabilities=cri.Capability(drop_capabilities=["NET_RAW"])))
    failed, out, err = exec_result(pods, cid, ["ping", "127.0.0.1"], exec_timeout=10)
    assert failed and b"permission denied" in err, (out, err)
    cid = pod.container("container-with-added-all-capability-test", PAUSE, security_context=sc(
        capabilities=cri.Capability(add_capabilities=["ALL"])))
    assert cap_bnd(pods, cid) != "0000000000000000"
    cid = pod.container("container-with-dropped-all-capability-test", PAUSE, security_context=sc(
        capabilities=cri.Capability(drop_capabilities=["ALL"])))
    assert cap_bnd(pods, cid) == "0000000000000000"


def test_masked_and_readonly_paths(pods):
    """critest Security Context "runtime should support MaskedPaths" (/bin/ls masked: running
    it from sh fails with Permission denied) and "runtime should support ReadonlyPaths" (/tmp
    read-only: `touch /tmp/test` fails with Read-only file system), with critest's exact
    stderr."""
    pod = critest_pod(pods)
    cid = pod.container("container-with-maskedpaths", PAUSE,
                        security_context=sc(masked_paths=["/bin/ls"]))
    # (this busybox's sh runs `ls` as a builtin applet; a path makes it exec the masked file)
    failed, _, err = exec_result(pods, cid, ["/bin/sh", "-c", "/bin/ls"])
    assert failed and err == b"/bin/sh: /bin/ls: Permission denied\n", err
    cid = pod.container("container-with-readonlypaths", PAUSE,
                        security_context=sc(readonly_paths=["/tmp"]))
    failed, _, err = exec_result(pods, cid, ["touch", "/tmp/test"])
    assert failed and err == b"touch: /tmp/test: Read-only file system\n", err


# ---- Security Context: SeccompProfilePath, NoNewPrivs (security_context_linux.go) ---------------
BLOCK_HOSTNAME = ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": '
                  '[{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO"}]}')
BLOCK_CHMOD = ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": '
               '[{"names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO"}]}')


def localhost_profile(path) -> cri.SecurityProfile:
    return cri.SecurityProfile(profile_type=cri.SecurityProfile.Localhost, localhost_ref=str(path))


def seccomp_pod_and_container(pods, profile):
    """critest's seccompTestContainer: the profile on the sandbox and on a pause container."""
    def tweak(config):
        if profile is not None:
            config.linux.security_context.seccomp.CopyFrom(profile)
    pod = critest_pod(pods, tweak=tweak)
    return pod, pod.container("seccomp-container", PAUSE, security_context=sc(seccomp=profile)
                              if profile is not None else None)


def test_seccomp_localhost_profile(pods, tmp_path):
    """critest Security Context SeccompProfilePath "should support seccomp localhost profile on
    the container": a profile refusing chmod makes `chmod 400 /` fail, Operation not permitted."""
    path = tmp_path / "block-chmod.json"
    path.write_text(BLOCK_CHMOD)
    _, cid = seccomp_pod_and_container(pods, localhost_profile(path))
    failed, _, err = exec_result(pods, cid, ["chmod", "400", "/"])
    assert failed and b"Operation not permitted" in err, err


def test_seccomp_nil_profile_is_unconfined(pods):
    """critest Security Context SeccompProfilePath "should support nil profile, which is
    unconfined": no profile on the sandbox or the container, Seccomp: 0."""
    _, cid = seccomp_pod_and_container(pods, None)
    out = exec_ok(pods, cid, ["grep", "Seccomp:", "/proc/self/status"])
    assert out.split() == ["Seccomp:", "0"], out


def test_seccomp_sethostname(pods, tmp_path):
    """critest Security Context SeccompProfilePath "runtime should not block setting host name
    with unconfined seccomp and SYS_ADMIN", "runtime should support an seccomp profile that
    blocks setting hostname with SYS_ADMIN", "runtime should ignore a seccomp profile that
    blocks setting hostname when privileged". (Pod network: the pods' own UTS namespaces.)"""
    path = tmp_path / "block-host-name.json"
    path.write_text(BLOCK_HOSTNAME)
    sys_admin = cri.Capability(add_capabilities=["SYS_ADMIN"])
    cmd = ["hostname", "ANewHostName"]
    pod = critest_pod(pods)
    cid = pod.container("unconfined-sys-admin", ["sleep", "60"], security_context=sc(
        capabilities=sys_admin,
        seccomp=cri.SecurityProfile(profile_type=cri.SecurityProfile.Unconfined)))
    assert not exec_result(pods, cid, cmd)[0], "sethostname blocked without a profile"
    cid = pod.container("block-hostname-sys-admin", ["sleep", "60"], security_context=sc(
        capabilities=sys_admin, seccomp=localhost_profile(path)))
    assert exec_result(pods, cid, cmd)[0], "the profile did not block sethostname"
    priv = critest_pod(pods, privileged=True)
    cid = priv.container("block-hostname-privileged", ["sleep", "60"], security_context=sc(
        privileged=True, seccomp=localhost_profile(path)))
    assert not exec_result(pods, cid, cmd)[0], "a privileged container kept the seccomp profile"


def test_seccomp_runtime_default_sethostname(pods):
    """critest Security Context SeccompProfilePath "should support seccomp default on the
    container" (RuntimeDefault: Seccomp: 2) and, from critest's older "docker/default" Context,
    "runtime should support setting hostname with docker/default seccomp profile and SYS_ADMIN"
    and "runtime should block sethostname with docker/default seccomp profile and no extra
    caps" (docker/default is RuntimeDefault in CRI v1)."""
    default = cri.SecurityProfile(profile_type=cri.SecurityProfile.RuntimeDefault)
    cmd = ["hostname", "ANewHostName"]
    pod = critest_pod(pods)
    cid = pod.container("dockerdefault-sys-admin", ["sleep", "60"], security_context=sc(
        capabilities=cri.Capability(add_capabilities=["SYS_ADMIN"]), seccomp=default))
    out = exec_ok(pods, cid, ["grep", "Seccomp:", "/proc/self/status"])
    assert out.split() == ["Seccomp:", "2"], out
    assert not exec_result(pods, cid, cmd)[0], "RuntimeDefault blocked sethostname with SYS_ADMIN"
    cid = pod.container("dockerdefault-no-caps", ["sleep", "60"], security_context=sc(
        seccomp=default))
    assert exec_result(pods, cid, cmd)[0], "sethostname worked without SYS_ADMIN"


SETUID_SOURCE = r"""
#include <stdio.h>
#include <unistd.h>
int main(void) { printf("Effective uid: %d\n", (int)geteuid()); return 0; }
"""


@pytest.fixture(scope="module")
def setuid_dir(tmp_path_factory):
    """A dir holding `euid`, a static setuid-root program printing its effective uid (what
    critest's nonewprivs image runs)."""
    d = tmp_path_factory.mktemp("nnp")
    (d / "euid.c").write_text(SETUID_SOURCE)
    host_run("gcc", "-static", "-O", "-o", str(d / "euid"), str(d / "euid.c"))
    os.chown(d / "euid", 0, 0)
    os.chmod(d / "euid", 0o4755)
    os.chmod(d, 0o755)
    return str(d)


@pytest.mark.parametrize("nnp", [True, False], ids=["true", "false"])
def test_no_new_privs(pods, setuid_dir, nnp):
    """critest Security Context NoNewPrivs "should not allow privilege escalation when true" /
    "should allow privilege escalation when false": a setuid-root program run as uid 1000
    gets effective uid 1000 with no_new_privs, 0 without."""
    pod = critest_pod(pods)
    name = f"alpine-nnp-{str(nnp).lower()}"
    cid = create(pod, name, ["/nnp/euid"], start=True, wait_running=False,
                 security_context=sc(no_new_privs=nnp, run_as_user=cri.Int64Value(value=1000)),
                 tweak=mounts(cri.Mount(host_path=setuid_dir, container_path="/nnp",
                                        readonly=True)))
    wait_exited(pods, cid)
    log_has(pod, name, "stdout", f"Effective uid: {1000 if nnp else 0}")


# ---- Streaming (streaming.go, streaming_linux.go) -----------------------------------------------
@pytest.mark.parametrize("tty", [False, True], ids=["tty-false-stdin-false", "tty-true-stdin-true"])
def test_exec_streaming(pods, tty):
    """critest Streaming "runtime should support exec with tty=false and stdin=false" (stdout is
    exactly "hello") and "... with tty=true and stdin=true" (stdout contains "hello"), stderr
    empty, both [Conformance]."""
    pod = critest_pod(pods)
    cid = pod.container("container-for-exec-test", TOP)
    url = pods.cri.runtime.Exec(cri.ExecRequest(
        container_id=cid, cmd=["echo", "-n", "hello"], stdin=tty, tty=tty, stdout=True,
        stderr=not tty), timeout=30).url
    with StreamSession(url) as s:
        r = s.collect(20)
    if tty:
        assert b"hello" in r.stdout, r
    else:
        assert r.stdout == b"hello", r
    assert (r.stderr, r.exit_code) == (b"", 0), r


def test_attach(pods):
    """critest Streaming "runtime should support attach [Conformance]": /bin/sh with stdin and
    stdin_once, no tty; once its output is quiet, `echo -n hello` on stdin gives exactly
    "hello" on stdout and nothing on stderr."""
    pod = critest_pod(pods)

    def stdin_once(cfg):
        cfg.stdin_once = True
    cid = create(pod, "container-for-attach-test", ["/bin/sh"], start=True, stdin=True,
                 tweak=stdin_once)
    url = pods.cri.runtime.Attach(cri.AttachRequest(
        container_id=cid, stdin=True, stdout=True, stderr=True, tty=False), timeout=30).url
    with StreamSession(url) as s:
        quiet(s, 1)  # the container says nothing without input
        assert (s.result.stdout, s.result.stderr) == (b"", b""), s.result
        s.send_stdin(b"echo -n hello\n")
        s.read_until(STDOUT, b"hello", 20)
        quiet(s, 1)  # and nothing more (critest watches 3 s)
        r = s.result
    assert (r.stdout, r.stderr) == (b"hello", b""), r


def quiet(s: StreamSession, seconds: float) -> None:
    """Read (and record) whatever comes in the next `seconds`."""
    deadline = time.monotonic() + seconds
    with contextlib.suppress(TimeoutError):
        while s.read_message(deadline) is not None:
            pass


def portforward_get(pods, pod_id: str, port: int) -> bytes:
    """PortForward through the streaming server over WebSocket (the port in the request and in
    the URL's query; one data and one error channel, each opened with the port in 2
    little-endian bytes): GET / and the raw reply."""
    url = pods.cri.runtime.PortForward(
        cri.PortForwardRequest(pod_sandbox_id=pod_id, port=[port]), timeout=30).url
    data, errors = b"", b""
    with StreamSession(f"{url}?port={port}") as s:
        deadline = time.monotonic() + 20
        heads = {}
        while len(heads) < 2:
            msg = s.read_message(deadline)
            assert msg is not None, "port forward closed before its channels opened"
            heads[msg[0]] = msg[1]
        assert heads == {0: port.to_bytes(2, "little"), 1: port.to_bytes(2, "little")}, heads
        s.send(0, b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        while True:
            msg = s.read_message(deadline)
            if msg is None:
                break
            if msg[0] == 0:
                data += msg[1]
            elif msg[0] == 1:
                errors += msg[1]
            if b"</html>" in data:
                break
    assert errors == b"", errors
    return data


def test_portforward_and_container_port(pods):
    """critest Streaming "runtime should support portforward [Conformance]", which first checks
    what Networking "runtime should support port mapping with only container port
    [Conformance]" checks: the web server answers on the pod IP, then through PortForward."""
    pod = critest_pod(pods, tweak=lambda c: c.port_mappings.append(
        cri.PortMapping(container_port=80)))
    pod.container("container-for-portforward-test", web_server(80))
    ip = pod.status().status.network.ip
    status, body = http_get(ip, 80)
    assert status == 200 and b"critest stand-in" in body
    reply = portforward_get(pods, pod.id, 80)
    assert reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n")[0], reply[:200]
    assert b"critest stand-in" in reply


def test_portforward_host_network(pods):
    """critest Streaming "runtime should support portforward in host network": a web server in
    a host-network pod answers on 127.0.0.1 and through PortForward."""
    port = free_port()
    pod = critest_pod(pods, network=NODE, tweak=lambda c: c.port_mappings.append(
        cri.PortMapping(container_port=port)))
    pod.container("container-for-host-net-portforward-test", web_server(port))
    status, _ = http_get("127.0.0.1", port)
    assert status == 200
    reply = portforward_get(pods, pod.id, port)
    assert b" 200 " in reply.split(b"\r\n")[0] and b"critest stand-in" in reply, reply[:200]


# ---- Networking (networking.go) and Multiple Containers (multi_container_linux.go) --------------
def test_dns_config(pods):
    """critest Networking "runtime should support DNS config [Conformance]": the pod's servers,
    searches and options are in the container's /etc/resolv.conf."""
    pod = critest_pod(pods, tweak=lambda c: c.dns_config.CopyFrom(cri.DNSConfig(
        servers=["10.10.10.10"], searches=["google.com"], options=["ndots:8"])))
    cid = pod.container("container-for-DNS-config-test", TOP)
    conf = exec_ok(pods, cid, ["cat", "/etc/resolv.conf"])
    for line in ("nameserver 10.10.10.10", "search google.com", "options ndots:8"):
        assert line in conf, conf


def test_set_hostname(pods):
    """critest Networking "runtime should support set hostname [Conformance]"."""
    pod = critest_pod(pods, hostname="test-hostname")
    cid = pod.container("container-for-hostname-test", TOP)
    assert exec_ok(pods, cid, ["hostname"]).strip().lower() == "test-hostname"


def test_multiple_containers(pods):
    """critest Multiple Containers [Conformance] "when running multiple containers in a pod":
    "should support network", "should support container log", "should support container exec"
    (a web server stand-in for the httpd image, and busybox)."""
    pod = critest_pod(pods, tweak=lambda c: c.port_mappings.append(
        cri.PortMapping(container_port=80)))
    httpd = pod.container("httpd", web_server(80))
    busybox = pod.container("busybox", ["sh", "-c", f"echo {DEFAULT_LOG}; sleep 1000"])
    status, _ = http_get(pod.status().status.network.ip, 80)
    assert status == 200
    for cid, text in ((httpd, "httpd"), (busybox, DEFAULT_LOG)):
        path = pods.cri.container_status(cid).status.log_path
        deadline = time.monotonic() + 10
        while True:
            with open(path) as f:
                if text in f.read():
                    break
            assert time.monotonic() < deadline, f"{text!r} not in {path}"
            time.sleep(0.05)
    assert exec_ok(pods, httpd, ["echo", "httpd"]) == "httpd\n"
    assert exec_ok(pods, busybox, ["echo", "busybox"]) == "busybox\n"
