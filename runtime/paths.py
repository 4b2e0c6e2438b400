"""Path handling confined to a container root.

Invariant: secure_join(root, p) never returns a path outside `root`, whatever symlinks the
rootfs contains: links are resolved one component at a time, an absolute link target restarts
at `root`, and ".." never climbs above it (the same semantics as filepath-securejoin, which
runc uses). Lexical escapes in the spec itself are rejected earlier by clean().
"""

import errno
import posix

from . import ospath

MAX_SYMLINKS = 255


def clean(path: str) -> str | None:
    """Lexically normalise an absolute container path; None if ".." climbs above "/"."""
    parts: list[str] = []
    for c in path.split("/"):
        if c in ("", "."):
            continue
        if c == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(c)
    return "/" + "/".join(parts)


def secure_join(root: str, unsafe: str, readlink=posix.readlink) -> str:
    """`root` + `unsafe` with every symlink in it resolved as if `root` were "/".

    Components that do not exist (yet) are kept literally; `readlink` is injectable so the
    fake syscall layer can serve it.
    """
    root = root.rstrip("/") or "/"
    resolved: list[str] = []
    pending = [c for c in unsafe.split("/") if c]
    links = 0
    while pending:
        c = pending.pop(0)
        if c == ".":
            continue
        if c == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = ospath.join(root, *resolved, c)
        try:
            target = readlink(candidate)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.ENOENT, errno.ENOTDIR):
                resolved.append(c)  # not a link, or nothing there yet
                continue
            raise
        links += 1
        if links > MAX_SYMLINKS:
            raise OSError(errno.ELOOP, f"resolve {unsafe} in {root}: {posix.strerror(errno.ELOOP)}")
        if target.startswith("/"):
            resolved = []
        pending = [p for p in target.split("/") if p] + pending
    return ospath.join(root, *resolved)
