"""More of what kubelet asks of a runtime through CRI, each case with handlers `runc` and `pyshim`
(see test_cri_pods.py): stats, resource updates, a container recreated in its pod after it
exited, and security contexts (users and groups, read-only root, capabilities, seccomp,
no_new_privs, masked and read-only paths)."""
from __future__ import annotations

import os
import time

import grpc
import pytest

from integration.cri import EXITED, RUNNING, cri
from integration.test_cri_pods import STOPPABLE, parse_log

CAP_BITS = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_KILL": 5, "CAP_SETGID": 6,
            "CAP_SETUID": 7, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13,
            "CAP_SYS_CHROOT": 18, "CAP_SYS_ADMIN": 21, "CAP_SYS_TIME": 25}


def status_field(pods, cid, name: str) -> str:
    r = pods.cri.exec_sync(cid, ["grep", f"^{name}:", "/proc/self/status"])
    assert r.exit_code == 0, r
    return r.stdout.decode().split(":", 1)[1].strip()


def cap_eff(pods, cid) -> set[str]:
    mask = int(status_field(pods, cid, "CapEff"), 16)
    return {n for n, b in CAP_BITS.items() if mask >> b & 1}


def sc(**kw) -> cri.LinuxContainerSecurityContext:
    return cri.LinuxContainerSecurityContext(**kw)


# ---- stats and updates -----------------------------------------------------------------------
def test_container_stats(pods):
    pod = pods.run()
    cid = pod.container("app", ["sh", "-c", "trap 'exit 0' TERM; x=$(head -c 4000000 /dev/zero | tr '\\0' a); "
                                "while :; do sleep 0.1; done"], memory_limit=64 << 20)
    time.sleep(0.5)
    st = pods.cri.container_stats(cid)
    assert st.attributes.id == cid and st.attributes.metadata.name == "app"
    assert st.memory.working_set_bytes.value > 0
    assert st.cpu.usage_core_nano_seconds.value > 0
    listed = {s.attributes.id: s for s in pods.cri.runtime.ListContainerStats(
        cri.ListContainerStatsRequest(filter=cri.ContainerStatsFilter(pod_sandbox_id=pod.id)),
        timeout=30).stats}
    assert set(listed) == {cid}
    assert listed[cid].memory.working_set_bytes.value > 0


def test_update_container_resources(pods):
    pod = pods.run()
    cid = pod.container("app", STOPPABLE, memory_limit=64 << 20)
    path = f"/sys/fs/cgroup/memory{pod.cgroup_parent}/{cid}/memory.limit_in_bytes"
    with open(path) as f:
        assert int(f.read()) == 64 << 20
    pods.cri.update_resources(cid, cri.LinuxContainerResources(
        memory_limit_in_bytes=96 << 20, cpu_shares=512, cpu_period=100000, cpu_quota=50000))
    with open(path) as f:
        assert int(f.read()) == 96 << 20
    cpu = f"/sys/fs/cgroup/cpu{pod.cgroup_parent}/{cid}"
    with open(cpu + "/cpu.shares") as f:
        assert int(f.read()) == 512
    with open(cpu + "/cpu.cfs_quota_us") as f:
        assert int(f.read()) == 50000
    # what the container reports back
    res = pods.cri.container_status(cid).status.resources.linux
    assert res.memory_limit_in_bytes in (0, 96 << 20)


def test_container_recreated_in_its_pod(pods):
    """kubelet's restart: the exited container is removed and a new attempt created in the
    same sandbox, which goes on running (its shim, namespaces and pid stay)."""
    pod = pods.run(host_network=False)
    sandbox_pid = pod.pid
    first = pod.container("app", ["sh", "-c", "echo attempt $ATTEMPT; exit 3"],
                          env={"ATTEMPT": "0"}, wait_running=False)
    st = pods.cri.wait_container_state(first, EXITED)
    assert (st.exit_code, st.reason) == (3, "Error")
    pods.cri.remove_container(first)
    second = pod.container("app", STOPPABLE, env={"ATTEMPT": "1"}, attempt=1, log_path="app-1.log")
    st = pods.cri.container_status(second).status
    assert (st.state, st.metadata.attempt) == (RUNNING, 1)
    assert pod.pid == sandbox_pid
    r = pods.cri.exec_sync(second, ["sh", "-c", "echo $ATTEMPT"])
    assert r.stdout == b"1\n"
    assert [c for _, c in parse_log(pod.log("app"))["stdout"]] == ["attempt 0"]


# ---- security contexts -----------------------------------------------------------------------
def test_run_as_user_group_and_supplemental_groups(pods):
    pod = pods.run()
    cid = pod.container("app", STOPPABLE, security_context=sc(
        run_as_user=cri.Int64Value(value=1000), run_as_group=cri.Int64Value(value=1000),
        supplemental_groups=[2000, 3000]))
    r = pods.cri.exec_sync(cid, ["id"])
    out = r.stdout.decode()
    assert "uid=1000(app) gid=1000(app)" in out, out
    assert "2000" in out and "3000" in out, out
    assert status_field(pods, cid, "Groups").split() == ["1000", "2000", "3000"]


def test_readonly_rootfs(pods):
    pod = pods.run()
    cid = pod.container("app", STOPPABLE, security_context=sc(readonly_rootfs=True))
    r = pods.cri.exec_sync(cid, ["touch", "/x"])
    assert r.exit_code != 0 and b"Read-only file system" in r.stderr, r
    r = pods.cri.exec_sync(cid, ["touch", "/dev/shm/x"])  # the pod's shm stays writable
    assert r.exit_code == 0, r


def test_capabilities_add_drop(pods):
    pod = pods.run()
    default = pod.container("default", STOPPABLE)
    assert {"CAP_CHOWN", "CAP_NET_RAW", "CAP_KILL"} <= cap_eff(pods, default)
    assert "CAP_SYS_ADMIN" not in cap_eff(pods, default)
    tuned = pod.container("tuned", STOPPABLE, security_context=sc(
        capabilities=cri.Capability(add_capabilities=["NET_ADMIN", "SYS_TIME"],
                                    drop_capabilities=["NET_RAW", "CHOWN"])))
    eff = cap_eff(pods, tuned)
    assert {"CAP_NET_ADMIN", "CAP_SYS_TIME", "CAP_KILL"} <= eff
    assert not {"CAP_NET_RAW", "CAP_CHOWN"} & eff
    none = pod.container("none", STOPPABLE, security_context=sc(
        capabilities=cri.Capability(drop_capabilities=["ALL"], add_capabilities=["NET_BIND_SERVICE"])))
    assert cap_eff(pods, none) == {"CAP_NET_BIND_SERVICE"}


@pytest.mark.parametrize("profile,mode", [("RuntimeDefault", "2"), ("Unconfined", "0")])
def test_seccomp(pods, profile, mode):
    pod = pods.run()
    kind = cri.SecurityProfile.RuntimeDefault if profile == "RuntimeDefault" else \
        cri.SecurityProfile.Unconfined
    cid = pod.container("app", STOPPABLE, security_context=sc(
        seccomp=cri.SecurityProfile(profile_type=kind)))
    assert status_field(pods, cid, "Seccomp") == mode
    if profile == "RuntimeDefault":  # a syscall the default profile refuses: unshare(CLONE_NEWNS)...
        r = pods.cri.exec_sync(cid, ["unshare", "-m", "true"])
        assert r.exit_code != 0


def test_no_new_privs(pods):
    pod = pods.run()
    on = pod.container("on", STOPPABLE, security_context=sc(no_new_privs=True))
    off = pod.container("off", STOPPABLE)
    assert status_field(pods, on, "NoNewPrivs") == "1"
    assert status_field(pods, off, "NoNewPrivs") == "0"


# kubelet sends these (its securitycontext defaults for the Default procMount) with every
# container; CRI applies exactly the lists it gets.
KUBELET_MASKED = ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                  "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                  "/sys/firmware"]
KUBELET_READONLY = ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                    "/proc/sysrq-trigger"]


def mount_options(pods, cid, path: str) -> list[str] | None:
    """The per-mount options of the topmost mount at `path` in the container (never writes)."""
    r = pods.cri.exec_sync(cid, ["cat", "/proc/self/mountinfo"])
    opts = None
    for line in r.stdout.decode().splitlines():
        f = line.split()
        if f[4] == path:
            opts = f[5].split(",")
    return opts


def test_masked_and_readonly_paths(pods):
    # a pod network pod: its uts and ipc are its own, in case a read-only path is not
    pod = pods.run(host_network=False)
    cid = pod.container("app", STOPPABLE, security_context=sc(
        masked_paths=KUBELET_MASKED + ["/etc/group", "/home"],
        readonly_paths=KUBELET_READONLY + ["/tmp"]))
    r = pods.cri.exec_sync(cid, ["sh", "-c", "wc -c </proc/timer_list; wc -c </proc/keys; "
                                 "ls /sys/firmware | wc -l; wc -c </etc/group; ls /home | wc -l"])
    assert r.stdout.decode().split() == ["0"] * 5, r  # /dev/null on files, empty ro tmpfs on dirs
    for path in ("/proc/sys", "/proc/irq", "/tmp", "/sys/firmware", "/home"):
        assert "ro" in (mount_options(pods, cid, path) or []), (path, mount_options(pods, cid, path))
    r = pods.cri.exec_sync(cid, ["touch", "/tmp/x"])
    assert r.exit_code != 0 and b"Read-only file system" in r.stderr, r
    # a container without them sees the real files
    plain = pod.container("plain", STOPPABLE)
    r = pods.cri.exec_sync(plain, ["grep", "-c", "root", "/etc/group"])
    assert r.stdout == b"1\n"
    assert "ro" not in (mount_options(pods, plain, "/tmp") or [])


def test_privileged(pods):
    # refused in a pod that is not privileged (a CRI rule, before any runtime is involved)
    plain = pods.run()
    with pytest.raises(grpc.RpcError) as e:
        plain.create("app", STOPPABLE, security_context=sc(privileged=True))
    assert "privileged" in e.value.details()
    pod = pods.run(privileged=True)
    cid = pod.container("app", STOPPABLE, security_context=sc(privileged=True))
    with open("/proc/self/status") as f:
        host_bnd = [line.split()[1] for line in f if line.startswith("CapBnd:")][0]
    assert status_field(pods, cid, "CapEff") == host_bnd  # every capability this host has
    assert status_field(pods, cid, "Seccomp") == "0"
    sysfs = mount_options(pods, cid, "/sys")
    assert sysfs and "rw" in sysfs
    r = pods.cri.exec_sync(cid, ["ls", "/dev"])
    host_devs = set(os.listdir("/dev"))
    seen = set(r.stdout.decode().split())
    assert {"kmsg", "mem", "null"} & host_devs <= seen, sorted(seen)
