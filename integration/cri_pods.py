"""Pods for the CRI tests, made and checked the way kubelet would leave a node: every pod a test
creates goes through CRI (RunPodSandbox ... RemovePodSandbox), its pod cgroup is removed as
kubelet removes it, and `PodFactory.finish()` then checks that nothing of it is left: no pod or
container in CRI, no shim process of the CRI containerd, no mount, no network namespace, no
CNI cache entry, no runtime state, no cgroup.

    pods = PodFactory(c, cri, "pyshim", tmp_path, "test-name")
    pod = pods.run(host_network=False)
    cid = pod.container("app", ["sleep", "60"])
    pods.finish()            # removes what is left, then raises LeakError naming leftovers
"""
from __future__ import annotations

import json
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Sequence

import grpc

from integration.containerd import BUSYBOX_IMAGE, CRI_NAMESPACE, RUNC_STATE_ROOT, PrivateContainerd
from integration.cri import RUNNING, CriClient, cri

CGROUP_ROOT = "/sys/fs/cgroup"
CGROUP_PREFIX = "pyshim-cri-test"  # every pod's cgroup_parent is /<this>/<pod uid>
PYSHIM_STATE_ROOT = "/run/pyshim"  # the engine's state: <root>/<namespace>/<id>
LEAK_WAIT = 10.0


class LeakError(AssertionError):
    pass


def cgroup_dirs(rel: str) -> list[str]:
    """The directories of cgroup path `rel` in every mounted hierarchy (v1 controllers, v2)."""
    out = []
    try:
        names = os.listdir(CGROUP_ROOT)
    except OSError:
        return out
    for n in names:
        d = os.path.join(CGROUP_ROOT, n, rel.strip("/"))
        if os.path.isdir(d):
            out.append(d)
    d = os.path.join(CGROUP_ROOT, rel.strip("/"))  # a pure v2 mount
    if os.path.isdir(d) and d not in out:
        out.append(d)
    return out


def remove_cgroup_tree(rel: str) -> list[str]:
    """rmdir `rel` in every hierarchy, children first; return the child dirs that were there."""
    children = []
    for top in cgroup_dirs(rel):
        for dirpath, dirnames, _ in os.walk(top, topdown=False):
            if dirpath != top:
                children.append(dirpath)
            try:
                os.rmdir(dirpath)
            except OSError:
                pass
    return children


def proc_ns(pid: int | str, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def ppid_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


@dataclass
class Pod:
    factory: "PodFactory"
    id: str
    config: cri.PodSandboxConfig
    log_dir: str
    cgroup_parent: str
    containers: list[str] = field(default_factory=list)

    @property
    def cri(self) -> CriClient:
        return self.factory.cri

    def status(self, verbose: bool = False) -> cri.PodSandboxStatusResponse:
        return self.cri.pod_status(self.id, verbose=verbose)

    def info(self) -> dict:
        """PodSandboxStatus(verbose)'s info: containerd's JSON (pid, runtimeHandler, config...)."""
        return json.loads(self.status(verbose=True).info["info"])

    @property
    def pid(self) -> int:
        return int(self.info()["pid"])

    def create(self, name: str, command: Sequence[str], **kw) -> str:
        """CreateContainer of the busybox image in this pod; logs to <log_dir>/<name>.log."""
        kw.setdefault("log_path", f"{name}.log")
        cfg = self.cri.container_config(name, kw.pop("image", BUSYBOX_IMAGE), command, **kw)
        # kubelet gives each container the pod's namespace options (an unset pid mode would
        # mean POD, i.e. the sandbox's pid namespace)
        sc = cfg.linux.security_context
        if not sc.HasField("namespace_options"):
            sc.namespace_options.CopyFrom(self.config.linux.security_context.namespace_options)
        cid = self.cri.create_container(self.id, cfg, self.config)
        self.containers.append(cid)
        self.factory.container_ids.append(cid)
        return cid

    def container(self, name: str, command: Sequence[str], wait_running: bool = True, **kw) -> str:
        """CreateContainer + StartContainer; waits until it is RUNNING unless told not to."""
        cid = self.create(name, command, **kw)
        self.cri.start_container(cid)
        if wait_running:
            self.cri.wait_container_state(cid, RUNNING)
        return cid

    def container_info(self, cid: str) -> dict:
        return json.loads(self.cri.container_status(cid, verbose=True).info["info"])

    def container_pid(self, cid: str) -> int:
        return int(self.container_info(cid)["pid"])

    def log_path(self, name: str) -> str:
        return os.path.join(self.log_dir, f"{name}.log")

    def log(self, name: str) -> str:
        with open(self.log_path(name)) as f:
            return f.read()

    def wait_log(self, name: str, text: str, timeout: float = 10) -> str:
        """Wait until container `name`'s log contains `text` (e.g. a line it prints once its
        signal handlers are in place); return the log."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                log = self.log(name)
            except FileNotFoundError:
                log = ""
            if text in log:
                return log
            if time.monotonic() > deadline:
                raise TimeoutError(f"{text!r} not in {self.log_path(name)} after {timeout}s: {log!r}")
            time.sleep(0.02)

    def remove(self) -> None:
        """StopPodSandbox + RemovePodSandbox (which removes its containers), as kubelet does."""
        self.cri.stop_pod(self.id)
        self.cri.remove_pod(self.id)
        self.factory.removed.add(self.id)


class PodFactory:
    """Pods of one test on one runtime handler; finish() removes and leak-checks them."""

    def __init__(self, c: PrivateContainerd, client: CriClient, handler: str, tmpdir: str,
                 name: str):
        self.c = c
        self.cri = client
        self.handler = handler
        self.tmpdir = str(tmpdir)
        self.base = (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:30] or "t") + "-" + \
            uuid.uuid4().hex[:6]
        self.pods: list[Pod] = []
        self.container_ids: list[str] = []
        self.removed: set[str] = set()
        self.netns: dict[str, str] = {}  # sandbox id -> netns path

    def run(self, name: str | None = None, *, host_network: bool = True, share_pid: bool = False,
            hostname: str | None = None, privileged: bool = False, **kw) -> Pod:
        """RunPodSandbox on this factory's handler; pod-network pods get a hostname;
        privileged: the sandbox's security context allows privileged containers."""
        name = name or f"{self.base}-{len(self.pods)}"
        uid = uuid.uuid4().hex
        cgroup_parent = f"/{CGROUP_PREFIX}/pod{uid}"
        log_dir = os.path.join(self.tmpdir, f"logs-{name}")
        os.makedirs(log_dir, exist_ok=True)
        if hostname is None:
            hostname = "" if host_network else name[:63]
        config = self.cri.pod_config(
            name, uid=uid, log_directory=log_dir, host_network=host_network, hostname=hostname,
            cgroup_parent=cgroup_parent, pid=cri.POD if share_pid else cri.CONTAINER, **kw)
        config.linux.security_context.privileged = privileged
        pod_id = self.cri.run_pod(config, self.handler)
        pod = Pod(self, pod_id, config, log_dir, cgroup_parent)
        self.pods.append(pod)
        if not host_network:
            self.netns.update({k: v for k, v in self.c.sandbox_netns().items() if k == pod_id})
        return pod

    # ---- teardown and leak check ---------------------------------------------------------------
    def _ids(self) -> list[str]:
        return [p.id for p in self.pods] + self.container_ids

    def finish(self, failed: bool = False) -> list[str]:
        """Remove the pods still there (through CRI), then check for leftovers. Raises
        LeakError listing them (unless `failed`: then it only cleans and returns notes)."""
        notes, problems = [], []
        for pod in self.pods:
            if pod.id in self.removed:
                continue
            try:
                pod.remove()
            except grpc.RpcError as e:
                problems.append(f"removing pod {pod.id}: {e.code()} {e.details()}")
        ids = set(self._ids())
        pod_ids = {p.id for p in self.pods}
        try:
            left = [p.id for p in self.cri.list_pods() if p.id in pod_ids]
            left += [c.id for c in self.cri.list_containers() if c.id in ids]
        except grpc.RpcError as e:
            left = [f"(list failed: {e.code()})"]
        if left:
            problems.append(f"CRI still lists {left}")
            notes += self.cri.remove_all()
        deadline = time.monotonic() + LEAK_WAIT
        while True:
            shims = self.c.shim_processes()
            mounts = self.c.leftover_mounts(ids)
            netns = [p for p in self.netns.values() if os.path.exists(p)]
            state = [d for i in ids for d in (os.path.join(PYSHIM_STATE_ROOT, CRI_NAMESPACE, i),
                                               os.path.join(RUNC_STATE_ROOT, CRI_NAMESPACE, i))
                     if os.path.exists(d)]
            cache = self.c.cni_cache_files()
            if not (shims or mounts or netns or state or cache) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if shims:
            problems.append(f"shim processes still running: {shims}")
            notes += self.c._kill_pids(shims, 10)
        if mounts:
            problems.append(f"mounts left: {mounts}")
        if netns:
            problems.append(f"network namespaces left: {netns}")
        if state:
            problems.append(f"runtime state left: {state}")
        if cache:
            problems.append(f"CNI cache entries left: {cache}")
        # kubelet removes a pod's cgroup once the pod is gone; the runtime removes its
        # containers' cgroups: any child still there is the runtime's leak.
        for pod in self.pods:
            children = remove_cgroup_tree(pod.cgroup_parent)
            if children:
                problems.append(f"container cgroups left under {pod.cgroup_parent}: {children}")
        if failed:
            return notes + problems
        if problems:
            raise LeakError("leak check: " + "; ".join(problems))
        return notes
