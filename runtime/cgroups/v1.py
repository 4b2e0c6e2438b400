"""cgroup v1 (legacy and hybrid hosts): one directory per mounted controller.

Invariant: set() refuses, before writing anything, a plan that needs a controller which is not
mounted, naming the spec field: an unmounted controller is skipped only when nothing asked for
it. create() leaves every cpuset directory on the way down with non-empty cpuset.cpus and
cpuset.mems (copied from the parent) — with either empty, no task can join the cgroup.
"""

import posix
import time

from runtime.errors import InvalidSpec

from .. import ospath
from . import stats as S
from .base import CgroupError, Manager, _fail

FREEZE_TRIES = 1000


class V1Manager(Manager):
    version = 1
    # A thread that writes "0" to a v1 "tasks" file moves only itself, and the kernel then
    # skips the global cgroup_threadgroup_rwsem, whose write side waits for an RCU grace
    # period (5-30 ms) after an idle spell; "cgroup.procs" always takes it. Only for a
    # single-threaded process (a fresh fork), which "tasks" moves entirely.
    JOIN_FILE = "tasks"

    def __init__(self, paths: dict[str, str], hierarchy, fs=None, kill=posix.kill):
        super().__init__(paths, fs, kill)
        self.mounts = {c: hierarchy.mounts[c].point for c in paths}

    def _dir(self, controller: str) -> str:
        return self.paths[controller]

    def _file(self, controller: str, name: str) -> str | None:
        d = self.paths.get(controller)
        return ospath.join(d, name) if d else None

    # --- create ---------------------------------------------------------------------------------
    def create(self) -> None:
        """mkdir the cgroup (and missing ancestors) in every mounted hierarchy; on failure,
        remove what this call created."""
        created: list[str] = []
        try:
            for d in self.dirs():  # a combined mount (cpu,cpuacct) is one directory
                ctrl = next(c for c, p in self.paths.items() if p == d)
                self._mkdirs(self.mounts[ctrl], d, d == self.paths.get("cpuset"), created)
        except BaseException:
            for d in reversed(created):
                try:
                    self.fs.rmdir(d)
                except OSError:
                    pass
            raise

    def _mkdirs(self, mount: str, d: str, cpuset: bool, created: list[str]) -> None:
        """mkdir `d` and its missing ancestors below `mount`, appending each new one to
        `created` as it goes (so a failure half-way can still be rolled back)."""
        cur = mount
        for part in ospath.relpath(d, mount).split("/"):
            parent, cur = cur, ospath.join(cur, part)
            try:
                if self.fs.mkdir(cur):
                    created.append(cur)
            except OSError as e:
                raise _fail("create cgroup", cur, e) from None
            if cpuset:
                self._copy_cpuset(parent, cur)

    def _copy_cpuset(self, parent: str, d: str) -> None:
        for name in ("cpuset.cpus", "cpuset.mems"):
            path = ospath.join(d, name)
            try:
                if not self.fs.read(path).strip():
                    self.fs.write(path, self.fs.read(ospath.join(parent, name)).strip())
            except OSError as e:
                raise _fail("initialise", path, e) from None

    # --- set --------------------------------------------------------------------------------------
    def set(self, resources: dict | None) -> None:
        from .plan import plan_v1
        plan = plan_v1(resources)
        files = {w.file for w in plan if not w.optional}
        if {"memory.limit_in_bytes", "memory.memsw.limit_in_bytes"} <= files:
            # the safe order of the two writes depends on the live limit
            plan = plan_v1(resources, self._read_int("memory", "memory.limit_in_bytes"))
        for w in plan:
            if w.controller not in self.paths:
                raise InvalidSpec(w.field, f"needs the {w.controller} cgroup controller, "
                                           "which is not mounted on this host")
        self._execute(plan)

    # --- freezer ----------------------------------------------------------------------------------
    def freezer_state(self) -> str:
        return (self._read("freezer", "freezer.state") or "").strip()

    def _freezer_rw(self, value: str | None) -> str:
        path = self._file("freezer", "freezer.state")
        if not path:
            raise CgroupError(f"{self.dirs()[0]}: the freezer cgroup controller is not mounted",
                              self.dirs()[0])
        try:
            if value:
                self.fs.write(path, value)
            return self.fs.read(path).strip()
        except OSError as e:
            raise _fail("freezer", path, e) from None

    def freeze(self) -> None:
        """FROZEN, polled until the kernel reports it. v1 can stall in FREEZING while tasks
        fork; runc's recipe: keep rewriting, and now and then thaw and breathe (bounded ~1.5s)."""
        for i in range(FREEZE_TRIES):
            if i % 50 == 49:
                self._freezer_rw("THAWED")
                time.sleep(0.01)
            state = self._freezer_rw("FROZEN")
            if state == "FROZEN":
                return
            if state != "FREEZING":
                d = self.paths["freezer"]
                raise CgroupError(f"{d}: unexpected freezer state {state!r} while freezing", d)
            time.sleep(0.001)
        self._freezer_rw("THAWED")  # never leave it half-frozen
        raise CgroupError(f"could not freeze {self.paths['freezer']}: stuck in FREEZING",
                          self.paths["freezer"])

    def thaw(self) -> None:
        for _ in range(100):
            if self._freezer_rw("THAWED") == "THAWED":
                return
            time.sleep(0.001)
        raise CgroupError(f"could not thaw {self.paths['freezer']}", self.paths["freezer"])

    def _procs_dir(self) -> str:
        for c in ("freezer", "devices", "pids", "memory"):
            if c in self.paths:
                return self.paths[c]
        return self.dirs()[0]

    # --- OOM ------------------------------------------------------------------------------------
    def oom_event_fd(self) -> int:
        """An eventfd (CLOEXEC, blocking) that counts OOM events in the memory cgroup: read 8
        bytes to wait. The kernel also signals it once when the cgroup is removed, so check
        exists() after each wake-up. The caller owns and closes the fd."""
        d = self.paths.get("memory")
        if not d:
            raise CgroupError(f"{self.dirs()[0]}: the memory cgroup controller is not mounted",
                              self.dirs()[0])
        efd = posix.eventfd(0, posix.EFD_CLOEXEC)
        try:
            cfd = posix.open(ospath.join(d, "memory.oom_control"), posix.O_RDONLY | posix.O_CLOEXEC)
            try:
                # the registration holds what it needs; the control fd can go right after
                self.fs.write(ospath.join(d, "cgroup.event_control"), f"{efd} {cfd}")
            finally:
                posix.close(cfd)
        except OSError as e:
            posix.close(efd)
            raise _fail("register an OOM eventfd on", d, e) from None
        return efd

    def oom_kill_count(self) -> int:
        """Processes the OOM killer killed in this cgroup (kernel 4.13+; 0 if unknown)."""
        text = self._read("memory", "memory.oom_control")
        return S.flat_keyed(text).get("oom_kill", 0) if text else 0

    # --- stats ------------------------------------------------------------------------------------
    def _read(self, controller: str, name: str) -> str | None:
        path = self._file(controller, name)
        try:
            return self.fs.read(path) if path else None
        except FileNotFoundError:
            return None

    def _read_int(self, controller: str, name: str) -> int | None:
        text = self._read(controller, name)
        try:
            return S.number(text) if text is not None else None
        except ValueError:
            return None

    def _usage(self, prefix: str) -> dict | None:
        keys = {"usage": "usage_in_bytes", "limit": "limit_in_bytes",
                "max": "max_usage_in_bytes", "failcnt": "failcnt"}
        v = {k: self._read_int("memory", prefix + f) for k, f in keys.items()}
        return {k: x or 0 for k, x in v.items()} if v["usage"] is not None else None

    def stats(self) -> dict:
        """{"version": 1, "pids", "cpu", "memory", "blkio", "hugetlb"}; a section is absent
        when its controller is not mounted. Times are ns, sizes bytes."""
        out: dict = {"version": 1}
        if (cur := self._read_int("pids", "pids.current")) is not None:
            limit = self._read_int("pids", "pids.max")
            out["pids"] = {"current": cur, "limit": 0 if limit in (None, S.MAX) else limit}
        if "cpuacct" in self.paths or "cpu" in self.paths:
            out["cpu"] = self._cpu_stats()
        if (usage := self._usage("memory.")) is not None:
            mem = {"usage": usage, "stat": S.flat_keyed(self._read("memory", "memory.stat") or "")}
            for key, prefix in (("swap", "memory.memsw."), ("kernel", "memory.kmem."),
                                ("kernel_tcp", "memory.kmem.tcp.")):
                if (u := self._usage(prefix)) is not None:
                    mem[key] = u
            out["memory"] = mem
        if "blkio" in self.paths:
            out["blkio"] = {k: self._blkio(k) for k in ("io_service_bytes_recursive",
                                                        "io_serviced_recursive")}
        if "hugetlb" in self.paths and self.fs.exists(self.paths["hugetlb"]):
            out["hugetlb"] = self._hugetlb_stats()
        return out

    def _cpu_stats(self) -> dict:
        user = self._read_int("cpuacct", "cpuacct.usage_user")
        kernel = self._read_int("cpuacct", "cpuacct.usage_sys")
        if user is None or kernel is None:  # older kernels: USER_HZ ticks only
            ticks = S.flat_keyed(self._read("cpuacct", "cpuacct.stat") or "")
            hz = posix.sysconf("SC_CLK_TCK")
            user, kernel = (ticks.get(k, 0) * 10**9 // hz for k in ("user", "system"))
        thr = S.flat_keyed(self._read("cpu", "cpu.stat") or "")
        return {"usage": {"total": self._read_int("cpuacct", "cpuacct.usage") or 0,
                          "per_cpu": S.numbers(self._read("cpuacct", "cpuacct.usage_percpu") or ""),
                          "user": user, "kernel": kernel},
                "throttling": {"periods": thr.get("nr_periods", 0),
                               "throttled_periods": thr.get("nr_throttled", 0),
                               "throttled_time": thr.get("throttled_time", 0)}}

    def _blkio(self, name: str) -> list[dict]:
        # CFQ's files are gone from modern kernels; BFQ's are empty for devices it does not
        # schedule; throttle's always count. First non-empty wins (runc's order).
        for prefix in ("blkio.", "blkio.bfq.", "blkio.throttle."):
            entries = S.blkio(self._read("blkio", prefix + name) or "")
            if entries:
                return entries
        return []

    def _hugetlb_stats(self) -> list[dict]:
        sizes = sorted(f.split(".")[1] for f in self.fs.listdir(self.paths["hugetlb"])
                       if f.endswith(".limit_in_bytes") and ".rsvd." not in f)
        return [{"pagesize": s,
                 **{k: self._read_int("hugetlb", f"hugetlb.{s}.{f}") or 0
                    for k, f in (("usage", "usage_in_bytes"), ("max", "max_usage_in_bytes"),
                                 ("failcnt", "failcnt"))}} for s in sizes]
