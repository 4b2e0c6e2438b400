"""Parsers from cgroup stat files (text) to plain ints, dicts and lists. No I/O.

Invariant: "max" reads as MAX (2**64-1, what containerd reports for an unlimited v2 limit),
every number is an int, and a malformed line is skipped rather than failing a whole stats
call — stats are observations, never a reason to fail a container operation.
"""

MAX = 2**64 - 1


def number(text: str) -> int:
    t = text.strip()
    return MAX if t == "max" else int(t)


def flat_keyed(text: str) -> dict[str, int]:
    """"key value" lines (memory.stat, cpu.stat, memory.events, memory.oom_control...)."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = number(parts[1])
            except ValueError:
                pass
    return out


def numbers(text: str) -> list[int]:
    """Space-separated numbers (cpuacct.usage_percpu)."""
    return [int(x) for x in text.split()]


def blkio(text: str) -> list[dict]:
    """v1 "MAJ:MIN Op value" lines; the "Total" line and malformed ones are dropped."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and ":" in parts[0]:
            major, _, minor = parts[0].partition(":")
            try:
                out.append({"major": int(major), "minor": int(minor), "op": parts[1],
                            "value": int(parts[2])})
            except ValueError:
                pass
    return out


def io_stat(text: str) -> list[dict]:
    """v2 io.stat: "MAJ:MIN rbytes=1 wbytes=2 ..." -> [{"major", "minor", "rbytes", ...}]."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if not parts or ":" not in parts[0]:
            continue
        major, _, minor = parts[0].partition(":")
        try:
            entry = {"major": int(major), "minor": int(minor)}
            for kv in parts[1:]:
                k, _, v = kv.partition("=")
                entry[k] = int(v)
        except ValueError:
            continue
        out.append(entry)
    return out
