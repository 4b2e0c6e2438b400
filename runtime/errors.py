"""The engine's one typed error hierarchy.

Invariant: every failure the engine reports is an EngineError subclass, and callers (the shim,
the CLI) map them to wire codes by TYPE, never by message. Messages are for humans.
"""


class EngineError(Exception):
    """Base of every engine error."""


class InvalidSpec(EngineError):
    """config.json (or an argument such as the id) breaks the spec or asks for something
    unsupported. `field` is the JSON path, e.g. "process.args" or "mounts[2].destination"."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.reason = message


class ContainerNotFound(EngineError):
    def __init__(self, id: str, message: str | None = None):
        super().__init__(message or f"container {id!r} does not exist")
        self.id = id


class ProcessFinished(ContainerNotFound):
    """Signalling a container whose init has exited. A ContainerNotFound on purpose: containerd's
    runc shim turns runc's "container not running" into NotFound, and so should ours."""

    def __init__(self, id: str):
        super().__init__(id, f"container {id!r} is not running (process already finished)")


class ContainerExists(EngineError):
    def __init__(self, id: str):
        super().__init__(f"container {id!r} already exists")
        self.id = id


class InvalidState(EngineError):
    """The operation does not fit the container's status (start twice, delete while running)."""

    def __init__(self, message: str, id: str | None = None, status: str | None = None):
        super().__init__(message)
        self.id = id
        self.status = status


class ContainerSetupError(EngineError):
    """The container's init failed during create. `step` names the phase ("namespaces", "mount",
    "pivot_root", "exec lookup", ...), `path` the file involved when there is one."""

    def __init__(self, step: str, message: str, path: str | None = None):
        super().__init__(message)
        self.step = step
        self.path = path


class CgroupError(EngineError):
    """A cgroupfs operation failed (runtime.cgroups). `path` is the file or directory and the
    message names it, `field` the spec field whose write failed (when there is one), `errno`
    the kernel's errno."""

    def __init__(self, message: str, path: str | None = None, field: str | None = None,
                 errno: int | None = None):
        super().__init__(message)
        self.path, self.field, self.errno = path, field, errno
