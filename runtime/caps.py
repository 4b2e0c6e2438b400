"""Capability names <-> numbers and the 64-bit masks capset(2) takes.

A name this kernel cannot grant is dropped, as runc and crun do: one newer than this kernel's
cap_last_cap, and one the table does not know at all (runc 1.1 and crun 1.8 warn and go on, so
a config written for a newer kernel or runtime still runs). The runtime-spec asks for an error
there; containerd, Docker and Kubernetes configs rely on runc's reading. to_mask reports the
unknown names, with their exact field (process.capabilities.<set>[i]), for a warning.
"""

# Kernel order: the index is the capability number (include/uapi/linux/capability.h).
NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
NUMBERS = {name: i for i, name in enumerate(NAMES)}
SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")


_last: list[int] = []  # cached (functools.lru_cache would cost ~2 ms of start-up)


def last_cap() -> int:
    """The highest capability this kernel knows (read once: the container's init asks after
    pivot_root, where the host's /proc is gone, and gets what its caller read)."""
    if not _last:
        try:
            with open("/proc/sys/kernel/cap_last_cap") as f:
                _last.append(int(f.read()))
        except OSError:
            _last.append(len(NAMES) - 1)
    return _last[0]


def to_mask(names: list[str], field: str, last: int | None = None,
            unknown: list | None = None) -> int:
    """The bit mask of `names`; `field` is the list's JSON path. A name the table does not
    know is left out and, given `unknown`, appended to it as (its field, the name)."""
    last = last_cap() if last is None else last
    mask = 0
    for i, name in enumerate(names):
        n = NUMBERS.get(name.upper())
        if n is None:
            if unknown is not None:
                unknown.append((f"{field}[{i}]", name))
        elif n <= last:
            mask |= 1 << n
    return mask


def to_names(mask: int) -> list[str]:
    return [name for i, name in enumerate(NAMES) if mask >> i & 1]


def all_mask(last: int | None = None) -> int:
    return (1 << ((last_cap() if last is None else last) + 1)) - 1
