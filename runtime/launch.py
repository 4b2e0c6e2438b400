"""Fork the container: caller --fork--> intermediate --fork--> init, or caller --fork--> init.

Invariants:
- The caller never changes namespace, root, cwd or signal state; only the children do (but
  for the pid namespace of its children, below, restored before fork returns). Control never
  returns from a child to the caller's Python stack: every child body runs inside
  try/finally posix._exit().
- The intermediate enters/creates the namespaces (a new pid namespace only applies to its
  children, hence the second fork), reports the init's host pid and exits; the caller reaps
  it. Without a pid/time namespace there is no second fork: the intermediate becomes the
  init. Nor with a new pid namespace and no user or time namespace (caller_unshares_pid): the
  caller unshares CLONE_NEWPID for its own children, forks, and setns back to its own pid
  namespace at once, so its child is born pid 1 there and is the init. Nobody but the
  caller's reaper waits for the init once launch() has returned.
- The cgroup (setup_cgroup_after_fork): the caller creates it after the fork, while the
  children set up. The init sends {"type": "cgroup"} before its cgroup bind mounts (the
  plan's AwaitCgroup op), else once its mounts are done, and waits for {"type":
  "cgroup-done"}, which the caller sends once the cgroup exists and the init can be in it:
  - v1 (init_joins_cgroup): the answer carries the "tasks" fds (SCM_RIGHTS) through which the
    init moves itself, a move that takes no RCU grace period; the caller opens them as soon
    as the cgroup exists, before the init asks, and closes its copies once it is ready;
  - v2 (caller_joins_cgroup): the caller has moved the init by pid as soon as that pid
    arrived (whichever message brought it), so that move's grace period overlapped the
    init's setup.
  With a new cgroup namespace or createContainer hooks the intermediate joins it first
  instead. create returns only after "ready", which the init sends after it joined: nothing
  of the container's runs outside its cgroup.
- A new user namespace (runtime.namespaces): the intermediate unshares it first, sends
  {"type": "idmap"} and waits; the caller writes /proc/<intermediate>/uid_map and gid_map and
  answers {"type": "idmap-done"}; the intermediate becomes root in it, then unshares the rest.
- Children report over a SOCK_SEQPACKET socketpair (runtime.child), one JSON message per
  packet: {"type": "pid"} from the intermediate, then {"type": "ready"} or {"type": "error"}
  from the init. The caller reads with a deadline, so a stuck child is an error, never a hang;
  on any failure it kills and reaps whatever it forked before raising.
- process.terminal (runtime.console): the init makes the pty after pivot_root and sends
  {"type": "console"} with the master attached (SCM_RIGHTS) before "ready"; launch() returns
  it, and closes it if create fails after all. The init's 0-2 are the slave from then on.
- linux.netDevices (runtime.netdev): the init sends {"type": "netdevices"} before anything
  else and waits; the caller moves the devices into its network namespace and answers
  {"type": "netdevices-done"}.
- linux.timeOffsets: the intermediate writes them to its /proc/self/timens_offsets right after
  it unshared the time namespace, before it forks the init (the first process in it).
- Hooks (runtime.hooks): when the spec has prestart/createRuntime hooks, the init sends
  {"type": "hooks"} before pivot_root and waits; the caller runs them and answers
  {"type": "hooks-done"} (on failure it kills the init instead). The init then runs the
  createContainer hooks itself. The caller's deadline covers the hooks' own timeouts.
  startContainer hooks run in the init after the start byte is taken; it writes "0" on
  exec.fifo only after them, or "1<error>" if one failed, so start() can report it.
"""

import errno
import posix
import time

import _signal as signal  # not signal, socket: their enum wrappers cost ~5 ms of start-up
import _socket as socket

from . import ctrcgroup, namespaces, proc
from . import init as _init
from .child import (Children, Stdio3, decode_error, dup_stdio, encode_error, fork_child,
                    keep_apart, recv, reopen_devnull, request, send, set_affinity, spawn)
from .errors import ContainerSetupError
from .state import FIFO
from .sys.consts import CLONE_NEWPID, CLONE_NEWUSER, NAMESPACE_FLAGS


# --- children --------------------------------------------------------------------------------
def _enter_namespaces(spec, sock: socket.socket, sys, in_new_pid_ns: bool = False) -> None:
    """Join the namespaces with a path (runtime.namespaces.enter), then unshare the new ones:
    a new user namespace first and alone, mapped by the caller, so it owns the others.
    CLONE_NEWPID only affects our children: the init. in_new_pid_ns: we already are the first
    process of the new pid namespace (caller_unshares_pid)."""
    joined = namespaces.open_paths(spec.linux.namespaces)
    try:
        namespaces.enter(joined, sys)
    finally:
        namespaces.close_namespaces(joined)
    flags = 0
    for n in spec.linux.namespaces:
        if not n.path:
            flags |= NAMESPACE_FLAGS[n.type]
    if in_new_pid_ns:
        flags &= ~CLONE_NEWPID
    if flags & CLONE_NEWUSER:
        namespaces.unshare_user(sys, lambda: request(
            sock, {"type": "idmap"}, "idmap-done", namespaces.USERNS_STEP,
            "the runtime did not map the user namespace"))
        flags &= ~CLONE_NEWUSER
    if flags:
        try:
            sys.unshare(flags)
        except OSError as e:
            raise ContainerSetupError("namespaces", e.strerror or str(e)) from None
    if spec.linux.time_offsets:  # a new time namespace (spec.py checks): before anyone is in it
        _init.step("timeOffsets", sys.write_file, TIMENS_OFFSETS,
                   time_offsets_text(spec.linux.time_offsets), path=TIMENS_OFFSETS)


TIMENS_OFFSETS = "/proc/self/timens_offsets"  # of the time namespace our children will enter


def time_offsets_text(offsets: dict) -> str:
    """linux.timeOffsets as /proc/<pid>/timens_offsets takes them: "<clock> <secs> <nsecs>"."""
    return "".join(f"{clock} {secs} {nsecs}\n" for clock, (secs, nsecs) in sorted(offsets.items()))


def caller_unshares_pid(spec) -> bool:
    """Whether the caller makes the new pid namespace itself, for its children only
    (unshare(CLONE_NEWPID) on its own thread, undone with setns right after the fork): the
    intermediate is then born pid 1 in it and is the init, one fork fewer (~0.5 ms). Not with
    a user namespace (made by the intermediate, it must own the pid namespace), nor with a
    time namespace (its offsets are written before its first process) or a joined pid
    namespace."""
    types = {n.type: n for n in spec.linux.namespaces}
    pid = types.get("pid")
    return pid is not None and not pid.path and "user" not in types and "time" not in types


def _fork_in_new_pid_ns(sys, after=None):
    """A fork_child() whose child is the first process of a new pid namespace; the caller's
    own children are back in its pid namespace once it returns (or fails)."""
    def fork(body) -> int:
        own = posix.open("/proc/thread-self/ns/pid", posix.O_RDONLY | posix.O_CLOEXEC)
        try:
            try:
                sys.unshare(CLONE_NEWPID)  # pid_for_children of this thread only
            except OSError as e:
                raise ContainerSetupError("namespaces", e.strerror or str(e)) from None
            try:
                return fork_child(body, after)
            finally:
                sys.setns_fd(own, CLONE_NEWPID)
        finally:
            posix.close(own)
    return fork


def _needs_second_fork(spec) -> bool:
    # Entering a pid or time namespace (new or joined) only applies to children.
    return any(n.type in ("pid", "time") for n in spec.linux.namespaces)


def setup_cgroup_after_fork(cfg) -> bool:
    """Whether launch() creates the cgroup while the children set up, rather than before it
    forks, and the init joins it late (init_joins_cgroup, caller_joins_cgroup). Not when a
    new cgroup namespace must be rooted at the container's cgroup (the intermediate joins it
    before unsharing), nor when createContainer hooks run in the init (they must start inside
    the cgroup). The init asks for it ({"type": "cgroup"}) before its cgroup binds (the
    plan's AwaitCgroup op), else once its mounts are done, before anything the cgroup may
    constrain is set (rlimits, the scheduler)."""
    return (cfg.cgroup is not None and not cfg.spec.new_namespace("cgroup")
            and not cfg.spec.hooks.get("createContainer"))


def init_joins_cgroup(cfg) -> bool:
    """cgroup v1: the init moves itself, through "tasks" fds the caller sends with its answer
    to the init's "cgroup" request - a move that takes no RCU grace period
    (cgroups.V1Manager)."""
    return setup_cgroup_after_fork(cfg) and cfg.cgroup.version == 1


def caller_joins_cgroup(cfg) -> bool:
    """cgroup v2: the caller moves the init by pid (cgroup.procs) as soon as it knows the
    pid. That move waits for an RCU grace period (5-30 ms) after an idle spell (unless
    runtime.cgwarm started it early); done by the caller, the wait overlaps the init's own
    work (mounts, devices) instead of preceding it."""
    return setup_cgroup_after_fork(cfg) and cfg.cgroup.version != 1


def _intermediate(cfg, stdio: Stdio3, sock: socket.socket, sys,
                  in_new_pid_ns: bool = False) -> int:
    try:
        # first: the init is born in the cgroup, and a new cgroup ns roots there (unless the
        # init joins it later: setup_cgroup_after_fork)
        _init.before_namespaces(None if setup_cgroup_after_fork(cfg) else cfg.cgroup,
                                cfg.spec.process, sys)
        _enter_namespaces(cfg.spec, sock, sys, in_new_pid_ns)
        if in_new_pid_ns or not _needs_second_fork(cfg.spec):
            # We can be the init ourselves: one fork fewer.
            send(sock, {"type": "pid", "self": True})  # our pid: the caller forked us
            return _init_main(cfg, stdio, sock, sys)
        pid = fork_child(lambda: _init_main(cfg, stdio, sock, sys))
        send(sock, {"type": "pid", "pid": pid})
        return 0
    except BaseException as e:  # noqa: BLE001 - reported to the caller, never raised here
        send(sock, encode_error(e, "namespaces"))
        return 1


def _exit_on_signal(sig, frame) -> None:
    posix._exit(128 + sig)


def _die_on_termination_signals() -> None:
    """While created, the init is pid 1 of its pid namespace, and the kernel drops every signal
    such an init has no handler for: without these, `kill -TERM` of a created container would
    do nothing (runc's Go init dies of it). reset_signals() undoes this before the exec."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, _exit_on_signal)


def _host_pid() -> int:
    """Our pid as the caller sees it (the host's /proc is still ours before the mounts)."""
    try:
        return int(posix.readlink("/proc/self"))
    except (OSError, ValueError):
        return posix.getpid()


def _own_hooks(cfg, kind: str, pid: int) -> None:
    """Run the init's own hooks of `kind` (createContainer, startContainer), if any, with the
    state as container._runtime_hooks gives it to the caller's ("created"). runtime.hooks was
    loaded before the fork (launch): past pivot_root it could not be imported."""
    listed = cfg.spec.hooks.get(kind)
    if listed:
        from . import hooks
        hooks.run(kind, listed, {**(cfg.hook_state or {}), "status": "created", "pid": pid})


def _runtime_hooks(spec) -> bool:
    return bool(spec.hooks.get("prestart") or spec.hooks.get("createRuntime"))


def _before_pivot(cfg, sock: socket.socket, pid: int, await_cgroup=None) -> None:
    """The create-time hooks, in order: the caller's (prestart, createRuntime), then ours.
    The caller's find the init in its cgroup (a prestart hook may set the cgroup up for the
    init's pid, as NVIDIA's does): await_cgroup() first (see _init_main)."""
    if _runtime_hooks(cfg.spec):
        if await_cgroup is not None:
            await_cgroup()
        request(sock, {"type": "hooks"}, "hooks-done", "hooks",
                "the runtime did not run the create hooks")
    _own_hooks(cfg, "createContainer", pid)


def _take_start(cfg, state_fd: int, pid: int) -> None:
    """Block until start; run the startContainer hooks; tell start() how they went."""
    fifo = posix.open(FIFO, posix.O_WRONLY | posix.O_CLOEXEC, dir_fd=state_fd)  # blocks until start
    try:
        _own_hooks(cfg, "startContainer", pid)
    except ContainerSetupError as e:
        posix.write(fifo, b"1" + str(e).encode(errors="replace")[:4000])
        raise
    posix.write(fifo, b"0")
    posix.close(fifo)


def _init_main(cfg, stdio: Stdio3, sock: socket.socket, sys) -> int:
    try:
        posix.setsid()  # out of the caller's session and process group, like runc
        pid = _host_pid()
        dup_stdio(stdio)
        # An O_PATH handle on the state dir still reaches exec.fifo after pivot_root.
        state_fd = posix.open(cfg.state_dir, posix.O_PATH | posix.O_DIRECTORY | posix.O_CLOEXEC)
        if cfg.spec.linux.net_devices:  # moved in by the caller, before our sysctls see them
            request(sock, {"type": "netdevices"}, "netdevices-done", "netDevices",
                    "the runtime did not move the network devices")
        await_cgroup = None
        if setup_cgroup_after_fork(cfg):
            asked = False

            def await_cgroup():  # once: at AwaitCgroup, before the runtime's hooks, else
                # after the mounts (init.prepare)
                nonlocal asked
                if not asked:
                    asked = True
                    # v1: the answer brings the fds to join through; v2: the caller moved us
                    reply, fds = request(sock, {"type": "cgroup"}, "cgroup-done", "cgroup",
                                         "the runtime did not create the cgroup")
                    ctrcgroup.join_self((fds, reply.get("paths") or []))
        prepared = _init.prepare(cfg, sys, lambda: _before_pivot(cfg, sock, pid, await_cgroup),
                                 lambda master: send(sock, {"type": "console"}, master),
                                 await_cgroup)
        if not cfg.spec.process.terminal:  # else 0-2 are the terminal already
            reopen_devnull(stdio)
    except BaseException as e:  # noqa: BLE001
        send(sock, encode_error(e, "init"))
        return 1
    try:
        _die_on_termination_signals()  # before "ready": a kill right after create must work
        send(sock, {"type": "ready"})
        sock.close()
        _take_start(cfg, state_fd, pid)
        posix.close(state_fd)
        _init.finish(cfg, sys, prepared)
    except BaseException as e:  # noqa: BLE001 - after start only the container's stderr is left
        posix.write(2, f"pyshim init: {e}\n".encode(errors="replace"))
        return 127 if isinstance(e, OSError) and e.errno == errno.ENOENT else 1
    return 1


# --- caller side -----------------------------------------------------------------------------
def _await_ready(sock: socket.socket, kids: Children, timeout: float, spec, sys,
                 runtime_hooks, cgroup=None, self_join=None, on_pid=None) -> int:
    """cgroup: the Manager to move the init into as soon as its pid is known (see
    caller_joins_cgroup); self_join: the (fds, paths) of ctrcgroup.open_join that answer the
    init's "cgroup" request (init_joins_cgroup), sent with it and closed by our caller; both
    None when the intermediate joined it. on_pid: see launch()."""
    # createContainer hooks run in the init before it is ready: their time is not its fault.
    allowed = timeout
    created = spec.hooks.get("createContainer")
    if created:
        from . import hooks
        allowed += hooks.budget(created)
    deadline = time.monotonic() + allowed
    ready = False

    def pid_known() -> None:
        # Once, as soon as the pid is known, whichever message brought it: the init goes on
        # setting up meanwhile, and what the caller does for it next (hooks) sees it in its
        # cgroup; then on_pid.
        nonlocal cgroup, on_pid
        if kids.pid is None:
            return
        if cgroup is not None:
            _join(cgroup, kids.pid)
            cgroup = None
        if on_pid is not None:
            told, on_pid = on_pid, None
            told(kids.pid, kids.start)

    def await_pid() -> int:
        kids.await_pid(sock, deadline, allowed)
        if kids.pid is None:
            raise ContainerSetupError("init", "the intermediate exited without reporting")
        pid_known()
        return kids.pid

    while kids.pid is None or not ready:
        msg = recv(sock, deadline, allowed)
        if msg is None:
            raise ContainerSetupError("init", "the container's init exited before reporting")
        if kids.take(msg):  # "pid", "console"
            pid_known()
            continue
        if msg["type"] == "ready":
            ready = True
        elif msg["type"] == "cgroup":  # it exists: launch's wait() made it before this
            await_pid()  # and a caller_joins_cgroup move is done
            fds, paths = self_join or ([], [])
            send(sock, {"type": "cgroup-done", **({"paths": paths} if paths else {})}, *fds)
        elif msg["type"] == "idmap":  # the intermediate's new user namespace
            namespaces.write_id_mappings(kids.mid, spec.linux, sys)
            send(sock, {"type": "idmap-done"})
        elif msg["type"] == "netdevices":  # into the init's network namespace (runtime.netdev)
            pid = await_pid()
            from . import netdev
            netdev.move_in(pid, spec.linux.net_devices)
            send(sock, {"type": "netdevices-done"})
        elif msg["type"] == "hooks":
            pid = await_pid()  # the hooks get the init's pid
            if runtime_hooks is not None:
                runtime_hooks(pid)
            send(sock, {"type": "hooks-done"})
            deadline = time.monotonic() + allowed
        else:
            err = decode_error(msg)
            kids.await_pid(sock, deadline, allowed)  # the init may report before the intermediate
            raise err
    if kids.start is None:
        raise ContainerSetupError("init", "the container's init vanished during create")
    return kids.start


def _join(cgroup, pid: int) -> None:
    try:
        ctrcgroup.join(cgroup, pid)
    except ContainerSetupError:
        start = proc.start_time(pid)
        if start is None or not proc.is_alive(pid, start):
            return  # it failed first: its own report, still on the socket, says why
        raise


def _reset_affinity(pid: int) -> None:
    try:
        set_affinity(pid)
    except ProcessLookupError:
        pass  # it died since it reported ready: start finds it stopped
    except OSError as e:
        raise ContainerSetupError("init", f"resetting the CPU affinity of the container's "
                                          f"init: {e.strerror}") from None


def launch(cfg: "_init.InitConfig", stdio: Stdio3, sys, timeout: float = 10.0,
           runtime_hooks=None, on_pid=None) -> tuple[int, int, int | None]:
    """Fork the init and wait until it is created. Returns (host pid, start time, the master
    of its terminal or None); with a terminal, `stdio` is ignored (pass Nones).
    runtime_hooks(init pid) runs the prestart and createRuntime hooks when the init asks.
    on_pid(host pid, start time) runs once as soon as they are known, while the init still
    sets up (create writes the container's state then); an exception from it fails the
    launch like any other."""
    if cfg.spec.hooks:  # runtime.hooks only then
        from . import hooks
        hooks.preload()  # the init runs hooks too, some after pivot_root
    joins, later = caller_joins_cgroup(cfg), setup_cgroup_after_fork(cfg)
    if not later:
        ctrcgroup.setup(cfg.cgroup, cfg.spec)

    def wait(sock, kids):
        join = None  # v1: the "tasks" fds the init moves itself through
        try:
            if later:  # beside the child's work (keep_apart, at the fork):
                # while the intermediate unshares and the init mounts (v2: the mkdirs can
                # queue behind runtime.cgwarm's grace period, which then costs the init
                # nothing). The init waits for them: _await_ready answers its "cgroup"
                # request, after this, with the join fds opened here before it asks.
                try:
                    ctrcgroup.setup(cfg.cgroup, cfg.spec)
                    if not joins:
                        join = ctrcgroup.open_join(cfg.cgroup)
                except BaseException:
                    # The intermediate may have forked the init already: learn its pid, so
                    # that spawn's abort kills and reaps it too, not only the intermediate.
                    kids.await_pid(sock, time.monotonic() + timeout, timeout)
                    raise
            start = _await_ready(sock, kids, timeout, cfg.spec, sys, runtime_hooks,
                                 cfg.cgroup if joins else None, join, on_pid)
        finally:
            for fd in join[0] if join else ():
                posix.close(fd)
        _reset_affinity(kids.pid)  # in its cgroup now, and blocked until start
        return kids.pid, start, kids.take_console()  # kids.pid is known only after _await_ready
    apart = keep_apart(sys) if later else None  # the cgroup setup runs beside the child
    if caller_unshares_pid(cfg.spec):
        return spawn(lambda sock: _intermediate(cfg, stdio, sock, sys, True), wait,
                     _fork_in_new_pid_ns(sys, apart))
    return spawn(lambda sock: _intermediate(cfg, stdio, sock, sys), wait,
                 lambda body: fork_child(body, apart))
