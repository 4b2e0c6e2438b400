"""A small client of containerd's CRI gRPC API (Kubernetes runtime.v1), for tests and benchmarks:
what kubelet would send, without kubelet or crictl.

    with CriClient(c.address) as cri:
        pod = cri.run_pod(cri.pod_config("web", log_directory=logs), handler="pyshim")
        cid = cri.create_container(pod, cri.container_config("app", IMAGE, ["sleep", "60"]),
                                   cri.pod_config("web", log_directory=logs))
        cri.start_container(cid)
        r = cri.exec_sync(cid, ["echo", "hi"])

Every call has a deadline (`timeout`, default DEFAULT_TIMEOUT seconds): a hang fails the caller
with grpc.RpcError (DEADLINE_EXCEEDED), never blocks it. Stubs: proto/cri/runtime/v1 (generated
from the CRI api.proto by hack/cri_proto.py and hack/genproto.sh).
"""
from __future__ import annotations

import time
import uuid
from typing import Iterable, Sequence

import grpc

from proto.cri.runtime.v1 import api_pb2 as cri
from proto.cri.runtime.v1 import api_pb2_grpc as cri_grpc

DEFAULT_TIMEOUT = 30.0
CRI_NAMESPACE = "k8s.io"  # the containerd namespace the CRI plugin uses

# NamespaceMode values
POD, CONTAINER, NODE, TARGET = cri.POD, cri.CONTAINER, cri.NODE, cri.TARGET
# ContainerState values
CREATED, RUNNING, EXITED, UNKNOWN = (cri.CONTAINER_CREATED, cri.CONTAINER_RUNNING,
                                     cri.CONTAINER_EXITED, cri.CONTAINER_UNKNOWN)
SANDBOX_READY, SANDBOX_NOTREADY = cri.SANDBOX_READY, cri.SANDBOX_NOTREADY


def code_of(fn, *args, **kwargs) -> grpc.StatusCode:
    """The status code a call ends with (OK if it returns)."""
    try:
        fn(*args, **kwargs)
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


class CriClient:
    """RuntimeService and ImageService of a containerd's CRI plugin, on its grpc socket."""

    def __init__(self, address: str, timeout: float = DEFAULT_TIMEOUT):
        self.address = address
        self.timeout = timeout
        self.channel = grpc.insecure_channel(
            "unix://" + address, options=[("grpc.max_receive_message_length", 16 << 20)])
        self.runtime = cri_grpc.RuntimeServiceStub(self.channel)
        self.images = cri_grpc.ImageServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "CriClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _t(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    # ---- config builders ---------------------------------------------------------------------
    @staticmethod
    def pod_config(name: str, *, namespace: str = "default", uid: str | None = None,
                   log_directory: str = "", host_network: bool = True, hostname: str = "",
                   cgroup_parent: str = "", pid: int = CONTAINER, ipc: int = POD,
                   labels: dict | None = None, annotations: dict | None = None,
                   sysctls: dict | None = None) -> cri.PodSandboxConfig:
        """A PodSandboxConfig as kubelet makes it. host_network: NODE network namespace (no CNI;
        give such pods no hostname); pid=POD is shareProcessNamespace."""
        return cri.PodSandboxConfig(
            metadata=cri.PodSandboxMetadata(name=name, uid=uid or uuid.uuid4().hex,
                                            namespace=namespace, attempt=0),
            hostname=hostname,
            log_directory=log_directory,
            labels=labels or {},
            annotations=annotations or {},
            linux=cri.LinuxPodSandboxConfig(
                cgroup_parent=cgroup_parent,
                sysctls=sysctls or {},
                security_context=cri.LinuxSandboxSecurityContext(
                    namespace_options=cri.NamespaceOption(
                        network=NODE if host_network else POD, pid=pid, ipc=ipc))))

    @staticmethod
    def container_config(name: str, image: str, command: Sequence[str] = (),
                         args: Sequence[str] = (), *, log_path: str = "", env: dict | None = None,
                         memory_limit: int = 0, working_dir: str = "",
                         security_context: cri.LinuxContainerSecurityContext | None = None,
                         stdin: bool = False, tty: bool = False, attempt: int = 0,
                         labels: dict | None = None, annotations: dict | None = None
                         ) -> cri.ContainerConfig:
        resources = cri.LinuxContainerResources(memory_limit_in_bytes=memory_limit)
        return cri.ContainerConfig(
            metadata=cri.ContainerMetadata(name=name, attempt=attempt),
            image=cri.ImageSpec(image=image),
            command=list(command), args=list(args), working_dir=working_dir,
            envs=[cri.KeyValue(key=k, value=v) for k, v in (env or {}).items()],
            log_path=log_path, stdin=stdin, tty=tty,
            labels=labels or {}, annotations=annotations or {},
            linux=cri.LinuxContainerConfig(
                resources=resources,
                security_context=security_context or cri.LinuxContainerSecurityContext()))

    # ---- RuntimeService ----------------------------------------------------------------------
    def version(self, timeout: float | None = None) -> cri.VersionResponse:
        return self.runtime.Version(cri.VersionRequest(version="v1"), timeout=self._t(timeout))

    def status(self, timeout: float | None = None) -> cri.StatusResponse:
        return self.runtime.Status(cri.StatusRequest(verbose=True), timeout=self._t(timeout))

    def run_pod(self, config: cri.PodSandboxConfig, handler: str = "",
                timeout: float | None = None) -> str:
        r = self.runtime.RunPodSandbox(
            cri.RunPodSandboxRequest(config=config, runtime_handler=handler),
            timeout=self._t(timeout))
        return r.pod_sandbox_id

    def pod_status(self, pod_id: str, verbose: bool = False,
                   timeout: float | None = None) -> cri.PodSandboxStatusResponse:
        return self.runtime.PodSandboxStatus(
            cri.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=verbose),
            timeout=self._t(timeout))

    def stop_pod(self, pod_id: str, timeout: float | None = None) -> None:
        self.runtime.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod_id),
                                    timeout=self._t(timeout))

    def remove_pod(self, pod_id: str, timeout: float | None = None) -> None:
        self.runtime.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id),
                                      timeout=self._t(timeout))

    def list_pods(self, timeout: float | None = None) -> list[cri.PodSandbox]:
        return list(self.runtime.ListPodSandbox(cri.ListPodSandboxRequest(),
                                                timeout=self._t(timeout)).items)

    def create_container(self, pod_id: str, config: cri.ContainerConfig,
                         pod_config: cri.PodSandboxConfig, timeout: float | None = None) -> str:
        r = self.runtime.CreateContainer(
            cri.CreateContainerRequest(pod_sandbox_id=pod_id, config=config,
                                       sandbox_config=pod_config),
            timeout=self._t(timeout))
        return r.container_id

    def start_container(self, cid: str, timeout: float | None = None) -> None:
        self.runtime.StartContainer(cri.StartContainerRequest(container_id=cid),
                                    timeout=self._t(timeout))

    def stop_container(self, cid: str, grace: int = 0, timeout: float | None = None) -> None:
        """StopContainer with `grace` seconds before SIGKILL; the call's own deadline is
        `timeout`, by default the grace period plus DEFAULT_TIMEOUT."""
        self.runtime.StopContainer(cri.StopContainerRequest(container_id=cid, timeout=grace),
                                   timeout=grace + self.timeout if timeout is None else timeout)

    def remove_container(self, cid: str, timeout: float | None = None) -> None:
        self.runtime.RemoveContainer(cri.RemoveContainerRequest(container_id=cid),
                                     timeout=self._t(timeout))

    def container_status(self, cid: str, verbose: bool = False,
                         timeout: float | None = None) -> cri.ContainerStatusResponse:
        return self.runtime.ContainerStatus(
            cri.ContainerStatusRequest(container_id=cid, verbose=verbose),
            timeout=self._t(timeout))

    def list_containers(self, pod_id: str = "", timeout: float | None = None
                        ) -> list[cri.Container]:
        flt = cri.ContainerFilter(pod_sandbox_id=pod_id) if pod_id else None
        return list(self.runtime.ListContainers(cri.ListContainersRequest(filter=flt),
                                                timeout=self._t(timeout)).containers)

    def exec_sync(self, cid: str, cmd: Sequence[str], exec_timeout: int = 0,
                  timeout: float | None = None) -> cri.ExecSyncResponse:
        """ExecSync; exec_timeout: the CRI timeout in seconds (0: none); the call's deadline is
        exec_timeout + DEFAULT_TIMEOUT by default."""
        return self.runtime.ExecSync(
            cri.ExecSyncRequest(container_id=cid, cmd=list(cmd), timeout=exec_timeout),
            timeout=(exec_timeout + self.timeout) if timeout is None else timeout)

    def container_stats(self, cid: str, timeout: float | None = None) -> cri.ContainerStats:
        return self.runtime.ContainerStats(cri.ContainerStatsRequest(container_id=cid),
                                           timeout=self._t(timeout)).stats

    def update_resources(self, cid: str, resources: cri.LinuxContainerResources,
                         timeout: float | None = None) -> None:
        self.runtime.UpdateContainerResources(
            cri.UpdateContainerResourcesRequest(container_id=cid, linux=resources),
            timeout=self._t(timeout))

    # ---- ImageService ------------------------------------------------------------------------
    def image_status(self, image: str, timeout: float | None = None) -> cri.ImageStatusResponse:
        return self.images.ImageStatus(cri.ImageStatusRequest(image=cri.ImageSpec(image=image)),
                                       timeout=self._t(timeout))

    # ---- waiting and cleaning ----------------------------------------------------------------
    def wait_container_state(self, cid: str, states: Iterable[int] | int, timeout: float = 20
                             ) -> cri.ContainerStatus:
        want = {states} if isinstance(states, int) else set(states)
        deadline = time.monotonic() + timeout
        while True:
            st = self.container_status(cid).status
            if st.state in want:
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"container {cid} not in {sorted(want)} after {timeout}s: "
                                   f"state {st.state} reason {st.reason!r}")
            time.sleep(0.05)

    def remove_all(self, timeout: float = 60) -> list[str]:
        """Stop and remove every container and pod sandbox this CRI knows (a failed test's
        leftovers); return what was removed. Bounded by `timeout` overall."""
        notes = []
        deadline = time.monotonic() + timeout
        left = lambda: max(1.0, deadline - time.monotonic())  # noqa: E731
        for c in self.list_containers(timeout=left()):
            try:
                self.stop_container(c.id, 0, timeout=left())
                self.remove_container(c.id, timeout=left())
                notes.append(f"removed CRI container {c.id} ({c.metadata.name})")
            except grpc.RpcError as e:
                notes.append(f"could not remove CRI container {c.id}: {e.code()} {e.details()}")
        for p in self.list_pods(timeout=left()):
            try:
                self.stop_pod(p.id, timeout=left())
                self.remove_pod(p.id, timeout=left())
                notes.append(f"removed CRI pod {p.id} ({p.metadata.name})")
            except grpc.RpcError as e:
                notes.append(f"could not remove CRI pod {p.id}: {e.code()} {e.details()}")
        return notes
