"""Idmapped bind mounts (runtime-spec 1.1/1.2: mounts[].uidMappings/gidMappings, options idmap
and ridmap), the caller's half: made detached before the fork, moved in by the init.

For each such mount the caller (on the host, with its privileges, in its mount namespace):
1. gets a user namespace holding the mount's mappings (or, without any, the container's
   linux.uidMappings/gidMappings): a short-lived child unshares one and waits, the caller writes
   its uid_map/gid_map and opens /proc/<child>/ns/user, the child exits;
2. clones the source into a detached tree, open_tree(OPEN_TREE_CLONE): the source's mounts
   below it too with ridmap, or with rbind when no idmap option says otherwise;
3. idmaps the tree through that namespace, mount_setattr(MOUNT_ATTR_IDMAP).
The trees' fds (close-on-exec) are inherited by the children; the init moves each onto its
destination (mounts.IdmapBind, move_mount) where the plan has it, then the mount's other
options apply as to any bind mount. A file owned on disk by containerID N shows as hostID N'
through the mount: with the container's own mappings, root's files on the host are root's
in the container.

Invariants: every fd prepare() made is closed by it on failure and by close_all() once the
children have them; a failure names the mount (ContainerSetupError "idmapped mount", the
source path) and leaves no child behind.
"""

import os
import posixpath

from .child import fork_child, reset_caller_signals
from .errors import ContainerSetupError
from .sys.consts import CLONE_NEWUSER

STEP = "idmapped mount"


def wanted(spec) -> list[int]:
    """The indexes of spec.mounts that are idmapped (spec.check_supported validated them)."""
    return [i for i, m in enumerate(spec.mounts) if m.idmapped()]


def recursive(m) -> bool:
    """ridmap: the whole tree; idmap: the top mount only; neither (mappings alone, the 1.1
    form): as the bind itself, rbind recursive."""
    if "ridmap" in m.options:
        return True
    if "idmap" in m.options:
        return False
    return "rbind" in m.options


class _Maps:
    def __init__(self, uid_mappings, gid_mappings):
        self.uid_mappings, self.gid_mappings = uid_mappings, gid_mappings


def prepare(spec, bundle: str, sys) -> dict[int, int]:
    """{mount index: detached idmapped tree fd} for every idmapped mount of the spec."""
    from . import namespaces
    fds: dict[int, int] = {}
    try:
        for i in wanted(spec):
            m = spec.mounts[i]
            src = posixpath.normpath(posixpath.join(bundle, m.source or ""))
            maps = _Maps(m.uid_mappings or spec.linux.uid_mappings,
                         m.gid_mappings or spec.linux.gid_mappings)
            try:
                userns = user_namespace(maps, sys, namespaces.write_id_mappings)
                try:
                    fds[i] = sys.open_tree(src, recursive(m))
                    sys.idmap_tree(fds[i], userns, recursive(m))
                finally:
                    os.close(userns)
            except OSError as e:
                raise ContainerSetupError(STEP, f"mounts[{i}]: {e.strerror or e}", src) from None
    except BaseException:
        close_all(fds)
        raise
    return fds


def close_all(fds: dict[int, int] | None) -> None:
    for fd in (fds or {}).values():
        try:
            os.close(fd)
        except OSError:
            pass


def user_namespace(maps, sys, write_id_mappings) -> int:
    """An fd on a new user namespace with `maps` (uid_mappings, gid_mappings), made by a child
    that waits until it is mapped and opened, then exits (reaped here)."""
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)

    def child() -> int:
        reset_caller_signals()  # the caller's handlers (the CLI's forwarder) are not ours
        os.close(ready_r)
        os.close(go_w)
        try:
            sys.unshare(CLONE_NEWUSER)
        except OSError as e:
            os.write(ready_w, f"unshare a user namespace: {e.strerror}".encode())
            return 1
        os.write(ready_w, b"\0")
        os.read(go_r, 1)  # EOF: the caller has what it needs
        return 0

    pid = fork_child(child)
    os.close(ready_w)
    os.close(go_r)
    try:
        said = os.read(ready_r, 4096)
        if said != b"\0":
            raise OSError(0, said.decode(errors="replace") or "the user namespace helper died")
        write_id_mappings(pid, maps, sys)
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    except ContainerSetupError as e:  # write_id_mappings' own error
        raise OSError(0, str(e)) from None
    finally:
        os.close(ready_r)
        os.close(go_w)
        os.waitpid(pid, 0)
