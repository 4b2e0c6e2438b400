"""The part of ctypes the syscall layer uses, built on ctypes' own C core (_ctypes).

Every pyshim-runc create, run and exec imports the syscall layer; `import ctypes` costs ~1.3 ms
of that start-up (its package defines every C type, the function-prototype caches, struct and
the endianness helpers), _ctypes and these few types ~0.4 ms. The objects are the real ctypes
ones (a c_int here is a _SimpleCData of type "i", as ctypes.c_int is; CDLL calls go through
_ctypes.CFuncPtr with ctypes.CDLL's flags), so the semantics are ctypes': argtypes and restype
conversions, byref, Structure layouts, errno captured per call (use_errno) and read with
get_errno().

Invariant: only what the engine needs (runtime.sys.linux, libseccomp's binding and the seccomp
filter's installation in runtime.seccomp, the eBPF device filter in runtime.cgroups.devices_bpf):
no module of the engine imports ctypes, whose package also imports os (runtime.ospath).
"""

from _ctypes import (FUNCFLAG_CDECL, FUNCFLAG_USE_ERRNO, POINTER, RTLD_GLOBAL, CFuncPtr,
                     Structure, _SimpleCData, addressof, byref, dlopen, get_errno, sizeof)

__all__ = ["CDLL", "POINTER", "Structure", "addressof", "byref", "c_char", "c_char_p", "c_int",
           "c_long", "c_size_t", "c_uint", "c_uint32", "c_uint64", "c_ulong", "c_ushort",
           "c_void_p", "create_string_buffer", "get_errno", "sizeof"]


def _simple(name: str, code: str) -> type:
    """A C scalar type as ctypes defines it: a _SimpleCData subclass with its struct code."""
    return type(name, (_SimpleCData,), {"_type_": code, "__module__": __name__})


c_int = _simple("c_int", "i")
c_uint = _simple("c_uint", "I")
c_uint32 = c_uint  # "I" is 32 bits on every Linux ABI CPython supports
c_ushort = _simple("c_ushort", "H")
c_uint64 = _simple("c_uint64", "Q")
c_long = _simple("c_long", "l")
c_ulong = _simple("c_ulong", "L")
c_size_t = c_ulong  # as ctypes has it where sizeof(size_t) == sizeof(long): Linux
c_char = _simple("c_char", "c")
c_char_p = _simple("c_char_p", "z")
c_void_p = _simple("c_void_p", "P")


class _CFunction(CFuncPtr):
    """A C function of a CDLL(use_errno=True): cdecl, errno saved after each call, int result
    unless restype says otherwise (ctypes.CDLL's _FuncPtr)."""
    _flags_ = FUNCFLAG_CDECL | FUNCFLAG_USE_ERRNO
    _restype_ = c_int


class CDLL:
    """ctypes.CDLL(name, use_errno=True): functions by attribute, each made once."""

    def __init__(self, name: str | None):
        self._name = name
        self._handle = dlopen(name, RTLD_GLOBAL)

    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        func = _CFunction((name, self))
        func.__name__ = name
        setattr(self, name, func)
        return func


def create_string_buffer(init: bytes | int, size: int | None = None):
    """ctypes.create_string_buffer: a zeroed char array of `init` bytes, or one holding the
    bytes `init` (of `size` bytes; by default one more, for a NUL)."""
    if isinstance(init, int):
        return (c_char * init)()
    buf = (c_char * (len(init) + 1 if size is None else size))()
    buf.value = init
    return buf
