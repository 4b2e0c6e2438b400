"""The long-lived shim: one event loop (shim.aio) serving the Task API on the socket `start` created.

Invariants:
- One thread. The engine forks from it; no other thread ever exists (forking with threads is
  unsafe), so blocking helpers are bounded instead of being pushed to executors.
- The process exits only after Shutdown with no containers left, and only once the events
  queued before it have been delivered (bounded to 5 s).
- The same handlers answer containerd.task.v2.Task and containerd.task.v3.Task (containerd 2.x).
"""

from __future__ import annotations

import os
import socket

from proto.containerd.task.v2 import shim_lite
from proto.lite import DecodeError
from runtime import log as engine_log
from runtime.container import Engine
from shim import aio, bootstrap, errors
from shim import log as shimlog
from shim.events import EventQueue
from shim.service import TaskService
from shim.ttrpc import Code, Server, TTRPCError

log = shimlog.getLogger("pyshim")

TASK_SERVICES = ("containerd.task.v2.Task", "containerd.task.v3.Task")
EVENT_FLUSH_TIMEOUT = 5.0


def run(sock, flags: bootstrap.Flags, options: bytes, bundle: str, path: str) -> int:
    """Serve until shut down. `sock` is start's listening _socket.socket."""
    shimlog.configure(debug=flags.debug)
    # The engine's warnings (failed poststart/poststop hooks) go to the same log, and the
    # logging module is never imported.
    engine_log.sink = lambda level, message: shimlog.getLogger("pyshim.engine").warning(
        "%s", message)
    os.chdir("/")  # hold no bundle directory busy
    listener = socket.socket(fileno=sock.detach())
    return aio.run(_serve(listener, flags, path))


async def _serve(sock: socket.socket, flags: bootstrap.Flags, path: str) -> int:
    loop = aio.get_running_loop()
    events = EventQueue(os.environ.get("TTRPC_ADDRESS", flags.address + ".ttrpc"), flags.namespace)
    events.start()
    service = TaskService(flags.namespace, Engine(bootstrap.engine_root(flags.namespace)), events,
                          create_in_fork=True)
    service.reaper.install(loop)
    server = Server()
    handlers = task_handlers(service)
    for name in TASK_SERVICES:
        server.register(name, handlers)
    await server.start(sock)
    log.info("serving %s for namespace %s", path, flags.namespace)
    await service.shutdown_requested.wait()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    await events.flush(EVENT_FLUSH_TIMEOUT)
    server.close()
    await server.wait_closed()
    await events.close()
    return 0


def task_handlers(service: TaskService) -> dict:
    """Adapt each Task RPC to the ttrpc server's bytes-in/bytes-out handler shape."""
    methods = shim_lite.SERVICES["containerd.task.v2.Task"]
    return {name: _adapter(name, getattr(service, name, None), request_type)
            for name, (request_type, _response_type) in methods.items()}


def _adapter(name: str, impl, request_type):
    async def handle(payload: bytes, _ctx) -> bytes:
        if impl is None:
            raise TTRPCError(Code.UNIMPLEMENTED, f"{name} is not implemented by pyshim yet")
        try:
            request = request_type.FromString(payload)
        except DecodeError as e:
            raise TTRPCError(Code.INVALID_ARGUMENT, f"{name}: undecodable request: {e}") from None
        try:
            response = await impl(request)
        except TTRPCError:
            raise
        except Exception as e:
            log.exception("%s failed", name)
            raise errors.to_ttrpc(e) from e
        return response.SerializeToString()

    return handle


# Not preloaded: the command line and `spec` generator (not the shim's), the unit tests' fake
# sys, and checkpoint/restore (subprocess, shutil, datetime, dataclasses: ~2 MB), rare enough
# to be imported by the daemon that needs it.
_NOT_PRELOADED = ("runtime.cli", "runtime.specgen", "runtime.sys.fake", "runtime.checkpoint")


def _other_cgroup_version() -> tuple[str, ...]:
    """The cgroup manager this host cannot use (~0.25 MB for v2 and its eBPF device filter):
    not preloaded; the engine would still import it on first use."""
    try:
        from runtime.cgroups.hierarchy import detect
        mode = detect().mode
    except Exception:  # no cgroup mounts we understand: keep both
        return ()
    return ("runtime.cgroups.v2", "runtime.cgroups.devices_bpf") if mode == "v1" else \
        ("runtime.cgroups.v1",)


def preload_engine() -> None:
    """Import every engine module a container may need. The engine imports them lazily (a CLI
    call should pay only for what it uses); a fork server must not leave that to each daemon's
    first Create, which would pay the imports again and keep private copies of them."""
    import importlib

    import runtime

    # Walked by hand: pkgutil.walk_packages imports typing and inspect (~1.5 MB) to do it.
    top = runtime.__path__[0]
    for root, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if os.path.exists(os.path.join(root, d, "__init__.py")))
        package = "runtime" + root[len(top):].replace(os.sep, ".")
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            module = package if name == "__init__.py" else f"{package}.{name[:-3]}"
            if not module.startswith(_NOT_PRELOADED + _other_cgroup_version()):
                importlib.import_module(module)


def warm_up() -> None:
    """Run the daemon's common paths once, without side effects (the fork server calls this
    before forking): Python 3.11 specializes bytecode in place and fills lazy caches the first
    time code runs, and every daemon doing that itself would copy those pages (~0.4 MB each)."""
    from proto.containerd.task.v2 import shim_lite as api
    from shim.ttrpc import codec

    preload_engine()

    class _NoEvents:
        def publish(self, topic, event):
            event.SerializeToString()

    async def exercise():
        service = TaskService("warm-up", Engine("/nonexistent/pyshim-warm-up"), _NoEvents())
        handlers = task_handlers(service)
        for name, request in (("Connect", api.ConnectRequest(id="x")),
                              ("State", api.StateRequest(id="x")),
                              ("Kill", api.KillRequest(id="x", signal=9))):
            body = codec.encode_request("containerd.task.v2.Task", name,
                                        request.SerializeToString())
            try:
                await handlers[name](codec.decode_request(body).payload, None)
            except TTRPCError:
                pass
            codec.encode_response(payload=b"")
        await aio.sleep(0)

    for _ in range(3):
        aio.run(exercise())

