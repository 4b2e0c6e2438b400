"""cgroup v2 (unified): one directory; devices are an eBPF program, not files.

Invariant: set() refuses, before writing anything, a plan that needs a controller not listed
in the cgroup's own cgroup.controllers (i.e. not enabled by the parent's subtree_control),
naming the spec field. create() enables controllers only in the ancestors of the cgroup,
never in the cgroup itself (v2's no-internal-processes rule: it will hold the container).
"""

import posix
import time

from _signal import SIGKILL  # not signal: see base.py

from runtime.errors import InvalidSpec

from .. import ospath
from . import stats as S
from .base import CgroupError, Manager, _fail

FREEZE_TIMEOUT = 2.0


class V2Manager(Manager):
    version = 2

    def __init__(self, path: str, mountpoint: str, fs=None, kill=posix.kill, attach_devices=None):
        super().__init__({"": path}, fs, kill)
        self.path, self.mountpoint = path, mountpoint
        # (cgroup_dir, rules) -> None; None = devices_bpf.install (imported only when needed)
        self._attach_devices = attach_devices

    def _dir(self, controller: str) -> str:
        return self.path

    def _file(self, name: str) -> str:
        return ospath.join(self.path, name)

    def _read(self, name: str) -> str | None:
        try:
            return self.fs.read(self._file(name))
        except FileNotFoundError:
            return None

    # --- create -----------------------------------------------------------------------------------
    def create(self, enable=None) -> None:
        """mkdir the cgroup and missing ancestors, enabling controllers in each ancestor's
        cgroup.subtree_control on the way down: `enable` (an iterable of names), by default
        every controller the root offers (runc). Enabling can fail (EBUSY where an ancestor
        holds processes): ignored here, set() reports what is then missing."""
        if enable is None:
            root = ospath.join(self.mountpoint, "cgroup.controllers")
            try:
                enable = self.fs.read(root).split()
            except OSError as e:
                raise _fail("read", root, e) from None
        ctrls = list(enable)
        created, cur = [], self.mountpoint
        try:
            for part in ospath.relpath(self.path, self.mountpoint).split("/"):
                if ctrls:
                    self._enable(cur, ctrls)
                cur = ospath.join(cur, part)
                try:
                    if self.fs.mkdir(cur):
                        created.append(cur)
                except OSError as e:
                    raise _fail("create cgroup", cur, e) from None
        except BaseException:
            for d in reversed(created):
                try:
                    self.fs.rmdir(d)
                except OSError:
                    pass
            raise

    def _enable(self, d: str, ctrls: list[str]) -> None:
        path = ospath.join(d, "cgroup.subtree_control")
        try:
            self.fs.write(path, " ".join("+" + c for c in ctrls))
        except OSError:
            for c in ctrls:  # one refused controller fails the whole write: retry one by one
                try:
                    self.fs.write(path, "+" + c)
                except OSError:
                    pass

    # --- set ------------------------------------------------------------------------------------
    def controllers(self) -> set[str]:
        return set((self._read("cgroup.controllers") or "").split())

    def set(self, resources: dict | None) -> None:
        from .plan import Write, plan_v2
        plan = plan_v2(resources)
        needed = [w for w in plan if isinstance(w, Write) and w.controller]
        avail = self.controllers() if needed else set()
        for w in needed:
            if w.controller not in avail:
                raise InvalidSpec(w.field, f"needs the {w.controller} cgroup controller, which is "
                                           f"not enabled for {self.path} (cgroup.controllers: "
                                           f"{' '.join(sorted(avail)) or 'none'})")
        self._execute(plan)

    def _write_item(self, item) -> None:
        from .plan import DeviceFilter
        if not isinstance(item, DeviceFilter):
            return self._write(item)
        attach = self._attach_devices
        if attach is None:
            from . import devices_bpf
            attach = devices_bpf.install
        try:
            attach(self.path, item.rules)
        except OSError as e:
            raise _fail("attach the device filter to", self.path, e, item.field) from None

    # --- freezer, kill --------------------------------------------------------------------------
    def freezer_state(self) -> str:
        want = self._read("cgroup.freeze")
        if want is None:
            return ""
        if S.flat_keyed(self._read("cgroup.events") or "").get("frozen") == 1:
            return "FROZEN"
        return "FREEZING" if want.strip() == "1" else "THAWED"

    def _set_frozen(self, on: bool) -> None:
        path = self._file("cgroup.freeze")
        try:
            self.fs.write(path, "1" if on else "0")
        except FileNotFoundError:
            raise CgroupError(f"{path} does not exist (cgroup v2 freezer needs kernel 5.2+)",
                              path) from None
        except OSError as e:
            raise _fail("freezer", path, e) from None
        deadline, delay = time.monotonic() + FREEZE_TIMEOUT, 0.001
        while S.flat_keyed(self._read("cgroup.events") or "").get("frozen") != int(on):
            if time.monotonic() > deadline:
                if on:
                    self.fs.write(path, "0")  # never leave it half-frozen
                raise CgroupError(f"timed out waiting for {self.path} to become "
                                  f"{'frozen' if on else 'thawed'}", path)
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def freeze(self) -> None:
        self._set_frozen(True)

    def thaw(self) -> None:
        self._set_frozen(False)

    def kill_all(self, sig: int) -> None:
        """SIGKILL through cgroup.kill (kernel 5.14+: atomic, no fork race); anything else,
        or an older kernel, the freeze-signal-thaw way."""
        if sig == SIGKILL:
            try:
                self.fs.write(self._file("cgroup.kill"), "1")
                return
            except FileNotFoundError:
                pass
            except OSError as e:
                raise _fail("write '1' to", self._file("cgroup.kill"), e) from None
        super().kill_all(sig)

    # --- OOM, stats -------------------------------------------------------------------------------
    def events_path(self) -> str:
        """memory.events: watch it (inotify IN_MODIFY) and re-read oom_kill_count()."""
        return self._file("memory.events")

    def oom_kill_count(self) -> int:
        return S.flat_keyed(self._read("memory.events") or "").get("oom_kill", 0)

    def _int(self, name: str) -> int | None:
        text = self._read(name)
        try:
            return S.number(text) if text is not None else None
        except ValueError:
            return None

    def stats(self) -> dict:
        """{"version": 2, "pids", "cpu", "memory", "memory_events", "io", "hugetlb"}, with
        the kernel's own key names; "max" reads as 2**64-1; a section is absent when its
        controller is not enabled. cpu.stat is in usec, as the kernel gives it."""
        out: dict = {"version": 2}
        if (cur := self._int("pids.current")) is not None:
            out["pids"] = {"current": cur, "limit": self._int("pids.max") or 0}
        if (cpu := self._read("cpu.stat")) is not None:
            out["cpu"] = S.flat_keyed(cpu)
        if (usage := self._int("memory.current")) is not None:
            mem = {"usage": usage, "usage_limit": self._int("memory.max") or 0,
                   "stat": S.flat_keyed(self._read("memory.stat") or "")}
            for key, name in (("max_usage", "memory.peak"), ("swap_usage", "memory.swap.current"),
                              ("swap_limit", "memory.swap.max")):
                if (v := self._int(name)) is not None:
                    mem[key] = v
            out["memory"] = mem
            out["memory_events"] = S.flat_keyed(self._read("memory.events") or "")
        if (io := self._read("io.stat")) is not None:
            out["io"] = {"usage": S.io_stat(io)}
        sizes = sorted(f.split(".")[1] for f in self._listdir()
                       if f.startswith("hugetlb.") and f.endswith(".max") and ".rsvd." not in f)
        if sizes:
            out["hugetlb"] = [{"pagesize": s, "current": self._int(f"hugetlb.{s}.current") or 0,
                               "max": self._int(f"hugetlb.{s}.max") or 0,
                               "failcnt": S.flat_keyed(self._read(f"hugetlb.{s}.events") or "")
                               .get("max", 0)} for s in sizes]
        return out

    def _listdir(self) -> list[str]:
        try:
            return self.fs.listdir(self.path)
        except FileNotFoundError:
            return []
