"""Entering a container's namespaces, shared by create's intermediate (runtime.launch) and
exec's (runtime.execproc): which ones, in what order, how to join them, and the user
namespace's own steps.

Invariants:
- Namespaces are joined through fds opened BEFORE the first setns (a /proc or nsfs path means
  something else once the mount namespace has changed), in runc's order (ORDER).
- Joining takes two passes, like runc's nsexec: every namespace but the user one first,
  tolerating EPERM (one owned by an ancestor user namespace can no longer be joined once we
  are in the container's), then the user namespace, then what failed with EPERM.
- Once in a user namespace (joined, or new and mapped), the process becomes root in it
  (become_root: setresgid(0), setgroups([]), setresuid(0), as runc's init does): it keeps a
  full capability set in that namespace, and its files and signals are the mapped ids'.
- A new user namespace is unshared alone and first, so that it owns every namespace unshared
  after it; the child asks its parent ({"type": "idmap"}) and waits, and the CALLER writes
  /proc/<child>/uid_map and gid_map (write_id_mappings): only a process privileged in the
  parent namespace may write mappings of other ids than its own. As runc, a privileged caller
  leaves setgroups allowed; an unprivileged one must write "deny" first.
"""

import errno
import posix

from . import proc
from .errors import ContainerSetupError
from .sys.consts import NAMESPACE_FLAGS

# runc's configs.NamespaceTypes() order: user first; mount late since it resets root and cwd.
ORDER = ("user", "ipc", "uts", "network", "pid", "mount", "cgroup", "time")
PROC_NS = {"user": "user", "ipc": "ipc", "uts": "uts", "network": "net", "pid": "pid",
           "mount": "mnt", "cgroup": "cgroup", "time": "time"}
STEP = "namespaces"
USERNS_STEP = "user namespace"


# --- which -----------------------------------------------------------------------------------
def namespace_plan(init_links: dict[str, str], own_links: dict[str, str]) -> list[str]:
    """The namespace types to enter, in order: those where the init's /proc/<pid>/ns link
    differs from ours. A type we have no link for (an older kernel) is skipped."""
    return [t for t in ORDER if t in own_links and init_links.get(t) != own_links[t]]


def _links(pid: int | str) -> dict[str, str]:
    out = {}
    for t in ORDER:
        try:
            out[t] = posix.readlink(f"/proc/{pid}/ns/{PROC_NS[t]}")
        except FileNotFoundError:
            pass
    return out


def open_namespaces(pid: int, start: int) -> list[tuple[str, int]] | None:
    """[(type, fd)] of the namespaces to enter to be where the process (pid, start) is; None
    if it is gone. The caller closes the fds."""
    fds: list[tuple[str, int]] = []
    try:
        for t in namespace_plan(_links(pid), _links("self")):
            path = f"/proc/{pid}/ns/{PROC_NS[t]}"
            fds.append((t, posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)))
    except FileNotFoundError:  # /proc/<pid> vanished: the process is gone
        close_namespaces(fds)
        return None
    except BaseException:
        close_namespaces(fds)
        raise
    if not proc.is_alive(pid, start):  # checked after opening: the fds are that process's
        close_namespaces(fds)
        return None
    return fds


def open_paths(namespaces) -> list[tuple[str, int]]:
    """[(type, fd)] of a spec's joined namespaces (those with a path), in ORDER."""
    fds: list[tuple[str, int]] = []
    try:
        for n in sorted((n for n in namespaces if n.path), key=lambda n: ORDER.index(n.type)):
            try:
                fds.append((n.type, posix.open(n.path, posix.O_RDONLY | posix.O_CLOEXEC)))
            except OSError as e:
                raise ContainerSetupError(STEP, f"open {n.path}: {posix.strerror(e.errno)}",
                                          n.path) from None
    except BaseException:
        close_namespaces(fds)
        raise
    return fds


def close_namespaces(fds: list[tuple[str, int]]) -> None:
    for _, fd in fds:
        posix.close(fd)


# --- entering --------------------------------------------------------------------------------
def _setns(t: str, fd: int, sys, eperm_later: bool = False) -> bool:
    """setns(); False if it failed with EPERM and eperm_later (the caller retries later)."""
    try:
        sys.setns_fd(fd, NAMESPACE_FLAGS[t])
    except OSError as e:
        if eperm_later and e.errno == errno.EPERM:
            return False
        raise ContainerSetupError(STEP, e.strerror or str(e), f"ns/{PROC_NS[t]}") from None
    return True


def enter(namespaces: list[tuple[str, int]], sys) -> None:
    """setns() into each, in the given (planned) order, in two passes around the user
    namespace (see the module docstring); then root in a joined user namespace."""
    user = [(t, fd) for t, fd in namespaces if t == "user"]
    later = [(t, fd) for t, fd in namespaces if t != "user" and not _setns(t, fd, sys, True)]
    for t, fd in user + later:
        _setns(t, fd, sys)
    if user:
        become_root(sys)


def become_root(sys) -> None:
    """Root of the user namespace we just entered (its id 0 must be mapped)."""
    try:
        sys.setresgid(0)
        sys.setgroups([])
        sys.setresuid(0)
    except OSError as e:
        raise ContainerSetupError(USERNS_STEP, e.strerror or str(e)) from None


def unshare_user(sys, ask_parent) -> None:
    """A new user namespace, mapped by the parent (ask_parent() returns once it has written
    the mappings), and become root in it."""
    try:
        sys.unshare(NAMESPACE_FLAGS["user"])
    except OSError as e:
        raise ContainerSetupError(STEP, e.strerror or str(e)) from None
    ask_parent()
    become_root(sys)


# --- the parent's side -----------------------------------------------------------------------
def id_map(mappings) -> str:
    """The text of a uid_map/gid_map write: one "inside outside size" line per mapping."""
    return "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in mappings)


def write_id_mappings(pid: int, linux, sys, privileged: bool | None = None) -> None:
    """Map the new user namespace of process `pid` (which waits for it): linux.uidMappings
    and gidMappings, each in a single write as the kernel demands."""
    if privileged is None:
        privileged = posix.geteuid() == 0
    writes = [] if privileged else [("setgroups", "deny")]
    writes += [("uid_map", id_map(linux.uid_mappings)), ("gid_map", id_map(linux.gid_mappings))]
    for name, text in writes:
        path = f"/proc/{pid}/{name}"
        try:
            sys.write_file(path, text)
        except OSError as e:
            raise ContainerSetupError(USERNS_STEP, e.strerror or str(e), path) from None
