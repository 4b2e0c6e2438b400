"""The commands of pyshim-runc (runtime.cli parses; this module acts through the engine API).

Invariants:
- Each command is one short function over Engine/Container; output formats are runc 1.1's
  byte for byte where a program may parse them (state, list, ps --format json, spec, features).
- The container's stdio are the CLI's own fds 0-2, as with runc without a terminal. With one
  (process.terminal), the pty master goes to --console-socket, or is relayed to the CLI's stdio
  by `run`/`exec` in the foreground (runtime.cli_tty). In the real process, create/run/exec
  first close every other inherited fd: the engine forks (it does not exec like runc), so a pipe
  the caller leaked to us would stay open in the waiting init.
- `create` and `run --detach` leave the init to the caller's subreaper (or pid 1): the CLI sets
  no PDEATHSIG and exits. `run` and `exec` in the foreground make the CLI a child subreaper
  before forking, so the container process (a grandchild) is re-parented to it and waited for;
  signals the CLI receives are forwarded to it, and the exit code is its status (128+signal).
- An engine method that does not exist yet (exec, pids, pause, resume, update, stats, kill with
  all=) is a "not supported by this engine yet" error, found by name, never by catching
  AttributeError around a call.
"""

import posix
import sys

from . import ospath
from .cli import PROG, CliError, UsageError, error_text, unsupported
from .errors import ContainerNotFound, EngineError, ProcessFinished


def run(name: str, ctx, opts, args: list[str]) -> int:
    if name in ("spec", "features"):
        return _COMMANDS[name](ctx, opts, args)
    # The engine's warnings (a failed poststart or poststop hook; runtime.log) become lines of
    # our log, as runc's warnings do (and `logging` is never imported).
    from . import log as engine_log
    engine_log.sink = ctx.log.write
    try:
        return _COMMANDS[name](ctx, opts, args)
    finally:
        engine_log.sink = None  # main() may be called again in the same process (tests)


# --- helpers ---------------------------------------------------------------------------------
def _method(obj, name: str, what: str):
    fn = getattr(obj, name, None)
    if fn is None:
        raise unsupported(what)
    return fn


def _accepts(fn, kwarg: str) -> bool:
    code = getattr(fn, "__code__", None)
    if code is None:
        return False
    return kwarg in code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]


def _stdio(o, listen: int = 0):
    """The CLI's fds 0-2 (None for a closed one: the engine gives it /dev/null), then the
    `listen` socket-activation fds (3 on) and the --preserve-fds ones after them, which must
    all be open."""
    from .container import Stdio

    def live(fd):
        try:
            posix.fstat(fd)
            return fd
        except OSError:
            return None
    n = o.preserve_fds or 0
    if n < 0:
        raise CliError(f"--preserve-fds {n}: must not be negative")
    for fd in range(3, 3 + listen):
        if live(fd) is None:
            raise CliError(f"LISTEN_FDS={listen}: fd {fd} is not open")
    for i in range(n):
        fd = 3 + listen + i
        if live(fd) is None:
            raise CliError(f"unable to stat preserved-fd {i} (of {n}): fd {fd} is not open")
    return Stdio(live(0), live(1), live(2), preserve_fds=listen + n)


def _activation(ctx) -> tuple[int, list[str]]:
    """(socket-activation fds, the env the container gets for them), as runc: LISTEN_FDS=N
    and LISTEN_PID=1 (the container's process)."""
    n = ctx.listen_fds
    return n, ([f"LISTEN_FDS={n}", "LISTEN_PID=1"] if n else [])


def _hand_over_console(stdio, console_socket: str | None, destroy) -> int | None:
    """With a terminal, the engine set stdio.console_fd: give it to --console-socket (then it
    is not ours any more), or return it for the foreground relay."""
    master = stdio.console_fd
    if master is None or not console_socket:
        return master
    from . import cli_tty
    try:
        cli_tty.send_console(console_socket, master)
    except BaseException:
        destroy()
        raise
    finally:
        posix.close(master)
    return None


def write_pid_file(path: str, pid: int) -> None:
    """runc's createPidFile: the pid, no newline, written to a dot-file beside and renamed."""
    path = ospath.abspath(path)
    tmp = ospath.join(ospath.dirname(path), f".{ospath.basename(path)}.{posix.getpid()}")
    fd = posix.open(tmp, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC | posix.O_CLOEXEC, 0o666)
    try:
        posix.write(fd, str(pid).encode())
    finally:
        posix.close(fd)
    try:
        posix.rename(tmp, path)
    except BaseException:
        posix.unlink(tmp)
        raise


def go_json(obj, indent=None) -> str:
    """encoding/json's text: compact or indented, <>& escaped, non-ASCII kept."""
    from . import fastjson as json
    sep = (",", ":") if indent is None else (",", ": ")
    text = json.dumps(obj, indent=indent, separators=sep, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def container_state(c, owner: str = "") -> dict:
    """runc's containerState, in its field order; annotations only when there are some."""
    st = c.state()
    rootfs = st.get("rootfs") or getattr(c, "_data", {}).get("rootfs", "")
    doc = {"ociVersion": st["ociVersion"], "id": st["id"], "pid": st["pid"],
           "status": st["status"], "bundle": st["bundle"], "rootfs": rootfs,
           "created": st.get("created") or c.created}
    annotations = st.get("annotations")
    if annotations:
        doc["annotations"] = dict(sorted(annotations.items()))
    doc["owner"] = owner
    return doc


def _owner(ctx, cid: str) -> str:
    import pwd
    try:
        uid = posix.stat(ospath.join(ctx.root, cid)).st_uid
    except OSError:
        return ""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"#{uid}"


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


# --- waiting for a foreground process --------------------------------------------------------
def become_subreaper() -> None:
    # Through the engine's syscall layer (its libc handle and error format), which create
    # and exec load anyway.
    from .sys.linux import LINUX
    try:
        LINUX.set_child_subreaper()
    except OSError as e:
        raise CliError(e.strerror or str(e)) from None  # "prctl PR_SET_CHILD_SUBREAPER: ..."


class Forwarder:
    """Forwards the signals the CLI gets to the container's process once it is known (runc's
    signal handler: everything but SIGCHLD, SIGWINCH, SIGURG; SIGPIPE stays ignored). Nor the
    signals of a fault (SIGSEGV, SIGBUS, SIGFPE, SIGILL), unlike runc, whose Go runtime tells
    a fault from a kill: Python cannot, and its handler returning to the faulting instruction
    would turn a crash into a hang at full CPU."""

    SKIP = ("SIGCHLD", "SIGWINCH", "SIGURG", "SIGPIPE", "SIGKILL", "SIGSTOP",
            "SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL")

    def __init__(self, ctx):
        import _signal as signal  # not signal: its enum wrappers cost ~4 ms of start-up
        self.target = None  # callable(sig)
        self.pending: list[int] = []
        self.active = ctx.real_process
        if not self.active:
            return
        named = {getattr(signal, n) for n in dir(signal)  # signal.Signals' members
                 if n.startswith("SIG") and not n.startswith("SIG_")}
        skip = {getattr(signal, n) for n in self.SKIP}
        handler = self._on_signal  # one bound method for all: the init's reset frees one
        for sig in signal.valid_signals():
            if sig in named and sig not in skip:
                try:
                    signal.signal(sig, handler)
                except (OSError, ValueError):
                    pass

    def _on_signal(self, sig, frame) -> None:
        if self.target is None:
            self.pending.append(sig)
        else:
            self.target(sig)

    def attach(self, target) -> None:
        self.target = target
        while self.pending:
            target(self.pending.pop(0))


def long_wait() -> None:
    """What follows lasts as long as the container or process does: the cycle collector back
    on (cli.main turned it off for the command's own, short work), for what is allocated from
    now on. Everything allocated so far is frozen first (gc.freeze): else the first
    collection, right away, would walk every object since start-up, ~1 ms and a page fault
    for each page of them the fork had shared, while the container's process runs."""
    import gc
    gc.freeze()
    gc.enable()


def wait_status(pid: int) -> int:
    """Wait for our child `pid`, reaping other orphans on the way; its exit code or 128+sig."""
    while True:
        try:
            wpid, status = posix.waitpid(-1, 0)
        except ChildProcessError:
            return _wait_not_child(pid)
        if wpid == pid:
            code = posix.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code


def _wait_not_child(pid: int) -> int:
    # Not re-parented to us (no subreaper?): all we can do is wait until it is gone.
    import select
    try:
        fd = posix.pidfd_open(pid)
    except OSError:
        return 0
    try:
        select.select([fd], [], [])
    finally:
        posix.close(fd)
    return 0


# --- lifecycle -------------------------------------------------------------------------------
def create(ctx, o, args) -> int:
    from . import cli_tty
    bundle = o.bundle or posix.getcwd()
    cli_tty.check(cli_tty.bundle_wants_terminal(bundle), o.console_socket, detach=True)
    listen, env = _activation(ctx)
    stdio = _stdio(o, listen)
    c = ctx.engine().create(args[0], bundle, stdio, new_keyring=not o.no_new_keyring,
                            no_pivot=bool(o.no_pivot), extra_env=env)
    _hand_over_console(stdio, o.console_socket, lambda: c.delete(force=True))
    _pid_file_or_destroy(c, o.pid_file)
    ctx.log.debug(f"created container {c.id} with init pid {c.pid}")
    return 0


def _pid_file_or_destroy(c, path: str | None) -> None:
    if not path:
        return
    try:
        write_pid_file(path, c.pid)
    except BaseException:
        c.delete(force=True)
        raise


def start(ctx, o, args) -> int:
    ctx.engine().load(args[0]).start()
    return 0


def state(ctx, o, args) -> int:
    _out(go_json(container_state(ctx.engine().load(args[0])), indent=2))
    return 0


def kill(ctx, o, args) -> int:
    sig = parse_signal(args[1] if len(args) > 1 else "SIGTERM")
    c = ctx.engine().load(args[0])
    if o.all:
        if not _accepts(c.kill, "all"):
            raise unsupported("kill --all")
        c.kill(sig, all=True)
    else:
        c.kill(sig)
    return 0


def sub_cgroup_paths(args: list[str]) -> dict[str, str]:
    """runc's exec --cgroup arguments: one bare path (every hierarchy, or cgroup v2's only
    one), or any number of controller[,controller...]:path."""
    paths: dict[str, str] = {}
    for arg in args:
        ctrls, sep, path = arg.partition(":")
        if not sep:
            if len(args) != 1:
                raise CliError(f"invalid --cgroup argument: {arg} (missing <controller>: prefix)")
            paths[""] = arg
            continue
        for ctrl in ctrls.split(","):
            if not ctrl:
                raise CliError(f"invalid --cgroup argument: {arg} (empty <controller> prefix)")
            if ctrl in paths:
                raise CliError(f"invalid --cgroup argument(s): controller {ctrl} specified "
                               "multiple times")
            paths[ctrl] = path
    return paths


def parse_signal(raw: str) -> int:
    """runc's parseSignal: a number, or a name with or without SIG, in any case. The names
    are signal.Signals' (the SIG* constants of _signal, without the ~4 ms enum import)."""
    import _signal
    try:
        n = int(raw)
    except ValueError:
        pass
    else:
        if not 0 <= n <= _signal.SIGRTMAX:
            raise CliError(f"unknown signal {raw!r}")
        return n
    name = raw.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    sig = getattr(_signal, name, None) if name.isidentifier() else None
    if not isinstance(sig, int) or name.startswith("SIG_"):
        raise CliError(f'unknown signal "{raw}"')
    return sig


def delete(ctx, o, args) -> int:
    cid = args[0]
    try:
        c = ctx.engine().load(cid)
    except ContainerNotFound:
        if o.force:
            # runc: an aborted create can leave a state dir without a state file
            import shutil
            shutil.rmtree(ospath.join(ctx.root, cid), ignore_errors=True)
            return 0
        raise
    c.delete(force=bool(o.force))
    return 0


def run_(ctx, o, args) -> int:
    from . import cli_tty
    bundle = o.bundle or posix.getcwd()
    cli_tty.check(cli_tty.bundle_wants_terminal(bundle), o.console_socket, bool(o.detach))
    fwd = None
    if not o.detach:
        become_subreaper()
        fwd = Forwarder(ctx)  # before the fork: a ^C during create is not lost
    listen, env = _activation(ctx)
    stdio = _stdio(o, listen)
    c = ctx.engine().create(args[0], bundle, stdio, new_keyring=not o.no_new_keyring,
                            no_pivot=bool(o.no_pivot), extra_env=env)
    master = None
    try:
        master = _hand_over_console(stdio, o.console_socket, lambda: None)
        _pid_file_or_destroy(c, o.pid_file)
        c.start()
    except BaseException:
        if master is not None:
            posix.close(master)
        _destroy(c)
        raise
    if o.detach:
        return 0
    long_wait()
    fwd.attach(lambda sig: _signal_container(c, sig))
    if master is not None:
        try:
            cli_tty.relay(master, c.pid)
        finally:
            posix.close(master)
    status = wait_status(c.pid)
    if not o.keep:
        c.delete(force=True)
    return status


def _destroy(c) -> None:
    c.delete(force=True)
    try:
        posix.waitpid(c.pid, posix.WNOHANG)  # ours if we are its subreaper; harmless otherwise
    except ChildProcessError:
        pass


def _signal_container(c, sig: int) -> None:
    try:
        c.kill(sig)
    except ProcessFinished:
        pass


# --- exec ------------------------------------------------------------------------------------
def exec_(ctx, o, args) -> int:
    if not o.process and len(args) < 2:
        raise UsageError(f'{PROG}: "exec" requires a minimum of 2 argument(s)', "exec")
    try:
        return _exec(ctx, o, args)
    except (CliError, EngineError, OSError) as e:
        # runc: every failure to exec is "exec failed: ..." and exit status 255
        raise CliError(f"exec failed: {error_text(e) or e}", code=255) from None


def _exec(ctx, o, args) -> int:
    from . import cli_tty
    sub_cgroups = sub_cgroup_paths(o.cgroup or [])
    c = ctx.engine().load(args[0])
    do_exec = _method(c, "exec", "exec")
    status = c.status()
    if status == "stopped":
        raise CliError("cannot exec in a stopped container")
    if status == "paused" and not o.ignore_paused:
        raise CliError("cannot exec in a paused container (use --ignore-paused to override)")
    process = _load_json(o.process, "--process") if o.process else exec_process(c, args[1:], o)
    if not isinstance(process, dict):
        raise CliError("--process: expected a JSON object (an OCI process)")
    if o.tty:
        process["terminal"] = True
    cli_tty.check(process.get("terminal") is True, o.console_socket, bool(o.detach))
    fwd = None
    if not o.detach:
        become_subreaper()
        fwd = Forwarder(ctx)
    stdio = _stdio(o)
    pid = do_exec(process, stdio, sub_cgroups) if sub_cgroups else do_exec(process, stdio)
    master = _hand_over_console(stdio, o.console_socket, lambda: _quiet_kill(pid, 9))
    if o.pid_file:
        write_pid_file(o.pid_file, pid)
    if o.detach:
        return 0
    long_wait()
    fwd.attach(lambda sig: _quiet_kill(pid, sig))
    if master is not None:
        try:
            cli_tty.relay(master, pid)
        finally:
            posix.close(master)
    return wait_status(pid)


def _quiet_kill(pid: int, sig: int) -> None:
    try:
        posix.kill(pid, sig)  # our child until we reap it: the pid cannot be recycled
    except ProcessLookupError:
        pass


def exec_process(c, argv: list[str], o) -> dict:
    """runc's getProcess: the container's own process object with the exec flags applied."""
    import copy
    p = copy.deepcopy(c.spec.raw.get("process") or {"cwd": "/", "user": {"uid": 0, "gid": 0}})
    p["args"] = list(argv)
    p["terminal"] = bool(o.tty)
    p.pop("consoleSize", None)
    if o.cwd:
        p["cwd"] = o.cwd
    p["env"] = list(p.get("env") or []) + list(o.env)
    if o.no_new_privs:
        p["noNewPrivileges"] = True
    if o.apparmor:
        p["apparmorProfile"] = o.apparmor
    if o.process_label:
        p["selinuxLabel"] = o.process_label
    if o.cap:
        caps = p.setdefault("capabilities", {})
        for s in ("bounding", "effective", "permitted", "ambient"):
            caps[s] = list(caps.get(s) or []) + list(o.cap)
    user = p.setdefault("user", {"uid": 0, "gid": 0})
    if o.user:
        uid, _, gid = o.user.partition(":")
        try:
            user["uid"] = int(uid)
            if gid:
                user["gid"] = int(gid)
        except ValueError:
            raise CliError(f"invalid --user {o.user!r}: expected <uid>[:<gid>] (numbers)") from None
    if o.additional_gids:
        try:
            user["additionalGids"] = [int(g) for g in o.additional_gids]
        except ValueError:
            raise CliError(f"invalid --additional-gids {o.additional_gids}: expected numbers") \
                from None
    return p


def _load_json(path: str, what: str):
    from . import fastjson as json
    try:
        if path == "-":
            return json.load(sys.stdin)
        with open(path, "rb") as f:
            return json.load(f)
    except OSError as e:
        raise CliError(f"{what}: cannot read {path}: {e.strerror}") from None
    except ValueError as e:
        raise CliError(f"{what}: {path} is not valid JSON: {e}") from None


# --- inspection and cgroup commands ----------------------------------------------------------
def list_(ctx, o, args) -> int:
    fmt = o.format or "table"
    if fmt not in ("table", "json"):
        raise CliError("invalid format option")
    engine = ctx.engine()
    states = []
    for cid in engine.list():
        try:
            states.append(container_state(engine.load(cid), _owner(ctx, cid)))
        except ContainerNotFound:
            continue  # deleted while we listed
    if o.quiet:
        _out("".join(s["id"] + "\n" for s in states))
    elif fmt == "json":
        _out(go_json(states or None) + "\n")
    else:
        rows = [["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]]
        rows += [[s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"]]
                 for s in states]
        _out(tabwriter(rows))
    return 0


def tabwriter(rows: list[list[str]], minwidth: int = 12, padding: int = 3) -> str:
    """Go's tabwriter.NewWriter(w, 12, 1, 3, ' ', 0) over tab-separated cells: every column but
    the last padded to max(minwidth, widest cell + padding)."""
    widths = [max(minwidth, max(len(r[i]) for r in rows) + padding)
              for i in range(len(rows[0]) - 1)]
    return "".join("".join(cell.ljust(w) for cell, w in zip(r, widths)) + r[-1] + "\n"
                   for r in rows)


def ps(ctx, o, args) -> int:
    fmt = o.format or "table"
    if fmt not in ("table", "json"):
        raise CliError("invalid format option")
    c = ctx.engine().load(args[0])
    pids = list(_method(c, "pids", "ps")())
    if fmt == "json":
        _out(go_json(pids) + "\n")
        return 0
    import subprocess
    r = subprocess.run(["ps", *(args[1:] or ["-ef"])], capture_output=True, text=True)
    if r.returncode != 0:
        raise CliError(f"ps: {r.stderr.strip() or f'exit status {r.returncode}'}")
    lines = r.stdout.splitlines()
    if not lines:
        return 0
    header = lines[0].split()
    if "PID" not in header:
        raise CliError("couldn't find PID field in ps output")
    col = header.index("PID")
    wanted = set(pids)
    out = [lines[0]] + [ln for ln in lines[1:]
                        if len(ln.split()) > col and ln.split()[col].isdigit()
                        and int(ln.split()[col]) in wanted]
    _out("".join(ln + "\n" for ln in out))
    return 0


def pause(ctx, o, args) -> int:
    c = ctx.engine().load(args[0])
    _method(c, "pause", "pause")()
    return 0


def resume(ctx, o, args) -> int:
    c = ctx.engine().load(args[0])
    _method(c, "resume", "resume")()
    return 0


def update(ctx, o, args) -> int:
    if o.l3_cache_schema or o.mem_bw_schema:
        raise unsupported("update: Intel RDT (--l3-cache-schema, --mem-bw-schema)")
    resources = _load_json(o.resources, "--resources") if o.resources else update_resources(o)
    if not isinstance(resources, dict):
        raise CliError("--resources: expected a JSON object (OCI linux.resources)")
    c = ctx.engine().load(args[0])
    _method(c, "update", "update")(resources)
    return 0


def update_resources(o) -> dict:
    """runc update's flags -> an OCI linux.resources object holding only what was given."""
    r: dict = {}

    def put(section: str, key: str, value) -> None:
        r.setdefault(section, {})[key] = value
    for flag, section, key in (("cpu_period", "cpu", "period"), ("cpu_quota", "cpu", "quota"),
                               ("cpu_share", "cpu", "shares"),
                               ("cpu_rt_period", "cpu", "realtimePeriod"),
                               ("cpu_rt_runtime", "cpu", "realtimeRuntime"),
                               ("blkio_weight", "blockIO", "weight"),
                               ("pids_limit", "pids", "limit")):
        if o.get(flag) is not None:
            put(section, key, _int_flag(flag, o[flag]))
    for flag, key in (("cpuset_cpus", "cpus"), ("cpuset_mems", "mems")):
        if o.get(flag) is not None:
            put("cpu", key, o[flag])
    for flag, key in (("memory", "limit"), ("memory_reservation", "reservation"),
                      ("memory_swap", "swap")):
        if o.get(flag) is not None:
            put("memory", key, -1 if o[flag] == "-1" else ram_in_bytes(o[flag], flag))
    return r


def _int_flag(flag: str, value: str) -> int:
    try:
        return int(value, 10)
    except ValueError:
        raise CliError(f"invalid value for --{flag.replace('_', '-')}: {value!r}") from None


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def ram_in_bytes(value: str, flag: str = "memory") -> int:
    """docker/go-units RAMInBytes: "512", "100m", "1.5g", "64KiB" (binary units)."""
    import re
    m = re.fullmatch(r"(\d+(?:\.\d+)?) ?([kKmMgGtTpP])?[iI]?[bB]?", value.strip())
    if not m:
        raise CliError(f"invalid value for --{flag.replace('_', '-')}: invalid size: {value!r}")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])


def events(ctx, o, args) -> int:
    c = ctx.engine().load(args[0])
    stats = _method(c, "stats", "events")
    if o.stats:
        _out(go_json({"type": "stats", "id": c.id, "data": stats()}) + "\n")
        return 0
    import time
    interval = _duration(o.interval or "5s")
    long_wait()
    while c.status() != "stopped":
        _out(go_json({"type": "stats", "id": c.id, "data": stats()}) + "\n")
        time.sleep(interval)
    return 0


def _duration(value: str) -> float:
    import re
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", value)
    if not m or float(m.group(1)) <= 0:
        raise CliError(f"invalid --interval {value!r}: expected a duration such as 5s or 500ms")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


# --- documents -------------------------------------------------------------------------------
def features(ctx, o, args) -> int:
    from .cli_docs import features as doc
    _out(go_json(doc(), indent=4) + "\n")
    return 0


def spec(ctx, o, args) -> int:
    from .cli_docs import default_spec
    path = ospath.join(o.bundle or "", "config.json")
    if o.bundle and not ospath.isdir(o.bundle):
        raise CliError(f"stat {o.bundle}: no such file or directory")
    if ospath.lexists(path):
        raise CliError("File config.json exists. Remove it first")
    data = go_json(default_spec(rootless=bool(o.rootless)), indent="\t")
    with open(path, "w") as f:
        f.write(data)
    return 0


def _refused(what: str):
    def command(ctx, o, args) -> int:
        raise CliError(f"{what}: not supported by pyshim-runc")
    return command


_COMMANDS = {
    "create": create, "start": start, "state": state, "kill": kill, "delete": delete,
    "run": run_, "exec": exec_, "ps": ps, "list": list_, "pause": pause, "resume": resume,
    "update": update, "events": events, "features": features, "spec": spec,
    "checkpoint": _refused("checkpoint"), "restore": _refused("restore"),
}
