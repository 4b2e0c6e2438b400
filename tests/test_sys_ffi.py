"""runtime.sys.ffi: ctypes' core without the ctypes package, as runtime.sys.linux uses it."""

import errno
import os

import pytest

from runtime.sys import ffi


def test_the_types_are_ctypes_own():
    import ctypes
    for name in ("c_int", "c_uint", "c_uint32", "c_long", "c_ulong", "c_size_t", "c_char",
                 "c_char_p", "c_void_p"):
        ours, theirs = getattr(ffi, name), getattr(ctypes, name)
        assert ffi.sizeof(ours) == ctypes.sizeof(theirs), name
        assert ours._type_ == theirs._type_, name
    assert ffi.c_ulong(-1).value == 2**64 - 1  # unsigned wrap, as RLIM_INFINITY needs


def test_calls_convert_arguments_and_keep_errno():
    libc = ffi.CDLL(None)
    assert libc.getpid() == os.getpid()
    assert libc.getpid is libc.getpid  # made once
    libc.umount2.argtypes = [ffi.c_char_p, ffi.c_int]
    assert libc.umount2(b"/nonexistent/pyshim-ffi-test", 0) == -1
    assert ffi.get_errno() in (errno.ENOENT, errno.EPERM)
    libc.syscall.restype = ffi.c_long
    assert libc.syscall(39 if os.uname().machine == "x86_64" else 172) == os.getpid()  # getpid


def test_structures_and_byref_and_buffers():
    class Pair(ffi.Structure):
        _fields_ = [("a", ffi.c_ulong), ("b", ffi.c_ulong)]
    p = Pair(1, 2)
    assert (p.a, p.b, ffi.sizeof(p)) == (1, 2, 16)
    libc = ffi.CDLL(None)
    got = Pair()
    assert libc.prlimit(0, 7, None, ffi.byref(got)) == 0  # RLIMIT_NOFILE
    import resource
    assert (got.a, got.b) == resource.getrlimit(resource.RLIMIT_NOFILE)
    buf = ffi.create_string_buffer(8)
    assert len(buf) == 8 and bytes(buf) == bytes(8)


def _in_child(fn) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            fn()
            os._exit(0)
        except BaseException:  # noqa: BLE001
            os._exit(1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_setrlimit_takes_every_spec_rlimit_and_infinity():
    """Python's resource module has no RLIMIT_LOCKS: setrlimit through it failed for a spec
    that set it; prlimit(2) takes all sixteen."""
    import resource

    from runtime.sys.linux import LINUX

    def set_and_check():
        LINUX.setrlimit("RLIMIT_LOCKS", 100, 200)
        with open("/proc/self/limits") as f:
            locks = next(line for line in f if line.startswith("Max file locks"))
        assert locks.split()[3:5] == ["100", "200"], locks
        LINUX.setrlimit("RLIMIT_CORE", 0, -1)  # -1: RLIM_INFINITY
        assert resource.getrlimit(resource.RLIMIT_CORE) == (0, resource.RLIM_INFINITY)
    assert _in_child(set_and_check) == 0


def test_setrlimit_errors_name_the_limit():
    from runtime.sys.linux import LINUX

    def soft_above_hard():
        with pytest.raises(OSError) as e:
            LINUX.setrlimit("RLIMIT_NOFILE", 20, 10)
        assert e.value.errno == errno.EINVAL and "setrlimit RLIMIT_NOFILE" in str(e.value)
    assert _in_child(soft_above_hard) == 0


def test_the_c_structs_made_by_hand_are_structs_own():
    import struct
    import sys

    from runtime.sys import linux as L
    assert L._u64s(1, 2, 0, 2**64 - 1) == struct.pack("QQQQ", 1, 2, 0, 2**64 - 1)
    for flags in (0, 0x1043, -1):
        assert L._ifreq_flags(b"lo", flags) == struct.pack("16sh22x", b"lo", flags)
    assert L._int(struct.pack("I", 7)) == 7
    assert L._int(struct.pack("h", -2), signed=True) == -2
    calls = []
    monkey_libc = type("Libc", (), {"syscall": lambda self, *a: calls.append(a) or 0})()
    real = L._libc
    L._libc = monkey_libc
    try:
        L.Linux().sched_setattr(6, 1, -5, 0, 10, 20, 30)
        L.Linux().mount_setattr("/x", 1, 2)
    finally:
        L._libc = real
    assert calls[0][2] == struct.pack("IIQiIQQQ", 48, 6, 1, -5, 0, 10, 20, 30)
    assert struct.pack("QQQQ", 1, 2, 0, 0) in calls[1]
    assert sys.byteorder in ("little", "big")
