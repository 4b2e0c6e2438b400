"""Profile -> classic BPF bytes, by driving libseccomp (libseccomp.so.2) through ctypes'
core (runtime.sys.ffi).

Invariant: compile() is deterministic for a given profile, libseccomp and host arch, never
touches the calling process's own seccomp state (it exports the program, it never loads it),
and the result is what runc would load: libseccomp's filter with runc's -ENOSYS stub in front.
libseccomp is loaded on the first compile(), so importing this module costs nothing.
"""

import posix

from .. import ospath
from ..errors import EngineError, InvalidSpec
from ..sys import ffi
from . import bpf
from .profile import ARCHES, ENOSYS, FIELD, OPS, Profile, action_value, plan

_NR_SCMP_ERROR = -1
_ATTR_OPTIMIZE = 8     # SCMP_FLTATR_CTL_OPTIMIZE
_ATTR_SYSRAWRC = 9     # SCMP_FLTATR_API_SYSRAWRC: return the kernel's errno, not -ECANCELED
_OPTIMIZE_TREE = 2     # binary tree of syscalls instead of a linear list
_OPTIMIZE_ABOVE = 32   # runc: libseccomp <= 2.5.4 misbehaves with the tree and 0 rules
_ALLOW_LIKE = ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE")


class _ArgCmp(ffi.Structure):  # struct scmp_arg_cmp
    _fields_ = [("arg", ffi.c_uint), ("op", ffi.c_int),
                ("datum_a", ffi.c_uint64), ("datum_b", ffi.c_uint64)]


class _Version(ffi.Structure):  # struct scmp_version
    _fields_ = [("major", ffi.c_uint), ("minor", ffi.c_uint), ("micro", ffi.c_uint)]


_lib = None


def _load():
    global _lib
    if _lib is not None:
        return _lib
    try:
        lib = ffi.CDLL("libseccomp.so.2")
    except OSError as e:
        raise EngineError(f"seccomp needs libseccomp.so.2 (Debian: libseccomp2): {e}") from e
    c, u32, ptr = ffi.c_int, ffi.c_uint32, ffi.c_void_p
    for name, res, args in (
            ("seccomp_init", ptr, [u32]), ("seccomp_release", None, [ptr]),
            ("seccomp_version", ffi.POINTER(_Version), []),
            ("seccomp_arch_native", u32, []), ("seccomp_arch_resolve_name", u32, [ffi.c_char_p]),
            ("seccomp_arch_exist", c, [ptr, u32]), ("seccomp_arch_add", c, [ptr, u32]),
            ("seccomp_attr_set", c, [ptr, c, u32]),
            ("seccomp_syscall_resolve_name_arch", c, [u32, ffi.c_char_p]),
            ("seccomp_rule_add_array", c, [ptr, u32, c, ffi.c_uint, ffi.POINTER(_ArgCmp)]),
            ("seccomp_export_bpf", c, [ptr, c])):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    _lib = lib
    return lib


def version() -> str:
    v = _load().seccomp_version().contents
    return f"{v.major}.{v.minor}.{v.micro}"


def resolve(name: str, arch: str | None = None) -> int | None:
    """A syscall's number on `arch` ("SCMP_ARCH_X86"; None = native) as this libseccomp knows
    it, None when unknown. Negative numbers are libseccomp's pseudo-syscalls."""
    lib = _load()
    token = _arch_token(lib, arch) if arch else 0  # 0 = SCMP_ARCH_NATIVE
    if arch and not token:
        return None
    nr = _sysno(lib, token, name)
    return None if nr == _NR_SCMP_ERROR else nr


def _arch_token(lib, arch: str) -> int:
    """"SCMP_ARCH_X86_64" -> libseccomp's token; 0 when this libseccomp does not know it."""
    return lib.seccomp_arch_resolve_name(arch[len("SCMP_ARCH_"):].lower().encode())


def _arches(lib, profile: Profile) -> dict[str, int]:
    """Profile arches plus the native one (runc never removes native), name -> token."""
    tokens = {}
    for i, arch in enumerate(profile.architectures):
        tokens[arch] = _arch_token(lib, arch)
        if not tokens[arch]:
            raise InvalidSpec(f"{FIELD}.architectures[{i}]",
                              f"{arch} is not supported by libseccomp {version()}")
    native = lib.seccomp_arch_native()
    if native not in tokens.values():
        tokens[_native_name(lib, native)] = native
    return tokens


def _native_name(lib, token: int) -> str:
    return next(a for a in ARCHES if _arch_token(lib, a) == token)


def _sysno(lib, token: int, name: str) -> int:
    return lib.seccomp_syscall_resolve_name_arch(token, name.encode())


def _add_rules(lib, ctx, profile: Profile) -> None:
    for rule in plan(profile):
        # 0 = SCMP_ARCH_NATIVE. Negative pseudo-numbers (a call missing on the native arch but
        # present on another, e.g. socketcall) are fine; only unknown names are skipped, as runc.
        nr = _sysno(lib, 0, rule.name)
        if nr == _NR_SCMP_ERROR:
            continue
        conds = (_ArgCmp * max(len(rule.conditions), 1))(
            *[(a.index, OPS[a.op], a.value, a.value_two) for a in rule.conditions])
        rc = lib.seccomp_rule_add_array(ctx, action_value(rule.action, rule.errno), nr,
                                        len(rule.conditions), conds)
        if rc < 0:
            raise InvalidSpec(f"{FIELD}.syscalls[{rule.entry}]",
                              f"libseccomp refused the rule for {rule.name}: {posix.strerror(-rc)}")


def _export(lib, ctx) -> bytes:
    fd = posix.memfd_create("seccomp-bpf", posix.MFD_CLOEXEC)  # no pipe: no size limit, no deadlock
    try:
        rc = lib.seccomp_export_bpf(ctx, fd)
        if rc < 0:
            raise EngineError(f"seccomp_export_bpf: {posix.strerror(-rc)}")
        size = posix.lseek(fd, 0, ospath.SEEK_CUR)
        return posix.pread(fd, size, 0)
    finally:
        posix.close(fd)


def _needs_stub(profile: Profile) -> bool:
    if profile.default_action in _ALLOW_LIKE:
        return False  # unknown syscalls are already let through
    return not (profile.default_action == "SCMP_ACT_ERRNO" and profile.default_errno_ret == ENOSYS)


def _last_syscalls(lib, profile: Profile, arches: dict[str, int]) -> dict[int, dict[str, int]]:
    """runc's findLastSyscalls: per audit arch, the largest number named by ANY entry (even
    ones dropped as redundant); x32 shares x86_64's audit arch, keyed apart by name."""
    names = {n for call in profile.syscalls for n in call.names}
    last: dict[int, dict[str, int]] = {}
    for arch, token in arches.items():
        audit = bpf.AUDIT_ARCH_X86_64 if arch == "SCMP_ARCH_X32" else token
        largest = max((_sysno(lib, token, n) for n in names), default=0)
        if largest > 0:
            last.setdefault(audit, {})[arch] = largest
    return last


def compile(profile: Profile) -> bytes:
    """The sock_filter array to hand to install(); raises InvalidSpec for what this libseccomp
    cannot express, EngineError when libseccomp itself fails."""
    lib = _load()
    ctx = lib.seccomp_init(action_value(profile.default_action, profile.default_errno_ret))
    if not ctx:
        raise EngineError("seccomp_init failed")
    try:
        lib.seccomp_attr_set(ctx, _ATTR_SYSRAWRC, 1)  # best effort: libseccomp >= 2.5
        arches = _arches(lib, profile)
        for token in arches.values():
            if lib.seccomp_arch_exist(ctx, token) != 0:
                rc = lib.seccomp_arch_add(ctx, token)
                if rc < 0:
                    raise EngineError(f"seccomp_arch_add({token:#x}): {posix.strerror(-rc)}")
        if sum(len(c.names) for c in profile.syscalls) > _OPTIMIZE_ABOVE:
            lib.seccomp_attr_set(ctx, _ATTR_OPTIMIZE, _OPTIMIZE_TREE)  # optional speed-up
        _add_rules(lib, ctx, profile)
        program = _export(lib, ctx)
        if _needs_stub(profile):
            stub = bpf.enosys_stub(_last_syscalls(lib, profile, arches))
            program = bpf.encode(stub) + program
    finally:
        lib.seccomp_release(ctx)
    if len(program) // 8 > bpf.MAX_INSNS:
        raise InvalidSpec(FIELD, f"the filter has {len(program) // 8} BPF instructions, "
                                 f"more than the kernel's {bpf.MAX_INSNS}")
    return program
