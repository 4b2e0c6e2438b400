"""Loading a compiled filter into the calling process, and handing a notify fd to its agent.

Invariant: nothing here needs libseccomp (the container init only gets bytes and an int), every
kernel call goes through ctypes' libc.syscall/prctl, and a failure is raised, never ignored:
after install() returns, the filter IS in force for this thread (all threads with TSYNC).
"""

import posix

from .. import fastjson as json
from ..errors import ContainerSetupError
from ..sys import ffi
from . import bpf
from .profile import Profile

SECCOMP_SET_MODE_FILTER = 1
FLAG_TSYNC = 1 << 0
FLAG_LOG = 1 << 1
FLAG_SPEC_ALLOW = 1 << 2
FLAG_NEW_LISTENER = 1 << 3
FLAG_TSYNC_ESRCH = 1 << 4
FLAG_WAIT_KILLABLE_RECV = 1 << 5
_SPEC_FLAGS = {"SECCOMP_FILTER_FLAG_TSYNC": FLAG_TSYNC, "SECCOMP_FILTER_FLAG_LOG": FLAG_LOG,
               "SECCOMP_FILTER_FLAG_SPEC_ALLOW": FLAG_SPEC_ALLOW,
               "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": FLAG_WAIT_KILLABLE_RECV}
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_FD_NAME = "seccompFd"  # runtime-spec: the name of the fd in ContainerProcessState.fds
OCI_VERSION = "1.2.0"

# __NR_seccomp per `uname -m` (no libc wrapper for seccomp(2) in older glibc)
_NR_SECCOMP = {"x86_64": 317, "aarch64": 277, "riscv64": 277, "loongarch64": 277,
               "ppc64le": 358, "ppc64": 358, "s390x": 348, "i686": 354, "i386": 354,
               "armv7l": 383, "armv8l": 383}


class _SockFprog(ffi.Structure):  # struct sock_fprog
    _fields_ = [("len", ffi.c_ushort), ("filter", ffi.c_void_p)]


_libc = ffi.CDLL(None)
_libc.syscall.restype = ffi.c_long


def _seccomp(op: int, flags: int, arg) -> int:
    """seccomp(2); returns the result or -errno."""
    machine = posix.uname().machine
    nr = _NR_SECCOMP.get(machine)
    if nr is None:
        raise ContainerSetupError("seccomp", f"seccomp(2) number unknown on {machine}")
    rc = _libc.syscall(ffi.c_long(nr), ffi.c_ulong(op), ffi.c_ulong(flags), arg)
    return -ffi.get_errno() if rc < 0 else rc


def flag_supported(flag: int) -> bool:
    """Whether the running kernel knows a SECCOMP_FILTER_FLAG_*: with a NULL program it fails
    with EFAULT after the flag check and before installing anything (libseccomp's own probe)."""
    if flag & FLAG_WAIT_KILLABLE_RECV:
        flag |= FLAG_NEW_LISTENER  # the kernel refuses it alone, supported or not
    return _seccomp(SECCOMP_SET_MODE_FILTER, flag, ffi.c_void_p(0)) == -14  # EFAULT


def filter_flags(profile: Profile) -> int:
    """The seccomp(2) flags for a profile, as runc computes them: flags absent (not merely
    empty) means SPEC_ALLOW when the kernel has it; any NOTIFY rule asks for a listener fd.
    Unlike runc we pass TSYNC on (it is harmless and what the spec asks for) and keep
    WAIT_KILLABLE_RECV only with a listener, the one case where the kernel accepts it."""
    if profile.flags is None:
        flags = FLAG_SPEC_ALLOW if flag_supported(FLAG_SPEC_ALLOW) else 0
    else:
        flags = 0
        for name in profile.flags:
            flags |= _SPEC_FLAGS[name]
    if profile.uses_notify:
        flags |= FLAG_NEW_LISTENER
        if flags & FLAG_TSYNC:
            flags |= FLAG_TSYNC_ESRCH  # TSYNC returns a tid on failure, which clashes with the fd
    else:
        flags &= ~FLAG_WAIT_KILLABLE_RECV
    return flags


def set_no_new_privs() -> None:
    """prctl(PR_SET_NO_NEW_PRIVS, 1): what lets an unprivileged process install a filter."""
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise ContainerSetupError("seccomp", f"prctl(PR_SET_NO_NEW_PRIVS): "
                                             f"{posix.strerror(ffi.get_errno())}")


def install(program: bytes, flags: int = 0) -> int | None:
    """Load `program` (from compile()) with seccomp(SECCOMP_SET_MODE_FILTER, flags). The caller
    must already have no_new_privs or CAP_SYS_ADMIN in its user namespace: OCI loads the filter
    before dropping capabilities when process.noNewPrivileges is false. Returns the listener
    fd when flags has FLAG_NEW_LISTENER (the caller owns it), else None."""
    count, rest = divmod(len(program), 8)
    if rest or not 0 < count <= bpf.MAX_INSNS:
        raise ContainerSetupError("seccomp", f"invalid BPF program of {len(program)} bytes")
    buf = ffi.create_string_buffer(program, len(program))
    fprog = _SockFprog(count, ffi.addressof(buf))
    rc = _seccomp(SECCOMP_SET_MODE_FILTER, flags, ffi.byref(fprog))
    if rc < 0:
        hint = " (needs no_new_privs or CAP_SYS_ADMIN)" if rc == -13 else ""
        raise ContainerSetupError("seccomp", f"seccomp(SET_MODE_FILTER, {flags:#x}): "
                                             f"{posix.strerror(-rc)}{hint}")
    if flags & FLAG_NEW_LISTENER:
        return rc
    if rc:  # TSYNC without ESRCH: rc is the thread that could not be synchronized
        raise ContainerSetupError("seccomp", f"TSYNC failed: thread {rc} cannot take the filter")
    return None


def process_state(pid: int, state: dict, metadata: str | None = None,
                  oci_version: str = OCI_VERSION) -> dict:
    """runtime-spec's ContainerProcessState, the message the seccomp agent receives."""
    msg = {"ociVersion": oci_version, "fds": [SECCOMP_FD_NAME], "pid": pid, "state": state}
    if metadata:
        msg["metadata"] = metadata
    return msg


def send_listener_fd(listener_path: str, seccomp_fd: int, pid: int, state: dict,
                     metadata: str | None = None, oci_version: str = OCI_VERSION) -> None:
    """Connect to listenerPath (AF_UNIX, SOCK_STREAM), send one ContainerProcessState with the
    fd attached (SCM_RIGHTS), close: the spec's one-state-per-connection rule. Called from the
    runtime side, where listenerPath resolves (not from inside the container's mount ns)."""
    data = json.dumps(process_state(pid, state, metadata, oci_version)).encode()
    try:
        import socket  # on use (SCMP_ACT_NOTIFY only): ~2 ms of start-up
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(listener_path)
            sent = socket.send_fds(sock, [data], [seccomp_fd])
            sock.sendall(data[sent:])  # a stream may take less than all; fds went with byte 0
    except OSError as e:
        raise ContainerSetupError("seccomp listener", f"sending the seccomp fd to the agent: {e}",
                                  path=listener_path) from e
