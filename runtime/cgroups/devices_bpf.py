"""OCI device rules -> a BPF_PROG_TYPE_CGROUP_DEVICE program; load it and attach it to a cgroup.

Invariant (the program's semantics): a request (type, major, minor, access bits) is allowed
exactly when every requested access bit is granted by the LAST rule that matches the device
and mentions that bit; a bit no rule mentions is denied. A type "a" rule is a reset, as on
v1: it decides everything not decided by later rules, and the rules before it are dead. This
is "last matching rule wins, default deny" read per access bit, so a later "deny c 1:3 w"
blocks a read-write open of /dev/null but not a read-only one.

The program walks the rules last-to-first with the still-undecided bits in R3: an allow rule
that matches clears its bits (all clear -> allow), a deny rule that matches one undecided bit
denies. The kernel's context: u32 access_type (type low 16 bits, access high 16), major, minor.
"""

import errno
import posix
import struct

from ..sys import ffi
from .plan import DeviceRule

# uapi/linux/bpf.h
BPF_DEVCG_ACC_MKNOD, BPF_DEVCG_ACC_READ, BPF_DEVCG_ACC_WRITE = 1, 2, 4
BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_DEV_CHAR = 1, 2
ACCESS_BITS = {"m": BPF_DEVCG_ACC_MKNOD, "r": BPF_DEVCG_ACC_READ, "w": BPF_DEVCG_ACC_WRITE}
ALL_ACCESS = 7
TYPES = {"b": BPF_DEVCG_DEV_BLOCK, "c": BPF_DEVCG_DEV_CHAR}

# opcodes used (class | op | source)
LDXW = 0x61       # BPF_LDX | BPF_MEM | BPF_W:   dst = *(u32 *)(src + off)
AND32_K = 0x54    # BPF_ALU | BPF_AND | BPF_K:   dst = (u32)(dst & imm)
RSH32_K = 0x74    # BPF_ALU | BPF_RSH | BPF_K
MOV32_K = 0xB4    # BPF_ALU | BPF_MOV | BPF_K
MOV32_X = 0xBC    # BPF_ALU | BPF_MOV | BPF_X
JNE_K = 0x55      # BPF_JMP | BPF_JNE | BPF_K:   if dst != imm: pc += off
JEQ_K = 0x15      # BPF_JMP | BPF_JEQ | BPF_K
EXIT = 0x95       # BPF_JMP | BPF_EXIT:          return r0
R0, R1, R2, R3, R4, R5 = range(6)
NEXT = "next"     # placeholder jump target: the first instruction of the next block


def _i(code, dst=0, src=0, off=0, imm=0):
    return (code, dst, src, off, imm)


def _access(access: str) -> int:
    return sum(ACCESS_BITS[c] for c in set(access))


def _verdict(allow: bool) -> list:
    return [_i(MOV32_K, R0, imm=int(allow)), _i(EXIT)]


def _block(rule: DeviceRule) -> list:
    """Instructions for one c/b rule; jumps to NEXT when it does not decide the request."""
    out = [_i(JNE_K, R2, off=NEXT, imm=TYPES[rule.type])]
    if rule.major is not None:
        out.append(_i(JNE_K, R4, off=NEXT, imm=rule.major))
    if rule.minor is not None:
        out.append(_i(JNE_K, R5, off=NEXT, imm=rule.minor))
    acc = _access(rule.access)
    if acc != ALL_ACCESS:
        if rule.allow:  # undecided &= ~granted; anything left undecided: keep looking
            out += [_i(AND32_K, R3, imm=~acc), _i(JNE_K, R3, off=NEXT, imm=0)]
        else:  # deny only if it mentions an undecided bit
            out += [_i(MOV32_X, R1, R3), _i(AND32_K, R1, imm=acc), _i(JEQ_K, R1, off=NEXT, imm=0)]
    return out + _verdict(rule.allow)


def compile_rules(rules) -> list[tuple[int, int, int, int, int]]:
    """(code, dst, src, off, imm) tuples of the filter for `rules` (DeviceRules, in spec order)."""
    prog = [_i(LDXW, R2, R1, 0), _i(AND32_K, R2, imm=0xFFFF),  # R2 = device type
            _i(LDXW, R3, R1, 0), _i(RSH32_K, R3, imm=16),      # R3 = requested access bits
            _i(LDXW, R4, R1, 4), _i(LDXW, R5, R1, 8)]           # R4 = major, R5 = minor
    default = False
    for rule in reversed(list(rules)):
        if rule.type == "a":  # reset: decides all that is left; earlier rules are dead
            default = rule.allow
            break
        block = _block(rule)
        # NEXT = the instruction after this block: offset relative to the next pc
        prog += [(c, d, s, len(block) - k - 1 if o == NEXT else o, imm)
                 for k, (c, d, s, o, imm) in enumerate(block)]
    return prog + _verdict(default)


def assemble(insns) -> bytes:
    """struct bpf_insn: u8 code, u8 dst:4|src:4 (little-endian bitfields), s16 off, s32 imm."""
    return b"".join(struct.pack("<BBhi", c, (s << 4) | d, o, imm) for c, d, s, o, imm in insns)


# --- the bpf(2) syscall, through runtime.sys.ffi ------------------------------------------------

BPF_PROG_LOAD, BPF_PROG_ATTACH, BPF_PROG_DETACH = 5, 8, 9
BPF_PROG_GET_FD_BY_ID, BPF_PROG_QUERY = 13, 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2
SYS_BPF = {"x86_64": 321, "aarch64": 280}
ATTR_SIZE = 128  # > every field we set; the kernel requires the tail it does not know be zero


_syscall = None


def _bpf(cmd: int, attr) -> int:
    global _syscall
    if _syscall is None:
        libc = ffi.CDLL(None)
        libc.syscall.restype = ffi.c_long
        _syscall = (libc.syscall, SYS_BPF[posix.uname().machine])
    fn, nr = _syscall
    ret = fn(ffi.c_long(nr), ffi.c_int(cmd), attr, ffi.c_uint(ATTR_SIZE))
    if ret < 0:
        err = ffi.get_errno()
        raise OSError(err, f"bpf cmd {cmd}: {posix.strerror(err)}")
    return ret


def _prog_load(code: bytes, license: str, log) -> int:
    insns = ffi.create_string_buffer(code, len(code))
    lic = ffi.create_string_buffer(license.encode())
    attr = ffi.create_string_buffer(ATTR_SIZE)
    struct.pack_into("<IIQQIIQII16s", attr, 0, BPF_PROG_TYPE_CGROUP_DEVICE, len(code) // 8,
                     ffi.addressof(insns), ffi.addressof(lic), 1 if log else 0,
                     len(log) if log else 0, ffi.addressof(log) if log else 0, 0, 0,
                     b"pyshim_devices")
    return _bpf(BPF_PROG_LOAD, attr)


def load(code: bytes, license: str = "Apache") -> int:
    """BPF_PROG_LOAD a CGROUP_DEVICE program (no GPL-only helpers: any license string will
    do); returns its fd. A verifier refusal is retried once with a log, to explain it."""
    try:
        return _prog_load(code, license, None)
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EINVAL):
            raise
    log = ffi.create_string_buffer(65536)
    try:
        return _prog_load(code, license, log)
    except OSError as e:
        text = log.value.decode(errors="replace")[-2000:]
        raise OSError(e.errno, f"{e.strerror}; verifier log: {text}") from None


def _attach_attr(cgroup_fd: int, prog_fd: int, flags: int):
    attr = ffi.create_string_buffer(ATTR_SIZE)
    struct.pack_into("<IIII", attr, 0, cgroup_fd, prog_fd, BPF_CGROUP_DEVICE, flags)
    return attr


def query(cgroup_fd: int) -> list[int]:
    """Ids of the device programs attached directly to the cgroup."""
    ids = (ffi.c_uint32 * 64)()
    attr = ffi.create_string_buffer(ATTR_SIZE)
    struct.pack_into("<IIIIQI", attr, 0, cgroup_fd, BPF_CGROUP_DEVICE, 0, 0,
                     ffi.addressof(ids), len(ids))
    _bpf(BPF_PROG_QUERY, attr)
    count = struct.unpack_from("<I", attr, 24)[0]
    return list(ids[:min(count, len(ids))])


def _prog_fd(prog_id: int) -> int:
    attr = ffi.create_string_buffer(ATTR_SIZE)
    struct.pack_into("<I", attr, 0, prog_id)
    return _bpf(BPF_PROG_GET_FD_BY_ID, attr)


def install(cgroup_dir: str, rules) -> None:
    """Compile, load and attach the filter to `cgroup_dir`, then detach whatever device
    programs were attached there before (an update replaces, never stacks: with
    BPF_F_ALLOW_MULTI every attached program must allow, so a stale one would keep denying).
    The attachment keeps the program alive after our fds close."""
    prog = load(assemble(compile_rules(rules)))
    dfd = posix.open(cgroup_dir, posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC)
    try:
        old = query(dfd)
        _bpf(BPF_PROG_ATTACH, _attach_attr(dfd, prog, BPF_F_ALLOW_MULTI))
        for prog_id in old:
            fd = _prog_fd(prog_id)
            try:
                _bpf(BPF_PROG_DETACH, _attach_attr(dfd, fd, 0))
            finally:
                posix.close(fd)
    finally:
        posix.close(dfd)
        posix.close(prog)
