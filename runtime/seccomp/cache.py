"""Compiled filters kept by digest: a profile libseccomp has compiled once is read back.

libseccomp takes ~10 ms to compile containerd's default profile, which every CRI container and
every exec in one (probes included) carries; crun keeps its filters the same way
(/run/crun/.seccomp-cache). The cache is a directory of the engine's root (`.seccomp-cache`:
`list` sees no container there), one file per filter, named by the digest of its key.

Invariants:
- The key is all compile()'s output depends on: the parsed profile (its repr shows every
  field), libseccomp (its version and the identity of the file loaded: a package update that
  keeps the version is a new key too), the machine, and the source of this package's compiler
  (compiler, profile and bpf: a change there is a new key for every profile). A process whose
  libseccomp file was replaced after it loaded it uses no cache.
- An entry is used only if it is a regular file of ours (not a link, owned by our euid) whose
  size is a whole number of instructions the kernel would take; anything else is compiled
  again and replaced.
- Only compile()'s successes are kept, written atomically (a temporary file renamed into
  place): a concurrent create reads a whole filter or none. A cache that cannot be read or
  written costs the compile and nothing else: never an error.
- At most MAX_ENTRIES files: adding one removes the least recently used beyond that (a hit
  touches its file).
"""

import posix
from _stat import S_ISREG

try:
    from _sha256 import sha256  # CPython's own, built in: hashlib loads OpenSSL (~2.4 ms)
except ImportError:  # pragma: no cover - a Python without it
    from hashlib import sha256

from .. import ospath
from . import bpf
from .compiler import compile, version
from .profile import Profile

DIRNAME = ".seccomp-cache"
MAX_ENTRIES = 64
_SUFFIX = ".bpf"
_SOURCES = ("compiler.py", "profile.py", "bpf.py")
_library_id: str | None = None  # "" once looked for and not found


def compile_cached(profile: Profile, cache_dir: str | None) -> bytes:
    """compile(profile), or the filter a previous compile of the same key left in cache_dir
    (None: no cache)."""
    if cache_dir is None or _library() is None:
        return compile(profile)
    path = ospath.join(cache_dir, key(profile) + _SUFFIX)
    program = _read(path)
    if program is not None:
        return program
    program = compile(profile)
    _write(cache_dir, path, program)
    return program


def key(profile: Profile) -> str:
    h = sha256()
    for part in (repr(profile), _library() or "", posix.uname().machine, _source_digest):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _library() -> str | None:
    """libseccomp as this process loaded it: its version and its file's identity (from our
    own maps); None when that file has been replaced since, or cannot be told."""
    global _library_id
    if _library_id is None:
        v = version()  # loads it
        try:
            with open("/proc/self/maps") as f:
                found = mapped_file(f.read(), "/libseccomp")
        except OSError:
            found = None
        _library_id = f"{v} {found}" if found else ""
    return _library_id or None


def mapped_file(maps: str, name: str, stat=posix.stat) -> str | None:
    """"path dev inode size mtime" of the first file in `maps` (/proc/<pid>/maps) whose path
    contains `name`, if that path is still the file mapped: None when it is gone (the kernel
    appends " (deleted)") or another file now (a package update renames a new one over it)."""
    for line in maps.splitlines():
        fields = line.split(None, 5)
        if len(fields) == 6 and name in fields[5]:
            try:
                st = stat(fields[5])
            except OSError:
                return None
            if st.st_ino != int(fields[4]):
                return None
            return f"{fields[5]} {st.st_dev} {st.st_ino} {st.st_size} {st.st_mtime_ns}"
    return None


def _sources() -> str:
    h = sha256()
    here = ospath.dirname(__file__)
    for name in _SOURCES:
        with open(ospath.join(here, name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()


# Read now, beside the code that was just loaded: a process that lives on (the shim) keys
# on the compiler it runs, not on sources changed under it since.
_source_digest = _sources()


def _read(path: str) -> bytes | None:
    try:
        fd = posix.open(path, posix.O_RDONLY | posix.O_NOFOLLOW | posix.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = posix.fstat(fd)
        size = st.st_size
        if (not S_ISREG(st.st_mode) or st.st_uid != posix.geteuid() or size % 8
                or not 0 < size // 8 <= bpf.MAX_INSNS):
            return None
        data = posix.read(fd, size + 1)
        if len(data) != size:
            return None
        posix.utime(fd)  # recently used
        return data
    except OSError:
        return None
    finally:
        posix.close(fd)


def _write(cache_dir: str, path: str, program: bytes) -> None:
    tmp = f"{path}.{posix.getpid()}.tmp"
    try:
        ospath.makedirs(cache_dir, 0o700, exist_ok=True)
        fd = posix.open(tmp, posix.O_WRONLY | posix.O_CREAT | posix.O_EXCL | posix.O_NOFOLLOW
                        | posix.O_CLOEXEC, 0o600)
        try:
            view = memoryview(program)
            while view:
                view = view[posix.write(fd, view):]
        finally:
            posix.close(fd)
        posix.replace(tmp, path)
    except OSError:
        _unlink(tmp)  # (if it got that far)
        return
    _trim(cache_dir)


def _trim(cache_dir: str) -> None:
    """Remove the least recently used entries beyond MAX_ENTRIES."""
    try:
        entries = []
        with posix.scandir(cache_dir) as it:
            for e in it:
                if e.name.endswith(_SUFFIX):
                    entries.append((e.stat(follow_symlinks=False).st_mtime_ns, e.path))
    except OSError:
        return
    entries.sort()
    for _, path in entries[:max(len(entries) - MAX_ENTRIES, 0)]:
        _unlink(path)


def _unlink(path: str) -> None:
    try:
        posix.unlink(path)
    except OSError:
        pass

