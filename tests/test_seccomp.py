"""runtime.seccomp without touching the test process: parse errors name the field, plan() is
runc's rule list, the -ENOSYS stub jumps where it should, and compile() (real libseccomp,
no root needed) produces programs whose verdicts bpf.evaluate() checks syscall by syscall."""

import os
import subprocess
import sys

import pytest

from runtime import seccomp
from runtime.errors import EngineError, InvalidSpec
from runtime.seccomp import bpf, compiler, kernel
from runtime.seccomp.profile import Arg, Rule

ALLOW, KILL = 0x7FFF0000, 0x00000000
X86_64, I386 = 0xC000003E, 0x40000003
X32 = 1 << 30
x86_64_only = pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86_64 numbers")


def errno_ret(e):
    return 0x00050000 | e


def spec(**kw):
    return {"defaultAction": "SCMP_ACT_ALLOW", **kw}


def call(names, action="SCMP_ACT_ALLOW", **kw):
    return {"names": names if isinstance(names, list) else [names], "action": action, **kw}


def arg(index, value, op="SCMP_CMP_EQ", **kw):
    return {"index": index, "value": value, "op": op, **kw}


# --- parse -------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [None, {}, {"syscalls": []}, {"architectures": ["SCMP_ARCH_X86"]}])
def test_no_default_action_and_no_syscalls_means_no_seccomp(raw):
    assert seccomp.parse(raw) is None


def test_parse_builds_typed_profile_with_defaults():
    p = seccomp.parse(spec(syscalls=[call(["a", "b"], "SCMP_ACT_ERRNO", errnoRet=38,
                                          args=[arg(1, 2**64 - 1, "SCMP_CMP_MASKED_EQ",
                                                    valueTwo=3)])]))
    assert p.default_action == "SCMP_ACT_ALLOW" and p.default_errno_ret is None
    assert p.architectures == () and p.flags is None and p.listener_path is None
    assert p.syscalls[0].names == ("a", "b") and p.syscalls[0].errno_ret == 38
    assert p.syscalls[0].args == (Arg(1, 2**64 - 1, 3, "SCMP_CMP_MASKED_EQ"),)
    assert seccomp.parse(spec(flags=[])).flags == ()  # empty differs from absent


BAD = [
    ([], "linux.seccomp"),
    ({"defaultAction": "SCMP_ACT_NOPE"}, "linux.seccomp.defaultAction"),
    ({"defaultAction": 5}, "linux.seccomp.defaultAction"),
    ({"syscalls": [call("read")]}, "linux.seccomp.defaultAction"),
    (spec(defaultAction="SCMP_ACT_NOTIFY", listenerPath="/x"), "linux.seccomp.defaultAction"),
    (spec(defaultErrnoRet=1), "linux.seccomp.defaultErrnoRet"),
    (spec(defaultAction="SCMP_ACT_ERRNO", defaultErrnoRet=-1), "linux.seccomp.defaultErrnoRet"),
    (spec(defaultAction="SCMP_ACT_ERRNO", defaultErrnoRet=70000),
     "linux.seccomp.defaultErrnoRet"),
    (spec(defaultAction="SCMP_ACT_ERRNO", defaultErrnoRet=True), "linux.seccomp.defaultErrnoRet"),
    (spec(architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_Z80"]), "linux.seccomp.architectures[1]"),
    (spec(architectures="SCMP_ARCH_X86_64"), "linux.seccomp.architectures"),
    (spec(flags=["SECCOMP_FILTER_FLAG_BOGUS"]), "linux.seccomp.flags[0]"),
    (spec(syscalls={}), "linux.seccomp.syscalls"),
    (spec(syscalls=["read"]), "linux.seccomp.syscalls[0]"),
    (spec(syscalls=[call("a"), call("b"), call("c"), call("d", "SCMP_ACT_BOOM")]),
     "linux.seccomp.syscalls[3].action"),
    (spec(syscalls=[{"names": ["read"]}]), "linux.seccomp.syscalls[0].action"),
    (spec(syscalls=[{"action": "SCMP_ACT_ERRNO"}]), "linux.seccomp.syscalls[0].names"),
    (spec(syscalls=[call([], "SCMP_ACT_ERRNO")]), "linux.seccomp.syscalls[0].names"),
    (spec(syscalls=[call(["read", ""], "SCMP_ACT_ERRNO")]), "linux.seccomp.syscalls[0].names[1]"),
    (spec(syscalls=[call(["read", 3], "SCMP_ACT_ERRNO")]), "linux.seccomp.syscalls[0].names[1]"),
    (spec(syscalls=[call("read", "SCMP_ACT_KILL", errnoRet=1)]),
     "linux.seccomp.syscalls[0].errnoRet"),
    (spec(syscalls=[call("read", "SCMP_ACT_ERRNO", args={})]),
     "linux.seccomp.syscalls[0].args"),
    (spec(syscalls=[call("read", "SCMP_ACT_ERRNO", args=[arg(0, 1), arg(6, 1)])]),
     "linux.seccomp.syscalls[0].args[1].index"),
    (spec(syscalls=[call("read", "SCMP_ACT_ERRNO", args=[{"value": 1, "op": "SCMP_CMP_EQ"}])]),
     "linux.seccomp.syscalls[0].args[0].index"),
    (spec(syscalls=[call("read", "SCMP_ACT_ERRNO", args=[arg(0, -1)])]),
     "linux.seccomp.syscalls[0].args[0].value"),
    (spec(syscalls=[call("read", "SCMP_ACT_ERRNO", args=[arg(0, 2**64)])]),
     "linux.seccomp.syscalls[0].args[0].value"),
    (spec(syscalls=[call("read", "SCMP_ACT_ERRNO", args=[arg(0, 1, valueTwo="1")])]),
     "linux.seccomp.syscalls[0].args[0].valueTwo"),
    (spec(syscalls=[call("read", "SCMP_ACT_ERRNO", args=[arg(0, 1, "SCMP_CMP_ABOUT")])]),
     "linux.seccomp.syscalls[0].args[0].op"),
    (spec(listenerPath="/run/agent.sock", syscalls=[call(["read", "write"], "SCMP_ACT_NOTIFY")]),
     "linux.seccomp.syscalls[0].names[1]"),
    (spec(syscalls=[call("mount", "SCMP_ACT_NOTIFY")]), "linux.seccomp.listenerPath"),
    (spec(listenerMetadata="x"), "linux.seccomp.listenerMetadata"),
    (spec(listenerPath=7), "linux.seccomp.listenerPath"),
]


@pytest.mark.parametrize("raw, field", BAD)
def test_parse_errors_name_the_field(raw, field):
    with pytest.raises(InvalidSpec) as info:
        seccomp.parse(raw)
    assert info.value.field == field
    assert isinstance(info.value, EngineError)


def test_errno_ret_allowed_with_errno_and_trace_and_listener_fields_kept():
    p = seccomp.parse(spec(defaultAction="SCMP_ACT_TRACE", defaultErrnoRet=0,
                           listenerPath="/a.sock", listenerMetadata="m",
                           syscalls=[call("mount", "SCMP_ACT_NOTIFY")]))
    assert (p.default_errno_ret, p.listener_path, p.listener_metadata) == (0, "/a.sock", "m")
    assert p.uses_notify


# --- plan --------------------------------------------------------------------------------------

def test_plan_one_rule_per_name_in_order_and_errno_defaults_to_eperm():
    p = seccomp.parse(spec(defaultAction="SCMP_ACT_KILL_PROCESS", syscalls=[
        call(["read", "write"]), call("mkdir", "SCMP_ACT_ERRNO"),
        call("ptrace", "SCMP_ACT_TRACE"), call("kill", "SCMP_ACT_KILL"),
        call("chmod", "SCMP_ACT_ERRNO", errnoRet=0)]))
    assert [(r.name, r.action, r.errno) for r in seccomp.plan(p)] == [
        ("read", "SCMP_ACT_ALLOW", None), ("write", "SCMP_ACT_ALLOW", None),
        ("mkdir", "SCMP_ACT_ERRNO", 1), ("ptrace", "SCMP_ACT_TRACE", 1),
        ("kill", "SCMP_ACT_KILL_THREAD", None), ("chmod", "SCMP_ACT_ERRNO", 0)]


def test_plan_drops_rules_equal_to_the_default_action():
    p = seccomp.parse({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        call("a", "SCMP_ACT_ERRNO"), call("b", "SCMP_ACT_ERRNO", errnoRet=1),
        call("c", "SCMP_ACT_ERRNO", errnoRet=38), call("d")]})
    assert [r.name for r in seccomp.plan(p)] == ["c", "d"]
    p = seccomp.parse({"defaultAction": "SCMP_ACT_KILL_THREAD", "syscalls": [
        call("a", "SCMP_ACT_KILL"), call("b", "SCMP_ACT_KILL_PROCESS")]})
    assert [r.name for r in seccomp.plan(p)] == ["b"]


def test_plan_splits_conditions_on_the_same_argument_like_runc():
    same = [arg(0, 1), arg(0, 2), arg(1, 3)]
    p = seccomp.parse(spec(syscalls=[call(["x", "y"], "SCMP_ACT_ERRNO", args=same)]))
    rules = seccomp.plan(p)
    a0, a1, a2 = (Arg(0, 1, 0, "SCMP_CMP_EQ"), Arg(0, 2, 0, "SCMP_CMP_EQ"),
                  Arg(1, 3, 0, "SCMP_CMP_EQ"))
    # each condition alone, i.e. OR-ed: runc's fallback (libseccomp refuses two on arg 0)
    assert rules == [Rule(name, "SCMP_ACT_ERRNO", 1, (cond,), 0)
                     for name in ("x", "y") for cond in (a0, a1, a2)]
    p = seccomp.parse(spec(syscalls=[call("x", "SCMP_ACT_ERRNO", args=[arg(0, 1), arg(2, 3)])]))
    assert [r.conditions for r in seccomp.plan(p)] == [(a0, Arg(2, 3, 0, "SCMP_CMP_EQ"))]


def test_action_values_match_seccomp_h():
    assert seccomp.action_value("SCMP_ACT_ERRNO", None) == 0x00050001
    assert seccomp.action_value("SCMP_ACT_TRACE", 38) == 0x7FF00026
    assert seccomp.action_value("SCMP_ACT_KILL", None) == 0
    assert seccomp.action_value("SCMP_ACT_KILL_PROCESS", None) == 0x80000000
    assert seccomp.action_value("SCMP_ACT_NOTIFY", None) == 0x7FC00000


# --- bpf ---------------------------------------------------------------------------------------

def test_encode_decode_round_trip_and_length_check():
    prog = [(bpf.LD_W_ABS, 0, 0, 4), (bpf.JEQ, 1, 2, 0xC000003E), (bpf.RET_K, 0, 0, ALLOW)]
    raw = bpf.encode(prog)
    assert len(raw) == 24 and bpf.decode(raw) == prog
    with pytest.raises(ValueError):
        bpf.decode(raw[:-1])


def _stubbed(last, filter_ret=ALLOW):
    """The stub followed by a one-instruction 'filter' returning filter_ret."""
    return bpf.enosys_stub(last) + [(bpf.RET_K, 0, 0, filter_ret)]


def test_stub_routes_by_arch_and_abi():
    prog = _stubbed({X86_64: {"SCMP_ARCH_X86_64": 100, "SCMP_ARCH_X32": X32 | 50},
                     I386: {"SCMP_ARCH_X86": 200},
                     0x80000016: {"SCMP_ARCH_S390X": 300}})
    enosys = errno_ret(38)
    cases = [(X86_64, 100, ALLOW), (X86_64, 101, enosys), (X86_64, X32 | 50, ALLOW),
             (X86_64, X32 | 51, enosys), (I386, 200, ALLOW), (I386, 201, enosys),
             (0x80000016, 0, enosys), (0x80000016, 7, ALLOW), (0x80000016, 301, enosys),
             (0xC00000B7, 9999, ALLOW)]  # an arch the profile does not name: the filter decides
    for arch, nr, want in cases:
        assert bpf.evaluate(prog, nr, arch) == want, (hex(arch), nr)


def test_stub_x86_64_without_x32_leaves_x32_calls_to_the_filter():
    prog = _stubbed({X86_64: {"SCMP_ARCH_X86_64": 100}}, filter_ret=KILL)
    assert bpf.evaluate(prog, X32 | 500, X86_64) == KILL
    assert bpf.evaluate(prog, 500, X86_64) == errno_ret(38)
    prog = _stubbed({X86_64: {"SCMP_ARCH_X32": X32 | 100}}, filter_ret=KILL)
    assert bpf.evaluate(prog, 500, X86_64) == KILL
    assert bpf.evaluate(prog, X32 | 500, X86_64) == errno_ret(38)


@pytest.mark.parametrize("make", [
    lambda e, f: bpf._single("SCMP_ARCH_X86_64", 100, e, f, X86_64),
    lambda e, f: bpf._x86_and_x32(100, X32 | 100, e, f)])
def test_stub_long_jumps_when_enosys_is_beyond_255(make):
    # [ld nr] section, then 300 decoys, the shared RET ENOSYS, and the filter (ALLOW)
    body = make(300, 301)
    assert all(jt <= 255 and jf <= 255 for _, jt, jf, _ in body)
    prog = ([(bpf.LD_W_ABS, 0, 0, 0)] + body + [(bpf.RET_K, 0, 0, 0xDEAD)] * 300
            + [(bpf.RET_K, 0, 0, bpf.RET_ENOSYS), (bpf.RET_K, 0, 0, ALLOW)])
    assert bpf.evaluate(prog, 100, X86_64) == ALLOW
    assert bpf.evaluate(prog, 101, X86_64) == bpf.RET_ENOSYS


def test_stub_refuses_overlaps_other_than_x86_64_and_x32():
    with pytest.raises(ValueError):
        bpf.enosys_stub({I386: {"SCMP_ARCH_X86": 1, "SCMP_ARCH_ARM": 2}})


def test_evaluate_refuses_unknown_opcodes():
    with pytest.raises(ValueError):
        bpf.evaluate([(0x07, 0, 0, 0)], 0, X86_64)  # BPF_MISC|TAX: libseccomp never emits it


# --- compile (real libseccomp, nothing loaded) -------------------------------------------------

def compiled(raw):
    return bpf.decode(seccomp.compile(seccomp.parse(raw)))


def test_importing_does_not_load_libseccomp():
    code = ("import runtime.seccomp as s; maps = open('/proc/self/maps').read(); "
            "assert 'libseccomp' not in maps and s.compiler._lib is None; "
            "s.version(); assert 'libseccomp' in open('/proc/self/maps').read()")
    subprocess.run([sys.executable, "-c", code], check=True,
                   cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_compile_gives_whole_sock_filters_deterministically():
    raw = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [call(["read", "write", "exit_group"])]}
    out = seccomp.compile(seccomp.parse(raw))
    assert out and len(out) % 8 == 0 and len(out) // 8 <= bpf.MAX_INSNS
    assert seccomp.compile(seccomp.parse(raw)) == out
    assert seccomp.version().startswith("2.")


def test_resolve():
    assert seccomp.resolve("no_such_syscall") is None
    assert seccomp.resolve("read", "SCMP_ARCH_NOT_AN_ARCH") is None
    assert seccomp.resolve("read", "SCMP_ARCH_X86") == 3
    assert seccomp.resolve("socketcall", "SCMP_ARCH_X86_64") < 0  # pseudo: not on x86_64


def test_unknown_syscall_names_are_skipped():
    base = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [call(["read", "write"])]}
    with_unknown = {"defaultAction": "SCMP_ACT_ERRNO",
                    "syscalls": [call(["read", "no_such_syscall", "write"])]}
    assert seccomp.compile(seccomp.parse(with_unknown)) == seccomp.compile(seccomp.parse(base))


@x86_64_only
def test_compiled_errno_default_gets_enosys_for_newer_syscalls():
    prog = compiled({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        call(["read", "write"]), call("mkdir", "SCMP_ACT_ERRNO", errnoRet=38)]})
    assert bpf.evaluate(prog, 0, X86_64) == ALLOW
    assert bpf.evaluate(prog, 83, X86_64) == errno_ret(38)   # mkdir, the rule
    assert bpf.evaluate(prog, 2, X86_64) == errno_ret(1)     # open: below mkdir, default EPERM
    assert bpf.evaluate(prog, 84, X86_64) == errno_ret(38)   # rmdir: above the largest named
    assert bpf.evaluate(prog, 0, I386) == KILL               # arch not in the filter


@x86_64_only
@pytest.mark.parametrize("default", ["SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE"])
def test_no_stub_when_the_default_lets_calls_through(default):
    prog = compiled({"defaultAction": default, "syscalls": [call("read", "SCMP_ACT_ERRNO")]})
    assert bpf.evaluate(prog, 400, X86_64) == seccomp.action_value(default, None)


def test_no_stub_when_default_is_already_enosys():
    raw = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [call("read")]}
    with_stub = seccomp.compile(seccomp.parse(raw))
    without = seccomp.compile(seccomp.parse({**raw, "defaultErrnoRet": 38}))
    assert len(without) < len(with_stub)


@x86_64_only
def test_compiled_argument_conditions():
    prog = compiled({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        call("personality", args=[arg(0, 0xFFFFFFFF)]),
        call("personality", args=[arg(0, 8)]),
        call("socket", args=[arg(0, 40, "SCMP_CMP_NE")]),
        call("clone", args=[arg(0, 0x7E020000, "SCMP_CMP_MASKED_EQ", valueTwo=0)]),
        call("kill", "SCMP_ACT_ALLOW", args=[arg(1, 2, "SCMP_CMP_LT"), arg(1, 8, "SCMP_CMP_GT")]),
        call("fcntl", "SCMP_ACT_ALLOW", args=[arg(0, 3, "SCMP_CMP_GE"), arg(1, 4, "SCMP_CMP_LE")]),
        call("read")]})
    eperm = errno_ret(1)
    for nr, args, want in [
            (135, (0xFFFFFFFF,), ALLOW), (135, (8,), ALLOW), (135, (0,), eperm),
            (135, (0x1FFFFFFFF,), eperm),                        # 64-bit compare, not 32
            (41, (2,), ALLOW), (41, (40,), eperm),               # socket(AF_VSOCK) refused
            (56, (0x01200011,), ALLOW), (56, (0x20000 | 0x11,), eperm),  # CLONE_NEWNS
            (62, (0, 1), ALLOW), (62, (0, 9), ALLOW), (62, (0, 5), eperm),  # same index: OR
            (72, (3, 4), ALLOW), (72, (2, 4), eperm), (72, (3, 5), eperm)]:  # distinct: AND
        assert bpf.evaluate(prog, nr, X86_64, args) == want, (nr, args)


@x86_64_only
def test_compiled_multi_arch_profile():
    prog = compiled({"defaultAction": "SCMP_ACT_ERRNO",
                     "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                     "syscalls": [call(["read", "socketcall", "exit_group"])]})
    assert bpf.evaluate(prog, 0, X86_64) == ALLOW
    assert bpf.evaluate(prog, X32 | 0, X86_64) == ALLOW
    assert bpf.evaluate(prog, 3, I386) == ALLOW
    assert bpf.evaluate(prog, 102, I386) == ALLOW              # socketcall exists only there
    assert bpf.evaluate(prog, 4, I386) == errno_ret(1)         # write on i386
    assert bpf.evaluate(prog, 300, I386) == errno_ret(38)      # above exit_group(252)


def test_native_arch_is_kept_even_when_not_listed():
    raw = {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86"],
           "syscalls": [call("read")]}
    native = compiler._load().seccomp_arch_native()
    assert bpf.evaluate(compiled(raw), seccomp.resolve("read"), native) == ALLOW


def test_conflicting_rules_are_an_invalid_spec():
    cond = [arg(0, 1)]
    with pytest.raises(InvalidSpec) as info:
        seccomp.compile(seccomp.parse({"defaultAction": "SCMP_ACT_KILL", "syscalls": [
            call("read", args=cond), call("read", "SCMP_ACT_ERRNO", errnoRet=5, args=cond)]}))
    assert info.value.field == "linux.seccomp.syscalls[1]"


def test_arch_unknown_to_this_libseccomp_is_an_invalid_spec():
    if compiler._arch_token(compiler._load(), "SCMP_ARCH_LOONGARCH64"):
        pytest.skip("this libseccomp knows loongarch64")
    with pytest.raises(InvalidSpec) as info:
        seccomp.compile(seccomp.parse(spec(architectures=["SCMP_ARCH_X86_64",
                                                          "SCMP_ARCH_LOONGARCH64"])))
    assert info.value.field == "linux.seccomp.architectures[1]"


def test_filter_longer_than_the_kernel_allows_is_an_invalid_spec():
    raw = {"defaultAction": "SCMP_ACT_KILL", "syscalls": [
        call("personality", args=[arg(0, i)]) for i in range(4200)]}
    with pytest.raises(InvalidSpec) as info:
        seccomp.compile(seccomp.parse(raw))
    assert info.value.field == "linux.seccomp"


# --- flags -------------------------------------------------------------------------------------

def flags_of(**kw):
    raw = spec(syscalls=[call("read", "SCMP_ACT_ERRNO")], **kw)
    return seccomp.filter_flags(seccomp.parse(raw))


def test_filter_flags():
    assert seccomp.flag_supported(kernel.FLAG_SPEC_ALLOW)  # kernel >= 4.17
    assert seccomp.flag_supported(kernel.FLAG_WAIT_KILLABLE_RECV)  # kernel >= 5.19
    assert not seccomp.flag_supported(1 << 31)
    assert flags_of() == kernel.FLAG_SPEC_ALLOW            # absent: runc's default
    assert flags_of(flags=[]) == 0
    assert flags_of(flags=["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC"]) == 3
    assert flags_of(flags=["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]) == 0  # needs a listener
    notify = dict(listenerPath="/a.sock", syscalls=[call("mount", "SCMP_ACT_NOTIFY")])
    assert seccomp.filter_flags(seccomp.parse(spec(flags=[], **notify))) == kernel.FLAG_NEW_LISTENER
    assert seccomp.filter_flags(seccomp.parse(spec(
        flags=["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"], **notify))
    ) == (kernel.FLAG_TSYNC | kernel.FLAG_TSYNC_ESRCH | kernel.FLAG_NEW_LISTENER
          | kernel.FLAG_WAIT_KILLABLE_RECV)


def test_process_state_message_shape():
    state = {"ociVersion": "1.2.0", "id": "c1", "status": "creating", "pid": 9, "bundle": "/b"}
    assert seccomp.process_state(9, state, "meta") == {
        "ociVersion": "1.2.0", "fds": ["seccompFd"], "pid": 9, "metadata": "meta", "state": state}
    assert "metadata" not in seccomp.process_state(9, state)


@pytest.mark.parametrize("program", [b"", b"\0" * 7, b"\0" * 8 * 4097])
def test_install_refuses_malformed_programs_before_any_syscall(program):
    from runtime.errors import ContainerSetupError
    with pytest.raises(ContainerSetupError):
        seccomp.install(program)
