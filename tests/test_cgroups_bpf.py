"""The v2 device filter compiler: exact instruction streams for small rule sets, and behaviour
checked by RUNNING the assembled bytes in a tiny interpreter of the opcodes it emits, against
a straightforward reference evaluation of the rules (per-bit "last match wins", default deny)."""

import random
import struct

import pytest

from runtime.cgroups import devices_bpf as B
from runtime.cgroups.plan import DeviceRule as D

CHAR, BLOCK = B.BPF_DEVCG_DEV_CHAR, B.BPF_DEVCG_DEV_BLOCK
R, W, M = B.BPF_DEVCG_ACC_READ, B.BPF_DEVCG_ACC_WRITE, B.BPF_DEVCG_ACC_MKNOD
PROLOGUE = [(0x61, 2, 1, 0, 0), (0x54, 2, 0, 0, 0xFFFF), (0x61, 3, 1, 0, 0),
            (0x74, 3, 0, 0, 16), (0x61, 4, 1, 4, 0), (0x61, 5, 1, 8, 0)]
DENY, ALLOW = [(0xB4, 0, 0, 0, 0), (0x95, 0, 0, 0, 0)], [(0xB4, 0, 0, 0, 1), (0x95, 0, 0, 0, 0)]


def run(code: bytes, dev_type: int, major: int, minor: int, access: int) -> int:
    """Execute a BPF_PROG_TYPE_CGROUP_DEVICE program on struct bpf_cgroup_dev_ctx."""
    ctx = struct.pack("<III", (access << 16) | dev_type, major, minor)
    regs = [0] * 11
    insns = [struct.unpack_from("<BBhi", code, i) for i in range(0, len(code), 8)]
    pc, steps = 0, 0
    while True:
        steps += 1
        assert steps <= len(insns), "a filter never loops: every jump goes forward"
        code_, regs_byte, off, imm = insns[pc]
        dst, src = regs_byte & 0xF, regs_byte >> 4
        u64imm = imm & 0xFFFFFFFFFFFFFFFF  # sign-extended, as the kernel does
        pc += 1
        if code_ == 0x61:
            assert src == 1 and off in (0, 4, 8)
            regs[dst] = struct.unpack_from("<I", ctx, off)[0]
        elif code_ == 0x54:
            regs[dst] = (regs[dst] & imm) & 0xFFFFFFFF
        elif code_ == 0x74:
            regs[dst] = (regs[dst] & 0xFFFFFFFF) >> imm
        elif code_ == 0xB4:
            regs[dst] = imm & 0xFFFFFFFF
        elif code_ == 0xBC:
            regs[dst] = regs[src] & 0xFFFFFFFF
        elif code_ in (0x55, 0x15):
            assert off >= 0
            if (regs[dst] != u64imm) == (code_ == 0x55):
                pc += off
        elif code_ == 0x95:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {code_:#x}")
        assert 0 <= pc < len(insns)


def reference(rules, dev_type: str, major: int, minor: int, access: str) -> bool:
    """Each requested bit: the last rule matching the device and mentioning the bit decides;
    an "a" rule resets everything before it; no rule -> denied."""
    def decide(bit):
        verdict = False
        for r in rules:
            if r.type == "a":
                verdict = r.allow
            elif (r.type == dev_type and r.major in (None, major) and r.minor in (None, minor)
                  and bit in r.access):
                verdict = r.allow
        return verdict
    return all(decide(b) for b in access)


def allowed(rules, t, major, minor, access):
    code = B.assemble(B.compile_rules(rules))
    bits = sum({"r": R, "w": W, "m": M}[c] for c in access)
    return run(code, {"c": CHAR, "b": BLOCK}[t], major, minor, bits) == 1


# --- instruction streams --------------------------------------------------------------------------

def test_no_rules_denies_everything():
    assert B.compile_rules([]) == PROLOGUE + DENY


def test_allow_all_is_one_verdict_and_drops_dead_rules():
    assert B.compile_rules([D(True, "c", 1, 3, "r"), D(True)]) == PROLOGUE + ALLOW


def test_full_access_allow_rule():
    assert B.compile_rules([D(False), D(True, "c", 1, 3, "rwm")]) == PROLOGUE + [
        (0x55, 2, 0, 4, CHAR),   # type != c -> next block (4 ahead)
        (0x55, 4, 0, 3, 1),      # major != 1
        (0x55, 5, 0, 2, 3),      # minor != 3
        *ALLOW, *DENY]


def test_partial_allow_clears_bits_and_partial_deny_checks_overlap():
    prog = B.compile_rules([D(True, "b", 8, None, "rw"), D(False, "c", None, 5, "w")])
    assert prog == PROLOGUE + [
        # last rule first: deny c *:5 w
        (0x55, 2, 0, 6, CHAR), (0x55, 5, 0, 5, 5),
        (0xBC, 1, 3, 0, 0), (0x54, 1, 0, 0, W), (0x15, 1, 0, 2, 0), *DENY,
        # then allow b 8:* rw
        (0x55, 2, 0, 5, BLOCK), (0x55, 4, 0, 4, 8),
        (0x54, 3, 0, 0, ~(R | W)), (0x55, 3, 0, 2, 0), *ALLOW,
        *DENY]


def test_assemble_encodes_struct_bpf_insn_little_endian():
    code = B.assemble([(0x61, 3, 1, 8, 0), (0x54, 3, 0, 0, -3)])
    assert code == bytes([0x61, 0x13, 8, 0, 0, 0, 0, 0, 0x54, 0x03, 0, 0, 0xFD, 0xFF, 0xFF, 0xFF])


# --- behaviour ------------------------------------------------------------------------------------

CONTAINERD = [D(False), D(True, "c", None, None, "m"), D(True, "b", None, None, "m"),
              D(True, "c", 1, 3, "rwm"), D(True, "c", 1, 5, "rwm"), D(True, "c", 136, None, "rwm"),
              D(True, "c", 5, 2, "rwm"), D(True, "c", 10, 200, "rwm")]


@pytest.mark.parametrize("dev,ok", [
    (("c", 1, 3, "rw"), True), (("c", 1, 3, "m"), True), (("c", 1, 5, "r"), True),
    (("c", 136, 7, "rw"), True), (("c", 1, 1, "r"), False),  # /dev/mem
    (("c", 1, 1, "m"), True), (("b", 8, 0, "r"), False), (("b", 8, 0, "m"), True),
    (("b", 1, 3, "r"), False), (("c", 10, 200, "rwm"), True)])
def test_containerd_default_list(dev, ok):
    assert allowed(CONTAINERD, *dev) is ok
    assert reference(CONTAINERD, *dev) is ok


def test_later_partial_deny_only_blocks_the_bits_it_names():
    rules = CONTAINERD + [D(False, "c", 1, 3, "w")]
    assert allowed(rules, "c", 1, 3, "r")
    assert not allowed(rules, "c", 1, 3, "w")
    assert not allowed(rules, "c", 1, 3, "rw")


def test_bits_granted_by_two_rules_combine():
    rules = [D(True, "c", 1, 3, "r"), D(True, "c", 1, 3, "w")]
    assert allowed(rules, "c", 1, 3, "rw") and not allowed(rules, "c", 1, 3, "rwm")


def test_allow_all_then_deny_is_a_deny_list():
    rules = [D(True), D(False, "b", None, None, "rwm")]
    assert allowed(rules, "c", 4, 4, "rwm") and not allowed(rules, "b", 8, 0, "r")


def test_a_later_allow_punches_through_an_earlier_wildcard_deny():
    rules = [D(True), D(False, "c", None, None, "rwm"), D(True, "c", 1, 3, "rw")]
    assert allowed(rules, "c", 1, 3, "rw") and not allowed(rules, "c", 1, 3, "m")
    assert not allowed(rules, "c", 1, 5, "r")


def _random_rule(rng):
    if rng.random() < 0.08:
        return D(rng.random() < 0.5)
    access = "".join(c for c in "rwm" if rng.random() < 0.6) or "r"
    return D(rng.random() < 0.6, rng.choice("cb"), rng.choice([None, 1, 2]),
             rng.choice([None, 3, 5]), access)


def test_random_rule_sets_match_the_reference():
    rng = random.Random(20240601)
    for _ in range(300):
        rules = [_random_rule(rng) for _ in range(rng.randint(0, 8))]
        code = B.assemble(B.compile_rules(rules))
        for t in "cb":
            for major in (1, 2, 9):
                for minor in (3, 5, 7):
                    for access in ("r", "w", "m", "rw", "rm", "wm", "rwm"):
                        bits = sum({"r": R, "w": W, "m": M}[c] for c in access)
                        got = run(code, {"c": CHAR, "b": BLOCK}[t], major, minor, bits) == 1
                        assert got == reference(rules, t, major, minor, access), (rules, t, major,
                                                                                  minor, access)
