"""linux.netDevices: host network interfaces moved into the container's network namespace
(renamed when the spec says so) at create, and moved back at delete.

Invariants:
- pyroute2 (~100-200 ms to import) is imported only for a spec with netDevices, and only in a
  forked helper: pyroute2's synchronous API runs an asyncio loop of its own, which cannot run
  inside a caller's running loop (the shim's), and the helper may setns() into the
  container's network namespace, which the caller itself never does. The helper writes one
  error message to a pipe; the caller waits for it by pid and raises it typed.
- move_in() moves each device with ONE request (IFLA_NET_NS_FD and IFLA_IFNAME together): moved
  and renamed at once, so the container's name is never taken on the host. A device that does
  not exist on the host is a ContainerSetupError naming it.
- move_out() moves each device back under its host name while the init still holds the
  namespace (delete calls it before the kill); a device that is not there any more is skipped,
  and a failure is only a warning: delete goes on (a virtual device dies with the namespace,
  a physical one falls back to the host's namespace then).
"""

import os

from . import log
from .child import fork_child, reset_caller_signals
from .errors import ContainerSetupError
from .sys.consts import CLONE_NEWNET

STEP = "netDevices"


def _in_helper(work) -> str | None:
    """Run work() in a forked child; None if it succeeded, else its error message."""
    r, w = os.pipe2(os.O_CLOEXEC)

    def body() -> int:
        reset_caller_signals()
        os.close(r)
        try:
            import asyncio.events  # a running loop of the caller's is not ours (pyroute2 asks)
            asyncio.events._set_running_loop(None)
            work()
            return 0
        except BaseException as e:  # noqa: BLE001 - reported through the pipe
            os.write(w, (str(e) or type(e).__name__).encode(errors="replace")[:4000])
            return 1
    try:
        pid = fork_child(body)
    finally:
        os.close(w)
    try:
        chunks = []
        while chunk := os.read(r, 4096):
            chunks.append(chunk)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 0:
        return None
    return b"".join(chunks).decode(errors="replace") or f"helper exited {status}"


def _errno_text(e: BaseException) -> str:
    code = getattr(e, "code", None)  # pyroute2's NetlinkError
    return os.strerror(code) if isinstance(code, int) and code > 0 else str(e)


def move_in(pid: int, devices: dict[str, str]) -> None:
    """Move each host device (key) into the network namespace of `pid` as its value."""
    if not devices:
        return
    ns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)

    def work() -> None:
        from pyroute2 import IPRoute
        with IPRoute() as ipr:
            for host, name in devices.items():
                found = ipr.link_lookup(ifname=host)
                if not found:
                    raise RuntimeError(f"network device {host!r} does not exist on the host")
                try:
                    ipr.link("set", index=found[0], net_ns_fd=ns, ifname=name)
                except Exception as e:  # noqa: BLE001 - NetlinkError, named below
                    raise RuntimeError(f"move {host!r} into the container as {name!r}: "
                                       f"{_errno_text(e)}") from None
    try:
        err = _in_helper(work)
    finally:
        os.close(ns)
    if err is not None:
        raise ContainerSetupError(STEP, err)


def move_out(ns_fd: int, devices: dict[str, str], container_id: str = "") -> None:
    """Move each device back from the namespace `ns_fd` (the container's) to ours, under its
    host name. Failures are warnings."""
    if not devices:
        return
    host_ns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)

    def work() -> None:
        from .sys.linux import LINUX
        LINUX.setns_fd(ns_fd, CLONE_NEWNET)  # in the helper only
        from pyroute2 import IPRoute
        failed = []
        with IPRoute() as ipr:
            for host, name in devices.items():
                found = ipr.link_lookup(ifname=name)
                if not found:
                    continue
                try:
                    ipr.link("set", index=found[0], net_ns_fd=host_ns, ifname=host)
                except Exception as e:  # noqa: BLE001
                    failed.append(f"{name!r} -> {host!r}: {_errno_text(e)}")
        if failed:
            raise RuntimeError("; ".join(failed))
    try:
        err = _in_helper(work)
    finally:
        os.close(host_ns)
    if err is not None:
        log.warning(__name__, f"container {container_id}: moving network devices back to the "
                              f"host: {err}")
