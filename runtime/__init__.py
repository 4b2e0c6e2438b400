"""pyshim's embedded OCI runtime engine (no runc/crun binary).

Entry point: runtime.container.Engine. Errors: runtime.errors.

The package's own modules load through _PycFinder, a shorter road to the same place:
importlib's path finder and source loader spend ~8 us of Python and seven syscalls on each
module before it unmarshals the bytecode (the directory's stat and listing, io's buffered
file with its fstat, isatty probe and seek, the source's stat): 0.6-0.9 ms of a `pyshim-runc
run`, which imports ~35 of them (measured against importlib's road, side by side). _PycFinder takes a plain
module runtime.X.Y when runtime/X/__pycache__/Y.<tag>.pyc is a timestamp pyc that matches
runtime/X/Y.py's mtime and size: exactly the check importlib makes. Anything else (no or a
stale pyc, a hash-based one, a package, a bad marshal, another search path, -O, a pycache
prefix) is left to importlib, which compiles and writes the pyc as ever. A module it loads
looks like one importlib loaded (__file__, __cached__, its spec's origin and cached, and a
SourceFileLoader for get_source), so tracebacks, inspect and coverage see no difference.
"""

import sys as _sys


def _install() -> None:
    import _imp
    import marshal
    import posix
    from _frozen_importlib import ModuleSpec
    from _frozen_importlib_external import MAGIC_NUMBER, SourceFileLoader

    root = __path__[0]
    prefix = __name__ + "."
    tag = _sys.implementation.cache_tag
    flags = b"\0\0\0\0"  # a timestamp pyc (PEP 552)

    class _Loader(SourceFileLoader):
        """importlib's loader for the file, with the code _PycFinder already read."""
        code = None

        def get_code(self, fullname):
            code, self.code = self.code, None
            if code is None or fullname != self.name:
                return super().get_code(fullname)
            return code

    class _PycFinder:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if not name.startswith(prefix) or target is not None or not path:
                return None
            head, _, tail = name.rpartition(".")
            folder = root + head[len(__name__):].replace(".", "/")
            if folder not in path:
                return None
            source = f"{folder}/{tail}.py"
            cached = f"{folder}/__pycache__/{tail}.{tag}.pyc"
            try:
                st = posix.stat(source)
                fd = posix.open(cached, posix.O_RDONLY | posix.O_CLOEXEC)
            except OSError:
                return None
            try:
                data = posix.read(fd, posix.fstat(fd).st_size)
            except OSError:
                return None
            finally:
                posix.close(fd)
            header = (MAGIC_NUMBER + flags + (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
                      + (st.st_size & 0xFFFFFFFF).to_bytes(4, "little"))
            if data[:16] != header:
                return None
            try:
                code = marshal.loads(memoryview(data)[16:])
            except (EOFError, ValueError, TypeError):
                return None
            _imp._fix_co_filename(code, source)
            loader = _Loader(name, source)
            loader.code = code
            spec = ModuleSpec(name, loader, origin=source)
            spec.has_location = True
            spec.cached = cached
            return spec

    _sys.meta_path.insert(0, _PycFinder)


if _sys.implementation.cache_tag and not _sys.flags.optimize and _sys.pycache_prefix is None:
    _install()
