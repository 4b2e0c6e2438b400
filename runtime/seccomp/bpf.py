"""Classic BPF (struct sock_filter) encoding and runc's -ENOSYS stub, in pure Python.

Invariant: a program is a list of (code, jt, jf, k) tuples; encode()/decode() map it to and from
the kernel's native-endian 8-byte sock_filter array, and enosys_stub() returns instructions that
are valid when PREPENDED to any filter: every path through the stub either returns
SECCOMP_RET_ERRNO|ENOSYS or falls through to the first instruction after it.
"""

import struct

Insn = tuple[int, int, int, int]  # code, jt, jf, k

_SOCK_FILTER = struct.Struct("=HBBI")
MAX_INSNS = 4096  # BPF_MAXINSNS: the kernel refuses longer filters

LD_W_ABS = 0x20   # BPF_LD | BPF_W | BPF_ABS
JA = 0x05         # BPF_JMP | BPF_JA
JEQ = 0x15        # BPF_JMP | BPF_JEQ | BPF_K
JGT = 0x25        # BPF_JMP | BPF_JGT | BPF_K
JSET = 0x45       # BPF_JMP | BPF_JSET | BPF_K
RET_K = 0x06      # BPF_RET | BPF_K

RET_ENOSYS = 0x00050000 | 38  # SECCOMP_RET_ERRNO | ENOSYS
AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 1 << 30
_OFF_NR, _OFF_ARCH = 0, 4  # offsets in struct seccomp_data


def encode(program: list[Insn]) -> bytes:
    return b"".join(_SOCK_FILTER.pack(*insn) for insn in program)


def decode(data: bytes) -> list[Insn]:
    if len(data) % _SOCK_FILTER.size:
        raise ValueError(f"BPF program of {len(data)} bytes is not a whole number of insns")
    return [_SOCK_FILTER.unpack_from(data, off) for off in range(0, len(data), 8)]


def _single(arch: str, sysno: int, to_enosys: int, to_filter: int, audit: int) -> list[Insn]:
    """Section body for one (audit arch, seccomp arch): nr > sysno -> ENOSYS, else filter."""
    body = []
    if arch in ("SCMP_ARCH_S390", "SCMP_ARCH_S390X"):
        # s390 multiplexes unknown large syscalls onto setup(2) = 0: answer that with ENOSYS too
        body += [(JEQ, 0, 1, 0), (RET_K, 0, 0, RET_ENOSYS)]
    if to_enosys + 1 <= 255:
        tail = [(JGT, to_enosys + 1, 0, sysno), (JA, 0, 0, to_filter)]
    else:  # a conditional jump offset is 8 bits: go long
        tail = [(JGT, 0, 1, sysno), (RET_K, 0, 0, RET_ENOSYS), (JA, 0, 0, to_filter)]
    if audit == AUDIT_ARCH_X86_64:
        # x86_64 and x32 share an audit arch; bit 30 of nr says which ABI. Skip the check
        # (straight to the filter) when the call is of the other ABI.
        skip = len(tail) - 1
        tail.insert(0, (JSET, skip, 0, X32_SYSCALL_BIT) if arch == "SCMP_ARCH_X86_64"
                    else (JSET, 0, skip, X32_SYSCALL_BIT))
    return body + tail


def _x86_and_x32(x86: int, x32: int, to_enosys: int, to_filter: int) -> list[Insn]:
    if to_enosys + 2 <= 255:
        return [(JSET, 1, 0, X32_SYSCALL_BIT), (JGT, to_enosys + 2, 1, x86),
                (JGT, to_enosys + 1, 0, x32), (JA, 0, 0, to_filter)]
    return [(JSET, 1, 0, X32_SYSCALL_BIT), (JGT, 1, 2, x86), (JGT, 0, 1, x32),
            (RET_K, 0, 0, RET_ENOSYS), (JA, 0, 0, to_filter)]


def enosys_stub(last: dict[int, dict[str, int]]) -> list[Insn]:
    """Port of runc's patchbpf.generateEnosysStub. `last` maps an AUDIT_ARCH value to
    {SCMP_ARCH name: largest syscall number the profile names on that arch}. Syscalls above
    that number are newer than the profile, so they get ENOSYS (which libc falls back from,
    e.g. clone3 -> clone) instead of the default action (usually EPERM, which it does not).

    Built backwards because jumps are relative: offsets are measured from the END."""
    tail: list[Insn] = [(JA, 0, 0, 1), (RET_K, 0, 0, RET_ENOSYS)]
    starts: dict[int, int] = {}  # audit arch -> its section's distance from the end
    for audit, maxes in last.items():
        to_enosys = len(tail) - 1
        to_filter = to_enosys + 1
        if len(maxes) == 1:
            (arch, sysno), = maxes.items()
            body = _single(arch, sysno, to_enosys, to_filter, audit)
        elif len(maxes) == 2 and audit == AUDIT_ARCH_X86_64:
            body = _x86_and_x32(maxes["SCMP_ARCH_X86_64"], maxes["SCMP_ARCH_X32"],
                                to_enosys, to_filter)
        elif not maxes:
            continue
        else:
            raise ValueError(f"unexpected architecture overlap on audit arch {audit:#x}: {maxes}")
        tail = [(LD_W_ABS, 0, 0, _OFF_NR)] + body + tail
        starts[audit] = len(tail)
    tail.insert(0, (JA, 0, 0, len(tail)))  # any other arch: straight to the filter
    for audit in starts:
        jump = len(tail) - starts[audit]
        tail[:0] = ([(JEQ, jump, 0, audit)] if jump <= 255
                    else [(JEQ, 0, 1, audit), (JA, 0, 0, jump)])
    return [(LD_W_ABS, 0, 0, _OFF_ARCH)] + tail


def evaluate(program: list[Insn], nr: int, arch: int, args=(0,) * 6, ip: int = 0) -> int:
    """Run a seccomp filter the way the kernel would on one struct seccomp_data and return the
    SECCOMP_RET_* value. Covers what libseccomp and enosys_stub() emit; for tests and diagnosis."""
    data = struct.pack("=iIQ6Q", nr, arch, ip, *(list(args) + [0] * 6)[:6])
    a, pc, mem = 0, 0, [0] * 16
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        if code == LD_W_ABS:
            a = struct.unpack_from("=I", data, k)[0]
        elif code == 0x60:                      # BPF_LD | BPF_MEM
            a = mem[k]
        elif code == 0x02:                      # BPF_ST
            mem[k] = a
        elif code == 0x54:                      # BPF_ALU | BPF_AND | BPF_K
            a &= k
        elif code == JA:
            pc += k
        elif code in (JEQ, JGT, 0x35, JSET):    # 0x35: BPF_JGE
            hit = {JEQ: a == k, JGT: a > k, 0x35: a >= k, JSET: bool(a & k)}[code]
            pc += jt if hit else jf
        elif code == RET_K:
            return k
        else:
            raise ValueError(f"unsupported BPF opcode {code:#x} at {pc - 1}")
