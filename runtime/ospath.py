"""What the engine takes from os and os.path, on posix alone.

`import os` costs ~0.7 ms and ~60 page faults of every CLI command here (os.py itself, and
_collections_abc for os.environ's mapping class), and nothing else the CLI imports loads it.
os's functions are posix's own (os re-exports them), so the engine's modules call posix
directly; os's few Python-level helpers are here, with posixpath's semantics for str paths.
(Off the CLI's common path, runtime.netdev, runtime.idmap and runtime.checkpoint, which load
pyroute2, fork helpers or drive CRIU anyway, still use os; so do the shim and the tests.)

    join, normpath, abspath, relpath, dirname, basename      (lexical, as posixpath)
    exists, lexists, isdir                                   (stat; False on any error)
    makedirs(name, mode, exist_ok)                           (os.makedirs)
    fsencode(path), getenv(key, default)                     (os.fsencode, os.environ.get)
    SEEK_SET, SEEK_CUR, SEEK_END

Invariant: nothing here imports os (tests/test_ospath.py compares every function with its
posixpath/os counterpart, and checks that the CLI's modules leave os unloaded).
"""

import posix
import sys
from _stat import S_ISDIR

SEP = "/"
SEEK_SET, SEEK_CUR, SEEK_END = 0, 1, 2  # os defines them, posix does not
_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()


# --- lexical -----------------------------------------------------------------------------------
def join(a: str, *p: str) -> str:
    path = a
    for b in p:
        if b.startswith(SEP):
            path = b
        elif not path or path.endswith(SEP):
            path += b
        else:
            path += SEP + b
    return path


def normpath(path: str) -> str:
    if not path:
        return "."
    initial = 0
    if path.startswith(SEP):
        # POSIX: one or two leading slashes stay as they are, three or more are one
        initial = 2 if path.startswith("//") and not path.startswith("///") else 1
    comps: list[str] = []
    for c in path.split(SEP):
        if c in ("", "."):
            continue
        if c != ".." or (not initial and not comps) or (comps and comps[-1] == ".."):
            comps.append(c)
        elif comps:
            comps.pop()
    return SEP * initial + SEP.join(comps) or "."


def abspath(path: str) -> str:
    if not path.startswith(SEP):
        path = join(posix.getcwd(), path)
    return normpath(path)


def relpath(path: str, start: str = ".") -> str:
    if not path:
        raise ValueError("no path specified")
    start_list = [x for x in abspath(start).split(SEP) if x]
    path_list = [x for x in abspath(path).split(SEP) if x]
    i = 0
    for a, b in zip(start_list, path_list):
        if a != b:
            break
        i += 1
    rel = [".."] * (len(start_list) - i) + path_list[i:]
    return join(*rel) if rel else "."


def dirname(p: str) -> str:
    head = p[:p.rfind(SEP) + 1]
    if head and head != SEP * len(head):
        head = head.rstrip(SEP)
    return head


def basename(p: str) -> str:
    return p[p.rfind(SEP) + 1:]


# --- the filesystem ----------------------------------------------------------------------------
def _stat(stat, path: str):
    try:
        return stat(path)
    except (OSError, ValueError):
        return None


def exists(path: str) -> bool:
    return _stat(posix.stat, path) is not None


def lexists(path: str) -> bool:
    return _stat(posix.lstat, path) is not None


def isdir(path: str) -> bool:
    st = _stat(posix.stat, path)
    return st is not None and S_ISDIR(st.st_mode)


def makedirs(name: str, mode: int = 0o777, exist_ok: bool = False) -> None:
    """os.makedirs: the missing parents with mode 0o777 (less the umask), `name` with `mode`."""
    head, tail = dirname(name), basename(name)
    if not tail:
        head, tail = dirname(head), basename(head)
    if head and tail and not exists(head):
        try:
            makedirs(head, exist_ok=exist_ok)
        except FileExistsError:
            pass  # made meanwhile by someone else
        if tail == ".":
            return
    try:
        posix.mkdir(name, mode)
    except OSError:
        if not exist_ok or not isdir(name):
            raise


# --- encoding and the environment --------------------------------------------------------------
def fsencode(path: str) -> bytes:
    return path.encode(_FS_ENCODING, _FS_ERRORS)


def getenv(key: str, default: str | None = None) -> str | None:
    """os.environ.get. posix.environ is the environment as the process started with it; once
    something has loaded os (the shim, tests), os.environ is the one that may have changed."""
    os = sys.modules.get("os")
    if os is not None:
        return os.environ.get(key, default)
    value = posix.environ.get(fsencode(key))
    return default if value is None else value.decode(_FS_ENCODING, _FS_ERRORS)
