"""linux.seccomp (runtime-spec 1.0.2 .. 1.2) -> a typed Profile, and the Profile -> rule plan.

Invariant: parse() either returns a Profile in which every name, number and combination is one
the compiler can act on (or None when the spec asks for no seccomp at all), or raises
InvalidSpec naming the JSON path of the first bad field ("linux.seccomp.syscalls[3].action").
Nothing here needs libseccomp or the kernel: plan() is what compile() feeds libseccomp, so unit
tests can assert on exactly what runc would add.
"""


from ..errors import InvalidSpec
from ..record import Record

FIELD = "linux.seccomp"
EPERM = 1
ENOSYS = 38
MAX_ERRNO = 4095  # the kernel clamps SECCOMP_RET_ERRNO data to this

# Kernel/libseccomp action values (linux/seccomp.h == seccomp.h). ERRNO and TRACE carry 16 bits
# of data; KILL is runc's alias of KILL_THREAD.
ACTIONS = {
    "SCMP_ACT_KILL": 0x00000000, "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000, "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000, "SCMP_ACT_NOTIFY": 0x7FC00000, "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000, "SCMP_ACT_ALLOW": 0x7FFF0000,
}
_WITH_ERRNO = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")
# enum scmp_compare in seccomp.h
OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
       "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
ARCHES = tuple("SCMP_ARCH_" + a for a in (
    "X86", "X86_64", "X32", "ARM", "AARCH64", "MIPS", "MIPS64", "MIPS64N32", "MIPSEL",
    "MIPSEL64", "MIPSEL64N32", "PPC", "PPC64", "PPC64LE", "S390", "S390X", "PARISC", "PARISC64",
    "RISCV64", "LOONGARCH64", "M68K", "SH", "SHEB"))
FLAGS = ("SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
         "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV")
MAX_ARGS = 6  # a Linux syscall has at most six arguments
_U64 = (1 << 64) - 1


class Arg(Record, frozen=True):
    index: int
    value: int
    value_two: int
    op: str


class Syscall(Record, frozen=True):
    names: tuple[str, ...]
    action: str
    errno_ret: int | None = None
    args: tuple[Arg, ...] = ()


class Profile(Record, frozen=True):
    default_action: str
    default_errno_ret: int | None = None
    architectures: tuple[str, ...] = ()
    flags: tuple[str, ...] | None = None  # None (absent) differs from (): see kernel.filter_flags
    listener_path: str | None = None
    listener_metadata: str | None = None
    syscalls: tuple[Syscall, ...] = ()

    @property
    def uses_notify(self) -> bool:
        return any(s.action == "SCMP_ACT_NOTIFY" for s in self.syscalls)


class Rule(Record, frozen=True):
    """One libseccomp rule: a syscall name, an action with its errno (ERRNO/TRACE only) and the
    conditions that must ALL hold. `entry` is the index in syscalls[] it came from."""
    name: str
    action: str
    errno: int | None
    conditions: tuple[Arg, ...]
    entry: int


def action_value(action: str, errno: int | None) -> int:
    """The 32-bit SECCOMP_RET_* value; errno None means the EPERM default (as runc does)."""
    if action in _WITH_ERRNO:
        return ACTIONS[action] | ((EPERM if errno is None else errno) & 0xFFFF)
    return ACTIONS[action]


def _normalize(action: str) -> str:
    return "SCMP_ACT_KILL_THREAD" if action == "SCMP_ACT_KILL" else action


def _get(obj: dict, key: str, path: str, typ, required: bool = False):
    if key not in obj or obj[key] is None:
        if required:
            raise InvalidSpec(f"{path}.{key}", "is required")
        return None
    val = obj[key]
    # bool is an int in Python but not a JSON number
    if not isinstance(val, typ) or (typ is int and isinstance(val, bool)):
        raise InvalidSpec(f"{path}.{key}", f"must be of type {typ.__name__}")
    return val


def _uint(obj: dict, key: str, path: str, hi: int, required: bool = False) -> int | None:
    val = _get(obj, key, path, int, required)
    if val is not None and not 0 <= val <= hi:
        raise InvalidSpec(f"{path}.{key}", f"{val} is out of range 0..{hi}")
    return val


def _choice(obj: dict, key: str, path: str, allowed, required: bool = True) -> str | None:
    val = _get(obj, key, path, str, required)
    if val is not None and val not in allowed:
        raise InvalidSpec(f"{path}.{key}", f"unknown value {val!r}")
    return val


def _strings(obj: dict, key: str, path: str, allowed=None) -> tuple[str, ...] | None:
    val = _get(obj, key, path, list)
    if val is None:
        return None
    for i, item in enumerate(val):
        if not isinstance(item, str) or not item:
            raise InvalidSpec(f"{path}.{key}[{i}]", "must be a non-empty string")
        if allowed is not None and item not in allowed:
            raise InvalidSpec(f"{path}.{key}[{i}]", f"unknown value {item!r}")
    return tuple(val)


def _errno_ret(obj: dict, key: str, path: str, action: str) -> int | None:
    val = _uint(obj, key, path, MAX_ERRNO)
    # runtime-spec: "When the action doesn't support an errno, the runtime MUST ... fail."
    if val is not None and action not in _WITH_ERRNO:
        raise InvalidSpec(f"{path}.{key}", f"not valid with {action}")
    return val


def _parse_arg(obj, path: str) -> Arg:
    if not isinstance(obj, dict):
        raise InvalidSpec(path, "must be an object")
    return Arg(index=_uint(obj, "index", path, MAX_ARGS - 1, required=True),
               value=_uint(obj, "value", path, _U64, required=True),
               value_two=_uint(obj, "valueTwo", path, _U64) or 0,
               op=_choice(obj, "op", path, OPS))


def _parse_syscall(obj, path: str) -> Syscall:
    if not isinstance(obj, dict):
        raise InvalidSpec(path, "must be an object")
    names = _strings(obj, "names", path)
    if not names:
        raise InvalidSpec(f"{path}.names", "must list at least one syscall")
    action = _choice(obj, "action", path, ACTIONS)
    if action == "SCMP_ACT_NOTIFY" and "write" in names:
        # runc: the init reports the listener fd with write(2); notifying on it would hang create
        raise InvalidSpec(f"{path}.names[{names.index('write')}]",
                          "SCMP_ACT_NOTIFY cannot be used for the write syscall")
    args = _get(obj, "args", path, list) or []
    return Syscall(names=names, action=action, errno_ret=_errno_ret(obj, "errnoRet", path, action),
                   args=tuple(_parse_arg(a, f"{path}.args[{i}]") for i, a in enumerate(args)))


def parse(seccomp: dict | None) -> Profile | None:
    """Validate linux.seccomp. None or an object with neither defaultAction nor syscalls means
    "no seccomp" (runc's rule), so it returns None."""
    path = FIELD
    if seccomp is None:
        return None
    if not isinstance(seccomp, dict):
        raise InvalidSpec(path, "must be an object")
    if not seccomp.get("defaultAction") and not seccomp.get("syscalls"):
        return None
    default = _choice(seccomp, "defaultAction", path, ACTIONS)
    if default == "SCMP_ACT_NOTIFY":
        raise InvalidSpec(f"{path}.defaultAction", "SCMP_ACT_NOTIFY cannot be the default action")
    raw_calls = _get(seccomp, "syscalls", path, list) or []
    profile = Profile(
        default_action=default,
        default_errno_ret=_errno_ret(seccomp, "defaultErrnoRet", path, default),
        architectures=_strings(seccomp, "architectures", path, ARCHES) or (),
        flags=_strings(seccomp, "flags", path, FLAGS),
        listener_path=_get(seccomp, "listenerPath", path, str) or None,
        listener_metadata=_get(seccomp, "listenerMetadata", path, str) or None,
        syscalls=tuple(_parse_syscall(c, f"{path}.syscalls[{i}]")
                       for i, c in enumerate(raw_calls)))
    if profile.listener_metadata and not profile.listener_path:
        raise InvalidSpec(f"{path}.listenerMetadata", "requires listenerPath")
    if profile.uses_notify and not profile.listener_path:
        raise InvalidSpec(f"{path}.listenerPath", "is required when SCMP_ACT_NOTIFY is used")
    return profile


def plan(profile: Profile) -> list[Rule]:
    """The rules runc's matchCall would add, in order: one per syscall name; rules whose action
    equals the default are dropped (libseccomp refuses them); and when two conditions test the
    same argument, each condition becomes its own rule (libseccomp refuses several conditions
    on one argument in one rule, so runc falls back to OR-ing them)."""
    default = action_value(profile.default_action, profile.default_errno_ret)
    rules = []
    for entry, call in enumerate(profile.syscalls):
        if action_value(call.action, call.errno_ret) == default:
            continue
        action = _normalize(call.action)
        errno = None
        if action in _WITH_ERRNO:
            errno = EPERM if call.errno_ret is None else call.errno_ret
        indexes = [a.index for a in call.args]
        split = len(set(indexes)) != len(indexes)
        groups = [(a,) for a in call.args] if split else [call.args]
        for name in call.names:
            rules.extend(Rule(name, action, errno, g, entry) for g in groups)
    return rules
