"""The engine's public API: Engine(root).create/load/list; Container.status/state/start/exec/
kill/pause/resume/update/stats/pids/delete.

Invariants:
- create() leaves nothing behind on failure (no process, no cgroup, no state dir) and raises a
  typed EngineError; on success the init is "created": set up, in its cgroup, and blocked on
  <state>/exec.fifo.
- Status is derived, never stored: "stopped" = the init is not alive (same pid AND start time;
  a zombie is stopped), "paused" = alive and its cgroup frozen, "created" = alive with the fifo
  present, "running" = alive without it.
- The engine never waits for the init or exec'd processes (the caller reaps them) except to
  reap an init that failed during create, which the caller never saw. It never signals the init
  without checking its start time through a pidfd; kill(all=True) signals the cgroup's members.
- delete() removes the cgroup only once no process is left in it, and the state dir last, so a
  failed delete can be retried.
- Hooks (runtime.hooks; where each kind runs is documented there): a failing prestart,
  createRuntime or createContainer hook fails create, which then leaves nothing behind; a
  failing startContainer hook fails start (the init exits); poststart and poststop failures
  are logged warnings. poststop also runs after a failed create, like runc's destroy.
"""

import posix
import time

from _signal import SIGKILL, pidfd_send_signal  # signal's enum wrappers cost ~4 ms of start-up

from . import ospath
from . import proc, state
from .errors import (ContainerExists, ContainerNotFound, ContainerSetupError, EngineError,
                     InvalidSpec, InvalidState, ProcessFinished)

# Start-up is latency for every CLI command and every `shim delete`: state, kill, delete, list
# and start need only the modules above (and runtime.ctrcgroup for the cgroup). What create and
# exec apply a spec with (runtime.spec, mounts, launch, execproc, init, seccomp, hooks...) is
# imported by them, on first use: create runtime.launch, exec runtime.execproc, and what each
# of those imports (load_engine() imports all of it).
_ID_CHARS = frozenset("_+.-")
_UNSET = object()
START_TIMEOUT = 10.0


class Stdio:
    """fds the process gets as 0, 1, 2 (None -> /dev/null). The caller keeps and closes its own.
    When the process has a terminal (process.terminal), stdin/stdout/stderr are ignored: the
    engine makes a pty inside the container and sets console_fd to its master (CLOEXEC, the
    caller's to close); the process has the slave as 0, 1, 2 and controlling terminal.
    preserve_fds=N: the caller's fds 3..N+2 reach the process as they are (runc's
    --preserve-fds); every other fd above 2 is closed before the exec.
    (A plain class: this module is on every command's start-up path.)"""
    __slots__ = ("stdin", "stdout", "stderr", "console_fd", "preserve_fds")

    def __init__(self, stdin: int | None = None, stdout: int | None = None,
                 stderr: int | None = None, console_fd: int | None = None,
                 preserve_fds: int = 0):
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.console_fd = console_fd  # output: set by create/exec when there is a terminal
        self.preserve_fds = preserve_fds

    def __eq__(self, other):
        if other.__class__ is not Stdio:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None

    def __repr__(self) -> str:
        return "Stdio(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__) + ")"

    def for_process(self, process) -> tuple:
        """The (stdin, stdout, stderr) the process gets: Nones when it has a terminal."""
        return (None,) * 3 if process.terminal else (self.stdin, self.stdout, self.stderr)


def _valid_id(container_id: str) -> bool:
    """runc's rule ([\\w+.-]+): no slashes, nothing that walks the state root."""
    return (bool(container_id) and container_id not in (".", "..")
            and all(c.isalnum() or c in _ID_CHARS for c in container_id))


def load_engine(everything: bool = False):
    """Import what create and exec apply a spec with (create needs only runtime.launch and
    what it imports, exec runtime.execproc: each imports just that); returns runtime.launch.
    everything=True: also what only some specs need (seccomp; imported by seccomp_filter()
    when a spec has a profile): what `pyshim-runc features` asks, to report only what the
    engine really loads."""
    from . import execproc, hooks, launch, mounts, namespaces  # noqa: F401
    if everything:
        from . import seccomp  # noqa: F401
    return launch


def _linux():
    from .sys.linux import LINUX
    return LINUX


class Engine:
    """Containers under a state root (e.g. /run/pyshim/<namespace>), one directory per id."""

    def __init__(self, root: str, sys=None, timeout: float = 10.0):
        self.root = root
        self._sys_given = sys  # None: the real kernel (runtime.sys.linux, imported on use)
        self._timeout = timeout  # for each create: a stuck init is an error, never a hang

    @property
    def _sys(self):
        if self._sys_given is None:
            self._sys_given = _linux()
        return self._sys_given

    def _dir(self, container_id: str) -> str:
        if not _valid_id(container_id):
            raise InvalidSpec("id", f"invalid container id {container_id!r}")
        return ospath.join(self.root, container_id)

    def create(self, container_id: str, bundle: str, stdio: Stdio | None = None, *,
               new_keyring: bool = True, no_pivot: bool = False,
               extra_env: list[str] | tuple = ()) -> "Container":
        """Set the container up and leave its init waiting for start (see module docstring).
        new_keyring=False: its processes keep the caller's session keyring (runc's
        --no-new-keyring; recorded, so that exec does the same). no_pivot: move the rootfs
        onto / and chroot instead of pivot_root (runc's --no-pivot, for a ramdisk rootfs).
        extra_env: appended to the process's env (runc's LISTEN_FDS for socket activation)."""
        state_dir = self._dir(container_id)
        if ospath.lexists(state_dir):  # checked again, race-free, by mkdir below
            raise ContainerExists(container_id)
        bundle = ospath.abspath(bundle)
        from . import ctrcgroup, launch  # launch imports all the init runs (before the fork)
        # all that can fail before anything exists
        cfg = _plan(container_id, bundle, state_dir, no_pivot)
        if extra_env:
            cfg.spec.process.env = [*cfg.spec.process.env, *extra_env]
        ospath.makedirs(self.root, 0o711, exist_ok=True)
        try:
            posix.mkdir(state_dir, 0o711)
        except FileExistsError:
            raise ContainerExists(container_id) from None
        cgroup = None
        try:
            if any(m.idmapped() for m in cfg.spec.mounts):  # made here, moved in by the init
                from . import idmap
                cfg.mount_fds = idmap.prepare(cfg.spec, bundle, self._sys)
            fifo = ospath.join(state_dir, state.FIFO)
            posix.mkfifo(fifo)
            posix.chmod(fifo, 0o622)  # not via umask: the caller's umask is not ours to change
            stdio = stdio or Stdio()  # without one, a terminal's master is closed (a hangup)
            cfg.preserve_fds = stdio.preserve_fds
            cfg.keyring = _init_keyring_name(container_id) if new_keyring else None
            # launch() sets the cgroup up too, at the moment that costs the least
            cgroup = cfg.cgroup
            prepared = []  # the state data written aside while the init set up

            def on_pid(pid: int, start: int) -> None:
                data = _state_data(container_id, bundle, cfg, pid, start, new_keyring)
                state.prepare(state_dir, data)
                prepared.append(data)
            pid, start, master = launch.launch(cfg, stdio.for_process(cfg.spec.process),
                                               self._sys, self._timeout,
                                               lambda pid: _runtime_hooks(cfg, pid), on_pid)
        except BaseException:
            # launch() killed and reaped its children; the cgroup may or may not exist yet
            ctrcgroup.destroy_quietly(cgroup)
            state.remove(state_dir)
            _poststop(cfg.spec, cfg.hook_state)  # the lifecycle goes on at delete (runc too)
            raise
        finally:
            if cfg.mount_fds:  # the init has moved them in, or failed
                from . import idmap
                idmap.close_all(cfg.mount_fds)
                cfg.mount_fds = None
        told = prepared[0] if prepared else None
        fresh = told is None or (told["pid"], told["pidStartTime"]) != (pid, start)
        data = _state_data(container_id, bundle, cfg, pid, start, new_keyring) if fresh else told
        c = Container(state_dir, data, self._sys_given, self._timeout)
        try:
            if fresh:
                state.write(state_dir, c._data)
            else:
                state.commit(state_dir)
        except BaseException:
            if master is not None:
                posix.close(master)
            c._kill_and_wait()
            _reap(pid)  # the caller never saw this init
            ctrcgroup.destroy_quietly(cgroup)
            state.remove(state_dir)
            _poststop(cfg.spec, cfg.hook_state)
            raise
        stdio.console_fd = master
        return c

    def load(self, container_id: str) -> "Container":
        state_dir = self._dir(container_id)
        data = state.read(state_dir)
        if data is None:
            raise ContainerNotFound(container_id)
        return Container(state_dir, data, self._sys_given, self._timeout)

    def adopt(self, container_id: str, portable: dict) -> "Container":
        """A container made by create in another process, from its portable() form: no
        state read, no config in memory (see Container.drop_config)."""
        c = Container(self._dir(container_id), portable["data"], self._sys_given,
                      self._timeout)
        c._summary = portable["summary"]
        return c

    def list(self) -> list[str]:
        try:
            names = posix.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(n for n in names
                      if ospath.exists(ospath.join(self.root, n, state.STATE_FILE)))


def _plan(container_id: str, bundle: str, state_dir: str, no_pivot: bool = False) -> "InitConfig":
    from . import ctrcgroup, mounts
    from . import spec as spec_mod
    from .init import InitConfig
    spec = spec_mod.load(ospath.join(bundle, "config.json"))
    spec_mod.check_supported(spec)
    rootfs = spec_mod.root_path(spec, bundle)
    if not ospath.isdir(rootfs):
        raise ContainerSetupError("rootfs", f"rootfs {rootfs} is not a directory", rootfs)
    cgroup = ctrcgroup.for_spec(spec, container_id)
    if spec.namespace("mount") is None and (spec.mounts or spec.linux.devices):
        from . import log
        log.warning("runtime.container", "no mount namespace: the container shares the "
                    "host's filesystem; its mounts and devices are not set up (as runc)")
    # A cgroup mount inside shows the container's own cgroup, not the caller's.
    host = mounts.HostInfo.probe(cgroups=any(m.type == "cgroup" for m in spec.mounts),
                                 cgroup_dirs=cgroup.dirs())
    return InitConfig(spec, rootfs, mounts.plan_rootfs(spec, rootfs, bundle, host, no_pivot),
                      state_dir, cgroup, seccomp_filter(spec, state_dir),
                      _state_base(spec.oci_version, container_id, bundle, spec.annotations))


def _state_base(oci_version: str, container_id: str, bundle: str, annotations: dict) -> dict:
    """The OCI state document but for status and pid (what hooks get on stdin)."""
    return {"ociVersion": oci_version, "id": container_id, "bundle": bundle,
            "annotations": dict(annotations)}


def _runtime_hooks(cfg: "InitConfig", pid: int) -> None:
    """prestart then createRuntime, here in the runtime's namespaces (launch calls it). Their
    state says "created", as the runtime-spec's lifecycle has it (they run after step 2, the
    environment's creation, which "creating" is), as crun and the runtime-tools suite
    expect; runc 1.1 says "creating"."""
    from . import hooks
    state_doc = {**cfg.hook_state, "status": "created", "pid": pid}
    for kind in ("prestart", "createRuntime"):
        hooks.run(kind, cfg.spec.hooks.get(kind, []), state_doc)


def _poststop(spec: "spec_mod.Spec", base: dict) -> None:
    if not spec.hooks.get("poststop"):
        return
    from . import hooks
    hooks.warn("poststop", spec.hooks.get("poststop", []), {**base, "status": "stopped", "pid": 0})


def seccomp_filter(spec: "spec_mod.Spec",
                   state_dir: str | None = None) -> "SeccompFilter | None":
    """linux.seccomp compiled here, in the caller, before any fork (None: no seccomp); read
    back when compiled before, from the cache in the root of the engine that holds state_dir
    (runtime.seccomp.cache)."""
    if spec.linux.seccomp is None:
        return None
    from . import seccomp
    from .init import SeccompFilter
    profile = seccomp.parse(spec.linux.seccomp)
    if profile is None:
        return None
    for i, call in enumerate(profile.syscalls):
        if call.action == "SCMP_ACT_NOTIFY":
            raise InvalidSpec(f"linux.seccomp.syscalls[{i}].action",
                              "SCMP_ACT_NOTIFY (a seccomp agent) is not supported yet")
    cache = ospath.join(ospath.dirname(state_dir), seccomp.cache.DIRNAME) if state_dir else None
    return SeccompFilter(seccomp.compile_cached(profile, cache), seccomp.filter_flags(profile))


def _state_data(container_id: str, bundle: str, cfg: "InitConfig", pid: int, start: int,
                new_keyring: bool = True) -> dict:
    from . import ctrcgroup
    data = {"ociVersion": cfg.spec.oci_version, "id": container_id, "bundle": bundle,
            "rootfs": cfg.rootfs, "pid": pid, "pidStartTime": start, "created": utc_now(),
            "annotations": cfg.spec.annotations, "cgroup": ctrcgroup.to_state(cfg.cgroup),
            "config": cfg.spec.raw}
    if not new_keyring:
        data["noNewKeyring"] = True
    return data


def _init_keyring_name(container_id: str) -> str:
    from .init import keyring_name
    return keyring_name(container_id)


def utc_now() -> str:
    """datetime.now(timezone.utc).isoformat() with a Z (microseconds unless zero), without
    importing datetime."""
    ns = time.time_ns()
    secs, us = divmod(ns // 1000, 1_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    return f"{stamp}.{us:06d}Z" if us else f"{stamp}Z"


def _reap(pid: int) -> None:
    try:
        posix.waitpid(pid, 0)
    except ChildProcessError:
        pass


class Container:
    def __init__(self, state_dir: str, data: dict, sys=None, timeout: float = 10.0):
        self._dir = state_dir
        self._data = data
        self._sys_given = sys  # None: the real kernel, as Engine
        self._timeout = timeout  # for each exec, like create's
        self.id: str = data["id"]
        self.bundle: str = data["bundle"]
        self.pid: int = data["pid"]
        self.start_time: int = data["pidStartTime"]
        self.created: str = data["created"]
        self.annotations: dict = data.get("annotations", {})
        self._spec = None
        self._cgroup_manager = _UNSET  # made from data["cgroup"] on first use
        # After drop_config: which hook kinds the config has, and whether it moves network
        # devices, so that start and delete read the config back only when they need it.
        self._summary: dict | None = None

    _sys = Engine._sys

    @property
    def _cgroup(self):
        """The cgroup Manager recorded at create (runtime.ctrcgroup); None: the container was
        made before cgroups were wired in."""
        if self._cgroup_manager is _UNSET:
            from . import ctrcgroup
            self._cgroup_manager = ctrcgroup.from_state(self._data.get("cgroup"))
        return self._cgroup_manager

    @_cgroup.setter
    def _cgroup(self, manager) -> None:
        self._cgroup_manager = manager

    def _config(self) -> dict:
        """The config as recorded at create: kept in memory, or read back from the state
        after drop_config()."""
        config = self._data.get("config")
        if config is None:
            data = state.read(self._dir)
            if data is None:
                raise ContainerNotFound(self.id)
            config = data["config"]
        return config

    def full_state(self) -> dict:
        """The state document with its config (see drop_config)."""
        if "config" in self._data:
            return self._data
        return {**self._data, "config": self._config()}

    def drop_config(self) -> None:
        """Keep the config out of memory (a long-lived holder of many containers, the shim,
        needs it only for hooks at start and delete, and at checkpoint); it is read back from
        the state when needed. A summary says when that is."""
        config = self._data.pop("config", None)
        if config is not None:
            self._summary = {
                "hooks": sorted(k for k, v in (config.get("hooks") or {}).items() if v),
                "netDevices": bool((config.get("linux") or {}).get("netDevices"))}
        self._spec = None

    def portable(self) -> dict:
        """What Engine.adopt needs to make this container in another process (the shim's
        create fork hands it to the daemon): the state without the config, and its summary."""
        self.drop_config()
        return {"data": self._data, "summary": self._summary}

    @property
    def spec(self) -> "spec_mod.Spec":
        """The config as validated at create time (later edits to config.json do not count)."""
        if self._spec is None:
            from . import spec as spec_mod
            self._spec = spec_mod.parse(self._config())
        return self._spec

    def _hooks(self, kind: str) -> list:
        """The spec's hooks of one kind; the config is parsed only when it has some."""
        if self._summary is not None and kind not in self._summary["hooks"]:
            return []
        if not (self._config().get("hooks") or {}).get(kind):
            return []
        return self.spec.hooks.get(kind, [])

    @property
    def _fifo(self) -> str:
        return ospath.join(self._dir, state.FIFO)

    def status(self) -> str:
        if not proc.is_alive(self.pid, self.start_time):
            return "stopped"
        if self._frozen():
            return "paused"
        return "created" if ospath.exists(self._fifo) else "running"

    def _frozen(self) -> bool:
        if self._cgroup_manager is _UNSET:  # no Manager made yet: status needs none
            from . import ctrcgroup
            return ctrcgroup.is_frozen(self._data.get("cgroup"))
        try:
            return self._cgroup is not None and self._cgroup.freezer_state() == "FROZEN"
        except (OSError, EngineError):
            return False

    def state(self) -> dict:
        status = self.status()
        return {**self._state_base(), "status": status,
                "pid": 0 if status == "stopped" else self.pid}

    def _state_base(self) -> dict:
        return _state_base(self._data["ociVersion"], self.id, self.bundle, self.annotations)

    def start(self) -> None:
        """Let the init go: it runs the startContainer hooks, then execs; then the poststart
        hooks run here (their failures are only logged)."""
        status = self.status()
        if status != "created":
            raise InvalidState(f"cannot start a container that is {status}", self.id, status)
        # Non-blocking open + poll: a blocking open would hang forever if the init died.
        fd = posix.open(self._fifo, posix.O_RDONLY | posix.O_NONBLOCK | posix.O_CLOEXEC)
        try:
            answer = self._read_start_answer(fd)
        finally:
            posix.close(fd)
        if answer[:1] == b"1":
            raise ContainerSetupError("startContainer hook", answer[1:].decode(errors="replace"))
        if answer != b"0":
            raise InvalidState("container init exited before it could start", self.id, "stopped")
        posix.unlink(self._fifo)
        if self._hooks("poststart"):
            from . import hooks
            hooks.warn("poststart", self._hooks("poststart"),
                       {**self._state_base(), "status": "running", "pid": self.pid})

    def _read_start_answer(self, fd: int) -> bytes:
        """b"0" (started), b"1<error>" (a startContainer hook failed), b"" (the init died)."""
        import select
        p = select.poll()
        p.register(fd, select.POLLIN)
        allowed = START_TIMEOUT
        if self._hooks("startContainer"):
            from . import hooks
            allowed += hooks.budget(self._hooks("startContainer"))
        deadline = time.monotonic() + allowed
        while time.monotonic() < deadline:
            if p.poll(100):
                return posix.read(fd, 4096)
            if not proc.is_alive(self.pid, self.start_time):
                try:  # it may have answered just before it died (a failing hook does that)
                    return posix.read(fd, 4096)
                except BlockingIOError:
                    return b""
        raise EngineError(f"container {self.id!r}: init did not take the start within "
                          f"{allowed:g}s")

    def exec(self, process: dict, stdio: Stdio, sub_cgroups: dict | None = None) -> int:
        """Run an OCI process object inside the container's namespaces and cgroup; return its
        host pid once it has exec'd (with a terminal, stdio.console_fd is its master). The
        caller reaps it. See runtime.execproc. sub_cgroups: {controller or "": path} of
        existing sub-cgroups to join instead (runc's exec --cgroup)."""
        from . import execproc, namespaces
        from . import spec as spec_mod
        p = spec_mod.parse_process(process)
        spec_mod.check_process_supported(p)
        spec_mod.check_process_ids(p, self.spec)
        status = self.status()
        if status not in ("created", "running"):
            raise InvalidState(f"cannot exec in a {status} container", self.id, status)
        fds = namespaces.open_namespaces(self.pid, self.start_time)
        if fds is None:
            raise InvalidState("cannot exec in a stopped container", self.id, "stopped")
        try:
            keyring = None if self._data.get("noNewKeyring") else _init_keyring_name(self.id)
            job = execproc.ExecJob(p, stdio.for_process(p), fds, self._cgroup,
                                   seccomp_filter(self.spec, self._dir),
                                   stdio.preserve_fds, keyring,
                                   sub_cgroups or None)
            pid, stdio.console_fd = execproc.run(job, self._sys, self._timeout)
            return pid
        finally:
            namespaces.close_namespaces(fds)

    def kill(self, sig: int, all: bool = False) -> None:
        """Signal the init; all=True: every process in the cgroup (runc kill --all), which is
        allowed on a stopped container too (processes may outlive an init that had no pid
        namespace)."""
        if all and self._cgroup is not None:
            self._cgroup.kill_all(sig)
            return
        fd = proc.open_pidfd(self.pid, self.start_time)
        if fd is None:
            raise ProcessFinished(self.id)
        try:
            pidfd_send_signal(fd, sig)
        except ProcessLookupError:
            raise ProcessFinished(self.id) from None
        finally:
            posix.close(fd)

    # --- the cgroup ----------------------------------------------------------------------------
    def _manager(self):
        if self._cgroup is None:
            raise EngineError(f"container {self.id!r} has no cgroup recorded in its state")
        return self._cgroup

    def pids(self) -> list[int]:
        """Host pids of every process in the container's cgroup."""
        return self._cgroup.pids() if self._cgroup is not None else []

    def pause(self) -> None:
        status = self.status()
        if status not in ("created", "running"):
            raise InvalidState(f"cannot pause a {status} container", self.id, status)
        self._manager().freeze()

    def resume(self) -> None:
        status = self.status()
        if status != "paused":
            raise InvalidState(f"cannot resume a {status} container", self.id, status)
        self._manager().thaw()

    def update(self, resources: dict) -> None:
        """Set OCI linux.resources on the live cgroup. Like runc update, the device rules stay
        those of create: a "devices" entry is ignored."""
        status = self.status()
        if status == "stopped":
            raise InvalidState("cannot update a stopped container", self.id, status)
        if not isinstance(resources, dict):
            raise InvalidSpec("linux.resources", "must be an object")
        self._manager().set({k: v for k, v in resources.items() if k != "devices"})

    def stats(self) -> dict:
        """The cgroup manager's stats (see runtime.cgroups V1Manager/V2Manager.stats)."""
        return self._manager().stats()

    def oom_event_fd(self) -> int:
        """cgroup v1: an eventfd counting OOM events (the caller owns it)."""
        m = self._manager()
        if not hasattr(m, "oom_event_fd"):
            raise EngineError(f"container {self.id!r}: cgroup v{m.version} has no OOM eventfd; "
                              "watch the memory.events file instead")
        return m.oom_event_fd()

    def oom_kill_count(self) -> int:
        return self._manager().oom_kill_count()

    # --- delete --------------------------------------------------------------------------------
    def delete(self, force: bool = False) -> None:
        if not ospath.isdir(self._dir):
            return  # already deleted
        status = self.status()
        if status in ("running", "paused") and not force:
            raise InvalidState(f"cannot delete a {status} container without force", self.id,
                               status)
        if status != "stopped":  # a created one is killed like runc does, force or not
            self._net_devices_back()
            self._kill_and_wait()
        # The config (for poststop) before the state goes: it may be read back from it.
        spec = self.spec if self._hooks("poststop") else None
        self._remove_cgroup()
        state.remove(self._dir)
        if spec is not None:
            _poststop(spec, self._state_base())

    def _net_devices_back(self) -> None:
        """linux.netDevices go back to the host while the init still holds the namespace."""
        if self._summary is not None and not self._summary["netDevices"]:
            return
        if not (self._config().get("linux") or {}).get("netDevices"):
            return
        try:
            fd = posix.open(f"/proc/{self.pid}/ns/net", posix.O_RDONLY | posix.O_CLOEXEC)
        except OSError:
            return
        try:
            if proc.is_alive(self.pid, self.start_time):  # the fd is that init's namespace
                from . import netdev
                netdev.move_out(fd, self.spec.linux.net_devices, self.id)
        finally:
            posix.close(fd)

    def _kill_and_wait(self) -> None:
        """SIGKILL the init and, with a cgroup, every other process in it (a frozen cgroup is
        thawed to let them die); wait until they are gone from the cgroup. Not until the init
        is a zombie: with a pid namespace the kernel holds the init until the caller reaps the
        exec'd processes it killed, which it cannot do while we wait."""
        m = self._cgroup
        fd = proc.open_pidfd(self.pid, self.start_time)
        try:
            if m is not None:
                m.kill_all(SIGKILL)
            if fd is not None:
                try:
                    pidfd_send_signal(fd, SIGKILL)
                except ProcessLookupError:
                    pass
            if m is not None:
                self._wait_cgroup_empty()
            elif fd is not None and not proc.wait_exit(fd, START_TIMEOUT):
                raise EngineError(f"container {self.id!r}: init did not die after SIGKILL")
        finally:
            if fd is not None:
                posix.close(fd)

    def _wait_cgroup_empty(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while self._cgroup.pids():
            if time.monotonic() > deadline:
                raise EngineError(f"container {self.id!r}: processes left in "
                                  f"{self._cgroup.dirs()[0]} after SIGKILL")
            time.sleep(0.005)

    def _remove_cgroup(self) -> None:
        m = self._cgroup
        if m is None:
            return
        if m.pids():  # an init without a pid namespace leaves its children behind (runc kills)
            m.kill_all(SIGKILL)
            self._wait_cgroup_empty()
        m.destroy()
