"""The container's cgroup as the engine uses it: made from the spec at create, recorded in
state.json, rebuilt from there by any later process (the shim's `delete`, a CLI).

Invariants:
- for_spec() only resolves paths (reading mountinfo and, for a relative cgroupsPath, the
  caller's /proc/self/cgroup): a bad cgroupsPath is an InvalidSpec before anything exists.
- setup() creates the directories and sets the resources with runc's device allowlist
  (cgroups.with_default_devices); if anything fails it removes what it made and re-raises.
- to_state()/from_state() carry the RESOLVED directories, so every later call acts on exactly
  what create made, whatever the caller's own cgroup or the host's mounts are by then.
- A process moves ITSELF wherever it can: open_join() fds, opened on the host by the caller
  or an intermediate, then join_self() in the (single-threaded, freshly forked) process. On
  v1 that is a write of "0" to "tasks", which takes no RCU grace period (cgroups.V1Manager);
  moving another process by pid (join(m, pid): cgroup.procs) always may.
  - create: the init joins at its "cgroup" request (runtime.launch), with fds the caller sends;
    with a new cgroup namespace (rooted where the intermediate is when it unshares it) or
    createContainer hooks (they run in the init and must start inside the cgroup), the
    intermediate joins with join(m) before it enters or unshares any namespace (the host's
    cgroupfs paths mean what they say only there), and the init is born inside.
  - exec: the process joins first thing after its fork, before any user code: only the
    process ever counts against pids.max, as with runc, whose exec needs one free pid.
"""

import posix

from . import ospath
from . import cgroups
from .errors import ContainerSetupError, EngineError


def for_spec(spec, container_id: str) -> "cgroups.Manager":
    return cgroups.manager(spec.linux.cgroups_path, container_id)


def setup(m: "cgroups.Manager", spec) -> None:
    m.create()
    try:
        m.set(cgroups.with_default_devices(spec.linux.resources, spec.linux.devices))
    except BaseException:
        destroy_quietly(m)
        raise


def destroy_quietly(m: "cgroups.Manager | None") -> None:
    """For cleanup paths that are already raising another error."""
    if m is None:
        return
    try:
        m.destroy()
    except EngineError:
        pass


def join(m: "cgroups.Manager | None", pid: int | None = None) -> None:
    """Move pid into the container's cgroup; pid None: the calling process, which must be
    single-threaded (see join_self)."""
    if m is None:
        return
    if pid is None:
        join_self(open_join(m))
        return
    try:
        m.apply(pid)
    except EngineError as e:
        raise ContainerSetupError("cgroups", str(e), getattr(e, "path", None)) from None


Join = tuple  # (fds, their paths): what open_join() gives and join_self() takes


def open_join(m: "cgroups.Manager | None", sub: dict[str, str] | None = None) -> Join:
    """(fds, paths): the fds through which a process forked later moves itself into the
    cgroup (or its sub-cgroups: Manager.sub_dirs) with join_self(), whatever namespaces it
    is in by then, opened here (the host's view, our credentials); the paths, for errors."""
    if m is None:
        return [], []
    try:
        return m.open_join(sub)
    except EngineError as e:
        raise ContainerSetupError("cgroups", str(e), getattr(e, "path", None)) from None


def join_self(join: Join) -> None:
    """Move the calling process into the cgroup through open_join()'s fds ("0": ourselves),
    then close them; a failure names the file. Only from a single-threaded process: on v1
    "0" moves the calling thread alone."""
    fds, paths = join
    try:
        for i, fd in enumerate(fds):
            try:
                posix.write(fd, b"0")
            except OSError as e:
                path = paths[i] if i < len(paths) else None
                raise ContainerSetupError("cgroups", f"join the container's cgroup"
                                          f"{f' through {path}' if path else ''}: "
                                          f"{posix.strerror(e.errno)}", path) from None
    finally:
        for fd in fds:
            posix.close(fd)


def to_state(m: "cgroups.Manager") -> dict:
    if m.version == 2:
        return {"version": 2, "path": m.path, "mountpoint": m.mountpoint}
    return {"version": 1, "paths": dict(m.paths), "mounts": dict(m.mounts)}


def is_frozen(data: dict | None) -> bool:
    """Is the cgroup to_state() recorded frozen (its Manager's freezer_state() == "FROZEN")?
    Read straight from the freezer's file, without making a Manager: the status of every
    `state`, `list` and `shim delete` needs only this."""
    if not data:
        return False
    try:
        if data["version"] == 2:  # cgroup.events: "frozen 1" (absent before Linux 5.2)
            with open(ospath.join(data["path"], "cgroup.events")) as f:
                return "frozen 1" in f.read().splitlines()
        freezer = data["paths"].get("freezer")
        if not freezer:
            return False
        with open(ospath.join(freezer, "freezer.state")) as f:
            return f.read().strip() == "FROZEN"
    except OSError:
        return False


def from_state(data: dict | None) -> "cgroups.Manager | None":
    if not data:
        return None  # a container created before cgroups were wired in
    if data["version"] == 2:
        return cgroups.V2Manager(data["path"], data["mountpoint"])
    from .cgroups.hierarchy import Hierarchy, Mount
    mounts = {c: Mount(point) for c, point in data["mounts"].items()}
    return cgroups.V1Manager(data["paths"], Hierarchy("v1", mounts))
